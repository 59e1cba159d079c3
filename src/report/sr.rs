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
//!       CONTAINS TEXT     (121106) Comment = the model's validation ("not validated on real
//!                         images" for a synthetic-only model)
//!     CONTAINS CONTAINER  (125007) Measurement Group, one per lung and image     TID 1410
//!       HAS OBS CONTEXT   tracking identifiers; CONTAINS CODE (121071) Finding = Lung
//!       HAS CONCEPT MOD   (363698007) Finding Site = Lung, with (272741003) Laterality
//!       HAS CONCEPT MOD   algorithm, its parameters naming the validation status
//!       CONTAINS IMAGE    (121191) Referenced Segment -> the lung's segment in the SEG
//!       CONTAINS IMAGE    (121233) Source image for segmentation
//!       CONTAINS NUM      (42798000) Area, mm2 / (121207) Height, mm (pixel spacing known),
//!                         (LUNGAREAFRAC, 99RADSTREAM) share of the image, %
//!     CONTAINS CONTAINER  (125007) Measurement Group, one per CTR and image      TID 1501
//!       NUM (CTR, 99RADSTREAM) Cardiothoracic ratio, {ratio}; Finding Site = Heart;
//!       Referenced Segment to both lungs when read from the lung borders
//! ```
//! The classifier gives no localisation, so its findings have no Image Region (SCOORD); the
//! lung fields are in the SEG ([`super::seg`]). No standard code for the cardiothoracic ratio
//! (the width ratio) is in PS3.16 or pydicom's dictionary, so it has a private one.

