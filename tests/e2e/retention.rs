//! Retention: DCMTK sends a study, it gets its result; the received instances are removed on
//! request (admin) and by the background purge once `keep_days` have passed, while the
//! results stay; sent again, the study comes back as a new version.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// `DELETE …/instances`, retried while the study's SR/overlay are still being generated.
pub(crate) async fn purge(app: &TestApp, study: &str) -> (u16, Value) {
    for _ in 0..120 {
        let resp = app
            .client()
            .delete(app.url(&format!("/v1/studies/{study}/instances")))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let generating = body["error"]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("to be generated"));
        if !(status == 409 && generating) {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{study}: outputs never generated");
}

/// The absolute paths of the study's received instance files.
async fn received_files(app: &TestApp, study: &str) -> Vec<std::path::PathBuf> {
    let rel: Vec<String> = sqlx::query_scalar(
        "SELECT file_path FROM instances WHERE study_uid = $1 \
         AND association_id NOT LIKE 'derived:%'",
    )
    .bind(study)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    rel.iter().map(|p| app.data_dir.join(p)).collect()
}

/// Sends the two-image fixture study; returns its UID, the files sent and the stored files.
async fn sent_study(
    app: &TestApp,
    dir: &std::path::Path,
) -> (String, Vec<std::path::PathBuf>, Vec<std::path::PathBuf>) {
    let (study, files) = fixture_copy("cr_cardiomegaly", dir, 1);
    storescu(app, &files).await;
    app.wait_complete(&study, 30).await;
    let stored = received_files(app, &study).await;
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|p| p.exists()));
    (study, files, stored)
}

/// Waits up to `secs` for every one of `paths` to be gone.
async fn wait_gone(paths: &[std::path::PathBuf], secs: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while paths.iter().any(|p| p.exists()) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

on_both_databases!(received_instances_go_results_stay_and_a_resent_study_comes_back => purge_and_resend);

async fn purge_and_resend(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.retention.keep_days = 1;
        s.retention.interval_secs = 1;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (study, files, stored) = sent_study(&app, dir.path()).await;
    let first = app.wait_result(&study, 1).await;

    // Only an administrator may purge; an unknown study is 404; a study being received is
    // refused with the reason.
    let resp = reqwest::Client::new()
        .delete(app.url(&format!("/v1/studies/{study}/instances")))
        .bearer_auth(app.token(&[radstream::auth::Scope::ResultsRead]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let (status, _) = purge(&app, "1.2.3.4.5.6.7").await;
    assert_eq!(status, 404);
    let set_status = |s: &'static str| {
        let db = app.db.clone();
        let study = study.clone();
        async move {
            sqlx::query("UPDATE studies SET status = $1 WHERE study_uid = $2")
                .bind(s)
                .bind(&study)
                .execute(&db.pool)
                .await
                .unwrap();
        }
    };
    set_status("receiving").await;
    let (status, body) = purge(&app, &study).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["field"], "study_uid");
    assert!(
        body["error"]["problem"]
            .as_str()
            .unwrap()
            .contains("still being received"),
        "{body}"
    );
    set_status("complete").await;

    // Purged on request: rows and files go, the result stays.
    let (status, body) = purge(&app, &study).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["instances_removed"], 2);
    assert!(body["data"]["bytes_freed"].as_i64().unwrap() > 1_000_000);
    assert!(stored.iter().all(|p| !p.exists()), "files removed");
    assert!(received_files(&app, &study).await.is_empty());
    let (status, now) = app.get_json(&format!("/v1/studies/{study}/results")).await;
    assert_eq!(status, 200);
    assert_eq!(now["data"]["id"], first["data"]["id"], "the result stays");
    let (_, detail) = app.get_json(&format!("/v1/studies/{study}")).await;
    assert!(detail["data"]["purged_at"].is_string(), "{detail}");
    let sent = dicom_object::open_file(&files[0]).unwrap();
    let uid = |tag| {
        sent.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    let resp = app
        .client()
        .get(app.url(&format!(
            "/dicomweb/studies/{study}/series/{}/instances/{}",
            uid(dicom_dictionary_std::tags::SERIES_INSTANCE_UID),
            uid(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404, "WADO-RS no longer finds it");
    let resp = app
        .client()
        .post(app.url(&format!("/v1/studies/{study}/reprocess")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409, "nothing left to analyse");
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM events WHERE type = 'study.purged' AND study_uid = '{study}'"
        ))
        .await,
        1
    );

    // Sent again: a new version, analysed, not purged.
    storescu(&app, &files).await;
    app.wait_result(&study, 2).await;
    let (_, detail) = app.get_json(&format!("/v1/studies/{study}")).await;
    assert!(detail["data"]["purged_at"].is_null(), "{detail}");
    let again = received_files(&app, &study).await;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|p| p.exists()));

    // The background purge takes it once it is older than keep_days (here: made so).
    sqlx::query("UPDATE studies SET last_received_at = last_received_at - 2 * 86400000 WHERE study_uid = $1")
        .bind(&study)
        .execute(&app.db.pool)
        .await
        .unwrap();
    wait_gone(&again, 30, "the background purge did not run").await;
    assert!(received_files(&app, &study).await.is_empty());
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM events WHERE type = 'study.purged' AND study_uid = '{study}'"
        ))
        .await,
        2
    );
    let (status, _) = app.get_json(&format!("/v1/studies/{study}/results")).await;
    assert_eq!(status, 200);
}

