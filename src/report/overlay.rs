//! The overlay: a Secondary Capture of one analysed source image, windowed to 8 bits, with a
//! black band above it carrying the findings, urgency, confidence tier and the disclaimer.
//!
//! Why Secondary Capture: every viewer displays it, and nothing in it claims to be an
//! acquisition (a derived DX "For Presentation" would invite measurement on a resampled
//! image). The text is burnt in with `font8x8`'s public-domain 8x8 glyphs (no font file).
//! The demo model gives no localisation, so there is no heat map or box; the band says so.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use font8x8::UnicodeFonts;

use super::sr::{Built, DeviceInfo};
use super::{
    da_tm, derived_uid, empty_el, result_key, seq_el, str_el, ReportError, OVERLAY_SERIES_NUMBER,
    SECONDARY_CAPTURE,
};
use crate::imaging::decode::decode_pixels;
use crate::imaging::lut::grey_resized;
use crate::imaging::window::{padding_range, Windowing};
use crate::imaging::{guard, ImagingError};
use crate::inference::preprocess;
use crate::result::{ImageEntry, StudyResult};

/// Longest side of the image part of the overlay, in pixels.
pub const LONG_SIDE: u32 = 1024;
/// Glyph scale: 8x8 glyphs drawn as 16x16.
const SCALE: usize = 2;
const LINE_H: usize = 10 * SCALE;
const MARGIN: usize = 8;

/// SOP Instance and Series UIDs of the overlay of one source image.
pub fn overlay_uids(study_uid: &str, result_version: i64, source_sop: &str) -> (String, String) {
    let key = result_key(study_uid, result_version);
    (
        derived_uid(&format!("{key}/overlay/{source_sop}")),
        derived_uid(&format!("{key}/overlay/series")),
    )
}

/// The lines burnt into the band for one image.
pub fn text_lines(result: &StudyResult, entry: &ImageEntry) -> Vec<String> {
    let tier = entry
        .uncertainty
        .as_ref()
        .and_then(|u| u.get("confidence"))
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .or_else(|| result.summary.confidence.clone())
        .unwrap_or_else(|| "n/a".into());
    let mut lines = vec![
        "NOT FOR DIAGNOSTIC USE - AI RESULT, UNVERIFIED".to_string(),
        format!(
            "URGENCY: {}   CONFIDENCE: {}",
            result.urgency.as_str().to_uppercase(),
            tier.to_uppercase()
        ),
    ];
    let present: Vec<_> = entry.findings.iter().filter(|f| f.presence).collect();
    if present.is_empty() {
        lines.push("NO FINDING ABOVE THRESHOLD".into());
    } else {
        lines.push("FINDINGS (PROBABILITY):".into());
        for f in present {
            lines.push(format!("  {} {:.2}", f.name.to_uppercase(), f.confidence));
        }
    }
    lines.push(format!(
        "MODEL {} {} - FINDINGS NOT LOCALISED (NO HEAT MAP)",
        result.model.id, result.model.version
    ));
    let drawn = localisation(entry);
    if let Some(model) = &drawn.contours_by {
        lines.push(format!("LUNG CONTOURS: {}", model.to_uppercase()));
    }
    if let Some((model, ratio)) = &drawn.ctr_by {
        lines.push(format!(
            "CTR {ratio:.2} (CARDIAC / THORACIC WIDTH LINES): {}",
            model.to_uppercase()
        ));
    }
    for m in result.validations() {
        lines.push(m.brief_note().to_uppercase());
    }
    lines
}

/// What the overlay draws on one image: contours in source pixels `[column, row]`, and the
/// CTR's points (normalised) with the model they come from.
#[derive(Debug, Default, PartialEq)]
pub struct Localisation {
    pub contours: Vec<Vec<[f32; 2]>>,
    pub contours_by: Option<String>,
    pub ctr_points: Vec<crate::measurement::Landmark>,
    pub ctr_by: Option<(String, f32)>,
}

