//! Pi Health Triage contract: a client written from its document posts an image analysis,
//! gets 202 and a job id, long-polls the job and reads `data.payload.output`; its error codes.

use std::path::Path;

use base64::Engine as _;
use radstream::auth::Scope;
use serde_json::{json, Value};

use crate::helpers::*;

fn image_b64(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/images")
        .join(name);
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap())
}

async fn analyze(app: &TestApp, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(app.url("/api/v1/health/analyze"))
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_analysis_job_completes_with_a_triage_report_in_the_requested_locale() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let token = app.token(&[Scope::InferenceWrite, Scope::ResultsRead]);
    let body = json!({
        "input": {"type": "image", "modality": "xray", "image_base64": image_b64("cxr_cardiomegaly.png")},
        "context": {"age": 67, "symptoms": ["breathlessness"], "locale": "fr"},
    });
    let (status, queued) = analyze(&app, Some(&token), &body).await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["job_id"].as_str().unwrap().to_string();

    let resp = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/jobs/{id}?wait=30&include=diagnostics")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let job: Value = resp.json().await.unwrap();
    let data = &job["data"];
    assert_eq!(data["status"], "completed", "{job}");
    let out = &data["payload"]["output"];
    assert_eq!(out["triage_level"], "standard", "{out}");
    let c = out["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&c));
    assert_eq!(out["locale"], "fr");
    let findings = out["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["title"] == "Cardiomegaly"),
        "{out}"
    );
    for f in findings {
        assert!(f["title"].is_string() && f["summary"].is_string());
        assert!(f["confidence"].is_number());
        assert!(!f["evidence"].as_array().unwrap().is_empty());
    }
    assert_eq!(out["seizure_detected"], Value::Null);
    // The overlay: the uploaded image with the triage burnt in, as PNG.
    let overlay_url = out["overlay_url"]
        .as_str()
        .expect("overlay_url")
        .to_string();
    assert_eq!(overlay_url, format!("/api/v1/jobs/{id}/overlay"));
    let png = reqwest::Client::new()
        .get(app.url(&overlay_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    let img = image::load_from_memory(&png.bytes().await.unwrap()).unwrap();
    assert!(img.height() > img.width() / 2, "image plus text band");
    assert!(out["care_guidance"].as_str().unwrap().contains("soins"));
    assert!(out["referral_guidance"].is_string());
    assert_eq!(out["warning_signs"].as_array().unwrap().len(), 3);
    assert!(out["disclaimer"]
        .as_str()
        .unwrap()
        .contains("pas un diagnostic"));
    assert!(data["diagnostics"]["steps"].as_array().unwrap().len() >= 2);

    // English is the default; a normal image is low urgency.
    let body = json!({"input": {"type": "image", "modality": "xray", "image_base64": image_b64("cxr_normal.png")}});
    let (_, queued) = analyze(&app, Some(&token), &body).await;
    let id = queued["job_id"].as_str().unwrap();
    let (_, job) = app.get_json(&format!("/api/v1/jobs/{id}?wait=30")).await;
    let out = &job["data"]["payload"]["output"];
    assert_eq!(out["locale"], "en");
    assert_eq!(out["triage_level"], "low", "{out}");
    assert!(job["data"].get("diagnostics").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_error_codes() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.compat.pi_url_hosts = vec!["images.example.org".into()]
    })
    .await;
    let token = app.token(&[Scope::InferenceWrite]);
    let img = image_b64("cxr_normal.png");
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_string();

    let (status, body) = analyze(&app, None, &json!({"input": {}})).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (401, "missing_authorization_header"),
        "{body}"
    );

    for (body, needle) in [
        (json!({}), "input"),
        (
            json!({"input": {"type": "image", "image_base64": img}}),
            "input.modality",
        ),
        (json!({"input": {"type": "eeg", "data": "AAAA"}}), "EEG"),
        (
            json!({"input": {"type": "image", "modality": "xray", "image_base64": "***"}}),
            "base64",
        ),
        (
            json!({"input": {"type": "image", "modality": "xray", "url": "https://evil.example.com/a.png"}}),
            "not allowed",
        ),
        (
            json!({"input": {"type": "image", "modality": "xray", "url": "http://169.254.169.254/latest"}}),
            "not allowed",
        ),
        (
            json!({"input": {"type": "image", "modality": "xray", "image_base64": img}, "context": {"notes": "x".repeat(16_001)}}),
            "16000",
        ),
        (
            json!({"input": {"type": "image", "modality": "ultrasound", "image_base64": img}}),
            "modality",
        ),
    ] {
        let (status, answer) = analyze(&app, Some(&token), &body).await;
        assert_eq!(
            (status, code(&answer).as_str()),
            (400, "invalid_request_body"),
            "{answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{answer}"
        );
    }
    // Exactly at the limit is fine.
    let ctx = json!({"n": "x".repeat(16_000 - 8)});
    assert_eq!(ctx.to_string().len(), 16_000);
    let (status, _) = analyze(&app, Some(&token), &json!({"input": {"type": "image", "modality": "xray", "image_base64": img}, "context": ctx})).await;
    assert_eq!(status, 202);

    let (_, missing) = app.get_json("/api/v1/jobs/nope").await;
    assert_eq!(code(&missing), "not_found");

    let off = TestApp::spawn_with(Db::Sqlite, |s| s.compat.pi_enabled = false).await;
    let t = off.token(&[Scope::InferenceWrite]);
    let (status, body) = analyze(
        &off,
        Some(&t),
        &json!({"input": {"type": "image", "modality": "xray", "image_base64": img}}),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "health_triage_disabled")
    );
}

