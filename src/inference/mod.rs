//! ONNX ensemble inference: manifests, runtime, preprocessing, ensemble, gate.
//! No HTTP and no SQL here: callers hand in files or bytes and get results back.
//!
//! # Submodules
//! - `settings`: [`InferenceSettings`], the `[inference]` configuration section.
//! - [`manifest`]: `models/<id>/model.toml` ([`Manifest`]), parsed with `deny_unknown_fields`
//!   and validated; member files are checked against their SHA-256 at load.
//! - `runtime`: finds the ONNX Runtime shared library (settings `ort_dylib_path`,
//!   `ORT_DYLIB_PATH`, `libonnxruntime.so*` next to the executable, then the `onnxruntime`
//!   package of `$VIRTUAL_ENV/bin/python3`, `.venv/bin/python3` (in the working directory and
//!   the executable's ancestors up to the repository root) or `python3`), initialises it once
//!   per process, and creates sessions with the configured providers. CUDA is registered with
//!   `error_on_failure`; a failure is logged (`warn!`, with the reason) and the session falls
//!   back to CPU; [`ModelInfo::provider`] says what is actually used.
//! - [`preprocess`]: DICOM / PNG / JPEG to the input tensor ([`Preprocessed`]).
//!   Decoding, windowing and resizing are [`crate::imaging`]'s, shared with DICOMweb.
//! - [`applicability`]: [`check_applicability`], the manifest's DICOM header rules.
//! - `batcher`: dynamic batching across concurrent requests (`max_batch`, `max_delay_ms`),
//!   members and gate run concurrently, one worker thread per session set (`pool_size`).
//! - [`postprocess`]: ensemble mean, spread, entropy-based uncertainty (definitions there).
//! - [`landmarks`]: landmark models (`task = "landmark-regression"`): member points, their
//!   mean and spread, the tier and the measurement (definitions there).
//!
//! # Public API
//! - [`Engine::load`] (blocking) loads every model; [`Engine::models`] lists them
//!   ([`ModelInfo`], serialisable, for `/health` and `radstream models`).
//! - [`Engine::infer_dicom`] and [`Engine::infer_image_bytes`] (async; decoding runs in
//!   `spawn_blocking`, ONNX on the model's worker threads) give an [`ImageResult`]:
//!   applicability, gate rejection ([`REJECTED_REASON`]), findings with member probabilities,
//!   uncertainty, confidence tier, timings and image facts.
//! - Lower level: [`Engine::preprocess_dicom`] / [`Engine::preprocess_image`] (tensor only),
//!   [`Engine::infer_preprocessed`], [`Engine::run_tensor`] (raw member outputs), and
//!   [`preprocess::decode_raw`] (stored pixel values, used to compare with pydicom).
//! - [`Engine::infer_landmarks_bytes`] and [`Engine::infer_landmarks_dicom`] give a
//!   [`LandmarkResult`] (points, member points, spread, tier, cardiothoracic ratio);
//!   [`Engine::landmark_models`] lists those models.
//! - The default model (`model_id = None`) is the first *classification* model by id for the
//!   findings entry points and [`Engine::manifest`] (so the pipeline never runs a landmark
//!   model), and the first landmark model for the landmark entry points. A model of the other
//!   task is an [`InferenceError::WrongTask`].
//! - Errors are [`InferenceError`]; no input (corrupt DICOM, truncated PNG, unknown model)
//!   panics.
//!
//! ```no_run
//! # async fn demo() -> Result<(), radstream::inference::InferenceError> {
//! use radstream::inference::{Engine, InferenceSettings};
//! let engine = Engine::load(&InferenceSettings::default())?;
//! let result = engine.infer_dicom(None, std::path::Path::new("study/1.dcm")).await?;
//! println!("{}", result.labels.len());
//! # Ok(()) }
//! ```

pub mod applicability;
mod batcher;
mod engine;
mod error;
pub mod landmarks;
pub mod manifest;
pub mod postprocess;
pub mod preprocess;
mod runtime;
pub mod segmentation;
mod settings;

pub use crate::imaging::window::WindowInfo;
pub use applicability::{check_applicability, Applicability};
pub use batcher::RawOutputs;
pub use engine::{
    Engine, GatePolicy, ImageResult, ModelInfo, Timings, UnavailableModel, REJECTED_REASON,
};
pub use error::InferenceError;
pub use landmarks::{Landmark, LandmarkResult, LandmarkStatus, LANDMARK_REJECTED_REASON};
pub use manifest::{CodeScheme, Manifest};
pub use postprocess::{ConfidenceTier, LabelResult, Uncertainty};
pub use preprocess::{HeaderAttrs, ImageInfo, Preprocessed};
pub use runtime::Provider;
pub use segmentation::SegmentationResult;
pub use settings::InferenceSettings;
