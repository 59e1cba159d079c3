//! The OpenAPI 3.1 document of the HTTP API, generated from the node's route list
//! ([`crate::startup::http::routes`]) so that it cannot drift from the router.
//!
//! - Every [`RouteSpec`] becomes one operation: its method, path and summary, path parameters
//!   from its `{…}` segments, `security` from its [`Access`] (public routes get `[]`), and one
//!   tag, the first path segment after the API version (`/v1/studies/…` → `studies`,
//!   `/openapi.json` → `openapi`).
//! - [`details`] adds what the table does not say, keyed by method and path: the query
//!   parameters (the handlers' own query structs, through `utoipa::IntoParams`), the request
//!   body and the success answer. Its schemas are derived with `utoipa::ToSchema` from the
//!   types the handlers serialise ([`StudyResult`], [`Job`], [`ModelInfo`], …) or, for
//!   answers built with `json!`, from the mirrors in [`views`].
//! - Components: the success and error envelopes, the shared error answers (400, 401, 403,
//!   404, 429) and the three ways of presenting a credential.
//!
//! The tests below fail when a route is missing from the document or from [`details`], when
//! a detail outlives its route, or when a `$ref` dangles.

pub mod views;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use axum::http::Method;
use serde_json::{json, Map, Value};
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};

use super::auth::ACCESS_TOKEN_PARAM;
use super::routes::audit::AuditQuery;
use super::routes::events::EventQuery;
use super::routes::exports::ExportQuery;
use super::routes::jobs::{ListQuery, OneQuery};
use super::routes::studies::{ReprocessBody, ResultQuery, SearchQuery};
use super::{Access, RouteSpec};
use crate::export::outbox::ExportRow;
use crate::inference::ModelInfo;
use crate::job::Job;
use crate::result::StudyResult;

/// The OpenAPI version the document follows.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// Names of the security schemes in `components.securitySchemes`.
const SCHEMES: [&str; 3] = ["bearerAuth", "apiKey", "accessToken"];

/// The document for this build's route table, made on first use.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| build(&crate::startup::http::routes()))
}

/// The document for `routes`.
pub fn build(routes: &[RouteSpec]) -> Value {
    let details = details();
    let mut paths = Map::new();
    let mut tags = BTreeSet::new();
    for spec in routes {
        let detail = details
            .iter()
            .find(|d| d.method == spec.method && d.path == spec.path);
        let item = paths
            .entry(openapi_path(spec.path))
            .or_insert_with(|| json!({}));
        item[spec.method.as_str().to_lowercase()] = operation(spec, detail);
        tags.insert(tag(spec.path));
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
        "components": components(),
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

/// A unique id from method and path: `get_v1_studies_study_uid_results`.
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
    id
}

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

/// The query parameters of a handler's query struct. `format` and `access_token` are left
/// out: the first is [`format_param`], the second a security scheme.
fn query<T: IntoParams>() -> Vec<Value> {
    T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .filter(|p| {
            !matches!(
                p["name"].as_str(),
                Some("format") | Some(ACCESS_TOKEN_PARAM)
            )
        })
        .collect()
}

/// A reference to a component schema.
fn schema<T: ToSchema>() -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", T::name()) })
}

