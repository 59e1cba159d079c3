//! Several nodes on one PostgreSQL database: a study sent to two nodes completes once, a dead
//! node's study is completed by another, every node's events reach an SSE client on any node
//! at once (LISTEN/NOTIFY) and resume on a third, and roles split what a node runs.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::path::PathBuf;

use radstream::auth::Scope;
use radstream::configuration::Settings;
use sqlx::Row;
use tokio::process::Command;

use crate::helpers::*;
use crate::ingest::wait_port;
use crate::s3_server::SeaweedFs;

/// Sends a study over two associations to two nodes: the first part to A, one instance to B,
/// releases A, waits `pause` seconds (longer than the quiet window), sends the rest to B and
/// releases B. Prints "ok".
const SPLIT_SENDER: &str = r#"
import sys, time
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation
port_a, port_b, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
files = sys.argv[4:]
ae = AE(ae_title="SPLITTEST")
ae.add_requested_context(DigitalXRayImageStorageForPresentation, "1.2.840.10008.1.2.1")
def send(assoc, path):
    st = assoc.send_c_store(dcmread(path))
    if "Status" not in st or st.Status != 0:
        sys.exit(3)
a = ae.associate("127.0.0.1", port_a, ae_title="RADSTREAM")
b = ae.associate("127.0.0.1", port_b, ae_title="RADSTREAM")
if not (a.is_established and b.is_established):
    sys.exit(2)
half = len(files) // 2
for p in files[:half]:
    send(a, p)
send(b, files[half])
a.release()
time.sleep(pause)
for p in files[half + 1:]:
    send(b, p)
b.release()
print("ok", flush=True)
"#;

