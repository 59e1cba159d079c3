//! `image_decode`: the pixel decoders the node runs on what it receives. The first 8 bytes are
//! a header: byte 0 picks the path, bytes 1-4 Rows and Columns (LE u16), byte 5 Bits
//! Allocated (bits 0-1) / Stored (2-7), byte 6 Samples per Pixel (bit 0), Photometric
//! Interpretation (1-3), Pixel Representation (4) and Planar Configuration (5), byte 7 the
//! Number of Frames (0-1), one frame decoded alone (2), all frames (3), which frame (4-7).
//! The rest is the pixel data: for an encapsulated syntax, fragments split at each item tag
//! (FE FF 00 E0) in it; for the image path, the uploaded PNG or JPEG; for the 12-bit JPEG
//! path, one codestream.
//!
//! DICOM objects go through `inference::preprocess::preprocess_dicom_object` (inference) or
//! `imaging::decode::decode_pixels` for one frame (WADO-RS frames, rendered), photos through
//! `preprocess_image` (VoxRay and Pi image uploads; byte 1 even) or `capture::decode_photo`
//! and the capture steps after it (RadAnalyzer `/v3`; byte 1 odd), codestreams through
//! `imaging::jpeg12::decode`.

use std::time::Instant;

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use radstream::capture;
use radstream::imaging::decode::decode_pixels;
use radstream::imaging::jpeg12;
use radstream::inference::preprocess::{header_attrs, preprocess_dicom_object, preprocess_image};

use super::common::small_spec;

/// Transfer syntaxes picked by byte 0 (2 and up).
const SYNTAXES: [&str; 10] = [
    "1.2.840.10008.1.2.5",    // RLE Lossless
    "1.2.840.10008.1.2.4.50", // JPEG Baseline
    "1.2.840.10008.1.2.4.51", // JPEG Extended (12-bit)
    "1.2.840.10008.1.2.4.57", // JPEG Lossless
    "1.2.840.10008.1.2.4.70", // JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80", // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81", // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90", // JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91", // JPEG 2000
    "1.2.840.10008.1.2.1",    // Explicit VR LE, native
];

const PHOTOMETRIC: [&str; 6] = [
    "MONOCHROME2",
    "MONOCHROME1",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "PALETTE COLOR",
];

const ITEM_TAG: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];

pub fn run(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (h, pixels) = data.split_at(8);
    let rows = u16::from_le_bytes([h[1], h[2]]);
    let cols = u16::from_le_bytes([h[3], h[4]]);
    let samples: u16 = if h[6] & 1 == 0 { 1 } else { 3 };
    match h[0] as usize % (SYNTAXES.len() + 2) {
        0 if h[1] & 1 == 0 => {
            let _ = preprocess_image(pixels, &small_spec("first"));
        }
        0 => photo(pixels),
        1 => {
            let _ = jpeg12::decode(pixels, rows.into(), cols.into(), samples);
        }
        k => {
            let ts = SYNTAXES[k - 2];
            let bits_allocated: u16 = [8, 16, 1, 32][(h[5] & 3) as usize];
            let bits_stored = (u16::from(h[5] >> 2) % bits_allocated.max(1)) + 1;
            let photometric = PHOTOMETRIC[usize::from(h[6] >> 1 & 7) % PHOTOMETRIC.len()];
            let frames = 1 + u32::from(h[7] & 3);
            let mut obj = InMemDicomObject::new_empty();
            let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
            obj.put(us(tags::ROWS, rows));
            obj.put(us(tags::COLUMNS, cols));
            obj.put(us(tags::BITS_ALLOCATED, bits_allocated));
            obj.put(us(tags::BITS_STORED, bits_stored));
            obj.put(us(tags::HIGH_BIT, bits_stored - 1));
            obj.put(us(tags::SAMPLES_PER_PIXEL, samples));
            obj.put(us(tags::PIXEL_REPRESENTATION, u16::from(h[6] >> 4 & 1)));
            obj.put(us(tags::PLANAR_CONFIGURATION, u16::from(h[6] >> 5 & 1)));
            obj.put(DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from(photometric),
            ));
            obj.put(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                PrimitiveValue::from(frames.to_string()),
            ));
            obj.put(DataElement::new(
                tags::SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION),
            ));
            let pixel_data = if ts == "1.2.840.10008.1.2.1" {
                let vr = if bits_allocated > 8 { VR::OW } else { VR::OB };
                DataElement::new(tags::PIXEL_DATA, vr, PrimitiveValue::from(pixels.to_vec()))
            } else {
                let fragments: Vec<Vec<u8>> = split(pixels).map(<[u8]>::to_vec).collect();
                DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OB,
                    PixelFragmentSequence::new(Vec::<u32>::new(), fragments),
                )
            };
            obj.put(pixel_data);
            let meta = FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION)
                .media_storage_sop_instance_uid("2.25.1")
                .transfer_syntax(ts)
                .build()
                .expect("a file meta group of fixed UIDs");
            let obj = obj.with_exact_meta(meta);
            if h[7] & 4 == 0 {
                let spec = small_spec(if h[7] & 8 == 0 { "first" } else { "all" });
                let _ = preprocess_dicom_object(&obj, header_attrs(&obj), &spec, Instant::now());
            } else {
                let frame = u32::from(h[7] >> 4) % frames;
                // The node decodes a frame inside `guard` (or a blocking task): a panic is
                // caught there, so it is caught here too (and logged by the fuzz binary).
                let _ = std::panic::catch_unwind(|| decode_pixels(&obj, Some(frame)).is_ok());
            }
        }
    }
}

/// A RadAnalyzer capture photo: decoded, then (when small enough to be quick) its screen
/// corners found, the quality assessed and the screen rectified.
fn photo(bytes: &[u8]) {
    let Ok(photo) = capture::decode_photo(bytes) else {
        return;
    };
    if photo.width() * photo.height() > 128 * 128 {
        return;
    }
    let detection = capture::detect(&photo);
    let _ = capture::assess(&photo, detection.as_ref());
    if let Some(d) = detection {
        let _ = capture::rectify(&photo, &d.quad);
    }
}

/// The fragments: `pixels` cut at each item tag in it (the tag itself dropped).
fn split(pixels: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(pixels);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(4).position(|w| w == ITEM_TAG) {
            Some(i) => {
                rest = Some(&r[i + 4..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}
