//! The output worker: after a result is stored (which owes a `report_outputs` row in the same
//! transaction), builds its SR, overlays and lung SEGs, writes them under `derived/`, and in one
//! transaction indexes them into the study (new series, the study is not re-opened) and queues
//! one outbox row per output per routed destination. A failure retries with backoff; it never
//! touches the result or its events.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::source::{self, SourceImage};
use super::sr::{self, Built, DeviceInfo};
use super::{overlay, seg, write_part10, ReportError};
use crate::clock::now_ms;
use crate::db::Database;
use crate::events::EventBus;
use crate::export::outbox::{self, NewExport};
use crate::export::settings::RouteFacts;
use crate::export::{ExportSettings, OutputKind};
use crate::result::StudyResult;
use crate::store::index::{self, DerivedInstance, DERIVED_PREFIX};
use crate::store::FileStore;

/// Queues the outputs of a stored result (called in the result's transaction).
pub async fn owe_outputs(
    tx: &mut Transaction<'_, Any>,
    result_id: i64,
    study_uid: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO report_outputs (result_id, study_uid, state, created_at, updated_at) \
         VALUES ($1, $2, 'pending', $3, $3) ON CONFLICT (result_id) DO NOTHING",
    )
    .bind(result_id)
    .bind(study_uid)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One written output.
struct Written {
    built: Built,
    kind: OutputKind,
    rel_path: String,
    size: i64,
}

/// The output worker. Cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    db: Database,
    files: FileStore,
    settings: ExportSettings,
    device: DeviceInfo,
    exports_ready: Arc<Notify>,
    bus: EventBus,
}

impl Reporter {
    pub fn new(
        db: Database,
        files: FileStore,
        settings: ExportSettings,
        ae_title: &str,
        exports_ready: Arc<Notify>,
        bus: EventBus,
    ) -> Reporter {
        Reporter {
            db,
            files,
            settings,
            device: DeviceInfo::new(ae_title),
            exports_ready,
            bus,
        }
    }

