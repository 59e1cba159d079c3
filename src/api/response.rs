//! The native success envelope and its CSV and XML renderings.
//!
//! JSON: `{"status":"success","timestamp":…,"data":…,"meta":{"request_id":…,"version":"v1"}}`.
//! `?format=csv|xml|json` or `Accept: text/csv | application/xml` pick another rendering: CSV
//! has one row per list item (nested objects flattened to dotted columns), XML mirrors the
//! JSON envelope element by element.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use crate::clock::format_ms;

/// Media type of a `#[utoipa::path]` answer that is the success envelope ([`Reply`]) around
/// its `body`: the OpenAPI document lists it as JSON, CSV and XML.
pub const ENVELOPE: &str = "application/x-radstream-envelope";

/// Media type of a `#[utoipa::path]` answer that is a server-sent event stream whose `data:`
/// lines hold its `body` as JSON.
pub const EVENT_STREAM: &str = "text/x-radstream-event-stream";

/// API version reported in `meta.version`.
pub const API_VERSION: &str = "v1";

/// UTC time to the second (`2025-07-24T10:03:12Z`), as the envelope's `timestamp` (the
/// Neolens document's form; a client parsing it with a fixed pattern keeps working).
pub fn timestamp() -> String {
    let now = crate::clock::now_ms();
    format_ms(now - now.rem_euclid(1000))
}

/// Response rendering asked for by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Xml,
}

/// Per-request context every handler gets: the rendering and the request id.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub format: Format,
    pub request_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, ApiError> {
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let query_format = parts.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "format")
                .map(|(_, v)| v.into_owned())
        });
        let format = match query_format.as_deref() {
            Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some("xml") => Format::Xml,
            Some(other) => {
                return Err(ApiError::invalid(
                    "format",
                    format!("'{other}' is not one of json, csv, xml"),
                ))
            }
            None => {
                let accept = parts
                    .headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if accept.contains("text/csv") {
                    Format::Csv
                } else if accept.contains("application/xml") || accept.contains("text/xml") {
                    Format::Xml
                } else {
                    Format::Json
                }
            }
        };
        Ok(Ctx { format, request_id })
    }
}

impl Ctx {
    /// A success reply carrying `data`.
    pub fn reply(&self, data: impl Serialize) -> Reply {
        Reply {
            status: StatusCode::OK,
            data: serde_json::to_value(data).unwrap_or(Value::Null),
            rows: None,
            format: self.format,
            request_id: self.request_id.clone(),
        }
    }
}

/// A success answer; rendered per [`Format`].
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    data: Value,
    rows: Option<Value>,
    format: Format,
    request_id: String,
}

impl Reply {
    pub fn status(mut self, status: StatusCode) -> Reply {
        self.status = status;
        self
    }

    /// The list a CSV rendering has one row per item of (default: `data` itself if it is a
    /// list, else `data.items` if that is, else one row of `data`).
    pub fn csv_rows(mut self, rows: Value) -> Reply {
        self.rows = Some(rows);
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let envelope = json!({
            "status": "success",
            "timestamp": timestamp(),
            "data": self.data,
            "meta": { "request_id": self.request_id, "version": API_VERSION },
        });
        let (content_type, body) = match self.format {
            Format::Json => ("application/json", envelope.to_string()),
            Format::Xml => ("application/xml; charset=utf-8", to_xml(&envelope)),
            Format::Csv => {
                let rows = self.rows.unwrap_or_else(|| match &envelope["data"] {
                    Value::Array(_) => envelope["data"].clone(),
                    Value::Object(o) if o.get("items").is_some_and(Value::is_array) => {
                        o["items"].clone()
                    }
                    other => Value::Array(vec![other.clone()]),
                });
                ("text/csv; charset=utf-8", to_csv(&rows))
            }
        };
        let mut resp = (self.status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp
    }
}

/// Flattens nested objects into dotted keys; lists become JSON text.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => out.push((prefix.to_string(), String::new())),
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Array(_) | Value::Bool(_) | Value::Number(_) => {
            out.push((prefix.to_string(), v.to_string()))
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// RFC 4180 CSV with a header row; columns in first-seen order across all rows.
pub fn to_csv(rows: &Value) -> String {
    let items: Vec<Value> = match rows {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let mut columns: Vec<String> = Vec::new();
    let mut flat: Vec<Map<String, Value>> = Vec::new();
    for item in &items {
        let mut cells = Vec::new();
        let root = if item.is_object() {
            item.clone()
        } else {
            json!({ "value": item })
        };
        flatten("", &root, &mut cells);
        let mut m = Map::new();
        for (k, v) in cells {
            if !columns.contains(&k) {
                columns.push(k.clone());
            }
            m.insert(k, Value::String(v));
        }
        flat.push(m);
    }
    let mut out = String::new();
    out.push_str(
        &columns
            .iter()
            .map(|c| csv_field(c))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push_str("\r\n");
    for m in flat {
        let line: Vec<String> = columns
            .iter()
            .map(|c| csv_field(m.get(c).and_then(Value::as_str).unwrap_or("")))
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn xml_name(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

fn xml_value(name: &str, v: &Value, out: &mut String) {
    let name = xml_name(name);
    match v {
        Value::Null => out.push_str(&format!("<{name}/>")),
        Value::Object(m) => {
            out.push_str(&format!("<{name}>"));
            for (k, v) in m {
                xml_value(k, v, out);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::Array(a) => {
            out.push_str(&format!("<{name}>"));
            for v in a {
                xml_value("item", v, out);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", crate::xml::escape(s))),
        Value::Bool(_) | Value::Number(_) => out.push_str(&format!("<{name}>{v}</{name}>")),
    }
}

/// The envelope as XML under a `<response>` root, its members in the documented order
/// (status, timestamp, data or error, meta).
pub fn to_xml(envelope: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><response>");
    const ORDER: [&str; 5] = ["status", "timestamp", "data", "error", "meta"];
    if let Value::Object(m) = envelope {
        for k in ORDER {
            if let Some(v) = m.get(k) {
                xml_value(k, v, &mut out);
            }
        }
        for (k, v) in m.iter().filter(|(k, _)| !ORDER.contains(&k.as_str())) {
            xml_value(k, v, &mut out);
        }
    }
    out.push_str("</response>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_flattens_and_quotes() {
        let rows = json!([
            {"a": 1, "b": {"c": "x,y"}, "l": [1, 2]},
            {"a": 2, "d": "q\"r"}
        ]);
        let csv = to_csv(&rows);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], "a,b.c,l,d");
        assert_eq!(lines[1], "1,\"x,y\",\"[1,2]\",");
        assert_eq!(lines[2], "2,,,\"q\"\"r\"");
    }

    #[test]
    fn xml_escapes_and_names_items() {
        let x = to_xml(&json!({"status": "success", "data": [{"9x": "<a&b>"}], "n": null}));
        assert!(
            x.contains("<data><item><_9x>&lt;a&amp;b&gt;</_9x></item></data>"),
            "{x}"
        );
        assert!(x.contains("<n/>"));
        assert!(x.starts_with("<?xml"));
    }

    #[test]
    fn envelope_timestamp_has_whole_seconds() {
        let t = timestamp();
        assert_eq!(t.len(), "2025-07-24T10:03:12Z".len(), "{t}");
        assert!(t.ends_with('Z'));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(1_500), "1970-01-01T00:00:01.5Z");
    }
}
