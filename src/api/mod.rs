//! The HTTP API. Each routes module has its own `router()`; [`router`] merges them.

pub mod routes;
pub mod state;

use axum::Router;
use tower_http::trace::TraceLayer;

pub use state::AppState;

/// All routes with their shared state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
