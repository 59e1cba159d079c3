//! Pixel data for WADO-RS: frames cut out of the stored Pixel Data (native or encapsulated,
//! PS3.5 A.4), and frames rendered to 8-bit JPEG/PNG (PS3.18 8.3.5: modality LUT, VOI
//! window, MONOCHROME1 inverted, fit into a viewport). Decoding is [`crate::imaging`]'s, as for
//! inference, so both decode the same transfer syntaxes. No HTTP here.

use dicom_core::value::{PrimitiveValue, Value as DicomValue};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::VoiLutFunction;
use std::io::Cursor;

use crate::imaging::decode::{decode_pixels, fragment_groups, number_of_frames, raw_frame};
use crate::imaging::window::apply_window;
use crate::imaging::{guard, resize, ImagingError};

/// Why frames could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    /// The instance has no Pixel Data.
    #[error("the instance has no pixel data")]
    NoPixelData,
    /// A frame number is 0 or past the last frame (1-based).
    #[error("frame {0} is out of range: the instance has {1} frame(s)")]
    OutOfRange(u32, u32),
    /// The encapsulated fragments cannot be grouped into the frames.
    #[error("cannot find the frame boundaries: {0}")]
    Fragments(String),
    /// Decoding, windowing or resizing failed.
    #[error("{0}")]
    Decode(String),
    /// The JPEG/PNG encoder failed.
    #[error("image encoding failed: {0}")]
    Encode(String),
}

impl From<ImagingError> for PixelError {
    fn from(e: ImagingError) -> Self {
        PixelError::Decode(e.to_string())
    }
}

/// Media type of a frame of pixel data as stored in `transfer_syntax` (PS3.18 Table 8.7.3-2);
/// `None` for the native (and deflated) syntaxes, whose frames are `application/octet-stream`.
pub fn compressed_media_type(transfer_syntax: &str) -> Option<&'static str> {
    Some(match transfer_syntax {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => return None,
    })
}

/// Parses a PS3.18 frame list (`1,3,5`, 1-based).
pub fn parse_frame_list(raw: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for item in raw.split(',') {
        let item = item.trim();
        let n: u32 = item.parse().map_err(|_| {
            format!("'{item}' is not a frame number (a comma-separated list of numbers from 1)")
        })?;
        if n == 0 {
            return Err("frame numbers start at 1".into());
        }
        out.push(n);
    }
    if out.len() > 10_000 {
        return Err("more than 10000 frames asked for".into());
    }
    Ok(out)
}

/// Number of frames of an image instance.
pub fn frame_count(obj: &DefaultDicomObject) -> Result<u32, PixelError> {
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(PixelError::NoPixelData);
    }
    Ok(number_of_frames(obj))
}

fn check_range(frames: &[u32], n: u32) -> Result<(), PixelError> {
    match frames.iter().find(|&&f| f == 0 || f > n) {
        Some(&f) => Err(PixelError::OutOfRange(f, n)),
        None => Ok(()),
    }
}

fn attr_u32(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
}

