//! HL7 v2 ORU^R01 over MLLP to hl7apy's MLLP server (tests/python/hl7_receiver.py), which
//! parses every message with hl7apy's strict v2.5.1 validation: every segment and field the
//! guide names, a superseding version as a correction, and AE / no-ACK retried then
//! dead-lettered.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use radstream::export::DestinationKind;
use serde_json::Value;

use crate::export_http::{destination, exports, wait_sent};
use crate::helpers::*;

fn receiver(mode: &str, out: &Path) -> (Peer, u16) {
    let args = [
        OsStr::new("--mode"),
        OsStr::new(mode),
        OsStr::new("--out"),
        out.as_os_str(),
    ];
    python_peer("hl7_receiver.py", args, "hl7apy")
}

/// The messages the receiver got, oldest first.
fn received(out: &Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

/// The fields of the segments named `name` (field n at index n; MSH shifted so MSH-n is at n).
fn segments(msg: &Value, name: &str) -> Vec<(String, Vec<String>)> {
    msg["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let group = s[0].as_str().unwrap().to_string();
            let er7 = s[1].as_str().unwrap();
            let mut f: Vec<String> = er7.split('|').map(String::from).collect();
            if f[0] != name {
                return None;
            }
            if name == "MSH" {
                f.insert(1, "|".into());
            }
            Some((group, f))
        })
        .collect()
}

