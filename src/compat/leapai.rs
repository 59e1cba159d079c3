//! LeapAI CXR API (`specs/000_…txt`): `POST /single_inference`, `POST /bulk_inference`, in
//! its `{"Result","Data","Message"}` envelope with its error messages verbatim. Images are
//! read from server paths confined to `compat.input_roots`; result files are written under
//! `compat.output_roots`. Inference runs on the node's engine (the pipeline's model).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::paths::{PathProblem, Roots};
use crate::api::dialect::{Cause, Dialect, Refusal};
use crate::api::{spec, Access, AppState, Routes};
use crate::auth::{Principal, Scope};
use crate::events::{self, EventType};
use crate::inference::ImageResult;
use crate::store::InstanceHeader;
use crate::supervisor::Background;

#[derive(utoipa::OpenApi)]
#[openapi(paths(single, bulk))]
pub struct Doc;

/// LeapAI's envelope of every answer, refusals included (fields in the order `json!` wrote
/// them).
#[derive(Serialize, ToSchema)]
pub struct LeapAiEnvelope {
    /// The answer; null on failure.
    #[serde(rename = "Data")]
    pub data: Value,
    #[serde(rename = "Message")]
    pub message: String,
    /// `Success`, `Warning` or `Failure`.
    #[serde(rename = "Result")]
    pub result: &'static str,
}

/// Paths the adapter may touch, canonicalised at start.
#[derive(Debug, Clone, Default)]
pub struct LeapAiPaths {
    pub input: Roots,
    pub output: Roots,
}

/// State of the LeapAI routes.
#[derive(Clone, FromRef)]
pub struct LeapAi {
    pub app: AppState,
    pub leapai: LeapAiPaths,
    /// The bulk jobs, stopped with the node.
    pub jobs: Background,
}

pub fn routes() -> Routes<LeapAi> {
    let write = Access::Scope(Scope::InferenceWrite);
    vec![
        (
            spec(
                Method::POST,
                "/single_inference",
                write,
                "LeapAI: infer one DICOM file by server path",
            ),
            post(single),
        ),
        (
            spec(
                Method::POST,
                "/bulk_inference",
                write,
                "LeapAI: infer every DICOM file of a server folder (background job)",
            ),
            post(bulk),
        ),
    ]
}

/// LeapAI's envelope for the kernel's refusals on its routes (`WWW-Authenticate` and
/// `Retry-After` kept); the handlers' own errors and plain-text rejections pass as they are.
pub struct Errors;

/// [`Errors`]' name in the route list.
pub const DIALECT: &str = "leapai";

impl Dialect for Errors {
    fn name(&self) -> &'static str {
        DIALECT
    }

    fn claims(&self, _path: &str) -> bool {
        false
    }

    fn render(&self, refusal: Refusal<'_>) -> Option<Response> {
        let Cause::Kernel(e) = refusal.cause else {
            return None;
        };
        let mut out = Failure(refusal.status, e.message.clone()).into_response();
        refusal.keep_headers(&mut out, &[header::WWW_AUTHENTICATE, header::RETRY_AFTER]);
        Some(out)
    }
}

/// A refusal in LeapAI's shape.
#[derive(Debug)]
pub struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(LeapAiEnvelope {
                data: Value::Null,
                message: self.1,
                result: "Failure",
            }),
        )
            .into_response()
    }
}

fn bad(message: String) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message)
}

fn internal(message: &str) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
}

fn success(result: &'static str, data: Value, message: String) -> Response {
    Json(LeapAiEnvelope {
        data,
        message,
        result,
    })
    .into_response()
}

/// The body as a JSON object, or LeapAI's 415.
fn body_object(body: &Bytes) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Request body is not valid JSON".into(),
        )),
    }
}

/// How a JSON value appears after "...: " in LeapAI's messages.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn input_path(roots: &Roots, field: &str, v: &Value, not_found: &str) -> Result<PathBuf, Failure> {
    let Some(raw) = v.as_str() else {
        return Err(bad(format!("Invalid path {field}: {}", shown(v))));
    };
    roots.existing(raw).map_err(|p| match p {
        PathProblem::Invalid => bad(format!("Invalid path {field}: {raw}")),
        PathProblem::NotFound => bad(format!("{not_found}: {raw}")),
    })
}

/// Validates and creates the output folder.
async fn output_folder(roots: &Roots, v: &Value) -> Result<PathBuf, Failure> {
    let Some(raw) = v.as_str() else {
        return Err(bad(format!(
            "Invalid path output_folder_path: {}",
            shown(v)
        )));
    };
    let dir = roots
        .writable(raw)
        .map_err(|_| bad(format!("Invalid path output_folder_path: {raw}")))?;
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        tracing::warn!(folder = %dir.display(), error = %e, "LeapAI output folder");
        internal(&format!("Unable to create output folder: {raw}"))
    })?;
    Ok(dir)
}

fn is_dcm(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
}

