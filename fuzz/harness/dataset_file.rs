//! `dataset_file`: a Part 10 file as it comes from disk, an upload or a server path, read the
//! way every reader of the node reads a file: `dataset::open_file` (lenient meta, the
//! streaming check, the UN-sequence rewrite, then dicom-rs) for the header
//! (`InstanceHeader::read`) and for the whole object, then decoded and preprocessed as for
//! inference.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use radstream::dataset::{open_file, Part};
use radstream::inference::preprocess::{header_attrs, preprocess_dicom_object};
use radstream::store::InstanceHeader;

use super::common::small_spec;

pub fn run(data: &[u8]) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "radstream-fuzz-{}-{}.dcm",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, data).expect("a writable temporary folder");
    if let Ok(h) = InstanceHeader::read(&path) {
        let _ = h.identity();
    }
    let whole = open_file(&path, Part::Whole);
    let _ = std::fs::remove_file(&path);
    let Ok(obj) = whole else {
        return;
    };
    let header = header_attrs(&obj);
    let _ = preprocess_dicom_object(&obj, header, &small_spec("first"), Instant::now());
}
