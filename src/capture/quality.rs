//! Is this frame good enough to measure on? Geometry (how much of the photo the screen
//! fills, how oblique the view, a plausible shape), sharpness (the blur of the screen's own
//! edge, measured during corner refinement), glare (saturated pixels on the screen) and
//! exposure (brightness and contrast on the screen), each against a limit.
//!
//! Sharpness is judged from the screen edge rather than from the variance of the Laplacian
//! of the content: a radiograph is mostly smooth, so the Laplacian's variance depends on the
//! picture more than on the focus, and sensor noise and moiré raise it on exactly the frames
//! that are worst. The screen edge is a step of known shape; its width is the blur.

use image::RgbImage;
use serde::Serialize;

use super::corners::Detection;
use super::geometry::{Homography, Point};
use super::raster::luma;
use super::rectify::output_size;

/// Limits a frame is judged against.
pub mod limits {
    /// Smallest share of the photo the screen may cover.
    pub const MIN_AREA_FRACTION: f64 = 0.12;
    /// Smallest rectified side in pixels.
    pub const MIN_RECTIFIED_SIDE: u32 = 200;
    /// Largest deviation of a corner angle from 90°.
    pub const MAX_ANGLE_DEVIATION_DEG: f64 = 25.0;
    /// Plausible width/height of a displayed radiograph.
    pub const ASPECT_RANGE: (f64, f64) = (0.4, 2.5);
    /// Largest edge blur (Gaussian σ) on the scale of a 512-px rectified image.
    pub const MAX_BLUR_512: f64 = 2.0;
    /// Largest share of saturated pixels on the screen.
    pub const MAX_GLARE_FRACTION: f64 = 0.02;
    /// Mean screen brightness range (0..255).
    pub const BRIGHTNESS_RANGE: (f64, f64) = (40.0, 215.0);
    /// Smallest spread between the 5th and 95th percentile of the screen's brightness.
    pub const MIN_CONTRAST: f64 = 50.0;
}

/// What is wrong with a frame, in the order a user should fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Issue {
    NoScreen,
    TooSmall,
    OddShape,
    TooOblique,
    Blurry,
    Glare,
    TooDark,
    TooBright,
    LowContrast,
}

impl Issue {
    /// A short instruction for the person holding the phone.
    pub fn hint(self) -> &'static str {
        match self {
            Issue::NoScreen => "point the camera at the screen showing the radiograph",
            Issue::TooSmall => "move closer so the radiograph fills the frame",
            Issue::OddShape => "keep the whole radiograph inside the frame",
            Issue::TooOblique => "hold the phone parallel to the screen",
            Issue::Blurry => "hold still",
            Issue::Glare => "reduce glare: tilt the phone or dim the room lights",
            Issue::TooDark => "increase the screen brightness",
            Issue::TooBright => "lower the screen brightness",
            Issue::LowContrast => "increase the screen contrast",
        }
    }
}

/// The judgement of one frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    /// 0..1: the worst of the per-measure scores; 0.5 is the pass limit of each.
    pub score: f64,
    pub passed: bool,
    pub issues: Vec<Issue>,
    /// Share of the photo the screen covers.
    pub area_fraction: f64,
    /// Largest deviation of a corner angle from 90°.
    pub angle_deviation_deg: f64,
    /// Width / height of the rectified screen.
    pub aspect_ratio: f64,
    pub rectified_width: u32,
    pub rectified_height: u32,
    /// Edge blur σ on the scale of a 512-px rectified image; `None` when the screen edge was
    /// too faint or too soft to measure (judged as blurred).
    pub blur_512: Option<f64>,
    /// Share of saturated pixels on the screen.
    pub glare_fraction: f64,
    /// Mean brightness of the screen (0..255).
    pub brightness: f64,
    /// 95th minus 5th percentile of the screen's brightness.
    pub contrast: f64,
}

impl Quality {
    fn no_screen() -> Quality {
        Quality {
            score: 0.0,
            passed: false,
            issues: vec![Issue::NoScreen],
            area_fraction: 0.0,
            angle_deviation_deg: 0.0,
            aspect_ratio: 0.0,
            rectified_width: 0,
            rectified_height: 0,
            blur_512: None,
            glare_fraction: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        }
    }

    /// The hint for the first issue, or encouragement for a good frame.
    pub fn feedback(&self) -> &'static str {
        self.issues
            .first()
            .map(|i| i.hint())
            .unwrap_or("good frame, hold steady")
    }
}

/// Scores a value against a limit: 1 far on the good side, 0.5 at the limit, towards 0 beyond.
fn below(value: f64, limit: f64) -> f64 {
    1.0 / (1.0 + (value / limit).max(0.0).powi(4))
}

fn above(value: f64, limit: f64) -> f64 {
    if value <= 0.0 {
        return 0.0;
    }
    1.0 / (1.0 + (limit / value).powi(4))
}

