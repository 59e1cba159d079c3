//! Picture-of-picture capture sessions: `POST /v3/pop-session/start` and `POST
//! /v3/pop-session` (one frame per call).
//!
//! Each frame is looked at for a screen ([`crate::capture`]); when one is found it is
//! rectified, its quality judged, and the landmark model run on the rectified radiograph.
//!
//! - A **good frame** passes every quality limit *and* gives a valid measurement (result code
//!   1–3). With [`GOOD_FRAMES_NEEDED`] good frames the session is `complete`: the best of them
//!   (confidence tier, then lowest spread, then quality score) is the answer, with its
//!   rectified image and rendered prediction, billed once at the session rate.
//! - A **failed frame** gives no measurement: no screen found, a screen that cannot be
//!   rectified, a gate rejection, or no CTR. [`MAX_CONSECUTIVE_FAILURES`] in a row end the
//!   session `failed` with `error: "max_consecutive_failures"`. A frame with a measurement but
//!   poor quality is neither: the answer is `continue` with a `feedback` hint.
//! - Frames `0..MAX_FRAMES` are processed; a frame after that is answered `failed` with
//!   `max_frames_exceeded` (the document's example: `frame_index: 20`), and one arriving more
//!   than [`SESSION_TTL`] after the start is answered `failed` with `session_timeout`. A failed
//!   session is recorded but never billed.
//! - A complete or failed session is closed: its id is then unknown (404). Sessions live in
//!   memory: a restart drops the open ones (their clients get 404 and start again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::billing::CallType;
use super::capture::{
    body_object, corners_json, decode_photo, image_field, jpeg_base64, png_bytes,
};
use super::ledger::{self, Call};
use super::outcome::{description, PredictError, PredictOutcome};
use super::request::uuid_field;
use super::RadAnalyzer;
use super::{model_facts, predict_one, RadError, RadErrorBody, RadKey, KEY_HEADER};
use crate::capture::{self, Quality};
use crate::inference::ConfidenceTier;
use crate::telemetry::spawn_blocking_with_tracing;

/// Frames processed per session.
pub const MAX_FRAMES: u32 = 20;
/// Frames without a measurement in a row that end a session.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 5;
/// Time from the start within which frames are accepted.
pub const SESSION_TTL: Duration = Duration::from_secs(300);
/// Good frames a session needs to complete.
pub const GOOD_FRAMES_NEEDED: u32 = 3;
/// Open sessions per node (each holds one rectified frame); more: 429.
pub const MAX_OPEN_SESSIONS: usize = 256;
/// How long after its TTL a session is still remembered, to answer `session_timeout` rather
/// than an unknown id.
const REMEMBER_EXPIRED: Duration = Duration::from_secs(600);

/// The open capture sessions of this node.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Arc<Entry>>>,
}

/// A session with what is fixed at its start readable without waiting for its frame lock.
#[derive(Debug)]
struct Entry {
    key_id: i64,
    started: Instant,
    session: tokio::sync::Mutex<Session>,
}

/// Why a session cannot be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManySessions;

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        // Single inserts and removals cannot leave the map inconsistent, so a lock poisoned by
        // a panic elsewhere is used as it is.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `key_id`; forgets long-expired ones first.
    pub fn start(&self, key_id: i64, now: Instant) -> Result<String, TooManySessions> {
        let mut open = self.lock();
        open.retain(|_, e| now.duration_since(e.started) < SESSION_TTL + REMEMBER_EXPIRED);
        if open.len() >= MAX_OPEN_SESSIONS {
            return Err(TooManySessions);
        }
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        open.insert(
            id.clone(),
            Arc::new(Entry {
                key_id,
                started: now,
                session: tokio::sync::Mutex::new(Session::new(now)),
            }),
        );
        Ok(id)
    }

    /// The session `id` if it belongs to `key_id`.
    fn get(&self, id: &str, key_id: i64) -> Option<Arc<Entry>> {
        self.lock().get(id).filter(|e| e.key_id == key_id).cloned()
    }

    fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The best good frame so far.
