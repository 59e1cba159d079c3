//! Test harness: a node on free ports with its own data folder and database (SQLite file, or
//! a fresh PostgreSQL database dropped afterwards), plus synthetic instances and real peers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use radstream::auth::jwt::Issuer;
use radstream::auth::Scope;
use radstream::configuration::Settings;
use radstream::db::Database;
use radstream::startup::Application;
use radstream::store::StorageSettings;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// `on_both_databases!(name => test)` runs `async fn test(db: Db)` as two tests,
/// `name::sqlite` and `name::postgres`.
macro_rules! on_both_databases {
    ($name:ident => $test:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test($crate::helpers::Db::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$test($crate::helpers::Db::Postgres).await;
            }
        }
    };
}
pub(crate) use on_both_databases;

/// Base URL of the PostgreSQL server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("RADSTREAM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A PostgreSQL database with a random name, dropped when the guard is.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let name = format!("radstream_test_{}", uuid::Uuid::new_v4().simple());
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL must be reachable at RADSTREAM_TEST_PG_URL (default 127.0.0.1:5432, database test)");
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        PgDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Runs on a plain thread: Drop cannot await, and the test's runtime may be gone.
        let admin = pg_admin_url();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::Executor::execute(
                        &mut c,
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                    )
                    .await;
                }
            })
        })
        .join();
    }
}

/// The HS256 secret of test nodes (see [`TestApp::token`]).
pub const TEST_JWT_SECRET: &str = "radstream-e2e-test-secret-0123456789abcdef";

/// The phantom-trained models the tests run by default.
pub const DEMO_MODELS: [&str; 2] = ["cxr-demo", "ctr-demo"];

/// Settings for a test node: free ports, fresh folder, short completion windows, a fixed
/// JWT secret.
pub fn test_settings(dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.dicom.host = "127.0.0.1".parse().unwrap();
    s.dicom.port = 0;
    s.http.port = 0;
    s.storage = StorageSettings {
        data_dir: dir.join("data"),
        min_free_bytes: 0,
        min_free_percent: 0.0,
        ..Default::default()
    };
    s.study.quiet_window_ms = 200;
    s.study.stable_age_secs = 5;
    s.inference.models_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    // The phantom models only: the real lung segmenter costs about a second of CPU per image
    // and has its own tests (real_images::), which turn it on.
    s.inference.models = DEMO_MODELS.iter().map(|m| m.to_string()).collect();
    // The phantom-trained findings may raise the urgency in tests (phantoms, not patients).
    s.triage.trust_unvalidated_models = true;
    s.auth.jwt_secret = Some(TEST_JWT_SECRET.to_string().into());
    s
}

/// A node running inside the test process.
pub struct TestApp {
    /// Port 0 on a node without the `ingest` role.
    pub dicom: SocketAddr,
    /// The DICOM TLS listener, when `dicom.tls.enabled`.
    pub dicom_tls: Option<SocketAddr>,
    pub http: SocketAddr,
    pub db: Database,
    pub data_dir: PathBuf,
    /// The settings the node runs with.
    pub settings: Settings,
    cancel: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl TestApp {
    pub async fn spawn(db: Db) -> TestApp {
        Self::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: Db, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = test_settings(dir.path());
        let pg = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(PgDatabase::create().await),
        };
        if let Some(pg) = &pg {
            settings.database.url = Some(pg.url.clone().into());
        }
        tweak(&mut settings);
        let app = Application::build(settings.clone())
            .await
            .expect("build app");
        // A node without the ingest role has no DICOM listener: port 0 stands for none.
        let dicom = app
            .dicom_listener_addr()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let dicom_tls = app.dicom_tls_addr();
        let http = app.http_addr();
        let cancel = app.shutdown_token();
        let handle = tokio::spawn(app.run_until_stopped(false));
        let database = settings
            .connect_database()
            .await
            .expect("test db connection");
        TestApp {
            dicom,
            dicom_tls,
            http,
            db: database,
            data_dir: settings.storage.data_dir.clone(),
            settings,
            cancel,
            handle: Some(handle),
            _dir: dir,
            _pg: pg,
        }
    }

