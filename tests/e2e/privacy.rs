//! Trust at the network edge: literal LIKE searches, file modes, JWT time claims, confined
//! result files, the Pi URL fetch, audit of DICOMweb and FHIR reads, the DICOM audit export.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use reqwest::StatusCode;
use serde_json::Value;

use radstream::auth::jwt::Issuer;
use radstream::auth::Scope;

use crate::helpers::{new_uid, on_both_databases, storescu, write_dx, Db, TestApp};

/// A node without the inference pipeline (these tests are about the edge, not the models).
async fn quiet_node(db: Db) -> TestApp {
    TestApp::spawn_with(db, |s| s.pipeline.enabled = false).await
}

/// A synthetic DX instance of a new study whose PatientName is `name`; returns (study, path).
fn instance_named(dir: &Path, name: &str) -> (String, PathBuf) {
    let study = new_uid();
    let path = write_dx(dir, &study, &new_uid(), &new_uid(), 8, 8);
    let mut obj = dicom_object::open_file(&path).expect("open written instance");
    obj.put(DataElement::new(
        tags::PATIENT_NAME,
        VR::PN,
        PrimitiveValue::from(name),
    ));
    obj.write_to_file(&path).expect("rewrite instance");
    (study, path)
}

/// The study UIDs a `/v1/studies` search answers.
async fn rest_search(app: &TestApp, query: &str) -> Vec<String> {
    let (status, body) = app.get_json(&format!("/v1/studies?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    let mut uids: Vec<String> = body["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s| s["study_uid"].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    uids
}

/// The study UIDs a QIDO-RS study search answers.
async fn qido_search(app: &TestApp, query: &str) -> Vec<String> {
    let resp = app
        .client()
        .get(app.url(&format!("/dicomweb/studies?{query}")))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    if status == StatusCode::NO_CONTENT {
        return Vec::new();
    }
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    let mut uids: Vec<String> = body
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| s["0020000D"]["Value"][0].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    uids
}

fn sorted(v: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

async fn like_wildcards_in_input_match_literally(db: Db) {
    let app = quiet_node(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (plain, a) = instance_named(dir.path(), "DOE^JOHN");
    let (percent, b) = instance_named(dir.path(), "DOE%^JANE");
    let (under, c) = instance_named(dir.path(), "DOE_^JIM");
    let (bang, d) = instance_named(dir.path(), "DOE!^JO");
    storescu(&app, &[a, b, c, d]).await;
    let all = sorted(&[&plain, &percent, &under, &bang]);

    // REST: a substring match, where % and _ (and the escape character) are themselves.
    assert_eq!(
        rest_search(&app, "patient_name=%25").await,
        vec![percent.clone()]
    );
    assert_eq!(
        rest_search(&app, "patient_name=_").await,
        vec![under.clone()]
    );
    assert_eq!(
        rest_search(&app, "patient_name=!").await,
        vec![bang.clone()]
    );
    assert_eq!(rest_search(&app, "patient_name=doe").await, all);

    // QIDO-RS: * and ? are wildcards, a literal % or _ matches only itself.
    assert_eq!(
        qido_search(&app, "PatientName=*%25*").await,
        vec![percent.clone()]
    );
    assert_eq!(
        qido_search(&app, "PatientName=DOE_*").await,
        vec![under.clone()]
    );
    assert_eq!(
        qido_search(&app, "PatientName=DOE!*").await,
        vec![bang.clone()]
    );
    assert_eq!(qido_search(&app, "PatientName=doe*").await, all);
    assert_eq!(
        qido_search(&app, "PatientName=DOE?^J*").await,
        sorted(&[&percent, &under, &bang])
    );
    assert!(qido_search(&app, "PatientName=%25").await.is_empty());
}

on_both_databases!(like_wildcards => like_wildcards_in_input_match_literally);

/// Every entry under `dir` with its mode, links not followed.
#[cfg(unix)]
fn modes_under(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, m.permissions().mode() & 0o777, m.is_dir()));
        }
    }
    out
}

