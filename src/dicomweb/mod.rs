//! DICOMweb (PS3.18) at `/dicomweb`: STOW-RS in through the C-STORE path, QIDO-RS and
//! WADO-RS out of the index and the stored files.
//!
//! - [`multipart`]: streaming `multipart/related` reader;
//! - [`json`]: the DICOM JSON model;
//! - [`stow`]: `POST /studies[/{study}]`;
//! - [`qido`]: searches for studies, series and instances;
//! - [`wado`]: retrieval of instances (as stored) and their metadata;
//! - [`frames`]: frames, rendered images and thumbnails ([`pixels`] does the pixel work).
//!
//! File paths come only from `instances.file_path` in the index, never from the request.

pub mod frames;
pub mod json;
pub mod multipart;
pub mod pixels;
pub mod qido;
pub mod stow;
pub mod transcode;
pub mod wado;

use axum::extract::FromRef;
use axum::http::{header, HeaderMap, Method};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::api::{spec, Access, AppState, Routes};
use crate::auth::Scope;
use crate::store::Store;

/// Media type of DICOM JSON answers.
pub const DICOM_JSON: &str = "application/dicom+json";

/// Media type of instances as stored (WADO-RS).
pub const MULTIPART_DICOM: &str = "multipart/related; type=\"application/dicom\"";

/// Media type of bulk data and frames.
pub const MULTIPART_OCTETS: &str = "multipart/related; type=\"application/octet-stream\"";

/// `[dicomweb]` settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DicomWebSettings {
    /// Origins a browser viewer may call the API from (CORS); empty = no CORS headers.
    /// `"*"` allows any origin.
    pub cors_allowed_origins: Vec<String>,
    /// The URL clients reach `/dicomweb` at (e.g. `https://pacs-ai.example/dicomweb`), for
    /// RetrieveURL and BulkDataURI; unset = from the request's Host header.
    pub public_url: Option<String>,
}

/// What the DICOMweb handlers need beyond the rest of the API ([`DicomWeb`]).
#[derive(Clone)]
pub struct DicomWebContext {
    pub store: Store,
    /// SOP classes accepted (same policy as the C-STORE SCP).
    pub abstract_syntaxes: Vec<String>,
    /// Transfer syntaxes whose data sets can be parsed.
    pub transfer_syntaxes: Vec<&'static str>,
    /// `dicomweb.cors_allowed_origins`.
    pub cors_allowed_origins: Vec<String>,
    /// `dicomweb.public_url`, without a trailing slash.
    pub public_url: Option<String>,
    /// Port of the HTTP listener, added to a Host header that lacks one.
    pub http_port: u16,
}

impl DicomWebContext {
    /// `dicom`: the C-STORE SCP's SOP class policy, which STOW-RS follows too.
    pub fn new(
        settings: &DicomWebSettings,
        dicom: &crate::ingest::DicomSettings,
        http_port: u16,
        store: Store,
    ) -> Self {
        DicomWebContext {
            store,
            abstract_syntaxes: crate::ingest::sop_classes::accepted_abstract_syntaxes(dicom),
            transfer_syntaxes: crate::ingest::sop_classes::accepted_transfer_syntaxes(),
            cors_allowed_origins: settings.cors_allowed_origins.clone(),
            public_url: settings
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            http_port,
        }
    }

    /// The CORS layer for the configured origins (`None` when none are configured). A
    /// preflight is answered by the layer itself, before authentication.
    pub fn cors(&self) -> Option<tower_http::cors::CorsLayer> {
        use tower_http::cors::{AllowOrigin, Any, CorsLayer};
        if self.cors_allowed_origins.is_empty() {
            return None;
        }
        let origin = if self.cors_allowed_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                self.cors_allowed_origins
                    .iter()
                    .filter_map(|o| header::HeaderValue::from_str(o).ok()),
            )
        };
        Some(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers(Any)
                .expose_headers(Any)
                .max_age(std::time::Duration::from_secs(600)),
        )
    }
}

/// `scheme://host/dicomweb` as the client reached us (for RetrieveURL and BulkDataURI):
/// `dicomweb.public_url` when set, else from the Host header. Some clients (dicomweb-client)
/// send Host without the port, so a port-less Host gets the listener's port (unless 80).
pub fn base_url(ctx: &DicomWebContext, headers: &HeaderMap) -> String {
    if let Some(u) = &ctx.public_url {
        return u.clone();
    }
    let forwarded = headers.get("x-forwarded-host").is_some();
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()));
    if forwarded || has_port || ctx.http_port == 80 || ctx.http_port == 0 {
        format!("{scheme}://{host}/dicomweb")
    } else {
        format!("{scheme}://{host}:{}/dicomweb", ctx.http_port)
    }
}

