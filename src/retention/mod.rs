//! Retention: the instances a study was sent are removed once it is done with, so a node
//! beside a PACS does not fill its disk and then refuse everything with A700.
//!
//! What goes: the received instances (rows and files). What stays: the study row (marked
//! `purged_at`), its results, jobs and events, and the SR and overlays the node derived (they
//! are the node's output, and FHIR and the outbox name them). A study is only purged while
//! nothing needs its images: complete, no job queued or running, no SR/overlay still to be
//! generated. Sent again, it is received and analysed as a new version.
//!
//! Each purge runs in one write transaction (the checks, the rows, `study.purged`), with every
//! instance held as a store of it would hold it ([`Store::hold`]); the files are unlinked after
//! the commit, still under the holds, so a copy re-sent meanwhile is never the file removed. A
//! crash between commit and unlink leaves files no row names: disk space, not data.
//!
//! `[retention] keep_days` (0: off) purges studies last received before then, every
//! `interval_secs`; `DELETE /v1/studies/{uid}/instances` (admin) purges one now.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::db::{now_ms, Backend, Database};
use crate::events::{self, EventBus, EventType};
use crate::store::Store;

/// `[retention]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Days after a study was last received that its instances are removed; 0 keeps them.
    pub keep_days: u32,
    /// Seconds between two passes of the background purge.
    pub interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            keep_days: 0,
            interval_secs: 3600,
        }
    }
}

/// Why a study was not purged.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("study {0} not found")]
    NotFound(String),
    /// Something still needs the images; the reason says what.
    #[error("study {study_uid} is in use: {reason}")]
    Busy { study_uid: String, reason: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What one purge removed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Purged {
    pub study_uid: String,
    pub instances_removed: usize,
    pub bytes_freed: i64,
    /// RFC 3339, UTC.
    pub purged_at: String,
}

/// Removes the received instances of `study_uid` now (see the module documentation).
#[tracing::instrument(skip(store, db, bus), fields(study_uid))]
pub async fn purge_study(
    store: &Store,
    db: &Database,
    bus: &EventBus,
    study_uid: &str,
    by: &str,
) -> Result<Purged, PurgeError> {
    let rows = sqlx::query(
        "SELECT sop_instance_uid, file_path, file_size FROM instances \
         WHERE study_uid = $1 AND association_id NOT LIKE 'derived:%' \
         ORDER BY sop_instance_uid",
    )
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await?;
    let listed: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let sops: Vec<String> = listed.iter().map(|(s, _, _)| s.clone()).collect();
    let holds = store.hold(&sops).await;

    let mut tx = db.begin_write().await?;
    let lock = match db.backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let status: Option<String> = sqlx::query_scalar(&format!(
        "SELECT status FROM studies WHERE study_uid = $1{lock}"
    ))
    .bind(study_uid)
    .fetch_optional(&mut *tx)
    .await?;
    let busy = |reason: &str| PurgeError::Busy {
        study_uid: study_uid.to_string(),
        reason: reason.to_string(),
    };
    match status.as_deref() {
        None => return Err(PurgeError::NotFound(study_uid.to_string())),
        Some("complete") => {}
        Some(_) => return Err(busy("it is still being received")),
    }
    let jobs: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE study_uid = $1 AND state IN ('queued', 'running')",
    )
    .bind(study_uid)
    .fetch_one(&mut *tx)
    .await?;
    if jobs > 0 {
        return Err(busy("a job on it is queued or running"));
    }
    let outputs: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM report_outputs o JOIN results r ON r.id = o.result_id \
         WHERE r.study_uid = $1 AND o.state = 'pending'",
    )
    .bind(study_uid)
    .fetch_one(&mut *tx)
    .await?;
    if outputs > 0 {
        return Err(busy("its SR or overlay is still to be generated"));
    }

    let mut removed: Vec<(PathBuf, i64)> = Vec::with_capacity(listed.len());
    for (sop, path, size) in &listed {
        let r = sqlx::query(
            "DELETE FROM instances WHERE sop_instance_uid = $1 AND study_uid = $2 \
             AND file_path = $3",
        )
        .bind(sop)
        .bind(study_uid)
        .bind(path)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            removed.push((store.files.absolute(std::path::Path::new(path)), *size));
        }
    }
    sqlx::query(
        "DELETE FROM series WHERE study_uid = $1 AND NOT EXISTS \
         (SELECT 1 FROM instances i WHERE i.series_uid = series.series_uid)",
    )
    .bind(study_uid)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE series SET num_instances = \
         (SELECT COUNT(*) FROM instances i WHERE i.series_uid = series.series_uid) \
         WHERE study_uid = $1",
    )
    .bind(study_uid)
    .execute(&mut *tx)
    .await?;
    let now = now_ms();
    let patient_id: Option<String> = sqlx::query_scalar(
        "UPDATE studies SET purged_at = $2, updated_at = $2, \
           num_instances = (SELECT COUNT(*) FROM instances WHERE study_uid = $1), \
           num_series = (SELECT COUNT(*) FROM series WHERE study_uid = $1) \
         WHERE study_uid = $1 RETURNING patient_id",
    )
    .bind(study_uid)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let bytes: i64 = removed.iter().map(|(_, s)| s).sum();
    events::append(
        &mut tx,
        db.backend,
        EventType::StudyPurged,
        Some(study_uid),
        patient_id.as_deref(),
        &json!({
            "study_uid": study_uid,
            "instances_removed": removed.len(),
            "bytes_freed": bytes,
            "by": by,
        }),
    )
    .await?;
    tx.commit().await?;
    bus.notify();

    let count = removed.len();
    let unlinked = tokio::task::spawn_blocking(move || unlink(removed)).await;
    drop(holds);
    match unlinked {
        Ok(failed) if failed > 0 => {
            tracing::warn!(
                failed,
                "instance files could not be removed; their rows are gone"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "removing instance files failed"),
    }
    tracing::info!(instances = count, bytes, by, "study purged");
    Ok(Purged {
        study_uid: study_uid.to_string(),
        instances_removed: count,
        bytes_freed: bytes,
        purged_at: crate::db::format_ms(now),
    })
}