fn field(f: &[String], n: usize) -> &str {
    f.get(n).map(String::as_str).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oru_r01_is_accepted_by_hl7apy_with_every_field_and_a_new_version_is_a_correction() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hl7");
    std::fs::create_dir_all(&out).unwrap();
    let (_peer, port) = receiver("aa", &out);
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.export.poll_ms = 100;
        s.export.timeout_secs = 10;
        let mut ris = destination("ris", DestinationKind::Hl7);
        ris.host = Some("127.0.0.1".into());
        ris.port = Some(port);
        ris.sending_application = Some("RADSTREAM".into());
        ris.sending_facility = Some("AI-NODE".into());
        ris.receiving_application = Some("RIS".into());
        ris.receiving_facility = Some("HOSPITAL".into());
        s.export.destinations = vec![ris];
    })
    .await;
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu(&app, &files).await;
    let rows = wait_sent(&app, "ris", 1).await;
    assert_eq!(rows[0]["kind"], "hl7");
    assert_eq!(rows[0]["output"], "report");
    let header = dicom_header(&files[0]);
    let text = |t| dicom_text(&header, t);
    use dicom_dictionary_std::tags;

    let msgs = received(&out);
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m["valid"], true, "hl7apy strict validation: {m}");
    println!("ORU^R01 received:\n{}", m["er7"].as_str().unwrap());
    let msh = &segments(m, "MSH")[0].1;
    assert_eq!(field(msh, 3), "RADSTREAM");
    assert_eq!(field(msh, 4), "AI-NODE");
    assert_eq!(field(msh, 5), "RIS");
    assert_eq!(field(msh, 6), "HOSPITAL");
    assert_eq!(field(msh, 9), "ORU^R01^ORU_R01");
    assert_eq!(field(msh, 11), "P");
    assert_eq!(field(msh, 12), "2.5.1");
    let (pid_group, pid) = &segments(m, "PID")[0];
    assert_eq!(pid_group, "ORU_R01_PATIENT");
    assert_eq!(
        field(pid, 3).split('^').next().unwrap(),
        text(tags::PATIENT_ID)
    );
    assert_eq!(
        field(pid, 5),
        text(tags::PATIENT_NAME).trim_end_matches('^')
    );
    let (pv1_group, pv1) = &segments(m, "PV1")[0];
    assert_eq!(pv1_group, "ORU_R01_VISIT");
    assert_eq!(field(pv1, 2), "U");
    let orc = &segments(m, "ORC")[0].1;
    let accession = text(tags::ACCESSION_NUMBER);
    assert_eq!(field(orc, 1), "RE");
    assert_eq!(
        field(orc, 2),
        format!("{accession}^RIS"),
        "placer order number"
    );
    assert_eq!(
        field(orc, 3),
        format!("{study}^RADSTREAM"),
        "filler order number"
    );
    let (obr_group, obr) = &segments(m, "OBR")[0];
    assert_eq!(obr_group, "ORU_R01_ORDER_OBSERVATION");
    assert_eq!(field(obr, 2), field(orc, 2));
    assert_eq!(field(obr, 3), field(orc, 3));
    assert!(field(obr, 4).ends_with("^LN"), "exam LOINC: {obr:?}");
    assert_eq!(field(obr, 18), accession);
    assert_eq!(field(obr, 24), "RAD");
    assert_eq!(field(obr, 25), "F");
    let notes: Vec<String> = segments(m, "NTE")
        .into_iter()
        .map(|(_, f)| f[3].clone())
        .collect();
    assert!(notes[0].contains("not a diagnosis"), "{notes:?}");
    assert!(
        notes.iter().any(|n| n.to_lowercase().contains("valid")),
        "a model's validation status: {notes:?}"
    );

    // One OBX per finding and measurement, as the node's own FHIR Observations, then urgency.
    let result = app.wait_result(&study, 1).await;
    let data = &result["data"];
    let labels = data["summary"]["labels"].as_array().unwrap();
    let measurements = data["measurements"].as_array().unwrap();
    let obx = segments(m, "OBX");
    assert_eq!(obx.len(), labels.len() + measurements.len() + 1, "{obx:?}");
    for (i, l) in labels.iter().enumerate() {
        let (group, f) = &obx[i];
        assert_eq!(group, "ORU_R01_OBSERVATION");
        assert_eq!(field(f, 2), "CWE");
        let code = l["code"]["code"].as_str().unwrap();
        assert!(
            field(f, 3).starts_with(&format!("{code}^")),
            "{f:?} for {l}"
        );
        let present = l["present"].as_bool().unwrap();
        let value = if present { "52101004^" } else { "272519000^" };
        assert!(field(f, 5).starts_with(value), "{f:?}");
        assert_eq!(field(f, 8), if present { "A" } else { "N" });
        let p: f64 = field(f, 9).parse().unwrap();
        assert!(
            (p - l["probability"].as_f64().unwrap()).abs() < 1e-3,
            "{f:?}"
        );
        assert_eq!(field(f, 11), "F");
    }
    for (j, meas) in measurements.iter().enumerate() {
        let f = &obx[labels.len() + j].1;
        assert_eq!(field(f, 2), "NM");
        let v: f64 = field(f, 5).parse().unwrap();
        assert!((v - meas["value"].as_f64().unwrap()).abs() < 1e-3, "{f:?}");
        let unit = meas["unit"].as_str().unwrap();
        assert!(
            field(f, 6).ends_with("^UCUM") && field(f, 6).starts_with(unit),
            "{f:?}"
        );
    }
    let urgency = &obx.last().unwrap().1;
    assert!(field(urgency, 3).starts_with("URGENCY^"));
    assert_eq!(
        field(urgency, 5).split('^').next().unwrap(),
        data["urgency"].as_str().unwrap()
    );

    // A new result version goes out as a correction.
    let resp = app
        .client()
        .post(app.url(&format!("/v1/studies/{study}/reprocess")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    wait_sent(&app, "ris", 2).await;
    let msgs = received(&out);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1]["valid"], true, "{}", msgs[1]);
    assert_eq!(field(&segments(&msgs[1], "OBR")[0].1, 25), "C");
    assert!(segments(&msgs[1], "OBX")
        .iter()
        .all(|(_, f)| field(f, 11) == "C"));
    let sent: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE type = 'export.sent' AND study_uid = $1",
    )
    .bind(&study)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sent, 2);
}