    pub fn dicom_port(&self) -> String {
        self.dicom.port().to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// A JWT the node accepts, for subject `test` with `scopes`, signed with its own key.
    pub fn token(&self, scopes: &[Scope]) -> String {
        Issuer::from_settings(&self.settings.auth, &self.settings.storage.data_dir)
            .expect("test token issuer")
            .issue("test", scopes, Some(1))
            .expect("sign test token")
    }

    /// A JWT signed with the node's key that expired an hour ago.
    pub fn expired_token(&self, scopes: &[Scope]) -> String {
        let issuer = Issuer::from_settings(&self.settings.auth, &self.settings.storage.data_dir)
            .expect("test token issuer");
        let mut claims = issuer.claims("test", scopes, Duration::from_secs(60));
        claims.iat -= 7200;
        claims.exp -= 3600 + 60;
        issuer.sign(&claims).expect("sign test token")
    }

    /// An HTTP client that sends an admin token with every request, for tests of protected
    /// routes that are not about authentication.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {}", self.token(&[Scope::Admin]));
        headers.insert(
            reqwest::header::AUTHORIZATION,
            bearer.parse().expect("header value"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client")
    }

    /// GET `path` as admin and parse the JSON body.
    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let resp = self.client().get(self.url(path)).send().await.expect("GET");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Runs the `radstream` binary against this node's data folder and database (and JWT
    /// secret); returns (success, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        use secrecy::ExposeSecret;
        let mut cmd = Command::new(radstream_bin());
        cmd.args(args)
            .current_dir(self._dir.path())
            .env("RADSTREAM_STORAGE__DATA_DIR", &self.data_dir)
            .env("RADSTREAM_LOG__LEVEL", "warn");
        if let Some(url) = &self.settings.database.url {
            cmd.env("RADSTREAM_DATABASE__URL", url.expose_secret());
        }
        if let Some(secret) = &self.settings.auth.jwt_secret {
            cmd.env("RADSTREAM_AUTH__JWT_SECRET", secret.expose_secret());
        }
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("cli task")
            .expect("run radstream");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Stops the node and waits for it.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(h) = self.handle.take() {
            h.await.expect("app task").expect("app run");
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        count(&self.db, sql).await
    }

    /// Polls `GET /v1/studies/{study}/results` until result `version` is current (or panics
    /// after two minutes); returns its body.
    pub async fn wait_result(&self, study: &str, version: i64) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get_json(&format!("/v1/studies/{study}/results")).await;
            if status == 200 && body["data"]["version"] == version {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no result v{version}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until the study is complete (or panics after `secs`).
    pub async fn wait_complete(&self, study_uid: &str, secs: u64) -> i64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let row = sqlx::query("SELECT status, version FROM studies WHERE study_uid = $1")
                .bind(study_uid)
                .fetch_optional(&self.db.pool)
                .await
                .unwrap();
            if let Some(r) = row {
                if r.get::<String, _>("status") == "complete" {
                    return r.get::<i64, _>("version");
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "study {study_uid} did not complete within {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("radstream=debug,info")
            .with_test_writer()
            .try_init();
    }
}

/// A UID under the 2.25 arc from a fresh UUID.
pub fn new_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// Writes a small synthetic DX instance (explicit VR little endian) and returns its path.
pub fn write_dx(dir: &Path, study: &str, series: &str, sop: &str, rows: u16, cols: u16) -> PathBuf {
    let pixels: Vec<u16> = (0..u32::from(rows) * u32::from(cols))
        .map(|i| ((i * 37) % 4096) as u16)
        .collect();
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION),
        ),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop)),
        DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from("20261122")),
        DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::from("ACC1")),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("DX")),
        DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("TEST^PHANTOM"),
        ),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("PID-TEST-1")),
        DataElement::new(tags::PATIENT_SEX, VR::CS, PrimitiveValue::from("O")),
        DataElement::new(
            tags::BODY_PART_EXAMINED,
            VR::CS,
            PrimitiveValue::from("CHEST"),
        ),
        DataElement::new(tags::VIEW_POSITION, VR::CS, PrimitiveValue::from("PA")),
        DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(study),
        ),
        DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(series),
        ),
        DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from("1")),
        DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from("1")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("MONOCHROME2"),
        ),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ]);
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION)
                .media_storage_sop_instance_uid(sop),
        )
        .expect("meta");
    let path = dir.join(format!("{sop}.dcm"));
    file.write_to_file(&path).expect("write instance");
    path
}