/// Unlinks the files, then their series and study folders where left empty; returns how
/// many files could not be removed (a file already gone counts as removed).
fn unlink(files: Vec<(PathBuf, i64)>) -> usize {
    let mut failed = 0;
    let mut folders = std::collections::BTreeSet::new();
    for (path, _) in files {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                failed += 1;
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an instance file");
            }
        }
        if let Some(series) = path.parent() {
            folders.insert(series.to_path_buf());
            if let Some(study) = series.parent() {
                folders.insert(study.to_path_buf());
            }
        }
    }
    // Deepest first; a folder something else was written into meanwhile stays.
    for folder in folders.iter().rev() {
        let _ = std::fs::remove_dir(folder);
    }
    failed
}

/// The background purge of `[retention] keep_days`.
pub struct Retention {
    pub store: Store,
    pub db: Database,
    pub bus: EventBus,
    pub settings: RetentionSettings,
}

impl Retention {
    /// Purges, every `interval_secs`, the studies last received more than `keep_days`
    /// ago, oldest first; a busy one is left for the next pass.
    pub async fn run(self, cancel: CancellationToken) {
        let every = Duration::from_secs(self.settings.interval_secs.max(1));
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "retention pass failed");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One pass at the current time; returns the studies purged.
    pub async fn pass(&self) -> Result<Vec<Purged>, sqlx::Error> {
        let cutoff = now_ms() - i64::from(self.settings.keep_days) * 86_400_000;
        let mut purged = Vec::new();
        loop {
            let due: Vec<String> = sqlx::query_scalar(
                "SELECT study_uid FROM studies WHERE status = 'complete' AND purged_at IS NULL \
                 AND last_received_at < $1 ORDER BY last_received_at LIMIT 100",
            )
            .bind(cutoff)
            .fetch_all(&self.db.pool)
            .await?;
            let mut progressed = false;
            for uid in &due {
                match purge_study(&self.store, &self.db, &self.bus, uid, "retention").await {
                    Ok(p) => {
                        progressed = true;
                        purged.push(p);
                    }
                    Err(PurgeError::Busy { reason, .. }) => {
                        tracing::debug!(study_uid = %uid, reason, "not purged yet");
                    }
                    Err(PurgeError::NotFound(_)) => {}
                    Err(PurgeError::Database(e)) => return Err(e),
                }
            }
            if due.len() < 100 || !progressed {
                return Ok(purged);
            }
        }
    }
}
