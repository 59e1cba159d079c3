//! The landmark ensemble `ctr-demo` end to end: held-out phantom fixtures (PNG and DICOM)
//! give landmarks near the generator's ground truth and a cardiothoracic ratio on the right
//! side of 0.5; non-radiographs are rejected by the gate; Rust's ONNX Runtime outputs equal
//! Python onnxruntime's for a member; the default model stays the classifier; the CLI prints
//! the landmark result.
//!
//! Fixtures: `fixtures/landmarks/` (`tools/fixtures/make_fixtures.py --preset landmarks`,
//! seeds outside the training, validation and test splits of
//! `tools/train/train_landmarks.py`).

use radstream::inference::{
    Engine, InferenceError, InferenceSettings, LandmarkResult, LandmarkStatus,
    LANDMARK_REJECTED_REASON,
};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

use crate::helpers::radstream_bin;

/// Largest distance (normalised image units) allowed between a predicted landmark and the
/// ground truth on a fixture: 0.04 = 10 px at the model's 256 px input. On the held-out test
/// set the mean is 0.011 and the 95th percentile 0.028 (models/README.md).
const MAX_POINT_ERROR: f32 = 0.04;
/// Largest CTR error allowed on a fixture (held-out: mean 0.0065, 95th percentile 0.019).
const MAX_CTR_ERROR: f32 = 0.03;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn engine() -> Engine {
    Engine::load(&InferenceSettings {
        models_dir: root().join("models"),
        ..InferenceSettings::default()
    })
    .expect("load the shipped models")
}

fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/landmarks").join(name)
}

fn truth(name: &str) -> Value {
    let all: Value =
        serde_json::from_slice(&std::fs::read(fixture("ground_truth.json")).unwrap()).unwrap();
    all[name].clone()
}

