//! Inference engine, end to end: ONNX Runtime parity with Python, decoder parity with pydicom,
//! batching, gate, header rules, CUDA fallback, corrupt input, and (when the demo models
//! exist) the demo ensemble on the phantom fixtures.
//!
//! Needs the project venv (`python3 -m venv .venv && .venv/bin/pip install -r
//! scripts/requirements.txt`): it provides ONNX Runtime, `onnx` for the tiny test models and
//! pydicom with its decoder plug-ins for the reference values.

use crate::helpers::{fixture, pydicom_files};
use radstream::inference::preprocess::{decode_raw, open_dicom};
use radstream::inference::{Engine, InferenceError, InferenceSettings, Manifest, REJECTED_REASON};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let p = root().join(".venv/bin/python3");
    assert!(
        p.is_file(),
        "{} is missing: run `python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt`",
        p.display()
    );
    p
}

fn run_python(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a tiny ensemble `id` into `models_dir` (see tests/python/make_tiny_model.py).
fn make_tiny(models_dir: &Path, id: &str, extra: &[&str]) -> PathBuf {
    let script = root().join("tests/python/make_tiny_model.py");
    let mut args = vec![
        script.to_str().unwrap(),
        models_dir.to_str().unwrap(),
        "--id",
        id,
    ];
    args.extend_from_slice(extra);
    run_python(&args);
    models_dir.join(id)
}

fn settings(models_dir: &Path) -> InferenceSettings {
    InferenceSettings {
        models_dir: models_dir.to_owned(),
        ..InferenceSettings::default()
    }
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_f64(path: &Path) -> Vec<f64> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn grey_png(w: u32, h: u32) -> Vec<u8> {
    png_bytes(image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(
        w,
        h,
        |x, y| image::Luma([((x * 3 + y * 5) % 256) as u8]),
    )))
}

fn colour_png(w: u32, h: u32) -> Vec<u8> {
    png_bytes(image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(
        w,
        h,
        |x, y| image::Rgb([(x * 4 % 256) as u8, 40, (y * 4 % 256) as u8]),
    )))
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}

#[tokio::test]
async fn rust_outputs_equal_python_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = make_tiny(dir.path(), "tiny", &["--members", "3", "--labels", "4"]);
    let engine = Engine::load(&settings(dir.path())).expect("load tiny model");
    let info = &engine.models()[0];
    assert_eq!(info.id, "tiny");
    assert_eq!(info.provider, "cpu");
    assert_eq!(info.members.len(), 3);

    // Four real images: two DICOM (MR_small, CT_small) and two PNGs.
    let files = pydicom_files();
    let mut tensor = Vec::new();
    for f in ["MR_small.dcm", "CT_small.dcm"] {
        let pre = engine.preprocess_dicom(None, &files.join(f)).unwrap();
        assert_eq!(pre.items, 1);
        tensor.extend(pre.tensor);
    }
    for png in [grey_png(50, 40), grey_png(300, 200)] {
        tensor.extend(engine.preprocess_image(None, &png).unwrap().tensor);
    }
    let raw = engine.run_tensor(None, tensor.clone(), 4).await.unwrap();

    let input = dir.path().join("input.f32");
    write_f32(&input, &tensor);
    for (i, member) in raw.members.iter().enumerate() {
        let out = dir.path().join(format!("out{i}.f32"));
        run_python(&[
            root()
                .join("tests/python/ort_reference.py")
                .to_str()
                .unwrap(),
            model_dir.join(format!("member{i}.onnx")).to_str().unwrap(),
            input.to_str().unwrap(),
            "4,1,32,32",
            out.to_str().unwrap(),
        ]);
        assert_close(member, &read_f32(&out), 1e-5, &format!("member{i}"));
    }
    let out = dir.path().join("gate.f32");
    run_python(&[
        root()
            .join("tests/python/ort_reference.py")
            .to_str()
            .unwrap(),
        model_dir.join("gate.onnx").to_str().unwrap(),
        input.to_str().unwrap(),
        "4,1,32,32",
        out.to_str().unwrap(),
    ]);
    assert_close(raw.gate.as_ref().unwrap(), &read_f32(&out), 1e-5, "gate");
}

