//! The command line as a user types it.

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
