//! VOI windows (PS3.3 C.11.2.1.2) and percentile windows.

use dicom_pixeldata::VoiLutFunction;

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
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    let rank = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    let k = rank.floor() as usize;
    let frac = rank - k as f64;
    let (_, kth, right) = v.select_nth_unstable_by(k, f64::total_cmp);
    let a = *kth;
    if frac == 0.0 || right.is_empty() {
        return a;
    }
    let b = right.iter().copied().fold(f64::INFINITY, f64::min);
    a + (b - a) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

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
