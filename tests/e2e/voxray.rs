//! VoxRay v2 contract (specs/003): a client written from the document (`requests`,
//! scripts/voxray_client.py) runs unchanged; then one test per row of its tables: endpoint
//! shapes, feature flags, health, and the status codes 400, 401, 403, 404, 413, 422, 429, 503
//! in its error body `{success: false, error: {code, message, details}, meta}`.

use std::path::Path;

use radstream::auth::Scope;
use radstream::compat::voxray::anon::patient_hash;
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::*;

const KEY: &str = "voxray-test-hash-key-0123456789";

async fn spawn(tweak: impl FnOnce(&mut radstream::configuration::Settings)) -> TestApp {
    TestApp::spawn_with(Db::Sqlite, |s| {
        s.compat.voxray_hash_key = Some(SecretString::from(KEY.to_string()));
        tweak(s);
    })
    .await
}

/// A `multipart/form-data` body with one file field.
fn form(field: &str, filename: &str, ct: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "voxrayBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {ct}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

struct Answer {
    status: u16,
    request_id: Option<String>,
    retry_after: Option<String>,
    body: Value,
}

async fn send(app: &TestApp, path: &str, token: Option<&str>, field: &str, data: &[u8]) -> Answer {
    let (ct, body) = form(field, "xray.png", "image/png", data);
    let mut req = reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", ct)
        .body(body);
    if let Some(t) = token {
        req = req.header("x-stack-access-token", t);
    }
    answer(req.send().await.unwrap()).await
}

async fn answer(resp: reqwest::Response) -> Answer {
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (request_id, retry_after) = (header("x-request-id"), header("retry-after"));
    let status = resp.status().as_u16();
    Answer {
        status,
        request_id,
        retry_after,
        body: resp.json().await.unwrap_or(Value::Null),
    }
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> Answer {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(t) = token {
        req = req.header("x-stack-access-token", t);
    }
    answer(req.send().await.unwrap()).await
}

fn image(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("images/{name}"))).unwrap()
}

