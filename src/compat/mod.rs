//! Drop-in compatibility with other vendors' documented APIs (`../shared/specs/`). Each
//! adapter is a thin layer over the native core — the same engine, auth, events — in its own
//! module, answering in that vendor's shapes and messages.
//!
//! Errors raised before a handler runs (authentication, limits) are rendered by the native
//! layers; [`translate_errors`] re-renders them in the dialect of the route that was called.

pub mod leapai;
pub mod paths;

use std::path::PathBuf;

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// `[compat]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSettings {
    /// Folders whose files path-based requests (LeapAI `input_image_path`,
    /// `input_folder_path`) may read. Empty: every such path is refused.
    pub input_roots: Vec<PathBuf>,
    /// Folders under which result files may be written (`output_folder_path`).
    pub output_roots: Vec<PathBuf>,
}

/// Whose error shape a path answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    LeapAi,
}

/// The dialect of a request path, if it belongs to an adapter.
pub fn dialect_for(path: &str) -> Option<Dialect> {
    match path {
        "/single_inference" | "/bulk_inference" => Some(Dialect::LeapAi),
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
    match dialect {
        Dialect::LeapAi => {
            let mut out = leapai::failure(parts.status, message).into_response();
            for name in [header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
                if let Some(v) = parts.headers.get(&name) {
                    out.headers_mut().insert(name, v.clone());
                }
            }
            out
        }
    }
}
