//! Storing a study result (with its job, the study's latest urgency and the events, in one
//! transaction) and reading results back.

use serde_json::json;
use sqlx::{Any, Transaction};

use super::model::StudyResult;
use crate::clock::now_ms;
use crate::db::{Backend, Database};
use crate::domain::Urgency;
use crate::events::{self, EventType};
use crate::job;

/// Ids written by [`store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub result_id: i64,
    pub version: i64,
}

/// Stores `result` for the job held by `worker` in `tx`: the result row, the job's success,
/// the study's current urgency, `inference.completed` and (critical/urgent) `study.urgent`.
/// The caller commits, after adding what the result owes others in the same transaction.
/// Returns `None` when the job is no longer held by `worker`: the caller rolls back, so
/// nothing is written and a job taken over after a lost lease never yields two results.
pub async fn store(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    worker: &str,
    result: &StudyResult,
) -> Result<Option<Stored>, sqlx::Error> {
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM results WHERE study_uid = $1",
    )
    .bind(&result.study_instance_uid)
    .fetch_one(&mut **tx)
    .await?;
    let now = now_ms();
    let body = serde_json::to_string(result).unwrap_or_default();
    let patient_id = Some(result.metadata.patient_id.as_str()).filter(|p| !p.is_empty());
    let result_id: i64 = sqlx::query_scalar(
        "INSERT INTO results (study_uid, study_version, version, job_id, model_id, model_version, \
           status, urgency, patient_id, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(&result.study_instance_uid)
    .bind(result.study_version)
    .bind(version)
    .bind(result.job_id)
    .bind(&result.model.id)
    .bind(&result.model.version)
    .bind(&result.status)
    .bind(result.urgency.as_str())
    .bind(patient_id)
    .bind(body)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    if !job::mark_succeeded(tx, result.job_id, worker, result_id).await? {
        return Ok(None);
    }
    crate::store::index::set_current_result(
        tx,
        &result.study_instance_uid,
        result.urgency.as_str(),
        version,
        now,
    )
    .await?;
    let payload = json!({
        "study_uid": result.study_instance_uid,
        "study_version": result.study_version,
        "job_id": result.job_id,
        "result_id": result_id,
        "result_version": version,
        "status": result.status,
        "urgency": result.urgency,
        "triage": result.triage,
        "model": {
            "id": result.model.id,
            "version": result.model.version,
            "validation_status": result.model.validation_status,
        },
        "models": result.models.iter().map(|m| json!({
            "id": m.id,
            "task": m.task,
            "status": m.status,
            "error": m.error,
            "validation_status": m.validation_status,
        })).collect::<Vec<_>>(),
        "measurements": result.measurements,
        "summary": result.summary,
        "metadata": result.metadata,
        "timings": result.timings,
    });
    events::append(
        tx,
        backend,
        EventType::InferenceCompleted,
        Some(&result.study_instance_uid),
        patient_id,
        &payload,
    )
    .await?;
    if result.urgency >= Urgency::Urgent {
        events::append(
            tx,
            backend,
            EventType::StudyUrgent,
            Some(&result.study_instance_uid),
            patient_id,
            &json!({
                "study_uid": result.study_instance_uid,
                "result_id": result_id,
                "result_version": version,
                "urgency": result.urgency,
                "reasons": result.triage.reasons,
                "findings_present": result.summary.findings_present,
            }),
        )
        .await?;
    }
    Ok(Some(Stored { result_id, version }))
}

/// A stored result: its row id, version and JSON body.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResultRecord {
    pub id: i64,
    pub version: i64,
    pub body: String,
    /// The highest result version of the study.
    pub latest_version: i64,
}

impl ResultRecord {
    /// The body with the row's id and version (`superseded` is left to the caller).
    pub fn parse(&self) -> Result<StudyResult, serde_json::Error> {
        let mut res: StudyResult = serde_json::from_str(&self.body)?;
        res.id = self.id;
        res.version = self.version;
        Ok(res)
    }

    fn into_result(self, superseded: bool) -> Option<StudyResult> {
        let mut res = self.parse().ok()?;
        res.superseded = superseded && self.latest_version > res.version;
        Some(res)
    }
}

const RECORD_COLUMNS: &str = "r.id, r.version, r.body, \
    (SELECT MAX(m.version) FROM results m WHERE m.study_uid = r.study_uid) AS latest_version";

/// The current result of a study.
pub async fn latest(db: &Database, study_uid: &str) -> Result<Option<StudyResult>, sqlx::Error> {
    let row: Option<ResultRecord> = sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM results r WHERE r.study_uid = $1 \
         ORDER BY r.version DESC LIMIT 1"
    ))
    .bind(study_uid)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.and_then(|r| r.into_result(false)))
}

/// One result version of a study.
pub async fn by_version(
    db: &Database,
    study_uid: &str,
    version: i64,
) -> Result<Option<StudyResult>, sqlx::Error> {
    let row: Option<ResultRecord> = sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM results r WHERE r.study_uid = $1 AND r.version = $2"
    ))
    .bind(study_uid)
    .bind(version)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.and_then(|r| r.into_result(true)))
}

/// One result by its row id.
pub async fn record(db: &Database, id: i64) -> Result<Option<ResultRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM results r WHERE r.id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await
}

/// A result row without its body: enough to list and filter results.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResultSummary {
    pub id: i64,
    pub study_uid: String,
    pub version: i64,
    /// The highest result version of the study.
    pub latest_version: i64,
}

/// Results, optionally of one study, oldest first.
pub async fn summaries(
    db: &Database,
    study_uid: Option<&str>,
) -> Result<Vec<ResultSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.id, r.study_uid, r.version, \
           (SELECT MAX(m.version) FROM results m WHERE m.study_uid = r.study_uid) AS latest_version \
         FROM results r WHERE ($1 IS NULL OR r.study_uid = $1) ORDER BY r.id",
    )
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await
}

/// The id of the study's latest result version, if any.
pub async fn latest_id(db: &Database, study_uid: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM results WHERE study_uid = $1 ORDER BY version DESC LIMIT 1")
        .bind(study_uid)
        .fetch_optional(&db.pool)
        .await
}

/// A model that produced results.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ModelUsed {
    pub model_id: String,
    pub model_version: String,
}

/// Models that produced results, by id and version.
pub async fn models_used(db: &Database) -> Result<Vec<ModelUsed>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT model_id, model_version FROM results ORDER BY model_id, model_version",
    )
    .fetch_all(&db.pool)
    .await
}

/// One line per result version of a study, newest first.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct VersionInfo {
    pub id: i64,
    /// Result version (1 = first).
    pub version: i64,
    pub study_version: i64,
    pub job_id: i64,
    pub model_id: String,
    pub model_version: String,
    /// `final`, `not_applicable`, `rejected` or `failed`.
    pub status: String,
    pub urgency: String,
    /// Epoch milliseconds.
    pub created_at: i64,
}

pub async fn versions(db: &Database, study_uid: &str) -> Result<Vec<VersionInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, version, study_version, job_id, model_id, model_version, status, urgency, \
           created_at FROM results WHERE study_uid = $1 ORDER BY version DESC",
    )
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await
}
