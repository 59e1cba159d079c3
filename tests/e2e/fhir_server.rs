//! The FHIR push against a real FHIR R4 server, helios-hfs (crates.io; built by
//! `scripts/setup.sh --peers hfs` into ~/.cache/radstream/peers/hfs, about 40 minutes, so CI
//! does not build it and these tests say SKIP without it). The pushed DiagnosticReport and
//! Observations are read back by search (`identifier`, `status`, `subject`) and must equal
//! what the node serves; a retry while hfs is down delivers once it is up; a superseding
//! result version withdraws the earlier one (entered-in-error) under the same ids.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use radstream::export::DestinationKind;
use serde_json::Value;

use crate::export_http::{destination, exports, wait_sent};
use crate::helpers::*;

/// The hfs folder: `RADSTREAM_HFS_DIR`, else `peers/hfs` in the setup's cache (where
/// `scripts/setup.sh --peers hfs` builds it).
fn hfs_dir() -> PathBuf {
    std::env::var_os("RADSTREAM_HFS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| radstream_cache().join("peers/hfs"))
}

/// The binary and the search parameters, or why the test is skipped.
fn hfs_files() -> Result<(PathBuf, PathBuf), String> {
    let dir = hfs_dir();
    let bin = dir.join("bin/hfs");
    let params = dir.join("search-parameters-r4.json");
    if !bin.is_file() {
        return Err(format!("{} is missing", bin.display()));
    }
    if !params.is_file() {
        return Err(format!("{} is missing", params.display()));
    }
    Ok((bin, params))
}

struct Hfs(Child);
impl Drop for Hfs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts hfs on `port` with its database and data under `dir` (kept across restarts).
async fn start_hfs(bin: &PathBuf, params: &PathBuf, dir: &std::path::Path, port: u16) -> Hfs {
    let data = dir.join("hfs-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(params, data.join("search-parameters-r4.json")).unwrap();
    let log = std::fs::File::create(dir.join("hfs.log")).unwrap();
    let child = Command::new(bin)
        .env("HFS_UI_ENABLED", "false")
        .env("HFS_BASE_URL", format!("http://127.0.0.1:{port}"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--database-url",
        ])
        .arg(dir.join("hfs.db"))
        .arg("--data-dir")
        .arg(&data)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start hfs");
    let hfs = Hfs(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let up = reqwest::get(format!("http://127.0.0.1:{port}/metadata")).await;
        if up.is_ok_and(|r| r.status().is_success()) {
            return hfs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hfs did not start; see {}",
            dir.join("hfs.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A search at hfs; returns the matched resources.
async fn search(port: u16, resource: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/{resource}"))
        .query(params)
        .query(&[("_count", "200")])
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "search {resource}: {}",
        resp.status()
    );
    let bundle: Value = resp.json().await.unwrap();
    assert_eq!(bundle["type"], "searchset", "{bundle}");
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|x| x["resource"].clone()).collect())
        .unwrap_or_default()
}

/// A resource without `meta` (the server keeps its own version and time there).
fn content(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("meta");
    }
    v
}

async fn ours(app: &TestApp, path: &str) -> Value {
    let (status, v) = app.get_json(path).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_pushed_to_hfs_reads_back_equal_and_a_new_version_withdraws_the_old() {
    let (bin, params) = match hfs_files() {
        Ok(f) => f,
        Err(why) => {
            eprintln!(
                "SKIP fhir_server: helios-hfs is not built ({why}); run scripts/setup.sh --peers hfs"
            );
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.export.retry_base_ms = 300;
        s.export.retry_max_ms = 1000;
        s.export.poll_ms = 100;
        s.export.timeout_secs = 10;
        let mut ehr = destination("hfs", DestinationKind::Fhir);
        ehr.url = Some(format!("http://127.0.0.1:{port}"));
        s.export.destinations = vec![ehr];
    })
    .await;
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu(&app, &files).await;

    // hfs is down: the push fails and stays pending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rows = exports(&app, "hfs").await;
        if rows
            .first()
            .is_some_and(|r| r["attempts"].as_i64() >= Some(1))
        {
            assert_eq!(rows[0]["state"], "pending", "{rows:?}");
            assert!(rows[0]["last_error"].as_str().is_some(), "{rows:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hfs = start_hfs(&bin, &params, dir.path(), port).await;
    let rows = wait_sent(&app, "hfs", 1).await;
    let report_key = rows[0]["sop_instance_uid"].as_str().unwrap().to_string();
    let report_id = report_key
        .trim_start_matches("DiagnosticReport/")
        .to_string();

    let mine = ours(&app, &format!("/fhir/{report_key}")).await;
    let subject = mine["subject"]["reference"].as_str().unwrap().to_string();
    let identifier = format!("urn:dicom:uid|urn:oid:{study}");
    let found = search(
        port,
        "DiagnosticReport",
        &[
            ("identifier", &identifier),
            ("status", "final"),
            ("subject", &subject),
        ],
    )
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(content(found[0].clone()), content(mine.clone()));
    // Every Observation the report lists, by subject and status, equal to ours.
    let observations = search(
        port,
        "Observation",
        &[("subject", &subject), ("status", "final")],
    )
    .await;
    let listed: Vec<&str> = mine["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    assert_eq!(observations.len(), listed.len(), "{observations:?}");
    for o in &observations {
        let path = format!("Observation/{}", o["id"].as_str().unwrap());
        assert!(listed.contains(&path.as_str()), "{path} not in {listed:?}");
        assert_eq!(
            content(o.clone()),
            content(ours(&app, &format!("/fhir/{path}")).await)
        );
    }
    // The searches filter (the search parameters file is loaded): nothing is preliminary.
    assert!(
        search(port, "DiagnosticReport", &[("status", "preliminary")])
            .await
            .is_empty()
    );

    // A superseding version: the new report is final, the old one entered-in-error.
    let resp = app
        .client()
        .post(app.url(&format!("/v1/studies/{study}/reprocess")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let rows = wait_sent(&app, "hfs", 2).await;
    let new_key = rows
        .iter()
        .map(|r| r["sop_instance_uid"].as_str().unwrap())
        .find(|k| *k != report_key)
        .unwrap()
        .to_string();
    let finals = search(
        port,
        "DiagnosticReport",
        &[("identifier", &identifier), ("status", "final")],
    )
    .await;
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_eq!(
        format!("DiagnosticReport/{}", finals[0]["id"].as_str().unwrap()),
        new_key
    );
    assert_eq!(
        content(finals[0].clone()),
        content(ours(&app, &format!("/fhir/{new_key}")).await)
    );
    let old = search(
        port,
        "DiagnosticReport",
        &[("identifier", &identifier), ("status", "entered-in-error")],
    )
    .await;
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(old[0]["id"], report_id.as_str());
    assert_eq!(
        content(old[0].clone()),
        content(ours(&app, &format!("/fhir/{report_key}")).await)
    );
    drop(hfs);
}
