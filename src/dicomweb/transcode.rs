//! Stored instances rewritten in another transfer syntax, for a WADO-RS retrieve that asks for
//! one (PS3.18 8.7.3.5). Compressed pixel data is decoded by [`crate::imaging::decode`],
//! as for inference, so whatever the node can analyse it can also hand out
//! uncompressed; JPEG-LS lossless output is dicom-pixeldata's CharLS encoder. No HTTP here.

use std::path::Path;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{PixelRepresentation, PlanarConfiguration, Transcode};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::imaging::decode::{decode_pixels, LOSSY_JPEG};

/// Explicit VR Little Endian: PS3.18's default transfer syntax for `application/dicom`.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";

/// Transfer syntaxes a stored instance can be rewritten in.
pub const TARGETS: [&str; 3] = [EXPLICIT_LE, IMPLICIT_LE, JPEG_LS_LOSSLESS];

/// `LossyImageCompressionMethod` of the lossy JPEG syntaxes ([`LOSSY_JPEG`], PS3.3 C.7.6.1.1.5).
const JPEG_LOSSY_METHOD: &str = "ISO_10918_1";

/// Why an instance could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("the stored file cannot be read: {0}")]
    Read(String),
    #[error("its pixel data cannot be decoded: {0}")]
    Decode(String),
    #[error("its pixel data cannot be encoded: {0}")]
    Encode(String),
    #[error("the file cannot be written: {0}")]
    Write(String),
}

/// Whether instances can be rewritten in `ts`.
pub fn can_write(ts: &str) -> bool {
    TARGETS.contains(&ts)
}

/// The Part 10 bytes of the file at `path` in transfer syntax `ts` (one of [`TARGETS`]),
/// blocking. A lossy-compressed source keeps (or gains) `LossyImageCompression` "01".
pub fn transcode(path: &Path, ts: &str) -> Result<Vec<u8>, TranscodeError> {
    let target = TransferSyntaxRegistry
        .get(ts)
        .filter(|_| can_write(ts))
        .ok_or_else(|| TranscodeError::Encode(format!("{ts} is not a target")))?;
    let mut obj = crate::dataset::open_file(path, crate::dataset::Part::Whole)
        .map_err(|e| TranscodeError::Read(e.to_string()))?;
    let stored = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    if stored == ts {
        return std::fs::read(path).map_err(|e| TranscodeError::Read(e.to_string()));
    }
    let image = obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_some();
    if !image {
        // A report or other non-image object: only the data set's encoding changes.
        obj.update_meta(|m| m.set_transfer_syntax(target));
        return write(&obj);
    }
    let encapsulated = TransferSyntaxRegistry
        .get(&stored)
        .is_none_or(|t| t.is_encapsulated_pixel_data());
    if encapsulated {
        to_native(&mut obj, &stored)?;
        // Native now: an encoder below must not take the samples for the stored codestream.
        if let Some(native) = TransferSyntaxRegistry.get(EXPLICIT_LE) {
            obj.update_meta(|m| m.set_transfer_syntax(native));
        }
    }
    if target.is_encapsulated_pixel_data() {
        obj.transcode(target)
            .map_err(|e| TranscodeError::Encode(e.to_string()))?;
    } else {
        obj.update_meta(|m| m.set_transfer_syntax(target));
    }
    write(&obj)
}

fn write(obj: &DefaultDicomObject) -> Result<Vec<u8>, TranscodeError> {
    let mut out = Vec::new();
    obj.write_all(&mut out)
        .map_err(|e| TranscodeError::Write(e.to_string()))?;
    Ok(out)
}

