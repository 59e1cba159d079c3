//! What the benchmark examples share: clocks and percentiles, free ports, a process's CPU
//! and memory, sending a study, reading an SSE stream, the bench's JWT, loading studies,
//! latency statistics, and a node under test with its event stream.
//! Each example includes it with `#[path = "support/mod.rs"] mod support;` (a folder without
//! a `main.rs` is not an example of its own).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use radstream::scu::{self, OutgoingFile, Peer};
use tokio::sync::mpsc;

pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        * 1000.0
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of a sorted slice.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// VmRSS and VmHWM of a process, in MiB.
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User plus system CPU time of a process, in seconds.
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // 12th and stime the 13th; both in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    f.get(11)
        .zip(f.get(12))
        .map_or(f64::NAN, |(u, s)| (u + s) / 100.0)
}

/// Sends one study on one association; returns when the release has completed.
pub async fn send(peer: &Peer, files: &[OutgoingFile]) {
    let results = scu::send_study(peer, files, |_| {})
        .await
        .expect("sending the study");
    for r in results {
        assert_eq!(
            r.status,
            Some(0),
            "C-STORE of {} failed: {r:?}",
            r.path.display()
        );
    }
}

/// One SSE event.
pub struct Msg {
    pub id: i64,
    pub event: String,
    pub data: String,
}

/// Splits an SSE byte stream into events (blocks ending with a blank line).
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8], with_data: bool, mut on: impl FnMut(Msg)) {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].windows(2).position(|w| w == b"\n\n") {
            let block = &self.buf[start..start + pos];
            start += pos + 2;
            let Ok(text) = std::str::from_utf8(block) else {
                continue;
            };
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if with_data {
                    if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
            }
            if let Some(id) = id {
                on(Msg { id, event, data });
            }
        }
        self.buf.drain(..start);
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

pub fn load_studies(dir: &Path) -> Vec<Vec<OutgoingFile>> {
    let files = scu::collect_files(&[dir.to_path_buf()]);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    let (studies, failed) = scu::group_by_study(&files);
    assert!(failed.is_empty(), "unreadable files: {failed:?}");
    studies.into_values().collect()
}

/// An HS256 token with scope `results:read` for a node started with `secret`, valid a day.
pub fn token(secret: &str) -> String {
    let now = radstream::clock::now_ms() / 1000;
    let claims = radstream::auth::jwt::Claims {
        sub: "bench".into(),
        scope: "results:read".into(),
        iat: now,
        nbf: None,
        exp: now + 86_400,
        iss: "radstream".into(),
        aud: "radstream".into(),
        jti: uuid::Uuid::new_v4().to_string(),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing the token")
}

/// Latency figures of one series, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    Stats {
        n: v.len(),
        p50: pct(&v, 50.0),
        p95: pct(&v, 95.0),
        p99: pct(&v, 99.0),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// Opens `/v1/events` and forwards every event with its arrival instant.
pub async fn open_stream(
    http: &reqwest::Client,
    node: &Node,
) -> mpsc::UnboundedReceiver<(Msg, Instant, f64)> {
    let mut resp = http
        .get(format!("{}/v1/events", node.http))
        .bearer_auth(&node.token)
        .send()
        .await
        .expect("GET /v1/events");
    assert!(
        resp.status().is_success(),
        "GET /v1/events: {}",
        resp.status()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut parser = SseParser::default();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let (at, wall) = (Instant::now(), wall_ms());
            parser.feed(&chunk, true, |m| {
                let _ = tx.send((m, at, wall));
            });
        }
    });
    rx
}

/// A `radstream serve` under test: its own data folder, free ports, a fresh JWT secret, and
/// the quiet window given; killed when dropped.
pub struct Node {
    pub child: Child,
    pub dicom: String,
    pub http: String,
    pub token: String,
    _dir: tempfile::TempDir,
}

impl Node {
    pub async fn start(bin: &Path, quiet_ms: u64, log: &Path) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("radstream-bench-pipeline.")
            .tempdir()
            .expect("temp dir");
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let (dicom_port, http_port) = (free_port(), free_port());
        let log_file = std::fs::File::create(log).expect("node log");
        let child = Command::new(bin)
            .arg("serve")
            .env("RADSTREAM_STORAGE__DATA_DIR", dir.path())
            .env("RADSTREAM_DICOM__PORT", dicom_port.to_string())
            .env("RADSTREAM_HTTP__PORT", http_port.to_string())
            .env("RADSTREAM_STUDY__QUIET_WINDOW_MS", quiet_ms.to_string())
            .env("RADSTREAM_AUTH__JWT_SECRET", &secret)
            .env("RADSTREAM_AUTH__RATE_LIMIT_PER_MINUTE", "0")
            .env("RADSTREAM_STORAGE__MIN_FREE_BYTES", "0")
            .env("RADSTREAM_STORAGE__MIN_FREE_PERCENT", "0")
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let token = token(&secret);
        let mut node = Node {
            child,
            dicom: format!("127.0.0.1:{dicom_port}"),
            http: format!("http://127.0.0.1:{http_port}"),
            token,
            _dir: dir,
        };
        node.wait_ready(log).await;
        node
    }

    pub async fn wait_ready(&mut self, log: &Path) {
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the node exited ({status}); see {}", log.display());
            }
            let ping = http.get(format!("{}/ping", self.http)).send().await;
            if ping.is_ok_and(|r| r.status().is_success())
                && tokio::net::TcpStream::connect(&self.dicom).await.is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not start in 120 s; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn peer(&self) -> Peer {
        Peer::new(self.dicom.clone(), "BENCH", "RADSTREAM")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
