//! The OpenAPI 3.1 document of the HTTP API, built by the assembler ([`super::http`]) from
//! the node's route list and the parts' handler docs. Each operation comes from its handler's
//! `#[utoipa::path]` (parameters, request body, answers, and the schemas of the types the
//! handler returns); [`build`] completes it from the handler's [`RouteSpec`], so that the
//! document cannot drift from the router:
//!
//! - summary, tag (the first path segment after the API version: `/v1/studies/…` →
//!   `studies`, `/openapi.json` → `openapi`) and operation id; `security` from the route's
//!   [`Access`] (public routes get `[]`), with the shared 401, 403 and 429 answers;
//! - path parameters from the path's `{…}` segments, where the handler does not document
//!   them; the shared 400, 404 and `default` answers, where it does not answer them itself;
//! - an answer declared with the media type [`ENVELOPE`] becomes the success envelope around
//!   its `body`, also as CSV and XML, and the operation gets `?format=`; one declared with
//!   [`EVENT_STREAM`] becomes `text/event-stream` whose `data:` lines hold its `body`.
//!
//! The handler's doc comment is the operation's description. The tests below fail when a
//! route has no annotated handler, an annotated handler no route, or a `$ref` dangles.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::api::auth::ACCESS_TOKEN_PARAM;
use crate::api::response::{ENVELOPE, EVENT_STREAM};
use crate::api::{Access, RouteSpec};
use crate::compat::radanalyzer;

/// The OpenAPI version the document follows.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// Names of the security schemes in `components.securitySchemes`.
const SCHEMES: [&str; 3] = ["bearerAuth", "apiKey", "accessToken"];

/// The document for `routes`, with the operations `handlers` documents.
pub fn build(routes: &[RouteSpec], handlers: utoipa::openapi::OpenApi) -> Value {
    let handlers = serde_json::to_value(handlers).unwrap_or_default();
    let mut paths = Map::new();
    let mut tags = BTreeSet::new();
    for spec in routes {
        let path = openapi_path(spec.path);
        let method = spec.method.as_str().to_lowercase();
        let annotated = handlers["paths"][&path][&method].clone();
        let item = paths.entry(path).or_insert_with(|| json!({}));
        item[method] = operation(spec, annotated);
        tags.insert(tag(spec.path));
    }
    let mut components = components();
    if let Some(derived) = handlers["components"]["schemas"].as_object() {
        for (name, schema) in derived {
            components["schemas"][name] = schema.clone();
        }
    }
    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "radstream",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": env!("CARGO_PKG_DESCRIPTION"),
            "description": DESCRIPTION,
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "tags": tags.into_iter().map(|t| json!({ "name": t })).collect::<Vec<_>>(),
        "paths": paths,
        "components": components,
    })
}

const DESCRIPTION: &str = "The HTTP API of a radstream node.\n\n\
Successful answers come in the success envelope `{\"status\": \"success\", \"timestamp\", \
\"data\", \"meta\": {\"request_id\", \"version\"}}`. Where an operation also lists `text/csv` \
and `application/xml`, `?format=csv|xml` (or the `Accept` header) picks those renderings: CSV \
has one row per list item with nested fields as dotted columns, XML mirrors the envelope. \
Errors come in the error envelope `{\"status\": \"error\", \"timestamp\", \"error\": {\"code\", \
\"message\", \"details\"}}`.\n\n\
Credentials: `Authorization: Bearer <JWT or API key>`, `x-api-key: <API key>`, or \
`?access_token=<JWT or API key>` for EventSource clients, which cannot set headers. Scopes: \
`results:read`, `inference:write` and `admin`, which implies the other two. Only `/ping` and \
`/health` are public.";

/// The OpenAPI form of an axum path: `{*rest}` becomes `{rest}`.
pub fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

/// The names of the `{…}` segments of a path.
fn path_param_names(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|s| s.trim_start_matches('*'))
        .collect()
}

