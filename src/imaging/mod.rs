//! Medical images as pixels, with no model in sight: decoding DICOM pixel data (every transfer
//! syntax the node accepts, 12-bit lossy JPEG through libjpeg-turbo), stored values per frame,
//! VOI windowing and resizing. Used by inference (model inputs), DICOMweb (frames, rendered
//! images, transcoding) and report overlays.
//!
//! - [`decode`]: [`decode::decode_pixels`] and [`decode::raw_frame`] (public for the fuzz
//!   target `image_decode`);
//! - [`jpeg12`]: 12-bit lossy JPEG frames dicom-pixeldata rejects;
//! - [`j2k`]: JPEG 2000 and HTJ2K frames decoded at the resolution a model needs;
//! - [`window`]: PS3.3 window functions and percentile windows;
//! - [`lut`]: the same grey through a table of every stored value, for 8- and 16-bit
//!   monochrome frames (the fast path);
//! - [`resize`](mod@resize): bilinear resampling of a grey plane.

pub mod decode;
pub mod j2k;
pub mod jpeg12;
pub mod lut;
pub mod resize;
pub mod window;

pub use resize::resize;

/// Why pixels could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// The DICOM file has no pixel data, or it cannot be decoded.
    #[error("cannot decode DICOM pixel data: {0}")]
    PixelData(String),
    /// The pixel data is readable but of a kind not handled.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// Resampling failed.
    #[error("cannot resize image: {0}")]
    Resize(String),
}

/// Runs `f`, turning a panic inside a decoder into an error (no input may crash the node).
pub fn guard<T, E: From<ImagingError>>(f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "decoder panicked".into());
            Err(ImagingError::PixelData(format!("decoder failed: {msg}")).into())
        }
    }
}
