//! `dicom_json`: DICOM JSON both ways. The node reads DICOM JSON only from a STOW-RS peer's
//! answer to an export (`export::deliver::stow_failure`, first byte even); it writes it for
//! WADO-RS metadata (`dicomweb::json::dataset`, first byte odd): a data set read from the
//! input (Implicit or Explicit VR LE, by bit 1) and accepted by the node's data-set check is
//! written out, and what is written must be
//! JSON that reads back.

use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use radstream::dataset::{Encoding, Limits, Scanner};
use radstream::dicomweb::json::dataset;
use radstream::export::deliver::stow_failure;

pub fn run(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 2 == 0 {
        let _ = stow_failure(rest, "1.2.3.4");
        return;
    }
    let (ts, encoding) = if pick & 2 == 0 {
        (IMPLICIT_VR_LITTLE_ENDIAN.erased(), Encoding::IMPLICIT_LE)
    } else {
        (EXPLICIT_VR_LITTLE_ENDIAN.erased(), Encoding::EXPLICIT_LE)
    };
    // The node writes DICOM JSON only of data sets that passed its check (at ingest, and
    // again by `dataset::open_file` when it reads the file).
    let mut check = Scanner::new(encoding, Limits::DEFAULT);
    if check.feed(rest).is_err() || check.finish().is_err() {
        return;
    }
    let Ok(obj) = InMemDicomObject::read_dataset_with_ts(rest, &ts) else {
        return;
    };
    let json = serde_json::Value::Object(dataset(
        &obj,
        Some("http://node/studies/1/series/2/instances/3"),
    ));
    let text = serde_json::to_string(&json).expect("a serde_json Value serialises");
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
        // serde_json stops at 128 levels of nesting; any other error means invalid JSON.
        assert!(
            e.to_string().contains("recursion limit"),
            "the DICOM JSON written does not read back: {e}"
        );
    }
}
