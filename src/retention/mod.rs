//! Retention: the instances a study was sent are removed once it is done with, so a node
//! beside a PACS does not fill its disk and then refuse everything with A700.
//!
//! What goes: the received instances (rows and files). What stays: the study row (marked
//! `purged_at`), its results, jobs and events, and the SR and overlays the node derived (they
//! are the node's output, and FHIR and the outbox name them). A study is only purged while
//! nothing needs its images: complete, no job queued or running, no SR/overlay still to be
//! generated. Sent again, it is received and analysed as a new version.
//!
//! Each purge runs in one write transaction (the checks, the rows, `study.purged`, and the
//! files to remove in `purged_files`), with every instance held as a store of it would hold it
//! ([`Store::hold`]); the files are unlinked after the commit, still under the holds, so a
//! copy re-sent meanwhile is never the file removed. A crash between the commit and the
//! unlink leaves `purged_files` rows, which the next start removes ([`finish_interrupted`])
//! before it accepts anything.
//!
//! `[retention] keep_days` (0: off) purges studies last received before then, and
//! `free_percent_target` (0: off) purges the least recently received ones while the volume's
//! free space is below it, every `interval_secs`; `DELETE /v1/studies/{uid}/instances` (admin) purges one now.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::db::Database;
use crate::events::{self, EventBus, EventType};
use crate::store::index;
use crate::store::Store;

/// `[retention]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Days after a study was last received that its instances are removed; 0 keeps them.
    pub keep_days: u32,
    /// Free space (percent of the data folder's volume) that each pass restores, whatever
    /// their age, by purging the least recently received studies first; 0 turns it off.
    /// Above `storage.min_free_percent`, so the node frees room before it must refuse.
    pub free_percent_target: f64,
    /// Seconds between two passes of the background purge.
    pub interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            keep_days: 0,
            free_percent_target: 0.0,
            interval_secs: 3600,
        }
    }
}

