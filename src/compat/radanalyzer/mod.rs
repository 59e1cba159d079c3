//! RadAnalyzer V3 (`specs/002_…txt`): landmark measurements over `/v3` with RadAnalyzer's
//! request and response shapes, its `{"error": "…"}` body, `x-api-key` authentication and
//! pay-for-value metering. The document measures the veterinary VHS/VLAS; this node measures
//! the chest-radiograph analogue, the cardiothoracic ratio (CTR), and returns it under the
//! document's field names plus a `measurement` block that says what it is (table in the guide, integrate/vendor-apis.md).
//!
//! - [`request`]: the JSON body (`image` | `images`, `uuid`, `render`), base64 and size checks.
//! - [`outcome`]: one image's prediction ([`predict_one`]): result code, landmarks, CTR,
//!   confidence tier, rejection, rendered image; the single-image and per-photo bodies.
//! - [`batch`]: best / median / std over the images of a batch or stream.
//! - [`render`]: the annotated image (landmarks, width lines, CTR text).
//! - [`billing`]: the document's billing rules and tiers, and the `billing` object.
//! - [`ledger`]: durable metering and per-patient history ([`ledger::settle`], one
//!   transaction per billed event), monthly usage.
//! - [`predict`]: `GET /v3/health`, `POST /v3/predict`, `POST /v3/predict/stream`.
//! - [`usage`]: the admin report (`GET /v1/radanalyzer/usage`, `radstream usage`).
//! - [`capture`]: `POST /v3/corners`, `/v3/rectify`, `/v3/preprocess`; [`capture::predict_photo`]
//!   (a prediction that rectifies a photo of a screen first).
//! - [`pop_session`]: `POST /v3/pop-session/start` and `/v3/pop-session` (capture sessions).
//!
//! For the picture-of-picture endpoints (their own module) the shared surface is
//! [`RadKey`] (the authenticated key), [`RadError`] (the error body), [`predict_one`] and
//! [`ledger::settle`] with [`billing::CallType::Session`].

pub mod batch;
pub mod billing;
pub mod capture;
pub mod ledger;
pub mod outcome;
pub mod pop_session;
pub mod predict;
pub mod render;
pub mod request;
pub mod usage;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::api::dialect::{Cause, Dialect, Refusal};
use crate::api::{spec, Access, AppState, Routes};
use crate::auth::{AuthMethod, Principal, Scope};

pub use outcome::{predict_one, PredictOutcome};

/// Largest decoded image ("Max image size 10 MB per image"), 10 MiB.
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Most images in one batch or stream request.
pub const MAX_IMAGES: usize = 10;
/// Body limit of the `/v3` routes: ten images of 10 MiB in base64, plus 1 MiB for the rest.
pub const MAX_BODY_BYTES: usize = MAX_IMAGES * MAX_IMAGE_BYTES.div_ceil(3) * 4 + (1 << 20);
/// The document's 403 message, for every missing, unknown or revoked key.
pub const INVALID_KEY: &str = "Invalid API key";
/// The document's 413 message.
pub const TOO_LARGE: &str = "Image exceeds maximum size of 10MB";

/// `[compat.radanalyzer]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RadAnalyzerSettings {
    /// Dollars per single-image call in the enterprise tier (2,001+ calls a month), which the
    /// document prices "Custom": set it to the agreed rate.
    pub enterprise_single_rate: f64,
    /// Dollars per session (batch, stream, capture session) in the enterprise tier.
    pub enterprise_session_rate: f64,
}

impl Default for RadAnalyzerSettings {
    fn default() -> Self {
        // Until an agreement says otherwise, enterprise volume pays the professional rates.
        Self {
            enterprise_single_rate: 2.0,
            enterprise_session_rate: 3.0,
        }
    }
}

impl RadAnalyzerSettings {
    /// Rates must be finite, non-negative dollar amounts.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, v) in [
            (
                "compat.radanalyzer.enterprise_single_rate",
                self.enterprise_single_rate,
            ),
            (
                "compat.radanalyzer.enterprise_session_rate",
                self.enterprise_session_rate,
            ),
        ] {
            if !v.is_finite() || !(0.0..=1_000_000.0).contains(&v) {
                return Err((
                    field,
                    "must be a dollar amount between 0 and 1000000".into(),
                ));
            }
        }
        Ok(())
    }

    /// The enterprise rates in cents.
    pub fn rates(&self) -> billing::Rates {
        billing::Rates {
            enterprise_single_cents: (self.enterprise_single_rate * 100.0).round() as i64,
            enterprise_session_cents: (self.enterprise_session_rate * 100.0).round() as i64,
        }
    }
}

