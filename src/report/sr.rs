//! The IHE AI Results structured report: a Comprehensive 3D SR with TID 1500 at its root.
//!
//! Layout (relationship, value type, concept):
//! ```text
//! CONTAINER (126000, DCM, "Imaging Measurement Report")          TID 1500
//!   HAS CONCEPT MOD CODE  (121049) Language = en-US
//!   HAS OBS CONTEXT CODE  (121005) Observer Type = (121007) Device   TID 1002
//!   HAS OBS CONTEXT UIDREF/TEXT (121012..121015) device UID, name, manufacturer, model
//!   HAS CONCEPT MOD CODE  (121058) Procedure reported
//!   CONTAINS CONTAINER    (111028) Image Library > (126200) Image Library Group > IMAGE...
//!   CONTAINS CONTAINER    (126010) Imaging Measurements
//!     CONTAINS CONTAINER  (125007) Measurement Group, one per finding and image  TID 1501
//!       HAS OBS CONTEXT TEXT/UIDREF (112039)/(112040) tracking identifiers
//!       CONTAINS CODE     (121071) Finding = the finding's SNOMED code
//!       HAS CONCEPT MOD TEXT (111001)/(111003)/(122405)/(111002) algorithm, TID 4019
//!       CONTAINS NUM      (122157) Probability, {ratio}
//!       CONTAINS CODE     (121052) Presence of property = (121053) Present / (121054) Absent
//!       CONTAINS IMAGE    (121112) Source of Measurement
//! ```
//! The demo model gives no localisation, so no Image Region (SCOORD) is written.

use dicom_core::header::Header;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::source::SourceImage;
use super::{
    da_tm, derived_uid, result_key, seq_el, str_el, Code, ReportError, COMPREHENSIVE_3D_SR,
    SR_SERIES_NUMBER,
};
use crate::result::StudyResult;

/// Who we say we are in the report.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Our AE title (device name and serial number).
    pub ae_title: String,
    pub manufacturer: String,
    pub software_version: String,
}