/// `count` instances in `studies` studies (one series each) under `dir`; returns the study
/// UIDs and the paths.
pub fn write_studies(
    dir: &Path,
    studies: usize,
    per_study: usize,
    size: u16,
) -> (Vec<String>, Vec<PathBuf>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut uids = Vec::new();
    let mut paths = Vec::new();
    for _ in 0..studies {
        let study = new_uid();
        let series = new_uid();
        for _ in 0..per_study {
            paths.push(write_dx(dir, &study, &series, &new_uid(), size, size));
        }
        uids.push(study);
    }
    (uids, paths)
}

/// The number `sql` (a `SELECT COUNT(*)` without arguments) counts in `db`.
pub async fn count(db: &Database, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Where the index says the instance `sop` is stored (relative to the data folder), if indexed.
pub async fn indexed_path(db: &Database, sop: &str) -> Option<String> {
    sqlx::query_scalar("SELECT file_path FROM instances WHERE sop_instance_uid = $1")
        .bind(sop)
        .fetch_optional(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("looking {sop} up: {e}"))
}

/// The temporary files under `data_dir/tmp/` (each node's folder `tmp/node-*/` included) that
/// hold (part of) an instance. A node also keeps empty spare files there, made ahead of time;
/// they hold nothing and are not counted.
pub fn instance_parts(data_dir: &Path) -> Vec<PathBuf> {
    let tmp = data_dir.join("tmp");
    let mut folders = vec![tmp.clone()];
    folders.extend(
        std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir()),
    );
    folders
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap().flatten())
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0))
        .map(|e| e.path())
        .collect()
}

/// Waits until [`instance_parts`] finds nothing: a stored instance keeps its temporary name as
/// a second name until its folder is synced (milliseconds after it is answered); a refused or
/// aborted one's file never goes, and the wait fails after 10 s listing what is left.
pub async fn no_instance_parts_left(data_dir: &Path) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = instance_parts(data_dir);
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "temporary files left: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The data set bytes of a Part 10 file (everything after the file meta group).
pub fn data_set_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let meta = dicom_object::meta::FileMetaTable::from_reader(&bytes[128..]).unwrap();
    let start = 128 + 4 + 12 + meta.information_group_length as usize;
    bytes[start..].to_vec()
}

/// Runs a program and returns (success, stdout+stderr), failing clearly if it is missing.
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed by this test (run scripts/setup.sh): {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Async wrapper for [`run`], so a blocking peer does not stall the node under test.
pub async fn run_async(program: &str, args: &[&str]) -> (bool, String) {
    let program = program.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        run(&program, &a)
    })
    .await
    .unwrap()
}

/// The project's Python (the venv made by scripts/setup.sh).
/// pydicom's test files (every transfer syntax the node accepts), from the venv.
pub fn pydicom_files() -> PathBuf {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let py = std::fs::read_dir(&lib)
        .expect("venv lib dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("site-packages/pydicom").is_dir())
        .expect("pydicom in the venv");
    py.join("site-packages/pydicom/data/test_files")
}

pub fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills a peer process when the test ends, however it ends.
pub struct Peer(pub std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A receiver from `tests/python/` (`script`, run with `args`) that prints `listening PORT`
/// first: the process, killed when dropped, and its port. `needs` names what the venv must
/// hold for it.
pub fn python_peer<I, S>(script: &str, args: I, needs: &str) -> (Peer, u16)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::io::BufRead;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut child = Command::new(python())
        .arg(path)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python venv with {needs} (scripts/setup.sh): {e}"));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{script} said {line:?}"));
    (Peer(child), port)
}

