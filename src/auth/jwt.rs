//! JSON Web Tokens: resolving the keys from `[auth]`, verifying bearer tokens and issuing them
//! (`radstream token issue`, test helpers).
//!
//! Claims we issue: `sub`, `scope` (space-separated scopes), `iat`, `exp`, `iss`, `aud`, `jti`.
//! Verification requires a valid signature with the configured algorithm only (no `alg`
//! confusion), an unexpired `exp`, an `nbf` and `iat` not in the future, and `iss`/`aud` equal
//! to `auth.issuer`/`auth.audience`; the time claims with `auth.clock_leeway_secs` of skew.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::settings::{AuthSettings, JwtAlgorithm, MIN_SECRET_BYTES};
use super::{AuthError, AuthMethod, Principal, Scope};

/// Name of the generated HS256 secret inside the data folder.
pub const SECRET_FILE: &str = "jwt.secret";

/// Keys that could not be loaded or created, or a token that could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the JWT secret file {path}: {source}")]
    CreateSecret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable {what}: {reason}")]
    BadKey {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("verifying {0:?} tokens needs auth.jwt_public_key_file")]
    NoPublicKey(JwtAlgorithm),
    #[error("issuing {0:?} tokens needs auth.jwt_private_key_file")]
    NoPrivateKey(JwtAlgorithm),
    #[error("cannot sign the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// The claims of a token we issue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before, seconds since the epoch (we issue none; tests and other issuers do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    /// Unique token id (a UUID).
    pub jti: String,
}

/// What verification reads from a token (the spec claims are checked by `jsonwebtoken`).
#[derive(Debug, Deserialize)]
struct Verified {
    sub: String,
    #[serde(default)]
    scope: String,
    /// A NumericDate may have a fraction.
    iat: Option<f64>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

fn now_secs() -> i64 {
    crate::clock::now_ms() / 1000
}

/// The HS256 secret: `auth.jwt_secret` when set, else `<data_dir>/jwt.secret`, created with 32
/// random bytes (hex, mode 0600) when missing. The server and `radstream token issue` both
/// resolve it here, so tokens issued on a fresh machine verify.
pub fn hs256_secret(auth: &AuthSettings, data_dir: &Path) -> Result<SecretString, KeyError> {
    if let Some(s) = auth.configured_secret() {
        return Ok(SecretString::from(s.to_string()));
    }
    let path = data_dir.join(SECRET_FILE);
    let text = super::secret_file::read_or_create(&path, "JWT secret").map_err(|source| {
        KeyError::CreateSecret {
            path: path.clone(),
            source,
        }
    })?;
    secret_from_file(text, &path)
}

fn secret_from_file(text: String, path: &Path) -> Result<SecretString, KeyError> {
    let secret = text.trim();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyError::BadKey {
            what: "JWT secret file",
            path: path.to_path_buf(),
            reason: format!("shorter than {MIN_SECRET_BYTES} bytes"),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "JWT secret file is readable by others; chmod 600 it");
            }
        }
    }
    Ok(SecretString::from(secret.to_string()))
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn bad_key(what: &'static str, path: &Path, e: jsonwebtoken::errors::Error) -> KeyError {
    KeyError::BadKey {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Checks bearer tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway_secs: u64,
}

impl Verifier {
    /// Loads the verification key for `auth.jwt_algorithm` (generating the HS256 secret file
    /// if needed).
    pub fn from_settings(auth: &AuthSettings, data_dir: &Path) -> Result<Verifier, KeyError> {
        let key = match auth.jwt_algorithm {
            JwtAlgorithm::HS256 => {
                let secret = hs256_secret(auth, data_dir)?;
                DecodingKey::from_secret(secret.expose_secret().as_bytes())
            }
            alg => {
                let path = auth
                    .jwt_public_key_file
                    .as_deref()
                    .ok_or(KeyError::NoPublicKey(alg))?;
                let what = "JWT public key";
                let pem = read_pem(what, path)?;
                let key = if alg == JwtAlgorithm::RS256 {
                    DecodingKey::from_rsa_pem(&pem)
                } else {
                    DecodingKey::from_ec_pem(&pem)
                };
                key.map_err(|e| bad_key(what, path, e))?
            }
        };
        let mut validation = Validation::new(algorithm(auth.jwt_algorithm));
        validation.leeway = auth.clock_leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[auth.issuer.as_str()]);
        validation.set_audience(&[auth.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(Verifier {
            key,
            validation,
            leeway_secs: auth.clock_leeway_secs,
        })
    }

    /// The principal a token stands for. Unknown scope names are ignored.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data =
            jsonwebtoken::decode::<Verified>(token, &self.key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid("nbf"),
                    _ => AuthError::Invalid,
                }
            })?;
        // jsonwebtoken does not look at `iat`; a token issued in the future was made by a
        // clock (or a hand) not to be trusted.
        let latest = (now_secs() as f64) + self.leeway_secs as f64;
        if data.claims.iat.is_some_and(|iat| iat > latest) {
            return Err(AuthError::NotYetValid("iat"));
        }
        Ok(Principal {
            subject: data.claims.sub,
            method: AuthMethod::Jwt,
            scopes: Scope::parse_list(&data.claims.scope),
            key_id: None,
        })
    }
}

