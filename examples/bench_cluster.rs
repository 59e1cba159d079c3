//! Cluster benchmark: several `radstream serve` processes on one PostgreSQL database. Run
//! through `bench/cluster.sh`, or:
//!
//! ```text
//! cargo run --release --example bench_cluster -- --bin target/release/radstream \
//!     --studies DIR --ingest DIR [--pg postgres://postgres@127.0.0.1:5432/test] \
//!     [--event-studies 100] [--associations 4] [--s3-endpoint http://127.0.0.1:8333 \
//!     --s3-bucket radstream-bench --s3-key ID --s3-secret KEY] [--out bench/out/cluster.json] [--logs DIR]
//! ```
//!
//! - **Cross-node events**: node B (roles `ingest,api`) receives one-image studies, sent one after
//!   the other; an SSE client on node A (role `api`) reads every event. An event's lag is its
//!   arrival at the client (wall clock) minus its `time` (when node B wrote the row; same
//!   machine clock, millisecond resolution). Run with A woken by `LISTEN/NOTIFY`
//!   (`events.listen = true`, the default) and with A polling every 250 ms (the old way), and
//!   the same client on node B itself as the single-node reference.
//! - **Ingest**: the `--ingest` instances sent over `--associations` associations at once
//!   (dicom-ul SCU, one study per association), into one node and into two nodes (the
//!   associations split between them), on local disk and, with `--s3-endpoint`, on S3. For
//!   each: instances per second, node CPU ms per instance and database transactions per
//!   instance (`pg_stat_database` of the run's database).
//! - **Projection**: from the measured per-instance CPU and database cost, and a short probe
//!   of the database's commit rate, the throughput of N ingest nodes, printed as a projection.
//!
//! Every run gets a fresh database and fresh data folders; nodes are killed after each.

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use radstream::scu::{OutgoingFile, Peer};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::mpsc;

