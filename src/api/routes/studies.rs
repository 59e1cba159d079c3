//! Studies and their results: search, detail, results (latest and by version), reprocess.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post, MethodRouter};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::api::auth::Audit;
use crate::api::error::{query_rejection, valid_uid};
use crate::api::response::format_ms;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::{Principal, Scope};
use crate::db::{like_literal, LIKE_ESCAPE};
use crate::domain::Urgency;
use crate::inference::manifest::TASK_CLASSIFICATION;
use crate::job;
use crate::result::{self, StudyResult};
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

fn opt_ms(r: &AnyRow, i: usize) -> Value {
    r.get::<Option<i64>, _>(i)
        .map_or(Value::Null, |ms| Value::String(format_ms(ms)))
}

const STUDY_COLUMNS: &str = "study_uid, patient_id, patient_name, patient_birth_date, \
    patient_sex, patient_age, accession_number, study_date, study_time, study_description, \
    modalities, num_series, num_instances, status, version, urgency, result_version, \
    first_received_at, last_received_at, completed_at, result_at, referring_physician, purged_at";

fn study_json(r: &AnyRow) -> Value {
    let modalities: String = r.get(10);
    json!({
        "study_uid": r.get::<String, _>(0),
        "patient_id": r.get::<Option<String>, _>(1),
        "patient_name": r.get::<Option<String>, _>(2),
        "patient_birth_date": r.get::<Option<String>, _>(3),
        "patient_sex": r.get::<Option<String>, _>(4),
        "patient_age": r.get::<Option<String>, _>(5),
        "accession_number": r.get::<Option<String>, _>(6),
        "study_date": r.get::<Option<String>, _>(7),
        "study_time": r.get::<Option<String>, _>(8),
        "study_description": r.get::<Option<String>, _>(9),
        "modalities": modalities.split('\\').filter(|m| !m.is_empty()).collect::<Vec<_>>(),
        "num_series": r.get::<i64, _>(11),
        "num_instances": r.get::<i64, _>(12),
        "status": r.get::<String, _>(13),
        "version": r.get::<i64, _>(14),
        "urgency": r.get::<Option<String>, _>(15),
        "result_version": r.get::<Option<i64>, _>(16),
        "first_received_at": format_ms(r.get::<i64, _>(17)),
        "last_received_at": format_ms(r.get::<i64, _>(18)),
        "completed_at": opt_ms(r, 19),
        "result_at": opt_ms(r, 20),
        "referring_physician": r.get::<Option<String>, _>(21),
        "purged_at": opt_ms(r, 22),
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
    let row = sqlx::query(&format!(
        "SELECT {STUDY_COLUMNS} FROM studies WHERE study_uid = $1"
    ))
    .bind(&uid)
    .fetch_optional(&state.db.pool)
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
    let series_json: Vec<Value> = series
        .iter()
        .map(|s| {
            let series_uid: String = s.get(0);
            let inst: Vec<Value> = instances
                .iter()
                .filter(|i| i.get::<String, _>(0) == series_uid)
                .map(|i| {
                    json!({
                        "sop_instance_uid": i.get::<String, _>(1),
                        "sop_class_uid": i.get::<String, _>(2),
                        "transfer_syntax": i.get::<String, _>(3),
                        "instance_number": i.get::<Option<i64>, _>(4),
                        "rows": i.get::<Option<i64>, _>(5),
                        "columns": i.get::<Option<i64>, _>(6),
                        "frames": i.get::<Option<i64>, _>(7),
                        "photometric": i.get::<Option<String>, _>(8),
                        "file_size": i.get::<i64, _>(9),
                        "received_at": format_ms(i.get::<i64, _>(10)),
                        "calling_ae": i.get::<String, _>(11),
                        "study_version": i.get::<i64, _>(12),
                    })
                })
                .collect();
            json!({
                "series_uid": series_uid,
                "modality": s.get::<Option<String>, _>(1),
                "body_part": s.get::<Option<String>, _>(2),
                "view_position": s.get::<Option<String>, _>(3),
                "series_number": s.get::<Option<i64>, _>(4),
                "series_description": s.get::<Option<String>, _>(5),
                "num_instances": s.get::<i64, _>(6),
                "instances": inst,
            })
        })
        .collect();
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
    let store = &state.store;
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
