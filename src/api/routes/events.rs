//! Server-sent event streams (`/v1/events`, `/v1/studies/{uid}/events`) and the event
//! history (`/v1/events/history`).
//!
//! Every SSE event carries `id:` (the event id), `event:` (its type) and a JSON `data:` line.
//! A client resumes with the `Last-Event-ID` header or the `last_event_id` query parameter
//! (EventSource cannot set headers): events after that id are replayed from the table, then
//! the stream goes live with no gap and no duplicate.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::auth::Audit;
use crate::api::error::{query_rejection, valid_uid};
use crate::api::response::{ENVELOPE, EVENT_STREAM};
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::Scope;
use crate::domain::Urgency;
use crate::events::log::EventView;
use crate::events::{fetch_after, Event, EventFilter, EventType, Subscription};

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let read = Access::Scope(Scope::ResultsRead);
    vec![
        (
            spec(
                Method::GET,
                "/v1/events",
                read,
                "Live event stream (SSE), resumable",
            ),
            get(stream_all),
        ),
        (
            spec(
                Method::GET,
                "/v1/events/history",
                read,
                "Stored events, oldest first",
            ),
            get(history),
        ),
        (
            spec(
                Method::GET,
                "/v1/studies/{study_uid}/events",
                read,
                "One study's event stream (SSE), ending after its result",
            ),
            get(stream_study),
        ),
    ]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(stream_all, stream_study, history))]
pub struct Doc;

/// Filters shared by the streams and the history.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Comma-separated event types.
    #[serde(rename = "type")]
    pub types: Option<String>,
    /// Events of this study only.
    pub study_uid: Option<String>,
    /// Events of this patient only.
    pub patient_id: Option<String>,
    /// Only events carrying at least this urgency (`low`, `standard`, `urgent`, `critical`).
    pub min_urgency: Option<String>,
    /// Streams only: resume after this event id (for EventSource, which cannot send the
    /// `Last-Event-ID` header; the header wins).
    pub last_event_id: Option<String>,
    /// History only: events after this id.
    pub after: Option<String>,
    /// History only: at most this many events, 1..=1000 (default 100).
    pub limit: Option<i64>,
    /// Accepted for EventSource clients; checked by the authentication layer.
    #[param(ignore)]
    pub access_token: Option<String>,
    #[param(ignore)]
    pub format: Option<String>,
}

/// `GET /v1/events/history`.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub items: Vec<EventView>,
    /// Pass as `after` for the next page; null when empty.
    pub next_after: Option<i64>,
    /// Newest event id published on this node.
    pub newest_id: i64,
}

impl EventQuery {
    fn filter(&self) -> Result<EventFilter, ApiError> {
        let types = match &self.types {
            None => None,
            Some(list) => {
                let mut set = HashSet::new();
                for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if EventType::parse(t).is_none() {
                        let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                        return Err(ApiError::invalid(
                            "type",
                            format!("'{t}' is not an event type (known: {})", known.join(", ")),
                        ));
                    }
                    set.insert(t.to_string());
                }
                Some(set)
            }
        };
        let min_urgency = match &self.min_urgency {
            None => None,
            Some(u) => Some(Urgency::parse(u).ok_or_else(|| {
                ApiError::invalid(
                    "min_urgency",
                    format!("'{u}' is not one of low, standard, urgent, critical"),
                )
            })?),
        };
        if let Some(s) = &self.study_uid {
            valid_uid("study_uid", s)?;
        }
        Ok(EventFilter {
            types,
            study_uid: self.study_uid.clone(),
            patient_id: self.patient_id.clone(),
            min_urgency,
        })
    }
}

fn parse_id(field: &str, raw: &str) -> Result<i64, ApiError> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| ApiError::invalid(field, format!("'{raw}' is not a non-negative integer")))
}

/// The resume point: the `Last-Event-ID` header wins over the query parameter.
fn resume_point(headers: &HeaderMap, q: &EventQuery) -> Result<Option<i64>, ApiError> {
    if let Some(h) = headers.get("last-event-id") {
        let raw = h.to_str().unwrap_or("");
        if !raw.trim().is_empty() {
            return parse_id("Last-Event-ID", raw).map(Some);
        }
    }
    match &q.last_event_id {
        Some(raw) if !raw.trim().is_empty() => parse_id("last_event_id", raw).map(Some),
        _ => Ok(None),
    }
}

/// The request header of a resume.
const LAST_EVENT_ID: &str = "Resume after this event id: events after it are replayed, then the \
    stream goes live. Wins over `last_event_id`.";

fn to_sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.to_string())
        .event(e.kind.clone())
        .data(e.json_text())
}

/// When a study stream is finished: its result (or final failure) for the version current
/// when the client connected.
fn ends_study_stream(e: &Event, version: i64) -> bool {
    (e.kind == EventType::InferenceCompleted.as_str()
        || e.kind == EventType::InferenceFailed.as_str())
        && e.data
            .get("study_version")
            .and_then(|v| v.as_i64())
            .is_some_and(|v| v >= version)
}

