//! The engine: loaded models, their workers, and the request entry points.

use ort::value::ValueType;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{info, warn, Instrument};

use super::applicability::{check_applicability, Applicability};
use super::batcher::{self, Job, RawOutputs, RunSpec, SessionSet};
use super::landmarks::{self, LandmarkResult, LandmarkStatus, LANDMARK_REJECTED_REASON};
use super::manifest::{
    read_verified, LabelSpec, LandmarkSpec, Manifest, ModelFile, ProvenanceSpec, ValidationSpec,
    TASK_CLASSIFICATION, TASK_LANDMARKS, TASK_SEGMENTATION,
};
use super::postprocess::{self, LabelResult, Uncertainty};
use super::preprocess::{self, ImageInfo, Preprocessed};
use super::runtime::{self, create_session, Provider, Runtime};
use super::segmentation::{self, SegmentationResult};
use super::{InferenceError, InferenceSettings};

/// Reason given when the gate (or the colour check) rejects an image.
pub const REJECTED_REASON: &str = "Image rejected — not a valid radiograph";

/// What `/health` and `radstream models` show about a loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// Model id.
    pub id: String,
    /// Model version.
    pub version: String,
    /// Display name.
    pub name: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Task.
    pub task: String,
    /// Intended use statement.
    pub intended_use: String,
    /// True for demo/research models.
    pub not_for_clinical_use: bool,
    /// Findings in output order (classification models; empty for landmark models).
    pub labels: Vec<LabelSpec>,
    /// Landmarks in output order (landmark models; empty for classification models).
    pub landmarks: Vec<LandmarkSpec>,
    /// Ensemble members with their verified SHA-256.
    pub members: Vec<ModelFile>,
    /// Gate model, if any.
    pub gate: Option<ModelFile>,
    /// Input width, height and channels.
    pub input: [u32; 3],
    /// What the model was trained and validated on.
    pub validation: ValidationSpec,
    /// Where the weights come from and their licence.
    pub provenance: Option<ProvenanceSpec>,
    /// Execution provider actually in use (`cpu` or `cuda`).
    pub provider: String,
    /// Device (`cpu`, `cuda:0`).
    pub device: String,
    /// Session sets (worker threads) serving this model.
    pub workers: usize,
}

/// Per-stage timings of one request, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Timings {
    /// Reading and decoding the file or bytes.
    pub decode_ms: f64,
    /// Windowing, resizing, normalising.
    pub preprocess_ms: f64,
    /// Waiting for a batch to start.
    pub queue_ms: f64,
    /// Running the batch (all members and the gate).
    pub inference_ms: f64,
    /// Activation, ensemble statistics.
    pub postprocess_ms: f64,
    /// Whole request.
    pub total_ms: f64,
    /// Images in the batch the request ran in.
    pub batch_size: usize,
}

/// The result for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageResult {
    /// Model id.
    pub model_id: String,
    /// Model version.
    pub model_version: String,
    /// Execution provider used.
    pub provider: String,
    /// Copied from the manifest.
    pub not_for_clinical_use: bool,
    /// False when a DICOM header rule excluded the image (`reason` says which); no inference ran.
    pub applicable: bool,
    /// True when the gate or the colour check rejected the image (`reason` is
    /// [`REJECTED_REASON`]); `labels` is then empty.
    pub rejected: bool,
    /// Why the image is not applicable or rejected.
    pub reason: Option<String>,
    /// Gate probability ("valid radiograph"), when the gate ran.
    pub gate_probability: Option<f32>,
    /// Findings in manifest order (empty when not applicable or rejected).
    pub labels: Vec<LabelResult>,
    /// Ensemble uncertainty (absent when not applicable or rejected).
    pub uncertainty: Option<Uncertainty>,
    /// Source image facts.
    pub image: ImageInfo,
    /// Stage timings.
    pub timings: Timings,
}

struct Model {
    manifest: Arc<Manifest>,
    info: ModelInfo,
    tx: Mutex<Sender<Job>>,
}

struct Inner {
    runtime: Arc<Runtime>,
    models: BTreeMap<String, Model>,
    unavailable: Vec<UnavailableModel>,
}

/// A model whose manifest is installed but whose weights are not (not fetched yet): the node
/// runs without it and says so.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UnavailableModel {
    /// Model id from the manifest.
    pub id: String,
    /// Task from the manifest.
    pub task: String,
    /// What is missing and how to get it.
    pub reason: String,
}

