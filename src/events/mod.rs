//! The event log: one durable row per state change, written in the same transaction as the
//! change itself, with a monotonically increasing id that SSE clients resume from.
//!
//! On PostgreSQL identity values are handed out before commit, so two concurrent
//! transactions could become visible out of id order and a reader resuming "after id N"
//! could miss one. An advisory transaction lock serialises event writers so ids become
//! visible in order; SQLite has a single writer anyway.

use serde::Serialize;
use sqlx::{Any, Transaction};

use crate::db::{now_ms, Backend};

/// The kinds of event the node emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    #[serde(rename = "study.received")]
    StudyReceived,
    #[serde(rename = "study.complete")]
    StudyComplete,
    #[serde(rename = "store.failed")]
    StoreFailed,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::StudyReceived => "study.received",
            EventType::StudyComplete => "study.complete",
            EventType::StoreFailed => "store.failed",
        }
    }
}

/// Lock key for serialising event writers on PostgreSQL ("rsev" in ASCII).
const EVENT_LOCK_KEY: i64 = 0x7273_6576;

/// Appends an event inside the caller's transaction and returns its id.
pub async fn append(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    kind: EventType,
    study_uid: Option<&str>,
    patient_id: Option<&str>,
    payload: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(EVENT_LOCK_KEY)
            .execute(&mut **tx)
            .await?;
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (type, study_uid, patient_id, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(study_uid)
    .bind(patient_id)
    .bind(payload.to_string())
    .bind(now_ms())
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}
