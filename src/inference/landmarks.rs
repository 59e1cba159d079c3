//! Landmark models: from member outputs to points, their spread, a confidence tier and the
//! measurement.
//!
//! Definitions:
//! - Each member outputs `2K` values per image, `x0, y0, x1, y1, ...` in the manifest's
//!   `[[landmarks]]` order (after the manifest's activation), normalised to the image (0..1,
//!   x right, y down). The ensemble landmark is the mean of the members' points.
//! - `spread` (manifest `spread = "landmark-rms"`): for each landmark the root mean square
//!   over members of the Euclidean distance between the member's point and the ensemble mean,
//!   then the mean over landmarks. It is in normalised image units, like RadAnalyzer's spread
//!   (0.005 = 1.3 px at 256 px); one member gives 0.
//! - `tier`: `optimal` below `uncertainty.optimal_below`, `good` below `good_below`, else
//!   `review`.
//! - Rejection: a colour image, or a gate probability below the gate threshold, gives
//!   [`LandmarkStatus::Rejected`] with reason [`LANDMARK_REJECTED_REASON`] and
//!   `classifier_confidence` = the gate's confidence that the image is *not* a valid
//!   radiograph (`1 - gate probability`; 1 for the colour check, which runs no model).

use serde::Serialize;

use super::engine::Timings;
use super::manifest::Manifest;
use super::postprocess::{self, ConfidenceTier};
use crate::measurement::{self, Ctr};

pub use crate::measurement::Landmark;

/// `reason` of a gate rejection, in RadAnalyzer's words.
pub const LANDMARK_REJECTED_REASON: &str = "not_a_valid_radiograph";

/// What happened to the image.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LandmarkStatus {
    /// The ensemble ran; `landmarks` holds its points.
    Predicted,
    /// The gate (or the colour check) says this is not a radiograph; no landmarks.
    Rejected {
        /// [`LANDMARK_REJECTED_REASON`].
        reason: String,
        /// Confidence that the image is not a valid radiograph (`1 - gate probability`).
        classifier_confidence: f32,
    },
    /// A DICOM header rule of the manifest excluded the image (modality, body part, view,
    /// photometric); no model ran.
    NotApplicable {
        /// Which rule, in words.
        reason: String,
    },
}

/// The landmark ensemble's answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LandmarkResult {
    /// Model id.
    pub model_id: String,
    /// Model version.
    pub model_version: String,
    /// Execution provider used (`cpu`, `cuda`).
    pub provider: String,
    /// Copied from the manifest: demo and research models say true.
    pub not_for_clinical_use: bool,
    /// Predicted, rejected or not applicable.
    pub status: LandmarkStatus,
    /// Gate probability ("valid radiograph") when the gate ran.
    pub gate_probability: Option<f32>,
    /// Ensemble mean, in manifest order; empty unless predicted.
    pub landmarks: Vec<Landmark>,
    /// Each member's points, one list per member in manifest order.
    pub member_landmarks: Vec<Vec<Landmark>>,
    /// Member disagreement (module docs), `None` unless predicted.
    pub spread: Option<f32>,
    /// Confidence tier from `spread`.
    pub tier: Option<ConfidenceTier>,
    /// The manifest's measurement (the cardiothoracic ratio) when it can be computed.
    pub measurement: Option<Ctr>,
    /// Columns of the source image.
    pub image_width: u32,
    /// Rows of the source image.
    pub image_height: u32,
    /// Per-stage timings.
    pub timings_ms: Timings,
}

/// Each member's points from its raw outputs (`[member][2K]`, one image).
pub fn member_landmarks(manifest: &Manifest, outputs: &[Vec<f32>]) -> Vec<Vec<Landmark>> {
    let act = |v: f32| {
        if manifest.output.activation == "sigmoid" {
            postprocess::sigmoid(v)
        } else {
            v
        }
    };
    outputs
        .iter()
        .map(|out| {
            manifest
                .landmarks
                .iter()
                .zip(out.chunks_exact(2))
                .map(|(spec, xy)| Landmark::new(spec.class.clone(), act(xy[0]), act(xy[1])))
                .collect()
        })
        .collect()
}

