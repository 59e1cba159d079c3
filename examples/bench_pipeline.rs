//! Pipeline benchmark: the latency from a sender's association release to the
//! `inference.completed` event on an open SSE stream, and SSE fan-out to many subscribers.
//! Run through `bench/pipeline.sh`, or:
//!
//! ```text
//! cargo run --release --example bench_pipeline -- --bin target/release/radstream \
//!     --studies DIR [--latency-studies 50] [--quiet-ms 150,1000] [--fanout 1000,10000] \
//!     [--fanout-studies 3] [--fanout-quiet-ms 100] [--orthanc-studies 10] \
//!     [--out bench/out/pipeline.json] [--logs bench/out/pipeline-logs]
//! ```
//!
//! `DIR` holds one folder per study (one image each, distinct StudyInstanceUIDs). Each run
//! starts its own node (`radstream serve`, defaults except ports, a fresh data folder, a
//! known JWT secret, the rate limit off and the quiet window given), and kills it after.
//!
//! - **Latency**: one SSE stream is opened, then each study is sent on its own association
//!   with our SCU (dicom-ul); the clock starts when the A-RELEASE-RP has been received and
//!   stops when the stream delivers the study's `inference.completed` event, both read in
//!   this process. Two warm-up studies are not counted.
//! - **Fan-out**: N subscribers (one connection each, one client process) open `/v1/events`,
//!   a few studies are sent, and every delivery's latency is its arrival time (wall clock)
//!   minus the event's `time` field (when the server wrote the event row, millisecond
//!   resolution, same machine clock). The server's VmRSS/VmHWM are read from
//!   `/proc/<pid>/status` before and with the subscribers connected.
//! - **Orthanc** (optional, when `--orthanc-studies` > 0 and `Orthanc` is on the PATH): the
//!   same sends to Orthanc with `StableAge` 1 s, timing release to the `StableStudy` change
//!   (its `/changes` polled every 10 ms).

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::*;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use radstream::scu::{OutgoingFile, Peer};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// MONAI Deploy Informatics Gateway: default grouping timeout of a DICOM association's data.
const MONAI_GROUPING_MS: f64 = 5000.0;
/// Orthanc: default `StableAge` (seconds without a new instance before OnStableStudy).
const ORTHANC_STABLE_AGE_MS: f64 = 60_000.0;
/// The issue's targets.
const TARGET_LATENCY_P50_MS: f64 = 300.0;
const TARGET_FANOUT_P99_MS: f64 = 250.0;
const WARMUP_STUDIES: usize = 2;

struct Args {
    bin: PathBuf,
    studies: PathBuf,
    latency_studies: usize,
    quiet_ms: Vec<u64>,
    fanout: Vec<usize>,
    fanout_studies: usize,
    fanout_quiet_ms: u64,
    orthanc_studies: usize,
    out: PathBuf,
    logs: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        bin: PathBuf::from("target/release/radstream"),
        studies: PathBuf::new(),
        latency_studies: 50,
        quiet_ms: vec![150, 1000],
        fanout: vec![1000, 10_000],
        fanout_studies: 3,
        fanout_quiet_ms: 100,
        orthanc_studies: 0,
        out: PathBuf::from("bench/out/pipeline.json"),
        logs: PathBuf::from("bench/out/pipeline-logs"),
    };
    let list = |s: String| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bin" => a.bin = v().into(),
            "--studies" => a.studies = v().into(),
            "--latency-studies" => a.latency_studies = v().parse().expect("--latency-studies"),
            "--quiet-ms" => {
                a.quiet_ms = list(v())
                    .iter()
                    .map(|s| s.parse().expect("--quiet-ms"))
                    .collect()
            }
            "--fanout" => {
                a.fanout = list(v())
                    .iter()
                    .map(|s| s.parse().expect("--fanout"))
                    .collect()
            }
            "--fanout-studies" => a.fanout_studies = v().parse().expect("--fanout-studies"),
            "--fanout-quiet-ms" => a.fanout_quiet_ms = v().parse().expect("--fanout-quiet-ms"),
            "--orthanc-studies" => a.orthanc_studies = v().parse().expect("--orthanc-studies"),
            "--out" => a.out = v().into(),
            "--logs" => a.logs = v().into(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        !a.studies.as_os_str().is_empty(),
        "--studies DIR is required"
    );
    a
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// The event's `time` (RFC 3339) in epoch milliseconds.
fn event_time_ms(v: &Value) -> f64 {
    let s = v["time"].as_str().unwrap_or_default();
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e6)
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------
// Latency

