//! Acknowledge only what is whole, survive hostile input, accept the odd-but-valid: hand-built
//! byte streams over C-STORE and STOW-RS, the command line on the same files, DCMTK as the
//! reference reader.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::PDataValueType;
use radstream::ingest::dimse;
use serde_json::Value;

use crate::dicomweb::{multipart, stow};
use crate::helpers::*;
use crate::ingest::{connect, read_status, send_pdv, walk_files};

const DX: &str = "1.2.840.10008.5.1.4.1.1.1.1";
const STOW_CT: &str = "multipart/related; type=\"application/dicom\"; boundary=XYZ";

/// An explicit VR little endian element header with a long length field.
fn long_header(out: &mut Vec<u8>, tag: Tag, vr: &[u8; 2], len: u32) {
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
}

fn delimiter(out: &mut Vec<u8>, tag: Tag, len: u32) {
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn data_set(obj: &InMemDicomObject) -> Vec<u8> {
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    out
}

/// A DX data set with a Procedure Code Sequence, and a private element (0009,1001) holding
/// `PLACEHLD` where tests splice raw bytes in.
fn dx_with_sequence(dir: &Path, sop: &str, rows: u16) -> Vec<u8> {
    let path = write_dx(dir, &new_uid(), &new_uid(), sop, rows, rows);
    let mut obj = OpenFileOptions::new()
        .open_file(&path)
        .unwrap()
        .into_inner();
    let item = InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from("RPID1")),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from("RADLEX"),
        ),
    ]);
    obj.put(DataElement::new(
        tags::PROCEDURE_CODE_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(vec![item]),
    ));
    obj.put(DataElement::new(
        Tag(0x0009, 0x0010),
        VR::LO,
        PrimitiveValue::from("ACME"),
    ));
    obj.put(DataElement::new(
        Tag(0x0009, 0x1001),
        VR::UN,
        PrimitiveValue::from(b"PLACEHLD".to_vec()),
    ));
    data_set(&obj)
}

/// Where the header of `tag` starts in an explicit VR little endian data set.
fn offset_of(data: &[u8], tag: Tag) -> usize {
    let mut t = tag.0.to_le_bytes().to_vec();
    t.extend_from_slice(&tag.1.to_le_bytes());
    data.windows(4).position(|w| w == t).expect("tag present")
}

/// The data set with the placeholder element replaced by `raw`.
fn splice(data: &[u8], raw: &[u8]) -> Vec<u8> {
    let at = offset_of(data, Tag(0x0009, 0x1001));
    let mut out = data[..at].to_vec();
    out.extend_from_slice(raw);
    out.extend_from_slice(&data[at + 12 + 8..]);
    out
}