#[derive(Debug, Clone)]
struct Best {
    index: u32,
    outcome: PredictOutcome,
    quality_score: f64,
    rectified_jpeg: String,
}

impl Best {
    /// Smaller is better: tier, then spread, then quality (negated).
    fn rank(&self) -> (u8, f32, f64) {
        let tier = match self.outcome.tier {
            Some(ConfidenceTier::Optimal) => 0,
            Some(ConfidenceTier::Good) => 1,
            _ => 2,
        };
        (
            tier,
            self.outcome.spread.unwrap_or(f32::INFINITY),
            -self.quality_score,
        )
    }

    fn better_than(&self, other: &Best) -> bool {
        let (a, b) = (self.rank(), other.rank());
        a.0 < b.0 || (a.0 == b.0 && (a.1 < b.1 || (a.1 == b.1 && a.2 < b.2)))
    }
}

/// One capture session.
#[derive(Debug)]
pub struct Session {
    started: Instant,
    /// Answered `complete` or `failed`: a frame that waited for the lock meanwhile finds it
    /// closed.
    closed: bool,
    frames: u32,
    good: u32,
    consecutive_failures: u32,
    best: Option<Best>,
    uuid: Option<String>,
}

/// What ends a session before its frame is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Timeout,
    MaxFrames,
}

impl Refusal {
    pub fn error(self) -> &'static str {
        match self {
            Refusal::Timeout => "session_timeout",
            Refusal::MaxFrames => "max_frames_exceeded",
        }
    }
}

/// Where a session stands after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Complete,
    TooManyFailures,
}

impl Session {
    fn new(now: Instant) -> Session {
        Session {
            started: now,
            closed: false,
            frames: 0,
            good: 0,
            consecutive_failures: 0,
            best: None,
            uuid: None,
        }
    }

    /// Whether a frame arriving at `now` may be processed.
    pub fn admit(&self, now: Instant) -> Result<(), Refusal> {
        if now.duration_since(self.started) > SESSION_TTL {
            Err(Refusal::Timeout)
        } else if self.frames >= MAX_FRAMES {
            Err(Refusal::MaxFrames)
        } else {
            Ok(())
        }
    }

    /// Counts a processed frame: `good` (quality passed and a valid measurement) or
    /// `failed` (no measurement), or neither.
    pub fn record(&mut self, good: bool, failed: bool) -> Next {
        self.frames += 1;
        if failed {
            self.consecutive_failures += 1;
        } else {
            self.consecutive_failures = 0;
        }
        if good {
            self.good += 1;
        }
        if self.good >= GOOD_FRAMES_NEEDED {
            Next::Complete
        } else if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
            Next::TooManyFailures
        } else {
            Next::Continue
        }
    }

    fn offer(&mut self, candidate: Best) {
        if self.best.as_ref().is_none_or(|b| candidate.better_than(b)) {
            self.best = Some(candidate);
        }
    }
}

