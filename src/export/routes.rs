//! The export outbox: list deliveries, retry a dead or cancelled one, cancel a pending one.
//! Admin scope: destinations are infrastructure and a retry re-sends to a PACS.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post, MethodRouter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::error::{paging, query_rejection, valid_uid};
use crate::api::response::ENVELOPE;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::Scope;
use crate::export::outbox::{self, ActionError, ExportRow, Filter};

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let admin = Access::Scope(Scope::Admin);
    vec![
        (
            spec(Method::GET, "/v1/exports", admin, "List export outbox rows"),
            get(list),
        ),
        (
            spec(
                Method::POST,
                "/v1/exports/{export_id}/retry",
                admin,
                "Queue a dead, cancelled or pending export again, due now",
            ),
            post(retry),
        ),
        (
            spec(
                Method::POST,
                "/v1/exports/{export_id}/cancel",
                admin,
                "Cancel a pending export",
            ),
            post(cancel),
        ),
    ]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list, retry, cancel))]
pub struct Doc;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `pending`, `sent`, `dead` or `cancelled`.
    pub state: Option<String>,
    /// Destination name.
    pub destination: Option<String>,
    pub study_uid: Option<String>,
    pub result_id: Option<i64>,
    /// Rows per page, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    pub offset: Option<i64>,
    #[param(ignore)]
    pub format: Option<String>,
    #[param(ignore)]
    pub access_token: Option<String>,
}

/// `GET /v1/exports`.
#[derive(Serialize, ToSchema)]
pub struct ExportPage {
    /// Newest first.
    pub items: Vec<ExportRow>,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/v1/exports", params(ExportQuery), responses(
    (status = 200, description = "Outbox rows, newest first", body = ExportPage, content_type = ENVELOPE),
))]
async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    q: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Reply, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    if let Some(s) = &q.state {
        if !outbox::STATES.contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "state",
                format!("'{s}' is not one of pending, sent, dead, cancelled"),
            ));
        }
    }
    if let Some(u) = &q.study_uid {
        valid_uid("study_uid", u)?;
    }
    if q.result_id.is_some_and(|r| r < 1) {
        return Err(ApiError::invalid("result_id", "must be a positive integer"));
    }
    let (limit, offset) = paging(q.limit, q.offset)?;
    let filter = Filter {
        state: q.state.as_deref(),
        destination: q.destination.as_deref(),
        study_uid: q.study_uid.as_deref(),
        result_id: q.result_id,
    };
    let items = outbox::list(&state.db, &filter, limit, offset).await?;
    Ok(ctx.reply(ExportPage {
        items,
        limit,
        offset,
    }))
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::invalid("export_id", format!("'{raw}' is not a positive integer")))
}

fn action_error(id: i64, e: ActionError, action: &str) -> ApiError {
    match e {
        ActionError::NotFound => ApiError::not_found(format!("Export {id} not found")),
        ActionError::State(s) => ApiError::new(
            StatusCode::CONFLICT,
            format!("Export {id} is {s}; it cannot be {action}"),
        )
        .with_details(json!({ "field": "state", "problem": format!("is {s}") })),
    }
}

#[utoipa::path(post, path = "/v1/exports/{export_id}/retry", responses(
    (status = 200, description = "The row, pending and due now", body = ExportRow, content_type = ENVELOPE),
))]
async fn retry(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(raw): Path<String>,
) -> Result<Reply, ApiError> {
    let id = parse_id(&raw)?;
    let row = outbox::retry(&state.db, id)
        .await?
        .map_err(|e| action_error(id, e, "retried"))?;
    tracing::info!(export_id = id, "export queued again");
    Ok(ctx.reply(&row))
}

#[utoipa::path(post, path = "/v1/exports/{export_id}/cancel", responses(
    (status = 200, description = "The row, cancelled", body = ExportRow, content_type = ENVELOPE),
))]
async fn cancel(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(raw): Path<String>,
) -> Result<Reply, ApiError> {
    let id = parse_id(&raw)?;
    let row = outbox::cancel(&state.db, id)
        .await?
        .map_err(|e| action_error(id, e, "cancelled"))?;
    tracing::info!(export_id = id, "export cancelled");
    Ok(ctx.reply(&row))
}
