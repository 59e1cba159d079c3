//! The result of one study: per image the coded findings with member outputs, a study-level
//! summary, triage urgency, LeapAI-style metadata and the timings from receipt to result.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::Urgency;
use crate::inference::{ConfidenceTier, ImageResult, LabelResult, Uncertainty};
use crate::measurement::lungs::LungReport;
use crate::measurement::{Ctr, Landmark};

use super::triage::Triage;

/// One finding on one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    /// Machine key, e.g. `pleural_effusion`.
    pub key: String,
    /// Display name, e.g. `Pleural Effusion`.
    pub name: String,
    pub code: Coding,
    /// Whether the finding is called present (`confidence >= threshold`).
    pub presence: bool,
    /// Ensemble probability, 0..1.
    pub confidence: f32,
    pub threshold: f32,
    /// Each ensemble member's probability, in manifest order.
    pub member_outputs: Vec<f32>,
    /// Standard deviation of the member outputs.
    pub spread: f32,
}

/// A coded concept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: String,
}

impl From<&LabelResult> for Finding {
    fn from(l: &LabelResult) -> Self {
        Finding {
            key: l.key.clone(),
            name: l.name.clone(),
            code: Coding {
                system: l.scheme.fhir_system().into(),
                code: l.code.clone(),
                display: l.display.clone(),
            },
            presence: l.present,
            confidence: l.probability,
            threshold: l.threshold,
            member_outputs: l.member_probabilities.clone(),
            spread: l.spread,
        }
    }
}

/// The outcome for one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageEntry {
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    /// `analysed`, `not_applicable`, `rejected` or `error`.
    pub status: String,
    pub reason: Option<String>,
    pub gate_probability: Option<f32>,
    pub findings: Vec<Finding>,
    pub uncertainty: Option<Value>,
    pub image: Option<Value>,
    pub timings: Option<Value>,
    /// Lung fields from a segmentation model, when one ran on the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<SegmentationEntry>,
    /// Measuring points from a landmark model, when one ran on the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landmarks: Option<LandmarkEntry>,
}

/// A segmentation model's outcome on one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SegmentationEntry {
    pub model_id: String,
    /// `analysed`, `not_applicable`, `rejected` or `error`.
    pub status: String,
    pub reason: Option<String>,
    /// The lung fields, their plausibility, figures, contours and label mask.
    pub lungs: Option<LungReport>,
}

/// A landmark model's outcome on one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LandmarkEntry {
    pub model_id: String,
    /// `analysed`, `not_applicable`, `rejected` or `error`.
    pub status: String,
    pub reason: Option<String>,
    /// Points in normalised image coordinates.
    pub points: Vec<Landmark>,
    pub ctr: Option<Ctr>,
    /// Confidence tier of the points (`optimal`, `good`, `review`).
    pub tier: Option<String>,
}

/// One number measured on the study, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StudyMeasurement {
    /// `cardiothoracic_ratio`, `right_lung_area`, `left_lung_area`, ...
    pub key: String,
    pub value: f64,
    /// UCUM unit: `{ratio}`, `mm2`, `mm`, `%`.
    pub unit: String,
    /// The model the number comes from, and how (`lung-borders`, `landmarks`).
    pub model_id: String,
    pub method: String,
    pub sop_instance_uid: String,
    /// Validation status of the model (`real-images`, `synthetic-only`, `unknown`).
    pub validation_status: String,
}

/// One model's part of a study result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelOutcome {
    pub id: String,
    pub version: String,
    pub name: String,
    /// `multilabel-classification`, `segmentation` or `landmark-regression`.
    pub task: String,
    pub not_for_clinical_use: bool,
    /// `real-images`, `synthetic-only` or `unknown` (the manifest's `[validation]`).
    pub validation_status: String,
    /// What the model was trained on, from its manifest.
    pub trained_on: String,
    /// `succeeded` (some image analysed), `not_applicable`, `rejected`, or `failed` (the
    /// model could not run; `error` says why; the other models' outputs stand).
    pub status: String,
    pub error: Option<String>,
    pub images_analysed: usize,
    /// Milliseconds from the job's start to this model's last image.
    pub elapsed_ms: i64,
}

