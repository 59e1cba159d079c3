//! Synthetic phone photos of a radiograph on a screen, deterministic by seed, with their
//! true corners: the test data for corner detection, rectification and capture sessions.
//!
//! A photo is built as a camera would see it: a desk/wall background with clutter (some of it
//! bright, like paper), a monitor whose bezel and screen follow one perspective transform, the
//! radiograph shown full-screen with the panel's raised black level and a tinted white, moiré
//! bands, an optional glare blob, vignetting and exposure, Gaussian blur, sensor noise, and
//! JPEG compression. `difficulty` (0..1) scales the perspective, the distance, the blur, the
//! noise, the glare, the moiré and the JPEG quality, and narrows the gap between the panel's
//! black and the bezel.

use image::codecs::jpeg::JpegEncoder;
use image::{GrayImage, RgbImage};
use serde::Serialize;

use super::geometry::{Homography, Point, Quad};
use super::raster::{gaussian_kernel, sample_bilinear};

/// SplitMix64: tiny, fast and the same on every platform and crate version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Approximately standard normal: the sum of four uniforms (Irwin–Hall), rescaled.
    /// Plenty for sensor noise, and cheap enough for every sample of a photo.
    pub fn normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 3f64.sqrt()
    }
}

/// The knobs one photo was made with (reported with the results).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhotoSettings {
    pub seed: u64,
    pub difficulty: f64,
    pub width: u32,
    pub height: u32,
    /// Screen black level and bezel grey (0..255).
    pub panel_black: f64,
    pub bezel: f64,
    pub blur_sigma: f64,
    pub noise_sigma: f64,
    pub moire_amplitude: f64,
    /// Peak added brightness of the glare blob (0: none).
    pub glare: f64,
    pub jpeg_quality: u8,
}

/// A synthetic screen photo.
#[derive(Debug, Clone)]
pub struct ScreenPhoto {
    /// The JPEG a phone would upload.
    pub jpeg: Vec<u8>,
    /// The decoded JPEG (what the detector sees).
    pub image: RgbImage,
    /// True corners of the displayed radiograph, TL,TR,BR,BL, in photo pixels.
    pub corners: Quad,
    pub settings: PhotoSettings,
}

/// Options beyond the seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhotoOptions {
    /// 0 (easy) ..1 (hard).
    pub difficulty: f64,
    /// Long side of the photo in pixels; `None` picks 640..960 from the seed.
    pub long_side: Option<u32>,
    /// Extra Gaussian blur σ in photo pixels on top of the camera's (a shaken frame).
    pub extra_blur: f64,
    /// Whether a glare blob may appear (by chance, more often when harder).
    pub glare: bool,
}

impl Default for PhotoOptions {
    fn default() -> Self {
        PhotoOptions {
            difficulty: 0.5,
            long_side: None,
            extra_blur: 0.0,
            glare: true,
        }
    }
}

