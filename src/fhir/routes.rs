//! FHIR R4 at `/fhir`: reads and searches of DiagnosticReport, Observation, ImagingStudy,
//! Patient and Device, and the CapabilityStatement. Answers are `application/fhir+json`;
//! errors are OperationOutcome (the authentication layer's 401/403/429 keep the native error
//! envelope, like every protected route). Reads of patient data are audited.

use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{json, Value};

use super::search::{self, ResourceType};
use super::server::Fhir;
use super::{data, FhirError, FhirSettings, CONTENT_TYPE};
use crate::api::auth::Audit;
use crate::api::{spec, Access, AppState, Routes};
use crate::auth::Scope;

/// State of the FHIR routes.
#[derive(Clone, FromRef)]
pub struct FhirApi {
    pub app: AppState,
    pub fhir: FhirSettings,
}

pub fn routes() -> Routes<FhirApi> {
    let read = Access::Scope(Scope::ResultsRead);
    let mut v = vec![(
        spec(
            Method::GET,
            "/fhir/metadata",
            read,
            "FHIR CapabilityStatement: the interactions and search parameters served",
        ),
        get(metadata),
    )];
    for (rt, search_path, read_path, search_summary, read_summary) in [
        (
            ResourceType::DiagnosticReport,
            "/fhir/DiagnosticReport",
            "/fhir/DiagnosticReport/{id}",
            "Search DiagnosticReports (one per result version): patient, subject, identifier, date, status",
            "A DiagnosticReport (rs-<result id>)",
        ),
        (
            ResourceType::Observation,
            "/fhir/Observation",
            "/fhir/Observation/{id}",
            "Search Observations (one per finding): patient, subject, derived-from",
            "An Observation (rs-<result id>-<finding>)",
        ),
        (
            ResourceType::ImagingStudy,
            "/fhir/ImagingStudy",
            "/fhir/ImagingStudy/{id}",
            "Search ImagingStudies: patient, identifier",
            "An ImagingStudy (id = Study Instance UID)",
        ),
        (
            ResourceType::Patient,
            "/fhir/Patient",
            "/fhir/Patient/{id}",
            "Search Patients: identifier (DICOM Patient ID)",
            "A Patient (pt-<n>) from the DICOM header",
        ),
        (
            ResourceType::Device,
            "/fhir/Device",
            "/fhir/Device/{id}",
            "The algorithms (installed models and those of past results) as Devices",
            "A Device (<model id>-<version>)",
        ),
    ] {
        v.push((
            spec(Method::GET, search_path, read, search_summary),
            get(
                move |state: State<FhirApi>, headers: HeaderMap, audit: Audit, q: RawQuery| {
                    search_handler(rt, state, headers, audit, q)
                },
            ),
        ));
        v.push((
            spec(Method::GET, read_path, read, read_summary),
            get(
                move |state: State<FhirApi>, headers: HeaderMap, audit: Audit, id: Path<String>| {
                    read_handler(rt, state, headers, audit, id)
                },
            ),
        ));
    }
    v.push((
        spec(
            Method::GET,
            "/fhir/{resource_type}",
            read,
            "Any other FHIR resource type: 404 OperationOutcome",
        ),
        get(unsupported_type),
    ));
    v.push((
        spec(
            Method::GET,
            "/fhir/{resource_type}/{id}",
            read,
            "Any other FHIR resource type: 404 OperationOutcome",
        ),
        get(unsupported_type),
    ));
    v
}

/// A FHIR JSON answer.
fn fhir_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// An OperationOutcome with one issue.
pub fn outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    let severity = if status.is_server_error() {
        "fatal"
    } else {
        "error"
    };
    fhir_json(
        status,
        &json!({
            "resourceType": "OperationOutcome",
            "issue": [{ "severity": severity, "code": code, "diagnostics": diagnostics }],
        }),
    )
}

fn error_response(e: FhirError) -> Response {
    match &e {
        FhirError::UnknownParameter(_) => {
            outcome(StatusCode::BAD_REQUEST, "not-supported", &e.to_string())
        }
        FhirError::InvalidParameter { .. } => {
            outcome(StatusCode::BAD_REQUEST, "value", &e.to_string())
        }
        FhirError::NotFound { .. } => outcome(StatusCode::NOT_FOUND, "not-found", &e.to_string()),
        FhirError::Database(err) => {
            tracing::error!(error = %err, "FHIR request: database error");
            outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "Internal server error",
            )
        }
    }
}

fn audit_failed() -> Response {
    outcome(
        StatusCode::INTERNAL_SERVER_ERROR,
        "exception",
        "Internal server error (audit log)",
    )
}

/// The base URL answers name: `[fhir] base_url`, else `http://<Host>/fhir`.
fn base_url(state: &FhirApi, headers: &HeaderMap) -> String {
    if let Some(b) = &state.fhir.base_url {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}/fhir")
}

fn fhir<'a>(state: &'a FhirApi, headers: &HeaderMap) -> Fhir<'a> {
    Fhir {
        db: &state.app.db,
        models: state.app.engine.models(),
        settings: &state.fhir,
        base: base_url(state, headers),
    }
}

async fn metadata(State(state): State<FhirApi>, headers: HeaderMap) -> Response {
    fhir_json(
        StatusCode::OK,
        &fhir(&state, &headers).capability_statement(),
    )
}

fn action(rt: ResourceType, what: &str) -> String {
    format!("fhir.{}.{what}", rt.as_str())
}

async fn read_handler(
    rt: ResourceType,
    State(state): State<FhirApi>,
    headers: HeaderMap,
    audit: Audit,
    Path(id): Path<String>,
) -> Response {
    let served = match fhir(&state, &headers).read(rt, &id).await {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    if rt != ResourceType::Device
        && audit
            .record(
                &state.app.db,
                &action(rt, "read"),
                served.patient_id.as_deref(),
                served.study_uid.as_deref(),
                StatusCode::OK,
            )
            .await
            .is_err()
    {
        return audit_failed();
    }
    fhir_json(StatusCode::OK, &served.body)
}

async fn search_handler(
    rt: ResourceType,
    State(state): State<FhirApi>,
    headers: HeaderMap,
    audit: Audit,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let s = match search::parse(rt, &pairs) {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    let bundle = match fhir(&state, &headers).search(rt, &s).await {
        Ok(b) => b,
        Err(e) => return error_response(e),
    };
    if rt != ResourceType::Device {
        let patient_id = match s.patient {
            Some(pk) => match data::patient(&state.app.db, pk).await {
                Ok(p) => p.and_then(|p| p.patient_id),
                Err(e) => return error_response(e.into()),
            },
            None => None,
        };
        if audit
            .record_query(
                &state.app.db,
                &action(rt, "search"),
                patient_id.as_deref(),
                None,
                Some(&query),
                StatusCode::OK,
            )
            .await
            .is_err()
        {
            return audit_failed();
        }
    }
    fhir_json(StatusCode::OK, &bundle)
}

async fn unsupported_type(Path(params): Path<Vec<(String, String)>>) -> Response {
    let rt = params.first().map(|(_, v)| v.as_str()).unwrap_or("");
    outcome(
        StatusCode::NOT_FOUND,
        "not-supported",
        &format!(
            "Resource type '{rt}' is not served here (DiagnosticReport, Observation, \
             ImagingStudy, Patient, Device; see /fhir/metadata)"
        ),
    )
}
