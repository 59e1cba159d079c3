//! Shared state of the HTTP handlers: one `Clone` struct. What only one part of the API
//! reads (DICOMweb's context, FHIR's settings, a vendor adapter's) lives in that part's own
//! state, which holds this one beside it (`FromRef`).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::limits::HttpLimits;
use crate::auth::Authenticator;
use crate::db::Database;
use crate::events::EventBus;
use crate::inference::Engine;
use crate::metrics::Metrics;
use crate::store::{FileStore, Store};
use crate::study::StudyTracker;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    /// Group commit of the audit rows of DICOMweb reads (see `api::auth::audit_read`).
    pub audit: crate::auth::audit::AuditWriter,
    pub files: FileStore,
    /// The store (its file and index operations, for purges).
    pub store: Store,
    pub tracker: StudyTracker,
    /// Associations being served by the DICOM listener.
    pub open_associations: Arc<AtomicUsize>,
    /// Address the DICOM listener is bound to (empty without the `ingest` role).
    pub dicom_addr: String,
    /// This node: its id and roles.
    pub node: Arc<crate::cluster::Node>,
    /// Seconds after which a silent node counts as dead (`/health` lists the live ones).
    pub node_expire_secs: u64,
    pub ae_title: String,
    /// Installed models.
    pub engine: Engine,
    /// Event fan-out for the SSE streams.
    pub bus: EventBus,
    /// Model the pipeline runs (`None`: the first installed classification model); `/health`
    /// reports whether it is loaded, and the adapters infer with it.
    pub pipeline_model: Option<String>,
    /// Wakes the pipeline workers (after a reprocess request).
    pub jobs_ready: Arc<tokio::sync::Notify>,
    /// The node's metrics (`GET /metrics`; also recorded into by the HTTP layer).
    pub metrics: Metrics,
    /// Checks credentials and scopes of every protected route (see `api::auth`).
    pub auth: Arc<Authenticator>,
    /// Body size and response time limits of every route.
    pub http_limits: HttpLimits,
}