/// The inference engine. Cheap to clone; all clones share the models and workers, which stop
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("runtime", &self.inner.runtime)
            .field("models", &self.inner.models.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Engine {
    /// Finds ONNX Runtime, loads and verifies every `models_dir/<id>/model.toml`, creates the
    /// sessions, warms them up and starts the batching workers. Blocking (seconds for big
    /// models): call it from `spawn_blocking` inside async code.
    pub fn load(settings: &InferenceSettings) -> Result<Engine, InferenceError> {
        settings.validate()?;
        let rt = runtime::runtime(settings)?;
        let dir = &settings.models_dir;
        let entries = std::fs::read_dir(dir).map_err(|e| InferenceError::io(dir, e))?;
        let mut manifests: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("model.toml"))
            .filter(|p| p.is_file())
            .collect();
        manifests.sort();
        if manifests.is_empty() {
            return Err(InferenceError::NoModels(dir.clone()));
        }
        let mut models = BTreeMap::new();
        let mut unavailable = Vec::new();
        let mut warned = Vec::new();
        for path in manifests {
            let manifest = Manifest::load(&path)?;
            if !settings.models.is_empty() && !settings.models.contains(&manifest.id) {
                continue;
            }
            if let Some(reason) = missing_weights(&manifest, &path) {
                warn!(model = %manifest.id, %reason, "model not loaded");
                unavailable.push(UnavailableModel {
                    id: manifest.id.clone(),
                    task: manifest.task.clone(),
                    reason,
                });
                continue;
            }
            let model = load_model(&rt, settings, manifest, &path, &mut warned)?;
            if models.contains_key(&model.info.id) {
                return Err(InferenceError::Manifest {
                    path,
                    reason: format!("model id `{}` is used twice", model.info.id),
                });
            }
            models.insert(model.info.id.clone(), model);
        }
        if models.is_empty() {
            return Err(InferenceError::NoModels(dir.clone()));
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                runtime: rt,
                models,
                unavailable,
            }),
        })
    }

    /// Installed models that could not be loaded because their weights are missing.
    pub fn unavailable_models(&self) -> &[UnavailableModel] {
        &self.inner.unavailable
    }

    /// The loaded models, classification and landmark ones, by id.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.inner.models.values().map(|m| m.info.clone()).collect()
    }

    /// The loaded landmark models, by id.
    pub fn landmark_models(&self) -> Vec<ModelInfo> {
        self.models_of_task(TASK_LANDMARKS)
    }

    /// The loaded segmentation models, by id.
    pub fn segmentation_models(&self) -> Vec<ModelInfo> {
        self.models_of_task(TASK_SEGMENTATION)
    }

    fn models_of_task(&self, task: &str) -> Vec<ModelInfo> {
        self.inner
            .models
            .values()
            .filter(|m| m.manifest.task == task)
            .map(|m| m.info.clone())
            .collect()
    }

    /// The manifest of model `model_id`, whatever its task.
    pub fn manifest_of(&self, model_id: &str) -> Result<Arc<Manifest>, InferenceError> {
        Ok(self.model(Some(model_id))?.manifest.clone())
    }

    /// The ONNX Runtime library in use.
    pub fn runtime_library(&self) -> &Path {
        &self.inner.runtime.dylib
    }

    /// The manifest of classification model `model_id`, or of the default one (the first
    /// classification model by id). A landmark model is a [`InferenceError::WrongTask`], so
    /// the pipeline and the findings APIs never pick one.
    pub fn manifest(&self, model_id: Option<&str>) -> Result<Arc<Manifest>, InferenceError> {
        Ok(self.classifier(model_id)?.manifest.clone())
    }

    /// The manifest of landmark model `model_id`, or of the first landmark model by id.
    pub fn landmark_manifest(
        &self,
        model_id: Option<&str>,
    ) -> Result<Arc<Manifest>, InferenceError> {
        Ok(self.landmark_model(model_id)?.manifest.clone())
    }

    /// `model_id` whatever its task, or the default classification model.
    fn model(&self, model_id: Option<&str>) -> Result<&Model, InferenceError> {
        match model_id {
            Some(id) => self
                .inner
                .models
                .get(id)
                .ok_or_else(|| InferenceError::UnknownModel(id.to_owned())),
            None => self.classifier(None),
        }
    }

    /// A model of `task`: `model_id`, or the first of that task by id.
    fn model_of(&self, model_id: Option<&str>, task: &str) -> Result<&Model, InferenceError> {
        let model = match model_id {
            Some(id) => self
                .inner
                .models
                .get(id)
                .ok_or_else(|| InferenceError::UnknownModel(id.to_owned()))?,
            None => self
                .inner
                .models
                .values()
                .find(|m| m.manifest.task == task)
                .ok_or_else(|| InferenceError::UnknownModel(format!("(default {task})")))?,
        };
        if model.manifest.task != task {
            return Err(InferenceError::WrongTask {
                model: model.info.id.clone(),
                task: model.manifest.task.clone(),
                expected: task.to_owned(),
            });
        }
        Ok(model)
    }

    fn classifier(&self, model_id: Option<&str>) -> Result<&Model, InferenceError> {
        self.model_of(model_id, Findings::TASK)
    }

    fn landmark_model(&self, model_id: Option<&str>) -> Result<&Model, InferenceError> {
        self.model_of(model_id, Landmarks::TASK)
    }

    /// Reads and preprocesses a DICOM file for a model (blocking).
    pub fn preprocess_dicom(
        &self,
        model_id: Option<&str>,
        path: &Path,
    ) -> Result<Preprocessed, InferenceError> {
        preprocess::preprocess_dicom(path, &self.model(model_id)?.manifest.input)
    }

    /// Decodes and preprocesses PNG/JPEG bytes for a model (blocking).
    pub fn preprocess_image(
        &self,
        model_id: Option<&str>,
        bytes: &[u8],
    ) -> Result<Preprocessed, InferenceError> {
        preprocess::preprocess_image(bytes, &self.model(model_id)?.manifest.input)
    }

    /// Full pipeline on a DICOM file: header rules, decode, preprocess, gate, ensemble.
    pub async fn infer_dicom(
        &self,
        model_id: Option<&str>,
        path: &Path,
    ) -> Result<ImageResult, InferenceError> {
        self.infer_dicom_with(model_id, path, GatePolicy::Enforce)
            .await
    }

    /// [`Self::infer_dicom`] with a [`GatePolicy`]: `Advisory` reports the gate's probability
    /// without withholding the findings, and the caller decides (the pipeline does so from a
    /// lung segmentation when one ran).
    pub async fn infer_dicom_with(
        &self,
        model_id: Option<&str>,
        path: &Path,
        gate: GatePolicy,
    ) -> Result<ImageResult, InferenceError> {
        self.run_dicom::<Findings>(
            model_id,
            path,
            gate,
            |id| tracing::info_span!("infer_dicom", model = %id),
        )
        .await
    }

    /// [`Self::infer_landmarks_dicom`] with a [`GatePolicy`].
    pub async fn infer_landmarks_dicom_with(
        &self,
        model_id: Option<&str>,
        path: &Path,
        gate: GatePolicy,
    ) -> Result<LandmarkResult, InferenceError> {
        self.run_dicom::<Landmarks>(
            model_id,
            path,
            gate,
            |id| tracing::info_span!("infer_landmarks_dicom", model = %id),
        )
        .await
    }

    /// Segmentation of a DICOM file: header rules, decode, preprocess, members, then the
    /// manifest's post-processing (lung fields, their plausibility and measurements).
    pub async fn infer_segmentation_dicom(
        &self,
        model_id: Option<&str>,
        path: &Path,
    ) -> Result<SegmentationResult, InferenceError> {
        self.run_dicom::<Segments>(
            model_id,
            path,
            GatePolicy::Enforce,
            |id| tracing::info_span!("infer_segmentation_dicom", model = %id),
        )
        .await
    }

    /// Segmentation of PNG/JPEG bytes.
    pub async fn infer_segmentation_bytes(
        &self,
        model_id: Option<&str>,
        bytes: &[u8],
    ) -> Result<SegmentationResult, InferenceError> {
        self.run_bytes::<Segments>(
            model_id,
            bytes,
            |id| tracing::info_span!("infer_segmentation_image", model = %id),
        )
        .await
    }

    /// Full pipeline on PNG/JPEG bytes: decode, preprocess, colour check, gate, ensemble.
    pub async fn infer_image_bytes(
        &self,
        model_id: Option<&str>,
        bytes: &[u8],
    ) -> Result<ImageResult, InferenceError> {
        self.run_bytes::<Findings>(
            model_id,
            bytes,
            |id| tracing::info_span!("infer_image", model = %id),
        )
        .await
    }

    /// Gate and ensemble on an already preprocessed image (header rules are not checked).
    pub async fn infer_preprocessed(
        &self,
        model_id: Option<&str>,
        pre: Preprocessed,
    ) -> Result<ImageResult, InferenceError> {
        let t0 = Instant::now();
        let model = self.model_of(model_id, Findings::TASK)?;
        self.finish::<Findings>(model, pre, t0, GatePolicy::Enforce)
            .await
    }

    /// Landmarks, their spread and the measurement for PNG/JPEG bytes (`model_id` None: the
    /// first landmark model): decode, preprocess, colour check, gate, ensemble.
    pub async fn infer_landmarks_bytes(
        &self,
        model_id: Option<&str>,
        bytes: &[u8],
    ) -> Result<LandmarkResult, InferenceError> {
        self.run_bytes::<Landmarks>(
            model_id,
            bytes,
            |id| tracing::info_span!("infer_landmarks_image", model = %id),
        )
        .await
    }

    /// Landmarks for a DICOM file: header rules, decode, preprocess, gate, ensemble.
    pub async fn infer_landmarks_dicom(
        &self,
        model_id: Option<&str>,
        path: &Path,
    ) -> Result<LandmarkResult, InferenceError> {
        self.infer_landmarks_dicom_with(model_id, path, GatePolicy::Enforce)
            .await
    }

    /// Every task's path for a DICOM file: the task's model, header rules, decode and
    /// preprocess off the runtime, then [`Self::finish`]; `span` names the call in logs.
    async fn run_dicom<K: ModelTask>(
        &self,
        model_id: Option<&str>,
        path: &Path,
        gate: GatePolicy,
        span: impl FnOnce(&str) -> tracing::Span,
    ) -> Result<K::Output, InferenceError> {
        let t0 = Instant::now();
        let model = self.model_of(model_id, K::TASK)?;
        let manifest = model.manifest.clone();
        let path = path.to_owned();
        let span = span(&manifest.id);
        let pre = spawn_blocking(span.clone(), move || {
            preprocess_applicable_dicom(&manifest, &path, t0)
        })
        .await?;
        match pre {
            Ok(pre) => {
                self.finish::<K>(model, pre, t0, gate)
                    .instrument(span)
                    .await
            }
            Err(reason) => {
                let timings = Timings {
                    decode_ms: ms(t0),
                    total_ms: ms(t0),
                    ..Timings::default()
                };
                Ok(K::with_timings(K::not_applicable(model, reason), timings))
            }
        }
    }

    /// Every task's path for PNG/JPEG bytes: decode and preprocess off the runtime, then
    /// [`Self::finish`].
    async fn run_bytes<K: ModelTask>(
        &self,
        model_id: Option<&str>,
        bytes: &[u8],
        span: impl FnOnce(&str) -> tracing::Span,
    ) -> Result<K::Output, InferenceError> {
        let t0 = Instant::now();
        let model = self.model_of(model_id, K::TASK)?;
        let span = span(&model.manifest.id);
        let pre = preprocess_image_blocking(model, bytes, &span).await?;
        self.finish::<K>(model, pre, t0, GatePolicy::Enforce)
            .instrument(span)
            .await
    }

    /// Runs a raw input tensor (`items x C x H x W`) through the members and the gate via the
    /// batcher and returns the raw outputs.
    pub async fn run_tensor(
        &self,
        model_id: Option<&str>,
        tensor: Vec<f32>,
        items: usize,
    ) -> Result<RawOutputs, InferenceError> {
        let model = self.model(model_id)?;
        submit(model, tensor, items).await
    }

    /// Every task's tail: a colour image is refused, the rest runs through the members and
    /// the gate; a gate below its threshold refuses, else the task reads the members' outputs.
    async fn finish<K: ModelTask>(
        &self,
        model: &Model,
        pre: Preprocessed,
        t0: Instant,
        gate: GatePolicy,
    ) -> Result<K::Output, InferenceError> {
        let mut timings = Timings {
            decode_ms: pre.decode_ms,
            preprocess_ms: pre.preprocess_ms,
            ..Timings::default()
        };
        if pre.is_colour {
            timings.total_ms = ms(t0);
            let out = K::refused(model, &pre.image, Refusal::Colour);
            return Ok(K::with_timings(out, timings));
        }
        let raw = submit(model, pre.tensor, pre.items).await?;
        let t_post = Instant::now();
        timings.queue_ms = raw.queue_ms;
        timings.inference_ms = raw.run_ms;
        timings.batch_size = raw.batch_items;
        let gate_probability = raw.gate.as_ref().map(|g| {
            g.iter().map(|&v| postprocess::sigmoid(v)).sum::<f32>() / g.len().max(1) as f32
        });
        let out = match (&model.manifest.gate, gate_probability) {
            (Some(g), Some(p)) if p < g.threshold && gate == GatePolicy::Enforce => {
                K::refused(model, &pre.image, Refusal::Gate(p))
            }
            _ => K::predicted(model, &pre.image, &raw, pre.items, gate_probability),
        };
        timings.postprocess_ms = ms(t_post);
        timings.total_ms = ms(t0);
        Ok(K::with_timings(out, timings))
    }
}

