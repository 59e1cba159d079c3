//! `[http]`: the HTTP listener's address and its request limits.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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

impl HttpSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_body_bytes < 1024 {
            return Err(("http.max_body_bytes", "must be at least 1024".into()));
        }
        if self.request_timeout_secs == 0 {
            return Err(("http.request_timeout_secs", "must be at least 1".into()));
        }
        Ok(())
    }
}
