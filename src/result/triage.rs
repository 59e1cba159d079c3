//! Triage: the urgency of a study result, from configurable rules over its findings.

use serde::{Deserialize, Serialize};

use super::model::{StudyMeasurement, Summary};
use crate::domain::Urgency;
use crate::inference::manifest::VALIDATED_REAL;

/// One rule: when `label` is present (or its probability reaches `min_probability`), or when
/// `measurement` is above `above`, the study is at least `urgency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageRule {
    /// Finding key of any classification model, e.g. `pneumothorax`.
    #[serde(default)]
    pub label: Option<String>,
    /// Measurement key instead of a label, e.g. `cardiothoracic_ratio`.
    #[serde(default)]
    pub measurement: Option<String>,
    /// With `measurement`: the rule fires when some image's value is above this.
    #[serde(default)]
    pub above: Option<f64>,
    pub urgency: Urgency,
    /// Probability at or above which the rule fires; unset means "finding present" (the
    /// model's own threshold).
    #[serde(default)]
    pub min_probability: Option<f32>,
}

/// `[triage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TriageSettings {
    /// Checked in order; the most urgent match wins.
    pub rules: Vec<TriageRule>,
    /// Urgency when some finding is present but no rule fired.
    pub any_finding: Urgency,
    /// Urgency when no finding is present and the ensemble is confident.
    pub no_finding: Urgency,
    /// Urgency when no finding is present but the ensemble asks for review, or no image
    /// could be analysed: never lower than this, so uncertain studies are not deprioritised.
    pub uncertain: Urgency,
    /// Let findings and measurements of models not validated on real images (the manifest's
    /// `validation.status` is not `real-images`) raise the urgency above `standard`. Off by
    /// default: a phantom-trained model must not push a real patient up the worklist. Demo
    /// and test configurations turn it on.
    pub trust_unvalidated_models: bool,
}

/// What triage reads of a study result.
#[derive(Debug, Clone, Copy)]
pub struct TriageInput<'a> {
    pub summary: &'a Summary,
    pub measurements: &'a [StudyMeasurement],
    /// The validation status of the model whose findings `summary` holds.
    pub findings_validation: &'a str,
}

impl Default for TriageSettings {
    fn default() -> Self {
        let rule = |label: &str, urgency| TriageRule {
            label: Some(label.into()),
            measurement: None,
            above: None,
            urgency,
            min_probability: None,
        };
        Self {
            rules: vec![
                rule("pneumothorax", Urgency::Critical),
                rule("pleural_effusion", Urgency::Urgent),
                rule("consolidation", Urgency::Urgent),
                rule("tuberculosis", Urgency::Urgent),
            ],
            any_finding: Urgency::Standard,
            no_finding: Urgency::Low,
            uncertain: Urgency::Standard,
            trust_unvalidated_models: false,
        }
    }
}

/// The urgency decided and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Triage {
    pub urgency: Urgency,
    pub reasons: Vec<String>,
}

