//! Batch statistics over the images of a batch or stream (or a capture session's frames).
//!
//! Only images with a valid measurement (codes 1–4) count. The best image is the one with the
//! lowest ensemble spread (the earliest on a tie); `median_vhs` is the median of their CTRs,
//! `vhs_std` the population standard deviation (null below two). `vhs_confidence` is the best
//! image's tier; `vlas_confidence` is always `review` (there is no VLAS). With no valid image
//! the values are null, the best index null and both confidences `review`.

use serde_json::{json, Map, Value};

use super::outcome::PredictOutcome;

/// The batch-level figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub best_index: Option<usize>,
    pub best_vhs: Option<f64>,
    pub median_vhs: Option<f64>,
    pub vhs_std: Option<f64>,
    pub vhs_confidence: &'static str,
    /// Images that gave an outcome (not those whose data was unusable).
    pub n_processed: usize,
    /// Images whose landmarks were found.
    pub n_with_landmarks: usize,
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Summarises `frames` (`None` for an image that gave no outcome), in request order.
pub fn summarize(frames: &[Option<&PredictOutcome>]) -> Summary {
    let valid: Vec<(usize, &PredictOutcome, f64)> = frames
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.and_then(|o| o.vhs().map(|v| (i, o, v))))
        .collect();
    let best = valid.iter().min_by(|a, b| {
        let s = |o: &PredictOutcome| o.spread.unwrap_or(f32::INFINITY);
        s(a.1).total_cmp(&s(b.1)).then(a.0.cmp(&b.0))
    });
    let mut values: Vec<f64> = valid.iter().map(|v| v.2).collect();
    values.sort_by(f64::total_cmp);
    let median = match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    };
    let std = (values.len() >= 2).then(|| {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
    });
    Summary {
        best_index: best.map(|b| b.0),
        best_vhs: best.map(|b| b.2),
        median_vhs: median.map(round3),
        vhs_std: std.map(|s| (s * 10_000.0).round() / 10_000.0),
        vhs_confidence: best.map_or("review", |b| b.1.model_confidence()),
        n_processed: frames.iter().filter(|f| f.is_some()).count(),
        n_with_landmarks: frames
            .iter()
            .filter(|f| f.is_some_and(|o| o.landmarks_detected()))
            .count(),
    }
}

impl Summary {
    /// The stream's `summary` event fields (the batch response has them too).
    pub fn fields(&self) -> Map<String, Value> {
        let v = json!({
            "best_vhs": self.best_vhs,
            "best_vlas": Value::Null,
            "median_vhs": self.median_vhs,
            "median_vlas": Value::Null,
            "vhs_std": self.vhs_std,
            "vlas_std": Value::Null,
            "vhs_confidence": self.vhs_confidence,
            "vlas_confidence": "review",
            "best_photo_index": self.best_index,
            "n_photos_processed": self.n_processed,
            "n_photos_with_landmarks": self.n_with_landmarks,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The result code a session is recorded with: the best image's, else the most telling
    /// failure (5 when landmarks were found, then 6 when one was rejected, else 0).
    pub fn result_code(&self, frames: &[Option<&PredictOutcome>]) -> u8 {
        if let Some(o) = self
            .best_index
            .and_then(|i| frames.get(i).copied().flatten())
        {
            return o.result_code;
        }
        let codes: Vec<u8> = frames.iter().flatten().map(|o| o.result_code).collect();
        [5, 6, 7]
            .into_iter()
            .find(|c| codes.contains(c))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::ConfidenceTier;
    use crate::measurement::{cardiothoracic_ratio, Landmark};

    fn frame(ratio_heart: f32, spread: f32, tier: ConfidenceTier) -> PredictOutcome {
        let landmarks = vec![
            Landmark::new("heart_right", 0.5 - ratio_heart * 0.3, 0.6),
            Landmark::new("heart_left", 0.5 + ratio_heart * 0.3, 0.6),
            Landmark::new("thorax_right", 0.2, 0.6),
            Landmark::new("thorax_left", 0.8, 0.6),
        ];
        PredictOutcome {
            result_code: match tier {
                ConfidenceTier::Optimal => 1,
                ConfidenceTier::Good => 2,
                ConfidenceTier::Review => 3,
            },
            model_version: "0.1.0".into(),
            ctr: cardiothoracic_ratio(&landmarks),
            landmarks,
            spread: Some(spread),
            tier: Some(tier),
            rejection: None,
            axes_perpendicular: true,
            pop_detected: false,
            rendered_image: None,
        }
    }

    fn rejected() -> PredictOutcome {
        PredictOutcome {
            result_code: 6,
            model_version: "0.1.0".into(),
            landmarks: vec![],
            spread: None,
            tier: None,
            ctr: None,
            rejection: Some(super::super::outcome::Rejection {
                reason: "not_a_valid_radiograph".into(),
                classifier_confidence: 0.8,
            }),
            axes_perpendicular: false,
            pop_detected: false,
            rendered_image: None,
        }
    }

    #[test]
    fn best_is_the_lowest_spread_and_statistics_cover_valid_images() {
        let a = frame(0.4, 0.006, ConfidenceTier::Good);
        let b = frame(0.5, 0.002, ConfidenceTier::Optimal);
        let c = rejected();
        let d = frame(0.6, 0.009, ConfidenceTier::Review);
        let frames = [Some(&a), Some(&b), Some(&c), None, Some(&d)];
        let s = summarize(&frames);
        assert_eq!(s.best_index, Some(1));
        assert_eq!(s.best_vhs, Some(0.5));
        assert_eq!(s.median_vhs, Some(0.5));
        // Population std of 0.4, 0.5, 0.6.
        assert_eq!(s.vhs_std, Some(0.0816));
        assert_eq!(s.vhs_confidence, "optimal");
        assert_eq!((s.n_processed, s.n_with_landmarks), (4, 3));
        assert_eq!(s.result_code(&frames), 1);
        let f = Value::Object(s.fields());
        assert_eq!(f["best_photo_index"], 1);
        assert_eq!(f["vlas_confidence"], "review");
        assert_eq!(f["best_vlas"], Value::Null);
    }

    #[test]
    fn one_image_has_no_std_and_none_valid_gives_nulls() {
        let a = frame(0.45, 0.003, ConfidenceTier::Optimal);
        let s = summarize(&[Some(&a)]);
        assert_eq!((s.median_vhs, s.vhs_std), (Some(0.45), None));
        let r = rejected();
        let frames = [Some(&r), None];
        let s = summarize(&frames);
        assert_eq!((s.best_index, s.best_vhs, s.median_vhs), (None, None, None));
        assert_eq!(s.vhs_confidence, "review");
        assert_eq!(s.result_code(&frames), 6);
        let even = [Some(&a), Some(&r), Some(&a)];
        assert_eq!(summarize(&even).median_vhs, Some(0.45));
    }
}