#[tokio::test]
async fn a_lone_request_does_not_wait_for_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    make_tiny(dir.path(), "tiny", &[]);
    let s = InferenceSettings {
        max_batch: 8,
        max_delay_ms: 1000,
        ..settings(dir.path())
    };
    let engine = Engine::load(&s).unwrap();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let r = engine
            .run_tensor(None, vec![0.5; 32 * 32], 1)
            .await
            .unwrap();
        assert!(r.queue_ms < 200.0, "queued {} ms", r.queue_ms);
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_scattered_correctly() {
    let dir = tempfile::tempdir().unwrap();
    make_tiny(dir.path(), "tiny", &[]);
    let s = InferenceSettings {
        max_batch: 8,
        max_delay_ms: 50,
        ..settings(dir.path())
    };
    let engine = Engine::load(&s).unwrap();
    let plane = 32 * 32;
    let inputs: Vec<Vec<f32>> = (0..20)
        .map(|k| {
            (0..plane)
                .map(|i| ((i * (k + 1)) % 97) as f32 / 50.0 - 1.0)
                .collect()
        })
        .collect();
    // Alone, one by one: the reference.
    let mut alone = Vec::new();
    for x in &inputs {
        alone.push(engine.run_tensor(None, x.clone(), 1).await.unwrap());
    }
    assert!(alone.iter().all(|r| r.batch_items == 1));
    // All at once.
    let together =
        futures::future::join_all(inputs.iter().map(|x| engine.run_tensor(None, x.clone(), 1)))
            .await;
    let mut max_batch_seen = 0;
    for (a, t) in alone.iter().zip(together) {
        let t = t.unwrap();
        max_batch_seen = max_batch_seen.max(t.batch_items);
        assert!(t.batch_items <= 8);
        for (m, (x, y)) in a.members.iter().zip(&t.members).enumerate() {
            assert_close(x, y, 1e-5, &format!("member{m}"));
        }
    }
    assert!(max_batch_seen > 1, "requests were never batched");
}

/// How a file's decoded values must compare with pydicom's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Lossless syntax: identical values.
    Exact,
    /// Lossy JPEG: libjpeg (pydicom) and jpeg-decoder (dicom-rs) may round the IDCT
    /// differently; at most 2 % of the range (or 4 levels).
    Close,
    /// 12-bit lossy JPEG: libjpeg-turbo (ours) and Richter's libjpeg (pylibjpeg-libjpeg, as
    /// pydicom uses it) both run an integer IDCT but round it differently, so some samples
    /// differ by one level: at most 1 level, on at most 2 % of the samples.
    OneLevel,
}

