//! The HTTP kernel: the state handlers share ([`AppState`]), the error and success envelopes,
//! authentication, limits, error dialects and the route-spec type, plus the native routes
//! ([`routes`]). Every part of the node (native, FHIR, DICOMweb, each vendor adapter)
//! declares its routes once as a [`Routes`] table with the scope each needs, and is served
//! through [`mount`], so no route escapes authentication by being forgotten. The parts are
//! assembled in `startup::http`; the auth test matrix and the OpenAPI document (built there
//! from the handlers' `#[utoipa::path]` attributes, served at `/openapi.json` and as HTML at
//! `/docs`) walk the same tables. Handlers mark enveloped and event-stream answers with
//! [`response::ENVELOPE`] and [`response::EVENT_STREAM`].

pub mod auth;
pub mod dialect;
pub mod error;
mod http_metrics;
pub mod limits;
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
pub use dialect::Dialect;
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
    /// The error dialect of the part serving it ([`Dialect::name`]); `None`: the native
    /// envelope. Set when the node's parts are assembled.
    pub dialect: Option<&'static str>,
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

/// A part's route table: each route with its handler, over the part's state `S`.
pub type Routes<S> = Vec<(RouteSpec, MethodRouter<S>)>;

/// Serves a part's `routes` with its `state`. Each non-public route is wrapped in
/// [`auth::require`] with its scope; every route gets the body and time limits (routes with
/// their own body limit are grouped by it: a router's layers cover only its own routes). With
/// a `dialect`, every refusal of the part is answered in it ([`dialect::answer_in`]).
pub fn mount<S>(
    routes: Routes<S>,
    state: S,
    kernel: &AppState,
    dialect: Option<&'static dyn Dialect>,
) -> Router
where
    S: Clone + Send + Sync + 'static,
{
    let mut groups: std::collections::BTreeMap<usize, Router<S>> = Default::default();
    for (spec, handler) in routes {
        // Inside authentication: the principal is known when the row is written.
        let handler = match spec.audit {
            Some(action) => handler.route_layer(middleware::from_fn_with_state(
                (kernel.audit.clone(), action),
                auth::audit_read,
            )),
            None => handler,
        };
        let handler = match spec.access {
            Access::Public => handler,
            Access::Scope(scope) => handler.route_layer(middleware::from_fn_with_state(
                auth::Guard {
                    auth: kernel.auth.clone(),
                    scope,
                },
                auth::require,
            )),
        };
        let limit = spec
            .body_limit
            .map_or(kernel.http_limits.max_body_bytes, |l| {
                l.max(kernel.http_limits.max_body_bytes)
            });
        let group = groups.remove(&limit).unwrap_or_default();
        groups.insert(limit, group.route(spec.path, handler));
    }
    let mut router = Router::new();
    for (max_body_bytes, group) in groups {
        let limits = limits::HttpLimits {
            max_body_bytes,
            ..kernel.http_limits
        };
        router = router.merge(limits::apply(group, limits));
    }
    let router = match dialect {
        Some(d) => router.layer(middleware::from_fn_with_state(d, dialect::answer_in)),
        None => router,
    };
    router.with_state(state)
}

/// The layers around all mounted parts: a path no route matched answers 404 (in the dialect
/// of the part whose URL space holds it), requests are measured, CORS (`cors`) is answered
/// before authentication, requests get an id and a trace span, and a query token leaves the
/// URI before anything logs it.
pub fn serve(
    parts: Router,
    kernel: &AppState,
    dialects: Vec<&'static dyn Dialect>,
    cors: Option<tower_http::cors::CorsLayer>,
) -> Router {
    let router = parts
        .fallback(move |req: axum::extract::Request| {
            std::future::ready(dialect::unmatched(&dialects, &req))
        })
        .layer(middleware::from_fn_with_state(
            kernel.metrics.clone(),
            http_metrics::record,
        ));
    // CORS outside auth and limits: a preflight carries no credentials.
    let router = match cors {
        Some(c) => router.layer(c),
        None => router,
    };
    router
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Outermost: the query token leaves the URI before anything logs it.
        .layer(middleware::from_fn(auth::strip_access_token))
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
        dialect: None,
    }
}
