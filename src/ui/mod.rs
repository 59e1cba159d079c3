//! The node's web pages: the live worklist at `/ui/`, a study's page, the operations pages
//! (exports, models, health, audit), the OHIF viewer at `/ohif/` and the guide at `/guide/`.
//!
//! - [`assets`]: the pages' HTML, CSS and JavaScript, embedded in the binary at compile time
//!   (`src/ui/assets/`), served without credentials under a strict Content-Security-Policy;
//!   every data call the pages make carries the credential the user typed (kept in the tab's
//!   `sessionStorage`) in a header.
//! - [`ohif`]: the OHIF viewer's built files from `[ui] ohif_dir` (fetched by
//!   `scripts/setup.sh`, never committed), rebased to `/ohif/`, with an `app-config.js` that
//!   points OHIF at the node's own DICOMweb root and hands it the same credential.
//!
//! Nothing here reads the database: the pages call the API.

pub mod assets;
mod files;
pub mod guide;
pub mod ohif;
mod settings;

use std::sync::Arc;

use axum::http::Method;
use axum::routing::get;

pub use settings::UiSettings;

use crate::api::{spec, Access, Routes};

/// State of the UI routes.
#[derive(Clone)]
pub struct Ui {
    ohif: Arc<ohif::Ohif>,
    guide: Arc<guide::Guide>,
    /// `[ui] assets_dir`: the pages' files read from there instead of the embedded ones.
    assets_dir: Option<Arc<std::path::PathBuf>>,
}

impl Ui {
    pub fn new(settings: &UiSettings) -> Ui {
        Ui {
            ohif: Arc::new(ohif::Ohif::new(settings.ohif_dir.clone())),
            guide: Arc::new(guide::Guide::new(settings.guide_dir.clone())),
            assets_dir: settings.assets_dir.clone().map(Arc::new),
        }
    }
}

/// The UI's routes: all public (they hold no data; the pages ask the API with the user's
/// credential).
pub fn routes() -> Routes<Ui> {
    let public = Access::Public;
    let page = |path, summary| spec(Method::GET, path, public, summary);
    vec![
        (
            page("/ui", "Web worklist (redirect to /ui/)"),
            get(assets::to_worklist),
        ),
        (page("/ui/", "Web worklist page"), get(assets::worklist)),
        (
            page("/ui/studies/{study_uid}", "Web page of one study"),
            get(assets::study),
        ),
        (
            page("/ui/exports", "Web page of the export outbox"),
            get(assets::exports),
        ),
        (
            page("/ui/models", "Web page of the installed models"),
            get(assets::models),
        ),
        (
            page("/ui/health", "Web page of the node's health and metrics"),
            get(assets::health),
        ),
        (
            page("/ui/audit", "Web page of the audit log"),
            get(assets::audit),
        ),
        (
            page("/ui/assets/{file}", "A static asset of the web pages"),
            get(assets::asset),
        ),
        (
            page("/ohif", "OHIF viewer (redirect to /ohif/)"),
            get(ohif::to_root),
        ),
        (page("/ohif/", "OHIF viewer"), get(ohif::root)),
        (
            page(
                "/ohif/{*path}",
                "OHIF viewer files, its app-config.js, and its pages (single-page fallback)",
            ),
            get(ohif::file),
        ),
        (
            page("/guide", "The guide (redirect to /guide/)"),
            get(guide::to_root),
        ),
        (
            page("/guide/", "The guide: install, connect, integrate, operate"),
            get(guide::root),
        ),
        (
            page("/guide/{*path}", "A page or file of the guide"),
            get(guide::file),
        ),
    ]
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    assets::to_worklist,
    assets::worklist,
    assets::study,
    assets::exports,
    assets::models,
    assets::health,
    assets::audit,
    assets::asset,
    ohif::to_root,
    ohif::root,
    ohif::file,
    guide::to_root,
    guide::root,
    guide::file,
))]
pub struct Doc;
