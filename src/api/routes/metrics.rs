//! `GET /metrics`: the Prometheus (OpenMetrics text) exposition, for administrators.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, Method};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};

use crate::api::{spec, Access, AppState, RouteSpec};
use crate::auth::Scope;
use crate::db::Database;
use crate::job;
use crate::metrics::{DbState, CONTENT_TYPE};
use crate::store::index::{self, StudyFilter};

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
    let body = state.metrics.render(db_state(&state.db), open).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}

/// The queue and study gauges, read from the job queue and the index.
pub async fn db_state(db: &Database) -> Result<DbState, sqlx::Error> {
    let receiving = StudyFilter {
        status: Some("receiving".into()),
        ..Default::default()
    };
    let mut state = DbState {
        queued: 0,
        running: 0,
        oldest_queued_ms: None,
        receiving: index::count_studies(db, &receiving).await?,
    };
    for c in job::active_counts(db).await? {
        match c.state.as_str() {
            job::QUEUED => {
                state.queued = c.jobs;
                state.oldest_queued_ms = c.oldest_created_at;
            }
            job::RUNNING => state.running = c.jobs,
            _ => {}
        }
    }
    Ok(state)
}