fn list<T: ToSchema>() -> Value {
    json!({ "type": "array", "items": schema::<T>() })
}

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// What an operation answers on success.
enum Success {
    /// The success envelope with this `data` schema, also as CSV and XML.
    Envelope {
        status: &'static str,
        description: &'static str,
        data: Value,
    },
    /// `text/event-stream`.
    EventStream { description: &'static str },
    /// A bare JSON body (no envelope).
    Json {
        status: &'static str,
        description: &'static str,
        schema: Value,
    },
    /// A body of another media type.
    Other {
        content_type: &'static str,
        description: &'static str,
    },
}

impl Success {
    fn response(&self) -> (&'static str, Value) {
        match self {
            Success::Envelope {
                status,
                description,
                data,
            } => (
                status,
                json!({
                    "description": description,
                    "content": {
                        "application/json": { "schema": { "allOf": [
                            { "$ref": "#/components/schemas/SuccessEnvelope" },
                            { "type": "object", "properties": { "data": data } },
                        ] } },
                        "text/csv": { "schema": { "type": "string" } },
                        "application/xml": { "schema": { "type": "string" } },
                    },
                }),
            ),
            Success::EventStream { description } => (
                "200",
                json!({
                    "description": format!(
                        "{description}. Server-sent events: each has `id:` (the event id), \
                         `event:` (its type) and a `data:` line holding an `Event` as JSON; \
                         lines starting with `:` are keep-alives."
                    ),
                    "headers": {
                        "Last-Event-ID": {
                            "description": "Newest event id published when the stream opened",
                            "schema": { "type": "string" },
                        },
                    },
                    "content": { "text/event-stream": {
                        "schema": { "type": "string" },
                        "x-data-schema": schema::<views::Event>(),
                    } },
                }),
            ),
            Success::Json {
                status,
                description,
                schema,
            } => (
                status,
                json!({
                    "description": description,
                    "content": { "application/json": { "schema": schema } },
                }),
            ),
            Success::Other {
                content_type,
                description,
            } => (
                "200",
                json!({
                    "description": description,
                    "content": { *content_type: { "schema": { "type": "string" } } },
                }),
            ),
        }
    }
}

/// What the route table leaves out about one operation.
struct Detail {
    method: Method,
    path: &'static str,
    query: Vec<Value>,
    headers: Vec<Value>,
    body: Option<Value>,
    /// Content type of `body` (`application/json` unless a form upload).
    body_type: &'static str,
    ok: Option<Success>,
    /// Answers besides the success and the shared errors.
    more: Vec<(&'static str, Value)>,
}

impl Detail {
    fn new(method: Method, path: &'static str) -> Detail {
        Detail {
            method,
            path,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            body_type: "application/json",
            ok: None,
            more: Vec::new(),
        }
    }

    fn get(path: &'static str) -> Detail {
        Detail::new(Method::GET, path)
    }

    fn post(path: &'static str) -> Detail {
        Detail::new(Method::POST, path)
    }

    fn delete(path: &'static str) -> Detail {
        Detail::new(Method::DELETE, path)
    }

    fn query<T: IntoParams>(mut self) -> Detail {
        self.query.extend(query::<T>());
        self
    }

    fn header(mut self, name: &str, description: &str) -> Detail {
        self.headers.push(json!({
            "name": name,
            "in": "header",
            "required": false,
            "description": description,
            "schema": { "type": "string" },
        }));
        self
    }

    fn body(mut self, schema: Value) -> Detail {
        self.body = Some(schema);
        self
    }

    /// A `multipart/form-data` upload of one file field.
    fn form_file(mut self, field: &str, description: &str) -> Detail {
        self.body = Some(json!({
            "type": "object",
            "required": [field],
            "properties": { field: { "type": "string", "format": "binary", "description": description } },
        }));
        self.body_type = "multipart/form-data";
        self
    }

    fn envelope(mut self, description: &'static str, data: Value) -> Detail {
        self.ok = Some(Success::Envelope {
            status: "200",
            description,
            data,
        });
        self
    }

    fn accepted(mut self, description: &'static str, data: Value) -> Detail {
        self.ok = Some(Success::Envelope {
            status: "202",
            description,
            data,
        });
        self
    }

    fn events(mut self, description: &'static str) -> Detail {
        self.ok = Some(Success::EventStream { description });
        self
    }

    fn json(mut self, description: &'static str, schema: Value) -> Detail {
        self.ok = Some(Success::Json {
            status: "200",
            description,
            schema,
        });
        self
    }

    /// A bare JSON 202 (an adapter's queued job).
    fn json_accepted(mut self, description: &'static str, schema: Value) -> Detail {
        self.ok = Some(Success::Json {
            status: "202",
            description,
            schema,
        });
        self
    }

    fn other(mut self, content_type: &'static str, description: &'static str) -> Detail {
        self.ok = Some(Success::Other {
            content_type,
            description,
        });
        self
    }

