//! `GET /v2/fhir/diagnostic-report/{patient_id}`: the FHIR R4 DiagnosticReport of the
//! patient's latest current result, built by `crate::fhir` exactly as `/fhir/DiagnosticReport`
//! serves it. `{patient_id}` is the DICOM Patient ID, the `patient_id_hash` that
//! `/v2/predict/dicom` answers, or our FHIR Patient id (`pt-<n>`).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::VoxError;
use super::VoxRay;
use crate::api::auth::Audit;
use crate::fhir::data;
use crate::fhir::resources as res;
use crate::fhir::search::ResourceType;
use crate::fhir::server::Fhir;

/// Patient rows (`patients.id`) the path parameter names.
async fn patient_keys(state: &VoxRay, given: &str) -> Result<Vec<i64>, VoxError> {
    let db_err = |e| VoxError::internal("reading patients", e);
    let direct = data::patients(&state.app.db, Some(given))
        .await
        .map_err(db_err)?;
    if !direct.is_empty() {
        return Ok(direct.iter().map(|p| p.pk).collect());
    }
    if let Some(pk) = res::parse_patient_id(given) {
        return Ok(vec![pk]);
    }
    let is_hash = given.len() == 64 && given.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hash {
        return Ok(Vec::new());
    }
    let want = given.to_ascii_lowercase();
    let all = data::patients(&state.app.db, None).await.map_err(db_err)?;
    Ok(all
        .into_iter()
        .filter(|p| {
            p.patient_id
                .as_deref()
                .is_some_and(|id| state.voxray.patient_hash(id) == want)
        })
        .map(|p| p.pk)
        .collect())
}

#[utoipa::path(get, path = "/v2/fhir/diagnostic-report/{patient_id}", responses(
    (status = 200, description = "FHIR R4 DiagnosticReport of the patient's latest result \
        (`patient_id`: DICOM Patient ID, `patient_id_hash` or `pt-<n>`); 404/503 in VoxRay's \
        error body", body = Object, content_type = crate::fhir::CONTENT_TYPE),
))]
pub async fn diagnostic_report(
    State(state): State<VoxRay>,
    audit: Audit,
    Path(patient): Path<String>,
) -> Result<Response, VoxError> {
    if !state.voxray.flags.fhir_integration {
        return Err(VoxError::disabled("fhir_integration"));
    }
    let not_found = || {
        VoxError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("No diagnostic report for patient {patient}"),
        )
    };
    let mut latest: Option<i64> = None;
    for pk in patient_keys(&state, &patient).await? {
        let rows = data::result_rows(&state.app.db, Some(pk), None)
            .await
            .map_err(|e| VoxError::internal("reading results", e))?;
        for r in rows.iter().filter(|r| r.version == r.latest_version) {
            latest = latest.max(Some(r.id));
        }
    }
    let id = latest.ok_or_else(not_found)?;
    let fhir = Fhir {
        db: &state.app.db,
        models: state.app.engine.models(),
        settings: &state.fhir,
        base: state
            .fhir
            .base_url
            .clone()
            .unwrap_or_else(|| "http://localhost/fhir".into()),
    };
    let served = fhir
        .read(ResourceType::DiagnosticReport, &res::report_id(id))
        .await
        .map_err(|e| match e {
            crate::fhir::FhirError::NotFound { .. } => not_found(),
            other => VoxError::internal("building the DiagnosticReport", other),
        })?;
    audit
        .record(
            &state.app.db,
            "voxray.fhir.DiagnosticReport.read",
            served.patient_id.as_deref(),
            served.study_uid.as_deref(),
            StatusCode::OK,
        )
        .await
        .map_err(|_| VoxError::internal("writing the audit log", "audit"))?;
    let mut resp = (StatusCode::OK, served.body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::fhir::CONTENT_TYPE),
    );
    Ok(resp)
}
