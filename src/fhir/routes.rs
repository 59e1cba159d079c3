//! FHIR R4 at `/fhir`: reads and searches of DiagnosticReport, Observation, ImagingStudy,
//! Patient and Device, and the CapabilityStatement. Answers are `application/fhir+json`;
//! errors are OperationOutcome (the authentication layer's 401/403/429 keep the native error
//! envelope, like every protected route). Reads of patient data are audited.

use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{json, Value};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::Required;

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
    for (search_path, read_path, search_summary, read_summary, search_route, read_route) in [
        (
            "/fhir/DiagnosticReport",
            "/fhir/DiagnosticReport/{id}",
            "Search DiagnosticReports (one per result version): patient, subject, identifier, date, status",
            "A DiagnosticReport (rs-<result id>)",
            get(search_reports),
            get(read_report),
        ),
        (
            "/fhir/Observation",
            "/fhir/Observation/{id}",
            "Search Observations (one per finding): patient, subject, derived-from",
            "An Observation (rs-<result id>-<finding>)",
            get(search_observations),
            get(read_observation),
        ),
        (
            "/fhir/ImagingStudy",
            "/fhir/ImagingStudy/{id}",
            "Search ImagingStudies: patient, identifier",
            "An ImagingStudy (id = Study Instance UID)",
            get(search_imaging_studies),
            get(read_imaging_study),
        ),
        (
            "/fhir/Patient",
            "/fhir/Patient/{id}",
            "Search Patients: identifier (DICOM Patient ID)",
            "A Patient (pt-<n>) from the DICOM header",
            get(search_patients),
            get(read_patient),
        ),
        (
            "/fhir/Device",
            "/fhir/Device/{id}",
            "The algorithms (installed models and those of past results) as Devices",
            "A Device (<model id>-<version>)",
            get(search_devices),
            get(read_device),
        ),
    ] {
        v.push((spec(Method::GET, search_path, read, search_summary), search_route));
        v.push((spec(Method::GET, read_path, read, read_summary), read_route));
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
        get(unsupported_read),
    ));
    v
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    metadata,
    search_reports,
    read_report,
    search_observations,
    read_observation,
    search_imaging_studies,
    read_imaging_study,
    search_patients,
    read_patient,
    search_devices,
    read_device,
    unsupported_type,
    unsupported_read,
))]
pub struct Doc;

/// A search's answer.
const SEARCHSET: &str = "A Bundle of type searchset with total and self/next/previous links; \
    errors (400 for an unknown parameter or a bad value) are OperationOutcome";

/// A read's answer.
const READ: &str = "The resource; 404 OperationOutcome when there is none";

/// The answer for resource types not served.
const NOT_SERVED: &str = "Never: any type not listed is answered 404 with an OperationOutcome";

/// The search parameters of a resource type and the paging ones, from the table the
/// CapabilityStatement lists.
fn search_parameters(rt: ResourceType) -> Vec<Parameter> {
    search::params(rt)
        .iter()
        .chain(search::PAGING.iter())
        .map(|p| {
            let kind = if p.kind == "number" {
                Type::Integer
            } else {
                Type::String
            };
            ParameterBuilder::new()
                .name(p.name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(p.documentation))
                .schema(Some(ObjectBuilder::new().schema_type(kind)))
                .build()
        })
        .collect()
}

/// A resource type's search and read handlers with their `#[utoipa::path]`, and the search
/// parameters as `IntoParams`.
macro_rules! resource_handlers {
    ($rt:expr, $params:ident, $search:ident, $search_path:tt, $read:ident, $read_path:tt) => {
        struct $params;

        impl utoipa::IntoParams for $params {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                search_parameters($rt)
            }
        }

        #[utoipa::path(get, path = $search_path, params($params), responses(
            (status = 200, description = SEARCHSET, body = Object, content_type = CONTENT_TYPE),
        ))]
        async fn $search(
            state: State<FhirApi>,
            headers: HeaderMap,
            audit: Audit,
            q: RawQuery,
        ) -> Response {
            search_handler($rt, state, headers, audit, q).await
        }

        #[utoipa::path(get, path = $read_path, responses(
            (status = 200, description = READ, body = Object, content_type = CONTENT_TYPE),
        ))]
        async fn $read(
            state: State<FhirApi>,
            headers: HeaderMap,
            audit: Audit,
            id: Path<String>,
        ) -> Response {
            read_handler($rt, state, headers, audit, id).await
        }
    };
}

resource_handlers!(
    ResourceType::DiagnosticReport,
    ReportSearch,
    search_reports,
    "/fhir/DiagnosticReport",
    read_report,
    "/fhir/DiagnosticReport/{id}"
);
resource_handlers!(
    ResourceType::Observation,
    ObservationSearch,
    search_observations,
    "/fhir/Observation",
    read_observation,
    "/fhir/Observation/{id}"
);
resource_handlers!(
    ResourceType::ImagingStudy,
    ImagingStudySearch,
    search_imaging_studies,
    "/fhir/ImagingStudy",
    read_imaging_study,
    "/fhir/ImagingStudy/{id}"
);
resource_handlers!(
    ResourceType::Patient,
    PatientSearch,
    search_patients,
    "/fhir/Patient",
    read_patient,
    "/fhir/Patient/{id}"
);
resource_handlers!(
    ResourceType::Device,
    DeviceSearch,
    search_devices,
    "/fhir/Device",
    read_device,
    "/fhir/Device/{id}"
);

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

#[utoipa::path(get, path = "/fhir/metadata", responses(
    (status = 200, description = "A FHIR R4 CapabilityStatement", body = Object, content_type = CONTENT_TYPE),
))]
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

#[utoipa::path(get, path = "/fhir/{resource_type}", responses(
    (status = 404, description = NOT_SERVED, body = Object, content_type = CONTENT_TYPE),
))]
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

#[utoipa::path(get, path = "/fhir/{resource_type}/{id}", responses(
    (status = 404, description = NOT_SERVED, body = Object, content_type = CONTENT_TYPE),
))]
async fn unsupported_read(params: Path<Vec<(String, String)>>) -> Response {
    unsupported_type(params).await
}
