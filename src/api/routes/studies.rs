//! Studies and their results: search, detail, results (latest and by version), reprocess.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post, MethodRouter};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::auth::Audit;
use crate::api::error::{query_rejection, valid_uid};
use crate::api::response::ENVELOPE;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::{Principal, Scope};
use crate::clock::format_ms;
use crate::domain::Urgency;
use crate::inference::manifest::TASK_CLASSIFICATION;
use crate::job::{self, Job};
use crate::result::{self, StudyResult, VersionInfo};
use crate::retention::{self, PurgeError};
use crate::store::index::{self, InstanceRow, SeriesRow, StudyFilter, StudyRow};

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let read = Access::Scope(Scope::ResultsRead);
    vec![
        (
            spec(Method::GET, "/v1/studies", read, "Search studies"),
            get(search),
        ),
        (
            spec(
                Method::GET,
                "/v1/studies/{study_uid}",
                read,
                "A study: series, instances, status, result versions, jobs",
            ),
            get(detail),
        ),
        (
            spec(
                Method::GET,
                "/v1/studies/{study_uid}/results",
                read,
                "The study's current result (or ?version=N)",
            ),
            get(latest_result),
        ),
        (
            spec(
                Method::GET,
                "/v1/studies/{study_uid}/results/{version}",
                read,
                "One result version of the study",
            ),
            get(result_version),
        ),
        (
            spec(
                Method::POST,
                "/v1/studies/{study_uid}/reprocess",
                Access::Scope(Scope::InferenceWrite),
                "Run the model again on the study (202 with the job)",
            ),
            post(reprocess),
        ),
        (
            spec(
                Method::DELETE,
                "/v1/studies/{study_uid}/instances",
                Access::Scope(Scope::Admin),
                "Remove the instances received for the study (results and derived SR/overlays stay); 409 while something still needs them",
            ),
            delete(purge),
        ),
    ]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(search, detail, latest_result, result_version, reprocess, purge))]
pub struct Doc;

fn study_uid(raw: &str) -> Result<String, ApiError> {
    valid_uid("study_uid", raw)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Exact Patient ID.
    pub patient_id: Option<String>,
    /// Case-insensitive substring of the DICOM name (`DOE^JANE`).
    pub patient_name: Option<String>,
    /// Study date from (inclusive), `YYYYMMDD` or `YYYY-MM-DD`.
    pub from: Option<String>,
    /// Study date to (inclusive).
    pub to: Option<String>,
    /// `receiving` or `complete`.
    pub status: Option<String>,
    /// One urgency or several, comma-separated (`low`, `standard`, `urgent`, `critical`).
    pub urgency: Option<String>,
    /// A modality code the study contains, e.g. `DX`.
    pub modality: Option<String>,
    /// `received` (newest received first, the default) or `urgency` (most urgent result first,
    /// then newest).
    pub sort: Option<String>,
    /// Page number, from 1 (default 1).
    pub page: Option<i64>,
    /// Studies per page, 1..=500 (default 50).
    pub page_size: Option<i64>,
    #[param(ignore)]
    pub format: Option<String>,
    #[param(ignore)]
    pub access_token: Option<String>,
}

/// A study as searched and shown (times RFC 3339).
#[derive(Serialize, ToSchema)]
pub struct Study {
    pub study_uid: String,
    pub patient_id: Option<String>,
    /// DICOM person name, e.g. `DOE^JANE`.
    pub patient_name: Option<String>,
    /// `YYYYMMDD`.
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    pub patient_age: Option<String>,
    pub accession_number: Option<String>,
    /// `YYYYMMDD`.
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub study_description: Option<String>,
    /// Modality codes of its series, e.g. `["DX"]`.
    pub modalities: Vec<String>,
    pub num_series: i64,
    pub num_instances: i64,
    /// `receiving` or `complete`.
    pub status: String,
    /// Study version: each instance arriving after completion re-opens the study.
    pub version: i64,
    /// Urgency of the current result.
    #[schema(value_type = Option<Urgency>)]
    pub urgency: Option<String>,
    /// Current result version.
    pub result_version: Option<i64>,
    pub first_received_at: String,
    pub last_received_at: String,
    pub completed_at: Option<String>,
    /// How completion was decided: `release+quiet` (association released, then a quiet
    /// window), `stable-age` (no instance for a while) or `mpps` (the modality's procedure
    /// steps finished and every instance they list arrived).
    pub completed_by: Option<String>,
    pub result_at: Option<String>,
    pub referring_physician: Option<String>,
    /// When the received instances were removed (retention); results and derived outputs stay.
    pub purged_at: Option<String>,
}