/// Renders a photo of `radiograph` shown full-screen on a monitor.
pub fn screen_photo(radiograph: &GrayImage, seed: u64, opts: PhotoOptions) -> ScreenPhoto {
    let mut rng = Rng::new(seed);
    let d = opts.difficulty.clamp(0.0, 1.0);
    let long = opts
        .long_side
        .unwrap_or_else(|| rng.range(640.0, 960.0) as u32)
        .max(64);
    let short = long * 3 / 4;
    let (pw, ph) = if rng.chance(0.7) {
        (long, short)
    } else {
        (short, long)
    };
    let (rw, rh) = (
        radiograph.width().max(1) as f64,
        radiograph.height().max(1) as f64,
    );

    // Bezel in screen units (radiograph pixels); a thicker chin at the bottom.
    let side_bezel = rng.range(0.035, 0.07) * rw.max(rh);
    let chin = side_bezel * rng.range(1.0, 2.0);
    let outer = [
        Point::new(-side_bezel, -side_bezel),
        Point::new(rw + side_bezel, -side_bezel),
        Point::new(rw + side_bezel, rh + chin),
        Point::new(-side_bezel, rh + chin),
    ];
    let screen = [
        Point::new(0.0, 0.0),
        Point::new(rw, 0.0),
        Point::new(rw, rh),
        Point::new(0.0, rh),
    ];

    // Place the screen: size, centre, roll, then independent corner shifts for perspective.
    let (fw, fh) = (pw as f64, ph as f64);
    let mut fill = rng.range(0.62, 0.85) - 0.25 * d * rng.unit();
    let roll = rng.range(-1.0, 1.0) * (2.0 + 10.0 * d).to_radians();
    let centre_shift = (rng.range(-0.08, 0.08), rng.range(-0.08, 0.08));
    let shifts: Vec<Point> = (0..4)
        .map(|_| Point::new(rng.range(-1.0, 1.0), rng.range(-1.0, 1.0)))
        .collect();
    let persp = 0.02 + 0.1 * d;
    let (homography, quad) = loop {
        let scale = fill * fw.min(fh) / rw.max(rh);
        let (sw, sh) = (rw * scale, rh * scale);
        let c = Point::new(fw * (0.5 + centre_shift.0), fh * (0.5 + centre_shift.1));
        let (cos, sin) = (roll.cos(), roll.sin());
        let corners: Vec<Point> = screen
            .iter()
            .zip(&shifts)
            .map(|(p, s)| {
                let x = (p.x / rw - 0.5) * sw + s.x * persp * sw;
                let y = (p.y / rh - 0.5) * sh + s.y * persp * sh;
                Point::new(c.x + x * cos - y * sin, c.y + x * sin + y * cos)
            })
            .collect();
        let to = [corners[0], corners[1], corners[2], corners[3]];
        let h = Homography::from_points(&screen, &to).expect("a rectangle maps onto a convex quad");
        let margin = 0.02 * fw.min(fh);
        let fits = outer.iter().all(|p| {
            let q = h.apply(*p);
            q.x > margin && q.y > margin && q.x < fw - margin && q.y < fh - margin
        });
        if fits || fill < 0.2 {
            break (h, Quad(to));
        }
        fill *= 0.93;
    };
    let inverse = homography.inverse().expect("invertible");

    let bezel = rng.range(6.0, 30.0);
    let gap = (4.0 + 22.0 * (1.0 - d)) * rng.range(0.7, 1.0);
    let panel_black = bezel + gap;
    let panel_white = rng.range(180.0, 215.0);
    let tint = [
        rng.range(0.93, 1.0),
        rng.range(0.96, 1.0),
        rng.range(0.98, 1.04),
    ];
    let moire_amplitude = rng.range(0.0, 0.03 + 0.07 * d);
    let moire = [
        rng.range(0.03, 0.12),
        rng.range(-0.12, 0.12),
        rng.range(0.0, std::f64::consts::TAU),
    ];
    let moire_beat = rng.range(0.8, 1.2);
    // Drawn whether or not glare is allowed, so the rest of the photo stays the same.
    let glare_roll = rng.chance(0.3 + 0.6 * d);
    let glare_peak = rng.range(60.0, 120.0 + 200.0 * d);
    let glare = if glare_roll && opts.glare {
        glare_peak
    } else {
        0.0
    };
    let glare_at = homography.apply(Point::new(
        rng.range(0.15, 0.85) * rw,
        rng.range(0.15, 0.85) * rh,
    ));
    let glare_radius = rng.range(0.05, 0.14) * quad.0[0].dist(quad.0[2]);
    let vignette = rng.range(0.0, 0.25);
    let exposure = rng.range(0.9, 1.08);
    let blur_sigma = 0.6 + 1.6 * d * rng.unit() + opts.extra_blur;
    let noise_sigma = 1.0 + 4.0 * d * rng.unit();
    let jpeg_quality = (92.0 - 40.0 * d * rng.unit()).round().clamp(40.0, 95.0) as u8;

    let bg = background(&mut rng, pw, ph);
    let radiograph_at = |u: f64, v: f64| -> f64 {
        let (w, h) = (radiograph.width() as usize, radiograph.height() as usize);
        let raw = radiograph.as_raw();
        sample_bilinear(w, h, u, v, |i, j| raw[j * w + i] as f32) as f64 / 255.0
    };
    // Screen units per photo pixel, to know which pixels straddle an outline.
    let unit = rw.max(rh) / (quad.0[0].dist(quad.0[1]).max(quad.0[0].dist(quad.0[3])));
    let near = |u: f64, v: f64| {
        let e = 2.0 * unit;
        [u, u - rw, u + side_bezel, u - rw - side_bezel]
            .iter()
            .any(|d| d.abs() < e)
            || [v, v - rh, v + side_bezel, v - rh - chin]
                .iter()
                .any(|d| d.abs() < e)
    };
    let in_monitor = |u: f64, v: f64| {
        u >= -side_bezel && u < rw + side_bezel && v >= -side_bezel && v < rh + chin
    };
    let in_screen = |u: f64, v: f64| u >= 0.0 && u < rw && v >= 0.0 && v < rh;
    let diag = fw.hypot(fh) / 2.0;
    let mut buf: Vec<f32> = bg.as_raw().iter().map(|&v| v as f32).collect();
    for y in 0..ph {
        for x in 0..pw {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let o = ((y * pw + x) * 3) as usize;
            let centre = inverse.apply(Point::new(fx, fy));
            let edge = near(centre.x, centre.y);
            let mut c = [buf[o] as f64, buf[o + 1] as f64, buf[o + 2] as f64];
            if in_monitor(centre.x, centre.y) || edge {
                // 3×3 supersampling on outlines, one sample elsewhere.
                let offsets: &[f64] = if edge {
                    &[-1.0 / 3.0, 0.0, 1.0 / 3.0]
                } else {
                    &[0.0]
                };
                let mut acc = [0.0f64; 3];
                for oy in offsets {
                    for ox in offsets {
                        let p = if edge {
                            inverse.apply(Point::new(fx + ox, fy + oy))
                        } else {
                            centre
                        };
                        let s = if in_screen(p.x, p.y) {
                            let l =
                                panel_black + (panel_white - panel_black) * radiograph_at(p.x, p.y);
                            [l * tint[0], l * tint[1], l * tint[2]]
                        } else if in_monitor(p.x, p.y) {
                            // Slightly lighter towards the top, like a bezel catching room light.
                            let shade =
                                bezel * (1.0 + 0.15 * (1.0 - (p.y + side_bezel) / (rh + chin)));
                            [shade, shade, shade * 1.03]
                        } else {
                            c
                        };
                        for ch in 0..3 {
                            acc[ch] += s[ch];
                        }
                    }
                }
                let n = (offsets.len() * offsets.len()) as f64;
                c = acc.map(|v| v / n);
            }
            // Light: moiré on the panel, glare, vignetting and exposure.
            let on_screen = in_screen(centre.x, centre.y);
            let mut gain =
                exposure * (1.0 - vignette * ((fx - fw / 2.0).hypot(fy - fh / 2.0) / diag).powi(2));
            if on_screen {
                let phase = std::f64::consts::TAU * (moire[0] * fx + moire[1] * fy) + moire[2];
                let beat = std::f64::consts::TAU * (moire[0] * moire_beat * fx - moire[1] * fy);
                gain *= 1.0 + moire_amplitude * phase.sin() * (0.6 + 0.4 * beat.cos());
            }
            let mut add = 0.0;
            if glare > 0.0 && in_monitor(centre.x, centre.y) {
                let r2 = Point::new(fx, fy).dist(glare_at).powi(2);
                let g = glare * (-r2 / (2.0 * glare_radius * glare_radius)).exp();
                add = if on_screen { g } else { 0.1 * g };
            }
            for ch in 0..3 {
                buf[o + ch] = (c[ch] * gain + add) as f32;
            }
        }
    }
    blur_rgb(&mut buf, pw as usize, ph as usize, blur_sigma as f32);
    for v in buf.iter_mut() {
        *v += (noise_sigma * rng.normal()) as f32;
    }
    let raw: Vec<u8> = buf
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let img = RgbImage::from_raw(pw, ph, raw).expect("buffer matches the size");

    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, jpeg_quality)
        .encode_image(&img)
        .expect("JPEG encoding into memory");
    let image = image::load_from_memory(&jpeg)
        .expect("our own JPEG decodes")
        .to_rgb8();

    ScreenPhoto {
        jpeg,
        image,
        corners: quad,
        settings: PhotoSettings {
            seed,
            difficulty: d,
            width: pw,
            height: ph,
            panel_black,
            bezel,
            blur_sigma,
            noise_sigma,
            moire_amplitude,
            glare,
            jpeg_quality,
        },
    }
}

