//! Settings: `config/radstream.toml` defaults, an optional file named by `--config`, then
//! `RADSTREAM_<SECTION>__<KEY>` environment variables, into typed sections.
//!
//! Unknown keys are refused (`deny_unknown_fields`) so a typo never silently falls back to a
//! default. Secrets are `SecretString` and print as `[redacted]`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::auth::AuthSettings;
use crate::events::EventSettings;
use crate::inference::InferenceSettings;
use crate::pipeline::PipelineSettings;
use crate::result::TriageSettings;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
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
    /// When a study counts as complete.
    pub study: StudySettings,
    /// ONNX ensembles.
    pub inference: InferenceSettings,
    /// The worker that turns completed studies into results.
    pub pipeline: PipelineSettings,
    /// Urgency rules for results.
    pub triage: TriageSettings,
    /// Event fan-out and server-sent event streams.
    pub events: EventSettings,
    /// Vendor-compatible APIs.
    pub compat: crate::compat::CompatSettings,
    /// API credentials: JWT keys, issuing defaults, rate limit.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
    /// FHIR R4 answers (`/fhir`).
    pub fhir: crate::fhir::FhirSettings,
    /// DICOMweb (STOW-RS, QIDO-RS, WADO-RS at /dicomweb): CORS origins.
    pub dicomweb: crate::dicomweb::DicomWebSettings,
    /// DICOM outputs of results (SR, overlay) and where they are sent.
    pub export: crate::export::ExportSettings,
    /// When received instances are removed.
    pub retention: crate::retention::RetentionSettings,
}

/// `[dicom]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomSettings {
    /// Address the SCP binds to.
    pub host: IpAddr,
    /// TCP port of the SCP (0 picks a free one).
    pub port: u16,
    /// Our AE title: associations calling another title are rejected (reason 7).
    pub ae_title: String,
    /// Whether the called AE title must equal `ae_title`.
    pub check_called_ae: bool,
    /// Largest PDU we accept, in bytes (dicom-rs's default is 16 KiB).
    pub max_pdu_length: u32,
    /// Associations served at once; further ones are rejected (transient, local limit exceeded).
    pub max_associations: usize,
    /// Associations served at once for one peer address; further ones are rejected likewise.
    pub max_associations_per_peer: usize,
    /// Connections that have not yet sent a whole A-ASSOCIATE-RQ; further ones are closed.
    /// They hold no association slot.
    pub max_pending_connections: usize,
    /// Seconds from the TCP connection (and TLS handshake) to a whole A-ASSOCIATE-RQ (ARTIM).
    #[serde(alias = "artim_timeout_secs")]
    pub pre_association_timeout_secs: u64,
    /// Seconds to wait for the next fragment of a DIMSE message.
    pub dimse_timeout_secs: u64,
    /// Seconds an established association may stay silent between messages.
    pub idle_timeout_secs: u64,
    /// Calling AE titles allowed to associate; empty allows any.
    pub allowed_peers: Vec<PeerRule>,
    /// SOP classes accepted besides (or, with `sop_class_mode = "allow"`, instead of) the
    /// standard storage classes.
    pub sop_classes: Vec<String>,
    /// `all_storage`: every standard storage SOP class plus `sop_classes`;
    /// `allow`: only `sop_classes`; `deny`: every storage class except `sop_classes`.
    pub sop_class_mode: SopClassMode,
    /// The DICOM TLS listener (`[dicom.tls]`).
    pub tls: DicomTlsSettings,
}

/// `[dicom.tls]`: a second port speaking DICOM over TLS (PS3.15 B.1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DicomTlsSettings {
    pub enabled: bool,
    /// TCP port of the TLS listener (0 picks a free one); same address as the plain one.
    pub port: u16,
    /// PEM certificate chain of the node.
    pub certificate: Option<std::path::PathBuf>,
    /// PEM private key of `certificate` (a secret: never logged).
    pub private_key: Option<std::path::PathBuf>,
    /// PEM CA: when set, clients must present a certificate that chains to it.
    pub client_ca: Option<std::path::PathBuf>,
}

impl Default for DicomTlsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            port: 2762,
            certificate: None,
            private_key: None,
            client_ca: None,
        }
    }
}

/// One entry of the calling-AE allow-list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerRule {
    /// Calling AE title.
    pub ae_title: String,
    /// When set, the association must also come from this address.
    #[serde(default)]
    pub host: Option<IpAddr>,
    /// When set, the association must come over TLS with a client certificate whose subject
    /// common name is this (needs `dicom.tls.client_ca`).
    #[serde(default)]
    pub certificate_subject: Option<String>,
}

