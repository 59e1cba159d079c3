//! DICOM outputs of a result, written back into the study as new series:
//!
//! - [`sr`]: a Comprehensive 3D SR per IHE AI Results (TID 1500, one measurement group per
//!   finding and image);
//! - [`overlay`]: a Secondary Capture of the source image with the findings, urgency,
//!   confidence tier, disclaimer, lung contours and CTR line burnt in, and each model's
//!   validation status;
//! - [`seg`]: a DICOM Segmentation of the lung fields per image a segmentation model
//!   analysed (the SR's lung measurements reference its segments);
//! - [`source`]: the patient/study attributes copied from a source instance;
//! - [`generate`]: the worker that builds them after a result is stored, indexes them and
//!   fills the export outbox in the same transaction.
//!
//! UIDs are derived from the study, result version and output kind (UUID v5 under `2.25.`),
//! so regenerating or re-sending an output always yields the same SOP Instance UID.

pub mod generate;
pub mod overlay;
pub mod seg;
pub mod source;
pub mod sr;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;

pub use generate::Reporter;

/// Comprehensive 3D SR Storage.
pub const COMPREHENSIVE_3D_SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";
/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// Segmentation Storage.
pub const SEGMENTATION: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// Explicit VR Little Endian: what we write.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Series numbers of our outputs (high, so they sort after the acquired series).
pub const SR_SERIES_NUMBER: i32 = 9901;
pub const OVERLAY_SERIES_NUMBER: i32 = 9902;
pub const SEG_SERIES_NUMBER: i32 = 9903;

/// Why an output could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("source instance {path}: {reason}")]
    Source { path: String, reason: String },
    #[error("decoding the source image: {0}")]
    Pixels(String),
    #[error("writing {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("the result has no analysed image")]
    NothingAnalysed,
}

/// Namespace of every UID we derive (a fixed random UUID; never change it, or retries
/// would send new instances).
const UID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c1d_54e2_8a0b_4f3e_9d51_0b7e_2c4a_91f3);

/// A UID for `name`: `2.25.` followed by the decimal UUID v5 of the name (PS3.5 B.2).
pub fn derived_uid(name: &str) -> String {
    format!(
        "2.25.{}",
        uuid::Uuid::new_v5(&UID_NAMESPACE, name.as_bytes()).as_u128()
    )
}

/// The identity every output UID of one result version starts from.
pub fn result_key(study_uid: &str, result_version: i64) -> String {
    format!("radstream/{study_uid}/result/{result_version}")
}

/// A coded concept as written into a code sequence item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

impl Code {
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Code {
        Code {
            value: value.into(),
            scheme: scheme.into(),
            meaning: meaning.into(),
        }
    }

    /// One code sequence item.
    pub fn item(&self) -> InMemDicomObject {
        InMemDicomObject::from_element_iter([
            str_el(tags::CODE_VALUE, VR::SH, &self.value),
            str_el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, &self.scheme),
            str_el(tags::CODE_MEANING, VR::LO, &self.meaning),
        ])
    }
}

use dicom_dictionary_std::tags;

pub(crate) fn str_el(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

pub(crate) fn empty_el(tag: Tag, vr: VR) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

pub(crate) fn seq_el(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// DICOM DA and TM of an RFC 3339 time (UTC), falling back to the epoch on a bad string.
pub(crate) fn da_tm(rfc3339: &str) -> (String, String) {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (
        format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day()),
        format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second()),
    )
}

