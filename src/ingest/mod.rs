//! The DICOM SCP: where instances enter the node.
//!
//! - [`listener`]: accept loops (plain and TLS), one task per connection;
//! - [`slots`]: pending-connection and association slots (global and per peer);
//! - [`transport`]: an established association over plain TCP or TLS;
//! - [`policy`]: called/calling AE checks with their A-ASSOCIATE-RJ reasons;
//! - [`association`]: C-ECHO and C-STORE on one association, answering a store only once
//!   [`crate::store::Store::accept`] says the instance is durable;
//! - [`dimse`]: command sets and statuses;
//! - [`sop_classes`]: the abstract and transfer syntaxes offered.

pub mod association;
pub mod dimse;
pub mod listener;
pub mod policy;
pub mod settings;
pub mod slots;
pub mod sop_classes;
pub mod transport;

use crate::db::Database;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::study::StudyTracker;

pub use listener::DicomListener;
pub use settings::{DicomSettings, DicomTlsSettings, PeerRule, SopClassMode};

/// What every association task needs.
pub struct IngestContext {
    pub settings: DicomSettings,
    pub store: Store,
    pub tracker: StudyTracker,
    pub db: Database,
    /// Counts stored and refused instances and accepted and rejected associations.
    pub metrics: Metrics,
    pub abstract_syntaxes: Vec<String>,
    pub transfer_syntaxes: Vec<&'static str>,
    /// Stored MPPS requests go here when `[mpps] forward` names a RIS.
    pub mpps_forward: Option<tokio::sync::mpsc::UnboundedSender<crate::mpps::Forward>>,
}

impl IngestContext {
    pub fn new(
        settings: DicomSettings,
        store: Store,
        tracker: StudyTracker,
        db: Database,
        metrics: Metrics,
    ) -> Self {
        IngestContext {
            abstract_syntaxes: sop_classes::accepted_abstract_syntaxes(&settings),
            transfer_syntaxes: sop_classes::accepted_transfer_syntaxes(),
            settings,
            store,
            tracker,
            db,
            metrics,
            mpps_forward: None,
        }
    }

    /// Forwards every stored MPPS request to this queue (see `scu::mpps_forward`).
    pub fn with_mpps_forward(
        mut self,
        queue: tokio::sync::mpsc::UnboundedSender<crate::mpps::Forward>,
    ) -> Self {
        self.mpps_forward = Some(queue);
        self
    }
}
