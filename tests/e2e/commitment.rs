//! Storage Commitment (PS3.4 Annex J) on a DICOM destination, with Orthanc as the PACS (its
//! storage commitment SCP answers on a new association to our listener): an export is sent
//! only once committed, and a commitment failure (Orthanc drops the instance as soon as it is
//! stored) is retried, then dead-lettered with the failure reason.

use std::time::Duration;

use radstream::export::{DestinationKind, OutputKind};
use serde_json::{json, Value};

use crate::export_http::{destination, exports};
use crate::helpers::*;

/// Waits until every row of `destination` is in `state` (at least one row).
async fn wait_state(app: &TestApp, destination: &str, state: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let rows = exports(app, destination).await;
        if !rows.is_empty() && rows.iter().all(|r| r["state"] == state) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all {state} at {destination}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A node exporting to Orthanc on `orthanc_dicom` with Storage Commitment.
async fn node(orthanc_dicom: u16, outputs: Vec<OutputKind>, max_attempts: u32) -> TestApp {
    TestApp::spawn_with(Db::Sqlite, |s| {
        s.export.retry_base_ms = 200;
        s.export.retry_max_ms = 500;
        s.export.poll_ms = 100;
        s.export.timeout_secs = 15;
        let mut pacs = destination("pacs", DestinationKind::Dicom);
        pacs.ae_title = Some("ORTHANC".into());
        pacs.host = Some("127.0.0.1".into());
        pacs.port = Some(orthanc_dicom);
        pacs.outputs = outputs;
        pacs.max_attempts = Some(max_attempts);
        pacs.storage_commitment = true;
        s.export.destinations = vec![pacs];
    })
    .await
}

/// Orthanc knowing our node (so it can open the association carrying the report).
fn orthanc(
    dir: &std::path::Path,
    dicom: u16,
    http: u16,
    app: &TestApp,
    lua: Option<&str>,
) -> Orthanc {
    let mut extra = json!({
        "DicomModalities": { "radstream": ["RADSTREAM", "127.0.0.1", app.dicom.port()] },
    });
    if let Some(script) = lua {
        let path = dir.join(format!("orthanc-{http}.lua"));
        std::fs::write(&path, script).unwrap();
        extra["LuaScripts"] = json!([path]);
    }
    Orthanc::start_with(dir, dicom, http, false, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_sent_once_orthanc_commits_them() {
    let dir = tempfile::tempdir().unwrap();
    let (dicom, http) = (free_port(), free_port());
    let app = node(dicom, vec![], 1000).await;
    let _orthanc = orthanc(dir.path(), dicom, http, &app, None);
    let (study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu(&app, &files).await;

    let rows = wait_state(&app, "pacs", "sent").await;
    let outputs: Vec<&str> = rows.iter().map(|r| r["output"].as_str().unwrap()).collect();
    assert!(
        outputs.contains(&"sr") && outputs.contains(&"overlay"),
        "{outputs:?}"
    );
    for r in &rows {
        let committed = r["committed_at"]
            .as_i64()
            .unwrap_or_else(|| panic!("not committed: {r}"));
        assert!(committed <= r["sent_at"].as_i64().unwrap(), "{r}");
    }
    let reports: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.state, c.reported_by FROM storage_commitments c \
         JOIN exports e ON e.id = c.export_id WHERE e.study_uid = $1",
    )
    .bind(&study)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(reports.len() >= rows.len(), "{reports:?}");
    let committed = reports.iter().filter(|(s, _)| s == "committed").count();
    assert_eq!(committed, rows.len(), "{reports:?}");
    assert!(
        reports.iter().all(|(_, by)| by == "ORTHANC"),
        "reported by Orthanc on its own association: {reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commitment_failure_is_retried_then_dead_lettered_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (dicom, http) = (free_port(), free_port());
    let app = node(dicom, vec![OutputKind::Sr], 2).await;
    // Orthanc answers the C-STORE, then forgets the instance: the commitment finds nothing.
    let lua = "function OnStoredInstance(instanceId, tags, metadata, origin)\n  \
               RestApiDelete('/instances/' .. instanceId)\nend\n";
    let _orthanc = orthanc(dir.path(), dicom, http, &app, Some(lua));
    let (_study, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu(&app, &files).await;

    let rows = wait_state(&app, "pacs", "dead").await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r["attempts"], 2, "{r}");
    assert!(r["committed_at"].is_null(), "{r}");
    let why = r["last_error"].as_str().unwrap();
    assert!(
        why.contains("storage commitment failed")
            && why.contains("0112H (no such object instance)"),
        "{why}"
    );
}