struct Args {
    bin: PathBuf,
    studies: PathBuf,
    ingest: PathBuf,
    pg: String,
    event_studies: usize,
    associations: usize,
    s3_endpoint: Option<String>,
    s3_bucket: String,
    s3_key: String,
    s3_secret: String,
    out: PathBuf,
    logs: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        bin: PathBuf::from("target/release/radstream"),
        studies: PathBuf::new(),
        ingest: PathBuf::new(),
        pg: std::env::var("RADSTREAM_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        event_studies: 100,
        associations: 4,
        s3_endpoint: None,
        s3_bucket: "radstream-bench".into(),
        s3_key: String::new(),
        s3_secret: String::new(),
        out: PathBuf::from("bench/out/cluster.json"),
        logs: PathBuf::from("bench/out/cluster-logs"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => a.bin = value().into(),
            "--studies" => a.studies = value().into(),
            "--ingest" => a.ingest = value().into(),
            "--pg" => a.pg = value(),
            "--event-studies" => a.event_studies = value().parse().expect("a count"),
            "--associations" => a.associations = value().parse().expect("a count"),
            "--s3-endpoint" => a.s3_endpoint = Some(value()),
            "--s3-bucket" => a.s3_bucket = value(),
            "--s3-key" => a.s3_key = value(),
            "--s3-secret" => a.s3_secret = value(),
            "--out" => a.out = value().into(),
            "--logs" => a.logs = value().into(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        a.studies.is_dir() && a.ingest.is_dir(),
        "--studies and --ingest name folders"
    );
    a
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    Stats {
        n: v.len(),
        p50: pct(&v, 50.0),
        p99: pct(&v, 99.0),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// A database of its own for one run, dropped after.
struct RunDb {
    admin: String,
    name: String,
    url: String,
}

impl RunDb {
    async fn create(admin: &str) -> RunDb {
        let name = format!("radstream_bench_{}", uuid::Uuid::new_v4().simple());
        let mut c = PgConnection::connect(admin)
            .await
            .expect("PostgreSQL reachable at --pg");
        c.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        RunDb {
            admin: admin.to_string(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// Transactions committed and rolled back in this database so far.
    async fn transactions(&self) -> i64 {
        // The statistics are flushed by each backend at most once a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut c = PgConnection::connect(&self.admin).await.expect("connect");
        sqlx::query_scalar::<_, i64>(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
        )
        .bind(&self.name)
        .fetch_one(&mut c)
        .await
        .expect("pg_stat_database")
    }

    async fn drop_db(self) {
        if let Ok(mut c) = PgConnection::connect(&self.admin).await {
            let _ = c
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Nodes

struct Node {
    child: Child,
    dicom: String,
    http: String,
    token: String,
    _dir: tempfile::TempDir,
}

/// What differs between the nodes of a run.
struct NodeSpec<'a> {
    id: &'a str,
    roles: &'a str,
    extra: Vec<(&'static str, String)>,
}

impl Node {
    async fn start(a: &Args, db: &RunDb, spec: NodeSpec<'_>, secret: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("radstream-bench-cluster.")
            .tempdir()
            .expect("temp dir");
        let (dicom_port, http_port) = (free_port(), free_port());
        let log = a.logs.join(format!("{}.log", spec.id));
        let log_file = std::fs::File::create(&log).expect("node log");
        let mut cmd = Command::new(&a.bin);
        cmd.arg("serve")
            .env("RADSTREAM_DATABASE__URL", &db.url)
            .env("RADSTREAM_NODE__ID", spec.id)
            .env("RADSTREAM_NODE__ROLES", spec.roles)
            .env("RADSTREAM_STORAGE__DATA_DIR", dir.path())
            .env("RADSTREAM_DICOM__PORT", dicom_port.to_string())
            .env("RADSTREAM_HTTP__PORT", http_port.to_string())
            .env("RADSTREAM_AUTH__JWT_SECRET", secret)
            .env("RADSTREAM_AUTH__RATE_LIMIT_PER_MINUTE", "0")
            .env("RADSTREAM_STORAGE__MIN_FREE_BYTES", "0")
            .env("RADSTREAM_STORAGE__MIN_FREE_PERCENT", "0")
            .env("RADSTREAM_PIPELINE__ENABLED", "false")
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .stdin(Stdio::null());
        for (k, v) in &spec.extra {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", a.bin.display()));
        let token = support::token(secret);
        let mut node = Node {
            child,
            dicom: format!("127.0.0.1:{dicom_port}"),
            http: format!("http://127.0.0.1:{http_port}"),
            token,
            _dir: dir,
        };
        node.wait_ready(&log, spec.roles.contains("ingest") || spec.roles == "all")
            .await;
        node
    }

    async fn wait_ready(&mut self, log: &Path, dicom: bool) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("a node exited ({status}); see {}", log.display());
            }
            let ping = http.get(format!("{}/ping", self.http)).send().await;
            if ping.is_ok_and(|r| r.status().is_success())
                && (!dicom || tokio::net::TcpStream::connect(&self.dicom).await.is_ok())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "a node did not start in 120 s; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn peer(&self) -> Peer {
        Peer::new(self.dicom.clone(), "BENCH", "RADSTREAM")
    }

    fn cpu_s(&self) -> f64 {
        cpu_s(self.child.id())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn s3_env(a: &Args, prefix: &str) -> Vec<(&'static str, String)> {
    let Some(endpoint) = &a.s3_endpoint else {
        return Vec::new();
    };
    let mut env = vec![
        ("RADSTREAM_STORAGE__BACKEND", "s3".into()),
        ("RADSTREAM_STORAGE__S3__ENDPOINT", endpoint.clone()),
        ("RADSTREAM_STORAGE__S3__BUCKET", a.s3_bucket.clone()),
        ("RADSTREAM_STORAGE__S3__PREFIX", prefix.to_string()),
        ("RADSTREAM_STORAGE__S3__ALLOW_HTTP", "true".into()),
        ("RADSTREAM_STORAGE__S3__PATH_STYLE", "true".into()),
    ];
    if !a.s3_key.is_empty() {
        env.push(("RADSTREAM_STORAGE__S3__ACCESS_KEY_ID", a.s3_key.clone()));
        env.push((
            "RADSTREAM_STORAGE__S3__SECRET_ACCESS_KEY",
            a.s3_secret.clone(),
        ));
    }
    env
}

// ---------------------------------------------------------------------------------------
// Cross-node events

/// Opens `/v1/events` on `node` and forwards each event's lag (arrival minus its `time`).
async fn lags(node: &Node) -> mpsc::UnboundedReceiver<(String, String, f64)> {
    let mut resp = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client")
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
        let mut buf = Vec::<u8>::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let arrived = wall_ms();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buf.drain(..pos + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let (mut kind, mut data) = (String::new(), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                let Ok(v) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                let written = v["time"]
                    .as_str()
                    .and_then(|s| {
                        time::OffsetDateTime::parse(
                            s,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                    .map_or(f64::NAN, |t| t.unix_timestamp_nanos() as f64 / 1e6);
                let study = v["study_uid"].as_str().unwrap_or_default().to_string();
                let _ = tx.send((kind, study, arrived - written));
            }
        }
    });
    rx
}

/// Event lags seen on A (another node) and on B (the writer), with A woken by notification
/// (`listen`) or by polling.
async fn event_run(a: &Args, studies: &[Vec<OutgoingFile>], listen: bool) -> (Stats, Stats) {
    let db = RunDb::create(&a.pg).await;
    let secret = secret();
    let b = Node::start(
        a,
        &db,
        NodeSpec {
            id: "node-b",
            roles: "ingest,api",
            extra: vec![],
        },
        &secret,
    )
    .await;
    let node_a = Node::start(
        a,
        &db,
        NodeSpec {
            id: if listen {
                "node-a-listen"
            } else {
                "node-a-poll"
            },
            roles: "api",
            extra: vec![("RADSTREAM_EVENTS__LISTEN", listen.to_string())],
        },
        &secret,
    )
    .await;
    let mut on_a = lags(&node_a).await;
    let mut on_b = lags(&b).await;
    let (mut remote, mut local) = (Vec::new(), Vec::new());
    for study in studies {
        let uid = study[0].study_uid.clone();
        send(&b.peer(), study).await;
        for (rx, out) in [(&mut on_a, &mut remote), (&mut on_b, &mut local)] {
            loop {
                let (kind, s, lag) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                    .await
                    .expect("no event in 60 s")
                    .expect("stream ended");
                out.push(lag);
                if kind == "study.complete" && s == uid {
                    break;
                }
            }
        }
    }
    drop((node_a, b));
    db.drop_db().await;
    (stats(remote), stats(local))
}

// ---------------------------------------------------------------------------------------
// Ingest

#[derive(Debug, serde::Serialize)]
struct IngestRun {
    label: String,
    nodes: usize,
    instances: usize,
    seconds: f64,
    instances_per_s: f64,
    cpu_ms_per_instance: f64,
    db_transactions_per_instance: f64,
}

async fn ingest_run(a: &Args, studies: &[Vec<OutgoingFile>], nodes: usize, s3: bool) -> IngestRun {
    let db = RunDb::create(&a.pg).await;
    let secret = secret();
    let prefix = format!("run-{}", uuid::Uuid::new_v4().simple());
    let mut running = Vec::new();
    for i in 0..nodes {
        let extra = if s3 { s3_env(a, &prefix) } else { vec![] };
        running.push(
            Node::start(
                a,
                &db,
                NodeSpec {
                    id: &format!("ingest-{i}"),
                    roles: "ingest",
                    extra,
                },
                &secret,
            )
            .await,
        );
    }
    let before_tx = db.transactions().await;
    let before_cpu: f64 = running.iter().map(Node::cpu_s).sum();
    let instances: usize = studies.iter().map(Vec::len).sum();
    let peers: Vec<Peer> = running.iter().map(Node::peer).collect();
    let started = Instant::now();
    let studies = Arc::new(studies.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for i in 0..a.associations {
        let (studies, next) = (studies.clone(), next.clone());
        let peer = peers[i % peers.len()].clone();
        senders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(study) = studies.get(n) else {
                    return;
                };
                send(&peer, study).await;
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu: f64 = running.iter().map(Node::cpu_s).sum::<f64>() - before_cpu;
    let after_tx = db.transactions().await;
    drop(running);
    db.drop_db().await;
    IngestRun {
        label: format!(
            "{} node{} on {}",
            nodes,
            if nodes > 1 { "s" } else { "" },
            if s3 { "S3" } else { "local disk" }
        ),
        nodes,
        instances,
        seconds,
        instances_per_s: instances as f64 / seconds,
        cpu_ms_per_instance: cpu * 1000.0 / instances as f64,
        // The heartbeats of idle seconds are a handful; every other transaction is ingest's.
        db_transactions_per_instance: (after_tx - before_tx) as f64 / instances as f64,
    }
}

/// Commits per second PostgreSQL sustains here: 8 connections inserting one row per
/// transaction for 3 s (synchronous commit, as the node's index writes).
async fn commit_probe(a: &Args) -> f64 {
    let db = RunDb::create(&a.pg).await;
    let mut c = PgConnection::connect(&db.url).await.expect("connect");
    c.execute("CREATE TABLE probe (id BIGSERIAL PRIMARY KEY, v TEXT)")
        .await
        .expect("probe table");
    drop(c);
    let stop = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = PgConnection::connect(&url).await.expect("connect");
            let mut n = 0u64;
            while Instant::now() < stop {
                sqlx::query("INSERT INTO probe (v) VALUES ('x')")
                    .execute(&mut c)
                    .await
                    .expect("insert");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("probe task");
    }
    db.drop_db().await;
    total as f64 / 3.0
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    std::fs::create_dir_all(&a.logs).expect("log folder");
    let studies = load_studies(&a.studies);
    assert!(
        studies.len() >= a.event_studies,
        "{} has {} studies; {} needed",
        a.studies.display(),
        studies.len(),
        a.event_studies
    );
    let ingest = load_studies(&a.ingest);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "radstream cluster benchmark: {cores} cores, all nodes and PostgreSQL on this machine"
    );

    let mut events_json = Vec::new();
    for listen in [true, false] {
        let (remote, local) = event_run(&a, &studies[..a.event_studies], listen).await;
        let how = if listen {
            "LISTEN/NOTIFY"
        } else {
            "polling every 250 ms"
        };
        println!(
            "events written on node B, read on node A ({how}): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} events; on node B itself: p50 {:.0} ms, p99 {:.0} ms",
            remote.p50, remote.p99, remote.max, remote.n, local.p50, local.p99
        );
        events_json.push(json!({"mode": how, "other_node_ms": remote, "same_node_ms": local}));
    }

    let instances: usize = ingest.iter().map(Vec::len).sum();
    println!(
        "ingest: {instances} instances in {} studies over {} associations",
        ingest.len(),
        a.associations
    );
    let mut runs = Vec::new();
    let mut plans = vec![(1, false), (2, false)];
    if a.s3_endpoint.is_some() {
        plans.extend([(1, true), (2, true)]);
    }
    for (nodes, s3) in plans {
        let r = ingest_run(&a, &ingest, nodes, s3).await;
        println!(
            "  {:<22} {:>7.1} instances/s ({:.1} s) | node CPU {:.2} ms/instance | database transactions {:.2}/instance",
            r.label, r.instances_per_s, r.seconds, r.cpu_ms_per_instance, r.db_transactions_per_instance
        );
        runs.push(r);
    }
    if a.s3_endpoint.is_none() {
        println!("  (S3 runs skipped: no --s3-endpoint)");
    }

    let commits = commit_probe(&a).await;
    println!("PostgreSQL commit probe (8 connections, synchronous commit): {commits:.0} commits/s");
    // The projection takes the two-node run of the richest backend measured.
    let base = runs
        .iter()
        .rev()
        .find(|r| r.nodes == 2)
        .expect("a two-node run");
    let per_node_cpu_bound = 1000.0 * cores as f64 / base.cpu_ms_per_instance;
    let db_bound = commits / base.db_transactions_per_instance;
    println!(
        "projection (not measured; from the {} run): a node with {cores} cores is CPU-bound near {per_node_cpu_bound:.0} instances/s; the database caps the cluster near {db_bound:.0} instances/s; so N nodes ~ min(N x {per_node_cpu_bound:.0}, {db_bound:.0}) instances/s",
        base.label
    );
    for n in [1usize, 2, 4, 8, 16] {
        println!(
            "    {n:>2} nodes: ~{:.0} instances/s",
            (n as f64 * per_node_cpu_bound).min(db_bound)
        );
    }
    let out = json!({
        "cores": cores,
        "events": events_json,
        "ingest": runs,
        "postgres_commits_per_s": commits,
        "projection": {"per_node_cpu_bound": per_node_cpu_bound, "database_bound": db_bound},
    });
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir).expect("out folder");
    }
    std::fs::write(&a.out, serde_json::to_vec_pretty(&out).expect("json")).expect("write");
    println!("wrote {}", a.out.display());
}
