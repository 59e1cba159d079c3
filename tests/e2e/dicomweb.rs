//! DICOMweb: dicomweb-client as the peer (STOW, QIDO, WADO); a STOW-RS study completes and
//! gets a result; broken multipart parts and wrong media types are refused as PS3.18 says.

use std::time::Duration;

use radstream::auth::Scope;
use serde_json::Value;

use crate::helpers::{fixture_copy, on_both_databases, python, run_async, Db, TestApp};

fn multipart(boundary: &str, parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (ct, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

async fn stow(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = app
        .client()
        .post(app.url(path))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

on_both_databases!(dicomweb_client_stores_searches_retrieves_and_the_study_gets_a_result => client_round_trip);

async fn client_round_trip(db: Db) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = fixture_copy("cr_cardiomegaly", dir.path(), 1);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/dicomweb_client_check.py"
    );
    let token = app.token(&[Scope::ResultsRead, Scope::InferenceWrite]);
    let base = app.url("/dicomweb");
    let mut args = vec![script.to_string(), base, token, study.clone()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = run_async(python().to_str().unwrap(), &refs).await;
    assert!(ok, "dicomweb-client check failed: {out}");

    // One request = one association: released, the study completes and is inferred.
    app.wait_complete(&study, 20).await;
    let mut result = Value::Null;
    for _ in 0..120 {
        let (status, body) = app.get_json(&format!("/v1/studies/{study}/results")).await;
        if status == 200 {
            result = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        result["data"]["study_instance_uid"], study,
        "no result: {result}"
    );
    assert_eq!(result["data"]["summary"]["images_analysed"], 2);
    let calling: String =
        sqlx::query_scalar("SELECT calling_ae FROM instances WHERE study_uid = $1 LIMIT 1")
            .bind(&study)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(calling, "STOW-RS");
}

#[tokio::test]
async fn broken_parts_are_listed_and_good_parts_stored() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = fixture_copy("dx_normal", dir.path(), 1);
    let good = std::fs::read(&files[0]).unwrap();
    let mut truncated = std::fs::read(&files[1]).unwrap();
    truncated.truncate(400);
    let ct = "multipart/related; type=\"application/dicom\"; boundary=XYZ";
    let body = multipart(
        "XYZ",
        &[
            ("application/dicom", good.clone()),
            ("application/dicom", b"this is not DICOM".repeat(20)),
            ("text/plain", b"hello".to_vec()),
            ("application/dicom", truncated),
        ],
    );
    let (status, v) = stow(&app, "/dicomweb/studies", ct, body).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["00081199"]["Value"].as_array().unwrap().len(), 1, "{v}");
    let failed = v["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{v}");
    for f in failed {
        let reason = f["00081197"]["Value"][0].as_u64().unwrap();
        assert!(reason == 0xC000 || reason == 0xA900, "{f}");
    }
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM instances WHERE study_uid = '{study}'"
        ))
        .await,
        1
    );

    // All refused: 409. A part of another study on /studies/{study}: A900.
    let other = "1.2.3.4.5.6";
    let (status, v) = stow(
        &app,
        &format!("/dicomweb/studies/{other}"),
        ct,
        multipart(
            "XYZ",
            &[("application/dicom", std::fs::read(&files[1]).unwrap())],
        ),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA900);
    // Every refused part is on the event log, as a refused C-STORE is.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM events WHERE type = 'store.failed' \
             AND payload LIKE '%STOW-RS%'"
        )
        .await,
        4
    );

    // Wrong media type: 415 naming the header.
    let (status, v) = stow(
        &app,
        "/dicomweb/studies",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 415, "{v}");
    assert_eq!(v["error"]["field"], "Content-Type");
    let (status, _) = stow(
        &app,
        "/dicomweb/studies",
        "multipart/related; type=\"application/dicom+json\"; boundary=XYZ",
        b"--XYZ--".to_vec(),
    )
    .await;
    assert_eq!(status, 415);

    // QIDO: nothing matches → 204; a bad key names itself.
    let resp = app
        .client()
        .get(app.url("/dicomweb/studies?PatientID=nobody-at-all"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (status, v) = app.get_json("/dicomweb/studies?StudyDate=2020-01-01").await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["field"], "StudyDate");

    // WADO: another transfer syntax is refused (no transcoding); * is fine.
    let resp = app
        .client()
        .get(app.url(&format!("/dicomweb/studies/{study}")))
        .header(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 406);
    let resp = app
        .client()
        .get(app.url(&format!("/dicomweb/studies/{study}")))
        .header(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.bytes().await.unwrap();
    let data_set = crate::helpers::data_set_bytes(&files[0]);
    assert!(body.windows(data_set.len()).any(|w| w == &data_set[..]));
}

#[tokio::test]
async fn oversized_stow_body_gets_413_and_cors_preflight_needs_no_auth() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.http.max_body_bytes = 4096;
        s.dicomweb.cors_allowed_origins = vec!["http://viewer.example".into()];
    })
    .await;
    let ct = "multipart/related; type=\"application/dicom\"; boundary=XYZ";
    let body = multipart("XYZ", &[("application/dicom", vec![0u8; 10_000])]);
    let (status, v) = stow(&app, "/dicomweb/studies", ct, body).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["max_body_bytes"], 4096);

    let resp = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.url("/dicomweb/studies"))
        .header("Origin", "http://viewer.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://viewer.example"
    );
    let resp = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.url("/dicomweb/studies"))
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // Without a token the real request is still refused.
    let resp = reqwest::Client::new()
        .get(app.url("/dicomweb/studies"))
        .header("Origin", "http://viewer.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn dicomweb_client_gets_frames_rendered_images_and_thumbnails() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, mono1) = fixture_copy("cr_cardiomegaly", &dir.path().join("cr"), 1);
    let (_, rle) = fixture_copy("dx_effusion_rle", &dir.path().join("rle"), 1);
    let (_, native) = fixture_copy("dx_normal", &dir.path().join("dx"), 1);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/dicomweb_pixels_check.py"
    );
    let token = app.token(&[Scope::ResultsRead, Scope::InferenceWrite]);
    let base = app.url("/dicomweb");
    let args = [
        script.to_string(),
        base,
        token,
        mono1[0].display().to_string(),
        rle[0].display().to_string(),
        native[0].display().to_string(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = run_async(python().to_str().unwrap(), &refs).await;
    assert!(ok, "dicomweb-client pixel check failed: {out}");
    println!("{out}");
}

/// Orthanc with its DICOMweb plugin (Debian `orthanc-dicomweb`) on free ports.
async fn orthanc_dicomweb(dir: &std::path::Path) -> (crate::helpers::Orthanc, String) {
    let (dicom_port, http_port) = (crate::helpers::free_port(), crate::helpers::free_port());
    let orthanc = crate::helpers::Orthanc::start(dir, dicom_port, http_port, true);
    crate::ingest::wait_port(http_port).await;
    (orthanc, format!("http://127.0.0.1:{http_port}/dicom-web"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qido_and_metadata_agree_with_orthancs_dicomweb_plugin() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (orthanc, orthanc_url) = orthanc_dicomweb(dir.path()).await;
    let (_, cr) = fixture_copy("cr_cardiomegaly", &dir.path().join("cr"), 1);
    let (_, rle) = fixture_copy("dx_effusion_rle", &dir.path().join("rle"), 1);
    let (_, big) = fixture_copy("ts_big", &dir.path().join("big"), 1);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/dicomweb_orthanc_compare.py"
    );
    let token = app.token(&[Scope::ResultsRead, Scope::InferenceWrite]);
    let mut args = vec![script.to_string(), app.url("/dicomweb"), token, orthanc_url];
    args.extend(
        cr.iter()
            .chain(&rle)
            .chain(&big)
            .map(|f| f.display().to_string()),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = run_async(python().to_str().unwrap(), &refs).await;
    drop(orthanc);
    assert!(ok, "radstream and Orthanc disagree: {out}");
    println!("{out}");
}
