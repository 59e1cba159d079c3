//! `storage.backend = "s3"` against a real S3 server (SeaweedFS, [`crate::s3_server`]):
//! what is acknowledged is in the bucket, byte for byte; reads go through the bucket when the
//! node has no copy; an unreachable store refuses instances instead of acknowledging them;
//! a local data folder migrates into the bucket; large objects go up in parts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dicomweb::{dicom_parts, multipart, stow};
use sqlx::Row;

use crate::helpers::{
    data_set_bytes, fixture_copy, new_uid, no_instance_parts_left, on_both_databases,
    radstream_bin, run_async, storescu, write_dx, Db, TestApp,
};
use crate::s3_server::SeaweedFs;

/// The node's file for an instance, relative to its data folder (and its key in the bucket).
fn rel(study: &str, series: &str, sop: &str) -> String {
    format!("instances/{study}/{series}/{sop}.dcm")
}

/// The instance as WADO-RS returns it (the stored file, as stored).
pub(crate) async fn wado_instance(app: &TestApp, study: &str, series: &str, sop: &str) -> Vec<u8> {
    let resp = app
        .client()
        .get(app.url(&format!(
            "/dicomweb/studies/{study}/series/{series}/instances/{sop}"
        )))
        .send()
        .await
        .expect("WADO-RS");
    assert_eq!(resp.status(), 200, "WADO-RS of {sop}");
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp.bytes().await.unwrap();
    let mut parts = dicom_parts(&ct, &body);
    assert_eq!(parts.len(), 1);
    parts.remove(0).1
}

/// `n` small DX instances of one new study; returns (study, series, [(sop, path)]).
fn one_study(dir: &Path, n: usize, size: u16) -> (String, String, Vec<(String, PathBuf)>) {
    let (study, series) = (new_uid(), new_uid());
    let files = (0..n)
        .map(|_| {
            let sop = new_uid();
            let p = write_dx(dir, &study, &series, &sop, size, size);
            (sop, p)
        })
        .collect();
    (study, series, files)
}

on_both_databases!(acknowledged_instances_are_in_the_bucket_and_read_back_through_it => round_trip);