/// A detection counts as a success when every corner is within this many photo pixels.
pub const SUCCESS_PX: f64 = 5.0;

/// Corner detection on one synthetic photo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trial {
    pub seed: u64,
    pub difficulty: f64,
    pub width: u32,
    pub height: u32,
    /// Mean and largest corner error in photo pixels; `None` when no screen was found.
    pub mean_error: Option<f64>,
    pub max_error: Option<f64>,
}

impl Trial {
    pub fn success(&self) -> bool {
        self.max_error.is_some_and(|e| e <= SUCCESS_PX)
    }
}

/// Figures over a set of trials.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub photos: usize,
    pub successes: usize,
    pub success_rate: f64,
    /// Mean of the per-photo mean corner errors over the successes, and the largest corner
    /// error among them, in photo pixels.
    pub mean_error: f64,
    pub max_error: f64,
}

pub fn summarise<'a>(trials: impl IntoIterator<Item = &'a Trial>) -> Summary {
    let trials: Vec<&Trial> = trials.into_iter().collect();
    let ok: Vec<&&Trial> = trials.iter().filter(|t| t.success()).collect();
    let mean_error = if ok.is_empty() {
        f64::NAN
    } else {
        ok.iter().filter_map(|t| t.mean_error).sum::<f64>() / ok.len() as f64
    };
    Summary {
        photos: trials.len(),
        successes: ok.len(),
        success_rate: ok.len() as f64 / trials.len().max(1) as f64,
        mean_error,
        max_error: ok.iter().filter_map(|t| t.max_error).fold(0.0, f64::max),
    }
}

