//! Builders of the FHIR R4 resources (pure: data in, FHIR JSON out), and their ids.
//!
//! Ids: DiagnosticReport `rs-<result id>` (one per result version), Observation
//! `rs-<result id>-<finding key>` (one per label of the study summary) and
//! `rs-<result id>-m<n>-<measurement key>` (one per study measurement, `n` its index in the
//! result: one key may come from several models or images), ImagingStudy the Study
//! Instance UID itself (digits and dots, at most 64: a valid FHIR id), Patient `pt-<patient
//! key>`, Device `<model id>-<model version>`.

use serde_json::{json, Map, Value};

use super::codes::{self, Concept};
use super::data::{PatientInfo, StudyInfo};
use super::settings::ReportStatus;
use crate::result::model::{LabelSummary, StudyMeasurement};
use crate::result::StudyResult;

pub fn report_id(result_id: i64) -> String {
    format!("rs-{result_id}")
}

pub fn parse_report_id(id: &str) -> Option<i64> {
    id.strip_prefix("rs-")?.parse().ok().filter(|n| *n > 0)
}

/// A finding key as an id segment (`pleural_effusion` → `pleural-effusion`).
fn key_segment(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

pub fn observation_id(result_id: i64, key: &str) -> String {
    format!("rs-{result_id}-{}", key_segment(key))
}

/// The id segment of the `index`th study measurement.
fn measurement_segment(index: usize, key: &str) -> String {
    format!("m{index}-{}", key_segment(key))
}

/// `(result id, key segment)` of an Observation id.
pub fn parse_observation_id(id: &str) -> Option<(i64, String)> {
    let (n, key) = id.strip_prefix("rs-")?.split_once('-')?;
    Some((n.parse().ok().filter(|n| *n > 0)?, key.to_string()))
}

pub fn patient_id(pk: i64) -> String {
    format!("pt-{pk}")
}

pub fn parse_patient_id(id: &str) -> Option<i64> {
    id.strip_prefix("pt-")?.parse().ok().filter(|n| *n > 0)
}

/// `Patient/pt-3`, `pt-3` or `http://host/fhir/Patient/pt-3` → 3.
pub fn parse_patient_reference(reference: &str) -> Option<i64> {
    let id = match reference.rsplit_once("Patient/") {
        Some((_, id)) => id,
        None if !reference.contains('/') => reference,
        None => return None,
    };
    parse_patient_id(id)
}

pub fn device_id(model_id: &str, version: &str) -> String {
    let raw = format!("{model_id}-{version}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

fn coding(c: Concept) -> Value {
    json!({ "system": c.system, "code": c.code, "display": c.display })
}

fn reference(resource_type: &str, id: &str) -> Value {
    json!({ "reference": format!("{resource_type}/{id}") })
}

/// `YYYYMMDD` (DICOM DA) → `YYYY-MM-DD` when it is a calendar date.
pub fn fhir_date(da: &str) -> Option<String> {
    let d = da.trim();
    let format = time::macros::format_description!("[year][month][day]");
    let date = time::Date::parse(d, format).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// When the exam took place, as FHIR dateTime and as an epoch-ms range for `date` searches:
/// the study date (a whole day, UTC: the header has no zone) when the header has one, else the
/// instant the first instance was received.
pub fn effective(study_date: Option<&str>, first_received_at: i64) -> (String, i64, i64) {
    if let Some(date) = study_date.and_then(fhir_date) {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        if let Ok(d) = time::Date::parse(&date, format) {
            let start = d.midnight().assume_utc().unix_timestamp() * 1000;
            return (date, start, start + 86_400_000);
        }
    }
    (
        crate::clock::format_ms(first_received_at),
        first_received_at,
        first_received_at + 1,
    )
}

/// A DICOM PN as a FHIR HumanName (first component group only).
pub fn human_name(pn: &str) -> Option<Value> {
    let alphabetic = pn.split('=').next().unwrap_or("");
    let parts: Vec<&str> = alphabetic.split('^').map(str::trim).collect();
    let part = |i: usize| parts.get(i).copied().filter(|s| !s.is_empty());
    let mut name = Map::new();
    if let Some(f) = part(0) {
        name.insert("family".into(), json!(f));
    }
    let given: Vec<&str> = [part(1), part(2)].into_iter().flatten().collect();
    if !given.is_empty() {
        name.insert("given".into(), json!(given));
    }
    if let Some(p) = part(3) {
        name.insert("prefix".into(), json!([p]));
    }
    if let Some(s) = part(4) {
        name.insert("suffix".into(), json!([s]));
    }
    if name.is_empty() {
        return None;
    }
    Some(Value::Object(name))
}

pub fn patient(p: &PatientInfo) -> Value {
    let mut r = json!({ "resourceType": "Patient", "id": patient_id(p.pk) });
    if let Some(pid) = p.patient_id.as_deref().filter(|s| !s.trim().is_empty()) {
        r["identifier"] = json!([{ "value": pid.trim() }]);
    }
    if let Some(name) = p.name.as_deref().and_then(human_name) {
        r["name"] = json!([name]);
    }
    if let Some(sex) = p.sex.as_deref() {
        let gender = match sex.trim() {
            "M" => "male",
            "F" => "female",
            "O" => "other",
            _ => "unknown",
        };
        r["gender"] = json!(gender);
    }
    if let Some(d) = p.birth_date.as_deref().and_then(fhir_date) {
        r["birthDate"] = json!(d);
    }
    r
}

fn modality_coding(code: &str) -> Value {
    match codes::modality_display(code) {
        Some(display) => json!({ "system": codes::DCM, "code": code, "display": display }),
        None => json!({ "system": codes::DCM, "code": code }),
    }
}

pub fn study_identifier(uid: &str) -> Value {
    json!({ "system": codes::DICOM_UID, "value": format!("urn:oid:{uid}") })
}

pub fn imaging_study(s: &StudyInfo) -> Value {
    let mut r = json!({
        "resourceType": "ImagingStudy",
        "id": s.uid,
        "identifier": [study_identifier(&s.uid)],
        "status": "available",
        "subject": reference("Patient", &patient_id(s.patient_pk)),
        "numberOfSeries": s.series.len(),
        "numberOfInstances": s.instance_count(),
    });
    let modalities: Vec<Value> = s.modalities().iter().map(|m| modality_coding(m)).collect();
    if !modalities.is_empty() {
        r["modality"] = json!(modalities);
    }
    if let Some(d) = s.study_date.as_deref().and_then(fhir_date) {
        r["started"] = json!(d);
    }
    if let Some(d) = s.description.as_deref().filter(|d| !d.trim().is_empty()) {
        r["description"] = json!(d.trim());
    }
    let series: Vec<Value> = s
        .series
        .iter()
        .map(|se| {
            let mut v = json!({
                "uid": se.uid,
                "modality": modality_coding(se.modality.as_deref().unwrap_or("OT")),
                "numberOfInstances": se.instances.len(),
            });
            if let Some(n) = se.number.filter(|n| *n >= 0) {
                v["number"] = json!(n);
            }
            if let Some(d) = se.description.as_deref().filter(|d| !d.trim().is_empty()) {
                v["description"] = json!(d.trim());
            }
            let instances: Vec<Value> = se
                .instances
                .iter()
                .map(|i| {
                    let mut iv = json!({
                        "uid": i.uid,
                        "sopClass": { "system": codes::URI, "code": format!("urn:oid:{}", i.sop_class_uid) },
                    });
                    if let Some(n) = i.number.filter(|n| *n >= 0) {
                        iv["number"] = json!(n);
                    }
                    iv
                })
                .collect();
            if !instances.is_empty() {
                v["instance"] = json!(instances);
            }
            v
        })
        .collect();
    if !series.is_empty() {
        r["series"] = json!(series);
    }
    r
}

/// The algorithm as a Device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub model_id: String,
    pub version: String,
    pub name: String,
    pub manufacturer: Option<String>,
    pub not_for_clinical_use: bool,
    /// Installed on this node now (`status` active) or only known from past results.
    pub installed: bool,
    /// `real-images`, `synthetic-only` or `unknown`, and what it was trained and validated
    /// on (the manifest's `[validation]`).
    pub validation_status: String,
    pub trained_on: String,
    pub validated_on: String,
}

/// The sentence every output gives for a model's validation.
fn validation_text(status: &str, trained_on: &str, validated_on: &str) -> String {
    let mut text = match status {
        crate::inference::manifest::VALIDATED_SYNTHETIC => {
            "Validation status: synthetic-only (not validated on real images).".to_string()
        }
        crate::inference::manifest::VALIDATED_REAL => {
            "Validation status: real-images (checked on real images, not clinically validated)."
                .to_string()
        }
        other => format!("Validation status: {other}."),
    };
    if !trained_on.trim().is_empty() {
        text.push_str(&format!(
            " Trained on {}.",
            trained_on.trim().trim_end_matches('.')
        ));
    }
    if !validated_on.trim().is_empty() {
        text.push_str(&format!(
            " Validated on {}.",
            validated_on.trim().trim_end_matches('.')
        ));
    }
    text
}

pub fn device(d: &DeviceInfo) -> Value {
    let mut r = json!({
        "resourceType": "Device",
        "id": device_id(&d.model_id, &d.version),
        "identifier": [{ "system": codes::MODEL_SYSTEM, "value": d.model_id }],
        "status": if d.installed { "active" } else { "inactive" },
        "deviceName": [
            { "name": d.name, "type": "manufacturer-name" },
            { "name": d.model_id, "type": "model-name" },
        ],
        "modelNumber": d.model_id,
        "version": [{ "value": d.version }],
    });
    if let Some(m) = d.manufacturer.as_deref().filter(|m| !m.is_empty()) {
        r["manufacturer"] = json!(m);
    }
    let mut notes = vec![
        json!({ "text": validation_text(&d.validation_status, &d.trained_on, &d.validated_on) }),
    ];
    if d.not_for_clinical_use {
        notes.push(json!({ "text": "Not for clinical use: a demonstration model." }));
    }
    r["note"] = json!(notes);
    r
}

/// What a report and its observations are built from.
#[derive(Debug, Clone, Copy)]
pub struct ReportContext<'a> {
    pub result: &'a StudyResult,
    pub study: &'a StudyInfo,
    /// Status of the current version (`[fhir] report_status`).
    pub configured: ReportStatus,
    /// The result id of the version that replaced this one, when superseded.
    pub superseded_by: Option<i64>,
}

impl ReportContext<'_> {
    /// `final`/`preliminary` for the current version; `entered-in-error` for a superseded one
    /// (withdrawn after release: a newer result of the study replaced it).
    pub fn status(&self) -> &'static str {
        if self.superseded_by.is_some() {
            "entered-in-error"
        } else {
            self.configured.as_str()
        }
    }

    fn device_id(&self) -> String {
        device_id(&self.result.model.id, &self.result.model.version)
    }

    fn subject(&self) -> Value {
        reference("Patient", &patient_id(self.study.patient_pk))
    }

    fn effective(&self) -> String {
        effective(
            self.study.study_date.as_deref(),
            self.study.first_received_at,
        )
        .0
    }

    /// Labels that get an Observation: those of the summary (analysed images only).
    pub fn labels(&self) -> &[LabelSummary] {
        &self.result.summary.labels
    }
}

