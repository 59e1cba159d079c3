//! Error dialects: a part of the API mounted with one (a vendor adapter) answers every refusal
//! in that vendor's shape, including those it did not write itself: the kernel's
//! (authentication, limits, timeouts, shared helpers' [`ApiError`]s) and the router's (wrong
//! method, unmatched path in its URL space, extractor rejections). The dialect is chosen by
//! where the request was routed, and a kernel refusal reaches it typed (the [`ApiError`] in
//! the answer's extensions), never by parsing the rendered envelope.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, Extensions, HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// How one mounted part answers refusals.
pub trait Dialect: Send + Sync + 'static {
    /// The name routes of this part carry in [`super::RouteSpec::dialect`].
    fn name(&self) -> &'static str;

    /// Whether `path`, matched by no route, lies in this part's URL space (its 404 is then
    /// answered in this dialect).
    fn claims(&self, path: &str) -> bool;

    /// The refusal in this dialect; `None` leaves the answer as it is.
    fn render(&self, refusal: Refusal<'_>) -> Option<Response>;
}

/// A non-success answer of a mounted part, with what it was made from.
pub struct Refusal<'a> {
    pub status: StatusCode,
    /// Headers of the answer as written (`WWW-Authenticate`, `Retry-After`, …).
    pub headers: &'a HeaderMap,
    /// Extensions of the answer as written (a part's own error type may sit there).
    pub extensions: &'a Extensions,
    /// `X-Request-Id` of the request.
    pub request_id: Option<&'a str>,
    pub cause: Cause<'a>,
}

impl Refusal<'_> {
    /// Copies the headers `names` of the answer as written onto `out`.
    pub fn keep_headers(&self, out: &mut Response, names: &[HeaderName]) {
        for name in names {
            if let Some(v) = self.headers.get(name) {
                out.headers_mut().insert(name, v.clone());
            }
        }
    }
}

/// Who wrote a refusal.
pub enum Cause<'a> {
    /// The kernel or a shared helper: the error envelope.
    Kernel(&'a ApiError),
    /// The part's own handlers: a JSON body in the part's shape already.
    Own,
    /// The router or an extractor: plain text (possibly empty).
    Plain(&'a str),
}

/// Layer of a mounted part: its non-success answers through `dialect`.
pub async fn answer_in(
    State(dialect): State<&'static dyn Dialect>,
    req: Request,
    next: Next,
) -> Response {
    let request_id = request_id(req.headers());
    let resp = next.run(req).await;
    answer(dialect, request_id.as_deref(), resp).await
}

/// `resp` through `dialect` when it is not a success.
pub async fn answer(dialect: &dyn Dialect, request_id: Option<&str>, resp: Response) -> Response {
    if resp.status().is_success() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let kernel = parts.extensions.get::<ApiError>().cloned();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (text, body) = if kernel.is_some() || is_json {
        (String::new(), body)
    } else {
        let bytes = to_bytes(body, 1 << 20).await.unwrap_or_default();
        (
            String::from_utf8_lossy(&bytes).trim().to_string(),
            Body::from(bytes),
        )
    };
    let cause = match (&kernel, is_json) {
        (Some(e), _) => Cause::Kernel(e),
        (None, true) => Cause::Own,
        (None, false) => Cause::Plain(&text),
    };
    let rendered = dialect.render(Refusal {
        status: parts.status,
        headers: &parts.headers,
        extensions: &parts.extensions,
        request_id,
        cause,
    });
    rendered.unwrap_or_else(|| Response::from_parts(parts, body))
}

/// The answer to a path no route matched: 404, in the dialect of the part whose URL space
/// holds it, else with an empty body.
pub fn unmatched(dialects: &[&'static dyn Dialect], req: &Request) -> Response {
    let path = req.uri().path();
    let request_id = request_id(req.headers());
    let empty = (StatusCode::NOT_FOUND, Body::empty()).into_response();
    let Some(dialect) = dialects.iter().find(|d| d.claims(path)) else {
        return empty;
    };
    let (parts, body) = empty.into_parts();
    dialect
        .render(Refusal {
            status: parts.status,
            headers: &parts.headers,
            extensions: &parts.extensions,
            request_id: request_id.as_deref(),
            cause: Cause::Plain(""),
        })
        .unwrap_or_else(|| Response::from_parts(parts, body))
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
