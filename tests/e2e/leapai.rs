//! LeapAI CXR API contract: a client written from its document (JSON bodies with bearer JWT,
//! reading Result/Data/Message) works unchanged; one check per row of its error tables; paths
//! confined to the configured roots.

use std::path::{Path, PathBuf};

use radstream::auth::Scope;
use serde_json::{json, Value};

use crate::helpers::*;

struct Setup {
    app: TestApp,
    token: String,
    input: PathBuf,
    output: PathBuf,
    outside: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    let outside = dir.path().join("outside");
    for d in [&input, &output, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    std::fs::copy(
        fixtures.join("dicom/cr_cardiomegaly/001.dcm"),
        input.join("cardio.dcm"),
    )
    .unwrap();
    std::fs::copy(
        fixtures.join("dicom/dx_normal/001.dcm"),
        input.join("normal.dcm"),
    )
    .unwrap();
    std::fs::copy(
        fixtures.join("images/cxr_normal.png"),
        input.join("image.png"),
    )
    .unwrap();
    std::fs::write(input.join("garbage.dcm"), b"not a dicom file at all").unwrap();
    std::fs::copy(
        fixtures.join("dicom/dx_normal/002.dcm"),
        outside.join("secret.dcm"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.join("secret.dcm"), input.join("link.dcm")).unwrap();
    std::fs::create_dir_all(input.join("empty")).unwrap();
    let (i, o) = (input.clone(), output.clone());
    let app = TestApp::spawn_with(Db::Sqlite, move |s| {
        s.compat.input_roots = vec![i];
        s.compat.output_roots = vec![o];
    })
    .await;
    let token = app.token(&[Scope::InferenceWrite]);
    Setup {
        app,
        token,
        input,
        output,
        outside,
        _dir: dir,
    }
}

async fn post(s: &Setup, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(s.app.url(path))
        .bearer_auth(&s.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_inference_success_as_documented() {
    let s = setup().await;
    let (status, body) = post(
        &s,
        "/single_inference",
        json!({"input_image_path": p(&s.input.join("cardio.dcm")), "save_to_disk": true, "output_folder_path": p(&s.output.join("run1"))}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Result"], "Success");
    assert!(body["Message"].is_string());
    let findings = body["Data"]["findings"].as_array().unwrap();
    let names: Vec<&str> = findings
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Tuberculosis",
            "Cardiomegaly",
            "Pleural Thickening",
            "Pleural Effusion",
            "Pneumothorax",
            "Consolidation",
            "Atelectasis",
            "Nodule/Mass",
            "Fibrosis",
            "Infiltration",
            "Calcification"
        ]
    );
    for f in findings {
        assert!(f["presence"].is_boolean());
        let c = f["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
    }
    let cardio = findings
        .iter()
        .find(|f| f["name"] == "Cardiomegaly")
        .unwrap();
    assert_eq!(cardio["presence"], true);
    let meta = &body["Data"]["metadata"];
    for k in [
        "model_version",
        "patient_id",
        "patient_name",
        "sop_instance_uid",
        "age",
        "sex",
    ] {
        assert!(meta[k].is_string(), "metadata.{k}: {meta}");
    }
    assert!(meta["patient_id"].as_str().unwrap().starts_with("SYN"));
    // The result file was written under the output folder.
    let file = body["Data"]["output_file"].as_str().unwrap();
    assert!(file.starts_with(&p(&s.output)));
    let saved: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(saved["metadata"], *meta);

    // patient_id from the request wins over the DICOM tag; no file without save_to_disk.
    let (status, body) = post(
        &s,
        "/single_inference",
        json!({"input_image_path": p(&s.input.join("normal.dcm")), "save_to_disk": false, "patient_id": "REQ-42"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["Data"]["metadata"]["patient_id"], "REQ-42");
    assert!(body["Data"].get("output_file").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_inference_error_table_verbatim() {
    let s = setup().await;
    // Nesting that overflowed the parser's stack is refused like any unreadable file.
    std::fs::write(
        s.input.join("deep.dcm"),
        crate::integrity::deeply_nested_dx(&s.outside),
    )
    .unwrap();
    let ok = p(&s.input.join("cardio.dcm"));
    let missing = p(&s.input.join("nope.dcm"));
    let secret = p(&s.outside.join("secret.dcm"));
    let dotdot = format!("{}/../outside/secret.dcm", p(&s.input));
    let cases: Vec<(Value, u16, String)> = vec![
        (
            json!({"save_to_disk": false}),
            400,
            "input_image_path is required in the request".into(),
        ),
        (
            json!({"input_image_path": ok}),
            400,
            "save_to_disk is required in the request".into(),
        ),
        (
            json!({"input_image_path": 17, "save_to_disk": false}),
            400,
            "Invalid path input_image_path: 17".into(),
        ),
        (
            json!({"input_image_path": "relative/x.dcm", "save_to_disk": false}),
            400,
            "Invalid path input_image_path: relative/x.dcm".into(),
        ),
        (
            json!({"input_image_path": secret, "save_to_disk": false}),
            400,
            format!("Invalid path input_image_path: {secret}"),
        ),
        (
            json!({"input_image_path": dotdot, "save_to_disk": false}),
            400,
            format!("Invalid path input_image_path: {dotdot}"),
        ),
        (
            json!({"input_image_path": p(&s.input.join("link.dcm")), "save_to_disk": false}),
            400,
            format!(
                "Invalid path input_image_path: {}",
                p(&s.input.join("link.dcm"))
            ),
        ),
        (
            json!({"input_image_path": missing, "save_to_disk": false}),
            400,
            format!("Input image path does not exist: {missing}"),
        ),
        (
            json!({"input_image_path": p(&s.input.join("image.png")), "save_to_disk": false}),
            400,
            format!(
                "Requested image is not a DICOM file: {}",
                p(&s.input.join("image.png"))
            ),
        ),
        (
            json!({"input_image_path": p(&s.input.join("garbage.dcm")), "save_to_disk": false}),
            400,
            format!(
                "Invalid DICOM image, unable to fetch patient ID: {}",
                p(&s.input.join("garbage.dcm"))
            ),
        ),
        (
            json!({"input_image_path": p(&s.input.join("deep.dcm")), "save_to_disk": false}),
            400,
            format!(
                "Invalid DICOM image, unable to fetch patient ID: {}",
                p(&s.input.join("deep.dcm"))
            ),
        ),
        (
            json!({"input_image_path": ok, "save_to_disk": false, "patient_id": ""}),
            400,
            "Invalid patient_id: '' in request body".into(),
        ),
        (
            json!({"input_image_path": ok, "save_to_disk": "yes"}),
            400,
            "Invalid value for save_to_disk, should be a boolean: yes".into(),
        ),
        (
            json!({"input_image_path": ok, "save_to_disk": true}),
            400,
            "output_folder_path is required in the request when save_to_disk is True".into(),
        ),
        (
            json!({"input_image_path": ok, "save_to_disk": true, "output_folder_path": p(&s.outside.join("x"))}),
            400,
            format!(
                "Invalid path output_folder_path: {}",
                p(&s.outside.join("x"))
            ),
        ),
    ];
    for (body, status, message) in cases {
        let (got, answer) = post(&s, "/single_inference", body.clone()).await;
        assert_eq!(
            (got, answer["Message"].as_str().unwrap_or("")),
            (status, message.as_str()),
            "{body}"
        );
        assert_eq!(answer["Result"], "Failure");
        assert_eq!(answer["Data"], Value::Null);
    }
    // Nothing outside the roots was written.
    assert!(!s.outside.join("x").exists());

    // 415: the body is not JSON.
    let resp = reqwest::Client::new()
        .post(s.app.url("/single_inference"))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["Result"], "Failure");

    // 500: the output folder cannot be created (a file is in the way).
    std::fs::write(s.output.join("blocked"), b"file").unwrap();
    let target = p(&s.output.join("blocked/sub"));
    let (status, body) = post(
        &s,
        "/single_inference",
        json!({"input_image_path": ok, "save_to_disk": true, "output_folder_path": target}),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        body["Message"],
        format!("Unable to create output folder: {target}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_messages_in_the_leapai_envelope() {
    let s = setup().await;
    let body = json!({"input_image_path": p(&s.input.join("cardio.dcm")), "save_to_disk": false});
    let client = reqwest::Client::new();
    let expired = s.app.expired_token(&[Scope::InferenceWrite]);
    for (auth, message) in [
        (None, "Token missing"),
        (
            Some("Bearer garbage.token.here".to_string()),
            "Invalid token",
        ),
        (Some(format!("Bearer {expired}")), "Token expired"),
    ] {
        let mut req = client.post(s.app.url("/single_inference")).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let b: Value = resp.json().await.unwrap();
        assert_eq!(
            b,
            json!({"Result": "Failure", "Data": null, "Message": message})
        );
    }
    // /ping is open.
    let ping: Value = reqwest::get(s.app.url("/ping"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping, json!({"status": "ok"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_inference_runs_as_a_job_with_progress_events() {
    let s = setup().await;
    let reader = s.app.token(&[Scope::ResultsRead]);
    let mut sse = SseClient::open(
        &s.app,
        "/v1/events?type=bulk.progress,bulk.completed",
        &reader,
        None,
    )
    .await;
    let out = s.output.join("bulk");
    let (status, body) = post(
        &s,
        "/bulk_inference",
        json!({"input_folder_path": p(&s.input), "output_folder_path": p(&out)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Result"], "Success");
    assert_eq!(body["Data"], Value::Null);
    // cardio, normal, garbage (the symlink out of the root is skipped).
    let mut progress = Vec::new();
    let done = loop {
        let m = sse.next(60).await.expect("events");
        if m.event == "bulk.completed" {
            break m;
        }
        progress.push(m);
    };
    assert_eq!(progress.len(), 3, "{progress:?}");
    assert_eq!(done.data["data"]["total"], 3);
    assert_eq!(done.data["data"]["succeeded"], 2);
    assert_eq!(done.data["data"]["failed"], 1);
    assert!(out.join("cardio.json").is_file());
    assert!(out.join("normal.json").is_file());
    assert!(!progress.iter().any(|m| m.data["data"]["file"]
        .as_str()
        .unwrap_or("")
        .contains("secret")));

    for (body, message) in [
        (
            json!({"output_folder_path": p(&out)}),
            "input_folder_path is required in the request".to_string(),
        ),
        (
            json!({"input_folder_path": p(&s.input)}),
            "output_folder_path is required in the request".to_string(),
        ),
        (
            json!({"input_folder_path": p(&s.outside), "output_folder_path": p(&out)}),
            format!("Invalid path input_folder_path: {}", p(&s.outside)),
        ),
        (
            json!({"input_folder_path": p(&s.input.join("gone")), "output_folder_path": p(&out)}),
            format!(
                "Input folder path does not exist: {}",
                p(&s.input.join("gone"))
            ),
        ),
        (
            json!({"input_folder_path": p(&s.input.join("empty")), "output_folder_path": p(&out)}),
            "No Dicom images found in the provided path".to_string(),
        ),
    ] {
        let (status, answer) = post(&s, "/bulk_inference", body.clone()).await;
        assert_eq!(
            (status, answer["Message"].as_str().unwrap_or("")),
            (400, message.as_str()),
            "{body}"
        );
    }
}

/// A symlink already sitting at a result file's name (planted by someone who can write in the
/// output root) is replaced, never written through: the file it points to outside the root
/// stays unchanged, for single and bulk inference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_files_never_write_through_a_planted_symlink() {
    let s = setup().await;
    let victim = s.outside.join("victim.json");
    std::fs::write(&victim, b"precious").unwrap();
    let plant = |dir: &Path, name: &str| {
        std::fs::create_dir_all(dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(name)).unwrap();
    };
    let sop = dicom_object::open_file(s.input.join("cardio.dcm"))
        .unwrap()
        .element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    let single = s.output.join("single");
    plant(&single, &format!("{sop}.json"));
    let (status, body) = post(
        &s,
        "/single_inference",
        json!({"input_image_path": p(&s.input.join("cardio.dcm")), "save_to_disk": true, "output_folder_path": p(&single)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let file = PathBuf::from(body["Data"]["output_file"].as_str().unwrap());
    assert_eq!(file, single.join(format!("{sop}.json")));
    assert!(!std::fs::symlink_metadata(&file).unwrap().is_symlink());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    let reader = s.app.token(&[Scope::ResultsRead]);
    let mut sse = SseClient::open(&s.app, "/v1/events?type=bulk.completed", &reader, None).await;
    let bulk = s.output.join("bulk");
    plant(&bulk, "cardio.json");
    let (status, body) = post(
        &s,
        "/bulk_inference",
        json!({"input_folder_path": p(&s.input), "output_folder_path": p(&bulk)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let done = sse.next(60).await.expect("bulk.completed");
    assert_eq!(done.data["data"]["succeeded"], 2, "{:?}", done.data);
    assert!(!std::fs::symlink_metadata(bulk.join("cardio.json"))
        .unwrap()
        .is_symlink());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(bulk.join("cardio.json")).unwrap()).unwrap();
    assert!(saved["findings"].is_array());
}