/// `GET /v1/studies`.
#[derive(Serialize, ToSchema)]
pub struct StudyPage {
    /// Newest received first.
    pub items: Vec<Study>,
    pub page: i64,
    pub page_size: i64,
    /// Studies matching the filters, over all pages.
    pub total: i64,
}

/// `GET /v1/studies/{study_uid}`: the study with its series, instances, result versions and
/// jobs.
#[derive(Serialize, ToSchema)]
pub struct StudyDetail {
    #[serde(flatten)]
    pub study: Study,
    pub series: Vec<Series>,
    /// Result versions, newest first.
    pub results: Vec<VersionInfo>,
    /// The study's jobs, newest first (at most 50).
    pub jobs: Vec<Job>,
}

/// One series of a study.
#[derive(Serialize, ToSchema)]
pub struct Series {
    pub series_uid: String,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub view_position: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub num_instances: i64,
    pub instances: Vec<Instance>,
}

/// One stored instance.
#[derive(Serialize, ToSchema)]
pub struct Instance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub instance_number: Option<i64>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub frames: Option<i64>,
    pub photometric: Option<String>,
    pub file_size: i64,
    /// RFC 3339.
    pub received_at: String,
    /// AE title of the sender.
    pub calling_ae: String,
    /// Study version the instance arrived in.
    pub study_version: i64,
}

/// `YYYYMMDD` from `YYYYMMDD` or `YYYY-MM-DD`, checked as a calendar date.
fn dicom_date(field: &str, raw: &str) -> Result<String, ApiError> {
    let digits: String = raw.chars().filter(|c| *c != '-').collect();
    let ok = digits.len() == 8
        && digits.chars().all(|c| c.is_ascii_digit())
        && time::Date::parse(
            &digits,
            time::macros::format_description!("[year][month][day]"),
        )
        .is_ok();
    if ok {
        Ok(digits)
    } else {
        Err(ApiError::invalid(
            field,
            format!("'{raw}' is not a date (YYYYMMDD or YYYY-MM-DD)"),
        ))
    }
}

fn study_json(r: &StudyRow) -> Study {
    Study {
        study_uid: r.study_uid.clone(),
        patient_id: r.patient_id.clone(),
        patient_name: r.patient_name.clone(),
        patient_birth_date: r.patient_birth_date.clone(),
        patient_sex: r.patient_sex.clone(),
        patient_age: r.patient_age.clone(),
        accession_number: r.accession_number.clone(),
        study_date: r.study_date.clone(),
        study_time: r.study_time.clone(),
        study_description: r.study_description.clone(),
        modalities: r.modality_list().into_iter().map(str::to_string).collect(),
        num_series: r.num_series,
        num_instances: r.num_instances,
        status: r.status.clone(),
        version: r.version,
        urgency: r.urgency.clone(),
        result_version: r.result_version,
        first_received_at: format_ms(r.first_received_at),
        last_received_at: format_ms(r.last_received_at),
        completed_at: r.completed_at.map(format_ms),
        completed_by: r.completed_by.clone(),
        result_at: r.result_at.map(format_ms),
        referring_physician: r.referring_physician.clone(),
        purged_at: r.purged_at.map(format_ms),
    }
}