/// `kill -9` between a purge's commit and the removal of its files leaves them listed in
/// `purged_files`: the next start removes them before it accepts anything, and forgets (does
/// not remove) a listed path that the index names again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_finishes_removing_the_files_of_an_interrupted_purge() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (dicom_port, http_port) = (free_port(), free_port());
    let start = || {
        spawn_node(
            &data,
            dicom_port,
            http_port,
            &[("RADSTREAM_PIPELINE__ENABLED", "false".into())],
        )
    };
    let mut node = start();
    crate::ingest::wait_port(dicom_port).await;
    let (study, files) = fixture_copy("dx_normal", &dir.path().join("src"), 1);
    storescu_to(dicom_port, &[], &files).await;
    node.start_kill().unwrap();
    node.wait().await.unwrap();

    let db = radstream::db::Database::connect_url(
        &format!("sqlite://{}?mode=rwc", data.join("radstream.db").display()),
        Some(1),
        radstream::db::Durability::Fsync,
    )
    .await
    .unwrap();
    let paths: Vec<String> = sqlx::query_scalar(
        "SELECT file_path FROM instances WHERE study_uid = $1 ORDER BY file_path",
    )
    .bind(&study)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(paths.len(), 2);
    // What a purge's commit leaves: the first row gone and listed; the second listed while
    // its row is back (an instance stored again after an unlink that failed).
    sqlx::query("DELETE FROM instances WHERE file_path = $1")
        .bind(&paths[0])
        .execute(&db.pool)
        .await
        .unwrap();
    for p in &paths {
        sqlx::query(
            "INSERT INTO purged_files (file_path, study_uid, created_at) VALUES ($1, $2, 0)",
        )
        .bind(p)
        .bind(&study)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    assert!(paths.iter().all(|p| data.join(p).exists()));

    let mut node = start();
    crate::ingest::wait_port(http_port).await;
    assert!(!data.join(&paths[0]).exists(), "the listed file is removed");
    assert!(data.join(&paths[1]).exists(), "an indexed file is kept");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM purged_files").await, 0);
    node.start_kill().unwrap();
    let _ = node.wait().await;
}

/// Below `free_percent_target` (here 100 %, so always) the background pass purges studies
/// whatever their age, once nothing needs their images; the result stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_free_space_purges_the_least_recently_received_studies() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.retention.free_percent_target = 100.0;
        s.retention.interval_secs = 1;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (study, _, stored) = sent_study(&app, dir.path()).await;
    wait_gone(&stored, 60, "not purged for free space").await;
    // Purged only once its job was done: the result is there.
    let (status, body) = app.get_json(&format!("/v1/studies/{study}/results")).await;
    assert_eq!(status, 200, "{body}");
    let (_, detail) = app.get_json(&format!("/v1/studies/{study}")).await;
    assert!(detail["data"]["purged_at"].is_string(), "{detail}");
}
