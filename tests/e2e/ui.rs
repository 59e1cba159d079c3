//! The web pages and OHIF in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/ui/`, installed by `scripts/setup.sh --test`), against a node started here.
//!
//! - `pages_in_chromium`: a bad key is refused with a clear message; an admin logs in and sees
//!   the worklist; a study sent with DCMTK `storescu` appears and gets its result and urgency
//!   without a reload within 2 s of `inference.completed`, and stands out on its
//!   `study.urgent` push; its page shows the rendered image
//!   with the lung contours and landmarks, the node's overlay, the findings and the timeline; a dead export is
//!   retried from the exports page; OHIF opens the study and lists its SR and SEG series; a key with
//!   only `results:read` sees no admin button.
//! - `event_stream_resumes_after_a_drop`: the node (a separate process) is killed and started
//!   again; the worklist shows it, reconnects with `Last-Event-ID` and keeps updating.
//! - `timeline_me_and_urgency_order::{sqlite,postgres}` (no browser): `GET /v1/me`, a study's
//!   timeline from receipt to its dead export, `sort=urgency`.
//! - `worklist_with_10k_studies`: first paint and filter response with 10,000 studies in the
//!   index (printed, bounded only generously).
//!
//! Without Chromium, playwright-core or OHIF these tests fail, naming what is missing, unless
//! `RADSTREAM_UI_TESTS_OPTIONAL=1`, where they print SKIP and pass. Screenshots go to
//! `RADSTREAM_UI_SCREENSHOTS` when set (the guide's come from
//! `RADSTREAM_UI_SCREENSHOTS=docs/src/images`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use radstream::auth::{keys, Scope};
use radstream::domain::Uid;
use radstream::export::{Destination, DestinationKind, OutputKind};
use radstream::store::index::{self, InstanceRecord};
use radstream::store::InstanceHeader;

use crate::helpers::{
    fixture_copy, free_port, on_both_databases, radstream_bin, storescu, Db, TestApp,
    TEST_JWT_SECRET,
};

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What the browser tests need, or why they cannot run (`ohif`: the viewer and the lung
/// segmenter, whose SEG OHIF must list).
fn prerequisites(ohif: bool) -> Result<(), String> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!(
            "{CHROMIUM} (apt-get install chromium chromium-driver)"
        ));
    }
    if !repo()
        .join("tests/ui/node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push("tests/ui/node_modules/playwright-core (npm ci in tests/ui)".into());
    }
    if ohif && !repo().join("ohif/index.html").exists() {
        missing.push("ohif/index.html (the OHIF viewer)".into());
    }
    if ohif && !repo().join("models/lung-seg/model.onnx").exists() {
        missing.push("models/lung-seg/model.onnx (the lung segmenter)".into());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing {}; run scripts/setup.sh --test",
            missing.join(", ")
        ))
    }
}

/// `true` when the test may run; `false` (after a loud SKIP) when it may be skipped; panics
/// when something is missing and skipping was not asked for.
fn may_run(test: &str, ohif: bool) -> bool {
    match prerequisites(ohif) {
        Ok(()) => true,
        Err(why) if std::env::var("RADSTREAM_UI_TESTS_OPTIONAL").as_deref() == Ok("1") => {
            eprintln!("\n*** SKIP ui::{test}: {why} (RADSTREAM_UI_TESTS_OPTIONAL=1) ***\n");
            false
        }
        Err(why) => panic!("ui::{test} cannot run: {why}"),
    }
}

/// Runs `tests/ui/<script>` under node with `env`, echoing its lines; returns its stdout.
async fn run_script(script: &str, env: &[(&str, String)], limit: Duration) -> String {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(repo().join("tests/ui").join(script))
        .current_dir(repo().join("tests/ui"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start node");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} ran longer than {limit:?}"))
        .expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    stdout
}

fn screenshots() -> String {
    std::env::var("RADSTREAM_UI_SCREENSHOTS")
        .map(|d| {
            let p = PathBuf::from(&d);
            let p = if p.is_absolute() { p } else { repo().join(p) };
            std::fs::create_dir_all(&p).expect("screenshot folder");
            p.display().to_string()
        })
        .unwrap_or_default()
}

