//! Receiving: real senders (DCMTK, pynetdicom), bad input, completion, both databases.

use std::time::Duration;

use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociationOptions, Pdu};
use radstream::ingest::dimse;
use sqlx::Row;
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

const DX: &str = "1.2.840.10008.5.1.4.1.1.1.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoscu_gets_success() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let (ok, out) = run_async(
        "echoscu",
        &["-aec", "RADSTREAM", "127.0.0.1", &app.dicom_port()],
    )
    .await;
    assert!(ok, "echoscu failed: {out}");
}

async fn storescu_round_trip(db: Db) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (studies, paths) = write_studies(dir.path(), 2, 3, 64);
    storescu(&app, &paths).await;

    for s in &studies {
        assert_eq!(app.wait_complete(s, 10).await, 1);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 6);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM jobs WHERE kind = 'inference'")
            .await,
        2
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM events WHERE type = 'study.received'")
            .await,
        2
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM events WHERE type = 'study.complete'")
            .await,
        2
    );
    let row = sqlx::query("SELECT patient_id, modalities, num_instances, num_series FROM studies WHERE study_uid = $1")
        .bind(&studies[0])
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("patient_id"), "PID-TEST-1");
    assert_eq!(row.get::<String, _>("modalities"), "DX");
    assert_eq!(row.get::<i64, _>("num_instances"), 3);
    assert_eq!(row.get::<i64, _>("num_series"), 1);
    assert_stored_identically(&app, &paths).await;
}

/// Every sent file is indexed and its stored data set equals the sent one byte for byte.
async fn assert_stored_identically(app: &TestApp, paths: &[std::path::PathBuf]) {
    for p in paths {
        let sop = p.file_stem().unwrap().to_string_lossy().to_string();
        let rel = indexed_path(&app.db, &sop)
            .await
            .unwrap_or_else(|| panic!("{sop} not indexed"));
        let stored = app.data_dir.join(rel);
        assert_eq!(data_set_bytes(&stored), data_set_bytes(p), "{sop} differs");
        let meta =
            dicom_object::meta::FileMetaTable::from_reader(&std::fs::read(&stored).unwrap()[128..])
                .unwrap();
        assert_eq!(
            meta.media_storage_sop_instance_uid().trim_end_matches('\0'),
            sop
        );
    }
}

on_both_databases!(storescu_round_trip => storescu_round_trip);