fn sse_response(state: &AppState, mut sub: Subscription, end_at_version: Option<i64>) -> Response {
    let settings = state.bus.settings().clone();
    let guard = state.metrics.sse_subscriber_opened();
    let stream = async_stream::stream! {
        let _guard = guard;
        yield Ok::<_, Infallible>(SseEvent::default().retry(Duration::from_millis(settings.retry_ms)));
        loop {
            match sub.next().await {
                Ok(Some(e)) => {
                    yield Ok(to_sse(&e));
                    if end_at_version.is_some_and(|v| ends_study_stream(&e, v)) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, cursor = sub.cursor(), "event replay failed; closing the stream");
                    yield Ok(SseEvent::default().event("error").data(
                        json!({"message": "event replay failed; reconnect with Last-Event-ID", "last_event_id": sub.cursor()}).to_string(),
                    ));
                    break;
                }
            }
        }
    };
    let sse = Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(settings.heartbeat_secs))
            .text("keep-alive"),
    );
    with_newest_id(state, sse.into_response())
}

/// Tells the client the newest event id, so it can see how far behind it starts.
fn with_newest_id(state: &AppState, mut resp: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&state.bus.published_id().to_string()) {
        resp.headers_mut().insert("last-event-id", v);
    }
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

#[utoipa::path(get, path = "/v1/events",
    params(EventQuery, ("Last-Event-ID" = Option<String>, Header, description = LAST_EVENT_ID)),
    responses((status = 200, description = "Live events matching the filters", body = EventView,
        content_type = EVENT_STREAM, headers(("Last-Event-ID" = String, description = "Newest event id published when the stream opened")))),
)]
async fn stream_all(
    State(state): State<AppState>,
    audit: Audit,
    headers: HeaderMap,
    q: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    let filter = q.filter()?;
    let after = resume_point(&headers, &q)?;
    audit
        .record(
            &state.db,
            "events.subscribe",
            q.patient_id.as_deref(),
            q.study_uid.as_deref(),
            StatusCode::OK,
        )
        .await?;
    let sub = Subscription::new(&state.bus, after, filter);
    Ok(sse_response(&state, sub, None))
}

#[utoipa::path(get, path = "/v1/studies/{study_uid}/events",
    params(EventQuery, ("Last-Event-ID" = Option<String>, Header, description = LAST_EVENT_ID)),
    responses((status = 200,
        description = "The study's events from the start (or the resume point); the stream ends \
            after the result (or final failure) of the study version current when it opened",
        body = EventView, content_type = EVENT_STREAM,
        headers(("Last-Event-ID" = String, description = "Newest event id published when the stream opened")))),
)]
async fn stream_study(
    State(state): State<AppState>,
    audit: Audit,
    Path(study_uid): Path<String>,
    headers: HeaderMap,
    q: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    valid_uid("study_uid", &study_uid)?;
    let study = crate::store::index::find_study(&state.db.pool, &study_uid).await?;
    let Some(crate::store::index::StudyRow {
        version,
        patient_id,
        ..
    }) = study
    else {
        return Err(ApiError::not_found(format!("Study {study_uid} not found")));
    };
    audit
        .record(
            &state.db,
            "events.subscribe",
            patient_id.as_deref(),
            Some(&study_uid),
            StatusCode::OK,
        )
        .await?;
    let mut filter = q.filter()?;
    filter.study_uid = Some(study_uid);
    let after = resume_point(&headers, &q)?.unwrap_or(0);
    let sub = Subscription::new(&state.bus, Some(after), filter);
    Ok(sse_response(&state, sub, Some(version)))
}

#[utoipa::path(get, path = "/v1/events/history", params(EventQuery), responses(
    (status = 200, description = "Stored events after `after`", body = EventPage, content_type = ENVELOPE),
))]
async fn history(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    q: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Reply, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    let filter = q.filter()?;
    let after = match &q.after {
        Some(raw) => parse_id("after", raw)?,
        None => 0,
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let mut items = Vec::new();
    let mut cursor = after;
    // Filters other than the study are applied here; page through until the limit is met.
    loop {
        let batch = fetch_after(&state.db, cursor, filter.study_uid.as_deref(), 500).await?;
        let n = batch.len();
        for e in batch {
            cursor = e.id;
            if filter.matches(&e) {
                items.push(e.view());
                if items.len() as i64 >= limit {
                    break;
                }
            }
        }
        if n < 500 || items.len() as i64 >= limit {
            break;
        }
    }
    audit
        .record(
            &state.db,
            "events.history",
            q.patient_id.as_deref(),
            q.study_uid.as_deref(),
            StatusCode::OK,
        )
        .await?;
    let next_after = items.last().map(|e| e.id);
    Ok(ctx.reply(EventPage {
        items,
        next_after,
        newest_id: state.bus.published_id(),
    }))
}
