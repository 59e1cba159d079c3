//! Jobs: list, and one job with long polling (`?wait=30` returns as soon as it finishes).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::routing::{get, MethodRouter};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::api::error::{paging, query_rejection, valid_uid};
use crate::api::response::ENVELOPE;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::Scope;
use crate::job::{self, Job};

/// Longest `wait` accepted, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let read = Access::Scope(Scope::ResultsRead);
    vec![
        (spec(Method::GET, "/v1/jobs", read, "List jobs"), get(list)),
        (
            spec(
                Method::GET,
                "/v1/jobs/{job_id}",
                read,
                "One job; ?wait=N long-polls up to N seconds for it to finish",
            ),
            get(one),
        ),
    ]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list, one))]
pub struct Doc;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `queued`, `running`, `succeeded` or `failed`.
    pub state: Option<String>,
    /// Jobs of this study only.
    pub study_uid: Option<String>,
    /// Jobs per page, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// Jobs to skip (default 0).
    pub offset: Option<i64>,
    #[param(ignore)]
    pub format: Option<String>,
    #[param(ignore)]
    pub access_token: Option<String>,
}

/// `GET /v1/jobs`.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub items: Vec<Job>,
    pub limit: i64,
    pub offset: i64,
    /// Jobs waiting, over the whole queue.
    pub queued: i64,
    /// Jobs being worked on, over the whole queue.
    pub running: i64,
}

#[utoipa::path(get, path = "/v1/jobs", params(ListQuery), responses(
    (status = 200, description = "Jobs, newest first", body = JobPage, content_type = ENVELOPE),
))]
async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Reply, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    if let Some(s) = &q.state {
        if ![job::QUEUED, job::RUNNING, job::SUCCEEDED, job::FAILED].contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "state",
                format!("'{s}' is not one of queued, running, succeeded, failed"),
            ));
        }
    }
    if let Some(u) = &q.study_uid {
        valid_uid("study_uid", u)?;
    }
    let (limit, offset) = paging(q.limit, q.offset)?;
    let jobs = job::list(
        &state.db,
        q.state.as_deref(),
        q.study_uid.as_deref(),
        limit,
        offset,
    )
    .await?;
    let (queued, running) = job::depth(&state.db).await?;
    Ok(ctx.reply(JobPage {
        items: jobs,
        limit,
        offset,
        queued,
        running,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    /// Seconds to wait for the job to finish (0..=60).
    pub wait: Option<u64>,
    #[param(ignore)]
    pub format: Option<String>,
    #[param(ignore)]
    pub access_token: Option<String>,
}

#[utoipa::path(get, path = "/v1/jobs/{job_id}", params(OneQuery), responses(
    (status = 200, description = "The job (finished, or as it is when `wait` ran out)", body = Job, content_type = ENVELOPE),
))]
async fn one(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(raw): Path<String>,
    q: Result<Query<OneQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Reply, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    let id: i64 =
        raw.parse().ok().filter(|v| *v >= 1).ok_or_else(|| {
            ApiError::invalid("job_id", format!("'{raw}' is not a positive integer"))
        })?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::invalid(
            "wait",
            format!("must be at most {MAX_WAIT_SECS} seconds"),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(wait);
    // Subscribed before the first read, so a finish in between is not missed.
    let mut events = state.bus.subscribe();
    loop {
        let job = job::get(&state.db, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("Job {id} not found")))?;
        if job.is_finished() || Instant::now() >= deadline {
            return Ok(ctx.reply(&job));
        }
        // Any event may be this job's end; re-read on each, and at least every second.
        let tick = (deadline - Instant::now()).min(Duration::from_secs(1));
        let _ = tokio::time::timeout(tick, events.recv()).await;
    }
}
