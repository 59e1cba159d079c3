//! `models/<id>/model.toml`: what a model is, how to feed it and how to read its outputs.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use super::InferenceError;

/// `task` of a classification model (findings with probabilities).
pub const TASK_CLASSIFICATION: &str = "multilabel-classification";
/// `task` of a landmark model (normalised points, see [`LandmarkSpec`]).
pub const TASK_LANDMARKS: &str = "landmark-regression";
/// `uncertainty.spread` of a landmark model: mean over landmarks of the RMS distance of the
/// member points from the ensemble mean, in normalised image units (see
/// `crate::inference::landmarks`).
pub const SPREAD_LANDMARK_RMS: &str = "landmark-rms";
/// `measurement.kind` for the cardiothoracic ratio.
pub const MEASUREMENT_CTR: &str = "cardiothoracic-ratio";
/// `task` of a segmentation model (a probability map the size of its input per image).
pub const TASK_SEGMENTATION: &str = "segmentation";
/// `segmentation.kind` of a lung-field model: one output channel "lung", split into the right
/// and left lung by `crate::measurement::lungs`.
pub const SEGMENTATION_LUNG_FIELDS: &str = "lung-fields";

/// `validation.status` of a model checked on real patient images.
pub const VALIDATED_REAL: &str = "real-images";
/// `validation.status` of a model trained and checked on generated images only.
pub const VALIDATED_SYNTHETIC: &str = "synthetic-only";
/// `validation.status` when the manifest says nothing.
pub const VALIDATION_UNKNOWN: &str = "unknown";

/// A parsed and validated model manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model id; also the folder name under `models_dir`.
    pub id: String,
    /// Model version (free text, semver recommended).
    pub version: String,
    /// Human-readable model name.
    pub name: String,
    /// Who made the model.
    pub manufacturer: String,
    /// `multilabel-classification` (`[[labels]]`), `landmark-regression` (`[[landmarks]]`)
    /// or `segmentation` (`[segmentation]`).
    pub task: String,
    /// Intended use statement.
    pub intended_use: String,
    /// Demo and research models say `true`; results then carry that flag.
    pub not_for_clinical_use: bool,
    /// Input tensor and preprocessing.
    pub input: InputSpec,
    /// Output tensor of the ensemble members.
    pub output: OutputSpec,
    /// Ensemble members and how they are combined.
    pub ensemble: EnsembleSpec,
    /// Optional "is this a radiograph at all" gate model.
    #[serde(default)]
    pub gate: Option<GateSpec>,
    /// Thresholds of the confidence tiers (classification and landmark models).
    #[serde(default)]
    pub uncertainty: UncertaintySpec,
    /// DICOM header rules; an empty list accepts anything.
    #[serde(default)]
    pub applicability: ApplicabilitySpec,
    /// Findings, in the order of the output vector (classification models).
    #[serde(default)]
    pub labels: Vec<LabelSpec>,
    /// Landmarks, in the order of the output vector (landmark models).
    #[serde(default)]
    pub landmarks: Vec<LandmarkSpec>,
    /// What a landmark model measures from its landmarks.
    #[serde(default)]
    pub measurement: Option<MeasurementSpec>,
    /// How a segmentation model's output becomes structures.
    #[serde(default)]
    pub segmentation: Option<SegmentationSpec>,
    /// What the model was trained and validated on; every output repeats it.
    #[serde(default)]
    pub validation: ValidationSpec,
    /// Where the model comes from and under which licence.
    #[serde(default)]
    pub provenance: Option<ProvenanceSpec>,
}

/// `[segmentation]`: the output map and its post-processing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationSpec {
    /// Only `lung-fields`.
    pub kind: String,
    /// Probability at or above which a pixel belongs to the structure.
    pub threshold: f32,
}

/// `[validation]`: the evidence behind a model, shown with every output so a reader can tell
/// a model checked on real images from one trained on phantoms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSpec {
    /// `real-images`, `synthetic-only` or `unknown`.
    pub status: String,
    /// Training data, in a sentence.
    pub trained_on: String,
    /// Validation data and figures, in a sentence.
    pub validated_on: String,
}

impl Default for ValidationSpec {
    fn default() -> Self {
        Self {
            status: VALIDATION_UNKNOWN.into(),
            trained_on: String::new(),
            validated_on: String::new(),
        }
    }
}

