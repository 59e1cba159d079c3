//! RadAnalyzer V3 contract (specs/002): the document's own Python single-image example runs
//! unchanged (tests/python/radanalyzer_single.py, base URL and key substituted); then the
//! documented fields of health, single, rejection, batch and stream answers; the error
//! statuses in `{"error": "…"}`; and each billing rule (first valid call billed 3.00 single /
//! 4.00 session, same uuid within 24 h free, failures free, monthly usage, the tier change at
//! 101 with usage seeded in the database). The database-touching tests run on SQLite and
//! PostgreSQL.

use std::path::Path;

use base64::Engine as _;
use radstream::auth::{keys, Scope};
use serde_json::{json, Value};

use crate::helpers::*;

fn b64_file(rel: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(fixture(rel)).unwrap())
}

const NORMAL: &str = "landmarks/cxr_normal.png";
const ENLARGED: &str = "landmarks/cxr_cardiomegaly.png";
/// A colour photograph: the gate rejects it.
const PHOTO: &str = "images/photo.jpg";

async fn calls(app: &TestApp) -> i64 {
    app.count("SELECT COUNT(*) FROM radanalyzer_calls").await
}

fn today() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn keys_of(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// The document's Python example, only its base URL and key replaced, run from a folder
/// holding `radiograph.jpg` (the cardiomegaly phantom as JPEG).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_single_image_example_runs_unchanged() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let key = inference_key(&app, "python-client").await;
    let dir = tempfile::tempdir().unwrap();
    image::open(fixture(ENLARGED))
        .unwrap()
        .to_luma8()
        .save(dir.path().join("radiograph.jpg"))
        .unwrap();
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/radanalyzer_single.py"),
    )
    .unwrap()
    .replace("https://api.radanalyzer.com", &app.url(""))
    .replace("YOUR_API_KEY", &key);
    std::fs::write(dir.path().join("client.py"), script).unwrap();
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg("client.py")
            .current_dir(cwd)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    let vhs: f64 = lines[0].strip_prefix("VHS: ").unwrap().parse().unwrap();
    assert!(vhs > 0.5, "cardiomegaly phantom: CTR {vhs}");
    assert_eq!(lines[1], "VLAS: None");
    let conf = lines[2].strip_prefix("Confidence: ").unwrap();
    assert!(["optimal", "good", "review"].contains(&conf), "{conf}");
    let spread: f64 = lines[3].strip_prefix("Spread: ").unwrap().parse().unwrap();
    assert!((0.0..0.1).contains(&spread));
    assert!(lines[4].starts_with("Result: Cardiothoracic ratio (in vhs) predicted"));
    // Billed once, and remembered for patient-123.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM radanalyzer_calls WHERE billable = 1 AND call_type = 'single'"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM radanalyzer_history WHERE uuid = 'patient-123'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_landmark_ensemble() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let key = inference_key(&app, "health").await;
    let resp = reqwest::Client::new()
        .get(app.url("/v3/health"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        keys_of(&v),
        [
            "model_version",
            "models_loaded",
            "pop_models_loaded",
            "pop_pipeline_enabled",
            "status"
        ]
    );
    assert_eq!(v["status"], "healthy");
    let (_, models) = app.get_json("/v1/models").await;
    let ctr = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "ctr-demo")
        .expect("the ctr-demo landmark model is installed");
    assert_eq!(v["models_loaded"], ctr["members"].as_array().unwrap().len());
    assert!(v["models_loaded"].as_u64().unwrap() >= 3);
    assert_eq!(v["model_version"], ctr["version"]);
    assert!(v["pop_models_loaded"].is_u64());
    assert!(v["pop_pipeline_enabled"].is_boolean());

    // Every endpoint needs the key (the auth matrix covers JWTs, revoked keys, scopes).
    let resp = reqwest::Client::new()
        .get(app.url("/v3/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({ "error": "Invalid API key" })
    );
}

