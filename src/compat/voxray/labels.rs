//! VoxRay answers one diagnosis label per image (`06_PNEUMONIA`, `NORMAL_LUNG` in its
//! document); our models answer several findings. The diagnosis is the present finding with
//! the highest probability, named by [`TABLE`]; with no finding present it is
//! `00_NORMAL_LUNG` with confidence 1 − the highest finding probability.

use crate::inference::postprocess::LabelResult;

/// Label when no finding is present.
pub const NORMAL: &str = "00_NORMAL_LUNG";

/// Our finding key → VoxRay diagnosis label. Consolidation, the radiographic sign VoxRay's
/// pneumonia class stands for, keeps the document's `06_PNEUMONIA`.
pub const TABLE: &[(&str, &str)] = &[
    ("tuberculosis", "01_TUBERCULOSIS"),
    ("cardiomegaly", "02_CARDIOMEGALY"),
    ("pleural_thickening", "03_PLEURAL_THICKENING"),
    ("pleural_effusion", "04_PLEURAL_EFFUSION"),
    ("pneumothorax", "05_PNEUMOTHORAX"),
    ("consolidation", "06_PNEUMONIA"),
    ("atelectasis", "07_ATELECTASIS"),
    ("nodule_mass", "08_NODULE_MASS"),
    ("fibrosis", "09_FIBROSIS"),
    ("infiltration", "10_INFILTRATION"),
    ("calcification", "11_CALCIFICATION"),
];

/// VoxRay's label of a finding key; a key outside the table (another model) is `99_<KEY>`.
pub fn label_for(key: &str) -> String {
    TABLE
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, l)| (*l).to_string())
        .unwrap_or_else(|| format!("99_{}", key.to_ascii_uppercase()))
}

/// Diagnosis and confidence from `(key, probability, threshold)` triples.
fn pick<'a>(items: impl Iterator<Item = (&'a str, f32, f32)> + Clone) -> (String, f32) {
    let top_present = items
        .clone()
        .filter(|(_, p, t)| p >= t)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match top_present {
        Some((key, p, _)) => (label_for(key), p),
        None => {
            let highest = items.map(|(_, p, _)| p).fold(0.0f32, f32::max);
            (NORMAL.to_string(), (1.0 - highest).clamp(0.0, 1.0))
        }
    }
}

/// The ensemble's diagnosis.
pub fn diagnosis(labels: &[LabelResult]) -> (String, f32) {
    pick(
        labels
            .iter()
            .map(|l| (l.key.as_str(), l.probability, l.threshold)),
    )
}

/// Member `m`'s own diagnosis (its probabilities against the same thresholds).
pub fn member_diagnosis(labels: &[LabelResult], m: usize) -> (String, f32) {
    pick(labels.iter().map(|l| {
        (
            l.key.as_str(),
            l.member_probabilities.get(m).copied().unwrap_or(0.0),
            l.threshold,
        )
    }))
}

/// Rounds for display (VoxRay shows three decimals).
pub fn round3(v: f32) -> f64 {
    (v as f64 * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(key: &str, p: f32, t: f32, members: Vec<f32>) -> LabelResult {
        LabelResult {
            key: key.into(),
            name: key.into(),
            code: String::new(),
            scheme: Default::default(),
            display: String::new(),
            probability: p,
            present: p >= t,
            threshold: t,
            member_probabilities: members,
            spread: 0.0,
        }
    }

    #[test]
    fn highest_present_finding_wins() {
        let ls = vec![
            label("cardiomegaly", 0.6, 0.4, vec![0.7, 0.5]),
            label("consolidation", 0.9, 0.3, vec![0.95, 0.85]),
            label("fibrosis", 0.95, 0.99, vec![0.95, 0.95]),
        ];
        let (d, c) = diagnosis(&ls);
        assert_eq!(d, "06_PNEUMONIA");
        assert!((c - 0.9).abs() < 1e-6);
    }

    #[test]
    fn nothing_present_is_normal_with_the_complement_of_the_top_probability() {
        let ls = vec![
            label("cardiomegaly", 0.2, 0.4, vec![0.1, 0.3]),
            label("pneumothorax", 0.1, 0.3, vec![0.1, 0.1]),
        ];
        let (d, c) = diagnosis(&ls);
        assert_eq!(d, NORMAL);
        assert!((c - 0.8).abs() < 1e-6);
        // Member 1 alone sees nothing either; its own top probability is 0.3.
        let (d1, c1) = member_diagnosis(&ls, 1);
        assert_eq!(d1, NORMAL);
        assert!((c1 - 0.7).abs() < 1e-6);
    }

    #[test]
    fn members_are_judged_on_their_own_probabilities() {
        let ls = vec![label("cardiomegaly", 0.45, 0.4, vec![0.8, 0.1])];
        assert_eq!(member_diagnosis(&ls, 0).0, "02_CARDIOMEGALY");
        assert_eq!(member_diagnosis(&ls, 1).0, NORMAL);
    }

    #[test]
    fn table_covers_the_demo_model_and_names_unknown_keys() {
        assert_eq!(TABLE.len(), 11);
        assert_eq!(label_for("nodule_mass"), "08_NODULE_MASS");
        assert_eq!(label_for("emphysema"), "99_EMPHYSEMA");
    }
}
