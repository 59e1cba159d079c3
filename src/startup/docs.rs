//! The API describing itself: `GET /openapi.json`, the OpenAPI 3.1 document the assembler
//! builds from the handlers and the node's route list ([`super::openapi`]), and `GET /docs`, an
//! HTML page rendered here from that document.
//!
//! `GET /` sends a browser on to `/docs` (public: it answers nothing but the way there).
//!
//! The page is self-contained (inline style, no script, no font or asset from elsewhere) so
//! it works on air-gapped hospital networks; its `Content-Security-Policy` forbids loading
//! anything. Both need `results:read`, like the rest of the API; a browser can pass
//! `?access_token=`.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use serde_json::Value;

use crate::api::{spec, Access, Routes};
use crate::auth::Scope;

/// State of the docs routes: the document as JSON and as the HTML page, rendered once when
/// the node is assembled.
#[derive(Clone)]
pub struct Docs {
    json: Bytes,
    page: Bytes,
}

impl Docs {
    pub fn new(doc: &Value) -> Docs {
        Docs {
            json: Bytes::from(doc.to_string()),
            page: Bytes::from(render(doc)),
        }
    }
}

pub fn routes() -> Routes<Docs> {
    let read = Access::Scope(Scope::ResultsRead);
    vec![
        (
            spec(
                Method::GET,
                "/openapi.json",
                read,
                "This API as an OpenAPI 3.1 document",
            ),
            get(openapi_json),
        ),
        (
            spec(Method::GET, "/docs", read, "This API as an HTML page"),
            get(docs_page),
        ),
        (
            spec(
                Method::GET,
                "/",
                Access::Public,
                "Redirect to the API page (/docs)",
            ),
            get(root),
        ),
    ]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(openapi_json, docs_page, root))]
pub struct Doc;

/// `/` to `/docs` (an `?access_token=` was taken off the URI before, and stays off).
#[utoipa::path(get, path = "/", responses(
    (status = 303, description = "To /docs", headers(("Location" = String, description = "/docs"))),
))]
async fn root() -> Redirect {
    Redirect::to("/docs")
}

#[utoipa::path(get, path = "/openapi.json", responses(
    (status = 200, description = "This document (OpenAPI 3.1)", body = Object, content_type = "application/json"),
))]
async fn openapi_json(State(docs): State<Docs>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], docs.json)
}

#[utoipa::path(get, path = "/docs", responses(
    (status = 200, description = "This document as a self-contained HTML page", body = String, content_type = "text/html; charset=utf-8"),
))]
async fn docs_page(State(docs): State<Docs>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        docs.page,
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text with `` `code` `` spans as `<code>`.
fn text(s: &str) -> String {
    escape(s)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_string()
            }
        })
        .collect()
}

