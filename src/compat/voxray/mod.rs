//! VoxRay AI v2 imaging API (`specs/003_…txt`): predictions from an uploaded image or DICOM
//! file, a FHIR DiagnosticReport per patient, feature flags, and VoxRay's error body. Inference
//! runs on the node's engine (the pipeline's model); nothing is stored for uploads.
//!
//! - [`labels`]: VoxRay's diagnosis labels (`06_PNEUMONIA`) from our findings.
//! - [`predict`]: `POST /predict/image` (and `/v1/…`), `/v2/predict/image`, `/v2/predict/dicom`.
//! - [`anon`]: the keyed `patient_id_hash` (HMAC-SHA256, key from config or generated).
//! - [`report`]: `GET /v2/fhir/diagnostic-report/{patient_id}`.
//!
//! `GET /health` (VoxRay's fields are added to the native body by [`HealthFields`]) and
//! `GET /metrics` stay the native routes. Speech, chat and wake-word endpoints are not served.
//! Every refusal on a VoxRay route, the kernel's included, answers in VoxRay's error body
//! ([`Errors`]).

pub mod anon;
pub mod labels;
pub mod predict;
pub mod report;

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::CompatSettings;
use crate::api::dialect::{Cause, Dialect, Refusal};
use crate::api::response::timestamp;
use crate::api::routes::health;
use crate::api::{spec, Access, AppState, Routes};
use crate::auth::Scope;
use crate::fhir::FhirSettings;

/// `[compat.voxray_flags]`: VoxRay's v2 features that this node implements. The document's
/// other flags (voice, heatmap, worklist, batch, PWA) are features radstream does not have;
/// they are always reported `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Flags {
    /// `FF_ENSEMBLE_MODEL`: the `ensemble` block of `/v2/predict/image`.
    pub ensemble_model: bool,
    /// `FF_UNCERTAINTY_QUANTIFICATION`: the `uncertainty` block of `/v2/predict/image`.
    pub uncertainty_quantification: bool,
    /// `FF_DICOM_SUPPORT`: `/v2/predict/dicom` (503 when off).
    pub dicom_support: bool,
    /// `FF_FHIR_INTEGRATION`: `/v2/fhir/diagnostic-report/{patient_id}` (503 when off).
    pub fhir_integration: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Self {
            ensemble_model: true,
            uncertainty_quantification: true,
            dicom_support: true,
            fhir_integration: true,
        }
    }
}

/// What the handlers need: flags, environment name and the patient-id hash key.
#[derive(Clone)]
pub struct VoxRayContext {
    pub flags: Flags,
    pub environment: String,
    hash_key: Arc<SecretString>,
}

impl std::fmt::Debug for VoxRayContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoxRayContext")
            .field("flags", &self.flags)
            .field("environment", &self.environment)
            .field("hash_key", &"[redacted]")
            .finish()
    }
}

impl VoxRayContext {
    /// Reads (or generates into `data_dir`) the hash key.
    pub fn from_settings(
        compat: &CompatSettings,
        data_dir: &Path,
    ) -> Result<VoxRayContext, anon::KeyFileError> {
        Ok(VoxRayContext {
            flags: compat.voxray_flags,
            environment: compat.voxray_environment.clone(),
            hash_key: Arc::new(anon::hash_key(compat.voxray_hash_key.as_ref(), data_dir)?),
        })
    }

    /// VoxRay's `patient_id_hash` of a DICOM Patient ID.
    pub fn patient_hash(&self, patient_id: &str) -> String {
        anon::patient_hash(&self.hash_key, patient_id)
    }
}

/// State of the VoxRay routes.
#[derive(Clone, FromRef)]
pub struct VoxRay {
    pub app: AppState,
    pub voxray: VoxRayContext,
    /// `[fhir]`, for the DiagnosticReport.
    pub fhir: FhirSettings,
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    predict::image,
    predict::v1_image,
    predict::v2_image,
    predict::v2_dicom,
    report::diagnostic_report,
    feature_flags,
))]
pub struct Doc;

pub fn routes() -> Routes<VoxRay> {
    let write = Access::Scope(Scope::InferenceWrite);
    let read = Access::Scope(Scope::ResultsRead);
    vec![
        (
            spec(
                Method::POST,
                "/predict/image",
                write,
                "VoxRay v1: diagnosis of an uploaded X-ray (multipart image_file)",
            ),
            post(predict::image),
        ),
        (
            spec(
                Method::POST,
                "/v1/predict/image",
                write,
                "VoxRay v1 (explicit version): same as /predict/image",
            ),
            post(predict::v1_image),
        ),
        (
            spec(
                Method::POST,
                "/v2/predict/image",
                write,
                "VoxRay v2: diagnosis with ensemble members and uncertainty",
            ),
            post(predict::v2_image),
        ),
        (
            spec(
                Method::POST,
                "/v2/predict/dicom",
                write,
                "VoxRay v2: diagnosis of an uploaded DICOM file with anonymised metadata",
            ),
            post(predict::v2_dicom),
        ),
        (
            spec(
                Method::GET,
                "/v2/fhir/diagnostic-report/{patient_id}",
                read,
                "VoxRay v2: FHIR DiagnosticReport of a patient's latest result",
            ),
            get(report::diagnostic_report),
        ),
        (
            spec(
                Method::GET,
                "/api/feature-flags",
                read,
                "VoxRay: feature flags and environment",
            ),
            get(feature_flags),
        ),
    ]
}