impl DeviceInfo {
    pub fn new(ae_title: &str) -> DeviceInfo {
        DeviceInfo {
            ae_title: ae_title.into(),
            manufacturer: "radstream".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// A built output, ready to write.
#[derive(Debug, Clone)]
pub struct Built {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub series_number: i32,
    pub modality: &'static str,
    pub obj: InMemDicomObject,
}

/// Codes the SR uses besides the findings' own (checked against pydicom's dictionary by
/// `tests/python/check_sr.py`).
pub mod codes {
    use super::Code;
    pub fn c(v: &str, s: &str, m: &str) -> Code {
        Code::new(v, s, m)
    }
    pub fn report() -> Code {
        c("126000", "DCM", "Imaging Measurement Report")
    }
    pub fn language() -> Code {
        c("121049", "DCM", "Language of Content Item and Descendants")
    }
    pub fn english() -> Code {
        c("en-US", "RFC5646", "English (United States)")
    }
    pub fn observer_type() -> Code {
        c("121005", "DCM", "Observer Type")
    }
    pub fn device() -> Code {
        c("121007", "DCM", "Device")
    }
    pub fn procedure_reported() -> Code {
        c("121058", "DCM", "Procedure reported")
    }
    /// Used when the source carries no Procedure Code Sequence: the model reads chest
    /// radiographs only.
    pub fn chest_imaging() -> Code {
        c("413815006", "SCT", "Chest imaging")
    }
    pub fn processing_equipment() -> Code {
        c("109102", "DCM", "Processing Equipment")
    }
}

/// The Coding Scheme Designator for a finding's FHIR-style system URI (SCT unless it is DCM).
fn designator(system: &str) -> &'static str {
    crate::inference::CodeScheme::from_fhir_system(system)
        .unwrap_or_default()
        .designator()
}

enum Value {
    Container(Vec<Item>, Option<&'static str>),
    Code(Code),
    Text(String),
    Uid(String),
    Num(f64, Code),
    Image(String, String),
}

struct Item {
    rel: &'static str,
    name: Option<Code>,
    value: Value,
}

fn item(rel: &'static str, name: Code, value: Value) -> Item {
    Item {
        rel,
        name: Some(name),
        value,
    }
}

const CONTAINS: &str = "CONTAINS";
const OBS_CONTEXT: &str = "HAS OBS CONTEXT";
const CONCEPT_MOD: &str = "HAS CONCEPT MOD";

/// The content item attributes (without the relationship type) of `value`.
fn value_elements(value: &Value) -> Vec<DataElement<InMemDicomObject>> {
    match value {
        Value::Container(children, template) => {
            let mut v = vec![
                str_el(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
                str_el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
            ];
            if let Some(t) = template {
                v.push(seq_el(
                    tags::CONTENT_TEMPLATE_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([
                        str_el(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
                        str_el(tags::TEMPLATE_IDENTIFIER, VR::CS, t),
                    ])],
                ));
            }
            if !children.is_empty() {
                v.push(seq_el(
                    tags::CONTENT_SEQUENCE,
                    children.iter().map(to_obj).collect(),
                ));
            }
            v
        }
        Value::Code(c) => vec![
            str_el(tags::VALUE_TYPE, VR::CS, "CODE"),
            seq_el(tags::CONCEPT_CODE_SEQUENCE, vec![c.item()]),
        ],
        Value::Text(t) => vec![
            str_el(tags::VALUE_TYPE, VR::CS, "TEXT"),
            str_el(tags::TEXT_VALUE, VR::UT, t),
        ],
        Value::Uid(u) => vec![
            str_el(tags::VALUE_TYPE, VR::CS, "UIDREF"),
            str_el(tags::UID, VR::UI, u),
        ],
        Value::Num(n, unit) => vec![
            str_el(tags::VALUE_TYPE, VR::CS, "NUM"),
            seq_el(
                tags::MEASURED_VALUE_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    seq_el(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![unit.item()]),
                    str_el(tags::NUMERIC_VALUE, VR::DS, &format!("{n:.4}")),
                ])],
            ),
        ],
        Value::Image(class, instance) => vec![
            str_el(tags::VALUE_TYPE, VR::CS, "IMAGE"),
            seq_el(
                tags::REFERENCED_SOP_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    str_el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
                    str_el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
                ])],
            ),
        ],
    }
}

fn to_obj(it: &Item) -> InMemDicomObject {
    let mut obj =
        InMemDicomObject::from_element_iter([str_el(tags::RELATIONSHIP_TYPE, VR::CS, it.rel)]);
    if let Some(n) = &it.name {
        obj.put(seq_el(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![n.item()]));
    }
    for e in value_elements(&it.value) {
        obj.put(e);
    }
    obj
}

/// SOP Instance and Series UIDs of a result's SR.
pub fn sr_uids(study_uid: &str, result_version: i64) -> (String, String) {
    let key = result_key(study_uid, result_version);
    (
        derived_uid(&format!("{key}/sr")),
        derived_uid(&format!("{key}/sr/series")),
    )
}

