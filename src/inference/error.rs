use std::path::PathBuf;

/// Everything that can go wrong while loading models or running inference.
///
/// Messages are meant for operators and logs; the API layer decides what a client sees.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferenceError {
    /// The `[inference]` settings are inconsistent.
    #[error("invalid inference settings: {0}")]
    Settings(String),
    /// No ONNX Runtime shared library could be found; the message lists where we looked.
    #[error("ONNX Runtime not found: {0}")]
    RuntimeNotFound(String),
    /// The library was found but could not be loaded or initialised.
    #[error("cannot initialise ONNX Runtime from {path}: {reason}")]
    RuntimeInit {
        /// Library that was tried.
        path: PathBuf,
        /// Loader or runtime message.
        reason: String,
    },
    /// A model manifest is missing, unreadable or invalid.
    #[error("invalid model manifest {path}: {reason}")]
    Manifest {
        /// The `model.toml` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A model file does not have the SHA-256 its manifest records.
    #[error("checksum mismatch for {path}: manifest says sha256 {expected}, file has {actual}")]
    Checksum {
        /// The ONNX file.
        path: PathBuf,
        /// Digest written in the manifest.
        expected: String,
        /// Digest of the file on disk.
        actual: String,
    },
    /// ONNX Runtime refused a model, or its inputs/outputs do not match the manifest.
    #[error("cannot load model file {path}: {reason}")]
    Session {
        /// The ONNX file.
        path: PathBuf,
        /// Runtime message.
        reason: String,
    },
    /// The models folder holds no `*/model.toml`.
    #[error("no models found in {0} (expected <id>/model.toml)")]
    NoModels(PathBuf),
    /// A request named a model id that is not loaded.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// A request named a model of another task (a landmark model where findings are needed,
    /// or the other way round).
    #[error("model `{model}` is a {task} model; this needs a {expected} model")]
    WrongTask {
        /// The model id.
        model: String,
        /// Its task.
        task: String,
        /// The task the caller needs.
        expected: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The input is not a readable DICOM file.
    #[error("cannot parse DICOM file: {0}")]
    Dicom(String),
    /// The DICOM file has no pixel data, or it cannot be decoded.
    #[error("cannot decode DICOM pixel data: {0}")]
    PixelData(String),
    /// The input is readable but of a kind the engine does not handle.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// PNG/JPEG bytes could not be decoded.
    #[error("cannot decode image: {0}")]
    Image(String),
    /// Resampling to the model's input size failed.
    #[error("cannot resize image: {0}")]
    Resize(String),
    /// ONNX Runtime failed while running a batch.
    #[error("inference failed in {model}: {reason}")]
    Run {
        /// Model id and member file.
        model: String,
        /// Runtime message.
        reason: String,
    },
    /// The model's worker threads are gone (engine dropped or a worker died).
    #[error("inference workers for model `{0}` are not running")]
    Closed(String),
    /// A blocking task panicked or was cancelled.
    #[error("inference task failed: {0}")]
    Task(String),
}

/// Same messages as before the imaging code left this module.
impl From<crate::imaging::ImagingError> for InferenceError {
    fn from(e: crate::imaging::ImagingError) -> Self {
        use crate::imaging::ImagingError;
        match e {
            ImagingError::PixelData(m) => Self::PixelData(m),
            ImagingError::Unsupported(m) => Self::Unsupported(m),
            ImagingError::Resize(m) => Self::Resize(m),
        }
    }
}

impl InferenceError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the error is about the request's input (bad file, unknown model) rather than
    /// about the engine; the API maps these to 4xx.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Self::UnknownModel(_)
                | Self::WrongTask { .. }
                | Self::Dicom(_)
                | Self::PixelData(_)
                | Self::Unsupported(_)
                | Self::Image(_)
                | Self::Io { .. }
        )
    }
}
