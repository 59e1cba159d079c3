//! The pipeline worker: claims a job, picks the instances the model applies to, runs the
//! ensemble on them, and stores one versioned result with its events.
//!
//! Failures are sorted in two: transient ones (database, runtime, I/O on our side) put the
//! job back with exponential backoff until `max_attempts`; permanent ones (the study has no
//! instances, the model does not exist) fail the job at once with the reason. An unreadable
//! image is neither: it is recorded in the result as that image's error.

mod combine;
pub mod plan;
mod settings;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::db::Database;
use crate::events::{self, EventBus, EventType};
use crate::inference::manifest::{TASK_CLASSIFICATION, TASK_LANDMARKS, TASK_SEGMENTATION};
use crate::inference::{Engine, GatePolicy, InferenceError, Manifest};
use crate::job::{self, Job};
use crate::metrics::Metrics;
use crate::result::triage::TriageInput;
use crate::result::{
    self, ImageEntry, LandmarkEntry, Metadata, ModelOutcome, ModelRef, ResultTimings,
    SegmentationEntry, StudyResult, Summary, TriageSettings,
};
use crate::store::index::{self, SourceInstance as Candidate};
use crate::store::FileStore;

pub use combine::MEASUREMENT_KEYS;
pub use settings::{PipelineSettings, Route};

