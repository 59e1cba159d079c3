//! Pixel data decoding shared by inference preprocessing and DICOMweb (`dicomweb::pixels`,
//! `dicomweb::transcode`), so that both decode every transfer syntax the same way.
//!
//! dicom-pixeldata decodes first. When it rejects a lossy JPEG frame (1.2.840.10008.1.2.4.50
//! or .51) whose Bits Stored is above 8 (jpeg-decoder has no 12-bit DCT), the frames asked for
//! are decoded with libjpeg-turbo ([`super::jpeg12`]) and put into a native copy of the data
//! set, so that callers get the same [`DecodedPixelData`] (rescale, window, VOI LUT) either way.

use dicom_core::value::{PrimitiveValue, Value as DicomValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{DecodedPixelData, PixelDecoder, PixelRepresentation, PlanarConfiguration};
use dicom_transfer_syntax_registry::{entries, TransferSyntaxIndex, TransferSyntaxRegistry};

use super::jpeg12;
use super::ImagingError;

/// Lossy JPEG transfer syntaxes (Baseline, Process 1; Extended, Process 2 & 4): their 12-bit
/// frames go to libjpeg-turbo, and an image stored in them is lossy whatever its attributes say.
pub(crate) const LOSSY_JPEG: [&str; 2] = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"];

/// RLE Lossless.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Number of Frames (1 when absent or not a positive number).
pub(crate) fn number_of_frames(obj: &DefaultDicomObject) -> u32 {
    obj.element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
        .filter(|&n| n > 0 && n < u32::MAX as i64)
        .map_or(1, |n| n as u32)
}

fn attr_u16(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u16> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u16>().ok())
}

/// Decodes all frames (`frame` = `None`) or the 0-based `frame` of `obj`. Returns the pixel
/// data and the index of the asked-for frame in it: 0, or `frame` when a single-frame or
/// 1-bit image had to be decoded whole.
pub fn decode_pixels(
    obj: &DefaultDicomObject,
    frame: Option<u32>,
) -> Result<(DecodedPixelData<'_>, u32), ImagingError> {
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(ImagingError::PixelData("the file has no Pixel Data".into()));
    }
    if obj.meta().transfer_syntax().trim_end_matches('\0') == RLE_LOSSLESS {
        check_rle_headers(obj)?;
    }
    check_codestream_sizes(obj)?;
    let frames = number_of_frames(obj);
    // One frame of a multi-frame image alone; dicom-rs slices 1-bit data only whole.
    let single = frame.filter(|_| frames > 1 && attr_u16(obj, tags::BITS_ALLOCATED) != Some(1));
    let index = match single {
        Some(_) => 0,
        None => frame.unwrap_or(0),
    };
    let decoded = match single {
        Some(k) => obj.decode_pixel_data_frame(k),
        None => obj.decode_pixel_data(),
    };
    let e = match decoded {
        Ok(px) => return Ok((px, index)),
        Err(e) => e,
    };
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0');
    let name = TransferSyntaxRegistry
        .get(ts)
        .map_or("unknown", |t| t.name());
    let failed = format!("{e} (transfer syntax {ts}, {name})");
    let bits_stored = attr_u16(obj, tags::BITS_STORED).unwrap_or(0);
    if !LOSSY_JPEG.contains(&ts) || bits_stored <= 8 {
        return Err(ImagingError::PixelData(failed));
    }
    tracing::debug!(
        ts,
        bits_stored,
        "dicom-pixeldata rejected the JPEG ({e}); trying libjpeg-turbo"
    );
    let px = decode_with_libjpeg_turbo(obj, frames, single).map_err(|e2| match e2 {
        ImagingError::PixelData(m) => {
            ImagingError::PixelData(format!("{failed}; libjpeg-turbo: {m}"))
        }
        other => other,
    })?;
    Ok((px, index))
}

/// The fragments of an encapsulated Pixel Data (the offset table left out).
fn fragments(obj: &DefaultDicomObject) -> Option<&[Vec<u8>]> {
    match obj.element_opt(tags::PIXEL_DATA).ok().flatten()?.value() {
        DicomValue::PixelSequence(seq) => Some(seq.fragments()),
        _ => None,
    }
}

