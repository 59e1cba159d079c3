//! In-process fan-out of committed events.
//!
//! One task tails the `events` table in id order and broadcasts each new row. It wakes when a
//! writer on this node calls [`EventBus::notify`], and on PostgreSQL when any node commits an
//! event (`LISTEN/NOTIFY`, wired by startup through `cluster::signals`); otherwise it polls:
//! every `poll_ms` on SQLite or with `listen` off, every [`PUSHED_SWEEP`] as a safety net
//! when notifications arrive.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use super::log::{fetch_after, latest_id, Event};
use crate::db::Database;
use crate::metrics::Metrics;

/// `[events]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// Events held for slow subscribers before they fall back to replaying from the table.
    pub buffer: usize,
    /// How often the table is polled for events written elsewhere, in milliseconds (when
    /// notifications do not wake the node: SQLite, or `listen = false`).
    pub poll_ms: u64,
    /// On PostgreSQL, wake on the notification every node sends when it commits an event
    /// (`LISTEN/NOTIFY`), so another node's events stream at once; `false` polls only.
    pub listen: bool,
    /// Seconds between SSE keep-alive comments.
    pub heartbeat_secs: u64,
    /// Reconnection delay suggested to SSE clients (`retry:`), in milliseconds.
    pub retry_ms: u64,
}

impl EventSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.heartbeat_secs == 0 {
            return Err(("events.heartbeat_secs", "must be at least 1".into()));
        }
        if self.buffer < 16 {
            return Err(("events.buffer", "must be at least 16".into()));
        }
        Ok(())
    }
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            buffer: 1024,
            poll_ms: 250,
            listen: true,
            heartbeat_secs: 15,
            retry_ms: 3000,
        }
    }
}

/// How often the table is still read when notifications wake the bus: a notification lost
/// with a connection is made up for by the listener's reconnect, this only bounds the rest.
pub const PUSHED_SWEEP: Duration = Duration::from_secs(5);

struct Inner {
    db: Database,
    tx: broadcast::Sender<Arc<Event>>,
    wake: Notify,
    /// Id of the newest event broadcast so far.
    published: AtomicI64,
    settings: EventSettings,
    metrics: Metrics,
}

/// Handle to the fan-out. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

impl EventBus {
    /// Starts at the newest stored event: only events committed from now on are broadcast.
    pub async fn new(
        db: Database,
        settings: &EventSettings,
        metrics: Metrics,
    ) -> Result<EventBus, sqlx::Error> {
        let start = latest_id(&db).await?;
        let (tx, _) = broadcast::channel(settings.buffer.max(16));
        Ok(EventBus {
            inner: Arc::new(Inner {
                db,
                tx,
                wake: Notify::new(),
                published: AtomicI64::new(start),
                settings: settings.clone(),
                metrics,
            }),
        })
    }

    pub fn settings(&self) -> &EventSettings {
        &self.inner.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Tells the tailer that events were committed.
    pub fn notify(&self) {
        self.inner.wake.notify_one();
    }

    /// A receiver of every event broadcast from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.tx.subscribe()
    }

    /// Id of the newest event broadcast.
    pub fn published_id(&self) -> i64 {
        self.inner.published.load(Ordering::Acquire)
    }

    /// Live subscribers (SSE streams and internal listeners).
    pub fn subscribers(&self) -> usize {
        self.inner.tx.receiver_count()
    }

    /// Whether other nodes' events wake this bus by notification (PostgreSQL with `listen`).
    pub fn pushed(&self) -> bool {
        self.inner.db.backend == crate::db::Backend::Postgres && self.inner.settings.listen
    }

    /// Tails the table until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let poll = if self.pushed() {
            PUSHED_SWEEP
        } else {
            Duration::from_millis(self.inner.settings.poll_ms.max(10))
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            if let Err(e) = self.drain().await {
                tracing::warn!(error = %e, "reading new events failed; retrying");
            }
        }
    }

    async fn drain(&self) -> Result<(), sqlx::Error> {
        loop {
            let after = self.published_id();
            let batch = fetch_after(&self.inner.db, after, None, 500).await?;
            let n = batch.len();
            for e in batch {
                let id = e.id;
                self.inner.metrics.event_published(&e.kind);
                // No receivers is not an error: the event is in the table for later replay.
                let _ = self.inner.tx.send(Arc::new(e));
                self.inner.published.store(id, Ordering::Release);
            }
            if n < 500 {
                return Ok(());
            }
        }
    }
}