/// The tag of a route: its first path segment after a version segment (`v1`), without an
/// extension.
pub fn tag(path: &str) -> String {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let first = segments.next().unwrap_or("");
    let is_version =
        first.len() > 1 && first.starts_with('v') && first[1..].chars().all(|c| c.is_ascii_digit());
    let segment = if is_version {
        segments.next().unwrap_or(first)
    } else {
        first
    };
    segment
        .split('.')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("root")
        .to_string()
}

/// A unique id from method and path: `get_v1_studies_study_uid_results`; a path ending in
/// `/` (a folder's index page, `/ui/` beside the redirect `/ui`) ends in `_index`.
fn operation_id(spec: &RouteSpec) -> String {
    let mut id = spec.method.as_str().to_lowercase();
    for segment in spec.path.split('/') {
        let clean: String = segment
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let clean = clean.trim_matches('_');
        if !clean.is_empty() {
            id.push('_');
            id.push_str(clean);
        }
    }
    if spec.path.len() > 1 && spec.path.ends_with('/') {
        id.push_str("_index");
    }
    id
}

/// A path parameter the handler does not document itself.
fn path_param(name: &str) -> Value {
    let (schema, description) = match name {
        "study_uid" => (
            json!({ "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)*$", "maxLength": 64 }),
            "Study Instance UID (0020,000D)",
        ),
        "job_id" => (json!({ "type": "integer", "minimum": 1 }), "Job id"),
        "version" => (
            json!({ "type": "integer", "minimum": 1 }),
            "Result version (1 = the study's first result)",
        ),
        "study" => (json!({ "type": "string" }), "Study Instance UID"),
        "series" => (json!({ "type": "string" }), "Series Instance UID"),
        "instance" => (json!({ "type": "string" }), "SOP Instance UID"),
        _ => (json!({ "type": "string" }), ""),
    };
    let mut p = json!({ "name": name, "in": "path", "required": true, "schema": schema });
    if !description.is_empty() {
        p["description"] = json!(description);
    }
    p
}

/// `?format=`, on every operation answering with the success envelope.
fn format_param() -> Value {
    json!({
        "name": "format",
        "in": "query",
        "required": false,
        "description": "Rendering: `json` (default), `csv` (one row per item) or `xml`. \
            Without it, `Accept: text/csv` or `Accept: application/xml` picks the rendering.",
        "schema": { "type": "string", "enum": ["json", "csv", "xml"] },
    })
}

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// Replaces the placeholder media types [`ENVELOPE`] and [`EVENT_STREAM`] of one answer;
/// true when it is the envelope.
fn resolve_media_types(response: &mut Value) -> bool {
    let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else {
        return false;
    };
    if let Some(media) = content.remove(ENVELOPE) {
        let text = json!({ "schema": { "type": "string" } });
        content.insert(
            "application/json".into(),
            json!({ "schema": { "allOf": [
                { "$ref": "#/components/schemas/SuccessEnvelope" },
                { "type": "object", "properties": { "data": media["schema"] } },
            ] } }),
        );
        content.insert("text/csv".into(), text.clone());
        content.insert("application/xml".into(), text);
        return true;
    }
    if let Some(media) = content.remove(EVENT_STREAM) {
        content.insert(
            "text/event-stream".into(),
            json!({ "schema": { "type": "string" }, "x-data-schema": media["schema"] }),
        );
        let described = response["description"].as_str().unwrap_or("");
        response["description"] = json!(format!(
            "{described}. Server-sent events: each has `id:` (the event id), `event:` (its \
             type) and a `data:` line holding the `x-data-schema` as JSON; lines starting \
             with `:` are keep-alives."
        ));
    }
    false
}

