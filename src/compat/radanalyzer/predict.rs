//! `GET /v3/health`, `POST /v3/predict` (one `image` or a batch of `images`) and `POST
//! /v3/predict/stream` (the batch as server-sent events). A photo of a screen is rectified
//! first ([`predict_photo`]: `pop_detected`). Images of a batch run concurrently
//! (the engine batches them); each request is settled once in the ledger: a single image at
//! the single rate, a batch or stream as one session.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use serde_json::{json, Map, Value};

use super::batch::{self, Summary};
use super::billing::CallType;
use super::capture::predict_photo;
use super::ledger::{self, Call, Settled};
use super::outcome::{PredictError, PredictOutcome};
use super::request::{self, Image, PredictRequest};
use super::RadAnalyzer;
use super::{model_facts, RadError, RadErrorBody, RadKey, KEY_HEADER, PREDICT_BODY};

/// `GET /v3/health`: `degraded` when no landmark model is loaded or the database does not
/// answer.
#[utoipa::path(get, path = "/v3/health", params(("x-api-key" = String, Header, description = KEY_HEADER)), responses(
    (status = 200, description = "RadAnalyzer: `{status, models_loaded, pop_models_loaded, \
        pop_pipeline_enabled, model_version}`", body = Object),
    (status = 403, description = "Invalid API key", body = RadErrorBody),
))]
pub async fn health(State(state): State<RadAnalyzer>, _key: RadKey) -> Json<Value> {
    let facts = model_facts(&state);
    let db_ok = state.app.db.ping().await.is_ok();
    let status = if facts.models_loaded > 0 && db_ok {
        "healthy"
    } else {
        "degraded"
    };
    Json(json!({
        "status": status,
        "models_loaded": facts.models_loaded,
        "pop_models_loaded": facts.pop_models_loaded,
        "pop_pipeline_enabled": facts.pop_pipeline_enabled,
        "model_version": facts.model_version,
    }))
}

fn check_model(state: &RadAnalyzer) -> Result<String, RadError> {
    let facts = model_facts(state);
    if facts.models_loaded == 0 {
        return Err(PredictError::NoModel.to_error("image"));
    }
    Ok(facts.model_version)
}

/// `historic_vhs` / `historic_vlas`: the pairs with a `uuid`, null without.
fn history_fields(out: &mut Map<String, Value>, settled: &Settled) {
    let (vhs, vlas) = match &settled.history {
        Some(h) => (h.vhs_json(), h.vlas_json()),
        None => (Value::Null, Value::Null),
    };
    out.insert("historic_vhs".into(), vhs);
    out.insert("historic_vlas".into(), vlas);
}

#[utoipa::path(post, path = "/v3/predict", params(("x-api-key" = String, Header, description = KEY_HEADER)), request_body(content = Object, description = PREDICT_BODY), responses(
    (status = 200, description = "RadAnalyzer: single image `{vhs (= CTR), vlas (null), \
        prediction, result_code, result_description, model_confidence, spread, pop_detected, \
        model_version, measurement, rendered_image?, historic_vhs, historic_vlas, billing}`; \
        a batch adds best/median/std, per_photo and the n_photos_* counts", body = Object),
    (status = 403, description = "Invalid API key", body = RadErrorBody),
    (status = 413, description = "Image exceeds maximum size of 10MB", body = RadErrorBody),
    (status = 503, description = "Landmark model not loaded", body = RadErrorBody),
))]
pub async fn predict(
    State(state): State<RadAnalyzer>,
    key: RadKey,
    body: Bytes,
) -> Result<Json<Value>, RadError> {
    let req = request::parse(&body)?;
    drop(body);
    check_model(&state)?;
    let PredictRequest {
        batch,
        images,
        uuid,
        render,
    } = req;
    let mut decoded = Vec::with_capacity(images.len());
    for image in images {
        decoded.push(Arc::new(image.map_err(|p| p.to_error())?));
    }
    if batch {
        predict_batch(&state, &key, decoded, uuid.as_deref(), render).await
    } else {
        predict_single(&state, &key, decoded.remove(0), uuid.as_deref(), render).await
    }
}

async fn predict_single(
    state: &RadAnalyzer,
    key: &RadKey,
    image: Arc<Vec<u8>>,
    uuid: Option<&str>,
    render: bool,
) -> Result<Json<Value>, RadError> {
    let outcome = predict_photo(state, image, render)
        .await
        .map_err(|e| e.to_error("image"))?;
    let settled = ledger::settle(
        &state.app.db,
        &state.radanalyzer.rates,
        &Call {
            key_id: key.key_id,
            uuid,
            call_type: CallType::Single,
            endpoint: "predict",
            result_code: outcome.result_code,
            measurement: outcome.vhs(),
        },
    )
    .await;
    let mut out = outcome.single_body();
    if !outcome.rejected() {
        history_fields(&mut out, &settled);
    }
    out.insert("billing".into(), settled.billing.to_json());
    Ok(Json(Value::Object(out)))
}

