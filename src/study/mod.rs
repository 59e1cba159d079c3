//! Deciding when a study is complete.
//!
//! Senders usually push one study in one association, so the release of the association is
//! the strong signal: a study completes `quiet_window_ms` after the last association sending
//! it is released. A stable-age timer (`stable_age_secs` after the last instance) covers
//! aborted associations and studies that trickle in. Each completion writes, in one
//! transaction, the `complete` status, exactly one queued job for that study version, and a
//! `study.complete` event. Deadlines live in memory and are rebuilt from the `receiving`
//! studies at start, so a crash loses no completion.
//!
//! Modalities that send MPPS ([`crate::mpps`]) say which instances a procedure produced: when
//! a study's steps are all COMPLETED or DISCONTINUED and every instance the COMPLETED ones
//! list is stored, the study completes at once (`mpps`), checked after the N-SET and after
//! each later instance. While a step is IN PROGRESS the quiet window does not complete the
//! study; the stable-age timer still does, so a lost N-SET holds nothing for ever.
//!
//! Several nodes on one PostgreSQL database ([`StudyTracker::in_cluster`]) see each other's
//! open associations through the [`ledger`]: a node whose quiet window ends completes the
//! study only if no other live node still has one open, and only if the study's last
//! instance (from any node) is older than the window; the stable-age timer likewise reads the
//! last instance from the shared row. The decision and the update are made on the study row
//! locked in one transaction, so exactly one node completes a study, with one job. Each node
//! also re-reads the receiving studies every few seconds, so a study whose node died is
//! completed by another.

pub mod ledger;
pub mod settings;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::db::Database;
use crate::events::{self, EventBus, EventType};
use crate::job;
use crate::mpps;
use crate::store::index::{complete_study, count_present, lock_receiving, Completed};
pub use ledger::Ledger;
pub use settings::StudySettings;

/// Which rule's deadline an entry waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The last association sending the study was released and the quiet window passed.
    Quiet,
    /// No instance for `stable_age_secs`.
    StableAge,
    /// The study's procedure steps are finished and what they list has arrived.
    Mpps,
}

impl Trigger {
    /// As the `study.complete` event names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Quiet => "release+quiet",
            Trigger::StableAge => "stable-age",
            Trigger::Mpps => "mpps",
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Associations that delivered instances of this study and are still open.
    open: HashSet<String>,
    deadline: Instant,
    trigger: Trigger,
    /// Bumped by every stored instance, so a completion racing a new instance can tell.
    generation: u64,
}

/// What a due deadline came to.
#[derive(Debug)]
enum Outcome {
    Completed,
    /// Not receiving any more (completed here or by another node).
    NotReceiving,
    /// Another live node has an association open on it: that node completes it.
    SentElsewhere,
    /// An instance arrived (at another node) after the deadline was set: look again then.
    Later(Duration),
    /// A procedure step is still open or its instances have not all arrived: the stable-age
    /// timer decides, after this long.
    AwaitingEvidence(Duration),
}

#[derive(Debug, Default)]
struct State {
    studies: HashMap<String, Entry>,
    by_association: HashMap<String, HashSet<String>>,
    /// Studies with a finished procedure step: each stored instance checks the evidence.
    evidence: HashSet<String>,
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
    /// This node's id (named in `study.complete`).
    node_id: Arc<str>,
    /// Set when several nodes may share the database.
    ledger: Option<Ledger>,
}