fn round4(p: f32) -> f64 {
    (f64::from(p) * 10_000.0).round() / 10_000.0
}

/// The conclusion text: urgency, findings present with probabilities, review advice.
pub fn conclusion(ctx: &ReportContext) -> String {
    let r = ctx.result;
    let mut text = format!("Urgency: {}. ", r.urgency.as_str());
    if r.summary.images_analysed == 0 {
        text.push_str(&format!(
            "No image could be analysed (result status {}).",
            r.status
        ));
    } else {
        let present: Vec<String> = r
            .summary
            .labels
            .iter()
            .filter(|l| l.present)
            .map(|l| format!("{} (probability {:.2})", l.name, l.probability))
            .collect();
        if present.is_empty() {
            text.push_str("No finding present.");
        } else {
            text.push_str(&format!("Findings present: {}.", present.join(", ")));
        }
        text.push_str(&format!(
            " {} of {} images analysed.",
            r.summary.images_analysed, r.summary.images_total
        ));
    }
    if r.summary.should_review {
        text.push_str(" The ensemble is uncertain: review advised.");
    }
    for m in &r.measurements {
        text.push_str(&format!(
            " {} {:.2} {} ({}, {}).",
            measurement_display(&m.key),
            m.value,
            m.unit,
            m.model_id,
            m.validation_status
        ));
    }
    if r.model.not_for_clinical_use {
        text.push_str(" Produced by a demonstration model, not for clinical use.");
    }
    for m in r.validations().iter().filter(|m| m.synthetic_only()) {
        text.push_str(&format!(" {}.", m.brief_note()));
    }
    if let Some(id) = ctx.superseded_by {
        text.push_str(&format!(
            " Superseded by result version of DiagnosticReport/{}.",
            report_id(id)
        ));
    }
    text
}