/// Opens one association, sends the files, then holds the association open (the node is
/// killed under it). Prints each stored SOP Instance UID.
const HOLDING_SENDER: &str = r#"
import sys, time
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation
ae = AE(ae_title="HOLDTEST")
ae.add_requested_context(DigitalXRayImageStorageForPresentation, "1.2.840.10008.1.2.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="RADSTREAM")
if not assoc.is_established:
    sys.exit(2)
for p in sys.argv[2:]:
    st = assoc.send_c_store(dcmread(p))
    if "Status" not in st or st.Status != 0:
        sys.exit(3)
print("sent", flush=True)
time.sleep(120)
"#;

/// A node on the database of `first` (which must run on PostgreSQL).
async fn join(first: &TestApp, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let url = first.settings.database.url.clone();
    TestApp::spawn_with(Db::Sqlite, move |s| {
        s.database.url = url;
        tweak(s);
    })
    .await
}

/// Waits until `check` holds, polling every 50 ms; panics with `what` after `secs`.
async fn wait_for<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pending_completions(app: &TestApp) -> i64 {
    let (_, h) = app.get_json("/health").await;
    h["dicom"]["studies_pending_completion"]
        .as_i64()
        .unwrap_or(-1)
}

/// The payload of the study's one `study.complete` event.
async fn completion_payload(app: &TestApp, study: &str) -> serde_json::Value {
    let payload: String = sqlx::query_scalar(
        "SELECT payload FROM events WHERE type = 'study.complete' AND study_uid = $1",
    )
    .bind(study)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    serde_json::from_str(&payload).unwrap()
}

async fn study_count(app: &TestApp, sql: &str, study: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(study)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_sent_to_two_nodes_completes_once_with_one_job() {
    let a = TestApp::spawn_with(Db::Postgres, |s| {
        s.node.id = "node-a".into();
        s.pipeline.enabled = false;
    })
    .await;
    let b = join(&a, |s| {
        s.node.id = "node-b".into();
        s.pipeline.enabled = false;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (studies, files) = write_studies(dir.path(), 1, 6, 64);
    let study = &studies[0];

    let out = Command::new(python())
        .arg("-c")
        .arg(SPLIT_SENDER)
        .arg(a.dicom.port().to_string())
        .arg(b.dicom.port().to_string())
        // Five quiet windows: without the shared ledger node A completes the study meanwhile.
        .arg("1.0")
        .args(&files)
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("python venv with pynetdicom (scripts/setup.sh)");
    assert!(out.status.success(), "split sender failed");

    let version = a.wait_complete(study, 20).await;
    // Both nodes' timers have run out before anything is counted.
    wait_for(10, "no completion pending on either node", || async {
        pending_completions(&a).await == 0 && pending_completions(&b).await == 0
    })
    .await;
    assert_eq!(version, 1, "one study version");
    assert_eq!(
        study_count(
            &a,
            "SELECT COUNT(*) FROM events WHERE type = 'study.complete' AND study_uid = $1",
            study
        )
        .await,
        1,
        "one study.complete event"
    );
    assert_eq!(
        study_count(&a, "SELECT COUNT(*) FROM jobs WHERE study_uid = $1", study).await,
        1,
        "one job"
    );
    assert_eq!(
        study_count(
            &a,
            "SELECT num_instances FROM studies WHERE study_uid = $1",
            study
        )
        .await,
        6
    );
    let payload = completion_payload(&a, study).await;
    assert_eq!(payload["completed_by"], "release+quiet", "{payload}");
    assert_eq!(
        payload["node"], "node-b",
        "the node that released last: {payload}"
    );
    assert_eq!(
        a.count("SELECT COUNT(*) FROM study_senders").await,
        0,
        "released associations leave no entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_whose_node_died_is_completed_by_another_node() {
    let a = TestApp::spawn_with(Db::Postgres, |s| {
        s.node.id = "node-a".into();
        s.node.heartbeat_secs = 1;
        s.node.expire_secs = 3;
        s.study.stable_age_secs = 3;
        s.pipeline.enabled = false;
    })
    .await;
    let url = a.settings.database.url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dicom_b, http_b) = (free_port(), free_port());
    let mut b = spawn_node(
        &dir.path().join("b"),
        dicom_b,
        http_b,
        &[
            (
                "RADSTREAM_DATABASE__URL",
                secrecy::ExposeSecret::expose_secret(&url).to_string(),
            ),
            ("RADSTREAM_NODE__ID", "node-b".into()),
            ("RADSTREAM_NODE__HEARTBEAT_SECS", "1".into()),
            ("RADSTREAM_NODE__EXPIRE_SECS", "3".into()),
            ("RADSTREAM_STUDY__STABLE_AGE_SECS", "60".into()),
            ("RADSTREAM_PIPELINE__ENABLED", "false".into()),
        ],
    );
    wait_port(dicom_b).await;
    let (studies, files) = write_studies(&dir.path().join("src"), 1, 3, 64);
    let study = &studies[0];
    let mut sender = Command::new(python())
        .arg("-c")
        .arg(HOLDING_SENDER)
        .arg(dicom_b.to_string())
        .args(&files)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python venv with pynetdicom");
    let mut out = tokio::io::BufReader::new(sender.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line),
    )
    .await
    .expect("sender stalled")
    .unwrap();
    assert_eq!(line.trim(), "sent");
    assert_eq!(
        a.count("SELECT COUNT(*) FROM study_senders WHERE node_id = 'node-b'")
            .await,
        1,
        "node B's open association is visible to the cluster"
    );
    // Node B dies with the association open and its stable-age timer far away.
    b.start_kill().unwrap();
    b.wait().await.unwrap();

    assert_eq!(a.wait_complete(study, 20).await, 1);
    let payload = completion_payload(&a, study).await;
    assert_eq!(payload["completed_by"], "stable-age", "{payload}");
    assert_eq!(payload["node"], "node-a", "{payload}");
    wait_for(15, "node B's registration and entries expire", || async {
        a.count("SELECT COUNT(*) FROM cluster_nodes WHERE node_id = 'node-b'")
            .await
            == 0
            && a.count("SELECT COUNT(*) FROM study_senders").await == 0
    })
    .await;
    let (_, health) = a.get_json("/health").await;
    let ids: Vec<&str> = health["node"]["cluster"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["node-a"], "{health}");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads events until `inference.completed` for `study`; each with how long after it was
/// written (its `created_at`, epoch ms) it arrived.
async fn read_until_result(
    app: &TestApp,
    sse: &mut SseClient,
    study: &str,
) -> Vec<(SseMessage, i64)> {
    let mut seen = Vec::new();
    loop {
        let m = sse.next(60).await.expect("stream ended early");
        let arrived = now_ms();
        let done = m.event == "inference.completed" && m.data["study_uid"] == study;
        seen.push((m, arrived));
        if done {
            break;
        }
    }
    let mut out = Vec::new();
    for (m, arrived) in seen {
        let created: i64 = sqlx::query_scalar("SELECT created_at FROM events WHERE id = $1")
            .bind(m.id.unwrap())
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        out.push((m, arrived - created));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_events_reach_sse_on_any_node_at_once_and_resume_on_a_third() {
    // A and C serve the API only; B receives and runs the models. A polls only every minute:
    // what it streams at once came by notification.
    let a = TestApp::spawn_with(Db::Postgres, |s| {
        s.node.id = "node-a".into();
        s.node.roles = radstream::cluster::Roles::parse("api").unwrap();
        s.events.poll_ms = 60_000;
    })
    .await;
    let b = join(&a, |s| {
        s.node.id = "node-b".into();
        s.node.roles = radstream::cluster::Roles::parse("ingest,worker").unwrap();
    })
    .await;
    let c = join(&a, |s| {
        s.node.id = "node-c".into();
        s.node.roles = radstream::cluster::Roles::parse("api").unwrap();
    })
    .await;
    assert_eq!(a.dicom.port(), 0, "an api node has no DICOM listener");
    let token = a.token(&[Scope::ResultsRead]);
    let mut sse = SseClient::open(&a, "/v1/events", &token, None).await;

    let dir = tempfile::tempdir().unwrap();
    let (study, copies) = fixture_copy("dx_normal", dir.path(), 1);
    storescu_to(b.dicom.port(), &[], &copies).await;
    let seen = read_until_result(&a, &mut sse, &study).await;
    let ids: Vec<i64> = seen.iter().map(|(m, _)| m.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");
    let kinds: Vec<&str> = seen.iter().map(|(m, _)| m.event.as_str()).collect();
    for k in ["study.received", "study.complete", "inference.started"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    // Every event of node B streamed from node A well before A's own poll or safety sweep
    // (5 s) could have found it.
    let worst = seen.iter().map(|(_, lag)| *lag).max().unwrap();
    assert!(worst < 1500, "cross-node lag {worst} ms: {kinds:?}");
    // The same events, in the same order, from the table.
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM events WHERE id >= $1 AND id <= $2 ORDER BY id")
            .bind(ids[0])
            .bind(*ids.last().unwrap())
            .fetch_all(&a.db.pool)
            .await
            .unwrap();
    assert_eq!(stored, ids, "no gap, no duplicate");

    // Resume on node C after the study.complete event: the rest, exactly once each.
    let complete_at = seen
        .iter()
        .position(|(m, _)| m.event == "study.complete")
        .unwrap();
    let resume_after = ids[complete_at];
    let mut on_c = SseClient::open(&c, "/v1/events", &token, Some(resume_after)).await;
    let mut replayed = Vec::new();
    while replayed.last() != ids.last() {
        let m = on_c.next(30).await.expect("stream ended early");
        replayed.push(m.id.unwrap());
    }
    assert_eq!(replayed, ids[complete_at + 1..].to_vec());

    // The database drops every connection (as in a server restart): the nodes reconnect,
    // and node A still streams node B's next study at once.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&a.db.pool)
    .await
    .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let (study2, copies2) = fixture_copy("dx_normal", dir2.path(), 1);
    let mut sent = false;
    for _ in 0..20 {
        // The first association may meet the node while its connections are re-made.
        if run_async(
            "storescu",
            &[
                "-aec",
                "RADSTREAM",
                "127.0.0.1",
                &b.dicom.port().to_string(),
                copies2[0].to_str().unwrap(),
            ],
        )
        .await
        .0
        {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        sent,
        "node B accepts again after the connections were dropped"
    );
    let seen2 = read_until_result(&a, &mut sse, &study2).await;
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE study_uid = $1")
        .bind(&study2)
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1, "one job");
    let ran: i64 = sqlx::query_scalar("SELECT attempts FROM jobs WHERE study_uid = $1")
        .bind(&study2)
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(ran, 1, "the job ran once");
    let lags: Vec<i64> = seen2.iter().map(|(_, l)| *l).collect();
    let completed = seen2.last().unwrap();
    assert!(
        completed.1 < 1500,
        "inference.completed streamed {} ms after commit after the reconnect: {lags:?}",
        completed.1
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_a_node_serves_and_health_and_metrics_name_the_node() {
    let ingest = TestApp::spawn_with(Db::Postgres, |s| {
        s.node.id = "edge-1".into();
        s.node.roles = radstream::cluster::Roles::parse("ingest").unwrap();
    })
    .await;
    let api = join(&ingest, |s| {
        s.node.id = "api-1".into();
        s.node.roles = radstream::cluster::Roles::parse("api").unwrap();
    })
    .await;
    // The ingest node answers DICOM and its operations endpoints, not the API.
    let (ok, out) = run_async(
        "echoscu",
        &["-aec", "RADSTREAM", "127.0.0.1", &ingest.dicom_port()],
    )
    .await;
    assert!(ok, "echoscu: {out}");
    let token = ingest.token(&[Scope::Admin]);
    let r = ingest
        .client()
        .get(ingest.url("/v1/studies"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no API on an ingest node");
    let (status, h) = ingest.get_json("/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["node"]["id"], "edge-1");
    assert_eq!(h["node"]["roles"], serde_json::json!(["ingest"]));
    assert_eq!(h["dicom"]["status"], "up");
    let members: Vec<&str> = h["node"]["cluster"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec!["api-1", "edge-1"], "{h}");
    let metrics = ingest
        .client()
        .get(ingest.url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("radstream_dicom_associations_open{node=\"edge-1\"}"),
        "{metrics}"
    );

    // It takes STOW-RS too (ingest over HTTP), but serves no DICOMweb reads.
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = fixture_copy("dx_normal", dir.path(), 1);
    let body = crate::dicomweb::multipart(
        "XYZ",
        &[("application/dicom", std::fs::read(&files[0]).unwrap())],
    );
    let (status, answer) = crate::dicomweb::stow(
        &ingest,
        "/dicomweb/studies",
        "multipart/related; type=\"application/dicom\"; boundary=XYZ",
        body,
    )
    .await;
    assert_eq!(status, 200, "STOW-RS on an ingest node: {answer}");
    assert_eq!(ingest.wait_complete(&study, 20).await, 1);
    let r = ingest
        .client()
        .get(ingest.url("/dicomweb/studies"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        405,
        "no QIDO-RS on an ingest node (the path takes POST only)"
    );
    let r = ingest
        .client()
        .get(ingest.url(&format!("/dicomweb/studies/{study}/series")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no QIDO-RS on an ingest node");

    // The API node has no DICOM listener and serves the API.
    let (_, h) = api.get_json("/health").await;
    assert_eq!(h["dicom"]["status"], "off", "{h}");
    assert_eq!(h["node"]["roles"], serde_json::json!(["api"]));
    let r = api
        .client()
        .get(api.url("/v1/studies"))
        .bearer_auth(api.token(&[Scope::Admin]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Three nodes on one database and one bucket, each with its own spool: A serves the API,
/// B (a process of its own) receives, C receives and runs the models. B is killed with
/// `kill -9` while four senders stream to it: every instance B acknowledged is in the bucket
/// and served byte-identical by A through WADO-RS, with the data set as sent; the interrupted
/// studies complete on another node, and C's workers analyse them from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_ingest_loses_nothing_it_acknowledged_and_others_finish_its_studies() {
    let s3 = SeaweedFs::start().await;
    let fast_expiry = |s: &mut Settings| {
        s.node.heartbeat_secs = 1;
        s.node.expire_secs = 3;
        s.study.stable_age_secs = 3;
    };
    let a = TestApp::spawn_with(Db::Postgres, |s| {
        s3.configure(s);
        fast_expiry(s);
        s.node.id = "node-a".into();
        s.node.roles = radstream::cluster::Roles::parse("api").unwrap();
    })
    .await;
    let _c = join(&a, |s| {
        s3.configure(s);
        fast_expiry(s);
        s.node.id = "node-c".into();
        s.node.roles = radstream::cluster::Roles::parse("ingest,worker").unwrap();
    })
    .await;
    let url = a.settings.database.url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dicom_b, http_b) = (free_port(), free_port());
    let mut env = s3.env();
    env.extend([
        (
            "RADSTREAM_DATABASE__URL",
            secrecy::ExposeSecret::expose_secret(&url).to_string(),
        ),
        ("RADSTREAM_NODE__ID", "node-b".into()),
        ("RADSTREAM_NODE__ROLES", "ingest".into()),
        ("RADSTREAM_NODE__HEARTBEAT_SECS", "1".into()),
        ("RADSTREAM_NODE__EXPIRE_SECS", "3".into()),
        ("RADSTREAM_STUDY__STABLE_AGE_SECS", "3".into()),
    ]);
    let mut b = spawn_node(&dir.path().join("b"), dicom_b, http_b, &env);
    wait_port(dicom_b).await;

    let mut groups = Vec::new();
    for i in 0..4 {
        groups.push(write_studies(
            &dir.path().join(format!("src{i}")),
            1,
            20,
            128,
        ));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut senders = Vec::new();
    for (_, paths) in &groups {
        let mut cmd = Command::new(python());
        cmd.arg("-c")
            .arg(crate::crash::SENDER)
            .arg(dicom_b.to_string())
            .args(paths)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("python venv with pynetdicom");
        let out = child.stdout.take().unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(out));
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
        senders.push(child);
    }
    drop(tx);
    let mut acked = std::collections::HashSet::new();
    while acked.len() < 40 {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(uid)) => {
                acked.insert(uid);
            }
            _ => panic!("senders stalled after {} acknowledgements", acked.len()),
        }
    }
    b.start_kill().unwrap();
    b.wait().await.unwrap();
    // What was acknowledged before the kill took effect.
    while let Ok(Some(uid)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        acked.insert(uid);
    }
    for s in &mut senders {
        let _ = s.wait().await;
    }

    let sent: std::collections::HashMap<String, PathBuf> = groups
        .iter()
        .flat_map(|(_, paths)| paths.iter())
        .map(|p| {
            let obj = dicom_object::open_file(p).unwrap();
            let sop = obj
                .meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string();
            (sop, p.clone())
        })
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    for sop in &acked {
        let row = sqlx::query(
            "SELECT study_uid, series_uid, file_path FROM instances WHERE sop_instance_uid = $1",
        )
        .bind(sop)
        .fetch_optional(&a.db.pool)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("acknowledged {sop} is not indexed"));
        let (study, series, key): (String, String, String) = (
            row.get("study_uid"),
            row.get("series_uid"),
            row.get("file_path"),
        );
        let object = s3.get(&key).await;
        let served = crate::object_storage::wado_instance(&a, &study, &series, sop).await;
        assert!(
            served == object,
            "{sop}: WADO-RS from node A equals the bucket's object"
        );
        let copy = scratch.path().join(format!("{sop}.dcm"));
        std::fs::write(&copy, &object).unwrap();
        assert!(
            data_set_bytes(&copy) == data_set_bytes(&sent[sop]),
            "{sop}: the data set as sent"
        );
    }
    // The studies B was receiving complete elsewhere, and node C analyses them from the bucket.
    for (studies, _) in &groups {
        let study = &studies[0];
        let stored = a
            .count(&format!(
                "SELECT COUNT(*) FROM instances WHERE study_uid = '{study}'"
            ))
            .await;
        if stored == 0 {
            continue;
        }
        // Every image was read back from the bucket and decoded (these synthetic squares
        // are then rejected as not radiographs, which is the model's answer, not a failure).
        let result = a.wait_result(study, 1).await;
        let summary = &result["data"]["summary"];
        assert_eq!(summary["images_total"], stored, "{summary}");
        assert_eq!(summary["images_failed"], 0, "{summary}");
        let worker: String = sqlx::query_scalar(
            "SELECT worker FROM jobs WHERE study_uid = $1 AND state = 'succeeded'",
        )
        .bind(study)
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
        assert!(worker.starts_with("node-c/"), "run by node C: {worker}");
    }
}