impl ValidationSpec {
    /// Checked on real patient images.
    pub fn is_real(&self) -> bool {
        self.status == VALIDATED_REAL
    }
}

/// `[provenance]`: the source of the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvenanceSpec {
    /// Where the weights were obtained, e.g. a registry package and file.
    pub source: String,
    /// SHA-256 of the downloaded source archive.
    #[serde(default)]
    pub source_sha256: Option<String>,
    /// Licence as the source declares it.
    pub licence: String,
    /// How the ONNX file was made from the source.
    #[serde(default)]
    pub conversion: Option<String>,
}
/// `[input]`: the tensor the members take and how pixels become it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input tensor name.
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (grey) or 3 (grey replicated into three channels).
    pub channels: u32,
    /// Only `NCHW`.
    pub layout: String,
    /// `voi-or-percentile` (window from the file, else VOI LUT, else percentiles) or
    /// `percentile` (always percentiles).
    pub windowing: String,
    /// Lower percentile of the fallback window, in percent.
    pub percentile_low: f64,
    /// Upper percentile of the fallback window, in percent.
    pub percentile_high: f64,
    /// Normalisation: `(v - mean) / std` after windowing to [0, 1].
    pub mean: f32,
    /// Normalisation divisor; must be positive.
    pub std: f32,
    /// `first` (first frame only) or `all` (every frame; per-label maximum over frames).
    pub frames: String,
    /// A JPEG 2000 or HTJ2K image going into one input may be decoded at the coarsest
    /// wavelet resolution level that is still at least the input's size: several times
    /// faster, and the pixels are the codestream's own low-pass image instead of a resize of
    /// the full one. `false` always decodes in full.
    #[serde(default = "reduce_jpeg2000")]
    pub jpeg2000_reduced: bool,
}

fn reduce_jpeg2000() -> bool {
    true
}

/// `[output]`: the members' output tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Output tensor name.
    pub name: String,
    /// `sigmoid` (outputs are logits) or `identity` (outputs are probabilities, or for a
    /// landmark model the coordinates themselves).
    pub activation: String,
    /// Landmark models only: `xy`, i.e. `N x 2K` values `x0, y0, x1, y1, ...` in
    /// `[[landmarks]]` order, normalised to the input image (0..1, x right, y down).
    #[serde(default)]
    pub layout: Option<String>,
}

/// `[ensemble]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSpec {
    /// Only `mean` (soft voting).
    pub combination: String,
    /// Member ONNX files.
    pub members: Vec<ModelFile>,
}

/// One ONNX file with its expected digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// File name relative to the model folder.
    pub file: String,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// `[gate]`: a binary model whose sigmoid output says "valid radiograph".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// File name relative to the model folder.
    pub file: String,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
    /// Images whose gate probability is below this are rejected.
    pub threshold: f32,
}

/// `[uncertainty]`: confidence tiers. Segmentation models have none (`spread = "none"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UncertaintySpec {
    /// `std` (classification: population standard deviation of the member probabilities,
    /// maximum over labels) or `landmark-rms` (landmark models).
    pub spread: String,
    /// Spread below this: tier `optimal`.
    pub optimal_below: f32,
    /// Spread below this: tier `good`; otherwise `review`.
    pub good_below: f32,
    /// Predictive entropy (bits, mean over labels) above this asks for review. Required for
    /// classification models, absent for landmark models.
    #[serde(default)]
    pub review_entropy_above: Option<f32>,
}

impl Default for UncertaintySpec {
    fn default() -> Self {
        Self {
            spread: "none".into(),
            optimal_below: 0.0,
            good_below: 0.0,
            review_entropy_above: None,
        }
    }
}

/// `[applicability]`: DICOM header rules. Values compare case-insensitively; `""` in a list
/// accepts a missing or empty attribute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplicabilitySpec {
    /// Accepted Modality (0008,0060) values.
    pub modalities: Vec<String>,
    /// Accepted Body Part Examined (0018,0015) values.
    pub body_parts: Vec<String>,
    /// Accepted View Position (0018,5101) values.
    pub view_positions: Vec<String>,
    /// Accepted Photometric Interpretation (0028,0004) values.
    pub photometric: Vec<String>,
}

/// The coding scheme of a finding's concept. SNOMED CT by default; DICOM's own (PS3.16 `DCM`)
/// where PS3.16 codes the finding there (e.g. 112121 Infiltrate), so every emitted code can be
/// checked against the DICOM dictionary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum CodeScheme {
    #[default]
    #[serde(rename = "SCT")]
    Sct,
    #[serde(rename = "DCM")]
    Dcm,
}

