//! From a DICOM file or PNG/JPEG bytes to the model's input tensor.
//!
//! DICOM: decode ([`super::decode`]: dicom-pixeldata for native, deflate, RLE, JPEG, JPEG-LS,
//! JPEG 2000, libjpeg-turbo for 12-bit lossy JPEG) -> raw
//! stored values -> modality LUT (rescale slope/intercept) -> VOI: the file's first window
//! (center/width, with its VOI LUT function), else its first VOI LUT, else the percentile
//! window of the frame ignoring pixel padding -> clamp to [0, 1] -> MONOCHROME1 inverted ->
//! resize (convolution, bilinear filter, aspect not kept) -> `(v - mean) / std` -> NCHW f32.
//!
//! PNG/JPEG: decode with `image`, grey = ITU-R 601 luma in [0, 1], `is_colour` when the
//! channels differ meaningfully, then the percentile window (as training did for every
//! source, tools/train/train.py), resize and normalise as above.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::DecodedPixelData;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

use super::manifest::InputSpec;
use super::InferenceError;
use crate::imaging::decode::{decode_pixels, number_of_frames, raw_frame};
use crate::imaging::j2k;
use crate::imaging::lut::grey_resized;
use crate::imaging::window::{
    colour_to_grey_unit, padding_range, percentiles, WindowInfo, Windowing,
};
use crate::imaging::{guard, resize};

/// A preprocessed image: the tensor for one or more frames plus what we learnt on the way.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// `items x channels x height x width` values, NCHW, normalised.
    pub tensor: Vec<f32>,
    /// Number of images (frames) in `tensor`.
    pub items: usize,
    /// Header attributes (DICOM only).
    pub header: Option<HeaderAttrs>,
    /// Source image facts.
    pub image: ImageInfo,
    /// True for colour photographs/screenshots (channels differ meaningfully); the gate
    /// rejects those.
    pub is_colour: bool,
    /// Milliseconds spent reading and decoding.
    pub decode_ms: f64,
    /// Milliseconds spent windowing, resizing and normalising.
    pub preprocess_ms: f64,
}

/// DICOM header attributes used by the applicability rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HeaderAttrs {
    /// Modality (0008,0060).
    pub modality: Option<String>,
    /// Body Part Examined (0018,0015).
    pub body_part: Option<String>,
    /// View Position (0018,5101).
    pub view_position: Option<String>,
    /// Photometric Interpretation (0028,0004).
    pub photometric: Option<String>,
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: Option<String>,
}

/// Facts about the source image, reported with each result.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImageInfo {
    /// `dicom`, `png` or `jpeg`.
    pub source: String,
    /// Rows of the source image.
    pub rows: u32,
    /// Columns of the source image.
    pub cols: u32,
    /// Frames in the source.
    pub frames: u32,
    /// Frames that went into the tensor.
    pub frames_used: u32,
    /// Photometric interpretation (DICOM) or colour type (PNG/JPEG).
    pub photometric: String,
    /// Bits stored (DICOM).
    pub bits_stored: Option<u16>,
    /// VOI window used for the first frame (DICOM).
    pub window: Option<WindowInfo>,
    /// Row and column spacing in mm: Imager Pixel Spacing (0018,1164) of a projection
    /// radiograph, else Pixel Spacing (0028,0030) (DICOM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixel_spacing_mm: Option<[f64; 2]>,
    /// JPEG 2000 wavelet resolution levels not decoded: the model saw the image decoded at
    /// 1/2^n of its size (DICOM; see `jpeg2000_reduced` in the model's manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution_levels_dropped: Option<u32>,
}

/// Raw decoded pixel values (stored values, before any LUT), for comparison with other decoders.
#[derive(Debug, Clone)]
pub struct RawPixels {
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub cols: u32,
    /// Frames decoded.
    pub frames: u32,
    /// Samples per pixel.
    pub samples: u16,
    /// Photometric interpretation after decoding.
    pub photometric: String,
    /// Values in frame, row, column, sample order.
    pub values: Vec<f64>,
}

/// Opens a DICOM file (the whole file, pixel data included).
pub fn open_dicom(path: &Path) -> Result<DefaultDicomObject, InferenceError> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(InferenceError::io(path, e));
    }
    guard(|| {
        crate::dataset::open_file(path, crate::dataset::Part::Whole)
            .map_err(|e| InferenceError::Dicom(e.to_string()))
    })
}

/// Reads the applicability attributes from a DICOM object.
pub fn header_attrs(obj: &DefaultDicomObject) -> HeaderAttrs {
    let s = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|v| {
                v.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_owned()
            })
    };
    HeaderAttrs {
        modality: s(tags::MODALITY),
        body_part: s(tags::BODY_PART_EXAMINED),
        view_position: s(tags::VIEW_POSITION),
        photometric: s(tags::PHOTOMETRIC_INTERPRETATION),
        sop_class_uid: s(tags::SOP_CLASS_UID),
    }
}