/// The cache `scripts/setup.sh` fills (peers, tools, test data): `RADSTREAM_CACHE`, else
/// `~/.cache/radstream`, as the script decides it.
pub fn radstream_cache() -> PathBuf {
    std::env::var_os("RADSTREAM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/radstream")
        })
}

/// The radstream binary built for these tests.
pub fn radstream_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_radstream"))
}

/// One server-sent event as received.
#[derive(Debug, Clone)]
pub struct SseMessage {
    pub id: Option<i64>,
    pub event: String,
    pub data: serde_json::Value,
}

/// A minimal SSE reader over a streaming reqwest response.
pub struct SseClient {
    resp: reqwest::Response,
    buf: String,
    pub comments: usize,
}

impl SseClient {
    /// Opens `path` (with query) using `token`, optionally resuming with `Last-Event-ID`.
    pub async fn open(app: &TestApp, path: &str, token: &str, last_id: Option<i64>) -> SseClient {
        let mut req = reqwest::Client::new()
            .get(app.url(path))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("open SSE");
        assert_eq!(resp.status(), 200, "SSE {path}");
        SseClient {
            resp,
            buf: String::new(),
            comments: 0,
        }
    }

    /// The next event (skipping comments and `retry:`-only blocks); `None` when the stream
    /// ends, panics after `secs` without one.
    pub async fn next(&mut self, secs: u64) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            while let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut id = None;
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !event.is_empty() || !data.is_empty() {
                    return Some(SseMessage {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                    });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no SSE event within {secs} s"))
                .expect("SSE read");
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// Reads until an event of `kind` for `study_uid` arrives; returns everything read.
    pub async fn until(&mut self, kind: &str, study_uid: &str, secs: u64) -> Vec<SseMessage> {
        let mut seen = Vec::new();
        loop {
            let m = self.next(secs).await.expect("stream ended early");
            let done = m.event == kind && m.data["study_uid"] == study_uid;
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}

/// Sends files to the node with DCMTK `storescu` (one association).
pub async fn storescu(app: &TestApp, files: &[PathBuf]) {
    storescu_with(app, &[], files).await
}

/// `storescu` with extra options (e.g. `-xr` to propose RLE Lossless).
pub async fn storescu_with(app: &TestApp, options: &[&str], files: &[PathBuf]) {
    storescu_to(app.dicom.port(), options, files).await
}

/// `storescu` to a node listening on `port` (one started with [`spawn_node`], say).
pub async fn storescu_to(port: u16, options: &[&str], files: &[PathBuf]) {
    let mut args: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    args.extend([
        "-aec".into(),
        "RADSTREAM".into(),
        "127.0.0.1".into(),
        port.to_string(),
    ]);
    args.extend(files.iter().map(|f| f.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = run_async("storescu", &refs).await;
    assert!(ok, "storescu failed: {out}");
}

/// A committed fixture, by its path under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// A new API key with scope `inference:write`.
pub async fn inference_key(app: &TestApp, name: &str) -> String {
    radstream::auth::keys::create(&app.db, name, &[Scope::InferenceWrite])
        .await
        .unwrap()
        .1
}

/// POSTs JSON with the key in `x-api-key`; the status and the JSON answer (null if none).
pub async fn post_with_key(
    app: &TestApp,
    key: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(app.url(path))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Copies a fixture folder's instances under a fresh Study/Series/SOP Instance UID (so tests
/// running in parallel never share a study), returning the new study UID and files.
pub fn fixture_copy(fixture: &str, dest: &Path, copies: usize) -> (String, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/dicom")
        .join(fixture);
    let study = new_uid();
    std::fs::create_dir_all(dest).unwrap();
    let script = r#"
import sys, glob, os
from pydicom import dcmread
src, dest, study, copies = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import uuid
files = sorted(glob.glob(os.path.join(src, "*.dcm")))
n = 0
series = "2.25.%d" % uuid.uuid4().int
for c in range(copies):
    for f in files:
        ds = dcmread(f)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        uid = "2.25.%d" % uuid.uuid4().int
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = n + 1
        out = os.path.join(dest, "%04d.dcm" % n)
        ds.save_as(out, enforce_file_format=True)
        print(out)
        n += 1
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&src)
        .arg(dest)
        .arg(&study)
        .arg(copies.to_string())
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "fixture copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    (study, files)
}

/// Starts `radstream serve` as a separate process (for crash and multi-node tests) on the
/// given ports and data folder, with the shipped models, the test JWT secret and `env` on top.
pub fn spawn_node(
    data: &Path,
    dicom_port: u16,
    http_port: u16,
    env: &[(&str, String)],
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(radstream_bin());
    cmd.arg("serve")
        .env("RADSTREAM_STORAGE__DATA_DIR", data)
        .env("RADSTREAM_STORAGE__MIN_FREE_BYTES", "0")
        .env("RADSTREAM_STORAGE__MIN_FREE_PERCENT", "0")
        .env("RADSTREAM_DICOM__HOST", "127.0.0.1")
        .env("RADSTREAM_DICOM__PORT", dicom_port.to_string())
        .env("RADSTREAM_HTTP__PORT", http_port.to_string())
        .env("RADSTREAM_AUTH__JWT_SECRET", TEST_JWT_SECRET)
        .env(
            "RADSTREAM_INFERENCE__MODELS_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
        )
        .env("RADSTREAM_INFERENCE__MODELS", r#"["cxr-demo","ctr-demo"]"#)
        .env("RADSTREAM_TRIAGE__TRUST_UNVALIDATED_MODELS", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start radstream")
}

/// Orthanc (Debian `orthanc`) as a real peer: the PACS for exports and sends, and with
/// `dicomweb` its DICOMweb plugin at `/dicom-web/`. Killed when dropped, however the test ends.
pub struct Orthanc(std::process::Child);

impl Orthanc {
    /// Starts Orthanc on the given ports with its storage under `dir` (named by the HTTP port,
    /// so a restart on the same ports finds what it stored).
    pub fn start(dir: &Path, dicom_port: u16, http_port: u16, dicomweb: bool) -> Orthanc {
        Self::start_with(dir, dicom_port, http_port, dicomweb, serde_json::json!({}))
    }

    /// [`start`](Self::start) with more configuration keys (`DicomModalities`, `LuaScripts`).
    pub fn start_with(
        dir: &Path,
        dicom_port: u16,
        http_port: u16,
        dicomweb: bool,
        extra: serde_json::Value,
    ) -> Orthanc {
        let cfg = dir.join(format!("orthanc-{http_port}.json"));
        let db = dir.join(format!("orthanc-{http_port}-db"));
        let mut config = serde_json::json!({
            "Name": "radstream-test",
            "StorageDirectory": db,
            "IndexDirectory": db,
            "DicomAet": "ORTHANC",
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": false,
            "Plugins": [],
        });
        if dicomweb {
            config["Plugins"] =
                serde_json::json!(["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]);
            config["DicomWeb"] = serde_json::json!({ "Enable": true, "Root": "/dicom-web/" });
        }
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        std::fs::write(&cfg, config.to_string()).expect("write the Orthanc configuration");
        Orthanc(
            Command::new("Orthanc")
                .arg(&cfg)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("Orthanc is needed (scripts/setup.sh --test)"),
        )
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The header of a DICOM file (everything before the pixel data).
pub fn dicom_header(path: &Path) -> dicom_object::DefaultDicomObject {
    dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A text attribute of `obj`, without its padding.
pub fn dicom_text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .trim()
        .to_string()
}

/// A `/metrics` exposition with the `node="..."` label every sample carries taken out, so
/// tests can name a series as the node's own metrics write it.
pub fn without_node_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut l = line.to_string();
        if let Some(start) = l.find("node=\"") {
            let end = l[start + 6..]
                .find('"')
                .map_or(l.len(), |e| start + 6 + e + 1);
            let mut cut_end = end;
            if l[end..].starts_with(',') {
                cut_end += 1;
            }
            l.replace_range(start..cut_end, "");
            l = l.replace(",}", "}").replace("{}", "");
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}
