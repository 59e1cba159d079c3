//! VoxRay predictions from uploads (`multipart/form-data`): `image_file` (PNG/JPEG) for
//! `/predict/image`, `/v1/predict/image` and `/v2/predict/image`; `dicom_file` for
//! `/v2/predict/dicom`. Uploads are inferred and dropped, never stored.

use std::path::PathBuf;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::labels::{self, round3};
use super::VoxError;
use super::VoxRay;
use crate::dicomweb::multipart::{split_params, MultipartError, MultipartReader};
use crate::inference::{ImageResult, InferenceError};
use crate::store::InstanceHeader;

/// Largest image VoxRay accepts ("Image >10MB" is its 413 example).
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

/// One uploaded file.
struct Upload {
    bytes: Vec<u8>,
}

fn boundary(headers: &HeaderMap) -> Result<String, VoxError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let params = split_params(ct);
    if !params[0].eq_ignore_ascii_case("multipart/form-data") {
        return Err(VoxError::field(
            "INVALID_REQUEST",
            "Content-Type",
            format!("expected multipart/form-data, got \"{ct}\""),
        ));
    }
    params
        .iter()
        .skip(1)
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            VoxError::field(
                "INVALID_REQUEST",
                "Content-Type",
                "multipart/form-data without a boundary",
            )
        })
}

/// The `name` parameter of a part's Content-Disposition.
fn part_name(disposition: Option<&str>) -> Option<String> {
    split_params(disposition?).iter().skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn multipart_error(e: MultipartError, limit: usize) -> VoxError {
    match e {
        MultipartError::TooLarge(_) => too_large(limit),
        other => VoxError::field("INVALID_REQUEST", "body", other.to_string()),
    }
}

fn too_large(limit: usize) -> VoxError {
    VoxError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("Payload too large: the file exceeds {limit} bytes"),
    )
    .with_details(json!({ "max_bytes": limit }))
}

