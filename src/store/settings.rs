//! `[storage]`: the data folder, how hard files are pushed to disk, duplicates, free space,
//! and where instance files live for good (`backend`: the data folder, or an S3 bucket with
//! the data folder as its spool and cache, `[storage.s3]`).

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// Defined beside the database, which obeys it too (SQLite's `synchronous`).
pub use crate::db::Durability;

/// `storage.on_duplicate`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// Keep the stored copy and discard the new one (still answered 0000); with no stored
    /// file left, the new one is stored.
    Keep,
    /// Replace the stored copy with the new one.
    Replace,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// See [`StorageBackend`].
    pub backend: StorageBackend,
    /// `[storage.s3]`, read when `backend = "s3"`.
    pub s3: S3Settings,
}

/// `storage.backend`: where instance files and derived objects live for good.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StorageBackend {
    /// The data folder alone.
    #[default]
    Local,
    /// An S3-compatible bucket; the data folder is the spool of what arrives and a cache of
    /// what is read.
    S3,
}

/// `[storage.s3]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// Base URL of the S3 API (`http://127.0.0.1:8333`); empty means AWS itself, by `region`.
    pub endpoint: String,
    /// Bucket holding the objects; it must exist.
    pub bucket: String,
    pub region: String,
    /// Key prefix in the bucket (`site-a/`), so several deployments can share one bucket.
    pub prefix: String,
    /// Empty: the ambient AWS credentials (environment, instance profile); with an endpoint
    /// that accepts anonymous access, none.
    #[serde(serialize_with = "redact_secret")]
    #[schemars(with = "Option<String>", extend("x-secret" = true))]
    pub access_key_id: Option<SecretString>,
    #[serde(serialize_with = "redact_secret")]
    #[schemars(with = "Option<String>", extend("x-secret" = true))]
    pub secret_access_key: Option<SecretString>,
    /// `endpoint/bucket/key` (most self-hosted stores) instead of `bucket.endpoint/key`.
    pub path_style: bool,
    /// Plain HTTP to the endpoint (a store on the same host or network only).
    pub allow_http: bool,
    /// Time to open a connection to the store, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time one request (a PUT, one part of a multipart upload, a GET) may take, in
    /// milliseconds.
    pub request_timeout_ms: u64,
    /// Retries of a failed request (connection refused, 5xx)...
    pub max_retries: usize,
    /// ...within at most this long, in milliseconds: an instance is refused once it is spent.
    pub retry_timeout_ms: u64,
    /// Objects of at least this many bytes go up as multipart uploads, streamed from the
    /// spool in parts of `multipart_part_bytes`; smaller ones in one PUT.
    pub multipart_threshold_bytes: u64,
    /// Size of one part of a multipart upload (S3 wants at least 5 MiB but for the last).
    pub multipart_part_bytes: u64,
    /// Local copies of objects kept in the data folder, at most this many bytes (0: no limit);
    /// the least recently used copies of objects already in the bucket go first.
    pub cache_max_bytes: u64,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            path_style: true,
            allow_http: false,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            max_retries: 2,
            retry_timeout_ms: 5_000,
            multipart_threshold_bytes: 16 << 20,
            multipart_part_bytes: 8 << 20,
            cache_max_bytes: 0,
        }
    }
}

fn redact_secret<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        None => s.serialize_none(),
        Some(_) => s.serialize_str("[redacted]"),
    }
}

/// Smallest part S3 accepts in a multipart upload (but for the last).
pub const MIN_PART_BYTES: u64 = 5 << 20;

impl S3Settings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.bucket.trim().is_empty() {
            return Err((
                "storage.s3.bucket",
                "is required with storage.backend = \"s3\"".into(),
            ));
        }
        if !self.endpoint.is_empty() {
            match url::Url::parse(&self.endpoint) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" && self.allow_http => {}
                Ok(u) if u.scheme() == "http" => {
                    return Err((
                        "storage.s3.endpoint",
                        "is plain http: set storage.s3.allow_http = true to allow it".into(),
                    ))
                }
                _ => {
                    return Err((
                        "storage.s3.endpoint",
                        "must be an http(s) URL such as https://s3.example.org".into(),
                    ))
                }
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err((
                "storage.s3.secret_access_key",
                "access_key_id and secret_access_key are given together or not at all".into(),
            ));
        }
        if self.multipart_part_bytes < MIN_PART_BYTES {
            return Err((
                "storage.s3.multipart_part_bytes",
                format!("must be at least {MIN_PART_BYTES} (5 MiB, the S3 minimum)"),
            ));
        }
        if self.multipart_threshold_bytes == 0 {
            return Err(("storage.s3.multipart_threshold_bytes", "must be > 0".into()));
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err((
                "storage.s3.request_timeout_ms",
                "connect_timeout_ms and request_timeout_ms must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// The access key pair, when both are set.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        Some((
            self.access_key_id.as_ref()?.expose_secret(),
            self.secret_access_key.as_ref()?.expose_secret(),
        ))
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            durability: Durability::Fsync,
            on_duplicate: DuplicatePolicy::Keep,
            min_free_bytes: 2_000_000_000,
            min_free_percent: 5.0,
            backend: StorageBackend::Local,
            s3: S3Settings::default(),
        }
    }
}

impl StorageSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..100.0).contains(&self.min_free_percent) {
            return Err(("storage.min_free_percent", "must be in [0, 100)".into()));
        }
        if self.backend == StorageBackend::S3 {
            self.s3.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> StorageSettings {
        StorageSettings {
            backend: StorageBackend::S3,
            s3: S3Settings {
                endpoint: "http://127.0.0.1:8333".into(),
                bucket: "b".into(),
                allow_http: true,
                ..S3Settings::default()
            },
            ..StorageSettings::default()
        }
    }

    /// The local backend ignores `[storage.s3]`; with `s3`, each bad value names its key.
    #[test]
    fn s3_settings_are_checked_only_with_the_s3_backend_and_name_the_key() {
        StorageSettings::default().validate().unwrap();
        s3().validate().unwrap();
        let key = |f: &dyn Fn(&mut StorageSettings)| {
            let mut s = s3();
            f(&mut s);
            s.validate().unwrap_err().0
        };
        assert_eq!(key(&|s| s.s3.bucket.clear()), "storage.s3.bucket");
        assert_eq!(key(&|s| s.s3.allow_http = false), "storage.s3.endpoint");
        assert_eq!(
            key(&|s| s.s3.endpoint = "ftp://x".into()),
            "storage.s3.endpoint"
        );
        assert_eq!(
            key(&|s| s.s3.access_key_id = Some("id".to_string().into())),
            "storage.s3.secret_access_key"
        );
        assert_eq!(
            key(&|s| s.s3.multipart_part_bytes = 1 << 20),
            "storage.s3.multipart_part_bytes"
        );
    }

    /// The key pair prints as `[redacted]`, in the printed configuration and in Debug.
    #[test]
    fn the_access_keys_are_redacted() {
        let mut s = s3();
        s.s3.access_key_id = Some("AKIDHUNTER2".to_string().into());
        s.s3.secret_access_key = Some("hunter2-secret".to_string().into());
        let printed = toml::to_string(&s).unwrap();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("secret_access_key = \"[redacted]\""),
            "{printed}"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.s3.credentials(), Some(("AKIDHUNTER2", "hunter2-secret")));
    }
}