/// `POST /v3/pop-session/start`: body `{}` (members ignored); 503 without a landmark model.
#[utoipa::path(post, path = "/v3/pop-session/start", params(("x-api-key" = String, Header, description = KEY_HEADER)),
    request_body(content = Object, description = "Empty: `{}`"),
    responses(
        (status = 200, description = "RadAnalyzer: `{session_id, session_status: ready, \
            pop_pipeline_enabled, models_loaded, pop_models_loaded, model_version, \
            session_config}`", body = Object),
        (status = 403, description = "Invalid API key", body = RadErrorBody),
        (status = 429, description = "Too many open PoP sessions", body = RadErrorBody),
        (status = 503, description = "PoP pipeline not available", body = RadErrorBody),
    ),
)]
pub async fn start(
    State(state): State<RadAnalyzer>,
    key: RadKey,
    body: Bytes,
) -> Result<Json<Value>, RadError> {
    body_object(&body)?;
    let facts = model_facts(&state);
    if facts.models_loaded == 0 {
        return Err(RadError::unavailable("PoP pipeline not available"));
    }
    let id = state
        .radanalyzer
        .capture
        .start(key.key_id, Instant::now())
        .map_err(|_| {
            RadError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many open PoP sessions: finish one or let it expire",
            )
        })?;
    Ok(Json(json!({
        "session_id": id,
        "session_status": "ready",
        "pop_pipeline_enabled": facts.pop_pipeline_enabled,
        "models_loaded": facts.models_loaded,
        "pop_models_loaded": facts.pop_models_loaded,
        "model_version": facts.model_version,
        "session_config": {
            "max_frames": MAX_FRAMES,
            "max_consecutive_failures": MAX_CONSECUTIVE_FAILURES,
            "session_ttl_seconds": SESSION_TTL.as_secs(),
            "good_frames_needed": GOOD_FRAMES_NEEDED,
        },
    })))
}

/// What one frame gave.
struct FrameWork {
    quality: Quality,
    corners: Option<capture::Quad>,
    /// The rectified, level-restored radiograph (PNG), and its JPEG for a `complete` answer
    /// when the frame passed quality (only such a frame can be the best).
    rectified: Option<(Vec<u8>, Option<String>)>,
    /// A screen was found but not rectified.
    rectification_failed: bool,
}

fn look_at(photo: &image::RgbImage) -> Result<FrameWork, RadError> {
    let analysis = capture::analyse(photo);
    let mut work = FrameWork {
        quality: analysis.quality.clone(),
        corners: analysis.detection.as_ref().map(|d| d.quad),
        rectified: None,
        rectification_failed: false,
    };
    if let Some(det) = &analysis.detection {
        match capture::rectify(photo, &det.quad) {
            Ok(r) => {
                let grey = capture::restore_levels(&r);
                let jpeg = if analysis.quality.passed {
                    Some(jpeg_base64(
                        &image::DynamicImage::ImageLuma8(grey.clone()).to_rgb8(),
                    )?)
                } else {
                    None
                };
                work.rectified = Some((png_bytes(&grey)?, jpeg));
            }
            Err(e) => {
                tracing::warn!(error = %e, "PoP session: screen found but not rectified");
                work.rectification_failed = true;
            }
        }
    }
    Ok(work)
}

