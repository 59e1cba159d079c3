//! Request limits: body size (`http.max_body_bytes`, 413) and time to the response headers
//! (`http.request_timeout_secs`, 503), both answered in the error envelope.
//!
//! The timeout bounds how long a handler takes to *produce* its response, not how long the
//! body streams afterwards: server-sent event streams and large downloads, whose headers go
//! out at once, are never cut (tested below).

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;

use super::error::ApiError;
use super::settings::HttpSettings;

/// The limits in force, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

impl HttpLimits {
    pub fn from_settings(http: &HttpSettings) -> HttpLimits {
        HttpLimits {
            max_body_bytes: usize::try_from(http.max_body_bytes).unwrap_or(usize::MAX),
            request_timeout: Duration::from_secs(http.request_timeout_secs),
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::from_settings(&HttpSettings::default())
    }
}

/// Wraps every route of `router` in the body limit and the timeout.
pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>, limits: HttpLimits) -> Router<S> {
    router
        // Extractors (Bytes, Json, …) get the same limit instead of axum's 2 MB default;
        // streaming bodies are cut by the tower-http layer.
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(limits, envelope_413))
        .layer(middleware::from_fn_with_state(limits, timeout))
}

/// The body-limit layers answer 413 in plain text; re-render it as the envelope.
async fn envelope_413(State(limits): State<HttpLimits>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
            .with_details(json!({ "max_body_bytes": limits.max_body_bytes }))
            .into_response();
    }
    resp
}

async fn timeout(State(limits): State<HttpLimits>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(
                timeout_secs = limits.request_timeout.as_secs_f64(),
                "request timed out"
            );
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Request timed out")
                .with_details(json!({ "timeout_secs": limits.request_timeout.as_secs_f64() }))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, Bytes};
    use axum::routing::{get, post};
    use futures::StreamExt;
    use tower::ServiceExt;

    fn app(limits: HttpLimits) -> Router {
        let r = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    "late"
                }),
            )
            .route(
                "/stream",
                get(|| async {
                    // Headers at once, then a body that takes longer than the timeout.
                    let chunks = futures::stream::iter(0..4).then(|i| async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>(Bytes::from(format!("chunk{i};")))
                    });
                    Body::from_stream(chunks)
                }),
            )
            .route(
                "/upload",
                post(|b: Bytes| async move { b.len().to_string() }),
            );
        apply(r, limits)
    }

    const LIMITS: HttpLimits = HttpLimits {
        max_body_bytes: 1024,
        request_timeout: Duration::from_millis(200),
    };

    async fn body_json(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn slow_handlers_time_out_in_the_envelope() {
        let resp = app(LIMITS)
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v = body_json(resp).await;
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"]["message"], "Request timed out");
    }

    #[tokio::test]
    async fn streams_outlive_the_timeout() {
        let resp = app(LIMITS)
            .oneshot(Request::get("/stream").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let started = std::time::Instant::now();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(started.elapsed() > LIMITS.request_timeout);
        assert_eq!(&bytes[..], b"chunk0;chunk1;chunk2;chunk3;");
    }

    #[tokio::test]
    async fn large_bodies_get_413_in_the_envelope() {
        // Declared length over the limit.
        let resp = app(LIMITS)
            .oneshot(
                Request::post("/upload")
                    .header(header::CONTENT_LENGTH, "2048")
                    .body(Body::from(vec![0u8; 2048]))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let v = body_json(resp).await;
        assert_eq!(v["error"]["message"], "Request body too large");
        assert_eq!(v["error"]["max_body_bytes"], 1024);

        // Chunked body without a length: cut while reading.
        let chunks = futures::stream::iter(
            (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 512]))),
        );
        let resp = app(LIMITS)
            .oneshot(
                Request::post("/upload")
                    .body(Body::from_stream(chunks))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body_json(resp).await["error"]["code"], 413);

        // Within the limit: served.
        let resp = app(LIMITS)
            .oneshot(
                Request::post("/upload")
                    .body(Body::from(vec![0u8; 1000]))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
