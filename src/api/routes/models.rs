//! Installed models.

use axum::extract::State;
use axum::http::Method;
use axum::routing::{get, MethodRouter};

use crate::api::response::ENVELOPE;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::Scope;

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![(
        spec(
            Method::GET,
            "/v1/models",
            Access::Scope(Scope::ResultsRead),
            "Installed models: labels, members, checksums, execution provider",
        ),
        get(list),
    )]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct Doc;

#[utoipa::path(get, path = "/v1/models", responses(
    (status = 200, description = "Installed models", body = Vec<crate::inference::ModelInfo>, content_type = ENVELOPE),
))]
async fn list(State(state): State<AppState>, ctx: Ctx) -> Result<Reply, ApiError> {
    Ok(ctx.reply(state.engine.models()))
}