/// A study sent with storescu to a node on S3: every instance is in the bucket (listed and
/// read through the S3 API by a client of the test's own) byte-identical to the node's file,
/// with the data set as sent. With every local copy deleted before the study completes, the
/// pipeline still analyses it (its files fetched back), its SR and overlays go to the bucket
/// too, WADO-RS serves each instance byte-identical to the bucket's object (and the metadata
/// from ranged reads), and a purge deletes the instances' objects.
async fn round_trip(db: Db) {
    let s3 = SeaweedFs::start().await;
    let app = TestApp::spawn_with(db, |s| {
        s3.configure(s);
        // Time to delete the local copies before the study completes.
        s.study.quiet_window_ms = 1_500;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (study, sent) = fixture_copy("cr_cardiomegaly", dir.path(), 2);
    storescu(&app, &sent).await;

    let rows = sqlx::query("SELECT series_uid, sop_instance_uid, file_path FROM instances WHERE study_uid = $1 ORDER BY file_path")
        .bind(&study)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let keys: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get("series_uid"),
                r.get("sop_instance_uid"),
                r.get("file_path"),
            )
        })
        .collect();
    assert_eq!(keys.len(), sent.len());
    let listed = s3.list("instances").await;
    assert_eq!(
        listed.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
        keys.iter().map(|k| k.2.clone()).collect::<Vec<_>>(),
        "every acknowledged instance is in the bucket under its index path, nothing else"
    );
    let mut stored_sets = Vec::new();
    for (_, _, key) in &keys {
        let object = s3.get(key).await;
        let local = app.data_dir.join(key);
        assert_eq!(
            object,
            std::fs::read(&local).unwrap(),
            "{key}: bucket vs spool"
        );
        stored_sets.push(data_set_bytes(&local));
        std::fs::remove_file(&local).unwrap();
    }
    let mut sent_sets: Vec<Vec<u8>> = sent.iter().map(|p| data_set_bytes(p)).collect();
    sent_sets.sort();
    stored_sets.sort();
    assert!(sent_sets == stored_sets, "the data sets as sent");
    no_instance_parts_left(&app.data_dir).await;

    let result = app.wait_result(&study, 1).await;
    assert_eq!(
        result["data"]["status"], "final",
        "the pipeline read the fetched files: {result}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while s3.list("derived").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SR or overlay in the bucket"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (_, _, key) in &keys {
        std::fs::remove_file(app.data_dir.join(key)).ok();
    }
    // Metadata needs headers only: ranged reads, no local copy made.
    let (status, metadata) = app
        .get_json(&format!("/dicomweb/studies/{study}/metadata"))
        .await;
    assert_eq!(status, 200, "{metadata}");
    let sops: Vec<&str> = metadata
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["00080018"]["Value"][0].as_str())
        .collect();
    for (_, sop, key) in &keys {
        assert!(sops.contains(&sop.as_str()), "{sop} in {metadata}");
        assert!(!app.data_dir.join(key).exists(), "{key} fetched whole");
    }
    for (series, sop, key) in &keys {
        let served = wado_instance(&app, &study, series, sop).await;
        assert_eq!(served, s3.get(key).await, "{key}: WADO-RS vs bucket");
    }
    let requests = object_store_requests(&app).await;
    assert!(requests.get("put").is_some_and(|n| *n >= 2), "{requests:?}");

    // A purge removes the received instances' objects; the node's outputs stay.
    let derived = s3.list("derived").await;
    let (status, body) = crate::retention::purge(&app, &study).await;
    assert_eq!(status, 200, "{body}");
    assert!(s3.list("instances").await.is_empty());
    assert_eq!(s3.list("derived").await, derived);
}

/// With the object store down, a C-STORE is refused (A7xx) and a STOW-RS gets 503; nothing is
/// indexed and no file is left. Once the store is back, the same instances are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_refuses_instances_until_it_is_back() {
    let mut s3 = SeaweedFs::start().await;
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s3.configure(s);
        s.pipeline.enabled = false;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (study, series, files) = one_study(dir.path(), 2, 32);
    s3.stop().await;

    let port = app.dicom_port();
    let first = files[0].1.display().to_string();
    let t = std::time::Instant::now();
    let (ok, out) = run_async(
        "storescu",
        &["-aec", "RADSTREAM", "127.0.0.1", &port, &first],
    )
    .await;
    assert!(
        !ok || out.contains("A7") || out.contains("Out of Resources"),
        "{out}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "refused in {:?}",
        t.elapsed()
    );
    let ct = "multipart/related; type=\"application/dicom\"; boundary=XYZ";
    let body = multipart(
        "XYZ",
        &[("application/dicom", std::fs::read(&files[1].1).unwrap())],
    );
    let (status, v) = stow(&app, "/dicomweb/studies", ct, body.clone()).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 0);
    for (sop, _) in &files {
        assert!(!app.data_dir.join(rel(&study, &series, sop)).exists());
    }
    no_instance_parts_left(&app.data_dir).await;

    s3.start_again().await;
    storescu(&app, &[files[0].1.clone()]).await;
    let (status, v) = stow(&app, "/dicomweb/studies", ct, body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(app.count("SELECT COUNT(*) FROM instances").await, 2);
    assert_eq!(s3.list("instances").await.len(), 2);
}

on_both_databases!(a_local_data_folder_migrates_into_the_bucket => migration);