/// After a node stored an instance (and generated its JWT secret), nothing under its data
/// folder is open to group or other; a folder left loose by an earlier run is tightened.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_is_the_nodes_alone() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.auth.jwt_secret = None;
        s.pipeline.enabled = false;
        // What an earlier version left: a world-readable folder and export.
        let data = &s.storage.data_dir;
        std::fs::create_dir_all(data).unwrap();
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(data.join("old-export.json"), b"{}").unwrap();
        std::fs::set_permissions(
            data.join("old-export.json"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = instance_named(dir.path(), "MODE^TEST");
    storescu(&app, &[file]).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 1);
    let (status, _) = app.get_json("/v1/studies?patient_id=PID-TEST-1").await;
    assert_eq!(status, StatusCode::OK);

    let data_mode = std::fs::metadata(&app.data_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(data_mode, 0o700, "the data folder");
    let entries = modes_under(&app.data_dir);
    for name in [
        "radstream.db",
        "radstream.db-wal",
        "radstream.db-shm",
        "jwt.secret",
    ] {
        assert!(
            entries.iter().any(|(p, _, _)| p.ends_with(name)),
            "{name} exists: {entries:?}"
        );
    }
    assert!(entries
        .iter()
        .any(|(p, _, _)| p.extension().is_some_and(|e| e == "dcm")));
    for (path, mode, is_dir) in &entries {
        if *is_dir {
            assert_eq!(*mode, 0o700, "{}", path.display());
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        }
    }
}

/// A correctly signed admin token whose `nbf` (or `iat`) lies an hour ahead is refused with a
/// 401 naming the claim; one a few seconds ahead passes within `auth.clock_leeway_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_future_is_refused_naming_the_claim() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| s.auth.clock_leeway_secs = 60).await;
    let issuer = Issuer::from_settings(&app.settings.auth, &app.settings.storage.data_dir).unwrap();
    let base = issuer.claims(
        "ahead",
        &[Scope::Admin],
        std::time::Duration::from_secs(7200),
    );
    let get = |token: String| {
        reqwest::Client::new()
            .get(app.url("/v1/audit"))
            .bearer_auth(token)
            .send()
    };
    for (claim, claims) in [
        (
            "nbf",
            radstream::auth::jwt::Claims {
                nbf: Some(base.iat + 3600),
                ..base.clone()
            },
        ),
        (
            "iat",
            radstream::auth::jwt::Claims {
                iat: base.iat + 3600,
                ..base.clone()
            },
        ),
    ] {
        let resp = get(issuer.sign(&claims).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{claim}");
        assert!(resp.headers().contains_key("www-authenticate"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["error"]["message"],
            format!("Token not yet valid ({claim})"),
            "{body}"
        );
        assert!(
            body["error"]["details"].to_string().contains(claim),
            "{body}"
        );
    }
    let near = radstream::auth::jwt::Claims {
        nbf: Some(base.iat + 20),
        iat: base.iat + 20,
        ..base.clone()
    };
    let resp = get(issuer.sign(&near).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "within the leeway");
}

/// The admin's view of the audit log (the newest 100 rows).
async fn audit_rows(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get_json("/v1/audit?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["items"].as_array().unwrap().clone()
}

/// QIDO-RS, WADO-RS and FHIR reads each leave an audit row naming who, what and when.
async fn dicomweb_and_fhir_reads_are_audited(db: Db) {
    let app = quiet_node(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, file) = instance_named(dir.path(), "AUDIT^ME");
    storescu(&app, &[file]).await;
    let reader = app.token(&[Scope::ResultsRead]);
    let get = |path: String, accept: &'static str| {
        reqwest::Client::new()
            .get(app.url(&path))
            .bearer_auth(&reader)
            .header("accept", accept)
            .send()
    };
    let started = radstream::clock::now_ms();
    let qido = get(
        "/dicomweb/studies?PatientID=PID-TEST-1&includefield=all".into(),
        "application/dicom+json",
    )
    .await
    .unwrap();
    assert_eq!(qido.status(), StatusCode::OK);
    let wado = get(
        format!("/dicomweb/studies/{study}"),
        "multipart/related; type=\"application/dicom\"",
    )
    .await
    .unwrap();
    assert_eq!(wado.status(), StatusCode::OK);
    let _ = wado.bytes().await.unwrap();
    let meta = get(
        format!("/dicomweb/studies/{study}/metadata"),
        "application/dicom+json",
    )
    .await
    .unwrap();
    assert_eq!(meta.status(), StatusCode::OK);
    let fhir = get(
        format!("/fhir/DiagnosticReport?identifier={study}"),
        "application/fhir+json",
    )
    .await
    .unwrap();
    assert_eq!(fhir.status(), StatusCode::OK);

    let rows = audit_rows(&app).await;
    let find = |action: &str| {
        rows.iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} row in {rows:#?}"))
            .clone()
    };
    for r in [
        find("dicomweb.qido.studies"),
        find("dicomweb.wado.study"),
        find("dicomweb.wado.study_metadata"),
        find("fhir.DiagnosticReport.search"),
    ] {
        assert_eq!(r["principal"], "test", "{r}");
        assert_eq!(r["status"], 200, "{r}");
        assert!(r["at_ms"].as_i64().unwrap() >= started, "{r}");
        assert!(
            r["request_id"].is_string() && r["remote_addr"].is_string(),
            "{r}"
        );
    }
    let q = find("dicomweb.qido.studies");
    assert_eq!(q["patient_id"], "PID-TEST-1", "{q}");
    assert!(
        q["query"]
            .as_str()
            .unwrap()
            .contains("PatientID=PID-TEST-1"),
        "{q}"
    );
    assert_eq!(find("dicomweb.wado.study")["study_uid"], study.as_str());
    assert_eq!(
        find("dicomweb.wado.study_metadata")["study_uid"],
        study.as_str()
    );
    let f = find("fhir.DiagnosticReport.search");
    assert!(f["query"].as_str().unwrap().contains(&study), "{f}");

    // The same rows as DICOM audit messages, valid against PS3.15's schema.
    let resp = app
        .client()
        .get(app.url("/v1/audit?format=dicom-xml&limit=100"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/xml"));
    let xml = resp.bytes().await.unwrap();
    let summary = check_dicom_audit(&xml);
    let messages = summary["messages"].as_array().unwrap();
    // The rows above, and the audit.read of reading them.
    assert_eq!(summary["count"].as_u64().unwrap() as usize, rows.len() + 1);
    let of =
        |event: &str| -> Vec<&Value> { messages.iter().filter(|m| m["event"] == event).collect() };
    let query = of("110112")
        .into_iter()
        .find(|m| m["queries"].to_string().contains("PatientID=PID-TEST-1"))
        .expect("the QIDO-RS search as a Query event");
    assert_eq!(query["action"], "E");
    assert!(
        query["objects"].to_string().contains("PID-TEST-1"),
        "{query}"
    );
    assert_eq!(query["users"][0], "test");
    assert_eq!(query["source"], "RADSTREAM");
    let export = of("110106");
    assert!(
        export
            .iter()
            .any(|m| m["objects"].to_string().contains(&study)),
        "the WADO-RS retrieve as an Export event naming the study: {export:?}"
    );

    // The CLI exports the same log.
    let (ok, out, err) = app
        .cli(&[
            "audit",
            "export",
            "--format",
            "dicom",
            "--patient-id",
            "PID-TEST-1",
        ])
        .await;
    assert!(ok, "{err}");
    let summary = check_dicom_audit(out.as_bytes());
    assert!(summary["count"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["objects"].to_string().contains("PID-TEST-1")));
}

/// Runs tests/python/check_dicom_audit.py on `xml`; its JSON summary.
fn check_dicom_audit(xml: &[u8]) -> Value {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_dicom_audit.py");
    let mut child = std::process::Command::new(crate::helpers::python())
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().unwrap().write_all(xml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(xml)
    );
    serde_json::from_slice(&out.stdout).expect("summary JSON")
}

on_both_databases!(reads_are_audited => dicomweb_and_fhir_reads_are_audited);