/// Why a job did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("study {0} is not in the index")]
    UnknownStudy(String),
    #[error("study {0} has no stored instances")]
    NoInstances(String),
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    /// The job or a route names models the pipeline cannot run together.
    #[error("{0}")]
    UnusableModel(String),
    /// No `[[pipeline.routes]]` entry matches the study.
    #[error("{0}")]
    NoRoute(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("inference: {0}")]
    Inference(InferenceError),
    /// An instance file could not be fetched from the bucket (the store is down): retried.
    #[error("storage: {0}")]
    Storage(#[from] crate::store::FileError),
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
                | Self::NoRoute(_)
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
    /// The node's id, naming the workers (see [`Pipeline::on_node`]).
    node_id: Option<String>,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Database,
        files: FileStore,
        engine: Engine,
        bus: EventBus,
        jobs_ready: Arc<Notify>,
        metrics: Metrics,
        settings: PipelineSettings,
        triage: TriageSettings,
    ) -> Pipeline {
        Pipeline {
            db,
            files,
            engine,
            bus,
            settings,
            triage,
            jobs_ready,
            metrics,
            node_id: None,
        }
    }

    /// Names the workers after the node (`<node id>/<n>`), so a job row says which node ran it.
    pub fn on_node(mut self, node_id: &str) -> Pipeline {
        self.node_id = Some(node_id.to_string());
        self
    }

    /// Runs `workers` claim loops until `cancel` fires. A job in progress at shutdown is left
    /// to its lease and taken up again (here after a restart, or by another node).
    pub async fn run(self, cancel: CancellationToken) {
        let node = self.node_id.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        });
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
            Ok(result) => match self.store_result(worker, &result).await {
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

    /// The result and, for a final one, the outputs it owes (SR, overlays), in one
    /// transaction: a crash before they are written loses nothing.
    async fn store_result(
        &self,
        worker: &str,
        result: &StudyResult,
    ) -> Result<Option<result::store::Stored>, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let Some(stored) = result::store::store(&mut tx, self.db.backend, worker, result).await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        if result.status == "final" {
            crate::report::generate::owe_outputs(
                &mut tx,
                stored.result_id,
                &result.study_instance_uid,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(stored))
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

    /// Selects the instances, runs the planned models on them, and assembles the study
    /// result: each model's outcome with its own status, the lung gate, measurements, triage.
    async fn run_job(&self, job: &Job, started: i64) -> Result<StudyResult, PipelineError> {
        let study = index::find_study(&self.db.pool, &job.study_uid)
            .await?
            .ok_or_else(|| PipelineError::UnknownStudy(job.study_uid.clone()))?;
        let candidates = index::source_instances(&self.db, &job.study_uid).await?;
        if candidates.is_empty() {
            return Err(PipelineError::NoInstances(job.study_uid.clone()));
        }
        let plan = plan::plan(
            &self.engine,
            &self.settings,
            job.model_id.as_deref(),
            &candidates,
        )?;
        self.fetch_inputs(&candidates).await?;
        let gate = if plan.segmenter.is_some() {
            GatePolicy::Advisory
        } else {
            GatePolicy::Enforce
        };
        let t0 = Instant::now();
        let runs = plan
            .models()
            .into_iter()
            .map(|m| self.run_model(job, m.clone(), &candidates, gate, t0));
        let runs: Vec<ModelRun> = join_all(runs).await;
        if runs.iter().all(|r| r.failure.is_some()) {
            // Nothing ran at all: a transient fault (the runtime, our disk); try again later.
            let errors: Vec<String> = runs.iter().filter_map(|r| r.failure.clone()).collect();
            return Err(PipelineError::Inference(InferenceError::Task(
                errors.join("; "),
            )));
        }

        let classifier = plan.classifier.as_deref();
        let mut images: Vec<ImageEntry> = Vec::with_capacity(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            let mut entry: Option<ImageEntry> = None;
            let mut seg = None;
            let mut lm = None;
            for run in &runs {
                match &run.outputs[i] {
                    Output::Findings(e) => entry = Some(e.as_ref().clone()),
                    Output::Segments(s) => seg = Some(s.as_ref().clone()),
                    Output::Points(l) => lm = Some(l.clone()),
                }
            }
            let mut entry = entry.unwrap_or_else(|| {
                // No classifier: the image's status is the segmentation's (or landmarks').
                let (status, reason) = seg
                    .as_ref()
                    .map(|s: &SegmentationEntry| (s.status.clone(), s.reason.clone()))
                    .or_else(|| {
                        lm.as_ref()
                            .map(|l: &LandmarkEntry| (l.status.clone(), l.reason.clone()))
                    })
                    .unwrap_or(("error".into(), Some("no model ran".into())));
                let mut e = ImageEntry::error(
                    &c.sop_instance_uid,
                    &c.series_uid,
                    &c.sop_class_uid,
                    String::new(),
                );
                e.status = status;
                e.reason = reason;
                e
            });
            entry.segmentation = seg;
            entry.landmarks = lm;
            combine::apply_gate(&mut entry, classifier);
            images.push(entry);
        }

        let validation = |id: &str| {
            plan.models()
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.validation.status.clone())
                .unwrap_or_default()
        };
        let measurements = combine::measurements(&images, validation);
        let models: Vec<ModelOutcome> = runs.iter().map(|r| r.outcome(&images)).collect();
        let summary = Summary::from_images(&images);
        let models_planned = plan.models();
        let primary = classifier
            .or(models_planned.first().map(|m| m.as_ref()))
            .expect("BUG: a plan has at least one model");
        let mut triage = self.triage.decide(TriageInput {
            summary: &summary,
            measurements: &measurements,
            findings_validation: &primary.validation.status,
        });
        // A STAT order (HL7 ORM/OMI) for the study's accession number is an urgency floor.
        if let Some(accession) = study
            .accession_number
            .as_deref()
            .filter(|a| !a.trim().is_empty())
        {
            let priority = crate::hl7::orders::priority_of(&self.db, accession).await?;
            if priority.as_deref() == Some("S") && triage.urgency < crate::domain::Urgency::Urgent {
                triage.urgency = crate::domain::Urgency::Urgent;
                triage.reasons.push(format!(
                    "STAT order for accession {} (HL7)",
                    accession.trim()
                ));
            }
        }
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
            .find(|m| m.id == primary.id)
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
                id: primary.id.clone(),
                version: primary.version.clone(),
                name: primary.name.clone(),
                provider,
                not_for_clinical_use: primary.not_for_clinical_use,
                validation_status: primary.validation.status.clone(),
            },
            models,
            measurements,
            urgency: triage.urgency,
            triage,
            summary,
            images,
            metadata: Metadata {
                model_version: format!("{}-{}", primary.id, primary.version),
                patient_id: text(&study.patient_id),
                patient_name: text(&study.patient_name),
                sop_instance_uid: first_uid,
                age: text(&study.patient_age),
                sex: text(&study.patient_sex),
            },
            timings: ResultTimings {
                first_received_at,
                completed_at,
                completed_by: study.completed_by.clone(),
                started_at: started,
                finished_at: finished,
                queue_ms: completed_at.map(|c| started - c),
                inference_ms: finished - started,
                receipt_to_result_ms: finished - first_received_at,
            },
            created_at: crate::clock::format_ms(finished),
            superseded: false,
        })
    }

    /// Makes sure the files the models will read are on this node's disk (with a bucket,
    /// another node may have received them): the first `max_images_per_study` candidates.
    /// One missing from the bucket too is left to fail as an unreadable image does; any other
    /// failure fails the job, to be retried.
    async fn fetch_inputs(&self, candidates: &[Candidate]) -> Result<(), PipelineError> {
        if self.files.bucket().is_none() {
            return Ok(());
        }
        let wanted = candidates.iter().take(self.settings.max_images_per_study);
        let fetched = join_all(wanted.map(|c| {
            let (files, rel) = (self.files.clone(), std::path::PathBuf::from(&c.file_path));
            async move { files.local_copy(&rel).await }
        }))
        .await;
        for r in fetched {
            match r {
                Ok(_) => {}
                Err(crate::store::FileError::Object(e)) if e.is_not_found() => {
                    tracing::warn!(error = %e, "an instance of the study is in neither the cache nor the bucket");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Runs one model on the study's first `max_images_per_study` candidates at once (the
    /// engine batches them), then writes its `inference.model_completed` event. Modalities the model does not accept are
    /// skipped from the index alone, without opening the file. A fault that is not the
    /// image's (the runtime) marks the whole model failed; the other models are unaffected.
    async fn run_model(
        &self,
        job: &Job,
        manifest: Arc<Manifest>,
        candidates: &[Candidate],
        gate: GatePolicy,
        t0: Instant,
    ) -> ModelRun {
        let accepted = &manifest.applicability.modalities;
        let max_images = self.settings.max_images_per_study;
        let runs = candidates.iter().enumerate().map(|(i, c)| {
            // The first `max_images_per_study` candidates are analysed at all.
            let selected = i < max_images;
            let modality_ok = accepted.is_empty()
                || c.modality
                    .as_deref()
                    .is_some_and(|m| accepted.iter().any(|a| a.eq_ignore_ascii_case(m.trim())));
            let path = self.files.absolute(std::path::Path::new(&c.file_path));
            let engine = self.engine.clone();
            let manifest = manifest.clone();
            async move {
                if !modality_ok {
                    return Ok(Output::skipped(
                        &manifest,
                        c,
                        format!(
                            "modality {} is not one the model accepts",
                            c.modality.as_deref().unwrap_or("(none)")
                        ),
                    ));
                }
                if !selected {
                    return Ok(Output::skipped(
                        &manifest,
                        c,
                        "more images than pipeline.max_images_per_study".into(),
                    ));
                }
                let id = Some(manifest.id.as_str());
                let out = match manifest.task.as_str() {
                    TASK_SEGMENTATION => engine
                        .infer_segmentation_dicom(id, &path)
                        .await
                        .map(|r| Output::Segments(Box::new(combine::segmentation_entry(&r)))),
                    TASK_LANDMARKS => engine
                        .infer_landmarks_dicom_with(id, &path, gate)
                        .await
                        .map(|r| Output::Points(combine::landmark_entry(&r))),
                    _ => engine.infer_dicom_with(id, &path, gate).await.map(|r| {
                        Output::Findings(Box::new(ImageEntry::from_inference(
                            &c.sop_instance_uid,
                            &c.series_uid,
                            &c.sop_class_uid,
                            &r,
                        )))
                    }),
                };
                match out {
                    Ok(o) => Ok(o),
                    Err(e) if e.is_input_error() => {
                        tracing::warn!(sop_instance_uid = %c.sop_instance_uid, model = %manifest.id, error = %e, "image could not be analysed");
                        Ok(Output::error(&manifest, c, e.to_string()))
                    }
                    Err(e) => Err(e),
                }
            }
        });
        let results: Vec<Result<Output, InferenceError>> = join_all(runs).await;
        let elapsed_ms = t0.elapsed().as_millis() as i64;
        let failure = results
            .iter()
            .find_map(|r| r.as_ref().err().map(|e| e.to_string()));
        let outputs: Vec<Output> = match &failure {
            None => results.into_iter().map(|r| r.expect("checked")).collect(),
            Some(reason) => candidates
                .iter()
                .map(|c| {
                    Output::error(
                        &manifest,
                        c,
                        format!("model {} failed: {reason}", manifest.id),
                    )
                })
                .collect(),
        };
        if let Some(reason) = &failure {
            tracing::error!(model = %manifest.id, reason, "model failed on the study; the other models' outputs stand");
        }
        let run = ModelRun {
            manifest,
            outputs,
            failure,
            elapsed_ms,
        };
        if let Err(e) = self.model_event(job, &run).await {
            tracing::warn!(error = %e, "writing inference.model_completed failed");
        }
        run
    }

    /// `inference.model_completed`: one model's outcome before the combined result. Findings
    /// here are the model's own, before the lung gate of the combined result.
    async fn model_event(&self, job: &Job, run: &ModelRun) -> Result<(), sqlx::Error> {
        let outcome = run.outcome(&[]);
        let mut extra = json!({
            "model_id": outcome.id,
            "model_version": outcome.version,
            "task": outcome.task,
            "status": outcome.status,
            "error": outcome.error,
            "images_analysed": outcome.images_analysed,
            "validation_status": outcome.validation_status,
            "not_for_clinical_use": outcome.not_for_clinical_use,
            "elapsed_ms": outcome.elapsed_ms,
        });
        let findings: Vec<String> = run
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::Findings(e) => Some(e),
                _ => None,
            })
            .flat_map(|e| {
                e.findings
                    .iter()
                    .filter(|f| f.presence)
                    .map(|f| f.key.clone())
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let ctr: Vec<f32> = run
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::Segments(s) => s
                    .lungs
                    .as_ref()
                    .and_then(|l| l.ctr.as_ref())
                    .map(|c| c.ratio),
                Output::Points(l) => l.ctr.as_ref().map(|c| c.ratio),
                _ => None,
            })
            .collect();
        if let Some(obj) = extra.as_object_mut() {
            if run.manifest.task == TASK_CLASSIFICATION {
                obj.insert("findings_present".into(), json!(findings));
            }
            if !ctr.is_empty() {
                obj.insert("cardiothoracic_ratio".into(), json!(ctr));
            }
        }
        let mut tx = self.db.begin_write().await?;
        self.job_event(&mut tx, job, EventType::ModelCompleted, extra)
            .await?;
        tx.commit().await?;
        self.bus.notify();
        Ok(())
    }
}

/// One model's output for one image.
enum Output {
    Findings(Box<ImageEntry>),
    Segments(Box<SegmentationEntry>),
    Points(LandmarkEntry),
}

impl Output {
    /// The model was not run on this image (`not_applicable`, with the reason).
    fn skipped(m: &Manifest, c: &Candidate, reason: String) -> Output {
        Self::with_status(m, c, "not_applicable", reason)
    }

    /// The model could not read this image, or failed altogether.
    fn error(m: &Manifest, c: &Candidate, reason: String) -> Output {
        Self::with_status(m, c, "error", reason)
    }

    fn with_status(m: &Manifest, c: &Candidate, status: &str, reason: String) -> Output {
        match m.task.as_str() {
            TASK_SEGMENTATION => Output::Segments(Box::new(SegmentationEntry {
                model_id: m.id.clone(),
                status: status.into(),
                reason: Some(reason),
                lungs: None,
            })),
            TASK_LANDMARKS => Output::Points(LandmarkEntry {
                model_id: m.id.clone(),
                status: status.into(),
                reason: Some(reason),
                points: Vec::new(),
                ctr: None,
                tier: None,
            }),
            _ => {
                let mut e =
                    ImageEntry::error(&c.sop_instance_uid, &c.series_uid, &c.sop_class_uid, reason);
                e.status = status.into();
                Output::Findings(Box::new(e))
            }
        }
    }

    fn status(&self) -> &str {
        match self {
            Output::Findings(e) => &e.status,
            Output::Segments(s) => &s.status,
            Output::Points(l) => &l.status,
        }
    }
}

/// One model's outputs over the study's candidates.
struct ModelRun {
    manifest: Arc<Manifest>,
    /// One per candidate, in candidate order.
    outputs: Vec<Output>,
    /// Set when the model failed as a whole (not an image's fault).
    failure: Option<String>,
    elapsed_ms: i64,
}

impl ModelRun {
    /// The model's outcome; with the combined `images`, an image the lung gate refused does
    /// not count as analysed by the classifier.
    fn outcome(&self, images: &[ImageEntry]) -> ModelOutcome {
        let m = &self.manifest;
        let statuses: Vec<&str> = self
            .outputs
            .iter()
            .enumerate()
            .map(|(i, o)| match (o, images.get(i)) {
                (Output::Findings(_), Some(img)) => img.status.as_str(),
                (Output::Points(_), Some(img)) => img
                    .landmarks
                    .as_ref()
                    .map_or(o.status(), |l| l.status.as_str()),
                _ => o.status(),
            })
            .collect();
        let analysed = statuses.iter().filter(|s| **s == "analysed").count();
        let status = if self.failure.is_some() {
            "failed"
        } else if analysed > 0 {
            "succeeded"
        } else if statuses.contains(&"rejected") {
            "rejected"
        } else if statuses.iter().all(|s| *s == "not_applicable") {
            "not_applicable"
        } else {
            "failed"
        };
        ModelOutcome {
            id: m.id.clone(),
            version: m.version.clone(),
            name: m.name.clone(),
            task: m.task.clone(),
            not_for_clinical_use: m.not_for_clinical_use,
            validation_status: m.validation.status.clone(),
            trained_on: m.validation.trained_on.clone(),
            status: status.into(),
            error: self
                .failure
                .clone()
                .or_else(|| (status == "failed").then(|| "no image could be read".to_string())),
            images_analysed: analysed,
            elapsed_ms: self.elapsed_ms,
        }
    }
}
