//! `dataset_file`: a Part 10 file as it comes from disk or a STOW-RS part: the store's header
//! read (`InstanceHeader::from_part10_bytes`), then the inference path (the whole file opened
//! as `inference::preprocess::open_dicom` opens it, decoded and preprocessed).

use std::time::Instant;

use dicom_object::{file::ReadPreamble, OpenFileOptions};
use radstream::inference::preprocess::{header_attrs, preprocess_dicom_object};
use radstream::store::InstanceHeader;

use super::common::small_spec;

pub fn run(data: &[u8]) {
    if let Ok(h) = InstanceHeader::from_part10_bytes(data) {
        let _ = h.identity();
    }
    // open_dicom reads a path with these options; the bytes are the file.
    let Ok(obj) = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(data)
    else {
        return;
    };
    let header = header_attrs(&obj);
    let _ = preprocess_dicom_object(&obj, header, &small_spec("first"), Instant::now());
}
