//! Records every HTTP request into [`Metrics`]: latency and count by method, matched route
//! template (never the raw path, which holds UIDs) and status class.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::Metrics;

/// Middleware for `axum::middleware::from_fn_with_state`. Added with `Router::layer`, it sees
/// the [`MatchedPath`] of routed requests; requests no route matched are labelled `unmatched`.
/// The time is to the response head, so a stream (SSE) counts only until it starts.
pub async fn record(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics.http_request(
        method.as_str(),
        route.as_deref(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::configuration::Durability;
    use crate::db::Database;

    #[tokio::test]
    async fn requests_are_labelled_by_route_template_and_status_class() {
        let metrics = Metrics::new();
        let app = Router::new()
            .route(
                "/studies/{study_uid}",
                get(|| async { StatusCode::NO_CONTENT }),
            )
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                record,
            ));
        for uri in [
            "/studies/1.2.840.99",
            "/studies/1.2.840.100",
            "/nowhere/1.2.3",
        ] {
            let response = app
                .clone()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert!(response.status().is_success() || response.status() == 404);
        }
        let db = Database::connect_url("sqlite::memory:", Some(1), Durability::Os)
            .await
            .unwrap();
        let text = metrics
            .render(crate::api::routes::metrics::db_state(&db), 0)
            .await;
        assert!(
            text.contains(
                "radstream_http_requests_total{method=\"GET\",route=\"/studies/{study_uid}\",status=\"2xx\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "radstream_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"4xx\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "radstream_http_request_duration_seconds_count{method=\"GET\",route=\"/studies/{study_uid}\",status=\"2xx\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("1.2.840"),
            "a raw path leaked into a label:\n{text}"
        );
    }
}
