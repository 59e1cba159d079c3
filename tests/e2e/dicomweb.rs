//! DICOMweb: dicomweb-client as the peer (STOW, QIDO, WADO); a STOW-RS study completes and
//! gets a result; broken multipart parts and wrong media types are refused as PS3.18 says.

use std::time::Duration;

use radstream::auth::Scope;
use serde_json::Value;

use crate::helpers::{fixture_copy, on_both_databases, python, run_async, Db, TestApp};

pub(crate) fn multipart(boundary: &str, parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (ct, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

pub(crate) async fn stow(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = app
        .client()
        .post(app.url(path))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

on_both_databases!(dicomweb_client_stores_searches_retrieves_and_the_study_gets_a_result => client_round_trip);

async fn client_round_trip(db: Db) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = fixture_copy("cr_cardiomegaly", dir.path(), 1);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/dicomweb_client_check.py"
    );
    let token = app.token(&[Scope::ResultsRead, Scope::InferenceWrite]);
    let base = app.url("/dicomweb");
    let mut args = vec![script.to_string(), base, token, study.clone()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = run_async(python().to_str().unwrap(), &refs).await;
    assert!(ok, "dicomweb-client check failed: {out}");

    // One request = one association: released, the study completes and is inferred.
    app.wait_complete(&study, 20).await;
    let mut result = Value::Null;
    for _ in 0..120 {
        let (status, body) = app.get_json(&format!("/v1/studies/{study}/results")).await;
        if status == 200 {
            result = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        result["data"]["study_instance_uid"], study,
        "no result: {result}"
    );
    assert_eq!(result["data"]["summary"]["images_analysed"], 2);
    let calling: String =
        sqlx::query_scalar("SELECT calling_ae FROM instances WHERE study_uid = $1 LIMIT 1")
            .bind(&study)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(calling, "STOW-RS");
}

#[tokio::test]
async fn broken_parts_are_listed_and_good_parts_stored() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = fixture_copy("dx_normal", dir.path(), 1);
    let good = std::fs::read(&files[0]).unwrap();
    let mut truncated = std::fs::read(&files[1]).unwrap();
    truncated.truncate(400);
    let ct = "multipart/related; type=\"application/dicom\"; boundary=XYZ";
    let body = multipart(
        "XYZ",
        &[
            ("application/dicom", good.clone()),
            ("application/dicom", b"this is not DICOM".repeat(20)),
            ("text/plain", b"hello".to_vec()),
            ("application/dicom", truncated),
        ],
    );
    let (status, v) = stow(&app, "/dicomweb/studies", ct, body).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["00081199"]["Value"].as_array().unwrap().len(), 1, "{v}");
    let failed = v["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{v}");
    for f in failed {
        let reason = f["00081197"]["Value"][0].as_u64().unwrap();
        assert!(reason == 0xC000 || reason == 0xA900, "{f}");
    }
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM instances WHERE study_uid = '{study}'"
        ))
        .await,
        1
    );

    // All refused: 409. A part of another study on /studies/{study}: A900.
    let other = "1.2.3.4.5.6";
    let (status, v) = stow(
        &app,
        &format!("/dicomweb/studies/{other}"),
        ct,
        multipart(
            "XYZ",
            &[("application/dicom", std::fs::read(&files[1]).unwrap())],
        ),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA900);
    // Every refused part is on the event log, as a refused C-STORE is.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM events WHERE type = 'store.failed' \
             AND payload LIKE '%STOW-RS%'"
        )
        .await,
        4
    );

    // Wrong media type: 415 naming the header.
    let (status, v) = stow(
        &app,
        "/dicomweb/studies",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 415, "{v}");
    assert_eq!(v["error"]["field"], "Content-Type");
    let (status, _) = stow(
        &app,
        "/dicomweb/studies",
        "multipart/related; type=\"application/dicom+json\"; boundary=XYZ",
        b"--XYZ--".to_vec(),
    )
    .await;
    assert_eq!(status, 415);

    // QIDO: nothing matches → 204; a bad key names itself.
    let resp = app
        .client()
        .get(app.url("/dicomweb/studies?PatientID=nobody-at-all"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (status, v) = app.get_json("/dicomweb/studies?StudyDate=2020-01-01").await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["field"], "StudyDate");

    // WADO: a transfer syntax radstream does not write (JPEG baseline) is refused; * is fine.
    let resp = app
        .client()
        .get(app.url(&format!("/dicomweb/studies/{study}")))
        .header(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 406);
    let resp = app
        .client()
        .get(app.url(&format!("/dicomweb/studies/{study}")))
        .header(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.bytes().await.unwrap();
    let data_set = crate::helpers::data_set_bytes(&files[0]);
    assert!(body.windows(data_set.len()).any(|w| w == &data_set[..]));
}

#[tokio::test]
async fn oversized_stow_body_gets_413_and_cors_preflight_needs_no_auth() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.http.max_body_bytes = 4096;
        s.dicomweb.cors_allowed_origins = vec!["http://viewer.example".into()];
    })
    .await;
    let ct = "multipart/related; type=\"application/dicom\"; boundary=XYZ";
    let body = multipart("XYZ", &[("application/dicom", vec![0u8; 10_000])]);
    let (status, v) = stow(&app, "/dicomweb/studies", ct, body).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["max_body_bytes"], 4096);

    let resp = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.url("/dicomweb/studies"))
        .header("Origin", "http://viewer.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://viewer.example"
    );
    let resp = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.url("/dicomweb/studies"))
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // Without a token the real request is still refused.
    let resp = reqwest::Client::new()
        .get(app.url("/dicomweb/studies"))
        .header("Origin", "http://viewer.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn dicomweb_client_gets_frames_rendered_images_and_thumbnails() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, mono1) = fixture_copy("cr_cardiomegaly", &dir.path().join("cr"), 1);
    let (_, rle) = fixture_copy("dx_effusion_rle", &dir.path().join("rle"), 1);
    let (_, native) = fixture_copy("dx_normal", &dir.path().join("dx"), 1);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/dicomweb_pixels_check.py"
    );
    let token = app.token(&[Scope::ResultsRead, Scope::InferenceWrite]);
    let base = app.url("/dicomweb");
    let args = [
        script.to_string(),
        base,
        token,
        mono1[0].display().to_string(),
        rle[0].display().to_string(),
        native[0].display().to_string(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = run_async(python().to_str().unwrap(), &refs).await;
    assert!(ok, "dicomweb-client pixel check failed: {out}");
    println!("{out}");
}

/// Orthanc with its DICOMweb plugin (Debian `orthanc-dicomweb`) on free ports.
async fn orthanc_dicomweb(dir: &std::path::Path) -> (crate::helpers::Orthanc, String) {
    let (dicom_port, http_port) = (crate::helpers::free_port(), crate::helpers::free_port());
    let orthanc = crate::helpers::Orthanc::start(dir, dicom_port, http_port, true);
    crate::ingest::wait_port(http_port).await;
    (orthanc, format!("http://127.0.0.1:{http_port}/dicom-web"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qido_and_metadata_agree_with_orthancs_dicomweb_plugin() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (orthanc, orthanc_url) = orthanc_dicomweb(dir.path()).await;
    let (_, cr) = fixture_copy("cr_cardiomegaly", &dir.path().join("cr"), 1);
    let (_, rle) = fixture_copy("dx_effusion_rle", &dir.path().join("rle"), 1);
    let (_, big) = fixture_copy("ts_big", &dir.path().join("big"), 1);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/dicomweb_orthanc_compare.py"
    );
    let token = app.token(&[Scope::ResultsRead, Scope::InferenceWrite]);
    let mut args = vec![script.to_string(), app.url("/dicomweb"), token, orthanc_url];
    args.extend(
        cr.iter()
            .chain(&rle)
            .chain(&big)
            .map(|f| f.display().to_string()),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = run_async(python().to_str().unwrap(), &refs).await;
    drop(orthanc);
    assert!(ok, "radstream and Orthanc disagree: {out}");
    println!("{out}");
}

/// The DICOM parts of a `multipart/related` answer: each part's transfer syntax (from its
/// Content-Type) and bytes.
pub(crate) fn dicom_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("boundary")
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = split_at_delimiter(body, delimiter.as_bytes());
    text.into_iter()
        .filter(|p| !p.starts_with(b"--"))
        .filter_map(|p| {
            let head_end = p.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&p[..head_end]).to_string();
            let ts = head
                .split(';')
                .find_map(|x| x.trim().strip_prefix("transfer-syntax="))
                .unwrap_or("")
                .trim()
                .to_string();
            let data = &p[head_end + 4..];
            Some((ts, data.strip_suffix(b"\r\n").unwrap_or(data).to_vec()))
        })
        .collect()
}

/// `body` cut at each `delimiter` (the bytes before the first are dropped).
fn split_at_delimiter<'a>(body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut starts: Vec<usize> = body
        .windows(delimiter.len())
        .enumerate()
        .filter(|(_, w)| *w == delimiter)
        .map(|(i, _)| i + delimiter.len())
        .collect();
    starts.push(body.len() + delimiter.len());
    starts
        .windows(2)
        .map(|w| &body[w[0]..w[1] - delimiter.len()])
        .collect()
}

