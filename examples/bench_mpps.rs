//! Completion-latency benchmark with and without MPPS: one-image studies sent one after the
//! other to a node (`radstream serve`, defaults except ports and a fresh data folder).
//! Run through `bench/mpps.sh`, or:
//!
//! ```text
//! cargo run --release --example bench_mpps -- --bin target/release/radstream \
//!     --studies DIR --python .venv/bin/python3 [--count 30] [--out bench/out/mpps.json]
//! ```
//!
//! - **Without MPPS**: each study on its own association; the clock starts when the
//!   A-RELEASE-RP is received and stops when the SSE stream delivers the study's
//!   `inference.completed` (the quiet window, 150 ms by default, is part of it).
//! - **With MPPS**: a pynetdicom MPPS SCU (one long-lived helper process, as a modality
//!   would) sends N-CREATE IN PROGRESS, the image goes as above, then N-SET COMPLETED lists
//!   it; the clock starts at the later of the release and the N-SET response (the N-SET,
//!   since it is sent after) and stops at `inference.completed`.
//!
//! Two warm-up studies per run are not counted.

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use radstream::scu::OutgoingFile;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const WARMUP_STUDIES: usize = 2;
/// The issue's target with MPPS: p50 from the later of N-SET and the last instance.
const TARGET_MPPS_P50_MS: f64 = 100.0;

/// The MPPS SCU helper: reads `create STEP STUDY` / `set STEP SERIES SOP` lines, answers
/// each with the response status in hex (one association per request, as modalities do).
const MPPS_HELPER: &str = r#"
import sys
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
port = int(sys.argv[1])
ae = AE(ae_title="BENCHMOD")
ae.add_requested_context(MPPS)
for line in sys.stdin:
    op, step, a, b = (line.split() + ["", "", "", ""])[:4]
    ds = Dataset()
    if op == "create":
        s = Dataset(); s.StudyInstanceUID = a; s.AccessionNumber = ""
        ds.ScheduledStepAttributesSequence = [s]
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.Modality = "DX"
        ds.PerformedSeriesSequence = []
    else:
        r = Dataset(); r.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"; r.ReferencedSOPInstanceUID = b
        se = Dataset(); se.SeriesInstanceUID = a; se.ReferencedImageSequence = [r]
        ds.PerformedProcedureStepStatus = "COMPLETED"
        ds.PerformedSeriesSequence = [se]
    assoc = ae.associate("127.0.0.1", port, ae_title="RADSTREAM")
    if op == "create":
        st, _ = assoc.send_n_create(ds, MPPS, step)
    else:
        st, _ = assoc.send_n_set(ds, MPPS, step)
    assoc.release()
    print("%04X" % st.Status if "Status" in st else "NONE", flush=True)
"#;

