//! One image through the landmark ensemble, in RadAnalyzer's terms.
//!
//! Result codes (the document's, with their confidence meaning kept):
//!
//! | code | when |
//! |---|---|
//! | 1 / 2 / 3 | a CTR was measured; the ensemble spread's tier is optimal / good / review |
//! | 4 | never: VLAS has no chest analogue, so "VHS without VLAS" would be every answer |
//! | 5 | landmarks predicted but no CTR (a width pair missing, swapped or zero) |
//! | 6 | rejected by the gate (or the colour check): not a radiograph |
//! | 7 | set by the capture flow: a screen photo whose rectification failed |
//! | 0 | anything else (non-finite points, a CTR without a tier, a header rule excluded it) |
//!
//! `vhs` carries the CTR (3 decimals), `vlas` is always null, `prediction` our landmarks.
//! `axes_perpendicular` (the document's "cardiac axes are perpendicular") is defined for a
//! chest film as: both width pairs (heart and thorax) lie within [`AXES_TOLERANCE_DEG`] of the
//! horizontal in pixel space, i.e. the transverse widths the ratio compares are taken across
//! an upright, unrotated chest.

use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::render::{self, Annotation};
use super::RadAnalyzer;
use super::RadError;
use crate::inference::{ConfidenceTier, InferenceError, LandmarkResult, LandmarkStatus};
use crate::measurement::{Ctr, Landmark};

/// Largest angle from the horizontal of a width pair for `axes_perpendicular`, in degrees.
pub const AXES_TOLERANCE_DEG: f32 = 15.0;

/// The text of a result code.
pub fn description(code: u8) -> &'static str {
    match code {
        1 => "Cardiothoracic ratio (in vhs) predicted successfully with high confidence",
        2 => "Cardiothoracic ratio (in vhs) predicted successfully with moderate confidence",
        3 => "Cardiothoracic ratio (in vhs) predicted but confidence is low — review recommended",
        4 => "Cardiothoracic ratio (in vhs) predicted successfully, VLAS could not be calculated",
        5 => "Cardiothoracic ratio could not be calculated — check image quality.",
        6 => "Image rejected — not a valid radiograph.",
        7 => "PoP image detected but perspective correction failed",
        _ => "Abnormal result — unexpected prediction state",
    }
}

/// A gate rejection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// `not_a_valid_radiograph`.
    pub reason: String,
    /// Confidence that the image is not a radiograph.
    pub classifier_confidence: f32,
}

/// One image's prediction, ready to be written in any of the document's shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictOutcome {
    pub result_code: u8,
    pub model_version: String,
    /// Ensemble landmarks (empty when rejected).
    pub landmarks: Vec<Landmark>,
    pub spread: Option<f32>,
    pub tier: Option<ConfidenceTier>,
    pub ctr: Option<Ctr>,
    pub rejection: Option<Rejection>,
    pub axes_perpendicular: bool,
    /// Set by the capture flow when the image was a rectified screen photo.
    pub pop_detected: bool,
    /// Base64 JPEG of the annotated image (`render: true`, not rejected).
    pub rendered_image: Option<String>,
}

fn round(v: f32, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (f64::from(v) * f).round() / f
}

fn width_is_level(a: Option<&Landmark>, b: Option<&Landmark>, w: f32, h: f32) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    let dx = (b.x - a.x) * w;
    let dy = (b.y - a.y) * h;
    if !(dx.is_finite() && dy.is_finite()) || dx == 0.0 {
        return false;
    }
    dy.abs().atan2(dx.abs()).to_degrees() <= AXES_TOLERANCE_DEG
}

