//! Neolens response formats (specs/001): a client written from that document reads the native
//! `/v1` API: the success envelope, the error object, CSV and XML by `Accept` or `?format=`.

use radstream::auth::Scope;
use serde_json::Value;

use crate::helpers::*;

fn is_utc_second(t: &str) -> bool {
    // "2025-07-24T10:03:12Z", as in the document.
    time::PrimitiveDateTime::parse(
        t.trim_end_matches('Z'),
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
    )
    .is_ok()
        && t.ends_with('Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neolens_client_reads_envelopes_errors_csv_and_xml() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = fixture_copy("dx_normal", dir.path(), 1);
    storescu(&app, &files).await;
    app.wait_complete(&study, 30).await;
    let token = app.token(&[Scope::ResultsRead]);
    let http = reqwest::Client::new();
    let get = |path: String, accept: Option<&'static str>| {
        let mut r = http.get(app.url(&path)).bearer_auth(&token);
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        r.send()
    };

    // Success envelope: status, timestamp (UTC), data, meta.request_id (UUID), meta.version.
    let resp = get("/v1/studies".into(), None).await.unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let header_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "success");
    assert!(
        is_utc_second(body["timestamp"].as_str().unwrap()),
        "{}",
        body["timestamp"]
    );
    assert!(body["data"].is_object());
    let rid = body["meta"]["request_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(rid).is_ok());
    assert_eq!(rid, header_id);
    assert_eq!(body["meta"]["version"], "v1");
    assert_eq!(body.as_object().unwrap().len(), 4);

    // Error object: code (the HTTP status), message, details (a string).
    let resp = get("/v1/studies?from=2024-02-30".into(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert!(is_utc_second(body["timestamp"].as_str().unwrap()));
    assert_eq!(body["error"]["code"], 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("from"));
    assert!(body["error"]["details"].is_string());
    let lacking = app.token(&[Scope::InferenceWrite]);
    let resp = http
        .get(app.url("/v1/studies"))
        .bearer_auth(&lacking)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 403);
    assert!(body["error"]["details"]
        .as_str()
        .unwrap()
        .contains("results:read"));

    // CSV by Accept and by ?format=, UTF-8, the same stable column order each time.
    let by_accept = get("/v1/studies".into(), Some("text/csv")).await.unwrap();
    assert_eq!(
        by_accept.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let a = by_accept.text().await.unwrap();
    let b = get("/v1/studies?format=csv".into(), None)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header_a = a.lines().next().unwrap();
    assert_eq!(header_a, b.lines().next().unwrap());
    assert!(header_a.starts_with("accession_number,"), "{header_a}");
    assert!(a.contains(&study));

    // XML by Accept and by ?format=.
    let x = get("/v1/studies".into(), Some("application/xml"))
        .await
        .unwrap();
    assert!(x.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/xml"));
    let x = x.text().await.unwrap();
    assert!(x.starts_with(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><response><status>success</status>"
    ));
    assert!(x.contains("<request_id>") && x.contains("<version>v1</version>"));
    let y = get("/v1/studies?format=xml".into(), None)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(y.contains(&study));
    // A well-formed document: a real XML parser reads it.
    let script = "import sys, xml.dom.minidom as m; d = m.parseString(sys.stdin.read()); print(d.documentElement.tagName)";
    let mut child = std::process::Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(y.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "response");
}
