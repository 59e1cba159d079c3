//! API keys (`x-api-key` header): generated as `rsk_` + 40 base62 characters, stored only as the
//! SHA-256 hex of the whole key plus a short display prefix, and revoked by setting
//! `revoked_at`. `radstream keys create|list|revoke` manage them.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::Scope;
use crate::db::{now_ms, Database};

/// Every key starts with this, so a leaked key is recognisable (and greppable).
pub const KEY_PREFIX: &str = "rsk_";
/// Random base62 characters after the prefix (about 238 bits).
const RANDOM_CHARS: usize = 40;
/// Characters of the key kept in clear (`key_prefix`) to tell keys apart in listings.
const DISPLAY_CHARS: usize = 12;

/// A stored key, never with its secret.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    /// The first characters of the key, e.g. `rsk_8fKq2LmZ`.
    pub key_prefix: String,
    pub scopes: Vec<Scope>,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// Why a key operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("invalid key name: {0}")]
    InvalidName(&'static str),
    #[error("an active API key named {0:?} already exists (revoke it first)")]
    DuplicateName(String),
    #[error("a key needs at least one scope")]
    NoScope,
    #[error("no API key with id or name {0:?}")]
    NotFound(String),
    #[error("API key {0} is already revoked")]
    AlreadyRevoked(i64),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// A fresh random key.
pub fn generate() -> String {
    let random = Alphanumeric.sample_string(&mut rand::rng(), RANDOM_CHARS);
    format!("{KEY_PREFIX}{random}")
}

/// What is stored: lowercase hex SHA-256 of the whole key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether a credential looks like one of our keys (as opposed to a JWT).
pub fn looks_like_key(credential: &str) -> bool {
    credential.starts_with(KEY_PREFIX)
}

fn validate_name(name: &str) -> Result<(), KeyStoreError> {
    if name.trim().is_empty() || name.len() > 64 {
        return Err(KeyStoreError::InvalidName("must be 1 to 64 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(KeyStoreError::InvalidName(
            "must not contain control characters",
        ));
    }
    if name.parse::<i64>().is_ok() {
        return Err(KeyStoreError::InvalidName(
            "must not be a number (numbers name key ids)",
        ));
    }
    Ok(())
}

const COLUMNS: &str = "id, name, key_prefix, scopes, created_at, revoked_at, last_used_at";

fn from_row(r: &AnyRow) -> ApiKey {
    ApiKey {
        id: r.get("id"),
        name: r.get("name"),
        key_prefix: r.get("key_prefix"),
        scopes: Scope::parse_list(&r.get::<String, _>("scopes")),
        created_at: r.get("created_at"),
        revoked_at: r.get("revoked_at"),
        last_used_at: r.get("last_used_at"),
    }
}

/// Stores a new key and returns it with the secret, which is shown once and never again.
pub async fn create(
    db: &Database,
    name: &str,
    scopes: &[Scope],
) -> Result<(ApiKey, String), KeyStoreError> {
    validate_name(name)?;
    if scopes.is_empty() {
        return Err(KeyStoreError::NoScope);
    }
    let active: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .fetch_one(&db.pool)
            .await?;
    if active > 0 {
        return Err(KeyStoreError::DuplicateName(name.to_string()));
    }
    let key = generate();
    let row = sqlx::query(&format!(
        "INSERT INTO api_keys (name, key_hash, key_prefix, scopes, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(name)
    .bind(hash(&key))
    .bind(&key[..DISPLAY_CHARS])
    .bind(Scope::join(scopes))
    .bind(now_ms())
    .fetch_one(&db.pool)
    .await?;
    Ok((from_row(&row), key))
}

/// All keys, oldest first.
pub async fn list(db: &Database) -> Result<Vec<ApiKey>, sqlx::Error> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY id"))
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// The key with this secret, revoked or not.
pub async fn find(db: &Database, key: &str) -> Result<Option<ApiKey>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1"
    ))
    .bind(hash(key))
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.as_ref().map(from_row))
}

/// Revokes by id (a number) or by name (the active key of that name). Takes effect at the next
/// request: keys are looked up on every request.
pub async fn revoke(db: &Database, id_or_name: &str) -> Result<ApiKey, KeyStoreError> {
    let row = match id_or_name.parse::<i64>() {
        Ok(id) => {
            sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
                .bind(id)
                .fetch_optional(&db.pool)
                .await?
        }
        Err(_) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE name = $1 \
                 ORDER BY (revoked_at IS NULL) DESC, id DESC LIMIT 1"
            ))
            .bind(id_or_name)
            .fetch_optional(&db.pool)
            .await?
        }
    };
    let key = row
        .as_ref()
        .map(from_row)
        .ok_or_else(|| KeyStoreError::NotFound(id_or_name.to_string()))?;
    if key.revoked_at.is_some() {
        return Err(KeyStoreError::AlreadyRevoked(key.id));
    }
    let now = now_ms();
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(key.id)
        .execute(&db.pool)
        .await?;
    Ok(ApiKey {
        revoked_at: Some(now),
        ..key
    })
}

/// Records a use of the key (callers throttle how often).
pub async fn touch(db: &Database, id: i64, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(at)
        .bind(id)
        .execute(&db.pool)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_base62() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(looks_like_key(&a));
        assert_eq!(a.len(), KEY_PREFIX.len() + RANDOM_CHARS);
        assert!(a[KEY_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn hash_is_sha256_hex() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let k = generate();
        assert_eq!(hash(&k), hash(&k));
        assert_eq!(hash(&k).len(), 64);
        assert!(!hash(&k).contains(&k[KEY_PREFIX.len()..]));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("pacs-viewer").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("42").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }

    async fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, None, crate::configuration::Durability::Os)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn create_find_list_revoke() {
        let (_dir, db) = db().await;
        let (k, secret) = create(&db, "viewer", &[Scope::ResultsRead]).await.unwrap();
        assert_eq!(k.key_prefix, &secret[..DISPLAY_CHARS]);
        assert_eq!(find(&db, &secret).await.unwrap(), Some(k.clone()));
        assert_eq!(find(&db, "rsk_nope").await.unwrap(), None);
        assert!(matches!(
            create(&db, "viewer", &[Scope::Admin]).await,
            Err(KeyStoreError::DuplicateName(_))
        ));
        let stored: String = sqlx::query_scalar("SELECT key_hash FROM api_keys")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(stored, hash(&secret));
        let r = revoke(&db, "viewer").await.unwrap();
        assert!(r.revoked_at.is_some());
        assert!(matches!(
            revoke(&db, &k.id.to_string()).await,
            Err(KeyStoreError::AlreadyRevoked(_))
        ));
        // The name is free again once revoked.
        let (k2, _) = create(&db, "viewer", &[Scope::Admin]).await.unwrap();
        touch(&db, k2.id, 123).await.unwrap();
        let all = list(&db).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].last_used_at, Some(123));
        assert!(matches!(
            revoke(&db, "ghost").await,
            Err(KeyStoreError::NotFound(_))
        ));
    }
}