/// An image server for `input.url` (a test peer): `/ok.png` a real image, `/endless` a body
/// without length that never ends (counting what it hands out), `/silent` no answer at all,
/// `/moved` a redirect to `/ok.png`.
async fn image_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use axum::body::Body;
    use axum::routing::get;
    use futures::StreamExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let png =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/cxr_normal.png"))
            .unwrap();
    let app = axum::Router::new()
        .route("/ok.png", get(move || async move { png }))
        .route(
            "/endless",
            get(move || async move {
                let chunk = bytes::Bytes::from(vec![0u8; 64 * 1024]);
                // Bounded so a regression ends: 300 MB, the size the finding was made with.
                let stream = futures::stream::iter(0..4800).map(move |_| {
                    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                Body::from_stream(stream)
            }),
        )
        .route(
            "/silent",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                "late"
            }),
        )
        .route(
            "/moved",
            get(|| async { axum::response::Redirect::temporary("/ok.png") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, sent)
}

/// The job's `data` once it finished (or after `wait` seconds).
async fn pi_job(app: &TestApp, token: &str, id: &str, wait: u64) -> Value {
    let resp = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/jobs/{id}?wait={wait}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_input_is_fetched_by_the_job_from_allowed_host_and_port_within_the_limit() {
    let (port, sent) = image_server().await;
    let limit = 1024 * 1024;
    let app = TestApp::spawn_with(Db::Sqlite, move |s| {
        s.compat.pi_url_hosts = vec![format!("127.0.0.1:{port}"), "localhost".into()];
        s.http.max_body_bytes = limit;
    })
    .await;
    let token = app.token(&[Scope::InferenceWrite, Scope::ResultsRead]);
    let body = |url: String| json!({"input": {"type": "image", "modality": "xray", "url": url}});

    // Another port of an allowed host, and a bare host on a port other than 80: refused at
    // once, naming neither what answers there nor whether anything does.
    for url in [
        format!("http://127.0.0.1:{}/ok.png", free_port()),
        format!("ftp://127.0.0.1:{port}/ok.png"),
        format!("http://localhost:{port}/ok.png"),
    ] {
        let (status, answer) = analyze(&app, Some(&token), &body(url.clone())).await;
        assert_eq!(status, 400, "{url}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request_body");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not allowed"),
            "{answer}"
        );
    }

    // The allowed host and port: 202, and the job fetches and analyses the image.
    let (status, queued) = analyze(
        &app,
        Some(&token),
        &body(format!("http://127.0.0.1:{port}/ok.png")),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let job = pi_job(&app, &token, queued["job_id"].as_str().unwrap(), 30).await;
    assert_eq!(job["status"], "completed", "{job}");

    // A silent URL does not hold the request: the 202 comes at once, the job waits.
    let t0 = std::time::Instant::now();
    let (status, queued) = analyze(
        &app,
        Some(&token),
        &body(format!("http://127.0.0.1:{port}/silent")),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        t0.elapsed()
    );
    let job = pi_job(&app, &token, queued["job_id"].as_str().unwrap(), 0).await;
    assert!(
        matches!(job["status"].as_str(), Some("queued" | "running")),
        "{job}"
    );

    // An endless body: the job fails on the limit, having read little more than the limit.
    let (status, queued) = analyze(
        &app,
        Some(&token),
        &body(format!("http://127.0.0.1:{port}/endless")),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let job = pi_job(&app, &token, queued["job_id"].as_str().unwrap(), 30).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "invalid_request_body", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("larger than {limit} bytes")),
        "{job}"
    );
    let handed_out = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        handed_out < 32 * 1024 * 1024,
        "the server handed out {handed_out} bytes for a {limit}-byte limit"
    );

    // Redirects are not followed.
    let (status, queued) = analyze(
        &app,
        Some(&token),
        &body(format!("http://127.0.0.1:{port}/moved")),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let job = pi_job(&app, &token, queued["job_id"].as_str().unwrap(), 30).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 307"),
        "{job}"
    );
}
