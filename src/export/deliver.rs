//! The delivery worker: claims due outbox rows and sends each by C-STORE or STOW-RS.
//!
//! A C-STORE success or warning status (0000, B000, B006, B007) and an HTTP 200/202 count as
//! sent; anything else is a failed attempt, retried with exponential backoff until the
//! row's `max_attempts`, then dead-lettered with the reason (`export.failed`). A destination
//! removed from the configuration dead-letters its rows at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::{self, ExportRow};
use super::settings::{Destination, DestinationKind, ExportSettings};
use crate::db::{now_ms, Database};
use crate::events::EventBus;
use crate::scu::{self, OutgoingFile, Peer};
use crate::store::FileStore;

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (no such destination, file gone).
    #[error("{0}")]
    Permanent(String),
}

/// The delivery worker. Cheap to clone.
#[derive(Clone)]
pub struct Exporter {
    db: Database,
    files: FileStore,
    settings: ExportSettings,
    calling_ae: String,
    ready: Arc<Notify>,
    bus: EventBus,
    http: reqwest::Client,
}

impl Exporter {
    pub fn new(
        db: Database,
        files: FileStore,
        settings: ExportSettings,
        calling_ae: &str,
        ready: Arc<Notify>,
        bus: EventBus,
    ) -> Exporter {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .build()
            .unwrap_or_default();
        Exporter {
            db,
            files,
            settings,
            calling_ae: calling_ae.into(),
            ready,
            bus,
            http,
        }
    }

    /// Delivers until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_ms.max(10));
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if cancel.is_cancelled() {
                return;
            }
            match self.run_once().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "export outbox: claiming failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut ready => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Claims and delivers one due row; `false` when none was due.
    pub async fn run_once(&self) -> Result<bool, sqlx::Error> {
        let lease = (self.settings.lease_secs.max(1) * 1000) as i64;
        let Some(row) = outbox::claim(&self.db, lease).await? else {
            return Ok(false);
        };
        self.deliver_row(row).await?;
        Ok(true)
    }

    #[tracing::instrument(skip_all, fields(export_id = row.id, study_uid = %row.study_uid,
        sop_instance_uid = %row.sop_instance_uid, destination = %row.destination, attempt = row.attempts))]
    async fn deliver_row(&self, row: ExportRow) -> Result<(), sqlx::Error> {
        let outcome = match self
            .settings
            .destinations
            .iter()
            .find(|d| d.name == row.destination)
        {
            None => Err(DeliveryError::Permanent(format!(
                "destination '{}' is no longer configured",
                row.destination
            ))),
            Some(d) => self.deliver(d, &row).await,
        };
        match outcome {
            Ok(()) => {
                outbox::mark_sent(&self.db, &row).await?;
                tracing::info!(output = %row.output, "export sent");
            }
            Err(e) => {
                let permanent = matches!(e, DeliveryError::Permanent(_));
                let retry_at = now_ms() + self.settings.backoff_ms(row.attempts);
                let dead = outbox::mark_failed(&self.db, &row, &e.to_string(), retry_at, permanent)
                    .await?;
                if dead {
                    tracing::error!(error = %e, "export dead-lettered");
                } else {
                    tracing::warn!(error = %e, retry_in_ms = retry_at - now_ms(), "export attempt failed; will retry");
                }
            }
        }
        self.bus.notify();
        Ok(())
    }

    async fn deliver(&self, d: &Destination, row: &ExportRow) -> Result<(), DeliveryError> {
        let path = self.files.absolute(row.file_path.as_ref());
        if !path.exists() {
            return Err(DeliveryError::Permanent(format!(
                "output file {} is missing",
                row.file_path
            )));
        }
        match d.kind {
            DestinationKind::Dicom => self.c_store(d, &path).await,
            DestinationKind::Stow => self.stow(d, row, &path).await,
        }
    }

    async fn c_store(&self, d: &Destination, path: &std::path::Path) -> Result<(), DeliveryError> {
        let p = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || OutgoingFile::inspect(&p))
            .await
            .map_err(|e| DeliveryError::Transient(e.to_string()))?
            .map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        let addr = format!(
            "{}:{}",
            d.host.as_deref().unwrap_or_default(),
            d.port.unwrap_or_default()
        );
        let mut peer = Peer::new(
            addr,
            d.calling_ae.as_deref().unwrap_or(&self.calling_ae),
            d.ae_title.as_deref().unwrap_or_default(),
        );
        peer.timeout = Duration::from_secs(self.settings.timeout_secs.max(1));
        let results = scu::send_study(&peer, std::slice::from_ref(&file), |_| {})
            .await
            .map_err(|e| DeliveryError::Transient(e.to_string()))?;
        let r = results
            .first()
            .ok_or_else(|| DeliveryError::Transient("no C-STORE response".into()))?;
        match r.status {
            Some(0x0000 | 0xB000 | 0xB006 | 0xB007) => Ok(()),
            Some(s) => Err(DeliveryError::Transient(format!(
                "C-STORE status {s:04X}{}",
                r.error
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default()
            ))),
            None => Err(DeliveryError::Transient(
                r.error.clone().unwrap_or_else(|| "not answered".into()),
            )),
        }
    }

    async fn stow(
        &self,
        d: &Destination,
        row: &ExportRow,
        path: &std::path::Path,
    ) -> Result<(), DeliveryError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| DeliveryError::Transient(format!("reading {}: {e}", row.file_path)))?;
        let boundary = format!("radstream-{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::with_capacity(bytes.len() + 256);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut req = self
            .http
            .post(d.url.as_deref().unwrap_or_default())
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header(reqwest::header::ACCEPT, "application/dicom+json")
            .body(body);
        if let Some(auth) = d.authorization() {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| DeliveryError::Transient(format!("STOW-RS request failed: {e}")))?;
        let status = resp.status();
        if status.as_u16() == 200 || status.as_u16() == 202 {
            Ok(())
        } else {
            Err(DeliveryError::Transient(format!(
                "STOW-RS answered HTTP {status}"
            )))
        }
    }
}
