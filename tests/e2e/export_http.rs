//! Exports over HTTP: the FHIR push (to `tests/python/fhir_receiver.py`, a validating test
//! double: no real FHIR server is installable here) and STOW-RS to Orthanc's DICOMweb plugin.

use std::time::Duration;

use radstream::export::{Destination, DestinationKind, OutputKind};
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::*;

/// Starts the FHIR receiver; returns it with its port.
fn fhir_receiver(args: &[&str]) -> (Peer, u16) {
    let base = ["--port", "0", "--base", "/fhir"];
    python_peer(
        "fhir_receiver.py",
        base.iter().chain(args),
        "fhir.resources",
    )
}

pub fn destination(name: &str, kind: DestinationKind) -> Destination {
    Destination {
        name: name.into(),
        kind,
        ae_title: None,
        host: None,
        port: None,
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
        outputs: vec![],
        calling_aes: vec![],
        modalities: vec![],
        min_urgency: None,
        max_attempts: Some(1000),
        storage_commitment: false,
    }
}

pub async fn exports(app: &TestApp, destination: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(&format!("/v1/exports?destination={destination}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `destination` has `n` rows and all are `sent`.
pub async fn wait_sent(app: &TestApp, destination: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let rows = exports(app, destination).await;
        if rows.len() == n && rows.iter().all(|r| r["state"] == "sent") {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all sent to {destination}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn received(port: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{port}/fhir/_received"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_report_pushed_once_after_failures_and_idempotent_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, port) = fhir_receiver(&["--fail-first", "2", "--token", "Bearer fhir-secret"]);
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.export.retry_base_ms = 100;
        s.export.retry_max_ms = 300;
        s.export.poll_ms = 100;
        s.export.timeout_secs = 10;
        let mut ehr = destination("ehr", DestinationKind::Fhir);
        ehr.url = Some(format!("http://127.0.0.1:{port}/fhir"));
        ehr.authorization = Some(SecretString::from("Bearer fhir-secret"));
        // Routed away: only MR studies (the fixture is CR).
        let mut mr_only = destination("ehr-mr", DestinationKind::Fhir);
        mr_only.url = ehr.url.clone();
        mr_only.modalities = vec!["MR".into()];
        // A DICOM destination gets no `report` row, a FHIR one no SR/overlay rows.
        let mut pacs = destination("pacs", DestinationKind::Dicom);
        pacs.ae_title = Some("NOBODY".into());
        pacs.host = Some("127.0.0.1".into());
        pacs.port = Some(free_port());
        pacs.outputs = vec![OutputKind::Sr];
        s.export.destinations = vec![ehr, mr_only, pacs];
    })
    .await;
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu(&app, &files).await;

    let rows = wait_sent(&app, "ehr", 1).await;
    let row = &rows[0];
    assert_eq!(row["kind"], "fhir");
    assert_eq!(row["output"], "report");
    assert_eq!(row["study_uid"], study.as_str());
    assert_eq!(row["attempts"], 3, "two 503s then success: {row}");
    assert!(exports(&app, "ehr-mr").await.is_empty());
    // The study lists our series' modalities too (its routing used the acquired ones).
    let (_, body) = app.get_json(&format!("/v1/studies/{study}")).await;
    assert_eq!(
        body["data"]["modalities"],
        serde_json::json!(["CR", "SR", "OT"]),
        "{body}"
    );
    let pacs = exports(&app, "pacs").await;
    assert_eq!(pacs.len(), 1, "{pacs:?}");
    assert_eq!(pacs[0]["output"], "sr");

    let got = received(port).await;
    assert_eq!(got["failed_on_purpose"], 2, "{got}");
    assert_eq!(got["rejected"], 0, "{got}");
    assert_eq!(got["accepted"], 1, "{got}");
    let key = row["sop_instance_uid"].as_str().unwrap();
    assert!(key.starts_with("DiagnosticReport/"), "{key}");
    let stored = &got["resources"];
    let report = &stored[key]["resource"];
    assert_eq!(stored[key]["version"], 1);
    // What the receiver holds is what the node serves at /fhir.
    let resp = app
        .client()
        .get(app.url(&format!("/fhir/{key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let served: Value = resp.json().await.unwrap();
    assert_eq!(report["id"], served["id"]);
    assert_eq!(report["result"], served["result"]);
    assert_eq!(report["status"], served["status"]);
    // The exam code comes from the acquired images, not from our own SR/overlay series.
    assert_eq!(
        report["code"]["coding"][0]["system"], "http://loinc.org",
        "{report}"
    );
    assert_eq!(report["code"], served["code"]);
    let types: Vec<&str> = stored
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.split('/').next().unwrap())
        .collect();
    for t in [
        "DiagnosticReport",
        "Observation",
        "ImagingStudy",
        "Patient",
        "Device",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let n_resources = stored.as_object().unwrap().len();
    let sent_events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE type = 'export.sent' AND study_uid = $1 \
           AND payload LIKE '%\"report\"%'",
    )
    .bind(&study)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sent_events, 1);

    // As if the node had crashed after the POST, before recording it: the row is due again
    // and sends the same PUTs; the receiver holds the same resources, one version later.
    sqlx::query("UPDATE exports SET state = 'pending', next_attempt_at = 0 WHERE id = $1")
        .bind(row["id"].as_i64().unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = received(port).await;
        if got["accepted"] == 2 {
            assert_eq!(got["resources"].as_object().unwrap().len(), n_resources);
            assert_eq!(got["resources"][key]["version"], 2);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retry never arrived: {got}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_sent(&app, "ehr", 1).await;
}

/// Orthanc with its DICOMweb plugin (Debian `orthanc-dicomweb`), reachable at `http_port`.
pub fn orthanc_dicomweb(dir: &std::path::Path, dicom_port: u16, http_port: u16) -> Orthanc {
    Orthanc::start(dir, dicom_port, http_port, true)
}

/// The SOP Instance UIDs Orthanc holds in `study`, by QIDO-RS.
pub async fn orthanc_instances(http_port: u16, study: &str) -> Vec<String> {
    let resp = reqwest::get(format!(
        "http://127.0.0.1:{http_port}/dicom-web/studies/{study}/instances"
    ))
    .await
    .unwrap();
    if resp.status() == 204 || resp.status() == 404 {
        return vec![];
    }
    let body: Value = resp.json().await.unwrap();
    let mut uids: Vec<String> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["00080018"]["Value"][0].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    uids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stow_rs_to_orthanc_dicomweb_and_failed_sop_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (dicom_port, http_port) = (free_port(), free_port());
    let _orthanc = orthanc_dicomweb(dir.path(), dicom_port, http_port);
    crate::ingest::wait_port(http_port).await;
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.export.retry_base_ms = 100;
        s.export.retry_max_ms = 300;
        s.export.poll_ms = 100;
        s.export.timeout_secs = 10;
        let mut web = destination("web", DestinationKind::Stow);
        web.url = Some(format!("http://127.0.0.1:{http_port}/dicom-web/studies"));
        // STOW-RS to another study's URL: Orthanc refuses the instance in FailedSOPSequence.
        let mut wrong = destination("wrong-study", DestinationKind::Stow);
        wrong.url = Some(format!(
            "http://127.0.0.1:{http_port}/dicom-web/studies/1.2.826.0.1.3680043.2.1125.9"
        ));
        wrong.outputs = vec![OutputKind::Sr];
        wrong.max_attempts = Some(2);
        s.export.destinations = vec![web, wrong];
    })
    .await;
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu(&app, &files).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let rows = loop {
        let rows = exports(&app, "web").await;
        if rows.len() >= 2 && rows.iter().all(|r| r["state"] == "sent") {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut sent: Vec<String> = rows
        .iter()
        .map(|r| r["sop_instance_uid"].as_str().unwrap().to_string())
        .collect();
    sent.sort();
    // Orthanc holds exactly our outputs, under the original study.
    assert_eq!(orthanc_instances(http_port, &study).await, sent);
    assert!(rows.iter().any(|r| r["output"] == "sr"));
    assert!(rows.iter().any(|r| r["output"] == "overlay"));

    let dead = loop {
        let rows = exports(&app, "wrong-study").await;
        if rows.len() == 1 && rows[0]["state"] == "dead" {
            break rows[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let why = dead["last_error"].as_str().unwrap();
    assert!(
        why.contains("409") && why.contains("failure reason 0110H"),
        "{why}"
    );
    assert_eq!(dead["attempts"], 2);
}

/// Outbox rows of a `radstream serve` process, read from its database.
async fn outbox_rows(db: &radstream::db::Database) -> Vec<(String, String, i64, i64)> {
    sqlx::query_as(
        "SELECT sop_instance_uid, state, attempts, result_id FROM exports ORDER BY sop_instance_uid",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_pending_exports_then_each_output_delivered_once() {
    use crate::ingest::wait_port;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (dicom_port, http_port) = (free_port(), free_port());
    let (pacs_dicom, pacs_http) = (free_port(), free_port());
    // The shipped config, with a C-STORE destination that is down at first.
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/radstream.toml"),
    )
    .unwrap();
    let mut cfg: String = base
        .lines()
        .filter(|l| l.trim() != "destinations = []")
        .collect::<Vec<_>>()
        .join("\n");
    cfg.push_str(&format!(
        "\n[[export.destinations]]\nname = \"pacs\"\nkind = \"dicom\"\nae_title = \"ORTHANC\"\n\
         host = \"127.0.0.1\"\nport = {pacs_dicom}\nmax_attempts = 1000\n"
    ));
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let env = [
        ("RADSTREAM_CONFIG", cfg_path.display().to_string()),
        ("RADSTREAM_STUDY__QUIET_WINDOW_MS", "200".into()),
        ("RADSTREAM_STUDY__STABLE_AGE_SECS", "3".into()),
        ("RADSTREAM_EXPORT__RETRY_BASE_MS", "200".into()),
        ("RADSTREAM_EXPORT__RETRY_MAX_MS", "500".into()),
        ("RADSTREAM_EXPORT__POLL_MS", "100".into()),
        ("RADSTREAM_EXPORT__TIMEOUT_SECS", "3".into()),
        ("RADSTREAM_EXPORT__LEASE_SECS", "2".into()),
    ];
    let mut node = spawn_node(&data, dicom_port, http_port, &env);
    wait_port(dicom_port).await;
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu_to(dicom_port, &[], &files).await;

    let mut settings = radstream::configuration::Settings::default();
    settings.storage.data_dir = data.clone();
    let db = radstream::db::Database::connect_url(
        &settings.database_url(),
        Some(2),
        radstream::db::Durability::Fsync,
    )
    .await
    .unwrap();
    // The PACS is down: every output is queued and has failed at least twice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let before = loop {
        let rows = outbox_rows(&db).await;
        if rows.len() >= 2 && rows.iter().all(|r| r.2 >= 2) {
            assert!(rows.iter().all(|r| r.1 == "pending"), "{rows:?}");
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "outbox: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    node.start_kill().unwrap();
    let _ = node.wait().await;

    // The PACS comes up, the node restarts: every queued output arrives, once.
    let _orthanc = orthanc_dicomweb(dir.path(), pacs_dicom, pacs_http);
    wait_port(pacs_http).await;
    let _node = spawn_node(&data, dicom_port, http_port, &env);
    let after = loop {
        let rows = outbox_rows(&db).await;
        if rows.iter().all(|r| r.1 == "sent") {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "outbox: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let uids = |rows: &[(String, String, i64, i64)]| -> Vec<String> {
        rows.iter().map(|r| r.0.clone()).collect()
    };
    assert_eq!(uids(&after), uids(&before), "rows changed across the crash");
    assert_eq!(orthanc_instances(pacs_http, &study).await, uids(&after));
    let sent_events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE type = 'export.sent' AND study_uid = $1",
    )
    .bind(&study)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(sent_events as usize, after.len());
    let results: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM results WHERE study_uid = $1")
        .bind(&study)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(results, 1, "the restart must not re-run the study");
}
