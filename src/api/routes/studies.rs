//! Studies and their results: search, detail, results (latest and by version), reprocess.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post, MethodRouter};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::ToSchema;

use crate::api::auth::Audit;
use crate::api::error::{query_rejection, valid_uid};
use crate::api::openapi::ENVELOPE;
use crate::api::response::format_ms;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::{Principal, Scope};
use crate::db::{like_literal, LIKE_ESCAPE};
use crate::domain::Urgency;
use crate::inference::manifest::TASK_CLASSIFICATION;
use crate::job::{self, Job};
use crate::result::{self, StudyResult, VersionInfo};
use crate::retention::{self, PurgeError};

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

fn opt_ms(r: &AnyRow, i: usize) -> Option<String> {
    r.get::<Option<i64>, _>(i).map(format_ms)
}

const STUDY_COLUMNS: &str = "study_uid, patient_id, patient_name, patient_birth_date, \
    patient_sex, patient_age, accession_number, study_date, study_time, study_description, \
    modalities, num_series, num_instances, status, version, urgency, result_version, \
    first_received_at, last_received_at, completed_at, result_at, referring_physician, purged_at";

fn study_json(r: &AnyRow) -> Study {
    let modalities: String = r.get(10);
    Study {
        study_uid: r.get(0),
        patient_id: r.get(1),
        patient_name: r.get(2),
        patient_birth_date: r.get(3),
        patient_sex: r.get(4),
        patient_age: r.get(5),
        accession_number: r.get(6),
        study_date: r.get(7),
        study_time: r.get(8),
        study_description: r.get(9),
        modalities: modalities
            .split('\\')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
        num_series: r.get(11),
        num_instances: r.get(12),
        status: r.get(13),
        version: r.get(14),
        urgency: r.get(15),
        result_version: r.get(16),
        first_received_at: format_ms(r.get(17)),
        last_received_at: format_ms(r.get(18)),
        completed_at: opt_ms(r, 19),
        result_at: opt_ms(r, 20),
        referring_physician: r.get(21),
        purged_at: opt_ms(r, 22),
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
    let urgencies: Option<Vec<String>> = match &q.urgency {
        None => None,
        Some(list) => {
            let mut v = Vec::new();
            for u in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                Urgency::parse(u).ok_or_else(|| {
                    ApiError::invalid(
                        "urgency",
                        format!("'{u}' is not one of low, standard, urgent, critical"),
                    )
                })?;
                v.push(u.to_string());
            }
            Some(v)
        }
    };
    if let Some(m) = &q.modality {
        if m.is_empty() || m.len() > 16 || !m.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ApiError::invalid(
                "modality",
                "must be a DICOM modality code such as CR, DX, CT",
            ));
        }
    }
    // Up to four urgencies, each its own parameter; unused ones stay NULL.
    let u = |i: usize| urgencies.as_ref().and_then(|v| v.get(i).cloned());
    let name_pattern = q
        .patient_name
        .as_ref()
        .map(|n| format!("%{}%", like_literal(&n.to_lowercase())));
    let modality_pattern = q
        .modality
        .as_ref()
        .map(|m| format!("%|{}|%", m.to_uppercase()));
    let where_sql = format!(
        "WHERE ($1 IS NULL OR patient_id = $1) \
         AND ($2 IS NULL OR LOWER(patient_name) LIKE $2 {LIKE_ESCAPE}) \
         AND ($3 IS NULL OR study_date >= $3) AND ($4 IS NULL OR study_date <= $4) \
         AND ($5 IS NULL OR status = $5) \
         AND ($6 IS NULL OR urgency IN ($6, $7, $8, $9)) \
         AND ($10 IS NULL OR ('|' || REPLACE(modalities, '\\', '|') || '|') LIKE $10)"
    );
    macro_rules! bind_filters {
        ($query:expr) => {
            $query
                .bind(q.patient_id.as_deref())
                .bind(name_pattern.as_deref())
                .bind(from.as_deref())
                .bind(to.as_deref())
                .bind(q.status.as_deref())
                .bind(u(0))
                .bind(u(1))
                .bind(u(2))
                .bind(u(3))
                .bind(modality_pattern.as_deref())
        };
    }
    let total: i64 = bind_filters!(sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM studies {where_sql}"
    )))
    .fetch_one(&state.db.pool)
    .await?;
    let rows = bind_filters!(sqlx::query(&format!(
        "SELECT {STUDY_COLUMNS} FROM studies {where_sql} \
         ORDER BY last_received_at DESC, study_uid LIMIT $11 OFFSET $12"
    )))
    .bind(page_size)
    .bind((page - 1) * page_size)
    .fetch_all(&state.db.pool)
    .await?;
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
    let row = sqlx::query(&format!(
        "SELECT {STUDY_COLUMNS} FROM studies WHERE study_uid = $1"
    ))
    .bind(&uid)
    .fetch_optional(&state.db.pool)
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
    let series = sqlx::query(
        "SELECT series_uid, modality, body_part, view_position, series_number, \
           series_description, num_instances FROM series WHERE study_uid = $1 \
         ORDER BY series_number, series_uid",
    )
    .bind(&uid)
    .fetch_all(&state.db.pool)
    .await?;
    let instances = sqlx::query(
        "SELECT series_uid, sop_instance_uid, sop_class_uid, transfer_syntax, instance_number, \
           rows_, columns_, frames, photometric, file_size, received_at, calling_ae, study_version \
         FROM instances WHERE study_uid = $1 ORDER BY instance_number, sop_instance_uid",
    )
    .bind(&uid)
    .fetch_all(&state.db.pool)
    .await?;
    let series: Vec<Series> = series
        .iter()
        .map(|s| {
            let series_uid: String = s.get(0);
            let instances = instances
                .iter()
                .filter(|i| i.get::<String, _>(0) == series_uid)
                .map(|i| Instance {
                    sop_instance_uid: i.get(1),
                    sop_class_uid: i.get(2),
                    transfer_syntax: i.get(3),
                    instance_number: i.get(4),
                    rows: i.get(5),
                    columns: i.get(6),
                    frames: i.get(7),
                    photometric: i.get(8),
                    file_size: i.get(9),
                    received_at: format_ms(i.get(10)),
                    calling_ae: i.get(11),
                    study_version: i.get(12),
                })
                .collect();
            Series {
                series_uid,
                modality: s.get(1),
                body_part: s.get(2),
                view_position: s.get(3),
                series_number: s.get(4),
                series_description: s.get(5),
                num_instances: s.get(6),
                instances,
            }
        })
        .collect();
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
            }));
        }
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
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM studies WHERE study_uid = $1")
            .bind(uid)
            .fetch_optional(&state.db.pool)
            .await?;
    let Some(status) = status else {
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
        per image and finding. 404 while there is none, with the study status and its job in \
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
    let store = &state.dicomweb.store;
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
        let purged: Option<Option<i64>> =
            sqlx::query_scalar("SELECT purged_at FROM studies WHERE study_uid = $1")
                .bind(&uid)
                .fetch_optional(&state.db.pool)
                .await?;
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