/// The localisation of `entry`: the analysed lung fields' contours and CTR, else the CTR of
/// an analysed landmark model.
pub fn localisation(entry: &ImageEntry) -> Localisation {
    let mut out = Localisation::default();
    if let Some(seg) = entry
        .segmentation
        .as_ref()
        .filter(|s| s.status == "analysed")
    {
        if let Some(lungs) = &seg.lungs {
            out.contours = [&lungs.right, &lungs.left]
                .into_iter()
                .flatten()
                .map(|f| f.contour.clone())
                .filter(|c| c.len() >= 2)
                .collect();
            if !out.contours.is_empty() {
                out.contours_by = Some(seg.model_id.clone());
            }
            if let (Some(ctr), 4) = (&lungs.ctr, lungs.ctr_points.len()) {
                out.ctr_points = lungs.ctr_points.clone();
                out.ctr_by = Some((seg.model_id.clone(), ctr.ratio));
            }
        }
    }
    if out.ctr_by.is_none() {
        if let Some(lm) = entry.landmarks.as_ref().filter(|l| l.status == "analysed") {
            if let Some(ctr) = &lm.ctr {
                out.ctr_points = lm.points.clone();
                out.ctr_by = Some((lm.model_id.clone(), ctr.ratio));
            }
        }
    }
    out
}

/// Sets the pixels within `radius` of the segment from `a` to `b` (pixel coordinates).
fn draw_segment(px: &mut [u8], w: usize, h: usize, a: [f32; 2], b: [f32; 2], radius: i64, v: u8) {
    let steps = ((b[0] - a[0]).abs().max((b[1] - a[1]).abs()).ceil() as usize).max(1);
    for i in 0..=steps {
        let t = i as f32 / steps as f32;
        let (x, y) = (
            (a[0] + (b[0] - a[0]) * t).round() as i64,
            (a[1] + (b[1] - a[1]) * t).round() as i64,
        );
        for dy in -radius..=radius {
            for dx in -radius..=radius {
                let (xx, yy) = (x + dx, y + dy);
                if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                    px[yy as usize * w + xx as usize] = v;
                }
            }
        }
    }
}

/// A polyline drawn white on a black edge, so it shows on lung and bone alike.
fn draw_polyline(px: &mut [u8], w: usize, h: usize, points: &[[f32; 2]], closed: bool) {
    let n = points.len();
    let pairs = if closed { n } else { n.saturating_sub(1) };
    for (radius, value) in [(2, 0u8), (0, 255u8)] {
        for i in 0..pairs {
            draw_segment(px, w, h, points[i], points[(i + 1) % n], radius, value);
        }
    }
}

/// Draws `loc` on an image of `w` x `h` pixels showing a source of `cols` x `rows`.
pub fn draw_localisation(px: &mut [u8], w: u32, h: u32, cols: u32, rows: u32, loc: &Localisation) {
    let (w, h) = (w as usize, h as usize);
    let (sx, sy) = (w as f32 / cols.max(1) as f32, h as f32 / rows.max(1) as f32);
    for c in &loc.contours {
        let scaled: Vec<[f32; 2]> = c.iter().map(|[x, y]| [x * sx, y * sy]).collect();
        draw_polyline(px, w, h, &scaled, true);
    }
    let point = |class: &str| {
        loc.ctr_points
            .iter()
            .find(|p| p.class == class)
            .map(|p| [p.x * w as f32, p.y * h as f32])
    };
    let tick = (h as f32 / 60.0).max(3.0);
    for (right, left) in [
        ("heart_right", "heart_left"),
        ("thorax_right", "thorax_left"),
    ] {
        if let (Some(r), Some(l)) = (point(right), point(left)) {
            let y = (r[1] + l[1]) / 2.0;
            draw_polyline(px, w, h, &[[r[0], y], [l[0], y]], false);
            for x in [r[0], l[0]] {
                draw_polyline(px, w, h, &[[x, y - tick], [x, y + tick]], false);
            }
        }
    }
}

/// Splits lines longer than `width` characters.
fn wrap(lines: &[String], width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut out = Vec::new();
    for l in lines {
        let chars: Vec<char> = l.chars().collect();
        if chars.is_empty() {
            out.push(String::new());
        }
        for chunk in chars.chunks(width) {
            out.push(chunk.iter().collect());
        }
    }
    out
}

