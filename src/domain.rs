//! Small validated types shared by every stage.

use std::fmt;

/// A DICOM UID as it arrived, checked against PS3.5 §9 (digits and dots, at most 64
/// characters, no empty component). UIDs name files on disk, so this check is also what keeps
/// a hostile UID from escaping the data folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

/// Why a string is not a UID.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {problem}")]
pub struct InvalidUid {
    pub field: &'static str,
    pub problem: &'static str,
}

impl Uid {
    /// Validates `raw` after trimming the trailing NUL/space padding DICOM allows.
    pub fn parse(field: &'static str, raw: &str) -> Result<Uid, InvalidUid> {
        let s = raw.trim_end_matches(['\0', ' ']).trim_start();
        let err = |problem| Err(InvalidUid { field, problem });
        if s.is_empty() {
            return err("is empty");
        }
        if s.len() > 64 {
            return err("is longer than 64 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return err("contains characters other than digits and dots");
        }
        if s.split('.').any(|c| c.is_empty()) {
            return err("has an empty component");
        }
        Ok(Uid(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Uid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_padded_uids_and_refuses_paths() {
        assert_eq!(
            Uid::parse("x", "1.2.840.10008.1.2\0").unwrap().as_str(),
            "1.2.840.10008.1.2"
        );
        assert!(Uid::parse("x", "../../etc/passwd").is_err());
        assert!(Uid::parse("x", "1..2").is_err());
        assert!(Uid::parse("x", "").is_err());
        assert!(Uid::parse("x", &"1".repeat(65)).is_err());
        assert_eq!(
            Uid::parse("StudyInstanceUID", "1/2")
                .unwrap_err()
                .to_string(),
            "StudyInstanceUID: contains characters other than digits and dots"
        );
    }
}

/// Triage urgency of a result, most urgent first. Ordered so that `a > b` means `a` is more
/// urgent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema, schemars::JsonSchema)]
pub enum Urgency {
    Low,
    Standard,
    Urgent,
    Critical,
}

impl Urgency {
    pub const ALL: [Urgency; 4] = [
        Urgency::Low,
        Urgency::Standard,
        Urgency::Urgent,
        Urgency::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Low => "low",
            Urgency::Standard => "standard",
            Urgency::Urgent => "urgent",
            Urgency::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Urgency> {
        Urgency::ALL.into_iter().find(|u| u.as_str() == s)
    }
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
