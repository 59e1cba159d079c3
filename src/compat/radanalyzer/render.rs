//! The annotated image of `render: true`: the input (grey, longest side 768 to 1024 px: small
//! images are enlarged so the text stays legible) under the
//! overlay's black text band (CTR, widths, confidence, disclaimer; `report::overlay` glyphs),
//! with the landmarks as dots, the thoracic width (cyan) and cardiac width (red) drawn as the
//! horizontal segments the ratio measures, and the heart's long axis (yellow). JPEG,
//! quality 90, returned as base64 by the caller.

use image::{Rgb, RgbImage};

use crate::report::overlay;

/// What to draw.
#[derive(Debug, Clone, Default)]
pub struct Annotation<'a> {
    /// `(class, x, y)`, normalised 0..1 in the input image.
    pub points: Vec<(&'a str, f32, f32)>,
    /// Text lines for the band.
    pub lines: Vec<String>,
}

/// Why an image could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("decoding the image: {0}")]
    Decode(String),
    #[error("encoding the rendered image: {0}")]
    Encode(String),
}

/// Smaller images are enlarged to this longest side before drawing.
pub const MIN_LONG_SIDE: u32 = 768;

const CYAN: Rgb<u8> = Rgb([0, 220, 255]);
const RED: Rgb<u8> = Rgb([255, 60, 60]);
const YELLOW: Rgb<u8> = Rgb([255, 220, 0]);
const GREEN: Rgb<u8> = Rgb([60, 255, 90]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// JPEG bytes of `image` (PNG or JPEG) with `ann` drawn.
pub fn render(image: &[u8], ann: &Annotation<'_>) -> Result<Vec<u8>, RenderError> {
    let (w, h, grey) =
        overlay::grey_from_image_bytes(image).map_err(|e| RenderError::Decode(e.to_string()))?;
    let (w, h, grey) = enlarge(w, h, grey);
    let (bw, bh, banded) = overlay::burn_in(w, h, &grey, &ann.lines);
    let top = (bh - h) as f32;
    let mut canvas = RgbImage::from_fn(bw, bh, |x, y| {
        let v = banded[(y * bw + x) as usize];
        Rgb([v, v, v])
    });
    let thick = (w.max(h) / 300).max(2) as i32;
    let radius = (w.max(h) / 150).max(3) as i32;
    let at = |class: &str| {
        ann.points
            .iter()
            .find(|(c, _, _)| *c == class)
            .map(|&(_, x, y)| (x * w as f32, top + y * h as f32))
    };
    for (a, b, colour) in [
        ("thorax_right", "thorax_left", CYAN),
        ("heart_right", "heart_left", RED),
    ] {
        if let (Some(p), Some(q)) = (at(a), at(b)) {
            // The ratio uses horizontal widths: draw the width at the pair's mean height,
            // with end ticks at each landmark's x.
            let y = (p.1 + q.1) / 2.0;
            line(&mut canvas, (p.0, y), (q.0, y), thick, colour);
            let tick = 3.0 * radius as f32;
            for x in [p.0, q.0] {
                line(&mut canvas, (x, y - tick), (x, y + tick), thick, colour);
            }
        }
    }
    if let (Some(p), Some(q)) = (at("heart_top"), at("heart_bottom")) {
        line(&mut canvas, p, q, thick, YELLOW);
    }
    for &(_, x, y) in &ann.points {
        if x.is_finite() && y.is_finite() {
            let c = (x * w as f32, top + y * h as f32);
            disc(&mut canvas, c, radius + 1, WHITE);
            disc(&mut canvas, c, radius, GREEN);
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&canvas)
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

/// `grey` enlarged to [`MIN_LONG_SIDE`] when it is smaller, aspect kept.
fn enlarge(w: u32, h: u32, grey: Vec<u8>) -> (u32, u32, Vec<u8>) {
    let long = w.max(h);
    if long >= MIN_LONG_SIDE || long == 0 {
        return (w, h, grey);
    }
    let Some(img) = image::GrayImage::from_raw(w, h, grey.clone()) else {
        return (w, h, grey);
    };
    let scale = f64::from(MIN_LONG_SIDE) / f64::from(long);
    let nw = ((f64::from(w) * scale).round() as u32).max(1);
    let nh = ((f64::from(h) * scale).round() as u32).max(1);
    let big = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    (nw, nh, big.into_raw())
}

/// A filled disc; parts outside the canvas are skipped.
fn disc(img: &mut RgbImage, (cx, cy): (f32, f32), r: i32, colour: Rgb<u8>) {
    let (cx, cy) = (cx.round() as i32, cy.round() as i32);
    for dy in -r..=r {
        for dx in -r..=r {
            if dx * dx + dy * dy <= r * r {
                put(img, cx + dx, cy + dy, colour);
            }
        }
    }
}

/// A line `thick` pixels wide (a square brush stepped along it).
fn line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), thick: i32, colour: Rgb<u8>) {
    if ![a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()) {
        return;
    }
    let steps = (b.0 - a.0)
        .abs()
        .max((b.1 - a.1).abs())
        .ceil()
        .min(20_000.0) as i32;
    let half = thick / 2;
    for i in 0..=steps.max(1) {
        let t = i as f32 / steps.max(1) as f32;
        let x = (a.0 + (b.0 - a.0) * t).round() as i32;
        let y = (a.1 + (b.1 - a.1) * t).round() as i32;
        for dy in -half..thick - half {
            for dx in -half..thick - half {
                put(img, x + dx, y + dy, colour);
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i32, y: i32, colour: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, colour);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey_png(w: u32, h: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::GrayImage::from_pixel(w, h, image::Luma([40]))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn landmarks_and_widths_are_drawn_below_the_band() {
        let ann = Annotation {
            points: vec![
                ("heart_right", 0.40, 0.60),
                ("heart_left", 0.64, 0.60),
                ("thorax_right", 0.20, 0.70),
                ("thorax_left", 0.80, 0.70),
                ("heart_top", 0.5, 0.45),
                ("heart_bottom", 0.55, 0.75),
            ],
            lines: vec!["CTR 0.40 (normal < 0.50)".into()],
        };
        let jpeg = render(&grey_png(1000, 750), &ann).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!(img.width(), 1000);
        let top = img.height() - 750;
        assert!(top > 0, "a band sits above the image");
        let px = |x: u32, y: f32| *img.get_pixel(x, top + (y * 750.0) as u32);
        // The middle of the thoracic width line is cyan, of the cardiac width line red.
        let c = px(750, 0.70);
        assert!(c[2] > 180 && c[0] < 100, "{c:?}");
        let r = px(437, 0.60);
        assert!(r[0] > 180 && r[2] < 120, "{r:?}");
        // Away from the drawing the image is its grey self.
        let g = px(20, 0.1);
        assert!((g[0] as i32 - g[2] as i32).abs() < 12 && g[0] < 80, "{g:?}");
    }

    #[test]
    fn missing_points_and_odd_values_draw_nothing_and_never_panic() {
        let ann = Annotation {
            points: vec![("heart_right", f32::NAN, 2.0), ("thorax_left", -5.0, 9.0)],
            lines: vec![],
        };
        let small = render(&grey_png(10, 20), &ann).unwrap();
        let img = image::load_from_memory(&small).unwrap();
        assert_eq!(
            img.width(),
            384,
            "enlarged to a long side of 768, aspect kept"
        );
        assert!(matches!(
            render(b"not an image", &ann),
            Err(RenderError::Decode(_))
        ));
    }
}