#[test]
fn decoded_pixels_equal_pydicom() {
    use Expect::*;
    // Files from pydicom's test data covering every syntax the node accepts.
    let cases = [
        ("CT_small.dcm", "explicit VR little endian", Exact),
        ("MR_small_implicit.dcm", "implicit VR little endian", Exact),
        ("MR_small_bigendian.dcm", "explicit VR big endian", Exact),
        ("image_dfl.dcm", "deflated explicit VR little endian", Exact),
        ("MR_small_RLE.dcm", "RLE lossless", Exact),
        ("SC_rgb_rle.dcm", "RLE lossless, RGB", Exact),
        ("SC_rgb_jpeg_gdcm.dcm", "JPEG lossless SV1, RGB", Exact),
        ("SC_rgb_jpeg_dcmtk.dcm", "JPEG baseline, YBR_FULL", Close),
        ("SC_rgb_dcmtk_+eb+cr.dcm", "JPEG baseline, RGB", Close),
        ("JPGExtended.dcm", "JPEG extended 12 bit", OneLevel),
        ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS lossless", Exact),
        ("JPEGLSNearLossless_16.dcm", "JPEG-LS near-lossless", Exact),
        ("MR_small_jp2klossless.dcm", "JPEG 2000 lossless", Exact),
        ("JPEG2000.dcm", "JPEG 2000", Exact),
        ("693_J2KI.dcm", "JPEG 2000 irreversible", Exact),
        (
            "liver_1frame.dcm",
            "explicit VR little endian, 1 bit",
            Exact,
        ),
        (
            "rtdose_1frame.dcm",
            "implicit VR little endian, 32 bit",
            Exact,
        ),
    ];
    let files = pydicom_files();
    let dir = tempfile::tempdir().unwrap();
    let mut paths: Vec<(PathBuf, &str, Expect)> = cases
        .iter()
        .map(|&(f, syntax, expect)| (files.join(f), syntax, expect))
        .collect();
    let multi = jpeg12_multiframe(dir.path());
    paths.push((multi, "JPEG extended 12 bit, 3 frames", OneLevel));
    let [_, _, htj2k] = cr_in_three_syntaxes(dir.path(), 300, 200);
    paths.push((htj2k, "HTJ2K lossless (OpenJPH)", Exact));
    let mut args = vec![
        root()
            .join("tests/python/dump_pydicom.py")
            .to_string_lossy()
            .into_owned(),
        dir.path().to_string_lossy().into_owned(),
    ];
    args.extend(paths.iter().map(|(p, ..)| p.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let listing = run_python(&args);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (path, syntax, expect) in paths {
        let f = path.file_name().unwrap().to_string_lossy().into_owned();
        let obj = open_dicom(&path).unwrap();
        let decoded = decode_raw(&obj, false);
        let raw = match decoded {
            Ok(raw) => raw,
            Err(e) => {
                failures.push(format!("{f} ({syntax}): {e}"));
                continue;
            }
        };
        let reference_file = dir.path().join(format!("{f}.f64"));
        if !reference_file.is_file() {
            failures.push(format!("{f} ({syntax}): pydicom could not decode it"));
            continue;
        }
        let reference = read_f64(&reference_file);
        if raw.values.len() != reference.len() {
            failures.push(format!(
                "{f} ({syntax}): {} samples, pydicom {}",
                raw.values.len(),
                reference.len()
            ));
            continue;
        }
        let max_diff = raw
            .values
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let differing = raw
            .values
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a != b)
            .count();
        let share = differing as f64 / reference.len() as f64;
        report.push(format!(
            "{f} ({syntax}): max |diff| = {max_diff}, {differing} of {} samples differ ({:.2} %)",
            reference.len(),
            share * 100.0
        ));
        let range = reference.iter().copied().fold(0.0, f64::max);
        let tolerance = match expect {
            Exact => 0.0,
            OneLevel => 1.0,
            Close => (range * 0.02).max(4.0),
        };
        if max_diff > tolerance {
            failures.push(format!(
                "{f} ({syntax}): max |diff| {max_diff} > {tolerance}"
            ));
        }
        if expect == OneLevel && share > 0.02 {
            failures.push(format!(
                "{f} ({syntax}): {:.2} % of the samples differ (at most 2 %)",
                share * 100.0
            ));
        }
    }
    println!("{listing}\n{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "decoder differences:\n{}",
        failures.join("\n")
    );
}

/// Writes the 3-frame 12-bit JPEG Extended file of tests/python/make_jpeg12_multiframe.py
/// (frames: JPGExtended.dcm, the same with halved quantisation tables, JPGExtended.dcm).
fn jpeg12_multiframe(dir: &Path) -> PathBuf {
    let out = dir.join("jpeg12_3frames.dcm");
    run_python(&[
        root()
            .join("tests/python/make_jpeg12_multiframe.py")
            .to_str()
            .unwrap(),
        out.to_str().unwrap(),
    ]);
    out
}

/// A 16-bit CR of `rows` x `cols` (make_fixtures.py) and its JPEG 2000 (OpenJPEG) and HTJ2K
/// (OpenJPH's ojph_compress) lossless re-encodings: (native, J2K, HTJ2K).
fn cr_in_three_syntaxes(dir: &Path, rows: u32, cols: u32) -> [PathBuf; 3] {
    let out = dir.join("cr");
    run_python(&[
        root()
            .join("tools/fixtures/make_fixtures.py")
            .to_str()
            .unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--studies",
        "1",
        "--instances-per-study",
        "1",
        "--modality",
        "CR",
        "--rows",
        &rows.to_string(),
        "--cols",
        &cols.to_string(),
        "--bits-stored",
        "16",
    ]);
    let native = out.join("study_0000/001.dcm");
    assert!(native.is_file(), "make_fixtures.py wrote no {native:?}");
    let encode = |name: &str, extra: &[&str]| {
        let dest = dir.join(name);
        let script = root().join("tools/fixtures/encode_j2k.py");
        let mut args = vec![
            script.to_str().unwrap(),
            native.to_str().unwrap(),
            dest.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_python(&args);
        dest
    };
    let j2k = encode("j2k.dcm", &[]);
    let htj2k = encode("htj2k.dcm", &["--htj2k"]);
    [native, j2k, htj2k]
}

/// JPEG 2000 and HTJ2K decode exactly (lossless) for DICOMweb; for a model they are decoded
/// at the coarsest resolution level that still covers its input, which gives nearly the same
/// tensor as the full decode, and the result says how many levels were dropped.
#[tokio::test]
async fn jpeg2000_and_htj2k_decode_at_the_resolution_the_model_needs() {
    use radstream::dicomweb::pixels::{decoded_frames, render, ImageFormat, RenderParams};
    use radstream::inference::preprocess::preprocess_dicom;
    let dir = tempfile::tempdir().unwrap();
    let [native, j2k, htj2k] = cr_in_three_syntaxes(dir.path(), 1000, 800);
    let reference = decode_raw(&open_dicom(&native).unwrap(), false).unwrap();
    let native_frame = decoded_frames(&open_dicom(&native).unwrap(), &[1]).unwrap();
    for path in [&j2k, &htj2k] {
        let obj = open_dicom(path).unwrap();
        let raw = decode_raw(&obj, false).unwrap();
        assert_eq!((raw.rows, raw.cols), (1000, 800));
        assert!(raw.values == reference.values, "{path:?} is not lossless");
        assert_eq!(decoded_frames(&obj, &[1]).unwrap(), native_frame);
        let params = RenderParams {
            format: ImageFormat::Png,
            window: None,
            viewport: None,
            quality: 90,
        };
        let png = image::load_from_memory(&render(&obj, 1, &params).unwrap()).unwrap();
        assert_eq!((png.width(), png.height()), (800, 1000));
    }

    let models = tempfile::tempdir().unwrap();
    let model = make_tiny(models.path(), "tiny", &["--accept-any"]);
    let manifest = std::fs::read_to_string(model.join("model.toml")).unwrap();
    let mut spec = Manifest::parse(&manifest).unwrap().input;
    assert!(spec.jpeg2000_reduced, "reduced decoding is the default");
    (spec.width, spec.height) = (256, 256);
    let full_spec = radstream::inference::manifest::InputSpec {
        jpeg2000_reduced: false,
        ..spec.clone()
    };
    let full = preprocess_dicom(&native, &spec).unwrap();
    assert_eq!(full.image.resolution_levels_dropped, None);
    for path in [&j2k, &htj2k] {
        // 800 x 1000 -> 400 x 500 covers 256 x 256; 200 x 250 would not.
        let reduced = preprocess_dicom(path, &spec).unwrap();
        assert_eq!(reduced.image.resolution_levels_dropped, Some(1), "{path:?}");
        assert_eq!((reduced.image.rows, reduced.image.cols), (1000, 800));
        assert_eq!(reduced.image.window, full.image.window);
        let whole = preprocess_dicom(path, &full_spec).unwrap();
        assert_eq!(whole.image.resolution_levels_dropped, None);
        assert_eq!(whole.tensor, full.tensor, "{path:?}: full decode differs");
        // Grey-level differences (the tensor is (grey - mean) / std).
        let diffs: Vec<f32> = reduced
            .tensor
            .iter()
            .zip(&full.tensor)
            .map(|(a, b)| (a - b).abs() * spec.std)
            .collect();
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        let max = diffs.iter().copied().fold(0.0, f32::max);
        eprintln!("{path:?}: reduced vs full grey: mean |diff| {mean:.5}, max {max:.4}");
        assert!(mean < 0.01 && max < 0.2, "mean {mean}, max {max}");
    }

    // Through the engine, at the tiny model's 32 x 32: four levels (50 x 63).
    let engine = Engine::load(&settings(models.path())).unwrap();
    let r = engine.infer_dicom(Some("tiny"), &htj2k).await.unwrap();
    assert!(r.applicable && !r.rejected, "{r:?}");
    assert_eq!(r.image.resolution_levels_dropped, Some(4));
    assert_eq!((r.image.rows, r.image.cols), (1000, 800));
}

/// 12-bit lossy JPEG decodes alike for inference and DICOMweb, frame by frame, and goes
/// through the whole preprocessing, gate and ensemble (its parity with pydicom is checked in
/// `decoded_pixels_equal_pydicom`).
#[tokio::test]
async fn twelve_bit_jpeg_decodes_for_inference_and_dicomweb() {
    use radstream::dicomweb::pixels::{decoded_frames, render, ImageFormat, RenderParams};
    let dir = tempfile::tempdir().unwrap();
    let multi = jpeg12_multiframe(dir.path());
    let obj = open_dicom(&multi).unwrap();
    let all = decode_raw(&obj, false).unwrap();
    assert_eq!(
        (all.frames, all.rows, all.cols, all.samples),
        (3, 1024, 256, 1)
    );
    let plane = 1024 * 256;
    let frame = |k: usize| &all.values[k * plane..(k + 1) * plane];
    assert_eq!(frame(0), frame(2));
    assert_ne!(frame(0), frame(1));
    assert!(frame(1).iter().all(|&v| v > 255.0), "12-bit values kept");
    let first = decode_raw(&obj, true).unwrap();
    assert_eq!(first.frames, 1);
    assert_eq!(first.values, frame(0));

    // DICOMweb: frames decoded to octet-stream, in the order asked for.
    let got = decoded_frames(&obj, &[2, 1]).unwrap();
    assert_eq!(got.len(), 2);
    for (bytes, k) in got.iter().zip([1usize, 0]) {
        let v: Vec<f64> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
            .collect();
        assert_eq!(v, frame(k), "frame {}", k + 1);
    }
    // Rendered frame 2: no stored window, so its min/max map to 0/255.
    let params = RenderParams {
        format: ImageFormat::Png,
        window: None,
        viewport: None,
        quality: 90,
    };
    let png = image::load_from_memory(&render(&obj, 2, &params).unwrap())
        .unwrap()
        .to_luma8();
    assert_eq!(png.dimensions(), (256, 1024));
    let (lo, hi) = frame(1)
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let worst = png
        .as_raw()
        .iter()
        .zip(frame(1))
        .map(|(&p, &v)| (p as f64 - ((v - lo) / (hi - lo) * 255.0).round()).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 1.0, "rendered frame 2 off by {worst}");

    // The single-frame file, through DICOMweb and through the engine.
    let single = pydicom_files().join("JPGExtended.dcm");
    let obj = open_dicom(&single).unwrap();
    let raw = decode_raw(&obj, false).unwrap();
    let got = decoded_frames(&obj, &[1]).unwrap();
    let v: Vec<f64> = got[0]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
        .collect();
    assert_eq!(v, raw.values);
    let models = tempfile::tempdir().unwrap();
    make_tiny(models.path(), "tiny", &["--accept-any"]);
    let engine = Engine::load(&settings(models.path())).unwrap();
    for path in [&single, &multi] {
        let r = engine.infer_dicom(Some("tiny"), path).await.unwrap();
        assert!(r.applicable && !r.rejected, "{r:?}");
        assert_eq!(r.labels.len(), 3);
        assert_eq!(r.image.bits_stored, Some(12));
        assert_eq!((r.image.rows, r.image.cols), (1024, 256));
    }
}

#[tokio::test]
async fn gate_colour_and_header_rules() {
    let dir = tempfile::tempdir().unwrap();
    make_tiny(dir.path(), "tiny", &[]);
    make_tiny(dir.path(), "tiny-reject", &["--gate", "reject"]);
    let engine = Engine::load(&settings(dir.path())).unwrap();
    assert_eq!(engine.models().len(), 2);
    let files = pydicom_files();

    // Accepted: MR is in the tiny model's modalities.
    let r = engine
        .infer_dicom(Some("tiny"), &files.join("MR_small.dcm"))
        .await
        .unwrap();
    assert!(r.applicable && !r.rejected, "{r:?}");
    assert_eq!(r.labels.len(), 3);
    assert!(r.gate_probability.unwrap() > 0.99);
    let u = r.uncertainty.as_ref().unwrap();
    assert!((u.total - u.epistemic - u.aleatoric).abs() < 1e-5);
    for l in &r.labels {
        assert_eq!(l.member_probabilities.len(), 3);
        let mean = l.member_probabilities.iter().sum::<f32>() / 3.0;
        assert!((mean - l.probability).abs() < 1e-6);
        assert_eq!(l.present, l.probability >= l.threshold);
    }
    assert!(r.timings.total_ms >= r.timings.inference_ms);
    assert_eq!(r.image.rows, 64);
    serde_json::to_string(&r).unwrap();

    // Header rule: CT is not applicable, with a reason naming the modality.
    let r = engine
        .infer_dicom(Some("tiny"), &files.join("CT_small.dcm"))
        .await
        .unwrap();
    assert!(!r.applicable);
    assert!(
        r.reason.as_deref().unwrap().contains("modality CT"),
        "{r:?}"
    );
    assert!(r.labels.is_empty());

    // Gate rejects.
    let r = engine
        .infer_dicom(Some("tiny-reject"), &files.join("MR_small.dcm"))
        .await
        .unwrap();
    assert!(r.rejected);
    assert_eq!(r.reason.as_deref(), Some(REJECTED_REASON));
    assert!(r.labels.is_empty() && r.uncertainty.is_none());

    // Colour photo: rejected even though this gate accepts everything.
    let r = engine
        .infer_image_bytes(Some("tiny"), &colour_png(64, 48))
        .await
        .unwrap();
    assert!(r.rejected, "{r:?}");
    assert_eq!(r.reason.as_deref(), Some(REJECTED_REASON));

    // Grey PNG: accepted.
    let r = engine
        .infer_image_bytes(Some("tiny"), &grey_png(64, 48))
        .await
        .unwrap();
    assert!(!r.rejected && r.labels.len() == 3, "{r:?}");
}

#[tokio::test]
async fn corrupt_input_gives_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    make_tiny(dir.path(), "tiny", &["--accept-any"]);
    let engine = Engine::load(&settings(dir.path())).unwrap();
    let files = pydicom_files();
    let scratch = tempfile::tempdir().unwrap();

    let garbage = scratch.path().join("garbage.dcm");
    std::fs::write(&garbage, b"this is not DICOM at all").unwrap();
    let whole = std::fs::read(files.join("MR_small.dcm")).unwrap();
    let truncated = scratch.path().join("truncated.dcm");
    std::fs::write(&truncated, &whole[..whole.len() * 2 / 3]).unwrap();
    let header_only = scratch.path().join("header_only.dcm");
    std::fs::write(&header_only, &whole[..400]).unwrap();
    for p in [&garbage, &truncated, &header_only] {
        let e = engine.infer_dicom(None, p).await.unwrap_err();
        assert!(e.is_input_error(), "{}: {e}", p.display());
    }
    let e = engine
        .infer_dicom(None, &scratch.path().join("missing.dcm"))
        .await
        .unwrap_err();
    assert!(matches!(e, InferenceError::Io { .. }), "{e}");

    let png = grey_png(64, 64);
    for bytes in [&b""[..], &png[..png.len() / 2], &png[..20], b"GIF89a......"] {
        let e = engine.infer_image_bytes(None, bytes).await.unwrap_err();
        assert!(e.is_input_error(), "{e}");
    }
    let e = engine
        .infer_dicom(Some("no-such-model"), &files.join("MR_small.dcm"))
        .await
        .unwrap_err();
    assert!(matches!(e, InferenceError::UnknownModel(_)), "{e}");

    // Every file in pydicom's test data: a result or an error, never a panic.
    let mut outcomes = Vec::new();
    for entry in std::fs::read_dir(&files).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        // dicom-object spends minutes (debug build) in its parser on these two malformed
        // files before giving up with an error; not a panic, but too slow for the suite.
        if name == "UN_sequence.dcm" || name == "SC_rgb_jpeg.dcm" {
            continue;
        }
        let t = std::time::Instant::now();
        let outcome = match engine.infer_dicom(None, &p).await {
            Ok(r) => format!("ok applicable={} rejected={}", r.applicable, r.rejected),
            Err(e) => format!("error: {e}"),
        };
        outcomes.push(format!(
            "{}: {outcome} ({:.0} ms)",
            p.file_name().unwrap().to_string_lossy(),
            t.elapsed().as_secs_f64() * 1000.0
        ));
    }
    println!("{}", outcomes.join("\n"));
    assert!(outcomes.len() > 50);
}