/// Writes `obj` as a Part 10 file, durably: temporary file, fsync, rename, fsync folder.
pub(crate) fn write_part10(
    obj: InMemDicomObject,
    sop_class: &str,
    sop_instance: &str,
    path: &std::path::Path,
) -> Result<u64, ReportError> {
    let err = |reason: String| ReportError::Write {
        path: path.display().to_string(),
        reason,
    };
    let dir = path
        .parent()
        .ok_or_else(|| err("no parent folder".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let file = obj
        .with_meta(
            dicom_object::meta::FileMetaTableBuilder::new()
                .transfer_syntax(EXPLICIT_VR_LE)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop_instance)
                .implementation_class_uid(crate::IMPLEMENTATION_CLASS_UID)
                .implementation_version_name(crate::IMPLEMENTATION_VERSION_NAME),
        )
        .map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("dcm.part");
    file.write_to_file(&tmp).map_err(|e| err(e.to_string()))?;
    let f = std::fs::File::open(&tmp).map_err(|e| err(e.to_string()))?;
    f.sync_all().map_err(|e| err(e.to_string()))?;
    let len = f.metadata().map_err(|e| err(e.to_string()))?.len();
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(len)
}

/// A new object of the source study: the copied patient/study elements (without the
/// procedure code, which belongs to the source's request), the study UID, and the SOP class,
/// instance UID and creation date/time of the derived object.
pub(crate) fn derived_object(
    patient_study: Vec<dicom_core::DataElement<dicom_object::InMemDicomObject>>,
    study_uid: &str,
    sop_class: &str,
    sop_uid: &str,
    created_at: &str,
) -> dicom_object::InMemDicomObject {
    use dicom_core::header::Header;
    use dicom_core::VR;
    use dicom_dictionary_std::tags;
    let (date, time) = da_tm(created_at);
    let mut obj = dicom_object::InMemDicomObject::new_empty();
    for e in patient_study {
        if e.tag() != tags::PROCEDURE_CODE_SEQUENCE {
            obj.put(e);
        }
    }
    for e in [
        str_el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        str_el(tags::SOP_CLASS_UID, VR::UI, sop_class),
        str_el(tags::SOP_INSTANCE_UID, VR::UI, sop_uid),
        str_el(tags::INSTANCE_CREATION_DATE, VR::DA, &date),
        str_el(tags::INSTANCE_CREATION_TIME, VR::TM, &time),
    ] {
        obj.put(e);
    }
    obj
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::result::StudyResult;

    /// A result of one analysed image (`1.2.3.4.5`, 16 x 8 source) with a finding, lung
    /// fields from `lung-seg` (synthetic-only here) and its measurements.
    pub(crate) fn sample_result() -> StudyResult {
        let lungs = serde_json::to_value(seg::tests::report()).unwrap();
        let model = |id: &str, task: &str, validation: &str| {
            serde_json::json!({
                "id": id, "version": "0.1.0", "name": format!("{id} model"), "task": task,
                "not_for_clinical_use": true, "validation_status": validation,
                "trained_on": "synthetic phantoms", "status": "succeeded", "error": null,
                "images_analysed": 1, "elapsed_ms": 5,
            })
        };
        let measurement = |key: &str, value: f64, unit: &str| {
            serde_json::json!({
                "key": key, "value": value, "unit": unit, "model_id": "lung-seg",
                "method": "lung-borders", "sop_instance_uid": "1.2.3.4.5",
                "validation_status": "synthetic-only",
            })
        };
        serde_json::from_value(serde_json::json!({
            "id": 7, "version": 1, "study_instance_uid": "1.2.3", "study_version": 1,
            "job_id": 1, "status": "final",
            "model": { "id": "cxr-demo", "version": "0.1.0", "name": "CXR demo",
                       "provider": "radstream", "not_for_clinical_use": true,
                       "validation_status": "synthetic-only" },
            "models": [
                model("cxr-demo", "multilabel-classification", "synthetic-only"),
                model("lung-seg", "segmentation", "synthetic-only"),
            ],
            "measurements": [
                measurement("cardiothoracic_ratio", 0.46, "{ratio}"),
                measurement("right_lung_area", 2400.0, "mm2"),
                measurement("left_lung_area", 2300.0, "mm2"),
                measurement("right_lung_height", 60.0, "mm"),
                measurement("right_lung_area_fraction", 18.75, "%"),
            ],
            "urgency": "standard",
            "triage": { "urgency": "standard", "reasons": [] },
            "summary": {
                "images_total": 1, "images_analysed": 1, "images_rejected": 0,
                "images_not_applicable": 0, "images_failed": 0,
                "findings_present": ["cardiomegaly"], "labels": [], "confidence": "good",
                "should_review": false, "max_uncertainty": null,
            },
            "images": [{
                "sop_instance_uid": "1.2.3.4.5", "series_instance_uid": "1.2.3.4",
                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1", "status": "analysed",
                "reason": null, "gate_probability": 0.9,
                "findings": [{
                    "key": "cardiomegaly", "name": "Cardiomegaly",
                    "code": { "system": "http://snomed.info/sct", "code": "8186001",
                              "display": "Cardiomegaly" },
                    "presence": true, "confidence": 0.8, "threshold": 0.5,
                    "member_outputs": [0.8], "spread": 0.0,
                }],
                "uncertainty": null, "image": null, "timings": null,
                "segmentation": { "model_id": "lung-seg", "status": "analysed",
                                  "reason": null, "lungs": lungs },
            }],
            "metadata": { "model_version": "0.1.0", "patient_id": "P", "patient_name": "N",
                          "sop_instance_uid": "1.2.3.4.5", "age": "", "sex": "" },
            "timings": { "first_received_at": 0, "completed_at": null, "started_at": 0,
                         "finished_at": 0, "queue_ms": null, "inference_ms": 0,
                         "receipt_to_result_ms": 0 },
            "created_at": "2026-12-06T21:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn derived_uids_are_stable_valid_and_distinct() {
        let a = derived_uid("radstream/1.2.3/result/1/sr");
        assert_eq!(a, derived_uid("radstream/1.2.3/result/1/sr"));
        assert_ne!(a, derived_uid("radstream/1.2.3/result/2/sr"));
        assert!(a.starts_with("2.25."));
        assert!(a.len() <= 64, "{a}");
        assert!(a[5..].chars().all(|c| c.is_ascii_digit()));
        assert!(!a[5..].starts_with('0'));
    }

    #[test]
    fn rfc3339_becomes_da_tm() {
        assert_eq!(
            da_tm("2024-03-05T07:08:09.123Z"),
            ("20240305".into(), "070809".into())
        );
    }
}