/// One operation: the handler's `annotated` operation (`null` when it has none) completed
/// from its route.
fn operation(spec: &RouteSpec, annotated: Value) -> Value {
    let mut op = match annotated {
        Value::Object(op) => op,
        _ => Map::new(),
    };
    // utoipa splits the handler's doc comment into summary and description; the summary is
    // the route table's, the whole comment the description.
    let mut description: Vec<String> = ["summary", "description"]
        .iter()
        .filter_map(|k| op.remove(*k))
        .filter_map(|v| v.as_str().map(str::to_string))
        .filter(|s| !s.is_empty())
        .collect();
    let path_names = path_param_names(spec.path);
    let declared = match op.remove("parameters") {
        Some(Value::Array(ps)) => ps,
        _ => Vec::new(),
    };
    let mut parameters: Vec<Value> = path_names
        .iter()
        .map(|n| {
            declared
                .iter()
                .find(|p| p["in"] == "path" && p["name"] == *n)
                .cloned()
                .unwrap_or_else(|| path_param(n))
        })
        .collect();
    // A query filter the path fixes (`study_uid` of a study's stream) is not offered.
    parameters.extend(
        declared
            .into_iter()
            .filter(|p| p["in"] != "path" && !path_names.iter().any(|n| p["name"] == *n)),
    );
    let mut responses = match op.remove("responses") {
        Some(Value::Object(rs)) if !rs.is_empty() => rs,
        _ => Map::from_iter([("200".into(), json!({ "description": "Success" }))]),
    };
    let mut enveloped = false;
    for response in responses.values_mut() {
        enveloped |= resolve_media_types(response);
    }
    if enveloped && !parameters.iter().any(|p| p["name"] == "format") {
        parameters.push(format_param());
    }
    let mut shared = Vec::new();
    if !parameters.is_empty() || op.contains_key("requestBody") {
        shared.push(("400", "BadRequest"));
    }
    if !path_names.is_empty() {
        shared.push(("404", "NotFound"));
    }
    match spec.access {
        Access::Public => {
            op.insert("security".into(), json!([]));
        }
        Access::Scope(scope) => {
            let scope = scope.as_str();
            let requirements: Vec<Value> = SCHEMES.iter().map(|s| json!({ *s: [scope] })).collect();
            op.insert("security".into(), Value::Array(requirements));
            op.insert("x-required-scope".into(), json!(scope));
            let or_admin = if scope == "admin" {
                ""
            } else {
                " (or `admin`)"
            };
            description.push(format!("Requires scope `{scope}`{or_admin}."));
            // RadAnalyzer answers every authentication failure with its own 403.
            if spec.dialect != Some(radanalyzer::DIALECT) {
                shared.push(("401", "Unauthorized"));
            }
            shared.push(("403", "Forbidden"));
            shared.push(("429", "TooManyRequests"));
        }
    }
    shared.push(("default", "Error"));
    // An operation's own answers win over the shared ones.
    for (status, name) in shared {
        responses
            .entry(status)
            .or_insert_with(|| response_ref(name));
    }
    op.insert("tags".into(), json!([tag(spec.path)]));
    op.insert("summary".into(), json!(spec.summary));
    op.insert("operationId".into(), json!(operation_id(spec)));
    if !description.is_empty() {
        op.insert("description".into(), json!(description.join("\n\n")));
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

fn components() -> Value {
    let mut schemas = Map::new();
    let timestamp =
        json!({ "type": "string", "format": "date-time", "description": "RFC 3339, UTC" });
    schemas.insert(
        "SuccessEnvelope".into(),
        json!({
            "type": "object",
            "required": ["status", "timestamp", "data", "meta"],
            "properties": {
                "status": { "const": "success" },
                "timestamp": timestamp,
                "data": { "description": "The answer; its schema is given per operation" },
                "meta": { "$ref": "#/components/schemas/Meta" },
            },
        }),
    );
    schemas.insert(
        "Meta".into(),
        json!({
            "type": "object",
            "required": ["request_id", "version"],
            "properties": {
                "request_id": {
                    "type": "string",
                    "description": "The request's `x-request-id` (also sent back as a header)",
                },
                "version": { "type": "string", "description": "API version, `v1`" },
            },
        }),
    );
    schemas.insert(
        "ErrorEnvelope".into(),
        json!({
            "type": "object",
            "required": ["status", "timestamp", "error"],
            "properties": {
                "status": { "const": "error" },
                "timestamp": timestamp,
                "error": { "$ref": "#/components/schemas/ErrorBody" },
            },
        }),
    );
    schemas.insert(
        "ErrorBody".into(),
        json!({
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": { "type": "integer", "description": "The HTTP status" },
                "message": { "type": "string" },
                "details": {
                    "type": "string",
                    "description": "Human-readable detail (Neolens' error object)",
                },
                "field": { "type": "string", "description": "400: the parameter or body field at fault" },
                "problem": { "type": "string", "description": "400: what is wrong with it" },
                "required_scope": { "type": "string", "description": "403: the scope the route needs" },
            },
            "additionalProperties": {
                "description": "Other facts: 429 `retry_after_secs`, 413 `max_body_bytes`, 404 for a \
                    missing result `study_status` and `job`",
            },
        }),
    );
    let error = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/ErrorEnvelope" },
            } },
        })
    };
    let mut unauthorized =
        error("`Token missing`, `Token expired`, `Invalid token` or `API key revoked`");
    unauthorized["headers"] = json!({ "WWW-Authenticate": {
        "description": "`Bearer`, with the error",
        "schema": { "type": "string" },
    } });
    let mut too_many = error("`Rate limit exceeded` for this credential");
    too_many["headers"] = json!({ "Retry-After": {
        "description": "Seconds until a request is allowed again",
        "schema": { "type": "integer" },
    } });
    json!({
        "schemas": schemas,
        "responses": {
            "BadRequest": error("A parameter or the body is invalid; `field` names it"),
            "Unauthorized": unauthorized,
            "Forbidden": error("`Missing scope: <scope>`; `required_scope` names it"),
            "NotFound": error("No such study, job or result"),
            "TooManyRequests": too_many,
            "Error": error("Any other error: 413 (body too large), 500, 503 (time-out)"),
        },
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "`Authorization: Bearer <token>`: a JWT whose `scope` claim \
                    holds the scopes, or an API key",
            },
            "apiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "x-api-key",
                "description": "An API key made with `radstream keys create`",
            },
            "accessToken": {
                "type": "apiKey",
                "in": "query",
                "name": ACCESS_TOKEN_PARAM,
                "description": "A JWT or API key in the query, for EventSource clients; \
                    taken out of the URI before anything logs it",
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;
    use crate::startup::http::{handler_docs, routes};

    fn op<'a>(doc: &'a Value, spec: &RouteSpec) -> &'a Value {
        &doc["paths"][openapi_path(spec.path)][spec.method.as_str().to_lowercase()]
    }

    #[test]
    fn every_route_is_an_operation_with_its_method_and_security() {
        let doc = build(&routes(), handler_docs());
        let mut operations = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            operations += item.as_object().unwrap().len();
        }
        assert_eq!(operations, routes().len(), "one operation per route");
        for spec in routes() {
            let what = format!("{} {}", spec.method, spec.path);
            let op = op(&doc, &spec);
            assert!(op.is_object(), "{what} is missing");
            assert_eq!(op["summary"], spec.summary, "{what}");
            assert_eq!(op["tags"], json!([tag(spec.path)]), "{what}");
            for name in path_param_names(spec.path) {
                let p = op["parameters"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["name"] == name && p["in"] == "path"));
                assert!(p.is_some_and(|p| p["required"] == true), "{what}: {name}");
            }
            match spec.access {
                Access::Public => {
                    assert_eq!(op["security"], json!([]), "{what}");
                    assert!(op["responses"].get("401").is_none(), "{what}");
                }
                Access::Scope(scope) => {
                    let s = scope.as_str();
                    assert_eq!(
                        op["security"],
                        json!([{ "bearerAuth": [s] }, { "apiKey": [s] }, { "accessToken": [s] }]),
                        "{what}"
                    );
                    assert_eq!(op["x-required-scope"], s, "{what}");
                    let radanalyzer = spec.dialect == Some(radanalyzer::DIALECT);
                    for code in ["401", "403", "429"] {
                        let documented = op["responses"].get(code).is_some();
                        // RadAnalyzer refuses every bad credential with its 403.
                        let expected = code != "401" || !radanalyzer;
                        assert_eq!(documented, expected, "{what}: {code}");
                    }
                }
            }
        }
    }

    #[test]
    fn docs_and_openapi_need_results_read() {
        let routes = routes();
        for path in ["/openapi.json", "/docs"] {
            let spec = routes.iter().find(|r| r.path == path).expect(path);
            assert_eq!(spec.method, Method::GET);
            assert_eq!(
                spec.access,
                Access::Scope(crate::auth::Scope::ResultsRead),
                "{path}"
            );
        }
    }

    #[test]
    fn every_route_has_an_annotated_handler_and_every_handler_a_route() {
        let routes = routes();
        let handlers = serde_json::to_value(handler_docs()).unwrap();
        let annotated = |spec: &RouteSpec| {
            handlers["paths"][openapi_path(spec.path)][spec.method.as_str().to_lowercase()]
                .is_object()
        };
        for spec in &routes {
            assert!(
                annotated(spec),
                "{} {}: give its handler a #[utoipa::path] and list it in its module's Doc",
                spec.method,
                spec.path
            );
        }
        for (path, item) in handlers["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    routes.iter().any(|r| openapi_path(r.path) == *path
                        && r.method.as_str().eq_ignore_ascii_case(method)),
                    "#[utoipa::path] documents {method} {path}, which is no route"
                );
            }
        }
    }

    #[test]
    fn derived_schemas_keep_clear_of_the_shared_ones() {
        let handlers = serde_json::to_value(handler_docs()).unwrap();
        let shared = components();
        for name in handlers["components"]["schemas"]
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(
                shared["schemas"].get(name).is_none(),
                "a handler's type is named {name}, like a shared schema: rename it"
            );
        }
    }

    #[test]
    fn placeholder_media_types_are_resolved() {
        let text = build(&routes(), handler_docs()).to_string();
        assert!(!text.contains(ENVELOPE) && !text.contains(EVENT_STREAM));
    }

    #[test]
    fn answers_follow_the_handlers() {
        let doc = build(&routes(), handler_docs());
        let op = |m: &str, p: &str| doc["paths"][p][m].clone();
        let reprocess = op("post", "/v1/studies/{study_uid}/reprocess");
        assert!(reprocess["responses"].get("202").is_some());
        assert!(reprocess["responses"].get("200").is_none());
        assert!(reprocess["requestBody"].is_object());
        for p in ["/v1/events", "/v1/studies/{study_uid}/events"] {
            let content = &op("get", p)["responses"]["200"]["content"];
            assert!(content.get("text/event-stream").is_some(), "{p}");
        }
        let search = op("get", "/v1/studies");
        let content = &search["responses"]["200"]["content"];
        for ct in ["application/json", "text/csv", "application/xml"] {
            assert!(content.get(ct).is_some(), "{ct}");
        }
        let names: Vec<&str> = search["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"patient_name") && names.contains(&"format"));
        assert!(
            !names.contains(&ACCESS_TOKEN_PARAM),
            "a security scheme, not a parameter"
        );
        let events = op("get", "/v1/events");
        assert!(events["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "type" && p["in"] == "query"));
        let study_events = op("get", "/v1/studies/{study_uid}/events");
        let study_uids = study_events["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "study_uid")
            .count();
        assert_eq!(study_uids, 1, "the path parameter only");
    }

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_and_operation_ids_are_unique() {
        let doc = build(&routes(), handler_docs());
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20);
        for r in found {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap().to_string();
                assert!(ids.insert(id.clone()), "duplicate {id}");
            }
        }
    }

    #[test]
    fn tags_skip_the_version_and_extensions() {
        assert_eq!(tag("/v1/studies/{study_uid}/results"), "studies");
        assert_eq!(tag("/v1/events/history"), "events");
        assert_eq!(tag("/ping"), "ping");
        assert_eq!(tag("/openapi.json"), "openapi");
        assert_eq!(tag("/"), "root");
        assert_eq!(openapi_path("/files/{*rest}"), "/files/{rest}");
        assert_eq!(path_param_names("/a/{x}/b/{*rest}"), vec!["x", "rest"]);
    }
}