fn instance_json(i: &InstanceRow) -> Instance {
    Instance {
        sop_instance_uid: i.sop_instance_uid.clone(),
        sop_class_uid: i.sop_class_uid.clone(),
        transfer_syntax: i.transfer_syntax.clone(),
        instance_number: i.instance_number,
        rows: i.rows,
        columns: i.columns,
        frames: i.frames,
        photometric: i.photometric.clone(),
        file_size: i.file_size,
        received_at: format_ms(i.received_at),
        calling_ae: i.calling_ae.clone(),
        study_version: i.study_version,
    }
}

fn series_json(s: &SeriesRow, instances: &[InstanceRow]) -> Series {
    Series {
        series_uid: s.series_uid.clone(),
        modality: s.modality.clone(),
        body_part: s.body_part.clone(),
        view_position: s.view_position.clone(),
        series_number: s.series_number,
        series_description: s.series_description.clone(),
        num_instances: s.num_instances,
        instances: instances
            .iter()
            .filter(|i| i.series_uid == s.series_uid)
            .map(instance_json)
            .collect(),
    }
}

#[utoipa::path(get, path = "/v1/studies", params(SearchQuery), responses(
    (status = 200, description = "Matching studies, one page", body = StudyPage, content_type = ENVELOPE),
))]
async fn search(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Reply, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    let page = q.page.unwrap_or(1);
    if page < 1 {
        return Err(ApiError::invalid("page", "must be at least 1"));
    }
    let page_size = q.page_size.unwrap_or(50);
    if !(1..=500).contains(&page_size) {
        return Err(ApiError::invalid("page_size", "must be between 1 and 500"));
    }
    let from = q
        .from
        .as_deref()
        .map(|d| dicom_date("from", d))
        .transpose()?;
    let to = q.to.as_deref().map(|d| dicom_date("to", d)).transpose()?;
    if let (Some(f), Some(t)) = (&from, &to) {
        if f > t {
            return Err(ApiError::invalid("from", "is after `to`"));
        }
    }
    if let Some(s) = &q.status {
        if s != "receiving" && s != "complete" {
            return Err(ApiError::invalid(
                "status",
                format!("'{s}' is not one of receiving, complete"),
            ));
        }
    }
    let mut urgencies = Vec::new();
    for u in q
        .urgency
        .iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        Urgency::parse(u).ok_or_else(|| {
            ApiError::invalid(
                "urgency",
                format!("'{u}' is not one of low, standard, urgent, critical"),
            )
        })?;
        urgencies.push(u.to_string());
    }
    if let Some(m) = &q.modality {
        if m.is_empty() || m.len() > 16 || !m.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ApiError::invalid(
                "modality",
                "must be a DICOM modality code such as CR, DX, CT",
            ));
        }
    }
    let urgent_first = match q.sort.as_deref() {
        None | Some("received") => false,
        Some("urgency") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "sort",
                format!("'{other}' is not one of received, urgency"),
            ))
        }
    };
    let filter = StudyFilter {
        urgent_first,
        patient_id: q.patient_id.clone(),
        patient_name: q.patient_name.clone(),
        date_from: from,
        date_to: to,
        status: q.status.clone(),
        urgencies,
        modality: q.modality.clone(),
    };
    let total = index::count_studies(&state.db, &filter).await?;
    let rows = index::search_studies(&state.db, &filter, page_size, (page - 1) * page_size).await?;
    audit
        .record(
            &state.db,
            "studies.search",
            q.patient_id.as_deref(),
            None,
            StatusCode::OK,
        )
        .await?;
    let items: Vec<Study> = rows.iter().map(study_json).collect();
    Ok(ctx.reply(StudyPage {
        items,
        page,
        page_size,
        total,
    }))
}