#[test]
fn checksum_mismatch_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = make_tiny(dir.path(), "tiny", &[]);
    let path = model.join("model.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let m = Manifest::parse(&text).unwrap();
    let sha = &m.ensemble.members[1].sha256;
    std::fs::write(&path, text.replace(sha.as_str(), &"ab".repeat(32))).unwrap();
    let e = Engine::load(&settings(dir.path())).unwrap_err();
    assert!(matches!(e, InferenceError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("member1.onnx"), "{e}");

    // An empty models folder is an error too.
    let empty = tempfile::tempdir().unwrap();
    let e = Engine::load(&settings(empty.path())).unwrap_err();
    assert!(matches!(e, InferenceError::NoModels(_)), "{e}");
}

/// Collects log output written through a tracing subscriber.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn cuda_request_without_gpu_falls_back_to_cpu_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    make_tiny(dir.path(), "tiny", &[]);
    let s = InferenceSettings {
        providers: vec!["cuda".into(), "cpu".into()],
        ..settings(dir.path())
    };
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let engine = tracing::subscriber::with_default(subscriber, || Engine::load(&s)).unwrap();
    let info = &engine.models()[0];
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    if info.provider == "cuda" {
        // A machine with a GPU and onnxruntime-gpu: nothing to fall back from.
        return;
    }
    assert_eq!(info.provider, "cpu");
    assert_eq!(info.device, "cpu");
    assert!(
        logs.contains("CUDA execution provider requested but unavailable")
            && logs.contains("reason"),
        "no clear warning in logs:\n{logs}"
    );
}