/// `POST /v3/pop-session`: `{image, session_id, uuid?}`.
#[utoipa::path(post, path = "/v3/pop-session", params(("x-api-key" = String, Header, description = KEY_HEADER)),
    request_body(content = Object, description = "`{image, session_id, uuid?}`: a base64 photo, \
        the session from `/v3/pop-session/start` and the patient identifier"),
    responses(
        (status = 200, description = "RadAnalyzer: `session_status` `continue` `{reason, \
            frame_index, frames_processed, good_frames, result_code, frame_result, feedback, \
            quality}`, `complete` `{rectified_image, prediction, billing}` or `failed` \
            `{error, billing}`", body = Object),
        (status = 403, description = "Invalid API key", body = RadErrorBody),
        (status = 404, description = "Unknown or closed PoP session", body = RadErrorBody),
        (status = 413, description = "Image exceeds maximum size of 10MB", body = RadErrorBody),
    ),
)]
pub async fn frame(
    State(state): State<RadAnalyzer>,
    key: RadKey,
    body: Bytes,
) -> Result<Json<Value>, RadError> {
    let mut obj = body_object(&body)?;
    let session_id = match obj.remove("session_id") {
        None | Some(Value::Null) => return Err(RadError::missing("session_id")),
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => {
            return Err(RadError::field(
                "session_id",
                "Invalid field session_id: must be a non-empty string",
            ))
        }
    };
    let uuid = uuid_field(obj.remove("uuid"))?;
    let bytes = image_field(&mut obj)?;
    drop(body);
    let sessions = state.radanalyzer.capture.clone();
    let unknown = || RadError {
        status: StatusCode::NOT_FOUND,
        message: "Unknown or closed PoP session: start a new one".into(),
        field: Some("session_id".into()),
    };
    let entry = sessions.get(&session_id, key.key_id).ok_or_else(unknown)?;
    let mut session = entry.session.lock().await;
    if session.closed {
        return Err(unknown());
    }
    if uuid.is_some() {
        session.uuid = uuid;
    }
    let model_version = model_facts(&state).model_version;
    if let Err(refusal) = session.admit(Instant::now()) {
        let index = session.frames;
        let body = failed(
            &state,
            &key,
            &session,
            &session_id,
            index,
            refusal.error(),
            None,
        )
        .await;
        session.closed = true;
        sessions.close(&session_id);
        return Ok(Json(body));
    }
    let index = session.frames;
    let photo = decode_photo(bytes).await?;
    let work = spawn_blocking_with_tracing(move || look_at(&photo))
        .await
        .map_err(|e| RadError::internal("PoP frame task", e))??;

    let outcome = match &work.rectified {
        Some((png, _)) => {
            let render = work.quality.passed;
            let mut o = predict_one(&state, Arc::new(png.clone()), render)
                .await
                .map_err(|e| match e {
                    PredictError::NoModel => RadError::unavailable("PoP pipeline not available"),
                    e => e.to_error("image"),
                })?;
            o.pop_detected = true;
            o
        }
        None if work.rectification_failed => {
            PredictOutcome::without_prediction(7, &model_version, true)
        }
        None => PredictOutcome::without_prediction(5, &model_version, false),
    };
    let good = work.quality.passed && outcome.valid();
    let failed_frame = !outcome.valid();
    if good {
        if let Some((_, Some(jpeg))) = &work.rectified {
            session.offer(Best {
                index,
                outcome: outcome.clone(),
                quality_score: work.quality.score,
                rectified_jpeg: jpeg.clone(),
            });
        }
    }
    let next = session.record(good, failed_frame);
    let feedback = frame_feedback(&work.quality, &outcome);
    let body = match next {
        Next::Complete => {
            let body = complete(&state, &key, &session, &session_id, index).await;
            session.closed = true;
            sessions.close(&session_id);
            body
        }
        Next::TooManyFailures => {
            let body = failed(
                &state,
                &key,
                &session,
                &session_id,
                index,
                "max_consecutive_failures",
                Some(feedback),
            )
            .await;
            session.closed = true;
            sessions.close(&session_id);
            body
        }
        Next::Continue => {
            let mut out = Map::new();
            out.insert("session_id".into(), json!(session_id));
            out.insert("session_status".into(), json!("continue"));
            out.insert(
                "reason".into(),
                json!(format!(
                    "{}/{GOOD_FRAMES_NEEDED} good frames so far, need more",
                    session.good
                )),
            );
            out.insert("frame_index".into(), json!(index));
            out.insert("frames_processed".into(), json!(session.frames));
            out.insert("good_frames".into(), json!(session.good));
            out.insert(
                "consecutive_failures".into(),
                json!(session.consecutive_failures),
            );
            out.insert("result_code".into(), json!(outcome.result_code));
            out.insert(
                "result_description".into(),
                json!(description(outcome.result_code)),
            );
            out.insert("frame_result".into(), outcome.frame_result());
            out.insert("feedback".into(), json!(feedback));
            out.insert("quality".into(), quality_json(&work.quality));
            out.insert(
                "corners".into(),
                work.corners.as_ref().map_or(Value::Null, corners_json),
            );
            out.insert("model_version".into(), json!(model_version));
            Value::Object(out)
        }
    };
    Ok(Json(body))
}

