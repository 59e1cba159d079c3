//! Time as the node stores it: milliseconds since the Unix epoch (UTC), and the RFC 3339
//! text every API, audit message and report shows.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch: the time type of every table.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Epoch milliseconds as a UTC date-time, the epoch itself when out of range.
pub fn datetime_of_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Epoch milliseconds as RFC 3339 UTC (`2026-11-22T10:03:12.123Z`).
pub fn format_ms(ms: i64) -> String {
    datetime_of_ms(ms).format(&Rfc3339).unwrap_or_default()
}

/// An RFC 3339 time (`2026-11-22T10:00:00Z`) as epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(1500), "1970-01-01T00:00:01.5Z");
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        let now = now_ms();
        assert_eq!(parse_rfc3339_ms(&format_ms(now)), Some(now));
    }
}