    fn also(mut self, status: &'static str, response: Value) -> Detail {
        self.more.push((status, response));
        self
    }
}

/// Pi's answers: an object (job, or `{error: {code, message}}`).
fn pi_object() -> Value {
    json!({ "type": "object" })
}

/// VoxRay's v1 prediction body.
fn voxray_v1() -> Value {
    json!({
        "type": "object",
        "required": ["diagnosis", "confidence"],
        "additionalProperties": false,
        "properties": {
            "diagnosis": { "type": "string", "description": "e.g. 06_PNEUMONIA, 00_NORMAL_LUNG (README table)" },
            "confidence": { "type": "number" },
        },
    })
}

fn voxray_object() -> Value {
    json!({ "type": "object" })
}

/// RadAnalyzer's prediction request (single `image` or batch `images`).
fn radanalyzer_request() -> Value {
    json!({
        "type": "object",
        "properties": {
            "image": { "type": "string", "description": "Base64 JPEG or PNG, at most 10 MiB decoded" },
            "images": {
                "type": "array", "maxItems": 10,
                "items": { "type": "string" },
                "description": "Batch: base64 JPEG or PNG images, instead of image",
            },
            "uuid": { "type": "string", "description": "Patient identifier: history and 24 h recheck grace" },
            "render": { "type": "boolean", "description": "Return rendered_image (default false)" },
        },
    })
}

/// A picture-of-picture request: `image`, plus `corners` (rectify) or `session_id` and
/// `uuid` (a capture session's frame).
fn capture_request(corners: bool, session: bool) -> Value {
    let mut props = json!({
        "image": { "type": "string", "description": "Base64 JPEG or PNG photo, at most 10 MiB decoded" },
    });
    let mut required = vec!["image"];
    if corners {
        props["corners"] = json!({
            "type": "array", "minItems": 4, "maxItems": 4,
            "items": { "type": "array", "minItems": 2, "maxItems": 2, "items": { "type": "number" } },
            "description": "Four [x, y] pixel positions inside the image (any order; TL,TR,BR,BL used)",
        });
        required.push("corners");
    }
    if session {
        props["session_id"] =
            json!({ "type": "string", "description": "From /v3/pop-session/start" });
        props["uuid"] = json!({ "type": "string", "description": "Patient identifier" });
        required.push("session_id");
    }
    json!({ "type": "object", "required": required, "properties": props })
}

/// RadAnalyzer's refusals: `{"error": "…"}` (plus `field` when one is at fault).
fn radanalyzer_error(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": {
            "type": "object",
            "required": ["error"],
            "properties": { "error": { "type": "string" }, "field": { "type": "string" } },
        } } },
    })
}

fn radanalyzer_object() -> Value {
    json!({ "type": "object" })
}

/// LeapAI's `{"Result","Data","Message"}` envelope.
fn leapai_envelope() -> Value {
    json!({
        "type": "object",
        "required": ["Result", "Data", "Message"],
        "properties": {
            "Result": { "type": "string", "enum": ["Success", "Warning", "Failure"] },
            "Data": {},
            "Message": { "type": "string" },
        },
    })
}

