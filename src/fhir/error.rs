//! Errors of the FHIR layer; the HTTP layer renders them as OperationOutcome.

/// What went wrong with a FHIR request.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// A search parameter this server does not support (or a modifier on one).
    #[error("Unknown search parameter '{0}'")]
    UnknownParameter(String),
    /// A supported parameter with a value that cannot be used.
    #[error("Invalid value for '{name}': {problem}")]
    InvalidParameter { name: String, problem: String },
    /// No resource of that type has that id.
    #[error("{resource_type}/{id} not found")]
    NotFound { resource_type: String, id: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl FhirError {
    pub fn invalid(name: &str, problem: impl Into<String>) -> FhirError {
        FhirError::InvalidParameter {
            name: name.to_string(),
            problem: problem.into(),
        }
    }

    pub fn not_found(resource_type: &str, id: &str) -> FhirError {
        FhirError::NotFound {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
        }
    }
}
