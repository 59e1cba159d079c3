//! Code systems and the fixed codes the FHIR resources carry. Each one is checked against a
//! maintained dictionary by the e2e test `fhir::codes_are_verified`: SNOMED CT and DCM
//! concepts against pydicom's `pydicom.sr.codedict` (PS3.16), LOINC codes against the
//! list in `scripts/fhir_check.py`, which names where each was verified (no offline LOINC
//! dictionary is on PyPI). Finding codes come from the model manifest and are checked the
//! same way on the resources served.

/// SNOMED CT.
pub const SNOMED: &str = "http://snomed.info/sct";
/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// DICOM Controlled Terminology (PS3.16).
pub const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// UCUM units.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// DICOM UIDs as identifiers (`urn:oid:<uid>` values).
pub const DICOM_UID: &str = "urn:dicom:uid";
/// SOP Class UIDs as codes (`urn:oid:<uid>`).
pub const URI: &str = "urn:ietf:rfc:3986";
/// Our identifier of a result version: value `<StudyInstanceUID>/v<version>`.
pub const RESULT_VERSION_SYSTEM: &str = "urn:radstream:result-version";
/// Our identifier of a model: value `<model id>`.
pub const MODEL_SYSTEM: &str = "urn:radstream:model";
/// Our measurement keys as codes (`cardiothoracic_ratio`, `right_lung_area`, ...): no
/// standard code exists for the cardiothoracic (width) ratio or the area fractions, and the
/// others carry a standard coding besides.
pub const MEASUREMENT_SYSTEM: &str = "urn:radstream:measurement";

/// A fixed concept: system, code, display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concept {
    pub system: &'static str,
    pub code: &'static str,
    pub display: &'static str,
}

const fn concept(system: &'static str, code: &'static str, display: &'static str) -> Concept {
    Concept {
        system,
        code,
        display,
    }
}

/// DiagnosticReport.category: the LOINC part "Radiology" (as US Core uses it).
pub const RADIOLOGY: Concept = concept(LOINC, "LP29684-5", "Radiology");
/// DiagnosticReport.code for a chest radiograph of one image.
pub const XR_CHEST_SINGLE_VIEW: Concept = concept(LOINC, "36554-4", "XR Chest Single view");
/// DiagnosticReport.code for a chest radiograph of two images.
pub const XR_CHEST_2_VIEWS: Concept = concept(LOINC, "36643-5", "XR Chest 2 Views");
/// Observation.valueCodeableConcept of a finding called present.
pub const PRESENT: Concept = concept(SNOMED, "52101004", "Present");
/// Observation.valueCodeableConcept of a finding called absent.
pub const ABSENT: Concept = concept(SNOMED, "272519000", "Absent");
/// Observation.component.code of the probability.
pub const PROBABILITY: Concept = concept(DCM, "122157", "Probability");

/// Observation.code of a lung area (with the measurement's own coding).
pub const AREA: Concept = concept(SNOMED, "42798000", "Area");
/// Observation.code of a lung height.
pub const HEIGHT: Concept = concept(DCM, "121207", "Height");
/// Observation.bodySite of a right-lung measurement. Pre-coordinated SNOMED body structures:
/// not in PS3.16 (which codes laterality as a modifier), so `scripts/fhir_check.py` lists
/// them as checked elsewhere.
pub const RIGHT_LUNG: Concept = concept(SNOMED, "3341006", "Right lung structure");
/// Observation.bodySite of a left-lung measurement.
pub const LEFT_LUNG: Concept = concept(SNOMED, "44029006", "Left lung structure");

/// Displays of the DICOM modality codes (DCM), for ImagingStudy. A modality not listed is
/// sent as a code without display.
pub const MODALITIES: [Concept; 10] = [
    concept(DCM, "CR", "Computed Radiography"),
    concept(DCM, "DX", "Digital Radiography"),
    concept(DCM, "CT", "Computed Tomography"),
    concept(DCM, "MR", "Magnetic Resonance"),
    concept(DCM, "US", "Ultrasound"),
    concept(DCM, "MG", "Mammography"),
    concept(DCM, "XA", "X-Ray Angiography"),
    concept(DCM, "RF", "Radiofluoroscopy"),
    concept(DCM, "NM", "Nuclear Medicine"),
    concept(DCM, "PT", "Positron emission tomography"),
];

/// Every fixed concept, for the verification test.
pub fn all() -> Vec<Concept> {
    let mut v = vec![
        RADIOLOGY,
        XR_CHEST_SINGLE_VIEW,
        XR_CHEST_2_VIEWS,
        PRESENT,
        ABSENT,
        PROBABILITY,
        AREA,
        HEIGHT,
        RIGHT_LUNG,
        LEFT_LUNG,
    ];
    v.extend(MODALITIES);
    v
}

/// The exam code of a study: chest radiography (CR/DX) of one or two images gets its LOINC
/// code; anything else only a text (`None` here).
pub fn exam(modalities: &[String], images: usize) -> Option<Concept> {
    let radiography = !modalities.is_empty() && modalities.iter().all(|m| m == "CR" || m == "DX");
    match (radiography, images) {
        (true, 1) => Some(XR_CHEST_SINGLE_VIEW),
        (true, 2) => Some(XR_CHEST_2_VIEWS),
        _ => None,
    }
}

/// The DCM display of a modality code, when known.
pub fn modality_display(code: &str) -> Option<&'static str> {
    MODALITIES
        .iter()
        .find(|c| c.code == code)
        .map(|c| c.display)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exam_code_follows_modality_and_view_count() {
        let cr = vec!["CR".to_string()];
        assert_eq!(exam(&cr, 1), Some(XR_CHEST_SINGLE_VIEW));
        assert_eq!(exam(&["DX".into(), "CR".into()], 2), Some(XR_CHEST_2_VIEWS));
        assert_eq!(exam(&cr, 3), None);
        assert_eq!(exam(&["CT".into()], 1), None);
        assert_eq!(exam(&[], 1), None);
    }

    #[test]
    fn every_fixed_code_is_listed_once() {
        let all = all();
        for (i, a) in all.iter().enumerate() {
            assert!(!all[i + 1..].contains(a), "{a:?} twice");
        }
        assert_eq!(modality_display("DX"), Some("Digital Radiography"));
        assert_eq!(modality_display("ZZ"), None);
    }
}