impl RetentionSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.interval_secs == 0 {
            return Err(("retention.interval_secs", "must be at least 1".into()));
        }
        if !(0.0..=100.0).contains(&self.free_percent_target) {
            return Err((
                "retention.free_percent_target",
                "must be in [0, 100]".into(),
            ));
        }
        Ok(())
    }

    /// Whether these settings ask for a background purge at all.
    pub fn purges_in_background(&self) -> bool {
        self.keep_days > 0 || self.free_percent_target > 0.0
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
#[tracing::instrument(skip(store, db, bus))]
pub async fn purge_study(
    store: &Store,
    db: &Database,
    bus: &EventBus,
    study_uid: &str,
    by: &str,
) -> Result<Purged, PurgeError> {
    let listed = index::received_files(db, study_uid).await?;
    let sops: Vec<String> = listed.iter().map(|f| f.sop_instance_uid.clone()).collect();
    let holds = store.hold(&sops).await;

    let mut tx = db.begin_write().await?;
    let status = index::lock_status(&mut tx, db.backend, study_uid).await?;
    let busy = |reason: &str| PurgeError::Busy {
        study_uid: study_uid.to_string(),
        reason: reason.to_string(),
    };
    match status.as_deref() {
        None => return Err(PurgeError::NotFound(study_uid.to_string())),
        Some("complete") => {}
        Some(_) => return Err(busy("it is still being received")),
    }
    if crate::job::study_busy(&mut tx, study_uid).await? {
        return Err(busy("a job on it is queued or running"));
    }
    // The report worker's table, read here: `report` sits above the API (report -> fhir -> api),
    // which calls this module, so importing it would close a cycle.
    let outputs: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM report_outputs WHERE study_uid = $1 AND state = 'pending'",
    )
    .bind(study_uid)
    .fetch_one(&mut *tx)
    .await?;
    if outputs > 0 {
        return Err(busy("its SR or overlay is still to be generated"));
    }

    let removed = index::remove_received(&mut tx, study_uid, &listed).await?;
    let now = now_ms();
    let patient_id = index::mark_purged(&mut tx, study_uid, now).await?;
    let bytes: i64 = removed.iter().map(|f| f.file_size).sum();
    for path in removed.iter().map(|f| &f.file_path) {
        sqlx::query(
            "INSERT INTO purged_files (file_path, study_uid, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (file_path) DO NOTHING",
        )
        .bind(path)
        .bind(study_uid)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
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
    let paths: Vec<String> = removed.into_iter().map(|f| f.file_path.clone()).collect();
    remove_files(db, store, paths).await?;
    drop(holds);
    tracing::info!(instances = count, bytes, by, "study purged");
    Ok(Purged {
        study_uid: study_uid.to_string(),
        instances_removed: count,
        bytes_freed: bytes,
        purged_at: crate::clock::format_ms(now),
    })
}

/// Unlinks the files `paths` (as the index named them) and forgets each one removed from
/// `purged_files`; one that cannot be removed stays listed for the next start.
async fn remove_files(db: &Database, store: &Store, paths: Vec<String>) -> Result<(), sqlx::Error> {
    let absolute: Vec<(String, PathBuf)> = paths
        .into_iter()
        .map(|p| {
            let abs = store.files.absolute(std::path::Path::new(&p));
            (p, abs)
        })
        .collect();
    let unlinked = tokio::task::spawn_blocking(move || unlink(absolute))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "removing instance files failed");
            Vec::new()
        });
    // With a bucket, its copy goes too; one it cannot delete now stays listed for next time.
    let gone = store.files.delete_objects(unlinked).await;
    if gone.is_empty() {
        return Ok(());
    }
    // One commit for all: on SQLite with fsync each would otherwise be a sync of its own.
    let mut tx = db.begin_write().await?;
    for path in gone {
        sqlx::query("DELETE FROM purged_files WHERE file_path = $1")
            .bind(&path)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Removes the files a purge committed to removing and a crash kept it from removing. Runs
/// at start, before the listeners accept anything (so no copy of them can be arriving).
pub async fn finish_interrupted(db: &Database, store: &Store) -> Result<usize, sqlx::Error> {
    // A path the index names again holds an instance stored since (after an unlink that
    // failed): it is forgotten here, not removed.
    let listed: Vec<String> = sqlx::query_scalar("SELECT file_path FROM purged_files")
        .fetch_all(&db.pool)
        .await?;
    let indexed = index::indexed_paths(db, &listed).await?;
    for path in &indexed {
        sqlx::query("DELETE FROM purged_files WHERE file_path = $1")
            .bind(path)
            .execute(&db.pool)
            .await?;
    }
    let paths: Vec<String> = listed
        .into_iter()
        .filter(|p| !indexed.contains(p))
        .collect();
    let n = paths.len();
    if n > 0 {
        remove_files(db, store, paths).await?;
        tracing::info!(
            files = n,
            "finished removing the files of an interrupted purge"
        );
    }
    Ok(n)
}

/// Unlinks the files, then their series and study folders where left empty; returns the
/// index paths of the files now gone (one already gone counts).
fn unlink(files: Vec<(String, PathBuf)>) -> Vec<String> {
    let mut gone = Vec::with_capacity(files.len());
    let mut folders = std::collections::BTreeSet::new();
    for (rel, path) in files {
        match std::fs::remove_file(&path) {
            Ok(()) => gone.push(rel),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(rel),
            Err(e) => {
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
    gone
}

/// The background purge of `[retention] keep_days`.
pub struct Retention {
    pub store: Store,
    pub db: Database,
    pub bus: EventBus,
    pub settings: RetentionSettings,
}

impl Retention {
    /// Every `interval_secs`, purges the studies last received more than `keep_days` ago,
    /// then more, least recently received first, while free space is below the target; a
    /// busy study is left for the next pass.
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
        let mut purged = Vec::new();
        if self.settings.keep_days > 0 {
            let cutoff = now_ms() - i64::from(self.settings.keep_days) * 86_400_000;
            self.purge_oldest(Some(cutoff), &mut purged).await?;
        }
        if self.settings.free_percent_target > 0.0 && self.below_target() {
            self.purge_oldest(None, &mut purged).await?;
            if self.below_target() {
                tracing::warn!(
                    target_percent = self.settings.free_percent_target,
                    "free space still below the retention target: nothing more can be purged now"
                );
            }
        }
        Ok(purged)
    }

    /// Whether the volume's free space is below `free_percent_target` (false when unknown).
    fn below_target(&self) -> bool {
        match self.store.files.space() {
            Ok((free, total)) if total > 0 => {
                (free as f64) * 100.0 / (total as f64) < self.settings.free_percent_target
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the data folder's free space");
                false
            }
        }
    }

    /// Purges complete studies, least recently received first: those received before
    /// `cutoff`, or (without one) as long as free space is below the target. A busy study is
    /// left for the next pass.
    async fn purge_oldest(
        &self,
        cutoff: Option<i64>,
        purged: &mut Vec<Purged>,
    ) -> Result<(), sqlx::Error> {
        // Keyset paging: a busy study is passed over, not met again.
        let mut after = (i64::MIN, String::new());
        loop {
            let due = index::purge_candidates(
                &self.db,
                cutoff.unwrap_or(i64::MAX),
                (after.0, after.1.as_str()),
                100,
            )
            .await?;
            for index::PurgeCandidate {
                study_uid: uid,
                last_received_at: received,
            } in &due
            {
                if cutoff.is_none() && !self.below_target() {
                    return Ok(());
                }
                after = (*received, uid.clone());
                match purge_study(&self.store, &self.db, &self.bus, uid, "retention").await {
                    Ok(p) => purged.push(p),
                    Err(PurgeError::Busy { reason, .. }) => {
                        tracing::debug!(study_uid = %uid, reason, "not purged yet");
                    }
                    Err(PurgeError::NotFound(_)) => {}
                    Err(PurgeError::Database(e)) => return Err(e),
                }
            }
            if due.len() < 100 {
                return Ok(());
            }
        }
    }
}
