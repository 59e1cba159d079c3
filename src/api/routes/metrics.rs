//! `GET /metrics`: the Prometheus (OpenMetrics text) exposition, for administrators.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, Method};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};

use crate::api::{spec, Access, AppState, RouteSpec};
use crate::auth::Scope;
use crate::metrics::CONTENT_TYPE;

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![(
        spec(
            Method::GET,
            "/metrics",
            Access::Scope(Scope::Admin),
            "Prometheus metrics (OpenMetrics text)",
        ),
        get(metrics),
    )]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(metrics))]
pub struct Doc;

#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus metrics in the OpenMetrics text format", body = String, content_type = CONTENT_TYPE),
))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let open = state.open_associations.load(Ordering::Relaxed);
    let body = state.metrics.render(&state.db, open).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}