impl PredictOutcome {
    /// From the engine's answer (no rendering).
    pub fn from_result(r: &LandmarkResult) -> PredictOutcome {
        let mut out = PredictOutcome::without_prediction(0, &r.model_version, false);
        match &r.status {
            LandmarkStatus::Rejected {
                reason,
                classifier_confidence,
            } => {
                out.result_code = 6;
                out.rejection = Some(Rejection {
                    reason: reason.clone(),
                    classifier_confidence: *classifier_confidence,
                });
            }
            LandmarkStatus::NotApplicable { .. } => out.result_code = 0,
            LandmarkStatus::Predicted => {
                let finite = r
                    .landmarks
                    .iter()
                    .all(|l| l.x.is_finite() && l.y.is_finite());
                out.landmarks = r.landmarks.clone();
                out.spread = r.spread.filter(|s| s.is_finite());
                out.tier = r.tier;
                out.ctr = r.measurement.clone().filter(|c| c.ratio.is_finite());
                let find = |c: &str| r.landmarks.iter().find(|l| l.class == c);
                let (w, h) = (r.image_width.max(1) as f32, r.image_height.max(1) as f32);
                out.axes_perpendicular =
                    width_is_level(find("heart_right"), find("heart_left"), w, h)
                        && width_is_level(find("thorax_right"), find("thorax_left"), w, h);
                out.result_code = match (
                    finite && !r.landmarks.is_empty(),
                    &out.ctr,
                    out.tier,
                    out.spread,
                ) {
                    (false, _, _, _) => 0,
                    (true, None, _, _) => 5,
                    (true, Some(_), Some(ConfidenceTier::Optimal), Some(_)) => 1,
                    (true, Some(_), Some(ConfidenceTier::Good), Some(_)) => 2,
                    (true, Some(_), Some(ConfidenceTier::Review), Some(_)) => 3,
                    (true, Some(_), _, _) => 0,
                };
                if out.result_code == 0 {
                    out.ctr = None;
                }
            }
        }
        out
    }

    /// An image that reached no prediction, with `code` (7: a screen photo whose perspective
    /// correction failed; the capture flow).
    pub fn without_prediction(code: u8, model_version: &str, pop_detected: bool) -> PredictOutcome {
        PredictOutcome {
            result_code: code,
            model_version: model_version.to_string(),
            landmarks: Vec::new(),
            spread: None,
            tier: None,
            ctr: None,
            rejection: None,
            axes_perpendicular: false,
            pop_detected,
            rendered_image: None,
        }
    }

    /// Codes 1–4: a valid measurement, billable.
    pub fn valid(&self) -> bool {
        (1..=4).contains(&self.result_code)
    }

    pub fn rejected(&self) -> bool {
        self.rejection.is_some()
    }

    /// The CTR of a valid measurement, rounded as answered.
    pub fn vhs(&self) -> Option<f64> {
        self.ctr
            .as_ref()
            .filter(|_| self.valid())
            .map(|c| round(c.ratio, 3))
    }

    pub fn landmarks_detected(&self) -> bool {
        !self.rejected() && !self.landmarks.is_empty()
    }