impl CodeScheme {
    /// DICOM Coding Scheme Designator.
    pub fn designator(self) -> &'static str {
        match self {
            CodeScheme::Sct => "SCT",
            CodeScheme::Dcm => "DCM",
        }
    }

    /// FHIR `Coding.system`.
    pub fn fhir_system(self) -> &'static str {
        match self {
            CodeScheme::Sct => "http://snomed.info/sct",
            CodeScheme::Dcm => "http://dicom.nema.org/resources/ontology/DCM",
        }
    }

    /// The scheme whose FHIR system URI is `system`.
    pub fn from_fhir_system(system: &str) -> Option<CodeScheme> {
        [CodeScheme::Sct, CodeScheme::Dcm]
            .into_iter()
            .find(|s| s.fhir_system() == system)
    }
}

/// `[[labels]]`: one finding, in output index order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    /// Stable machine key, e.g. `cardiomegaly`.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Concept id in `scheme` (`snomed` is accepted as the key for SNOMED CT manifests).
    #[serde(alias = "snomed")]
    pub code: String,
    /// Where `code` comes from; SNOMED CT unless said otherwise.
    #[serde(default)]
    pub scheme: CodeScheme,
    /// The concept's display (code meaning).
    pub display: String,
    /// Probability at or above which the finding is called present.
    pub threshold: f32,
}

/// `[[landmarks]]`: one point the model regresses, in output order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LandmarkSpec {
    /// Stable machine name, e.g. `heart_right`.
    pub class: String,
    /// What the point is, for people.
    pub display: String,
}

/// `[measurement]`: what a landmark model computes from its points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementSpec {
    /// Only `cardiothoracic-ratio` (needs `heart_right`, `heart_left`, `thorax_right`,
    /// `thorax_left`).
    pub kind: String,
    /// Ratios below this are normal.
    pub normal_below: f32,
}