/// Photo `seed` has difficulty `(seed % 10) / 9` and shows `radiographs[seed % len]`.
pub fn trial(radiographs: &[GrayImage], seed: u64) -> Trial {
    let difficulty = (seed % 10) as f64 / 9.0;
    let radiograph = &radiographs[(seed % radiographs.len().max(1) as u64) as usize];
    let photo = screen_photo(
        radiograph,
        seed,
        PhotoOptions {
            difficulty,
            ..PhotoOptions::default()
        },
    );
    let errors = super::detect(&photo.image).map(|det| {
        (0..4)
            .map(|i| det.quad.0[i].dist(photo.corners.0[i]))
            .collect::<Vec<_>>()
    });
    Trial {
        seed,
        difficulty,
        width: photo.settings.width,
        height: photo.settings.height,
        mean_error: errors.as_ref().map(|e| e.iter().sum::<f64>() / 4.0),
        max_error: errors.map(|e| e.into_iter().fold(0.0, f64::max)),
    }
}

/// A desk or wall: a tone with a gradient and low-frequency texture, plus clutter.
fn background(rng: &mut Rng, w: u32, h: u32) -> RgbImage {
    let base = [
        rng.range(60.0, 190.0),
        rng.range(50.0, 170.0),
        rng.range(40.0, 160.0),
    ];
    let grad = (rng.range(-0.3, 0.3), rng.range(-0.3, 0.3));
    let waves: Vec<(f64, f64, f64, f64)> = (0..3)
        .map(|_| {
            (
                rng.range(-0.02, 0.02),
                rng.range(-0.02, 0.02),
                rng.range(0.0, std::f64::consts::TAU),
                rng.range(2.0, 10.0),
            )
        })
        .collect();
    let mut img = RgbImage::new(w, h);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f64 / w as f64 - 0.5, y as f64 / h as f64 - 0.5);
        let mut t = 1.0 + grad.0 * fx + grad.1 * fy;
        let mut add = 0.0;
        for (a, b, phase, amp) in &waves {
            add += amp * (a * x as f64 + b * y as f64 + phase).sin();
        }
        t = t.max(0.2);
        for (v, b) in px.0.iter_mut().zip(base) {
            *v = (b * t + add).clamp(0.0, 255.0) as u8;
        }
    }
    // Clutter: rectangles and ellipses (papers, a keyboard, a mug).
    let count = 3 + (rng.unit() * 5.0) as usize;
    for _ in 0..count {
        let colour = if rng.chance(0.3) {
            let v = rng.range(200.0, 250.0);
            [v, v, v * 0.97]
        } else {
            [
                rng.range(0.0, 255.0),
                rng.range(0.0, 255.0),
                rng.range(0.0, 255.0),
            ]
        };
        let c = Point::new(rng.range(0.0, w as f64), rng.range(0.0, h as f64));
        let (a, b) = (
            rng.range(0.05, 0.25) * w as f64,
            rng.range(0.05, 0.25) * h as f64,
        );
        let angle = rng.range(0.0, std::f64::consts::PI);
        let ellipse = rng.chance(0.4);
        let (cos, sin) = (angle.cos(), angle.sin());
        let reach = a.hypot(b);
        let x0 = (c.x - reach).max(0.0) as u32;
        let x1 = ((c.x + reach).max(0.0) as u32).min(w);
        let y0 = (c.y - reach).max(0.0) as u32;
        let y1 = ((c.y + reach).max(0.0) as u32).min(h);
        for (x, y) in (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))) {
            let px = img.get_pixel_mut(x, y);
            let d = Point::new(x as f64 + 0.5, y as f64 + 0.5) - c;
            let (u, v) = (d.x * cos + d.y * sin, -d.x * sin + d.y * cos);
            let inside = if ellipse {
                (u / a).powi(2) + (v / b).powi(2) <= 1.0
            } else {
                u.abs() <= a && v.abs() <= b
            };
            if inside {
                for (v, c) in px.0.iter_mut().zip(colour) {
                    *v = c.clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    img
}

/// Separable Gaussian blur of an interleaved RGB float buffer: the exact kernel for small σ,
/// three box passes (running sums, cost independent of σ) from σ = 2 on.
fn blur_rgb(buf: &mut [f32], w: usize, h: usize, sigma: f32) {
    if sigma <= 0.05 {
        return;
    }
    if sigma >= 2.0 {
        for r in box_radii(sigma) {
            box_pass(buf, w, h, r, true);
            box_pass(buf, w, h, r, false);
        }
        return;
    }
    let kernel = gaussian_kernel(sigma);
    let r = kernel.len() / 2;
    let mut tmp = vec![0.0f32; buf.len()];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                let mut s = 0.0;
                for (t, kv) in kernel.iter().enumerate() {
                    let xx = (x + t).saturating_sub(r).min(w - 1);
                    s += kv * buf[(y * w + xx) * 3 + ch];
                }
                tmp[(y * w + x) * 3 + ch] = s;
            }
        }
    }
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                let mut s = 0.0;
                for (t, kv) in kernel.iter().enumerate() {
                    let yy = (y + t).saturating_sub(r).min(h - 1);
                    s += kv * tmp[(yy * w + x) * 3 + ch];
                }
                buf[(y * w + x) * 3 + ch] = s;
            }
        }
    }
}

