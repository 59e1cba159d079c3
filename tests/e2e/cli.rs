//! The command line as a user types it.

use std::path::Path;
use std::time::Duration;

use crate::helpers::*;

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_redacted() {
    let out = std::process::Command::new(radstream_bin())
        .args(["config", "check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "RADSTREAM_DATABASE__URL",
            "postgres://radstream:s3cret-pw@db.example/radstream",
        )
        .env("RADSTREAM_DICOM__PORT", "104")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("port = 104"), "{stdout}");
    assert!(!stdout.contains("s3cret-pw"), "password leaked: {stdout}");
    assert!(stdout.contains("[redacted]"), "{stdout}");
}

#[test]
fn config_check_names_the_bad_field_and_exits_non_zero() {
    for (key, value, expect) in [
        (
            "RADSTREAM_DICOM__AE_TITLE",
            "MUCH-TOO-LONG-AE-TITLE",
            "dicom.ae_title",
        ),
        ("RADSTREAM_DICOM__PORT", "not-a-port", "port"),
        ("RADSTREAM_STORAGE__DURABILITY", "maybe", "durability"),
    ] {
        let out = std::process::Command::new(radstream_bin())
            .args(["config", "check"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env(key, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key}={value} was accepted");
        assert!(stderr.contains(expect), "{key}: {stderr}");
    }
}

#[test]
fn unknown_keys_in_a_config_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[dicom]\nprot = 104\n").unwrap();
    let out = std::process::Command::new(radstream_bin())
        .args(["config", "check", "--config", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prot"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_studies_commands_work_against_a_node() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let (ok, out) = run_async(
        radstream_bin().to_str().unwrap(),
        &["echo", &app.dicom.to_string(), "--called-ae", "RADSTREAM"],
    )
    .await;
    assert!(ok && out.contains("status 0000"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_health_answer_and_the_node_stops_gracefully() {
    let mut app = TestApp::spawn(Db::Sqlite).await;
    let ping: serde_json::Value = reqwest::get(app.url("/ping"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping, serde_json::json!({"status": "ok"}));
    let health = reqwest::get(app.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["database"]["status"], "up");
    assert_eq!(body["dicom"]["ae_title"], "RADSTREAM");
    app.stop().await;
    assert!(
        reqwest::get(app.url("/ping")).await.is_err(),
        "still serving after stop"
    );
}

#[test]
fn relative_paths_in_a_config_file_resolve_against_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let f = etc.join("node.toml");
    std::fs::write(
        &f,
        "[storage]\ndata_dir = \"data\"\n[inference]\nmodels_dir = \"../models\"\n",
    )
    .unwrap();
    // Started elsewhere (the repository, whose config/radstream.toml is the base below it).
    let out = std::process::Command::new(radstream_bin())
        .args(["config", "check", "--config", f.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [etc.join("data"), etc.join("../models")] {
        assert!(
            stdout.contains(&format!("{:?}", expected.display().to_string())),
            "{} not in {stdout}",
            expected.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_its_paths_and_configuration_without_colour_codes_when_piped() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let f = etc.join("node.toml");
    std::fs::write(
        &f,
        "[dicom]\nhost = \"127.0.0.1\"\nport = 0\n[http]\nport = 0\n\
         [storage]\ndata_dir = \"data\"\nmin_free_bytes = 0\nmin_free_percent = 0.0\n",
    )
    .unwrap();
    let mut node = tokio::process::Command::new(radstream_bin())
        .args(["serve", "--config", f.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env("RADSTREAM_LOG__LEVEL", "info")
        .env("RADSTREAM_AUTH__JWT_SECRET", TEST_JWT_SECRET)
        .env(
            "RADSTREAM_INFERENCE__MODELS_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(node.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if line.contains("radstream ready") {
                break;
            }
        }
    })
    .await;
    let _ = node.kill().await;
    assert!(read.is_ok() && log.contains("radstream ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log:?}"
    );
    assert!(log.contains("paths in force"), "{log}");
    assert!(
        log.contains(&etc.join("data").display().to_string()),
        "the data folder beside the config file: {log}"
    );
    assert!(log.contains("effective configuration"), "{log}");
    assert!(!log.contains(TEST_JWT_SECRET), "secret logged: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_echo_call_the_nodes_own_ae_title_by_default() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let addr = format!("127.0.0.1:{}", app.dicom_port());
    let file = fixture("dicom/dx_normal/001.dcm");
    // HOST:PORT: the called AE is dicom.ae_title (RADSTREAM), which the node answers to.
    let (ok, out, err) = app.cli(&["send", &addr, file.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = app.cli(&["echo", &addr]).await;
    assert!(ok && out.contains("status 0000"), "{out}{err}");
    // AE@HOST:PORT names the called AE: the right one passes, another is refused.
    let (ok, out, err) = app.cli(&["echo", &format!("RADSTREAM@{addr}")]).await;
    assert!(ok && out.contains("status 0000"), "{out}{err}");
    let (ok, _, err) = app.cli(&["echo", &format!("OTHER@{addr}")]).await;
    assert!(!ok, "called AE OTHER was accepted: {err}");
    let (ok, _, err) = app
        .cli(&["echo", &format!("OTHER@{addr}"), "--called-ae", "RADSTREAM"])
        .await;
    assert!(!ok && err.contains("--called-ae"), "{err}");
    // The default follows the configuration.
    let out = std::process::Command::new(radstream_bin())
        .args(["echo", &addr])
        .current_dir(app.data_dir.parent().unwrap())
        .env("RADSTREAM_DICOM__AE_TITLE", "ELSEWHERE")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "called AE ELSEWHERE was accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn segment_names_the_file_and_the_task_when_the_model_does_not_segment() {
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/cxr_normal.png");
    for args in [vec!["segment"], vec!["segment", "--model", "ctr-demo"]] {
        let out = std::process::Command::new(radstream_bin())
            .args(&args)
            .arg(&image)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RADSTREAM_LOG__LEVEL", "warn")
            .env("RADSTREAM_INFERENCE__MODELS", r#"["cxr-demo","ctr-demo"]"#)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr.contains("cxr_normal.png"), "{args:?}: {stderr}");
        assert!(stderr.contains("segmentation"), "{args:?}: {stderr}");
    }
}