/// Builds the SR of `result`. `images` are the source instances of the result's images
/// (in result order); `patient_study` the attributes copied from one of them.
pub fn build(
    result: &StudyResult,
    images: &[SourceImage],
    patient_study: Vec<DataElement<InMemDicomObject>>,
    device: &DeviceInfo,
) -> Result<Built, ReportError> {
    let analysed: Vec<_> = result
        .images
        .iter()
        .filter(|i| i.status == "analysed")
        .filter_map(|i| {
            images
                .iter()
                .find(|s| s.sop_instance_uid == i.sop_instance_uid)
                .map(|s| (i, s))
        })
        .collect();
    if analysed.is_empty() {
        return Err(ReportError::NothingAnalysed);
    }
    let (sop_uid, series_uid) = sr_uids(&result.study_instance_uid, result.version);
    let key = result_key(&result.study_instance_uid, result.version);
    let (date, time) = da_tm(&result.created_at);

    let procedure = patient_study
        .iter()
        .find(|e| e.tag() == tags::PROCEDURE_CODE_SEQUENCE)
        .and_then(|e| e.items().and_then(|items| items.first().cloned()))
        .and_then(|first| {
            let get = |t| {
                first
                    .element_opt(t)
                    .ok()
                    .flatten()
                    .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
                    .filter(|s| !s.is_empty())
            };
            Some(Code {
                value: get(tags::CODE_VALUE)?,
                scheme: get(tags::CODING_SCHEME_DESIGNATOR)?,
                meaning: get(tags::CODE_MEANING)?,
            })
        })
        .unwrap_or_else(codes::chest_imaging);

    let library = item(
        CONTAINS,
        Code::new("111028", "DCM", "Image Library"),
        Value::Container(
            vec![item(
                CONTAINS,
                Code::new("126200", "DCM", "Image Library Group"),
                Value::Container(
                    analysed
                        .iter()
                        .map(|(_, s)| Item {
                            rel: CONTAINS,
                            name: None,
                            value: Value::Image(
                                s.sop_class_uid.clone(),
                                s.sop_instance_uid.clone(),
                            ),
                        })
                        .collect(),
                    None,
                ),
            )],
            None,
        ),
    );

    let mut groups = Vec::new();
    for (n, (entry, src)) in analysed.iter().enumerate() {
        for f in &entry.findings {
            let tracking = format!("{} (image {})", f.name, n + 1);
            let tracking_uid =
                derived_uid(&format!("{key}/finding/{}/{}", src.sop_instance_uid, f.key));
            let presence = if f.presence {
                Code::new("121053", "DCM", "Present")
            } else {
                Code::new("121054", "DCM", "Absent")
            };
            groups.push(item(
                CONTAINS,
                Code::new("125007", "DCM", "Measurement Group"),
                Value::Container(
                    vec![
                        item(
                            OBS_CONTEXT,
                            Code::new("112039", "DCM", "Tracking Identifier"),
                            Value::Text(tracking),
                        ),
                        item(
                            OBS_CONTEXT,
                            Code::new("112040", "DCM", "Tracking Unique Identifier"),
                            Value::Uid(tracking_uid),
                        ),
                        item(
                            CONTAINS,
                            Code::new("121071", "DCM", "Finding"),
                            Value::Code(Code::new(
                                &f.code.code,
                                designator(&f.code.system),
                                &f.code.display,
                            )),
                        ),
                        item(
                            CONCEPT_MOD,
                            Code::new("111001", "DCM", "Algorithm Name"),
                            Value::Text(result.model.name.clone()),
                        ),
                        item(
                            CONCEPT_MOD,
                            Code::new("111003", "DCM", "Algorithm Version"),
                            Value::Text(result.model.version.clone()),
                        ),
                        item(
                            CONCEPT_MOD,
                            Code::new("122405", "DCM", "Algorithm Manufacturer"),
                            Value::Text(device.manufacturer.clone()),
                        ),
                        item(
                            CONCEPT_MOD,
                            Code::new("111002", "DCM", "Algorithm Parameters"),
                            Value::Text(format!(
                                "model={}; threshold={:.4}",
                                result.model.id, f.threshold
                            )),
                        ),
                        item(
                            CONTAINS,
                            Code::new("122157", "DCM", "Probability"),
                            Value::Num(
                                f64::from(f.confidence),
                                Code::new("{ratio}", "UCUM", "ratio"),
                            ),
                        ),
                        item(
                            CONTAINS,
                            Code::new("121052", "DCM", "Presence of property"),
                            Value::Code(presence),
                        ),
                        item(
                            CONTAINS,
                            Code::new("121112", "DCM", "Source of Measurement"),
                            Value::Image(src.sop_class_uid.clone(), src.sop_instance_uid.clone()),
                        ),
                    ],
                    Some("1501"),
                ),
            ));
        }
    }

    let content = vec![
        item(
            CONCEPT_MOD,
            codes::language(),
            Value::Code(codes::english()),
        ),
        item(
            OBS_CONTEXT,
            codes::observer_type(),
            Value::Code(codes::device()),
        ),
        item(
            OBS_CONTEXT,
            Code::new("121012", "DCM", "Device Observer UID"),
            Value::Uid(derived_uid(&format!(
                "radstream/device/{}",
                device.ae_title
            ))),
        ),
        item(
            OBS_CONTEXT,
            Code::new("121013", "DCM", "Device Observer Name"),
            Value::Text(device.ae_title.clone()),
        ),
        item(
            OBS_CONTEXT,
            Code::new("121014", "DCM", "Device Observer Manufacturer"),
            Value::Text(device.manufacturer.clone()),
        ),
        item(
            OBS_CONTEXT,
            Code::new("121015", "DCM", "Device Observer Model Name"),
            Value::Text(format!("radstream {}", device.software_version)),
        ),
        item(
            CONCEPT_MOD,
            codes::procedure_reported(),
            Value::Code(procedure),
        ),
        library,
        item(
            CONTAINS,
            Code::new("126010", "DCM", "Imaging Measurements"),
            Value::Container(groups, None),
        ),
    ];

    // Evidence: every referenced image, grouped by series.
    let mut series: Vec<(String, Vec<InMemDicomObject>)> = Vec::new();
    for (_, s) in &analysed {
        let sop = InMemDicomObject::from_element_iter([
            str_el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &s.sop_class_uid),
            str_el(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &s.sop_instance_uid,
            ),
        ]);
        match series.iter_mut().find(|(uid, _)| *uid == s.series_uid) {
            Some((_, v)) => v.push(sop),
            None => series.push((s.series_uid.clone(), vec![sop])),
        }
    }
    let evidence = InMemDicomObject::from_element_iter([
        str_el(tags::STUDY_INSTANCE_UID, VR::UI, &result.study_instance_uid),
        seq_el(
            tags::REFERENCED_SERIES_SEQUENCE,
            series
                .into_iter()
                .map(|(uid, sops)| {
                    InMemDicomObject::from_element_iter([
                        str_el(tags::SERIES_INSTANCE_UID, VR::UI, &uid),
                        seq_el(tags::REFERENCED_SOP_SEQUENCE, sops),
                    ])
                })
                .collect(),
        ),
    ]);

    let mut obj = super::derived_object(
        patient_study,
        &result.study_instance_uid,
        COMPREHENSIVE_3D_SR,
        &sop_uid,
        &result.created_at,
    );
    for e in [
        str_el(tags::MODALITY, VR::CS, "SR"),
        str_el(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
        str_el(tags::SERIES_NUMBER, VR::IS, &SR_SERIES_NUMBER.to_string()),
        str_el(tags::SERIES_DESCRIPTION, VR::LO, "AI result (unverified)"),
        seq_el(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]),
        str_el(tags::MANUFACTURER, VR::LO, &device.manufacturer),
        str_el(tags::MANUFACTURER_MODEL_NAME, VR::LO, "radstream"),
        str_el(tags::DEVICE_SERIAL_NUMBER, VR::LO, &device.ae_title),
        str_el(tags::SOFTWARE_VERSIONS, VR::LO, &device.software_version),
        str_el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        str_el(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        str_el(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        str_el(tags::CONTENT_DATE, VR::DA, &date),
        str_el(tags::CONTENT_TIME, VR::TM, &time),
        seq_el(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]),
        seq_el(
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            vec![evidence],
        ),
        seq_el(
            tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                seq_el(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    vec![codes::processing_equipment().item()],
                ),
                str_el(tags::MANUFACTURER, VR::LO, &device.manufacturer),
                str_el(tags::MANUFACTURER_MODEL_NAME, VR::LO, &result.model.name),
                str_el(tags::SOFTWARE_VERSIONS, VR::LO, &result.model.version),
                str_el(
                    tags::CONTRIBUTION_DESCRIPTION,
                    VR::ST,
                    &format!(
                        "AI inference by {} {}",
                        result.model.id, result.model.version
                    ),
                ),
            ])],
        ),
        seq_el(
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![codes::report().item()],
        ),
    ] {
        obj.put(e);
    }
    for e in value_elements(&Value::Container(content, Some("1500"))) {
        obj.put(e);
    }
    Ok(Built {
        sop_class_uid: COMPREHENSIVE_3D_SR.into(),
        sop_instance_uid: sop_uid,
        series_uid,
        series_number: SR_SERIES_NUMBER,
        modality: "SR",
        obj,
    })
}
