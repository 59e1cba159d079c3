//! The API's self-description as a client sees it: `/openapi.json` passes a real OpenAPI
//! validator (openapi-spec-validator, in the project venv), live answers of a node holding a
//! study validate against the schemas it documents, and `/docs` lists every route without
//! loading anything from elsewhere.
//!
//! `RADSTREAM_KEEP_OPENAPI=DIR` keeps the document, the answers and the page in `DIR`.

use radstream::startup::http::routes;
use radstream::startup::openapi::openapi_path;
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// One answer, as the checker script reads it.
async fn answer(app: &TestApp, method: Method, template: &str, path: &str) -> Value {
    let resp = app
        .client()
        .request(method.clone(), app.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    record(method, template, resp).await
}

async fn record(method: Method, template: &str, resp: reqwest::Response) -> Value {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Streams are checked by their headers alone.
    let body = if content_type.starts_with("application/json") {
        resp.json::<Value>().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    json!({
        "method": method.as_str(),
        "path": template,
        "status": status,
        "content_type": content_type,
        "body": body,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_is_valid_and_describes_live_answers() {
    let app = TestApp::spawn(Db::Sqlite).await;
    // One study through the DICOM listener, so studies, jobs, events and the audit have rows.
    let dir = tempfile::tempdir().unwrap();
    let (studies, paths) = write_studies(dir.path(), 1, 2, 64);
    storescu(&app, &paths).await;
    let uid = &studies[0];
    app.wait_complete(uid, 10).await;

    let resp = app
        .client()
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for r in routes() {
        let op = &doc["paths"][openapi_path(r.path)][r.method.as_str().to_lowercase()];
        assert_eq!(op["summary"], r.summary, "{} {}", r.method, r.path);
    }

    let (_, jobs) = app.get_json("/v1/jobs").await;
    let job_id = jobs["data"]["items"][0]["id"]
        .as_i64()
        .expect("the study's job");
    let study = format!("/v1/studies/{uid}");
    let mut answers = Vec::new();
    for (template, path) in [
        ("/ping", "/ping".to_string()),
        ("/health", "/health".to_string()),
        ("/v1/studies", "/v1/studies".to_string()),
        ("/v1/studies", "/v1/studies?format=csv".to_string()),
        ("/v1/studies", "/v1/studies?page=0".to_string()),
        ("/v1/studies/{study_uid}", study.clone()),
        ("/v1/studies/{study_uid}", format!("{study}?format=xml")),
        (
            "/v1/studies/{study_uid}/results",
            format!("{study}/results"),
        ),
        (
            "/v1/studies/{study_uid}/results/{version}",
            format!("{study}/results/99"),
        ),
        ("/v1/jobs", "/v1/jobs".to_string()),
        ("/v1/jobs/{job_id}", format!("/v1/jobs/{job_id}")),
        ("/v1/jobs/{job_id}", "/v1/jobs/0".to_string()),
        ("/v1/events/history", "/v1/events/history".to_string()),
        ("/v1/models", "/v1/models".to_string()),
        ("/v1/audit", "/v1/audit".to_string()),
        ("/metrics", "/metrics".to_string()),
        ("/docs", "/docs".to_string()),
    ] {
        answers.push(answer(&app, Method::GET, template, &path).await);
    }
    answers.push(
        answer(
            &app,
            Method::POST,
            "/v1/studies/{study_uid}/reprocess",
            &format!("{study}/reprocess"),
        )
        .await,
    );
    // A stream: status and media type only (the body never ends by itself).
    let stream = app
        .client()
        .get(app.url("/v1/events?type=study.complete"))
        .send()
        .await
        .unwrap();
    answers.push(record(Method::GET, "/v1/events", stream).await);
    // Refusals: no credential, and a credential without the scope.
    let anonymous = reqwest::Client::new();
    let resp = anonymous.get(app.url("/v1/models")).send().await.unwrap();
    answers.push(record(Method::GET, "/v1/models", resp).await);
    let resp = anonymous
        .get(app.url("/v1/audit"))
        .bearer_auth(app.token(&[radstream::auth::Scope::ResultsRead]))
        .send()
        .await
        .unwrap();
    answers.push(record(Method::GET, "/v1/audit", resp).await);
    let statuses: Vec<u64> = answers
        .iter()
        .filter_map(|a| a["status"].as_u64())
        .collect();
    for expected in [200, 202, 400, 401, 403, 404] {
        assert!(
            statuses.contains(&expected),
            "no {expected} among {statuses:?}"
        );
    }

    let files = tempfile::tempdir().unwrap();
    let doc_path = files.path().join("openapi.json");
    let answers_path = files.path().join("answers.json");
    std::fs::write(&doc_path, doc.to_string()).unwrap();
    std::fs::write(&answers_path, Value::Array(answers).to_string()).unwrap();
    if let Ok(keep) = std::env::var("RADSTREAM_KEEP_OPENAPI") {
        std::fs::copy(&doc_path, format!("{keep}/openapi.json")).unwrap();
        std::fs::copy(&answers_path, format!("{keep}/answers.json")).unwrap();
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_openapi.py");
    let (ok, out) = run_async(
        python().to_str().unwrap(),
        &[
            script.to_str().unwrap(),
            doc_path.to_str().unwrap(),
            answers_path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        ok,
        "OpenAPI check failed (openapi-spec-validator comes from scripts/requirements.txt; \
         run scripts/setup.sh):\n{out}"
    );
    println!("{out}");
    assert!(out.contains("document: valid OpenAPI 3.1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_lists_every_route_and_loads_nothing() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let resp = reqwest::get(app.url("/docs")).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the docs need a credential"
    );

    let token = app.token(&[radstream::auth::Scope::ResultsRead]);
    let resp = reqwest::get(app.url(&format!("/docs?access_token={token}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    let page = resp.text().await.unwrap();
    if let Ok(keep) = std::env::var("RADSTREAM_KEEP_OPENAPI") {
        std::fs::write(format!("{keep}/docs.html"), &page).unwrap();
    }
    for r in routes() {
        let path = openapi_path(r.path);
        assert!(
            page.contains(&format!("{}</span>{path}</h3>", r.method)),
            "{} {path} missing from /docs",
            r.method
        );
    }
    assert!(page.contains("Scope: <code>inference:write</code>"));
    let lower = page.to_lowercase();
    for banned in ["<script", "src=", "<link", "http://", "https://"] {
        assert!(!lower.contains(banned), "/docs contains {banned}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_redirects_to_the_docs_without_a_credential() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_follow.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/docs");
    // A browser follows it to the page, which asks for a credential.
    let resp = reqwest::get(app.url("/")).await.unwrap();
    assert_eq!(resp.url().path(), "/docs");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
