//! API errors: one type, rendered as the native error envelope
//! `{"status":"error","timestamp":…,"error":{"code":…,"message":…,"details":…}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::response::timestamp;

/// An error answer. Validation failures name the field and the problem in `details`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// 400 for one bad request field.
    pub fn invalid(field: &str, problem: impl Into<String>) -> ApiError {
        let problem = problem.into();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid {field}: {problem}"),
        )
        .with_details(json!({ "field": field, "problem": problem }))
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }

    /// 500 without leaking internals; the cause is logged.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            .with_details(json!(context))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal("database error", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.status.as_u16(), "message": self.message });
        if let Some(d) = self.details {
            error["details"] = d;
        }
        let body = json!({ "status": "error", "timestamp": timestamp(), "error": error });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Turns axum's query rejections into the envelope, naming the parameter serde complained of.
pub fn query_rejection(e: axum::extract::rejection::QueryRejection) -> ApiError {
    let text = e.body_text();
    let problem = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text)
        .to_string();
    let field = problem
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "query".into());
    ApiError::invalid(&field, problem)
}