/// Whether a gate below its threshold withholds the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatePolicy {
    /// Below the threshold: refused, no prediction.
    Enforce,
    /// The probability is reported with the prediction; the caller decides.
    Advisory,
}

/// Why an image got no prediction.
enum Refusal {
    /// A colour image: not a radiograph.
    Colour,
    /// The gate's probability, below its threshold.
    Gate(f32),
}

/// What differs between model tasks: which models serve them and how their answer is built;
/// the path from input to member outputs is [`Engine::finish`]'s, the same for all.
trait ModelTask {
    /// The manifest `task` of the models serving it.
    const TASK: &'static str;
    type Output;

    /// The model's header rules exclude the image.
    fn not_applicable(model: &Model, reason: String) -> Self::Output;
    fn refused(model: &Model, image: &ImageInfo, refusal: Refusal) -> Self::Output;
    fn predicted(
        model: &Model,
        image: &ImageInfo,
        raw: &RawOutputs,
        items: usize,
        gate_probability: Option<f32>,
    ) -> Self::Output;
    fn with_timings(out: Self::Output, timings: Timings) -> Self::Output;
}

/// Findings of a classification model ([`ImageResult`]).
struct Findings;

impl ModelTask for Findings {
    const TASK: &'static str = TASK_CLASSIFICATION;
    type Output = ImageResult;

