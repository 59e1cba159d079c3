//! Pi Health Triage (`specs/004_…txt`): `POST /api/v1/health/analyze` queues an analysis of a
//! medical image (202 with a job id); `GET /api/v1/jobs/{id}` long-polls it. The completed
//! output is a triage report built from the node's ensemble and triage rules, with texts in
//! the requested locale. Errors use Pi's codes: `{"error":{"code","message"}}`.
//!
//! Request body (the document names the parts but not every field; these are ours):
//! `{"input": {"type": "image", "modality": "xray", "image_base64": "…" | "url": "https://…"},
//!   "context": {…}, "options": {"locale": "fr"}}` — `context.locale` works too.

use std::time::{Duration, Instant};

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use super::{pi_text, PiSettings};
use crate::api::dialect::{Cause, Dialect, Refusal};
use crate::api::{spec, Access, AppState, Routes};
use crate::auth::{Principal, Scope};
use crate::clock::{format_ms, now_ms};
use crate::result::triage::TriageInput;
use crate::result::{ImageEntry, Summary, TriageSettings};
use crate::supervisor::Background;

/// Longest serialised `context`, in characters.
pub const MAX_CONTEXT_CHARS: usize = 16_000;
/// Longest `wait` accepted when polling, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
const KIND: &str = "health.analyze";

/// State of the Pi routes.
#[derive(Clone, FromRef)]
pub struct Pi {
    pub app: AppState,
    pub compat_pi: PiSettings,
    /// Triage rules (the pipeline's).
    pub triage: TriageSettings,
    /// The analysis jobs, stopped with the node.
    pub jobs: Background,
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(analyze, job, overlay))]
pub struct Doc;

pub fn routes() -> Routes<Pi> {
    vec![
        (
            spec(
                Method::POST,
                "/api/v1/health/analyze",
                Access::Scope(Scope::InferenceWrite),
                "Pi: queue a triage analysis of an image (202 with the job id)",
            ),
            post(analyze),
        ),
        (
            spec(
                Method::GET,
                "/api/v1/jobs/{job_id}",
                Access::Scope(Scope::ResultsRead),
                "Pi: a triage job; ?wait=N long-polls, ?include=diagnostics adds step timings",
            ),
            get(job),
        ),
        (
            spec(
                Method::GET,
                "/api/v1/jobs/{job_id}/overlay",
                Access::Scope(Scope::ResultsRead),
                "Pi: the annotated image of a completed triage job (PNG)",
            ),
            get(overlay),
        ),
    ]
}

/// A refusal in Pi's shape.
#[derive(Debug)]
pub struct PiError(StatusCode, &'static str, String);

impl IntoResponse for PiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({ "error": { "code": self.1, "message": self.2 } })),
        )
            .into_response()
    }
}

fn invalid(message: impl Into<String>) -> PiError {
    PiError(
        StatusCode::BAD_REQUEST,
        "invalid_request_body",
        message.into(),
    )
}

/// Pi's code for a status the kernel refused with.
pub fn code_for(status: StatusCode, message: &str) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED if message == "Token missing" => "missing_authorization_header",
        StatusCode::UNAUTHORIZED => "invalid_authorization",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal_error",
        _ => "invalid_request_body",
    }
}

/// Pi's error body for the kernel's refusals on Pi routes (`WWW-Authenticate` and
/// `Retry-After` kept); the handlers' own errors and plain-text rejections pass as they are.
pub struct Errors;

/// [`Errors`]' name in the route list.
pub const DIALECT: &str = "pi";

impl Dialect for Errors {
    fn name(&self) -> &'static str {
        DIALECT
    }

    fn claims(&self, path: &str) -> bool {
        path.starts_with("/api/v1/health/") || path.starts_with("/api/v1/jobs/")
    }

    fn render(&self, refusal: Refusal<'_>) -> Option<Response> {
        let Cause::Kernel(e) = refusal.cause else {
            return None;
        };
        let code = code_for(refusal.status, &e.message);
        let mut out = PiError(refusal.status, code, e.message.clone()).into_response();
        refusal.keep_headers(&mut out, &[header::WWW_AUTHENTICATE, header::RETRY_AFTER]);
        Some(out)
    }
}