/// The hint for the person holding the phone: the quality judgement's first issue, else
/// what the measurement lacked.
fn frame_feedback(quality: &Quality, outcome: &PredictOutcome) -> String {
    if !quality.passed {
        return quality.feedback().to_string();
    }
    if outcome.rejected() {
        return "the screen does not show a chest radiograph".into();
    }
    if !outcome.valid() {
        return "the radiograph could not be measured: show the whole chest, upright".into();
    }
    "good frame, hold steady".into()
}

fn quality_json(q: &Quality) -> Value {
    let r = |v: f64, places: i32| {
        let f = 10f64.powi(places);
        (v * f).round() / f
    };
    json!({
        "score": r(q.score, 3),
        "passed": q.passed,
        "issues": q.issues,
        "area_fraction": r(q.area_fraction, 3),
        "angle_deviation_deg": r(q.angle_deviation_deg, 1),
        "aspect_ratio": r(q.aspect_ratio, 3),
        "blur_512": q.blur_512.map(|b| r(b, 2)),
        "glare_fraction": r(q.glare_fraction, 4),
        "brightness": r(q.brightness, 1),
        "contrast": r(q.contrast, 1),
    })
}

async fn complete(
    state: &RadAnalyzer,
    key: &RadKey,
    session: &Session,
    session_id: &str,
    index: u32,
) -> Value {
    let best = session
        .best
        .as_ref()
        .expect("BUG: a session completes only after good frames were offered");
    let settled = ledger::settle(
        &state.app.db,
        &state.radanalyzer.rates,
        &Call {
            key_id: key.key_id,
            uuid: session.uuid.as_deref(),
            call_type: CallType::Session,
            endpoint: "pop_session",
            result_code: best.outcome.result_code,
            measurement: best.outcome.vhs(),
        },
    )
    .await;
    let o = &best.outcome;
    let mut prediction = Map::new();
    prediction.insert("vhs".into(), json!(o.vhs()));
    prediction.insert("vlas".into(), Value::Null);
    prediction.insert("prediction".into(), o.prediction_json());
    prediction.insert("result_code".into(), json!(o.result_code));
    prediction.insert(
        "result_description".into(),
        json!(description(o.result_code)),
    );
    prediction.insert("model_confidence".into(), json!(o.model_confidence()));
    prediction.insert(
        "spread".into(),
        o.spread
            .map_or(Value::Null, |s| json!((f64::from(s) * 1e4).round() / 1e4)),
    );
    prediction.insert("pop_detected".into(), json!(true));
    prediction.insert("measurement".into(), o.measurement_json());
    prediction.insert("model_version".into(), json!(o.model_version));
    if let Some(img) = &o.rendered_image {
        prediction.insert("rendered_image".into(), json!(img));
    }
    json!({
        "session_id": session_id,
        "session_status": "complete",
        "frame_index": index,
        "frames_processed": session.frames,
        "good_frames": session.good,
        "best_frame_index": best.index,
        "rectified_image": best.rectified_jpeg,
        "prediction": Value::Object(prediction),
        "billing": settled.billing.to_json(),
    })
}

