//! The durable job queue: created when a study completes (or on a reprocess request), claimed
//! by pipeline workers under a lease, finished with a result or a reason.
//!
//! Claiming is safe across workers and nodes: on PostgreSQL the candidate row is locked with
//! `FOR UPDATE SKIP LOCKED`; SQLite has a single writer, so the claiming `UPDATE` is atomic.
//! A worker holds a job for `lease` and renews it while working; a job whose lease ran out
//! (its worker crashed) is claimable again.

use serde::Serialize;
use sqlx::{Any, Transaction};

use crate::clock::now_ms;
use crate::db::{Backend, Database};

/// Job states as stored.
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

const COLUMNS: &str = "id, study_uid, study_version, kind, state, attempts, last_error, model_id, \
    requested_by, worker, lease_until, run_after, started_at, finished_at, result_id, \
    created_at, updated_at";

/// A job row.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub study_uid: String,
    pub study_version: i64,
    /// `inference` (queued by study completion) or `reprocess` (requested through the API).
    pub kind: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// Model asked for; `None` is the node's default model.
    pub model_id: Option<String>,
    /// Who asked for a reprocess (the credential's subject).
    pub requested_by: Option<String>,
    /// Worker holding the job.
    pub worker: Option<String>,
    /// Epoch milliseconds: the worker's lease ends.
    pub lease_until: Option<i64>,
    /// Epoch milliseconds: not claimed before (retry back-off).
    pub run_after: i64,
    /// Epoch milliseconds.
    pub started_at: Option<i64>,
    /// Epoch milliseconds.
    pub finished_at: Option<i64>,
    /// The stored result, once succeeded.
    pub result_id: Option<i64>,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds.
    pub updated_at: i64,
}

impl Job {
    /// Succeeded or failed for good.
    pub fn is_finished(&self) -> bool {
        self.state == SUCCEEDED || self.state == FAILED
    }
}

/// The channel on which PostgreSQL nodes announce queued jobs, so idle workers on every
/// node claim at once instead of at their next poll.
pub const NOTIFY_CHANNEL: &str = "radstream_jobs";

/// Announces a queued job on PostgreSQL (delivered when `tx` commits); nothing on SQLite,
/// where every worker is in this process.
async fn announce(tx: &mut Transaction<'_, Any>) -> Result<(), sqlx::Error> {
    if crate::db::is_postgres(tx) {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Queues the automatic inference job for a study version. A second call for the same
/// version is a no-op (partial unique index), so a study version never gets two of them.
/// Returns the new job id.
pub async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
    study_version: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let now = now_ms();
    let id = sqlx::query_scalar(
        "INSERT INTO jobs (study_uid, study_version, kind, state, attempts, created_at, updated_at) \
         VALUES ($1, $2, 'inference', $3, 0, $4, $4) \
         ON CONFLICT (study_uid, study_version) WHERE kind = 'inference' DO NOTHING RETURNING id",
    )
    .bind(study_uid)
    .bind(study_version)
    .bind(QUEUED)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if id.is_some() {
        announce(tx).await?;
    }
    Ok(id)
}

/// Queues a reprocess job for the study's current version (its result becomes a new result
/// version). `None` when the study is unknown or its instances were purged (retention); on
/// PostgreSQL the study row is read `FOR SHARE`, so a purge committing meanwhile is seen.
pub async fn enqueue_reprocess(
    db: &Database,
    study_uid: &str,
    model_id: Option<&str>,
    requested_by: &str,
) -> Result<Option<Job>, sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let Some(version) =
        crate::store::index::unpurged_version(&mut tx, db.backend, study_uid).await?
    else {
        tx.rollback().await?;
        return Ok(None);
    };
    let job: Job = sqlx::query_as(&format!(
        "INSERT INTO jobs (study_uid, study_version, kind, state, attempts, model_id, \
           requested_by, created_at, updated_at) \
         VALUES ($1, $2, 'reprocess', $3, 0, $4, $5, $6, $6) RETURNING {COLUMNS}"
    ))
    .bind(study_uid)
    .bind(version)
    .bind(QUEUED)
    .bind(model_id)
    .bind(requested_by)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    announce(&mut tx).await?;
    tx.commit().await?;
    Ok(Some(job))
}