const XRAY: [&str; 7] = [
    "xray",
    "x-ray",
    "chest_xray",
    "chest-xray",
    "chest x-ray",
    "cxr",
    "radiograph",
];

/// Where the image comes from: the request itself, or a URL the job fetches after the 202.
enum ImageSource {
    Bytes(Vec<u8>),
    Url(url::Url),
}

/// The validated request: the image, locale and the echo of the input.
struct Analyze {
    image: ImageSource,
    locale: Option<String>,
    input_echo: Value,
}

fn parse(state: &Pi, body: &Bytes) -> Result<Analyze, PiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("body is not valid JSON: {e}")))?;
    let input = v
        .get("input")
        .filter(|i| i.is_object())
        .ok_or_else(|| invalid("input is required and must be an object"))?;
    match input.get("type").and_then(Value::as_str) {
        Some("image") => {}
        Some("eeg") => {
            return Err(invalid(
                "input.type \"eeg\": EEG screening is not available on this node (no EEG model is \
                 installed); send an image with input.type \"image\"",
            ))
        }
        Some(other) => {
            return Err(invalid(format!(
                "input.type must be \"image\" or \"eeg\", got \"{other}\""
            )))
        }
        None => return Err(invalid("input.type is required (\"image\")")),
    }
    let modality = input
        .get("modality")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| invalid("input.modality is required for image input"))?;
    if !XRAY.contains(&modality.trim().to_ascii_lowercase().as_str()) {
        return Err(invalid(format!(
            "input.modality \"{modality}\" is not supported: the installed model reads chest \
             X-rays (input.modality \"xray\")"
        )));
    }
    if let Some(ctx) = v.get("context") {
        if !ctx.is_object() && !ctx.is_null() {
            return Err(invalid("context must be a JSON object"));
        }
        let n = ctx.to_string().chars().count();
        if n > MAX_CONTEXT_CHARS {
            return Err(invalid(format!(
                "context serialises to {n} characters; at most {MAX_CONTEXT_CHARS} are allowed"
            )));
        }
    }
    let b64 = ["image_base64", "base64", "image", "data"]
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str).map(|s| (*k, s)));
    let url = input.get("url").and_then(Value::as_str);
    let image = match (b64, url) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give either input.image_base64 or input.url, not both",
            ))
        }
        (Some((field, data)), None) => {
            // A data URL prefix (`data:image/png;base64,`) is allowed.
            let raw = data.rsplit_once("base64,").map_or(data, |(_, d)| d);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw.trim())
                .map_err(|e| invalid(format!("input.{field} is not valid base64: {e}")))?;
            if bytes.is_empty() {
                return Err(invalid("the image is empty"));
            }
            ImageSource::Bytes(bytes)
        }
        (None, Some(u)) => ImageSource::Url(allowed_url(state, u)?),
        (None, None) => {
            return Err(invalid(
                "input.image_base64 (or input.url) is required for image input",
            ))
        }
    };
    let locale = v
        .pointer("/options/locale")
        .or_else(|| v.pointer("/context/locale"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Analyze {
        image,
        locale,
        input_echo: json!({ "type": "image", "modality": modality }),
    })
}

/// Whether `entry` of `compat.pi_url_hosts` allows `url`: `host:port` names one port, a bare
/// host the scheme's default port only (so an allowed host is no port scanner).
pub fn host_allows(entry: &str, url: &url::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    let entry = entry.trim();
    // `[v6]:port`, `host:port`, or a bare host (an IPv6 address only in brackets).
    let (name, want) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
            match p.parse::<u16>() {
                Ok(p) => (h, p),
                Err(_) => return false,
            }
        }
        _ => match url.scheme() {
            "http" => (entry, 80),
            "https" => (entry, 443),
            _ => return false,
        },
    };
    name.eq_ignore_ascii_case(host) && want == port
}