async fn single_image_contract(db: Db) {
    let app = TestApp::spawn(db).await;
    let key = inference_key(&app, "clinic").await;
    let (_, health) = {
        let r = reqwest::Client::new()
            .get(app.url("/v3/health"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };

    // First valid call for p-1: billed at the single rate; no history yet.
    let body = json!({ "image": b64_file(NORMAL), "uuid": "p-1", "render": true });
    let (status, v) = post_with_key(&app, &key, "/v3/predict", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        keys_of(&v),
        [
            "billing",
            "historic_vhs",
            "historic_vlas",
            "measurement",
            "model_confidence",
            "model_version",
            "pop_detected",
            "prediction",
            "rendered_image",
            "result_code",
            "result_description",
            "spread",
            "vhs",
            "vlas"
        ]
    );
    let code = v["result_code"].as_u64().unwrap();
    assert!((1..=3).contains(&code), "{v}");
    let tier = ["optimal", "good", "review"][code as usize - 1];
    assert_eq!(v["model_confidence"], tier);
    assert!(v["result_description"]
        .as_str()
        .unwrap()
        .starts_with("Cardiothoracic ratio (in vhs) predicted"));
    let vhs = v["vhs"].as_f64().unwrap();
    assert!(
        (0.3..0.5).contains(&vhs),
        "normal phantom (truth 0.41): CTR {vhs}"
    );
    assert_eq!(v["vlas"], Value::Null);
    assert!(v["spread"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["pop_detected"], false);
    assert_eq!(v["model_version"], health["model_version"]);
    let classes: Vec<&str> = v["prediction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(keys_of(p), ["class", "x", "y"]);
            for c in ["x", "y"] {
                assert!((0.0..=1.0).contains(&p[c].as_f64().unwrap()), "{p}");
            }
            p["class"].as_str().unwrap()
        })
        .collect();
    for c in [
        "heart_right",
        "heart_left",
        "thorax_right",
        "thorax_left",
        "heart_top",
        "heart_bottom",
    ] {
        assert!(classes.contains(&c), "{c} missing from {classes:?}");
    }
    let m = &v["measurement"];
    assert_eq!(m["name"], "cardiothoracic_ratio");
    assert_eq!(m["value"], v["vhs"]);
    assert_eq!(m["normal_below"], 0.5);
    assert_eq!(m["enlarged"], false);
    assert_eq!(m["vhs_field_carries"], "cardiothoracic_ratio");
    let ratio = m["cardiac_width"].as_f64().unwrap() / m["thoracic_width"].as_f64().unwrap();
    assert!((ratio - vhs).abs() < 0.002, "{m}");
    // The rendered image: a JPEG of the input (enlarged to 768 px) under the text band.
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(v["rendered_image"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        image::guess_format(&jpeg).unwrap(),
        image::ImageFormat::Jpeg
    );
    let img = image::load_from_memory(&jpeg).unwrap();
    assert_eq!(img.width(), 768);
    assert!(img.height() > 768);
    assert_eq!(v["historic_vhs"], json!([]));
    assert_eq!(v["historic_vlas"], json!([]));
    assert_eq!(
        v["billing"],
        json!({ "billable": true, "reason": "valid_vhs", "call_type": "single",
                "monthly_usage": 1, "tier": "paygo", "rate": 3.0 })
    );

    // Same uuid within 24 h: free recheck; the first measurement is now history.
    let body = json!({ "image": b64_file(NORMAL), "uuid": "p-1" });
    let (status, v2) = post_with_key(&app, &key, "/v3/predict", &body).await;
    assert_eq!(status, 200, "{v2}");
    assert!(
        v2.get("rendered_image").is_none(),
        "render defaults to false"
    );
    assert_eq!(
        v2["billing"],
        json!({ "billable": false, "reason": "recheck_24h", "monthly_usage": 1, "tier": "paygo" })
    );
    assert_eq!(v2["historic_vhs"], json!([[today(), vhs]]));
    assert_eq!(v2["historic_vlas"], json!([]));

    // No uuid: billed, no history.
    let body = json!({ "image": b64_file(ENLARGED) });
    let (status, v3) = post_with_key(&app, &key, "/v3/predict", &body).await;
    assert_eq!(status, 200, "{v3}");
    assert!(v3["vhs"].as_f64().unwrap() > 0.5, "{v3}");
    assert_eq!(v3["measurement"]["enlarged"], true);
    assert_eq!(v3["historic_vhs"], Value::Null);
    assert_eq!(v3["historic_vlas"], Value::Null);
    assert_eq!(v3["billing"]["monthly_usage"], 2);
    assert_eq!(v3["billing"]["billable"], true);

    // Rejected image: result code 6, the rejection fields only, free.
    let body = json!({ "image": b64_file(PHOTO), "uuid": "p-1", "render": true });
    let (status, r) = post_with_key(&app, &key, "/v3/predict", &body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        keys_of(&r),
        [
            "billing",
            "classifier_confidence",
            "model_version",
            "rejected",
            "rejection_reason",
            "result_code",
            "result_description",
            "vhs",
            "vlas"
        ]
    );
    assert_eq!(r["result_code"], 6);
    assert_eq!(
        r["result_description"],
        "Image rejected — not a valid radiograph."
    );
    assert_eq!(r["rejected"], true);
    assert_eq!(r["rejection_reason"], "not_a_valid_radiograph");
    assert!((0.0..=1.0).contains(&r["classifier_confidence"].as_f64().unwrap()));
    assert_eq!((&r["vhs"], &r["vlas"]), (&Value::Null, &Value::Null));
    assert_eq!(
        r["billing"],
        json!({ "billable": false, "reason": "no_valid_vhs", "monthly_usage": 2, "tier": "paygo" })
    );

    assert_eq!(calls(&app).await, 4);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM radanalyzer_history").await,
        2
    );
}

on_both_databases!(single_image_contract => single_image_contract);

/// Server-sent events of a response body: `(event, data)`.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                name = e.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            }
        }
        if !data.is_empty() {
            out.push((name, serde_json::from_str(&data).unwrap()));
        }
    }
    out
}