/// Takes the oldest runnable job (queued and due, or running with an expired lease) for
/// `worker`, holding it for `lease_ms`.
pub async fn claim(db: &Database, worker: &str, lease_ms: i64) -> Result<Option<Job>, sqlx::Error> {
    let now = now_ms();
    let lock = match db.backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE jobs SET state = 'running', worker = $1, lease_until = $2, \
           attempts = attempts + 1, started_at = $3, updated_at = $3 \
         WHERE id = (SELECT id FROM jobs \
                     WHERE (state = 'queued' AND run_after <= $3) \
                        OR (state = 'running' AND lease_until < $3) \
                     ORDER BY id LIMIT 1 {lock}) \
         RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&db.pool)
        .await
}

/// Extends the lease; `false` when the job is no longer ours (lease lost to another worker).
pub async fn renew(
    db: &Database,
    id: i64,
    worker: &str,
    lease_ms: i64,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE jobs SET lease_until = $3, updated_at = $4 \
         WHERE id = $1 AND worker = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(now + lease_ms)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks the job succeeded inside the transaction that stores its result; `false` (and the
/// caller rolls back) when the job is no longer held by `worker`.
pub async fn mark_succeeded(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    worker: &str,
    result_id: i64,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE jobs SET state = 'succeeded', result_id = $3, finished_at = $4, updated_at = $4, \
           lease_until = NULL, last_error = NULL \
         WHERE id = $1 AND worker = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(result_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Puts the job back in the queue to run after `delay_ms` (a transient failure).
pub async fn retry_later(
    db: &Database,
    id: i64,
    worker: &str,
    error: &str,
    delay_ms: i64,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE jobs SET state = 'queued', run_after = $4, last_error = $3, lease_until = NULL, \
           updated_at = $5 \
         WHERE id = $1 AND worker = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(error)
    .bind(now + delay_ms)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks the job failed for good, inside the caller's transaction (with its event).
pub async fn mark_failed(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    worker: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE jobs SET state = 'failed', last_error = $3, finished_at = $4, updated_at = $4, \
           lease_until = NULL \
         WHERE id = $1 AND worker = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn get(db: &Database, id: i64) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await
}

/// Jobs newest first, optionally by state and study.
pub async fn list(
    db: &Database,
    state: Option<&str>,
    study_uid: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE ($1 IS NULL OR state = $1) \
         AND ($2 IS NULL OR study_uid = $2) ORDER BY id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(state)
    .bind(study_uid)
    .bind(limit)
    .bind(offset)
    .fetch_all(&db.pool)
    .await
}

/// Jobs in one state, for the queue gauges.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StateCount {
    pub state: String,
    pub jobs: i64,
    /// Epoch milliseconds the oldest was created.
    pub oldest_created_at: Option<i64>,
}

/// How many jobs are queued and running, and the oldest of each.
pub async fn active_counts(db: &Database) -> Result<Vec<StateCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT state, COUNT(*) AS jobs, MIN(created_at) AS oldest_created_at FROM jobs \
         WHERE state IN ('queued', 'running') GROUP BY state",
    )
    .fetch_all(&db.pool)
    .await
}

/// Whether a job on the study is queued or running (read in the caller's transaction).
pub async fn study_busy(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
) -> Result<bool, sqlx::Error> {
    let jobs: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE study_uid = $1 AND state IN ('queued', 'running')",
    )
    .bind(study_uid)
    .fetch_one(&mut **tx)
    .await?;
    Ok(jobs > 0)
}

/// Jobs waiting or running (queue depth).
pub async fn depth(db: &Database) -> Result<(i64, i64), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Depth {
        queued: i64,
        running: i64,
    }
    let d: Depth = sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END), 0) AS queued, \
                COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0) AS running \
         FROM jobs",
    )
    .fetch_one(&db.pool)
    .await?;
    Ok((d.queued, d.running))
}
