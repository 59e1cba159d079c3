//! `dataset_network`: a data set as C-STORE delivers it, in the transfer syntax the first byte
//! picks, taken the way the store takes it: the streaming check (`dataset::Scanner`, fed in
//! chunks as PDVs arrive) first, and only a data set it accepts is parsed behind the file meta
//! group the store writes (`store::files::part10_header`), by
//! `InstanceHeader::from_part10_bytes` and, as for a header longer than the first chunk,
//! `from_part10_prefix` (through the UN-sequence rewrite where the check found one).

use std::borrow::Cow;
use std::io::Write;

use radstream::dataset::{normalize, Limits, Scanner};
use radstream::store::files::part10_header;
use radstream::store::{FileMeta, InstanceHeader};

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

pub fn run(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (ts, body) = match pick % 5 {
        0 => (IMPLICIT_VR_LE, Cow::Borrowed(body)),
        1 => (EXPLICIT_VR_LE, Cow::Borrowed(body)),
        2 => (EXPLICIT_VR_BE, Cow::Borrowed(body)),
        // The bytes as sent: a raw deflate stream.
        3 => (DEFLATED, Cow::Borrowed(body)),
        // An Explicit VR LE data set, deflated here so the parser behind the inflater is reached.
        _ => (DEFLATED, Cow::Owned(deflate(body))),
    };
    let mut check = Scanner::for_transfer_syntax(ts, Limits::DEFAULT).expect("a known syntax");
    for chunk in body.chunks(usize::from(pick).max(1) * 7) {
        if check.feed(chunk).is_err() {
            return;
        }
    }
    let Ok(summary) = check.finish() else {
        return;
    };
    let body = if summary.un_sequences > 0 {
        match normalize::un_sequences(&body, true) {
            Ok(fixed) => Cow::Owned(fixed),
            Err(_) => return,
        }
    } else {
        body
    };
    let meta = FileMeta {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(),
        sop_instance_uid: "2.25.1".into(),
        transfer_syntax: ts.into(),
        source_ae: "FUZZ".into(),
        receiving_ae: "RADSTREAM".into(),
    };
    let mut file = part10_header(&meta).expect("the file meta group of fixed UIDs is writable");
    file.extend_from_slice(&body);
    if let Ok(h) = InstanceHeader::from_part10_bytes(&file) {
        let _ = h.identity();
    }
    let _ = InstanceHeader::from_part10_prefix(&file);
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}