/// LeapAI's findings and metadata for one image.
fn data_for(r: &ImageResult, h: &InstanceHeader, patient_id: &str) -> Value {
    let findings: Vec<Value> = r
        .labels
        .iter()
        .map(|l| json!({ "name": l.name, "presence": l.present, "confidence": l.probability }))
        .collect();
    let text = |v: &Option<String>| v.as_deref().unwrap_or("").trim().to_string();
    json!({
        "findings": findings,
        "metadata": {
            "model_version": format!("{}-{}", r.model_id, r.model_version),
            "patient_id": patient_id,
            "patient_name": text(&h.patient_name),
            "sop_instance_uid": h.sop_instance_uid.as_ref().map(|u| u.as_str().to_string()).unwrap_or_default(),
            "age": text(&h.patient_age),
            "sex": text(&h.patient_sex),
        },
    })
}

/// Reads the header and runs the model on one confined file. `Err` is LeapAI's answer.
async fn infer_file(
    state: &LeapAi,
    path: &Path,
    shown_path: &str,
    patient_override: Option<&str>,
) -> Result<(Value, bool, String), Failure> {
    let p = path.to_path_buf();
    let header = tokio::task::spawn_blocking(move || InstanceHeader::read(&p))
        .await
        .map_err(|_| internal("Single Inference failed due to an internal error"))?
        .map_err(|_| {
            bad(format!(
                "Invalid DICOM image, unable to fetch patient ID: {shown_path}"
            ))
        })?;
    let patient_id = match patient_override {
        Some(p) => p.to_string(),
        None => match header.patient_id.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => {
                return Err(bad(format!(
                    "Patient ID is empty or None in the DICOM file: {shown_path}"
                )))
            }
        },
    };
    let model = state.app.pipeline_model.as_deref();
    let r = match state.app.engine.infer_dicom(model, path).await {
        Ok(r) => r,
        Err(e) if e.is_input_error() => {
            return Err(bad(format!(
                "Invalid DICOM image, unable to fetch patient ID: {shown_path}"
            )))
        }
        Err(e) => {
            tracing::error!(error = %e, "LeapAI single inference");
            return Err(internal("Single Inference failed due to an internal error"));
        }
    };
    let analysed = r.applicable && !r.rejected;
    let note = r.reason.clone().unwrap_or_default();
    Ok((data_for(&r, &header, &patient_id), analysed, note))
}

/// `<name>.json` in `dir`, confined to the output roots and never written through a link
/// (see [`Roots::write_file`]).
async fn write_json(
    roots: &Roots,
    dir: &Path,
    name: &str,
    data: &Value,
) -> std::io::Result<PathBuf> {
    let text = serde_json::to_vec_pretty(data).unwrap_or_default();
    let (roots, dir, name) = (roots.clone(), dir.to_path_buf(), format!("{name}.json"));
    tokio::task::spawn_blocking(move || roots.write_file(&dir, &name, &text))
        .await
        .map_err(std::io::Error::other)?
}

/// The body: `{"input_image_path", "patient_id"?, "save_to_disk", "output_folder_path"?}`:
/// the server path of a `.dcm` file under `compat.input_roots`, and, when `save_to_disk`,
/// a folder under `compat.output_roots`. Errors use the same envelope with `Result`
/// `Failure` and LeapAI's messages.
#[utoipa::path(post, path = "/single_inference",
    request_body(content = Object, description = "`{input_image_path, patient_id?, save_to_disk, output_folder_path?}`"),
    responses((status = 200, description = "LeapAI envelope: `Data` holds `{findings, metadata}`", body = LeapAiEnvelope)),
)]
async fn single(State(state): State<LeapAi>, body: Bytes) -> Result<Response, Failure> {
    let m = body_object(&body)?;
    let input = m
        .get("input_image_path")
        .filter(|v| !v.is_null())
        .ok_or_else(|| bad("input_image_path is required in the request".into()))?;
    let save = m
        .get("save_to_disk")
        .filter(|v| !v.is_null())
        .ok_or_else(|| bad("save_to_disk is required in the request".into()))?;
    let path = input_path(
        &state.leapai.input,
        "input_image_path",
        input,
        "Input image path does not exist",
    )?;
    let shown_path = shown(input);
    if !path.is_file() || !is_dcm(&path) {
        return Err(bad(format!(
            "Requested image is not a DICOM file: {shown_path}"
        )));
    }
    let patient = match m.get("patient_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(bad(format!(
                "Invalid patient_id: '{}' in request body",
                shown(other)
            )))
        }
    };
    let save = save.as_bool().ok_or_else(|| {
        bad(format!(
            "Invalid value for save_to_disk, should be a boolean: {}",
            shown(save)
        ))
    })?;
    let out_dir = if save {
        let out = m
            .get("output_folder_path")
            .filter(|v| !v.is_null())
            .ok_or_else(|| {
                bad(
                    "output_folder_path is required in the request when save_to_disk is True"
                        .into(),
                )
            })?;
        Some(output_folder(&state.leapai.output, out).await?)
    } else {
        None
    };
    let (mut data, analysed, note) =
        infer_file(&state, &path, &shown_path, patient.as_deref()).await?;
    let mut message = if analysed {
        "Inference completed successfully".to_string()
    } else {
        format!("Image not analysed: {note}")
    };
    if let Some(dir) = out_dir {
        let name = data["metadata"]["sop_instance_uid"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let p = write_json(&state.leapai.output, &dir, &name, &data)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "LeapAI result file");
                internal("Single Inference failed due to an internal error")
            })?;
        data["output_file"] = json!(p.display().to_string());
        message.push_str(&format!("; result saved to {}", p.display()));
    }
    Ok(success(
        if analysed { "Success" } else { "Warning" },
        data,
        message,
    ))
}

