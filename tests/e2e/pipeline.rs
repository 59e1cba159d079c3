//! The spine end to end: DCMTK sends a study, an SSE client sees it complete and its result,
//! REST serves the same result; resume, reprocess, long polling, job claiming, crash recovery.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use radstream::auth::Scope;
use radstream::db::Database;
use radstream::job;
use serde_json::Value;
use tokio::process::Child;

use crate::helpers::*;
use crate::ingest::wait_port;

fn types_for(events: &[SseMessage], study: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.data["study_uid"] == study)
        .map(|e| e.event.clone())
        .collect()
}

async fn spine(db: Db) {
    let app = TestApp::spawn(db).await;
    let token = app.token(&[Scope::ResultsRead]);
    let mut sse = SseClient::open(&app, "/v1/events", &token, None).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = fixture_copy("cr_cardiomegaly", dir.path(), 1);
    storescu(&app, &files).await;

    let seen = sse.until("inference.completed", &study, 60).await;
    assert_eq!(
        types_for(&seen, &study),
        [
            "study.received",
            "study.complete",
            "inference.started",
            "inference.model_completed",
            "inference.model_completed",
            "inference.completed"
        ],
        "event order: each model's outcome, then the combined result"
    );
    let mut per_model: Vec<(String, String)> = seen
        .iter()
        .filter(|e| e.event == "inference.model_completed")
        .map(|e| {
            let d = &e.data["data"];
            (
                d["model_id"].as_str().unwrap().to_string(),
                d["validation_status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    per_model.sort();
    assert_eq!(
        per_model,
        [
            ("ctr-demo".to_string(), "synthetic-only".to_string()),
            ("cxr-demo".to_string(), "synthetic-only".to_string())
        ]
    );
    let ids: Vec<i64> = seen.iter().filter_map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let done = &seen.last().unwrap().data;
    assert_eq!(done["data"]["urgency"], "standard", "{done}");
    assert_eq!(
        done["data"]["models"].as_array().unwrap().len(),
        2,
        "{done}"
    );
    assert_eq!(done["data"]["model"]["validation_status"], "synthetic-only");
    assert_eq!(
        done["data"]["summary"]["findings_present"],
        serde_json::json!(["cardiomegaly"])
    );
    let result_id = done["data"]["result_id"].as_i64().unwrap();

    // REST returns the same result.
    let (status, body) = app.get_json(&format!("/v1/studies/{study}/results")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert!(body["meta"]["request_id"].is_string());
    let r = &body["data"];
    assert_eq!(r["id"], result_id);
    assert_eq!(r["version"], 1);
    assert_eq!(r["status"], "final");
    assert_eq!(r["urgency"], "standard");
    assert_eq!(r["images"].as_array().unwrap().len(), 2);
    for img in r["images"].as_array().unwrap() {
        assert_eq!(img["status"], "analysed");
        let findings = img["findings"].as_array().unwrap();
        assert_eq!(findings.len(), 11, "eleven coded findings");
        let cardio = findings
            .iter()
            .find(|f| f["key"] == "cardiomegaly")
            .unwrap();
        assert_eq!(cardio["presence"], true);
        assert_eq!(cardio["code"]["system"], "http://snomed.info/sct");
        assert_eq!(cardio["member_outputs"].as_array().unwrap().len(), 5);
    }
    assert_eq!(r["metadata"]["model_version"], "cxr-demo-0.1.0");
    assert_eq!(r["model"]["validation_status"], "synthetic-only");
    // Both models' outcomes, and the landmark model's CTR on each image.
    let models = r["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{models:?}");
    for m in models {
        assert_eq!(m["status"], "succeeded", "{m}");
        assert_eq!(m["images_analysed"], 2, "{m}");
    }
    let ctrs: Vec<&serde_json::Value> = r["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["key"] == "cardiothoracic_ratio" && m["method"] == "landmarks")
        .collect();
    assert_eq!(ctrs.len(), 2, "{}", r["measurements"]);
    for img in r["images"].as_array().unwrap() {
        assert_eq!(img["landmarks"]["status"], "analysed", "{img}");
        assert!(
            img["landmarks"]["ctr"]["ratio"].as_f64().unwrap() > 0.55,
            "{img}"
        );
    }
    assert!(r["metadata"]["patient_id"]
        .as_str()
        .unwrap()
        .starts_with("SYN"));
    assert!(r["timings"]["receipt_to_result_ms"].as_i64().unwrap() >= 0);

    // Search by urgency and patient, CSV rendering, and the audit trail of the read.
    let pid = r["metadata"]["patient_id"].as_str().unwrap().to_string();
    let (_, list) = app
        .get_json(&format!(
            "/v1/studies?patient_id={pid}&urgency=standard,urgent"
        ))
        .await;
    assert!(list["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["study_uid"] == study.as_str()));
    let (_, none) = app
        .get_json(&format!("/v1/studies?patient_id={pid}&urgency=critical"))
        .await;
    assert_eq!(none["data"]["total"], 0);
    let csv = app
        .client()
        .get(app.url(&format!("/v1/studies/{study}/results?format=csv")))
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    assert!(text.lines().next().unwrap().contains("finding"), "{text}");
    // A row per image and finding, then one per measurement (the landmark CTR of each image).
    assert_eq!(text.lines().count(), 1 + 2 * 11 + 2, "{text}");
    assert!(text.contains("cardiothoracic_ratio"), "{text}");
    let audited = app
        .count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'results.read' AND study_uid = '{study}' AND patient_id = '{pid}'"
        ))
        .await;
    assert!(audited >= 1);
}

on_both_databases!(storescu_study_streams_completion_and_findings_and_rest_agrees => spine);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effusion_is_urgent_and_pushed_to_urgency_filtered_streams() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let token = app.token(&[Scope::ResultsRead]);
    let mut urgent = SseClient::open(&app, "/v1/events?min_urgency=urgent", &token, None).await;
    let dir = tempfile::tempdir().unwrap();
    let (normal, files) = fixture_copy("dx_normal", &dir.path().join("n"), 1);
    storescu(&app, &files).await;
    let (effusion, files) = fixture_copy("dx_effusion_rle", &dir.path().join("e"), 1);
    storescu_with(&app, &["-xr"], &files).await;

    let seen = urgent.until("study.urgent", &effusion, 60).await;
    assert!(
        seen.iter()
            .all(|e| e.data["study_uid"] == effusion.as_str()),
        "only the urgent study passes the filter: {seen:?}"
    );
    assert_eq!(
        types_for(&seen, &effusion),
        ["inference.completed", "study.urgent"]
    );
    assert_eq!(seen[1].data["data"]["urgency"], "urgent");
    assert!(seen[1].data["data"]["findings_present"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "pleural_effusion"));

    let (_, r) = app.get_json(&format!("/v1/studies/{normal}/results")).await;
    assert_eq!(r["data"]["urgency"], "low", "{r}");
    assert_eq!(
        r["data"]["summary"]["findings_present"],
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_last_event_id_delivers_every_event_exactly_once() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let token = app.token(&[Scope::ResultsRead]);
    let dir = tempfile::tempdir().unwrap();
    let mut sse = SseClient::open(&app, "/v1/events", &token, None).await;
    let (first, files) = fixture_copy("dx_normal", &dir.path().join("a"), 1);
    storescu(&app, &files).await;
    // Drop the stream in the middle of the first study's events.
    let mut got: Vec<SseMessage> = vec![sse.next(60).await.unwrap(), sse.next(60).await.unwrap()];
    drop(sse);
    let (second, files) = fixture_copy("dx_normal", &dir.path().join("b"), 1);
    storescu(&app, &files).await;
    app.wait_complete(&second, 30).await;

    let last = got.last().unwrap().id.unwrap();
    let mut sse = SseClient::open(&app, "/v1/events", &token, Some(last)).await;
    got.extend(sse.until("inference.completed", &first, 60).await);
    if !got
        .iter()
        .any(|e| e.event == "inference.completed" && e.data["study_uid"] == second.as_str())
    {
        got.extend(sse.until("inference.completed", &second, 60).await);
    }
    let ids: Vec<i64> = got.iter().map(|e| e.id.unwrap()).collect();
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no duplicate: {ids:?}");

    // Against the stored history: every event up to the last one seen, none missing.
    let (_, hist) = app.get_json("/v1/events/history?limit=1000").await;
    let stored: Vec<i64> = hist["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .filter(|id| id <= ids.iter().max().unwrap())
        .collect();
    assert_eq!(ids, stored, "no gap");

    // The query-parameter form resumes the same way (EventSource cannot set headers).
    let mid = ids[ids.len() / 2];
    let mut q = SseClient::open(
        &app,
        &format!("/v1/events?last_event_id={mid}"),
        &token,
        None,
    )
    .await;
    let next = q.next(10).await.unwrap();
    assert_eq!(next.id, Some(ids[ids.len() / 2 + 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_adds_a_result_version_and_long_poll_waits_for_it() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = fixture_copy("dx_normal", dir.path(), 1);
    storescu(&app, &files).await;
    let token = app.token(&[Scope::ResultsRead]);
    let mut study_stream =
        SseClient::open(&app, &format!("/v1/studies/{study}/events"), &token, None).await;
    let mut kinds = Vec::new();
    while let Some(m) = study_stream.next(60).await {
        kinds.push(m.event);
    }
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("inference.completed"),
        "{kinds:?}"
    );

    // A reader cannot reprocess; a writer can.
    let denied = reqwest::Client::new()
        .post(app.url(&format!("/v1/studies/{study}/reprocess")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let writer = app.token(&[Scope::InferenceWrite, Scope::ResultsRead]);
    let resp = reqwest::Client::new()
        .post(app.url(&format!("/v1/studies/{study}/reprocess")))
        .bearer_auth(&writer)
        .json(&serde_json::json!({"model": "cxr-demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let job_id = job["data"]["id"].as_i64().unwrap();
    assert_eq!(job["data"]["kind"], "reprocess");
    assert_eq!(job["data"]["requested_by"], "test");

    let (_, polled) = app.get_json(&format!("/v1/jobs/{job_id}?wait=30")).await;
    assert_eq!(polled["data"]["state"], "succeeded", "{polled}");
    let (_, latest) = app.get_json(&format!("/v1/studies/{study}/results")).await;
    assert_eq!(latest["data"]["version"], 2);
    assert_eq!(latest["data"]["superseded"], false);
    let (_, v1) = app
        .get_json(&format!("/v1/studies/{study}/results/1"))
        .await;
    assert_eq!(v1["data"]["superseded"], true);
    let (_, detail) = app.get_json(&format!("/v1/studies/{study}")).await;
    assert_eq!(detail["data"]["results"].as_array().unwrap().len(), 2);
    assert_eq!(
        detail["data"]["series"][0]["instances"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Unknown model, or the landmark model (the pipeline runs classification models only):
    // the field is named.
    for model in ["nope", "ctr-demo"] {
        let bad = reqwest::Client::new()
            .post(app.url(&format!("/v1/studies/{study}/reprocess")))
            .bearer_auth(&writer)
            .json(&serde_json::json!({ "model": model }))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{model}");
        let body: Value = bad.json().await.unwrap();
        assert_eq!(body["error"]["field"], "model", "{body}");
        assert!(body.to_string().contains("classification model"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_named() {
    let app = TestApp::spawn(Db::Sqlite).await;
    for (path, field) in [
        ("/v1/studies?from=2024-13-01", "from"),
        ("/v1/studies?page_size=0", "page_size"),
        ("/v1/studies?urgency=soon", "urgency"),
        ("/v1/studies?status=done", "status"),
        ("/v1/studies?bogus=1", "bogus"),
        ("/v1/studies/1.2.abc", "study_uid"),
        ("/v1/studies/1.2.3/results/0", "version"),
        ("/v1/events?type=nope", "type"),
        ("/v1/events?min_urgency=high", "min_urgency"),
        ("/v1/events?last_event_id=-4", "last_event_id"),
        ("/v1/events/history?limit=5000", "limit"),
        ("/v1/jobs/abc", "job_id"),
        ("/v1/jobs/1?wait=600", "wait"),
        ("/v1/jobs?state=lost", "state"),
        ("/v1/models?format=pdf", "format"),
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["status"], "error");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
    let (status, body) = app.get_json("/v1/studies/1.2.3/results").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = app.get_json("/v1/jobs/999999").await;
    assert_eq!(status, 404);
}

/// Several "nodes" (independent pools) claiming from one PostgreSQL queue at once never get
/// the same job, and every job is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_on_postgres_never_share_a_job() {
    let pg = PgDatabase::create().await;
    let node = |_: usize| async {
        let db = Database::connect_url(&pg.url, Some(4), radstream::db::Durability::Os)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        db
    };
    let a = node(0).await;
    let b = node(1).await;
    const JOBS: usize = 120;
    sqlx::query("INSERT INTO patients (patient_key, created_at, updated_at) VALUES ('k', 0, 0)")
        .execute(&a.pool)
        .await
        .unwrap();
    for i in 0..JOBS {
        let uid = format!("1.2.3.{i}");
        sqlx::query(
            "INSERT INTO studies (study_uid, patient_pk, status, first_received_at, last_received_at, updated_at) \
             VALUES ($1, 1, 'complete', 0, 0, 0)",
        )
        .bind(&uid)
        .execute(&a.pool)
        .await
        .unwrap();
        let mut tx = a.begin_write().await.unwrap();
        job::enqueue(&mut tx, &uid, 1).await.unwrap().unwrap();
        tx.commit().await.unwrap();
    }
    let mut tasks = Vec::new();
    for (n, db) in [a.clone(), a, b.clone(), b].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(j) = job::claim(&db, &format!("w{n}"), 60_000).await.unwrap() {
                mine.push(j.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        per_worker.push(mine.len());
        all.extend(mine);
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), JOBS, "every job claimed once: {per_worker:?}");
    assert_eq!(unique.len(), JOBS, "no job claimed twice");
}

fn start_node(data: &Path, dicom_port: u16, http_port: u16) -> Child {
    spawn_node(
        data,
        dicom_port,
        http_port,
        &[
            ("RADSTREAM_STUDY__QUIET_WINDOW_MS", "100".into()),
            ("RADSTREAM_PIPELINE__LEASE_SECS", "2".into()),
            ("RADSTREAM_PIPELINE__WORKERS", "1".into()),
        ],
    )
}

/// `kill -9` while a job runs: after restart the job is taken up again (its lease ran out) and
/// the study gets exactly one result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_inference_yields_exactly_one_result_after_restart() {
    // A TestApp only to borrow its token issuer and secret; the node under test is a process.
    let issuer_app = TestApp::spawn(Db::Sqlite).await;
    let token = issuer_app.token(&[Scope::ResultsRead]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (dicom_port, http_port) = (free_port(), free_port());
    let mut node = start_node(&data, dicom_port, http_port);
    wait_port(dicom_port).await;
    wait_port(http_port).await;

    // Enough images that inference takes a while.
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 12);
    let base = format!("http://127.0.0.1:{http_port}");
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/events?type=inference.started"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    storescu_to(dicom_port, &[], &files).await;
    // Wait for inference.started, then kill at once.
    let mut resp = resp;
    let mut buf = String::new();
    while !buf.contains("event: inference.started") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("inference.started within 30 s")
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    node.start_kill().unwrap();
    node.wait().await.unwrap();

    let db = Database::connect_url(
        &format!("sqlite://{}?mode=rwc", data.join("radstream.db").display()),
        Some(1),
        radstream::db::Durability::Fsync,
    )
    .await
    .unwrap();
    let results_before = count(&db, "SELECT COUNT(*) FROM results").await;
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE study_uid = $1")
        .bind(&study)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (results_before, state.as_str()),
        (0, "running"),
        "killed mid-job"
    );

    let mut node = start_node(&data, dicom_port, http_port);
    wait_port(http_port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row: (String, i64) =
            sqlx::query_as("SELECT state, attempts FROM jobs WHERE study_uid = $1")
                .bind(&study)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        if row.0 == "succeeded" {
            assert_eq!(row.1, 2, "taken up again after the crash");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job not finished: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let results: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM results WHERE study_uid = $1")
        .bind(&study)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(results, 1, "exactly one result");
    let completed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE type = 'inference.completed' AND study_uid = $1",
    )
    .bind(&study)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(completed, 1);
    node.start_kill().unwrap();
    let _ = node.wait().await;
}

/// Two `radstream serve` processes on one PostgreSQL database (sharing the data folder):
/// every job is run by exactly one of them, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_node_processes_on_one_postgres_never_run_the_same_job() {
    let pg = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |dicom_port: u16, http_port: u16| {
        spawn_node(
            &data,
            dicom_port,
            http_port,
            &[
                ("RADSTREAM_DATABASE__URL", pg.url.clone()),
                ("RADSTREAM_STUDY__QUIET_WINDOW_MS", "100".into()),
                ("RADSTREAM_PIPELINE__WORKERS", "1".into()),
                ("RADSTREAM_PIPELINE__POLL_MS", "20".into()),
            ],
        )
    };
    let (dicom_a, http_a) = (free_port(), free_port());
    let mut a = start(dicom_a, http_a);
    wait_port(http_a).await;
    let (dicom_b, http_b) = (free_port(), free_port());
    let mut b = start(dicom_b, http_b);
    wait_port(http_b).await;

    const STUDIES: usize = 12;
    let mut files = Vec::new();
    for i in 0..STUDIES {
        let (_, f) = fixture_copy("cr_cardiomegaly", &dir.path().join(format!("s{i}")), 1);
        files.extend(f);
    }
    storescu_to(dicom_a, &[], &files).await;

    let db = Database::connect_url(&pg.url, Some(2), radstream::db::Durability::Os)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let done = count(&db, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await;
        if done == STUDIES as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {STUDIES} jobs done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT id, attempts, worker FROM jobs ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), STUDIES);
    assert!(rows.iter().all(|r| r.1 == 1), "no job ran twice: {rows:?}");
    let results = count(&db, "SELECT COUNT(*) FROM results").await;
    assert_eq!(results, STUDIES as i64, "one result per job");
    // Worker ids start with the process id: both nodes took part.
    let nodes: HashSet<&str> = rows
        .iter()
        .map(|r| r.2.split('-').next().unwrap_or(""))
        .collect();
    assert_eq!(nodes.len(), 2, "both processes ran jobs: {rows:?}");
    a.start_kill().unwrap();
    b.start_kill().unwrap();
    let _ = a.wait().await;
    let _ = b.wait().await;
}
