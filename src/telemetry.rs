//! Logging setup. Logs carry study, series and instance UIDs and AE titles, never patient
//! names or IDs, and never secrets.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::{fmt, EnvFilter};

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `tracing` filter, e.g. `info` or `radstream=debug,sqlx=warn` (RUST_LOG wins).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// See [`LogSettings::format`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
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

/// Installs the global subscriber (RUST_LOG wins over the configured level). Safe to call
/// twice; the second call does nothing.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a terminal: a log file or journal would keep them as escapes.
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `spawn_blocking` that keeps the caller's span, so logs from pixel decoding or ONNX runs
/// carry the study and job ids.
pub fn spawn_blocking_with_tracing<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}
