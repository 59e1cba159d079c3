//! `[storage]`: the data folder, how hard files are pushed to disk, duplicates, free space.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Defined beside the database, which obeys it too (SQLite's `synchronous`).
pub use crate::db::Durability;

/// `storage.on_duplicate`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// Keep the stored copy and discard the new one (still answered 0000); with no stored
    /// file left, the new one is stored.
    Keep,
    /// Replace the stored copy with the new one.
    Replace,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Data folder: instance files, temporary files and the default SQLite database.
    pub data_dir: PathBuf,
    /// See [`Durability`].
    pub durability: Durability,
    /// See [`DuplicatePolicy`].
    pub on_duplicate: DuplicatePolicy,
    /// Refuse new instances (A700) when fewer than this many bytes are free...
    pub min_free_bytes: u64,
    /// ...or when less than this percentage of the volume is free.
    pub min_free_percent: f64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            durability: Durability::Fsync,
            on_duplicate: DuplicatePolicy::Keep,
            min_free_bytes: 2_000_000_000,
            min_free_percent: 5.0,
        }
    }
}

impl StorageSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..100.0).contains(&self.min_free_percent) {
            return Err(("storage.min_free_percent", "must be in [0, 100)".into()));
        }
        Ok(())
    }
}