impl ImageEntry {
    pub fn from_inference(
        sop_instance_uid: &str,
        series_instance_uid: &str,
        sop_class_uid: &str,
        r: &ImageResult,
    ) -> ImageEntry {
        let status = if !r.applicable {
            "not_applicable"
        } else if r.rejected {
            "rejected"
        } else {
            "analysed"
        };
        ImageEntry {
            sop_instance_uid: sop_instance_uid.into(),
            series_instance_uid: series_instance_uid.into(),
            sop_class_uid: sop_class_uid.into(),
            status: status.into(),
            reason: r.reason.clone(),
            gate_probability: r.gate_probability,
            findings: r.labels.iter().map(Finding::from).collect(),
            uncertainty: r
                .uncertainty
                .as_ref()
                .and_then(|u| serde_json::to_value(u).ok()),
            image: serde_json::to_value(&r.image).ok(),
            timings: serde_json::to_value(&r.timings).ok(),
            segmentation: None,
            landmarks: None,
        }
    }

    /// An image whose file could not be read or decoded.
    pub fn error(
        sop_instance_uid: &str,
        series_instance_uid: &str,
        sop_class_uid: &str,
        reason: String,
    ) -> ImageEntry {
        ImageEntry {
            sop_instance_uid: sop_instance_uid.into(),
            series_instance_uid: series_instance_uid.into(),
            sop_class_uid: sop_class_uid.into(),
            status: "error".into(),
            reason: Some(reason),
            gate_probability: None,
            findings: Vec::new(),
            uncertainty: None,
            image: None,
            timings: None,
            segmentation: None,
            landmarks: None,
        }
    }
}

/// One label over all analysed images of the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabelSummary {
    pub key: String,
    pub name: String,
    pub code: Coding,
    /// Present on at least one analysed image.
    pub present: bool,
    /// Highest probability over the analysed images.
    pub probability: f32,
    /// Analysed images on which the finding is present.
    pub images_positive: usize,
}

/// The study-level summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    pub images_total: usize,
    pub images_analysed: usize,
    pub images_rejected: usize,
    pub images_not_applicable: usize,
    pub images_failed: usize,
    /// Keys of the findings present on any analysed image.
    pub findings_present: Vec<String>,
    pub labels: Vec<LabelSummary>,
    /// The least confident tier over analysed images (`optimal` < `good` < `review`).
    pub confidence: Option<String>,
    /// Any analysed image asks for human review.
    pub should_review: bool,
    /// Highest total predictive entropy (bits) over analysed images.
    pub max_uncertainty: Option<f32>,
}

impl Summary {
    pub fn from_images(images: &[ImageEntry]) -> Summary {
        let analysed: Vec<&ImageEntry> = images.iter().filter(|i| i.status == "analysed").collect();
        let count = |s: &str| images.iter().filter(|i| i.status == s).count();
        let mut labels: Vec<LabelSummary> = Vec::new();
        for img in &analysed {
            for f in &img.findings {
                match labels.iter_mut().find(|l| l.key == f.key) {
                    Some(l) => {
                        l.present |= f.presence;
                        l.probability = l.probability.max(f.confidence);
                        l.images_positive += usize::from(f.presence);
                    }
                    None => labels.push(LabelSummary {
                        key: f.key.clone(),
                        name: f.name.clone(),
                        code: f.code.clone(),
                        present: f.presence,
                        probability: f.confidence,
                        images_positive: usize::from(f.presence),
                    }),
                }
            }
        }
        let uncertainties: Vec<Uncertainty> = analysed
            .iter()
            .filter_map(|i| i.uncertainty.clone())
            .filter_map(|u| serde_json::from_value::<UncertaintyView>(u).ok())
            .map(UncertaintyView::into_uncertainty)
            .collect();
        let tier_rank = |t: ConfidenceTier| match t {
            ConfidenceTier::Optimal => 0,
            ConfidenceTier::Good => 1,
            ConfidenceTier::Review => 2,
        };
        let worst = uncertainties
            .iter()
            .map(|u| u.confidence)
            .max_by_key(|t| tier_rank(*t));
        Summary {
            images_total: images.len(),
            images_analysed: analysed.len(),
            images_rejected: count("rejected"),
            images_not_applicable: count("not_applicable"),
            images_failed: count("error"),
            findings_present: labels
                .iter()
                .filter(|l| l.present)
                .map(|l| l.key.clone())
                .collect(),
            labels,
            confidence: worst.map(|t| {
                serde_json::to_value(t)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            }),
            should_review: uncertainties.iter().any(|u| u.should_review),
            max_uncertainty: uncertainties.iter().map(|u| u.total).reduce(f32::max),
        }
    }
}

