//! `GET /v1/studies/{study_uid}/timeline`.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, MethodRouter};

use super::Timeline;
use crate::api::auth::Audit;
use crate::api::error::valid_uid;
use crate::api::response::ENVELOPE;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::Scope;
use crate::store::index;

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![(
        spec(
            Method::GET,
            "/v1/studies/{study_uid}/timeline",
            Access::Scope(Scope::ResultsRead),
            "The study's life: associations, completion, jobs with their nodes, results, exports, with durations",
        ),
        get(timeline),
    )]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(timeline))]
pub struct Doc;

#[utoipa::path(get, path = "/v1/studies/{study_uid}/timeline", responses(
    (status = 200, description = "The study's timeline, oldest first", body = Timeline, content_type = ENVELOPE),
))]
async fn timeline(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    Path(raw): Path<String>,
) -> Result<Reply, ApiError> {
    let uid = valid_uid("study_uid", &raw)?;
    let study = index::find_study(&state.db.pool, &uid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Study {uid} not found")))?;
    audit
        .record(
            &state.db,
            "study.timeline.read",
            study.patient_id.as_deref(),
            Some(&uid),
            StatusCode::OK,
        )
        .await?;
    let entries = super::of_study(&state.db, &uid).await?;
    Ok(ctx.reply(Timeline {
        study_uid: uid,
        entries,
    }))
}