/// Checks `input.url` against `compat.pi_url_hosts` (scheme, host and port); nothing is
/// fetched here: the job does it after the 202.
fn allowed_url(state: &Pi, raw: &str) -> Result<url::Url, PiError> {
    let url = url::Url::parse(raw).map_err(|e| invalid(format!("input.url is not a URL: {e}")))?;
    let allowed = matches!(url.scheme(), "http" | "https")
        && state
            .compat_pi
            .url_hosts
            .iter()
            .any(|h| host_allows(h, &url));
    if !allowed {
        let host = url.host_str().unwrap_or("");
        let port = url
            .port_or_known_default()
            .map_or(String::new(), |p| format!(":{p}"));
        return Err(invalid(format!(
            "input.url host \"{host}{port}\" is not allowed: images are fetched only from the \
             hosts and ports in compat.pi_url_hosts; send the image as input.image_base64 instead"
        )));
    }
    Ok(url)
}

/// Longest a URL fetch may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// Fetches an allowed image URL: no redirects, at most `limit` bytes, refused as soon as the
/// answer declares or sends more (it is never read whole first). The error is the job's.
async fn fetch(url: &url::Url, limit: usize) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("input.url cannot be fetched: {e}"))?;
    let mut resp = client.get(url.clone()).send().await.map_err(|e| {
        if e.is_timeout() {
            format!(
                "input.url did not answer within {} s",
                FETCH_TIMEOUT.as_secs()
            )
        } else {
            "input.url cannot be fetched: the connection failed".to_string()
        }
    })?;
    if !resp.status().is_success() {
        return Err(format!(
            "input.url answered HTTP {} (redirects are not followed)",
            resp.status().as_u16()
        ));
    }
    let too_large = || format!("input.url image is larger than {limit} bytes");
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut image = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if image.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                image.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(image),
            Err(e) if e.is_timeout() => {
                return Err(format!(
                    "input.url did not finish within {} s",
                    FETCH_TIMEOUT.as_secs()
                ))
            }
            Err(_) => return Err("input.url cannot be read: the connection broke".into()),
        }
    }
}

/// The body: `{"input": {"type": "image" (`eeg` is refused: no EEG model), "modality":
/// "xray", "image_base64"?, "url"? (only hosts in `compat.pi_url_hosts`, fetched by the job
/// after the 202)}, "context"? (at most 16,000 characters serialised; `locale` is read),
/// "options"?: {"locale"}}`.
#[utoipa::path(post, path = "/api/v1/health/analyze",
    request_body(content = Object, description = "`{input: {type, modality, image_base64?, url?}, context?, options?}`"),
    responses((status = 202, description = "Queued: `{job_id, status, poll_url, created_at}`", body = Object)),
)]
async fn analyze(
    State(state): State<Pi>,
    principal: Principal,
    body: Bytes,
) -> Result<Response, PiError> {
    if !state.compat_pi.enabled {
        return Err(PiError(
            StatusCode::FORBIDDEN,
            "health_triage_disabled",
            "Health triage is disabled on this node (compat.pi_enabled = false)".into(),
        ));
    }
    let req = parse(&state, &body)?;
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let mut stored = json!({
        "input": req.input_echo,
        "locale": req.locale,
    });
    match &req.image {
        ImageSource::Bytes(b) => {
            stored["image_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(b))
        }
        ImageSource::Url(u) => stored["url"] = json!(u.as_str()),
    }
    sqlx::query(
        "INSERT INTO adapter_jobs (id, kind, state, request, principal, created_at, updated_at) \
         VALUES ($1, $2, 'queued', $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(KIND)
    .bind(stored.to_string())
    .bind(&principal.subject)
    .bind(now)
    .execute(&state.app.db.pool)
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "Pi job insert");
        PiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "job_create_failed",
            "The analysis job could not be created".into(),
        )
    })?;
    state
        .jobs
        .spawn("Pi triage job", run(state.clone(), id.clone()));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job_id": id,
            "status": "queued",
            "poll_url": format!("/api/v1/jobs/{id}"),
            "created_at": format_ms(now),
        })),
    )
        .into_response())
}

/// Runs the queued adapter jobs left by a previous run (or stopped by a shutdown), one after
/// the other, as background work of the node.
pub fn resume(state: &Pi) {
    // Jobs queued from now on are run by the request that queued them.
    let started = now_ms();
    let jobs = state.jobs.clone();
    jobs.spawn(
        "resuming Pi triage jobs",
        resume_all(state.clone(), started),
    );
}

