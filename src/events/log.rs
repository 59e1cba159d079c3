//! The event log: one durable row per state change, written in the same transaction as the
//! change itself, with a monotonically increasing id that SSE clients resume from.
//!
//! On PostgreSQL identity values are handed out before commit, so two concurrent
//! transactions could become visible out of id order and a reader resuming "after id N"
//! could miss one. An advisory transaction lock serialises event writers so ids become
//! visible in order; SQLite has a single writer anyway.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::clock::now_ms;
use crate::db::{Backend, Database};

/// One event as clients receive it: the JSON of an SSE `data:` line and of a history item.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Increasing; resume after it with `Last-Event-ID`.
    pub id: i64,
    /// `study.received`, `study.complete`, `study.urgent`, `study.purged`, `store.failed`,
    /// `inference.started`, `inference.model_completed`, `inference.completed`,
    /// `inference.failed`, `export.sent`, `export.failed`, `bulk.progress` or
    /// `bulk.completed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub study_uid: Option<String>,
    pub patient_id: Option<String>,
    /// RFC 3339.
    pub time: String,
    /// Type-specific payload.
    pub data: serde_json::Value,
}

/// The kinds of event the node emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    #[serde(rename = "study.received")]
    StudyReceived,
    #[serde(rename = "study.complete")]
    StudyComplete,
    #[serde(rename = "store.failed")]
    StoreFailed,
    #[serde(rename = "inference.started")]
    InferenceStarted,
    #[serde(rename = "inference.completed")]
    InferenceCompleted,
    #[serde(rename = "inference.failed")]
    InferenceFailed,
    /// One model of a study's job finished (before the combined `inference.completed`): its
    /// outcome, so a client sees the fast models' output while a slow one still runs.
    #[serde(rename = "inference.model_completed")]
    ModelCompleted,
    /// A priority push for a critical or urgent result (sent after `inference.completed`).
    #[serde(rename = "study.urgent")]
    StudyUrgent,
    /// One file of a LeapAI bulk request done.
    #[serde(rename = "bulk.progress")]
    BulkProgress,
    #[serde(rename = "bulk.completed")]
    BulkCompleted,
    /// An output (SR, overlay) reached an export destination.
    #[serde(rename = "export.sent")]
    ExportSent,
    /// An export was dead-lettered after its last attempt (the reason is in the payload).
    #[serde(rename = "export.failed")]
    ExportFailed,
    /// A study's received instances were removed (retention); its results stay.
    #[serde(rename = "study.purged")]
    StudyPurged,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::StudyReceived => "study.received",
            EventType::StudyComplete => "study.complete",
            EventType::StoreFailed => "store.failed",
            EventType::InferenceStarted => "inference.started",
            EventType::InferenceCompleted => "inference.completed",
            EventType::InferenceFailed => "inference.failed",
            EventType::ModelCompleted => "inference.model_completed",
            EventType::StudyUrgent => "study.urgent",
            EventType::BulkProgress => "bulk.progress",
            EventType::BulkCompleted => "bulk.completed",
            EventType::ExportSent => "export.sent",
            EventType::ExportFailed => "export.failed",
            EventType::StudyPurged => "study.purged",
        }
    }

    pub const ALL: [EventType; 13] = [
        EventType::StudyReceived,
        EventType::StudyComplete,
        EventType::StoreFailed,
        EventType::InferenceStarted,
        EventType::InferenceCompleted,
        EventType::InferenceFailed,
        EventType::ModelCompleted,
        EventType::StudyUrgent,
        EventType::BulkProgress,
        EventType::BulkCompleted,
        EventType::ExportSent,
        EventType::ExportFailed,
        EventType::StudyPurged,
    ];

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One stored event, as replayed and streamed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub study_uid: Option<String>,
    pub patient_id: Option<String>,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub data: serde_json::Value,
    /// [`Event::json_text`], rendered once however many subscribers stream the event.
    #[serde(skip)]
    rendered: std::sync::OnceLock<String>,
}

impl Event {
    fn from_row(r: &AnyRow) -> Event {
        let payload: String = r.get("payload");
        Event::new(
            r.get("id"),
            r.get("type"),
            r.get("study_uid"),
            r.get("patient_id"),
            r.get("created_at"),
            serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn new(
        id: i64,
        kind: String,
        study_uid: Option<String>,
        patient_id: Option<String>,
        created_at: i64,
        data: serde_json::Value,
    ) -> Event {
        Event {
            id,
            kind,
            study_uid,
            patient_id,
            created_at,
            data,
            rendered: std::sync::OnceLock::new(),
        }
    }

    /// What clients receive (SSE `data:` and the history).
    pub fn view(&self) -> EventView {
        EventView {
            id: self.id,
            kind: self.kind.clone(),
            study_uid: self.study_uid.clone(),
            patient_id: self.patient_id.clone(),
            time: crate::clock::format_ms(self.created_at),
            data: self.data.clone(),
        }
    }

    /// [`Event::view`] as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }

    /// [`Event::to_json`] as text, serialised once per event.
    pub fn json_text(&self) -> &str {
        self.rendered.get_or_init(|| self.to_json().to_string())
    }

    /// The urgency an event carries (`inference.completed`, `study.urgent`), if any.
    pub fn urgency(&self) -> Option<crate::domain::Urgency> {
        self.data
            .get("urgency")
            .and_then(|u| u.as_str())
            .and_then(crate::domain::Urgency::parse)
    }
}

/// Events with an id above `after`, oldest first, optionally for one study.
pub async fn fetch_after(
    db: &Database,
    after: i64,
    study_uid: Option<&str>,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, type, study_uid, patient_id, created_at, payload FROM events \
         WHERE id > $1 AND ($2 IS NULL OR study_uid = $2) ORDER BY id LIMIT $3",
    )
    .bind(after)
    .bind(study_uid)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(Event::from_row).collect())
}

/// The newest event id (0 when there is none).
pub async fn latest_id(db: &Database) -> Result<i64, sqlx::Error> {
    let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
        .fetch_one(&db.pool)
        .await?;
    Ok(id.unwrap_or(0))
}

/// The channel on which PostgreSQL nodes announce committed events (payload: the event id),
/// so every node's [`EventBus`](super::EventBus) reads them at once.
pub const NOTIFY_CHANNEL: &str = "radstream_events";

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
    if backend == Backend::Postgres {
        // Delivered at commit, after the advisory lock's order is settled.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(id)
}
