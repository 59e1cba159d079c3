//! From stored values to grey in [0, 1]: the modality LUT, VOI windows and LUTs (PS3.3
//! C.11.2.1.2), percentile windows, MONOCHROME1 inverted, colour as luma.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{DecodedPixelData, PixelRepresentation, VoiLutFunction};
use serde::Serialize;

/// Which VOI transform was used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowInfo {
    /// `file` (Window Center/Width), `voi-lut` (VOI LUT Sequence) or `percentile`.
    pub source: String,
    /// Window center in modality units (for `file` and `percentile`).
    pub center: Option<f64>,
    /// Window width in modality units (for `file` and `percentile`).
    pub width: Option<f64>,
    /// VOI LUT function (`LINEAR`, `LINEAR_EXACT`, `SIGMOID`) for `file`.
    pub function: Option<String>,
}

/// How a monochrome frame is mapped to [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Windowing {
    /// The file's window (or VOI LUT) when it has one; else, or when false, percentiles.
    pub use_file: bool,
    /// Lower percentile of the percentile window, in percent.
    pub percentile_low: f64,
    /// Upper percentile of the percentile window, in percent.
    pub percentile_high: f64,
}

/// One frame of `px` as grey in [0, 1] (`raw`: its stored values, see
/// [`super::decode::raw_frame`]): monochrome through the modality LUT and `windowing`
/// (MONOCHROME1 inverted), three samples as luma. Also the window used (monochrome) and
/// whether the frame is meaningfully colour.
pub fn grey_frame(
    px: &DecodedPixelData<'_>,
    frame: u32,
    raw: &[f64],
    padding: Option<(f64, f64)>,
    windowing: &Windowing,
) -> (Vec<f32>, Option<WindowInfo>, bool) {
    let photometric = px.photometric_interpretation().to_string();
    if !photometric.starts_with("MONOCHROME") {
        let (grey, colour) = colour_to_grey(raw, px.bits_stored(), photometric.starts_with("YBR"));
        return (grey, None, colour);
    }
    let (map, info) = voi_map(px, frame, windowing, |modality| {
        let mut values: Vec<f64> = raw
            .iter()
            .filter(|&&v| padding.is_none_or(|(a, b)| v < a || v > b))
            .map(|&v| modality(v))
            .collect();
        if values.is_empty() {
            values = raw.iter().map(|&v| modality(v)).collect();
        }
        percentiles(
            &mut values,
            windowing.percentile_low,
            windowing.percentile_high,
        )
    });
    (
        raw.iter().map(|&v| map.grey(v)).collect(),
        Some(info),
        false,
    )
}

/// Pixel padding range in stored-value units: values to ignore in the percentile window.
pub fn padding_range(obj: &DefaultDicomObject, repr: PixelRepresentation) -> Option<(f64, f64)> {
    let get = |tag| {
        obj.element_opt(tag).ok().flatten().and_then(|e| {
            // Pixel Padding Value is US or SS (ambiguous VR); read it as raw 16 bits.
            e.to_int::<i64>().ok()
        })
    };
    let fix = |v: i64| {
        if repr == PixelRepresentation::Signed && v > i16::MAX as i64 && v <= u16::MAX as i64 {
            (v as u16 as i16) as f64
        } else {
            v as f64
        }
    };
    let a = fix(get(tags::PIXEL_PADDING_VALUE)?);
    let b = get(tags::PIXEL_PADDING_RANGE_LIMIT).map(fix).unwrap_or(a);
    Some((a.min(b), a.max(b)))
}

/// The grey transform of one monochrome frame, from a stored value to [0, 1]: the modality
/// LUT (rescale), then the VOI transform, then MONOCHROME1 inverted. One value at a time, so
/// that the general path maps every pixel with it and the fast path ([`super::lut`]) maps every
/// possible stored value once; both give the same grey.
#[derive(Debug, Clone)]
pub struct VoiMap {
    slope: f64,
    intercept: f64,
    kind: VoiKind,
    invert: bool,
}

#[derive(Debug, Clone)]
enum VoiKind {
    Window {
        center: f64,
        width: f64,
        function: VoiLutFunction,
    },
    Lut {
        data: Vec<u16>,
        first: i64,
        top: f64,
    },
    Percentile {
        low: f64,
        range: f64,
    },
}

impl VoiMap {
    /// The modality value (rescale slope and intercept) of a stored value.
    pub fn modality(&self, stored: f64) -> f64 {
        stored * self.slope + self.intercept
    }