/// Checks the header of each RLE fragment (one per frame, PS3.5 A.4.2) before dicom-pixeldata
/// reads it: 64 bytes holding at most 15 segments (PS3.5 G.5). Its reader allocates the declared
/// number of segment offsets (a 12-byte fragment could ask for 16 GiB) and slices the fragment
/// by it unchecked.
fn check_rle_headers(obj: &DefaultDicomObject) -> Result<(), ImagingError> {
    let Some(fragments) = fragments(obj) else {
        return Ok(());
    };
    for (i, f) in fragments.iter().enumerate() {
        let segments = f.first_chunk::<4>().map(|b| u32::from_le_bytes(*b));
        match segments {
            Some(n) if f.len() >= 64 && n <= 15 => {}
            _ => {
                return Err(ImagingError::PixelData(format!(
                    "RLE fragment {i} ({} bytes) does not start with an RLE header of at most \
                     15 segments",
                    f.len()
                )))
            }
        }
    }
    Ok(())
}

/// Checks that no JPEG, JPEG-LS or JPEG 2000 codestream declares an image larger than Rows x
/// Columns before a decoder reads it: the decoders allocate what the codestream's own header
/// declares (the image_decode fuzzer found a JPEG whose frame header made jpeg-decoder ask for
/// 4 GB). A codestream starts a frame's first fragment.
fn check_codestream_sizes(obj: &DefaultDicomObject) -> Result<(), ImagingError> {
    let Some(fragments) = fragments(obj) else {
        return Ok(());
    };
    let rows = u32::from(attr_u16(obj, tags::ROWS).unwrap_or(0));
    let cols = u32::from(attr_u16(obj, tags::COLUMNS).unwrap_or(0));
    for (i, f) in fragments.iter().enumerate() {
        if let Some((height, width)) = codestream_size(f) {
            if height > rows || width > cols {
                return Err(ImagingError::PixelData(format!(
                    "the codestream in fragment {i} declares {width} x {height} pixels, the \
                     image is {cols} x {rows}"
                )));
            }
        }
    }
    Ok(())
}

/// (height, width) from the header of a JPEG (SOF), JPEG-LS (SOF55) or JPEG 2000 (SIZ)
/// codestream at the start of `b`; `None` when `b` starts no such codestream or the header is
/// not found in it.
fn codestream_size(b: &[u8]) -> Option<(u32, u32)> {
    let u16_at = |i: usize| {
        b.get(i..i + 2)
            .map(|x| u32::from(u16::from_be_bytes([x[0], x[1]])))
    };
    let u32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
    };
    match b.get(..4)? {
        // JPEG 2000: SOC then SIZ (Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz).
        [0xFF, 0x4F, 0xFF, 0x51] => {
            let (x, y) = (u32_at(8)?, u32_at(12)?);
            let (x0, y0) = (u32_at(16)?, u32_at(20)?);
            Some((y.saturating_sub(y0), x.saturating_sub(x0)))
        }
        // JPEG and JPEG-LS: walk the marker segments to the frame header as the decoders do:
        // bytes between segments, fill bytes and markers without a length (SOI again, TEM,
        // RSTn) are passed over.
        [0xFF, 0xD8, ..] => {
            let mut at = 2;
            loop {
                at += b.get(at..)?.iter().position(|&x| x == 0xFF)?;
                while b.get(at + 1) == Some(&0xFF) {
                    at += 1;
                }
                let marker = *b.get(at + 1)?;
                if matches!(marker, 0x01 | 0xD0..=0xD8) {
                    at += 2;
                    continue;
                }
                let sof = matches!(marker, 0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC))
                    || marker == 0xF7;
                if sof {
                    return Some((u16_at(at + 5)?, u16_at(at + 7)?));
                }
                if matches!(marker, 0xD9 | 0xDA) {
                    return None;
                }
                at += 2 + u16_at(at + 2)? as usize;
            }
        }
        _ => None,
    }
}

