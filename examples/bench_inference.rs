//! Inference benchmark: per-stage timings and images/s at batch 1, 8 and 32 on CPU, compared
//! with Python onnxruntime on the same member models (the ceiling). Run through
//! `bench/inference.sh`, or:
//!
//! ```text
//! cargo run --release --example bench_inference -- --models models --dicom cr.dcm \
//!     [--dicom j2k.dcm] [--onnx densenet121.onnx --onnx-size 224 --onnx-channels 1 --onnx-labels 18]
//!     [--seconds 5] [--max-delay-ms 5]
//! ```
//!
//! Batch B means B concurrent single-image requests, batched by the engine (`max_batch` 32,
//! `max_delay_ms` 5 unless given; at batch 1 every request waits that delay). The ceiling is
//! the sum over members of Python's per-batch p50 (members run one after the other there; the
//! engine runs them concurrently, so on a machine with as many cores as members the ratio can
//! exceed 1).

use radstream::inference::{Engine, InferenceSettings};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Args {
    models: PathBuf,
    model: Option<String>,
    dicoms: Vec<PathBuf>,
    onnx: Option<PathBuf>,
    onnx_size: u32,
    onnx_channels: u32,
    onnx_labels: usize,
    seconds: f64,
    max_delay_ms: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        models: PathBuf::from("models"),
        model: None,
        dicoms: Vec::new(),
        onnx: None,
        onnx_size: 224,
        onnx_channels: 3,
        onnx_labels: 18,
        seconds: 5.0,
        max_delay_ms: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--models" => a.models = v().into(),
            "--model" => a.model = Some(v()),
            "--dicom" => a.dicoms.push(v().into()),
            "--onnx" => a.onnx = Some(v().into()),
            "--onnx-size" => a.onnx_size = v().parse().expect("--onnx-size"),
            "--onnx-channels" => a.onnx_channels = v().parse().expect("--onnx-channels"),
            "--onnx-labels" => a.onnx_labels = v().parse().expect("--onnx-labels"),
            "--seconds" => a.seconds = v().parse().expect("--seconds"),
            "--max-delay-ms" => a.max_delay_ms = v().parse().expect("--max-delay-ms"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn settings(models: &Path, max_delay_ms: u64) -> InferenceSettings {
    InferenceSettings {
        models_dir: models.to_owned(),
        max_batch: 32,
        max_delay_ms,
        ..InferenceSettings::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// images/s for `batch` concurrent requests, repeated for `seconds`.
async fn throughput(
    engine: &Engine,
    model: Option<&str>,
    tensor: &[f32],
    batch: usize,
    seconds: f64,
) -> f64 {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut images = 0usize;
    while Instant::now() < end || images == 0 {
        let reqs = (0..batch).map(|_| engine.run_tensor(model, tensor.to_vec(), 1));
        for r in futures::future::join_all(reqs).await {
            r.expect("inference");
        }
        images += batch;
    }
    images as f64 / start.elapsed().as_secs_f64()
}

fn python_ceiling(
    model: &Path,
    size: u32,
    channels: u32,
    batch: usize,
    seconds: f64,
) -> Option<f64> {
    let out = std::process::Command::new(".venv/bin/python3")
        .args([
            "bench/ort_ceiling.py",
            model.to_str()?,
            "--size",
            &size.to_string(),
            "--channels",
            &channels.to_string(),
            "--batch",
            &batch.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let p50 = text.split("p50_ms=").nth(1)?.trim().parse::<f64>().ok()?;
    Some(p50)
}

/// Median per-stage timings of `infer_dicom` (5 runs) on each file.
async fn stage_timings(engine: &Engine, model: Option<&str>, dicoms: &[PathBuf]) {
    for path in dicoms {
        let mut decode = Vec::new();
        let mut pre = Vec::new();
        let mut infer = Vec::new();
        let mut total = Vec::new();
        for _ in 0..5 {
            let r = engine.infer_dicom(model, path).await.expect("infer_dicom");
            decode.push(r.timings.decode_ms);
            pre.push(r.timings.preprocess_ms);
            infer.push(r.timings.inference_ms);
            total.push(r.timings.total_ms);
        }
        println!(
            "{}: median decode {:.1} ms, preprocess {:.1} ms, inference {:.1} ms, end-to-end {:.1} ms ({:.2} images/s serial)",
            path.file_name().unwrap().to_string_lossy(),
            median(decode),
            median(pre),
            median(infer),
            median(total.clone()),
            1000.0 / median(total)
        );
    }
}

/// One throughput measurement: engine and ceiling images/s at a batch size.
struct Row {
    model: String,
    batch: usize,
    engine: f64,
    ceiling: Option<f64>,
}

impl Row {
    fn print(&self, ceiling_label: &str) {
        match self.ceiling {
            Some(c) => println!(
                "batch {:>2}: engine {:>8.2} images/s | {ceiling_label} {c:>8.2} images/s | ratio {:.2}",
                self.batch,
                self.engine,
                self.engine / c
            ),
            None => println!(
                "batch {:>2}: engine {:>8.2} images/s | python ceiling unavailable",
                self.batch, self.engine
            ),
        }
    }
}

async fn bench_model(
    engine: &Engine,
    model: Option<&str>,
    dicoms: &[PathBuf],
    seconds: f64,
) -> Vec<Row> {
    let manifest = engine.manifest(model).expect("model");
    let info = engine
        .models()
        .into_iter()
        .find(|m| m.id == manifest.id)
        .unwrap();
    println!(
        "\n== model {} {} ({} members, gate: {}, {}x{}x{}, provider {})",
        info.id,
        info.version,
        info.members.len(),
        info.gate.is_some(),
        info.input[2],
        info.input[1],
        info.input[0],
        info.provider
    );
    let model = Some(manifest.id.as_str());
    stage_timings(engine, model, dicoms).await;
    let tensor = vec![0.1f32; manifest.input_len()];
    let i = &manifest.input;
    let mut rows = Vec::new();
    for batch in [1usize, 8, 32] {
        let ips = throughput(engine, model, &tensor, batch, seconds).await;
        // Ceiling: Python ORT per member (plus gate), summed.
        let mut files: Vec<String> = manifest
            .ensemble
            .members
            .iter()
            .map(|m| m.file.clone())
            .collect();
        if let Some(g) = &manifest.gate {
            files.push(g.file.clone());
        }
        let mut sum_ms = 0.0;
        let mut ok = true;
        for f in &files {
            let p = model_dir(&manifest.id).join(f);
            match python_ceiling(
                &p,
                i.width,
                i.channels,
                batch,
                (seconds / files.len() as f64).max(1.0),
            ) {
                Some(ms) => sum_ms += ms,
                None => ok = false,
            }
        }
        let row = Row {
            model: manifest.id.clone(),
            batch,
            engine: ips,
            ceiling: ok.then(|| batch as f64 * 1000.0 / sum_ms),
        };
        row.print("python onnxruntime (members in sequence)");
        rows.push(row);
    }
    rows
}

static MODELS_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn model_dir(id: &str) -> PathBuf {
    MODELS_DIR.get().expect("models dir").join(id)
}

/// Wraps a bare ONNX file in a one-member manifest in a temporary models folder.
fn wrap_onnx(onnx: &Path, size: u32, channels: u32, labels: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("byom");
    std::fs::create_dir_all(&m).unwrap();
    let bytes = std::fs::read(onnx).expect("read onnx");
    let sha = hex::encode(Sha256::digest(&bytes));
    std::fs::write(m.join("model.onnx"), &bytes).unwrap();
    let mut toml = format!(
        "id = \"byom\"\nversion = \"0\"\nname = \"bring your own model\"\nmanufacturer = \"-\"\n\
         task = \"multilabel-classification\"\nintended_use = \"benchmark\"\nnot_for_clinical_use = true\n\
         [input]\nname = \"image\"\nwidth = {size}\nheight = {size}\nchannels = {channels}\nlayout = \"NCHW\"\n\
         windowing = \"voi-or-percentile\"\npercentile_low = 0.5\npercentile_high = 99.5\nmean = 0.5\nstd = 0.25\nframes = \"first\"\n\
         [output]\nname = \"logits\"\nactivation = \"sigmoid\"\n[ensemble]\ncombination = \"mean\"\n\
         [[ensemble.members]]\nfile = \"model.onnx\"\nsha256 = \"{sha}\"\n\
         [uncertainty]\nspread = \"std\"\noptimal_below = 0.005\ngood_below = 0.008\nreview_entropy_above = 0.6\n"
    );
    for j in 0..labels {
        toml.push_str(&format!(
            "[[labels]]\nkey = \"l{j}\"\nname = \"L{j}\"\nsnomed = \"0\"\ndisplay = \"L{j}\"\nthreshold = 0.5\n"
        ));
    }
    std::fs::write(m.join("model.toml"), toml).unwrap();
    dir
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let t = Instant::now();
    let engine = Engine::load(&settings(&a.models, a.max_delay_ms)).expect("load models");
    println!(
        "loaded {} model(s) in {:.0} ms, ONNX Runtime {}",
        engine.models().len(),
        t.elapsed().as_secs_f64() * 1000.0,
        engine.runtime_library().display()
    );
    MODELS_DIR.set(a.models.clone()).unwrap();
    let mut rows = bench_model(&engine, a.model.as_deref(), &a.dicoms, a.seconds).await;
    for seg in engine.segmentation_models() {
        rows.extend(bench_segmenter(&engine, &seg.id, &a.dicoms, a.seconds).await);
    }
    if let Some(onnx) = &a.onnx {
        let tmp = wrap_onnx(onnx, a.onnx_size, a.onnx_channels, a.onnx_labels);
        let byom = Engine::load(&settings(tmp.path(), a.max_delay_ms)).expect("load onnx model");
        rows.extend(bench_byom(&byom, onnx, &a, a.seconds).await);
    }
    println!("\n== summary: images/s, engine vs Python onnxruntime (CPU) on the same model(s)");
    println!(
        "{:<28} {:>5} {:>10} {:>12} {:>6}",
        "model", "batch", "engine", "onnxruntime", "ratio"
    );
    for r in &rows {
        let (c, ratio) = match r.ceiling {
            Some(c) => (format!("{c:.2}"), format!("{:.2}", r.engine / c)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<28} {:>5} {:>10.2} {:>12} {:>6}",
            r.model, r.batch, r.engine, c, ratio
        );
    }
}

async fn bench_byom(engine: &Engine, onnx: &Path, a: &Args, seconds: f64) -> Vec<Row> {
    println!(
        "\n== {} ({}x{}x{}, {} outputs)",
        onnx.display(),
        a.onnx_channels,
        a.onnx_size,
        a.onnx_size,
        a.onnx_labels
    );
    stage_timings(engine, None, &a.dicoms).await;
    let manifest = engine.manifest(None).unwrap();
    let tensor = vec![0.1f32; manifest.input_len()];
    let name = onnx
        .file_stem()
        .map_or("byom".into(), |n| n.to_string_lossy().into_owned());
    let mut rows = Vec::new();
    for batch in [1usize, 8, 32] {
        let ips = throughput(engine, None, &tensor, batch, seconds).await;
        let row = Row {
            model: name.clone(),
            batch,
            engine: ips,
            ceiling: python_ceiling(onnx, a.onnx_size, a.onnx_channels, batch, seconds)
                .map(|ms| batch as f64 * 1000.0 / ms),
        };
        row.print("python onnxruntime");
        rows.push(row);
    }
    rows
}

/// A segmentation model: stage timings through the whole path (decode, preprocess, the U-Net,
/// lung fields and measurements), then raw throughput beside Python onnxruntime.
async fn bench_segmenter(engine: &Engine, id: &str, dicoms: &[PathBuf], seconds: f64) -> Vec<Row> {
    let manifest = engine.manifest_of(id).expect("segmentation model");
    let info = engine.models().into_iter().find(|m| m.id == id).unwrap();
    println!(
        "\n== segmentation model {} {} ({}x{}, provider {})",
        info.id, info.version, info.input[0], info.input[1], info.provider
    );
    for path in dicoms {
        let (mut pre, mut infer, mut post, mut total) = (vec![], vec![], vec![], vec![]);
        for _ in 0..3 {
            let r = engine
                .infer_segmentation_dicom(Some(id), path)
                .await
                .expect("infer_segmentation_dicom");
            pre.push(r.timings.decode_ms + r.timings.preprocess_ms);
            infer.push(r.timings.inference_ms);
            post.push(r.timings.postprocess_ms);
            total.push(r.timings.total_ms);
        }
        println!(
            "{}: median decode+preprocess {:.1} ms, inference {:.1} ms, lung fields {:.1} ms, end-to-end {:.1} ms",
            path.file_name().unwrap().to_string_lossy(),
            median(pre),
            median(infer),
            median(post),
            median(total)
        );
    }
    let tensor = vec![0.1f32; manifest.input_len()];
    let i = &manifest.input;
    let onnx = model_dir(id).join(&manifest.ensemble.members[0].file);
    let mut rows = Vec::new();
    for batch in [1usize, 8, 32] {
        let ips = throughput(engine, Some(id), &tensor, batch, seconds).await;
        let row = Row {
            model: id.to_string(),
            batch,
            engine: ips,
            ceiling: python_ceiling(&onnx, i.width, i.channels, batch, seconds)
                .map(|ms| batch as f64 * 1000.0 / ms),
        };
        row.print("python onnxruntime");
        rows.push(row);
    }
    rows
}