/// Imager Pixel Spacing, else Pixel Spacing: two positive finite numbers (row, column) in mm.
fn pixel_spacing(obj: &DefaultDicomObject) -> Option<[f64; 2]> {
    [tags::IMAGER_PIXEL_SPACING, tags::PIXEL_SPACING]
        .into_iter()
        .find_map(|tag| {
            let v = obj
                .element_opt(tag)
                .ok()
                .flatten()?
                .to_multi_float64()
                .ok()?;
            match v.as_slice() {
                [r, c] if r.is_finite() && c.is_finite() && *r > 0.0 && *c > 0.0 => Some([*r, *c]),
                _ => None,
            }
        })
}

/// Decodes the raw stored pixel values of all frames (or only the first).
pub fn decode_raw(obj: &DefaultDicomObject, first_only: bool) -> Result<RawPixels, InferenceError> {
    guard(|| {
        let px = decode(obj, first_only)?;
        let frames = px.number_of_frames();
        let mut values = Vec::new();
        for f in 0..frames {
            values.extend(raw_frame(&px, f)?);
        }
        Ok(RawPixels {
            rows: px.rows(),
            cols: px.columns(),
            frames,
            samples: px.samples_per_pixel(),
            photometric: px.photometric_interpretation().to_string(),
            values,
        })
    })
}

/// Reads, decodes and preprocesses a DICOM file for a model with input `spec`.
pub fn preprocess_dicom(path: &Path, spec: &InputSpec) -> Result<Preprocessed, InferenceError> {
    let t0 = Instant::now();
    let obj = open_dicom(path)?;
    let header = header_attrs(&obj);
    preprocess_dicom_object(&obj, header, spec, t0)
}

/// Preprocesses an already opened DICOM object; `t0` is when reading started.
pub fn preprocess_dicom_object(
    obj: &DefaultDicomObject,
    header: HeaderAttrs,
    spec: &InputSpec,
    t0: Instant,
) -> Result<Preprocessed, InferenceError> {
    guard(|| {
        let first_only = spec.frames == "first";
        let one_frame = first_only || number_of_frames(obj) == 1;
        let reduced = (spec.jpeg2000_reduced && one_frame)
            .then(|| j2k::reduced_copy(obj, 0, spec.width, spec.height))
            .flatten();
        let px = decode(reduced.as_ref().map_or(obj, |(copy, _)| copy), first_only)?;
        let decode_ms = ms(t0);
        let t1 = Instant::now();
        // The image's own size, whatever resolution it was decoded at.
        let (rows, cols) = reduced
            .as_ref()
            .map_or((px.rows(), px.columns()), |(_, r)| r.full);
        let photometric = px.photometric_interpretation().to_string();
        let total_frames = number_of_frames(obj).max(px.number_of_frames());
        let frames_used = if first_only { 1 } else { px.number_of_frames() };
        let padding = padding_range(obj, px.pixel_representation());
        let monochrome = photometric.starts_with("MONOCHROME");
        if !monochrome && px.samples_per_pixel() != 3 {
            return Err(InferenceError::Unsupported(format!(
                "photometric interpretation {photometric} is not supported"
            )));
        }
        let mut tensor = Vec::with_capacity(frames_used as usize * plane_len(spec));
        let mut is_colour = false;
        let mut window_info = None;
        let windowing = Windowing {
            use_file: spec.windowing == "voi-or-percentile",
            percentile_low: spec.percentile_low,
            percentile_high: spec.percentile_high,
        };
        for f in 0..frames_used {
            let (grey, info, colour) =
                grey_resized(&px, f, padding, &windowing, spec.width, spec.height)?;
            is_colour |= colour;
            if f == 0 {
                window_info = info;
            }
            push_normalised(&mut tensor, &grey, spec);
        }
        let image = ImageInfo {
            source: "dicom".into(),
            rows,
            cols,
            frames: total_frames,
            frames_used,
            photometric,
            bits_stored: Some(px.bits_stored()),
            window: window_info,
            pixel_spacing_mm: pixel_spacing(obj),
            resolution_levels_dropped: reduced.map(|(_, r)| r.levels),
        };
        Ok(Preprocessed {
            tensor,
            items: frames_used as usize,
            header: Some(header),
            image,
            is_colour,
            decode_ms,
            preprocess_ms: ms(t1),
        })
    })
}

