//! From member outputs to findings and uncertainty.
//!
//! Definitions (all entropies in bits, so a binary label's entropy is within [0, 1]):
//! - per label: `probability` = mean of member probabilities; `spread` = population standard
//!   deviation of member probabilities; `present` = probability >= the label's threshold.
//! - `total` = mean over labels of the predictive entropy H(mean p).
//! - `aleatoric` = mean over labels of the expected entropy, mean over members of H(p_m).
//! - `epistemic` = `total - aleatoric`: the mutual information between prediction and member
//!   (BALD), never negative; so `total = epistemic + aleatoric`.
//! - `spread` (overall) = maximum over labels of the per-label spread (as the demo training's
//!   evaluation calibrated the tiers, tools/train/train.py); the confidence tier compares it
//!   with the manifest: `optimal` below `optimal_below`, `good` below `good_below`, else
//!   `review`.
//! - `disagreement_score` = fraction of labels on which members do not all agree about presence.
//! - `should_review` = tier is `review`, or `total` is above `review_entropy_above`.
//! - Several frames (`frames = "all"`): each member's probability per label is its maximum over
//!   frames; the gate probability is the mean over frames.

use serde::Serialize;

use super::manifest::{CodeScheme, Manifest};

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelResult {
    /// Machine key, e.g. `cardiomegaly`.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Concept id of the finding, in `scheme`.
    pub code: String,
    pub scheme: CodeScheme,
    /// The concept's display.
    pub display: String,
    /// Ensemble probability (mean over members).
    pub probability: f32,
    /// `probability >= threshold`.
    pub present: bool,
    /// Threshold from the manifest.
    pub threshold: f32,
    /// Each member's probability, in manifest order.
    pub member_probabilities: Vec<f32>,
    /// Population standard deviation of the member probabilities.
    pub spread: f32,
}

/// Confidence tier from the ensemble spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConfidenceTier {
    /// Spread below `optimal_below`.
    Optimal,
    /// Spread below `good_below`.
    Good,
    /// Anything else: a human should look.
    Review,
}

/// Image-level uncertainty (see the module docs for the definitions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uncertainty {
    /// Maximum over labels of the member spread (population std).
    pub spread: f32,
    /// Mutual information (bits, mean over labels).
    pub epistemic: f32,
    /// Expected binary entropy over members (bits, mean over labels).
    pub aleatoric: f32,
    /// Predictive entropy (bits, mean over labels) = epistemic + aleatoric.
    pub total: f32,
    /// Fraction of labels on which members disagree about presence.
    pub disagreement_score: f32,
    /// Tier from `spread`.
    pub confidence: ConfidenceTier,
    /// Tier is review, or `total` above the manifest's `review_entropy_above`.
    pub should_review: bool,
}

/// The confidence tier of a spread under the manifest's `[uncertainty]` thresholds.
pub fn tier(manifest: &Manifest, spread: f32) -> ConfidenceTier {
    let u = &manifest.uncertainty;
    if spread < u.optimal_below {
        ConfidenceTier::Optimal
    } else if spread < u.good_below {
        ConfidenceTier::Good
    } else {
        ConfidenceTier::Review
    }
}

/// Sigmoid that does not overflow.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Binary entropy in bits.
pub fn entropy_bits(p: f64) -> f64 {
    let p = p.clamp(0.0, 1.0);
    let h = |q: f64| if q <= 0.0 { 0.0 } else { -q * q.log2() };
    h(p) + h(1.0 - p)
}

/// Per-member probabilities `[member][label]` from raw outputs `[member][item * labels]`.
pub fn member_probabilities(
    manifest: &Manifest,
    outputs: &[Vec<f32>],
    items: usize,
) -> Vec<Vec<f32>> {
    let l = manifest.label_count();
    let act = |v: f32| {
        if manifest.output.activation == "sigmoid" {
            sigmoid(v)
        } else {
            v.clamp(0.0, 1.0)
        }
    };
    outputs
        .iter()
        .map(|out| {
            (0..l)
                .map(|j| {
                    (0..items)
                        .map(|i| act(out[i * l + j]))
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect()
        })
        .collect()
}

/// Findings and uncertainty from member probabilities `[member][label]`.
pub fn combine(manifest: &Manifest, probs: &[Vec<f32>]) -> (Vec<LabelResult>, Uncertainty) {
    let m = probs.len().max(1) as f64;
    let mut labels = Vec::with_capacity(manifest.labels.len());
    let (mut spread_max, mut total_sum, mut alea_sum, mut disagree) = (0.0f64, 0.0, 0.0, 0usize);
    for (j, spec) in manifest.labels.iter().enumerate() {
        let ps: Vec<f32> = probs.iter().map(|p| p[j]).collect();
        let mean = ps.iter().map(|&p| p as f64).sum::<f64>() / m;
        let var = ps.iter().map(|&p| (p as f64 - mean).powi(2)).sum::<f64>() / m;
        let spread = var.sqrt();
        let total = entropy_bits(mean);
        let alea = ps.iter().map(|&p| entropy_bits(p as f64)).sum::<f64>() / m;
        let votes = ps.iter().filter(|&&p| p >= spec.threshold).count();
        if votes != 0 && votes != ps.len() {
            disagree += 1;
        }
        spread_max = spread_max.max(spread);
        total_sum += total;
        alea_sum += alea;
        labels.push(LabelResult {
            key: spec.key.clone(),
            name: spec.name.clone(),
            code: spec.code.clone(),
            scheme: spec.scheme,
            display: spec.display.clone(),
            probability: mean as f32,
            present: mean as f32 >= spec.threshold,
            threshold: spec.threshold,
            member_probabilities: ps,
            spread: spread as f32,
        });
    }
    let n = manifest.labels.len().max(1) as f64;
    let spread = spread_max as f32;
    let total = total_sum / n;
    let aleatoric = alea_sum / n;
    let u = &manifest.uncertainty;
    let confidence = tier(manifest, spread);
    let uncertainty = Uncertainty {
        spread,
        epistemic: (total - aleatoric).max(0.0) as f32,
        aleatoric: aleatoric as f32,
        total: total as f32,
        disagreement_score: (disagree as f64 / n) as f32,
        confidence,
        should_review: confidence == ConfidenceTier::Review
            || u.review_entropy_above.is_some_and(|t| total as f32 > t),
    };
    (labels, uncertainty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::manifest::tests::EXAMPLE;

    #[test]
    fn agreeing_confident_members() {
        let m = Manifest::parse(EXAMPLE).unwrap();
        let (labels, u) = combine(&m, &[vec![0.99], vec![0.99], vec![0.99]]);
        assert!(labels[0].present);
        assert!(u.spread < 1e-6);
        assert_eq!(u.confidence, ConfidenceTier::Optimal);
        assert!(u.epistemic.abs() < 1e-6);
        assert!((u.total - u.aleatoric - u.epistemic).abs() < 1e-6);
        assert_eq!(u.disagreement_score, 0.0);
        assert!(!u.should_review);
    }

    #[test]
    fn disagreeing_members() {
        let m = Manifest::parse(EXAMPLE).unwrap();
        let (labels, u) = combine(&m, &[vec![0.9], vec![0.1]]);
        assert!((labels[0].probability - 0.5).abs() < 1e-6);
        assert!((labels[0].spread - 0.4).abs() < 1e-6);
        assert_eq!(u.disagreement_score, 1.0);
        assert_eq!(u.confidence, ConfidenceTier::Review);
        assert!(u.should_review);
        assert!((u.total - 1.0).abs() < 1e-6);
        assert!(u.epistemic > 0.5);
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }
}