/// Short type of a parameter schema: `integer`, `string` (enum values listed), `string?`.
fn type_of(schema: &Value) -> String {
    let base = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_string(),
    };
    match schema["enum"].as_array() {
        Some(values) => {
            let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
            format!("{base}: {}", values.join(", "))
        }
        None => base,
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:64rem;\
padding:1rem 2rem;color:#1d2430}h1 small{font-weight:normal;color:#667}\
h2{border-bottom:2px solid #dde;margin-top:2.5rem;text-transform:capitalize}\
.op{border:1px solid #dde;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}\
.op h3{margin:.2rem 0;font-size:1rem;font-family:ui-monospace,monospace}\
.m{display:inline-block;min-width:4.5em;text-align:center;border-radius:4px;color:#fff;\
padding:0 .4em;margin-right:.5em}.get{background:#2f6fb0}.post{background:#2d8a4e}\
.put,.patch{background:#b07a1a}.delete{background:#b03a2e}\
.scope{font-size:.9em;color:#445}table{border-collapse:collapse;margin:.4rem 0;width:100%}\
td,th{border-top:1px solid #eef;padding:.2rem .5rem;text-align:left;vertical-align:top;\
font-size:.92em}th{background:#f5f6fa}code{background:#f2f3f7;padding:0 .25em;\
border-radius:3px;font-family:ui-monospace,monospace}nav a{margin-right:1em}\
p.desc{white-space:pre-line}";

/// The HTML page for an OpenAPI document: operations grouped by tag, each with method, path,
/// summary, the scope it needs, parameters and answers.
pub fn render(doc: &Value) -> String {
    let mut by_tag: BTreeMap<String, Vec<(&str, &str, &Value)>> = BTreeMap::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
                    by_tag.entry(tag).or_default().push((method, path, op));
                }
            }
        }
    }
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let version = doc["info"]["version"].as_str().unwrap_or("");
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} API</title><style>{STYLE}</style></head><body>\
         <h1>{t} API <small>{v}</small></h1>\
         <p>OpenAPI {o} document: <a href=\"/openapi.json\">/openapi.json</a> \
         (send a credential, or add <code>?access_token=</code>).</p>\
         <p>How to install the node, connect a PACS, integrate and operate it: \
         <a href=\"/guide/\">the guide</a> (<code>/guide/</code>).</p>",
        t = escape(title),
        v = escape(version),
        o = escape(doc["openapi"].as_str().unwrap_or("")),
    );
    if let Some(d) = doc["info"]["description"].as_str() {
        let _ = write!(h, "<p class=\"desc\">{}</p>", text(d));
    }
    h.push_str("<nav>");
    for tag in by_tag.keys() {
        let _ = write!(h, "<a href=\"#tag-{0}\">{0}</a>", escape(tag));
    }
    h.push_str("</nav>");
    for (tag, ops) in &by_tag {
        let _ = write!(h, "<h2 id=\"tag-{0}\">{0}</h2>", escape(tag));
        for (method, path, op) in ops {
            operation(&mut h, doc, method, path, op);
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// `node`, or what its local `$ref` points at.
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    node["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| doc.pointer(pointer))
        .unwrap_or(node)
}

/// The component a JSON body is (`Health`, `[ModelInfo]`), named by what it is: `data` for
/// the success envelope's payload, else `body`.
fn schema_name(schema: &Value) -> Option<(&'static str, String)> {
    if let Some(parts) = schema["allOf"].as_array() {
        let data = parts
            .iter()
            .find_map(|p| component(&p["properties"]["data"]))?;
        return Some(("data", data));
    }
    component(schema).map(|name| ("body", name))
}

fn component(schema: &Value) -> Option<String> {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().map(str::to_string);
    }
    if schema["type"] == "array" {
        return component(&schema["items"]).map(|n| format!("[{n}]"));
    }
    None
}

fn operation(h: &mut String, doc: &Value, method: &str, path: &str, op: &Value) {
    let id = op["operationId"].as_str().unwrap_or("");
    let _ = write!(
        h,
        "<section class=\"op\" id=\"{}\"><h3><span class=\"m {method}\">{}</span>{}</h3>\
         <div>{}</div>",
        escape(id),
        method.to_uppercase(),
        escape(path),
        text(op["summary"].as_str().unwrap_or("")),
    );
    let access = match op["x-required-scope"].as_str() {
        Some("admin") => "Scope: <code>admin</code>".to_string(),
        Some(s) => format!("Scope: <code>{}</code> (or <code>admin</code>)", escape(s)),
        None => "Public: no credential needed".to_string(),
    };
    let _ = write!(h, "<div class=\"scope\">{access}</div>");
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        h.push_str(
            "<table><tr><th>Parameter</th><th>In</th><th>Type</th><th>Required</th>\
             <th>Description</th></tr>",
        );
        for p in params {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(p["name"].as_str().unwrap_or("")),
                escape(p["in"].as_str().unwrap_or("")),
                escape(&type_of(&p["schema"])),
                if p["required"] == true { "yes" } else { "no" },
                text(p["description"].as_str().unwrap_or("")),
            );
        }
        h.push_str("</table>");
    }
    if let Some(body) = op["requestBody"]["content"].as_object() {
        let types: Vec<String> = body.keys().map(|k| escape(k)).collect();
        let _ = write!(h, "<div>Body: {}</div>", types.join(", "));
    }
    if let Some(responses) = op["responses"].as_object() {
        h.push_str("<table><tr><th>Answer</th><th>Description</th><th>Content</th></tr>");
        for (status, r) in responses {
            let r = resolve(doc, r);
            let description = r["description"].as_str().unwrap_or("");
            let mut content: Vec<String> = r["content"]
                .as_object()
                .map(|c| {
                    c.keys()
                        .map(|k| format!("<code>{}</code>", escape(k)))
                        .collect()
                })
                .unwrap_or_default();
            let schema = schema_name(&r["content"]["application/json"]["schema"]).or_else(|| {
                component(&r["content"]["text/event-stream"]["x-data-schema"]).map(|n| ("data", n))
            });
            if let Some((label, name)) = schema {
                content.push(format!("<br>{label}: <code>{}</code>", escape(&name)));
            }
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(status),
                text(description),
                content.join(" ")
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::startup::http::{handler_docs, routes};
    use crate::startup::openapi::{build, openapi_path};

    #[test]
    fn page_lists_every_route_and_loads_nothing() {
        let doc = build(&routes(), handler_docs());
        let page = render(&doc);
        for r in routes() {
            let path = escape(&openapi_path(r.path));
            assert!(
                page.contains(&format!("{}</span>{path}</h3>", r.method)),
                "{path}"
            );
        }
        assert!(page.contains("Scope: <code>results:read</code>"));
        assert!(page.contains("Public: no credential needed"));
        assert!(page.contains("<td><code>patient_name</code></td>"));
        assert!(page.contains("<code>text/event-stream</code>"));
        assert!(page.contains("data: <code>StudyResult</code>"));
        assert!(page.contains("data: <code>[ModelInfo]</code>"));
        assert!(
            page.contains("<code>Token missing</code>"),
            "shared answers resolved"
        );
        assert!(page.contains("body: <code>ErrorEnvelope</code>"));
        assert!(page.contains("<a href=\"/guide/\">the guide</a>"));
        let lower = page.to_lowercase();
        for banned in [
            "<script", "src=", "<link", "@import", "url(", "http://", "https://",
        ] {
            assert!(!lower.contains(banned), "{banned}");
        }
    }

    #[test]
    fn text_escapes_and_marks_code() {
        assert_eq!(text("a `<b>` & c"), "a <code>&lt;b&gt;</code> &amp; c");
    }
}
