//! `study_senders`: which node has which association open on which study, for the nodes of a
//! cluster to see each other's senders. One task per node applies the node's changes in the
//! order they happened (an association's "open" always before its "close"); a dead node's
//! rows go with its `cluster_nodes` row (foreign-key cascade).

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, Transaction};
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::db::Database;

enum Change {
    Open {
        study_uid: String,
        association_id: String,
    },
    Close {
        association_id: String,
    },
}

/// This node's entries in the ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    node_id: Arc<str>,
    changes: mpsc::UnboundedSender<Change>,
}

impl Ledger {
    /// Clears what an earlier run under the same node id left (its associations are gone)
    /// and starts the task that writes this node's changes.
    pub async fn start(db: Database, node_id: &str) -> Result<Ledger, sqlx::Error> {
        sqlx::query("DELETE FROM study_senders WHERE node_id = $1")
            .bind(node_id)
            .execute(&db.pool)
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let node_id: Arc<str> = node_id.into();
        tokio::spawn(write_changes(db, node_id.clone(), rx));
        Ok(Ledger {
            node_id,
            changes: tx,
        })
    }

    pub fn opened(&self, study_uid: &str, association_id: &str) {
        let _ = self.changes.send(Change::Open {
            study_uid: study_uid.to_string(),
            association_id: association_id.to_string(),
        });
    }

    pub fn closed(&self, association_id: &str) {
        let _ = self.changes.send(Change::Close {
            association_id: association_id.to_string(),
        });
    }

    /// Whether another live node has an association open on the study (read in the
    /// completing transaction).
    pub async fn others_sending(
        &self,
        tx: &mut Transaction<'_, Any>,
        study_uid: &str,
    ) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM study_senders WHERE study_uid = $1 AND node_id <> $2",
        )
        .bind(study_uid)
        .bind(&*self.node_id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(n > 0)
    }
}

/// Applies changes in order; each is tried a few times, then given up with an error logged
/// (a lost "open" only makes the quiet window local; a lost "close" leaves the study to the
/// stable-age timer or the node's next start).
async fn write_changes(db: Database, node_id: Arc<str>, mut rx: mpsc::UnboundedReceiver<Change>) {
    while let Some(change) = rx.recv().await {
        let mut attempt = 0;
        loop {
            let done = match &change {
                Change::Open {
                    study_uid,
                    association_id,
                } => sqlx::query(
                    "INSERT INTO study_senders (study_uid, node_id, association_id, opened_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(study_uid)
                .bind(&*node_id)
                .bind(association_id)
                .bind(now_ms())
                .execute(&db.pool)
                .await
                .map(|_| ()),
                Change::Close { association_id } => sqlx::query(
                    "DELETE FROM study_senders WHERE node_id = $1 AND association_id = $2",
                )
                .bind(&*node_id)
                .bind(association_id)
                .execute(&db.pool)
                .await
                .map(|_| ()),
            };
            match done {
                Ok(()) => break,
                Err(e) if attempt < 4 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "recording an open association failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not record an open association; giving up");
                    break;
                }
            }
        }
    }
}