/// Waits until every row of `destination` is dead; returns them.
async fn wait_dead(app: &TestApp, destination: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rows = exports(app, destination).await;
        if !rows.is_empty() && rows.iter().all(|r| r["state"] == "dead") {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dead-lettered at {destination}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ae_ack_and_no_ack_are_retried_then_dead_lettered_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (ae_out, silent_out) = (dir.path().join("ae"), dir.path().join("silent"));
    std::fs::create_dir_all(&ae_out).unwrap();
    std::fs::create_dir_all(&silent_out).unwrap();
    let (_ae, ae_port) = receiver("ae", &ae_out);
    let (_silent, silent_port) = receiver("silent", &silent_out);
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.export.poll_ms = 100;
        s.export.retry_base_ms = 100;
        s.export.retry_max_ms = 200;
        s.export.timeout_secs = 1;
        let mut ae = destination("ris-ae", DestinationKind::Hl7);
        ae.host = Some("127.0.0.1".into());
        ae.port = Some(ae_port);
        ae.max_attempts = Some(2);
        let mut silent = destination("ris-silent", DestinationKind::Hl7);
        silent.host = Some("127.0.0.1".into());
        silent.port = Some(silent_port);
        silent.max_attempts = Some(2);
        s.export.destinations = vec![ae, silent];
    })
    .await;
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu(&app, &files).await;

    let ae = wait_dead(&app, "ris-ae").await;
    assert_eq!(ae[0]["attempts"], 2, "{ae:?}");
    let why = ae[0]["last_error"].as_str().unwrap();
    assert!(
        why.contains("HL7 ACK AE") && why.contains("Unknown patient on purpose"),
        "{why}"
    );
    assert_eq!(received(&ae_out).len(), 2, "one message per attempt");
    let silent = wait_dead(&app, "ris-silent").await;
    assert_eq!(silent[0]["attempts"], 2, "{silent:?}");
    let why = silent[0]["last_error"].as_str().unwrap();
    assert!(why.contains("no ACK within 1 s"), "{why}");
    assert_eq!(received(&silent_out).len(), 2);
    let failed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE type = 'export.failed' AND study_uid = $1",
    )
    .bind(&study)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(failed, 2, "one export.failed per dead-lettered row");
}

/// Sends one framed message over MLLP to `PORT` and prints the ACK's MSA-1 and MSA-3 as
/// hl7apy parses them.
const ORDER_SENDER: &str = r#"
import socket, sys
from hl7apy.parser import parse_message
port, message = int(sys.argv[1]), sys.argv[2].replace("\n", "\r")
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.sendall(b"\x0b" + message.encode() + b"\x1c\x0d")
    data = b""
    while not data.endswith(b"\x1c\x0d"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
ack = parse_message(data.strip(b"\x0b\x1c\x0d").decode(), find_groups=False)
print(ack.msa.msa_1.to_er7(), ack.msa.msa_2.to_er7(), ack.msa.msa_3.to_er7(), sep="|")
"#;

async fn send_order(port: u16, message: &str) -> String {
    let out = tokio::process::Command::new(python())
        .arg("-c")
        .arg(ORDER_SENDER)
        .arg(port.to_string())
        .arg(message)
        .output()
        .await
        .expect("python venv with hl7apy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stat_order_received_over_mllp_raises_the_urgency_floor() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.hl7.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    })
    .await;
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    let accession = dicom_text(
        &dicom_header(&files[0]),
        dicom_dictionary_std::tags::ACCESSION_NUMBER,
    );
    let orm = format!(
        "MSH|^~\\&|RIS|HOSPITAL|RADSTREAM|AI|20261207120000||ORM^O01|ord-1|P|2.3\n\
         PID|1||PAT-1^^^^MR||DOE^JANE\n\
         ORC|NW|PL-1^RIS|||||^^^^^S\n\
         OBR|1|PL-1^RIS||36643-5^XR Chest 2 Views^LN||||||||||||||{accession}"
    );
    assert_eq!(send_order(port, &orm).await, "AA|ord-1|");
    let adt = "MSH|^~\\&|RIS|H|||20261207||ADT^A01|adt-1|P|2.5\nPID|1||P";
    let refused = send_order(port, adt).await;
    // MSA-3 escapes the component separator of "ADT^A01".
    assert!(
        refused.starts_with("AE|adt-1|") && refused.contains("ADT\\S\\A01"),
        "{refused}"
    );

    storescu(&app, &files).await;
    let result = app.wait_result(&study, 1).await;
    let data = &result["data"];
    assert_eq!(data["urgency"], "urgent", "{data}");
    let reasons = data["triage"]["reasons"].to_string();
    assert!(
        reasons.contains(&format!("STAT order for accession {accession}")),
        "{reasons}"
    );
}