    /// Generates until `cancel` fires; wakes on every event (a stored result is one).
    pub async fn run(self, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_ms.max(10));
        let mut events = self.bus.subscribe();
        loop {
            if cancel.is_cancelled() {
                return;
            }
            match self.run_once().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "report outputs: claiming failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = events.recv() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Generates the outputs of one due result; `false` when none was due.
    pub async fn run_once(&self) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let lease = (self.settings.lease_secs.max(1) * 1000) as i64;
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT result_id FROM report_outputs WHERE state = 'pending' AND run_after <= $1 \
               AND (lease_until IS NULL OR lease_until < $1) ORDER BY result_id LIMIT 8",
        )
        .bind(now)
        .fetch_all(&self.db.pool)
        .await?;
        for id in due {
            let claimed: Option<i64> = sqlx::query_scalar(
                "UPDATE report_outputs SET lease_until = $2, attempts = attempts + 1, updated_at = $1 \
                 WHERE result_id = $3 AND state = 'pending' AND (lease_until IS NULL OR lease_until < $1) \
                 RETURNING attempts",
            )
            .bind(now)
            .bind(now + lease)
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
            if let Some(attempts) = claimed {
                self.process(id, attempts).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    #[tracing::instrument(skip(self), fields(study_uid))]
    async fn process(&self, result_id: i64, attempts: i64) -> Result<(), sqlx::Error> {
        let outcome = self.generate(result_id).await;
        let now = now_ms();
        match outcome {
            Ok(n) => {
                self.exports_ready.notify_one();
                tracing::info!(outputs = n, "report outputs written");
            }
            Err(GenError::Db(e)) => return Err(e),
            Err(e) => {
                let permanent = matches!(e, GenError::Report(ReportError::NothingAnalysed));
                let failed = permanent || attempts >= i64::from(self.settings.generate_attempts);
                let delay = self.settings.backoff_ms(attempts);
                sqlx::query(
                    "UPDATE report_outputs SET state = $2, last_error = $3, run_after = $4, \
                       lease_until = NULL, updated_at = $5 WHERE result_id = $1",
                )
                .bind(result_id)
                .bind(if failed { "failed" } else { "pending" })
                .bind(e.to_string())
                .bind(now + delay)
                .bind(now)
                .execute(&self.db.pool)
                .await?;
                tracing::warn!(error = %e, gave_up = failed, "report outputs not generated");
            }
        }
        Ok(())
    }

    /// Queues one output (`key`: its SOP Instance UID, or the FHIR report it carries) for every
    /// destination that takes this kind of output and routes this result.
    async fn queue(
        &self,
        tx: &mut Transaction<'_, Any>,
        result: &StudyResult,
        facts: &RouteFacts,
        output: OutputKind,
        key: &str,
        file_path: &str,
    ) -> Result<(), sqlx::Error> {
        for d in self
            .settings
            .destinations
            .iter()
            .filter(|d| d.sends(output) && d.routes(facts))
        {
            outbox::insert(
                tx,
                &NewExport {
                    result_id: result.id,
                    study_uid: &result.study_instance_uid,
                    destination: &d.name,
                    kind: d.kind.as_str(),
                    output: output.as_str(),
                    sop_instance_uid: key,
                    file_path,
                    max_attempts: i64::from(d.max_attempts.unwrap_or(self.settings.max_attempts)),
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn generate(&self, result_id: i64) -> Result<usize, GenError> {
        let record = crate::result::store::record(&self.db, result_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        let result: StudyResult = record
            .parse()
            .map_err(|e| GenError::Report(ReportError::Pixels(format!("result body: {e}"))))?;
        tracing::Span::current().record("study_uid", result.study_instance_uid.as_str());

        let rows = index::source_instances(&self.db, &result.study_instance_uid).await?;
        let mut images = Vec::new();
        let mut facts = RouteFacts {
            urgency: Some(result.urgency),
            ..Default::default()
        };
        for r in rows {
            // With a bucket, the images may be only there (another node received them).
            let path = match self.files.local_copy(r.file_path.as_ref()).await {
                Ok(p) => p,
                Err(crate::store::FileError::Object(e)) if e.is_not_found() => {
                    self.files.absolute(r.file_path.as_ref())
                }
                Err(e) => return Err(GenError::Storage(e)),
            };
            images.push(SourceImage {
                path,
                sop_instance_uid: r.sop_instance_uid,
                series_uid: r.series_uid,
                sop_class_uid: r.sop_class_uid,
            });
            let ae = r.calling_ae;
            let modality = r.modality;
            if !facts.calling_aes.contains(&ae) {
                facts.calling_aes.push(ae);
            }
            if let Some(m) = modality.filter(|m| !facts.modalities.contains(m)) {
                facts.modalities.push(m);
            }
        }

        let data_dir = self.files.data_dir().to_path_buf();
        let device = self.device.clone();
        let written = tokio::task::spawn_blocking(move || {
            build_all(&result, &images, &device, &data_dir).map(|w| (w, result))
        })
        .await
        .map_err(|e| GenError::Report(ReportError::Pixels(format!("output task failed: {e}"))))?;
        let (written, result) = written.map_err(GenError::Report)?;
        // Into the bucket before the rows name them, so any node's export worker can send them.
        for w in &written {
            self.files
                .upload(std::path::Path::new(&w.rel_path))
                .await
                .map_err(GenError::Storage)?;
        }

        let mut tx = self.db.begin_write().await?;
        for w in &written {
            index_output(&mut tx, &result, w, &self.device.ae_title).await?;
            self.queue(
                &mut tx,
                &result,
                &facts,
                w.kind,
                &w.built.sop_instance_uid,
                &w.rel_path,
            )
            .await?;
        }
        // The FHIR report is built at delivery time from the stored result; its row is keyed
        // by the DiagnosticReport it carries, so a result is pushed once per destination.
        let report_key = format!(
            "DiagnosticReport/{}",
            crate::fhir::resources::report_id(result.id)
        );
        self.queue(
            &mut tx,
            &result,
            &facts,
            OutputKind::Report,
            &report_key,
            "",
        )
        .await?;
        sqlx::query(
            "UPDATE report_outputs SET state = 'done', lease_until = NULL, last_error = NULL, \
               updated_at = $2 WHERE result_id = $1",
        )
        .bind(result.id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(written.len())
    }
}

#[derive(Debug, thiserror::Error)]
enum GenError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Report(ReportError),
    /// The bucket could not be read or written (the store is down): retried.
    #[error("storage: {0}")]
    Storage(crate::store::FileError),
}

/// Builds and writes the SR, one overlay per analysed image and one SEG per image with
/// analysed lung fields (blocking work).
fn build_all(
    result: &StudyResult,
    images: &[SourceImage],
    device: &DeviceInfo,
    data_dir: &std::path::Path,
) -> Result<Vec<Written>, ReportError> {
    let analysed: Vec<_> = result
        .images
        .iter()
        .filter(|i| i.status == "analysed")
        .filter_map(|e| {
            images
                .iter()
                .find(|s| s.sop_instance_uid == e.sop_instance_uid)
                .map(|s| (e, s))
        })
        .collect();
    let Some((_, first)) = analysed.first() else {
        return Err(ReportError::NothingAnalysed);
    };
    let patient_study = source::patient_study(&first.path)?;
    let mut out = Vec::new();
    let mut write = |built: Built, kind: OutputKind| -> Result<(), ReportError> {
        let rel = derived_path(
            &result.study_instance_uid,
            &built.series_uid,
            &built.sop_instance_uid,
        );
        let size = write_part10(
            built.obj.clone(),
            &built.sop_class_uid,
            &built.sop_instance_uid,
            &data_dir.join(&rel),
        )?;
        out.push(Written {
            built,
            kind,
            rel_path: rel.to_string_lossy().into_owned(),
            size: size as i64,
        });
        Ok(())
    };
    write(
        sr::build(result, images, patient_study.clone(), device)?,
        OutputKind::Sr,
    )?;
    for (n, (entry, src)) in analysed.iter().enumerate() {
        let built = overlay::build(
            result,
            entry,
            &src.path,
            patient_study.clone(),
            device,
            n + 1,
        )?;
        write(built, OutputKind::Overlay)?;
    }
    let mut seg_number = 0;
    // Lung fields stand on their own: an image the classifier did not analyse may have them.
    let segmented = result
        .images
        .iter()
        .filter(|e| e.segmentation.as_ref().map(|s| s.status.as_str()) == Some("analysed"))
        .filter_map(|e| {
            images
                .iter()
                .find(|s| s.sop_instance_uid == e.sop_instance_uid)
                .map(|s| (e, s))
        });
    for (entry, src) in segmented {
        let geometry = seg::source_geometry(&src.path)?;
        if let Some(built) = seg::build(
            result,
            entry,
            &geometry,
            patient_study.clone(),
            device,
            seg_number + 1,
        )? {
            seg_number += 1;
            write(built, OutputKind::Seg)?;
        }
    }
    Ok(out)
}

/// `derived/<study>/<series>/<sop>.dcm` (UIDs are validated digits and dots).
fn derived_path(study: &str, series: &str, sop: &str) -> PathBuf {
    PathBuf::from("derived")
        .join(study)
        .join(series)
        .join(format!("{sop}.dcm"))
}

/// Adds an output to the index as a new series of its study, without re-opening the study.
async fn index_output(
    tx: &mut Transaction<'_, Any>,
    result: &StudyResult,
    w: &Written,
    calling_ae: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let b = &w.built;
    let description = match w.kind {
        OutputKind::Sr => "AI result (unverified)",
        OutputKind::Seg => "AI lung segmentation (unverified)",
        OutputKind::Overlay | OutputKind::Report => "AI result overlay (unverified)",
    };
    let (rows, cols, photometric) = if matches!(w.kind, OutputKind::Overlay | OutputKind::Seg) {
        let g = |t| {
            b.obj
                .element_opt(t)
                .ok()
                .flatten()
                .and_then(|e| e.to_int::<i64>().ok())
        };
        (
            g(dicom_dictionary_std::tags::ROWS),
            g(dicom_dictionary_std::tags::COLUMNS),
            Some("MONOCHROME2"),
        )
    } else {
        (None, None, None)
    };
    index::add_derived(
        tx,
        &DerivedInstance {
            study_uid: &result.study_instance_uid,
            series_uid: &b.series_uid,
            sop_instance_uid: &b.sop_instance_uid,
            sop_class_uid: &b.sop_class_uid,
            transfer_syntax: super::EXPLICIT_VR_LE,
            modality: b.modality,
            series_number: i64::from(b.series_number),
            series_description: description,
            rows,
            columns: cols,
            frames: rows.map(|_| {
                b.obj
                    .element_opt(dicom_dictionary_std::tags::NUMBER_OF_FRAMES)
                    .ok()
                    .flatten()
                    .and_then(|e| e.to_int::<i64>().ok())
                    .unwrap_or(1)
            }),
            photometric,
            file_path: &w.rel_path,
            file_size: w.size,
            calling_ae,
            association_id: format!("{DERIVED_PREFIX}{}", result.id),
            study_version: result.study_version,
            now,
        },
    )
    .await
}