async fn two_hundred_over_four(db: Db) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let mut groups = Vec::new();
    for i in 0..4 {
        let (studies, paths) = write_studies(&dir.path().join(i.to_string()), 5, 10, 32);
        groups.push((studies, paths));
    }
    let port = app.dicom_port();
    let mut senders = Vec::new();
    for (_, paths) in &groups {
        let mut args: Vec<String> = vec![
            "-aec".into(),
            "RADSTREAM".into(),
            "127.0.0.1".into(),
            port.clone(),
        ];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        senders.push(tokio::spawn(async move {
            let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            run_async("storescu", &a).await
        }));
    }
    for s in senders {
        let (ok, out) = s.await.unwrap();
        assert!(ok, "storescu failed: {out}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 200);
    for (studies, paths) in &groups {
        for s in studies {
            app.wait_complete(s, 15).await;
        }
        assert_stored_identically(&app, paths).await;
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM jobs").await, 20);
}

on_both_databases!(two_hundred_instances_over_four_associations => two_hundred_over_four);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynetdicom_sender_is_answered_success() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (studies, paths) = write_studies(dir.path(), 1, 3, 32);
    let script = r#"
import sys
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation
ae = AE(ae_title="PYNETDICOM")
ae.add_requested_context(DigitalXRayImageStorageForPresentation, "1.2.840.10008.1.2.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="RADSTREAM")
assert assoc.is_established, "association rejected"
for p in sys.argv[2:]:
    st = assoc.send_c_store(dcmread(p))
    print(f"{st.Status:04X}")
assoc.release()
"#;
    let port = app.dicom_port();
    let mut args = vec!["-c", script, &port];
    let p: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(p.iter().map(|s| s.as_str()));
    let (ok, out) = run_async(python().to_str().unwrap(), &args).await;
    assert!(ok, "pynetdicom failed: {out}");
    assert_eq!(out.lines().filter(|l| *l == "0000").count(), 3, "{out}");
    app.wait_complete(&studies[0], 10).await;
    let calling: String = sqlx::query_scalar("SELECT calling_ae FROM instances LIMIT 1")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(calling, "PYNETDICOM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_calling_ae_is_rejected_with_its_reason() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.dicom.allowed_peers = vec![radstream::ingest::PeerRule {
            ae_title: "MODALITY1".into(),
            ..Default::default()
        }];
    })
    .await;
    let port = app.dicom_port();
    let (ok, out) = run_async(
        "echoscu",
        &["-aet", "STRANGER", "-aec", "RADSTREAM", "127.0.0.1", &port],
    )
    .await;
    assert!(!ok, "a stranger was accepted: {out}");
    assert!(out.contains("Calling AE Title Not Recognized"), "{out}");
    let (ok, out) = run_async(
        "echoscu",
        &["-aet", "MODALITY1", "-aec", "RADSTREAM", "127.0.0.1", &port],
    )
    .await;
    assert!(ok, "an allowed peer was refused: {out}");
    let (ok, out) = run_async(
        "echoscu",
        &["-aet", "MODALITY1", "-aec", "WRONG", "127.0.0.1", &port],
    )
    .await;
    assert!(
        !ok && out.contains("Called AE Title Not Recognized"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_are_closed_and_the_server_stays_up() {
    let app = TestApp::spawn(Db::Sqlite).await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 4096][..],
        &[0x01, 0x00, 0xff, 0xff, 0xff, 0xff][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(app.dicom).await.unwrap();
        let _ = s.write_all(garbage).await;
        let mut buf = [0u8; 64];
        // The node answers with an abort or closes; either way the read ends.
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await;
        assert!(r.is_ok(), "connection left hanging after garbage");
    }
    let port = app.dicom_port();
    let (ok, out) = run_async("echoscu", &["-aec", "RADSTREAM", "127.0.0.1", &port]).await;
    assert!(ok, "server not answering after garbage: {out}");
}

pub(crate) async fn connect(app: &TestApp) -> AsyncClientAssociation<tokio::net::TcpStream> {
    ClientAssociationOptions::new()
        .calling_ae_title("RAWTEST")
        .called_ae_title("RADSTREAM")
        .with_presentation_context(DX, vec!["1.2.840.10008.1.2.1"])
        .establish_async(app.dicom)
        .await
        .expect("associate")
}

pub(crate) async fn send_pdv(
    a: &mut AsyncClientAssociation<tokio::net::TcpStream>,
    kind: PDataValueType,
    last: bool,
    data: Vec<u8>,
) {
    let pc = a.presentation_contexts()[0].id;
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: kind,
            is_last: last,
            data,
        }],
    })
    .await
    .unwrap();
}