/// Signs tokens with the configured key.
pub struct Issuer {
    key: EncodingKey,
    algorithm: Algorithm,
    issuer: String,
    audience: String,
    ttl_days: u32,
}

impl Issuer {
    /// HS256: the same secret the server uses; RS256/ES256: `auth.jwt_private_key_file`.
    pub fn from_settings(auth: &AuthSettings, data_dir: &Path) -> Result<Issuer, KeyError> {
        let key = match auth.jwt_algorithm {
            JwtAlgorithm::HS256 => {
                let secret = hs256_secret(auth, data_dir)?;
                EncodingKey::from_secret(secret.expose_secret().as_bytes())
            }
            alg => {
                let path = auth
                    .jwt_private_key_file
                    .as_deref()
                    .ok_or(KeyError::NoPrivateKey(alg))?;
                let what = "JWT private key";
                let pem = read_pem(what, path)?;
                let key = if alg == JwtAlgorithm::RS256 {
                    EncodingKey::from_rsa_pem(&pem)
                } else {
                    EncodingKey::from_ec_pem(&pem)
                };
                key.map_err(|e| bad_key(what, path, e))?
            }
        };
        Ok(Issuer {
            key,
            algorithm: algorithm(auth.jwt_algorithm),
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            ttl_days: auth.token_ttl_days,
        })
    }