/// Decodes PNG or JPEG bytes and preprocesses them for a model with input `spec`.
pub fn preprocess_image(bytes: &[u8], spec: &InputSpec) -> Result<Preprocessed, InferenceError> {
    guard(|| {
        let t0 = Instant::now();
        let format = image::guess_format(bytes)
            .map_err(|e| InferenceError::Image(format!("unknown image format: {e}")))?;
        let source = match format {
            image::ImageFormat::Png => "png",
            image::ImageFormat::Jpeg => "jpeg",
            other => {
                return Err(InferenceError::Unsupported(format!(
                    "{other:?} images are not accepted (PNG or JPEG only)"
                )))
            }
        };
        let img = image::load_from_memory_with_format(bytes, format)
            .map_err(|e| InferenceError::Image(e.to_string()))?;
        let decode_ms = ms(t0);
        let t1 = Instant::now();
        let (w, h) = (img.width(), img.height());
        if w == 0 || h == 0 {
            return Err(InferenceError::Image("image has no pixels".into()));
        }
        let colour_type = format!("{:?}", img.color());
        let has_colour = img.color().has_color();
        let (grey, is_colour) = if has_colour {
            let rgb = img.into_rgb32f();
            let raw: Vec<f64> = rgb.as_raw().iter().map(|&v| v as f64).collect();
            colour_to_grey_unit(&raw)
        } else {
            let l = img.to_luma32f();
            (l.into_raw(), false)
        };
        // Training windowed every source with the percentile window; so do we.
        let (grey, window) = percentile_window_grey(&grey, spec);
        let mut tensor = Vec::with_capacity(plane_len(spec));
        push_resized(&mut tensor, &grey, w, h, spec)?;
        Ok(Preprocessed {
            tensor,
            items: 1,
            header: None,
            image: ImageInfo {
                source: source.into(),
                rows: h,
                cols: w,
                frames: 1,
                frames_used: 1,
                photometric: colour_type,
                bits_stored: None,
                window: Some(window),
                pixel_spacing_mm: None,
                resolution_levels_dropped: None,
            },
            is_colour,
            decode_ms,
            preprocess_ms: ms(t1),
        })
    })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn plane_len(spec: &InputSpec) -> usize {
    spec.channels as usize * spec.width as usize * spec.height as usize
}

/// Decodes all frames, or only the first, through the shared decoder ([`super::decode`]).
fn decode(
    obj: &DefaultDicomObject,
    first_only: bool,
) -> Result<DecodedPixelData<'_>, InferenceError> {
    let (px, _) = decode_pixels(obj, first_only.then_some(0))?;
    if px.rows() == 0 || px.columns() == 0 || px.number_of_frames() == 0 {
        return Err(InferenceError::PixelData(
            "image has no rows, columns or frames".into(),
        ));
    }
    if !matches!(px.samples_per_pixel(), 1 | 3) {
        return Err(InferenceError::Unsupported(format!(
            "{} samples per pixel",
            px.samples_per_pixel()
        )));
    }
    Ok(px)
}

/// Percentile window of a grey [0, 1] image (PNG/JPEG).
fn percentile_window_grey(grey: &[f32], spec: &InputSpec) -> (Vec<f32>, WindowInfo) {
    let mut values: Vec<f64> = grey.iter().map(|&v| v as f64).collect();
    let (lo, hi) = percentiles(&mut values, spec.percentile_low, spec.percentile_high);
    let range = hi - lo;
    let out = grey
        .iter()
        .map(|&v| {
            if range > 0.0 {
                ((v as f64 - lo) / range).clamp(0.0, 1.0) as f32
            } else {
                0.0
            }
        })
        .collect();
    let info = WindowInfo {
        source: "percentile".into(),
        center: Some((lo + hi) / 2.0),
        width: Some(range),
        function: None,
    };
    (out, info)
}

/// Resizes a grey [0, 1] plane to the model size, normalises it and appends `channels` copies.
fn push_resized(
    out: &mut Vec<f32>,
    grey: &[f32],
    width: u32,
    height: u32,
    spec: &InputSpec,
) -> Result<(), InferenceError> {
    let resized = resize(grey, width, height, spec.width, spec.height)?;
    push_normalised(out, &resized, spec);
    Ok(())
}

/// Normalises a grey [0, 1] plane of the model size and appends `channels` copies.
fn push_normalised(out: &mut Vec<f32>, resized: &[f32], spec: &InputSpec) {
    let (mean, std) = (spec.mean, spec.std);
    let start = out.len();
    out.extend(resized.iter().map(|v| (v - mean) / std));
    for _ in 1..spec.channels {
        out.extend_from_within(start..start + resized.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_bytes_are_errors() {
        let spec =
            crate::inference::manifest::Manifest::parse(crate::inference::manifest::tests::EXAMPLE)
                .unwrap()
                .input;
        assert!(preprocess_image(b"not an image", &spec).is_err());
        // A PNG signature followed by junk.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&[0u8; 40]);
        assert!(preprocess_image(&png, &spec).is_err());
    }
}