/// The stored bytes of the given frames (1-based): native pixel data sliced into frames in
/// little endian (bit-packed for 1-bit data), or the encapsulated fragments of each frame.
pub fn stored_frames(obj: &DefaultDicomObject, frames: &[u32]) -> Result<Vec<Vec<u8>>, PixelError> {
    let n = frame_count(obj)?;
    check_range(frames, n)?;
    let elem = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or(PixelError::NoPixelData)?;
    match elem.value() {
        DicomValue::PixelSequence(seq) => {
            let groups = fragment_groups(seq.offset_table(), seq.fragments(), n)
                .map_err(PixelError::Fragments)?;
            Ok(frames
                .iter()
                .map(|&f| {
                    groups[f as usize - 1]
                        .iter()
                        .flat_map(|&i| seq.fragments()[i].iter().copied())
                        .collect()
                })
                .collect())
        }
        DicomValue::Primitive(p) => {
            let bytes = le_bytes(p);
            let rows = attr_u32(obj, tags::ROWS).unwrap_or(0) as u64;
            let cols = attr_u32(obj, tags::COLUMNS).unwrap_or(0) as u64;
            let spp = attr_u32(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u64;
            let ba = attr_u32(obj, tags::BITS_ALLOCATED).unwrap_or(16) as u64;
            let frame_bits = rows * cols * spp * ba;
            if frame_bits == 0 {
                return Err(PixelError::Decode(
                    "rows, columns or bits allocated is 0".into(),
                ));
            }
            frames
                .iter()
                .map(|&f| {
                    let start = (f as u64 - 1) * frame_bits;
                    bit_slice(&bytes, start, frame_bits).ok_or_else(|| {
                        PixelError::Decode(format!(
                            "pixel data too short for frame {f} of {rows}x{cols}x{spp} at {ba} bits"
                        ))
                    })
                })
                .collect()
        }
        DicomValue::Sequence(_) => Err(PixelError::NoPixelData),
    }
}

/// Decoded (native, little endian) bytes of the given frames, for a client that wants
/// uncompressed frames of an instance stored compressed.
pub fn decoded_frames(
    obj: &DefaultDicomObject,
    frames: &[u32],
) -> Result<Vec<Vec<u8>>, PixelError> {
    let n = frame_count(obj)?;
    check_range(frames, n)?;
    guard::<_, ImagingError>(|| {
        frames
            .iter()
            .map(|&f| {
                let (px, index) = decode_pixels(obj, Some(f - 1))?;
                let d = px
                    .frame_data(index)
                    .map_err(|e| ImagingError::PixelData(e.to_string()))?;
                Ok(d.to_vec())
            })
            .collect()
    })
    .map_err(PixelError::from)
}

/// A primitive value's bytes in little endian whatever the host.
fn le_bytes(p: &PrimitiveValue) -> Vec<u8> {
    match p {
        PrimitiveValue::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        PrimitiveValue::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        PrimitiveValue::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        PrimitiveValue::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        PrimitiveValue::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        PrimitiveValue::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        other => other.to_bytes().into_owned(),
    }
}

/// `len` bits of `data` from bit `start` (LSB first, as 1-bit DICOM pixel data is packed),
/// repacked from bit 0. Byte-aligned slices are copied as they are.
fn bit_slice(data: &[u8], start: u64, len: u64) -> Option<Vec<u8>> {
    let end = start.checked_add(len)?;
    if end.div_ceil(8) > data.len() as u64 {
        return None;
    }
    if start % 8 == 0 && len % 8 == 0 {
        return Some(data[(start / 8) as usize..(end / 8) as usize].to_vec());
    }
    let mut out = vec![0u8; len.div_ceil(8) as usize];
    for i in 0..len {
        let b = start + i;
        if data[(b / 8) as usize] >> (b % 8) & 1 == 1 {
            out[(i / 8) as usize] |= 1 << (i % 8);
        }
    }
    Some(out)
}

/// Output format of a rendered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

impl ImageFormat {
    pub fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
        }
    }
}

/// PS3.18 8.3.5.1 rendering parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderParams {
    pub format: ImageFormat,
    /// `window=center,width,function` (in modality units); `None` = the stored window,
    /// else the frame's min/max.
    pub window: Option<(f64, f64, VoiLutFunction)>,
    /// `viewport=vw,vh`: scale to fit, aspect kept.
    pub viewport: Option<(u32, u32)>,
    /// JPEG quality 1–100.
    pub quality: u8,
}