async fn resume_all(state: Pi, before: i64) {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM adapter_jobs WHERE kind = $1 AND state IN ('queued', 'running') \
         AND created_at < $2 ORDER BY created_at",
    )
    .bind(KIND)
    .bind(before)
    .fetch_all(&state.app.db.pool)
    .await
    .unwrap_or_default();
    for id in ids {
        tracing::info!(job_id = %id, "resuming an interrupted triage job");
        run(state.clone(), id).await;
    }
}

/// Analyses one job and stores its output (or its failure).
async fn run(state: Pi, id: String) {
    let t0 = Instant::now();
    let _ = sqlx::query("UPDATE adapter_jobs SET state = 'running', updated_at = $2 WHERE id = $1")
        .bind(&id)
        .bind(now_ms())
        .execute(&state.app.db.pool)
        .await;
    let request: Option<String> =
        sqlx::query_scalar("SELECT request FROM adapter_jobs WHERE id = $1")
            .bind(&id)
            .fetch_optional(&state.app.db.pool)
            .await
            .ok()
            .flatten();
    let Some(request) = request.and_then(|r| serde_json::from_str::<Value>(&r).ok()) else {
        return;
    };
    let loaded = match request["url"].as_str() {
        Some(u) => match url::Url::parse(u) {
            Ok(u) => fetch(&u, state.app.http_limits.max_body_bytes).await,
            Err(e) => Err(format!("input.url is not a URL: {e}")),
        },
        None => Ok(request["image_base64"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default()),
    };
    let locale = pi_text::pick(request["locale"].as_str());
    let t_decode = t0.elapsed();
    let model = state.app.pipeline_model.clone();
    let (state_name, output, error) = match loaded {
        Err(message) => {
            tracing::info!(job_id = %id, reason = %message, "triage image not fetched");
            (
                "failed",
                None,
                Some(json!({"code": "invalid_request_body", "message": message})),
            )
        }
        Ok(image) => analyse(&state, &id, &image, locale, model.as_deref()).await,
    };
    let t_infer = t0.elapsed();
    let diagnostics = json!({
        "routing": { "input_type": "image", "model": model.unwrap_or_else(|| "default".into()), "provider": "onnxruntime" },
        "steps": [
            { "name": "load_request", "ms": t_decode.as_secs_f64() * 1000.0 },
            { "name": "inference", "ms": (t_infer - t_decode).as_secs_f64() * 1000.0 },
        ],
        "total_ms": t0.elapsed().as_secs_f64() * 1000.0,
    });
    let res = sqlx::query(
        "UPDATE adapter_jobs SET state = $2, output = $3, error = $4, diagnostics = $5, updated_at = $6 \
         WHERE id = $1",
    )
    .bind(&id)
    .bind(state_name)
    .bind(output.map(|o| o.to_string()))
    .bind(error.map(|e| e.to_string()))
    .bind(diagnostics.to_string())
    .bind(now_ms())
    .execute(&state.app.db.pool)
    .await;
    if let Err(e) = res {
        tracing::error!(job_id = %id, error = %e, "storing a triage job's output failed");
    }
}

/// Runs the ensemble on one image: the job's final state, output and error.
async fn analyse(
    state: &Pi,
    id: &str,
    image: &[u8],
    locale: &'static str,
    model: Option<&str>,
) -> (&'static str, Option<Value>, Option<Value>) {
    match state.app.engine.infer_image_bytes(model, image).await {
        Ok(r) => {
            let entry = ImageEntry::from_inference("", "", "", &r);
            let summary = Summary::from_images(std::slice::from_ref(&entry));
            let validation = state
                .app
                .engine
                .manifest_of(&r.model_id)
                .map(|m| m.validation.status.clone())
                .unwrap_or_default();
            let triage = state.triage.decide(TriageInput {
                summary: &summary,
                measurements: &[],
                findings_validation: &validation,
            });
            let mut out = report(
                &entry,
                &summary,
                triage.urgency,
                locale,
                &r.model_id,
                &r.model_version,
            );
            match write_overlay(state, id, image, &entry, triage.urgency).await {
                Ok(()) => out["overlay_url"] = json!(format!("/api/v1/jobs/{id}/overlay")),
                Err(e) => tracing::warn!(job_id = %id, error = %e, "triage overlay not rendered"),
            }
            ("completed", Some(out), None)
        }
        Err(e) if e.is_input_error() => (
            "failed",
            None,
            Some(
                json!({"code": "invalid_request_body", "message": format!("the image cannot be read: {e}")}),
            ),
        ),
        Err(e) => {
            tracing::error!(job_id = %id, error = %e, "Pi triage inference");
            (
                "failed",
                None,
                Some(
                    json!({"code": "job_trigger_failed", "message": "the inference worker failed"}),
                ),
            )
        }
    }
}

fn overlay_path(state: &Pi, id: &str) -> Option<std::path::PathBuf> {
    // Job ids are UUIDs we made; anything else never names a file.
    uuid::Uuid::parse_str(id).ok()?;
    Some(
        state
            .app
            .files
            .data_dir()
            .join("adapter")
            .join(format!("{id}.png")),
    )
}

/// Renders the uploaded image with the triage level, findings and disclaimer burnt in.
async fn write_overlay(
    state: &Pi,
    id: &str,
    image: &[u8],
    entry: &ImageEntry,
    urgency: crate::domain::Urgency,
) -> Result<(), String> {
    let path = overlay_path(state, id).ok_or("bad job id")?;
    let mut lines = vec![format!("AI TRIAGE: {}", urgency.as_str().to_uppercase())];
    let present: Vec<_> = entry.findings.iter().filter(|f| f.presence).collect();
    if present.is_empty() {
        lines.push("NO FINDING ABOVE THRESHOLD".into());
    }
    for f in present {
        lines.push(format!("{} {:.2}", f.name.to_uppercase(), f.confidence));
    }
    lines.push("NO LOCALISATION (NO HEAT MAP)".into());
    lines.push("NOT FOR DIAGNOSTIC USE - AI RESULT, UNVERIFIED".into());
    let image = image.to_vec();
    let png = tokio::task::spawn_blocking(move || {
        let (w, h, px) = crate::report::overlay::grey_from_image_bytes(&image)?;
        let (w, h, px) = crate::report::overlay::burn_in(w, h, &px, &lines);
        crate::report::overlay::png(w, h, &px)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| e.to_string())?;
    }
    tokio::fs::write(&path, png)
        .await
        .map_err(|e| e.to_string())
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/overlay", responses(
    (status = 200, description = "The uploaded image with the triage level, findings and disclaimer burnt in", body = String, content_type = "image/png"),
))]
async fn overlay(State(state): State<Pi>, Path(id): Path<String>) -> Result<Response, PiError> {
    let missing = || {
        PiError(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no overlay for job {id}"),
        )
    };
    let path = overlay_path(&state, &id).ok_or_else(missing)?;
    let bytes = tokio::fs::read(&path).await.map_err(|_| missing())?;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/png")], bytes).into_response())
}