/// Query parameters, bodies and answers, by method and path. A new route needs an entry
/// here (the tests say so); its method, path, summary and access come from the table.
fn details() -> Vec<Detail> {
    let last_event_id = "Resume after this event id: events after it are replayed, then the \
        stream goes live. Wins over `last_event_id`.";
    let mut v = vec![
        Detail::get("/ping").json("The node is up", schema::<views::Ping>()),
        Detail::get("/health")
            .json("Healthy", schema::<views::Health>())
            .also(
                "503",
                json!({
                    "description": "Unhealthy (database down, storage low or no model loaded): the same body, with `errors`",
                    "content": { "application/json": { "schema": schema::<views::Health>() } },
                }),
            ),
        Detail::get("/metrics").other(
            crate::metrics::CONTENT_TYPE,
            "Prometheus metrics in the OpenMetrics text format",
        ),
        Detail::get("/v1/studies")
            .query::<SearchQuery>()
            .envelope("Matching studies, one page", schema::<views::StudyPage>()),
        Detail::get("/v1/studies/{study_uid}").envelope(
            "The study; CSV has one row per series",
            schema::<views::StudyDetail>(),
        ),
        Detail::get("/v1/studies/{study_uid}/results")
            .query::<ResultQuery>()
            .envelope(
                "The current result (or the version asked for); CSV has one row per image \
                 and finding. 404 while there is none, with the study status and its job in \
                 `details`",
                schema::<StudyResult>(),
            ),
        Detail::get("/v1/studies/{study_uid}/results/{version}").envelope(
            "The result version; CSV has one row per image and finding",
            schema::<StudyResult>(),
        ),
        Detail::post("/v1/studies/{study_uid}/reprocess")
            .body(schema::<ReprocessBody>())
            .accepted("The queued reprocess job", schema::<Job>()),
        Detail::delete("/v1/studies/{study_uid}/instances")
            .envelope(
                "What was removed. 409 (with the reason in `details`) while the study is \
                 being received, a job on it is queued or running, or its SR/overlay is still \
                 to be generated",
                schema::<crate::retention::Purged>(),
            ),
        Detail::get("/v1/events")
            .query::<EventQuery>()
            .header("Last-Event-ID", last_event_id)
            .events("Live events matching the filters"),
        Detail::get("/v1/events/history")
            .query::<EventQuery>()
            .envelope("Stored events after `after`", schema::<views::EventPage>()),
        Detail::get("/v1/studies/{study_uid}/events")
            .query::<EventQuery>()
            .header("Last-Event-ID", last_event_id)
            .events(
                "The study's events from the start (or the resume point); the stream ends \
                 after the result (or final failure) of the study version current when it \
                 opened",
            ),
        Detail::get("/v1/jobs")
            .query::<ListQuery>()
            .envelope("Jobs, newest first", schema::<views::JobPage>()),
        Detail::get("/v1/jobs/{job_id}")
            .query::<OneQuery>()
            .envelope(
                "The job (finished, or as it is when `wait` ran out)",
                schema::<Job>(),
            ),
        Detail::get("/v1/models").envelope("Installed models", list::<ModelInfo>()),
        Detail::post("/single_inference")
            .body(json!({
                "type": "object",
                "required": ["input_image_path", "save_to_disk"],
                "properties": {
                    "input_image_path": { "type": "string", "description": "Server path of a .dcm file under compat.input_roots" },
                    "patient_id": { "type": "string" },
                    "save_to_disk": { "type": "boolean" },
                    "output_folder_path": { "type": "string", "description": "Required when save_to_disk; under compat.output_roots" },
                },
            }))
            .json(
                "LeapAI envelope {Result, Data: {findings, metadata}, Message}; errors use the \
                 same envelope with Result \"Failure\" and LeapAI's messages",
                leapai_envelope(),
            ),
        Detail::post("/api/v1/health/analyze")
            .body(json!({
                "type": "object",
                "required": ["input"],
                "properties": {
                    "input": {
                        "type": "object",
                        "required": ["type", "modality"],
                        "properties": {
                            "type": { "type": "string", "enum": ["image", "eeg"], "description": "eeg is refused: no EEG model" },
                            "modality": { "type": "string", "description": "xray (chest X-ray)" },
                            "image_base64": { "type": "string" },
                            "url": { "type": "string", "description": "Only host:port pairs in compat.pi_url_hosts; fetched by the job after the 202" },
                        },
                    },
                    "context": { "type": "object", "description": "At most 16,000 characters serialised; `locale` is read" },
                    "options": { "type": "object", "properties": { "locale": { "type": "string" } } },
                },
            }))
            .json_accepted("Queued: {job_id, status, poll_url, created_at}", pi_object()),
        Detail::get("/api/v1/jobs/{job_id}/overlay").other(
            "image/png",
            "The uploaded image with the triage level, findings and disclaimer burnt in",
        ),
        Detail::get("/api/v1/jobs/{job_id}")
            .query::<crate::compat::pi::JobQuery>()
            .json(
                "Pi job: {data: {id, type, status, payload: {input, output}, error, diagnostics?}}; \
                 errors {error: {code, message}}",
                pi_object(),
            ),
        Detail::post("/bulk_inference")
            .body(json!({
                "type": "object",
                "required": ["input_folder_path", "output_folder_path"],
                "properties": {
                    "input_folder_path": { "type": "string" },
                    "output_folder_path": { "type": "string" },
                },
            }))
            .json(
                "LeapAI envelope with Data null; progress as bulk.progress events",
                leapai_envelope(),
            ),
        Detail::post("/predict/image")
            .form_file("image_file", "PNG or JPEG chest X-ray, at most 10 MiB")
            .json("VoxRay v1: exactly {diagnosis, confidence}", voxray_v1()),
        Detail::post("/v1/predict/image")
            .form_file("image_file", "PNG or JPEG chest X-ray, at most 10 MiB")
            .json("VoxRay v1: exactly {diagnosis, confidence}", voxray_v1()),
        Detail::post("/v2/predict/image")
            .form_file("image_file", "PNG or JPEG chest X-ray, at most 10 MiB")
            .json(
                "VoxRay v2: {diagnosis, confidence, uncertainty, ensemble, meta}; blocks whose \
                 flag is off are left out (both off: the v1 body)",
                voxray_object(),
            ),
        Detail::post("/v2/predict/dicom")
            .form_file("dicom_file", "DICOM Part 10 file (CR/DX chest)")
            .json(
                "VoxRay v2: {diagnosis, confidence, dicom_metadata: {patient_id_hash, \
                 study_instance_uid, study_date, modality}, image_extracted, \
                 anonymization_applied}; 503 FEATURE_DISABLED when dicom_support is off",
                voxray_object(),
            ),
        Detail::get("/v2/fhir/diagnostic-report/{patient_id}").other(
            crate::fhir::CONTENT_TYPE,
            "FHIR R4 DiagnosticReport of the patient's latest result ({patient_id}: DICOM \
             Patient ID, patient_id_hash or pt-<n>); 404/503 in VoxRay's error body",
        ),
        Detail::get("/api/feature-flags").json(
            "VoxRay: {flags: {…twelve booleans}, environment}",
            voxray_object(),
        ),
        Detail::get("/v3/health")
            .header("x-api-key", "RadAnalyzer API key (rsk_…); missing or unknown: 403")
            .json(
                "RadAnalyzer: {status, models_loaded, pop_models_loaded, pop_pipeline_enabled, \
                 model_version}",
                radanalyzer_object(),
            )
            .also("403", radanalyzer_error("Invalid API key")),
        Detail::post("/v3/predict")
            .header("x-api-key", "RadAnalyzer API key (rsk_…); missing or unknown: 403")
            .body(radanalyzer_request())
            .json(
                "RadAnalyzer: single image {vhs (= CTR), vlas (null), prediction, result_code, \
                 result_description, model_confidence, spread, pop_detected, model_version, \
                 measurement, rendered_image?, historic_vhs, historic_vlas, billing}; a batch \
                 adds best/median/std, per_photo and the n_photos_* counts",
                radanalyzer_object(),
            )
            .also("403", radanalyzer_error("Invalid API key"))
            .also("413", radanalyzer_error("Image exceeds maximum size of 10MB"))
            .also("503", radanalyzer_error("Landmark model not loaded")),
        Detail::post("/v3/predict/stream")
            .header("x-api-key", "RadAnalyzer API key (rsk_…); missing or unknown: 403")
            .body(radanalyzer_request())
            .other(
                "text/event-stream",
                "Server-sent events processing_started, photo (one per image), error (an \
                 image that could not be used), summary (with billing)",
            )
            .also("403", radanalyzer_error("Invalid API key"))
            .also("413", radanalyzer_error("Image exceeds maximum size of 10MB")),
        Detail::post("/v3/corners")
            .header("x-api-key", "RadAnalyzer API key (rsk_…); missing or unknown: 403")
            .body(capture_request(false, false))
            .json(
                "RadAnalyzer: {corners: [[x, y] ×4 in pixels, TL,TR,BR,BL], order, image_width, \
                 image_height, model_version}",
                radanalyzer_object(),
            )
            .also("403", radanalyzer_error("Invalid API key"))
            .also("413", radanalyzer_error("Image exceeds maximum size of 10MB"))
            .also("422", radanalyzer_error("Corner detection failed")),
        Detail::post("/v3/rectify")
            .header("x-api-key", "RadAnalyzer API key (rsk_…); missing or unknown: 403")
            .body(capture_request(true, false))
            .json(
                "RadAnalyzer: {rectified_image (base64 JPEG), width, height, model_version}",
                radanalyzer_object(),
            )
            .also("403", radanalyzer_error("Invalid API key"))
            .also("413", radanalyzer_error("Image exceeds maximum size of 10MB")),
        Detail::post("/v3/preprocess")
            .header("x-api-key", "RadAnalyzer API key (rsk_…); missing or unknown: 403")
            .body(capture_request(false, false))
            .json(
                "RadAnalyzer: {rectified_image, corners, order, width, height, model_version}",
                radanalyzer_object(),
            )
            .also("403", radanalyzer_error("Invalid API key"))
            .also("413", radanalyzer_error("Image exceeds maximum size of 10MB"))
            .also("422", radanalyzer_error("Corner detection failed")),
        Detail::post("/v3/pop-session/start")
            .header("x-api-key", "RadAnalyzer API key (rsk_…); missing or unknown: 403")
            .body(json!({ "type": "object", "description": "Empty: {}" }))
            .json(
                "RadAnalyzer: {session_id, session_status: ready, pop_pipeline_enabled, \
                 models_loaded, pop_models_loaded, model_version, session_config}",
                radanalyzer_object(),
            )
            .also("403", radanalyzer_error("Invalid API key"))
            .also("429", radanalyzer_error("Too many open PoP sessions"))
            .also("503", radanalyzer_error("PoP pipeline not available")),
        Detail::post("/v3/pop-session")
            .header("x-api-key", "RadAnalyzer API key (rsk_…); missing or unknown: 403")
            .body(capture_request(false, true))
            .json(
                "RadAnalyzer: session_status continue {reason, frame_index, frames_processed, \
                 good_frames, result_code, frame_result, feedback, quality}, complete \
                 {rectified_image, prediction, billing} or failed {error, billing}",
                radanalyzer_object(),
            )
            .also("403", radanalyzer_error("Invalid API key"))
            .also("404", radanalyzer_error("Unknown or closed PoP session"))
            .also("413", radanalyzer_error("Image exceeds maximum size of 10MB")),
        Detail::get("/v1/radanalyzer/usage")
            .query::<crate::compat::radanalyzer::usage::UsageQuery>()
            .envelope(
                "RadAnalyzer metering per API key for the month",
                json!({
                    "type": "object",
                    "properties": {
                        "month": { "type": "string" },
                        "items": list::<crate::compat::radanalyzer::usage::KeyUsage>(),
                    },
                }),
            ),
        Detail::get("/v1/audit")
            .query::<AuditQuery>()
            .envelope("Audit entries, newest first", schema::<views::AuditPage>()),
        Detail::get("/openapi.json").json(
            "This document",
            json!({ "type": "object", "description": "An OpenAPI 3.1 document" }),
        ),
        Detail::get("/v1/exports").query::<ExportQuery>().envelope(
            "Outbox rows, newest first",
            json!({
                "type": "object",
                "properties": {
                    "items": list::<ExportRow>(),
                    "limit": { "type": "integer" },
                    "offset": { "type": "integer" },
                },
            }),
        ),
        Detail::post("/v1/exports/{export_id}/retry")
            .envelope("The row, pending and due now", schema::<ExportRow>()),
        Detail::post("/v1/exports/{export_id}/cancel")
            .envelope("The row, cancelled", schema::<ExportRow>()),
        Detail::get("/docs").other(
            "text/html; charset=utf-8",
            "This document as a self-contained HTML page",
        ),
    ];
    v.extend(fhir_details());
    v.extend(dicomweb_details());
    v
}