/// Draws `text` at (`x`, `y`) into an 8-bit image `w` pixels wide.
fn draw_text(px: &mut [u8], w: usize, x: usize, y: usize, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let px_x = x + (i * 8 + col) * SCALE + dx;
                        let px_y = y + row * SCALE + dy;
                        if px_x < w {
                            if let Some(p) = px.get_mut(px_y * w + px_x) {
                                *p = 255;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The image (`w` x `h`, 8-bit) under a black band carrying `lines` (wrapped to the width);
/// returns the new `(width, height, pixels)`.
pub fn burn_in(w: u32, h: u32, image: &[u8], lines: &[String]) -> (u32, u32, Vec<u8>) {
    let w_us = w as usize;
    let lines = wrap(lines, w_us.saturating_sub(2 * MARGIN) / (8 * SCALE));
    let band = 2 * MARGIN + lines.len() * LINE_H;
    let total_h = band + h as usize;
    let mut px = vec![0u8; w_us * total_h];
    px[band * w_us..band * w_us + image.len().min(w_us * h as usize)]
        .copy_from_slice(&image[..image.len().min(w_us * h as usize)]);
    for (i, l) in lines.iter().enumerate() {
        draw_text(&mut px, w_us, MARGIN, MARGIN + i * LINE_H, l);
    }
    (w, total_h as u32, px)
}

/// A PNG or JPEG (an uploaded photo of a film, say) as 8-bit grey, longest side
/// [`LONG_SIDE`] at most.
pub fn grey_from_image_bytes(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), ReportError> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| ReportError::Pixels(e.to_string()))?
        .to_luma8();
    let (w, h) = img.dimensions();
    let scale = (f64::from(LONG_SIDE) / f64::from(w.max(h).max(1))).min(1.0);
    let (nw, nh) = (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    );
    let img = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    Ok((nw, nh, img.into_raw()))
}

/// 8-bit grey pixels as a PNG file.
pub fn png(w: u32, h: u32, px: &[u8]) -> Result<Vec<u8>, ReportError> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_raw(w, h, px.to_vec())
        .ok_or_else(|| ReportError::Pixels("pixel buffer size".into()))?
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| ReportError::Pixels(e.to_string()))?;
    Ok(out.into_inner())
}

/// 8-bit grey pixels: `(width, height, px)`.
type Grey = (u32, u32, Vec<u8>);

/// Windowed, resized 8-bit pixels of the source image (first frame), and the source's
/// `(columns, rows)`.
fn source_pixels(path: &Path) -> Result<(Grey, (u32, u32)), ReportError> {
    let obj = preprocess::open_dicom(path).map_err(|e| ReportError::Pixels(e.to_string()))?;
    let dim = |t| {
        obj.element_opt(t)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u32>().ok())
            .filter(|v| *v > 0)
    };
    let (rows, cols) = match (dim(tags::ROWS), dim(tags::COLUMNS)) {
        (Some(r), Some(c)) => (r, c),
        _ => return Err(ReportError::Pixels("Rows/Columns missing".into())),
    };
    let scale = f64::from(LONG_SIDE) / f64::from(rows.max(cols));
    let width = ((f64::from(cols) * scale).round() as u32).max(1);
    let height = ((f64::from(rows) * scale).round() as u32).max(1);
    // The file's window, else the 0.5 to 99.5 percentile window, as a model would see it.
    let windowing = Windowing {
        use_file: true,
        percentile_low: 0.5,
        percentile_high: 99.5,
    };
    let grey = guard(|| {
        let (px, frame) = decode_pixels(&obj, Some(0))?;
        let padding = padding_range(&obj, px.pixel_representation());
        grey_resized(&px, frame, padding, &windowing, width, height).map(|(grey, ..)| grey)
    })
    .map_err(|e: ImagingError| ReportError::Pixels(e.to_string()))?;
    let px = grey
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    Ok(((width, height, px), (cols, rows)))
}

