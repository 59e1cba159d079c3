//! Authentication and authorisation as a client sees them: the matrix over every route of the
//! router's own table, API keys made by the real CLI, query-string tokens, the rate limit, the
//! audit log and the request limits.

use radstream::api::Access;
use radstream::auth::audit::{self, AuditEntry};
use radstream::auth::{AuthMethod, Principal, Scope};
use radstream::startup::http::routes;
use reqwest::{header, StatusCode};
use serde_json::Value;

use crate::helpers::*;

/// `path` with every `{param}` (or `{*rest}`) replaced by a plausible value.
fn sample_path(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let name = rest[start + 1..end].trim_start_matches('*').to_lowercase();
        out.push_str(if name.contains("uid") {
            "1.2.826.0.1.3680043.10.1"
        } else if name == "id" || name.ends_with("_id") || name == "version" {
            "1"
        } else {
            "sample"
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn client() -> reqwest::Client {
    // Each route's own answer: `/` redirects to `/docs`, which has its own row.
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends `method path` with an optional `Authorization` value; SSE bodies are not read.
async fn call(
    app: &TestApp,
    method: &reqwest::Method,
    path: &str,
    auth: Option<String>,
) -> reqwest::Response {
    let mut req = client().request(method.clone(), app.url(path));
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    req.send().await.unwrap()
}

/// The error of a native envelope, or of a vendor dialect's (LeapAI `{Result, Data, Message}`)
/// as `{"code", "message"}`.
async fn error_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let body: Value = resp.json().await.expect("error envelope is JSON");
    if body.get("Result").is_some() {
        assert_eq!(body["Result"], "Failure", "{body}");
        assert_eq!(body["Data"], Value::Null, "{body}");
        return (
            status,
            serde_json::json!({ "code": status.as_u16(), "message": body["Message"] }),
        );
    }
    if let Some(message) = body["error"].as_str() {
        // RadAnalyzer's `{"error": "<message>"}`.
        return (
            status,
            serde_json::json!({ "code": status.as_u16(), "message": message }),
        );
    }
    if body["error"]["code"].is_string() {
        // Pi's `{"error": {"code": "<code>", "message"}}`.
        return (status, body["error"].clone());
    }
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["code"], status.as_u16(), "{body}");
    (status, body["error"].clone())
}

async fn expect_401(resp: reqwest::Response, message: &str, what: &str) {
    let challenge = resp
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let (status, error) = error_of(resp).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {error}");
    assert_eq!(error["message"], message, "{what}");
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
}

/// RadAnalyzer's routes (`/v3`): every credential that is not a valid API key holding the
/// scope, a JWT included, is the document's 403 "Invalid API key"; a key without the scope is
/// a 403 naming it; a key with it passes.
async fn radanalyzer_refusals(
    app: &TestApp,
    method: &reqwest::Method,
    path: &str,
    required: Scope,
    what: &str,
) {
    use radstream::auth::keys;
    let with_key = |key: &str| {
        client()
            .request(method.clone(), app.url(path))
            .header("x-api-key", key)
    };
    let admin_jwt = format!("Bearer {}", app.token(&[Scope::Admin]));
    let (revoked, revoked_secret) =
        keys::create(&app.db, &format!("revoked {path} {method}"), &[required])
            .await
            .unwrap();
    keys::revoke(&app.db, &revoked.id.to_string())
        .await
        .unwrap();
    let refusals = [
        call(app, method, path, None).await,
        call(app, method, path, Some("Bearer garbage".into())).await,
        call(app, method, path, Some(admin_jwt)).await,
        with_key("rsk_unknown").send().await.unwrap(),
        with_key(&revoked_secret).send().await.unwrap(),
    ];
    for resp in refusals {
        assert!(
            resp.headers().get(header::WWW_AUTHENTICATE).is_none(),
            "{what}"
        );
        let (status, error) = error_of(resp).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {error}");
        assert_eq!(error["message"], "Invalid API key", "{what}");
    }
    let others: Vec<Scope> = Scope::ALL
        .into_iter()
        .filter(|s| *s != required && *s != Scope::Admin)
        .collect();
    let (_, lacking) = keys::create(&app.db, &format!("lacking {path} {method}"), &others)
        .await
        .unwrap();
    let (status, error) = error_of(with_key(&lacking).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {error}");
    assert_eq!(
        error["message"],
        format!("Missing scope: {required}"),
        "{what}"
    );
    for (i, scopes) in [vec![required], vec![Scope::Admin]].into_iter().enumerate() {
        let (_, good) = keys::create(&app.db, &format!("good{i} {path} {method}"), &scopes)
            .await
            .unwrap();
        let s = with_key(&good).send().await.unwrap().status();
        assert!(
            s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
            "{what} with {scopes:?}: {s}"
        );
        assert!(!s.is_server_error(), "{what} with {scopes:?}: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_over_every_route() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let table = routes();
    assert!(
        table.iter().any(|r| matches!(r.access, Access::Scope(_))),
        "no protected route: the matrix would prove nothing"
    );
    for route in table {
        let path = sample_path(route.path);
        let what = format!("{} {}", route.method, route.path);
        let method = route.method.clone();
        match route.access {
            Access::Public => {
                let resp = call(&app, &method, &path, None).await;
                assert_ne!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
                assert_ne!(resp.status(), StatusCode::FORBIDDEN, "{what}");
            }
            Access::Scope(required)
                if route.dialect == Some(radstream::compat::radanalyzer::DIALECT) =>
            {
                radanalyzer_refusals(&app, &method, &path, required, &what).await;
            }
            Access::Scope(required) => {
                expect_401(
                    call(&app, &method, &path, None).await,
                    "Token missing",
                    &what,
                )
                .await;
                expect_401(
                    call(&app, &method, &path, Some("Bearer garbage".into())).await,
                    "Invalid token",
                    &what,
                )
                .await;
                expect_401(
                    call(&app, &method, &path, Some("Basic dXNlcjpwdw==".into())).await,
                    "Invalid token",
                    &what,
                )
                .await;
                let expired = app.expired_token(&[Scope::Admin]);
                expect_401(
                    call(&app, &method, &path, Some(format!("Bearer {expired}"))).await,
                    "Token expired",
                    &what,
                )
                .await;

                let others: Vec<Scope> = Scope::ALL
                    .into_iter()
                    .filter(|s| *s != required && *s != Scope::Admin)
                    .collect();
                let lacking = app.token(&others);
                let resp = call(&app, &method, &path, Some(format!("Bearer {lacking}"))).await;
                let (status, error) = error_of(resp).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {error}");
                assert_eq!(
                    error["message"],
                    format!("Missing scope: {required}"),
                    "{what}"
                );
                // Vendor dialects have no details field.
                if route.dialect.is_none() {
                    assert_eq!(error["required_scope"], required.as_str());
                }

                for scopes in [vec![required], vec![Scope::Admin]] {
                    let good = app.token(&scopes);
                    let resp = call(&app, &method, &path, Some(format!("Bearer {good}"))).await;
                    let s = resp.status();
                    assert!(
                        s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                        "{what} with {scopes:?}: {s}"
                    );
                    assert!(!s.is_server_error(), "{what} with {scopes:?}: {s}");
                }
            }
        }
    }
}

async fn api_keys_made_by_the_cli_work_until_revoked(db: Db) {
    let app = TestApp::spawn(db).await;
    let (ok, key, err) = app
        .cli(&["keys", "create", "--name", "viewer", "--scope", "admin"])
        .await;
    assert!(ok, "{err}");
    let key = key.trim().to_string();
    assert!(key.starts_with("rsk_"), "{key}");
    let (ok, _, err) = app
        .cli(&[
            "keys",
            "create",
            "--name",
            "reader",
            "--scope",
            "results:read",
        ])
        .await;
    assert!(ok, "{err}");

    let with_key = |k: &str| {
        client()
            .get(app.url("/v1/audit"))
            .header("x-api-key", k.to_string())
            .send()
    };
    assert_eq!(with_key(&key).await.unwrap().status(), StatusCode::OK);
    // A key is also accepted as a bearer token.
    let resp = call(
        &app,
        &reqwest::Method::GET,
        "/v1/audit",
        Some(format!("Bearer {key}")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The audit row names the key and the peer address.
    let (_, body) = app.get_json("/v1/audit?limit=5").await;
    let row = body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["principal"] == "viewer")
        .cloned()
        .unwrap_or_else(|| panic!("no audit row for the key: {body}"));
    assert_eq!(row["auth_method"], "api_key");
    assert_eq!(row["action"], "audit.read");
    assert!(
        row["remote_addr"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{row}"
    );

    let unknown = format!("rsk_{}", "x".repeat(40));
    expect_401(
        with_key(&unknown).await.unwrap(),
        "Invalid token",
        "unknown key",
    )
    .await;

    // Listing never shows the key, only its prefix.
    let (ok, list, err) = app.cli(&["keys", "list"]).await;
    assert!(ok, "{err}");
    assert!(
        list.contains("viewer") && list.contains(&key[..12]),
        "{list}"
    );
    assert!(!list.contains(&key), "key printed by keys list");
    let stored: i64 = app
        .count(&format!(
            "SELECT COUNT(*) FROM api_keys WHERE key_hash LIKE '%{}%'",
            &key[4..]
        ))
        .await;
    assert_eq!(stored, 0, "key stored in clear");

    let (ok, _, err) = app.cli(&["keys", "revoke", "viewer"]).await;
    assert!(ok, "{err}");
    expect_401(
        with_key(&key).await.unwrap(),
        "API key revoked",
        "revoked key",
    )
    .await;
    let (ok, _, err) = app.cli(&["keys", "revoke", "viewer"]).await;
    assert!(!ok && err.contains("already revoked"), "{err}");
}

on_both_databases!(api_keys => api_keys_made_by_the_cli_work_until_revoked);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tokens_verify_on_a_node_with_a_generated_secret() {
    // No jwt_secret configured: the node generates <data_dir>/jwt.secret, and the CLI, run
    // against the same data folder, signs with it.
    let app = TestApp::spawn_with(Db::Sqlite, |s| s.auth.jwt_secret = None).await;
    let secret_file = app.data_dir.join("jwt.secret");
    assert!(secret_file.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (ok, token, err) = app
        .cli(&[
            "token",
            "issue",
            "--subject",
            "ops",
            "--scope",
            "admin",
            "--days",
            "2",
        ])
        .await;
    assert!(ok, "{err}");
    let resp = call(
        &app,
        &reqwest::Method::GET,
        "/v1/audit",
        Some(format!("Bearer {}", token.trim())),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // config check never prints the secret.
    let (ok, out, _) = app.cli(&["config", "check"]).await;
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(ok && !out.contains(secret.trim()), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_query_parameter_authenticates() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let token = app.token(&[Scope::Admin]);
    let resp = client()
        .get(app.url(&format!("/v1/audit?limit=3&access_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "success");
    let resp = client()
        .get(app.url("/v1/audit?access_token=garbage"))
        .send()
        .await
        .unwrap();
    expect_401(resp, "Invalid token", "garbage query token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| s.auth.rate_limit_per_minute = 2).await;
    let token = format!("Bearer {}", app.token(&[Scope::Admin]));
    for _ in 0..2 {
        let resp = call(
            &app,
            &reqwest::Method::GET,
            "/v1/audit",
            Some(token.clone()),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = call(
        &app,
        &reqwest::Method::GET,
        "/v1/audit",
        Some(token.clone()),
    )
    .await;
    let retry: u64 = resp
        .headers()
        .get(header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let (status, error) = error_of(resp).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["message"], "Rate limit exceeded");
    // Public routes are not limited.
    let ping = reqwest::get(app.url("/ping")).await.unwrap();
    assert_eq!(ping.status(), StatusCode::OK);
}

async fn audit_log_is_filtered(db: Db) {
    let app = TestApp::spawn(db).await;
    let p = Principal {
        subject: "dr-who".into(),
        method: AuthMethod::Jwt,
        scopes: vec![Scope::ResultsRead],
        key_id: None,
    };
    for pid in ["PID-1", "PID-2", "PID-1"] {
        audit::record(
            &app.db,
            &p,
            &AuditEntry {
                action: "results.read",
                patient_id: Some(pid),
                study_uid: Some("1.2.3"),
                remote_addr: Some("10.0.0.9:4000"),
                request_id: Some("req-1"),
                status: Some(200),
                query: None,
            },
        )
        .await
        .unwrap();
    }
    let (status, body) = app.get_json("/v1/audit?patient_id=PID-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert!(items
        .iter()
        .all(|r| r["patient_id"] == "PID-1" && r["principal"] == "dr-who"));
    assert_eq!(items[0]["status"], 200);
    assert!(items[0]["at"].as_str().unwrap().ends_with('Z'));

    let (_, body) = app
        .get_json("/v1/audit?since=2100-01-01T00:00:00Z&limit=10")
        .await;
    assert_eq!(body["data"]["items"].as_array().unwrap().len(), 0);
    let (_, body) = app.get_json("/v1/audit?since=0&limit=1").await;
    assert_eq!(body["data"]["items"].as_array().unwrap().len(), 1);

    for bad in ["limit=0", "limit=5000", "since=yesterday", "limit=abc"] {
        let (status, body) = app.get_json(&format!("/v1/audit?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["status"], "error");
    }
    // CSV rendering has one row per audit entry.
    let csv = app
        .client()
        .get(app.url("/v1/audit?patient_id=PID-2&format=csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[0].contains("patient_id") && lines[1].contains("PID-2"),
        "{csv}"
    );
}

on_both_databases!(audit_log => audit_log_is_filtered);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_in_the_envelope() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| s.http.max_body_bytes = 1024).await;
    let resp = app
        .client()
        .get(app.url("/v1/audit"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(resp).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["max_body_bytes"], 1024);
}

#[test]
fn sample_paths_fill_every_parameter() {
    assert_eq!(
        sample_path("/v1/studies/{study_uid}/results/{version}"),
        "/v1/studies/1.2.826.0.1.3680043.10.1/results/1"
    );
    assert_eq!(sample_path("/v1/jobs/{id}"), "/v1/jobs/1");
    assert_eq!(sample_path("/files/{*rest}"), "/files/sample");
    assert_eq!(sample_path("/ping"), "/ping");
}
