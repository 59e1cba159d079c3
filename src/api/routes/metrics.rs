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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let open = state.open_associations.load(Ordering::Relaxed);
    let body = state.metrics.render(&state.db, open).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}