    /// Grey in [0, 1] for a stored value.
    pub fn grey(&self, stored: f64) -> f32 {
        let x = self.modality(stored);
        let g = match &self.kind {
            VoiKind::Window {
                center,
                width,
                function,
            } => apply_window(x, *center, *width, *function) as f32,
            VoiKind::Lut { data, first, top } => {
                let x = x.round();
                let last = data.len() as i64 - 1;
                let idx = if x.is_finite() {
                    (x as i64 - first).clamp(0, last)
                } else {
                    0
                };
                (data[idx as usize] as f64 / top).clamp(0.0, 1.0) as f32
            }
            VoiKind::Percentile { low, range } => {
                if *range > 0.0 {
                    ((x - low) / range).clamp(0.0, 1.0) as f32
                } else {
                    0.0
                }
            }
        };
        if self.invert {
            1.0 - g
        } else {
            g
        }
    }
}

/// The grey transform of a monochrome frame of `px`: the file's window (or VOI LUT) when
/// `windowing` allows and the file has one, else the percentile window that `percentile`
/// computes (given the modality function) from the frame's non-padding values.
pub fn voi_map(
    px: &DecodedPixelData<'_>,
    frame: u32,
    windowing: &Windowing,
    percentile: impl FnOnce(&dyn Fn(f64) -> f64) -> (f64, f64),
) -> (VoiMap, WindowInfo) {
    let rescale = px
        .rescale()
        .ok()
        .and_then(|r| r.get(frame as usize).or_else(|| r.first()).copied());
    let (slope, intercept) = rescale
        .filter(|r| r.slope.is_finite() && r.intercept.is_finite() && r.slope != 0.0)
        .map_or((1.0, 0.0), |r| (r.slope, r.intercept));
    let map = |kind| VoiMap {
        slope,
        intercept,
        kind,
        invert: px.photometric_interpretation().to_string() == "MONOCHROME1",
    };
    if windowing.use_file {
        let window = px
            .window()
            .ok()
            .flatten()
            .and_then(|w| w.get(frame as usize).or_else(|| w.first()).copied())
            .filter(|w| w.width.is_finite() && w.center.is_finite() && w.width > 0.0);
        if let Some(w) = window {
            let function = px
                .voi_lut_function()
                .ok()
                .flatten()
                .and_then(|f| f.get(frame as usize).or_else(|| f.first()).copied())
                .unwrap_or_default();
            let name = match function {
                VoiLutFunction::Linear => "LINEAR",
                VoiLutFunction::LinearExact => "LINEAR_EXACT",
                VoiLutFunction::Sigmoid => "SIGMOID",
            };
            return (
                map(VoiKind::Window {
                    center: w.center,
                    width: w.width,
                    function,
                }),
                WindowInfo {
                    source: "file".into(),
                    center: Some(w.center),
                    width: Some(w.width),
                    function: Some(name.into()),
                },
            );
        }
        let lut = px
            .voi_lut_sequence()
            .ok()
            .flatten()
            .and_then(|l| l.first())
            .filter(|l| !l.data.is_empty());
        if let Some(lut) = lut {
            let max = lut.data.iter().copied().max().unwrap_or(0);
            let used_bits = u16::BITS - max.leading_zeros();
            let bits = if used_bits == 0 || used_bits > lut.bits_stored as u32 {
                lut.bits_stored as u32
            } else {
                used_bits
            }
            .clamp(1, 16);
            return (
                map(VoiKind::Lut {
                    data: lut.data.clone(),
                    first: lut.min_pixel_value as i64,
                    top: ((1u32 << bits) - 1) as f64,
                }),
                WindowInfo {
                    source: "voi-lut".into(),
                    center: None,
                    width: None,
                    function: None,
                },
            );
        }
    }
    let modality = |v: f64| v * slope + intercept;
    let (lo, hi) = percentile(&modality);
    let range = hi - lo;
    (
        map(VoiKind::Percentile { low: lo, range }),
        WindowInfo {
            source: "percentile".into(),
            center: Some((lo + hi) / 2.0),
            width: Some(range),
            function: None,
        },
    )
}

/// Interleaved 3-sample pixels of `bits_stored` bits to grey [0, 1] and a colour flag.
pub fn colour_to_grey(raw: &[f64], bits_stored: u16, ybr: bool) -> (Vec<f32>, bool) {
    let top = ((1u64 << bits_stored.clamp(1, 32)) - 1) as f64;
    let unit: Vec<f64> = raw.iter().map(|v| v / top).collect();
    if ybr {
        // Y is the grey value; colour shows in Cb/Cr away from the middle.
        let mut chroma = 0.0;
        let grey = unit
            .chunks_exact(3)
            .map(|p| {
                chroma += (p[1] - 0.5).abs().max((p[2] - 0.5).abs());
                p[0].clamp(0.0, 1.0) as f32
            })
            .collect::<Vec<_>>();
        let n = grey.len().max(1) as f64;
        (grey, chroma / n > COLOUR_CHROMA)
    } else {
        colour_to_grey_unit(&unit)
    }
}

