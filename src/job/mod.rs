//! The durable job queue. This part creates jobs; claiming and running them belongs to the
//! pipeline worker.

use sqlx::{Any, Transaction};

use crate::db::now_ms;

/// Job states as stored.
pub const QUEUED: &str = "queued";

/// Queues one inference job for a study version. A second call for the same version is a
/// no-op (unique key), so a study version never gets two jobs. Returns the new job id.
pub async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
    study_version: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let now = now_ms();
    sqlx::query_scalar(
        "INSERT INTO jobs (study_uid, study_version, kind, state, attempts, created_at, updated_at) \
         VALUES ($1, $2, 'inference', $3, 0, $4, $4) \
         ON CONFLICT (study_uid, study_version) WHERE kind = 'inference' DO NOTHING RETURNING id",
    )
    .bind(study_uid)
    .bind(study_version)
    .bind(QUEUED)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await
}
