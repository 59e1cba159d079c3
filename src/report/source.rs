//! What the outputs copy from the source study: the Patient and General Study modules of one
//! source instance, and the instances the result looked at.

use std::path::Path;

use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{empty_el, ReportError};

/// One source instance the outputs reference.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceImage {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_uid: String,
    /// Absolute path of the stored file.
    pub path: std::path::PathBuf,
}

/// Patient and General Study attributes: (tag, VR, type 2 = must be present even if empty).
const COPIED: &[(Tag, VR, bool)] = &[
    (tags::SPECIFIC_CHARACTER_SET, VR::CS, false),
    (tags::PATIENT_NAME, VR::PN, true),
    (tags::PATIENT_ID, VR::LO, true),
    (tags::ISSUER_OF_PATIENT_ID, VR::LO, false),
    (tags::PATIENT_BIRTH_DATE, VR::DA, true),
    (tags::PATIENT_SEX, VR::CS, true),
    (tags::PATIENT_AGE, VR::AS, false),
    (tags::STUDY_INSTANCE_UID, VR::UI, false),
    (tags::STUDY_DATE, VR::DA, true),
    (tags::STUDY_TIME, VR::TM, true),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN, true),
    (tags::STUDY_ID, VR::SH, true),
    (tags::ACCESSION_NUMBER, VR::SH, true),
    (tags::STUDY_DESCRIPTION, VR::LO, false),
    (tags::PROCEDURE_CODE_SEQUENCE, VR::SQ, false),
];

/// The copied attributes of the file at `path` (read up to the pixel data only).
pub fn patient_study(path: &Path) -> Result<Vec<DataElement<InMemDicomObject>>, ReportError> {
    let obj = crate::dataset::open_file(path, crate::dataset::Part::Header).map_err(|e| {
        ReportError::Source {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    let mut out = Vec::new();
    for (tag, vr, type2) in COPIED {
        match obj.element_opt(*tag).ok().flatten() {
            Some(e) => out.push(e.clone()),
            None if *type2 => out.push(empty_el(*tag, *vr)),
            None => {}
        }
    }
    Ok(out)
}