/// Builds the overlay of the analysed image `entry` stored at `path`.
pub fn build(
    result: &StudyResult,
    entry: &ImageEntry,
    path: &Path,
    patient_study: Vec<DataElement<InMemDicomObject>>,
    device: &DeviceInfo,
    instance_number: usize,
) -> Result<Built, ReportError> {
    let ((w, h, mut image), (cols, rows)) = source_pixels(path)?;
    draw_localisation(&mut image, w, h, cols, rows, &localisation(entry));
    let (_, total_h, mut px) = burn_in(w, h, &image, &text_lines(result, entry));
    let total_h = total_h as usize;
    if px.len() % 2 == 1 {
        px.push(0);
    }
    let rows = u16::try_from(total_h).map_err(|_| ReportError::Pixels("image too tall".into()))?;
    let cols = u16::try_from(w).map_err(|_| ReportError::Pixels("image too wide".into()))?;

    let (sop_uid, series_uid) = overlay_uids(
        &result.study_instance_uid,
        result.version,
        &entry.sop_instance_uid,
    );
    let (date, time) = da_tm(&result.created_at);
    let mut obj = super::derived_object(
        patient_study,
        &result.study_instance_uid,
        SECONDARY_CAPTURE,
        &sop_uid,
        &result.created_at,
    );
    for e in [
        str_el(tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY"),
        str_el(tags::MODALITY, VR::CS, "OT"),
        empty_el(tags::LATERALITY, VR::CS),
        str_el(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
        str_el(
            tags::SERIES_NUMBER,
            VR::IS,
            &OVERLAY_SERIES_NUMBER.to_string(),
        ),
        str_el(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            "AI result overlay (unverified)",
        ),
        str_el(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        str_el(tags::MANUFACTURER, VR::LO, &device.manufacturer),
        str_el(
            tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER,
            VR::LO,
            &device.manufacturer,
        ),
        str_el(
            tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME,
            VR::LO,
            "radstream",
        ),
        str_el(
            tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
            VR::LO,
            &device.software_version,
        ),
        str_el(tags::INSTANCE_NUMBER, VR::IS, &instance_number.to_string()),
        empty_el(tags::PATIENT_ORIENTATION, VR::CS),
        str_el(tags::CONTENT_DATE, VR::DA, &date),
        str_el(tags::CONTENT_TIME, VR::TM, &time),
        str_el(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"),
        str_el(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            "Source image windowed to 8 bits and resampled; AI findings, lung contours and CTR lines burnt in",
        ),
        seq_el(
            tags::SOURCE_IMAGE_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                str_el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &entry.sop_class_uid),
                str_el(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    &entry.sop_instance_uid,
                ),
            ])],
        ),
        seq_el(
            tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                seq_el(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    vec![super::sr::codes::processing_equipment().item()],
                ),
                str_el(tags::MANUFACTURER, VR::LO, &device.manufacturer),
                str_el(tags::MANUFACTURER_MODEL_NAME, VR::LO, &result.model.name),
                str_el(tags::SOFTWARE_VERSIONS, VR::LO, &result.model.version),
            ])],
        ),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        str_el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(8u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(7u16)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(px.into())),
    ] {
        obj.put(e);
    }
    Ok(Built {
        sop_class_uid: SECONDARY_CAPTURE.into(),
        sop_instance_uid: sop_uid,
        series_uid,
        series_number: OVERLAY_SERIES_NUMBER,
        modality: "OT",
        obj,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_wrap() {
        let l = wrap(&["ABCDEFGHIJ".into()], 8);
        assert_eq!(l, vec!["ABCDEFGH".to_string(), "IJ".to_string()]);
    }

    #[test]
    fn contours_and_ctr_lines_are_drawn_and_the_band_names_each_model() {
        let mut result = crate::report::tests::sample_result();
        let entry = &mut result.images[0];
        let lungs = entry.segmentation.as_mut().unwrap().lungs.as_mut().unwrap();
        lungs.ctr = Some(crate::measurement::Ctr {
            ratio: 0.5,
            cardiac_width: 0.25,
            thoracic_width: 0.5,
            normal_below: 0.5,
            enlarged: true,
        });
        lungs.ctr_points = ["heart_right", "heart_left", "thorax_right", "thorax_left"]
            .iter()
            .zip([0.375, 0.625, 0.25, 0.75])
            .map(|(c, x)| crate::measurement::Landmark::new(*c, x, 0.5))
            .collect();
        let loc = localisation(&result.images[0]);
        assert_eq!(loc.contours.len(), 2);
        assert_eq!(loc.ctr_by, Some(("lung-seg".into(), 0.5)));
        // A 16 x 8 source shown at 64 x 32: the right lung's contour starts at (2, 1) * 4.
        let mut px = vec![128u8; 64 * 32];
        draw_localisation(&mut px, 64, 32, 16, 8, &loc);
        assert_eq!(px[4 * 64 + 8], 255);
        // The thoracic line at mid height, from x = 16 to 48.
        assert_eq!(px[16 * 64 + 32], 255);
        assert_eq!(px[16 * 64 + 2], 128);
        let lines = text_lines(&result, &result.images[0]).join("\n");
        assert!(lines.contains("LUNG CONTOURS: LUNG-SEG"), "{lines}");
        assert!(lines.contains("CTR 0.50"), "{lines}");
        assert!(
            lines.contains("CXR-DEMO: TRAINED ON SYNTHETIC PHANTOMS, NOT VALIDATED ON REAL IMAGES"),
            "{lines}"
        );
        assert!(lines.contains("FINDINGS NOT LOCALISED"), "{lines}");
    }

    #[test]
    fn text_is_drawn_white_on_black() {
        let mut px = vec![0u8; 64 * 32];
        draw_text(&mut px, 64, 0, 0, "A");
        assert!(px.contains(&255));
        let mut blank = vec![0u8; 64 * 32];
        draw_text(&mut blank, 64, 0, 0, " ");
        assert!(blank.iter().all(|&p| p == 0));
    }
}