/// Radii of three box filters whose succession approximates a Gaussian of `sigma`.
fn box_radii(sigma: f32) -> [usize; 3] {
    let n = 3.0f32;
    let ideal = (12.0 * sigma * sigma / n + 1.0).sqrt();
    let mut lower = ideal.floor() as i32;
    if lower % 2 == 0 {
        lower -= 1;
    }
    let upper = lower + 2;
    let (l, s2) = (lower as f32, 12.0 * sigma * sigma);
    let m = ((s2 - n * l * l - 4.0 * n * l - 3.0 * n) / (-4.0 * l - 4.0)).round() as i32;
    let mut out = [0usize; 3];
    for (i, r) in out.iter_mut().enumerate() {
        let width = if (i as i32) < m { lower } else { upper };
        *r = (width.max(1) as usize - 1) / 2;
    }
    out
}

/// One box blur of radius `r` along rows (`horizontal`) or columns, edges clamped.
fn box_pass(buf: &mut [f32], w: usize, h: usize, r: usize, horizontal: bool) {
    if r == 0 {
        return;
    }
    let (lines, len) = if horizontal { (h, w) } else { (w, h) };
    let index = |line: usize, i: usize| {
        if horizontal {
            (line * w + i) * 3
        } else {
            (i * w + line) * 3
        }
    };
    let norm = 1.0 / (2 * r + 1) as f32;
    let mut src = vec![0.0f32; len];
    for line in 0..lines {
        for ch in 0..3 {
            for (i, v) in src.iter_mut().enumerate() {
                *v = buf[index(line, i) + ch];
            }
            let at = |i: isize| src[i.clamp(0, len as isize - 1) as usize];
            let mut acc: f32 = (-(r as isize)..=r as isize).map(at).sum();
            for i in 0..len {
                buf[index(line, i) + ch] = acc * norm;
                acc += at(i as isize + r as isize + 1) - at(i as isize - r as isize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phantom() -> GrayImage {
        let mut g = GrayImage::new(64, 64);
        for (x, y, p) in g.enumerate_pixels_mut() {
            p.0[0] = ((x * 3 + y * 2) % 255) as u8;
        }
        g
    }

    #[test]
    fn same_seed_same_photo_other_seed_other_photo() {
        let opts = PhotoOptions {
            long_side: Some(160),
            ..PhotoOptions::default()
        };
        let a = screen_photo(&phantom(), 7, opts);
        let b = screen_photo(&phantom(), 7, opts);
        let c = screen_photo(&phantom(), 8, opts);
        assert_eq!(a.jpeg, b.jpeg);
        assert_eq!(a.corners, b.corners);
        assert_ne!(a.corners, c.corners);
        assert!(a.corners.is_convex());
        let (w, h) = (a.image.width() as f64, a.image.height() as f64);
        assert!(a
            .corners
            .0
            .iter()
            .all(|p| p.x > 0.0 && p.y > 0.0 && p.x < w && p.y < h));
    }

    #[test]
    fn box_passes_approximate_the_gaussian() {
        // A unit impulse blurred with σ = 3 has a variance close to 9.
        let (w, h) = (61, 1);
        let mut buf = vec![0.0f32; w * h * 3];
        buf[30 * 3] = 1.0;
        blur_rgb(&mut buf, w, h, 3.0);
        let total: f32 = (0..w).map(|x| buf[x * 3]).sum();
        let var: f32 = (0..w)
            .map(|x| buf[x * 3] * (x as f32 - 30.0).powi(2))
            .sum::<f32>()
            / total;
        assert!((total - 1.0).abs() < 1e-4);
        assert!((var - 9.0).abs() < 1.0, "variance {var}");
    }
}