pub fn diagnostic_report(ctx: &ReportContext) -> Value {
    let r = ctx.result;
    let study = ctx.study;
    let (modalities, images) = study.acquired();
    let exam_text = match modalities.as_slice() {
        [] => "Imaging study".to_string(),
        m => format!("{} study", m.join("/")),
    };
    let code = match codes::exam(&modalities, images) {
        Some(c) => json!({ "coding": [coding(c)], "text": c.display }),
        None => json!({ "text": exam_text }),
    };
    let results: Vec<Value> = ctx
        .labels()
        .iter()
        .map(|l| reference("Observation", &observation_id(r.id, &l.key)))
        .chain(r.measurements.iter().enumerate().map(|(i, m)| {
            reference(
                "Observation",
                &format!("rs-{}-{}", r.id, measurement_segment(i, &m.key)),
            )
        }))
        .collect();
    let conclusion_codes: Vec<Value> = ctx
        .labels()
        .iter()
        .filter(|l| l.present)
        .map(|l| {
            json!({
                "coding": [{ "system": l.code.system, "code": l.code.code, "display": l.code.display }],
                "text": l.name,
            })
        })
        .collect();
    let mut v = json!({
        "resourceType": "DiagnosticReport",
        "id": report_id(r.id),
        "meta": { "lastUpdated": r.created_at },
        "identifier": [
            study_identifier(&r.study_instance_uid),
            {
                "system": codes::RESULT_VERSION_SYSTEM,
                "value": format!("{}/v{}", r.study_instance_uid, r.version),
            },
        ],
        "status": ctx.status(),
        "category": [{ "coding": [coding(codes::RADIOLOGY)] }],
        "code": code,
        "subject": ctx.subject(),
        "effectiveDateTime": ctx.effective(),
        "issued": r.created_at,
        // R4 allows no Device in `performer`: the algorithm is named here and referenced as
        // a Device from every Observation.
        "performer": [{
            "identifier": { "system": codes::MODEL_SYSTEM, "value": r.model.id },
            "display": format!("{} {} (algorithm)", r.model.name, r.model.version),
        }],
        "imagingStudy": [reference("ImagingStudy", &r.study_instance_uid)],
        "conclusion": conclusion(ctx),
    });
    if !results.is_empty() {
        v["result"] = json!(results);
    }
    if !conclusion_codes.is_empty() {
        v["conclusionCode"] = json!(conclusion_codes);
    }
    v
}