use dicom_core::header::Header;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::seg::{self, Segment};
use super::source::SourceImage;
use super::SEGMENTATION;
use super::{
    da_tm, derived_uid, result_key, seq_el, str_el, Code, ReportError, COMPREHENSIVE_3D_SR,
    SR_SERIES_NUMBER,
};
use crate::measurement::lungs::Side;
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
    /// Private: PS3.16 has no concept for the cardiothoracic (width) ratio.
    pub fn cardiothoracic_ratio() -> Code {
        c("CTR", "99RADSTREAM", "Cardiothoracic ratio")
    }
    pub fn comment() -> Code {
        c("121106", "DCM", "Comment")
    }
    pub fn finding_site() -> Code {
        c("363698007", "SCT", "Finding Site")
    }
    pub fn laterality() -> Code {
        c("272741003", "SCT", "Laterality")
    }
    pub fn heart() -> Code {
        c("80891009", "SCT", "Heart")
    }
    pub fn area() -> Code {
        c("42798000", "SCT", "Area")
    }
    pub fn height() -> Code {
        c("121207", "DCM", "Height")
    }
    /// Private: a lung's share of the image area, when the pixel spacing is unknown and no
    /// area in mm2 can be given.
    pub fn area_fraction() -> Code {
        c("LUNGAREAFRAC", "99RADSTREAM", "Lung area fraction of image")
    }
    pub fn referenced_segment() -> Code {
        c("121191", "DCM", "Referenced Segment")
    }
    pub fn source_for_segmentation() -> Code {
        c("121233", "DCM", "Source image for segmentation")
    }
    /// The UCUM unit of a measurement (`{ratio}`, `mm2`, `mm`, `%`).
    pub fn unit(ucum: &str) -> Code {
        let meaning = match ucum {
            "{ratio}" => "ratio",
            "mm2" => "square millimeter",
            "mm" => "mm",
            "%" => "Percent",
            other => other,
        };
        c(ucum, "UCUM", meaning)
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
    /// One segment of a SEG: its SOP Instance UID and segment number.
    Segment(String, u16),
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
        Value::Segment(instance, number) => vec![
            str_el(tags::VALUE_TYPE, VR::CS, "IMAGE"),
            seq_el(
                tags::REFERENCED_SOP_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    str_el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, SEGMENTATION),
                    str_el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
                    DataElement::new(
                        tags::REFERENCED_SEGMENT_NUMBER,
                        VR::US,
                        dicom_core::PrimitiveValue::from(*number),
                    ),
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

/// TID 4019 algorithm identification: the model's name and version, the node's manufacturer,
/// and `parameters` (which name the model's validation status).
fn algorithm_items(
    name: &str,
    version: &str,
    device: &DeviceInfo,
    parameters: String,
) -> Vec<Item> {
    vec![
        item(
            CONCEPT_MOD,
            Code::new("111001", "DCM", "Algorithm Name"),
            Value::Text(name.to_string()),
        ),
        item(
            CONCEPT_MOD,
            Code::new("111003", "DCM", "Algorithm Version"),
            Value::Text(version.to_string()),
        ),
        item(
            CONCEPT_MOD,
            Code::new("122405", "DCM", "Algorithm Manufacturer"),
            Value::Text(device.manufacturer.clone()),
        ),
        item(
            CONCEPT_MOD,
            Code::new("111002", "DCM", "Algorithm Parameters"),
            Value::Text(parameters),
        ),
    ]
}

/// [`algorithm_items`] of a measurement's model.
fn measurement_algorithm(
    model: &crate::result::validation::ModelValidation,
    device: &DeviceInfo,
    method: &str,
) -> Vec<Item> {
    algorithm_items(
        &model.name,
        &model.version,
        device,
        format!(
            "model={}; validation={}; method={method}",
            model.id, model.status
        ),
    )
}

/// The measurement groups of one image: one per lung with its area and height (referencing
/// the lung's segment), one for the CTR (referencing both lungs' segments when it was read
/// from the lung borders). `n` numbers the image in tracking identifiers.
fn measurement_groups(
    result: &StudyResult,
    entry: &crate::result::ImageEntry,
    src: &SourceImage,
    n: usize,
    device: &DeviceInfo,
    key: &str,
) -> Vec<Item> {
    let of_image: Vec<_> = result
        .measurements
        .iter()
        .filter(|m| m.sop_instance_uid == entry.sop_instance_uid)
        .collect();
    if of_image.is_empty() {
        return Vec::new();
    }
    let lungs = seg::lungs_of(entry);
    let seg_uid = seg::seg_uids(
        &result.study_instance_uid,
        result.version,
        &entry.sop_instance_uid,
    )
    .0;
    // Segments of the model that measured, when it is the image's segmentation model.
    let segments_of = |model_id: &str| -> Vec<Segment> {
        match &lungs {
            Some((s, _, segs)) if s.model_id == model_id => segs.clone(),
            _ => Vec::new(),
        }
    };
    let tracking = |label: &str, synthetic: bool, id: &str| {
        let text = if synthetic {
            format!("{label} (image {n}, synthetic-only model)")
        } else {
            format!("{label} (image {n})")
        };
        vec![
            item(
                OBS_CONTEXT,
                Code::new("112039", "DCM", "Tracking Identifier"),
                Value::Text(text),
            ),
            item(
                OBS_CONTEXT,
                Code::new("112040", "DCM", "Tracking Unique Identifier"),
                Value::Uid(derived_uid(&format!(
                    "{key}/measurement/{}/{id}",
                    entry.sop_instance_uid
                ))),
            ),
        ]
    };
    let source = || {
        item(
            CONTAINS,
            codes::source_for_segmentation(),
            Value::Image(src.sop_class_uid.clone(), src.sop_instance_uid.clone()),
        )
    };
    let mut out = Vec::new();
    for side in [Side::Right, Side::Left] {
        let prefix = match side {
            Side::Right => "right",
            Side::Left => "left",
        };
        let nums: Vec<_> = [
            (format!("{prefix}_lung_area"), codes::area()),
            (format!("{prefix}_lung_height"), codes::height()),
            (
                format!("{prefix}_lung_area_fraction"),
                codes::area_fraction(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, concept)| of_image.iter().find(|m| m.key == k).map(|m| (*m, concept)))
        .collect();
        let Some((first, _)) = nums.first() else {
            continue;
        };
        let model = result.validation_of(&first.model_id);
        let segs = segments_of(&first.model_id);
        let label = match side {
            Side::Right => "Right lung",
            Side::Left => "Left lung",
        };
        let mut children = tracking(label, model.synthetic_only(), &format!("{prefix}_lung"));
        children.push(item(
            CONTAINS,
            Code::new("121071", "DCM", "Finding"),
            Value::Code(seg::codes::lung()),
        ));
        children.push(Item {
            rel: CONCEPT_MOD,
            name: Some(codes::finding_site()),
            value: Value::Code(seg::codes::lung()),
        });
        children.push(item(
            CONCEPT_MOD,
            codes::laterality(),
            Value::Code(match side {
                Side::Right => Code::new("24028007", "SCT", "Right"),
                Side::Left => Code::new("7771000", "SCT", "Left"),
            }),
        ));
        children.extend(measurement_algorithm(&model, device, &first.method));
        for s in segs.iter().filter(|s| s.side == side) {
            children.push(item(
                CONTAINS,
                codes::referenced_segment(),
                Value::Segment(seg_uid.clone(), s.number),
            ));
        }
        children.push(source());
        for (m, concept) in &nums {
            children.push(item(
                CONTAINS,
                concept.clone(),
                Value::Num(m.value, codes::unit(&m.unit)),
            ));
        }
        children.push(item(CONTAINS, codes::comment(), Value::Text(model.note())));
        out.push(item(
            CONTAINS,
            Code::new("125007", "DCM", "Measurement Group"),
            Value::Container(children, Some("1410")),
        ));
    }
    if let Some(ctr) = of_image.iter().find(|m| m.key == "cardiothoracic_ratio") {
        let model = result.validation_of(&ctr.model_id);
        let mut children = tracking(
            "Cardiothoracic ratio",
            model.synthetic_only(),
            &format!("cardiothoracic_ratio/{}", ctr.model_id),
        );
        children.push(item(
            CONCEPT_MOD,
            codes::finding_site(),
            Value::Code(codes::heart()),
        ));
        children.extend(measurement_algorithm(&model, device, &ctr.method));
        for s in segments_of(&ctr.model_id) {
            children.push(item(
                CONTAINS,
                codes::referenced_segment(),
                Value::Segment(seg_uid.clone(), s.number),
            ));
        }
        children.push(item(
            CONTAINS,
            Code::new("121112", "DCM", "Source of Measurement"),
            Value::Image(src.sop_class_uid.clone(), src.sop_instance_uid.clone()),
        ));
        children.push(item(
            CONTAINS,
            codes::cardiothoracic_ratio(),
            Value::Num(ctr.value, codes::unit(&ctr.unit)),
        ));
        children.push(item(CONTAINS, codes::comment(), Value::Text(model.note())));
        out.push(item(
            CONTAINS,
            Code::new("125007", "DCM", "Measurement Group"),
            Value::Container(children, Some("1501")),
        ));
    }
    out
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

    let classifier = result.validation_of(&result.model.id);
    let mut groups = Vec::new();
    for (n, (entry, src)) in analysed.iter().enumerate() {
        for f in &entry.findings {
            let tracking = if classifier.synthetic_only() {
                format!("{} (image {}, synthetic-only model)", f.name, n + 1)
            } else {
                format!("{} (image {})", f.name, n + 1)
            };
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
                    [
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
                    ]
                    .into_iter()
                    .chain(algorithm_items(
                        &result.model.name,
                        &result.model.version,
                        device,
                        format!(
                            "model={}; validation={}; threshold={:.4}",
                            result.model.id, classifier.status, f.threshold
                        ),
                    ))
                    .chain([
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
                        item(CONTAINS, codes::comment(), Value::Text(classifier.note())),
                    ])
                    .collect(),
                    Some("1501"),
                ),
            ));
        }
    }
    let mut seg_refs = Vec::new();
    for (n, entry) in result.images.iter().enumerate() {
        let Some(src) = images
            .iter()
            .find(|s| s.sop_instance_uid == entry.sop_instance_uid)
        else {
            continue;
        };
        groups.extend(measurement_groups(result, entry, src, n + 1, device, &key));
        if seg::lungs_of(entry).is_some() {
            let (seg_uid, seg_series) = seg::seg_uids(
                &result.study_instance_uid,
                result.version,
                &entry.sop_instance_uid,
            );
            seg_refs.push((seg_series, seg_uid));
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
    for (seg_series, seg_uid) in seg_refs {
        let sop = InMemDicomObject::from_element_iter([
            str_el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, SEGMENTATION),
            str_el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &seg_uid),
        ]);
        match series.iter_mut().find(|(uid, _)| *uid == seg_series) {
            Some((_, v)) => v.push(sop),
            None => series.push((seg_series, vec![sop])),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every content item below `obj`, depth first.
    fn items(obj: &InMemDicomObject, out: &mut Vec<InMemDicomObject>) {
        if let Ok(e) = obj.element(tags::CONTENT_SEQUENCE) {
            for i in e.items().unwrap() {
                out.push(i.clone());
                items(i, out);
            }
        }
    }

    fn meaning(item: &InMemDicomObject) -> String {
        item.element(tags::CONCEPT_NAME_CODE_SEQUENCE)
            .ok()
            .and_then(|e| e.items().map(|i| i[0].clone()))
            .and_then(|c| {
                c.element(tags::CODE_MEANING)
                    .ok()?
                    .to_str()
                    .ok()
                    .map(|s| s.to_string())
            })
            .unwrap_or_default()
    }

    #[test]
    fn measurements_are_grouped_and_reference_their_segments() {
        let result = crate::report::tests::sample_result();
        let source = SourceImage {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(),
            sop_instance_uid: "1.2.3.4.5".into(),
            series_uid: "1.2.3.4".into(),
            path: "unused".into(),
        };
        let built = build(&result, &[source], vec![], &DeviceInfo::new("RADSTREAM")).unwrap();
        let mut all = Vec::new();
        items(&built.obj, &mut all);
        let groups: Vec<_> = all
            .iter()
            .filter(|i| meaning(i) == "Measurement Group")
            .collect();
        // The finding, each lung, the CTR.
        assert_eq!(groups.len(), 4);
        let (seg_uid, _) = seg::seg_uids("1.2.3", 1, "1.2.3.4.5");
        let segment_refs = |g: &InMemDicomObject| {
            let mut v = Vec::new();
            items(g, &mut v);
            v.iter()
                .filter(|i| meaning(i) == "Referenced Segment")
                .map(|i| {
                    let r = i
                        .element(tags::REFERENCED_SOP_SEQUENCE)
                        .unwrap()
                        .items()
                        .unwrap()[0]
                        .clone();
                    let uid = r
                        .element(tags::REFERENCED_SOP_INSTANCE_UID)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string();
                    assert_eq!(uid, seg_uid);
                    r.element(tags::REFERENCED_SEGMENT_NUMBER)
                        .unwrap()
                        .to_int::<u16>()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let texts = |g: &InMemDicomObject| {
            let mut v = Vec::new();
            items(g, &mut v);
            v.iter()
                .filter_map(|i| {
                    i.element(tags::TEXT_VALUE)
                        .ok()?
                        .to_str()
                        .ok()
                        .map(|s| s.to_string())
                })
                .collect::<Vec<_>>()
                .join("|")
        };
        assert_eq!(segment_refs(groups[0]), Vec::<u16>::new());
        assert_eq!(segment_refs(groups[1]), vec![1]);
        assert_eq!(segment_refs(groups[2]), vec![2]);
        assert_eq!(segment_refs(groups[3]), vec![1, 2]);
        for g in &groups {
            let t = texts(g);
            assert!(t.contains("not validated on real images"), "{t}");
            assert!(t.contains("validation=synthetic-only"), "{t}");
        }
        assert!(texts(groups[1]).contains("Right lung (image 1, synthetic-only model)"));
        let nums: Vec<String> = all
            .iter()
            .filter(|i| i.element(tags::MEASURED_VALUE_SEQUENCE).is_ok())
            .map(meaning)
            .collect();
        assert_eq!(
            nums,
            [
                "Probability",
                "Area",
                "Height",
                "Lung area fraction of image",
                "Area",
                "Cardiothoracic ratio"
            ]
        );
        // The SEG is evidence of the SR.
        let evidence = format!(
            "{:?}",
            built
                .obj
                .element(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
                .unwrap()
        );
        assert!(evidence.contains(&seg_uid));
    }
}
