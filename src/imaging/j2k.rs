//! JPEG 2000 and HTJ2K frames for a model, decoded at the resolution it needs.
//!
//! A JPEG 2000 codestream holds the image as wavelet resolution levels: level `r` below the
//! full one is the image at 1/2^r of its size, and decoding stops there without touching the
//! code-blocks of the finer levels. A 3000 x 2500 radiograph for a 512 x 512 model needs only
//! its 750 x 625 level, about a sixteenth of the work. The reduced frame goes into a native,
//! one-frame copy of the data set with Rows and Columns of the reduced size, so that the
//! window, VOI LUT and resize that follow are the same as for every other image.
//!
//! Only monochrome single-sample images are reduced; anything else, and anything the decoder
//! refuses at the reduced level, is decoded in full by the caller as before.

use std::borrow::Cow;

use dicom_core::value::{PrimitiveValue, Value as DicomValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_transfer_syntax_registry::entries;
use jpeg2k::{DecodeParameters, Image};

use super::decode::{fragment_groups, number_of_frames};

/// JPEG 2000 (lossless, lossy) and HTJ2K (lossless, lossless RPCL, lossy) transfer syntaxes.
pub const JPEG2000_SYNTAXES: [&str; 5] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];

/// How far frame `frame` of `obj` was reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reduction {
    /// Resolution levels dropped: the frame is 1/2^levels of its full size.
    pub levels: u32,
    /// Rows and columns of the full image.
    pub full: (u32, u32),
}

/// Frame `frame` of `obj`, decoded at the coarsest resolution level whose size still covers
/// `min_cols` x `min_rows`, as a native one-frame copy of `obj`. `None` when `obj` is not a
/// monochrome JPEG 2000 image, when no level can be dropped, or when the decoder refuses the
/// reduced decode (the caller then decodes in full and reports any error from that).
pub fn reduced_copy(
    obj: &DefaultDicomObject,
    frame: u32,
    min_cols: u32,
    min_rows: u32,
) -> Option<(DefaultDicomObject, Reduction)> {
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0');
    if !JPEG2000_SYNTAXES.contains(&ts) {
        return None;
    }
    let attr = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u16>().ok())
    };
    let (rows, cols) = (
        u32::from(attr(tags::ROWS)?),
        u32::from(attr(tags::COLUMNS)?),
    );
    let bits_allocated = attr(tags::BITS_ALLOCATED)?;
    if attr(tags::SAMPLES_PER_PIXEL).unwrap_or(1) != 1 || !matches!(bits_allocated, 8 | 16) {
        return None;
    }
    let frames = number_of_frames(obj);
    if frame >= frames {
        return None;
    }
    let DicomValue::PixelSequence(seq) = obj.element_opt(tags::PIXEL_DATA).ok().flatten()?.value()
    else {
        return None;
    };
    let groups = fragment_groups(seq.offset_table(), seq.fragments(), frames).ok()?;
    // A frame in one fragment (the usual case) is read in place, not copied.
    let codestream: Cow<[u8]> = match groups.get(frame as usize)?.as_slice() {
        [one] => Cow::Borrowed(&seq.fragments()[*one]),
        many => Cow::Owned(
            many.iter()
                .flat_map(|&i| seq.fragments()[i].iter().copied())
                .collect(),
        ),
    };
    let start = codestream_start(&codestream)?;
    let available = decomposition_levels(&codestream[start..])?;
    let levels = levels_to_drop(cols, rows, min_cols, min_rows).min(u32::from(available));
    if levels == 0 {
        return None;
    }
    let image = match Image::from_bytes_with(&codestream, DecodeParameters::new().reduce(levels)) {
        Ok(image) => image,
        Err(e) => {
            tracing::debug!(
                levels,
                "reduced JPEG 2000 decode refused ({e}); decoding in full"
            );
            return None;
        }
    };
    let [component] = image.components() else {
        return None;
    };
    let (width, height) = (component.width(), component.height());
    if (width, height) != (reduced(cols, levels), reduced(rows, levels)) {
        return None;
    }
    let data = component.data();
    let mut native = obj.clone();
    native
        .meta_mut()
        .set_transfer_syntax(&entries::EXPLICIT_VR_LITTLE_ENDIAN);
    let pixel_data = if bits_allocated == 16 {
        // The bit pattern of each sample, signed or not, as native Pixel Data holds it.
        let values: Vec<u16> = data.iter().map(|&v| v as u16).collect();
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(values.into()))
    } else {
        let values: Vec<u8> = data.iter().map(|&v| v as u8).collect();
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(values.into()))
    };
    native.put(pixel_data);
    let us = |tag, v: u32| DataElement::new(tag, VR::US, PrimitiveValue::from(v as u16));
    native.put(us(tags::ROWS, height));
    native.put(us(tags::COLUMNS, width));
    native.remove_element(tags::NUMBER_OF_FRAMES);
    Some((
        native,
        Reduction {
            levels,
            full: (rows, cols),
        },
    ))
}

/// Size of a side after dropping `levels` resolution levels (the codestream's own rounding
/// for an image at the origin).
fn reduced(side: u32, levels: u32) -> u32 {
    side.div_ceil(1 << levels)
}

