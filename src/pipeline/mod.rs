//! The pipeline worker: claims a job, picks the instances the model applies to, runs the
//! ensemble on them, and stores one versioned result with its events.
//!
//! Failures are sorted in two: transient ones (database, runtime, I/O on our side) put the
//! job back with exponential backoff until `max_attempts`; permanent ones (the study has no
//! instances, the model does not exist) fail the job at once with the reason. An unreadable
//! image is neither: it is recorded in the result as that image's error.

mod settings;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::configuration::Settings;
use crate::db::{now_ms, Database};
use crate::events::{self, EventBus, EventType};
use crate::inference::{Engine, InferenceError, Manifest};
use crate::job::{self, Job};
use crate::metrics::Metrics;
use crate::result::{
    self, ImageEntry, Metadata, ModelRef, ResultTimings, StudyResult, Summary, TriageSettings,
};
use crate::store::index::{self, SourceInstance as Candidate};
use crate::store::FileStore;

pub use settings::PipelineSettings;

/// Why a job did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("study {0} is not in the index")]
    UnknownStudy(String),
    #[error("study {0} has no stored instances")]
    NoInstances(String),
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    /// The job names a model the pipeline cannot run (a landmark model).
    #[error("{0}")]
    UnusableModel(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("inference: {0}")]
    Inference(InferenceError),
}

impl PipelineError {
    /// Retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::UnknownStudy(_)
                | Self::NoInstances(_)
                | Self::UnknownModel(_)
                | Self::UnusableModel(_)
        )
    }
}

/// Everything a worker needs. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    db: Database,
    files: FileStore,
    engine: Engine,
    bus: EventBus,
    settings: PipelineSettings,
    triage: TriageSettings,
    jobs_ready: Arc<Notify>,
    metrics: Metrics,
}

impl Pipeline {
    pub fn new(
        db: Database,
        files: FileStore,
        engine: Engine,
        bus: EventBus,
        jobs_ready: Arc<Notify>,
        metrics: Metrics,
        settings: &Settings,
    ) -> Pipeline {
        Pipeline {
            db,
            files,
            engine,
            bus,
            settings: settings.pipeline.clone(),
            triage: settings.triage.clone(),
            jobs_ready,
            metrics,
        }
    }

    /// Runs `workers` claim loops until `cancel` fires. A job in progress at shutdown is left
    /// to its lease and taken up again (here after a restart, or by another node).
    pub async fn run(self, cancel: CancellationToken) {
        let node = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let loops = (0..self.settings.workers.max(1)).map(|n| {
            let p = self.clone();
            let worker = format!("{node}/{n}");
            let cancel = cancel.clone();
            tokio::spawn(async move { p.worker_loop(worker, cancel).await })
        });
        join_all(loops).await;
    }