async fn failed(
    state: &RadAnalyzer,
    key: &RadKey,
    session: &Session,
    session_id: &str,
    index: u32,
    error: &str,
    feedback: Option<String>,
) -> Value {
    let settled = ledger::settle(
        &state.app.db,
        &state.radanalyzer.rates,
        &Call {
            key_id: key.key_id,
            uuid: session.uuid.as_deref(),
            call_type: CallType::Session,
            endpoint: "pop_session",
            result_code: 5,
            measurement: None,
        },
    )
    .await;
    let mut out = json!({
        "session_id": session_id,
        "session_status": "failed",
        "frame_index": index,
        "frames_processed": session.frames,
        "good_frames": session.good,
        "error": error,
        "billing": settled.billing.to_json(),
    });
    if let Some(f) = feedback {
        out["feedback"] = json!(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(tier: ConfidenceTier, spread: f32) -> PredictOutcome {
        let mut o = PredictOutcome::without_prediction(1, "0.1", true);
        o.tier = Some(tier);
        o.spread = Some(spread);
        o
    }

    fn best(index: u32, tier: ConfidenceTier, spread: f32, q: f64) -> Best {
        Best {
            index,
            outcome: outcome(tier, spread),
            quality_score: q,
            rectified_jpeg: String::new(),
        }
    }

    #[test]
    fn three_good_frames_complete_a_session() {
        let t0 = Instant::now();
        let mut s = Session::new(t0);
        assert_eq!(s.record(false, true), Next::Continue);
        assert_eq!(s.record(true, false), Next::Continue);
        assert_eq!(s.record(false, false), Next::Continue);
        assert_eq!(s.record(true, false), Next::Continue);
        assert_eq!(s.record(true, false), Next::Complete);
        assert_eq!((s.frames, s.good), (5, 3));
    }

    #[test]
    fn five_failures_in_a_row_end_a_session_and_a_measurement_resets_the_count() {
        let mut s = Session::new(Instant::now());
        for _ in 0..4 {
            assert_eq!(s.record(false, true), Next::Continue);
        }
        assert_eq!(s.record(false, false), Next::Continue);
        assert_eq!(s.consecutive_failures, 0);
        for _ in 0..4 {
            assert_eq!(s.record(false, true), Next::Continue);
        }
        assert_eq!(s.record(false, true), Next::TooManyFailures);
    }

    #[test]
    fn frames_are_admitted_within_the_ttl_and_the_frame_limit() {
        let t0 = Instant::now();
        let mut s = Session::new(t0);
        assert_eq!(s.admit(t0 + SESSION_TTL), Ok(()));
        assert_eq!(
            s.admit(t0 + SESSION_TTL + Duration::from_millis(1)),
            Err(Refusal::Timeout)
        );
        for _ in 0..MAX_FRAMES {
            assert_eq!(s.admit(t0), Ok(()));
            s.record(false, false);
        }
        assert_eq!(s.admit(t0), Err(Refusal::MaxFrames));
        assert_eq!(Refusal::MaxFrames.error(), "max_frames_exceeded");
        assert_eq!(Refusal::Timeout.error(), "session_timeout");
    }

    #[test]
    fn the_best_frame_is_chosen_by_tier_then_spread_then_quality() {
        let mut s = Session::new(Instant::now());
        s.offer(best(0, ConfidenceTier::Good, 0.001, 0.9));
        s.offer(best(1, ConfidenceTier::Optimal, 0.004, 0.6));
        assert_eq!(s.best.as_ref().unwrap().index, 1);
        s.offer(best(2, ConfidenceTier::Optimal, 0.003, 0.5));
        assert_eq!(s.best.as_ref().unwrap().index, 2);
        s.offer(best(3, ConfidenceTier::Optimal, 0.003, 0.8));
        assert_eq!(s.best.as_ref().unwrap().index, 3);
        s.offer(best(4, ConfidenceTier::Review, 0.0001, 1.0));
        assert_eq!(s.best.as_ref().unwrap().index, 3);
    }

    #[test]
    fn sessions_belong_to_their_key_and_are_capped() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let id = sessions.start(7, now).unwrap();
        assert_eq!(id.len(), 16);
        assert!(sessions.get(&id, 7).is_some());
        assert!(sessions.get(&id, 8).is_none());
        assert!(sessions.get("nope", 7).is_none());
        sessions.close(&id);
        assert!(sessions.get(&id, 7).is_none());
        for _ in 0..MAX_OPEN_SESSIONS {
            sessions.start(1, now).unwrap();
        }
        assert_eq!(sessions.start(1, now), Err(TooManySessions));
        // Long-expired sessions are forgotten on the next start.
        let later = now + SESSION_TTL + REMEMBER_EXPIRED + Duration::from_secs(1);
        assert!(sessions.start(1, later).is_ok());
        assert_eq!(sessions.len(), 1);
    }
}