/// Pixel Data's bytes (little endian) of the Part 10 file at `path`.
fn pixel_bytes(path: &std::path::Path) -> Vec<u8> {
    let obj = dicom_object::open_file(path).unwrap();
    obj.element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .into_owned()
}

fn attr(path: &std::path::Path, tag: dicom_core::Tag) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    obj.element(tag)
        .map(|e| e.to_str().unwrap().trim().to_string())
        .unwrap_or_default()
}

/// WADO-RS retrieve in the transfer syntax asked for. Compressed and big endian instances come
/// out in Explicit VR Little Endian with the samples DCMTK's own decoders give; a native one
/// as JPEG-LS lossless that DCMTK decodes back to the stored samples; lossy JPEG keeps its
/// lossy flag; what radstream cannot write is 406, naming what it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieve_rewrites_instances_in_the_transfer_syntax_asked_for() {
    use dicom_dictionary_std::tags;
    const EXPLICIT: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT: &str = "1.2.840.10008.1.2";
    const JPEG_LS: &str = "1.2.840.10008.1.2.4.80";
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let src = crate::helpers::pydicom_files();
    // (file, asked for, how DCMTK makes the reference samples from the stored file)
    let cases = [
        ("MR_small_jpeg_ls_lossless.dcm", EXPLICIT, "dcmdjpls"),
        ("MR_small_RLE.dcm", EXPLICIT, "dcmdrle"),
        ("SC_rgb_rle.dcm", IMPLICIT, "dcmdrle"),
        ("MR_small_bigendian.dcm", EXPLICIT, "dcmconv"),
        ("CT_small.dcm", JPEG_LS, "dcmconv"),
        ("SC_rgb_jpeg_dcmtk.dcm", EXPLICIT, "dcmdjpeg"),
    ];
    let parts: Vec<(&str, Vec<u8>)> = cases
        .iter()
        .map(|(f, _, _)| ("application/dicom", std::fs::read(src.join(f)).unwrap()))
        .collect();
    let (status, v) = stow(
        &app,
        "/dicomweb/studies",
        "multipart/related; type=\"application/dicom\"; boundary=XYZ",
        multipart("XYZ", &parts),
    )
    .await;
    assert_eq!(status, 200, "{v}");

    for (file, ts, reference_tool) in cases {
        let stored = src.join(file);
        let uid = |tag| attr(&stored, tag);
        let url = format!(
            "/dicomweb/studies/{}/series/{}/instances/{}",
            uid(tags::STUDY_INSTANCE_UID),
            uid(tags::SERIES_INSTANCE_UID),
            uid(tags::SOP_INSTANCE_UID)
        );
        let resp = app
            .client()
            .get(app.url(&url))
            .header(
                "Accept",
                format!("multipart/related; type=\"application/dicom\"; transfer-syntax={ts}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{file}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        let body = resp.bytes().await.unwrap();
        let parts = dicom_parts(&ct, &body);
        assert_eq!(parts.len(), 1, "{file}");
        assert_eq!(parts[0].0, ts, "{file}: the part says its transfer syntax");
        let got = dir.path().join(format!("{file}.{ts}.dcm"));
        std::fs::write(&got, &parts[0].1).unwrap();
        let obj = dicom_object::open_file(&got).unwrap();
        assert_eq!(
            obj.meta().transfer_syntax().trim_end_matches('\0'),
            ts,
            "{file}"
        );

        // DCMTK reads what we wrote and makes the reference from what was stored.
        let (ok, out) = run_async("dcmdump", &["-q", got.to_str().unwrap()]).await;
        assert!(ok, "dcmdump {file}: {out}");
        let reference = dir.path().join(format!("{file}.ref.dcm"));
        let args = match reference_tool {
            "dcmconv" => vec!["+te"],
            _ => vec![],
        };
        let mut args: Vec<&str> = args;
        args.extend([stored.to_str().unwrap(), reference.to_str().unwrap()]);
        let (ok, out) = run_async(reference_tool, &args).await;
        assert!(ok, "{reference_tool} {file}: {out}");
        let ours = if ts == JPEG_LS {
            let decoded = dir.path().join(format!("{file}.ours-decoded.dcm"));
            let (ok, out) = run_async(
                "dcmdjpls",
                &[got.to_str().unwrap(), decoded.to_str().unwrap()],
            )
            .await;
            assert!(ok, "dcmdjpls on our JPEG-LS {file}: {out}");
            assert_eq!(
                attr(&decoded, tags::PHOTOMETRIC_INTERPRETATION),
                attr(&stored, tags::PHOTOMETRIC_INTERPRETATION)
            );
            pixel_bytes(&decoded)
        } else {
            pixel_bytes(&got)
        };
        let want = pixel_bytes(&reference);
        assert_eq!(ours.len(), want.len(), "{file}: sample bytes");
        if reference_tool == "dcmdjpeg" {
            // Lossy JPEG: IDCTs may round differently; the flag must survive.
            let worst = ours.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
            assert!(worst.unwrap_or(0) <= 2, "{file}: off by {worst:?}");
            assert_eq!(attr(&got, tags::LOSSY_IMAGE_COMPRESSION), "01", "{file}");
            assert_eq!(
                attr(&got, tags::PHOTOMETRIC_INTERPRETATION),
                "RGB",
                "{file}"
            );
        } else {
            assert!(
                ours == want,
                "{file}: samples differ from {reference_tool}'s"
            );
        }
    }

    // Something radstream does not write: 406, naming what it can.
    let stored = src.join("CT_small.dcm");
    let url = format!(
        "/dicomweb/studies/{}",
        attr(&stored, tags::STUDY_INSTANCE_UID)
    );
    let resp = app
        .client()
        .get(app.url(&url))
        .header(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.100",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 406);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["field"], "Accept");
    let problem = v["error"]["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains(JPEG_LS) && problem.contains("1.2.840.10008.1.2.4.100"),
        "{v}"
    );
}
