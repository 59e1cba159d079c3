//! Authentication in the router: every non-public route a part hands to [`super::mount`] is
//! wrapped in [`require`] with its scope. Credentials, in order of precedence:
//! `Authorization: Bearer <jwt | api key>`, `x-api-key: <api key>`, `x-stack-access-token:
//! <jwt | api key>` (VoxRay clients), `?access_token=<jwt | api key>` (for EventSource, which
//! cannot set headers). The query parameter is taken out of the
//! URI by [`strip_access_token`] before tracing or handlers see it.
//!
//! Refusals use the error envelope: 401 `Token missing` / `Token expired` / `Invalid token` /
//! `API key revoked` with `WWW-Authenticate: Bearer`, 403 `Missing scope: <scope>` with
//! `details.required_scope`, 429 `Rate limit exceeded` with `Retry-After`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts, OriginalUri};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use crate::auth::audit::{self, AuditEntry, AuditWriter};
use crate::auth::{AuthError, Authenticator, Credential, Principal, Scope};
use crate::db::Database;

/// Query parameter carrying a token.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// A token taken from the query string (never printed).
#[derive(Clone)]
struct QueryToken(String);

impl std::fmt::Debug for QueryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryToken([redacted])")
    }
}

/// `uri` without `access_token`, and the token's value.
fn split_token(uri: &Uri) -> Option<(Uri, String)> {
    // Parsed rather than searched, so a percent-encoded name (`access%5Ftoken`) is caught too.
    let query = uri.query()?;
    let mut token = None;
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == ACCESS_TOKEN_PARAM {
            token.get_or_insert_with(|| v.into_owned());
        } else {
            rest.append_pair(&k, &v);
        }
    }
    let token = token?;
    let rest = rest.finish();
    let pq = if rest.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{rest}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Some((Uri::from_parts(parts).ok()?, token))
}

/// Outermost layer: moves `?access_token=` out of the URI (and `OriginalUri`) into a request
/// extension, so neither the trace span, the logs nor handlers' query parsing see it.
pub async fn strip_access_token(mut req: Request, next: Next) -> Response {
    if let Some((uri, token)) = split_token(req.uri()) {
        *req.uri_mut() = uri;
        if let Some(OriginalUri(original)) = req.extensions_mut().get_mut::<OriginalUri>() {
            if let Some((stripped, _)) = split_token(original) {
                *original = stripped;
            }
        }
        req.extensions_mut().insert(QueryToken(token));
    }
    next.run(req).await
}

/// State of [`require`]: the authenticator and the scope the route needs.
#[derive(Clone)]
pub struct Guard {
    pub auth: Arc<Authenticator>,
    pub scope: Scope,
}

/// The credential a request carries, by precedence.
fn credential(req: &Request) -> Result<(bool, String), AuthError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Invalid)?;
        return match value.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Ok((true, token.trim().to_string()))
            }
            _ => Err(AuthError::Invalid),
        };
    }
    if let Some(value) = req.headers().get("x-api-key") {
        let key = value.to_str().map_err(|_| AuthError::Invalid)?.trim();
        if key.is_empty() {
            return Err(AuthError::Invalid);
        }
        return Ok((false, key.to_string()));
    }
    // VoxRay clients send their JWT in `x-stack-access-token`.
    if let Some(value) = req.headers().get("x-stack-access-token") {
        let token = value.to_str().map_err(|_| AuthError::Invalid)?.trim();
        if token.is_empty() {
            return Err(AuthError::Invalid);
        }
        return Ok((true, token.to_string()));
    }
    if let Some(QueryToken(t)) = req.extensions().get::<QueryToken>() {
        return Ok((true, t.clone()));
    }
    Err(AuthError::Missing)
}

async fn check(
    guard: &Guard,
    presented: Result<(bool, String), AuthError>,
) -> Result<Principal, AuthError> {
    let (bearer, secret) = presented?;
    let cred = if bearer {
        Credential::Bearer(&secret)
    } else {
        Credential::ApiKey(&secret)
    };
    let principal = guard.auth.authenticate(cred).await?;
    guard.auth.authorize(&principal, guard.scope)?;
    Ok(principal)
}

