//! Sending results back: configured destinations with routing rules (`settings`), the
//! durable outbox (`outbox`: one row per output instance per destination) and the delivery
//! worker (`deliver`: C-STORE SCU, STOW-RS or a FHIR transaction, exponential backoff, dead
//! letter), and its HTTP routes (`routes`: `/v1/exports`, list, retry, cancel).
//!
//! Outbox rows are written in the same transaction that indexes the generated outputs, and
//! the outputs are owed from the transaction that stores the result (`report_outputs`), so
//! a crash at any point loses nothing. Retries send the same file, so the same SOP Instance
//! UID: the target sees one instance however often it is sent.
//!
//! A FHIR destination gets one row per result (`report`); its Bundle is built at delivery
//! time by `fhir::report_bundle` and uses PUT with stable ids, so re-sending is harmless.

pub mod deliver;
pub mod outbox;
pub mod routes;
pub mod settings;

pub use deliver::Exporter;
pub use settings::{Destination, DestinationKind, ExportSettings, OutputKind};