#[utoipa::path(get, path = "/v1/studies/{study_uid}", responses(
    (status = 200, description = "The study; CSV has one row per series", body = StudyDetail, content_type = ENVELOPE),
))]
async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    Path(raw): Path<String>,
) -> Result<Reply, ApiError> {
    let uid = study_uid(&raw)?;
    let row = index::find_study(&state.db.pool, &uid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Study {uid} not found")))?;
    let study = study_json(&row);
    audit
        .record(
            &state.db,
            "study.read",
            study.patient_id.as_deref(),
            Some(&uid),
            StatusCode::OK,
        )
        .await?;
    let series = index::series_of_study(&state.db, &uid).await?;
    let instances = index::instances_of_study(&state.db, &uid).await?;
    let series: Vec<Series> = series.iter().map(|s| series_json(s, &instances)).collect();
    let rows = serde_json::to_value(&series).unwrap_or_default();
    let detail = StudyDetail {
        study,
        series,
        results: result::versions(&state.db, &uid).await?,
        jobs: job::list(&state.db, None, Some(&uid), 50, 0).await?,
    };
    Ok(ctx.reply(detail).csv_rows(rows))
}

/// CSV view of a result: one row per image and finding.
fn result_rows(r: &StudyResult) -> Value {
    let mut rows = Vec::new();
    for img in &r.images {
        if img.findings.is_empty() {
            rows.push(json!({
                "study_uid": r.study_instance_uid, "result_version": r.version,
                "sop_instance_uid": img.sop_instance_uid, "image_status": img.status,
                "reason": img.reason,
            }));
        }
        for f in &img.findings {
            rows.push(json!({
                "study_uid": r.study_instance_uid, "result_version": r.version,
                "sop_instance_uid": img.sop_instance_uid, "image_status": img.status,
                "finding": f.name, "snomed_code": f.code.code, "presence": f.presence,
                "confidence": f.confidence, "threshold": f.threshold, "spread": f.spread,
                "model_id": r.model.id, "validation_status": r.model.validation_status,
            }));
        }
    }
    for m in &r.measurements {
        rows.push(json!({
            "study_uid": r.study_instance_uid, "result_version": r.version,
            "sop_instance_uid": m.sop_instance_uid, "measurement": m.key, "value": m.value,
            "unit": m.unit, "method": m.method, "model_id": m.model_id,
            "validation_status": m.validation_status,
        }));
    }
    Value::Array(rows)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultQuery {
    /// A result version instead of the current one (from 1).
    pub version: Option<i64>,
    #[param(ignore)]
    pub format: Option<String>,
    #[param(ignore)]
    pub access_token: Option<String>,
}

async fn not_yet(state: &AppState, uid: &str) -> Result<ApiError, ApiError> {
    let study = index::find_study(&state.db.pool, uid).await?;
    let Some(StudyRow { status, .. }) = study else {
        return Ok(ApiError::not_found(format!("Study {uid} not found")));
    };
    let jobs = job::list(&state.db, None, Some(uid), 1, 0).await?;
    Ok(ApiError::not_found(format!("Study {uid} has no result yet")).with_details(json!({
        "study_status": status,
        "job": jobs.first().map(|j| json!({"id": j.id, "state": j.state, "last_error": j.last_error})),
    })))
}

/// Audits a result read, then replies with it.
async fn serve_result(
    state: &AppState,
    ctx: &Ctx,
    audit: &Audit,
    r: StudyResult,
) -> Result<Reply, ApiError> {
    let pid = Some(r.metadata.patient_id.as_str()).filter(|p| !p.is_empty());
    audit
        .record(
            &state.db,
            "results.read",
            pid,
            Some(&r.study_instance_uid),
            StatusCode::OK,
        )
        .await?;
    let rows = result_rows(&r);
    Ok(ctx.reply(&r).csv_rows(rows))
}

#[utoipa::path(get, path = "/v1/studies/{study_uid}/results", params(ResultQuery), responses(
    (status = 200, description = "The current result (or the version asked for); CSV has one row \
        per image and finding, then one per measurement. 404 while there is none, with the study status and its job in \
        `details`", body = StudyResult, content_type = ENVELOPE),
))]
async fn latest_result(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    Path(raw): Path<String>,
    q: Result<Query<ResultQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Reply, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    let uid = study_uid(&raw)?;
    let found = match q.version {
        Some(v) if v < 1 => return Err(ApiError::invalid("version", "must be at least 1")),
        Some(v) => result::by_version(&state.db, &uid, v).await?,
        None => result::latest(&state.db, &uid).await?,
    };
    match found {
        Some(r) => serve_result(&state, &ctx, &audit, r).await,
        None if q.version.is_some() => Err(ApiError::not_found(format!(
            "Study {uid} has no result version {}",
            q.version.unwrap_or_default()
        ))),
        None => Err(not_yet(&state, &uid).await?),
    }
}

