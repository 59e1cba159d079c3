//! `[ui]`: the web pages and the OHIF viewer.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[ui]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UiSettings {
    /// The OHIF viewer's built `dist/` folder (npm `@ohif/app`), served at `/ohif/`;
    /// `scripts/setup.sh` puts it in `./ohif`. Missing: `/ohif/` answers a page saying how to
    /// install it.
    pub ohif_dir: PathBuf,
    /// The guide as built by mdBook (`mdbook build docs`, which `scripts/setup.sh` runs),
    /// served at `/guide/`. Missing: `/guide/` says how to build it.
    pub guide_dir: PathBuf,
    /// Serve the pages' files from this folder (read at each request) instead of the copies
    /// embedded in the binary: for working on the pages without rebuilding. Unset: embedded.
    pub assets_dir: Option<PathBuf>,
}

impl Default for UiSettings {
    fn default() -> Self {
        UiSettings {
            ohif_dir: PathBuf::from("ohif"),
            guide_dir: PathBuf::from("docs/book"),
            assets_dir: None,
        }
    }
}