/// State of the DICOMweb routes.
#[derive(Clone, FromRef)]
pub struct DicomWeb {
    pub app: AppState,
    pub dicomweb: DicomWebContext,
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    stow::store_any,
    stow::store_study,
    qido::studies,
    qido::all_series,
    qido::study_series,
    qido::all_instances,
    qido::study_instances,
    qido::series_instances,
    wado::study,
    wado::series,
    wado::instance,
    wado::study_metadata,
    wado::series_metadata,
    wado::instance_metadata,
    wado::bulkdata,
    frames::frames,
    frames::frame_rendered,
    frames::instance_rendered,
    frames::instance_thumbnail,
    frames::series_thumbnail,
    frames::study_thumbnail,
))]
pub struct Doc;

/// The STOW-RS routes alone: what a node with the `ingest` role but not `api` serves.
pub fn stow_routes() -> Routes<DicomWeb> {
    routes()
        .into_iter()
        .filter(|(spec, _)| spec.method == Method::POST)
        .collect()
}

pub fn routes() -> Routes<DicomWeb> {
    let read = Access::Scope(Scope::ResultsRead);
    let write = Access::Scope(Scope::InferenceWrite);
    let r = |m, p, a, s| spec(m, p, a, s);
    vec![
        (
            r(
                Method::POST,
                "/dicomweb/studies",
                write,
                "STOW-RS: store instances (multipart/related; type=\"application/dicom\")",
            ),
            post(stow::store_any),
        ),
        (
            r(
                Method::POST,
                "/dicomweb/studies/{study}",
                write,
                "STOW-RS: store instances of one study",
            ),
            post(stow::store_study),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies",
                read,
                "QIDO-RS: search studies",
            )
            .audited("dicomweb.qido.studies"),
            get(qido::studies),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/series",
                read,
                "QIDO-RS: search series",
            )
            .audited("dicomweb.qido.all_series"),
            get(qido::all_series),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series",
                read,
                "QIDO-RS: search the series of a study",
            )
            .audited("dicomweb.qido.study_series"),
            get(qido::study_series),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/instances",
                read,
                "QIDO-RS: search instances",
            )
            .audited("dicomweb.qido.all_instances"),
            get(qido::all_instances),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/instances",
                read,
                "QIDO-RS: search the instances of a study",
            )
            .audited("dicomweb.qido.study_instances"),
            get(qido::study_instances),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/instances",
                read,
                "QIDO-RS: search the instances of a series",
            )
            .audited("dicomweb.qido.series_instances"),
            get(qido::series_instances),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}",
                read,
                "WADO-RS: retrieve a study (multipart/related; type=\"application/dicom\")",
            )
            .audited("dicomweb.wado.study"),
            get(wado::study),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}",
                read,
                "WADO-RS: retrieve a series",
            )
            .audited("dicomweb.wado.series"),
            get(wado::series),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
                read,
                "WADO-RS: retrieve an instance",
            )
            .audited("dicomweb.wado.instance"),
            get(wado::instance),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/metadata",
                read,
                "WADO-RS: metadata of a study (application/dicom+json)",
            )
            .audited("dicomweb.wado.study_metadata"),
            get(wado::study_metadata),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/metadata",
                read,
                "WADO-RS: metadata of a series",
            )
            .audited("dicomweb.wado.series_metadata"),
            get(wado::series_metadata),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
                read,
                "WADO-RS: metadata of an instance",
            )
            .audited("dicomweb.wado.instance_metadata"),
            get(wado::instance_metadata),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
                read,
                "WADO-RS: a top-level bulk data value of an instance",
            )
            .audited("dicomweb.wado.bulkdata"),
            get(wado::bulkdata),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
                read,
                "WADO-RS: frames of an instance (as stored, or application/octet-stream)",
            )
            .audited("dicomweb.frames.frames"),
            get(frames::frames),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
                read,
                "WADO-RS: one frame rendered (image/jpeg or image/png)",
            )
            .audited("dicomweb.frames.frame_rendered"),
            get(frames::frame_rendered),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
                read,
                "WADO-RS: an instance's first frame rendered (image/jpeg or image/png)",
            )
            .audited("dicomweb.frames.instance_rendered"),
            get(frames::instance_rendered),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/instances/{instance}/thumbnail",
                read,
                "WADO-RS: thumbnail of an instance",
            )
            .audited("dicomweb.frames.instance_thumbnail"),
            get(frames::instance_thumbnail),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/series/{series}/thumbnail",
                read,
                "WADO-RS: thumbnail of a series (its middle image)",
            )
            .audited("dicomweb.frames.series_thumbnail"),
            get(frames::series_thumbnail),
        ),
        (
            r(
                Method::GET,
                "/dicomweb/studies/{study}/thumbnail",
                read,
                "WADO-RS: thumbnail of a study (middle image of its first series with images)",
            )
            .audited("dicomweb.frames.study_thumbnail"),
            get(frames::study_thumbnail),
        ),
    ]
}
