//! One study result from several models' outputs: the lung-field gate, the per-image entries,
//! the study's measurements and each model's outcome.

use crate::inference::manifest::Manifest;
use crate::inference::{LandmarkResult, LandmarkStatus, SegmentationResult};
use crate::result::{ImageEntry, LandmarkEntry, SegmentationEntry, StudyMeasurement};

/// Reason prefix of an image the lung segmentation refuses.
pub const NOT_A_CHEST: &str = "not a frontal chest radiograph";

/// The segmentation entry of one image.
pub fn segmentation_entry(r: &SegmentationResult) -> SegmentationEntry {
    let (status, reason) = match (r.status.as_str(), &r.lungs) {
        ("predicted", Some(l)) if l.plausible => ("analysed", None),
        ("predicted", Some(l)) => (
            "rejected",
            Some(format!(
                "{NOT_A_CHEST}: {}",
                l.implausible_reasons.join("; ")
            )),
        ),
        ("not_applicable", _) => ("not_applicable", r.reason.clone()),
        _ => ("rejected", r.reason.clone()),
    };
    SegmentationEntry {
        model_id: r.model_id.clone(),
        status: status.into(),
        reason,
        lungs: r.lungs.clone(),
    }
}

/// The landmark entry of one image.
pub fn landmark_entry(r: &LandmarkResult) -> LandmarkEntry {
    let (status, reason) = match &r.status {
        LandmarkStatus::Predicted => ("analysed", None),
        LandmarkStatus::Rejected { reason, .. } => ("rejected", Some(reason.clone())),
        LandmarkStatus::NotApplicable { reason } => ("not_applicable", Some(reason.clone())),
    };
    LandmarkEntry {
        model_id: r.model_id.clone(),
        status: status.into(),
        reason,
        points: r.landmarks.clone(),
        ctr: r.measurement.clone(),
        tier: r.tier.and_then(|t| {
            serde_json::to_value(t)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        }),
    }
}

/// Applies the gate to an image whose models all ran: with a lung segmentation, two plausible
/// lung fields accept the image and anything else refuses it, whatever the classifier's own
/// gate said (a second opinion, kept in `gate_probability`); without one (no segmentation
/// model, or it could not read the image) the classifier's gate decides as before.
pub fn apply_gate(entry: &mut ImageEntry, classifier: Option<&Manifest>) {
    let lungs = entry
        .segmentation
        .as_ref()
        .filter(|s| matches!(s.status.as_str(), "analysed" | "rejected") && s.lungs.is_some());
    let refuse = |entry: &mut ImageEntry, reason: String| {
        entry.status = "rejected".into();
        entry.reason = Some(reason);
        entry.findings.clear();
        entry.uncertainty = None;
        if let Some(l) = entry.landmarks.as_mut() {
            l.status = "rejected".into();
            l.points.clear();
            l.ctr = None;
        }
    };
    match lungs {
        Some(seg) if seg.status == "rejected" => {
            if entry.status == "analysed" || entry.status == "rejected" {
                let reason = seg.reason.clone().unwrap_or_else(|| NOT_A_CHEST.into());
                refuse(entry, reason);
            }
        }
        Some(_) => {
            if let (Some(m), Some(p)) = (classifier, entry.gate_probability) {
                if m.gate.as_ref().is_some_and(|g| p < g.threshold) && entry.status == "analysed" {
                    entry.reason = Some(format!(
                        "accepted on two plausible lung fields; the phantom-trained gate alone would have refused it (probability {p:.2})"
                    ));
                }
            }
        }
        None => {
            if let (Some(m), Some(p)) = (classifier, entry.gate_probability) {
                if let Some(g) = &m.gate {
                    if p < g.threshold && entry.status == "analysed" {
                        refuse(entry, crate::inference::REJECTED_REASON.into());
                    }
                }
            }
        }
    }
}