/// Renders frame `frame` (1-based) to an 8-bit JPEG or PNG.
pub fn render(
    obj: &DefaultDicomObject,
    frame: u32,
    params: &RenderParams,
) -> Result<Vec<u8>, PixelError> {
    let n = frame_count(obj)?;
    check_range(&[frame], n)?;
    let (w, h, channels, planes) = guard(|| render_planes(obj, frame - 1, params.window))?;
    let (w2, h2) = match params.viewport {
        Some((vw, vh)) => fit(w, h, vw, vh),
        None => (w, h),
    };
    let planes: Vec<Vec<f32>> = planes
        .iter()
        .map(|p| resize(p, w, h, w2, h2))
        .collect::<Result<_, _>>()?;
    let pixels = (w2 * h2) as usize;
    let mut out8 = Vec::with_capacity(pixels * channels);
    for i in 0..pixels {
        for p in &planes {
            out8.push((p[i].clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    let colour = if channels == 3 {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    let mut buf = Cursor::new(Vec::new());
    match params.format {
        ImageFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, params.quality)
                .encode(&out8, w2, h2, colour)
                .map_err(|e| PixelError::Encode(e.to_string()))?;
        }
        ImageFormat::Png => {
            use image::ImageEncoder;
            image::codecs::png::PngEncoder::new(&mut buf)
                .write_image(&out8, w2, h2, colour)
                .map_err(|e| PixelError::Encode(e.to_string()))?;
        }
    }
    Ok(buf.into_inner())
}

/// The largest size with the aspect of `w`×`h` that fits in `vw`×`vh` (at least 1×1).
pub fn fit(w: u32, h: u32, vw: u32, vh: u32) -> (u32, u32) {
    let s = (vw as f64 / w as f64).min(vh as f64 / h as f64);
    (
        ((w as f64 * s).round() as u32).clamp(1, vw.max(1)),
        ((h as f64 * s).round() as u32).clamp(1, vh.max(1)),
    )
}

/// One frame as planes in [0, 1]: one grey plane (VOI applied, MONOCHROME1 inverted) or R, G, B.
#[allow(clippy::type_complexity)]
fn render_planes(
    obj: &DefaultDicomObject,
    frame: u32,
    window: Option<(f64, f64, VoiLutFunction)>,
) -> Result<(u32, u32, usize, Vec<Vec<f32>>), ImagingError> {
    let (px, idx) = decode_pixels(obj, Some(frame))?;
    let (w, h) = (px.columns(), px.rows());
    if w == 0 || h == 0 {
        return Err(ImagingError::PixelData(
            "image has no rows or columns".into(),
        ));
    }
    let raw = raw_frame(&px, idx)?;
    let photometric = px.photometric_interpretation().to_string();
    if px.samples_per_pixel() == 3 {
        let top = ((1u64 << px.bits_stored().clamp(1, 32)) - 1) as f64;
        let mut planes: Vec<Vec<f32>> = (0..3).map(|_| Vec::with_capacity(raw.len() / 3)).collect();
        for p in raw.chunks_exact(3) {
            let (a, b, c) = (p[0] / top, p[1] / top, p[2] / top);
            let rgb = if photometric.starts_with("YBR") {
                // YBR_FULL (PS3.3 C.7.6.3.1.2) to RGB.
                let (cb, cr) = (b - 0.5, c - 0.5);
                [
                    a + 1.402 * cr,
                    a - 0.344136 * cb - 0.714136 * cr,
                    a + 1.772 * cb,
                ]
            } else {
                [a, b, c]
            };
            for (plane, v) in planes.iter_mut().zip(rgb) {
                plane.push(v as f32);
            }
        }
        return Ok((w, h, 3, planes));
    }
    if px.samples_per_pixel() != 1 {
        return Err(ImagingError::Unsupported(format!(
            "{} samples per pixel",
            px.samples_per_pixel()
        )));
    }
    let fi = frame as usize;
    let (slope, intercept) = px
        .rescale()
        .ok()
        .and_then(|r| r.get(fi).or_else(|| r.first()).copied())
        .filter(|r| r.slope.is_finite() && r.intercept.is_finite() && r.slope != 0.0)
        .map_or((1.0, 0.0), |r| (r.slope, r.intercept));
    let values: Vec<f64> = raw.iter().map(|&v| v * slope + intercept).collect();
    let stored = || {
        let w = px
            .window()
            .ok()
            .flatten()
            .and_then(|w| w.get(fi).or_else(|| w.first()).copied())
            .filter(|w| w.width.is_finite() && w.center.is_finite() && w.width > 0.0)?;
        let f = px
            .voi_lut_function()
            .ok()
            .flatten()
            .and_then(|f| f.get(fi).or_else(|| f.first()).copied())
            .unwrap_or_default();
        Some((w.center, w.width, f))
    };
    let grey: Vec<f32> = match window.or_else(stored) {
        Some((c, wd, f)) => values
            .iter()
            .map(|&v| apply_window(v, c, wd, f) as f32)
            .collect(),
        None => {
            let (lo, hi) = values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let range = hi - lo;
            values
                .iter()
                .map(|&v| {
                    if range > 0.0 {
                        ((v - lo) / range) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        }
    };
    let grey = if photometric == "MONOCHROME1" {
        grey.into_iter().map(|v| 1.0 - v).collect()
    } else {
        grey
    };
    Ok((w, h, 1, vec![grey]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lists_parse_and_name_the_bad_item() {
        assert_eq!(parse_frame_list("1,3, 2").unwrap(), vec![1, 3, 2]);
        assert!(parse_frame_list("0").unwrap_err().contains("start at 1"));
        assert!(parse_frame_list("1,x").unwrap_err().contains("'x'"));
        assert!(parse_frame_list("").is_err());
        assert!(parse_frame_list("-1").is_err());
    }

    #[test]
    fn bit_slices_repack_from_bit_zero() {
        let data = [0b1010_1100u8, 0b0000_0011];
        assert_eq!(bit_slice(&data, 0, 16).unwrap(), data.to_vec());
        assert_eq!(bit_slice(&data, 2, 4).unwrap(), vec![0b1011]);
        assert_eq!(bit_slice(&data, 6, 4).unwrap(), vec![0b1110]);
        assert!(bit_slice(&data, 10, 8).is_none());
    }

    #[test]
    fn viewport_fit_keeps_the_aspect() {
        assert_eq!(fit(512, 256, 128, 128), (128, 64));
        assert_eq!(fit(256, 512, 128, 128), (64, 128));
        assert_eq!(fit(100, 100, 300, 200), (200, 200));
        assert_eq!(fit(10000, 1, 10, 10), (10, 1));
    }

    #[test]
    fn media_types_follow_ps3_18() {
        assert_eq!(
            compressed_media_type("1.2.840.10008.1.2.5"),
            Some("image/dicom-rle")
        );
        assert_eq!(
            compressed_media_type("1.2.840.10008.1.2.4.90"),
            Some("image/jp2")
        );
        assert_eq!(
            compressed_media_type("1.2.840.10008.1.2.4.80"),
            Some("image/jls")
        );
        assert_eq!(
            compressed_media_type("1.2.840.10008.1.2.4.50"),
            Some("image/jpeg")
        );
        assert_eq!(compressed_media_type("1.2.840.10008.1.2.1"), None);
        assert_eq!(compressed_media_type("1.2.840.10008.1.2.1.99"), None);
    }
}
