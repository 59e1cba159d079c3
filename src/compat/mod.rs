//! Drop-in compatibility with other vendors' documented APIs (`../shared/specs/`). Each
//! adapter is a thin layer over the native core — the same engine, auth, events — in its own
//! module, answering in that vendor's shapes and messages.
//!
//! Errors raised before a handler runs (authentication, limits) are rendered by the native
//! layers; [`translate_errors`] re-renders them in the dialect of the route that was called.

pub mod leapai;
pub mod paths;
pub mod pi;
pub mod pi_text;
pub mod radanalyzer;
pub mod voxray;

use std::path::PathBuf;

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// `[compat]`
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Whose error shape a path answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    LeapAi,
    Pi,
    VoxRay,
    RadAnalyzer,
}

/// The dialect of a request path, if it belongs to an adapter.
pub fn dialect_for(path: &str) -> Option<Dialect> {
    match path {
        "/single_inference" | "/bulk_inference" => Some(Dialect::LeapAi),
        p if voxray::owns_path(p) => Some(Dialect::VoxRay),
        p if radanalyzer::owns_path(p) => Some(Dialect::RadAnalyzer),
        p if p.starts_with("/api/v1/health/") || p.starts_with("/api/v1/jobs/") => {
            Some(Dialect::Pi)
        }
        _ => None,
    }
}

/// Outer layer: native error envelopes on adapter routes become the adapter's error shape.
pub async fn translate_errors(req: Request, next: Next) -> Response {
    let dialect = dialect_for(req.uri().path());
    let resp = next.run(req).await;
    let Some(dialect) = dialect else {
        return resp;
    };
    if dialect == Dialect::VoxRay && !resp.status().is_success() {
        // Every refusal on a VoxRay path, ours or the native layers', ends in VoxRay's shape.
        return voxray::finish_error(resp).await;
    }
    if dialect == Dialect::RadAnalyzer && !resp.status().is_success() {
        return radanalyzer::finish_error(resp).await;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if resp.status().is_success() || !is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let native: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if native["status"] != "error" {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = native["error"]["message"].as_str().unwrap_or("Error");
    let mut out = match dialect {
        Dialect::LeapAi => leapai::failure(parts.status, message),
        _ => pi::failure(parts.status, message),
    };
    for name in [header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}