/// One study's timeline, in milliseconds from the client's release.
#[derive(Debug, Clone, serde::Serialize)]
struct StudyLatency {
    study_uid: String,
    /// Association open to release completed (the send itself).
    send_ms: f64,
    to_study_complete_ms: f64,
    to_inference_started_ms: f64,
    /// The first model's `inference.model_completed` (the fastest model's output).
    to_first_model_ms: f64,
    to_inference_completed_ms: f64,
    /// From the result's timings: job claimed minus study completed (server clock).
    queue_ms: f64,
    /// From the result's timings: job claimed to result assembled.
    inference_ms: f64,
    /// Arrival of inference.completed minus the result's finished_at (store, commit, fan-out).
    finish_to_arrival_ms: f64,
}

async fn latency_run(
    a: &Args,
    studies: &[Vec<OutgoingFile>],
    quiet_ms: u64,
) -> (Vec<StudyLatency>, f64, f64) {
    let log = a.logs.join(format!("latency-quiet{quiet_ms}.log"));
    let node = Node::start(&a.bin, quiet_ms, &log).await;
    let http = client();
    let mut rx = open_stream(&http, &node).await;
    let peer = node.peer();
    let mut out = Vec::new();
    for (i, files) in studies.iter().enumerate() {
        let uid = files[0].study_uid.clone();
        let t0 = Instant::now();
        send(&peer, files).await;
        let released = Instant::now();
        let (mut complete, mut started, mut first_model) = (None, None, None);
        let deadline = released + Duration::from_secs(60);
        let (done, wall, data) = loop {
            let (m, at, wall) = tokio::time::timeout_at(deadline.into(), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no inference.completed for {uid} within 60 s"))
                .expect("event stream ended");
            let v: Value = serde_json::from_str(&m.data).expect("event JSON");
            if v["study_uid"].as_str() != Some(uid.as_str()) {
                continue;
            }
            match m.event.as_str() {
                "study.complete" => complete = Some(at),
                "inference.started" => started = Some(at),
                "inference.model_completed" => {
                    first_model.get_or_insert(at);
                }
                "inference.completed" => break (at, wall, v),
                "inference.failed" => panic!("inference failed for {uid}: {}", m.data),
                _ => {}
            }
        };
        if i < WARMUP_STUDIES {
            continue;
        }
        let since = |t: Option<Instant>| t.map_or(f64::NAN, |t| ms(t - released));
        let timings = &data["data"]["timings"];
        let num = |k: &str| timings[k].as_f64().unwrap_or(f64::NAN);
        out.push(StudyLatency {
            study_uid: uid,
            send_ms: ms(released - t0),
            to_study_complete_ms: since(complete),
            to_inference_started_ms: since(started),
            to_first_model_ms: since(first_model),
            to_inference_completed_ms: ms(done - released),
            queue_ms: num("queue_ms"),
            inference_ms: num("inference_ms"),
            finish_to_arrival_ms: wall - num("finished_at"),
        });
    }
    let (rss, hwm) = memory_mib(node.pid());
    (out, rss, hwm)
}

// ---------------------------------------------------------------------------------------
// Fan-out

#[derive(Debug, Clone, serde::Serialize)]
struct Fanout {
    subscribers: usize,
    connected: usize,
    connect_failures: usize,
    first_failure: Option<String>,
    connect_s: f64,
    events: usize,
    deliveries: usize,
    missing: usize,
    /// Arrival minus the event's `time`.
    latency_ms: Stats,
    latency_by_type_ms: BTreeMap<String, Stats>,
    /// Arrival minus the event's first arrival at any subscriber.
    spread_ms: Stats,
    /// Time from the last event's first arrival until every subscriber had it.
    drain_ms: f64,
    rss_idle_mib: f64,
    rss_connected_mib: f64,
    rss_after_mib: f64,
    hwm_mib: f64,
    client_rss_mib: f64,
    /// CPU seconds the node and this client used from the first trigger send until every
    /// subscriber had the last event (the node's includes ingest and inference).
    node_cpu_s: f64,
    client_cpu_s: f64,
}

/// What every fan-out subscriber shares.
struct Subscribers {
    http: reqwest::Client,
    url: String,
    token: String,
    /// Bounds the connections being opened at once.
    gate: Semaphore,
    /// Each subscriber reports once whether its stream opened.
    ready: mpsc::UnboundedSender<Result<(), String>>,
    cancel: CancellationToken,
    /// Newest event id each subscriber has received.
    seen: Vec<AtomicI64>,
}

/// One subscriber: opens the stream, then records (event id, arrival) until cancelled.
async fn subscriber(s: Arc<Subscribers>, i: usize) -> Vec<(i64, f64)> {
    let (ready, cancel, seen) = (&s.ready, &s.cancel, &s.seen);
    let permit = s.gate.acquire().await.expect("semaphore");
    let resp = s.http.get(&s.url).bearer_auth(&s.token).send().await;
    drop(permit);
    let mut resp = match resp {
        Ok(r) if r.status().is_success() => {
            let _ = ready.send(Ok(()));
            r
        }
        Ok(r) => {
            let _ = ready.send(Err(format!("HTTP {}", r.status())));
            return Vec::new();
        }
        Err(e) => {
            let _ = ready.send(Err(format!("{e:?}")));
            return Vec::new();
        }
    };
    let mut parser = SseParser::default();
    let mut out = Vec::with_capacity(16);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            chunk = resp.chunk() => match chunk {
                Ok(Some(bytes)) => {
                    let now = wall_ms();
                    parser.feed(&bytes, false, |m| {
                        out.push((m.id, now));
                        seen[i].fetch_max(m.id, Ordering::Relaxed);
                    });
                }
                _ => break,
            },
        }
    }
    out
}

