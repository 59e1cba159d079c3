use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::InferenceError;

/// `[inference]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceSettings {
    /// Folder holding one sub-folder per model, each with a `model.toml` manifest.
    pub models_dir: PathBuf,
    /// Model ids to load from `models_dir`; empty loads every model there.
    pub models: Vec<String>,
    /// Execution providers to try, in order: `"cuda"` and/or `"cpu"`. A provider that cannot
    /// be registered is skipped with a warning; CPU is always the final fallback.
    pub providers: Vec<String>,
    /// Path of the ONNX Runtime shared library (the versioned `libonnxruntime.so.1.x.y`).
    /// When unset: `ORT_DYLIB_PATH`, a `libonnxruntime.so*` next to the executable, then the
    /// `onnxruntime` Python package of `$VIRTUAL_ENV`, `.venv` or `python3`.
    pub ort_dylib_path: Option<PathBuf>,
    /// ONNX sessions per ensemble member (and per gate); each set of sessions is served by
    /// its own batching worker thread, so this is the number of batches run at once per model.
    pub pool_size: usize,
    /// Intra-op threads per ONNX session of an ensemble (its members already run at once, one
    /// thread each).
    pub intra_threads: usize,
    /// Intra-op threads of a model with one member and no gate (the lung segmenter): its
    /// batch is one session, so it can only go faster by threads inside the network. 0 = as
    /// many as the machine has cores.
    pub single_model_threads: usize,
    /// Run one dummy batch through every session at load time, so the first request is not slow
    /// and output shapes are checked before serving.
    pub warmup: bool,
    /// Largest number of images (frames) run through a model in one batch.
    pub max_batch: usize,
    /// How long a batch waits for more requests after the first one arrived, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            models_dir: PathBuf::from("models"),
            models: Vec::new(),
            providers: vec!["cpu".to_owned()],
            ort_dylib_path: None,
            pool_size: 1,
            intra_threads: 1,
            single_model_threads: 0,
            warmup: true,
            max_batch: 8,
            max_delay_ms: 5,
        }
    }
}

impl InferenceSettings {
    /// Intra-op threads for a model with `members` members and, if `gated`, a gate.
    pub fn threads_for(&self, members: usize, gated: bool) -> usize {
        if members == 1 && !gated {
            match self.single_model_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            }
        } else {
            self.intra_threads
        }
    }

    /// Checks values that serde cannot: known providers and positive sizes.
    pub fn validate(&self) -> Result<(), InferenceError> {
        let bad = |msg: String| Err(InferenceError::Settings(msg));
        if self.providers.is_empty() {
            return bad("`providers` must name at least one of \"cuda\", \"cpu\"".into());
        }
        for p in &self.providers {
            if !matches!(p.to_ascii_lowercase().as_str(), "cpu" | "cuda") {
                return bad(format!(
                    "unknown execution provider `{p}` (known: \"cuda\", \"cpu\")"
                ));
            }
        }
        if self.pool_size == 0 || self.pool_size > 64 {
            return bad(format!(
                "`pool_size` must be 1..=64, got {}",
                self.pool_size
            ));
        }
        if self.intra_threads == 0 || self.intra_threads > 256 {
            return bad(format!(
                "`intra_threads` must be 1..=256, got {}",
                self.intra_threads
            ));
        }
        if self.single_model_threads > 256 {
            return bad(format!(
                "`single_model_threads` must be 0..=256, got {}",
                self.single_model_threads
            ));
        }
        if self.max_batch == 0 || self.max_batch > 1024 {
            return bad(format!(
                "`max_batch` must be 1..=1024, got {}",
                self.max_batch
            ));
        }
        if self.max_delay_ms > 10_000 {
            return bad(format!(
                "`max_delay_ms` must be at most 10000, got {}",
                self.max_delay_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_from_empty_table() {
        let s: InferenceSettings = toml::from_str("").unwrap();
        assert_eq!(s, InferenceSettings::default());
        assert_eq!(s.providers, vec!["cpu"]);
        s.validate().unwrap();
    }

    #[test]
    fn unknown_fields_and_providers_are_refused() {
        assert!(toml::from_str::<InferenceSettings>("nope = 1").is_err());
        let s: InferenceSettings = toml::from_str("providers = [\"tpu\"]").unwrap();
        assert!(s.validate().is_err());
        let s: InferenceSettings = toml::from_str("max_batch = 0").unwrap();
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_one_member_model_without_a_gate_gets_the_cores_an_ensemble_one_thread_each() {
        let s = InferenceSettings::default();
        assert_eq!(s.threads_for(5, true), 1);
        assert_eq!(s.threads_for(1, true), 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(s.threads_for(1, false), cores);
        let fixed = InferenceSettings {
            single_model_threads: 3,
            ..InferenceSettings::default()
        };
        assert_eq!(fixed.threads_for(1, false), 3);
        let too_many = InferenceSettings {
            single_model_threads: 1000,
            ..InferenceSettings::default()
        };
        assert!(too_many.validate().is_err());
    }
}
