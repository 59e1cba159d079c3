//! The object store behind the data folder (`storage.backend = "s3"`): instance files and
//! derived objects kept in an S3-compatible bucket under the same relative paths as on disk
//! (`<prefix>instances/<study>/<series>/<sop>.dcm`, `<prefix>derived/...`).
//!
//! [`Bucket`] is the one type the rest of the store talks to: whole files up (one PUT for a
//! small one, a multipart upload streamed from the file for a large one), whole files down
//! (streamed to a temporary file, renamed into place), byte ranges, deletes and listings.
//! It wraps any [`object_store::ObjectStore`]; [`Bucket::open`] builds the S3 one from
//! `[storage.s3]`. Each request is counted ([`Bucket::requests`]), for `/metrics` and the
//! benchmark's per-instance cost.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::settings::S3Settings;

/// Errors of the object store, with the key concerned.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {key} is not in the bucket")]
    NotFound { key: String },
    #[error("object store request on {key} failed: {source}")]
    Store {
        key: String,
        source: object_store::Error,
    },
    #[error("local file {path} for object {key}: {source}")]
    Local {
        key: String,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot configure the object store: {0}")]
    Config(String),
}

impl ObjectError {
    fn store(key: &Key, source: object_store::Error) -> ObjectError {
        match source {
            object_store::Error::NotFound { .. } => ObjectError::NotFound {
                key: key.to_string(),
            },
            source => ObjectError::Store {
                key: key.to_string(),
                source,
            },
        }
    }

    fn local(key: &Key, path: &Path) -> impl FnOnce(std::io::Error) -> ObjectError {
        let (key, path) = (key.to_string(), path.display().to_string());
        move |source| ObjectError::Local { key, path, source }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ObjectError::NotFound { .. })
    }
}

/// Requests made to the store, by kind, since the node started.
#[derive(Debug, Default)]
pub struct Requests {
    /// Single PUTs.
    pub put: AtomicU64,
    /// Multipart uploads: one each for create and complete, plus `parts`.
    pub multipart: AtomicU64,
    pub parts: AtomicU64,
    /// Whole GETs and ranged GETs.
    pub get: AtomicU64,
    pub head: AtomicU64,
    pub delete: AtomicU64,
    /// LIST pages are counted as one per listing call.
    pub list: AtomicU64,
}

