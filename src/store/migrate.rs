//! `radstream storage migrate-to-s3`: copies the files of a local data folder into the bucket,
//! so a node switched to `storage.backend = "s3"` (or another node on the same database)
//! finds every instance and derived object the index names.
//!
//! It goes through the index, not the folder: what the index names is what the nodes read. It
//! is idempotent: an object already in the bucket with the size of the local file is skipped,
//! so an interrupted run is simply run again.

use std::path::Path;

use futures::StreamExt;

use super::index;
use super::objects::{Bucket, ObjectError};
use crate::db::Database;

/// What a migration did, file by file.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migrated {
    /// Put into the bucket.
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    /// Already in the bucket with the same size.
    pub skipped: u64,
    /// Indexed, but neither in the data folder nor in the bucket.
    pub missing: u64,
    /// The bucket refused or could not be reached.
    pub failed: u64,
}

/// Index rows read at a time.
const PAGE: i64 = 500;
/// Files copied at once.
const AT_ONCE: usize = 8;

enum Step {
    Uploaded(u64),
    Skipped,
    Missing,
    Failed,
}

/// Copies every indexed file under `data_dir` into `bucket`; `progress` is called after each
/// page with the totals so far.
pub async fn migrate_to_bucket(
    db: &Database,
    data_dir: &Path,
    bucket: &Bucket,
    mut progress: impl FnMut(&Migrated),
) -> Result<Migrated, sqlx::Error> {
    let mut done = Migrated::default();
    let mut after = String::new();
    loop {
        let page = index::all_files(db, &after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.sop_instance_uid.clone();
        let steps: Vec<Step> = futures::stream::iter(
            page.into_iter()
                .map(|f| async move { copy_one(bucket, data_dir, &f.file_path).await }),
        )
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
        for step in steps {
            match step {
                Step::Uploaded(n) => {
                    done.uploaded += 1;
                    done.uploaded_bytes += n;
                }
                Step::Skipped => done.skipped += 1,
                Step::Missing => done.missing += 1,
                Step::Failed => done.failed += 1,
            }
        }
        progress(&done);
    }
    Ok(done)
}

async fn copy_one(bucket: &Bucket, data_dir: &Path, rel: &str) -> Step {
    let rel = Path::new(rel);
    let local = data_dir.join(rel);
    let local_size = tokio::fs::metadata(&local).await.ok().map(|m| m.len());
    let remote = match bucket.size(rel).await {
        Ok(s) => s,
        Err(e) => return failed(rel, &e),
    };
    match (local_size, remote) {
        (Some(l), Some(r)) if l == r => Step::Skipped,
        (None, Some(_)) => Step::Skipped,
        (None, None) => {
            tracing::warn!(file = %rel.display(), "indexed, but in neither the data folder nor the bucket");
            Step::Missing
        }
        (Some(_), _) => match bucket.put_file(rel, &local).await {
            Ok(n) => Step::Uploaded(n),
            Err(e) => failed(rel, &e),
        },
    }
}

fn failed(rel: &Path, e: &ObjectError) -> Step {
    tracing::error!(file = %rel.display(), error = %e, "cannot copy a file into the bucket");
    Step::Failed
}