async fn fanout_run(a: &Args, studies: &[Vec<OutgoingFile>], n: usize) -> Fanout {
    let log = a.logs.join(format!("fanout-{n}.log"));
    let node = Node::start(&a.bin, a.fanout_quiet_ms, &log).await;
    let pid = node.pid();
    let http = client();
    // A control stream that parses the events (not counted among the N).
    let mut control = open_stream(&http, &node).await;
    // One warm-up study so the node has run its pipeline once.
    send(&node.peer(), &studies[0]).await;
    wait_completed(&mut control, &studies[0][0].study_uid).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_idle, _) = memory_mib(pid);

    let (ready, mut ready_rx) = mpsc::unbounded_channel();
    let subs = Arc::new(Subscribers {
        http: http.clone(),
        url: format!("{}/v1/events", node.http),
        token: node.token.clone(),
        gate: Semaphore::new(256),
        ready,
        cancel: CancellationToken::new(),
        seen: (0..n).map(|_| AtomicI64::new(0)).collect(),
    });
    let t = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| tokio::spawn(subscriber(subs.clone(), i)))
        .collect();
    let (mut connected, mut failures, mut first_failure) = (0, 0, None);
    // Each subscriber reports once (its sender stays alive while it streams).
    for _ in 0..n {
        match ready_rx.recv().await.expect("subscriber report") {
            Ok(()) => connected += 1,
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert(e);
            }
        }
    }
    let connect_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_connected, _) = memory_mib(pid);
    // Events from before the subscribers connected (the warm-up's tail) do not count.
    let mut before = 0;
    while let Ok((m, _, _)) = control.try_recv() {
        before = before.max(m.id);
    }

    // Trigger: send studies one after the other; every event they cause counts.
    let (node_cpu0, client_cpu0) = (cpu_s(pid), cpu_s(std::process::id()));
    let mut meta: HashMap<i64, f64> = HashMap::new();
    let mut kinds: HashMap<i64, String> = HashMap::new();
    let mut last_id = 0;
    let mut last_first_arrival = 0.0;
    for files in studies.iter().skip(1).take(a.fanout_studies) {
        send(&node.peer(), files).await;
        let uid = &files[0].study_uid;
        loop {
            let (m, _, wall) = tokio::time::timeout(Duration::from_secs(120), control.recv())
                .await
                .unwrap_or_else(|_| panic!("no inference.completed for {uid} within 120 s"))
                .expect("control stream ended");
            let v: Value = serde_json::from_str(&m.data).expect("event JSON");
            if m.id > before {
                meta.insert(m.id, event_time_ms(&v));
                kinds.insert(m.id, m.event.clone());
            }
            if m.event == "inference.completed" && v["study_uid"].as_str() == Some(uid) {
                last_id = m.id;
                last_first_arrival = wall;
                break;
            }
        }
    }
    // Wait until every connected subscriber has the last inference.completed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have = subs
            .seen
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) >= last_id)
            .count();
        if have >= connected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (rss_after, hwm) = memory_mib(pid);
    let node_cpu = cpu_s(pid) - node_cpu0;
    let client_cpu = cpu_s(std::process::id()) - client_cpu0;
    let client_rss = memory_mib(std::process::id()).0;
    subs.cancel.cancel();
    let mut deliveries: Vec<(i64, f64)> = Vec::new();
    for h in handles {
        deliveries.extend(
            h.await
                .expect("subscriber task")
                .into_iter()
                .filter(|(id, _)| meta.contains_key(id)),
        );
    }
    let mut first: HashMap<i64, f64> = HashMap::new();
    for (id, at) in &deliveries {
        let f = first.entry(*id).or_insert(*at);
        *f = f.min(*at);
    }
    let drain = deliveries
        .iter()
        .filter(|(id, _)| *id == last_id)
        .map(|(_, at)| *at)
        .fold(f64::NAN, f64::max)
        - last_first_arrival.min(first.get(&last_id).copied().unwrap_or(f64::NAN));
    let latency = stats(deliveries.iter().map(|(id, at)| at - meta[id]).collect());
    let mut by_type: HashMap<String, Vec<f64>> = HashMap::new();
    for (id, at) in &deliveries {
        by_type
            .entry(kinds[id].clone())
            .or_default()
            .push(at - meta[id]);
    }
    let by_type: BTreeMap<String, Stats> =
        by_type.into_iter().map(|(k, v)| (k, stats(v))).collect();
    let spread = stats(deliveries.iter().map(|(id, at)| at - first[id]).collect());
    Fanout {
        subscribers: n,
        connected,
        connect_failures: failures,
        first_failure,
        connect_s,
        events: meta.len(),
        deliveries: deliveries.len(),
        missing: (connected * meta.len()).saturating_sub(deliveries.len()),
        latency_ms: latency,
        latency_by_type_ms: by_type,
        spread_ms: spread,
        drain_ms: drain,
        rss_idle_mib: rss_idle,
        rss_connected_mib: rss_connected,
        rss_after_mib: rss_after,
        hwm_mib: hwm,
        client_rss_mib: client_rss,
        node_cpu_s: node_cpu,
        client_cpu_s: client_cpu,
    }
}

