//! The document's billing rules, as pure functions: what a call costs and the `billing`
//! object it answers with. Storage is [`super::ledger`].
//!
//! - Billable only with a valid measurement (result codes 1–4): `valid_vhs`; otherwise
//!   `no_valid_vhs`.
//! - 24 h recheck grace: a valid measurement for a `uuid` that this key was *billed* for in the
//!   last 24 hours is free (`recheck_24h`). The window runs from the billed call, so a patient
//!   re-measured daily is billed once a day, not once ever.
//! - A batch, stream or capture session is one event at the session rate.
//! - Monthly usage = billable calls of this key in the current calendar month (UTC), this call
//!   included; the tier follows from it: paygo 0–100, starter 101–500, professional 501–2,000,
//!   enterprise 2,001+ (the 101st call of a month is the first at the starter rate).
//! - Enterprise rates are "Custom" in the document: `[compat.radanalyzer]`
//!   `enterprise_single_rate` / `enterprise_session_rate`.

use serde::Serialize;
use serde_json::{json, Value};

/// Grace after a billed call for the same key and `uuid`, in milliseconds.
pub const RECHECK_GRACE_MS: i64 = 24 * 3600 * 1000;

/// How a call is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallType {
    /// `POST /v3/predict` with one `image`.
    Single,
    /// A batch, a stream, or a completed capture session.
    Session,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Single => "single",
            CallType::Session => "session",
        }
    }
}

/// Pricing tier by monthly volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Paygo,
    Starter,
    Professional,
    Enterprise,
}

impl Tier {
    /// The tier of a key that has made `usage` billable calls this month.
    pub fn for_usage(usage: i64) -> Tier {
        match usage {
            ..=100 => Tier::Paygo,
            101..=500 => Tier::Starter,
            501..=2000 => Tier::Professional,
            _ => Tier::Enterprise,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Paygo => "paygo",
            Tier::Starter => "starter",
            Tier::Professional => "professional",
            Tier::Enterprise => "enterprise",
        }
    }
}

/// The enterprise ("Custom") rates, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub enterprise_single_cents: i64,
    pub enterprise_session_cents: i64,
}

impl Default for Rates {
    fn default() -> Self {
        super::RadAnalyzerSettings::default().rates()
    }
}

impl Rates {
    /// Cents charged for one call of `call_type` in `tier` (the document's pricing table).
    pub fn cents(&self, tier: Tier, call_type: CallType) -> i64 {
        match (tier, call_type) {
            (Tier::Paygo, CallType::Single) => 300,
            (Tier::Paygo, CallType::Session) => 400,
            (Tier::Starter, CallType::Single) => 250,
            (Tier::Starter, CallType::Session) => 350,
            (Tier::Professional, CallType::Single) => 200,
            (Tier::Professional, CallType::Session) => 300,
            (Tier::Enterprise, CallType::Single) => self.enterprise_single_cents,
            (Tier::Enterprise, CallType::Session) => self.enterprise_session_cents,
        }
    }
}

/// Why a call was or was not billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ValidVhs,
    NoValidVhs,
    #[serde(rename = "recheck_24h")]
    Recheck24h,
    BillingError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ValidVhs => "valid_vhs",
            Reason::NoValidVhs => "no_valid_vhs",
            Reason::Recheck24h => "recheck_24h",
            Reason::BillingError => "billing_error",
        }
    }

    /// The rule: a valid measurement is billed unless the same patient was billed within 24 h.
    pub fn decide(valid_measurement: bool, billed_within_grace: bool) -> Reason {
        match (valid_measurement, billed_within_grace) {
            (false, _) => Reason::NoValidVhs,
            (true, true) => Reason::Recheck24h,
            (true, false) => Reason::ValidVhs,
        }
    }
}

/// The outcome of billing one call: the document's `billing` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Billing {
    pub billable: bool,
    pub reason: Reason,
    pub call_type: CallType,
    /// Billable calls this month including this one (`None` only after a billing error whose
    /// usage could not be read either).
    pub monthly_usage: Option<i64>,
    pub tier: Option<Tier>,
    /// Cents charged (billable calls only).
    pub rate_cents: Option<i64>,
}

impl Billing {
    /// The charge for a call, given the key's billable calls this month *before* it.
    pub fn assess(
        rates: &Rates,
        call_type: CallType,
        reason: Reason,
        usage_before: i64,
    ) -> Billing {
        let billable = reason == Reason::ValidVhs;
        let usage = usage_before + i64::from(billable);
        let tier = Tier::for_usage(usage);
        Billing {
            billable,
            reason,
            call_type,
            monthly_usage: Some(usage),
            tier: Some(tier),
            rate_cents: billable.then(|| rates.cents(tier, call_type)),
        }
    }

    /// Billing could not be recorded: nothing is charged, and the usage is given when known.
    pub fn error(call_type: CallType, usage: Option<i64>) -> Billing {
        Billing {
            billable: false,
            reason: Reason::BillingError,
            call_type,
            monthly_usage: usage,
            tier: usage.map(Tier::for_usage),
            rate_cents: None,
        }
    }

    /// The object in the document's three shapes: `call_type` and `rate` only when billable.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "billable": self.billable, "reason": self.reason.as_str() });
        if self.billable {
            v["call_type"] = json!(self.call_type.as_str());
        }
        if let Some(u) = self.monthly_usage {
            v["monthly_usage"] = json!(u);
        }
        if let Some(t) = self.tier {
            v["tier"] = json!(t.as_str());
        }
        if let (true, Some(c)) = (self.billable, self.rate_cents) {
            v["rate"] = json!(dollars(c));
        }
        v
    }
}