/// Checks VoxRay's error body and returns its `error`.
fn error_of(a: &Answer, status: u16, code: &str) -> Value {
    assert_eq!(a.status, status, "{}", a.body);
    let b = &a.body;
    assert_eq!(b["success"], false, "{b}");
    assert_eq!(b["error"]["code"], code, "{b}");
    assert!(!b["error"]["message"].as_str().unwrap().is_empty());
    assert!(b["error"]["details"].is_object(), "{b}");
    assert!(b["meta"]["timestamp"].is_string(), "{b}");
    assert_eq!(
        b["meta"]["request_id"].as_str(),
        a.request_id.as_deref(),
        "request_id is X-Request-Id"
    );
    b["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_written_from_the_document_runs_unchanged() {
    let app = spawn(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = fixture_copy("cr_cardiomegaly", dir.path(), 1);
    storescu(&app, &files).await;
    app.wait_complete(&study, 120).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while app
        .count(&format!(
            "SELECT COUNT(*) FROM results WHERE study_uid = '{study}'"
        ))
        .await
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "no result");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let patient = radstream::store::InstanceHeader::read(&files[0])
        .unwrap()
        .patient_id
        .unwrap();
    let token = app.token(&[Scope::InferenceWrite, Scope::ResultsRead]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/voxray_client.py");
    let (ok, out) = run_async(
        python().to_str().unwrap(),
        &[
            script.to_str().unwrap(),
            &app.url(""),
            &token,
            fixture("images/cxr_cardiomegaly.png").to_str().unwrap(),
            files[0].to_str().unwrap(),
            &patient,
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("voxray client: ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_answers_exactly_diagnosis_and_confidence_at_both_paths() {
    let app = spawn(|_| {}).await;
    let token = app.token(&[Scope::InferenceWrite]);
    let mut bodies = Vec::new();
    for path in ["/predict/image", "/v1/predict/image"] {
        let a = send(
            &app,
            path,
            Some(&token),
            "image_file",
            &image("cxr_cardiomegaly.png"),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let o = a.body.as_object().unwrap();
        assert_eq!(o.len(), 2, "no other root field: {}", a.body);
        let c = a.body["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
        bodies.push(a.body);
    }
    assert_eq!(bodies[0], bodies[1], "/v1 is the same endpoint");
    // The cardiomegaly phantom's diagnosis is a finding of the table; the normal one is not
    // diagnosed with any finding the ensemble calls present.
    let d = bodies[0]["diagnosis"].as_str().unwrap();
    assert!(
        radstream::compat::voxray::labels::TABLE
            .iter()
            .any(|(_, l)| *l == d),
        "{d}"
    );
    let normal = send(
        &app,
        "/predict/image",
        Some(&token),
        "image_file",
        &image("cxr_normal.png"),
    )
    .await;
    assert_eq!(
        normal.body["diagnosis"], "00_NORMAL_LUNG",
        "{}",
        normal.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_image_has_uncertainty_ensemble_members_and_meta() {
    let app = spawn(|_| {}).await;
    let token = app.token(&[Scope::InferenceWrite]);
    let a = send(
        &app,
        "/v2/predict/image",
        Some(&token),
        "image_file",
        &image("cxr_cardiomegaly.png"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let b = &a.body;
    let u = &b["uncertainty"];
    let (ep, al, to) = (
        u["epistemic"].as_f64().unwrap(),
        u["aleatoric"].as_f64().unwrap(),
        u["total"].as_f64().unwrap(),
    );
    assert!(
        (ep + al - to).abs() < 0.0021,
        "total = epistemic + aleatoric: {u}"
    );
    assert!(u["should_review"].is_boolean());
    let e = &b["ensemble"];
    assert_eq!(e["voting_method"], "soft");
    let used: Vec<&str> = e["models_used"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        used,
        ["member0", "member1", "member2", "member3", "member4"]
    );
    let ind = e["individual_predictions"].as_object().unwrap();
    assert_eq!(ind.len(), 5);
    for name in &used {
        assert!(ind[*name]["diagnosis"].is_string());
        assert!(ind[*name]["confidence"].is_number());
    }
    let ds = e["disagreement_score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ds));
    assert_eq!(b["meta"]["model_version"], "cxr-demo-0.1.0");
    assert!(b["meta"]["inference_time_ms"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_dicom_answers_anonymised_metadata_with_the_keyed_hash() {
    let app = spawn(|_| {}).await;
    let token = app.token(&[Scope::InferenceWrite]);
    let file = fixture("dicom/dx_normal/001.dcm");
    let header = radstream::store::InstanceHeader::read(&file).unwrap();
    let (ct, body) = form(
        "dicom_file",
        "study.dcm",
        "application/dicom",
        &std::fs::read(&file).unwrap(),
    );
    let a = answer(
        reqwest::Client::new()
            .post(app.url("/v2/predict/dicom"))
            .header("content-type", ct)
            .header("x-stack-access-token", &token)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = &a.body["dicom_metadata"];
    let pid = header.patient_id.clone().unwrap();
    let expected = patient_hash(&SecretString::from(KEY.to_string()), &pid);
    assert_eq!(m["patient_id_hash"], expected.as_str());
    assert_eq!(
        m["study_instance_uid"],
        header.study_uid.as_ref().unwrap().as_str()
    );
    assert_eq!(m["modality"], "DX");
    assert_eq!(m["study_date"].as_str(), header.study_date.as_deref());
    assert_eq!(a.body["image_extracted"], true);
    assert_eq!(a.body["anonymization_applied"], true);
    let text = a.body.to_string();
    assert!(
        !text.contains(&pid),
        "the Patient ID itself is not returned"
    );
    if let Some(name) = header.patient_name.as_deref().filter(|n| !n.is_empty()) {
        assert!(!text.contains(name), "no patient name");
    }
    assert!(a.body["diagnosis"].is_string() && a.body["confidence"].is_number());
    // Nothing of the upload is left behind.
    let left = std::fs::read_dir(app.data_dir.join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("voxray-"))
        .count();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_flags_come_from_config_and_disabled_v2_features_answer_503() {
    let app = spawn(|s| {
        s.compat.voxray_flags.dicom_support = false;
        s.compat.voxray_flags.fhir_integration = false;
        s.compat.voxray_flags.ensemble_model = false;
        s.compat.voxray_environment = "development".into();
    })
    .await;
    let token = app.token(&[Scope::InferenceWrite, Scope::ResultsRead]);
    let f = get(&app, "/api/feature-flags", Some(&token)).await;
    assert_eq!(f.status, 200);
    assert_eq!(f.body["environment"], "development");
    let flags = f.body["flags"].as_object().unwrap();
    assert_eq!(flags.len(), 12);
    assert_eq!(flags["ensemble_model"], false);
    assert_eq!(flags["uncertainty_quantification"], true);
    assert_eq!(flags["dicom_support"], false);
    assert_eq!(flags["wake_word_detection"], false);

    let d = send(&app, "/v2/predict/dicom", Some(&token), "dicom_file", b"x").await;
    let e = error_of(&d, 503, "FEATURE_DISABLED");
    assert_eq!(e["details"]["flag"], "dicom_support");
    let r = get(&app, "/v2/fhir/diagnostic-report/PAT1", Some(&token)).await;
    error_of(&r, 503, "FEATURE_DISABLED");

    // Ensemble off: that block is left out, uncertainty stays.
    let png = image("cxr_normal.png");
    let v2 = send(&app, "/v2/predict/image", Some(&token), "image_file", &png).await;
    assert_eq!(v2.status, 200);
    assert!(v2.body.get("ensemble").is_none() && v2.body["uncertainty"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_image_falls_back_to_the_v1_body_when_both_flags_are_off() {
    let app = spawn(|s| {
        s.compat.voxray_flags.ensemble_model = false;
        s.compat.voxray_flags.uncertainty_quantification = false;
    })
    .await;
    let token = app.token(&[Scope::InferenceWrite]);
    let png = image("cxr_normal.png");
    let v2 = send(&app, "/v2/predict/image", Some(&token), "image_file", &png).await;
    assert_eq!(v2.status, 200);
    assert_eq!(v2.body.as_object().unwrap().len(), 2, "{}", v2.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_carries_voxrays_services_and_the_native_fields() {
    let app = spawn(|_| {}).await;
    let h = get(&app, "/health", None).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "healthy");
    assert_eq!(h.body["services"]["medical_model"], "loaded");
    for s in ["stt_model", "tts_service", "llm_service"] {
        assert_eq!(h.body["services"][s], "not_available");
    }
    assert!(h.body["timestamp"].is_string() && h.body["version"].is_string());
    assert!(h.body.get("errors").is_none());
    assert_eq!(h.body["database"]["status"], "up", "native fields stay");
}

// ---- status code table ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_400_invalid_image_format_missing_field_and_invalid_dicom() {
    let app = spawn(|_| {}).await;
    let token = app.token(&[Scope::InferenceWrite]);
    let a = send(
        &app,
        "/predict/image",
        Some(&token),
        "image_file",
        b"not an image at all",
    )
    .await;
    let e = error_of(&a, 400, "INVALID_IMAGE_FORMAT");
    assert_eq!(e["details"]["field"], "image_file");

    let a = send(
        &app,
        "/predict/image",
        Some(&token),
        "picture",
        &image("cxr_normal.png"),
    )
    .await;
    let e = error_of(&a, 400, "INVALID_REQUEST");
    assert_eq!(e["details"]["field"], "image_file");
    assert!(e["message"].as_str().unwrap().contains("missing"));

    let a = answer(
        reqwest::Client::new()
            .post(app.url("/v2/predict/image"))
            .header("x-stack-access-token", &token)
            .json(&serde_json::json!({"image_file": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let e = error_of(&a, 400, "INVALID_REQUEST");
    assert_eq!(e["details"]["field"], "Content-Type");

    let a = send(
        &app,
        "/v2/predict/dicom",
        Some(&token),
        "dicom_file",
        &image("cxr_normal.png"),
    )
    .await;
    let e = error_of(&a, 400, "INVALID_DICOM");
    assert_eq!(e["details"]["field"], "dicom_file");

    // Nesting that overflowed the parser's stack: refused, and the node answers on.
    let dir = tempfile::tempdir().unwrap();
    let deep = crate::integrity::deeply_nested_dx(dir.path());
    let a = send(&app, "/v2/predict/dicom", Some(&token), "dicom_file", &deep).await;
    let e = error_of(&a, 400, "INVALID_DICOM");
    assert_eq!(e["details"]["field"], "dicom_file");
    let a = send(&app, "/v2/predict/dicom", Some(&token), "dicom_file", b"x").await;
    error_of(&a, 400, "INVALID_DICOM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_401_missing_or_invalid_token_and_403_missing_scope() {
    let app = spawn(|_| {}).await;
    let png = image("cxr_normal.png");
    let a = send(&app, "/predict/image", None, "image_file", &png).await;
    let e = error_of(&a, 401, "UNAUTHORIZED");
    assert_eq!(e["message"], "Token missing");
    let a = send(
        &app,
        "/v2/predict/image",
        Some("not.a.jwt"),
        "image_file",
        &png,
    )
    .await;
    error_of(&a, 401, "UNAUTHORIZED");
    let a = get(
        &app,
        "/v2/fhir/diagnostic-report/x",
        Some(&app.expired_token(&[Scope::ResultsRead])),
    )
    .await;
    let e = error_of(&a, 401, "UNAUTHORIZED");
    assert_eq!(e["message"], "Token expired");

    let read_only = app.token(&[Scope::ResultsRead]);
    let a = send(&app, "/predict/image", Some(&read_only), "image_file", &png).await;
    let e = error_of(&a, 403, "FORBIDDEN");
    assert_eq!(e["details"]["required_scope"], "inference:write");

    // Authorization: Bearer works as well as x-stack-access-token.
    let (ct, body) = form("image_file", "x.png", "image/png", &png);
    let resp = reqwest::Client::new()
        .post(app.url("/predict/image"))
        .bearer_auth(app.token(&[Scope::InferenceWrite]))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_404_for_a_patient_without_a_report() {
    let app = spawn(|_| {}).await;
    let token = app.token(&[Scope::ResultsRead]);
    let a = get(
        &app,
        "/v2/fhir/diagnostic-report/NO-SUCH-PATIENT",
        Some(&token),
    )
    .await;
    let e = error_of(&a, 404, "NOT_FOUND");
    assert!(e["message"].as_str().unwrap().contains("NO-SUCH-PATIENT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_413_image_over_10_mb() {
    let app = spawn(|_| {}).await;
    let token = app.token(&[Scope::InferenceWrite]);
    let big = vec![0u8; 10 * 1024 * 1024 + 1];
    let a = send(&app, "/predict/image", Some(&token), "image_file", &big).await;
    let e = error_of(&a, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(e["details"]["max_bytes"], 10 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_422_valid_format_but_not_a_radiograph() {
    let app = spawn(|_| {}).await;
    let token = app.token(&[Scope::InferenceWrite]);
    let a = send(
        &app,
        "/v2/predict/image",
        Some(&token),
        "image_file",
        &image("photo.jpg"),
    )
    .await;
    let e = error_of(&a, 422, "IMAGE_REJECTED");
    assert!(e["details"]["reason"]
        .as_str()
        .unwrap()
        .contains("not a valid radiograph"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_429_rate_limit_with_retry_after() {
    let app = spawn(|s| s.auth.rate_limit_per_minute = 1).await;
    let token = app.token(&[Scope::ResultsRead]);
    let first = get(&app, "/api/feature-flags", Some(&token)).await;
    assert_eq!(first.status, 200);
    let a = get(&app, "/api/feature-flags", Some(&token)).await;
    error_of(&a, 429, "RATE_LIMIT_EXCEEDED");
    assert!(a.retry_after.is_some());
}
