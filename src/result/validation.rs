//! What every output says about how far each model can be trusted: one sentence per model
//! from its validation status and what it was trained on (issue 18, honest labels).

use super::model::StudyResult;
use crate::inference::manifest::{VALIDATED_REAL, VALIDATED_SYNTHETIC};

/// One model's validation, as the outputs state it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelValidation {
    pub id: String,
    pub version: String,
    pub name: String,
    /// `real-images`, `synthetic-only` or `unknown`.
    pub status: String,
    pub trained_on: String,
}

impl ModelValidation {
    pub fn synthetic_only(&self) -> bool {
        self.status == VALIDATED_SYNTHETIC
    }

    /// E.g. `cxr-demo: trained on synthetic phantoms, not validated on real images`.
    pub fn note(&self) -> String {
        self.note_with(self.trained_on.trim())
    }

    /// [`Self::note`] with the training data cut to its first clause, for a caption burnt
    /// into an image.
    pub fn brief_note(&self) -> String {
        let first = self
            .trained_on
            .split([';', '(', '.'])
            .next()
            .unwrap_or_default()
            .trim();
        let first: String = first.chars().take(60).collect();
        self.note_with(first.trim_end_matches(',').trim())
    }

    fn note_with(&self, trained_on: &str) -> String {
        let trained = if trained_on.is_empty() {
            String::new()
        } else {
            format!("trained on {trained_on}, ")
        };
        match self.status.as_str() {
            VALIDATED_SYNTHETIC => format!("{}: {trained}not validated on real images", self.id),
            // `real-images` says the model was trained and checked on real images, not that
            // it was scored or clinically validated (the manifest's `validated_on` says how).
            VALIDATED_REAL => format!(
                "{}: {trained}checked on real images, not clinically validated",
                self.id
            ),
            _ => format!("{}: {trained}validation status unknown", self.id),
        }
    }
}

impl StudyResult {
    /// Every model that ran, in result order (a result from before multi-model results
    /// names only its classification model).
    pub fn validations(&self) -> Vec<ModelValidation> {
        if self.models.is_empty() {
            return vec![ModelValidation {
                id: self.model.id.clone(),
                version: self.model.version.clone(),
                name: self.model.name.clone(),
                status: self.model.validation_status.clone(),
                trained_on: String::new(),
            }];
        }
        self.models
            .iter()
            .map(|m| ModelValidation {
                id: m.id.clone(),
                version: m.version.clone(),
                name: m.name.clone(),
                status: m.validation_status.clone(),
                trained_on: m.trained_on.clone(),
            })
            .collect()
    }

    /// The validation of model `id`; status `unknown` for a model the result does not list.
    pub fn validation_of(&self, id: &str) -> ModelValidation {
        self.validations()
            .into_iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| ModelValidation {
                id: id.to_string(),
                version: "unknown".into(),
                name: id.to_string(),
                status: crate::inference::manifest::VALIDATION_UNKNOWN.into(),
                trained_on: String::new(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_say_what_a_model_was_trained_and_validated_on() {
        let mut m = ModelValidation {
            id: "cxr-demo".into(),
            version: "0.1.0".into(),
            name: "demo".into(),
            status: VALIDATED_SYNTHETIC.into(),
            trained_on: "synthetic phantoms".into(),
        };
        assert!(m.synthetic_only());
        assert_eq!(
            m.note(),
            "cxr-demo: trained on synthetic phantoms, not validated on real images"
        );
        m.trained_on = "procedurally generated phantoms (tools/phantom); no real images".into();
        assert_eq!(
            m.brief_note(),
            "cxr-demo: trained on procedurally generated phantoms, not validated on real images"
        );
        m.status = VALIDATED_REAL.into();
        m.trained_on = "real chest radiographs".into();
        assert_eq!(
            m.note(),
            "cxr-demo: trained on real chest radiographs, checked on real images, not clinically validated"
        );
        m.status = "unknown".into();
        m.trained_on.clear();
        assert_eq!(m.note(), "cxr-demo: validation status unknown");
    }
}