/// Reads the form field `field` (other fields are skipped), at most `part_limit` bytes.
async fn read_field(
    state: &VoxRay,
    headers: &HeaderMap,
    body: Body,
    field: &'static str,
    part_limit: usize,
) -> Result<Upload, VoxError> {
    let boundary = boundary(headers)?;
    let body_limit = state.app.http_limits.max_body_bytes;
    let mut reader = MultipartReader::new(body.into_data_stream(), &boundary, body_limit);
    while let Some(part) = reader
        .next_part()
        .await
        .map_err(|e| multipart_error(e, body_limit))?
    {
        if part_name(part.get("content-disposition")).as_deref() != Some(field) {
            continue;
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = reader
            .chunk()
            .await
            .map_err(|e| multipart_error(e, body_limit))?
        {
            if bytes.len() + chunk.len() > part_limit {
                return Err(too_large(part_limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.is_empty() {
            return Err(VoxError::field(
                "INVALID_REQUEST",
                field,
                "the file is empty",
            ));
        }
        return Ok(Upload { bytes });
    }
    Err(VoxError::field(
        "INVALID_REQUEST",
        field,
        "required form field is missing",
    ))
}

fn model_missing() -> VoxError {
    VoxError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "MODEL_NOT_LOADED",
        "Service unavailable: the medical model is not loaded",
    )
}

/// 422 for a readable image that is not a chest radiograph the model applies to.
fn not_analysable(r: &ImageResult) -> Option<VoxError> {
    if r.applicable && !r.rejected {
        return None;
    }
    let reason = r.reason.clone().unwrap_or_default();
    let code = if r.rejected {
        "IMAGE_REJECTED"
    } else {
        "NOT_APPLICABLE"
    };
    Some(
        VoxError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            format!("Unprocessable image: {reason}"),
        )
        .with_details(json!({ "reason": reason, "gate_probability": r.gate_probability })),
    )
}

fn inference_error(e: InferenceError, code: &'static str, field: &str) -> VoxError {
    if e.is_input_error() {
        VoxError::field(code, field, e.to_string())
    } else if matches!(e, InferenceError::UnknownModel(_)) {
        model_missing()
    } else {
        VoxError::internal("inference", e)
    }
}

/// Runs the engine on an uploaded image; only analysed results come back.
async fn infer_image(state: &VoxRay, up: &Upload) -> Result<ImageResult, VoxError> {
    if !super::model_loaded(state) {
        return Err(model_missing());
    }
    let r = state
        .app
        .engine
        .infer_image_bytes(state.app.pipeline_model.as_deref(), &up.bytes)
        .await
        .map_err(|e| inference_error(e, "INVALID_IMAGE_FORMAT", "image_file"))?;
    match not_analysable(&r) {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

/// VoxRay's v1 answer: exactly these two fields.
#[derive(Serialize, ToSchema)]
pub struct Prediction {
    pub confidence: f64,
    /// e.g. `06_PNEUMONIA`, `00_NORMAL_LUNG` (table in the guide, integrate/vendor-apis.md).
    pub diagnosis: String,
}

fn v1_prediction(r: &ImageResult) -> Prediction {
    let (diagnosis, confidence) = labels::diagnosis(&r.labels);
    Prediction {
        confidence: round3(confidence),
        diagnosis,
    }
}

fn v1_body(r: &ImageResult) -> Value {
    serde_json::to_value(v1_prediction(r)).unwrap_or_default()
}

/// The multipart upload of the image answers.
const IMAGE_FILE: &str = "`multipart/form-data` with `image_file`: a PNG or JPEG chest X-ray, \
    at most 10 MiB";

/// `POST /v1/predict/image`: exactly `{"diagnosis","confidence"}`.
#[utoipa::path(post, path = "/v1/predict/image",
    request_body(content = String, content_type = "multipart/form-data", description = IMAGE_FILE),
    responses((status = 200, description = "VoxRay v1: exactly `{diagnosis, confidence}`", body = Prediction)),
)]
pub async fn v1_image(
    State(state): State<VoxRay>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Prediction>, VoxError> {
    let up = read_field(&state, &headers, body, "image_file", MAX_IMAGE_BYTES).await?;
    let r = infer_image(&state, &up).await?;
    Ok(Json(v1_prediction(&r)))
}

/// `POST /predict/image`: [`v1_image`] without the version in the path.
#[utoipa::path(post, path = "/predict/image",
    request_body(content = String, content_type = "multipart/form-data", description = IMAGE_FILE),
    responses((status = 200, description = "VoxRay v1: exactly `{diagnosis, confidence}`", body = Prediction)),
)]
pub async fn image(
    state: State<VoxRay>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Prediction>, VoxError> {
    v1_image(state, headers, body).await
}

/// Names of the ensemble members (their file stems, `member0`…).
fn member_names(state: &VoxRay, r: &ImageResult) -> Vec<String> {
    let n = r.labels.first().map_or(0, |l| l.member_probabilities.len());
    let files: Vec<String> = state
        .app
        .engine
        .models()
        .into_iter()
        .find(|m| m.id == r.model_id)
        .map(|m| m.members.into_iter().map(|f| f.file).collect())
        .unwrap_or_default();
    (0..n)
        .map(|i| {
            files
                .get(i)
                .map(|f| f.trim_end_matches(".onnx").to_string())
                .unwrap_or_else(|| format!("member{i}"))
        })
        .collect()
}

/// `POST /v2/predict/image`: the diagnosis with the `uncertainty` and `ensemble` blocks their
/// flags allow, and `meta`; both flags off gives the v1 body, as the document's fallback says.
#[utoipa::path(post, path = "/v2/predict/image",
    request_body(content = String, content_type = "multipart/form-data", description = IMAGE_FILE),
    responses((status = 200, description = "VoxRay v2: `{diagnosis, confidence, uncertainty, \
        ensemble, meta}`; blocks whose flag is off are left out (both off: the v1 body)", body = Object)),
)]
pub async fn v2_image(
    State(state): State<VoxRay>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, VoxError> {
    let t0 = Instant::now();
    let flags = state.voxray.flags;
    let up = read_field(&state, &headers, body, "image_file", MAX_IMAGE_BYTES).await?;
    let r = infer_image(&state, &up).await?;
    let mut out = v1_body(&r);
    if !flags.ensemble_model && !flags.uncertainty_quantification {
        return Ok(Json(out));
    }
    if let (true, Some(u)) = (flags.uncertainty_quantification, &r.uncertainty) {
        out["uncertainty"] = json!({
            "epistemic": round3(u.epistemic),
            "aleatoric": round3(u.aleatoric),
            "total": round3(u.total),
            "should_review": u.should_review,
            "spread": round3(u.spread),
            "confidence_tier": u.confidence,
        });
    }
    if flags.ensemble_model {
        let names = member_names(&state, &r);
        let mut individual = Map::new();
        for (i, name) in names.iter().enumerate() {
            let (d, c) = labels::member_diagnosis(&r.labels, i);
            individual.insert(
                name.clone(),
                json!({ "diagnosis": d, "confidence": round3(c) }),
            );
        }
        out["ensemble"] = json!({
            "voting_method": "soft",
            "models_used": names,
            "individual_predictions": individual,
            "disagreement_score": r.uncertainty.as_ref().map_or(0.0, |u| round3(u.disagreement_score)),
        });
    }
    out["meta"] = json!({
        "model_version": format!("{}-{}", r.model_id, r.model_version),
        "inference_time_ms": t0.elapsed().as_millis() as u64,
    });
    Ok(Json(out))
}

/// Removes the staged upload however the request ends.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "removing a VoxRay upload");
            }
        }
    }
}