pub(crate) async fn read_status(a: &mut AsyncClientAssociation<tokio::net::TcpStream>) -> u16 {
    match a.receive().await.unwrap() {
        Pdu::PData { data } => dimse::parse_status(&data[0].data).unwrap().0,
        other => panic!("expected a response, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_association_mid_instance_leaves_no_file_and_no_row() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let sop = new_uid();
    let path = write_dx(dir.path(), &new_uid(), &new_uid(), &sop, 1200, 1200);
    let data = data_set_bytes(&path);
    let mut a = connect(&app).await;
    send_pdv(
        &mut a,
        PDataValueType::Command,
        true,
        dimse::request(dimse::C_STORE_RQ, 1, DX, Some(&sop), true),
    )
    .await;
    for chunk in data[..data.len() / 2].chunks(16_000) {
        send_pdv(&mut a, PDataValueType::Data, false, chunk.to_vec()).await;
    }
    // Half of a 2.9 MB data set reaches the disk as it arrives, so a temporary file with data
    // appears in tmp/; wait for it, then abort.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while instance_parts(&app.data_dir).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no temporary file appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.abort().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !instance_parts(&app.data_dir).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "temporary file left after abort"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 0);
    assert!(walk_files(&app.data_dir.join("instances")).is_empty());
}

/// Files below `dir`, recursively (the same walk `radstream send` uses).
pub(crate) fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    radstream::scu::collect_files(&[dir.to_path_buf()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_inconsistent_data_sets_get_failure_statuses() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let mut a = connect(&app).await;
    // Garbage where a data set should be: C000 (cannot understand).
    let sop = new_uid();
    send_pdv(
        &mut a,
        PDataValueType::Command,
        true,
        dimse::request(dimse::C_STORE_RQ, 1, DX, Some(&sop), true),
    )
    .await;
    send_pdv(
        &mut a,
        PDataValueType::Data,
        true,
        vec![0x08, 0x00, 0x18, 0x00, b'U', b'I', 0xff, 0x7f, 1, 2, 3],
    )
    .await;
    let st = read_status(&mut a).await;
    assert!(st == 0xC000 || st == 0xA900, "status {st:04X}");

    // A valid data set whose SOP Instance UID differs from the command's: A900.
    let dir = tempfile::tempdir().unwrap();
    let real_sop = new_uid();
    let path = write_dx(dir.path(), &new_uid(), &new_uid(), &real_sop, 16, 16);
    send_pdv(
        &mut a,
        PDataValueType::Command,
        true,
        dimse::request(dimse::C_STORE_RQ, 2, DX, Some(&new_uid()), true),
    )
    .await;
    send_pdv(&mut a, PDataValueType::Data, true, data_set_bytes(&path)).await;
    assert_eq!(read_status(&mut a).await, 0xA900);

    // A UID that tries to leave the data folder: refused, nothing written.
    send_pdv(
        &mut a,
        PDataValueType::Command,
        true,
        dimse::request(dimse::C_STORE_RQ, 3, DX, Some("../../etc"), true),
    )
    .await;
    send_pdv(&mut a, PDataValueType::Data, true, data_set_bytes(&path)).await;
    assert_eq!(read_status(&mut a).await, 0xA900);

    // The association (and server) still works for a good instance.
    send_pdv(
        &mut a,
        PDataValueType::Command,
        true,
        dimse::request(dimse::C_STORE_RQ, 4, DX, Some(&real_sop), true),
    )
    .await;
    send_pdv(&mut a, PDataValueType::Data, true, data_set_bytes(&path)).await;
    assert_eq!(read_status(&mut a).await, 0x0000);
    a.release().await.unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM events WHERE type = 'store.failed'")
            .await,
        3
    );
    no_instance_parts_left(&app.data_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_disk_space_is_refused_with_a700_before_writing() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| s.storage.min_free_percent = 99.99).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, paths) = write_studies(dir.path(), 1, 1, 16);
    let port = app.dicom_port();
    let p = paths[0].display().to_string();
    let (ok, out) = run_async("storescu", &["-aec", "RADSTREAM", "127.0.0.1", &port, &p]).await;
    assert!(
        !ok || out.contains("A700") || out.contains("Out of Resources"),
        "{out}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 0);
    no_instance_parts_left(&app.data_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_instance_reopens_the_study_as_a_new_version_with_its_own_job() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let study = new_uid();
    let series = new_uid();
    let first = write_dx(dir.path(), &study, &series, &new_uid(), 16, 16);
    let late = write_dx(dir.path(), &study, &series, &new_uid(), 16, 16);
    storescu(&app, std::slice::from_ref(&first)).await;
    assert_eq!(app.wait_complete(&study, 10).await, 1);
    // Sending the same instance again is a kept duplicate: no new version.
    storescu(&app, std::slice::from_ref(&first)).await;
    storescu(&app, std::slice::from_ref(&late)).await;
    assert_eq!(app.wait_complete(&study, 10).await, 2);
    let jobs =
        sqlx::query("SELECT study_version FROM jobs WHERE study_uid = $1 ORDER BY study_version")
            .bind(&study)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let versions: Vec<i64> = jobs.iter().map(|r| r.get("study_version")).collect();
    assert_eq!(versions, vec![1, 2]);
}

/// `on_duplicate = "replace"`: a re-sent instance replaces the stored one, also when it moved to
/// another series, and the study and series counts stay true (they are incremented per new
/// instance and recounted only on a replacement).
async fn replaced_duplicates_keep_the_counts_true(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.storage.on_duplicate = radstream::store::DuplicatePolicy::Replace
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let study = new_uid();
    let (series_a, series_b) = (new_uid(), new_uid());
    let moved = new_uid();
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let first: Vec<_> = (0..3)
        .map(|i| {
            let sop = if i == 0 { moved.clone() } else { new_uid() };
            write_dx(&dir.path().join("a"), &study, &series_a, &sop, 16, 16)
        })
        .collect();
    storescu(&app, &first).await;
    // The same instance again, unchanged, and then re-sent in another series.
    storescu(&app, &first[..1]).await;
    let again = write_dx(&dir.path().join("b"), &study, &series_b, &moved, 16, 16);
    storescu(&app, std::slice::from_ref(&again)).await;
    app.wait_complete(&study, 10).await;

    let counts = |sql: &'static str, uid: String| {
        let pool = app.db.pool.clone();
        async move {
            let row = sqlx::query(sql).bind(uid).fetch_one(&pool).await.unwrap();
            (0..row.len())
                .map(|i| row.get::<i64, _>(i))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        counts(
            "SELECT num_instances, num_series FROM studies WHERE study_uid = $1",
            study.clone()
        )
        .await,
        vec![3, 2]
    );
    let series_sql = "SELECT num_instances FROM series WHERE series_uid = $1";
    assert_eq!(counts(series_sql, series_a.clone()).await, vec![2]);
    assert_eq!(counts(series_sql, series_b.clone()).await, vec![1]);
    let (series, path): (String, String) =
        sqlx::query_as("SELECT series_uid, file_path FROM instances WHERE sop_instance_uid = $1")
            .bind(&moved)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(series, series_b);
    assert!(path.contains(&series_b), "{path}");
    assert_eq!(
        walk_files(&app.data_dir.join("instances")).len(),
        3,
        "the replaced copy's old file is removed"
    );
}

on_both_databases!(replaced_duplicates_keep_the_counts_true => replaced_duplicates_keep_the_counts_true);

/// `on_duplicate = "keep"` keeps the stored copy only while there is one: an instance whose
/// file is gone (removed, or lost to a machine crash before its rename reached the disk, when
/// it was never acknowledged) is stored again when re-sent, and the counts stay true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_duplicate_whose_file_is_gone_is_stored_again() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, series) = (new_uid(), new_uid());
    let files: Vec<_> = (0..2)
        .map(|_| write_dx(dir.path(), &study, &series, &new_uid(), 16, 16))
        .collect();
    storescu(&app, &files).await;
    let sop = files[0].file_stem().unwrap().to_string_lossy().to_string();
    let stored = app
        .data_dir
        .join(indexed_path(&app.db, &sop).await.expect("indexed"));
    std::fs::remove_file(&stored).unwrap();

    storescu(&app, &files[..1]).await;
    assert_eq!(data_set_bytes(&stored), data_set_bytes(&files[0]));
    storescu(&app, &files[..1]).await;
    app.wait_complete(&study, 10).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 2);
    assert_eq!(
        app.count("SELECT num_instances FROM studies").await,
        2,
        "the study's count is recounted, not incremented"
    );
    assert_eq!(walk_files(&app.data_dir.join("instances")).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radstream_send_delivers_to_dcmtk_storescp() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("received");
    std::fs::create_dir_all(&out_dir).unwrap();
    let (_, paths) = write_studies(&dir.path().join("src"), 2, 2, 32);
    let port = free_port();
    let mut scp = std::process::Command::new("storescp")
        .args([
            "-od",
            out_dir.to_str().unwrap(),
            "-aet",
            "STORESCP",
            &port.to_string(),
        ])
        .spawn()
        .expect("storescp (dcmtk) is needed");
    wait_port(port).await;
    let (ok, out) = radstream_send(port, &dir.path().join("src"), "STORESCP").await;
    let _ = scp.kill();
    let _ = scp.wait();
    assert!(ok, "radstream send failed: {out}");
    assert!(out.contains("0000 x4"), "{out}");
    let received = walk_files(&out_dir);
    assert_eq!(received.len(), 4);
    for p in &paths {
        let sop = p.file_stem().unwrap().to_string_lossy().to_string();
        let got = received
            .iter()
            .find(|r| r.file_name().unwrap().to_string_lossy().contains(&sop))
            .unwrap_or_else(|| panic!("{sop} not received"));
        assert_eq!(data_set_bytes(got), data_set_bytes(p));
    }
}

/// `radstream send 127.0.0.1:PORT DIR --called-ae AE`, as a user types it.
async fn radstream_send(port: u16, dir: &std::path::Path, called_ae: &str) -> (bool, String) {
    run_async(
        radstream_bin().to_str().unwrap(),
        &[
            "send",
            &format!("127.0.0.1:{port}"),
            dir.to_str().unwrap(),
            "--called-ae",
            called_ae,
        ],
    )
    .await
}

pub async fn wait_port(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "port {port} never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radstream_send_delivers_to_orthanc() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _paths) = write_studies(&dir.path().join("src"), 1, 3, 32);
    let dicom_port = free_port();
    let http_port = free_port();
    let orthanc = Orthanc::start(dir.path(), dicom_port, http_port, false);
    wait_port(dicom_port).await;
    let (ok, out) = radstream_send(dicom_port, &dir.path().join("src"), "ORTHANC").await;
    let count = reqwest::get(format!("http://127.0.0.1:{http_port}/statistics"))
        .await
        .and_then(|r| r.error_for_status());
    let stats: serde_json::Value = match count {
        Ok(r) => r.json().await.unwrap(),
        Err(e) => panic!("Orthanc REST not reachable: {e}"),
    };
    drop(orthanc);
    assert!(ok, "radstream send failed: {out}");
    assert_eq!(stats["CountInstances"], 3, "{stats}");
}

/// The committed fixtures are valid IODs for a checker nobody here wrote.
#[test]
fn committed_fixtures_pass_dciodvfy_with_no_errors() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom");
    let files: Vec<_> = walk_files(&root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    assert!(
        files.len() >= 6,
        "fixtures missing under {}",
        root.display()
    );
    // dicom3tools cannot read Deflated Explicit VR Little Endian; that file is checked by the
    // round-trip test instead.
    for f in files
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains("deflate"))
    {
        let (_, out) = run("dciodvfy", &[f.to_str().unwrap()]);
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
}

/// Every committed fixture, in every transfer syntax it comes in, goes in and comes back
/// identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_fixtures_in_every_transfer_syntax_are_stored_as_received() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom");
    let files: Vec<_> = walk_files(&root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    let dicom_addr = app.dicom.to_string();
    let mut args = vec!["send", dicom_addr.as_str(), "--called-ae", "RADSTREAM"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(|s| s.as_str()));
    let (ok, out) = run_async(radstream_bin().to_str().unwrap(), &args).await;
    assert!(ok, "{out}");
    for f in &files {
        let meta =
            dicom_object::meta::FileMetaTable::from_reader(&std::fs::read(f).unwrap()[128..])
                .unwrap();
        let sop = meta
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_string();
        let (rel, ts): (String, String) = sqlx::query_as(
            "SELECT file_path, transfer_syntax FROM instances WHERE sop_instance_uid = $1",
        )
        .bind(&sop)
        .fetch_one(&app.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{} not indexed: {e}", f.display()));
        assert_eq!(ts, meta.transfer_syntax().trim_end_matches('\0'));
        assert_eq!(
            data_set_bytes(&app.data_dir.join(rel)),
            data_set_bytes(f),
            "{}",
            f.display()
        );
    }
}
