//! Segmentation models (`task = "segmentation"`): the members' mean probability map, read
//! into structures by the manifest's `[segmentation]` kind. Only lung fields so far, read by
//! [`crate::measurement::lungs`].

use serde::Serialize;

use super::engine::Timings;
use super::manifest::Manifest;
use super::preprocess::ImageInfo;
use crate::measurement::lungs::{LungFields, LungReport};
use crate::measurement::CTR_NORMAL_BELOW;

/// What a segmentation model made of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentationResult {
    /// Model id.
    pub model_id: String,
    /// Model version.
    pub model_version: String,
    /// Execution provider used.
    pub provider: String,
    /// Copied from the manifest.
    pub not_for_clinical_use: bool,
    /// `predicted`, `not_applicable` (a header rule excluded the image) or `rejected` (colour).
    pub status: String,
    /// Why not predicted.
    pub reason: Option<String>,
    /// The lung fields, their plausibility and measurements (`predicted` only).
    pub lungs: Option<LungReport>,
    /// Source image facts.
    pub image: ImageInfo,
    /// Stage timings.
    pub timings: Timings,
}

/// The lung report from the members' outputs (each `width * height` probabilities of the
/// first item), averaged; `image` gives the source geometry the figures are scaled to.
pub fn lung_report(manifest: &Manifest, members: &[Vec<f32>], image: &ImageInfo) -> LungReport {
    let (w, h) = (
        manifest.input.width as usize,
        manifest.input.height as usize,
    );
    let n = w * h;
    let mut mean = vec![0f32; n];
    for m in members {
        for (acc, v) in mean.iter_mut().zip(m.iter().take(n)) {
            *acc += v;
        }
    }
    let k = members.len().max(1) as f32;
    mean.iter_mut().for_each(|v| *v /= k);
    let threshold = manifest.segmentation.as_ref().map_or(0.5, |s| s.threshold);
    let fields = LungFields::from_probability(&mean, w, h, threshold);
    let (cols, rows) = if image.cols > 0 && image.rows > 0 {
        (image.cols, image.rows)
    } else {
        (w as u32, h as u32)
    };
    fields.report(cols, rows, image.pixel_spacing_mm, CTR_NORMAL_BELOW)
}