/// Decodes every frame (or only `single`) with libjpeg-turbo into a native copy of `obj`
/// and lets dicom-pixeldata read that, so the result carries the same attributes as its own.
fn decode_with_libjpeg_turbo(
    obj: &DefaultDicomObject,
    frames: u32,
    single: Option<u32>,
) -> Result<DecodedPixelData<'static>, ImagingError> {
    let missing = |what: &str| ImagingError::PixelData(format!("{what} is missing"));
    let rows = attr_u16(obj, tags::ROWS).ok_or_else(|| missing("Rows"))?;
    let cols = attr_u16(obj, tags::COLUMNS).ok_or_else(|| missing("Columns"))?;
    let samples = attr_u16(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let bits_allocated =
        attr_u16(obj, tags::BITS_ALLOCATED).ok_or_else(|| missing("Bits Allocated"))?;
    if !matches!(samples, 1 | 3) || !matches!(bits_allocated, 8 | 16) {
        return Err(ImagingError::Unsupported(format!(
            "lossy JPEG with {samples} samples per pixel and {bits_allocated} bits allocated"
        )));
    }
    let element = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| missing("Pixel Data"))?;
    let DicomValue::PixelSequence(seq) = element.value() else {
        return Err(ImagingError::PixelData(
            "a JPEG transfer syntax with native (not encapsulated) Pixel Data".into(),
        ));
    };
    let groups = fragment_groups(seq.offset_table(), seq.fragments(), frames)
        .map_err(ImagingError::PixelData)?;
    let frame_len = rows as usize * cols as usize * samples as usize;
    let wanted: Vec<u32> = match single {
        Some(k) if k >= frames => {
            return Err(ImagingError::PixelData(format!(
                "frame {k} asked for, the image has {frames}"
            )))
        }
        Some(k) => vec![k],
        None => (0..frames).collect(),
    };
    // Frames before the one asked for stay zero: dicom-pixeldata slices frame k at its offset.
    let in_buffer = single.map_or(frames, |k| k + 1) as usize;
    let encapsulated: usize = seq.fragments().iter().map(Vec::len).sum();
    jpeg12::plausible_size(frame_len * in_buffer * 2, encapsulated)?;
    let mut values = vec![0u16; frame_len * in_buffer];
    for f in wanted {
        let codestream: Vec<u8> = groups[f as usize]
            .iter()
            .flat_map(|&i| seq.fragments()[i].iter().copied())
            .collect();
        let decoded = jpeg12::decode(&codestream, rows.into(), cols.into(), samples).map_err(
            |e| match e {
                ImagingError::PixelData(m) => ImagingError::PixelData(format!("frame {f}: {m}")),
                other => other,
            },
        )?;
        if decoded.precision > 8 && bits_allocated == 8 {
            return Err(ImagingError::PixelData(format!(
                "a {}-bit JPEG frame in 8 bits allocated",
                decoded.precision
            )));
        }
        let at = f as usize * frame_len;
        values[at..at + frame_len].copy_from_slice(&decoded.samples);
    }
    let mut native = obj.clone();
    native
        .meta_mut()
        .set_transfer_syntax(&entries::EXPLICIT_VR_LITTLE_ENDIAN);
    let pixel_data = if bits_allocated == 16 {
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(values.into()))
    } else {
        let bytes: Vec<u8> = values.into_iter().map(|v| v as u8).collect();
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(bytes.into()))
    };
    native.put(pixel_data);
    if samples == 3 {
        // libjpeg-turbo converted the frames to RGB, interleaved.
        native.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("RGB"),
        ));
        native.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
    }
    let px = match single {
        Some(k) => native.decode_pixel_data_frame(k),
        None => native.decode_pixel_data(),
    }
    .map_err(|e| ImagingError::PixelData(e.to_string()))?;
    Ok(px.to_owned())
}

/// Which fragments make up each frame (PS3.5 A.4): by the Basic Offset Table when it has one
/// entry per frame; one fragment per frame when the counts match; all fragments for a single
/// frame; else a new frame at each fragment that starts a JPEG / JPEG 2000 codestream.
pub(crate) fn fragment_groups<F: AsRef<[u8]>>(
    offsets: &[u32],
    fragments: &[F],
    frames: u32,
) -> Result<Vec<Vec<usize>>, String> {
    let n = frames as usize;
    if offsets.len() == n && n > 0 {
        // Position of each fragment's item tag, relative to the first fragment.
        let mut pos = Vec::with_capacity(fragments.len());
        let mut at = 0u64;
        for f in fragments {
            pos.push(at);
            at += 8 + f.as_ref().len() as u64;
        }
        let mut groups = vec![Vec::new(); n];
        for (i, p) in pos.iter().enumerate() {
            let frame = offsets.iter().rposition(|&o| o as u64 <= *p).unwrap_or(0);
            groups[frame].push(i);
        }
        if groups.iter().all(|g| !g.is_empty()) {
            return Ok(groups);
        }
        return Err("the Basic Offset Table does not match the fragments".into());
    }
    if fragments.len() == n {
        return Ok((0..n).map(|i| vec![i]).collect());
    }
    if n == 1 {
        return Ok(vec![(0..fragments.len()).collect()]);
    }
    let starts_codestream = |f: &[u8]| {
        f.starts_with(&[0xFF, 0xD8]) // JPEG, JPEG-LS
            || f.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) // JPEG 2000 codestream
            || f.get(4..8) == Some(b"jP  ") // JP2 file
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, f) in fragments.iter().enumerate() {
        if groups.is_empty() || starts_codestream(f.as_ref()) {
            groups.push(Vec::new());
        }
        groups.last_mut().expect("a group was pushed").push(i);
    }
    if groups.len() == n {
        Ok(groups)
    } else {
        Err(format!(
            "{} fragments, {n} frames and no usable offset table",
            fragments.len()
        ))
    }
}

