//! What the benchmark examples share: clocks and percentiles, free ports, a process's CPU
//! and memory, sending a study, reading an SSE stream, the bench's JWT, loading studies.
//! Each example includes it with `#[path = "support/mod.rs"] mod support;` (a folder without
//! a `main.rs` is not an example of its own).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use radstream::scu::{self, OutgoingFile, Peer};

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