/// The most levels that can be dropped with both sides still at least the minimum.
fn levels_to_drop(cols: u32, rows: u32, min_cols: u32, min_rows: u32) -> u32 {
    let mut levels = 0;
    while levels < 16
        && reduced(cols, levels + 1) >= min_cols.max(1)
        && reduced(rows, levels + 1) >= min_rows.max(1)
    {
        levels += 1;
    }
    levels
}

/// Offset of the codestream in `b`: 0 for a raw codestream (SOC first), after the `jp2c` box
/// header for a JP2 file (which some writers put in DICOM).
fn codestream_start(b: &[u8]) -> Option<usize> {
    if b.starts_with(&[0xFF, 0x4F]) {
        return Some(0);
    }
    let mut at = 0usize;
    while at + 8 <= b.len() {
        let len = u32::from_be_bytes(b[at..at + 4].try_into().ok()?) as usize;
        let kind = &b[at + 4..at + 8];
        let (header, size) = match len {
            1 => (
                16,
                u64::from_be_bytes(b.get(at + 8..at + 16)?.try_into().ok()?) as usize,
            ),
            0 => (8, b.len() - at),
            n => (8, n),
        };
        if kind == b"jp2c" {
            return Some(at + header).filter(|&s| b[s..].starts_with(&[0xFF, 0x4F]));
        }
        if size < header {
            return None;
        }
        at = at.checked_add(size)?;
    }
    None
}

/// Offset of the number of decomposition levels in a COD segment's body: after Scod,
/// progression order, layers (2 bytes) and MCT.
const COD_LEVELS: usize = 5;

/// Offset of the number of decomposition levels in a COC segment's body: after Ccoc (one
/// byte below 257 components, else two) and Scoc.
const COC_LEVELS: usize = 2;

/// The fewest decomposition levels any COD or COC marker segment of the main header gives
/// (PS15444-1 A.6.1, A.6.2); a reduction beyond that is refused by the decoder.
fn decomposition_levels(cs: &[u8]) -> Option<u8> {
    let mut at = 2; // after SOC
    let mut fewest: Option<u8> = None;
    // Components in SIZ decide the size of Ccoc in COC (1 byte below 257 components).
    let mut components = 0u16;
    loop {
        let marker = u16::from_be_bytes(cs.get(at..at + 2)?.try_into().ok()?);
        if marker == 0xFF90 {
            // SOT: the main header ends.
            return fewest;
        }
        let len = u16::from_be_bytes(cs.get(at + 2..at + 4)?.try_into().ok()?) as usize;
        let body = cs.get(at + 4..at + 2 + len)?;
        let levels = match marker {
            0xFF51 => {
                components = u16::from_be_bytes(body.get(34..36)?.try_into().ok()?);
                None
            }
            0xFF52 => body.get(COD_LEVELS).copied(),
            0xFF53 if components < 257 => body.get(COC_LEVELS).copied(),
            0xFF53 => body.get(COC_LEVELS + 1).copied(),
            _ => None,
        };
        if let Some(l) = levels {
            fewest = Some(fewest.map_or(l, |f| f.min(l)));
        }
        at += 2 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_keep_both_sides_at_least_the_model_size() {
        assert_eq!(levels_to_drop(2500, 3000, 512, 512), 2); // 625 x 750
        assert_eq!(levels_to_drop(2500, 3000, 224, 224), 3); // 313 x 375
        assert_eq!(levels_to_drop(512, 512, 512, 512), 0);
        assert_eq!(levels_to_drop(1022, 1024, 512, 512), 0);
        assert_eq!(levels_to_drop(1023, 1024, 512, 512), 1);
        assert_eq!(levels_to_drop(1024, 1024, 512, 512), 1);
        assert_eq!(reduced(2500, 2), 625);
        assert_eq!(reduced(3001, 3), 376);
    }

    #[test]
    fn main_header_levels_are_read_from_cod_and_coc() {
        // SOC, SIZ (one component), COD with 5 levels, COC for component 0 with 3, SOT.
        let mut cs = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41];
        cs.extend_from_slice(&[0; 34]);
        cs.extend_from_slice(&[0, 1, 15, 1, 1]);
        cs.extend_from_slice(&[0xFF, 0x52, 0, 12, 0, 0, 0, 1, 0, 5, 4, 4, 0, 1]);
        cs.extend_from_slice(&[0xFF, 0x53, 0, 9, 0, 0, 3, 4, 4, 0, 1]);
        cs.extend_from_slice(&[0xFF, 0x90, 0, 10]);
        assert_eq!(decomposition_levels(&cs[2..]), None, "SOC must be skipped");
        assert_eq!(decomposition_levels(&cs), Some(3));
        // Truncated inside the header: nothing is guessed.
        assert_eq!(decomposition_levels(&cs[..50]), None);
        assert_eq!(codestream_start(&cs), Some(0));
        let mut jp2 = Vec::new();
        jp2.extend_from_slice(&[0, 0, 0, 12]);
        jp2.extend_from_slice(b"jP  \r\n\x87\n");
        jp2.extend_from_slice(&((cs.len() + 8) as u32).to_be_bytes());
        jp2.extend_from_slice(b"jp2c");
        jp2.extend_from_slice(&cs);
        assert_eq!(codestream_start(&jp2), Some(20));
        assert_eq!(codestream_start(b"nonsense"), None);
    }
}