#[test]
fn missing_runtime_is_an_error() {
    // ONNX Runtime can be loaded once per process, so check this in a fresh process: the test
    // binary itself, running only `missing_runtime_child`, with nothing to find.
    // A copy outside the repository, so the search of the executable's ancestors for a
    // `.venv` (meant for target/ inside the checkout) finds nothing either.
    let cwd = tempfile::tempdir().unwrap();
    let exe = cwd.path().join("e2e-child");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let out = Command::new(&exe)
        .args(["missing_runtime_child", "--test-threads=1", "--nocapture"])
        .current_dir(cwd.path())
        .env("RADSTREAM_TEST_ORT_CHILD", "1")
        .env("PATH", "")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.32.0")
        .env_remove("VIRTUAL_ENV")
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_runtime_child() {
    if std::env::var_os("RADSTREAM_TEST_ORT_CHILD").is_none() {
        return;
    }
    let s = InferenceSettings {
        models_dir: PathBuf::from("models"),
        ort_dylib_path: Some(PathBuf::from("/nonexistent/libonnxruntime.so")),
        ..InferenceSettings::default()
    };
    match Engine::load(&s) {
        Err(InferenceError::RuntimeNotFound(msg)) => {
            assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
        }
        other => panic!("expected RuntimeNotFound, got {other:?}"),
    }
}

// ---------------------------------------------------------------- demo ensemble (if present)

fn demo_settings() -> Option<InferenceSettings> {
    // RADSTREAM_TEST_MODELS points at another models folder (e.g. a model in training).
    let models = std::env::var_os("RADSTREAM_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"));
    if !models.join("cxr-demo/model.toml").is_file() {
        eprintln!(
            "skipping: models/cxr-demo/model.toml is missing (train it with tools/train/train.py)"
        );
        return None;
    }
    Some(settings(&models))
}

