//! Study results: the model ([`model`]), triage urgency ([`triage`]) and the table
//! ([`store`]). Results are versioned per study; the highest version is current.

pub mod model;
pub mod store;
pub mod triage;
pub mod validation;

pub use model::{
    Finding, ImageEntry, LandmarkEntry, Metadata, ModelOutcome, ModelRef, ResultTimings,
    SegmentationEntry, StudyMeasurement, StudyResult, Summary,
};
pub use store::{by_version, latest, versions, Stored, VersionInfo};
pub use triage::{Triage, TriageRule, TriageSettings};
