//! The DICOM Segmentation of one image's lung fields: BINARY, one frame per lung, at the
//! source image's geometry, so any viewer can lay it over the radiograph it came from.
//!
//! Segments follow PS3.16: category (91723000, SCT, "Anatomical Structure") of CID 7150, type
//! (39607008, SCT, "Lung") of CID 7151 with the laterality as the type modifier (CID 244:
//! (24028007, SCT, "Right"), (7771000, SCT, "Left")); the pre-coordinated "Right lung
//! structure" is not in CID 7151. The frames are [`LabelMask::resample`] at the source's Rows
//! and Columns, bit-packed without padding between frames (PS3.5 8.1.1).
//!
//! A projection radiograph has no Frame of Reference, so the SEG has none either, and with it
//! no Plane Position/Orientation or Pixel Measures; each frame references the source image
//! through the Derivation Image functional group instead.
//!
//! [`LabelMask::resample`]: crate::measurement::lungs::LabelMask::resample

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::sr::{Built, DeviceInfo};
use super::{
    derived_uid, result_key, seq_el, str_el, Code, ReportError, SEGMENTATION, SEG_SERIES_NUMBER,
};
use crate::measurement::lungs::{LungReport, Side};
use crate::result::{ImageEntry, SegmentationEntry, StudyResult};

/// SOP Instance and Series UIDs of the SEG of one source image.
pub fn seg_uids(study_uid: &str, result_version: i64, source_sop: &str) -> (String, String) {
    let key = result_key(study_uid, result_version);
    (
        derived_uid(&format!("{key}/seg/{source_sop}")),
        derived_uid(&format!("{key}/seg/series")),
    )
}

/// One segment: its number in the SEG, the lung and the label value in the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub number: u16,
    pub side: Side,
    pub label: u8,
}

impl Segment {
    pub fn label_text(&self) -> &'static str {
        match self.side {
            Side::Right => "Right lung",
            Side::Left => "Left lung",
        }
    }

    pub fn laterality(&self) -> Code {
        match self.side {
            Side::Right => Code::new("24028007", "SCT", "Right"),
            Side::Left => Code::new("7771000", "SCT", "Left"),
        }
    }
}

/// The segments of a report: each lung it found, numbered from 1 (right before left).
pub fn segments(report: &LungReport) -> Vec<Segment> {
    let mut out = Vec::new();
    for (present, side, label) in [
        (report.right.is_some(), Side::Right, 1u8),
        (report.left.is_some(), Side::Left, 2u8),
    ] {
        if present {
            out.push(Segment {
                number: out.len() as u16 + 1,
                side,
                label,
            });
        }
    }
    out
}

/// The lung fields of `entry` that get a SEG: an analysed segmentation with at least one
/// lung, and its segments.
pub fn lungs_of(entry: &ImageEntry) -> Option<(&SegmentationEntry, &LungReport, Vec<Segment>)> {
    let seg = entry
        .segmentation
        .as_ref()
        .filter(|s| s.status == "analysed")?;
    let report = seg.lungs.as_ref()?;
    let segs = segments(report);
    (!segs.is_empty()).then_some((seg, report, segs))
}

/// Codes of the segments (checked against pydicom's dictionary by the e2e test).
pub mod codes {
    use super::Code;
    pub fn anatomical_structure() -> Code {
        Code::new("91723000", "SCT", "Anatomical Structure")
    }
    pub fn lung() -> Code {
        Code::new("39607008", "SCT", "Lung")
    }
    pub fn artificial_intelligence() -> Code {
        Code::new("123110", "DCM", "Artificial Intelligence")
    }
    pub fn source_for_processing() -> Code {
        Code::new(
            "121322",
            "DCM",
            "Source image for image processing operation",
        )
    }
    pub fn segmentation_derivation() -> Code {
        Code::new("113076", "DCM", "Segmentation")
    }
}