/// The FHIR routes: `application/fhir+json` answers, search parameters from the same table
/// the CapabilityStatement lists.
fn fhir_details() -> Vec<Detail> {
    use crate::fhir::search::{self, ResourceType};
    use crate::fhir::CONTENT_TYPE;
    let mut v = vec![
        Detail::get("/fhir/metadata").other(CONTENT_TYPE, "A FHIR R4 CapabilityStatement"),
        Detail::get("/fhir/{resource_type}").other(
            CONTENT_TYPE,
            "Never: any type not listed is answered 404 with an OperationOutcome",
        ),
        Detail::get("/fhir/{resource_type}/{id}").other(
            CONTENT_TYPE,
            "Never: any type not listed is answered 404 with an OperationOutcome",
        ),
    ];
    for rt in ResourceType::ALL {
        let (search_path, read_path) = match rt {
            ResourceType::DiagnosticReport => {
                ("/fhir/DiagnosticReport", "/fhir/DiagnosticReport/{id}")
            }
            ResourceType::Observation => ("/fhir/Observation", "/fhir/Observation/{id}"),
            ResourceType::ImagingStudy => ("/fhir/ImagingStudy", "/fhir/ImagingStudy/{id}"),
            ResourceType::Patient => ("/fhir/Patient", "/fhir/Patient/{id}"),
            ResourceType::Device => ("/fhir/Device", "/fhir/Device/{id}"),
        };
        let mut search_detail = Detail::get(search_path).other(
            CONTENT_TYPE,
            "A Bundle of type searchset with total and self/next/previous links; errors \
             (400 for an unknown parameter or a bad value) are OperationOutcome",
        );
        for p in search::params(rt).iter().chain(search::PAGING.iter()) {
            search_detail.query.push(json!({
                "name": p.name,
                "in": "query",
                "required": false,
                "description": p.documentation,
                "schema": { "type": if p.kind == "number" { "integer" } else { "string" } },
            }));
        }
        v.push(search_detail);
        v.push(Detail::get(read_path).other(
            CONTENT_TYPE,
            "The resource; 404 OperationOutcome when there is none",
        ));
    }
    v
}

