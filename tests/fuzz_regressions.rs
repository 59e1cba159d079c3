//! Replays the inputs the fuzzers found (`fuzz/regressions/<target>/*`) through the very code
//! the fuzz targets run (`fuzz/harness/`): none may panic, overflow the stack or exhaust
//! memory (the fuzz binaries' allocator is installed here too: a single allocation over
//! 256 MiB aborts the test binary). Inputs whose fix is not in yet wait in
//! `fuzz/regressions/pending/` and are not replayed. The fuzzers themselves run with
//! `bench/fuzz.sh`, not here.

use std::path::Path;

#[path = "../fuzz/harness/common.rs"]
mod common;
#[path = "../fuzz/harness/dataset_file.rs"]
mod dataset_file;
#[path = "../fuzz/harness/dataset_network.rs"]
mod dataset_network;
#[path = "../fuzz/harness/dicom_json.rs"]
mod dicom_json;
#[path = "../fuzz/harness/image_decode.rs"]
mod image_decode;
#[path = "../fuzz/harness/multipart.rs"]
mod multipart;
#[path = "../fuzz/harness/pdu.rs"]
mod pdu;
#[path = "../fuzz/harness/support.rs"]
mod support;

#[global_allocator]
static ALLOCATOR: support::Limited = support::Limited;

/// Runs `run` on every file of `fuzz/regressions/<target>/`; returns how many there were.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    support::init(support::DECODER_LIMIT);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut paths: Vec<_> = entries
        .map(|e| e.expect("a readable folder").path())
        .collect();
    paths.sort();
    for p in &paths {
        eprintln!("replaying {}", p.display());
        run(&std::fs::read(p).expect("a readable regression input"));
    }
    paths.len()
}

#[test]
fn pdu_regressions() {
    replay("pdu", pdu::run);
}

#[test]
fn dataset_file_regressions() {
    replay("dataset_file", dataset_file::run);
}

#[test]
fn dataset_network_regressions() {
    replay("dataset_network", dataset_network::run);
}

#[test]
fn multipart_regressions() {
    replay("multipart", multipart::run);
}

#[test]
fn dicom_json_regressions() {
    replay("dicom_json", dicom_json::run);
}

#[test]
fn image_decode_regressions() {
    replay("image_decode", image_decode::run);
}
