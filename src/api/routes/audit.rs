//! `GET /v1/audit` (admin): the read audit, newest first, filtered by `patient_id`, `since`
//! (epoch ms or RFC 3339) and `limit` (default 100, at most 1000); `format=dicom-xml` renders
//! it as DICOM audit messages (PS3.15 A.5, see [`crate::auth::atna`]).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::auth::Audit;
use crate::api::error::query_rejection;
use crate::api::response::ENVELOPE;
use crate::api::{spec, Access, ApiError, AppState, Ctx, RouteSpec};
use crate::auth::atna;
use crate::auth::audit::{self, AuditFilter, AuditRecord};
use crate::auth::Scope;
use crate::clock::format_ms;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![(
        spec(
            Method::GET,
            "/v1/audit",
            Access::Scope(Scope::Admin),
            "Audit log of patient data reads (filters: patient_id, since, limit; \
             format=dicom-xml: DICOM audit messages, PS3.15 A.5)",
        ),
        get(list),
    )]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct Doc;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Reads of this patient only.
    patient_id: Option<String>,
    /// Reads at or after this time: epoch milliseconds or RFC 3339.
    since: Option<String>,
    /// Entries, 1..=1000 (default 100).
    limit: Option<i64>,
    /// `json` (default), `csv`, `xml`, or `dicom-xml` (DICOM audit messages, PS3.15 A.5).
    format: Option<String>,
}

/// `?format=` value of the DICOM audit message rendering.
pub const DICOM_XML: &str = "dicom-xml";

/// One audit log entry.
#[derive(Serialize, ToSchema)]
pub struct AuditItem {
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// Epoch milliseconds.
    pub at_ms: i64,
    /// Credential subject (JWT `sub` or API key name).
    pub principal: String,
    /// `jwt` or `api_key`.
    pub auth_method: String,
    /// e.g. `results.read`, `studies.search`, `events.subscribe`, `audit.read`.
    pub action: String,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub remote_addr: Option<String>,
    pub request_id: Option<String>,
    /// HTTP status answered.
    pub status: Option<i64>,
    /// What a search asked for: its query string.
    pub query: Option<String>,
}

impl From<AuditRecord> for AuditItem {
    fn from(r: AuditRecord) -> AuditItem {
        AuditItem {
            id: r.id,
            at: format_ms(r.at),
            at_ms: r.at,
            principal: r.principal,
            auth_method: r.auth_method,
            action: r.action,
            patient_id: r.patient_id,
            study_uid: r.study_uid,
            remote_addr: r.remote_addr,
            request_id: r.request_id,
            status: r.status,
            query: r.query,
        }
    }
}

/// `GET /v1/audit`.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub count: usize,
    /// Newest first.
    pub items: Vec<AuditItem>,
}

/// Reading the log is itself audited (`audit.read`, with the `patient_id` filter if any).
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), responses(
    (status = 200, description = "Audit entries, newest first; `format=dicom-xml`: DICOM audit messages (PS3.15 A.5) as `application/xml`", body = AuditPage, content_type = ENVELOPE),
))]
async fn list(
    State(state): State<AppState>,
    ctx: Result<Ctx, ApiError>,
    audit_ctx: Audit,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(query_rejection)?;
    let since_ms = match q.since.as_deref() {
        None | Some("") => None,
        Some(s) => Some(audit::parse_since(s).ok_or_else(|| {
            ApiError::invalid("since", "expected epoch milliseconds or an RFC 3339 time")
        })?),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let filter = AuditFilter {
        patient_id: q.patient_id.filter(|p| !p.is_empty()),
        since_ms,
        limit,
    };
    let dicom_xml = q.format.as_deref() == Some(DICOM_XML);
    // Other formats are the envelope's (json, csv, xml); it refuses unknown ones.
    let ctx = if dicom_xml { None } else { Some(ctx?) };
    let rows = audit::list(&state.db, &filter).await?;
    audit_ctx
        .record(
            &state.db,
            "audit.read",
            filter.patient_id.as_deref(),
            None,
            StatusCode::OK,
        )
        .await?;
    let Some(ctx) = ctx else {
        let xml = atna::document(&rows, &state.ae_title);
        let content_type = [(header::CONTENT_TYPE, "application/xml; charset=utf-8")];
        return Ok((content_type, xml).into_response());
    };
    let items: Vec<AuditItem> = rows.into_iter().map(AuditItem::from).collect();
    Ok(ctx
        .reply(AuditPage {
            count: items.len(),
            items,
        })
        .into_response())
}