/// DICOMweb answers are PS3.18 media types, not the envelope.
fn dicomweb_details() -> Vec<Detail> {
    let dj = crate::dicomweb::DICOM_JSON;
    let dicom = "multipart/related; type=\"application/dicom\"";
    let qido = "Matches as DICOM JSON; 204 when nothing matches. Query: attribute keywords or \
        tags as matching keys, `includefield`, `limit`, `offset`, `fuzzymatching`";
    let stow = "PS3.18 store response: ReferencedSOPSequence, FailedSOPSequence \
        (200 all stored, 202 some failed, 409 all failed; 415 wrong Content-Type)";
    let rendered = "8-bit image (image/jpeg, or image/png per Accept). Query: \
        `window=center,width,linear|sigmoid` (default the stored window, else min/max), \
        `viewport=vw,vh` (fit, aspect kept), `quality=1..100` (JPEG)";
    let thumb = "Like rendered, fitted into 128x128 unless `viewport` says otherwise";
    vec![
        Detail::post("/dicomweb/studies").other(dj, stow),
        Detail::post("/dicomweb/studies/{study}").other(dj, stow),
        Detail::get("/dicomweb/studies").other(dj, qido),
        Detail::get("/dicomweb/series").other(dj, qido),
        Detail::get("/dicomweb/studies/{study}/series").other(dj, qido),
        Detail::get("/dicomweb/instances").other(dj, qido),
        Detail::get("/dicomweb/studies/{study}/instances").other(dj, qido),
        Detail::get("/dicomweb/studies/{study}/series/{series}/instances").other(dj, qido),
        Detail::get("/dicomweb/studies/{study}").other(dicom, "The study's instances as stored"),
        Detail::get("/dicomweb/studies/{study}/series/{series}")
            .other(dicom, "The series' instances as stored"),
        Detail::get("/dicomweb/studies/{study}/series/{series}/instances/{instance}")
            .other(dicom, "The instance as stored"),
        Detail::get("/dicomweb/studies/{study}/metadata")
            .other(dj, "Metadata of each instance, with BulkDataURIs"),
        Detail::get("/dicomweb/studies/{study}/series/{series}/metadata")
            .other(dj, "Metadata of each instance, with BulkDataURIs"),
        Detail::get("/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata")
            .other(dj, "Metadata of the instance, with BulkDataURIs"),
        Detail::get(
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
        )
        .other(
            "multipart/related; type=\"application/octet-stream\"",
            "The value (one part per fragment for encapsulated pixel data)",
        ),
        Detail::get(
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        )
        .other(
            "multipart/related; type=\"application/octet-stream\"",
            "One part per frame (1-based comma list): as stored (application/octet-stream for \
             native, the compressed media type such as image/jp2 or image/dicom-rle for \
             encapsulated), or decoded with Accept application/octet-stream; 406 otherwise",
        ),
        Detail::get(
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
        )
        .other("image/jpeg", rendered),
        Detail::get("/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered")
            .other("image/jpeg", rendered),
        Detail::get("/dicomweb/studies/{study}/series/{series}/instances/{instance}/thumbnail")
            .other("image/jpeg", thumb),
        Detail::get("/dicomweb/studies/{study}/series/{series}/thumbnail").other("image/jpeg", thumb),
        Detail::get("/dicomweb/studies/{study}/thumbnail").other("image/jpeg", thumb),
    ]
}

