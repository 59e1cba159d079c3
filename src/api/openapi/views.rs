//! Schemas of the answers that handlers build with `json!` rather than from a typed struct:
//! documentation-only mirrors, never constructed. The e2e test `openapi::` validates live
//! answers against them (a key renamed, dropped or retyped in a handler fails it; a new key
//! does not, as the schemas allow more properties), and a unit test checks that [`Event`] has
//! exactly the keys of `event_json`.

#![allow(dead_code)]

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::Urgency;
use crate::job::Job;
use crate::result::store::VersionInfo;

/// `GET /ping`.
#[derive(Serialize, ToSchema)]
pub struct Ping {
    /// Always `ok`.
    pub status: String,
}

/// `GET /health` (200 when healthy, 503 otherwise).
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub database: HealthDatabase,
    pub storage: HealthStorage,
    pub dicom: HealthDicom,
    /// Node version.
    pub version: String,
    /// VoxRay's services: `medical_model` `loaded`/`not_loaded`; `stt_model`, `tts_service`,
    /// `llm_service` are always `not_available` (not part of radstream).
    pub services: std::collections::BTreeMap<String, String>,
    /// When this answer was made (UTC).
    pub timestamp: String,
    /// What is wrong, when unhealthy.
    pub errors: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct HealthDatabase {
    /// `up` or `down`.
    pub status: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
}

#[derive(Serialize, ToSchema)]
pub struct HealthStorage {
    /// `up` or `low_space`.
    pub status: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct HealthDicom {
    /// `up`.
    pub status: String,
    /// Address the DICOM listener is bound to.
    pub address: String,
    pub ae_title: String,
    pub open_associations: u64,
    pub studies_pending_completion: u64,
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
    pub urgency: Option<Urgency>,
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

/// `GET /v1/jobs`.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub items: Vec<Job>,
    pub limit: i64,
    pub offset: i64,
    /// Jobs waiting, over the whole queue.
    pub queued: i64,
    /// Jobs being worked on, over the whole queue.
    pub running: i64,
}

/// One event: the JSON of an SSE `data:` line and of a history item.
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// Increasing; resume after it with `Last-Event-ID`.
    pub id: i64,
    /// `study.received`, `study.complete`, `store.failed`, `inference.started`,
    /// `inference.completed`, `inference.failed` or `study.urgent`.
    #[serde(rename = "type")]
    pub kind: String,
    pub study_uid: Option<String>,
    pub patient_id: Option<String>,
    /// RFC 3339.
    pub time: String,
    /// Type-specific payload.
    pub data: Value,
}

/// `GET /v1/events/history`.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub items: Vec<Event>,
    /// Pass as `after` for the next page; null when empty.
    pub next_after: Option<i64>,
    /// Newest event id published on this node.
    pub newest_id: i64,
}

/// One audit log entry.
#[derive(Serialize, ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// Epoch milliseconds.
    pub at_ms: i64,
    /// Credential subject (JWT `sub` or API key name).
    pub principal: String,
    /// `jwt` or `api_key`.
    pub auth_method: String,
    /// e.g. `results.read`, `studies.search`, `events.subscribe`, `audit.read`.
    pub action: String,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub remote_addr: Option<String>,
    pub request_id: Option<String>,
    /// HTTP status answered.
    pub status: Option<i64>,
}

/// `GET /v1/audit`.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub count: u64,
    /// Newest first.
    pub items: Vec<AuditRecord>,
}