    fn not_applicable(model: &Model, reason: String) -> ImageResult {
        ImageResult {
            applicable: false,
            reason: Some(reason),
            image: ImageInfo {
                source: "dicom".into(),
                ..ImageInfo::default()
            },
            ..empty_result(model)
        }
    }

    fn refused(model: &Model, image: &ImageInfo, refusal: Refusal) -> ImageResult {
        ImageResult {
            rejected: true,
            reason: Some(REJECTED_REASON.into()),
            gate_probability: match refusal {
                Refusal::Colour => None,
                Refusal::Gate(p) => Some(p),
            },
            image: image.clone(),
            ..empty_result(model)
        }
    }

    fn predicted(
        model: &Model,
        image: &ImageInfo,
        raw: &RawOutputs,
        items: usize,
        gate_probability: Option<f32>,
    ) -> ImageResult {
        let m = &model.manifest;
        let probs = postprocess::member_probabilities(m, &raw.members, items);
        let (labels, uncertainty) = postprocess::combine(m, &probs);
        ImageResult {
            gate_probability,
            labels,
            uncertainty: Some(uncertainty),
            image: image.clone(),
            ..empty_result(model)
        }
    }

    fn with_timings(out: ImageResult, timings: Timings) -> ImageResult {
        ImageResult { timings, ..out }
    }
}