/// Replaces encapsulated Pixel Data by its decoded samples, with the attributes that describe
/// them (the decoder may have widened the samples or turned YBR into RGB).
fn to_native(obj: &mut DefaultDicomObject, stored: &str) -> Result<(), TranscodeError> {
    let (px, _) = decode_pixels(obj, None).map_err(|e| TranscodeError::Decode(e.to_string()))?;
    let bits = px.bits_allocated();
    let value = match bits {
        8 => PrimitiveValue::U8(px.data().into()),
        16 => PrimitiveValue::U16(
            px.data()
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
        ),
        other => {
            return Err(TranscodeError::Decode(format!(
                "{other} bits allocated per decoded sample"
            )))
        }
    };
    let facts = (
        px.samples_per_pixel(),
        px.bits_stored(),
        px.high_bit(),
        px.pixel_representation(),
        px.planar_configuration(),
        px.photometric_interpretation().as_str().to_string(),
    );
    drop(px);
    let (samples, bits_stored, high_bit, representation, planar, photometric) = facts;
    let vr = if bits == 8 { VR::OB } else { VR::OW };
    obj.put(DataElement::new(tags::PIXEL_DATA, vr, value));
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    obj.put(us(tags::BITS_ALLOCATED, bits));
    obj.put(us(tags::BITS_STORED, bits_stored));
    obj.put(us(tags::HIGH_BIT, high_bit));
    obj.put(us(
        tags::PIXEL_REPRESENTATION,
        u16::from(representation == PixelRepresentation::Signed),
    ));
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from(photometric),
    ));
    if samples > 1 {
        obj.put(us(
            tags::PLANAR_CONFIGURATION,
            u16::from(planar == PlanarConfiguration::PixelFirst),
        ));
    }
    for tag in [
        tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH,
        tags::EXTENDED_OFFSET_TABLE,
        tags::EXTENDED_OFFSET_TABLE_LENGTHS,
    ] {
        obj.remove_element(tag);
    }
    if LOSSY_JPEG.contains(&stored) {
        let flagged = obj
            .element_opt(tags::LOSSY_IMAGE_COMPRESSION)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok().map(|s| s.trim() == "01"))
            .unwrap_or(false);
        if !flagged {
            obj.put(DataElement::new(
                tags::LOSSY_IMAGE_COMPRESSION,
                VR::CS,
                PrimitiveValue::from("01"),
            ));
            obj.put(DataElement::new(
                tags::LOSSY_IMAGE_COMPRESSION_METHOD,
                VR::CS,
                PrimitiveValue::from(JPEG_LOSSY_METHOD),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_object::OpenFileOptions;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/dicom")
            .join(name)
    }

    /// `src` rewritten in `ts`, parsed back, after checking the syntax it says it is in.
    fn rewritten(src: &Path, ts: &str) -> DefaultDicomObject {
        let bytes = transcode(src, ts).unwrap();
        let out = dicom_object::from_reader(&bytes[128..]).unwrap();
        assert_eq!(out.meta().transfer_syntax().trim_end_matches('\0'), ts);
        out
    }

    fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
        obj.element(tag).unwrap().to_str().unwrap().into_owned()
    }

    fn pixels(obj: &DefaultDicomObject) -> Vec<u8> {
        obj.element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .into_owned()
    }

    #[test]
    fn rle_comes_out_native_with_the_decoded_samples_and_no_encapsulation_attributes() {
        let src = fixture("dx_effusion_rle/001.dcm");
        let out = rewritten(&src, EXPLICIT_LE);
        let stored = OpenFileOptions::new().open_file(&src).unwrap();
        let (px, _) = decode_pixels(&stored, None).unwrap();
        assert_eq!(pixels(&out), px.data());
        assert!(out
            .element_opt(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH)
            .unwrap()
            .is_none());
        assert_eq!(
            text(&out, tags::SOP_INSTANCE_UID),
            text(&stored, tags::SOP_INSTANCE_UID)
        );
    }

    #[test]
    fn native_to_native_changes_only_the_encoding() {
        for name in ["ts_implicit", "ts_big", "ts_deflate"] {
            let src = fixture(&format!("{name}/001.dcm"));
            let out = rewritten(&src, EXPLICIT_LE);
            let stored = OpenFileOptions::new().open_file(&src).unwrap();
            assert_eq!(pixels(&out), pixels(&stored), "{name}");
        }
        // Asked for what it is stored in: the file itself.
        let src = fixture("ts_implicit/001.dcm");
        let same = transcode(&src, IMPLICIT_LE).unwrap();
        assert_eq!(same, std::fs::read(&src).unwrap());
    }

    #[test]
    fn an_object_without_pixel_data_changes_only_its_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = OpenFileOptions::new()
            .open_file(fixture("ts_implicit/001.dcm"))
            .unwrap();
        obj.remove_element(tags::PIXEL_DATA);
        // An image class without Pixel Data is refused as cut short: make it a Basic Text SR.
        let sr = "1.2.840.10008.5.1.4.1.1.88.11";
        obj.put(dicom_core::DataElement::new(
            tags::SOP_CLASS_UID,
            dicom_core::VR::UI,
            dicom_core::PrimitiveValue::from(sr),
        ));
        obj.meta_mut().media_storage_sop_class_uid = sr.to_string();
        let src = dir.path().join("no-pixels.dcm");
        obj.write_to_file(&src).unwrap();
        let out = rewritten(&src, JPEG_LS_LOSSLESS);
        assert_eq!(text(&out, tags::PATIENT_ID), text(&obj, tags::PATIENT_ID));
    }

    #[test]
    fn only_the_listed_targets_are_written() {
        assert!(can_write(JPEG_LS_LOSSLESS) && !can_write("1.2.840.10008.1.2.4.50"));
        let err = transcode(&fixture("ts_implicit/001.dcm"), "1.2.840.10008.1.2.4.50");
        assert!(matches!(err, Err(TranscodeError::Encode(_))), "{err:?}");
    }
}
