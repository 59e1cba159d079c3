//! FHIR R4 after a real study went through the pipeline: fhir.resources validates every
//! resource and Bundle, fhirclient reads the report and its observations, every code is
//! checked against pydicom's PS3.16 dictionary (scripts/fhir_check.py); searches, paging,
//! OperationOutcome errors, superseded versions and the audit log are checked here.

use radstream::auth::Scope;
use radstream::fhir::{codes, report_bundle, BundleKind};
use serde_json::{json, Value};

use crate::helpers::*;

/// Sends a fixture study and waits for its first result.
async fn study_with_result(app: &TestApp, dir: &std::path::Path) -> String {
    let (study, files) = fixture_copy("cr_cardiomegaly", dir, 1);
    storescu(app, &files).await;
    app.wait_result(&study, 1).await;
    study
}

async fn fhir_get(app: &TestApp, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(app.url(path))
        .bearer_auth(app.token(&[Scope::ResultsRead]))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert_eq!(ct, "application/fhir+json", "{path}");
    (status, resp.json().await.unwrap())
}

async fn flow(db: Db, python_checks: bool) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let study = study_with_result(&app, dir.path()).await;
    let ident = format!("urn:dicom:uid%7Curn:oid:{study}");
    // One Observation per finding of the classifier (11) and per study measurement (the
    // landmark and segmentation models'); a Device per model that ran.
    let stored = radstream::result::store::latest(&app.db, &study)
        .await
        .unwrap()
        .expect("result");
    let observations = 11 + stored.measurements.len();
    let devices = stored.validations().len();

    let (s, bundle) = fhir_get(&app, &format!("/fhir/DiagnosticReport?identifier={ident}")).await;
    assert_eq!(s, 200, "{bundle}");
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 1, "{bundle}");
    let report = bundle["entry"][0]["resource"].clone();
    let rid = report["id"].as_str().unwrap().to_string();
    assert!(rid.starts_with("rs-"));
    assert_eq!(report["status"], "final");
    assert_eq!(report["category"][0]["coding"][0]["code"], "LP29684-5");
    // Two CR images: "XR Chest 2 Views".
    assert_eq!(report["code"]["coding"][0]["code"], "36643-5", "{report}");
    assert_eq!(
        report["imagingStudy"][0]["reference"],
        format!("ImagingStudy/{study}")
    );
    assert_eq!(report["identifier"][0]["value"], format!("urn:oid:{study}"));
    assert_eq!(report["identifier"][1]["value"], format!("{study}/v1"));
    let results = report["result"].as_array().unwrap();
    assert_eq!(
        results.len(),
        observations,
        "one Observation per finding of the model and per measurement"
    );
    assert!(report["conclusion"]
        .as_str()
        .unwrap()
        .starts_with("Urgency: "));
    let patient_ref = report["subject"]["reference"].as_str().unwrap().to_string();

    // An observation: value present/absent, probability component, derivedFrom, device.
    let (s, obs) = fhir_get(
        &app,
        &format!("/fhir/{}", results[0]["reference"].as_str().unwrap()),
    )
    .await;
    assert_eq!(s, 200, "{obs}");
    assert_eq!(
        obs["derivedFrom"][0]["reference"],
        format!("ImagingStudy/{study}")
    );
    let p = obs["component"][0]["valueQuantity"]["value"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&p));
    let (s, device) = fhir_get(
        &app,
        &format!("/fhir/{}", obs["device"]["reference"].as_str().unwrap()),
    )
    .await;
    assert_eq!(s, 200, "{device}");
    assert_eq!(device["manufacturer"], "radstream");
    assert_eq!(device["version"][0]["value"], "0.1.0");

    // Paging: 4 per page.
    let (_, page1) = fhir_get(
        &app,
        &format!("/fhir/Observation?derived-from=ImagingStudy/{study}&_count=4"),
    )
    .await;
    assert_eq!(page1["total"], observations);
    assert_eq!(page1["entry"].as_array().unwrap().len(), 4);
    let next = page1["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("next link")["url"]
        .as_str()
        .unwrap()
        .to_string();
    let next_path = &next[next.find("/fhir/").unwrap()..];
    let (_, page3) = fhir_get(
        &app,
        &next_path.replace("_offset=4", &format!("_offset={}", observations - 3)),
    )
    .await;
    assert_eq!(page3["entry"].as_array().unwrap().len(), 3);
    assert!(!page3["link"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["relation"] == "next"));

    // Dates: the fixture's study date, by prefix.
    let (_, imaging) = fhir_get(&app, &format!("/fhir/ImagingStudy/{study}")).await;
    let date = report["effectiveDateTime"].as_str().unwrap()[..10].to_string();
    for (q, n) in [
        (format!("date={date}"), 1),
        (format!("date=ge{date}&date=le{date}"), 1),
        (format!("date=gt{date}"), 0),
        (format!("date=lt{date}"), 0),
        ("status=preliminary".to_string(), 0),
    ] {
        let (s, b) = fhir_get(
            &app,
            &format!("/fhir/DiagnosticReport?patient={patient_ref}&{q}"),
        )
        .await;
        assert_eq!(s, 200, "{q}: {b}");
        assert_eq!(b["total"], n, "{q} (imaging study {imaging})");
    }

    // Errors: OperationOutcome naming the parameter.
    for (path, status, needle) in [
        ("/fhir/DiagnosticReport?foo=1", 400, "foo"),
        ("/fhir/Observation?date=2024", 400, "date"),
        ("/fhir/DiagnosticReport?date=2024-13-01", 400, "date"),
        ("/fhir/DiagnosticReport?_count=x", 400, "_count"),
        ("/fhir/DiagnosticReport/rs-999999", 404, "rs-999999"),
        ("/fhir/Patient/nope", 404, "nope"),
        ("/fhir/Condition", 404, "Condition"),
    ] {
        let (s, b) = fhir_get(&app, path).await;
        assert_eq!(s, status, "{path}: {b}");
        assert_eq!(b["resourceType"], "OperationOutcome", "{path}");
        assert!(
            b["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{path}: {b}"
        );
    }

    // The bundle for exports: the report and everything it references.
    let result_id: i64 = rid[3..].parse().unwrap();
    let tx = report_bundle(
        &app.db,
        &[],
        &app.settings.fhir,
        result_id,
        "http://example.org/fhir",
        BundleKind::Transaction,
    )
    .await
    .unwrap()
    .expect("bundle");
    let kinds: Vec<&str> = tx["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 1 + observations + 2 + devices, "{kinds:?}");
    assert_eq!(tx["entry"][0]["request"]["method"], "PUT");
    assert_eq!(
        tx["entry"][0]["request"]["url"],
        format!("DiagnosticReport/{rid}")
    );

    if python_checks {
        let codes_file = dir.path().join("codes.json");
        let fixed: Vec<Value> = codes::all()
            .iter()
            .map(|c| json!({ "system": c.system, "code": c.code, "display": c.display }))
            .collect();
        std::fs::write(&codes_file, serde_json::to_string(&fixed).unwrap()).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fhir_check.py");
        let token = app.token(&[Scope::ResultsRead]);
        let base = app.url("/fhir");
        let py = python();
        let (ok, out) = run_async(
            py.to_str().unwrap(),
            &[script, &base, &token, &study, codes_file.to_str().unwrap()],
        )
        .await;
        assert!(ok, "fhir_check.py: {out}");
        let summary: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
            .unwrap_or_else(|_| panic!("{out}"));
        for rt in [
            "CapabilityStatement",
            "Bundle",
            "DiagnosticReport",
            "Observation",
            "ImagingStudy",
            "Patient",
            "Device",
            "OperationOutcome",
        ] {
            assert!(
                summary["validated"][rt].as_i64().unwrap_or(0) > 0,
                "{rt} not validated: {out}"
            );
        }
        assert_eq!(summary["fhirclient_observations"], observations, "{out}");
        println!("fhir_check: {out}");
    }

    // Reprocess: version 2 is current; version 1 stays readable as entered-in-error.
    let resp = app
        .client()
        .post(app.url(&format!("/v1/studies/{study}/reprocess")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    app.wait_result(&study, 2).await;
    let (_, old) = fhir_get(&app, &format!("/fhir/DiagnosticReport/{rid}")).await;
    assert_eq!(old["status"], "entered-in-error", "{old}");
    assert!(old["conclusion"].as_str().unwrap().contains("Superseded"));
    let (_, cur) = fhir_get(
        &app,
        &format!("/fhir/DiagnosticReport?identifier={ident}&status=final"),
    )
    .await;
    assert_eq!(cur["total"], 1);
    assert_eq!(
        cur["entry"][0]["resource"]["identifier"][1]["value"],
        format!("{study}/v2")
    );
    let (_, all) = fhir_get(&app, &format!("/fhir/DiagnosticReport?identifier={ident}")).await;
    assert_eq!(all["total"], 2);

    // Patient data reads are audited.
    assert!(
        app.count("SELECT COUNT(*) FROM audit_log WHERE action LIKE 'fhir.%'")
            .await
            >= 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_resources_validate_and_search_on_sqlite() {
    flow(Db::Sqlite, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_searches_on_postgres() {
    flow(Db::Postgres, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preliminary_status_from_config_and_metadata_lists_the_search_params() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.fhir.report_status = radstream::fhir::ReportStatus::Preliminary;
        s.fhir.base_url = Some("https://node.example/fhir/".into());
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let study = study_with_result(&app, dir.path()).await;
    let (_, b) = fhir_get(&app, "/fhir/DiagnosticReport?status=preliminary").await;
    assert_eq!(b["total"], 1, "{b}");
    assert_eq!(
        b["entry"][0]["resource"]["imagingStudy"][0]["reference"],
        format!("ImagingStudy/{study}")
    );
    assert!(b["entry"][0]["fullUrl"]
        .as_str()
        .unwrap()
        .starts_with("https://node.example/fhir/DiagnosticReport/rs-"));
    let (_, cap) = fhir_get(&app, "/fhir/metadata").await;
    let dr = cap["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "DiagnosticReport")
        .unwrap();
    let names: Vec<&str> = dr["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "patient",
            "subject",
            "identifier",
            "date",
            "status",
            "_count",
            "_offset"
        ]
    );
    // Without a credential: the auth layer's 401.
    let resp = reqwest::get(app.url("/fhir/metadata")).await.unwrap();
    assert_eq!(resp.status(), 401);
}