pub fn observation(ctx: &ReportContext, label: &LabelSummary) -> Value {
    let r = ctx.result;
    let value = if label.present {
        codes::PRESENT
    } else {
        codes::ABSENT
    };
    json!({
        "resourceType": "Observation",
        "id": observation_id(r.id, &label.key),
        "status": ctx.status(),
        "code": {
            "coding": [{ "system": label.code.system, "code": label.code.code, "display": label.code.display }],
            "text": label.name,
        },
        "subject": ctx.subject(),
        "effectiveDateTime": ctx.effective(),
        "issued": r.created_at,
        "valueCodeableConcept": { "coding": [coding(value)], "text": value.display },
        "component": [{
            "code": { "coding": [coding(codes::PROBABILITY)] },
            "valueQuantity": {
                "value": round4(label.probability),
                "unit": "1",
                "system": codes::UCUM,
                "code": "1",
            },
        }],
        "note": [{ "text": format!(
            "Highest ensemble probability over {} analysed image(s); present on {}.",
            r.summary.images_analysed, label.images_positive
        ) }],
        "derivedFrom": [reference("ImagingStudy", &r.study_instance_uid)],
        "device": reference("Device", &ctx.device_id()),
    })
}

/// The Observation of the `index`th study measurement: the value in UCUM, the lung as body
/// site, the measuring model as device and its validation status in a note.
pub fn measurement_observation(ctx: &ReportContext, index: usize, m: &StudyMeasurement) -> Value {
    let r = ctx.result;
    let display = measurement_display(&m.key);
    let mut codings = Vec::new();
    if m.key.ends_with("_lung_area") {
        codings.push(coding(codes::AREA));
    } else if m.key.ends_with("_lung_height") {
        codings.push(coding(codes::HEIGHT));
    }
    codings.push(json!({ "system": codes::MEASUREMENT_SYSTEM, "code": m.key, "display": display }));
    let model = r.validation_of(&m.model_id);
    let mut v = json!({
        "resourceType": "Observation",
        "id": format!("rs-{}-{}", r.id, measurement_segment(index, &m.key)),
        "status": ctx.status(),
        "code": { "coding": codings, "text": display },
        "subject": ctx.subject(),
        "effectiveDateTime": ctx.effective(),
        "issued": r.created_at,
        "valueQuantity": {
            "value": (m.value * 10_000.0).round() / 10_000.0,
            "unit": m.unit,
            "system": codes::UCUM,
            "code": m.unit,
        },
        "note": [{ "text": format!(
            "Measured by model {} ({}) on image {}. {}",
            m.model_id,
            m.method,
            m.sop_instance_uid,
            validation_text(&m.validation_status, &model.trained_on, "")
        ) }],
        "derivedFrom": [reference("ImagingStudy", &r.study_instance_uid)],
        "device": reference("Device", &device_id(&m.model_id, &model.version)),
    });
    let site = if m.key.starts_with("right_lung") {
        Some(codes::RIGHT_LUNG)
    } else if m.key.starts_with("left_lung") {
        Some(codes::LEFT_LUNG)
    } else {
        None
    };
    if let Some(site) = site {
        v["bodySite"] = json!({ "coding": [coding(site)], "text": site.display });
    }
    v
}