impl Manifest {
    /// Reads and validates `path` (a `model.toml`).
    pub fn load(path: &Path) -> Result<Self, InferenceError> {
        let text = std::fs::read_to_string(path).map_err(|e| InferenceError::io(path, e))?;
        Self::parse(&text).map_err(|reason| InferenceError::Manifest {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        m.validate()?;
        Ok(m)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |what: &str, v: f32| {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{what} must be within 0..1, got {v}"))
            }
        };
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "id `{}` must be non-empty ASCII letters, digits, '-', '_' or '.'",
                self.id
            ));
        }
        if !matches!(
            self.task.as_str(),
            TASK_CLASSIFICATION | TASK_LANDMARKS | TASK_SEGMENTATION
        ) {
            return Err(format!(
                "task `{}` is not supported (only {TASK_CLASSIFICATION}, {TASK_LANDMARKS} or {TASK_SEGMENTATION})",
                self.task
            ));
        }
        if !matches!(
            self.validation.status.as_str(),
            VALIDATED_REAL | VALIDATED_SYNTHETIC | VALIDATION_UNKNOWN
        ) {
            return Err(format!(
                "validation.status `{}` must be {VALIDATED_REAL}, {VALIDATED_SYNTHETIC} or {VALIDATION_UNKNOWN}",
                self.validation.status
            ));
        }
        let i = &self.input;
        if i.width == 0 || i.height == 0 || i.width > 4096 || i.height > 4096 {
            return Err(format!(
                "input size {}x{} must be within 1..=4096",
                i.width, i.height
            ));
        }
        if !matches!(i.channels, 1 | 3) {
            return Err(format!("input channels must be 1 or 3, got {}", i.channels));
        }
        if i.layout != "NCHW" {
            return Err(format!(
                "input layout `{}` is not supported (only NCHW)",
                i.layout
            ));
        }
        if !matches!(i.windowing.as_str(), "voi-or-percentile" | "percentile") {
            return Err(format!(
                "input windowing `{}` must be `voi-or-percentile` or `percentile`",
                i.windowing
            ));
        }
        if !(0.0..100.0).contains(&i.percentile_low)
            || !(0.0..=100.0).contains(&i.percentile_high)
            || i.percentile_low >= i.percentile_high
        {
            return Err(format!(
                "percentiles must satisfy 0 <= low < high <= 100, got {} and {}",
                i.percentile_low, i.percentile_high
            ));
        }
        if !i.mean.is_finite() || !i.std.is_finite() || i.std <= 0.0 {
            return Err(format!(
                "input mean must be finite and std positive, got {} and {}",
                i.mean, i.std
            ));
        }
        if !matches!(i.frames.as_str(), "first" | "all") {
            return Err(format!(
                "input frames `{}` must be `first` or `all`",
                i.frames
            ));
        }
        if !matches!(self.output.activation.as_str(), "sigmoid" | "identity") {
            return Err(format!(
                "output activation `{}` must be `sigmoid` or `identity`",
                self.output.activation
            ));
        }
        if self.ensemble.combination != "mean" {
            return Err(format!(
                "ensemble combination `{}` is not supported (only mean)",
                self.ensemble.combination
            ));
        }
        if self.ensemble.members.is_empty() {
            return Err("ensemble.members must not be empty".into());
        }
        let mut files = HashSet::new();
        for f in &self.ensemble.members {
            check_file(&f.file, &f.sha256)?;
            if !files.insert(f.file.as_str()) {
                return Err(format!("member file `{}` is listed twice", f.file));
            }
        }
        if let Some(g) = &self.gate {
            check_file(&g.file, &g.sha256)?;
            unit("gate.threshold", g.threshold)?;
        }
        let u = &self.uncertainty;
        unit("uncertainty.optimal_below", u.optimal_below)?;
        unit("uncertainty.good_below", u.good_below)?;
        if u.optimal_below > u.good_below {
            return Err("uncertainty.optimal_below must not exceed good_below".into());
        }
        if self.task != TASK_SEGMENTATION && self.segmentation.is_some() {
            return Err("segmentation is only for segmentation models".into());
        }
        match self.task.as_str() {
            TASK_LANDMARKS => self.validate_landmarks(),
            TASK_SEGMENTATION => self.validate_segmentation(),
            _ => self.validate_classification(),
        }
    }

    fn validate_segmentation(&self) -> Result<(), String> {
        let Some(seg) = &self.segmentation else {
            return Err("segmentation models need a [segmentation] section".into());
        };
        if seg.kind != SEGMENTATION_LUNG_FIELDS {
            return Err(format!(
                "segmentation.kind `{}` is not supported (only {SEGMENTATION_LUNG_FIELDS})",
                seg.kind
            ));
        }
        if !(seg.threshold.is_finite() && seg.threshold > 0.0 && seg.threshold < 1.0) {
            return Err(format!(
                "segmentation.threshold must be within (0, 1), got {}",
                seg.threshold
            ));
        }
        if self.gate.is_some() {
            return Err("segmentation models have no gate".into());
        }
        if self.output.activation != "identity" || self.output.layout.is_some() {
            return Err(
                "output of a segmentation model: activation `identity` (probabilities), no layout"
                    .into(),
            );
        }
        if self.input.frames != "first" || self.input.channels != 1 {
            return Err("segmentation models take the first frame, one channel".into());
        }
        if !self.labels.is_empty() || !self.landmarks.is_empty() || self.measurement.is_some() {
            return Err("labels, landmarks and measurement are not for segmentation models".into());
        }
        if self.uncertainty.spread != "none" {
            return Err("segmentation models have no [uncertainty]".into());
        }
        Ok(())
    }

    fn validate_classification(&self) -> Result<(), String> {
        let u = &self.uncertainty;
        if u.spread != "std" {
            return Err(format!(
                "uncertainty.spread `{}` is not supported (only std)",
                u.spread
            ));
        }
        match u.review_entropy_above {
            Some(v) if v.is_finite() && (0.0..=1.0).contains(&v) => {}
            Some(v) => {
                return Err(format!(
                    "uncertainty.review_entropy_above must be within 0..1, got {v}"
                ))
            }
            None => return Err("uncertainty.review_entropy_above is missing".into()),
        }
        if self.output.layout.is_some() {
            return Err("output.layout is only for landmark-regression models".into());
        }
        if !self.landmarks.is_empty() || self.measurement.is_some() {
            return Err("landmarks and measurement are only for landmark-regression models".into());
        }
        if self.labels.is_empty() {
            return Err("labels must not be empty".into());
        }
        let mut keys = HashSet::new();
        for l in &self.labels {
            if l.key.is_empty() {
                return Err("a label has an empty key".into());
            }
            if !keys.insert(l.key.as_str()) {
                return Err(format!("label key `{}` is listed twice", l.key));
            }
            let t = l.threshold;
            if !(t.is_finite() && (0.0..=1.0).contains(&t)) {
                return Err(format!(
                    "threshold of label `{}` must be within 0..1, got {t}",
                    l.key
                ));
            }
        }
        Ok(())
    }

    fn validate_landmarks(&self) -> Result<(), String> {
        let u = &self.uncertainty;
        if u.spread != SPREAD_LANDMARK_RMS {
            return Err(format!(
                "uncertainty.spread `{}` is not supported for landmark models (only {SPREAD_LANDMARK_RMS})",
                u.spread
            ));
        }
        if u.review_entropy_above.is_some() {
            return Err(
                "uncertainty.review_entropy_above is only for classification models".into(),
            );
        }
        if self.output.layout.as_deref() != Some("xy") {
            return Err("output.layout must be `xy` for landmark-regression models".into());
        }
        if self.input.frames != "first" {
            return Err("input.frames must be `first` for landmark-regression models".into());
        }
        if !self.labels.is_empty() {
            return Err("labels are only for classification models".into());
        }
        if self.landmarks.is_empty() {
            return Err("landmarks must not be empty".into());
        }
        let mut classes = HashSet::new();
        for l in &self.landmarks {
            if l.class.is_empty() {
                return Err("a landmark has an empty class".into());
            }
            if !classes.insert(l.class.as_str()) {
                return Err(format!("landmark class `{}` is listed twice", l.class));
            }
        }
        if let Some(m) = &self.measurement {
            if m.kind != MEASUREMENT_CTR {
                return Err(format!(
                    "measurement.kind `{}` is not supported (only {MEASUREMENT_CTR})",
                    m.kind
                ));
            }
            if !(m.normal_below.is_finite() && m.normal_below > 0.0) {
                return Err(format!(
                    "measurement.normal_below must be positive, got {}",
                    m.normal_below
                ));
            }
            for need in ["heart_right", "heart_left", "thorax_right", "thorax_left"] {
                if !classes.contains(need) {
                    return Err(format!(
                        "measurement {MEASUREMENT_CTR} needs landmark `{need}`"
                    ));
                }
            }
        }
        Ok(())
    }

    /// True for `landmark-regression` models.
    pub fn is_landmark_model(&self) -> bool {
        self.task == TASK_LANDMARKS
    }

    /// True for `segmentation` models.
    pub fn is_segmentation_model(&self) -> bool {
        self.task == TASK_SEGMENTATION
    }

    /// Values per image in each member's output: one per label, x and y per landmark, or one
    /// probability per input pixel.
    pub fn output_len(&self) -> usize {
        match self.task.as_str() {
            TASK_LANDMARKS => 2 * self.landmarks.len(),
            TASK_SEGMENTATION => self.input.width as usize * self.input.height as usize,
            _ => self.labels.len(),
        }
    }

    /// Number of findings (length of each member's output vector).
    pub fn label_count(&self) -> usize {
        self.labels.len()
    }

    /// Elements of one input image in the tensor (C x H x W).
    pub fn input_len(&self) -> usize {
        self.input.channels as usize * self.input.height as usize * self.input.width as usize
    }
}

