//! `[auth]`: how API credentials are checked and issued.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// Signature algorithm of the JSON Web Tokens we accept (and issue).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (`jwt_secret`, or `<data_dir>/jwt.secret`).
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256; verified with `jwt_public_key_file`.
    RS256,
    /// ECDSA P-256 with SHA-256; verified with `jwt_public_key_file`.
    ES256,
}

impl JwtAlgorithm {
    /// Whether the algorithm uses a key pair (public key to verify, private key to issue).
    pub fn is_asymmetric(self) -> bool {
        !matches!(self, JwtAlgorithm::HS256)
    }
}

/// Shortest accepted `jwt_secret`, in bytes (HS256 keys shorter than the hash are weak).
pub const MIN_SECRET_BYTES: usize = 32;

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `HS256`, `RS256` or `ES256`.
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 shared secret (at least 32 bytes). Unset: a random secret is generated on first
    /// start into `<data_dir>/jwt.secret` (mode 0600) and reused. Printed as `[redacted]`.
    #[serde(serialize_with = "redact_secret")]
    #[schemars(with = "Option<String>", extend("x-secret" = true))]
    pub jwt_secret: Option<SecretString>,
    /// PEM public key (RS256/ES256) that verifies tokens.
    pub jwt_public_key_file: Option<PathBuf>,
    /// PEM private key (PKCS#8 for ES256) used only by `radstream token issue` with RS256/ES256.
    pub jwt_private_key_file: Option<PathBuf>,
    /// Required `iss` claim, and the one we issue.
    pub issuer: String,
    /// Required `aud` claim, and the one we issue.
    pub audience: String,
    /// Lifetime of issued tokens, in days, when `--days` is not given.
    pub token_ttl_days: u32,
    /// Requests per minute allowed to one principal (token subject or API key); 0 = no limit.
    pub rate_limit_per_minute: u32,
    /// Clock skew tolerated on a JWT's `exp`, `nbf` and `iat`, in seconds (at most 600).
    pub clock_leeway_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_private_key_file: None,
            issuer: "radstream".into(),
            audience: "radstream".into(),
            token_ttl_days: 30,
            rate_limit_per_minute: 1200,
            clock_leeway_secs: 60,
        }
    }
}

fn redact_secret<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        None => s.serialize_none(),
        Some(_) => s.serialize_str("[redacted]"),
    }
}

impl AuthSettings {
    /// The configured HS256 secret, if any (an empty string counts as unset).
    pub fn configured_secret(&self) -> Option<&str> {
        self.jwt_secret
            .as_ref()
            .map(|s| s.expose_secret())
            .filter(|s| !s.is_empty())
    }

    /// Checks what serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let invalid = |field, problem: &str| Err((field, problem.to_string()));
        if let Some(secret) = self.configured_secret() {
            if secret.len() < MIN_SECRET_BYTES {
                return invalid(
                    "auth.jwt_secret",
                    "must be at least 32 bytes (or leave it unset to use a generated one)",
                );
            }
        }
        if self.jwt_algorithm.is_asymmetric() && self.jwt_public_key_file.is_none() {
            return invalid(
                "auth.jwt_public_key_file",
                "is required with jwt_algorithm RS256 or ES256",
            );
        }
        if self.issuer.trim().is_empty() {
            return invalid("auth.issuer", "must not be empty");
        }
        if self.audience.trim().is_empty() {
            return invalid("auth.audience", "must not be empty");
        }
        if self.clock_leeway_secs > 600 {
            return invalid("auth.clock_leeway_secs", "must be at most 600");
        }
        if !(1..=3650).contains(&self.token_ttl_days) {
            return invalid("auth.token_ttl_days", "must be between 1 and 3650");
        }
        Ok(())
    }
}