#[tokio::test]
async fn demo_ensemble_on_phantom_pngs() {
    let Some(s) = demo_settings() else { return };
    let engine = Engine::load(&s).unwrap();
    let id = Some("cxr-demo");
    let read = |n: &str| std::fs::read(fixture(&format!("images/{n}"))).unwrap();

    let r = engine
        .infer_image_bytes(id, &read("cxr_cardiomegaly.png"))
        .await
        .unwrap();
    assert!(!r.rejected, "{r:?}");
    let cm = r.labels.iter().find(|l| l.key == "cardiomegaly").unwrap();
    assert!(cm.present && cm.probability >= 0.8, "{cm:?}");

    let r = engine
        .infer_image_bytes(id, &read("cxr_normal.png"))
        .await
        .unwrap();
    assert!(!r.rejected, "{r:?}");
    let cm = r.labels.iter().find(|l| l.key == "cardiomegaly").unwrap();
    assert!(!cm.present, "{cm:?}");

    let mut rejected = 0;
    for n in ["ct_slice.png", "ultrasound.png", "photo.png", "photo.jpg"] {
        let p = fixture(&format!("images/{n}"));
        if !p.is_file() {
            // The fixture script writes the photo as either PNG or JPEG.
            continue;
        }
        rejected += 1;
        let r = engine
            .infer_image_bytes(id, &std::fs::read(&p).unwrap())
            .await
            .unwrap();
        assert!(r.rejected, "{n} was not rejected: {r:?}");
        assert_eq!(r.reason.as_deref(), Some(REJECTED_REASON));
    }
    assert_eq!(
        rejected, 3,
        "CT slice, ultrasound frame and photo fixtures expected"
    );
}