/// The ensemble's points (mean over members) and the spread (module docs).
pub fn combine(members: &[Vec<Landmark>]) -> (Vec<Landmark>, f32) {
    let Some(first) = members.first() else {
        return (Vec::new(), 0.0);
    };
    let m = members.len() as f64;
    let mut mean = Vec::with_capacity(first.len());
    let mut spread_sum = 0.0f64;
    for (k, l) in first.iter().enumerate() {
        let (mut sx, mut sy) = (0.0f64, 0.0f64);
        for member in members {
            sx += member[k].x as f64;
            sy += member[k].y as f64;
        }
        let (mx, my) = (sx / m, sy / m);
        let msd = members
            .iter()
            .map(|p| (p[k].x as f64 - mx).powi(2) + (p[k].y as f64 - my).powi(2))
            .sum::<f64>()
            / m;
        spread_sum += msd.sqrt();
        mean.push(Landmark::new(l.class.clone(), mx as f32, my as f32));
    }
    let spread = (spread_sum / first.len().max(1) as f64) as f32;
    (mean, spread)
}

/// The manifest's measurement from the ensemble's points.
pub fn measure(manifest: &Manifest, landmarks: &[Landmark]) -> Option<Ctr> {
    let spec = manifest.measurement.as_ref()?;
    measurement::cardiothoracic_ratio_with(landmarks, spec.normal_below)
}

/// Points, spread, tier and measurement from raw member outputs for one image.
pub(crate) fn evaluate(
    manifest: &Manifest,
    outputs: &[Vec<f32>],
) -> (
    Vec<Landmark>,
    Vec<Vec<Landmark>>,
    f32,
    ConfidenceTier,
    Option<Ctr>,
) {
    let members = member_landmarks(manifest, outputs);
    let (mean, spread) = combine(&members);
    let tier = postprocess::tier(manifest, spread);
    let ctr = measure(manifest, &mean);
    (mean, members, spread, tier, ctr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::manifest::tests::LANDMARK_EXAMPLE;

    #[test]
    fn mean_spread_and_ctr_of_member_outputs() {
        let m = Manifest::parse(LANDMARK_EXAMPLE).unwrap();
        // two members, 4 landmarks: heart 0.40..0.64, thorax 0.20..0.80 (CTR 0.4)
        let a = vec![0.388, 0.60, 0.652, 0.60, 0.20, 0.62, 0.80, 0.62];
        let b = vec![0.412, 0.60, 0.628, 0.60, 0.20, 0.62, 0.80, 0.62];
        let (mean, members, spread, tier, ctr) = evaluate(&m, &[a, b]);
        assert_eq!(members.len(), 2);
        assert_eq!(mean.len(), 4);
        assert_eq!(mean[0].class, "heart_right");
        assert!((mean[0].x - 0.40).abs() < 1e-6 && (mean[1].x - 0.64).abs() < 1e-6);
        // heart points are 0.012 from the mean in each member, thorax points 0
        assert!((spread - 0.006).abs() < 1e-6, "{spread}");
        assert_eq!(tier, ConfidenceTier::Good);
        let ctr = ctr.unwrap();
        assert!((ctr.ratio - 0.4).abs() < 1e-6);
        assert!(!ctr.enlarged);
    }

    #[test]
    fn one_member_has_no_spread_and_sigmoid_applies() {
        let mut m = Manifest::parse(LANDMARK_EXAMPLE).unwrap();
        m.output.activation = "sigmoid".into();
        let (mean, _, spread, tier, _) = evaluate(&m, &[vec![0.0; 8]]);
        assert!(mean
            .iter()
            .all(|l| (l.x - 0.5).abs() < 1e-6 && (l.y - 0.5).abs() < 1e-6));
        assert_eq!(spread, 0.0);
        assert_eq!(tier, ConfidenceTier::Optimal);
    }

    #[test]
    fn spread_grows_with_disagreement() {
        let m = Manifest::parse(LANDMARK_EXAMPLE).unwrap();
        let base = vec![0.4, 0.6, 0.64, 0.6, 0.2, 0.62, 0.8, 0.62];
        let shifted: Vec<f32> = base.iter().map(|v| v + 0.03).collect();
        let (_, _, spread, tier, _) = evaluate(&m, &[base.clone(), shifted]);
        // each point moves by (0.03, 0.03): distance from the mean 0.015 * sqrt(2)
        assert!((spread - 0.015 * 2f32.sqrt()).abs() < 1e-5, "{spread}");
        assert_eq!(tier, ConfidenceTier::Review);
    }
}