/// Deserialisable mirror of [`Uncertainty`] (which is serialise-only).
#[derive(Deserialize)]
struct UncertaintyView {
    spread: f32,
    epistemic: f32,
    aleatoric: f32,
    total: f32,
    disagreement_score: f32,
    confidence: String,
    should_review: bool,
}

impl UncertaintyView {
    fn into_uncertainty(self) -> Uncertainty {
        Uncertainty {
            spread: self.spread,
            epistemic: self.epistemic,
            aleatoric: self.aleatoric,
            total: self.total,
            disagreement_score: self.disagreement_score,
            confidence: match self.confidence.as_str() {
                "optimal" => ConfidenceTier::Optimal,
                "good" => ConfidenceTier::Good,
                _ => ConfidenceTier::Review,
            },
            should_review: self.should_review,
        }
    }
}

/// The model that produced a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelRef {
    pub id: String,
    pub version: String,
    pub name: String,
    pub provider: String,
    pub not_for_clinical_use: bool,
    /// `real-images`, `synthetic-only` or `unknown`.
    #[serde(default = "unknown_validation")]
    pub validation_status: String,
}

fn unknown_validation() -> String {
    crate::inference::manifest::VALIDATION_UNKNOWN.into()
}

/// Patient and image facts in LeapAI's metadata shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metadata {
    pub model_version: String,
    pub patient_id: String,
    pub patient_name: String,
    /// The first analysed instance (or the first instance when none was analysed).
    pub sop_instance_uid: String,
    pub age: String,
    pub sex: String,
}

/// Milestones from the first received instance to the stored result (epoch ms and spans).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultTimings {
    pub first_received_at: i64,
    pub completed_at: Option<i64>,
    /// How completion was decided (`release+quiet`, `stable-age`, `mpps`); absent in results
    /// stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_by: Option<String>,
    pub started_at: i64,
    pub finished_at: i64,
    /// Study complete → inference started.
    pub queue_ms: Option<i64>,
    /// Inference started → result ready.
    pub inference_ms: i64,
    /// First instance received → result ready.
    pub receipt_to_result_ms: i64,
}

/// A study result. `id` and `version` are filled in from the table when read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StudyResult {
    #[serde(default)]
    pub id: i64,
    /// 1 for the first result of a study; each reprocess or re-opened study adds one. The
    /// highest version is current; older ones are superseded.
    #[serde(default)]
    pub version: i64,
    pub study_instance_uid: String,
    pub study_version: i64,
    pub job_id: i64,
    /// `final` (some image analysed), `not_applicable` (no image the model applies to), or
    /// `rejected` (every applicable image rejected by the gate) or `failed` (no image readable).
    pub status: String,
    /// The classification model whose findings `images` and `summary` hold (without one, the
    /// first model that ran).
    pub model: ModelRef,
    /// Every model that ran on the study, each with its own status.
    #[serde(default)]
    pub models: Vec<ModelOutcome>,
    /// Measurements over the study (from segmentation and landmark models).
    #[serde(default)]
    pub measurements: Vec<StudyMeasurement>,
    pub urgency: Urgency,
    pub triage: Triage,
    pub summary: Summary,
    pub images: Vec<ImageEntry>,
    pub metadata: Metadata,
    pub timings: ResultTimings,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default)]
    pub superseded: bool,
}

impl StudyResult {
    /// The study status from the image outcomes.
    pub fn status_from(summary: &Summary) -> &'static str {
        if summary.images_analysed > 0 {
            "final"
        } else if summary.images_rejected > 0 {
            "rejected"
        } else if summary.images_failed > 0 && summary.images_not_applicable == 0 {
            "failed"
        } else {
            "not_applicable"
        }
    }
}