fn operation(spec: &RouteSpec, detail: Option<&Detail>) -> Value {
    let path_names = path_param_names(spec.path);
    let mut parameters: Vec<Value> = path_names.iter().map(|n| path_param(n)).collect();
    let mut responses = Map::new();
    let mut op = Map::new();
    op.insert("tags".into(), json!([tag(spec.path)]));
    op.insert("summary".into(), json!(spec.summary));
    op.insert("operationId".into(), json!(operation_id(spec)));
    match detail {
        Some(d) => {
            // A query filter the path fixes (`study_uid` of a study's stream) is not offered.
            let shadowed = |p: &&Value| path_names.iter().any(|n| p["name"] == *n);
            parameters.extend(d.query.iter().filter(|p| !shadowed(p)).cloned());
            parameters.extend(d.headers.iter().cloned());
            if matches!(d.ok, Some(Success::Envelope { .. })) {
                parameters.push(format_param());
            }
            if let Some(body) = &d.body {
                let rb = if d.body_type == "application/json" {
                    json!({
                        "description": "JSON; an empty body takes the defaults",
                        "required": false,
                        "content": { "application/json": { "schema": body } },
                    })
                } else {
                    json!({ "required": true, "content": { d.body_type: { "schema": body } } })
                };
                op.insert("requestBody".into(), rb);
            }
            match &d.ok {
                Some(ok) => {
                    let (status, response) = ok.response();
                    responses.insert(status.into(), response);
                }
                None => {
                    responses.insert("200".into(), json!({ "description": "Success" }));
                }
            }
            for (status, response) in &d.more {
                responses.insert((*status).into(), response.clone());
            }
        }
        None => {
            responses.insert("200".into(), json!({ "description": "Success" }));
        }
    }
    if !parameters.is_empty() || detail.is_some_and(|d| d.body.is_some()) {
        responses.insert("400".into(), response_ref("BadRequest"));
    }
    if !path_names.is_empty() {
        responses.insert("404".into(), response_ref("NotFound"));
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
            op.insert(
                "description".into(),
                json!(format!("Requires scope `{scope}`{or_admin}.")),
            );
            responses.insert("401".into(), response_ref("Unauthorized"));
            responses.insert("403".into(), response_ref("Forbidden"));
            responses.insert("429".into(), response_ref("TooManyRequests"));
        }
    }
    if spec.dialect == Some(crate::compat::radanalyzer::DIALECT) {
        // RadAnalyzer answers every authentication failure with its own 403.
        responses.remove("401");
    }
    // An operation's own answers win over the shared ones.
    if let Some(d) = detail {
        for (status, response) in &d.more {
            responses.insert((*status).into(), response.clone());
        }
    }
    responses.insert("default".into(), response_ref("Error"));
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// Adds `T`'s schema and every schema it refers to.
fn add<T: ToSchema>(all: &mut Vec<(String, RefOr<Schema>)>) {
    all.push((T::name().into_owned(), T::schema()));
    T::schemas(all);
}