/// The body: `{"input_folder_path", "output_folder_path"}`; progress comes as
/// `bulk.progress` events.
#[utoipa::path(post, path = "/bulk_inference",
    request_body(content = Object, description = "`{input_folder_path, output_folder_path}`"),
    responses((status = 200, description = "LeapAI envelope with `Data` null", body = LeapAiEnvelope)),
)]
async fn bulk(
    State(state): State<LeapAi>,
    principal: Principal,
    body: Bytes,
) -> Result<Response, Failure> {
    let m = body_object(&body)?;
    let input = m
        .get("input_folder_path")
        .filter(|v| !v.is_null())
        .ok_or_else(|| bad("input_folder_path is required in the request".into()))?;
    let output = m
        .get("output_folder_path")
        .filter(|v| !v.is_null())
        .ok_or_else(|| bad("output_folder_path is required in the request".into()))?;
    let folder = input_path(
        &state.leapai.input,
        "input_folder_path",
        input,
        "Input folder path does not exist",
    )?;
    if !folder.is_dir() {
        return Err(bad(format!(
            "Invalid path input_folder_path: {}",
            shown(input)
        )));
    }
    let mut files = Vec::new();
    if let Ok(mut rd) = tokio::fs::read_dir(&folder).await {
        while let Ok(Some(entry)) = rd.next_entry().await {
            let p = entry.path();
            // Each file is confined on its own, so a symlink out of the root is skipped.
            if is_dcm(&p) {
                if let Ok(c) = state.leapai.input.existing(&p.display().to_string()) {
                    if c.is_file() {
                        files.push(c);
                    }
                }
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(bad("No Dicom images found in the provided path".into()));
    }
    let out_dir = output_folder(&state.leapai.output, output).await?;
    let bulk_id = uuid::Uuid::new_v4().to_string();
    let total = files.len();
    tracing::info!(bulk_id, total, by = %principal.subject, "LeapAI bulk inference started");
    let jobs = state.jobs.clone();
    jobs.spawn(
        "LeapAI bulk inference",
        run_bulk(state, Arc::new(files), out_dir, bulk_id.clone()),
    );
    Ok(success(
        "Success",
        Value::Null,
        format!(
            "Bulk inference started for {total} DICOM images (job {bulk_id}); progress is \
             published as bulk.progress events"
        ),
    ))
}

/// Runs a bulk request file by file, writing one JSON file each and a `bulk.progress` event
/// after each, then `bulk.completed`.
async fn run_bulk(state: LeapAi, files: Arc<Vec<PathBuf>>, out_dir: PathBuf, bulk_id: String) {
    let total = files.len();
    let (mut ok, mut failed) = (0usize, 0usize);
    for (i, path) in files.iter().enumerate() {
        let shown_path = path.display().to_string();
        let outcome = match infer_file(&state, path, &shown_path, None).await {
            Ok((data, _, _)) => {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("result")
                    .to_string();
                match write_json(&state.leapai.output, &out_dir, &name, &data).await {
                    Ok(p) => Ok(p.display().to_string()),
                    Err(e) => Err(format!("writing the result: {e}")),
                }
            }
            Err(Failure(_, message)) => Err(message),
        };
        let payload = match &outcome {
            Ok(out) => {
                ok += 1;
                json!({"bulk_id": bulk_id, "done": i + 1, "total": total, "file": shown_path, "output_file": out})
            }
            Err(e) => {
                failed += 1;
                json!({"bulk_id": bulk_id, "done": i + 1, "total": total, "file": shown_path, "error": e})
            }
        };
        emit(&state, EventType::BulkProgress, &payload).await;
    }
    emit(
        &state,
        EventType::BulkCompleted,
        &json!({"bulk_id": bulk_id, "total": total, "succeeded": ok, "failed": failed, "output_folder": out_dir.display().to_string()}),
    )
    .await;
}

async fn emit(state: &LeapAi, kind: EventType, payload: &Value) {
    let write = async {
        let mut tx = state.app.db.begin_write().await?;
        events::append(&mut tx, state.app.db.backend, kind, None, None, payload).await?;
        tx.commit().await
    };
    match write.await {
        Ok(()) => state.app.bus.notify(),
        Err(e) => tracing::warn!(error = %e, "writing a bulk event failed"),
    }
}
