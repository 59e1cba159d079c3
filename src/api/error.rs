//! API errors: one type, rendered as the native (and Neolens) error envelope
//! `{"status":"error","timestamp":…,"error":{"code":…,"message":…,"details":"…"}}`, where
//! `details` is a human-readable string and structured facts such as `field` and `problem`
//! are extra members of `error`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::response::timestamp;

/// An error answer. Validation failures name the field and the problem in `details`.
/// The rendered answer carries a copy in its extensions, so the part of the API a request
/// was routed to can answer it in its own dialect ([`super::dialect`]) without parsing JSON.
#[derive(Debug, Clone)]
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
        let mut error = json!({ "code": self.status.as_u16(), "message": &self.message });
        if let Some(d) = &self.details {
            // `details` is a string (Neolens' error object); the structured facts (`field`,
            // `problem`, `required_scope`, …) sit beside it for programs.
            if let (Value::Object(facts), Some(e)) = (d, error.as_object_mut()) {
                for (k, v) in facts {
                    e.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            error["details"] = Value::String(details_text(d));
        }
        let body = json!({ "status": "error", "timestamp": timestamp(), "error": error });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp.extensions_mut().insert(self);
        resp
    }
}

/// A UID from a path or query parameter (validated as in [`crate::domain::Uid`], padding
/// trimmed); a bad one is a 400 naming `field`.
pub fn valid_uid(field: &str, raw: &str) -> Result<String, ApiError> {
    crate::domain::Uid::parse("uid", raw)
        .map(|u| u.as_str().to_string())
        .map_err(|e| ApiError::invalid(field, e.problem))
}

/// `limit` (default 50, 1..=500) and `offset` (default 0, not negative) of a list.
pub fn paging(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid("offset", "must not be negative"));
    }
    Ok((limit, offset))
}

/// One line for `details`: a validation error reads "field: problem"; other facts "k: v; …".
fn details_text(d: &Value) -> String {
    let plain = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match d {
        Value::Object(m) => match (m.get("field"), m.get("problem")) {
            (Some(f), Some(p)) => format!("{}: {}", plain(f), plain(p)),
            _ => m
                .iter()
                .map(|(k, v)| format!("{k}: {}", plain(v)))
                .collect::<Vec<_>>()
                .join("; "),
        },
        other => plain(other),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn details_are_a_string_with_the_facts_beside_it() {
        let resp = ApiError::invalid("from", "is not a date").into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"]["code"], 400);
        assert_eq!(v["error"]["message"], "Invalid from: is not a date");
        assert_eq!(v["error"]["details"], "from: is not a date");
        assert_eq!(v["error"]["field"], "from");
        assert_eq!(v["error"]["problem"], "is not a date");
    }
}