fn check_file(file: &str, sha256: &str) -> Result<(), String> {
    let p = Path::new(file);
    if file.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!(
            "model file `{file}` must be a plain path inside the model folder"
        ));
    }
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("sha256 of `{file}` must be 64 hex digits"));
    }
    Ok(())
}

/// Reads `dir/file`, checks its SHA-256 against `expected` and returns the bytes.
pub(crate) fn read_verified(
    dir: &Path,
    f: &str,
    expected: &str,
) -> Result<Vec<u8>, InferenceError> {
    let path: PathBuf = dir.join(f);
    let bytes = std::fs::read(&path).map_err(|e| InferenceError::io(&path, e))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(InferenceError::Checksum {
            path,
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
id = "cxr-demo"
version = "0.1.0"
name = "demo"
manufacturer = "radstream"
task = "multilabel-classification"
intended_use = "demo"
not_for_clinical_use = true
[input]
name = "image"
width = 16
height = 16
channels = 1
layout = "NCHW"
windowing = "voi-or-percentile"
percentile_low = 0.5
percentile_high = 99.5
mean = 0.5
std = 0.25
frames = "first"
[output]
name = "logits"
activation = "sigmoid"
[ensemble]
combination = "mean"
[[ensemble.members]]
file = "member0.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[gate]
file = "gate.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
threshold = 0.5
[uncertainty]
spread = "std"
optimal_below = 0.005
good_below = 0.008
review_entropy_above = 0.6
[applicability]
modalities = ["CR", "DX"]
body_parts = ["CHEST", ""]
view_positions = ["PA", "AP", ""]
photometric = ["MONOCHROME1", "MONOCHROME2"]
[[labels]]
key = "cardiomegaly"
name = "Cardiomegaly"
snomed = "8186001"
display = "Cardiomegaly"
threshold = 0.5
"#;

    #[test]
    fn example_parses() {
        let m = Manifest::parse(EXAMPLE).unwrap();
        assert_eq!(m.id, "cxr-demo");
        assert_eq!(m.labels.len(), 1);
        assert_eq!(m.input_len(), 256);
        assert_eq!(m.labels[0].code, "8186001");
        assert_eq!(m.labels[0].scheme, CodeScheme::Sct);
    }

    #[test]
    fn a_label_may_carry_a_dcm_code() {
        let text = EXAMPLE.replace(
            "snomed = \"8186001\"",
            "scheme = \"DCM\"\ncode = \"112121\"",
        );
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.labels[0].scheme, CodeScheme::Dcm);
        assert_eq!(m.labels[0].scheme.designator(), "DCM");
        let bad = EXAMPLE.replace("snomed = \"8186001\"", "scheme = \"LN\"\ncode = \"1\"");
        assert!(Manifest::parse(&bad).is_err());
    }

    pub(crate) const LANDMARK_EXAMPLE: &str = r#"
id = "ctr-demo"
version = "0.1.0"
name = "demo landmarks"
manufacturer = "radstream"
task = "landmark-regression"
intended_use = "demo"
not_for_clinical_use = true
[input]
name = "image"
width = 16
height = 16
channels = 1
layout = "NCHW"
windowing = "voi-or-percentile"
percentile_low = 0.5
percentile_high = 99.5
mean = 0.5
std = 0.25
frames = "first"
[output]
name = "landmarks"
activation = "identity"
layout = "xy"
[ensemble]
combination = "mean"
[[ensemble.members]]
file = "member0.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[uncertainty]
spread = "landmark-rms"
optimal_below = 0.005
good_below = 0.008
[measurement]
kind = "cardiothoracic-ratio"
normal_below = 0.5
[[landmarks]]
class = "heart_right"
display = "Heart, right border"
[[landmarks]]
class = "heart_left"
display = "Heart, left border"
[[landmarks]]
class = "thorax_right"
display = "Thorax, right inner margin"
[[landmarks]]
class = "thorax_left"
display = "Thorax, left inner margin"
"#;

    #[test]
    fn landmark_example_parses() {
        let m = Manifest::parse(LANDMARK_EXAMPLE).unwrap();
        assert!(m.is_landmark_model());
        assert_eq!(m.output_len(), 8);
        assert_eq!(m.landmarks[1].class, "heart_left");
        assert_eq!(m.measurement.as_ref().unwrap().normal_below, 0.5);
        let c = Manifest::parse(EXAMPLE).unwrap();
        assert!(!c.is_landmark_model());
        assert_eq!(c.output_len(), 1);
    }

    #[test]
    fn invalid_landmark_manifests_are_refused() {
        let cases = [
            ("layout = \"xy\"\n", ""),
            ("layout = \"xy\"", "layout = \"yx\""),
            ("spread = \"landmark-rms\"", "spread = \"std\""),
            ("good_below = 0.008\n", "good_below = 0.008\nreview_entropy_above = 0.5\n"),
            ("frames = \"first\"", "frames = \"all\""),
            ("kind = \"cardiothoracic-ratio\"", "kind = \"vhs\""),
            ("normal_below = 0.5", "normal_below = 0.0"),
            ("class = \"thorax_left\"", "class = \"heart_left\""),
            ("class = \"thorax_left\"", "class = \"apex\""),
            ("[[landmarks]]\nclass = \"heart_right\"", "[[landmarks]]\nclass = \"heart_right\"\nx = 1"),
            (
                "[measurement]",
                "[[labels]]\nkey = \"a\"\nname = \"a\"\nsnomed = \"1\"\ndisplay = \"a\"\nthreshold = 0.5\n[measurement]",
            ),
        ];
        for (from, to) in cases {
            assert!(LANDMARK_EXAMPLE.contains(from), "{from}");
            let text = LANDMARK_EXAMPLE.replacen(from, to, 1);
            assert!(Manifest::parse(&text).is_err(), "accepted: {to}");
        }
        let no_landmarks: String = LANDMARK_EXAMPLE
            .split("[[landmarks]]")
            .next()
            .unwrap()
            .replace(
                "[measurement]\nkind = \"cardiothoracic-ratio\"\nnormal_below = 0.5\n",
                "",
            );
        let err = Manifest::parse(&no_landmarks).unwrap_err();
        assert!(err.contains("landmarks"), "{err}");
    }

    #[test]
    fn classification_manifests_refuse_landmark_fields() {
        let cases = [
            (
                "activation = \"sigmoid\"",
                "activation = \"sigmoid\"\nlayout = \"xy\"",
            ),
            ("review_entropy_above = 0.6\n", ""),
            ("spread = \"std\"", "spread = \"landmark-rms\""),
            (
                "[[labels]]",
                "[[landmarks]]\nclass = \"heart_right\"\ndisplay = \"x\"\n[[labels]]",
            ),
        ];
        for (from, to) in cases {
            assert!(EXAMPLE.contains(from), "{from}");
            let text = EXAMPLE.replacen(from, to, 1);
            assert!(Manifest::parse(&text).is_err(), "accepted: {to}");
        }
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let cases = [
            ("threshold = 0.5\n", "threshold = 1.5\n"),
            ("file = \"member0.onnx\"", "file = \"../member0.onnx\""),
            ("frames = \"first\"", "frames = \"middle\""),
            ("std = 0.25", "std = 0.0"),
            ("id = \"cxr-demo\"", "id = \"cxr-demo\"\nextra = 1"),
        ];
        for (from, to) in cases {
            let text = EXAMPLE.replacen(from, to, 1);
            assert!(Manifest::parse(&text).is_err(), "accepted: {to}");
        }
        let no_members = EXAMPLE.replace(
            "[[ensemble.members]]\nfile = \"member0.onnx\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
            "members = []\n",
        );
        let err = Manifest::parse(&no_members).unwrap_err();
        assert!(err.contains("members"), "{err}");
    }

    const SEGMENTATION_EXAMPLE: &str = r#"
id = "lung-seg"
version = "0.1.5"
name = "lungs"
manufacturer = "x"
task = "segmentation"
intended_use = "research"
not_for_clinical_use = true
[validation]
status = "real-images"
trained_on = "real chests"
[provenance]
source = "PyPI"
licence = "MIT"
[input]
name = "image"
width = 512
height = 512
channels = 1
layout = "NCHW"
windowing = "voi-or-percentile"
percentile_low = 0.5
percentile_high = 99.5
mean = 0.5
std = 1.0
frames = "first"
[output]
name = "lung"
activation = "identity"
[ensemble]
combination = "mean"
[[ensemble.members]]
file = "model.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[segmentation]
kind = "lung-fields"
threshold = 0.5
"#;

    #[test]
    fn a_segmentation_manifest_parses_and_its_output_is_a_map() {
        let m = Manifest::parse(SEGMENTATION_EXAMPLE).unwrap();
        assert!(m.is_segmentation_model());
        assert_eq!(m.output_len(), 512 * 512);
        assert!(m.validation.is_real());
        assert_eq!(m.provenance.unwrap().licence, "MIT");
        // Classification manifests without [validation] say `unknown`.
        assert_eq!(
            Manifest::parse(EXAMPLE).unwrap().validation.status,
            "unknown"
        );
    }

    #[test]
    fn invalid_segmentation_manifests_are_refused() {
        let cases = [
            ("kind = \"lung-fields\"", "kind = \"organs\""),
            (
                "\"lung-fields\"\nthreshold = 0.5",
                "\"lung-fields\"\nthreshold = 1.5",
            ),
            ("activation = \"identity\"", "activation = \"sigmoid\""),
            ("status = \"real-images\"", "status = \"trust-me\""),
            (
                "[segmentation]\nkind = \"lung-fields\"\nthreshold = 0.5\n",
                "",
            ),
        ];
        for (from, to) in cases {
            let text = SEGMENTATION_EXAMPLE.replace(from, to);
            assert_ne!(text, SEGMENTATION_EXAMPLE, "{from}");
            assert!(Manifest::parse(&text).is_err(), "{to} was accepted");
        }
    }
}