/// A DICOM destination nobody listens on: each output fails once and is dead at once.
fn dead_destination() -> Destination {
    Destination {
        name: "pacs".into(),
        kind: DestinationKind::Dicom,
        ae_title: Some("NOBODY".into()),
        host: Some("127.0.0.1".into()),
        port: Some(free_port()),
        sending_application: None,
        sending_facility: None,
        receiving_application: None,
        receiving_facility: None,
        version: None,
        calling_ae: None,
        tls_ca: None,
        tls_certificate: None,
        tls_private_key: None,
        url: None,
        authorization: None,
        outputs: vec![OutputKind::Sr, OutputKind::Overlay],
        calling_aes: vec![],
        modalities: vec![],
        min_urgency: None,
        max_attempts: Some(1),
        storage_commitment: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_in_chromium() {
    if !may_run("pages_in_chromium", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.ui.ohif_dir = repo().join("ohif");
        // The real lung segmenter too: its contours on the study page, its SEG in OHIF.
        s.inference.models.push("lung-seg".into());
        s.export.poll_ms = 100;
        s.export.retry_base_ms = 100;
        s.export.timeout_secs = 2;
        s.export.destinations = vec![dead_destination()];
    })
    .await;
    let (_, admin) = keys::create(&app.db, "ui admin", &[Scope::Admin])
        .await
        .unwrap();
    let (_, reader) = keys::create(&app.db, "ui reader", &[Scope::ResultsRead])
        .await
        .unwrap();

    // Two studies already there, so the worklist shows more than the one the browser sees
    // arriving.
    for (i, fixture) in ["cr_cardiomegaly", "dx_normal"].into_iter().enumerate() {
        let (study, files) = fixture_copy(fixture, &dir.path().join(format!("pre{i}")), 1);
        storescu(&app, &files).await;
        app.wait_result(&study, 1).await;
    }
    // The phantom effusion is urgent (the test node trusts the demo models): its row gets the
    // study.urgent push. RLE Lossless, so storescu proposes it (-xr).
    let (study, files) = fixture_copy("dx_effusion_rle", &dir.path().join("live"), 1);
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();

    let started = Instant::now();
    let out = run_script(
        "pages.mjs",
        &[
            ("RS_BASE", app.url("")),
            ("RS_ADMIN_KEY", admin),
            ("RS_READ_KEY", reader),
            ("RS_DICOM_PORT", app.dicom_port()),
            ("RS_FILES", serde_json::to_string(&files).unwrap()),
            ("RS_STUDY_UID", study.clone()),
            ("RS_SHOTS", screenshots()),
        ],
        Duration::from_secs(240),
    )
    .await;
    assert!(out.contains("ALL PASSED"), "{out}");
    println!(
        "ui::pages_in_chromium: browser part {:?}",
        started.elapsed()
    );
}

/// `n` studies straight into the index through the store's functions (each complete, with a
/// result urgency), in transactions of 1000; no files, no jobs.
async fn seed_studies(app: &TestApp, n: usize) {
    const FAMILY: [&str; 12] = [
        "SMITH",
        "GARCIA",
        "MULLER",
        "ROSSI",
        "NGUYEN",
        "KOWALSKI",
        "DUBOIS",
        "SILVA",
        "KIM",
        "JOHANSSON",
        "OKAFOR",
        "TANAKA",
    ];
    const GIVEN: [&str; 8] = [
        "ANNA", "JAMES", "MARIA", "LI", "OMAR", "SOFIA", "PETER", "AMARA",
    ];
    const URGENCY: [&str; 4] = ["low", "standard", "urgent", "critical"];
    let now = radstream::clock::now_ms();
    let mut done = 0;
    while done < n {
        let mut tx = app.db.begin_write().await.unwrap();
        for i in done..(done + 1000).min(n) {
            let uid = |kind: u32| format!("2.25.{}{:09}", 900 + kind, i);
            let header = InstanceHeader {
                study_uid: Some(Uid::parse("study", &uid(1)).unwrap()),
                series_uid: Some(Uid::parse("series", &uid(2)).unwrap()),
                sop_instance_uid: Some(Uid::parse("sop", &uid(3)).unwrap()),
                sop_class_uid: Some(Uid::parse("class", "1.2.840.10008.5.1.4.1.1.1.1").unwrap()),
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                patient_id: Some(format!("LOAD{:06}", i % 4000)),
                patient_name: Some(format!(
                    "{}^{}",
                    FAMILY[i % FAMILY.len()],
                    GIVEN[(i / 7) % GIVEN.len()]
                )),
                study_date: Some(format!("2026{:02}{:02}", 1 + i % 12, 1 + i % 28)),
                study_description: Some("XR CHEST PA".into()),
                modality: Some(if i % 3 == 0 { "CR" } else { "DX" }.into()),
                series_number: Some(1),
                instance_number: Some(1),
                rows: Some(512),
                columns: Some(512),
                ..Default::default()
            };
            let received = now - (n - i) as i64 * 1000;
            let rec = InstanceRecord {
                header,
                file_path: format!("seed/{i}.dcm"),
                file_size: 1,
                calling_ae: "LOADSEED".into(),
                association_id: format!("seed-{i}"),
                received_at: received,
            };
            index::index_instance(&mut tx, app.db.backend, &rec)
                .await
                .unwrap();
            index::complete_study(&mut tx, &uid(1), received + 500, "release+quiet")
                .await
                .unwrap();
            index::set_current_result(&mut tx, &uid(1), URGENCY[i % 4], 1, received + 900)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        done = (done + 1000).min(n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worklist_with_10k_studies() {
    if !may_run("worklist_with_10k_studies", false) {
        return;
    }
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.pipeline.enabled = false;
    })
    .await;
    let t = Instant::now();
    seed_studies(&app, 10_000).await;
    println!("FIGURE seed_10000_studies_ms={}", t.elapsed().as_millis());
    assert_eq!(app.count("SELECT COUNT(*) FROM studies").await, 10_000);
    let (_, admin) = keys::create(&app.db, "ui load", &[Scope::Admin])
        .await
        .unwrap();
    let out = run_script(
        "load.mjs",
        &[("RS_BASE", app.url("")), ("RS_ADMIN_KEY", admin)],
        Duration::from_secs(120),
    )
    .await;
    assert!(out.contains("ALL PASSED"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_resumes_after_a_drop() {
    if !may_run("event_stream_resumes_after_a_drop", false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (dicom_port, http_port) = (free_port(), free_port());
    let node_env = serde_json::json!({
        "RADSTREAM_STORAGE__DATA_DIR": data,
        "RADSTREAM_STORAGE__MIN_FREE_BYTES": "0",
        "RADSTREAM_STORAGE__MIN_FREE_PERCENT": "0",
        "RADSTREAM_DICOM__HOST": "127.0.0.1",
        "RADSTREAM_DICOM__PORT": dicom_port.to_string(),
        "RADSTREAM_HTTP__PORT": http_port.to_string(),
        "RADSTREAM_STUDY__QUIET_WINDOW_MS": "200",
        "RADSTREAM_AUTH__JWT_SECRET": TEST_JWT_SECRET,
        "RADSTREAM_INFERENCE__MODELS_DIR": repo().join("models"),
        "RADSTREAM_INFERENCE__MODELS": r#"["cxr-demo","ctr-demo"]"#,
        "RADSTREAM_LOG__LEVEL": "warn",
    });
    let out = std::process::Command::new(radstream_bin())
        .args(["keys", "create", "--name", "ui resume", "--scope", "admin"])
        .env("RADSTREAM_STORAGE__DATA_DIR", &data)
        .env("RADSTREAM_LOG__LEVEL", "warn")
        .output()
        .expect("radstream keys create");
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("the key")
        .trim()
        .to_string();
    let (study1, files1) = fixture_copy("dx_normal", &dir.path().join("one"), 1);
    let (study2, files2) = fixture_copy("cr_cardiomegaly", &dir.path().join("two"), 1);
    let list = |fs: &[PathBuf]| {
        serde_json::to_string(
            &fs.iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let out = run_script(
        "resume.mjs",
        &[
            ("RS_BASE", format!("http://127.0.0.1:{http_port}")),
            ("RS_ADMIN_KEY", key),
            ("RS_BIN", radstream_bin().display().to_string()),
            ("RS_NODE_ENV", node_env.to_string()),
            ("RS_DICOM_PORT", dicom_port.to_string()),
            ("RS_FILES_1", list(&files1)),
            ("RS_FILES_2", list(&files2)),
            ("RS_STUDY_1", study1),
            ("RS_STUDY_2", study2),
        ],
        Duration::from_secs(180),
    )
    .await;
    assert!(out.contains("ALL PASSED"), "{out}");
}

on_both_databases!(timeline_me_and_urgency_order => timeline_me_and_urgency_order_on);

/// The API the pages use, on both databases, without a browser: `GET /v1/me`, a study's
/// timeline from receipt to dead export, and `sort=urgency`.
async fn timeline_me_and_urgency_order_on(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(db, |s| {
        s.export.poll_ms = 100;
        s.export.timeout_secs = 2;
        s.export.destinations = vec![dead_destination()];
    })
    .await;
    let (_, reader) = keys::create(&app.db, "reader", &[Scope::ResultsRead])
        .await
        .unwrap();
    let me: serde_json::Value = reqwest::Client::new()
        .get(app.url("/v1/me"))
        .header("x-api-key", &reader)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["subject"], "reader", "{me}");
    assert_eq!(me["data"]["method"], "api_key", "{me}");
    assert_eq!(
        me["data"]["scopes"],
        serde_json::json!(["results:read"]),
        "{me}"
    );
    let (_, admin) = app.get_json("/v1/me").await;
    assert_eq!(
        admin["data"]["scopes"],
        serde_json::json!(["results:read", "inference:write", "admin"])
    );

    let (low, files) = fixture_copy("dx_normal", &dir.path().join("low"), 1);
    storescu(&app, &files).await;
    app.wait_result(&low, 1).await;
    let (urgent, files) = fixture_copy("dx_effusion_rle", &dir.path().join("urgent"), 1);
    crate::helpers::storescu_with(&app, &["-xr"], &files).await;
    app.wait_result(&urgent, 1).await;

    // Newest first by default, most urgent first on request (the urgent study came second).
    let (_, page) = app.get_json("/v1/studies?sort=received").await;
    assert_eq!(page["data"]["items"][0]["study_uid"], urgent.as_str());
    let (_, page) = app.get_json("/v1/studies?sort=urgency").await;
    let order: Vec<&str> = page["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["urgency"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(order, ["urgent", "low"], "{page}");
    let (status, bad) = app.get_json("/v1/studies?sort=name").await;
    assert_eq!(status, 400, "{bad}");

    // The timeline once the export is dead: every step, in order, with the job's node.
    let deadline = Instant::now() + Duration::from_secs(60);
    let entries = loop {
        let (status, t) = app.get_json(&format!("/v1/studies/{low}/timeline")).await;
        assert_eq!(status, 200, "{t}");
        let entries = t["data"]["entries"].as_array().unwrap().clone();
        if entries.iter().any(|e| e["kind"] == "export.dead") {
            break entries;
        }
        assert!(Instant::now() < deadline, "no dead export in {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "association",
        "study.received",
        "study.complete",
        "job.queued",
        "job.started",
        "inference.model_completed",
        "inference.completed",
        "job.finished",
        "export.queued",
        "export.dead",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let at: Vec<i64> = entries
        .iter()
        .map(|e| e["at_ms"].as_i64().unwrap())
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] <= w[1]),
        "not in time order: {at:?}"
    );
    let started = entries.iter().find(|e| e["kind"] == "job.started").unwrap();
    let node = app.settings.node.id.clone();
    assert!(started["node"].is_string(), "{started}");
    if !node.is_empty() {
        assert_eq!(started["node"], node.as_str(), "{started}");
    }
    let dead = entries.iter().find(|e| e["kind"] == "export.dead").unwrap();
    assert!(
        dead["detail"].as_str().unwrap().contains("127.0.0.1"),
        "{dead}"
    );
    let (status, _) = app
        .get_json("/v1/studies/1.2.826.0.1.3680043.10.99/timeline")
        .await;
    assert_eq!(status, 404);
}
