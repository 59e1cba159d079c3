//! The node's HTTP surface, assembled from its parts: the native API (`api::routes`), FHIR,
//! DICOMweb and each vendor adapter (`compat`). Each part is a route table over its own state
//! (the node's [`AppState`] beside what only that part reads), served through the kernel's
//! [`api::mount`]; an adapter is mounted with its error dialect. [`routes`] lists what
//! [`router`] serves (the auth test matrix and the OpenAPI document walk it), both from the
//! one list in [`assemble`]; [`handler_docs`] gathers the parts' `#[utoipa::path]` operations,
//! and the document built from both is handed to the docs routes ([`docs`]).

use axum::Router;

use super::{docs, openapi};
use crate::api::routes::{self as native, health};
use crate::api::{self, AppState, Dialect, RouteSpec, Routes};
use crate::compat::{leapai, pi, radanalyzer, voxray};
use crate::configuration::Settings;
use crate::dicomweb::{self, DicomWeb, DicomWebContext};
use crate::fhir::routes::{self as fhir, FhirApi};
use crate::supervisor::Background;
use crate::{timeline, ui};

/// The states of all parts.
#[derive(Clone)]
pub struct Parts {
    pub app: AppState,
    health: health::HealthState,
    dicomweb: DicomWeb,
    fhir: FhirApi,
    leapai: leapai::LeapAi,
    pub pi: pi::Pi,
    voxray: voxray::VoxRay,
    radanalyzer: radanalyzer::RadAnalyzer,
    docs: docs::Docs,
    ui: ui::Ui,
}

impl Parts {
    /// The parts' states from the settings; `jobs` runs the adapters' background work.
    pub fn new(
        settings: &Settings,
        app: AppState,
        dicomweb: DicomWebContext,
        jobs: Background,
    ) -> anyhow::Result<Parts> {
        use anyhow::Context;
        let compat = &settings.compat;
        Ok(Parts {
            health: health::HealthState {
                app: app.clone(),
                fields: vec![&voxray::HealthFields as &dyn health::HealthFields],
            },
            dicomweb: DicomWeb {
                app: app.clone(),
                dicomweb,
            },
            fhir: FhirApi {
                app: app.clone(),
                fhir: settings.fhir.clone(),
            },
            leapai: leapai::LeapAi {
                app: app.clone(),
                leapai: leapai::LeapAiPaths {
                    input: crate::compat::paths::Roots::new(&compat.input_roots),
                    output: crate::compat::paths::Roots::new(&compat.output_roots),
                },
                jobs: jobs.clone(),
            },
            pi: pi::Pi {
                app: app.clone(),
                compat_pi: crate::compat::PiSettings {
                    enabled: compat.pi_enabled,
                    url_hosts: compat.pi_url_hosts.clone(),
                },
                triage: settings.triage.clone(),
                jobs,
            },
            voxray: voxray::VoxRay {
                app: app.clone(),
                voxray: voxray::VoxRayContext::from_settings(compat, &settings.storage.data_dir)
                    .context("loading the VoxRay patient hash key")?,
                fhir: settings.fhir.clone(),
            },
            radanalyzer: radanalyzer::RadAnalyzer {
                app: app.clone(),
                radanalyzer: radanalyzer::RadAnalyzerContext::from_settings(&compat.radanalyzer),
            },
            docs: docs::Docs::new(&openapi::build(&routes(), handler_docs())),
            ui: ui::Ui::new(&settings.ui),
            app,
        })
    }
}

/// What is done with each part: listed, or mounted.
trait Assembly {
    fn part<S: Clone + Send + Sync + 'static>(
        &mut self,
        routes: Routes<S>,
        state: impl FnOnce(&Parts) -> S,
        dialect: Option<&'static dyn Dialect>,
    );
}

/// Which parts a node serves, from its roles.
#[derive(Debug, Clone, Copy)]
pub struct Serving {
    /// The whole API (role `api`).
    pub api: bool,
    /// STOW-RS (role `ingest`; part of the whole API anyway).
    pub stow: bool,
}

impl Serving {
    pub const ALL: Serving = Serving {
        api: true,
        stow: true,
    };
}