    /// `optimal` / `good` / `review` (review without a tier).
    pub fn model_confidence(&self) -> &'static str {
        match self.tier {
            Some(ConfidenceTier::Optimal) if !self.rejected() => "optimal",
            Some(ConfidenceTier::Good) if !self.rejected() => "good",
            _ => "review",
        }
    }

    fn spread_json(&self) -> Value {
        self.spread.map_or(Value::Null, |s| json!(round(s, 4)))
    }

    /// The `measurement` block: what the `vhs` field carries.
    pub fn measurement_json(&self) -> Value {
        match (&self.ctr, self.valid()) {
            (Some(c), true) => json!({
                "name": "cardiothoracic_ratio",
                "value": round(c.ratio, 3),
                "cardiac_width": round(c.cardiac_width, 4),
                "thoracic_width": round(c.thoracic_width, 4),
                "normal_below": round(c.normal_below, 3),
                "enlarged": c.enlarged,
                "vhs_field_carries": "cardiothoracic_ratio",
            }),
            _ => Value::Null,
        }
    }

    /// `prediction`: `[{x, y, class}]`.
    pub fn prediction_json(&self) -> Value {
        Value::Array(
            self.landmarks
                .iter()
                .map(|l| json!({ "x": round(l.x, 4), "y": round(l.y, 4), "class": l.class }))
                .collect(),
        )
    }

    fn rejection_fields(&self, out: &mut Map<String, Value>) {
        if let Some(r) = &self.rejection {
            out.insert("rejected".into(), json!(true));
            out.insert("rejection_reason".into(), json!(r.reason));
            out.insert(
                "classifier_confidence".into(),
                json!(round(r.classifier_confidence, 4)),
            );
        }
    }

    /// The single-image body without `historic_*` and `billing` (the caller's). A rejection
    /// has exactly the document's rejection fields; the listed standard fields are absent.
    pub fn single_body(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("vhs".into(), json!(self.vhs()));
        out.insert("vlas".into(), Value::Null);
        out.insert("result_code".into(), json!(self.result_code));
        out.insert(
            "result_description".into(),
            json!(description(self.result_code)),
        );
        out.insert("model_version".into(), json!(self.model_version));
        if self.rejected() {
            self.rejection_fields(&mut out);
            return out;
        }
        out.insert("prediction".into(), self.prediction_json());
        out.insert("model_confidence".into(), json!(self.model_confidence()));
        out.insert("spread".into(), self.spread_json());
        out.insert("pop_detected".into(), json!(self.pop_detected));
        out.insert("measurement".into(), self.measurement_json());
        if let Some(img) = &self.rendered_image {
            out.insert("rendered_image".into(), json!(img));
        }
        out
    }

    /// One `per_photo` entry of a batch (`pop_detected` only on successful frames).
    pub fn per_photo(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("vhs".into(), json!(self.vhs()));
        out.insert("vlas".into(), Value::Null);
        out.insert("spread".into(), self.spread_json());
        out.insert("model_confidence".into(), json!(self.model_confidence()));
        out.insert(
            "landmarks_detected".into(),
            json!(self.landmarks_detected()),
        );
        out.insert("axes_perpendicular".into(), json!(self.axes_perpendicular));
        if self.rejected() {
            self.rejection_fields(&mut out);
        } else {
            out.insert("pop_detected".into(), json!(self.pop_detected));
            out.insert("measurement".into(), self.measurement_json());
        }
        out
    }

    /// A capture session's `frame_result`.
    pub fn frame_result(&self) -> Value {
        json!({
            "vhs": self.vhs(),
            "vlas": Value::Null,
            "spread": self.spread_json(),
            "model_confidence": self.model_confidence(),
            "landmarks_detected": self.landmarks_detected(),
            "pop_detected": self.pop_detected,
        })
    }

    /// The text band of the rendered image.
    fn render_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match (&self.ctr, self.valid()) {
            (Some(c), true) => {
                let verdict = if c.enlarged { "ENLARGED" } else { "NORMAL" };
                lines.push(format!(
                    "CTR {:.2} {verdict} (LIMIT {:.2})",
                    c.ratio, c.normal_below
                ));
                lines.push(format!(
                    "HEART {:.3} / THORAX {:.3} WIDE",
                    c.cardiac_width, c.thoracic_width
                ));
            }
            _ => lines.push("NO CTR - CHECK IMAGE QUALITY".into()),
        }
        lines.push(format!(
            "{} CONFIDENCE, SPREAD {}",
            self.model_confidence().to_uppercase(),
            self.spread.map_or("n/a".into(), |s| format!("{s:.4}"))
        ));
        lines.push("AI RESULT, UNVERIFIED".into());
        lines.push("NOT FOR DIAGNOSTIC USE".into());
        lines
    }
}

/// Why an image gave no outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PredictError {
    /// The bytes are not a decodable image (the problem in words).
    InvalidImage(String),
    /// No landmark model is installed.
    NoModel,
    /// Anything else; logged.
    Internal,
}

