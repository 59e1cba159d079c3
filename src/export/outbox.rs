//! The outbox table `exports`: one row per output instance per destination.
//!
//! States: `pending` (due at `next_attempt_at`) → `sent`, or after `max_attempts` failures
//! `dead` (with the reason); `cancelled` by an operator. A row is claimed by setting a lease
//! with a conditional update, which works the same on SQLite and PostgreSQL: of two workers
//! racing for a row, one update matches and the other matches nothing.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::clock::now_ms;
use crate::db::Database;
use crate::events::{self, EventType};

pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";
pub const DEAD: &str = "dead";
pub const CANCELLED: &str = "cancelled";
pub const STATES: [&str; 4] = [PENDING, SENT, DEAD, CANCELLED];

/// One outbox row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ExportRow {
    pub id: i64,
    pub result_id: i64,
    pub study_uid: String,
    /// Destination name from `[[export.destinations]]`.
    pub destination: String,
    /// `dicom`, `stow`, `fhir` or `hl7`.
    pub kind: String,
    /// `sr`, `overlay`, `seg` or `report` (FHIR, HL7).
    pub output: String,
    /// The same on every attempt, so the target stays idempotent. For `report` rows:
    /// `DiagnosticReport/<id>`, the resource the pushed Bundle is built around.
    pub sop_instance_uid: String,
    /// `pending`, `sent`, `dead` or `cancelled`.
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    /// Epoch ms of the next attempt (pending rows).
    pub next_attempt_at: i64,
    /// Why the last attempt failed (for `dead`: why it was given up).
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
    /// When the peer confirmed custody (Storage Commitment), for destinations that ask.
    pub committed_at: Option<i64>,
    #[serde(skip)]
    pub file_path: String,
}

const COLUMNS: &str = "id, result_id, study_uid, destination, kind, output, sop_instance_uid, \
    state, attempts, max_attempts, next_attempt_at, last_error, created_at, updated_at, sent_at, \
    committed_at, file_path";

fn from_row(r: &AnyRow) -> ExportRow {
    ExportRow {
        id: r.get("id"),
        result_id: r.get("result_id"),
        study_uid: r.get("study_uid"),
        destination: r.get("destination"),
        kind: r.get("kind"),
        output: r.get("output"),
        sop_instance_uid: r.get("sop_instance_uid"),
        state: r.get("state"),
        attempts: r.get("attempts"),
        max_attempts: r.get("max_attempts"),
        next_attempt_at: r.get("next_attempt_at"),
        last_error: r.get("last_error"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        sent_at: r.get("sent_at"),
        committed_at: r.get("committed_at"),
        file_path: r.get("file_path"),
    }
}

/// What to queue for one destination and output instance.
pub struct NewExport<'a> {
    pub result_id: i64,
    pub study_uid: &'a str,
    pub destination: &'a str,
    pub kind: &'a str,
    pub output: &'a str,
    pub sop_instance_uid: &'a str,
    pub file_path: &'a str,
    pub max_attempts: i64,
}

/// Queues one delivery; a row for the same destination and instance is kept as it is.
pub async fn insert(tx: &mut Transaction<'_, Any>, e: &NewExport<'_>) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO exports (result_id, study_uid, destination, kind, output, sop_instance_uid, \
           file_path, state, attempts, max_attempts, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $9, $9, $9) \
         ON CONFLICT (destination, sop_instance_uid) DO NOTHING",
    )
    .bind(e.result_id)
    .bind(e.study_uid)
    .bind(e.destination)
    .bind(e.kind)
    .bind(e.output)
    .bind(e.sop_instance_uid)
    .bind(e.file_path)
    .bind(e.max_attempts)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Claims the oldest due pending row for `lease_ms`, counting the attempt.
