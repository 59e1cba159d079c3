//! Settings: built-in defaults, then `config/radstream.toml` (the base, found from the working
//! directory), then the file named by `--config` layered on top of it, then
//! `RADSTREAM_<SECTION>__<KEY>` environment variables, into typed sections.
//!
//! Each section, its defaults and its checks live in the module that owns it; this module only
//! aggregates and layers them, and only the wiring code (`cli`, `startup`) reads it. Unknown keys
//! are refused (`deny_unknown_fields`) so a typo never silently falls back to a default. Secrets
//! are `SecretString` and print as `[redacted]`. Relative paths in the `--config` file resolve
//! against that file's folder; those of the base file and the environment against the working
//! directory.

pub mod reference;

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Source};
use serde::{Deserialize, Serialize};

use crate::api::settings::HttpSettings;
use crate::auth::AuthSettings;
use crate::cluster::NodeSettings;
use crate::compat::CompatSettings;
use crate::db::{Database, DatabaseSettings, DbError};
use crate::dicomweb::DicomWebSettings;
use crate::events::EventSettings;
use crate::export::ExportSettings;
use crate::fhir::FhirSettings;
use crate::inference::InferenceSettings;
use crate::ingest::DicomSettings;
use crate::pipeline::PipelineSettings;
use crate::result::TriageSettings;
use crate::retention::RetentionSettings;
use crate::store::StorageSettings;
use crate::study::StudySettings;
use crate::telemetry::LogSettings;
use crate::ui::UiSettings;

/// The base configuration file, looked up from the working directory.
pub const BASE_FILE: &str = "config/radstream.toml";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// DICOM upper-layer listener (C-ECHO, C-STORE SCP).
    pub dicom: DicomSettings,
    /// HTTP API listener.
    pub http: HttpSettings,
    /// Where instance files live and how hard they are pushed to disk.
    pub storage: StorageSettings,
    /// The index database.
    pub database: DatabaseSettings,
    /// This node among several sharing the database: id, roles, heartbeat.
    pub node: NodeSettings,
    /// When a study counts as complete.
    pub study: StudySettings,
    /// HL7 v2 orders in (MLLP listener).
    pub hl7: crate::hl7::Hl7Settings,
    /// Modality Performed Procedure Steps: forwarding to a RIS.
    pub mpps: crate::mpps::MppsSettings,
    /// ONNX ensembles.
    pub inference: InferenceSettings,
    /// The worker that turns completed studies into results.
    pub pipeline: PipelineSettings,
    /// Urgency rules for results.
    pub triage: TriageSettings,
    /// Event fan-out and server-sent event streams.
    pub events: EventSettings,
    /// Vendor-compatible APIs.
    pub compat: CompatSettings,
    /// API credentials: JWT keys, issuing defaults, rate limit.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
    /// FHIR R4 answers (`/fhir`).
    pub fhir: FhirSettings,
    /// DICOMweb (STOW-RS, QIDO-RS, WADO-RS at /dicomweb): CORS origins.
    pub dicomweb: DicomWebSettings,
    /// DICOM outputs of results (SR, overlay) and where they are sent.
    pub export: ExportSettings,
    /// When received instances are removed.
    pub retention: RetentionSettings,
    /// The web pages and the OHIF viewer.
    pub ui: UiSettings,
}

/// A configuration that could not be loaded, with the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

/// A section's check failed: the dotted key and the problem.
impl From<(&'static str, String)> for ConfigError {
    fn from((field, problem): (&'static str, String)) -> Self {
        ConfigError::Invalid { field, problem }
    }
}

/// One line per problem: the dotted key, what is wrong, and where the value came from.
fn describe(err: figment::Error) -> ConfigError {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("{key}: {}{source}", e.kind)
            }
        })
        .collect();
    ConfigError::Parse(lines.join("; "))
}

