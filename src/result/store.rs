//! Storing a study result (with its job, the study's latest urgency and the events, in one
//! transaction) and reading results back.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::model::StudyResult;
use crate::db::{now_ms, Database};
use crate::domain::Urgency;
use crate::events::{self, EventType};
use crate::job;

/// Ids written by [`store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub result_id: i64,
    pub version: i64,
}

/// Stores `result` for the job held by `worker`: the result row, the job's success, the
/// study's current urgency, `inference.completed` and (critical/urgent) `study.urgent`.
/// Returns `None` (and writes nothing) when the job is no longer held by `worker`, so a job
/// taken over after a lost lease never yields two results.
pub async fn store(
    db: &Database,
    worker: &str,
    result: &StudyResult,
) -> Result<Option<Stored>, sqlx::Error> {
    let mut tx = db.begin_write().await?;
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM results WHERE study_uid = $1",
    )
    .bind(&result.study_instance_uid)
    .fetch_one(&mut *tx)
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
    .fetch_one(&mut *tx)
    .await?;
    if !job::mark_succeeded(&mut tx, result.job_id, worker, result_id).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    sqlx::query(
        "UPDATE studies SET urgency = $2, result_version = $3, result_at = $4 WHERE study_uid = $1",
    )
    .bind(&result.study_instance_uid)
    .bind(result.urgency.as_str())
    .bind(version)
    .bind(now)
    .execute(&mut *tx)
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
        "model": { "id": result.model.id, "version": result.model.version },
        "summary": result.summary,
        "metadata": result.metadata,
        "timings": result.timings,
    });
    events::append(
        &mut tx,
        db.backend,
        EventType::InferenceCompleted,
        Some(&result.study_instance_uid),
        patient_id,
        &payload,
    )
    .await?;
    if result.urgency >= Urgency::Urgent {
        events::append(
            &mut tx,
            db.backend,
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
    if result.status == "final" {
        // Owed in the result's transaction: a crash before they are written loses nothing.
        crate::report::generate::owe_outputs(&mut tx, result_id, &result.study_instance_uid)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(Stored { result_id, version }))
}

fn from_row(r: &AnyRow, latest_version: Option<i64>) -> Option<StudyResult> {
    let body: String = r.get(2);
    let mut res: StudyResult = serde_json::from_str(&body).ok()?;
    res.id = r.get(0);
    res.version = r.get(1);
    res.superseded = latest_version.is_some_and(|v| v > res.version);
    Some(res)
}

async fn latest_version(db: &Database, study_uid: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MAX(version) FROM results WHERE study_uid = $1")
        .bind(study_uid)
        .fetch_one(&db.pool)
        .await
}

/// The current result of a study.
pub async fn latest(db: &Database, study_uid: &str) -> Result<Option<StudyResult>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, version, body FROM results WHERE study_uid = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(study_uid)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.as_ref().and_then(|r| from_row(r, None)))
}

/// One result version of a study.
pub async fn by_version(
    db: &Database,
    study_uid: &str,
    version: i64,
) -> Result<Option<StudyResult>, sqlx::Error> {
    let row =
        sqlx::query("SELECT id, version, body FROM results WHERE study_uid = $1 AND version = $2")
            .bind(study_uid)
            .bind(version)
            .fetch_optional(&db.pool)
            .await?;
    let latest = latest_version(db, study_uid).await?;
    Ok(row.as_ref().and_then(|r| from_row(r, latest)))
}

/// One line per result version of a study, newest first.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
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
    let rows = sqlx::query(
        "SELECT id, version, study_version, job_id, model_id, model_version, status, urgency, \
           created_at FROM results WHERE study_uid = $1 ORDER BY version DESC",
    )
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| VersionInfo {
            id: r.get(0),
            version: r.get(1),
            study_version: r.get(2),
            job_id: r.get(3),
            model_id: r.get(4),
            model_version: r.get(5),
            status: r.get(6),
            urgency: r.get(7),
            created_at: r.get(8),
        })
        .collect())
}