/// Route layer: authenticates, charges the rate limit, checks the scope and inserts the
/// [`Principal`] for the handler.
pub async fn require(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    // Only owned data crosses the await: the request body is not `Sync`.
    let presented = credential(&req);
    match check(&guard, presented).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => {
            if matches!(e, AuthError::RateLimited { .. }) {
                tracing::debug!(path = %req.uri().path(), "request rate-limited");
            } else {
                tracing::info!(reason = %e, path = %req.uri().path(), "request refused");
            }
            e.into_response()
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            AuthError::Missing
            | AuthError::Expired
            | AuthError::NotYetValid(_)
            | AuthError::Invalid
            | AuthError::Revoked => {
                let challenge = if self == AuthError::Missing {
                    "Bearer realm=\"radstream\""
                } else {
                    "Bearer realm=\"radstream\", error=\"invalid_token\""
                };
                let mut error = ApiError::new(StatusCode::UNAUTHORIZED, message);
                if let AuthError::NotYetValid(claim) = self {
                    error = error.with_details(json!({ "claim": claim }));
                }
                let mut resp = error.into_response();
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
                resp
            }
            AuthError::MissingScope(scope) => ApiError::new(StatusCode::FORBIDDEN, message)
                .with_details(json!({ "required_scope": scope }))
                .into_response(),
            AuthError::RateLimited { retry_after_secs } => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
                    .with_details(json!({ "retry_after_secs": retry_after_secs }));
                e.retry_after_secs = Some(retry_after_secs);
                e.into_response()
            }
            AuthError::Backend(cause) => {
                ApiError::internal("credential store", cause).into_response()
            }
        }
    }
}

/// Handlers of protected routes take `principal: Principal`. On a route without
/// authentication it is refused with 401 `Token missing`; `Option<Principal>` is `None` there.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Principal, Response> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| AuthError::Missing.into_response())
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Principal>, Infallible> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

/// Extractor for handlers that serve patient data: who asked, from where, with which request
/// id. `audit.record(&state.db, "results.read", Some(pid), Some(uid), StatusCode::OK).await?`
#[derive(Debug, Clone)]
pub struct Audit {
    pub principal: Principal,
    /// Peer `ip:port` of the connection.
    pub remote_addr: Option<String>,
    pub request_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Audit, Response> {
        let principal =
            <Principal as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        let remote_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.to_string());
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Audit {
            principal,
            remote_addr,
            request_id,
        })
    }
}

impl Audit {
    /// Appends an `audit_log` row; a failure is a 500 (data is not served unaudited).
    pub async fn record(
        &self,
        db: &Database,
        action: &str,
        patient_id: Option<&str>,
        study_uid: Option<&str>,
        status: StatusCode,
    ) -> Result<i64, ApiError> {
        self.record_query(db, action, patient_id, study_uid, None, status)
            .await
    }

    /// [`Self::record`] with what a search asked for (its query string).
    pub async fn record_query(
        &self,
        db: &Database,
        action: &str,
        patient_id: Option<&str>,
        study_uid: Option<&str>,
        query: Option<&str>,
        status: StatusCode,
    ) -> Result<i64, ApiError> {
        let entry = AuditEntry {
            action,
            patient_id,
            study_uid,
            remote_addr: self.remote_addr.as_deref(),
            request_id: self.request_id.as_deref(),
            status: Some(status.as_u16()),
            query: query.filter(|q| !q.is_empty()),
        };
        audit::record(db, &self.principal, &entry)
            .await
            .map_err(|e| ApiError::internal("writing the audit log", e))
    }
}

/// Layer of the routes a [`RouteSpec`] marks `audited` (DICOMweb reads): after the handler,
/// one audit row with the route's action, the study UID of the path, the Patient ID the query
/// names and the query itself. A failed write turns the answer into a 500: data is not
/// served unaudited.
pub async fn audit_read(
    State((writer, action)): State<(AuditWriter, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let audit = match Audit::from_request_parts(&mut parts, &()).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let resp = next.run(Request::from_parts(parts, body)).await;
    let study_uid = path
        .split('/')
        .skip_while(|s| *s != "studies")
        .nth(1)
        .filter(|s| !s.is_empty());
    let patient_id = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "PatientID" || k == "00100020")
            .map(|(_, v)| v.into_owned())
    });
    let entry = AuditEntry {
        action,
        patient_id: patient_id.as_deref(),
        study_uid,
        remote_addr: audit.remote_addr.as_deref(),
        request_id: audit.request_id.as_deref(),
        status: Some(resp.status().as_u16()),
        query: query.as_deref().filter(|q| !q.is_empty()),
    };
    match writer.record(&audit.principal, &entry).await {
        Ok(()) => resp,
        Err(e) => ApiError::internal("writing the audit log", e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_token_is_removed_and_other_parameters_kept() {
        let uri: Uri = "/v1/events?since=5&access_token=abc.def.ghi&format=csv"
            .parse()
            .unwrap();
        let (stripped, token) = split_token(&uri).unwrap();
        assert_eq!(token, "abc.def.ghi");
        assert_eq!(stripped.to_string(), "/v1/events?since=5&format=csv");
        let (only, _) = split_token(&"/x?access_token=t".parse().unwrap()).unwrap();
        assert_eq!(only.to_string(), "/x");
        assert!(split_token(&"/x?format=json".parse().unwrap()).is_none());
        assert!(split_token(&"/x".parse().unwrap()).is_none());
        let (enc, t) = split_token(&"/x?access%5Ftoken=t2&a=1".parse().unwrap()).unwrap();
        assert_eq!((enc.to_string().as_str(), t.as_str()), ("/x?a=1", "t2"));
    }
}