impl Settings {
    /// Loads defaults, [`BASE_FILE`] if present, `file` on top of it, then `RADSTREAM_`
    /// environment variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_layers(Some(Path::new(BASE_FILE)), file)
    }

    /// [`Self::load`] with the base file named (`None`: no base file).
    pub fn load_layers(base: Option<&Path>, file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(base) = base.filter(|b| b.exists()) {
            fig = fig.merge(Toml::file(base));
        }
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Invalid {
                    field: "--config",
                    problem: format!("{} does not exist", f.display()),
                });
            }
            fig = fig.merge(Toml::file_exact(f));
        }
        // Only RADSTREAM_<SECTION>__<KEY> variables are settings; others with the prefix
        // (RADSTREAM_CONFIG, test knobs) are not.
        fig = fig.merge(
            Env::prefixed("RADSTREAM_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let mut settings: Settings = fig.extract().map_err(describe)?;
        if let Some(f) = file {
            settings.resolve_paths(&fig, f);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Every setting holding a path, with its key.
    fn paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        let mut out = vec![
            ("storage.data_dir", &mut self.storage.data_dir),
            ("inference.models_dir", &mut self.inference.models_dir),
            ("ui.ohif_dir", &mut self.ui.ohif_dir),
            ("ui.guide_dir", &mut self.ui.guide_dir),
        ];
        let tls = &mut self.dicom.tls;
        let optional = [
            (
                "inference.ort_dylib_path",
                &mut self.inference.ort_dylib_path,
            ),
            ("dicom.tls.certificate", &mut tls.certificate),
            ("dicom.tls.private_key", &mut tls.private_key),
            ("dicom.tls.client_ca", &mut tls.client_ca),
            (
                "auth.jwt_public_key_file",
                &mut self.auth.jwt_public_key_file,
            ),
            (
                "auth.jwt_private_key_file",
                &mut self.auth.jwt_private_key_file,
            ),
        ];
        out.extend(
            optional
                .into_iter()
                .filter_map(|(k, p)| Some((k, p.as_mut()?))),
        );
        out.extend(
            self.compat
                .input_roots
                .iter_mut()
                .map(|p| ("compat.input_roots", p)),
        );
        out.extend(
            self.compat
                .output_roots
                .iter_mut()
                .map(|p| ("compat.output_roots", p)),
        );
        for d in &mut self.export.destinations {
            for p in [
                &mut d.tls_ca,
                &mut d.tls_certificate,
                &mut d.tls_private_key,
            ] {
                out.extend(p.as_mut().map(|p| ("export.destinations", p)));
            }
        }
        out
    }

    /// Relative paths that came from `file` now name places beside it, wherever the node was
    /// started from.
    fn resolve_paths(&mut self, fig: &Figment, file: &Path) {
        let Some(folder) = file.parent() else {
            return;
        };
        let from_file = Source::File(file.to_path_buf());
        for (key, path) in self.paths_mut() {
            let came_from_file = fig
                .find_metadata(key)
                .is_some_and(|m| m.source.as_ref() == Some(&from_file));
            if came_from_file && path.is_relative() {
                *path = folder.join(&*path);
            }
        }
    }

    /// Checks values serde cannot, section by section; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.dicom.validate()?;
        self.storage.validate()?;
        self.pipeline.validate()?;
        self.retention.validate()?;
        self.events.validate()?;
        self.study.validate()?;
        self.mpps.validate()?;
        self.node.validate()?;
        self.http.validate()?;
        self.auth.validate()?;
        self.compat.radanalyzer.validate()?;
        self.export.validate()?;
        self.database.validate()?;
        Ok(())
    }

    /// The database URL in force: the configured one, or SQLite in the data folder.
    pub fn database_url(&self) -> String {
        self.database.url(&self.storage.data_dir)
    }

    /// Opens (without migrating) the index database these settings name.
    pub async fn connect_database(&self) -> Result<Database, DbError> {
        Database::connect(
            &self.database,
            &self.storage.data_dir,
            self.storage.durability,
        )
        .await
    }

    /// The effective configuration as TOML, with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// Logs the effective configuration (secrets redacted) and the folders in force, made
    /// absolute, once at start.
    pub fn log_effective(&self) {
        let absolute = |p: &Path| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        };
        tracing::info!(
            data_dir = %absolute(&self.storage.data_dir),
            models_dir = %absolute(&self.inference.models_dir),
            database = %crate::db::redact_credentials(&self.database_url()),
            "paths in force"
        );
        let json = serde_json::to_string(self).unwrap_or_else(|e| format!("cannot render: {e}"));
        tracing::info!(configuration = %json, "effective configuration (secrets redacted)");
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::ingest::PeerRule;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = Settings::default();
        s.validate().unwrap();
        assert_eq!(s.dicom.port, 11112);
        assert_eq!(s.dicom.ae_title, "RADSTREAM");
        assert_eq!(s.http.port, 8080);
        assert!(s.database_url().starts_with("sqlite://data/radstream.db"));
    }

    #[test]
    fn shipped_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/radstream.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let s: Settings = toml::from_str(&text).unwrap();
        s.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut s = Settings::default();
        s.dicom.ae_title = "THIS TITLE IS FAR TOO LONG".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("dicom.ae_title"), "{e}");
        let mut s = Settings::default();
        s.dicom.max_pdu_length = 10;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_pdu_length"));
        for bad in [-1.0, 150.0, f64::NAN] {
            let mut s = Settings::default();
            s.retention.free_percent_target = bad;
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains("retention.free_percent_target"), "{e}");
        }
        let mut s = Settings::default();
        s.dicom.max_associations_per_peer = 0;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("dicom.max_associations_per_peer"), "{e}");
        let mut s = Settings::default();
        s.dicom.tls.enabled = true;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("dicom.tls"), "{e}");
        let mut s = Settings::default();
        s.dicom.allowed_peers = vec![PeerRule {
            ae_title: "MOD".into(),
            certificate_subject: Some("mod.example".into()),
            ..Default::default()
        }];
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("certificate_subject"), "{e}");
    }

    #[test]
    fn jwt_secret_is_redacted_and_checked() {
        let mut s = Settings::default();
        s.auth.jwt_secret = Some(SecretString::from("hunter2-hunter2-hunter2-hunter2-xyz"));
        s.validate().unwrap();
        let t = s.to_redacted_toml();
        assert!(!t.contains("hunter2"), "{t}");
        assert!(t.contains("jwt_secret = \"[redacted]\""), "{t}");
        assert!(!format!("{s:?}").contains("hunter2"));
        s.auth.jwt_secret = Some(SecretString::from("short"));
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("auth.jwt_secret"), "{e}");
        let mut s = Settings::default();
        s.auth.jwt_algorithm = crate::auth::JwtAlgorithm::ES256;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("auth.jwt_public_key_file"), "{e}");
    }

    #[test]
    fn password_is_redacted() {
        let mut s = Settings::default();
        s.database.url = Some(SecretString::from("postgres://u:hunter2@localhost/db"));
        let t = s.to_redacted_toml();
        assert!(!t.contains("hunter2"), "{t}");
        assert!(t.contains("[redacted]"));
    }

    #[test]
    fn config_file_is_layered_on_the_base_and_its_relative_paths_on_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.toml");
        std::fs::write(
            &base,
            "[dicom]\nae_title = \"BASE\"\n[storage]\ndata_dir = \"base-data\"\n",
        )
        .unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let file = etc.join("node.toml");
        std::fs::write(
            &file,
            "[dicom]\nport = 104\n[inference]\nmodels_dir = \"models\"\n\
             [auth]\njwt_public_key_file = \"/abs/key.pem\"\n\
             [compat]\ninput_roots = [\"in\"]\n",
        )
        .unwrap();
        let s = Settings::load_layers(Some(&base), Some(&file)).unwrap();
        // Both layers count: the base's AE title and folder, the file's port.
        assert_eq!(s.dicom.ae_title, "BASE");
        assert_eq!(s.dicom.port, 104);
        assert_eq!(s.storage.data_dir, PathBuf::from("base-data"));
        // The file's relative paths are beside it; absolute ones stay.
        assert_eq!(s.inference.models_dir, etc.join("models"));
        assert_eq!(s.compat.input_roots, vec![etc.join("in")]);
        assert_eq!(
            s.auth.jwt_public_key_file,
            Some(PathBuf::from("/abs/key.pem"))
        );
        let e = Settings::load_layers(Some(&base), Some(&etc.join("missing.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--config"), "{e}");
    }
}