impl Requests {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(kind, count)` pairs, multipart counting its create and complete.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("put", g(&self.put)),
            ("multipart", 2 * g(&self.multipart)),
            ("part", g(&self.parts)),
            ("get", g(&self.get)),
            ("head", g(&self.head)),
            ("delete", g(&self.delete)),
            ("list", g(&self.list)),
        ]
    }
}

/// One listed object: its path relative to the prefix, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub rel: String,
    pub size: u64,
}

/// A bucket (and key prefix) holding the node's files.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `""` or `"site-a/"`.
    prefix: String,
    multipart_threshold: u64,
    part_size: usize,
    requests: Arc<Requests>,
}

/// Bytes read from a file at a time while streaming it into a multipart upload.
const READ_CHUNK: usize = 1 << 20;
/// Parts of one multipart upload in flight at once (memory: this many parts plus one).
const PART_CONCURRENCY: usize = 2;

impl Bucket {
    /// The S3 bucket of `settings`. Without an access key pair the ambient AWS credentials are
    /// used (`AWS_ACCESS_KEY_ID`...), and with none of those either and an endpoint set,
    /// requests go unsigned (a store that allows anonymous access).
    pub fn open(settings: &S3Settings) -> Result<Bucket, ObjectError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_allow_http(settings.allow_http)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(settings.allow_http)
                    .with_connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
                    .with_timeout(Duration::from_millis(settings.request_timeout_ms)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: settings.max_retries,
                retry_timeout: Duration::from_millis(settings.retry_timeout_ms),
            });
        if !settings.endpoint.is_empty() {
            builder = builder.with_endpoint(&settings.endpoint);
        }
        match settings.credentials() {
            Some((id, secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret)
            }
            None if !settings.endpoint.is_empty()
                && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() =>
            {
                builder = builder.with_skip_signature(true)
            }
            None => {}
        }
        let store = builder
            .build()
            .map_err(|e| ObjectError::Config(e.to_string()))?;
        Ok(Bucket::new(
            Arc::new(store),
            &settings.prefix,
            settings.multipart_threshold_bytes,
            settings.multipart_part_bytes,
        ))
    }

    /// A bucket on any object store (the S3 one, or another for a tool).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        multipart_threshold: u64,
        part_size: u64,
    ) -> Bucket {
        let prefix = prefix.trim_matches('/');
        Bucket {
            store,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            multipart_threshold: multipart_threshold.max(1),
            part_size: usize::try_from(part_size).unwrap_or(usize::MAX),
            requests: Arc::default(),
        }
    }

    /// The requests made so far.
    pub fn requests(&self) -> &Requests {
        &self.requests
    }

    /// The key of a path relative to the data folder.
    pub fn key(&self, rel: &Path) -> Key {
        let rel = rel.to_string_lossy();
        Key::from(format!("{}{}", self.prefix, rel.trim_start_matches('/')))
    }

    /// Puts the file at `local` under `rel` and returns once the store has confirmed it: one
    /// PUT below the multipart threshold, else a multipart upload streamed from the file
    /// (never more than a few parts in memory), aborted on failure.
    pub async fn put_file(&self, rel: &Path, local: &Path) -> Result<u64, ObjectError> {
        let key = self.key(rel);
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(ObjectError::local(&key, local))?;
        let size = file
            .metadata()
            .await
            .map_err(ObjectError::local(&key, local))?
            .len();
        if size < self.multipart_threshold {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf)
                .await
                .map_err(ObjectError::local(&key, local))?;
            Requests::count(&self.requests.put);
            self.store
                .put(&key, PutPayload::from(buf))
                .await
                .map_err(|e| ObjectError::store(&key, e))?;
            return Ok(size);
        }
        Requests::count(&self.requests.multipart);
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|e| ObjectError::store(&key, e))?;
        let mut write = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut buf = vec![0u8; READ_CHUNK];
        let streamed: Result<(), ObjectError> = async {
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(ObjectError::local(&key, local))?;
                if n == 0 {
                    return Ok(());
                }
                write
                    .wait_for_capacity(PART_CONCURRENCY)
                    .await
                    .map_err(|e| ObjectError::store(&key, e))?;
                write.write(&buf[..n]);
            }
        }
        .await;
        let parts = size.div_ceil(self.part_size as u64);
        self.requests.parts.fetch_add(parts, Ordering::Relaxed);
        if let Err(e) = streamed {
            let _ = write.abort().await;
            return Err(e);
        }
        write
            .finish()
            .await
            .map_err(|e| ObjectError::store(&key, e))?;
        Ok(size)
    }

    /// Fetches `rel` into `dest`: streamed to `tmp` first, synced, then renamed, so `dest` is
    /// never seen half written. `tmp` is removed on failure.
    pub async fn get_to_file(
        &self,
        rel: &Path,
        tmp: &Path,
        dest: &Path,
    ) -> Result<u64, ObjectError> {
        let key = self.key(rel);
        let res = self.download(&key, tmp, dest).await;
        if res.is_err() {
            let _ = tokio::fs::remove_file(tmp).await;
        }
        res
    }

    async fn download(&self, key: &Key, tmp: &Path, dest: &Path) -> Result<u64, ObjectError> {
        Requests::count(&self.requests.get);
        let got = self
            .store
            .get(key)
            .await
            .map_err(|e| ObjectError::store(key, e))?;
        let mut out = tokio::fs::File::create(tmp)
            .await
            .map_err(ObjectError::local(key, tmp))?;
        let mut stream = got.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ObjectError::store(key, e))?;
            size += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(ObjectError::local(key, tmp))?;
        }
        out.flush().await.map_err(ObjectError::local(key, tmp))?;
        drop(out);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(ObjectError::local(key, parent))?;
        }
        tokio::fs::rename(tmp, dest)
            .await
            .map_err(ObjectError::local(key, dest))?;
        Ok(size)
    }

    /// The bytes `range` of `rel` (cut short at its end).
    pub async fn get_range(&self, rel: &Path, range: Range<u64>) -> Result<Bytes, ObjectError> {
        let key = self.key(rel);
        Requests::count(&self.requests.get);
        self.store
            .get_range(&key, range)
            .await
            .map_err(|e| ObjectError::store(&key, e))
    }

    /// The size of `rel` in the bucket, `None` when it is not there.
    pub async fn size(&self, rel: &Path) -> Result<Option<u64>, ObjectError> {
        let key = self.key(rel);
        Requests::count(&self.requests.head);
        match self.store.head(&key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ObjectError::store(&key, e)),
        }
    }

    /// Deletes `rel`; one already gone counts as deleted.
    pub async fn delete(&self, rel: &Path) -> Result<(), ObjectError> {
        let key = self.key(rel);
        Requests::count(&self.requests.delete);
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(ObjectError::store(&key, e)),
        }
    }

    /// Every object under `rel_prefix` (a folder relative to the data folder, such as
    /// `instances`), with paths relative to the bucket's prefix.
    pub async fn list(&self, rel_prefix: &Path) -> Result<Vec<Listed>, ObjectError> {
        let key = self.key(rel_prefix);
        Requests::count(&self.requests.list);
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(&key));
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| ObjectError::store(&key, e))?;
            let full = meta.location.to_string();
            let rel = full.strip_prefix(&self.prefix).unwrap_or(&full).to_string();
            out.push(Listed {
                rel,
                size: meta.size,
            });
        }
        Ok(out)
    }
}

/// A temporary name beside the node's other temporary files for a download of `dest`.
pub fn download_name(tmp_dir: &Path) -> PathBuf {
    tmp_dir.join(format!("{}.fetch", uuid::Uuid::new_v4().simple()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn bucket(threshold: u64) -> Bucket {
        Bucket::new(Arc::new(InMemory::new()), "/site-a/", threshold, 5 << 20)
    }

    /// Small files go up in one PUT, large ones in parts; either comes back whole, by range,
    /// in a listing under the prefix and by size, and goes on delete (twice is fine).
    #[tokio::test]
    async fn files_go_up_and_come_back_whole_by_range_and_by_listing() {
        let dir = tempfile::tempdir().unwrap();
        let b = bucket(1 << 20);
        let small = dir.path().join("small");
        std::fs::write(&small, b"0123456789").unwrap();
        let large = dir.path().join("large");
        let data: Vec<u8> = (0..(11u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&large, &data).unwrap();

        b.put_file(Path::new("instances/1/2/3.dcm"), &small)
            .await
            .unwrap();
        b.put_file(Path::new("derived/1/2/4.dcm"), &large)
            .await
            .unwrap();
        let snapshot = |kind: &str| {
            b.requests()
                .snapshot()
                .into_iter()
                .find(|(k, _)| *k == kind)
                .unwrap()
                .1
        };
        assert_eq!(snapshot("put"), 1);
        assert_eq!(snapshot("part"), 3, "11 MiB in parts of 5 MiB");
        assert_eq!(
            b.key(Path::new("derived/1/2/4.dcm")).as_ref(),
            "site-a/derived/1/2/4.dcm"
        );

        let dest = dir.path().join("cache/derived/4.dcm");
        let tmp = download_name(dir.path());
        let n = b
            .get_to_file(Path::new("derived/1/2/4.dcm"), &tmp, &dest)
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert!(!tmp.exists());
        let head = b
            .get_range(Path::new("derived/1/2/4.dcm"), 5..9)
            .await
            .unwrap();
        assert_eq!(&head[..], &data[5..9]);
        assert_eq!(
            b.list(Path::new("instances")).await.unwrap(),
            vec![Listed {
                rel: "instances/1/2/3.dcm".into(),
                size: 10
            }]
        );
        b.delete(Path::new("instances/1/2/3.dcm")).await.unwrap();
        b.delete(Path::new("instances/1/2/3.dcm")).await.unwrap();
        assert_eq!(
            b.size(Path::new("instances/1/2/3.dcm")).await.unwrap(),
            None
        );
        let missing = b
            .get_to_file(Path::new("instances/1/2/3.dcm"), &tmp, &dest)
            .await
            .unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
        assert!(!tmp.exists());
    }
}