/// Points and the measurement of a landmark model ([`LandmarkResult`]).
struct Landmarks;

impl ModelTask for Landmarks {
    const TASK: &'static str = TASK_LANDMARKS;
    type Output = LandmarkResult;

    fn not_applicable(model: &Model, reason: String) -> LandmarkResult {
        LandmarkResult {
            status: LandmarkStatus::NotApplicable { reason },
            ..empty_landmarks(model, &ImageInfo::default())
        }
    }

    fn refused(model: &Model, image: &ImageInfo, refusal: Refusal) -> LandmarkResult {
        let (classifier_confidence, gate_probability) = match refusal {
            Refusal::Colour => (1.0, None),
            Refusal::Gate(p) => (1.0 - p, Some(p)),
        };
        LandmarkResult {
            status: LandmarkStatus::Rejected {
                reason: LANDMARK_REJECTED_REASON.into(),
                classifier_confidence,
            },
            gate_probability,
            ..empty_landmarks(model, image)
        }
    }

    fn predicted(
        model: &Model,
        image: &ImageInfo,
        raw: &RawOutputs,
        _items: usize,
        gate_probability: Option<f32>,
    ) -> LandmarkResult {
        let (points, members, spread, tier, measurement) =
            landmarks::evaluate(&model.manifest, &raw.members);
        LandmarkResult {
            status: LandmarkStatus::Predicted,
            gate_probability,
            landmarks: points,
            member_landmarks: members,
            spread: Some(spread),
            tier: Some(tier),
            measurement,
            ..empty_landmarks(model, image)
        }
    }

