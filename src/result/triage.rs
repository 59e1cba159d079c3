//! Triage: the urgency of a study result, from configurable rules over its findings.

use serde::{Deserialize, Serialize};

use super::model::Summary;
use crate::domain::Urgency;

/// One rule: when `label` is present (or its probability reaches `min_probability`), the
/// study is at least `urgency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageRule {
    /// Finding key, e.g. `pneumothorax`.
    pub label: String,
    pub urgency: Urgency,
    /// Probability at or above which the rule fires; unset means "finding present" (the
    /// model's own threshold).
    #[serde(default)]
    pub min_probability: Option<f32>,
}

/// `[triage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

impl Default for TriageSettings {
    fn default() -> Self {
        let rule = |label: &str, urgency| TriageRule {
            label: label.into(),
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
    /// Checks rule labels against the labels the model produces.
    pub fn validate(&self, known_labels: &[String]) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            if !known_labels.contains(&r.label) {
                return Err(format!(
                    "triage.rules[{i}].label: '{}' is not a label of the model (known: {})",
                    r.label,
                    known_labels.join(", ")
                ));
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

    /// Applies the rules to a study summary.
    pub fn decide(&self, summary: &Summary) -> Triage {
        if summary.images_analysed == 0 {
            return Triage {
                urgency: self.uncertain,
                reasons: vec!["no image could be analysed".into()],
            };
        }
        let mut urgency = None::<Urgency>;
        let mut reasons = Vec::new();
        for rule in &self.rules {
            let Some(l) = summary.labels.iter().find(|l| l.key == rule.label) else {
                continue;
            };
            let fired = match rule.min_probability {
                Some(p) => l.probability >= p,
                None => l.present,
            };
            if fired {
                reasons.push(format!(
                    "{} (probability {:.2}) → {}",
                    l.name, l.probability, rule.urgency
                ));
                urgency = urgency.max(Some(rule.urgency));
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
