//! deploy/: the container image, compose files, Helm chart and systemd unit, checked with what
//! these machines have (no container engine, no cluster): `deploy/check.sh` renders the chart
//! with Helm's own engine and validates it against the Kubernetes schemas, lints the Dockerfile,
//! resolves the compose files and verifies the unit; the real binary then loads every
//! deployment's settings, and the image's health check script probes a real node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn check_sh(out: &Path, binary: Option<&Path>) -> Output {
    let mut cmd = Command::new(repo().join("deploy/check.sh"));
    cmd.arg(out);
    // Settings of the environment running the test must not leak into the checked ones.
    for (k, _) in std::env::vars() {
        if k.starts_with("RADSTREAM_") {
            cmd.env_remove(k);
        }
    }
    if let Some(b) = binary {
        cmd.env("RADSTREAM_BIN", b);
    }
    cmd.output().expect("run deploy/check.sh")
}

fn report(what: &str, out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{what}:\n{text}");
    text
}

/// Chart (render, lint, Kubernetes schemas), Dockerfile (hadolint), compose (Compose CLI) and
/// systemd unit (systemd-analyze) all pass.
#[test]
fn deploy_files_pass_their_checks() {
    let out = tempfile::tempdir().unwrap();
    let run = check_sh(out.path(), None);
    let text = report("deploy/check.sh", &run);
    assert!(run.status.success(), "deploy/check.sh failed:\n{text}");
    if out.path().join("skipped").exists() {
        println!("\n*** SKIP: some deploy checks did not run (tool missing): see above ***\n");
    }
    for rendered in ["helm-minimal.yaml", "helm-gpu-loadbalancer.yaml"] {
        let manifests = std::fs::read_to_string(out.path().join(rendered)).unwrap();
        assert!(manifests.contains("kind: Deployment"), "{rendered}");
    }
}

/// Every RADSTREAM_* variable and site TOML in the chart, the compose files, the image and the
/// systemd unit is a setting the node knows, with a value it accepts, and `config check` prints
/// none of their secrets.
#[test]
fn deployment_settings_are_settings_the_node_knows() {
    let out = tempfile::tempdir().unwrap();
    let run = check_sh(out.path(), Some(Path::new(env!("CARGO_BIN_EXE_radstream"))));
    let text = report("deploy/check.sh with RADSTREAM_BIN", &run);
    assert!(run.status.success(), "deploy/check.sh failed:\n{text}");
    assert!(
        text.contains("settings helm gpu-loadbalancer rs-radstream-worker: accepted"),
        "{text}"
    );
    assert!(
        text.contains("settings compose compose.yaml radstream-ingest: accepted"),
        "{text}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The versioned ONNX Runtime library of the project's .venv (scripts/setup.sh).
fn venv_onnxruntime() -> PathBuf {
    let lib = repo().join(".venv/lib");
    let capi = std::fs::read_dir(&lib)
        .expect(".venv/lib: run scripts/setup.sh")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/onnxruntime/capi"))
        .find(|p| p.is_dir())
        .expect("onnxruntime in .venv");
    std::fs::read_dir(&capi)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("libonnxruntime.so.") && name.matches('.').count() == 4
        })
        .expect("libonnxruntime.so.X.Y.Z in the wheel")
}

/// The image's health check (deploy/docker/healthcheck.sh) against `port` and `path`.
fn healthcheck(port: u16, path: &str) -> Output {
    Command::new(repo().join("deploy/docker/healthcheck.sh"))
        .arg(path)
        .env("RADSTREAM_HTTP__PORT", port.to_string())
        .output()
        .expect("run healthcheck.sh")
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The image's layout and probes on a real node: ONNX Runtime loaded through the unversioned
/// `lib/libonnxruntime.so` link the image makes (inference.ort_dylib_path), liveness `/ping` and
/// readiness `/health` answered 200 without a credential (what the Kubernetes probes and the
/// compose health checks use), a credentialed route refused, and a stopped node reported down.
#[test]
fn container_health_check_probes_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::os::unix::fs::symlink(venv_onnxruntime(), lib.join("libonnxruntime.so")).unwrap();
    let (dicom_port, http_port) = (free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_radstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RADSTREAM_") || k == "ORT_DYLIB_PATH" {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .arg("serve")
        .current_dir(repo())
        .env("RADSTREAM_STORAGE__DATA_DIR", dir.path().join("data"))
        .env("RADSTREAM_STORAGE__MIN_FREE_BYTES", "0")
        .env("RADSTREAM_STORAGE__MIN_FREE_PERCENT", "0")
        .env("RADSTREAM_DICOM__HOST", "127.0.0.1")
        .env("RADSTREAM_DICOM__PORT", dicom_port.to_string())
        .env("RADSTREAM_HTTP__PORT", http_port.to_string())
        .env("RADSTREAM_INFERENCE__MODELS_DIR", repo().join("models"))
        .env("RADSTREAM_INFERENCE__MODELS", r#"["cxr-demo"]"#)
        .env(
            "RADSTREAM_INFERENCE__ORT_DYLIB_PATH",
            lib.join("libonnxruntime.so"),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start radstream serve");
    let mut node = Node(child);
    let node_log = || std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthcheck(http_port, "/ping").status.success() {
        if let Some(status) = node.0.try_wait().unwrap() {
            panic!(
                "the node exited ({status}) before /ping answered:\n{}",
                node_log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "/ping not answered in 60 s:\n{}",
            node_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = healthcheck(http_port, "/health");
    assert!(
        ready.status.success(),
        "/health (readiness, no credential) is not 200: {}\n{}",
        String::from_utf8_lossy(&ready.stderr),
        node_log()
    );
    let refused = healthcheck(http_port, "/v1/studies");
    assert!(!refused.status.success(), "a credentialed route passed");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("401"), "expected 401 for /v1/studies: {said}");

    node.0.kill().unwrap();
    node.0.wait().unwrap();
    assert!(
        !healthcheck(http_port, "/ping").status.success(),
        "a stopped node was reported healthy"
    );
}