    fn with_timings(out: LandmarkResult, timings: Timings) -> LandmarkResult {
        LandmarkResult {
            timings_ms: timings,
            ..out
        }
    }
}

/// The lung fields of a segmentation model ([`SegmentationResult`]).
struct Segments;

impl ModelTask for Segments {
    const TASK: &'static str = TASK_SEGMENTATION;
    type Output = SegmentationResult;

    fn not_applicable(model: &Model, reason: String) -> SegmentationResult {
        SegmentationResult {
            status: "not_applicable".into(),
            reason: Some(reason),
            ..empty_segmentation(model, &ImageInfo::default())
        }
    }

    fn refused(model: &Model, image: &ImageInfo, _refusal: Refusal) -> SegmentationResult {
        SegmentationResult {
            status: "rejected".into(),
            reason: Some(REJECTED_REASON.into()),
            ..empty_segmentation(model, image)
        }
    }

    fn predicted(
        model: &Model,
        image: &ImageInfo,
        raw: &RawOutputs,
        _items: usize,
        _gate_probability: Option<f32>,
    ) -> SegmentationResult {
        SegmentationResult {
            lungs: Some(segmentation::lung_report(
                &model.manifest,
                &raw.members,
                image,
            )),
            ..empty_segmentation(model, image)
        }
    }

    fn with_timings(out: SegmentationResult, timings: Timings) -> SegmentationResult {
        SegmentationResult { timings, ..out }
    }
}

fn empty_segmentation(model: &Model, image: &ImageInfo) -> SegmentationResult {
    SegmentationResult {
        model_id: model.info.id.clone(),
        model_version: model.info.version.clone(),
        provider: model.info.provider.clone(),
        not_for_clinical_use: model.info.not_for_clinical_use,
        status: "predicted".into(),
        reason: None,
        lungs: None,
        image: image.clone(),
        timings: Timings::default(),
    }
}

/// Opens a DICOM file, checks the model's header rules and preprocesses it (blocking).
/// `Ok(Err(reason))`: the model does not apply to this image.
fn preprocess_applicable_dicom(
    manifest: &Manifest,
    path: &Path,
    t0: Instant,
) -> Result<Result<Preprocessed, String>, InferenceError> {
    let obj = preprocess::open_dicom(path)?;
    let header = preprocess::header_attrs(&obj);
    if let Applicability::NotApplicable { reason } = check_applicability(manifest, &header) {
        return Ok(Err(reason));
    }
    preprocess::preprocess_dicom_object(&obj, header, &manifest.input, t0).map(Ok)
}

fn empty_landmarks(model: &Model, image: &ImageInfo) -> LandmarkResult {
    LandmarkResult {
        model_id: model.info.id.clone(),
        model_version: model.info.version.clone(),
        provider: model.info.provider.clone(),
        not_for_clinical_use: model.info.not_for_clinical_use,
        status: LandmarkStatus::Predicted,
        gate_probability: None,
        landmarks: Vec::new(),
        member_landmarks: Vec::new(),
        spread: None,
        tier: None,
        measurement: None,
        image_width: image.cols,
        image_height: image.rows,
        timings_ms: Timings::default(),
    }
}