/// The batch body around the summary (`vhs`/`vlas` = the best image's).
fn batch_body(
    summary: &Summary,
    frames: &[Option<&PredictOutcome>],
    per_photo: Vec<Value>,
    model_version: &str,
) -> Map<String, Value> {
    let best = summary
        .best_index
        .and_then(|i| frames.get(i).copied().flatten());
    let mut out = Map::new();
    out.insert("vhs".into(), json!(summary.best_vhs));
    out.insert("vlas".into(), Value::Null);
    out.extend(summary.fields());
    out.insert("processing_started".into(), json!(true));
    out.insert("per_photo".into(), Value::Array(per_photo));
    out.insert("model_version".into(), json!(model_version));
    out.insert(
        "measurement".into(),
        best.map_or(Value::Null, |o| o.measurement_json()),
    );
    if let Some(img) = best.and_then(|o| o.rendered_image.clone()) {
        out.insert("rendered_image".into(), json!(img));
    }
    out
}

async fn predict_batch(
    state: &RadAnalyzer,
    key: &RadKey,
    images: Vec<Arc<Vec<u8>>>,
    uuid: Option<&str>,
    render: bool,
) -> Result<Json<Value>, RadError> {
    let runs: FuturesOrdered<_> = images
        .into_iter()
        .map(|img| predict_photo(state, img, render))
        .collect();
    let results: Vec<_> = runs.collect().await;
    let mut outcomes = Vec::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        outcomes.push(r.map_err(|e| e.to_error(&format!("images[{i}]")))?);
    }
    let frames: Vec<Option<&PredictOutcome>> = outcomes.iter().map(Some).collect();
    let summary = batch::summarize(&frames);
    let settled = ledger::settle(
        &state.app.db,
        &state.radanalyzer.rates,
        &Call {
            key_id: key.key_id,
            uuid,
            call_type: CallType::Session,
            endpoint: "predict",
            result_code: summary.result_code(&frames),
            measurement: summary.best_vhs,
        },
    )
    .await;
    let per_photo = outcomes
        .iter()
        .map(|o| Value::Object(o.per_photo()))
        .collect();
    let model_version = outcomes
        .first()
        .map(|o| o.model_version.clone())
        .unwrap_or_default();
    let mut out = batch_body(&summary, &frames, per_photo, &model_version);
    history_fields(&mut out, &settled);
    out.insert("billing".into(), settled.billing.to_json());
    Ok(Json(Value::Object(out)))
}

fn event(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// `POST /v3/predict/stream`: `processing_started`, one `photo` per image in order (or an
/// `error` for an image whose data is unusable or whose prediction failed), then `summary`
/// with the batch figures and the session's `billing` and `historic_*`. Billing happens once
/// the last image is done; a client that disconnects earlier is not billed.
#[utoipa::path(post, path = "/v3/predict/stream", params(("x-api-key" = String, Header, description = KEY_HEADER)), request_body(content = Object, description = PREDICT_BODY), responses(
    (status = 200, description = "Server-sent events `processing_started`, `photo` (one per \
        image), `error` (an image that could not be used), `summary` (with `billing`)",
        body = String, content_type = "text/event-stream"),
    (status = 403, description = "Invalid API key", body = RadErrorBody),
    (status = 413, description = "Image exceeds maximum size of 10MB", body = RadErrorBody),
))]
pub async fn stream(
    State(state): State<RadAnalyzer>,
    key: RadKey,
    body: Bytes,
) -> Result<Response, RadError> {
    let req = request::parse(&body)?;
    drop(body);
    let model_version = check_model(&state)?;
    let PredictRequest {
        images,
        uuid,
        render,
        ..
    } = req;
    let n = images.len();
    let s = async_stream::stream! {
        yield Ok::<_, Infallible>(event(
            "processing_started",
            json!({ "n_images": n, "model_version": model_version }),
        ));
        let mut runs: FuturesOrdered<_> = images
            .into_iter()
            .map(|img: Image| {
                let state = state.clone();
                async move {
                    match img {
                        Ok(bytes) => predict_photo(&state, Arc::new(bytes), render).await,
                        Err(p) => Err(PredictError::InvalidImage(p.problem)),
                    }
                }
            })
            .collect();
        let mut outcomes: Vec<Option<PredictOutcome>> = Vec::with_capacity(n);
        let mut index = 0usize;
        while let Some(r) = runs.next().await {
            match r {
                Ok(o) => {
                    let mut data = o.per_photo();
                    data.remove("pop_detected");
                    data.insert("index".into(), json!(index));
                    data.insert("n_total".into(), json!(n));
                    data.insert("model_version".into(), json!(o.model_version));
                    yield Ok(event("photo", Value::Object(data)));
                    outcomes.push(Some(o));
                }
                Err(e) => {
                    yield Ok(event(
                        "error",
                        json!({ "index": index, "uuid": uuid, "error": e.event_text() }),
                    ));
                    outcomes.push(None);
                }
            }
            index += 1;
        }
        let frames: Vec<Option<&PredictOutcome>> = outcomes.iter().map(Option::as_ref).collect();
        let summary = batch::summarize(&frames);
        let settled = ledger::settle(
            &state.app.db,
            &state.radanalyzer.rates,
            &Call {
                key_id: key.key_id,
                uuid: uuid.as_deref(),
                call_type: CallType::Session,
                endpoint: "predict_stream",
                result_code: summary.result_code(&frames),
                measurement: summary.best_vhs,
            },
        )
        .await;
        let mut data = summary.fields();
        history_fields(&mut data, &settled);
        data.insert("billing".into(), settled.billing.to_json());
        yield Ok(event("summary", Value::Object(data)));
    };
    Ok(Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