/// The stored value of a sample `v` of `bits` bits allocated (already sign-extended from
/// `bits` when signed): sign-extended from Bits Stored when the pixels are signed.
pub(crate) fn sign_extend(v: i64, bits: u32, bits_stored: u32, signed: bool) -> f64 {
    if signed && bits_stored > 0 && bits_stored < bits {
        let shift = 64 - bits_stored;
        ((v << shift) >> shift) as f64
    } else {
        v as f64
    }
}

/// Stored values of one frame as f64, sign-extended from Bits Stored for signed data.
pub fn raw_frame(px: &DecodedPixelData<'_>, frame: u32) -> Result<Vec<f64>, ImagingError> {
    let n = px.rows() as usize * px.columns() as usize * px.samples_per_pixel() as usize;
    let signed = px.pixel_representation() == PixelRepresentation::Signed;
    let bits_stored = px.bits_stored() as u32;
    let ba = px.bits_allocated();
    let short = || {
        ImagingError::PixelData(format!(
            "frame {frame} is shorter than {n} samples of {ba} bits"
        ))
    };
    let sign_extend = |v: i64, bits: u32| sign_extend(v, bits, bits_stored, signed);
    let out: Vec<f64> = match ba {
        1 => {
            // dicom-pixeldata expands 1-bit samples to one byte each, 0 or 255.
            let d = px
                .frame_data(frame)
                .map_err(|e| ImagingError::PixelData(e.to_string()))?;
            let d = d.get(..n).ok_or_else(short)?;
            d.iter().map(|&b| if b != 0 { 1.0 } else { 0.0 }).collect()
        }
        8 => {
            let d = px
                .frame_data(frame)
                .map_err(|e| ImagingError::PixelData(e.to_string()))?;
            let d = d.get(..n).ok_or_else(short)?;
            if signed {
                d.iter().map(|&b| sign_extend(b as i8 as i64, 8)).collect()
            } else {
                d.iter().map(|&b| b as f64).collect()
            }
        }
        16 => {
            let d = px
                .frame_data(frame)
                .map_err(|e| ImagingError::PixelData(e.to_string()))?;
            let d = d.get(..n * 2).ok_or_else(short)?;
            d.chunks_exact(2)
                .map(|c| {
                    let b = [c[0], c[1]];
                    if signed {
                        sign_extend(i16::from_ne_bytes(b) as i64, 16)
                    } else {
                        u16::from_ne_bytes(b) as f64
                    }
                })
                .collect()
        }
        32 => {
            let d = px
                .frame_data(frame)
                .map_err(|e| ImagingError::PixelData(e.to_string()))?;
            let d = d.get(..n * 4).ok_or_else(short)?;
            d.chunks_exact(4)
                .map(|c| {
                    let b = [c[0], c[1], c[2], c[3]];
                    if signed {
                        sign_extend(i32::from_ne_bytes(b) as i64, 32)
                    } else {
                        u32::from_ne_bytes(b) as f64
                    }
                })
                .collect()
        }
        other => return Err(ImagingError::Unsupported(format!("{other} bits allocated"))),
    };
    if px.samples_per_pixel() == 3 && px.planar_configuration() != PlanarConfiguration::Standard {
        // Colour-by-plane: reorder RRR..GGG..BBB.. into RGBRGB...
        let plane = n / 3;
        let mut inter = vec![0.0; n];
        for (i, v) in out.iter().enumerate() {
            let (c, p) = (i / plane, i % plane);
            inter[p * 3 + c] = *v;
        }
        return Ok(inter);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn codestream_headers_give_their_image_size() {
        let mut j2k = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
        for v in [5000u32, 4000, 0, 0] {
            j2k.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(codestream_size(&j2k), Some((4000, 5000)));
        // SOI, an APP0 of 4 bytes, then SOF0: precision 8, 300 lines, 200 columns.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 1, 44, 0, 200, 1,
        ];
        assert_eq!(codestream_size(&jpeg), Some((300, 200)));
        // A stray byte, a second SOI and fill bytes before the frame header (the image_decode
        // fuzzer's find).
        let odd = [
            0xFF, 0xD8, 0x00, 0xFF, 0xD8, 0xFF, 0xFF, 0xC0, 0, 11, 8, 1, 44, 0, 200, 1,
        ];
        assert_eq!(codestream_size(&odd), Some((300, 200)));
        assert_eq!(codestream_size(&[0xFF, 0xD8, 0xFF]), None);
        assert_eq!(codestream_size(b"RLE data"), None);
    }

    use super::*;

    #[test]
    fn fragments_group_into_frames() {
        let frags = vec![vec![0xFF, 0xD8, 1], vec![2, 3], vec![0xFF, 0xD8, 4]];
        // Offset table: frame 2 starts at the third item (8+3 + 8+2 = 21).
        assert_eq!(
            fragment_groups(&[0, 21], &frags, 2).unwrap(),
            vec![vec![0, 1], vec![2]]
        );
        // No table: JPEG markers.
        assert_eq!(
            fragment_groups::<Vec<u8>>(&[], &frags, 2).unwrap(),
            vec![vec![0, 1], vec![2]]
        );
        assert_eq!(fragment_groups::<Vec<u8>>(&[], &frags, 3).unwrap().len(), 3);
        assert_eq!(
            fragment_groups::<Vec<u8>>(&[], &frags, 1).unwrap(),
            vec![vec![0, 1, 2]]
        );
        assert!(fragment_groups::<Vec<u8>>(&[], &frags, 5).is_err());
    }

    /// Found by the `image_decode` fuzz target (fuzz/regressions/image_decode/): a 1-byte
    /// lossy JPEG "frame" of 11 bits stored in a data set saying 65535 x 7437 x 3 made the node
    /// allocate 2.9 GB before reading the codestream.
    #[test]
    fn implausibly_large_12_bit_jpeg_frames_are_refused_before_allocating() {
        let e = jpeg12::plausible_size(65535 * 7437 * 3 * 2, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2924302770 bytes"), "{e}");
        assert!(jpeg12::plausible_size(512 * 512 * 2, 9).is_ok());
        assert!(jpeg12::plausible_size(4096 * 4096 * 2, 1 << 20).is_ok());
    }

    /// Found by the `image_decode` fuzz target (fuzz/regressions/image_decode/): dicom-pixeldata
    /// allocated the segment count an RLE fragment declares (here 2^30, 4 GiB) and then sliced
    /// the 12-byte fragment by it.
    #[test]
    fn rle_fragments_declaring_too_many_segments_are_refused() {
        use dicom_core::value::PixelFragmentSequence;
        use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
        let mut obj = InMemDicomObject::new_empty();
        for (tag, v) in [
            (tags::ROWS, 2u16),
            (tags::COLUMNS, 2),
            (tags::BITS_ALLOCATED, 8),
            (tags::BITS_STORED, 8),
            (tags::HIGH_BIT, 7),
            (tags::SAMPLES_PER_PIXEL, 1),
            (tags::PIXEL_REPRESENTATION, 0),
        ] {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        }
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("MONOCHROME2"),
        ));
        let fragment = vec![0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0];
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment]),
        ));
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.1.1")
            .media_storage_sop_instance_uid("2.25.1")
            .transfer_syntax(RLE_LOSSLESS)
            .build()
            .unwrap();
        let obj = obj.with_exact_meta(meta);
        for frame in [None, Some(0)] {
            let Err(e) = decode_pixels(&obj, frame) else {
                panic!("a 12-byte RLE fragment decoded");
            };
            let e = e.to_string();
            assert!(e.contains("RLE fragment 0 (12 bytes)"), "{e}");
        }
    }
}
