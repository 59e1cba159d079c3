//! Who may call the HTTP API: scopes, credentials, and the principal a request was
//! authenticated as.
//!
//! - [`settings`]: the `[auth]` configuration section.
//! - [`jwt`]: bearer tokens (HS256 with a secret, RS256/ES256 with a PEM key), issuing them.
//! - [`keys`]: API keys (`x-api-key`), stored as SHA-256 hashes.
//! - [`rate_limit`]: per-principal token buckets.
//! - [`audit`]: the `audit_log` of patient data reads.
//! - [`cli`]: `radstream keys …` and `radstream token issue`.
//!
//! [`Authenticator`] ties them together for the HTTP layer (`api::auth`), which maps
//! [`AuthError`] to 401/403/429 answers.

pub mod atna;
pub mod audit;
pub mod cli;
pub mod jwt;
pub mod keys;
pub mod rate_limit;
pub mod secret_file;
mod settings;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use serde::Serialize;

pub use settings::{AuthSettings, JwtAlgorithm};

use crate::clock::now_ms;
use crate::db::Database;
use rate_limit::RateLimiter;

/// What a credential allows. `admin` implies the other two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Scope {
    /// Read studies, results, jobs, models and events.
    #[serde(rename = "results:read")]
    ResultsRead,
    /// Start work: reprocess a study, submit images.
    #[serde(rename = "inference:write")]
    InferenceWrite,
    /// Node administration.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::ResultsRead, Scope::InferenceWrite, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ResultsRead => "results:read",
            Scope::InferenceWrite => "inference:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Space-separated scopes (the `scope` claim, the `api_keys.scopes` column); unknown names
    /// are skipped, duplicates dropped.
    pub fn parse_list(s: &str) -> Vec<Scope> {
        let mut out = Vec::new();
        for scope in s.split_whitespace().filter_map(Scope::parse) {
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        out
    }

    /// The space-separated form of `scopes`.
    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::parse(s).ok_or_else(|| {
            format!("unknown scope {s:?} (known: results:read, inference:write, admin)")
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `Authorization: Bearer <jwt>` (or `?access_token=<jwt>`).
    Jwt,
    /// `x-api-key: rsk_…` (or a key given as bearer token or `access_token`).
    ApiKey,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
        }
    }
}

/// Who a request was authenticated as: a request extension on every protected route
/// (handlers take it as an extractor: `principal: Principal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Token `sub`, or the API key's name.
    pub subject: String,
    pub method: AuthMethod,
    pub scopes: Vec<Scope>,
    /// `api_keys.id` for API keys.
    pub key_id: Option<i64>,
}

impl Principal {
    /// Whether the principal holds `scope` (admin holds every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// The rate limiter's key: one bucket per key id or token subject.
    fn rate_key(&self) -> String {
        match self.key_id {
            Some(id) => format!("key:{id}"),
            None => format!("jwt:{}", self.subject),
        }
    }
}

/// Why a request was refused. The `Display` text is the client-facing message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization`, `x-api-key` or `access_token`.
    #[error("Token missing")]
    Missing,
    /// A well-signed token past its `exp`.
    #[error("Token expired")]
    Expired,
    /// A well-signed token whose `nbf` or `iat` (the claim named) lies in the future beyond
    /// the clock leeway.
    #[error("Token not yet valid ({0})")]
    NotYetValid(&'static str),
    /// Malformed, tampered, wrong key, issuer or audience, or an unknown API key.
    #[error("Invalid token")]
    Invalid,
    /// An API key that was revoked.
    #[error("API key revoked")]
    Revoked,
    /// Authenticated, but without the scope the route needs.
    #[error("Missing scope: {0}")]
    MissingScope(Scope),
    /// Over `auth.rate_limit_per_minute`.
    #[error("Rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// The key store could not be read (answered 500; the cause is logged).
    #[error("credential store unavailable: {0}")]
    Backend(String),
}

