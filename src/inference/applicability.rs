//! Header rules from the manifest's `[applicability]`: is this image one the model was made for?

use serde::Serialize;

use super::manifest::Manifest;
use super::preprocess::HeaderAttrs;

/// Outcome of [`check_applicability`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Applicability {
    /// Every rule passed.
    Applicable,
    /// A rule failed; `reason` says which.
    NotApplicable {
        /// Human-readable reason, e.g. "modality CT is not accepted by cxr-demo (accepts CR, DX)".
        reason: String,
    },
}

/// Checks modality, body part, view position and photometric interpretation against the
/// manifest. Missing attributes compare as `""`; an empty rule list accepts anything.
pub fn check_applicability(manifest: &Manifest, attrs: &HeaderAttrs) -> Applicability {
    let a = &manifest.applicability;
    let rules: [(&str, &Vec<String>, &Option<String>); 4] = [
        ("modality", &a.modalities, &attrs.modality),
        ("body part", &a.body_parts, &attrs.body_part),
        ("view position", &a.view_positions, &attrs.view_position),
        (
            "photometric interpretation",
            &a.photometric,
            &attrs.photometric,
        ),
    ];
    for (what, accepted, value) in rules {
        if accepted.is_empty() {
            continue;
        }
        let v = value.as_deref().unwrap_or("").trim();
        if accepted.iter().any(|x| x.trim().eq_ignore_ascii_case(v)) {
            continue;
        }
        let list: Vec<&str> = accepted
            .iter()
            .map(|s| if s.is_empty() { "(absent)" } else { s.as_str() })
            .collect();
        let shown = if v.is_empty() { "(absent)" } else { v };
        return Applicability::NotApplicable {
            reason: format!(
                "{what} {shown} is not accepted by model {} (accepts {})",
                manifest.id,
                list.join(", ")
            ),
        };
    }
    Applicability::Applicable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::manifest::tests::EXAMPLE;

    fn attrs(modality: &str, body: Option<&str>, view: Option<&str>) -> HeaderAttrs {
        HeaderAttrs {
            modality: Some(modality.into()),
            body_part: body.map(Into::into),
            view_position: view.map(Into::into),
            photometric: Some("MONOCHROME2".into()),
            sop_class_uid: None,
        }
    }

    #[test]
    fn rules() {
        let m = Manifest::parse(EXAMPLE).unwrap();
        assert_eq!(
            check_applicability(&m, &attrs("DX", Some("chest"), Some("PA"))),
            Applicability::Applicable
        );
        assert_eq!(
            check_applicability(&m, &attrs("CR", None, None)),
            Applicability::Applicable
        );
        match check_applicability(&m, &attrs("CT", Some("CHEST"), None)) {
            Applicability::NotApplicable { reason } => assert!(reason.contains("modality CT")),
            other => panic!("{other:?}"),
        }
        match check_applicability(&m, &attrs("DX", Some("HAND"), None)) {
            Applicability::NotApplicable { reason } => assert!(reason.contains("body part HAND")),
            other => panic!("{other:?}"),
        }
        match check_applicability(&m, &attrs("DX", None, Some("LL"))) {
            Applicability::NotApplicable { reason } => assert!(reason.contains("view position")),
            other => panic!("{other:?}"),
        }
    }
}