    /// Claims for `subject` with `scopes`, valid from now for `ttl`.
    pub fn claims(&self, subject: &str, scopes: &[Scope], ttl: Duration) -> Claims {
        let iat = now_secs();
        Claims {
            sub: subject.to_string(),
            scope: Scope::join(scopes),
            iat,
            nbf: None,
            exp: iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Signs arbitrary claims (tests use it for expired tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.key)
            .map_err(KeyError::Sign)
    }

    /// A token for `subject` valid `days` days (default `auth.token_ttl_days`).
    pub fn issue(
        &self,
        subject: &str,
        scopes: &[Scope],
        days: Option<u32>,
    ) -> Result<String, KeyError> {
        let days = u64::from(days.unwrap_or(self.ttl_days));
        self.sign(&self.claims(subject, scopes, Duration::from_secs(days * 86_400)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::Settings;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-unit-test";

    fn hs_settings(secret: &str) -> Settings {
        let mut s = Settings::default();
        s.auth.jwt_secret = Some(SecretString::from(secret.to_string()));
        s
    }

    fn pair(s: &Settings) -> (Issuer, Verifier) {
        (
            Issuer::from_settings(&s.auth, &s.storage.data_dir).unwrap(),
            Verifier::from_settings(&s.auth, &s.storage.data_dir).unwrap(),
        )
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn good_token_gives_subject_and_scopes() {
        let (issuer, verifier) = pair(&hs_settings(SECRET));
        let token = issuer
            .issue("alice", &[Scope::ResultsRead, Scope::InferenceWrite], None)
            .unwrap();
        let p = verifier.verify(&token).unwrap();
        assert_eq!(p.subject, "alice");
        assert_eq!(p.method, AuthMethod::Jwt);
        assert_eq!(p.scopes, vec![Scope::ResultsRead, Scope::InferenceWrite]);
        assert!(p.has(Scope::ResultsRead) && !p.has(Scope::Admin));
    }

    #[test]
    fn issued_claims_are_complete_and_default_to_the_configured_ttl() {
        let (issuer, _) = pair(&hs_settings(SECRET));
        let token = issuer.issue("bob", &[Scope::Admin], None).unwrap();
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["radstream"]);
        let c = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(SECRET.as_bytes()),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(c.exp - c.iat, 30 * 86_400);
        assert_eq!((c.iss.as_str(), c.aud.as_str()), ("radstream", "radstream"));
        assert_eq!(c.scope, "admin");
        assert!(uuid::Uuid::parse_str(&c.jti).is_ok());
    }

    #[test]
    fn expired_token_is_refused_as_expired() {
        let (issuer, verifier) = pair(&hs_settings(SECRET));
        let mut c = issuer.claims("alice", &[Scope::Admin], DAY);
        c.iat -= 7200;
        c.exp = now_secs() - 3600;
        let token = issuer.sign(&c).unwrap();
        assert!(matches!(verifier.verify(&token), Err(AuthError::Expired)));
    }

    fn sign_with_nbf(issuer: &Issuer, c: &Claims, nbf: Option<i64>) -> String {
        issuer.sign(&Claims { nbf, ..c.clone() }).unwrap()
    }

    #[test]
    fn future_nbf_or_iat_beyond_the_leeway_is_refused_naming_the_claim() {
        let mut s = hs_settings(SECRET);
        s.auth.clock_leeway_secs = 60;
        let (issuer, verifier) = pair(&s);
        let now = now_secs();
        let c = issuer.claims("alice", &[Scope::Admin], DAY);
        let t = sign_with_nbf(&issuer, &c, Some(now + 3600));
        assert_eq!(verifier.verify(&t), Err(AuthError::NotYetValid("nbf")));
        let t = sign_with_nbf(&issuer, &c, Some(now + 30));
        assert!(verifier.verify(&t).is_ok(), "within the leeway");
        let t = sign_with_nbf(&issuer, &c, Some(now - 10));
        assert!(verifier.verify(&t).is_ok());

        let mut future = c.clone();
        future.iat = now + 3600;
        let t = sign_with_nbf(&issuer, &future, None);
        assert_eq!(verifier.verify(&t), Err(AuthError::NotYetValid("iat")));
        future.iat = now + 30;
        let t = sign_with_nbf(&issuer, &future, None);
        assert!(verifier.verify(&t).is_ok(), "within the leeway");

        // A zero leeway is strict.
        s.auth.clock_leeway_secs = 0;
        let (_, strict) = pair(&s);
        let t = sign_with_nbf(&issuer, &c, Some(now + 30));
        assert_eq!(strict.verify(&t), Err(AuthError::NotYetValid("nbf")));
    }

    #[test]
    fn bad_signature_and_tampering_are_invalid() {
        let (issuer, verifier) = pair(&hs_settings(SECRET));
        let (other, _) = pair(&hs_settings("another-secret-that-is-long-enough-000"));
        let forged = other.issue("alice", &[Scope::Admin], None).unwrap();
        assert!(matches!(verifier.verify(&forged), Err(AuthError::Invalid)));

        // Swap the payload for one granting admin, keep the original signature.
        let honest = issuer.issue("alice", &[Scope::ResultsRead], None).unwrap();
        let admin = issuer.issue("alice", &[Scope::Admin], None).unwrap();
        let h: Vec<&str> = honest.split('.').collect();
        let a: Vec<&str> = admin.split('.').collect();
        let tampered = format!("{}.{}.{}", h[0], a[1], h[2]);
        assert!(matches!(
            verifier.verify(&tampered),
            Err(AuthError::Invalid)
        ));

        for garbage in ["", "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
            assert!(
                matches!(verifier.verify(garbage), Err(AuthError::Invalid)),
                "{garbage}"
            );
        }
    }

    #[test]
    fn wrong_audience_or_issuer_is_invalid() {
        let s = hs_settings(SECRET);
        let (issuer, verifier) = pair(&s);
        let mut c = issuer.claims("alice", &[Scope::Admin], DAY);
        c.aud = "someone-else".into();
        let token = issuer.sign(&c).unwrap();
        assert!(matches!(verifier.verify(&token), Err(AuthError::Invalid)));
        let mut c = issuer.claims("alice", &[Scope::Admin], DAY);
        c.iss = "evil".into();
        let token = issuer.sign(&c).unwrap();
        assert!(matches!(verifier.verify(&token), Err(AuthError::Invalid)));
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/jwt")
            .join(name)
    }

    #[test]
    fn rs256_and_es256_verify_with_the_public_key_only() {
        for (alg, stem) in [
            (JwtAlgorithm::RS256, "rs256"),
            (JwtAlgorithm::ES256, "es256"),
        ] {
            let mut s = Settings::default();
            s.auth.jwt_algorithm = alg;
            s.auth.jwt_public_key_file = Some(fixture(&format!("{stem}-public.pem")));
            s.validate().unwrap();
            let verifier = Verifier::from_settings(&s.auth, &s.storage.data_dir).unwrap();
            assert!(matches!(
                Issuer::from_settings(&s.auth, &s.storage.data_dir),
                Err(KeyError::NoPrivateKey(_))
            ));
            s.auth.jwt_private_key_file = Some(fixture(&format!("{stem}-private.pem")));
            let issuer = Issuer::from_settings(&s.auth, &s.storage.data_dir).unwrap();
            let token = issuer.issue("svc", &[Scope::ResultsRead], Some(1)).unwrap();
            assert_eq!(verifier.verify(&token).unwrap().subject, "svc", "{alg:?}");

            // An HS256 token signed with the public key's bytes must not pass (alg confusion).
            let pem = std::fs::read(fixture(&format!("{stem}-public.pem"))).unwrap();
            let forged = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &issuer.claims("svc", &[Scope::Admin], DAY),
                &EncodingKey::from_secret(&pem),
            )
            .unwrap();
            assert!(matches!(verifier.verify(&forged), Err(AuthError::Invalid)));
        }
    }

    #[test]
    fn missing_secret_is_generated_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings::default();
        s.storage.data_dir = dir.path().join("data");
        let issuer = Issuer::from_settings(&s.auth, &s.storage.data_dir).unwrap();
        let path = s.storage.data_dir.join(SECRET_FILE);
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(first.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second resolution (the server after the CLI) reuses the file.
        let verifier = Verifier::from_settings(&s.auth, &s.storage.data_dir).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        let token = issuer.issue("cli", &[Scope::Admin], None).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().subject, "cli");
    }

    #[test]
    fn short_secret_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRET_FILE), "short\n").unwrap();
        let e = hs256_secret(&AuthSettings::default(), dir.path()).unwrap_err();
        assert!(e.to_string().contains("shorter than 32"), "{e}");
    }
}
