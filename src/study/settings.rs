//! `[study]`: when a study counts as complete.

use serde::{Deserialize, Serialize};

/// `[study]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StudySettings {
    /// Milliseconds of quiet after the last association sending the study is released.
    pub quiet_window_ms: u64,
    /// Seconds without a new instance after which a study completes anyway (aborted
    /// associations, studies that trickle in over many associations).
    pub stable_age_secs: u64,
}

impl Default for StudySettings {
    fn default() -> Self {
        Self {
            quiet_window_ms: 150,
            stable_age_secs: 30,
        }
    }
}

impl StudySettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.stable_age_secs == 0 {
            return Err(("study.stable_age_secs", "must be at least 1".into()));
        }
        Ok(())
    }
}
