//! What several targets share.

use radstream::inference::manifest::InputSpec;

/// A small model input, so that resizing costs little per run.
pub fn small_spec(frames: &str) -> InputSpec {
    InputSpec {
        name: "input".into(),
        width: 16,
        height: 16,
        channels: 1,
        layout: "NCHW".into(),
        windowing: "voi-or-percentile".into(),
        percentile_low: 0.5,
        percentile_high: 99.5,
        mean: 0.5,
        std: 0.25,
        frames: frames.into(),
        // Fuzz the reduced-resolution JPEG 2000 path too.
        jpeg2000_reduced: true,
    }
}