/// The study's measurements from the images' lung fields and landmarks (analysed images
/// only); `validation` gives each model's validation status.
pub fn measurements(
    images: &[ImageEntry],
    validation: impl Fn(&str) -> String,
) -> Vec<StudyMeasurement> {
    let mut out = Vec::new();
    for img in images {
        let mut push = |key: &str, value: f64, unit: &str, model: &str, method: &str| {
            if value.is_finite() {
                out.push(StudyMeasurement {
                    key: key.into(),
                    value,
                    unit: unit.into(),
                    model_id: model.into(),
                    method: method.into(),
                    sop_instance_uid: img.sop_instance_uid.clone(),
                    validation_status: validation(model),
                });
            }
        };
        if let Some(seg) = img.segmentation.as_ref().filter(|s| s.status == "analysed") {
            if let Some(l) = &seg.lungs {
                let m = seg.model_id.as_str();
                if let Some(c) = &l.ctr {
                    push(
                        "cardiothoracic_ratio",
                        f64::from(c.ratio),
                        "{ratio}",
                        m,
                        "lung-borders",
                    );
                }
                for (lung, side) in [(&l.right, "right"), (&l.left, "left")] {
                    let Some(f) = lung else { continue };
                    push(
                        &format!("{side}_lung_area_fraction"),
                        f64::from(f.area_fraction) * 100.0,
                        "%",
                        m,
                        "segmentation",
                    );
                    if let Some(a) = f.area_mm2 {
                        push(&format!("{side}_lung_area"), a, "mm2", m, "segmentation");
                    }
                    if let Some(h) = f.height_mm {
                        push(&format!("{side}_lung_height"), h, "mm", m, "segmentation");
                    }
                }
            }
        }
        if let Some(lm) = img.landmarks.as_ref().filter(|l| l.status == "analysed") {
            if let Some(c) = &lm.ctr {
                push(
                    "cardiothoracic_ratio",
                    f64::from(c.ratio),
                    "{ratio}",
                    &lm.model_id,
                    "landmarks",
                );
            }
        }
    }
    out
}

/// Measurement keys a triage rule may name.
pub const MEASUREMENT_KEYS: [&str; 7] = [
    "cardiothoracic_ratio",
    "right_lung_area_fraction",
    "left_lung_area_fraction",
    "right_lung_area",
    "left_lung_area",
    "right_lung_height",
    "left_lung_height",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::manifest::GateSpec;
    use crate::measurement::lungs::LungFields;

    fn classifier() -> Manifest {
        let mut m = Manifest::parse(crate::inference::manifest::tests::EXAMPLE).unwrap();
        m.gate = Some(GateSpec {
            file: "gate.onnx".into(),
            sha256: "0".repeat(64),
            threshold: 0.5,
        });
        m
    }

    fn analysed(gate: f32) -> ImageEntry {
        let mut e = ImageEntry::error("1", "2", "3", String::new());
        e.status = "analysed".into();
        e.reason = None;
        e.gate_probability = Some(gate);
        e
    }

    /// Two lung-shaped blocks, or one block in the middle (not two lungs).
    fn lungs(two: bool) -> SegmentationEntry {
        let (w, h) = (64, 64);
        let mut p = vec![0f32; w * h];
        for y in 12..52 {
            for x in 0..w {
                let inside = if two {
                    (10..28).contains(&x) || (36..54).contains(&x)
                } else {
                    (28..36).contains(&x) && y < 20
                };
                if inside {
                    p[y * w + x] = 1.0;
                }
            }
        }
        let report = LungFields::from_probability(&p, w, h, 0.5).report(640, 640, None, 0.5);
        let r = crate::inference::SegmentationResult {
            model_id: "lung-seg".into(),
            model_version: "1".into(),
            provider: "cpu".into(),
            not_for_clinical_use: true,
            status: "predicted".into(),
            reason: None,
            lungs: Some(report),
            image: Default::default(),
            timings: Default::default(),
        };
        segmentation_entry(&r)
    }

    #[test]
    fn plausible_lungs_accept_what_the_phantom_gate_refused() {
        let mut e = analysed(0.06);
        e.segmentation = Some(lungs(true));
        apply_gate(&mut e, Some(&classifier()));
        assert_eq!(e.status, "analysed");
        assert!(e.reason.unwrap().contains("plausible lung fields"));
    }

    #[test]
    fn implausible_lungs_refuse_what_the_phantom_gate_accepted() {
        let mut e = analysed(0.99);
        e.segmentation = Some(lungs(false));
        apply_gate(&mut e, Some(&classifier()));
        assert_eq!(e.status, "rejected");
        assert!(e.reason.unwrap().starts_with(NOT_A_CHEST));
        assert!(e.findings.is_empty());
    }

    #[test]
    fn without_a_segmentation_the_phantom_gate_decides() {
        let mut e = analysed(0.2);
        apply_gate(&mut e, Some(&classifier()));
        assert_eq!(e.status, "rejected");
        let mut e = analysed(0.8);
        apply_gate(&mut e, Some(&classifier()));
        assert_eq!(e.status, "analysed");
    }

    #[test]
    fn measurements_come_from_analysed_images_only() {
        let mut e = analysed(0.9);
        e.segmentation = Some(lungs(true));
        let m = measurements(std::slice::from_ref(&e), |_| "real-images".into());
        assert!(m.iter().any(|m| m.key == "right_lung_area_fraction"));
        e.segmentation = Some(lungs(false));
        assert!(measurements(&[e], |_| "real-images".into()).is_empty());
    }
}