impl TriageSettings {
    /// Checks each rule against the labels and measurements the installed models produce.
    pub fn validate(
        &self,
        known_labels: &[String],
        known_measurements: &[&str],
    ) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            match (&r.label, &r.measurement) {
                (Some(label), None) => {
                    if !known_labels.contains(label) {
                        return Err(format!(
                            "triage.rules[{i}].label: '{label}' is not a label of an installed model (known: {})",
                            known_labels.join(", ")
                        ));
                    }
                    if r.above.is_some() {
                        return Err(format!(
                            "triage.rules[{i}].above: only for measurement rules"
                        ));
                    }
                }
                (None, Some(m)) => {
                    if !known_measurements.contains(&m.as_str()) {
                        return Err(format!(
                            "triage.rules[{i}].measurement: '{m}' is not measured (known: {})",
                            known_measurements.join(", ")
                        ));
                    }
                    if !r.above.is_some_and(f64::is_finite) {
                        return Err(format!(
                            "triage.rules[{i}].above: a measurement rule needs a finite `above`"
                        ));
                    }
                    if r.min_probability.is_some() {
                        return Err(format!(
                            "triage.rules[{i}].min_probability: only for label rules"
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "triage.rules[{i}]: give either `label` or `measurement`"
                    ))
                }
            }
            if let Some(p) = r.min_probability {
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!(
                        "triage.rules[{i}].min_probability: must be between 0 and 1"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Applies the rules to a study's findings and measurements. A rule fired by a model not
    /// validated on real images raises the urgency to `standard` at most unless
    /// `trust_unvalidated_models`; the reason says so.
    pub fn decide(&self, input: TriageInput<'_>) -> Triage {
        let summary = input.summary;
        if summary.images_analysed == 0 && input.measurements.is_empty() {
            return Triage {
                urgency: self.uncertain,
                reasons: vec!["no image could be analysed".into()],
            };
        }
        let mut urgency = None::<Urgency>;
        let mut reasons = Vec::new();
        let mut fire = |what: String, wanted: Urgency, validation: &str, model: &str| {
            let trusted = self.trust_unvalidated_models || validation == VALIDATED_REAL;
            let got = if trusted {
                wanted
            } else {
                wanted.min(Urgency::Standard)
            };
            if got < wanted {
                reasons.push(format!(
                    "{what} → {wanted}, capped at {got}: {model} is not validated on real images ({validation})"
                ));
            } else {
                reasons.push(format!("{what} → {got}"));
            }
            urgency = urgency.max(Some(got));
        };
        for rule in &self.rules {
            if let Some(label) = &rule.label {
                let Some(l) = summary.labels.iter().find(|l| &l.key == label) else {
                    continue;
                };
                let fired = match rule.min_probability {
                    Some(p) => l.probability >= p,
                    None => l.present,
                };
                if fired {
                    fire(
                        format!("{} (probability {:.2})", l.name, l.probability),
                        rule.urgency,
                        input.findings_validation,
                        "the findings model",
                    );
                }
            } else if let (Some(key), Some(above)) = (&rule.measurement, rule.above) {
                let hit = input
                    .measurements
                    .iter()
                    .filter(|m| &m.key == key && m.value > above)
                    .max_by(|a, b| {
                        // A validated source first, then the larger value.
                        (a.validation_status == VALIDATED_REAL)
                            .cmp(&(b.validation_status == VALIDATED_REAL))
                            .then(a.value.total_cmp(&b.value))
                    });
                if let Some(m) = hit {
                    fire(
                        format!(
                            "{key} {:.2} > {above} ({}, {})",
                            m.value, m.model_id, m.method
                        ),
                        rule.urgency,
                        &m.validation_status,
                        &m.model_id,
                    );
                }
            }
        }
        let any_present = summary.labels.iter().any(|l| l.present);
        let base = if any_present {
            self.any_finding
        } else if summary.should_review {
            self.uncertain
        } else {
            self.no_finding
        };
        if urgency.is_none() {
            reasons.push(if any_present {
                "findings present, no triage rule matched".to_string()
            } else if summary.should_review {
                "no finding present, but the ensemble is uncertain".to_string()
            } else {
                "no finding present".to_string()
            });
        }
        Triage {
            urgency: urgency.map_or(base, |u| u.max(base)),
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::model::{Coding, LabelSummary};

    fn summary_with(key: &str, present: bool) -> Summary {
        Summary {
            images_total: 1,
            images_analysed: 1,
            images_rejected: 0,
            images_not_applicable: 0,
            images_failed: 0,
            findings_present: if present { vec![key.into()] } else { vec![] },
            labels: vec![LabelSummary {
                key: key.into(),
                name: key.into(),
                code: Coding {
                    system: "http://snomed.info/sct".into(),
                    code: "1".into(),
                    display: key.into(),
                },
                present,
                probability: if present { 0.9 } else { 0.1 },
                images_positive: usize::from(present),
            }],
            confidence: Some("optimal".into()),
            should_review: false,
            max_uncertainty: None,
        }
    }

    fn ctr(value: f64, validation: &str) -> StudyMeasurement {
        StudyMeasurement {
            key: "cardiothoracic_ratio".into(),
            value,
            unit: "{ratio}".into(),
            model_id: "lung-seg".into(),
            method: "lung-borders".into(),
            sop_instance_uid: "1.2".into(),
            validation_status: validation.into(),
        }
    }

    #[test]
    fn findings_of_a_model_not_validated_on_real_images_are_capped_at_standard() {
        let t = TriageSettings::default();
        let s = summary_with("pneumothorax", true);
        let input = |v| TriageInput {
            summary: &s,
            measurements: &[],
            findings_validation: v,
        };
        let capped = t.decide(input("synthetic-only"));
        assert_eq!(capped.urgency, Urgency::Standard);
        assert!(
            capped.reasons[0].contains("capped at standard")
                && capped.reasons[0].contains("synthetic-only"),
            "{:?}",
            capped.reasons
        );
        assert_eq!(t.decide(input("real-images")).urgency, Urgency::Critical);
        let trusting = TriageSettings {
            trust_unvalidated_models: true,
            ..TriageSettings::default()
        };
        assert_eq!(
            trusting.decide(input("synthetic-only")).urgency,
            Urgency::Critical
        );
    }

    #[test]
    fn a_measurement_rule_fires_above_its_limit() {
        let t = TriageSettings {
            rules: vec![TriageRule {
                label: None,
                measurement: Some("cardiothoracic_ratio".into()),
                above: Some(0.6),
                urgency: Urgency::Urgent,
                min_probability: None,
            }],
            ..TriageSettings::default()
        };
        assert!(t.validate(&[], &["cardiothoracic_ratio"]).is_ok());
        let s = summary_with("cardiomegaly", false);
        let decide = |m: &[StudyMeasurement]| {
            t.decide(TriageInput {
                summary: &s,
                measurements: m,
                findings_validation: "real-images",
            })
        };
        assert_eq!(decide(&[ctr(0.55, "real-images")]).urgency, Urgency::Low);
        let fired = decide(&[ctr(0.65, "real-images")]);
        assert_eq!(fired.urgency, Urgency::Urgent, "{:?}", fired.reasons);
        assert!(fired.reasons[0].contains("cardiothoracic_ratio 0.65"));
        assert_eq!(
            decide(&[ctr(0.65, "synthetic-only")]).urgency,
            Urgency::Standard
        );
    }

    #[test]
    fn rules_name_a_label_or_a_measurement_that_exists() {
        let rule = |label: Option<&str>, measurement: Option<&str>, above| TriageSettings {
            rules: vec![TriageRule {
                label: label.map(str::to_string),
                measurement: measurement.map(str::to_string),
                above,
                urgency: Urgency::Urgent,
                min_probability: None,
            }],
            ..TriageSettings::default()
        };
        let labels = ["pneumothorax".to_string()];
        let known = ["cardiothoracic_ratio"];
        assert!(rule(Some("pneumothorax"), None, None)
            .validate(&labels, &known)
            .is_ok());
        assert!(rule(Some("nodule"), None, None)
            .validate(&labels, &known)
            .is_err());
        assert!(rule(None, Some("ctr"), Some(0.6))
            .validate(&labels, &known)
            .is_err());
        assert!(rule(None, Some("cardiothoracic_ratio"), None)
            .validate(&labels, &known)
            .is_err());
        assert!(rule(
            Some("pneumothorax"),
            Some("cardiothoracic_ratio"),
            Some(0.6)
        )
        .validate(&labels, &known)
        .is_err());
        assert!(rule(None, None, None).validate(&labels, &known).is_err());
    }
}