    async fn worker_loop(self, worker: String, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_ms.max(10));
        loop {
            // Registered before claiming, so a completion between the claim and the wait
            // still wakes us.
            let ready = self.jobs_ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if cancel.is_cancelled() {
                return;
            }
            match job::claim(&self.db, &worker, self.lease_ms()).await {
                Ok(Some(job)) => {
                    tokio::select! {
                        _ = self.process(job, &worker) => {}
                        _ = cancel.cancelled() => return,
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "claiming a job failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut ready => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    fn lease_ms(&self) -> i64 {
        (self.settings.lease_secs.max(1) * 1000) as i64
    }

    #[tracing::instrument(skip_all, fields(job_id = job.id, study_uid = %job.study_uid, attempt = job.attempts))]
    async fn process(&self, job: Job, worker: &str) {
        if job.attempts > i64::from(self.settings.max_attempts) {
            let reason = format!(
                "gave up after {} attempts; last error: {}",
                self.settings.max_attempts,
                job.last_error
                    .as_deref()
                    .unwrap_or("none recorded (the worker stopped)")
            );
            self.fail(&job, worker, &reason).await;
            return;
        }
        if let Err(e) = self.started_event(&job).await {
            tracing::warn!(error = %e, "writing inference.started failed");
        }
        let heartbeat = self.heartbeat(job.id, worker.to_string());
        let started = now_ms();
        let outcome = self.run_job(&job, started).await;
        heartbeat.abort();
        match outcome {
            Ok(result) => match result::store::store(&self.db, worker, &result).await {
                Ok(Some(stored)) => {
                    self.bus.notify();
                    self.record(&result);
                    tracing::info!(
                        result_id = stored.result_id,
                        version = stored.version,
                        urgency = %result.urgency,
                        status = %result.status,
                        findings = ?result.summary.findings_present,
                        receipt_to_result_ms = result.timings.receipt_to_result_ms,
                        "result stored"
                    );
                }
                Ok(None) => tracing::warn!("lease lost before the result was stored; dropped"),
                Err(e) => {
                    self.retry(&job, worker, &format!("storing the result: {e}"))
                        .await
                }
            },
            Err(e) if e.is_permanent() => self.fail(&job, worker, &e.to_string()).await,
            Err(e) => self.retry(&job, worker, &e.to_string()).await,
        }
    }

    fn record(&self, r: &StudyResult) {
        let m = &self.metrics;
        m.job_finished("succeeded");
        if let Some(q) = r.timings.queue_ms {
            m.observe_queue_wait(q.max(0) as f64 / 1000.0);
        }
        m.observe_inference(r.timings.inference_ms.max(0) as f64 / 1000.0);
        m.observe_receipt_to_result(r.timings.receipt_to_result_ms.max(0) as f64 / 1000.0);
        if r.summary.images_analysed > 0 {
            for l in &r.summary.labels {
                m.prediction(&r.model.id, &l.key, l.present);
            }
        }
    }

    /// Renews the lease every third of its length while the job runs.
    fn heartbeat(&self, job_id: i64, worker: String) -> tokio::task::JoinHandle<()> {
        let db = self.db.clone();
        let lease = self.lease_ms();
        tokio::spawn(async move {
            let every = Duration::from_millis((lease / 3).max(100) as u64);
            loop {
                tokio::time::sleep(every).await;
                match job::renew(&db, job_id, &worker, lease).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!(job_id, error = %e, "renewing the job lease failed"),
                }
            }
        })
    }

    /// Appends a job event (`study_uid`, `study_version`, `job_id` plus `extra`) in `tx`.
    async fn job_event(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        job: &Job,
        kind: EventType,
        extra: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let patient_id = index::find_study(&mut **tx, &job.study_uid)
            .await?
            .and_then(|s| s.patient_id);
        let mut payload = json!({
            "study_uid": job.study_uid,
            "study_version": job.study_version,
            "job_id": job.id,
        });
        if let (Some(p), serde_json::Value::Object(extra)) = (payload.as_object_mut(), extra) {
            p.extend(extra);
        }
        events::append(
            tx,
            self.db.backend,
            kind,
            Some(&job.study_uid),
            patient_id.as_deref(),
            &payload,
        )
        .await?;
        Ok(())
    }

    async fn started_event(&self, job: &Job) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let extra = json!({ "attempt": job.attempts, "model_id": job.model_id });
        self.job_event(&mut tx, job, EventType::InferenceStarted, extra)
            .await?;
        tx.commit().await?;
        self.bus.notify();
        Ok(())
    }

    async fn retry(&self, job: &Job, worker: &str, error: &str) {
        if job.attempts >= i64::from(self.settings.max_attempts) {
            let reason = format!("failed {} times; last error: {error}", job.attempts);
            self.fail(job, worker, &reason).await;
            return;
        }
        let exp = u32::try_from(job.attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let delay = self
            .settings
            .retry_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.settings.retry_max_ms);
        tracing::warn!(error, retry_in_ms = delay, "job failed; will retry");
        self.metrics.job_finished("retried");
        if let Err(e) = job::retry_later(&self.db, job.id, worker, error, delay as i64).await {
            tracing::error!(error = %e, "re-queueing the job failed; its lease will expire");
        }
    }

    async fn fail(&self, job: &Job, worker: &str, reason: &str) {
        tracing::error!(reason, "job failed permanently");
        self.metrics.job_finished("failed");
        let write = async {
            let mut tx = self.db.begin_write().await?;
            if !job::mark_failed(&mut tx, job.id, worker, reason).await? {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(());
            }
            let extra = json!({ "attempts": job.attempts, "reason": reason });
            self.job_event(&mut tx, job, EventType::InferenceFailed, extra)
                .await?;
            tx.commit().await
        };
        match write.await {
            Ok(()) => self.bus.notify(),
            Err(e) => tracing::error!(error = %e, "marking the job failed did not work"),
        }
    }

    /// Selects the instances, runs the model on each, and assembles the study result.
    async fn run_job(&self, job: &Job, started: i64) -> Result<StudyResult, PipelineError> {
        let model_id = job.model_id.as_deref().or(self.settings.model.as_deref());
        let manifest = self.engine.manifest(model_id).map_err(|e| match e {
            InferenceError::UnknownModel(m) => PipelineError::UnknownModel(m),
            e @ InferenceError::WrongTask { .. } => PipelineError::UnusableModel(e.to_string()),
            other => PipelineError::Inference(other),
        })?;
        let study = index::find_study(&self.db.pool, &job.study_uid)
            .await?
            .ok_or_else(|| PipelineError::UnknownStudy(job.study_uid.clone()))?;
        let candidates = index::source_instances(&self.db, &job.study_uid).await?;
        if candidates.is_empty() {
            return Err(PipelineError::NoInstances(job.study_uid.clone()));
        }
        let images = self.infer_all(&manifest, &candidates).await?;

        let summary = Summary::from_images(&images);
        let triage = self.triage.decide(&summary);
        let finished = now_ms();
        let first_received_at = study.first_received_at;
        let completed_at = study.completed_at;
        let first_uid = images
            .iter()
            .find(|i| i.status == "analysed")
            .or(images.first())
            .map(|i| i.sop_instance_uid.clone())
            .unwrap_or_default();
        let provider = self
            .engine
            .models()
            .into_iter()
            .find(|m| m.id == manifest.id)
            .map(|m| m.provider)
            .unwrap_or_default();
        let text =
            |v: &Option<String>| -> String { v.as_deref().unwrap_or_default().trim().to_string() };
        Ok(StudyResult {
            id: 0,
            version: 0,
            study_instance_uid: job.study_uid.clone(),
            study_version: job.study_version,
            job_id: job.id,
            status: StudyResult::status_from(&summary).into(),
            model: ModelRef {
                id: manifest.id.clone(),
                version: manifest.version.clone(),
                name: manifest.name.clone(),
                provider,
                not_for_clinical_use: manifest.not_for_clinical_use,
            },
            urgency: triage.urgency,
            triage,
            summary,
            images,
            metadata: Metadata {
                model_version: format!("{}-{}", manifest.id, manifest.version),
                patient_id: text(&study.patient_id),
                patient_name: text(&study.patient_name),
                sop_instance_uid: first_uid,
                age: text(&study.patient_age),
                sex: text(&study.patient_sex),
            },
            timings: ResultTimings {
                first_received_at,
                completed_at,
                started_at: started,
                finished_at: finished,
                queue_ms: completed_at.map(|c| started - c),
                inference_ms: finished - started,
                receipt_to_result_ms: finished - first_received_at,
            },
            created_at: crate::db::format_ms(finished),
            superseded: false,
        })
    }

    /// Runs the model on every candidate at once (the engine batches them). Modalities the
    /// model does not accept are skipped from the index alone, without opening the file.
    async fn infer_all(
        &self,
        manifest: &Manifest,
        candidates: &[Candidate],
    ) -> Result<Vec<ImageEntry>, PipelineError> {
        let accepted = &manifest.applicability.modalities;
        let mut budget = self.settings.max_images_per_study;
        let runs = candidates.iter().map(|c| {
            let modality_ok = accepted.is_empty()
                || c.modality
                    .as_deref()
                    .is_some_and(|m| accepted.iter().any(|a| a.eq_ignore_ascii_case(m.trim())));
            let within_budget = modality_ok && budget > 0;
            if within_budget {
                budget -= 1;
            }
            let path = self.files.absolute(std::path::Path::new(&c.file_path));
            let engine = self.engine.clone();
            let model = manifest.id.clone();
            async move {
                let skip = |reason: String| {
                    let mut e = ImageEntry::error(
                        &c.sop_instance_uid,
                        &c.series_uid,
                        &c.sop_class_uid,
                        reason,
                    );
                    e.status = "not_applicable".into();
                    e
                };
                if !modality_ok {
                    return Ok(skip(format!(
                        "modality {} is not one the model accepts",
                        c.modality.as_deref().unwrap_or("(none)")
                    )));
                }
                if !within_budget {
                    return Ok(skip("more images than pipeline.max_images_per_study".into()));
                }
                let t = Instant::now();
                match engine.infer_dicom(Some(&model), &path).await {
                    Ok(r) => Ok(ImageEntry::from_inference(
                        &c.sop_instance_uid,
                        &c.series_uid,
                        &c.sop_class_uid,
                        &r,
                    )),
                    Err(e) if e.is_input_error() => {
                        tracing::warn!(sop_instance_uid = %c.sop_instance_uid, error = %e, elapsed_ms = t.elapsed().as_millis() as u64, "image could not be analysed");
                        Ok(ImageEntry::error(
                            &c.sop_instance_uid,
                            &c.series_uid,
                            &c.sop_class_uid,
                            e.to_string(),
                        ))
                    }
                    Err(e) => Err(PipelineError::Inference(e)),
                }
            }
        });
        let entries: Vec<Result<ImageEntry, PipelineError>> = join_all(runs).await;
        entries.into_iter().collect()
    }
}
