//! Liveness (`/ping`, no authentication) and health (`/health`). Other parts of the node
//! add their own fields to the health body through [`HealthFields`] (VoxRay's `services`).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::Method;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};

use crate::api::{spec, Access, AppState, Routes};

/// Fields another part of the node adds to the `/health` body.
pub trait HealthFields: Send + Sync + 'static {
    /// Adds to `body`, given whether the model is loaded and what is failing.
    fn add(&self, body: &mut Value, model_loaded: bool, errors: &[String]);
}

/// State of the health routes: the node's, and the fields other parts add.
#[derive(Clone)]
pub struct Health {
    pub app: AppState,
    pub fields: Vec<&'static dyn HealthFields>,
}

pub fn routes() -> Routes<Health> {
    vec![
        (
            spec(Method::GET, "/ping", Access::Public, "Liveness"),
            get(ping),
        ),
        (
            spec(
                Method::GET,
                "/health",
                Access::Public,
                "Health of the database, storage and DICOM listener",
            ),
            get(health),
        ),
    ]
}

async fn ping() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Database reachability, free space against the A700 threshold, the DICOM listener and the
/// model (the pipeline's, else the first installed), plus the fields other parts add.
/// Answers 503 when any part is down, so load balancers can act on the status alone.
async fn health(State(Health { app: state, fields }): State<Health>) -> (StatusCode, Json<Value>) {
    let db_ok = state.db.ping().await;
    let space = state.files.space();
    let room = state.files.check_room();
    let model_loaded = state
        .engine
        .manifest(state.pipeline_model.as_deref())
        .is_ok();
    let healthy = db_ok.is_ok() && room.is_ok() && model_loaded;
    let (free, total) = space.unwrap_or((0, 0));
    let mut body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "database": {
            "status": if db_ok.is_ok() { "up" } else { "down" },
            "backend": format!("{:?}", state.db.backend).to_lowercase(),
        },
        "storage": {
            "status": if room.is_ok() { "up" } else { "low_space" },
            "free_bytes": free,
            "total_bytes": total,
        },
        "dicom": {
            "status": "up",
            "address": state.dicom_addr,
            "ae_title": state.ae_title,
            "open_associations": state.open_associations.load(Ordering::Relaxed),
            "studies_pending_completion": state.tracker.pending(),
        },
        "version": env!("CARGO_PKG_VERSION"),
    });
    let errors: Vec<String> = [
        (db_ok.is_err(), "Database unreachable"),
        (room.is_err(), "Storage below the free-space threshold"),
        (!model_loaded, "Medical model failed to load"),
    ]
    .iter()
    .filter(|(failed, _)| *failed)
    .map(|(_, m)| m.to_string())
    .collect();
    for f in &fields {
        f.add(&mut body, model_loaded, &errors);
    }
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