pub async fn claim(db: &Database, lease_ms: i64) -> Result<Option<ExportRow>, sqlx::Error> {
    let now = now_ms();
    let due: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM exports WHERE state = 'pending' AND next_attempt_at <= $1 \
           AND (lease_until IS NULL OR lease_until < $1) ORDER BY next_attempt_at, id LIMIT 8",
    )
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    for id in due {
        let row = sqlx::query(&format!(
            "UPDATE exports SET lease_until = $2, attempts = attempts + 1, updated_at = $1 \
             WHERE id = $3 AND state = 'pending' AND (lease_until IS NULL OR lease_until < $1) \
             RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(now + lease_ms)
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
        if let Some(r) = row {
            return Ok(Some(from_row(&r)));
        }
    }
    Ok(None)
}

/// Marks a claimed row sent and writes `export.sent`, in one transaction.
pub async fn mark_sent(
    db: &Database,
    row: &ExportRow,
    committed_at: Option<i64>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "UPDATE exports SET state = 'sent', sent_at = $2, updated_at = $2, lease_until = NULL, \
           last_error = NULL, committed_at = $3 WHERE id = $1",
    )
    .bind(row.id)
    .bind(now)
    .bind(committed_at)
    .execute(&mut *tx)
    .await?;
    events::append(
        &mut tx,
        db.backend,
        EventType::ExportSent,
        Some(&row.study_uid),
        None,
        &event_payload(row),
    )
    .await?;
    tx.commit().await
}

/// What `export.sent` and `export.failed` say about the row.
fn event_payload(row: &ExportRow) -> serde_json::Value {
    json!({
        "export_id": row.id,
        "study_uid": row.study_uid,
        "result_id": row.result_id,
        "destination": row.destination,
        "output": row.output,
        "sop_instance_uid": row.sop_instance_uid,
        "attempts": row.attempts,
    })
}

/// Records a failed attempt: back to `pending` at `retry_at`, or `dead` with `export.failed`
/// when the attempts are used up (or `permanent`).
pub async fn mark_failed(
    db: &Database,
    row: &ExportRow,
    error: &str,
    retry_at: i64,
    permanent: bool,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let dead = permanent || row.attempts >= row.max_attempts;
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "UPDATE exports SET state = $2, last_error = $3, next_attempt_at = $4, updated_at = $5, \
           lease_until = NULL WHERE id = $1 AND state = 'pending'",
    )
    .bind(row.id)
    .bind(if dead { DEAD } else { PENDING })
    .bind(error)
    .bind(retry_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if dead {
        events::append(
            &mut tx,
            db.backend,
            EventType::ExportFailed,
            Some(&row.study_uid),
            None,
            &{
                let mut p = event_payload(row);
                p["reason"] = json!(error);
                p
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(dead)
}

/// Filters of the list.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub state: Option<&'a str>,
    pub destination: Option<&'a str>,
    pub study_uid: Option<&'a str>,
    pub result_id: Option<i64>,
}

/// Rows matching `f`, newest first.
pub async fn list(
    db: &Database,
    f: &Filter<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<ExportRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM exports WHERE ($1 IS NULL OR state = $1) \
           AND ($2 IS NULL OR destination = $2) AND ($3 IS NULL OR study_uid = $3) \
           AND ($4 IS NULL OR result_id = $4) ORDER BY id DESC LIMIT $5 OFFSET $6"
    ))
    .bind(f.state)
    .bind(f.destination)
    .bind(f.study_uid)
    .bind(f.result_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(from_row).collect())
}

pub async fn get(db: &Database, id: i64) -> Result<Option<ExportRow>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM exports WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// Why an operator action was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ActionError {
    NotFound,
    /// The row's current state does not allow it.
    State(String),
}

/// Puts a dead, cancelled or pending row back in the queue, due now, with fresh attempts.
pub async fn retry(db: &Database, id: i64) -> Result<Result<ExportRow, ActionError>, sqlx::Error> {
    transition(
        db,
        id,
        "('dead', 'cancelled', 'pending')",
        "state = 'pending', attempts = 0, next_attempt_at = $2, lease_until = NULL",
    )
    .await
}

/// Cancels a pending row (a delivery in flight finishes, but the row is not retried).
pub async fn cancel(db: &Database, id: i64) -> Result<Result<ExportRow, ActionError>, sqlx::Error> {
    transition(
        db,
        id,
        "('pending')",
        "state = 'cancelled', lease_until = NULL",
    )
    .await
}

async fn transition(
    db: &Database,
    id: i64,
    from: &str,
    set: &str,
) -> Result<Result<ExportRow, ActionError>, sqlx::Error> {
    let now = now_ms();
    let row = sqlx::query(&format!(
        "UPDATE exports SET {set}, updated_at = $2 WHERE id = $1 AND state IN {from} RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(now)
    .fetch_optional(&db.pool)
    .await?;
    match row {
        Some(r) => Ok(Ok(from_row(&r))),
        None => Ok(Err(match get(db, id).await? {
            None => ActionError::NotFound,
            Some(r) => ActionError::State(r.state),
        })),
    }
}
