//! `[database]`: which index database, and `storage.durability`, which it obeys too.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// `storage.durability`: how hard writes are pushed to disk, by the instance files and by
/// SQLite (`synchronous`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// fsync the file and its folder before acknowledging (survives power loss).
    Fsync,
    /// Leave flushing to the OS (survives a process crash, not a power loss).
    Os,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`; empty means `sqlite://<data_dir>/radstream.db`.
    #[serde(serialize_with = "redact_url")]
    #[schemars(with = "Option<String>", extend("x-secret" = true))]
    pub url: Option<SecretString>,
    /// Largest number of pooled connections.
    pub max_connections: Option<u32>,
}

impl DatabaseSettings {
    /// The URL in force: the configured one, or SQLite in `data_dir`.
    pub fn url(&self, data_dir: &Path) -> String {
        match &self.url {
            Some(u) if !u.expose_secret().is_empty() => u.expose_secret().to_string(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("radstream.db").display()
            ),
        }
    }

    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(url) = &self.url {
            let u = url.expose_secret();
            if !(u.starts_with("sqlite:")
                || u.starts_with("postgres:")
                || u.starts_with("postgresql:"))
            {
                return Err((
                    "database.url",
                    "must start with sqlite:, postgres: or postgresql:".into(),
                ));
            }
        }
        Ok(())
    }
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