#[utoipa::path(get, path = "/v1/studies/{study_uid}/results/{version}", responses(
    (status = 200, description = "The result version; CSV has one row per image and finding", body = StudyResult, content_type = ENVELOPE),
))]
async fn result_version(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    Path((raw, version)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let uid = study_uid(&raw)?;
    let version: i64 = version.parse().ok().filter(|v| *v >= 1).ok_or_else(|| {
        ApiError::invalid("version", format!("'{version}' is not a positive integer"))
    })?;
    match result::by_version(&state.db, &uid, version).await? {
        Some(r) => serve_result(&state, &ctx, &audit, r).await,
        None => Err(ApiError::not_found(format!(
            "Study {uid} has no result version {version}"
        ))),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReprocessBody {
    /// Model to run; default: the pipeline's model.
    pub model: Option<String>,
}

#[utoipa::path(delete, path = "/v1/studies/{study_uid}/instances", responses(
    (status = 200, description = "What was removed. 409 (with the reason in `details`) while the \
        study is being received, a job on it is queued or running, or its SR/overlay is still to \
        be generated", body = crate::retention::Purged, content_type = ENVELOPE),
))]
async fn purge(
    State(state): State<AppState>,
    ctx: Ctx,
    principal: Principal,
    Path(raw): Path<String>,
) -> Result<Reply, ApiError> {
    let uid = study_uid(&raw)?;
    let store = &state.store;
    match retention::purge_study(store, &state.db, &state.bus, &uid, &principal.subject).await {
        Ok(purged) => Ok(ctx.reply(&purged)),
        Err(PurgeError::NotFound(_)) => Err(ApiError::not_found(format!("Study {uid} not found"))),
        Err(e @ PurgeError::Busy { .. }) => Err(ApiError::new(StatusCode::CONFLICT, "Conflict")
            .with_details(json!({ "field": "study_uid", "problem": e.to_string() }))),
        Err(PurgeError::Database(e)) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/v1/studies/{study_uid}/reprocess",
    request_body(content = Option<ReprocessBody>, description = "JSON; an empty body takes the defaults"),
    responses((status = 202, description = "The queued reprocess job", body = Job, content_type = ENVELOPE)),
)]
async fn reprocess(
    State(state): State<AppState>,
    ctx: Ctx,
    principal: Principal,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let uid = study_uid(&raw)?;
    let body: ReprocessBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReprocessBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", e.to_string()))?
    };
    if let Some(m) = &body.model {
        if state.engine.manifest(Some(m)).is_err() {
            let known: Vec<String> = state
                .engine
                .models()
                .into_iter()
                .filter(|m| m.task == TASK_CLASSIFICATION)
                .map(|m| m.id)
                .collect();
            return Err(ApiError::invalid(
                "model",
                format!(
                    "'{m}' is not an installed classification model (installed: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    let Some(job) =
        job::enqueue_reprocess(&state.db, &uid, body.model.as_deref(), &principal.subject).await?
    else {
        let purged = index::find_study(&state.db.pool, &uid)
            .await?
            .map(|s| s.purged_at);
        return Err(match purged {
            None => ApiError::not_found(format!("Study {uid} not found")),
            Some(at) => ApiError::new(StatusCode::CONFLICT, "Conflict").with_details(json!({
                "field": "study_uid",
                "problem": format!(
                    "the study's instances were removed at {} (retention); send it again to analyse it",
                    at.map(format_ms).unwrap_or_default()
                ),
            })),
        });
    };
    state.jobs_ready.notify_waiters();
    tracing::info!(study_uid = %uid, job_id = job.id, "reprocess queued");
    Ok(ctx.reply(&job).status(StatusCode::ACCEPTED))
}
