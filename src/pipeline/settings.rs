use serde::{Deserialize, Serialize};

/// `[pipeline]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Run the pipeline worker on this node (a receive-only node sets `false`).
    pub enabled: bool,
    /// Jobs run at once by this node.
    pub workers: usize,
    /// Seconds a claimed job stays ours without renewal; a crashed worker's job is taken up
    /// again after this.
    pub lease_secs: u64,
    /// Attempts before a job fails for good.
    pub max_attempts: u32,
    /// First retry delay in milliseconds; doubles with each attempt.
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    pub retry_max_ms: u64,
    /// How often idle workers look for jobs queued by other nodes, in milliseconds.
    pub poll_ms: u64,
    /// Model run on completed studies; unset means the first installed classification model.
    pub model: Option<String>,
    /// Images analysed per study at most (the rest are reported as skipped).
    pub max_images_per_study: usize,
}

impl PipelineSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.workers == 0 || self.workers > 64 {
            return Err(("pipeline.workers", "must be 1..=64".into()));
        }
        if self.lease_secs == 0 {
            return Err(("pipeline.lease_secs", "must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            return Err(("pipeline.max_attempts", "must be at least 1".into()));
        }
        if self.max_images_per_study == 0 {
            return Err(("pipeline.max_images_per_study", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 2,
            lease_secs: 60,
            max_attempts: 5,
            retry_base_ms: 2000,
            retry_max_ms: 300_000,
            poll_ms: 1000,
            model: None,
            max_images_per_study: 64,
        }
    }
}