/// The frames of `segments`, one per segment, `cols` x `rows` each, bit-packed (LSB first,
/// frames back to back, the whole padded to an even length).
pub fn pack_frames(labels: &[u8], segments: &[Segment]) -> Vec<u8> {
    let bits = labels.len() * segments.len();
    let mut out = vec![0u8; bits.div_ceil(8)];
    for (f, s) in segments.iter().enumerate() {
        let base = f * labels.len();
        for (i, &l) in labels.iter().enumerate() {
            if l == s.label {
                let bit = base + i;
                out[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// What the SEG takes from its source image's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceGeometry {
    pub rows: u16,
    pub cols: u16,
    /// Patient Orientation (0020,0020): without a Frame of Reference it is what orients the
    /// frames, and they have the source's geometry.
    pub patient_orientation: String,
}

/// Rows, Columns and Patient Orientation of the source image at `path`.
pub fn source_geometry(path: &Path) -> Result<SourceGeometry, ReportError> {
    let obj = crate::dataset::open_file(path, crate::dataset::Part::Header).map_err(|e| {
        ReportError::Source {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    let dim = |t| {
        obj.element_opt(t)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u16>().ok())
            .filter(|v| *v > 0)
    };
    let patient_orientation = obj
        .element_opt(tags::PATIENT_ORIENTATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .unwrap_or_default();
    match (dim(tags::ROWS), dim(tags::COLUMNS)) {
        (Some(rows), Some(cols)) => Ok(SourceGeometry {
            rows,
            cols,
            patient_orientation,
        }),
        _ => Err(ReportError::Source {
            path: path.display().to_string(),
            reason: "Rows/Columns missing".into(),
        }),
    }
}

fn us(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

fn code_seq(tag: dicom_core::Tag, c: &Code) -> DataElement<InMemDicomObject> {
    seq_el(tag, vec![c.item()])
}

/// Builds the SEG of the analysed segmentation of `entry`, whose source has the geometry
/// `source`; `None` when the image has no analysed segmentation with a lung.
pub fn build(
    result: &StudyResult,
    entry: &ImageEntry,
    source: &SourceGeometry,
    patient_study: Vec<DataElement<InMemDicomObject>>,
    device: &DeviceInfo,
    instance_number: usize,
) -> Result<Option<Built>, ReportError> {
    let Some(seg) = entry
        .segmentation
        .as_ref()
        .filter(|s| s.status == "analysed")
    else {
        return Ok(None);
    };
    let Some(report) = seg.lungs.as_ref() else {
        return Ok(None);
    };
    let segs = segments(report);
    if segs.is_empty() {
        return Ok(None);
    }
    let (rows, cols) = (source.rows, source.cols);
    let labels = report
        .mask
        .resample(usize::from(cols), usize::from(rows))
        .ok_or_else(|| ReportError::Pixels("the lung label mask does not decode".into()))?;
    let pixels = pack_frames(&labels, &segs);

    let model = result.validation_of(&seg.model_id);
    let (name, version, validation) = (model.name, model.version, model.status);
    let (sop_uid, series_uid) = seg_uids(
        &result.study_instance_uid,
        result.version,
        &entry.sop_instance_uid,
    );
    let key = result_key(&result.study_instance_uid, result.version);
    let (date, time) = super::da_tm(&result.created_at);

    let source_ref = || {
        InMemDicomObject::from_element_iter([
            str_el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &entry.sop_class_uid),
            str_el(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &entry.sop_instance_uid,
            ),
        ])
    };
    let segment_items: Vec<InMemDicomObject> = segs
        .iter()
        .map(|s| {
            InMemDicomObject::from_element_iter([
                us(tags::SEGMENT_NUMBER, s.number),
                str_el(tags::SEGMENT_LABEL, VR::LO, s.label_text()),
                str_el(
                    tags::SEGMENT_DESCRIPTION,
                    VR::ST,
                    &format!(
                        "{} field, model {} ({validation})",
                        s.label_text(),
                        seg.model_id
                    ),
                ),
                code_seq(
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    &codes::anatomical_structure(),
                ),
                seq_el(
                    tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                    vec![{
                        let mut item = codes::lung().item();
                        item.put(code_seq(
                            tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE,
                            &s.laterality(),
                        ));
                        item
                    }],
                ),
                str_el(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
                str_el(tags::SEGMENT_ALGORITHM_NAME, VR::LO, &name),
                seq_el(
                    tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([
                        code_seq(
                            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
                            &codes::artificial_intelligence(),
                        ),
                        str_el(tags::ALGORITHM_NAME, VR::LO, &name),
                        str_el(tags::ALGORITHM_VERSION, VR::LO, &version),
                        str_el(
                            tags::ALGORITHM_PARAMETERS,
                            VR::LT,
                            &format!("model={}; validation={validation}", seg.model_id),
                        ),
                        str_el(tags::ALGORITHM_SOURCE, VR::LO, &device.manufacturer),
                    ])],
                ),
            ])
        })
        .collect();
    let per_frame: Vec<InMemDicomObject> = segs
        .iter()
        .map(|s| {
            InMemDicomObject::from_element_iter([
                seq_el(
                    tags::DERIVATION_IMAGE_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([
                        code_seq(
                            tags::DERIVATION_CODE_SEQUENCE,
                            &codes::segmentation_derivation(),
                        ),
                        seq_el(
                            tags::SOURCE_IMAGE_SEQUENCE,
                            vec![{
                                let mut item = source_ref();
                                item.put(code_seq(
                                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                                    &codes::source_for_processing(),
                                ));
                                item
                            }],
                        ),
                    ])],
                ),
                seq_el(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([DataElement::new(
                        tags::DIMENSION_INDEX_VALUES,
                        VR::UL,
                        PrimitiveValue::from(u32::from(s.number)),
                    )])],
                ),
                seq_el(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([us(
                        tags::REFERENCED_SEGMENT_NUMBER,
                        s.number,
                    )])],
                ),
            ])
        })
        .collect();
    let dimension_uid = derived_uid(&format!("{key}/seg/{}/dimensions", entry.sop_instance_uid));

    let mut obj = super::derived_object(
        patient_study,
        &result.study_instance_uid,
        SEGMENTATION,
        &sop_uid,
        &result.created_at,
    );
    for e in [
        str_el(tags::MODALITY, VR::CS, "SEG"),
        str_el(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
        str_el(tags::SERIES_NUMBER, VR::IS, &SEG_SERIES_NUMBER.to_string()),
        str_el(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            "AI lung segmentation (unverified)",
        ),
        str_el(tags::MANUFACTURER, VR::LO, &device.manufacturer),
        str_el(tags::MANUFACTURER_MODEL_NAME, VR::LO, "radstream"),
        str_el(tags::DEVICE_SERIAL_NUMBER, VR::LO, &device.ae_title),
        str_el(tags::SOFTWARE_VERSIONS, VR::LO, &device.software_version),
        str_el(tags::INSTANCE_NUMBER, VR::IS, &instance_number.to_string()),
        str_el(tags::CONTENT_DATE, VR::DA, &date),
        str_el(tags::CONTENT_TIME, VR::TM, &time),
        str_el(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"),
        str_el(
            tags::PATIENT_ORIENTATION,
            VR::CS,
            &source.patient_orientation,
        ),
        str_el(tags::CONTENT_LABEL, VR::CS, "LUNGS"),
        str_el(
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            &format!("Lung fields by {} ({validation})", seg.model_id),
        ),
        DataElement::new(tags::CONTENT_CREATOR_NAME, VR::PN, PrimitiveValue::Empty),
        str_el(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        str_el(tags::SEGMENTS_OVERLAP, VR::CS, "NO"),
        str_el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        seq_el(tags::SEGMENT_SEQUENCE, segment_items),
        us(tags::SAMPLES_PER_PIXEL, 1),
        str_el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, rows),
        us(tags::COLUMNS, cols),
        us(tags::BITS_ALLOCATED, 1),
        us(tags::BITS_STORED, 1),
        us(tags::HIGH_BIT, 0),
        us(tags::PIXEL_REPRESENTATION, 0),
        str_el(tags::NUMBER_OF_FRAMES, VR::IS, &segs.len().to_string()),
        seq_el(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([str_el(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                &dimension_uid,
            )])],
        ),
        seq_el(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                str_el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dimension_uid),
                DataElement::new(
                    tags::DIMENSION_INDEX_POINTER,
                    VR::AT,
                    PrimitiveValue::Tags(vec![tags::REFERENCED_SEGMENT_NUMBER].into()),
                ),
                DataElement::new(
                    tags::FUNCTIONAL_GROUP_POINTER,
                    VR::AT,
                    PrimitiveValue::Tags(vec![tags::SEGMENT_IDENTIFICATION_SEQUENCE].into()),
                ),
                str_el(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, "Segment"),
            ])],
        ),
        seq_el(
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![InMemDicomObject::new_empty()],
        ),
        seq_el(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
        seq_el(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                str_el(
                    tags::SERIES_INSTANCE_UID,
                    VR::UI,
                    &entry.series_instance_uid,
                ),
                seq_el(tags::REFERENCED_INSTANCE_SEQUENCE, vec![source_ref()]),
            ])],
        ),
        seq_el(
            tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                code_seq(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    &super::sr::codes::processing_equipment(),
                ),
                str_el(tags::MANUFACTURER, VR::LO, &device.manufacturer),
                str_el(tags::MANUFACTURER_MODEL_NAME, VR::LO, &name),
                str_el(tags::SOFTWARE_VERSIONS, VR::LO, &version),
                str_el(
                    tags::CONTRIBUTION_DESCRIPTION,
                    VR::ST,
                    &format!(
                        "Lung segmentation by {} {version} ({validation})",
                        seg.model_id
                    ),
                ),
            ])],
        ),
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(pixels.into())),
    ] {
        obj.put(e);
    }
    Ok(Some(Built {
        sop_class_uid: SEGMENTATION.into(),
        sop_instance_uid: sop_uid,
        series_uid,
        series_number: SEG_SERIES_NUMBER,
        modality: "SEG",
        obj,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::measurement::lungs::{LabelMask, LungFigures};

    /// A 16 x 8 mask: right lung (label 1) in columns 2..6, left (2) in 10..14, rows 1..7.
    pub(crate) fn report() -> LungReport {
        let (w, h) = (16, 8);
        let mut labels = vec![0u8; w * h];
        for y in 1..7 {
            for x in 2..6 {
                labels[y * w + x] = 1;
            }
            for x in 10..14 {
                labels[y * w + x] = 2;
            }
        }
        let figures = |side| LungFigures {
            side,
            area_fraction: 0.1875,
            height_fraction: 0.75,
            area_px: 24.0,
            height_px: 6.0,
            area_mm2: Some(2400.0),
            height_mm: Some(60.0),
            contour: vec![[2.0, 1.0], [6.0, 1.0], [6.0, 7.0], [2.0, 7.0]],
        };
        LungReport {
            plausible: true,
            implausible_reasons: vec![],
            right: Some(figures(Side::Right)),
            left: Some(figures(Side::Left)),
            thoracic_width: Some(0.75),
            ctr: None,
            ctr_points: vec![],
            stray_fraction: 0.0,
            mask: LabelMask::encode(&labels, w, h),
        }
    }

    fn unpack(bytes: &[u8], frames: usize, pixels: usize) -> Vec<Vec<bool>> {
        (0..frames)
            .map(|f| {
                (0..pixels)
                    .map(|i| {
                        let bit = f * pixels + i;
                        bytes[bit / 8] & (1 << (bit % 8)) != 0
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn frames_are_the_resampled_mask_exactly() {
        let r = report();
        let segs = segments(&r);
        assert_eq!(segs.len(), 2);
        assert_eq!((segs[0].number, segs[0].side), (1, Side::Right));
        // An odd geometry, so frames straddle byte boundaries.
        let (cols, rows) = (37, 21);
        let labels = r.mask.resample(cols, rows).unwrap();
        let packed = pack_frames(&labels, &segs);
        assert_eq!(packed.len() % 2, 0);
        assert_eq!(packed.len(), (2 * cols * rows).div_ceil(8) + 1);
        let frames = unpack(&packed, 2, cols * rows);
        for (f, s) in segs.iter().enumerate() {
            let expected: Vec<bool> = labels.iter().map(|&l| l == s.label).collect();
            assert_eq!(frames[f], expected, "segment {}", s.number);
            assert!(expected.iter().any(|&b| b));
        }
    }

    #[test]
    fn the_seg_references_its_source_and_carries_both_lungs() {
        let result = crate::report::tests::sample_result();
        let built = build(
            &result,
            &result.images[0],
            &SourceGeometry {
                rows: 21,
                cols: 37,
                patient_orientation: "A\\F".into(),
            },
            crate::report::source::patient_study(
                &Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("fixtures/dicom/cr_cardiomegaly/001.dcm"),
            )
            .unwrap(),
            &DeviceInfo::new("RADSTREAM"),
            1,
        )
        .unwrap()
        .expect("a SEG");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.dcm");
        crate::report::write_part10(
            built.obj.clone(),
            &built.sop_class_uid,
            &built.sop_instance_uid,
            &path,
        )
        .unwrap();
        let obj = dicom_object::open_file(&path).unwrap();
        let text = |t| obj.element(t).unwrap().to_str().unwrap().trim().to_string();
        assert_eq!(text(tags::MODALITY), "SEG");
        assert_eq!(text(tags::NUMBER_OF_FRAMES), "2");
        assert_eq!(text(tags::STUDY_INSTANCE_UID), "1.2.3");
        let segs = obj
            .element(tags::SEGMENT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        assert_eq!(segs.len(), 2);
        let frames = obj
            .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        let source = frames[1]
            .element(tags::DERIVATION_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0]
            .element(tags::SOURCE_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0]
            .element(tags::REFERENCED_SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string();
        assert_eq!(source, "1.2.3.4.5");
        let bytes = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        let labels = result.images[0]
            .segmentation
            .as_ref()
            .unwrap()
            .lungs
            .as_ref()
            .unwrap()
            .mask
            .resample(37, 21)
            .unwrap();
        let frames = unpack(&bytes, 2, 37 * 21);
        assert_eq!(
            frames[0],
            labels.iter().map(|&l| l == 1).collect::<Vec<_>>()
        );
        assert_eq!(
            frames[1],
            labels.iter().map(|&l| l == 2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_missing_lung_leaves_one_segment_numbered_one() {
        let mut r = report();
        r.right = None;
        let segs = segments(&r);
        assert_eq!(segs.len(), 1);
        assert_eq!(
            (segs[0].number, segs[0].side, segs[0].label),
            (1, Side::Left, 2)
        );
    }
}
