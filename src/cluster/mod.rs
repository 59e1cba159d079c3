//! The node among several that share one PostgreSQL database (and one object store).
//!
//! - [`settings`]: `[node]`, the node's id and its [`Roles`];
//! - [`Membership`]: the node's row in `cluster_nodes`, refreshed by a heartbeat. Any live
//!   node removes rows whose heartbeat has expired, and with them (foreign-key cascade) what
//!   the dead node held, such as the associations it had open on studies (`study`);
//! - [`signals`]: PostgreSQL `LISTEN/NOTIFY`, which wakes this node at once when another
//!   commits an event or queues a job. The tables stay the source of truth; a notification
//!   only says "look now".

pub mod settings;
pub mod signals;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::db::Database;
pub use settings::{NodeSettings, Role, Roles};

/// This process as a member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique among the live nodes on the database.
    pub id: String,
    pub roles: Roles,
}

/// One row of `cluster_nodes`, as `/health` lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Member {
    pub node_id: String,
    /// `all` or a comma list of `ingest`, `worker`, `api`.
    pub roles: String,
    pub version: String,
    /// Epoch milliseconds.
    pub started_at: i64,
    /// Epoch milliseconds.
    pub heartbeat_at: i64,
}

/// The node's registration; [`Membership::run`] keeps it alive. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    db: Database,
    node: Arc<Node>,
    instance: Arc<str>,
    started_at: i64,
    heartbeat: Duration,
    expire_ms: i64,
}

impl Membership {
    /// Registers the node. When a live process already holds the configured id (two nodes
    /// started with the same host name), this one takes the id with a suffix and says so.
    pub async fn join(
        db: Database,
        settings: &NodeSettings,
        roles: Roles,
    ) -> Result<Membership, sqlx::Error> {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let wanted = settings.resolved_id();
        let mut membership = Membership {
            db,
            node: Arc::new(Node {
                id: wanted.clone(),
                roles,
            }),
            instance: instance.as_str().into(),
            started_at: now_ms(),
            heartbeat: Duration::from_secs(settings.heartbeat_secs),
            expire_ms: settings.expire_secs as i64 * 1000,
        };
        membership.expire_dead().await?;
        if !membership.claim().await? {
            let id = format!("{wanted}-{}", &instance[..6]);
            tracing::warn!(
                wanted = %wanted,
                node_id = %id,
                "another live node already uses this node id; set node.id to tell them apart"
            );
            membership.node = Arc::new(Node { id, roles });
            if !membership.claim().await? {
                return Err(sqlx::Error::Protocol(format!(
                    "node id {} is held by another live node",
                    membership.node.id
                )));
            }
        }
        Ok(membership)
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn id(&self) -> &str {
        &self.node.id
    }

    /// Writes the node's row unless a live process of another instance holds the id.
    async fn claim(&self) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO cluster_nodes (node_id, instance, roles, version, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (node_id) DO UPDATE SET instance = $2, roles = $3, version = $4, \
               started_at = $5, heartbeat_at = $6 \
             WHERE cluster_nodes.instance = $2 OR cluster_nodes.heartbeat_at < $7",
        )
        .bind(&self.node.id)
        .bind(&*self.instance)
        .bind(self.node.roles.to_string())
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(self.started_at)
        .bind(now)
        .bind(now - self.expire_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes the rows of nodes whose heartbeat expired (their dependants go with them).
    async fn expire_dead(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM cluster_nodes WHERE heartbeat_at < $1")
            .bind(now_ms() - self.expire_ms)
            .execute(&self.db.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// One heartbeat: refresh the row (re-creating it if another node expired it while this
    /// one stalled), then expire the dead.
    async fn beat(&self) -> Result<(), sqlx::Error> {
        let done = sqlx::query(
            "UPDATE cluster_nodes SET heartbeat_at = $3 WHERE node_id = $1 AND instance = $2",
        )
        .bind(&self.node.id)
        .bind(&*self.instance)
        .bind(now_ms())
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() == 0 {
            tracing::warn!(
                node_id = %self.node.id,
                "this node's registration had expired (a stall longer than node.expire_secs?); re-registering"
            );
            if !self.claim().await? {
                tracing::error!(node_id = %self.node.id, "another live node took this node's id");
            }
        }
        let expired = self.expire_dead().await?;
        if expired > 0 {
            tracing::warn!(nodes = expired, "removed nodes whose heartbeat expired");
        }
        Ok(())
    }

    /// Beats until `cancel` fires, then leaves (removes the row, so what it held is released
    /// at once rather than at expiry).
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.heartbeat) => {}
            }
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %e, "node heartbeat failed; retrying");
            }
        }
        let left = sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1 AND instance = $2")
            .bind(&self.node.id)
            .bind(&*self.instance)
            .execute(&self.db.pool)
            .await;
        if let Err(e) = left {
            tracing::warn!(error = %e, "could not remove this node's registration; it will expire");
        }
    }
}

/// The live nodes on the database, by id.
pub async fn members(db: &Database, expire_secs: u64) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, roles, version, started_at, heartbeat_at FROM cluster_nodes \
         WHERE heartbeat_at >= $1 ORDER BY node_id",
    )
    .bind(now_ms() - expire_secs as i64 * 1000)
    .fetch_all(&db.pool)
    .await
}
