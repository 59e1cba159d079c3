//! Cardiothoracic ratio (CTR): the widest transverse diameter of the cardiac silhouette
//! divided by the widest inner diameter of the thorax, on a frontal (PA) radiograph. Adults:
//! normal below 0.5; at or above it the heart is called enlarged (on an AP view the heart is
//! magnified, so a value slightly above 0.5 there is weaker evidence).
//!
//! Landmarks used: `heart_right` / `heart_left` (the widest extents of the cardiac silhouette)
//! and `thorax_right` / `thorax_left` (inner rib margins at the widest level). Both widths are
//! horizontal distances (`x` differences), as the CTR is read on the film; since each pair is
//! measured at one level, a small patient rotation scales both widths alike and leaves the
//! ratio unchanged, and so does any image aspect ratio.

use serde::Serialize;

use super::{find, Landmark};

/// Upper limit of a normal cardiothoracic ratio (adult, PA view).
pub const CTR_NORMAL_BELOW: f32 = 0.5;

/// A cardiothoracic ratio and the widths it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Ctr {
    /// `cardiac_width / thoracic_width`.
    pub ratio: f32,
    /// `heart_left.x - heart_right.x`, as a fraction of the image width.
    pub cardiac_width: f32,
    /// `thorax_left.x - thorax_right.x`, as a fraction of the image width.
    pub thoracic_width: f32,
    /// Ratios below this are normal (0.5 unless the model manifest says otherwise).
    pub normal_below: f32,
    /// `ratio >= normal_below`.
    pub enlarged: bool,
}

/// The CTR with the adult limit 0.5; see [`cardiothoracic_ratio_with`].
pub fn cardiothoracic_ratio(landmarks: &[Landmark]) -> Option<Ctr> {
    cardiothoracic_ratio_with(landmarks, CTR_NORMAL_BELOW)
}

/// The CTR from the four width landmarks, `None` when one is missing or the points make no
/// sense (a non-finite coordinate, a side swapped or a width of zero): no ratio is better than
/// a wrong one.
pub fn cardiothoracic_ratio_with(landmarks: &[Landmark], normal_below: f32) -> Option<Ctr> {
    let x = |class: &str| {
        find(landmarks, class)
            .map(|l| l.x)
            .filter(|x| x.is_finite())
    };
    let cardiac_width = x("heart_left")? - x("heart_right")?;
    let thoracic_width = x("thorax_left")? - x("thorax_right")?;
    if cardiac_width <= 0.0 || thoracic_width <= 0.0 {
        return None;
    }
    let ratio = cardiac_width / thoracic_width;
    Some(Ctr {
        ratio,
        cardiac_width,
        thoracic_width,
        normal_below,
        enlarged: ratio >= normal_below,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(hr: f32, hl: f32, tr: f32, tl: f32) -> Vec<Landmark> {
        vec![
            Landmark::new("heart_right", hr, 0.60),
            Landmark::new("heart_left", hl, 0.58),
            Landmark::new("thorax_right", tr, 0.62),
            Landmark::new("thorax_left", tl, 0.60),
            Landmark::new("heart_top", 0.45, 0.40),
        ]
    }

    #[test]
    fn ratio_of_the_horizontal_widths() {
        let c = cardiothoracic_ratio(&points(0.40, 0.64, 0.20, 0.80)).unwrap();
        assert!((c.cardiac_width - 0.24).abs() < 1e-6);
        assert!((c.thoracic_width - 0.60).abs() < 1e-6);
        assert!((c.ratio - 0.4).abs() < 1e-6);
        assert_eq!(c.normal_below, 0.5);
        assert!(!c.enlarged);
    }

    #[test]
    fn enlarged_at_and_above_the_limit() {
        let half = cardiothoracic_ratio(&points(0.25, 0.75, 0.0, 1.0)).unwrap();
        assert_eq!(half.ratio, 0.5);
        assert!(half.enlarged, "0.5 is not normal");
        let big = cardiothoracic_ratio(&points(0.30, 0.70, 0.20, 0.80)).unwrap();
        assert!((big.ratio - 2.0 / 3.0).abs() < 1e-6);
        assert!(big.enlarged);
        let strict = cardiothoracic_ratio_with(&points(0.40, 0.64, 0.20, 0.80), 0.35).unwrap();
        assert!(strict.enlarged);
    }

    #[test]
    fn order_of_the_landmarks_does_not_matter() {
        let mut p = points(0.40, 0.64, 0.20, 0.80);
        p.reverse();
        assert!((cardiothoracic_ratio(&p).unwrap().ratio - 0.4).abs() < 1e-6);
    }

    #[test]
    fn missing_or_nonsensical_points_give_none() {
        let mut p = points(0.40, 0.64, 0.20, 0.80);
        p.retain(|l| l.class != "thorax_left");
        assert!(cardiothoracic_ratio(&p).is_none());
        assert!(cardiothoracic_ratio(&points(0.64, 0.40, 0.20, 0.80)).is_none());
        assert!(cardiothoracic_ratio(&points(0.40, 0.64, 0.50, 0.50)).is_none());
        assert!(cardiothoracic_ratio(&points(f32::NAN, 0.64, 0.20, 0.80)).is_none());
        assert!(cardiothoracic_ratio(&[]).is_none());
    }
}