fn empty_result(model: &Model) -> ImageResult {
    ImageResult {
        model_id: model.info.id.clone(),
        model_version: model.info.version.clone(),
        provider: model.info.provider.clone(),
        not_for_clinical_use: model.info.not_for_clinical_use,
        applicable: true,
        rejected: false,
        reason: None,
        gate_probability: None,
        labels: Vec::new(),
        uncertainty: None,
        image: ImageInfo::default(),
        timings: Timings::default(),
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

async fn submit(
    model: &Model,
    input: Vec<f32>,
    items: usize,
) -> Result<RawOutputs, InferenceError> {
    let per_item = model.manifest.input_len();
    if items == 0 || input.len() != items * per_item {
        return Err(InferenceError::Unsupported(format!(
            "input tensor has {} values, expected {items} x {per_item}",
            input.len()
        )));
    }
    let (reply, rx) = oneshot::channel();
    let job = Job {
        input,
        items,
        enqueued: Instant::now(),
        reply,
    };
    model
        .tx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| InferenceError::Closed(model.info.id.clone()))?;
    rx.await
        .map_err(|_| InferenceError::Closed(model.info.id.clone()))?
}

/// Decodes and preprocesses PNG/JPEG bytes for `model` on a blocking thread, in `span`.
async fn preprocess_image_blocking(
    model: &Model,
    bytes: &[u8],
    span: &tracing::Span,
) -> Result<Preprocessed, InferenceError> {
    let input = model.manifest.input.clone();
    let bytes = bytes.to_vec();
    spawn_blocking(span.clone(), move || {
        preprocess::preprocess_image(&bytes, &input)
    })
    .await
}

/// `spawn_blocking` that keeps the caller's span and turns a panic into an error.
async fn spawn_blocking<T: Send + 'static>(
    span: tracing::Span,
    f: impl FnOnce() -> Result<T, InferenceError> + Send + 'static,
) -> Result<T, InferenceError> {
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| InferenceError::Task(e.to_string()))?
}

/// Why `manifest`'s files are not all there (a model whose weights setup has not fetched),
/// `None` when they are. A file that is there but has the wrong digest is not "missing": it
/// fails the load.
fn missing_weights(manifest: &Manifest, path: &Path) -> Option<String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let files = manifest
        .ensemble
        .members
        .iter()
        .map(|m| m.file.as_str())
        .chain(manifest.gate.as_ref().map(|g| g.file.as_str()));
    let missing: Vec<&str> = files.filter(|f| !dir.join(f).is_file()).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} missing in {} (scripts/setup.sh fetches and converts it)",
            missing.join(", "),
            dir.display()
        )
    })
}

/// Loads the model whose `manifest` was read from `path`.
fn load_model(
    rt: &Arc<Runtime>,
    settings: &InferenceSettings,
    manifest: Manifest,
    path: &Path,
    warned: &mut Vec<String>,
) -> Result<Model, InferenceError> {
    let started = Instant::now();
    let dir = path.parent().unwrap_or(Path::new("."));
    if dir.file_name().and_then(|n| n.to_str()) != Some(manifest.id.as_str()) {
        warn!(
            manifest = %path.display(),
            id = %manifest.id,
            "model id differs from its folder name"
        );
    }
    let members: Vec<(PathBuf, Vec<u8>)> = manifest
        .ensemble
        .members
        .iter()
        .map(|f| Ok((dir.join(&f.file), read_verified(dir, &f.file, &f.sha256)?)))
        .collect::<Result<_, InferenceError>>()?;
    let gate = match &manifest.gate {
        Some(g) => Some((dir.join(&g.file), read_verified(dir, &g.file, &g.sha256)?)),
        None => None,
    };
    let i = &manifest.input;
    let chw = [i.channels as usize, i.height as usize, i.width as usize];
    let threads = settings.threads_for(members.len(), gate.is_some());
    let mut sets = Vec::with_capacity(settings.pool_size);
    let mut provider = Provider::Cuda;
    let mut spec = None;
    for _ in 0..settings.pool_size {
        let mut sessions = Vec::new();
        for (p, bytes) in &members {
            let (s, used) = create_session(rt, p, bytes, &settings.providers, threads, warned)?;
            if used == Provider::Cpu {
                provider = Provider::Cpu;
            }
            sessions.push(s);
        }
        let gate_session = match &gate {
            Some((p, bytes)) => {
                let (s, used) = create_session(rt, p, bytes, &settings.providers, threads, warned)?;
                if used == Provider::Cpu {
                    provider = Provider::Cpu;
                }
                Some(s)
            }
            None => None,
        };
        let set = SessionSet {
            members: sessions,
            gate: gate_session,
        };
        if spec.is_none() {
            spec = Some(check_io(&manifest, &members, gate.as_ref(), &set, chw)?);
        }
        sets.push(set);
    }
    let spec = Arc::new(spec.expect("BUG: pool_size is validated to be at least 1"));
    if settings.warmup {
        let zeros = vec![0.0f32; manifest.input_len()];
        for set in &mut sets {
            batcher::run_batch(&spec, set, &zeros, 1)?;
        }
    }
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for (n, set) in sets.into_iter().enumerate() {
        let rx = rx.clone();
        let running = running.clone();
        let spec = spec.clone();
        let (max_batch, delay) = (
            settings.max_batch,
            Duration::from_millis(settings.max_delay_ms),
        );
        std::thread::Builder::new()
            .name(format!("infer-{}-{n}", manifest.id))
            .spawn(move || batcher::worker(rx, set, spec, max_batch, delay, running))
            .map_err(|e| InferenceError::Task(format!("cannot start worker thread: {e}")))?;
    }
    let info = ModelInfo {
        id: manifest.id.clone(),
        version: manifest.version.clone(),
        name: manifest.name.clone(),
        manufacturer: manifest.manufacturer.clone(),
        task: manifest.task.clone(),
        intended_use: manifest.intended_use.clone(),
        not_for_clinical_use: manifest.not_for_clinical_use,
        labels: manifest.labels.clone(),
        landmarks: manifest.landmarks.clone(),
        members: manifest.ensemble.members.clone(),
        gate: manifest.gate.as_ref().map(|g| ModelFile {
            file: g.file.clone(),
            sha256: g.sha256.to_ascii_lowercase(),
        }),
        input: [i.width, i.height, i.channels],
        validation: manifest.validation.clone(),
        provenance: manifest.provenance.clone(),
        provider: provider.as_str().into(),
        device: provider.device().into(),
        workers: settings.pool_size,
    };
    info!(
        model = %info.id,
        version = %info.version,
        members = info.members.len(),
        gate = info.gate.is_some(),
        provider = %info.provider,
        intra_threads = threads,
        load_ms = ms(started),
        "model loaded"
    );
    Ok(Model {
        manifest: Arc::new(manifest),
        info,
        tx: Mutex::new(tx),
    })
}