/// See [`DicomSettings::sop_class_mode`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SopClassMode {
    AllStorage,
    Allow,
    Deny,
}

impl Default for DicomSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 11112,
            ae_title: "RADSTREAM".into(),
            check_called_ae: true,
            max_pdu_length: 262_144,
            max_associations: 64,
            max_associations_per_peer: 16,
            max_pending_connections: 256,
            pre_association_timeout_secs: 5,
            dimse_timeout_secs: 60,
            idle_timeout_secs: 300,
            allowed_peers: Vec::new(),
            sop_classes: Vec::new(),
            sop_class_mode: SopClassMode::AllStorage,
            tls: DicomTlsSettings::default(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address the HTTP API binds to.
    pub host: IpAddr,
    /// TCP port of the HTTP API (0 picks a free one).
    pub port: u16,
    /// Largest request body, in bytes (413 above it).
    pub max_body_bytes: u64,
    /// Seconds a handler may take to start its response (503 after it); streaming bodies
    /// such as server-sent events are not cut.
    pub request_timeout_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            max_body_bytes: 64 * 1024 * 1024,
            request_timeout_secs: 90,
        }
    }
}

/// `storage.durability`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// fsync the file and its folder before acknowledging (survives power loss).
    Fsync,
    /// Leave flushing to the OS (survives a process crash, not a power loss).
    Os,
}

/// `storage.on_duplicate`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// Keep the stored copy and discard the new one (still answered 0000); with no stored
    /// file left, the new one is stored.
    Keep,
    /// Replace the stored copy with the new one.
    Replace,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Data folder: instance files, temporary files and the default SQLite database.
    pub data_dir: PathBuf,
    /// See [`Durability`].
    pub durability: Durability,
    /// See [`DuplicatePolicy`].
    pub on_duplicate: DuplicatePolicy,
    /// Refuse new instances (A700) when fewer than this many bytes are free...
    pub min_free_bytes: u64,
    /// ...or when less than this percentage of the volume is free.
    pub min_free_percent: f64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            durability: Durability::Fsync,
            on_duplicate: DuplicatePolicy::Keep,
            min_free_bytes: 2_000_000_000,
            min_free_percent: 5.0,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`; empty means `sqlite://<data_dir>/radstream.db`.
    #[serde(serialize_with = "redact_url")]
    pub url: Option<SecretString>,
    /// Largest number of pooled connections.
    pub max_connections: Option<u32>,
}

/// `[study]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudySettings {
    /// Milliseconds of quiet after the last association sending the study is released.
    pub quiet_window_ms: u64,
    /// Seconds without a new instance after which a study completes anyway (aborted
    /// associations, studies that trickle in over many associations).
    pub stable_age_secs: u64,
}

impl Default for StudySettings {
    fn default() -> Self {
        Self {
            quiet_window_ms: 150,
            stable_age_secs: 30,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `tracing` filter, e.g. `info` or `radstream=debug,sqlx=warn` (RUST_LOG wins).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// See [`LogSettings::format`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
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

fn redact_url<S: Serializer>(url: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        None => s.serialize_none(),
        Some(u) => s.serialize_str(&redact_credentials(u.expose_secret())),
    }
}

/// Replaces the password of a URL (`postgres://user:pw@host`) by `[redacted]`.
pub fn redact_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.password() {
            Some(pw) => url.replacen(&format!(":{pw}@"), ":[redacted]@", 1),
            None => url.to_string(),
        },
        Err(_) => url.to_string(),
    }
}

