//! Liveness (`/ping`, no authentication) and health (`/health`). Other parts of the node
//! add their own fields to the health body through [`HealthFields`] (VoxRay's `services`).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::Method;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::{spec, Access, AppState, Routes};

/// Fields another part of the node adds to the `/health` body.
pub trait HealthFields: Send + Sync + 'static {
    /// Adds to `body`, given whether the model is loaded and what is failing.
    fn add(&self, body: &mut Value, model_loaded: bool, errors: &[String]);
}

/// State of the health routes: the node's, and the fields other parts add.
#[derive(Clone)]
pub struct HealthState {
    pub app: AppState,
    pub fields: Vec<&'static dyn HealthFields>,
}

pub fn routes() -> Routes<HealthState> {
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

#[derive(utoipa::OpenApi)]
#[openapi(paths(ping, health))]
pub struct Doc;

/// `GET /ping`.
#[derive(Serialize, ToSchema)]
pub struct Ping {
    /// Always `ok`.
    pub status: &'static str,
}

#[utoipa::path(get, path = "/ping", responses((status = 200, description = "The node is up", body = Ping)))]
async fn ping() -> Json<Ping> {
    Json(Ping { status: "ok" })
}

/// `GET /health`: the native fields; other parts add theirs to the same body
/// ([`HealthFields`]).
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    pub database: HealthDatabase,
    pub storage: HealthStorage,
    pub dicom: HealthDicom,
    /// Every installed model: loaded ones with their task and validation status, and those
    /// whose weights are missing (`unavailable`, with the reason).
    pub models: Vec<HealthModel>,
    /// Node version.
    pub version: &'static str,
    pub node: HealthNode,
}

/// This node and the live nodes sharing its database.
#[derive(Serialize, ToSchema)]
pub struct HealthNode {
    pub id: String,
    /// Of `ingest`, `worker`, `api`.
    pub roles: Vec<&'static str>,
    /// Every node whose heartbeat is current, this one included (empty when the database is
    /// down).
    pub cluster: Vec<crate::cluster::Member>,
}

#[derive(Serialize, ToSchema)]
pub struct HealthDatabase {
    /// `up` or `down`.
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub backend: String,
}

#[derive(Serialize, ToSchema)]
pub struct HealthStorage {
    /// `up` or `low_space`.
    pub status: &'static str,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct HealthDicom {
    /// `up`, or `off` on a node without the `ingest` role.
    pub status: &'static str,
    /// Address the DICOM listener is bound to.
    pub address: String,
    pub ae_title: String,
    pub open_associations: u64,
    pub studies_pending_completion: u64,
}

/// One installed model as `/health` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthModel {
    pub id: String,
    pub task: String,
    /// `loaded` or `unavailable`.
    pub status: &'static str,
    /// `real-images`, `synthetic-only` or `unknown` (loaded models).
    pub validation_status: Option<String>,
    /// `cpu` or `cuda` (loaded models).
    pub provider: Option<String>,
    /// Why not loaded.
    pub reason: Option<String>,
}

/// Database reachability, free space against the A700 threshold, the DICOM listener and the
/// model (the pipeline's, else the first installed), plus the fields other parts add: VoxRay's
/// `services` (`medical_model` `loaded` or `not_loaded`; `stt_model`, `tts_service` and
/// `llm_service` always `not_available`, not part of radstream), `timestamp` (RFC 3339) and,
/// when unhealthy, `errors`.
/// Answers 503 when any part is down, so load balancers can act on the status alone.
#[utoipa::path(get, path = "/health", responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "Unhealthy (database down, storage low or no model loaded): the same body, with `errors`", body = Health),
))]
async fn health(
    State(HealthState { app: state, fields }): State<HealthState>,
) -> (StatusCode, Json<Value>) {
    let db_ok = state.db.ping().await;
    let space = state.files.space();
    let room = state.files.check_room();
    use crate::cluster::Role;
    // Only nodes that run models need one: workers, and the API (the vendor adapters infer).
    let needs_model = state.node.roles.has(Role::Worker) || state.node.roles.has(Role::Api);
    let model_loaded = !needs_model
        || state
            .engine
            .manifest(state.pipeline_model.as_deref())
            .is_ok();
    let cluster = match &db_ok {
        Ok(()) => crate::cluster::members(&state.db, state.node_expire_secs)
            .await
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let healthy = db_ok.is_ok() && room.is_ok() && model_loaded;
    let (free, total) = space.unwrap_or((0, 0));
    let health = Health {
        status: if healthy { "healthy" } else { "unhealthy" },
        database: HealthDatabase {
            status: if db_ok.is_ok() { "up" } else { "down" },
            backend: format!("{:?}", state.db.backend).to_lowercase(),
        },
        storage: HealthStorage {
            status: if room.is_ok() { "up" } else { "low_space" },
            free_bytes: free,
            total_bytes: total,
        },
        dicom: HealthDicom {
            status: if state.node.roles.has(Role::Ingest) {
                "up"
            } else {
                "off"
            },
            address: state.dicom_addr.clone(),
            ae_title: state.ae_title.clone(),
            open_associations: state.open_associations.load(Ordering::Relaxed) as u64,
            studies_pending_completion: state.tracker.pending() as u64,
        },
        models: state
            .engine
            .models()
            .into_iter()
            .map(|m| HealthModel {
                id: m.id,
                task: m.task,
                status: "loaded",
                validation_status: Some(m.validation.status),
                provider: Some(m.provider),
                reason: None,
            })
            .chain(
                state
                    .engine
                    .unavailable_models()
                    .iter()
                    .map(|m| HealthModel {
                        id: m.id.clone(),
                        task: m.task.clone(),
                        status: "unavailable",
                        validation_status: None,
                        provider: None,
                        reason: Some(m.reason.clone()),
                    }),
            )
            .collect(),
        version: env!("CARGO_PKG_VERSION"),
        node: HealthNode {
            id: state.node.id.clone(),
            roles: state.node.roles.list(),
            cluster,
        },
    };
    let mut body = serde_json::to_value(&health).unwrap_or_default();
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