/// `right_lung_area` → `Right lung area`; the CTR by name.
fn measurement_display(key: &str) -> String {
    if key == "cardiothoracic_ratio" {
        return "Cardiothoracic ratio".into();
    }
    let text = key.replace('_', " ");
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

/// The observation of one key segment (from an Observation id).
pub fn observation_by_segment(ctx: &ReportContext, segment: &str) -> Option<Value> {
    ctx.labels()
        .iter()
        .find(|l| key_segment(&l.key) == segment)
        .map(|l| observation(ctx, l))
        .or_else(|| {
            ctx.result
                .measurements
                .iter()
                .enumerate()
                .find(|(i, m)| measurement_segment(*i, &m.key) == segment)
                .map(|(i, m)| measurement_observation(ctx, i, m))
        })
}

/// The finding Observations, then the measurement Observations.
pub fn observations(ctx: &ReportContext) -> Vec<Value> {
    ctx.labels()
        .iter()
        .map(|l| observation(ctx, l))
        .chain(
            ctx.result
                .measurements
                .iter()
                .enumerate()
                .map(|(i, m)| measurement_observation(ctx, i, m)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_report_id(&report_id(42)), Some(42));
        assert_eq!(parse_report_id("rs-0"), None);
        assert_eq!(parse_report_id("42"), None);
        let id = observation_id(7, "pleural_effusion");
        assert_eq!(id, "rs-7-pleural-effusion");
        assert_eq!(
            parse_observation_id(&id),
            Some((7, "pleural-effusion".into()))
        );
        assert_eq!(parse_patient_reference("Patient/pt-3"), Some(3));
        assert_eq!(
            parse_patient_reference("http://h/fhir/Patient/pt-3"),
            Some(3)
        );
        assert_eq!(parse_patient_reference("pt-3"), Some(3));
        assert_eq!(parse_patient_reference("Device/pt-3"), None);
        assert_eq!(device_id("cxr demo", "0.1.0+x"), "cxr-demo-0.1.0-x");
    }

    #[test]
    fn each_measurement_is_an_observation_with_unit_site_device_and_validation() {
        let result = crate::report::tests::sample_result();
        let study = StudyInfo {
            uid: "1.2.3".into(),
            patient_pk: 1,
            study_date: Some("20240131".into()),
            study_time: None,
            description: None,
            first_received_at: 0,
            series: vec![],
        };
        let ctx = ReportContext {
            result: &result,
            study: &study,
            configured: ReportStatus::Preliminary,
            superseded_by: None,
        };
        let all = observations(&ctx);
        // No summary labels in the sample: the five measurements.
        assert_eq!(all.len(), 5);
        let area = &all[1];
        assert_eq!(area["id"], "rs-7-m1-right-lung-area");
        assert_eq!(area["code"]["coding"][0]["code"], "42798000");
        assert_eq!(area["code"]["coding"][1]["code"], "right_lung_area");
        assert_eq!(
            area["valueQuantity"],
            json!({ "value": 2400.0, "unit": "mm2", "system": codes::UCUM, "code": "mm2" })
        );
        assert_eq!(area["bodySite"]["coding"][0]["code"], "3341006");
        assert_eq!(area["device"]["reference"], "Device/lung-seg-0.1.0");
        let note = area["note"][0]["text"].as_str().unwrap();
        assert!(
            note.contains("synthetic-only (not validated on real images)"),
            "{note}"
        );
        assert!(note.contains("Trained on synthetic phantoms."), "{note}");
        let ctr = &all[0];
        assert_eq!(ctr["valueQuantity"]["code"], "{ratio}");
        assert!(ctr.get("bodySite").is_none());
        assert_eq!(
            observation_by_segment(&ctx, "m1-right-lung-area").unwrap(),
            *area
        );
        let report = diagnostic_report(&ctx);
        let conclusion = report["conclusion"].as_str().unwrap();
        assert!(
            conclusion.contains("Cardiothoracic ratio 0.46 {ratio} (lung-seg, synthetic-only)."),
            "{conclusion}"
        );
        assert!(
            conclusion
                .contains("lung-seg: trained on synthetic phantoms, not validated on real images."),
            "{conclusion}"
        );
        assert_eq!(
            report["result"][4]["reference"],
            "Observation/rs-7-m4-right-lung-area-fraction"
        );
        let d = device(&DeviceInfo {
            model_id: "lung-seg".into(),
            version: "0.1.5".into(),
            name: "seg".into(),
            manufacturer: None,
            not_for_clinical_use: true,
            installed: true,
            validation_status: "synthetic-only".into(),
            trained_on: "phantoms".into(),
            validated_on: String::new(),
        });
        assert_eq!(
            d["note"][0]["text"],
            "Validation status: synthetic-only (not validated on real images). Trained on phantoms."
        );
    }

    #[test]
    fn patient_from_dicom_header() {
        let p = patient(&PatientInfo {
            pk: 3,
            patient_id: Some("PID-1 ".into()),
            name: Some("DOE^JANE^Q^DR^=ドウ^ジェーン".into()),
            birth_date: Some("19800229".into()),
            sex: Some("F".into()),
        });
        assert_eq!(p["id"], "pt-3");
        assert_eq!(p["identifier"][0]["value"], "PID-1");
        assert_eq!(p["name"][0]["family"], "DOE");
        assert_eq!(p["name"][0]["given"], json!(["JANE", "Q"]));
        assert_eq!(p["name"][0]["prefix"], json!(["DR"]));
        assert_eq!(p["gender"], "female");
        assert_eq!(p["birthDate"], "1980-02-29");
        let bare = patient(&PatientInfo {
            pk: 4,
            patient_id: None,
            name: Some("^".into()),
            birth_date: Some("19801301".into()),
            sex: Some("X".into()),
        });
        assert!(bare.get("name").is_none() && bare.get("birthDate").is_none());
        assert_eq!(bare["gender"], "unknown");
    }

    #[test]
    fn effective_is_the_study_day_or_the_receipt() {
        let (v, s, e) = effective(Some("20240131"), 5);
        assert_eq!(v, "2024-01-31");
        assert_eq!(e - s, 86_400_000);
        let (v, s, _) = effective(Some("garbage"), 1_700_000_000_000);
        assert!(v.starts_with("2023-11-14T"), "{v}");
        assert_eq!(s, 1_700_000_000_000);
    }

    #[test]
    fn imaging_study_carries_uids_modalities_and_sop_classes() {
        use super::super::data::{InstanceInfo, SeriesInfo};
        let s = StudyInfo {
            uid: "1.2.3".into(),
            patient_pk: 1,
            study_date: Some("20240131".into()),
            study_time: None,
            description: None,
            first_received_at: 0,
            series: vec![SeriesInfo {
                uid: "1.2.3.4".into(),
                modality: Some("CR".into()),
                number: Some(1),
                description: None,
                instances: vec![InstanceInfo {
                    uid: "1.2.3.4.5".into(),
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(),
                    number: Some(1),
                }],
                derived: false,
            }],
        };
        // Our own SR series in the study does not change what the exam was.
        let mut with_sr = s.clone();
        with_sr.series.push(SeriesInfo {
            uid: "1.2.3.9".into(),
            modality: Some("SR".into()),
            number: Some(9901),
            description: None,
            instances: s.series[0].instances.clone(),
            derived: true,
        });
        assert_eq!(with_sr.acquired(), (vec!["CR".to_string()], 1));
        assert_eq!(with_sr.modalities(), vec!["CR", "SR"]);
        let v = imaging_study(&s);
        assert_eq!(
            v["identifier"][0],
            json!({ "system": "urn:dicom:uid", "value": "urn:oid:1.2.3" })
        );
        assert_eq!(v["modality"][0]["display"], "Computed Radiography");
        assert_eq!(
            v["series"][0]["instance"][0]["sopClass"]["code"],
            "urn:oid:1.2.840.10008.5.1.4.1.1.1"
        );
        assert_eq!(v["numberOfInstances"], 1);
        assert_eq!(v["started"], "2024-01-31");
    }
}