/// Every part of the node, in the order the route list (and the OpenAPI document) shows.
/// Every node serves the operations parts (liveness, health, metrics); without the `api` role
/// only those, and STOW-RS with the `ingest` role.
fn assemble(a: &mut impl Assembly, serving: Serving) {
    let app = |p: &Parts| p.app.clone();
    a.part(native::health::routes(), |p| p.health.clone(), None);
    a.part(native::metrics::routes(), app, None);
    if !serving.api {
        if serving.stow {
            a.part(dicomweb::stow_routes(), |p| p.dicomweb.clone(), None);
        }
        return;
    }
    a.part(native::studies::routes(), app, None);
    a.part(timeline::routes::routes(), app, None);
    a.part(native::me::routes(), app, None);
    a.part(native::events::routes(), app, None);
    a.part(native::jobs::routes(), app, None);
    a.part(native::models::routes(), app, None);
    a.part(
        leapai::routes(),
        |p| p.leapai.clone(),
        Some(&leapai::Errors),
    );
    a.part(pi::routes(), |p| p.pi.clone(), Some(&pi::Errors));
    a.part(
        voxray::routes(),
        |p| p.voxray.clone(),
        Some(&voxray::Errors),
    );
    a.part(
        radanalyzer::routes(),
        |p| p.radanalyzer.clone(),
        Some(&radanalyzer::Errors),
    );
    a.part(radanalyzer::usage::routes(), app, None);
    a.part(native::audit::routes(), app, None);
    a.part(docs::routes(), |p| p.docs.clone(), None);
    a.part(fhir::routes(), |p| p.fhir.clone(), None);
    a.part(dicomweb::routes(), |p| p.dicomweb.clone(), None);
    a.part(crate::export::routes::routes(), app, None);
    a.part(ui::routes(), |p| p.ui.clone(), None);
}

/// Every route the node serves, each with the dialect of its part.
pub fn routes() -> Vec<RouteSpec> {
    struct List(Vec<RouteSpec>);
    impl Assembly for List {
        fn part<S: Clone + Send + Sync + 'static>(
            &mut self,
            routes: Routes<S>,
            _: impl FnOnce(&Parts) -> S,
            dialect: Option<&'static dyn Dialect>,
        ) {
            self.0.extend(routes.into_iter().map(|(spec, _)| RouteSpec {
                dialect: dialect.map(|d| d.name()),
                ..spec
            }));
        }
    }
    let mut list = List(Vec::new());
    assemble(&mut list, Serving::ALL);
    list.0
}

/// The operations the handlers of [`routes`] document with `#[utoipa::path]`, part by part;
/// [`openapi::build`] completes them from the route list.
pub fn handler_docs() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = native::health::Doc::openapi();
    for part in [
        native::metrics::Doc::openapi(),
        native::studies::Doc::openapi(),
        timeline::routes::Doc::openapi(),
        native::me::Doc::openapi(),
        native::events::Doc::openapi(),
        native::jobs::Doc::openapi(),
        native::models::Doc::openapi(),
        native::audit::Doc::openapi(),
        docs::Doc::openapi(),
        crate::export::routes::Doc::openapi(),
        ui::Doc::openapi(),
        fhir::Doc::openapi(),
        dicomweb::Doc::openapi(),
        leapai::Doc::openapi(),
        pi::Doc::openapi(),
        voxray::Doc::openapi(),
        radanalyzer::Doc::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}

/// The node's router: the parts `serving` names, each mounted with its state, inside the
/// kernel's outer layers.
pub fn router(parts: Parts, serving: Serving) -> Router {
    struct Mount {
        parts: Parts,
        router: Router,
        dialects: Vec<&'static dyn Dialect>,
    }
    impl Assembly for Mount {
        fn part<S: Clone + Send + Sync + 'static>(
            &mut self,
            routes: Routes<S>,
            state: impl FnOnce(&Parts) -> S,
            dialect: Option<&'static dyn Dialect>,
        ) {
            let part = api::mount(routes, state(&self.parts), &self.parts.app, dialect);
            self.router = std::mem::take(&mut self.router).merge(part);
            self.dialects.extend(dialect);
        }
    }
    let mut mount = Mount {
        parts,
        router: Router::new(),
        dialects: Vec::new(),
    };
    assemble(&mut mount, serving);
    let cors = mount.parts.dicomweb.dicomweb.cors();
    api::serve(mount.router, &mount.parts.app, mount.dialects, cors)
}