/// Checks a prediction against the fixture's ground truth; returns (worst point error, CTR).
fn check_against_truth(name: &str, r: &LandmarkResult) -> (f32, f32) {
    assert_eq!(r.status, LandmarkStatus::Predicted, "{name}: {r:?}");
    let t = truth(name);
    let points = t["landmarks"].as_array().unwrap();
    assert_eq!(r.landmarks.len(), points.len(), "{name}");
    let mut worst = 0.0f32;
    for (p, want) in r.landmarks.iter().zip(points) {
        assert_eq!(p.class, want["class"].as_str().unwrap(), "{name}: order");
        let dx = p.x - want["x"].as_f64().unwrap() as f32;
        let dy = p.y - want["y"].as_f64().unwrap() as f32;
        let d = (dx * dx + dy * dy).sqrt();
        assert!(
            d <= MAX_POINT_ERROR,
            "{name}: {} is {d:.4} from the truth ({p:?} vs {want})",
            p.class
        );
        worst = worst.max(d);
    }
    let ctr = r.measurement.as_ref().expect("a CTR");
    let true_ctr = t["ctr"].as_f64().unwrap() as f32;
    assert!(
        (ctr.ratio - true_ctr).abs() <= MAX_CTR_ERROR,
        "{name}: CTR {} vs true {true_ctr}",
        ctr.ratio
    );
    let cardiomegaly = t["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "cardiomegaly");
    assert_eq!(true_ctr > 0.5, cardiomegaly, "{name}: the phantom itself");
    assert_eq!(
        ctr.enlarged, cardiomegaly,
        "{name}: CTR {} on the wrong side of 0.5",
        ctr.ratio
    );
    assert_eq!(ctr.normal_below, 0.5);
    (worst, ctr.ratio)
}

fn check_shape(r: &LandmarkResult) {
    assert_eq!(r.model_id, "ctr-demo");
    assert!(r.not_for_clinical_use);
    assert_eq!(r.member_landmarks.len(), 5);
    for member in &r.member_landmarks {
        assert_eq!(member.len(), r.landmarks.len());
    }
    // the ensemble point is the members' mean
    for (k, p) in r.landmarks.iter().enumerate() {
        let mx = r.member_landmarks.iter().map(|m| m[k].x).sum::<f32>() / 5.0;
        let my = r.member_landmarks.iter().map(|m| m[k].y).sum::<f32>() / 5.0;
        assert!((p.x - mx).abs() < 1e-5 && (p.y - my).abs() < 1e-5, "{p:?}");
    }
    let spread = r.spread.unwrap();
    assert!(spread > 0.0 && spread < 0.05, "spread {spread}");
    assert!(r.tier.is_some());
    assert!(r.gate_probability.unwrap() >= 0.5);
    assert!(r.timings_ms.total_ms >= r.timings_ms.inference_ms);
}

#[tokio::test]
async fn held_out_phantom_pngs_give_landmarks_and_ctr() {
    let engine = engine();
    for name in ["cxr_normal.png", "cxr_cardiomegaly.png"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let r = engine.infer_landmarks_bytes(None, &bytes).await.unwrap();
        check_shape(&r);
        assert_eq!((r.image_width, r.image_height), (320, 320));
        let (worst, ctr) = check_against_truth(name, &r);
        eprintln!(
            "{name}: worst point error {worst:.4}, CTR {ctr:.3}, spread {:.4}",
            r.spread.unwrap()
        );
        serde_json::to_string(&r).unwrap();
    }
}

#[tokio::test]
async fn held_out_phantom_dicoms_give_landmarks_and_ctr() {
    let engine = engine();
    // DX MONOCHROME2 and CR MONOCHROME1, 320 x 352 (not square)
    for name in ["dx_normal.dcm", "cr_cardiomegaly.dcm"] {
        let r = engine
            .infer_landmarks_dicom(Some("ctr-demo"), &fixture(name))
            .await
            .unwrap();
        check_shape(&r);
        assert_eq!((r.image_width, r.image_height), (320, 352));
        let (worst, ctr) = check_against_truth(name, &r);
        eprintln!("{name}: worst point error {worst:.4}, CTR {ctr:.3}");
    }
}

#[tokio::test]
async fn non_radiographs_are_rejected() {
    let engine = engine();
    let images = root().join("fixtures/images");
    for name in ["ct_slice.png", "ultrasound.png", "photo.jpg"] {
        let bytes = std::fs::read(images.join(name)).unwrap();
        let r = engine.infer_landmarks_bytes(None, &bytes).await.unwrap();
        let LandmarkStatus::Rejected {
            reason,
            classifier_confidence,
        } = &r.status
        else {
            panic!("{name} was not rejected: {r:?}");
        };
        assert_eq!(reason, LANDMARK_REJECTED_REASON);
        assert!(
            *classifier_confidence > 0.5 && *classifier_confidence <= 1.0,
            "{name}: {classifier_confidence}"
        );
        if let Some(p) = r.gate_probability {
            assert!((classifier_confidence - (1.0 - p)).abs() < 1e-6);
        }
        assert!(r.landmarks.is_empty() && r.member_landmarks.is_empty());
        assert!(r.spread.is_none() && r.tier.is_none() && r.measurement.is_none());
    }
    // A CT DICOM does not pass the header rules: no model runs.
    let ct = root().join("fixtures/dicom/ts_implicit");
    let ct_file = std::fs::read_dir(&ct)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("ct.dcm");
    let out = Command::new(root().join(".venv/bin/python3"))
        .args([
            "-c",
            "import sys, pydicom; d = pydicom.dcmread(sys.argv[1]); d.Modality = 'CT'; d.save_as(sys.argv[2])",
            ct_file.to_str().unwrap(),
            changed.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = engine.infer_landmarks_dicom(None, &changed).await.unwrap();
    match &r.status {
        LandmarkStatus::NotApplicable { reason } => assert!(reason.contains("CT"), "{reason}"),
        other => panic!("a CT was analysed: {other:?}"),
    }
}

#[tokio::test]
async fn rust_member_outputs_equal_python_onnxruntime() {
    let engine = engine();
    let mut tensor = Vec::new();
    for name in ["cxr_normal.png", "cxr_cardiomegaly.png"] {
        let pre = engine
            .preprocess_image(Some("ctr-demo"), &std::fs::read(fixture(name)).unwrap())
            .unwrap();
        tensor.extend(pre.tensor);
    }
    let raw = engine
        .run_tensor(Some("ctr-demo"), tensor.clone(), 2)
        .await
        .unwrap();
    assert_eq!(raw.members.len(), 5);
    assert_eq!(raw.members[0].len(), 2 * 12);

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.f32");
    let output = dir.path().join("member0.f32");
    let bytes: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&input, bytes).unwrap();
    let script = "import sys, numpy as np, onnxruntime as ort\n\
        x = np.fromfile(sys.argv[2], '<f4').reshape(2, 1, 256, 256)\n\
        s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
        s.run(['landmarks'], {'image': x})[0].astype('<f4').tofile(sys.argv[3])\n";
    let out = Command::new(root().join(".venv/bin/python3"))
        .args([
            "-c",
            script,
            root()
                .join("models/ctr-demo/member0.onnx")
                .to_str()
                .unwrap(),
            input.to_str().unwrap(),
            output.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python: Vec<f32> = std::fs::read(&output)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(python.len(), raw.members[0].len());
    for (i, (r, p)) in raw.members[0].iter().zip(&python).enumerate() {
        assert!((r - p).abs() <= 1e-5, "output {i}: rust {r} vs python {p}");
    }
}

#[tokio::test]
async fn default_model_stays_the_classifier() {
    let engine = engine();
    assert_eq!(engine.manifest(None).unwrap().id, "cxr-demo");
    assert_eq!(engine.landmark_manifest(None).unwrap().id, "ctr-demo");
    let models = engine.landmark_models();
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!(m.task, "landmark-regression");
    assert_eq!(m.members.len(), 5);
    assert!(m.gate.is_some());
    assert_eq!(m.provider, "cpu");
    let classes: Vec<&str> = m.landmarks.iter().map(|l| l.class.as_str()).collect();
    assert_eq!(
        classes,
        [
            "heart_right",
            "heart_left",
            "thorax_right",
            "thorax_left",
            "heart_top",
            "heart_bottom"
        ]
    );
    assert!(engine.models().iter().any(|m| m.id == "cxr-demo"));

    let png = std::fs::read(fixture("cxr_normal.png")).unwrap();
    let r = engine.infer_image_bytes(None, &png).await.unwrap();
    assert_eq!(r.model_id, "cxr-demo");
    for wrong in [
        engine
            .infer_image_bytes(Some("ctr-demo"), &png)
            .await
            .unwrap_err(),
        engine.manifest(Some("ctr-demo")).unwrap_err(),
        engine
            .infer_landmarks_bytes(Some("cxr-demo"), &png)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(wrong, InferenceError::WrongTask { .. }),
            "{wrong:?}"
        );
        assert!(wrong.is_input_error());
    }
}

#[test]
fn cli_infer_prints_the_landmark_result() {
    let out = Command::new(radstream_bin())
        .args(["infer", "--model", "ctr-demo"])
        .arg(fixture("cxr_cardiomegaly.png"))
        .arg(fixture("cr_cardiomegaly.dcm"))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let r = &l["result"];
        assert_eq!(r["model_id"], "ctr-demo");
        assert_eq!(r["status"]["kind"], "predicted");
        assert_eq!(r["landmarks"].as_array().unwrap().len(), 6);
        assert_eq!(r["measurement"]["enlarged"], true, "{r}");
        assert!(r["spread"].as_f64().is_some());
    }

    let out = Command::new(radstream_bin())
        .arg("models")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success());
    let models: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ctr = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "ctr-demo")
        .expect("ctr-demo listed");
    assert_eq!(ctr["validation"]["status"], "synthetic-only");
    assert_eq!(ctr["members"].as_array().unwrap().len(), 5);
    assert_eq!(ctr["provider"], "cpu");
    assert_eq!(ctr["landmarks"].as_array().unwrap().len(), 6);
}