impl PredictError {
    /// The answer for `/v3/predict`, naming the image's field.
    pub fn to_error(&self, field: &str) -> RadError {
        match self {
            PredictError::InvalidImage(p) => {
                RadError::field(field, format!("Invalid image data in field {field}: {p}"))
            }
            PredictError::NoModel => RadError::unavailable("Landmark model not loaded"),
            PredictError::Internal => RadError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ),
        }
    }

    /// The stream's `error` event text.
    pub fn event_text(&self) -> &'static str {
        match self {
            PredictError::InvalidImage(_) => "Invalid image data",
            PredictError::NoModel => "Landmark model not loaded",
            PredictError::Internal => "Internal server error",
        }
    }
}

/// Runs the landmark ensemble on a PNG or JPEG and, with `render`, draws the result.
pub async fn predict_one(
    state: &RadAnalyzer,
    image: Arc<Vec<u8>>,
    render: bool,
) -> Result<PredictOutcome, PredictError> {
    let r = state
        .app
        .engine
        .infer_landmarks_bytes(None, &image)
        .await
        .map_err(|e| match e {
            InferenceError::UnknownModel(_) | InferenceError::WrongTask { .. } => {
                PredictError::NoModel
            }
            e if e.is_input_error() => PredictError::InvalidImage(e.to_string()),
            e => {
                tracing::error!(error = %e, "RadAnalyzer: landmark inference");
                PredictError::Internal
            }
        })?;
    let mut out = PredictOutcome::from_result(&r);
    if render && out.landmarks_detected() {
        let lines = out.render_lines();
        let points: Vec<(String, f32, f32)> = out
            .landmarks
            .iter()
            .map(|l| (l.class.clone(), l.x, l.y))
            .collect();
        let drawn = tokio::task::spawn_blocking(move || {
            let ann = Annotation {
                points: points
                    .iter()
                    .map(|(c, x, y)| (c.as_str(), *x, *y))
                    .collect(),
                lines,
            };
            render::render(&image, &ann)
        })
        .await;
        match drawn {
            Ok(Ok(jpeg)) => {
                out.rendered_image = Some(base64::engine::general_purpose::STANDARD.encode(jpeg))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "RadAnalyzer: rendering");
                return Err(PredictError::InvalidImage(e.to_string()));
            }
            Err(e) => {
                tracing::error!(error = %e, "RadAnalyzer: rendering task");
                return Err(PredictError::Internal);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::Timings;
    use crate::measurement::cardiothoracic_ratio;

    fn result(status: LandmarkStatus, spread: f32, tier: ConfidenceTier) -> LandmarkResult {
        let landmarks = vec![
            Landmark::new("heart_right", 0.40, 0.60),
            Landmark::new("heart_left", 0.64, 0.58),
            Landmark::new("thorax_right", 0.20, 0.62),
            Landmark::new("thorax_left", 0.80, 0.60),
            Landmark::new("heart_top", 0.50, 0.45),
            Landmark::new("heart_bottom", 0.55, 0.72),
        ];
        let predicted = status == LandmarkStatus::Predicted;
        LandmarkResult {
            model_id: "ctr-demo".into(),
            model_version: "0.1.0".into(),
            provider: "cpu".into(),
            not_for_clinical_use: true,
            status,
            gate_probability: Some(0.9),
            measurement: if predicted {
                cardiothoracic_ratio(&landmarks)
            } else {
                None
            },
            member_landmarks: Vec::new(),
            landmarks: if predicted { landmarks } else { Vec::new() },
            spread: predicted.then_some(spread),
            tier: predicted.then_some(tier),
            image_width: 512,
            image_height: 512,
            timings_ms: Timings::default(),
        }
    }

    #[test]
    fn codes_follow_the_tier() {
        for (tier, code, conf) in [
            (ConfidenceTier::Optimal, 1, "optimal"),
            (ConfidenceTier::Good, 2, "good"),
            (ConfidenceTier::Review, 3, "review"),
        ] {
            let o = PredictOutcome::from_result(&result(LandmarkStatus::Predicted, 0.003, tier));
            assert_eq!(o.result_code, code);
            assert_eq!(o.model_confidence(), conf);
            assert!(o.valid() && o.axes_perpendicular);
            assert_eq!(o.vhs(), Some(0.4));
        }
    }

    #[test]
    fn the_single_body_has_every_documented_field() {
        let o = PredictOutcome::from_result(&result(
            LandmarkStatus::Predicted,
            0.00321,
            ConfidenceTier::Optimal,
        ));
        let b = Value::Object(o.single_body());
        for f in [
            "vhs",
            "vlas",
            "prediction",
            "result_code",
            "result_description",
            "model_confidence",
            "spread",
            "pop_detected",
            "model_version",
            "measurement",
        ] {
            assert!(b.get(f).is_some(), "{f} missing: {b}");
        }
        assert!(b.get("rendered_image").is_none());
        assert_eq!(b["spread"], json!(0.0032));
        assert_eq!(b["vlas"], Value::Null);
        assert_eq!(
            b["prediction"][0],
            json!({ "x": 0.4, "y": 0.6, "class": "heart_right" })
        );
        assert_eq!(b["measurement"]["name"], "cardiothoracic_ratio");
        assert_eq!(b["measurement"]["value"], json!(0.4));
        assert_eq!(b["measurement"]["enlarged"], false);
        assert_eq!(
            b["measurement"]["vhs_field_carries"],
            "cardiothoracic_ratio"
        );
    }

    #[test]
    fn a_rejection_has_exactly_the_rejection_fields() {
        let o = PredictOutcome::from_result(&result(
            LandmarkStatus::Rejected {
                reason: "not_a_valid_radiograph".into(),
                classifier_confidence: 0.79371,
            },
            0.0,
            ConfidenceTier::Review,
        ));
        assert_eq!(o.result_code, 6);
        assert!(!o.valid());
        let b = Value::Object(o.single_body());
        let mut keys: Vec<&str> = b.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "classifier_confidence",
                "model_version",
                "rejected",
                "rejection_reason",
                "result_code",
                "result_description",
                "vhs",
                "vlas"
            ]
        );
        assert_eq!(b["classifier_confidence"], json!(0.7937));
        assert_eq!(
            b["result_description"],
            "Image rejected — not a valid radiograph."
        );
        let p = Value::Object(o.per_photo());
        assert_eq!(p["landmarks_detected"], false);
        assert_eq!(p["model_confidence"], "review");
        assert!(p.get("pop_detected").is_none());
    }

    #[test]
    fn no_ratio_is_code_5_and_odd_points_code_0() {
        let mut r = result(LandmarkStatus::Predicted, 0.003, ConfidenceTier::Optimal);
        r.measurement = None;
        let o = PredictOutcome::from_result(&r);
        assert_eq!(o.result_code, 5);
        assert_eq!(o.vhs(), None);
        assert!(o.landmarks_detected());
        assert_eq!(Value::Object(o.single_body())["measurement"], Value::Null);

        let mut r = result(LandmarkStatus::Predicted, 0.003, ConfidenceTier::Optimal);
        r.landmarks[0].x = f32::NAN;
        assert_eq!(PredictOutcome::from_result(&r).result_code, 0);

        let r = result(
            LandmarkStatus::NotApplicable {
                reason: "CT".into(),
            },
            0.0,
            ConfidenceTier::Review,
        );
        assert_eq!(PredictOutcome::from_result(&r).result_code, 0);
    }

    #[test]
    fn tilted_widths_are_not_perpendicular() {
        let mut r = result(LandmarkStatus::Predicted, 0.003, ConfidenceTier::Optimal);
        // Thorax pair 30 degrees off the horizontal.
        r.landmarks[3].y = 0.62 - 0.6 * (30f32).to_radians().tan();
        assert!(!PredictOutcome::from_result(&r).axes_perpendicular);
    }
}
