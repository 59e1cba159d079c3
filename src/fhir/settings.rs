//! `[fhir]` settings.

use serde::{Deserialize, Serialize};

/// The status a current (not superseded) DiagnosticReport carries.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    /// Results go out as final reports (the default).
    #[default]
    Final,
    /// Results go out as preliminary, for sites where a radiologist signs the final report.
    Preliminary,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Final => "final",
            ReportStatus::Preliminary => "preliminary",
        }
    }
}

/// `[fhir]`
#[derive(Debug, Clone, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FhirSettings {
    /// Status of the current report version: `final` or `preliminary`.
    pub report_status: ReportStatus,
    /// Base URL used in `fullUrl` and paging links (e.g. `https://node.example/fhir`). Unset:
    /// `http://<Host header>/fhir`.
    pub base_url: Option<String>,
}