/// What the `/v3` handlers need beyond the engine and database.
#[derive(Debug, Clone, Default)]
pub struct RadAnalyzerContext {
    /// The enterprise rates from `[compat.radanalyzer]`.
    pub rates: billing::Rates,
    /// Open picture-of-picture capture sessions (in memory).
    pub capture: std::sync::Arc<pop_session::Sessions>,
}

impl RadAnalyzerContext {
    pub fn from_settings(settings: &RadAnalyzerSettings) -> RadAnalyzerContext {
        RadAnalyzerContext {
            rates: settings.rates(),
            capture: Default::default(),
        }
    }
}

/// State of the `/v3` routes.
#[derive(Clone, FromRef)]
pub struct RadAnalyzer {
    pub app: AppState,
    pub radanalyzer: RadAnalyzerContext,
}

pub fn routes() -> Routes<RadAnalyzer> {
    // Customer keys are made with `radstream keys create --scope inference:write`.
    let write = Access::Scope(Scope::InferenceWrite);
    vec![
        (
            spec(
                Method::GET,
                "/v3/health",
                write,
                "RadAnalyzer V3: service health and loaded landmark models",
            ),
            get(predict::health),
        ),
        (
            spec(
                Method::POST,
                "/v3/predict",
                write,
                "RadAnalyzer V3: CTR from landmarks for one image or a batch of up to 10",
            )
            .with_body_limit(MAX_BODY_BYTES),
            post(predict::predict),
        ),
        (
            spec(
                Method::POST,
                "/v3/predict/stream",
                write,
                "RadAnalyzer V3: a batch answered as server-sent events",
            )
            .with_body_limit(MAX_BODY_BYTES),
            post(predict::stream),
        ),
    ]
    .into_iter()
    .chain(capture::routes())
    .collect()
}

/// A refusal in RadAnalyzer's body: `{"error": message}`, plus `field` when one request field
/// is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

impl RadError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> RadError {
        RadError {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// 400 naming `field`.
    pub fn field(field: &str, message: impl Into<String>) -> RadError {
        RadError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// 400 "Missing required field: <field>" (the document's example).
    pub fn missing(field: &str) -> RadError {
        RadError::field(field, format!("Missing required field: {field}"))
    }

    /// 403 "Invalid API key".
    pub fn invalid_key() -> RadError {
        RadError::new(StatusCode::FORBIDDEN, INVALID_KEY)
    }

    /// 413 for an image over 10 MiB, naming the field.
    pub fn too_large(field: &str) -> RadError {
        RadError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: TOO_LARGE.into(),
            field: Some(field.to_string()),
        }
    }

    /// 500 "Internal server error"; the cause is logged, never sent.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> RadError {
        tracing::error!(error = %err, "RadAnalyzer: {context}");
        RadError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    /// 503 with `message`.
    pub fn unavailable(message: impl Into<String>) -> RadError {
        RadError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// The body.
    pub fn body(&self) -> RadErrorBody {
        RadErrorBody {
            error: self.message.clone(),
            field: self.field.clone(),
        }
    }
}

/// RadAnalyzer's refusal: `{"error"}`, plus `field` when one is at fault.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RadErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The credential header of every `/v3` route.
pub const KEY_HEADER: &str = "RadAnalyzer API key (`rsk_…`); missing or unknown: 403";

/// A prediction request.
pub const PREDICT_BODY: &str = "`{image}` (base64 JPEG or PNG, at most 10 MiB decoded) or \
    `{images}` (a batch of at most 10), with `uuid` (patient identifier: history and the 24 h \
    recheck grace) and `render` (return `rendered_image`, default false)";

/// A picture-of-picture request.
pub const PHOTO_BODY: &str = "`{image}`: a base64 JPEG or PNG photo, at most 10 MiB decoded";

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    predict::health,
    predict::predict,
    predict::stream,
    capture::corners,
    capture::rectify,
    capture::preprocess,
    pop_session::start,
    pop_session::frame,
    usage::usage,
))]
pub struct Doc;