/// Cents as a dollar amount (300 -> 3.0).
pub fn dollars(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// The calendar month (UTC) of an epoch-millisecond time, `YYYY-MM`.
pub fn month_of(ms: i64) -> String {
    let t = crate::clock::datetime_of_ms(ms);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// The date (UTC) of an epoch-millisecond time, `YYYY-MM-DD`.
pub fn date_of(ms: i64) -> String {
    let t = crate::clock::datetime_of_ms(ms);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// Checks a `YYYY-MM` month given by a user.
pub fn parse_month(s: &str) -> Option<String> {
    let (y, m) = s.split_once('-')?;
    let ok = y.len() == 4
        && m.len() == 2
        && y.bytes().all(|b| b.is_ascii_digit())
        && m.parse::<u8>().is_ok_and(|m| (1..=12).contains(&m));
    ok.then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_change_at_the_documented_volumes() {
        assert_eq!(Tier::for_usage(0), Tier::Paygo);
        assert_eq!(Tier::for_usage(100), Tier::Paygo);
        assert_eq!(Tier::for_usage(101), Tier::Starter);
        assert_eq!(Tier::for_usage(500), Tier::Starter);
        assert_eq!(Tier::for_usage(501), Tier::Professional);
        assert_eq!(Tier::for_usage(2000), Tier::Professional);
        assert_eq!(Tier::for_usage(2001), Tier::Enterprise);
    }

    #[test]
    fn the_three_documented_shapes() {
        let rates = Rates::default();
        let billed = Billing::assess(&rates, CallType::Single, Reason::ValidVhs, 46);
        assert_eq!(
            billed.to_json(),
            json!({ "billable": true, "reason": "valid_vhs", "call_type": "single",
                    "monthly_usage": 47, "tier": "paygo", "rate": 3.00 })
        );
        let free = Billing::assess(&rates, CallType::Single, Reason::NoValidVhs, 47);
        assert_eq!(
            free.to_json(),
            json!({ "billable": false, "reason": "no_valid_vhs", "monthly_usage": 47, "tier": "paygo" })
        );
        let recheck = Billing::assess(&rates, CallType::Session, Reason::Recheck24h, 47);
        assert_eq!(
            recheck.to_json(),
            json!({ "billable": false, "reason": "recheck_24h", "monthly_usage": 47, "tier": "paygo" })
        );
        let session = Billing::assess(&rates, CallType::Session, Reason::ValidVhs, 47);
        assert_eq!(session.to_json()["rate"], json!(4.0));
        assert_eq!(session.to_json()["call_type"], "session");
    }

    #[test]
    fn the_101st_call_is_the_first_at_the_starter_rate() {
        let rates = Rates::default();
        let b = Billing::assess(&rates, CallType::Single, Reason::ValidVhs, 100);
        assert_eq!(
            (b.monthly_usage, b.tier, b.rate_cents),
            (Some(101), Some(Tier::Starter), Some(250))
        );
        let b = Billing::assess(&rates, CallType::Session, Reason::ValidVhs, 99);
        assert_eq!((b.tier, b.rate_cents), (Some(Tier::Paygo), Some(400)));
        // A free call does not move the tier.
        let b = Billing::assess(&rates, CallType::Single, Reason::NoValidVhs, 100);
        assert_eq!((b.monthly_usage, b.tier), (Some(100), Some(Tier::Paygo)));
    }

    #[test]
    fn enterprise_pays_the_configured_rates() {
        let rates = Rates {
            enterprise_single_cents: 150,
            enterprise_session_cents: 225,
        };
        let b = Billing::assess(&rates, CallType::Session, Reason::ValidVhs, 2000);
        assert_eq!(b.tier, Some(Tier::Enterprise));
        assert_eq!(b.to_json()["rate"], json!(2.25));
        assert_eq!(
            Rates::default().cents(Tier::Enterprise, CallType::Single),
            200
        );
    }

    #[test]
    fn reasons_follow_the_rules() {
        assert_eq!(Reason::decide(false, false), Reason::NoValidVhs);
        assert_eq!(Reason::decide(false, true), Reason::NoValidVhs);
        assert_eq!(Reason::decide(true, true), Reason::Recheck24h);
        assert_eq!(Reason::decide(true, false), Reason::ValidVhs);
    }

    #[test]
    fn billing_errors_charge_nothing() {
        let e = Billing::error(CallType::Single, None);
        assert_eq!(
            e.to_json(),
            json!({ "billable": false, "reason": "billing_error" })
        );
        let e = Billing::error(CallType::Single, Some(3));
        assert_eq!(e.to_json()["tier"], "paygo");
    }

    #[test]
    fn months_and_dates_are_utc() {
        // 2026-03-31T23:30:00Z
        let ms = 1_774_999_800_000;
        assert_eq!(month_of(ms), "2026-03");
        assert_eq!(date_of(ms), "2026-03-31");
        assert_eq!(month_of(ms + 3_600_000), "2026-04");
        assert_eq!(parse_month("2026-04").as_deref(), Some("2026-04"));
        assert!(parse_month("2026-13").is_none());
        assert!(parse_month("26-04").is_none());
        assert!(parse_month("2026-4").is_none());
    }
}