impl StudyTracker {
    pub fn new(
        db: Database,
        node_id: &str,
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
            node_id: node_id.into(),
            ledger: None,
        }
    }

    /// Shares the node's open associations with the other nodes on the database (see the
    /// module documentation).
    pub async fn in_cluster(mut self) -> Result<Self, sqlx::Error> {
        self.ledger = Some(Ledger::start(self.db.clone(), &self.node_id).await?);
        Ok(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arms the stable-age timers of receiving studies this node does not track yet: at
    /// start, those still receiving when the node stopped; in a cluster, every few seconds,
    /// those another node received (and may have died with). Returns how many were added.
    pub async fn restore(&self) -> Result<usize, sqlx::Error> {
        let rows = crate::store::index::receiving_studies(&self.db).await?;
        let now_wall = now_ms();
        // Steps finished at another node (or before a restart) are looked at at once.
        let finished = mpps::recently_finished_studies(&self.db, now_wall - 86_400_000).await?;
        let now = Instant::now();
        let mut added = 0;
        let mut st = self.lock();
        for r in rows {
            let last = r.last_received_at;
            let due_in = (last + self.stable.as_millis() as i64 - now_wall).max(0) as u64;
            st.studies.entry(r.study_uid).or_insert_with(|| {
                added += 1;
                Entry {
                    open: HashSet::new(),
                    deadline: now + Duration::from_millis(due_in),
                    trigger: Trigger::StableAge,
                    generation: 0,
                }
            });
        }
        for uid in finished {
            if st.evidence.insert(uid.clone()) {
                if let Some(e) = st.studies.get_mut(&uid) {
                    e.deadline = now;
                    e.trigger = Trigger::Mpps;
                }
            }
        }
        drop(st);
        self.wake.notify_one();
        Ok(added)
    }

    /// Whether the study has a finished procedure step, so a stored instance may complete it
    /// (see [`check_evidence`](Self::check_evidence)).
    pub fn awaits_evidence(&self, study_uid: &str) -> bool {
        self.lock().evidence.contains(study_uid)
    }

    /// A procedure step of `study_uid` was created or changed; `finished` when it is now
    /// COMPLETED or DISCONTINUED. Completes the study when the evidence is all there.
    pub async fn procedure_step_changed(
        &self,
        study_uid: &str,
        finished: bool,
    ) -> Result<Option<Completion>, sqlx::Error> {
        if !finished {
            return Ok(None);
        }
        self.lock().evidence.insert(study_uid.to_string());
        self.check_evidence(study_uid).await
    }

    /// Completes the study now if its procedure steps are finished and every instance they
    /// list is stored (one locked transaction, as every completion).
    pub async fn check_evidence(&self, study_uid: &str) -> Result<Option<Completion>, sqlx::Error> {
        let generation = self.lock().studies.get(study_uid).map(|e| e.generation);
        let (outcome, completion) = self.settle(study_uid, Trigger::Mpps).await?;
        if matches!(outcome, Outcome::Completed) {
            let mut st = self.lock();
            if st.studies.get(study_uid).map(|e| e.generation) == generation {
                st.studies.remove(study_uid);
            }
        }
        Ok(completion)
    }

    /// An instance of `study_uid` was stored (and indexed) on `association_id`.
    pub fn instance_stored(&self, study_uid: &str, association_id: &str) {
        let deadline = Instant::now() + self.stable;
        let mut st = self.lock();
        let e = st.studies.entry(study_uid.to_string()).or_insert(Entry {
            open: HashSet::new(),
            deadline,
            trigger: Trigger::StableAge,
            generation: 0,
        });
        if e.open.insert(association_id.to_string()) {
            if let Some(l) = &self.ledger {
                l.opened(study_uid, association_id);
            }
        }
        e.deadline = deadline;
        e.trigger = Trigger::StableAge;
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
        if let Some(l) = &self.ledger {
            l.closed(association_id);
        }
        let quiet_deadline = Instant::now() + self.quiet;
        for uid in studies {
            if let Some(e) = st.studies.get_mut(&uid) {
                e.open.remove(association_id);
                if released && e.open.is_empty() && quiet_deadline < e.deadline {
                    e.deadline = quiet_deadline;
                    e.trigger = Trigger::Quiet;
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
        // In a cluster, studies other nodes received are looked for this often.
        let sweep = self
            .ledger
            .as_ref()
            .map(|_| (self.stable / 2).clamp(Duration::from_millis(500), Duration::from_secs(5)));
        let mut next_sweep = sweep.map(|d| Instant::now() + d);
        loop {
            let next = self.lock().studies.values().map(|e| e.deadline).min();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let swept = async {
                match next_sweep {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => continue,
                _ = swept => {
                    if let Err(e) = self.restore().await {
                        tracing::warn!(error = %e, "reading the receiving studies failed; retrying");
                    }
                    next_sweep = sweep.map(|d| Instant::now() + d);
                    continue;
                }
                _ = sleep => {}
            }
            let now = Instant::now();
            let due: Vec<(String, u64, Trigger)> = self
                .lock()
                .studies
                .iter()
                .filter(|(_, e)| e.deadline <= now)
                .map(|(k, e)| (k.clone(), e.generation, e.trigger))
                .collect();
            for (uid, generation, trigger) in due {
                let outcome = self.settle(&uid, trigger).await.map(|(o, _)| o);
                let mut st = self.lock();
                let Some(e) = st.studies.get_mut(&uid) else {
                    continue;
                };
                match outcome {
                    Ok(Outcome::Later(wait)) => {
                        if e.generation == generation {
                            e.deadline = Instant::now() + wait;
                        }
                    }
                    Ok(Outcome::AwaitingEvidence(wait)) => {
                        if e.generation == generation {
                            e.deadline = Instant::now() + wait;
                            e.trigger = Trigger::StableAge;
                        }
                    }
                    Ok(_) => {
                        if e.generation == generation {
                            st.studies.remove(&uid);
                        }
                    }
                    Err(err) => {
                        tracing::error!(study_uid = %uid, error = %err, "study completion failed; retrying in 1 s");
                        e.deadline = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
        }
    }

    /// Completes a study whose deadline passed (or whose evidence may be complete), unless
    /// its procedure steps say otherwise or (in a cluster) another node still sends it or
    /// sent an instance since.
    async fn settle(
        &self,
        study_uid: &str,
        trigger: Trigger,
    ) -> Result<(Outcome, Option<Completion>), sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let Some(row) = lock_receiving(&mut tx, self.db.backend, study_uid).await? else {
            tx.rollback().await?;
            return Ok((Outcome::NotReceiving, None));
        };
        let now = now_ms();
        let stable_left = || {
            let due = row.last_received_at + self.stable.as_millis() as i64;
            Duration::from_millis((due - now).max(0) as u64)
        };
        let steps = mpps::study_steps(&mut tx, study_uid).await?;
        let mut trigger = trigger;
        if steps.any() {
            let evidence = steps.in_progress == 0
                && (steps.discontinued > 0 || !steps.listed.is_empty())
                && count_present(&mut tx, study_uid, &steps.listed).await? == steps.listed.len();
            if evidence {
                trigger = Trigger::Mpps;
            } else if trigger != Trigger::StableAge {
                tx.rollback().await?;
                tracing::debug!(
                    study_uid,
                    ?steps,
                    "procedure steps open or instances missing"
                );
                return Ok((Outcome::AwaitingEvidence(stable_left()), None));
            }
        } else if trigger == Trigger::Mpps {
            tx.rollback().await?;
            return Ok((Outcome::AwaitingEvidence(stable_left()), None));
        }
        if let (Some(ledger), Trigger::Quiet | Trigger::StableAge) = (&self.ledger, trigger) {
            if trigger == Trigger::Quiet && ledger.others_sending(&mut tx, study_uid).await? {
                tx.rollback().await?;
                tracing::debug!(study_uid, "another node is still sending this study");
                return Ok((Outcome::SentElsewhere, None));
            }
            let window = match trigger {
                Trigger::Quiet => self.quiet,
                _ => self.stable,
            };
            let settled_at = row.last_received_at + window.as_millis() as i64;
            if settled_at > now {
                tx.rollback().await?;
                return Ok((
                    Outcome::Later(Duration::from_millis((settled_at - now) as u64)),
                    None,
                ));
            }
        }
        Ok(match self.finish(study_uid, trigger, Some(tx)).await? {
            Some(c) => (Outcome::Completed, Some(c)),
            None => (Outcome::NotReceiving, None),
        })
    }

    /// Marks the study complete, queues its job and logs the event, in one transaction.
    /// Returns `None` when the study was not receiving (already completed).
    pub async fn complete(&self, study_uid: &str) -> Result<Option<Completion>, sqlx::Error> {
        self.finish(study_uid, Trigger::StableAge, None).await
    }

    /// [`complete`](Self::complete) by `trigger`, in `tx` when the caller already holds the
    /// study row.
    #[tracing::instrument(skip(self, tx), fields(study_version))]
    async fn finish(
        &self,
        study_uid: &str,
        trigger: Trigger,
        tx: Option<sqlx::Transaction<'static, sqlx::Any>>,
    ) -> Result<Option<Completion>, sqlx::Error> {
        let mut tx = match tx {
            Some(tx) => tx,
            None => self.db.begin_write().await?,
        };
        let now = now_ms();
        let Some(Completed {
            version,
            patient_id,
            num_instances,
            num_series,
            first_received_at: first,
        }) = complete_study(&mut tx, study_uid, now, trigger.as_str()).await?
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
                "completed_by": trigger.as_str(),
                "node": &*self.node_id,
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
        self.lock().evidence.remove(study_uid);
        self.jobs_ready.notify_waiters();
        self.bus.notify();
        Ok(Some(Completion {
            study_uid: study_uid.to_string(),
            study_version: version,
            job_id,
        }))
    }
}
