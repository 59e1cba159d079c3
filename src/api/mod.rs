//! The HTTP API. Every route is declared once in [`route_table`] with the scope it needs;
//! the router, the authentication layer and the auth test matrix are all built from it, so no
//! route escapes authentication by being forgotten. The OpenAPI document ([`openapi`],
//! served at `/openapi.json` and as HTML at `/docs`) is generated from the handlers'
//! `#[utoipa::path]` attributes ([`handler_docs`]) and completed from it.

pub mod auth;
pub mod error;
mod http_metrics;
pub mod limits;
pub mod openapi;
pub mod response;
pub mod routes;
pub mod settings;
pub mod state;

use axum::http::Method;
use axum::middleware;
use axum::routing::MethodRouter;
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Scope;
pub use error::ApiError;
pub use response::{Ctx, Reply};
pub use state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed (liveness and the summary health only).
    Public,
    /// A credential holding this scope (or `admin`).
    Scope(Scope),
}

/// One route: method, path (axum syntax, `{param}`), access and a one-line summary.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// Body limit of this route when it must exceed `http.max_body_bytes` (RadAnalyzer's ten
    /// base64 images of 10 MB); `None`: the configured limit.
    pub body_limit: Option<usize>,
    /// The audit action every answer of this route is recorded under ([`auth::audit_read`]);
    /// for routes whose handlers cannot audit themselves (DICOMweb reads).
    pub audit: Option<&'static str>,
}

impl RouteSpec {
    /// Raises this route's body limit to at least `bytes`.
    pub fn with_body_limit(mut self, bytes: usize) -> RouteSpec {
        self.body_limit = Some(bytes);
        self
    }

    /// Records every answer in the audit log under `action`.
    pub fn audited(mut self, action: &'static str) -> RouteSpec {
        self.audit = Some(action);
        self
    }
}

/// Every route the node serves, with its handler.
pub fn route_table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let mut table = Vec::new();
    table.extend(routes::health::routes());
    table.extend(routes::metrics::routes());
    table.extend(routes::studies::routes());
    table.extend(routes::events::routes());
    table.extend(routes::jobs::routes());
    table.extend(routes::models::routes());
    table.extend(crate::compat::leapai::routes());
    table.extend(crate::compat::pi::routes());
    table.extend(crate::compat::voxray::routes());
    table.extend(crate::compat::radanalyzer::routes());
    table.extend(crate::compat::radanalyzer::usage::routes());
    table.extend(routes::audit::routes());
    table.extend(routes::docs::routes());
    table.extend(routes::fhir::routes());
    table.extend(crate::dicomweb::routes());
    table.extend(routes::exports::routes());
    table
}

/// The operations the handlers of [`route_table`] document with `#[utoipa::path]`, area by
/// area; [`openapi`] completes them from the table.
pub fn handler_docs() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = routes::health::Doc::openapi();
    for area in [
        routes::metrics::Doc::openapi(),
        routes::studies::Doc::openapi(),
        routes::events::Doc::openapi(),
        routes::jobs::Doc::openapi(),
        routes::models::Doc::openapi(),
        routes::audit::Doc::openapi(),
        routes::docs::Doc::openapi(),
        routes::exports::Doc::openapi(),
        routes::fhir::Doc::openapi(),
        crate::dicomweb::Doc::openapi(),
        crate::compat::leapai::Doc::openapi(),
        crate::compat::pi::Doc::openapi(),
        crate::compat::voxray::Doc::openapi(),
        crate::compat::radanalyzer::Doc::openapi(),
    ] {
        doc.merge(area);
    }
    doc
}

/// The route list alone (for tests and the OpenAPI document).
pub fn routes() -> Vec<RouteSpec> {
    route_table().into_iter().map(|(s, _)| s).collect()
}

/// All routes with their shared state. Each non-public route is wrapped in
/// [`auth::require`] with its scope; every route gets the body and time limits (routes with
/// their own body limit are grouped by it: a router's layers cover only its own routes).
pub fn router(state: AppState) -> Router {
    let mut groups: std::collections::BTreeMap<usize, Router<AppState>> = Default::default();
    for (spec, handler) in route_table() {
        // Inside authentication: the principal is known when the row is written.
        let handler = match spec.audit {
            Some(action) => handler.route_layer(middleware::from_fn_with_state(
                (state.audit.clone(), action),
                auth::audit_read,
            )),
            None => handler,
        };
        let handler = match spec.access {
            Access::Public => handler,
            Access::Scope(scope) => handler.route_layer(middleware::from_fn_with_state(
                auth::Guard {
                    auth: state.auth.clone(),
                    scope,
                },
                auth::require,
            )),
        };
        let limit = spec
            .body_limit
            .map_or(state.http_limits.max_body_bytes, |l| {
                l.max(state.http_limits.max_body_bytes)
            });
        let group = groups.remove(&limit).unwrap_or_default();
        groups.insert(limit, group.route(spec.path, handler));
    }
    let mut router = Router::new();
    for (max_body_bytes, group) in groups {
        let limits = limits::HttpLimits {
            max_body_bytes,
            ..state.http_limits
        };
        router = router.merge(limits::apply(group, limits));
    }
    let router = router.layer(middleware::from_fn_with_state(
        state.metrics.clone(),
        http_metrics::record,
    ));
    let cors = state.dicomweb.cors();
    // CORS outside auth and limits: a preflight carries no credentials.
    let router = match cors {
        Some(c) => router.layer(c),
        None => router,
    };
    router
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::from_fn(crate::compat::translate_errors))
        // Outermost: the query token leaves the URI before anything logs it.
        .layer(middleware::from_fn(auth::strip_access_token))
        .with_state(state)
}

/// Shorthand for building the table.
pub(crate) fn spec(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
        summary,
        body_limit: None,
        audit: None,
    }
}