async fn wait_completed(rx: &mut mpsc::UnboundedReceiver<(Msg, Instant, f64)>, uid: &str) {
    loop {
        let (m, _, _) = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no inference.completed for {uid} within 120 s"))
            .expect("event stream ended");
        if m.event == "inference.completed" && m.data.contains(uid) {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Orthanc

/// Release to Orthanc's `StableStudy` change, per study, with `StableAge` 1 s.
async fn orthanc_run(a: &Args, studies: &[Vec<OutgoingFile>]) -> Option<Vec<f64>> {
    let dir = tempfile::Builder::new()
        .prefix("radstream-bench-orthanc.")
        .tempdir()
        .ok()?;
    let (dicom_port, http_port) = (free_port(), free_port());
    let config = dir.path().join("orthanc.json");
    let storage = dir.path().join("db");
    std::fs::write(
        &config,
        json!({
            "Name": "bench", "StorageDirectory": storage, "IndexDirectory": storage,
            "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
            "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
            "DicomCheckCalledAet": false, "Plugins": [], "StableAge": 1,
        })
        .to_string(),
    )
    .ok()?;
    let log = std::fs::File::create(a.logs.join("orthanc.log")).ok()?;
    let mut child = Command::new("Orthanc")
        .arg(&config)
        .stdout(log.try_clone().ok()?)
        .stderr(log)
        .spawn()
        .ok()?;
    let http = client();
    let base = format!("http://127.0.0.1:{http_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last: i64 = loop {
        if let Ok(r) = http.get(format!("{base}/changes?last")).send().await {
            if let Ok(v) = r.json::<Value>().await {
                break v["Last"].as_i64().unwrap_or(0);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let peer = Peer::new(format!("127.0.0.1:{dicom_port}"), "BENCH", "ORTHANC");
    let mut out = Vec::new();
    for (i, files) in studies.iter().enumerate() {
        send(&peer, files).await;
        let released = Instant::now();
        let stable = loop {
            let v: Value = http
                .get(format!("{base}/changes?since={last}&limit=100"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let at = Instant::now();
            last = v["Last"].as_i64().unwrap_or(last);
            let found = v["Changes"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["ChangeType"] == "StableStudy"));
            if found {
                break ms(at - released);
            }
            if released.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if i >= 1 {
            out.push(stable);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(out)
}

// ---------------------------------------------------------------------------------------

fn sooner(p50: f64, peer_ms: f64) -> String {
    format!("{:.1}x sooner", peer_ms / p50)
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    std::fs::create_dir_all(&a.logs).expect("log folder");
    let studies = load_studies(&a.studies);
    let need = a.latency_studies + WARMUP_STUDIES;
    assert!(
        studies.len() >= need && studies.len() > a.fanout_studies,
        "{} has {} studies; {need} needed",
        a.studies.display(),
        studies.len()
    );
    let sample = &studies[0][0];
    let images: usize = studies.iter().map(Vec::len).max().unwrap_or(0);
    let size_mb = std::fs::metadata(&sample.path).map_or(0.0, |m| m.len() as f64 / 1e6);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "radstream pipeline benchmark: {} studies of {images} image(s) (~{size_mb:.1} MB each), {cores} cores, CPU, default model",
        studies.len()
    );

    // 1. Latency
    let mut latency_json = Vec::new();
    let mut latency_rows = Vec::new();
    for &q in &a.quiet_ms {
        let t = Instant::now();
        let (rows, rss, hwm) = latency_run(&a, &studies[..need], q).await;
        let total = stats(rows.iter().map(|r| r.to_inference_completed_ms).collect());
        let first = stats(rows.iter().map(|r| r.to_first_model_ms).collect());
        let part = |f: fn(&StudyLatency) -> f64| stats(rows.iter().map(f).collect()).p50;
        let (complete, started) = (
            part(|r| r.to_study_complete_ms),
            part(|r| r.to_inference_started_ms),
        );
        let (queue, inference, fan, send_ms) = (
            part(|r| r.queue_ms),
            part(|r| r.inference_ms),
            part(|r| r.finish_to_arrival_ms),
            part(|r| r.send_ms),
        );
        println!(
            "latency quiet_window_ms={q:<5} release -> inference.completed over {} studies: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms ({:.0} s)",
            total.n,
            total.p50,
            total.p95,
            total.max,
            t.elapsed().as_secs_f64()
        );
        println!(
            "    release -> first inference.model_completed: p50 {:.0} ms, p95 {:.0} ms",
            first.p50, first.p95
        );
        println!(
            "    p50 parts: send {send_ms:.0} ms | release -> study.complete {complete:.0} ms -> inference.started {started:.0} ms -> inference.completed {:.0} ms | server: queue {queue:.0} ms, inference {inference:.0} ms, result written -> event arrived {fan:.0} ms",
            total.p50
        );
        latency_json.push(json!({
            "quiet_window_ms": q,
            "release_to_inference_completed_ms": total,
            "release_to_first_model_completed_ms": first,
            "p50_parts_ms": {
                "send": send_ms,
                "release_to_study_complete": complete,
                "release_to_inference_started": started,
                "server_queue": queue,
                "server_inference": inference,
                "result_finished_to_event_arrival": fan,
            },
            "node_rss_mib": rss,
            "node_hwm_mib": hwm,
            "studies": rows,
        }));
        latency_rows.push((q, total, first));
    }

    // 2. Fan-out
    let mut fanouts = Vec::new();
    for &n in &a.fanout {
        let t = Instant::now();
        let f = fanout_run(&a, &studies, n).await;
        println!(
            "fan-out N={n}: {} connected in {:.1} s ({} failed{}), {} events x {} subscribers: latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; spread p99 {:.0} ms; {} missing; node RSS {:.0} -> {:.0} MiB (HWM {:.0}) ({:.0} s)",
            f.connected,
            f.connect_s,
            f.connect_failures,
            f.first_failure
                .as_deref()
                .map(|e| format!(", first: {e}"))
                .unwrap_or_default(),
            f.events,
            f.connected,
            f.latency_ms.p50,
            f.latency_ms.p99,
            f.latency_ms.max,
            f.spread_ms.p99,
            f.missing,
            f.rss_idle_mib,
            f.rss_connected_mib,
            f.hwm_mib,
            t.elapsed().as_secs_f64()
        );
        println!(
            "    CPU from the first send until all delivered: node {:.2} s, client {:.2} s",
            f.node_cpu_s, f.client_cpu_s
        );
        for (kind, s) in &f.latency_by_type_ms {
            println!(
                "    {kind:<20} {:>6} deliveries: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                s.n, s.p50, s.p99, s.max
            );
        }
        fanouts.push(f);
    }

    // 3. Orthanc, measured (optional)
    let orthanc = if a.orthanc_studies > 0 {
        let n = (a.orthanc_studies + 1).min(studies.len());
        let r = orthanc_run(&a, &studies[..n]).await;
        match &r {
            Some(v) => {
                let s = stats(v.clone());
                println!(
                    "Orthanc (StableAge 1 s) release -> StableStudy over {} studies: p50 {:.0} ms, max {:.0} ms",
                    s.n, s.p50, s.max
                );
            }
            None => println!("Orthanc: not measured (not installed or did not start)"),
        }
        r.map(stats)
    } else {
        None
    };

    // Summary
    println!("\n== summary (radstream, {cores} cores, CPU, demo ensemble)");
    println!(
        "{:<44} {:>8} {:>8} {:>8}",
        "release -> inference.completed", "p50 ms", "p95 ms", "max ms"
    );
    for (q, s, _) in &latency_rows {
        let label = if *q == radstream::study::StudySettings::default().quiet_window_ms {
            format!("quiet_window_ms={q} (default)")
        } else {
            format!("quiet_window_ms={q}")
        };
        println!("  {label:<42} {:>8.0} {:>8.0} {:>8.0}", s.p50, s.p95, s.max);
    }
    if let Some(o) = &orthanc {
        println!(
            "  {:<42} {:>8.0} {:>8.0} {:>8.0}",
            "Orthanc StableAge=1 s -> StableStudy", o.p50, o.p95, o.max
        );
    }
    for (q, s, _) in &latency_rows {
        println!(
            "  quiet {q:>4} ms: radstream p50 {:.0} ms vs MONAI default grouping {MONAI_GROUPING_MS:.0} ms -> {}; vs Orthanc default StableAge {ORTHANC_STABLE_AGE_MS:.0} ms -> {}",
            s.p50,
            sooner(s.p50, MONAI_GROUPING_MS),
            sooner(s.p50, ORTHANC_STABLE_AGE_MS)
        );
    }
    if let Some(o) = &orthanc {
        for (q, s, _) in &latency_rows {
            println!(
                "  quiet {q:>4} ms: radstream p50 {:.0} ms (with inference) vs Orthanc measured StableStudy p50 {:.0} ms (no inference, StableAge 1 s) -> {}",
                s.p50,
                o.p50,
                sooner(s.p50, o.p50)
            );
        }
    }
    if let Some((q, s, first)) = latency_rows.iter().min_by_key(|(q, _, _)| *q) {
        println!(
            "  target p50 <= {TARGET_LATENCY_P50_MS:.0} ms to the first result event: {} (quiet {q} ms, first inference.model_completed p50 {:.0} ms; the complete result p50 {:.0} ms)",
            if first.p50 <= TARGET_LATENCY_P50_MS {
                "met"
            } else {
                "NOT met"
            },
            first.p50,
            s.p50
        );
    }
    println!(
        "\n{:<14} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>22}",
        "SSE fan-out",
        "connect s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "spread99",
        "missing",
        "node RSS MiB (HWM)"
    );
    for f in &fanouts {
        println!(
            "  N={:<10} {:>10.1} {:>8.0} {:>8.0} {:>8.0} {:>9.0} {:>8} {:>22}",
            f.subscribers,
            f.connect_s,
            f.latency_ms.p50,
            f.latency_ms.p99,
            f.latency_ms.max,
            f.spread_ms.p99,
            f.missing,
            format!(
                "{:.0} -> {:.0} ({:.0})",
                f.rss_idle_mib, f.rss_connected_mib, f.hwm_mib
            )
        );
    }
    if let Some(f) = fanouts.iter().max_by_key(|f| f.subscribers) {
        println!(
            "  target p99 <= {TARGET_FANOUT_P99_MS:.0} ms at 10000: {} (N={}, p99 {:.0} ms)",
            if f.subscribers >= 10_000 && f.latency_ms.p99 <= TARGET_FANOUT_P99_MS {
                "met"
            } else if f.subscribers < 10_000 {
                "not measured at 10000"
            } else {
                "NOT met"
            },
            f.subscribers,
            f.latency_ms.p99
        );
    }

    let report = json!({
        "date": radstream::clock::format_ms(radstream::clock::now_ms()),
        "machine": { "cores": cores },
        "studies": { "count": studies.len(), "images_per_study": images, "file_mb": size_mb },
        "latency": latency_json,
        "fanout": fanouts,
        "fanout_quiet_window_ms": a.fanout_quiet_ms,
        "orthanc_stable_age_1s": orthanc,
        "references_ms": {
            "monai_informatics_gateway_default_grouping": MONAI_GROUPING_MS,
            "orthanc_default_stable_age": ORTHANC_STABLE_AGE_MS,
        },
        "targets_ms": {
            "latency_p50": TARGET_LATENCY_P50_MS,
            "fanout_p99_at_10000": TARGET_FANOUT_P99_MS,
        },
    });
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent).expect("output folder");
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&report).expect("JSON"))
        .expect("writing the report");
    println!("\nwrote {}", a.out.display());
}