/// Checks the sessions' inputs and outputs against the manifest; returns the run spec.
fn check_io(
    manifest: &Manifest,
    members: &[(PathBuf, Vec<u8>)],
    gate: Option<&(PathBuf, Vec<u8>)>,
    set: &SessionSet,
    chw: [usize; 3],
) -> Result<RunSpec, InferenceError> {
    let mut members_batch1 = false;
    for ((path, _), s) in members.iter().zip(&set.members) {
        let fail = |reason: String| InferenceError::Session {
            path: path.clone(),
            reason,
        };
        let input = s
            .inputs()
            .iter()
            .find(|o| o.name() == manifest.input.name)
            .ok_or_else(|| {
                fail(format!(
                    "no input named `{}` (inputs: {})",
                    manifest.input.name,
                    names(s.inputs().iter().map(|o| o.name()))
                ))
            })?;
        members_batch1 |= check_input_shape(input.dtype(), chw).map_err(fail)?;
        if !s.outputs().iter().any(|o| o.name() == manifest.output.name) {
            return Err(fail(format!(
                "no output named `{}` (outputs: {})",
                manifest.output.name,
                names(s.outputs().iter().map(|o| o.name()))
            )));
        }
    }
    let mut gate_input = None;
    let mut gate_batch1 = false;
    if let (Some((path, _)), Some(s)) = (gate, &set.gate) {
        let fail = |reason: String| InferenceError::Session {
            path: path.clone(),
            reason,
        };
        let input = s
            .inputs()
            .first()
            .ok_or_else(|| fail("the gate has no inputs".into()))?;
        gate_batch1 = check_input_shape(input.dtype(), chw).map_err(fail)?;
        gate_input = Some(input.name().to_owned());
    }
    Ok(RunSpec {
        id: manifest.id.clone(),
        input_name: manifest.input.name.clone(),
        output_name: manifest.output.name.clone(),
        gate_input,
        chw,
        labels: manifest.output_len(),
        members_batch1,
        gate_batch1,
        member_files: manifest
            .ensemble
            .members
            .iter()
            .map(|m| m.file.clone())
            .collect(),
    })
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

/// Returns whether the batch dimension is fixed to 1; errors on a C/H/W mismatch.
fn check_input_shape(ty: &ValueType, chw: [usize; 3]) -> Result<bool, String> {
    let ValueType::Tensor { shape, .. } = ty else {
        return Err("the input is not a tensor".into());
    };
    let dims: Vec<i64> = shape.iter().copied().collect();
    if dims.len() != 4 {
        return Err(format!(
            "the input has rank {}, expected 4 (NCHW)",
            dims.len()
        ));
    }
    for (k, (&d, &want)) in dims[1..].iter().zip(&chw).enumerate() {
        if d >= 0 && d as usize != want {
            return Err(format!(
                "input dimension {} is {d} but the manifest says {want}",
                k + 1
            ));
        }
    }
    Ok(dims[0] == 1)
}