fn components() -> Value {
    let mut derived = Vec::new();
    add::<StudyResult>(&mut derived);
    add::<Job>(&mut derived);
    add::<ModelInfo>(&mut derived);
    add::<ReprocessBody>(&mut derived);
    add::<views::Ping>(&mut derived);
    add::<views::Health>(&mut derived);
    add::<views::StudyPage>(&mut derived);
    add::<views::StudyDetail>(&mut derived);
    add::<views::JobPage>(&mut derived);
    add::<views::EventPage>(&mut derived);
    add::<views::AuditPage>(&mut derived);
    add::<ExportRow>(&mut derived);
    add::<crate::retention::Purged>(&mut derived);
    add::<crate::compat::radanalyzer::usage::KeyUsage>(&mut derived);
    let mut schemas = Map::new();
    for (name, schema) in derived {
        if let Ok(v) = serde_json::to_value(schema) {
            schemas.insert(name, v);
        }
    }
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
    use super::*;
    use crate::api::routes;
    use crate::events::Event;
    use crate::startup::http::routes;

    fn op<'a>(doc: &'a Value, spec: &RouteSpec) -> &'a Value {
        &doc["paths"][openapi_path(spec.path)][spec.method.as_str().to_lowercase()]
    }

    #[test]
    fn every_route_is_an_operation_with_its_method_and_security() {
        let doc = build(&routes());
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
                    let radanalyzer = spec.dialect == Some(crate::compat::radanalyzer::DIALECT);
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
    fn every_route_has_details_and_every_detail_a_route() {
        let routes = routes();
        let details = details();
        for spec in &routes {
            let d = details
                .iter()
                .find(|d| d.method == spec.method && d.path == spec.path);
            assert!(
                d.is_some_and(|d| d.ok.is_some()),
                "{} {}: add its parameters and answer to openapi::details()",
                spec.method,
                spec.path
            );
        }
        for d in &details {
            assert!(
                routes
                    .iter()
                    .any(|r| r.method == d.method && r.path == d.path),
                "openapi::details() has {} {}, which is no route",
                d.method,
                d.path
            );
        }
    }

    #[test]
    fn answers_follow_the_handlers() {
        let doc = build(&routes());
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
        let doc = build(&routes());
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
    fn event_schema_matches_event_json() {
        let e = Event::new(
            7,
            "study.complete".into(),
            Some("1.2.3".into()),
            None,
            0,
            json!({}),
        );
        let sent: BTreeSet<String> = routes::events::event_json(&e)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let schema =
            serde_json::to_value(<views::Event as utoipa::PartialSchema>::schema()).unwrap();
        let documented: BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(sent, documented);
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