#[test]
fn phantom_dicom_fixtures_preprocess() {
    // Needs no trained model: every fixture DICOM decodes and windows to a sane tensor.
    let dir = tempfile::tempdir().unwrap();
    let model = make_tiny(dir.path(), "tiny", &[]);
    let spec = Manifest::load(&model.join("model.toml")).unwrap().input;
    let files = dcm_files(&fixture("dicom"));
    for f in &files {
        let pre = radstream::inference::preprocess::preprocess_dicom(f, &spec)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(pre.tensor.len(), 32 * 32);
        // (v - 0.5) / 0.25 with v in [0, 1]
        assert!(pre.tensor.iter().all(|v| (-2.0..=2.0).contains(v)));
        let w = pre.image.window.as_ref().unwrap();
        assert_eq!(
            w.source,
            "file",
            "{}: the fixtures carry a VOI window",
            f.display()
        );
    }
    if files.is_empty() {
        eprintln!("no fixtures/dicom (tools/fixtures/make_fixtures.py --preset small)");
    }
}

#[tokio::test]
async fn demo_ensemble_on_phantom_dicom() {
    let Some(s) = demo_settings() else { return };
    let engine = Engine::load(&s).unwrap();
    let dicom = fixture("dicom");
    let mut seen = 0;
    for (sub, cardiomegaly) in [("cr_cardiomegaly", true), ("dx_normal", false)] {
        let Some(dir) = find_dir(&dicom, sub) else {
            continue;
        };
        for f in dcm_files(&dir) {
            let r = engine.infer_dicom(Some("cxr-demo"), &f).await.unwrap();
            assert!(r.applicable && !r.rejected, "{}: {r:?}", f.display());
            let cm = r.labels.iter().find(|l| l.key == "cardiomegaly").unwrap();
            if cardiomegaly {
                assert!(cm.probability >= 0.8, "{}: {cm:?}", f.display());
            } else {
                assert!(!cm.present, "{}: {cm:?}", f.display());
            }
            seen += 1;
        }
    }
    assert!(
        seen > 0,
        "no phantom DICOM fixtures found under {}",
        dicom.display()
    );
}

fn find_dir(base: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![base.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == name) {
                    return Some(p);
                }
                stack.push(p);
            }
        }
    }
    None
}

fn dcm_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "dcm") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
