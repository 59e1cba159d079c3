//! Measurements computed from anatomical landmarks. No models here: callers hand in points
//! (from the landmark ensemble, `crate::inference`, or drawn by hand) and get numbers back.
//!
//! # Submodules
//! - [`ctr`]: the cardiothoracic ratio ([`Ctr`], [`cardiothoracic_ratio`]).
//! - [`lungs`]: lung fields from a segmentation model's output, their plausibility, the CTR
//!   from their borders and their contours.
//!
//! Coordinates are normalised to the image: `x` = column / width (0 left, 1 right), `y` = row
//! / height (0 top, 1 bottom). In a PA/AP chest radiograph the patient's right is on the image
//! left, so `heart_right` has a smaller `x` than `heart_left`.

pub mod ctr;
pub mod lungs;

use serde::{Deserialize, Serialize};

pub use ctr::{cardiothoracic_ratio, cardiothoracic_ratio_with, Ctr, CTR_NORMAL_BELOW};

/// One named point in an image, in normalised coordinates (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Landmark {
    /// Landmark class, e.g. `heart_right` (the model manifest lists them).
    pub class: String,
    /// Column / image width, 0 (left) to 1 (right).
    pub x: f32,
    /// Row / image height, 0 (top) to 1 (bottom).
    pub y: f32,
}

impl Landmark {
    /// A landmark from its class and coordinates.
    pub fn new(class: impl Into<String>, x: f32, y: f32) -> Self {
        Self {
            class: class.into(),
            x,
            y,
        }
    }
}

/// The first landmark of `class` in `landmarks`.
pub fn find<'a>(landmarks: &'a [Landmark], class: &str) -> Option<&'a Landmark> {
    landmarks.iter().find(|l| l.class == class)
}