/// A credential as presented.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// `Authorization: Bearer …` or `?access_token=…`: a JWT, or an API key (`rsk_…`).
    Bearer(&'a str),
    /// `x-api-key: …`.
    ApiKey(&'a str),
}

/// Milliseconds between two `last_used_at` writes for one key.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Checks credentials and scopes; one per node, in `AppState::auth`.
pub struct Authenticator {
    verifier: jwt::Verifier,
    db: Database,
    limiter: Option<RateLimiter>,
    /// When each key's `last_used_at` was last written, so busy keys do not write per request.
    touched: Mutex<HashMap<i64, i64>>,
}

impl Authenticator {
    /// Loads the JWT verification key (creating `<data_dir>/jwt.secret` for HS256 without a
    /// configured secret) and sets up the rate limiter.
    pub fn from_settings(
        settings: &AuthSettings,
        data_dir: &std::path::Path,
        db: Database,
    ) -> Result<Authenticator, jwt::KeyError> {
        Ok(Authenticator {
            verifier: jwt::Verifier::from_settings(settings, data_dir)?,
            db,
            limiter: RateLimiter::new(settings.rate_limit_per_minute),
            touched: Mutex::new(HashMap::new()),
        })
    }

    /// Who the credential belongs to.
    pub async fn authenticate(&self, credential: Credential<'_>) -> Result<Principal, AuthError> {
        match credential {
            Credential::Bearer(t) if !keys::looks_like_key(t) => self.verifier.verify(t),
            Credential::Bearer(k) | Credential::ApiKey(k) => self.api_key(k).await,
        }
    }

    async fn api_key(&self, key: &str) -> Result<Principal, AuthError> {
        let found = keys::find(&self.db, key)
            .await
            .map_err(|e| AuthError::Backend(e.to_string()))?;
        let key = found.ok_or(AuthError::Invalid)?;
        if key.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        self.touch(key.id);
        Ok(Principal {
            subject: key.name,
            method: AuthMethod::ApiKey,
            scopes: key.scopes,
            key_id: Some(key.id),
        })
    }

    /// Writes `last_used_at` in the background, at most once a minute per key.
    fn touch(&self, id: i64) {
        let now = now_ms();
        {
            let mut touched = self
                .touched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match touched.get(&id) {
                Some(&at) if now - at < TOUCH_EVERY_MS => return,
                _ => touched.insert(id, now),
            };
        }
        let db = self.db.clone();
        tokio::spawn(async move {
            if let Err(e) = keys::touch(&db, id, now).await {
                tracing::warn!(key_id = id, error = %e, "cannot record API key use");
            }
        });
    }

    /// Charges the principal's rate limit, then checks it holds `required`.
    pub fn authorize(&self, principal: &Principal, required: Scope) -> Result<(), AuthError> {
        if let Some(limiter) = &self.limiter {
            limiter
                .check(&principal.rate_key())
                .map_err(|retry_after_secs| AuthError::RateLimited { retry_after_secs })?;
        }
        if principal.has(required) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(required))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists_round_trip_and_skip_unknown_names() {
        assert_eq!(
            Scope::parse_list("results:read  openid admin results:read"),
            vec![Scope::ResultsRead, Scope::Admin]
        );
        assert_eq!(
            Scope::join(&[Scope::ResultsRead, Scope::InferenceWrite]),
            "results:read inference:write"
        );
        assert!("nope".parse::<Scope>().is_err());
    }

    #[test]
    fn admin_implies_every_scope() {
        let p = Principal {
            subject: "a".into(),
            method: AuthMethod::Jwt,
            scopes: vec![Scope::Admin],
            key_id: None,
        };
        assert!(Scope::ALL.iter().all(|s| p.has(*s)));
        let r = Principal {
            scopes: vec![Scope::ResultsRead],
            ..p
        };
        assert!(r.has(Scope::ResultsRead));
        assert!(!r.has(Scope::InferenceWrite) && !r.has(Scope::Admin));
    }

    #[test]
    fn messages_are_the_documented_ones() {
        assert_eq!(AuthError::Missing.to_string(), "Token missing");
        assert_eq!(AuthError::Expired.to_string(), "Token expired");
        assert_eq!(AuthError::Invalid.to_string(), "Invalid token");
        assert_eq!(
            AuthError::MissingScope(Scope::ResultsRead).to_string(),
            "Missing scope: results:read"
        );
    }
}
