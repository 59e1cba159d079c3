//! Results back to the PACS with real peers: the SR and overlay the node writes pass
//! dciodvfy, dsrdump renders the SR, highdicom finds each finding's measurement group, and
//! Orthanc (down at first) receives both under the original study once it is up: nothing
//! lost, nothing duplicated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use radstream::export::{Destination, DestinationKind, OutputKind};
use serde_json::Value;

use crate::helpers::*;
use crate::ingest::wait_port;

/// The `.dcm` files below `dir`, recursively (the walk `radstream send` uses).
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    radstream::scu::collect_files(&[dir.to_path_buf()])
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect()
}

async fn exports(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get_json("/v1/exports?destination=orthanc").await;
    assert_eq!(status, 200, "{body}");
    body["data"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// dciodvfy's error and warning lines for one file.
pub(crate) fn dciodvfy(path: &Path) -> (Vec<String>, Vec<String>) {
    let out = std::process::Command::new("dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy (dicom3tools) is needed");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let errors = text
        .lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_string)
        .collect();
    let warnings = text
        .lines()
        .filter(|l| l.starts_with("Warning"))
        .map(str::to_string)
        .collect();
    (errors, warnings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sr_and_overlay_reach_orthanc_after_an_outage_once_each() {
    outage_roundtrip(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sr_and_overlay_reach_orthanc_after_an_outage_once_each_postgres() {
    outage_roundtrip(Db::Postgres).await
}

async fn outage_roundtrip(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let (dicom_port, http_port) = (free_port(), free_port());
    let app = TestApp::spawn_with(db, |s| {
        s.export.retry_base_ms = 200;
        s.export.retry_max_ms = 500;
        s.export.poll_ms = 100;
        s.export.timeout_secs = 5;
        s.export.destinations = vec![Destination {
            name: "orthanc".into(),
            kind: DestinationKind::Dicom,
            ae_title: Some("ORTHANC".into()),
            host: Some("127.0.0.1".into()),
            port: Some(dicom_port),
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
            outputs: vec![OutputKind::Sr, OutputKind::Overlay, OutputKind::Seg],
            calling_aes: vec![],
            modalities: vec![],
            min_urgency: None,
            max_attempts: Some(1000),
            storage_commitment: false,
        }];
    })
    .await;
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu(&app, &files).await;

    // Orthanc is down: both rows are queued and fail, again and again, without being lost.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rows = exports(&app).await;
        if !rows.is_empty() && rows.iter().all(|r| r["attempts"].as_i64() >= Some(2)) {
            assert!(rows.iter().all(|r| r["state"] == "pending"), "{rows:?}");
            assert!(rows.iter().all(|r| r["last_error"].is_string()), "{rows:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never filled: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One SR plus one overlay per analysed image, and a SEG per image with lung fields.
    let result = radstream::result::store::latest(&app.db, &study)
        .await
        .unwrap()
        .expect("result");
    let outputs = 1
        + result
            .images
            .iter()
            .filter(|i| i.status == "analysed")
            .count()
        + result
            .images
            .iter()
            .filter(|i| radstream::report::seg::lungs_of(i).is_some())
            .count();
    assert!(outputs >= 2);
    assert_eq!(exports(&app).await.len(), outputs);
    // The outputs are in the study (new series), and did not re-open it or start a job.
    let derived = files_under(&app.data_dir.join("derived"));
    assert_eq!(derived.len(), outputs, "{derived:?}");
    let (status, version): (String, i64) =
        sqlx::query_as("SELECT status, version FROM studies WHERE study_uid = $1")
            .bind(&study)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), version), ("complete", 1));
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE study_uid = $1")
        .bind(&study)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
    let indexed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM instances WHERE study_uid = $1 AND association_id LIKE 'derived:%'",
    )
    .bind(&study)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(indexed as usize, outputs);

    // Real checkers on every file.
    let mut sr_path = None;
    for p in &derived {
        let (errors, warnings) = dciodvfy(p);
        eprintln!(
            "dciodvfy {}: {} warnings:\n{}",
            p.display(),
            warnings.len(),
            warnings.join("\n")
        );
        assert!(
            errors.is_empty(),
            "dciodvfy errors in {}:\n{}",
            p.display(),
            errors.join("\n")
        );
        let obj = dicom_object::open_file(p).unwrap();
        let class = obj
            .meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_string();
        let study_of = obj
            .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(study_of.trim_end_matches('\0'), study, "same study");
        if class == "1.2.840.10008.5.1.4.1.1.88.34" {
            sr_path = Some(p.clone());
        }
    }
    let sr_path = sr_path.expect("an SR among the outputs");
    let dump = std::process::Command::new("dsrdump")
        .arg(&sr_path)
        .output()
        .expect("dsrdump (dcmtk)");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(
        text.contains("Imaging Measurement Report") && text.contains("UNVERIFIED"),
        "{text}"
    );
    let analysed = result
        .images
        .iter()
        .find(|i| i.status == "analysed")
        .expect("analysed image");
    let expected = serde_json::json!({
        "findings": analysed.findings.iter().map(|f| serde_json::json!({
            "code": f.code.code, "name": f.code.display, "present": f.presence,
            "scheme": radstream::inference::CodeScheme::from_fhir_system(&f.code.system)
                .unwrap_or_default()
                .designator(),
            "probability": f.confidence,
        })).collect::<Vec<_>>(),
        // No PS3.16 concept exists for these four (marked in models/cxr-demo/model.toml); every
        // other code in the SR must be in pydicom's dictionary with its meaning.
        // and the private codes of the CTR and the lung area fraction (report::sr::codes).
        "unverifiable": ["154283005", "78381009", "95436008", "46621007", "CTR", "LUNGAREAFRAC"],
    });
    let exp_path = dir.path().join("expected.json");
    std::fs::write(&exp_path, expected.to_string()).unwrap();
    let check = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_sr.py"))
        .arg(&sr_path)
        .arg(&exp_path)
        .output()
        .expect("python");
    assert!(
        check.status.success(),
        "check_sr.py: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    eprintln!("check_sr.py: {}", String::from_utf8_lossy(&check.stdout));

    // Orthanc comes up: both arrive, once.
    let _orthanc = Orthanc::start(dir.path(), dicom_port, http_port, false);
    wait_port(dicom_port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = exports(&app).await;
        if rows.iter().all(|r| r["state"] == "sent") {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never delivered: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), outputs);
    // A sent row is not sent again.
    let id = rows[0]["id"].as_i64().unwrap();
    let resp = app
        .client()
        .post(app.url(&format!("/v1/exports/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let orthanc = format!("http://127.0.0.1:{http_port}");
    let stats: Value = reqwest::get(format!("{orthanc}/statistics"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["CountInstances"], outputs, "{stats}");
    assert_eq!(stats["CountStudies"], 1, "{stats}");
    let found: Value = reqwest::Client::new()
        .post(format!("{orthanc}/tools/find"))
        .json(&serde_json::json!({"Level": "Instance", "Query": {"StudyInstanceUID": study}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(outputs), "{found}");
    let sent_events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE type = 'export.sent' AND study_uid = $1",
    )
    .bind(&study)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sent_events as usize, outputs);
}
