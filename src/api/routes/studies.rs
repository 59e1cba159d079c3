//! Studies and their results: search, detail, results (latest and by version), reprocess.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post, MethodRouter};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::auth::Audit;
use crate::api::error::{query_rejection, valid_uid};
use crate::api::response::format_ms;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::{Principal, Scope};
use crate::domain::Urgency;
use crate::inference::manifest::TASK_CLASSIFICATION;
use crate::job;
use crate::result::{self, StudyResult};
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

fn study_uid(raw: &str) -> Result<String, ApiError> {
    valid_uid("study_uid", raw)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
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
    pub format: Option<String>,
    pub access_token: Option<String>,
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

fn opt_ms(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(format_ms(ms)))
}

fn study_json(r: &StudyRow) -> Value {
    json!({
        "study_uid": r.study_uid,
        "patient_id": r.patient_id,
        "patient_name": r.patient_name,
        "patient_birth_date": r.patient_birth_date,
        "patient_sex": r.patient_sex,
        "patient_age": r.patient_age,
        "accession_number": r.accession_number,
        "study_date": r.study_date,
        "study_time": r.study_time,
        "study_description": r.study_description,
        "modalities": r.modality_list(),
        "num_series": r.num_series,
        "num_instances": r.num_instances,
        "status": r.status,
        "version": r.version,
        "urgency": r.urgency,
        "result_version": r.result_version,
        "first_received_at": format_ms(r.first_received_at),
        "last_received_at": format_ms(r.last_received_at),
        "completed_at": opt_ms(r.completed_at),
        "result_at": opt_ms(r.result_at),
        "referring_physician": r.referring_physician,
        "purged_at": opt_ms(r.purged_at),
    })
}

fn instance_json(i: &InstanceRow) -> Value {
    json!({
        "sop_instance_uid": i.sop_instance_uid,
        "sop_class_uid": i.sop_class_uid,
        "transfer_syntax": i.transfer_syntax,
        "instance_number": i.instance_number,
        "rows": i.rows,
        "columns": i.columns,
        "frames": i.frames,
        "photometric": i.photometric,
        "file_size": i.file_size,
        "received_at": format_ms(i.received_at),
        "calling_ae": i.calling_ae,
        "study_version": i.study_version,
    })
}

fn series_json(s: &SeriesRow, instances: &[InstanceRow]) -> Value {
    let inst: Vec<Value> = instances
        .iter()
        .filter(|i| i.series_uid == s.series_uid)
        .map(instance_json)
        .collect();
    json!({
        "series_uid": s.series_uid,
        "modality": s.modality,
        "body_part": s.body_part,
        "view_position": s.view_position,
        "series_number": s.series_number,
        "series_description": s.series_description,
        "num_instances": s.num_instances,
        "instances": inst,
    })
}

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
    let filter = StudyFilter {
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
    let items: Vec<Value> = rows.iter().map(study_json).collect();
    Ok(ctx.reply(json!({
        "items": items,
        "page": page,
        "page_size": page_size,
        "total": total,
    })))
}

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
    let mut study = study_json(&row);
    audit
        .record(
            &state.db,
            "study.read",
            study["patient_id"].as_str(),
            Some(&uid),
            StatusCode::OK,
        )
        .await?;
    let series = index::series_of_study(&state.db, &uid).await?;
    let instances = index::instances_of_study(&state.db, &uid).await?;
    let series_json: Vec<Value> = series.iter().map(|s| series_json(s, &instances)).collect();
    study["series"] = Value::Array(series_json);
    study["results"] =
        serde_json::to_value(result::versions(&state.db, &uid).await?).unwrap_or(Value::Null);
    study["jobs"] = serde_json::to_value(job::list(&state.db, None, Some(&uid), 50, 0).await?)
        .unwrap_or(Value::Null);
    let rows = study["series"].clone();
    Ok(ctx.reply(study).csv_rows(rows))
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
#[serde(deny_unknown_fields)]
pub struct ResultQuery {
    /// A result version instead of the current one (from 1).
    pub version: Option<i64>,
    pub format: Option<String>,
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