/// Judges a frame given where (if anywhere) its screen was found.
pub fn assess(photo: &RgbImage, detection: Option<&Detection>) -> Quality {
    use limits::*;
    let Some(det) = detection else {
        return Quality::no_screen();
    };
    let quad = &det.quad;
    let (pw, ph) = (photo.width() as f64, photo.height() as f64);
    let area_fraction = quad.area() / (pw * ph);
    let angle_deviation_deg = quad
        .angles_deg()
        .iter()
        .map(|a| (a - 90.0).abs())
        .fold(0.0, f64::max);
    let (rw, rh) = output_size(quad);
    let aspect_ratio = rw as f64 / rh as f64;
    let blur_512 = det
        .edge_blur_px
        .map(|s| s * 512.0 / rw.max(rh).max(1) as f64);
    let screen = screen_stats(photo, quad);

    let mut issues = Vec::new();
    let mut scores = Vec::new();
    let area_score = above(area_fraction, MIN_AREA_FRACTION)
        .min(above(rw.min(rh) as f64, MIN_RECTIFIED_SIDE as f64));
    scores.push(area_score);
    if area_fraction < MIN_AREA_FRACTION || rw.min(rh) < MIN_RECTIFIED_SIDE {
        issues.push(Issue::TooSmall);
    }
    let shape_ok = (ASPECT_RANGE.0..=ASPECT_RANGE.1).contains(&aspect_ratio);
    scores.push(if shape_ok { 1.0 } else { 0.0 });
    if !shape_ok {
        issues.push(Issue::OddShape);
    }
    scores.push(below(angle_deviation_deg, MAX_ANGLE_DEVIATION_DEG));
    if angle_deviation_deg > MAX_ANGLE_DEVIATION_DEG {
        issues.push(Issue::TooOblique);
    }
    // An edge too soft to measure is as good as blurred: sharpness is never assumed.
    let blur_score = blur_512.map_or(0.0, |b| below(b, MAX_BLUR_512));
    scores.push(blur_score);
    if blur_score < 0.5 {
        issues.push(Issue::Blurry);
    }
    scores.push(below(screen.glare_fraction, MAX_GLARE_FRACTION));
    if screen.glare_fraction > MAX_GLARE_FRACTION {
        issues.push(Issue::Glare);
    }
    scores.push(
        above(screen.brightness, BRIGHTNESS_RANGE.0)
            .min(below(screen.brightness, BRIGHTNESS_RANGE.1)),
    );
    if screen.brightness < BRIGHTNESS_RANGE.0 {
        issues.push(Issue::TooDark);
    } else if screen.brightness > BRIGHTNESS_RANGE.1 {
        issues.push(Issue::TooBright);
    }
    scores.push(above(screen.contrast, MIN_CONTRAST));
    if screen.contrast < MIN_CONTRAST {
        issues.push(Issue::LowContrast);
    }
    let score = scores.into_iter().fold(1.0, f64::min);
    Quality {
        score,
        passed: issues.is_empty(),
        issues,
        area_fraction,
        angle_deviation_deg,
        aspect_ratio,
        rectified_width: rw,
        rectified_height: rh,
        blur_512,
        glare_fraction: screen.glare_fraction,
        brightness: screen.brightness,
        contrast: screen.contrast,
    }
}

struct ScreenStats {
    glare_fraction: f64,
    brightness: f64,
    contrast: f64,
}

/// Brightness statistics on a 64×64 grid of points spread over the screen (through the
/// homography, so the grid is even on the screen, not in the photo).
fn screen_stats(photo: &RgbImage, quad: &super::geometry::Quad) -> ScreenStats {
    const N: usize = 64;
    let unit = [
        Point::new(0.0, 0.0),
        Point::new(1.0, 0.0),
        Point::new(1.0, 1.0),
        Point::new(0.0, 1.0),
    ];
    let Some(h) = Homography::from_points(&unit, &quad.0) else {
        return ScreenStats {
            glare_fraction: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        };
    };
    let (w, hgt) = (photo.width(), photo.height());
    let mut values = Vec::with_capacity(N * N);
    let mut saturated = 0usize;
    for j in 0..N {
        for i in 0..N {
            let p = h.apply(Point::new(
                (i as f64 + 0.5) / N as f64,
                (j as f64 + 0.5) / N as f64,
            ));
            let x = (p.x.max(0.0) as u32).min(w - 1);
            let y = (p.y.max(0.0) as u32).min(hgt - 1);
            let px = photo.get_pixel(x, y).0;
            if px.iter().any(|&c| c >= 250) {
                saturated += 1;
            }
            values.push(luma(px) as f64);
        }
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    ScreenStats {
        glare_fraction: saturated as f64 / n,
        brightness: values.iter().sum::<f64>() / n,
        contrast: values[(0.95 * (n - 1.0)) as usize] - values[(0.05 * (n - 1.0)) as usize],
    }
}
