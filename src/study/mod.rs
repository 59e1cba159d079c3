//! Deciding when a study is complete.
//!
//! Senders usually push one study in one association, so the release of the association is
//! the strong signal: a study completes `quiet_window_ms` after the last association sending
//! it is released. A stable-age timer (`stable_age_secs` after the last instance) covers
//! aborted associations and studies that trickle in. Each completion writes, in one
//! transaction, the `complete` status, exactly one queued job for that study version, and a
//! `study.complete` event. Deadlines live in memory and are rebuilt from the `receiving`
//! studies at start, so a crash loses no completion.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::configuration::StudySettings;
use crate::db::{now_ms, Database};
use crate::events::{self, EventBus, EventType};
use crate::job;
use crate::store::index::{complete_study, Completed};

#[derive(Debug)]
struct Entry {
    /// Associations that delivered instances of this study and are still open.
    open: HashSet<String>,
    deadline: Instant,
    /// Bumped by every stored instance, so a completion racing a new instance can tell.
    generation: u64,
}

#[derive(Debug, Default)]
struct State {
    studies: HashMap<String, Entry>,
    by_association: HashMap<String, HashSet<String>>,
}

/// A completed study version and the job it queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub study_uid: String,
    pub study_version: i64,
    pub job_id: Option<i64>,
}

/// Tracks open studies and completes them. Cheap to clone.
#[derive(Clone)]
pub struct StudyTracker {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    quiet: Duration,
    stable: Duration,
    db: Database,
    /// Notified after each completion queues a job.
    jobs_ready: Arc<Notify>,
    /// Woken after each completion so `study.complete` is streamed at once.
    bus: EventBus,
}

impl StudyTracker {
    pub fn new(
        db: Database,
        settings: &StudySettings,
        jobs_ready: Arc<Notify>,
        bus: EventBus,
    ) -> Self {
        StudyTracker {
            state: Arc::default(),
            wake: Arc::new(Notify::new()),
            quiet: Duration::from_millis(settings.quiet_window_ms),
            stable: Duration::from_secs(settings.stable_age_secs),
            db,
            jobs_ready,
            bus,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-arms the timers of studies that were still receiving when the node stopped.
    pub async fn restore(&self) -> Result<usize, sqlx::Error> {
        let rows = crate::store::index::receiving_studies(&self.db).await?;
        let now_wall = now_ms();
        let now = Instant::now();
        let n = rows.len();
        let mut st = self.lock();
        for r in rows {
            let uid = r.study_uid;
            let last = r.last_received_at;
            let due_in = (last + self.stable.as_millis() as i64 - now_wall).max(0) as u64;
            st.studies.insert(
                uid,
                Entry {
                    open: HashSet::new(),
                    deadline: now + Duration::from_millis(due_in),
                    generation: 0,
                },
            );
        }
        drop(st);
        self.wake.notify_one();
        Ok(n)
    }

    /// An instance of `study_uid` was stored (and indexed) on `association_id`.
    pub fn instance_stored(&self, study_uid: &str, association_id: &str) {
        let deadline = Instant::now() + self.stable;
        let mut st = self.lock();
        let e = st.studies.entry(study_uid.to_string()).or_insert(Entry {
            open: HashSet::new(),
            deadline,
            generation: 0,
        });
        e.open.insert(association_id.to_string());
        e.deadline = deadline;
        e.generation += 1;
        st.by_association
            .entry(association_id.to_string())
            .or_default()
            .insert(study_uid.to_string());
        drop(st);
        self.wake.notify_one();
    }

    /// An association ended: `released` (A-RELEASE) starts the quiet window for its studies
    /// once no other association is sending them; an abort leaves them to the stable-age timer.
    pub fn association_ended(&self, association_id: &str, released: bool) {
        let mut st = self.lock();
        let Some(studies) = st.by_association.remove(association_id) else {
            return;
        };
        let quiet_deadline = Instant::now() + self.quiet;
        for uid in studies {
            if let Some(e) = st.studies.get_mut(&uid) {
                e.open.remove(association_id);
                if released && e.open.is_empty() {
                    e.deadline = e.deadline.min(quiet_deadline);
                }
            }
        }
        drop(st);
        self.wake.notify_one();
    }

    /// The node's event bus (to wake it after committing an event elsewhere).
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// Studies with a pending deadline (for health output and tests).
    pub fn pending(&self) -> usize {
        self.lock().studies.len()
    }

    /// Runs the timer loop until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let next = self.lock().studies.values().map(|e| e.deadline).min();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => continue,
                _ = sleep => {}
            }
            let now = Instant::now();
            let due: Vec<(String, u64)> = self
                .lock()
                .studies
                .iter()
                .filter(|(_, e)| e.deadline <= now)
                .map(|(k, e)| (k.clone(), e.generation))
                .collect();
            for (uid, generation) in due {
                match self.complete(&uid).await {
                    Ok(_) => {
                        let mut st = self.lock();
                        if st
                            .studies
                            .get(&uid)
                            .is_some_and(|e| e.generation == generation)
                        {
                            st.studies.remove(&uid);
                        }
                    }
                    Err(e) => {
                        tracing::error!(study_uid = %uid, error = %e, "study completion failed; retrying in 1 s");
                        if let Some(e) = self.lock().studies.get_mut(&uid) {
                            e.deadline = Instant::now() + Duration::from_secs(1);
                        }
                    }
                }
            }
        }
    }

    /// Marks the study complete, queues its job and logs the event, in one transaction.
    /// Returns `None` when the study was not receiving (already completed).
    #[tracing::instrument(skip(self), fields(study_version))]
    pub async fn complete(&self, study_uid: &str) -> Result<Option<Completion>, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let now = now_ms();
        let Some(Completed {
            version,
            patient_id,
            num_instances,
            num_series,
            first_received_at: first,
        }) = complete_study(&mut tx, study_uid, now).await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        tracing::Span::current().record("study_version", version);
        let job_id = job::enqueue(&mut tx, study_uid, version).await?;
        events::append(
            &mut tx,
            self.db.backend,
            EventType::StudyComplete,
            Some(study_uid),
            patient_id.as_deref(),
            &json!({
                "study_uid": study_uid,
                "study_version": version,
                "job_id": job_id,
                "num_instances": num_instances,
                "num_series": num_series,
                "receive_ms": now - first,
            }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            study_uid,
            version,
            num_instances,
            ?job_id,
            "study complete; job queued"
        );
        self.jobs_ready.notify_waiters();
        self.bus.notify();
        Ok(Some(Completion {
            study_uid: study_uid.to_string(),
            study_version: version,
            job_id,
        }))
    }
}