/// A Part 10 file: preamble, a meta group written as given, the data set.
fn part10(meta: &[(u16, &[u8; 2], &[u8])], data: &[u8]) -> Vec<u8> {
    let mut elements = Vec::new();
    for (element, vr, value) in meta {
        elements.extend_from_slice(&2u16.to_le_bytes());
        elements.extend_from_slice(&element.to_le_bytes());
        elements.extend_from_slice(*vr);
        if *vr == b"OB" {
            elements.extend_from_slice(&[0, 0]);
            elements.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            elements.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        elements.extend_from_slice(value);
    }
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[0x02, 0, 0, 0, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(elements.len() as u32).to_le_bytes());
    out.extend_from_slice(&elements);
    out.extend_from_slice(data);
    out
}

/// A correct meta group for a DX data set (transfer syntax optional).
fn dx_meta<'a>(
    sop: &'a str,
    source_ae: &'a [u8],
    ts: Option<&'a [u8]>,
) -> Vec<(u16, &'a [u8; 2], &'a [u8])> {
    let mut m: Vec<(u16, &[u8; 2], &[u8])> = vec![
        (0x0001, b"OB", &[0, 1]),
        (0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.1.1\0"),
        (0x0003, b"UI", sop.as_bytes()),
    ];
    if let Some(ts) = ts {
        m.push((0x0010, b"UI", ts));
    }
    m.push((0x0012, b"UI", b"1.2.3.4\0"));
    m.push((0x0016, b"AE", source_ae));
    m
}

async fn c_store(
    a: &mut dicom_ul::association::client::AsyncClientAssociation<tokio::net::TcpStream>,
    id: u16,
    sop: &str,
    data: &[u8],
) -> u16 {
    send_pdv(
        a,
        PDataValueType::Command,
        true,
        dimse::request(dimse::C_STORE_RQ, id, DX, Some(sop), true),
    )
    .await;
    let chunks: Vec<&[u8]> = data.chunks(16_000).collect();
    for (i, c) in chunks.iter().enumerate() {
        send_pdv(a, PDataValueType::Data, i + 1 == chunks.len(), c.to_vec()).await;
    }
    read_status(a).await
}

/// One Part 10 file over STOW-RS: the HTTP status and the answer.
async fn stow_file(app: &TestApp, file: Vec<u8>) -> (u16, Value) {
    stow(
        app,
        "/dicomweb/studies",
        STOW_CT,
        multipart("XYZ", &[("application/dicom", file)]),
    )
    .await
}

/// `radstream send --json` of one file to the node's own DICOM port.
async fn send_to_itself(app: &TestApp, path: &str) -> (bool, String, String) {
    let addr = format!("127.0.0.1:{}", app.dicom_port());
    app.cli(&["send", &addr, "--called-ae", "RADSTREAM", "--json", path])
        .await
}

async fn ping(app: &TestApp) {
    let r = reqwest::get(app.url("/ping"))
        .await
        .expect("the node answers");
    assert!(r.status().is_success());
}

/// Nothing of a refused instance stays: no temporary file, only the stored ones in place.
async fn assert_no_leftovers(app: &TestApp, stored: usize) {
    no_instance_parts_left(&app.data_dir).await;
    assert_eq!(walk_files(&app.data_dir.join("instances")).len(), stored);
}

on_both_databases!(a_data_set_cut_short_is_refused_at_every_cut => cut_short);

async fn cut_short(db: Db) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let sop = new_uid();
    let data = dx_with_sequence(dir.path(), &sop, 600);
    let seq = offset_of(&data, tags::PROCEDURE_CODE_SEQUENCE);
    let pixels = offset_of(&data, tags::PIXEL_DATA);
    // (cut, status): inside a header, inside the sequence's item, at the element boundary
    // before Pixel Data (an image without pixels), inside Pixel Data's header and value,
    // 200,000 bytes short as the issue found it, one byte short.
    let cuts = [
        (seq + 5, 0xC000),
        (seq + 24, 0xC000),
        (pixels, 0xA900),
        (pixels + 6, 0xC000),
        (pixels + 12 + 1000, 0xC000),
        (data.len() - 200_000, 0xC000),
        (data.len() - 1, 0xC000),
    ];
    let mut a = connect(&app).await;
    for (i, (cut, want)) in cuts.iter().enumerate() {
        let st = c_store(&mut a, i as u16 + 1, &sop, &data[..*cut]).await;
        assert_eq!(st, *want, "cut at {cut} of {}", data.len());
    }
    // Pixel Data declaring 0xFFFFFFF0 bytes with 64 present.
    let mut huge = data[..pixels].to_vec();
    long_header(&mut huge, tags::PIXEL_DATA, b"OW", 0xFFFF_FFF0);
    huge.extend_from_slice(&[0; 64]);
    assert_eq!(c_store(&mut a, 20, &sop, &huge).await, 0xC000);
    // The whole instance, on the same association: stored.
    assert_eq!(c_store(&mut a, 21, &sop, &data).await, 0x0000);
    a.release().await.unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 1);
    let failed = app
        .count("SELECT COUNT(*) FROM events WHERE type = 'store.failed'")
        .await;
    assert_eq!(failed, cuts.len() as i64 + 1);
    assert_no_leftovers(&app, 1).await;
    // The stored copy is the whole data set, byte for byte.
    let stored = walk_files(&app.data_dir.join("instances"));
    assert_eq!(data_set_bytes(&stored[0]), data);

    // The same through STOW-RS: the cut part fails with C000, the whole one is stored.
    let sop2 = new_uid();
    let data2 = dx_with_sequence(dir.path(), &sop2, 600);
    let meta = dx_meta(&sop2, b"STOWTEST", Some(b"1.2.840.10008.1.2.1\0"));
    let cut = part10(&meta, &data2[..data2.len() - 200_000]);
    let (status, v) = stow_file(&app, cut).await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v.get("00081199").is_none(),
        "a cut part was referenced: {v}"
    );
    assert_eq!(v["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC000);
    let whole = part10(&meta, &data2);
    let (status, v) = stow_file(&app, whole).await;
    assert_eq!(status, 200, "{v}");
    assert_no_leftovers(&app, 2).await;
    ping(&app).await;
}

/// `levels` undefined-length sequences, each in an item of the one above, in place of the
/// placeholder of [`dx_with_sequence`].
fn nested(levels: usize) -> Vec<u8> {
    let mut d = Vec::new();
    for _ in 0..levels {
        long_header(&mut d, Tag(0x0009, 0x1001), b"SQ", u32::MAX);
        delimiter(&mut d, Tag(0xFFFE, 0xE000), u32::MAX);
    }
    for _ in 0..levels {
        delimiter(&mut d, Tag(0xFFFE, 0xE00D), 0);
        delimiter(&mut d, Tag(0xFFFE, 0xE0DD), 0);
    }
    d
}

/// A DX Part 10 file whose data set nests 1,500 sequences deep (54 KB): the input that
/// overflowed the stack of the node's parser.
pub(crate) fn deeply_nested_dx(dir: &Path) -> Vec<u8> {
    let sop = new_uid();
    let deep = splice(&dx_with_sequence(dir, &sop, 64), &nested(1500));
    part10(
        &dx_meta(&sop, b"DEEP", Some(b"1.2.840.10008.1.2.1\0")),
        &deep,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_refused_on_every_path_and_the_node_stays_up() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let sop = new_uid();
    let deep = splice(&dx_with_sequence(dir.path(), &sop, 64), &nested(1500));
    let mut a = connect(&app).await;
    assert_eq!(c_store(&mut a, 1, &sop, &deep).await, 0xC000);
    a.release().await.unwrap();
    ping(&app).await;

    let meta = dx_meta(&sop, b"DEEP", Some(b"1.2.840.10008.1.2.1\0"));
    let file = part10(&meta, &deep);
    let (status, v) = stow_file(&app, file.clone()).await;
    assert_eq!(status, 409, "{v}");
    ping(&app).await;

    // The command line reads files through the same gate: a refusal, not a crash.
    let path = dir.path().join("deep.dcm");
    std::fs::write(&path, &file).unwrap();
    let p = path.to_str().unwrap();
    let (ok, out, err) = app.cli(&["verify", p]).await;
    assert!(!ok);
    assert!(out.contains("nested deeper than 32 levels"), "{out}{err}");
    let infer = std::process::Command::new(radstream_bin())
        .args(["infer", p])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&infer.stdout),
        String::from_utf8_lossy(&infer.stderr),
    );
    // One JSON error line for the file and exit 1: refused, not a crash (no signal).
    assert_eq!(infer.status.code(), Some(1), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("nested deeper"),
        "infer: {out}{err}"
    );
    let (ok, out, err) = send_to_itself(&app, p).await;
    assert!(!ok, "send of a broken file succeeded: {out}");
    assert!(
        format!("{out}{err}").contains("nested deeper"),
        "send: {out}{err}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 0);
    assert_no_leftovers(&app, 0).await;
}

/// The peak resident memory of a process, from /proc.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_gb_length_in_a_small_message_costs_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (dicom_port, http_port) = (free_port(), free_port());
    let child = spawn_node(dir.path(), dicom_port, http_port, &[]);
    let pid = child.id().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{dicom_port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "node did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = peak_rss_kb(pid);
    let sop = new_uid();
    let mut d = dx_with_sequence(dir.path(), &sop, 16);
    d.truncate(offset_of(&d, Tag(0x0009, 0x1001)));
    long_header(&mut d, Tag(0x0009, 0x1001), b"OB", 0xFFFF_FF00);
    d.extend_from_slice(&[0; 900]);
    assert!(d.len() < 2048);
    let mut a = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("RAWTEST")
        .called_ae_title("RADSTREAM")
        .with_presentation_context(DX, vec!["1.2.840.10008.1.2.1"])
        .establish_async(addr)
        .await
        .unwrap();
    for id in 1..=3 {
        let started = std::time::Instant::now();
        assert_eq!(c_store(&mut a, id, &sop, &d).await, 0xC000);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    a.release().await.unwrap();
    let grown_mb = (peak_rss_kb(pid).saturating_sub(before)) / 1024;
    println!("peak RSS grew by {grown_mb} MB over three 4 GB-length messages");
    assert!(grown_mb < 32, "peak RSS grew by {grown_mb} MB");
}

on_both_databases!(odd_but_valid_files_are_accepted_and_stored_as_received => odd_but_valid);

async fn odd_but_valid(db: Db) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();

    // 1. A meta group with an odd-length Source AE Title, as DCMTK writes some; and one
    //    without a Transfer Syntax UID. DCMTK reads both; so must the node, over STOW-RS, on
    //    `radstream send` and `radstream verify`.
    let odd_sop = new_uid();
    let odd = part10(
        &dx_meta(&odd_sop, b"CTAWP", Some(b"1.2.840.10008.1.2.1\0")),
        &dx_with_sequence(dir.path(), &odd_sop, 32),
    );
    let no_ts_sop = new_uid();
    let no_ts = part10(
        &dx_meta(&no_ts_sop, b"CTAWP1", None),
        &dx_with_sequence(dir.path(), &no_ts_sop, 32),
    );
    let odd_path = dir.path().join("odd.dcm");
    let no_ts_path = dir.path().join("no_ts.dcm");
    std::fs::write(&odd_path, &odd).unwrap();
    std::fs::write(&no_ts_path, &no_ts).unwrap();
    for p in [&odd_path, &no_ts_path] {
        let (ok, out) = run("dcmdump", &["-q", p.to_str().unwrap()]);
        assert!(
            ok && out.contains("(7fe0,0010)"),
            "DCMTK cannot read {}: {out}",
            p.display()
        );
        let (ok, out, err) = app.cli(&["verify", p.to_str().unwrap()]).await;
        assert!(ok, "verify {}: {out}{err}", p.display());
    }
    let (status, v) = stow_file(&app, odd.clone()).await;
    assert_eq!(status, 200, "{v}");
    let (ok, out, err) = send_to_itself(&app, no_ts_path.to_str().unwrap()).await;
    assert!(ok, "send: {out}{err}");
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 2);
    // Stored with a correct meta group the strict reader accepts, the data set as received.
    for (sop, file) in [(&odd_sop, &odd), (&no_ts_sop, &no_ts)] {
        let stored = PathBuf::from(indexed_path(&app.db, sop).await.expect("indexed"));
        let stored = if stored.is_absolute() {
            stored
        } else {
            app.data_dir.join(stored)
        };
        let strict = OpenFileOptions::new()
            .open_file(&stored)
            .expect("strict read");
        assert_eq!(
            strict.meta().transfer_syntax().trim_end_matches('\0'),
            "1.2.840.10008.1.2.1"
        );
        let data_start = file.len() - data_set_bytes(&stored).len();
        assert_eq!(data_set_bytes(&stored), file[data_start..]);
    }

    // 2. An undefined-length UN sequence whose item is implicit VR (PS3.5 6.2.2), by C-STORE:
    //    stored byte for byte, and read as a sequence, with the Modality after it intact.
    let un_sop = new_uid();
    let mut un = Vec::new();
    long_header(&mut un, Tag(0x0009, 0x1001), b"UN", u32::MAX);
    delimiter(&mut un, Tag(0xFFFE, 0xE000), 10);
    un.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0]);
    un.extend_from_slice(b"MR");
    delimiter(&mut un, Tag(0xFFFE, 0xE0DD), 0);
    let data = splice(&dx_with_sequence(dir.path(), &un_sop, 32), &un);
    let mut a = connect(&app).await;
    assert_eq!(c_store(&mut a, 1, &un_sop, &data).await, 0x0000);
    a.release().await.unwrap();
    let stored = walk_files(&app.data_dir.join("instances"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&un_sop))
        .expect("stored");
    assert_eq!(data_set_bytes(&stored), data);
    let (ok, out) = run("dcmdump", &["-q", stored.to_str().unwrap()]);
    assert!(ok, "{out}");
    let study: String =
        sqlx::query_scalar("SELECT study_uid FROM instances WHERE sop_instance_uid = $1")
            .bind(&un_sop)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let (status, v) = app
        .get_json(&format!("/dicomweb/studies/{study}/metadata"))
        .await;
    assert_eq!(status, 200, "{v}");
    let meta: &Value = &v[0];
    assert_eq!(meta["00080060"]["Value"][0], "DX", "{meta}");
    assert_eq!(
        meta["00091001"]["Value"][0]["00080060"]["Value"][0], "MR",
        "the UN sequence's item: {meta}"
    );
    ping(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_broken_file_already_in_the_store() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = fixture_copy("dx_normal", dir.path(), 2);
    storescu(&app, &files).await;
    let mut stored = Vec::new();
    for f in &files {
        let meta = radstream::dataset::read_meta(f).unwrap();
        let rel = indexed_path(&app.db, &meta.sop_instance_uid.unwrap())
            .await
            .expect("indexed");
        stored.push(app.data_dir.join(rel).to_string_lossy().into_owned());
    }
    let argv: Vec<&str> = std::iter::once("verify")
        .chain(stored.iter().map(String::as_str))
        .collect();
    let (ok, out, err) = app.cli(&argv).await;
    assert!(ok, "{out}{err}");
    let n = stored.len();
    assert!(
        err.contains(&format!("{n} files checked, 0 broken")),
        "{err}"
    );
    // A file stored by an earlier version, cut short on disk: found by a check of the given
    // files and by one of the whole store.
    let bytes = std::fs::read(&stored[0]).unwrap();
    std::fs::write(&stored[0], &bytes[..bytes.len() - 1000]).unwrap();
    let (ok, out, err) = app.cli(&argv).await;
    assert!(!ok);
    assert!(
        err.contains(&format!("{n} files checked, 1 broken")),
        "{err}"
    );
    assert!(
        out.contains(&stored[0]) && out.contains("ends inside"),
        "{out}"
    );
    let (ok, out, err) = app.cli(&["verify"]).await;
    assert!(!ok);
    assert!(
        err.contains(" 1 broken") && out.contains(&stored[0]),
        "{out}{err}"
    );
}