impl Settings {
    /// Loads defaults, `config/radstream.toml` if present in the working directory (unless
    /// `file` is given), `file`, then `RADSTREAM_` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(f) => {
                if !f.exists() {
                    return Err(ConfigError::Invalid {
                        field: "--config",
                        problem: format!("{} does not exist", f.display()),
                    });
                }
                fig = fig.merge(Toml::file(f));
            }
            None => {
                let base = Path::new("config/radstream.toml");
                if base.exists() {
                    fig = fig.merge(Toml::file(base));
                }
            }
        }
        // Only RADSTREAM_<SECTION>__<KEY> variables are settings; others with the prefix
        // (RADSTREAM_CONFIG, test knobs) are not.
        fig = fig.merge(
            Env::prefixed("RADSTREAM_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let settings: Settings = fig.extract().map_err(describe)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values serde cannot: ranges and formats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.to_string(),
            })
        };
        let ae = &self.dicom.ae_title;
        if ae.trim().is_empty() || ae.len() > 16 || !ae.chars().all(|c| c.is_ascii() && c != '\\') {
            return invalid(
                "dicom.ae_title",
                "must be 1 to 16 ASCII characters without a backslash",
            );
        }
        for p in &self.dicom.allowed_peers {
            if p.ae_title.trim().is_empty() || p.ae_title.len() > 16 {
                return invalid("dicom.allowed_peers.ae_title", "must be 1 to 16 characters");
            }
        }
        if !(4096..=16_777_216).contains(&self.dicom.max_pdu_length) {
            return invalid(
                "dicom.max_pdu_length",
                "must be between 4096 and 16777216 bytes",
            );
        }
        if self.dicom.max_associations == 0 {
            return invalid("dicom.max_associations", "must be at least 1");
        }
        if self.dicom.max_associations_per_peer == 0 {
            return invalid("dicom.max_associations_per_peer", "must be at least 1");
        }
        if self.dicom.max_pending_connections == 0 {
            return invalid("dicom.max_pending_connections", "must be at least 1");
        }
        let tls = &self.dicom.tls;
        if tls.enabled && (tls.certificate.is_none() || tls.private_key.is_none()) {
            return invalid(
                "dicom.tls",
                "enabled = true needs certificate and private_key (PEM files)",
            );
        }
        if self
            .dicom
            .allowed_peers
            .iter()
            .any(|p| p.certificate_subject.is_some())
            && !(tls.enabled && tls.client_ca.is_some())
        {
            return invalid(
                "dicom.allowed_peers.certificate_subject",
                "needs dicom.tls.enabled and dicom.tls.client_ca (client certificates)",
            );
        }
        if self.dicom.pre_association_timeout_secs == 0
            || self.dicom.dimse_timeout_secs == 0
            || self.dicom.idle_timeout_secs == 0
        {
            return invalid(
                "dicom.*_timeout_secs",
                "time-outs must be at least 1 second",
            );
        }
        if self.dicom.sop_class_mode == SopClassMode::Allow && self.dicom.sop_classes.is_empty() {
            return invalid(
                "dicom.sop_classes",
                "sop_class_mode = \"allow\" needs at least one SOP class UID",
            );
        }
        if !(0.0..100.0).contains(&self.storage.min_free_percent) {
            return invalid("storage.min_free_percent", "must be in [0, 100)");
        }
        if self.pipeline.workers == 0 || self.pipeline.workers > 64 {
            return invalid("pipeline.workers", "must be 1..=64");
        }
        if self.retention.interval_secs == 0 {
            return invalid("retention.interval_secs", "must be at least 1");
        }
        if !(0.0..=100.0).contains(&self.retention.free_percent_target) {
            return invalid("retention.free_percent_target", "must be in [0, 100]");
        }
        if self.pipeline.lease_secs == 0 {
            return invalid("pipeline.lease_secs", "must be at least 1");
        }
        if self.pipeline.max_attempts == 0 {
            return invalid("pipeline.max_attempts", "must be at least 1");
        }
        if self.pipeline.max_images_per_study == 0 {
            return invalid("pipeline.max_images_per_study", "must be at least 1");
        }
        if self.events.heartbeat_secs == 0 {
            return invalid("events.heartbeat_secs", "must be at least 1");
        }
        if self.events.buffer < 16 {
            return invalid("events.buffer", "must be at least 16");
        }
        if self.study.stable_age_secs == 0 {
            return invalid("study.stable_age_secs", "must be at least 1");
        }
        if self.http.max_body_bytes < 1024 {
            return invalid("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.request_timeout_secs == 0 {
            return invalid("http.request_timeout_secs", "must be at least 1");
        }
        self.auth.validate()?;
        self.compat
            .radanalyzer
            .validate()
            .map_err(|(field, problem)| ConfigError::Invalid { field, problem })?;
        self.export
            .validate()
            .map_err(|(field, problem)| ConfigError::Invalid { field, problem })?;
        if let Some(url) = &self.database.url {
            let u = url.expose_secret();
            if !(u.starts_with("sqlite:")
                || u.starts_with("postgres:")
                || u.starts_with("postgresql:"))
            {
                return invalid(
                    "database.url",
                    "must start with sqlite:, postgres: or postgresql:",
                );
            }
        }
        Ok(())
    }

    /// The database URL in force: the configured one, or SQLite in the data folder.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(u) if !u.expose_secret().is_empty() => u.expose_secret().to_string(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.storage.data_dir.join("radstream.db").display()
            ),
        }
    }

    /// The effective configuration as TOML, with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