async fn stream(app: &TestApp, key: &str, body: &Value) -> Vec<(String, Value)> {
    let resp = reqwest::Client::new()
        .post(app.url("/v3/predict/stream"))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    sse_events(&resp.text().await.unwrap())
}

async fn batch_and_stream_contract(db: Db) {
    let app = TestApp::spawn(db).await;
    let key = inference_key(&app, "batch").await;
    let images = json!([b64_file(NORMAL), b64_file(ENLARGED), b64_file(PHOTO)]);
    let body = json!({ "images": images, "uuid": "p-b", "render": true });
    let (status, v) = post_with_key(&app, &key, "/v3/predict", &body).await;
    assert_eq!(status, 200, "{v}");
    for f in [
        "vhs",
        "vlas",
        "best_photo_index",
        "best_vhs",
        "best_vlas",
        "median_vhs",
        "median_vlas",
        "vhs_std",
        "vlas_std",
        "vhs_confidence",
        "vlas_confidence",
        "n_photos_processed",
        "n_photos_with_landmarks",
        "processing_started",
        "per_photo",
        "historic_vhs",
        "historic_vlas",
        "model_version",
        "billing",
    ] {
        assert!(v.get(f).is_some(), "{f} missing: {}", keys_of(&v).join(","));
    }
    assert_eq!(v["processing_started"], true);
    assert_eq!(v["n_photos_processed"], 3);
    assert_eq!(v["n_photos_with_landmarks"], 2);
    let per = v["per_photo"].as_array().unwrap();
    assert_eq!(per.len(), 3);
    for p in &per[..2] {
        assert_eq!(p["landmarks_detected"], true);
        assert_eq!(p["pop_detected"], false);
        assert!(p["axes_perpendicular"].is_boolean());
        assert!(p["spread"].is_f64());
        assert!(p.get("rejected").is_none());
    }
    let a = per[0]["vhs"].as_f64().unwrap();
    let b = per[1]["vhs"].as_f64().unwrap();
    assert!(a < 0.5 && b > 0.5, "normal {a}, enlarged {b}");
    assert_eq!(
        keys_of(&per[2]),
        [
            "axes_perpendicular",
            "classifier_confidence",
            "landmarks_detected",
            "model_confidence",
            "rejected",
            "rejection_reason",
            "spread",
            "vhs",
            "vlas"
        ]
    );
    assert_eq!(per[2]["model_confidence"], "review");
    assert_eq!(per[2]["landmarks_detected"], false);
    let best = v["best_photo_index"].as_u64().unwrap() as usize;
    assert!(best < 2);
    // The best image is the one the ensemble agrees on most.
    let other = 1 - best;
    assert!(per[best]["spread"].as_f64() <= per[other]["spread"].as_f64());
    assert_eq!(v["vhs"], per[best]["vhs"]);
    assert_eq!(v["best_vhs"], per[best]["vhs"]);
    assert_eq!(v["vhs_confidence"], per[best]["model_confidence"]);
    let median = v["median_vhs"].as_f64().unwrap();
    assert!((median - (a + b) / 2.0).abs() < 0.0011, "{median}");
    let std = v["vhs_std"].as_f64().unwrap();
    assert!((std - (a - b).abs() / 2.0).abs() < 0.0011, "{std}");
    for f in ["vlas", "best_vlas", "median_vlas", "vlas_std"] {
        assert_eq!(v[f], Value::Null, "{f}");
    }
    assert_eq!(v["vlas_confidence"], "review");
    assert!(v["rendered_image"].is_string());
    assert_eq!(v["historic_vhs"], json!([]));
    assert_eq!(
        v["billing"],
        json!({ "billable": true, "reason": "valid_vhs", "call_type": "session",
                "monthly_usage": 1, "tier": "paygo", "rate": 4.0 })
    );

    // The stream of the same patient: a recheck; an unusable image is an error event.
    let images = json!([b64_file(NORMAL), b64_file(PHOTO), "not base64 at all!"]);
    let events = stream(&app, &key, &json!({ "images": images, "uuid": "p-b" })).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["processing_started", "photo", "photo", "error", "summary"]
    );
    assert_eq!(
        events[0].1,
        json!({ "n_images": 3, "model_version": v["model_version"] })
    );
    let photo = &events[1].1;
    for f in [
        "index",
        "vhs",
        "vlas",
        "spread",
        "model_confidence",
        "landmarks_detected",
        "axes_perpendicular",
        "n_total",
        "model_version",
    ] {
        assert!(photo.get(f).is_some(), "{f} missing from {photo}");
    }
    assert_eq!((&photo["index"], &photo["n_total"]), (&json!(0), &json!(3)));
    assert_eq!(events[2].1["index"], 1);
    assert_eq!(events[2].1["rejected"], true);
    assert_eq!(
        events[3].1,
        json!({ "index": 2, "uuid": "p-b", "error": "Invalid image data" })
    );
    let summary = &events[4].1;
    for f in [
        "best_vhs",
        "best_vlas",
        "median_vhs",
        "median_vlas",
        "vhs_std",
        "vlas_std",
        "vhs_confidence",
        "vlas_confidence",
        "best_photo_index",
        "n_photos_processed",
        "n_photos_with_landmarks",
    ] {
        assert!(summary.get(f).is_some(), "{f} missing from {summary}");
    }
    assert_eq!(summary["best_photo_index"], 0);
    assert_eq!(summary["n_photos_processed"], 2);
    assert_eq!(summary["n_photos_with_landmarks"], 1);
    assert_eq!(summary["vhs_std"], Value::Null);
    assert_eq!(summary["best_vhs"], photo["vhs"]);
    assert_eq!(
        summary["billing"],
        json!({ "billable": false, "reason": "recheck_24h", "monthly_usage": 1, "tier": "paygo" })
    );
    assert_eq!(summary["historic_vhs"].as_array().unwrap().len(), 1);

    // Another patient: one session charge for the whole stream.
    let images = json!([b64_file(ENLARGED), b64_file(NORMAL)]);
    let events = stream(&app, &key, &json!({ "images": images, "uuid": "p-c" })).await;
    let (name, summary) = events.last().unwrap();
    assert_eq!(name, "summary");
    assert_eq!(summary["billing"]["call_type"], "session");
    assert_eq!(summary["billing"]["rate"], 4.0);
    assert_eq!(summary["billing"]["monthly_usage"], 2);

    // A stream with nothing valid is free.
    let events = stream(&app, &key, &json!({ "images": [b64_file(PHOTO)] })).await;
    assert_eq!(
        events.last().unwrap().1["billing"],
        json!({ "billable": false, "reason": "no_valid_vhs", "monthly_usage": 2, "tier": "paygo" })
    );
    assert_eq!(calls(&app).await, 4);
}

