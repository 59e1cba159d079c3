//! FHIR R4 views of the node's data: a DiagnosticReport per result version, an Observation per
//! finding of the study summary, the ImagingStudy, a minimal Patient from the DICOM header and
//! a Device for the algorithm.
//!
//! - [`codes`]: every system and fixed code the resources carry (each checked in a test).
//! - [`resources`]: pure builders, `serde_json::Value` in FHIR JSON shape.
//! - [`search`]: search parameters (parsing, date ranges, the table the CapabilityStatement
//!   is built from).
//! - [`data`]: reading studies, patients and results from the index.
//! - [`server`]: reads, searches and [`report_bundle`], the entry point other code (exports)
//!   uses to get a report with everything it references.
//! - [`routes`]: the HTTP routes under `/fhir`.
//!
//! Resources are built on request from the stored results; nothing FHIR-specific is stored.

pub mod codes;
pub mod data;
pub mod error;
pub mod resources;
pub mod routes;
pub mod search;
pub mod server;
pub mod settings;

pub use error::FhirError;
pub use server::{report_bundle, BundleKind};
pub use settings::{FhirSettings, ReportStatus};

/// The content type of every FHIR answer.
pub const CONTENT_TYPE: &str = "application/fhir+json";

/// The FHIR version served.
pub const FHIR_VERSION: &str = "4.0.1";