struct Args {
    bin: PathBuf,
    studies: PathBuf,
    python: PathBuf,
    count: usize,
    out: PathBuf,
    logs: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        bin: PathBuf::from("target/release/radstream"),
        studies: PathBuf::new(),
        python: PathBuf::from(".venv/bin/python3"),
        count: 30,
        out: PathBuf::from("bench/out/mpps.json"),
        logs: PathBuf::from("bench/out/mpps-logs"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bin" => a.bin = v.into(),
            "--studies" => a.studies = v.into(),
            "--python" => a.python = v.into(),
            "--count" => a.count = v.parse().expect("--count N"),
            "--out" => a.out = v.into(),
            "--logs" => a.logs = v.into(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Waits for the study's `inference.completed`; returns its arrival.
async fn completed(
    rx: &mut mpsc::UnboundedReceiver<(Msg, Instant, f64)>,
    uid: &str,
) -> (Instant, Value) {
    loop {
        let (m, at, _) = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no inference.completed for {uid} within 120 s"))
            .expect("event stream ended");
        let v: Value = serde_json::from_str(&m.data).expect("event JSON");
        if v["study_uid"].as_str() != Some(uid) {
            continue;
        }
        match m.event.as_str() {
            "study.complete" => {
                if let Some(by) = v["data"]["completed_by"].as_str() {
                    println!("    {uid}: completed_by {by}");
                }
            }
            "inference.completed" => return (at, v),
            "inference.failed" => panic!("inference failed for {uid}: {}", m.data),
            _ => {}
        }
    }
}

struct Helper {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Helper {
    fn start(python: &Path, port: &str) -> Helper {
        let mut child = tokio::process::Command::new(python)
            .arg("-c")
            .arg(MPPS_HELPER)
            .arg(port)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python with pynetdicom (scripts/setup.sh)");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Helper {
            child,
            stdin,
            lines,
        }
    }

    /// Sends one request; returns when its response has been read.
    async fn request(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("helper stdin");
        let status = self
            .lines
            .next_line()
            .await
            .expect("helper stdout")
            .expect("helper exited");
        assert_eq!(status, "0000", "MPPS {line}: status {status}");
    }
}

async fn run(a: &Args, studies: &[Vec<OutgoingFile>], with_mpps: bool) -> Vec<f64> {
    let log = a.logs.join(format!("node-mpps-{with_mpps}.log"));
    let node = Node::start(&a.bin, 150, &log).await;
    let http = client();
    let mut rx = open_stream(&http, &node).await;
    let peer = node.peer();
    let port = node
        .dicom
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut helper = with_mpps.then(|| Helper::start(&a.python, &port));
    let mut out = Vec::new();
    for (i, files) in studies.iter().enumerate() {
        let f = &files[0];
        let uid = f.study_uid.clone();
        let step = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
        if let Some(h) = helper.as_mut() {
            h.request(&format!("create {step} {uid}")).await;
        }
        send(&peer, files).await;
        let mut start = Instant::now();
        if let Some(h) = helper.as_mut() {
            let (series, sop) = series_and_sop(&f.path);
            h.request(&format!("set {step} {series} {sop}")).await;
            start = Instant::now();
        }
        let (done, _) = completed(&mut rx, &uid).await;
        if i >= WARMUP_STUDIES {
            out.push(ms(done.saturating_duration_since(start)));
        }
    }
    if let Some(mut h) = helper.take() {
        let _ = h.child.kill().await;
    }
    out
}

fn series_and_sop(path: &Path) -> (String, String) {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .expect("readable DICOM file");
    let text = |t| {
        obj.element(t)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    };
    (
        text(dicom_dictionary_std::tags::SERIES_INSTANCE_UID),
        text(dicom_dictionary_std::tags::SOP_INSTANCE_UID),
    )
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    std::fs::create_dir_all(&a.logs).expect("log folder");
    let studies = load_studies(&a.studies);
    let need = a.count + WARMUP_STUDIES;
    assert!(
        studies.len() >= 2 * need,
        "{} has {} studies; {} needed (each run sends its own)",
        a.studies.display(),
        studies.len(),
        2 * need
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if a.bin.components().any(|c| c.as_os_str() == "debug") {
        "debug"
    } else {
        "release"
    };
    println!(
        "radstream completion latency, {} one-image studies per run, {cores} cores, {profile} build",
        a.count
    );
    let plain = stats(run(&a, &studies[..need], false).await);
    println!(
        "without MPPS (quiet window 150 ms): release -> inference.completed p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        plain.p50, plain.p95, plain.max
    );
    let mpps = stats(run(&a, &studies[need..2 * need], true).await);
    println!(
        "with MPPS: later of (N-SET COMPLETED, last instance) -> inference.completed p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (target p50 <= {TARGET_MPPS_P50_MS:.0} ms: {})",
        mpps.p50,
        mpps.p95,
        mpps.max,
        if mpps.p50 <= TARGET_MPPS_P50_MS { "met" } else { "not met" }
    );
    let report = json!({
        "profile": profile,
        "cores": cores,
        "studies_per_run": a.count,
        "without_mpps_release_to_inference_completed_ms": plain,
        "with_mpps_nset_or_last_instance_to_inference_completed_ms": mpps,
        "target_mpps_p50_ms": TARGET_MPPS_P50_MS,
    });
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent).expect("output folder");
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&report).expect("JSON"))
        .expect("writing the report");
    println!("wrote {}", a.out.display());
}