on_both_databases!(batch_and_stream_contract => batch_and_stream_contract);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_the_documented_statuses_and_body() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let key = inference_key(&app, "errors").await;
    let png = b64_file(NORMAL);
    let cases = [
        (json!({}), 400, "image", "Missing required field: image"),
        (
            json!({ "uuid": "p" }),
            400,
            "image",
            "Missing required field: image",
        ),
        (
            json!({ "image": "%%%" }),
            400,
            "image",
            "Invalid image data in field image: not valid base64",
        ),
        (
            json!({ "image": base64::engine::general_purpose::STANDARD.encode(b"GIF89a not an image") }),
            400,
            "image",
            "Invalid image data in field image: not a JPEG or PNG image",
        ),
        (
            json!({ "images": [png, "@@@"] }),
            400,
            "images[1]",
            "Invalid image data in field images[1]: not valid base64",
        ),
        (
            json!({ "images": vec![png.clone(); 11] }),
            400,
            "images",
            "Too many images",
        ),
        (
            json!({ "image": png, "render": "yes" }),
            400,
            "render",
            "Invalid field render: must be a boolean",
        ),
        (
            json!({ "image": png, "uuid": 42 }),
            400,
            "uuid",
            "Invalid field uuid: must be a string",
        ),
    ];
    for (body, status, field, message) in cases {
        for path in ["/v3/predict", "/v3/predict/stream"] {
            let (s, v) = post_with_key(&app, &key, path, &body).await;
            let what = format!(
                "{path} {}",
                &body.to_string()[..body.to_string().len().min(60)]
            );
            // The stream answers per-image data problems as error events instead.
            if path.ends_with("stream") && field.starts_with("image") && message.contains("data") {
                assert_eq!(s, 200, "{what}");
                continue;
            }
            assert_eq!(s, status, "{what}: {v}");
            assert!(
                v["error"].as_str().unwrap().starts_with(message),
                "{what}: {v}"
            );
            assert_eq!(v["field"], field, "{what}");
        }
    }
    // Not JSON at all.
    let resp = reqwest::Client::new()
        .post(app.url("/v3/predict"))
        .header("x-api-key", &key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]
        .as_str()
        .unwrap()
        .starts_with("Request body is not valid JSON"));

    // An image over 10 MiB: 413 with the document's message.
    let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 10 * 1024 * 1024 + 1]);
    let (s, v) = post_with_key(&app, &key, "/v3/predict", &json!({ "image": big })).await;
    assert_eq!(s, 413);
    assert_eq!(v["error"], "Image exceeds maximum size of 10MB");
    // Seven images of 9.5 MiB (about 93 MB of base64, over the node's default 64 MiB body
    // limit) are read on /v3: the answer is about their content, not their size.
    let junk = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 19 * 512 * 1024]);
    let (s, v) = post_with_key(
        &app,
        &key,
        "/v3/predict",
        &json!({ "images": vec![junk; 7] }),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "images[0]");

    // Unknown /v3 paths answer in the same body.
    let resp = reqwest::Client::new()
        .get(app.url("/v3/nothing-here"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());

    // Refusals are never billed, nor recorded. (The streams above that went on past an
    // unusable image were settled as sessions.)
    assert_eq!(
        app.count("SELECT COUNT(*) FROM radanalyzer_calls WHERE endpoint = 'predict'")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_landmark_model_health_is_degraded_and_predict_is_503() {
    let models = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cxr-demo"),
        models.path().join("cxr-demo"),
    )
    .unwrap();
    let dir = models.path().to_path_buf();
    let app = TestApp::spawn_with(Db::Sqlite, move |s| s.inference.models_dir = dir).await;
    let key = inference_key(&app, "nomodel").await;
    let v: Value = reqwest::Client::new()
        .get(app.url("/v3/health"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["models_loaded"], 0);
    let (s, v) = post_with_key(
        &app,
        &key,
        "/v3/predict",
        &json!({ "image": b64_file(NORMAL) }),
    )
    .await;
    assert_eq!(s, 503);
    assert_eq!(v["error"], "Landmark model not loaded");
    assert_eq!(calls(&app).await, 0);
}

/// Inserts `n` billable calls of `key_id` in `month` (`YYYY-MM`).
async fn seed_usage(app: &TestApp, key_id: i64, month: &str, n: i64) {
    sqlx::query(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < $1) \
         INSERT INTO radanalyzer_calls (key_id, uuid, call_type, endpoint, result_code, \
           billable, reason, tier, rate_cents, month, created_at) \
         SELECT $2, NULL, 'single', 'seed', 1, 1, 'valid_vhs', 'paygo', 300, $3, 0 FROM seq",
    )
    .bind(n)
    .bind(key_id)
    .bind(month)
    .execute(&app.db.pool)
    .await
    .unwrap();
}

fn this_month() -> String {
    today()[..7].to_string()
}

/// A billing object's `monthly_usage`, `tier` and `rate`.
fn usage_tier_rate(v: &Value) -> (Value, Value, Value) {
    let b = &v["billing"];
    (
        b["monthly_usage"].clone(),
        b["tier"].clone(),
        b["rate"].clone(),
    )
}

async fn tiers_and_usage_report(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.compat.radanalyzer.enterprise_single_rate = 1.75;
        s.compat.radanalyzer.enterprise_session_rate = 2.25;
    })
    .await;
    let (k, key) = keys::create(&app.db, "volume", &[Scope::InferenceWrite])
        .await
        .unwrap();
    // Last month's calls do not count.
    seed_usage(&app, k.id, "2001-01", 700).await;
    seed_usage(&app, k.id, &this_month(), 100).await;
    let single = json!({ "image": b64_file(NORMAL) });
    let (_, v) = post_with_key(&app, &key, "/v3/predict", &single).await;
    assert_eq!(
        v["billing"],
        json!({ "billable": true, "reason": "valid_vhs", "call_type": "single",
                "monthly_usage": 101, "tier": "starter", "rate": 2.5 })
    );
    let batch = json!({ "images": [b64_file(NORMAL)] });
    let (_, v) = post_with_key(&app, &key, "/v3/predict", &batch).await;
    assert_eq!(
        usage_tier_rate(&v),
        (json!(102), json!("starter"), json!(3.5))
    );
    seed_usage(&app, k.id, &this_month(), 398).await; // 500
    let (_, v) = post_with_key(&app, &key, "/v3/predict", &single).await;
    assert_eq!(
        usage_tier_rate(&v),
        (json!(501), json!("professional"), json!(2.0))
    );
    seed_usage(&app, k.id, &this_month(), 1499).await; // 2000
    let (_, v) = post_with_key(&app, &key, "/v3/predict", &batch).await;
    assert_eq!(
        usage_tier_rate(&v),
        (json!(2001), json!("enterprise"), json!(2.25))
    );
    // A free call shows the tier reached without counting.
    let (_, v) = post_with_key(
        &app,
        &key,
        "/v3/predict",
        &json!({ "image": b64_file(PHOTO) }),
    )
    .await;
    assert_eq!(
        v["billing"],
        json!({ "billable": false, "reason": "no_valid_vhs", "monthly_usage": 2001, "tier": "enterprise" })
    );

    // The admin report and the CLI agree.
    let (status, r) = app
        .get_json(&format!("/v1/radanalyzer/usage?key_id={}", k.id))
        .await;
    assert_eq!(status, 200, "{r}");
    let u = &r["data"]["items"][0];
    assert_eq!(r["data"]["month"], this_month());
    assert_eq!(u["billable_calls"], 2001);
    assert_eq!(u["billable_sessions"], 2);
    assert_eq!(u["no_valid_measurement"], 1);
    assert_eq!(u["tier"], "enterprise");
    // 1997 seeded at 3.00, then 2.50 + 3.50 + 2.00 + 2.25.
    assert!(
        (u["amount"].as_f64().unwrap() - (1997.0 * 3.0 + 10.25)).abs() < 1e-6,
        "{u}"
    );
    let (status, old) = app
        .get_json(&format!(
            "/v1/radanalyzer/usage?month=2001-01&key_id={}",
            k.id
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(old["data"]["items"][0]["billable_calls"], 700);
    let (status, bad) = app.get_json("/v1/radanalyzer/usage?month=2026-13").await;
    assert_eq!(status, 400);
    assert_eq!(bad["error"]["field"], "month");
    let (ok, out, err) = app.cli(&["usage", "--json", "--key", "volume"]).await;
    assert!(ok, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli[0], *u);
    let (ok, out, err) = app.cli(&["usage", "--month", "2001-01"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("volume") && out.contains("700"), "{out}");
    // The report is for administrators.
    let resp = reqwest::Client::new()
        .get(app.url("/v1/radanalyzer/usage"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

on_both_databases!(tiers_and_usage_report => tiers_and_usage_report);

/// A metering failure never fails the prediction: `billing_error`, nothing charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_failures_answer_billing_error() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let key = inference_key(&app, "broken").await;
    sqlx::query("DROP TABLE radanalyzer_history")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let body = json!({ "image": b64_file(NORMAL), "uuid": "p" });
    let (s, v) = post_with_key(&app, &key, "/v3/predict", &body).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["vhs"].is_f64());
    assert_eq!(v["billing"]["billable"], false);
    assert_eq!(v["billing"]["reason"], "billing_error");
    assert!(v["billing"].get("rate").is_none());
    assert_eq!(calls(&app).await, 0);
}

/// A models folder holding `cxr-demo` and `ctr-demo` with its tier thresholds replaced (the members are the
/// shipped files: only the manifest differs).
fn models_with_thresholds(optimal_below: f32, good_below: f32) -> tempfile::TempDir {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let root = models.join("ctr-demo");
    let dir = tempfile::tempdir().unwrap();
    // The node needs its classifier too.
    std::os::unix::fs::symlink(models.join("cxr-demo"), dir.path().join("cxr-demo")).unwrap();
    let model = dir.path().join("ctr-demo");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if name != "model.toml" {
            std::os::unix::fs::symlink(&path, model.join(name)).unwrap();
        }
    }
    let manifest: String = std::fs::read_to_string(root.join("model.toml"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("optimal_below") {
                format!("optimal_below = {optimal_below:?}")
            } else if l.starts_with("good_below") {
                format!("good_below = {good_below:?}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(model.join("model.toml"), manifest).unwrap();
    dir
}

/// Codes 2 and 3 follow the spread's tier: with thresholds that put any spread in `good`, then
/// in `review`, the same image gives 2, then 3, both still billable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_2_and_3_follow_the_spread_tier() {
    for (optimal_below, good_below, code, confidence, text) in [
        (0.0, 1.0, 2, "good", "with moderate confidence"),
        (0.0, 0.0, 3, "review", "review recommended"),
    ] {
        let models = models_with_thresholds(optimal_below, good_below);
        let dir = models.path().to_path_buf();
        let app = TestApp::spawn_with(Db::Sqlite, move |s| s.inference.models_dir = dir).await;
        let key = inference_key(&app, "tiers").await;
        let (s, v) = post_with_key(
            &app,
            &key,
            "/v3/predict",
            &json!({ "image": b64_file(NORMAL) }),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["result_code"], code, "{v}");
        assert_eq!(v["model_confidence"], confidence);
        assert!(
            v["result_description"].as_str().unwrap().contains(text),
            "{v}"
        );
        assert!(v["vhs"].is_f64());
        assert_eq!(v["billing"]["billable"], true);
    }
}