/// Mean chroma (max - min channel, in [0, 1]) above which an image counts as colour. Grey
/// images saved as lossy RGB JPEG stay well below 0.01; photos are typically above 0.1.
const COLOUR_CHROMA: f64 = 0.03;

/// Interleaved RGB in [0, 1] to ITU-R 601 luma, and whether the image is meaningfully colour.
pub fn colour_to_grey_unit(rgb: &[f64]) -> (Vec<f32>, bool) {
    let mut chroma = 0.0;
    let grey = rgb
        .chunks_exact(3)
        .map(|p| {
            let (r, g, b) = (p[0], p[1], p[2]);
            chroma += r.max(g).max(b) - r.min(g).min(b);
            (0.299 * r + 0.587 * g + 0.114 * b).clamp(0.0, 1.0) as f32
        })
        .collect::<Vec<_>>();
    let n = grey.len().max(1) as f64;
    (grey, chroma / n > COLOUR_CHROMA)
}

/// DICOM PS3.3 C.11.2.1.2 window functions, mapped to [0, 1].
pub fn apply_window(x: f64, c: f64, w: f64, function: VoiLutFunction) -> f64 {
    match function {
        VoiLutFunction::Linear => {
            let w1 = (w - 1.0).max(0.0);
            if w1 == 0.0 {
                return if x > c - 0.5 { 1.0 } else { 0.0 };
            }
            if x <= c - 0.5 - w1 / 2.0 {
                0.0
            } else if x > c - 0.5 + w1 / 2.0 {
                1.0
            } else {
                ((x - (c - 0.5)) / w1 + 0.5).clamp(0.0, 1.0)
            }
        }
        VoiLutFunction::LinearExact => {
            if x <= c - w / 2.0 {
                0.0
            } else if x > c + w / 2.0 {
                1.0
            } else {
                ((x - c) / w + 0.5).clamp(0.0, 1.0)
            }
        }
        VoiLutFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
    }
}

/// Two percentiles (in percent) with numpy's default linear interpolation. Reorders `v`.
pub fn percentiles(v: &mut [f64], low: f64, high: f64) -> (f64, f64) {
    (percentile(v, low), percentile(v, high))
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    let Some((k, frac)) = rank(v.len() as u64, q) else {
        return 0.0;
    };
    let (_, kth, right) = v.select_nth_unstable_by(k as usize, f64::total_cmp);
    let a = *kth;
    if frac == 0.0 || right.is_empty() {
        return a;
    }
    let b = right.iter().copied().fold(f64::INFINITY, f64::min);
    a + (b - a) * frac
}

/// The same percentile as [`percentiles`] over values given as `(value, count)` in ascending
/// order (a histogram).
pub(crate) fn percentile_of_ranked(ranked: &[(f64, u64)], q: f64) -> f64 {
    let n = ranked.iter().map(|&(_, c)| c).sum();
    let Some((k, frac)) = rank(n, q) else {
        return 0.0;
    };
    // The value of the k-th (0-based) smallest item and of the one after it.
    let at = |k: u64| {
        let mut seen = 0;
        ranked
            .iter()
            .find(|&&(_, c)| {
                seen += c;
                seen > k
            })
            .map(|&(v, _)| v)
    };
    let a = at(k).unwrap_or(0.0);
    if frac == 0.0 || k + 1 >= n {
        return a;
    }
    let b = at(k + 1).unwrap_or(a);
    a + (b - a) * frac
}

/// The 0-based rank below percentile `q` of `n` sorted values and the fraction towards the
/// next (numpy's linear interpolation); `None` without values.
fn rank(n: u64, q: f64) -> Option<(u64, f64)> {
    if n == 0 {
        return None;
    }
    let rank = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    let k = rank.floor() as u64;
    Some((k, rank - k as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_detection() {
        let grey = vec![0.5f64; 30];
        assert!(!colour_to_grey_unit(&grey).1);
        let red: Vec<f64> = (0..30)
            .map(|i| if i % 3 == 0 { 1.0 } else { 0.0 })
            .collect();
        assert!(colour_to_grey_unit(&red).1);
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile(np.arange(11), [0.5, 99.5]) == [0.05, 9.95]
        let mut v: Vec<f64> = (0..11).rev().map(f64::from).collect();
        let (lo, hi) = percentiles(&mut v, 0.5, 99.5);
        assert!(
            (lo - 0.05).abs() < 1e-12 && (hi - 9.95).abs() < 1e-12,
            "{lo} {hi}"
        );
    }

    #[test]
    fn linear_window_follows_the_standard() {
        let f = VoiLutFunction::Linear;
        assert_eq!(apply_window(0.0, 100.0, 50.0, f), 0.0);
        assert_eq!(apply_window(200.0, 100.0, 50.0, f), 1.0);
        assert!((apply_window(99.5, 100.0, 50.0, f) - 0.5).abs() < 1e-12);
    }
}