/// `radstream storage migrate-to-s3` copies a local node's instances into the bucket
/// (again: nothing to copy), and a node on S3 using the same database, with an empty data
/// folder of its own, serves them byte-identical.
async fn migration(db: Db) {
    let s3 = SeaweedFs::start().await;
    let mut local = TestApp::spawn_with(db, |s| s.pipeline.enabled = false).await;
    let dir = tempfile::tempdir().unwrap();
    let (study, series, files) = one_study(dir.path(), 3, 32);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.1.clone()).collect();
    storescu(&local, &paths).await;
    local.stop().await;
    let db_url = local.settings.database_url();

    let migrate = || {
        let mut cmd = tokio::process::Command::new(radstream_bin());
        cmd.args(["storage", "migrate-to-s3"])
            .env("RADSTREAM_STORAGE__DATA_DIR", &local.data_dir)
            .env("RADSTREAM_DATABASE__URL", &db_url)
            .env("RADSTREAM_LOG__LEVEL", "warn");
        for (k, v) in s3.env() {
            cmd.env(k, v);
        }
        cmd.env("RADSTREAM_STORAGE__BACKEND", "local");
        cmd
    };
    let out = migrate().output().await.expect("radstream");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("uploaded 3 "), "{stdout}");
    let again = migrate().output().await.expect("radstream");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("uploaded 0 ") && stdout.contains("already there 3"),
        "{stdout}"
    );

    let node = TestApp::spawn_with(Db::Sqlite, |s| {
        s3.configure(s);
        s.pipeline.enabled = false;
        // The local node's database, SQLite or PostgreSQL.
        s.database.url = Some(db_url.clone().into());
    })
    .await;
    for (sop, _) in &files {
        let key = rel(&study, &series, sop);
        assert!(!node.data_dir.join(&key).exists());
        let served = wado_instance(&node, &study, &series, sop).await;
        assert_eq!(
            served,
            std::fs::read(local.data_dir.join(&key)).unwrap(),
            "{key}"
        );
    }

    // Sent again, an instance held only in the bucket is kept (on_duplicate = "keep"): looked
    // up there, not uploaded again.
    std::fs::remove_file(node.data_dir.join(rel(&study, &series, &files[0].0))).unwrap();
    storescu(&node, &[files[0].1.clone()]).await;
    let requests = object_store_requests(&node).await;
    assert_eq!(requests.get("put"), Some(&0), "{requests:?}");
    assert!(
        requests.get("head").is_some_and(|n| *n >= 1),
        "{requests:?}"
    );
    assert_eq!(node.count("SELECT COUNT(*) FROM instances").await, 3);
}

/// The node's `radstream_object_store_requests_total`, by operation.
async fn object_store_requests(app: &TestApp) -> std::collections::BTreeMap<String, u64> {
    let text = app
        .client()
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    crate::helpers::without_node_label(&text)
        .lines()
        .filter_map(|l| l.strip_prefix("radstream_object_store_requests_total{operation=\""))
        .filter_map(|l| {
            let (op, n) = l.split_once("\"} ")?;
            Some((op.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

/// An instance above the multipart threshold goes up in parts (the node counts them) and is
/// byte-identical in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_instance_goes_up_in_parts_byte_identical() {
    let s3 = SeaweedFs::start().await;
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s3.configure(s);
        s.pipeline.enabled = false;
        s.storage.s3.multipart_threshold_bytes = 1 << 20;
        s.storage.s3.multipart_part_bytes = 5 << 20;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // 2600 x 2600 x 2 bytes: about 13.5 MB, three parts.
    let (study, series, files) = one_study(dir.path(), 1, 2600);
    storescu(&app, &[files[0].1.clone()]).await;
    let key = rel(&study, &series, &files[0].0);
    let local = std::fs::read(app.data_dir.join(&key)).unwrap();
    assert!(local.len() > 10 << 20);
    assert_eq!(s3.get(&key).await, local);
    let requests = object_store_requests(&app).await;
    assert_eq!(requests.get("part"), Some(&3), "{requests:?}");
    assert_eq!(requests.get("put"), Some(&0), "{requests:?}");
}