fn invalid_dicom(problem: impl Into<String>) -> VoxError {
    VoxError::field("INVALID_DICOM", "dicom_file", problem)
}

/// `POST /v2/predict/dicom`: the diagnosis and anonymised metadata (Patient ID as the keyed
/// hash; no name, birth date or sex). The file is staged under `<data_dir>/tmp` for the
/// decoder and removed after the request.
#[utoipa::path(post, path = "/v2/predict/dicom",
    request_body(content = String, content_type = "multipart/form-data",
        description = "`multipart/form-data` with `dicom_file`: a DICOM Part 10 file (CR/DX chest)"),
    responses((status = 200, description = "VoxRay v2: `{diagnosis, confidence, dicom_metadata: \
        {patient_id_hash, study_instance_uid, study_date, modality}, image_extracted, \
        anonymization_applied}`; 503 `FEATURE_DISABLED` when `dicom_support` is off", body = Object)),
)]
pub async fn v2_dicom(
    State(state): State<VoxRay>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, VoxError> {
    if !state.voxray.flags.dicom_support {
        return Err(VoxError::disabled("dicom_support"));
    }
    let limit = state.app.http_limits.max_body_bytes;
    let up = read_field(&state, &headers, body, "dicom_file", limit).await?;
    if !super::model_loaded(&state) {
        return Err(model_missing());
    }
    let path = state
        .app
        .files
        .data_dir()
        .join("tmp")
        .join(format!("voxray-{}.dcm", uuid::Uuid::new_v4().simple()));
    tokio::fs::write(&path, &up.bytes)
        .await
        .map_err(|e| VoxError::internal("staging the upload", e))?;
    let staged = Staged(path);
    let p = staged.0.clone();
    let header = tokio::task::spawn_blocking(move || InstanceHeader::read(&p))
        .await
        .map_err(|e| VoxError::internal("reading the DICOM header", e))?
        .map_err(|e| invalid_dicom(format!("not a readable DICOM Part 10 file ({e})")))?;
    let r = state
        .app
        .engine
        .infer_dicom(state.app.pipeline_model.as_deref(), &staged.0)
        .await
        .map_err(|e| inference_error(e, "INVALID_DICOM", "dicom_file"))?;
    drop(staged);
    if let Some(e) = not_analysable(&r) {
        return Err(e);
    }
    let (diagnosis, confidence) = labels::diagnosis(&r.labels);
    let text = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let patient_hash = text(&header.patient_id).map(|p| state.voxray.patient_hash(&p));
    tracing::info!(
        study_uid = header.study_uid.as_ref().map(|u| u.as_str()).unwrap_or(""),
        %diagnosis,
        "VoxRay DICOM prediction"
    );
    Ok(Json(json!({
        "diagnosis": diagnosis,
        "confidence": round3(confidence),
        "dicom_metadata": {
            "patient_id_hash": patient_hash,
            "study_instance_uid": header.study_uid.as_ref().map(|u| u.as_str().to_string()),
            "study_date": text(&header.study_date),
            "modality": text(&header.modality),
        },
        "image_extracted": true,
        "anonymization_applied": true,
    })))
}