/// A refusal in VoxRay's error body. `meta.request_id` is filled in by [`Errors`], which
/// finds the error in the answer's extensions.
#[derive(Debug, Clone)]
pub struct VoxError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl VoxError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> VoxError {
        VoxError {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    /// 400 naming the field and the problem.
    pub fn field(code: &'static str, field: &str, problem: impl Into<String>) -> VoxError {
        let problem = problem.into();
        VoxError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: format!("Invalid {field}: {problem}"),
            details: json!({ "field": field, "problem": problem }),
        }
    }

    pub fn with_details(mut self, details: Value) -> VoxError {
        self.details = details;
        self
    }

    /// 503 for a v2 feature switched off in `[compat.voxray_flags]`.
    pub fn disabled(flag: &str) -> VoxError {
        VoxError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "FEATURE_DISABLED",
            format!("Feature not enabled: {flag} is off on this node"),
        )
        .with_details(json!({ "flag": flag }))
    }

    /// 500 without internals; the cause is logged.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> VoxError {
        tracing::error!(error = %err, "VoxRay: {context}");
        VoxError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Internal server error",
        )
    }
}

fn body(code: &str, message: &str, details: Value, request_id: Value) -> Value {
    json!({
        "success": false,
        "error": { "code": code, "message": message, "details": details },
        "meta": { "request_id": request_id, "timestamp": timestamp() },
    })
}

impl IntoResponse for VoxError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(body(
                self.code,
                &self.message,
                self.details.clone(),
                Value::Null,
            )),
        )
            .into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

/// VoxRay's error code for a status the kernel (auth, limits, router) refused with.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "INVALID_REQUEST",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "UNPROCESSABLE_ENTITY",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMIT_EXCEEDED",
        StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE",
        _ => "INTERNAL_ERROR",
    }
}

/// VoxRay's error body for every refusal on its routes, with `meta.request_id` =
/// `X-Request-Id`: the handlers' own errors get the id; the kernel's refusals and plain-text
/// rejections are re-rendered (their structured facts, such as `required_scope`, kept in
/// `details`).
pub struct Errors;

/// [`Errors`]' name in the route list.
pub const DIALECT: &str = "voxray";

impl Dialect for Errors {
    fn name(&self) -> &'static str {
        DIALECT
    }

    fn claims(&self, path: &str) -> bool {
        matches!(
            path,
            "/predict/image" | "/v1/predict/image" | "/api/feature-flags"
        ) || path.starts_with("/v2/predict/")
            || path.starts_with("/v2/fhir/")
    }

    fn render(&self, refusal: Refusal<'_>) -> Option<Response> {
        let request_id = refusal.request_id.map_or(Value::Null, |s| json!(s));
        let status = refusal.status;
        let out = match refusal.cause {
            Cause::Own => {
                let own = refusal.extensions.get::<VoxError>()?;
                body(own.code, &own.message, own.details.clone(), request_id)
            }
            Cause::Kernel(e) => {
                let mut details = Map::new();
                if let Some(Value::Object(facts)) = &e.details {
                    for (k, v) in facts {
                        if !matches!(k.as_str(), "code" | "message" | "details") {
                            details.insert(k.clone(), v.clone());
                        }
                    }
                }
                body(
                    code_for(status),
                    &e.message,
                    Value::Object(details),
                    request_id,
                )
            }
            Cause::Plain(text) => {
                let message = if text.is_empty() {
                    status.canonical_reason().unwrap_or("Error")
                } else {
                    text
                };
                body(code_for(status), message, json!({}), request_id)
            }
        };
        let mut resp = (status, Json(out)).into_response();
        for (name, value) in refusal.headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                resp.headers_mut().append(name, value.clone());
            }
        }
        Some(resp)
    }
}

/// `GET /api/feature-flags`: VoxRay's twelve flags; only the four this node implements can be
/// on, from `[compat.voxray_flags]`.
#[utoipa::path(get, path = "/api/feature-flags", responses(
    (status = 200, description = "VoxRay: `{flags: {…twelve booleans}, environment}`", body = Object),
))]
async fn feature_flags(State(state): State<VoxRay>) -> Json<Value> {
    let f = state.voxray.flags;
    Json(json!({
        "flags": {
            "ensemble_model": f.ensemble_model,
            "uncertainty_quantification": f.uncertainty_quantification,
            "dicom_support": f.dicom_support,
            "fhir_integration": f.fhir_integration,
            "wake_word_detection": false,
            "multilingual_voice": false,
            "medical_vocabulary": false,
            "noise_handling": false,
            "advanced_heatmap": false,
            "worklist_management": false,
            "batch_processing": false,
            "mobile_pwa": false,
        },
        "environment": state.voxray.environment,
    }))
}

/// Whether the medical model (the pipeline's, else the first installed) is loaded.
pub fn model_loaded(state: &VoxRay) -> bool {
    state
        .app
        .engine
        .manifest(state.app.pipeline_model.as_deref())
        .is_ok()
}

/// VoxRay's health fields in the native `/health` body: `services` (the medical model;
/// speech, TTS and LLM services are not part of radstream and read `not_available`),
/// `timestamp`, and `errors` when unhealthy.
pub struct HealthFields;

impl health::HealthFields for HealthFields {
    fn add(&self, body: &mut Value, model_loaded: bool, errors: &[String]) {
        body["services"] = json!({
            "medical_model": if model_loaded { "loaded" } else { "not_loaded" },
            "stt_model": "not_available",
            "tts_service": "not_available",
            "llm_service": "not_available",
        });
        body["timestamp"] = json!(timestamp());
        if !errors.is_empty() {
            body["errors"] = json!(errors);
        }
    }
}
