//! Drop-in compatibility with other vendors' documented APIs (`../shared/specs/`). Each
//! adapter is a thin layer over the native core — the same engine, auth, events — in its own
//! module, answering in that vendor's shapes and messages.
//!
//! Each adapter is its own part of the HTTP surface: a route table over its own state (the
//! node's [`crate::api::AppState`] beside what only it reads) and an error dialect
//! ([`crate::api::Dialect`]) in which every refusal on its routes is answered, the kernel's
//! (authentication, limits) included. `startup::http` mounts them.

pub mod leapai;
pub mod paths;
pub mod pi;
pub mod pi_text;
pub mod radanalyzer;
pub mod voxray;

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// `[compat]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSettings {
    /// Folders whose files path-based requests (LeapAI `input_image_path`,
    /// `input_folder_path`) may read. Empty: every such path is refused.
    pub input_roots: Vec<PathBuf>,
    /// Folders under which result files may be written (`output_folder_path`).
    pub output_roots: Vec<PathBuf>,
    /// Pi Health Triage analyses accepted (`false`: 403 `health_triage_disabled`).
    pub pi_enabled: bool,
    /// Hosts Pi's `input.url` may name, as `host:port` (a bare host: the scheme's default port
    /// only); empty: URL input is refused (no open fetching).
    pub pi_url_hosts: Vec<String>,
    /// Key of VoxRay's `patient_id_hash` (HMAC-SHA256). Unset: a random key is generated into
    /// `<data_dir>/voxray_hash.key` (mode 0600) on first start. Printed as `[redacted]`.
    #[serde(serialize_with = "redact")]
    #[schemars(with = "Option<String>", extend("x-secret" = true))]
    pub voxray_hash_key: Option<SecretString>,
    /// `environment` reported by VoxRay's `GET /api/feature-flags`.
    pub voxray_environment: String,
    /// VoxRay's v2 feature flags (`[compat.voxray_flags]`).
    pub voxray_flags: voxray::Flags,
    /// RadAnalyzer V3 (`[compat.radanalyzer]`): the enterprise ("Custom") rates.
    pub radanalyzer: radanalyzer::RadAnalyzerSettings,
}

fn redact<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        None => s.serialize_none(),
        Some(_) => s.serialize_str("[redacted]"),
    }
}

impl Default for CompatSettings {
    fn default() -> Self {
        Self {
            input_roots: Vec::new(),
            output_roots: Vec::new(),
            pi_enabled: true,
            pi_url_hosts: Vec::new(),
            voxray_hash_key: None,
            voxray_environment: "production".into(),
            voxray_flags: voxray::Flags::default(),
            radanalyzer: radanalyzer::RadAnalyzerSettings::default(),
        }
    }
}

/// What the Pi adapter needs from the settings.
#[derive(Debug, Clone, Default)]
pub struct PiSettings {
    pub enabled: bool,
    pub url_hosts: Vec<String>,
}
