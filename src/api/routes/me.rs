//! Who the credential is: subject, how it authenticated, its scopes. The web pages use it to
//! check a typed key and to show only the buttons the credential may use.

use axum::http::Method;
use axum::routing::{get, MethodRouter};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::response::ENVELOPE;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::{Principal, Scope};

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![(
        spec(
            Method::GET,
            "/v1/me",
            Access::Scope(Scope::ResultsRead),
            "The credential's subject and scopes",
        ),
        get(me),
    )]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(me))]
pub struct Doc;

/// `GET /v1/me`.
#[derive(Serialize, ToSchema)]
pub struct Me {
    /// JWT `sub`, or the API key's name.
    pub subject: String,
    /// `jwt` or `api_key`.
    pub method: String,
    /// The scopes held (`admin` implies the others, which are listed too).
    pub scopes: Vec<String>,
}

#[utoipa::path(get, path = "/v1/me", responses(
    (status = 200, description = "The credential's subject, method and effective scopes", body = Me, content_type = ENVELOPE),
))]
async fn me(ctx: Ctx, principal: Principal) -> Result<Reply, ApiError> {
    let scopes = Scope::ALL
        .into_iter()
        .filter(|s| principal.has(*s))
        .map(|s| s.as_str().to_string())
        .collect();
    Ok(ctx.reply(Me {
        subject: principal.subject.clone(),
        method: principal.method.as_str().to_string(),
        scopes,
    }))
}