impl IntoResponse for RadError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The API key a `/v3` request was authenticated with. RadAnalyzer meters per key, so a JWT
/// (accepted elsewhere) is refused here with the same 403 as a missing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadKey {
    /// `api_keys.id`.
    pub key_id: i64,
    /// The key's name.
    pub name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for RadKey {
    type Rejection = RadError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<RadKey, RadError> {
        match parts.extensions.get::<Principal>() {
            Some(Principal {
                method: AuthMethod::ApiKey,
                key_id: Some(key_id),
                subject,
                ..
            }) => Ok(RadKey {
                key_id: *key_id,
                name: subject.clone(),
            }),
            _ => Err(RadError::invalid_key()),
        }
    }
}

/// RadAnalyzer's `{"error": "…"}` body for every refusal under `/v3`: the handlers' own
/// pass through; the kernel's refusals and plain-text rejections are re-rendered
/// (`Retry-After` kept). Every authentication failure (401) becomes the document's 403
/// "Invalid API key".
pub struct Errors;

/// [`Errors`]' name in the route list.
pub const DIALECT: &str = "radanalyzer";

impl Dialect for Errors {
    fn name(&self) -> &'static str {
        DIALECT
    }

    fn claims(&self, path: &str) -> bool {
        path == "/v3" || path.starts_with("/v3/")
    }

    fn render(&self, refusal: Refusal<'_>) -> Option<Response> {
        let status = refusal.status;
        let given = match refusal.cause {
            Cause::Own => return None,
            Cause::Kernel(e) => e.message.as_str(),
            Cause::Plain(text) => text,
        };
        let err = match status {
            StatusCode::UNAUTHORIZED => RadError::invalid_key(),
            StatusCode::PAYLOAD_TOO_LARGE => RadError::new(status, TOO_LARGE),
            StatusCode::INTERNAL_SERVER_ERROR => RadError::new(status, "Internal server error"),
            _ if given.is_empty() => {
                RadError::new(status, status.canonical_reason().unwrap_or("Error"))
            }
            _ => RadError::new(status, given),
        };
        let mut out = err.into_response();
        refusal.keep_headers(&mut out, &[header::RETRY_AFTER]);
        Some(out)
    }
}

/// What `/v3/health` and the capture session start report about the models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelFacts {
    /// Members of the landmark ensemble (0 when no landmark model is installed).
    pub models_loaded: usize,
    /// Models of the picture-of-picture pipeline (classical computer vision: none).
    pub pop_models_loaded: usize,
    /// Whether the picture-of-picture endpoints are served.
    pub pop_pipeline_enabled: bool,
    /// Version of the landmark model (empty when none).
    pub model_version: String,
}

/// Whether this node serves the picture-of-picture endpoints ([`capture`], [`pop_session`]).
pub const POP_PIPELINE_ENABLED: bool = true;

/// The landmark model's facts.
pub fn model_facts(state: &RadAnalyzer) -> ModelFacts {
    let model = state.app.engine.landmark_models().into_iter().next();
    ModelFacts {
        models_loaded: model.as_ref().map_or(0, |m| m.members.len()),
        pop_models_loaded: 0,
        pop_pipeline_enabled: POP_PIPELINE_ENABLED,
        model_version: model.map(|m| m.version).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn the_body_limit_fits_ten_images_of_ten_mib_in_base64() {
        let one = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            vec![0u8; MAX_IMAGE_BYTES],
        )
        .len();
        assert!(MAX_BODY_BYTES >= MAX_IMAGES * one + 1000);
        assert!(MAX_BODY_BYTES < MAX_IMAGES * one + (2 << 20));
    }

    async fn finish_error(resp: Response) -> Response {
        crate::api::dialect::answer(&Errors, None, resp).await
    }

    #[tokio::test]
    async fn native_refusals_take_the_document_shape() {
        use axum::body::to_bytes;
        let native = crate::api::ApiError::new(StatusCode::UNAUTHORIZED, "Token missing");
        let resp = finish_error(native.into_response()).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, json!({ "error": "Invalid API key" }));

        let plain = (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response();
        let resp = finish_error(plain).await;
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], TOO_LARGE);

        let ours = RadError::missing("image").into_response();
        let resp = finish_error(ours).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({ "error": "Missing required field: image", "field": "image" })
        );

        let scope = crate::api::ApiError::new(StatusCode::FORBIDDEN, "Missing scope: admin")
            .with_details(json!({ "required_scope": "admin" }));
        let resp = finish_error(scope.into_response()).await;
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, json!({ "error": "Missing scope: admin" }));
    }
}