/// The triage report of one analysed image.
fn report(
    entry: &ImageEntry,
    summary: &Summary,
    urgency: crate::domain::Urgency,
    locale: &'static str,
    model_id: &str,
    model_version: &str,
) -> Value {
    let t = pi_text::texts(locale, urgency);
    let mut findings: Vec<Value> = entry
        .findings
        .iter()
        .filter(|f| f.presence)
        .map(|f| {
            json!({
                "title": f.name,
                "summary": format!("{} {} {:.2}", f.name, t.present, f.confidence),
                "confidence": f.confidence,
                "evidence": [
                    format!("{model_id} {model_version}: ensemble of {} models, mean probability {:.3} (threshold {:.2})", f.member_outputs.len(), f.confidence, f.threshold),
                    format!("member probabilities {:?}, spread {:.3}", f.member_outputs.iter().map(|p| (p * 1000.0).round() / 1000.0).collect::<Vec<_>>(), f.spread),
                    format!("SNOMED CT {} {}", f.code.code, f.code.display),
                ],
            })
        })
        .collect();
    let analysed = entry.status == "analysed";
    if findings.is_empty() {
        let top = entry
            .findings
            .iter()
            .map(|f| f.confidence)
            .fold(0.0f32, f32::max);
        findings.push(json!({
            "title": if analysed { t.absent_title.to_string() } else { "Image not analysed".to_string() },
            "summary": if analysed { t.absent_summary.to_string() } else { entry.reason.clone().unwrap_or_default() },
            "confidence": if analysed { 1.0 - top } else { 0.0 },
            "evidence": [format!("{model_id} {model_version}: image status {}", entry.status)],
        }));
    }
    // Overall confidence: the ensemble's agreement (1 − highest spread) when analysed.
    let spread = entry
        .findings
        .iter()
        .map(|f| f.spread)
        .fold(0.0f32, f32::max);
    json!({
        "triage_level": urgency,
        "confidence": if analysed { (1.0 - spread).clamp(0.0, 1.0) } else { 0.0 },
        "locale": locale,
        "findings": findings,
        "overlay_url": Value::Null,
        "seizure_detected": Value::Null,
        "care_guidance": t.care,
        "referral_guidance": t.referral,
        "warning_signs": t.warning_signs,
        "disclaimer": t.disclaimer,
        "should_review": summary.should_review,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Seconds to wait for the job to finish (0..=60).
    pub wait: Option<u64>,
    /// `diagnostics` adds routing and step timings.
    pub include: Option<String>,
    #[param(ignore)]
    pub access_token: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", params(JobQuery), responses(
    (status = 200, description = "Pi job: `{data: {id, type, status, payload: {input, output}, error, diagnostics?}}`; errors `{error: {code, message}}`", body = Object),
))]
async fn job(
    State(state): State<Pi>,
    Path(id): Path<String>,
    q: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PiError> {
    let Query(q) = q.map_err(|e| invalid(e.body_text()))?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(invalid(format!(
            "wait must be at most {MAX_WAIT_SECS} seconds"
        )));
    }
    let diagnostics = match q.include.as_deref() {
        None => false,
        Some("diagnostics") => true,
        Some(other) => {
            return Err(invalid(format!(
                "include \"{other}\" is not known (diagnostics)"
            )))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let row = sqlx::query(
            "SELECT state, request, output, error, diagnostics, created_at, updated_at \
             FROM adapter_jobs WHERE id = $1 AND kind = $2",
        )
        .bind(&id)
        .bind(KIND)
        .fetch_optional(&state.app.db.pool)
        .await
        .map_err(|e| {
            PiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                e.to_string(),
            )
        })?
        .ok_or_else(|| {
            PiError(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("job {id} not found"),
            )
        })?;
        let st: String = row.get("state");
        let finished = st == "completed" || st == "failed";
        if finished || Instant::now() >= deadline {
            let parse = |column: &str| {
                row.get::<Option<String>, _>(column)
                    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                    .unwrap_or(Value::Null)
            };
            let request = parse("request");
            let mut data = json!({
                "id": id,
                "type": KIND,
                "status": st,
                "payload": { "input": request["input"], "output": parse("output") },
                "error": parse("error"),
                "created_at": format_ms(row.get("created_at")),
                "updated_at": format_ms(row.get("updated_at")),
            });
            if diagnostics {
                data["diagnostics"] = parse("diagnostics");
            }
            return Ok(Json(json!({ "data": data })).into_response());
        }
        tokio::time::sleep(Duration::from_millis(100).min(deadline - Instant::now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::host_allows;

    #[test]
    fn allow_list_entries_name_a_host_and_a_port() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(host_allows(
            "pacs.example:8443",
            &u("https://PACS.example:8443/a.png")
        ));
        assert!(!host_allows(
            "pacs.example:8443",
            &u("https://pacs.example:8444/a.png")
        ));
        assert!(!host_allows(
            "pacs.example:8443",
            &u("https://pacs.example/a.png")
        ));
        assert!(host_allows(
            "pacs.example",
            &u("https://pacs.example/a.png")
        ));
        assert!(host_allows(
            "pacs.example",
            &u("http://pacs.example:80/a.png")
        ));
        assert!(!host_allows(
            "pacs.example",
            &u("http://pacs.example:8080/a.png")
        ));
        assert!(!host_allows(
            "pacs.example",
            &u("http://pacs.example.evil/a.png")
        ));
        assert!(host_allows("[::1]:9000", &u("http://[::1]:9000/a.png")));
        assert!(!host_allows("[::1]:9000", &u("http://[::1]:9001/a.png")));
        assert!(!host_allows(
            "pacs.example:http",
            &u("http://pacs.example/a.png")
        ));
    }
}
