//! Shared state of the HTTP handlers: one `Clone` struct.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::limits::HttpLimits;
use crate::auth::Authenticator;
use crate::db::Database;
use crate::events::EventBus;
use crate::inference::Engine;
use crate::metrics::Metrics;
use crate::store::FileStore;
use crate::study::StudyTracker;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    /// Group commit of the audit rows of DICOMweb reads (see `api::auth::audit_read`).
    pub audit: crate::auth::audit::AuditWriter,
    pub files: FileStore,
    pub tracker: StudyTracker,
    /// Associations being served by the DICOM listener.
    pub open_associations: Arc<AtomicUsize>,
    /// Address the DICOM listener is bound to.
    pub dicom_addr: String,
    pub ae_title: String,
    /// Installed models.
    pub engine: Engine,
    /// Event fan-out for the SSE streams.
    pub bus: EventBus,
    /// Server folders the LeapAI adapter may read and write.
    pub leapai: crate::compat::leapai::LeapAiPaths,
    /// Pi Health Triage adapter settings.
    pub compat_pi: crate::compat::PiSettings,
    /// Triage rules (the pipeline's), for adapters that triage images themselves.
    pub triage: crate::result::TriageSettings,
    /// Model the pipeline runs (`None`: the first installed classification model), for the adapters too.
    pub pipeline_model: Option<String>,
    /// Wakes the pipeline workers (after a reprocess request).
    pub jobs_ready: Arc<tokio::sync::Notify>,
    /// The node's metrics (`GET /metrics`; also recorded into by the HTTP layer).
    pub metrics: Metrics,
    /// Checks credentials and scopes of every protected route (see `api::auth`).
    pub auth: Arc<Authenticator>,
    /// Body size and response time limits of every route.
    pub http_limits: HttpLimits,
    /// `[fhir]` settings (report status, base URL).
    pub fhir: crate::fhir::FhirSettings,
    /// The store and accepted syntaxes for STOW-RS; CORS origins.
    pub dicomweb: crate::dicomweb::DicomWebContext,
    /// VoxRay adapter: feature flags and the patient-id hash key.
    pub voxray: crate::compat::voxray::VoxRayContext,
    /// RadAnalyzer V3 adapter: billing rates.
    pub radanalyzer: crate::compat::radanalyzer::RadAnalyzerContext,
}
