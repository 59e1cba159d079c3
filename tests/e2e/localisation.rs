//! Localisation in every output (issue 18): a real chest radiograph through the real lung
//! segmenter gives a DICOM Segmentation of both lungs, an SR whose lung and CTR measurement
//! groups reference its segments, and an overlay with the contours; each passes dciodvfy, the
//! SEG's frames read back by pydicom equal the node's label mask at the source geometry, the
//! node's DICOMweb serves the SEG, and Orthanc receives all of them under the original study.
//! The FHIR resources of the result (a lung-measurement Observation per side, with its body
//! site and validation note) pass scripts/fhir_check.py.

use std::path::Path;
use std::time::Duration;

use radstream::auth::Scope;
use radstream::export::{Destination, DestinationKind};
use radstream::fhir::codes;
use radstream::report::seg;
use serde_json::{json, Value};

use crate::export::{dciodvfy, files_under};
use crate::helpers::*;
use crate::ingest::wait_port;
use crate::real_images::{lung_model_installed, real};

const SEG_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const SR_CLASS: &str = "1.2.840.10008.5.1.4.1.1.88.34";
const SC_CLASS: &str = "1.2.840.10008.5.1.4.1.1.7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_chest_gets_a_seg_sr_and_overlay_that_reach_orthanc() {
    lung_model_installed();
    let dir = tempfile::tempdir().unwrap();
    let (dicom_port, http_port) = (free_port(), free_port());
    let _orthanc = Orthanc::start(dir.path(), dicom_port, http_port, false);
    wait_port(dicom_port).await;
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.inference.models.clear();
        s.export.poll_ms = 100;
        s.export.timeout_secs = 10;
        s.export.destinations = vec![Destination {
            name: "orthanc".into(),
            kind: DestinationKind::Dicom,
            ae_title: Some("ORTHANC".into()),
            host: Some("127.0.0.1".into()),
            port: Some(dicom_port),
            sending_application: None,
            sending_facility: None,
            receiving_application: None,
            receiving_facility: None,
            version: None,
            calling_ae: None,
            tls_ca: None,
            tls_certificate: None,
            tls_private_key: None,
            url: None,
            authorization: None,
            // Left out: everything a DICOM destination carries, the SEG included.
            outputs: vec![],
            calling_aes: vec![],
            modalities: vec![],
            min_urgency: None,
            max_attempts: Some(20),
            storage_commitment: false,
        }];
    })
    .await;
    let chest = real("gdcm-CR-MONO1-10-chest.dcm");
    storescu(&app, std::slice::from_ref(&chest)).await;
    let source = dicom_header(&chest);
    let study = dicom_text(&source, dicom_dictionary_std::tags::STUDY_INSTANCE_UID);
    let source_sop = dicom_text(&source, dicom_dictionary_std::tags::SOP_INSTANCE_UID);
    app.wait_result(&study, 1).await;
    let result = radstream::result::store::latest(&app.db, &study)
        .await
        .unwrap()
        .expect("result");
    let entry = result
        .images
        .iter()
        .find(|i| i.sop_instance_uid == source_sop)
        .expect("the chest in the result");
    let (_, lungs, segments) = seg::lungs_of(entry).unwrap_or_else(|| {
        panic!(
            "no analysed lung fields: {}",
            serde_json::to_string(&entry.segmentation).unwrap()
        )
    });
    assert_eq!(segments.len(), 2, "both lungs");
    assert!(
        result
            .measurements
            .iter()
            .any(|m| m.key == "right_lung_area_fraction"),
        "{:?}",
        result.measurements
    );

    // Every output delivered once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let (status, body) = app.get_json("/v1/exports?destination=orthanc").await;
        assert_eq!(status, 200, "{body}");
        let rows = body["data"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !rows.is_empty() && rows.iter().all(|r| r["state"] == "sent") {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never delivered: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let kinds: Vec<&str> = rows.iter().filter_map(|r| r["output"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "seg").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"sr") && kinds.contains(&"overlay"),
        "{kinds:?}"
    );

    // dciodvfy on every output; find each kind.
    let derived = files_under(&app.data_dir.join("derived"));
    assert_eq!(derived.len(), rows.len(), "{derived:?}");
    let (mut seg_path, mut sr_path, mut overlay_path) = (None, None, None);
    for p in &derived {
        let (errors, warnings) = dciodvfy(p);
        eprintln!(
            "dciodvfy {}: {} warnings:\n{}",
            p.display(),
            warnings.len(),
            warnings.join("\n")
        );
        assert!(
            errors.is_empty(),
            "dciodvfy errors in {}:\n{}",
            p.display(),
            errors.join("\n")
        );
        let obj = dicom_object::open_file(p).unwrap();
        assert_eq!(
            dicom_text(&obj, dicom_dictionary_std::tags::STUDY_INSTANCE_UID),
            study
        );
        match dicom_text(&obj, dicom_dictionary_std::tags::SOP_CLASS_UID).as_str() {
            SEG_CLASS => seg_path = Some(p.clone()),
            SR_CLASS => sr_path = Some(p.clone()),
            SC_CLASS => overlay_path = Some(p.clone()),
            other => panic!("unexpected output class {other}"),
        }
    }
    let (seg_path, sr_path, overlay_path) = (
        seg_path.expect("a SEG"),
        sr_path.expect("an SR"),
        overlay_path.expect("an overlay"),
    );

    // The SEG's frames, read by pydicom, are the label mask at the source geometry.
    let rows_cols = |t| source.element(t).unwrap().to_int::<usize>().unwrap();
    let (rows, cols) = (
        rows_cols(dicom_dictionary_std::tags::ROWS),
        rows_cols(dicom_dictionary_std::tags::COLUMNS),
    );
    let labels = lungs.mask.resample(cols, rows).unwrap();
    let labels_path = dir.path().join("labels.raw");
    std::fs::write(&labels_path, &labels).unwrap();
    let expected = json!({
        "rows": rows, "cols": cols, "source_sop": source_sop, "study_uid": study,
        "segments": segments.iter().map(|s| json!({
            "number": s.number,
            "label": s.label,
            "laterality": s.laterality().value,
        })).collect::<Vec<_>>(),
    });
    let exp_path = dir.path().join("seg.json");
    std::fs::write(&exp_path, expected.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_seg.py");
    let (ok, out) = run_async(
        python().to_str().unwrap(),
        &[
            script.to_str().unwrap(),
            seg_path.to_str().unwrap(),
            labels_path.to_str().unwrap(),
            exp_path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "check_seg.py: {out}");
    eprintln!("check_seg.py: {out}");

    // The SR: lung groups referencing the SEG's segments; the validation status stated.
    let dump = std::process::Command::new("dsrdump")
        .args(["+Pl", "+Pu"])
        .arg(&sr_path)
        .output()
        .expect("dsrdump (dcmtk)");
    let sr_text = String::from_utf8_lossy(&dump.stdout).to_string();
    assert!(dump.status.success());
    let seg_sop = seg::seg_uids(&study, result.version, &source_sop).0;
    for needle in [
        "Referenced Segment",
        "Right lung (image",
        "Left lung (image",
        "Cardiothoracic ratio",
        "Percent",
        "not validated on real images",
        "validation=",
        seg_sop.as_str(),
    ] {
        assert!(
            sr_text.contains(needle),
            "{needle} not in the SR:\n{sr_text}"
        );
    }

    // The overlay: contours drawn (pure white pixels inside the image, below the band).
    let overlay = dicom_object::open_file(&overlay_path).unwrap();
    let px = overlay
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert!(px.iter().filter(|&&p| p == 255).count() > 1000);

    // DICOMweb serves the SEG series.
    let resp = app
        .client()
        .get(app.url(&format!("/dicomweb/studies/{study}/series?Modality=SEG")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let series: Value = resp.json().await.unwrap();
    assert_eq!(series.as_array().map(Vec::len), Some(1), "{series}");

    // FHIR: each lung measurement with its lung as body site; every code checked.
    let (status, bundle) = app
        .get_json(&format!(
            "/fhir/Observation?derived-from=ImagingStudy/{study}&_count=100"
        ))
        .await;
    assert_eq!(status, 200, "{bundle}");
    let observations = bundle["entry"].as_array().cloned().unwrap_or_default();
    let right = observations
        .iter()
        .map(|e| &e["resource"])
        .find(|o| o["code"]["coding"][0]["code"] == "right_lung_area_fraction")
        .unwrap_or_else(|| panic!("no right lung Observation: {bundle}"));
    assert_eq!(right["bodySite"]["coding"][0]["code"], "3341006");
    assert_eq!(right["valueQuantity"]["code"], "%");
    assert!(right["note"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Validation status:"));
    let codes_file = dir.path().join("codes.json");
    let fixed: Vec<Value> = codes::all()
        .iter()
        .map(|c| json!({ "system": c.system, "code": c.code, "display": c.display }))
        .collect();
    std::fs::write(&codes_file, serde_json::to_string(&fixed).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fhir_check.py");
    let token = app.token(&[Scope::ResultsRead]);
    let (ok, out) = run_async(
        python().to_str().unwrap(),
        &[
            script,
            &app.url("/fhir"),
            &token,
            &study,
            codes_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "fhir_check.py: {out}");

    // Orthanc has the source's study with the SR, SEG and overlay in it.
    let orthanc = format!("http://127.0.0.1:{http_port}");
    let found: Value = reqwest::Client::new()
        .post(format!("{orthanc}/tools/find"))
        .json(&json!({"Level": "Instance", "Query": {"StudyInstanceUID": study}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut classes = Vec::new();
    for id in found.as_array().unwrap() {
        let tags: Value = reqwest::get(format!(
            "{orthanc}/instances/{}/simplified-tags",
            id.as_str().unwrap()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        classes.push(tags["SOPClassUID"].as_str().unwrap().to_string());
    }
    classes.sort();
    let mut want = vec![SC_CLASS.to_string(), SEG_CLASS.into(), SR_CLASS.into()];
    want.sort();
    assert_eq!(classes, want);
}
