//! The delivery worker: claims due outbox rows and sends each by C-STORE, STOW-RS or a FHIR
//! transaction.
//!
//! Counted as sent: a C-STORE success or warning status (0000, B000, B006, B007); a STOW-RS
//! 200/202 whose response names no instance in FailedSOPSequence; a FHIR 200 answered with a
//! `transaction-response` Bundle whose every entry has a 2xx status. Anything else is a
//! failed attempt, retried with exponential backoff until the
//! row's `max_attempts`, then dead-lettered with the reason (`export.failed`). A destination
//! removed from the configuration dead-letters its rows at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::{self, ExportRow};
use super::settings::{Destination, DestinationKind, ExportSettings};
use crate::clock::now_ms;
use crate::commitment;
use crate::db::Database;
use crate::events::EventBus;
use crate::fhir::{BundleKind, FhirSettings};
use crate::hl7;
use crate::inference::ModelInfo;
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
    /// What FHIR reports are built from (`report` rows).
    models: Arc<Vec<ModelInfo>>,
    fhir: FhirSettings,
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
            models: Arc::new(Vec::new()),
            fhir: FhirSettings::default(),
        }
    }

    /// The installed models and `[fhir]` settings the pushed reports are built with.
    pub fn with_fhir(mut self, models: Vec<ModelInfo>, fhir: FhirSettings) -> Exporter {
        self.models = Arc::new(models);
        self.fhir = fhir;
        self
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
            Ok(committed_at) => {
                outbox::mark_sent(&self.db, &row, committed_at).await?;
                tracing::info!(output = %row.output, committed = committed_at.is_some(), "export sent");
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

    /// Delivers one row; returns when the peer committed it (Storage Commitment), if asked.
    async fn deliver(
        &self,
        d: &Destination,
        row: &ExportRow,
    ) -> Result<Option<i64>, DeliveryError> {
        match d.kind {
            DestinationKind::Fhir => return self.fhir_push(d, row).await.map(|()| None),
            DestinationKind::Hl7 => return self.hl7_push(d, row).await.map(|()| None),
            _ => {}
        }
        // With a bucket the output may have been written by another node: fetched first.
        let path = match self.files.local_copy(row.file_path.as_ref()).await {
            Ok(p) => p,
            Err(crate::store::FileError::Object(e)) if e.is_not_found() => {
                self.files.absolute(row.file_path.as_ref())
            }
            Err(e) => return Err(DeliveryError::Transient(e.to_string())),
        };
        if !path.exists() {
            return Err(DeliveryError::Permanent(format!(
                "output file {} is missing",
                row.file_path
            )));
        }
        match d.kind {
            DestinationKind::Dicom => self.c_store(d, row, &path).await,
            DestinationKind::Stow => self.stow(d, row, &path).await.map(|()| None),
            DestinationKind::Fhir | DestinationKind::Hl7 => unreachable!("handled above"),
        }
    }

    async fn c_store(
        &self,
        d: &Destination,
        row: &ExportRow,
        path: &std::path::Path,
    ) -> Result<Option<i64>, DeliveryError> {
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
        // Read at each delivery, so renewed certificates are picked up without a restart.
        if let Some(files) = d.tls_files() {
            peer.tls = Some(
                files
                    .client_config()
                    .map_err(|e| DeliveryError::Transient(e.to_string()))?,
            );
        }
        let results = scu::send_study(&peer, std::slice::from_ref(&file), |_| {})
            .await
            .map_err(|e| DeliveryError::Transient(e.to_string()))?;
        let r = results
            .first()
            .ok_or_else(|| DeliveryError::Transient("no C-STORE response".into()))?;
        match r.status {
            Some(0x0000 | 0xB000 | 0xB006 | 0xB007) if d.storage_commitment => {
                self.commit(&peer, row, &file).await.map(Some)
            }
            Some(0x0000 | 0xB000 | 0xB006 | 0xB007) => Ok(None),
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
        let body = resp.bytes().await.unwrap_or_default();
        // A 202 (and some servers' 200) can still list our instance as failed; a 409 says why.
        let failure = stow_failure(&body, &row.sop_instance_uid);
        match (status.as_u16(), failure) {
            (200 | 202, None) => Ok(()),
            (200 | 202, Some(reason)) => Err(DeliveryError::Transient(format!(
                "STOW-RS answered HTTP {status} but the instance failed: {reason}"
            ))),
            (_, reason) => Err(DeliveryError::Transient(format!(
                "STOW-RS answered HTTP {status}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ))),
        }
    }

    /// POSTs the result's transaction Bundle (idempotent PUTs) to the FHIR base URL.
    async fn fhir_push(&self, d: &Destination, row: &ExportRow) -> Result<(), DeliveryError> {
        let base = d.url.as_deref().unwrap_or_default().trim_end_matches('/');
        let bundle = crate::fhir::report_bundle(
            &self.db,
            &self.models,
            &self.fhir,
            row.result_id,
            base,
            BundleKind::Transaction,
        )
        .await
        .map_err(|e| DeliveryError::Transient(format!("building the FHIR Bundle: {e}")))?
        .ok_or_else(|| {
            DeliveryError::Permanent(format!("result {} no longer exists", row.result_id))
        })?;
        let sent = bundle["entry"].as_array().map_or(0, Vec::len);
        let mut req = self
            .http
            .post(base)
            .header(reqwest::header::CONTENT_TYPE, crate::fhir::CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, crate::fhir::CONTENT_TYPE)
            .json(&bundle);
        if let Some(auth) = d.authorization() {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| DeliveryError::Transient(format!("FHIR request failed: {e}")))?;
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if status.as_u16() != 200 {
            let why = json
                .as_ref()
                .and_then(outcome_text)
                .map(|t| format!(": {t}"))
                .unwrap_or_default();
            return Err(DeliveryError::Transient(format!(
                "FHIR server answered HTTP {status}{why}"
            )));
        }
        let json = json.ok_or_else(|| {
            DeliveryError::Transient("FHIR server answered 200 without a JSON Bundle".into())
        })?;
        check_transaction_response(&json, sent).map_err(DeliveryError::Transient)
    }
}

impl Exporter {
    /// Storage Commitment after a C-STORE: N-ACTION on an association of its own, then waits
    /// (at most `export.timeout_secs`) for the peer's N-EVENT-REPORT, which reaches a
    /// listener (ours or another node's) on a new association. Returns when it was committed.
    async fn commit(
        &self,
        peer: &Peer,
        row: &ExportRow,
        file: &OutgoingFile,
    ) -> Result<i64, DeliveryError> {
        let db_error = |e: sqlx::Error| DeliveryError::Transient(format!("database: {e}"));
        let transaction_uid = commitment::request(
            &self.db,
            row.id,
            &file.sop_class_uid,
            &file.sop_instance_uid,
        )
        .await
        .map_err(db_error)?;
        let data = commitment::action_data_set(
            &transaction_uid,
            &file.sop_class_uid,
            &file.sop_instance_uid,
        );
        let (status, comment) = scu::n_action(
            peer,
            commitment::PUSH_MODEL_SOP_CLASS,
            commitment::PUSH_MODEL_SOP_INSTANCE,
            commitment::ACTION_REQUEST,
            &data,
        )
        .await
        .map_err(|e| DeliveryError::Transient(format!("storage commitment request: {e}")))?;
        if status != 0x0000 {
            return Err(DeliveryError::Transient(format!(
                "storage commitment N-ACTION status {status:04X}{}",
                comment.map(|c| format!(": {c}")).unwrap_or_default()
            )));
        }
        tracing::debug!(transaction_uid, "storage commitment requested");
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.settings.timeout_secs.max(1));
        loop {
            match commitment::outcome(&self.db, &transaction_uid)
                .await
                .map_err(db_error)?
            {
                commitment::Outcome::Committed { at } => return Ok(at),
                commitment::Outcome::Failed { reason } => {
                    return Err(DeliveryError::Transient(format!(
                        "storage commitment failed: {reason}"
                    )))
                }
                commitment::Outcome::Requested => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DeliveryError::Transient(format!(
                    "no storage commitment report within {} s",
                    self.settings.timeout_secs
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends the result version's ORU^R01 over MLLP and waits for the ACK: AA is sent; AE,
    /// AR, a malformed answer or none within `export.timeout_secs` are failed attempts
    /// (retried, then dead-lettered with the ACK's text).
    async fn hl7_push(&self, d: &Destination, row: &ExportRow) -> Result<(), DeliveryError> {
        let record = crate::result::store::record(&self.db, row.result_id)
            .await
            .map_err(|e| DeliveryError::Transient(format!("reading the result: {e}")))?
            .ok_or_else(|| {
                DeliveryError::Permanent(format!("result {} no longer exists", row.result_id))
            })?;
        let bundle = crate::fhir::report_bundle(
            &self.db,
            &self.models,
            &self.fhir,
            row.result_id,
            "urn:radstream",
            BundleKind::Collection,
        )
        .await
        .map_err(|e| DeliveryError::Transient(format!("building the report: {e}")))?
        .ok_or_else(|| {
            DeliveryError::Permanent(format!("result {} no longer exists", row.result_id))
        })?;
        let study = crate::store::index::find_study(&self.db.pool, &row.study_uid)
            .await
            .map_err(|e| DeliveryError::Transient(format!("reading the study: {e}")))?
            .ok_or_else(|| {
                DeliveryError::Permanent(format!("study {} no longer exists", row.study_uid))
            })?;
        let order = hl7::OrderFacts {
            accession_number: study.accession_number,
            referring_physician: study.referring_physician,
            study_description: study.study_description,
            patient_id: study.patient_id,
            patient_name: study.patient_name,
            patient_birth_date: study.patient_birth_date,
            patient_sex: study.patient_sex,
            result_version: record.version,
            study_uid: row.study_uid.clone(),
        };
        let env = hl7::Envelope {
            sending_application: d
                .sending_application
                .clone()
                .unwrap_or_else(|| "RADSTREAM".into()),
            sending_facility: d.sending_facility.clone().unwrap_or_default(),
            receiving_application: d.receiving_application.clone().unwrap_or_default(),
            receiving_facility: d.receiving_facility.clone().unwrap_or_default(),
            version: d.version.clone().unwrap_or_else(|| "2.5.1".into()),
        };
        // MSH-10 (at most 20 characters): the row and the attempt, so a late ACK of an
        // earlier attempt is told apart.
        let control_id = format!("RS{}-{}", row.id, row.attempts + 1);
        let now = crate::clock::format_ms(now_ms());
        let preliminary = self.fhir.report_status == crate::fhir::ReportStatus::Preliminary;
        let message = hl7::message::oru_r01(&bundle, &order, &env, &control_id, &now, preliminary)
            .ok_or_else(|| DeliveryError::Permanent("the report has no DiagnosticReport".into()))?;
        let tls = match d.tls_files() {
            Some(files) => Some(
                files
                    .client_config()
                    .map_err(|e| DeliveryError::Transient(e.to_string()))?,
            ),
            None => None,
        };
        let ack = hl7::mllp::send(
            d.host.as_deref().unwrap_or_default(),
            d.port.unwrap_or_default(),
            tls,
            &message,
            Duration::from_secs(self.settings.timeout_secs.max(1)),
        )
        .await
        .map_err(|e| DeliveryError::Transient(format!("MLLP: {e}")))?;
        if ack.control_id != control_id {
            return Err(DeliveryError::Transient(format!(
                "ACK for message '{}', not '{control_id}'",
                ack.control_id
            )));
        }
        match ack.code.as_str() {
            "AA" | "CA" => Ok(()),
            code => Err(DeliveryError::Transient(format!(
                "HL7 ACK {code}{}",
                if ack.text.is_empty() {
                    String::new()
                } else {
                    format!(": {}", ack.text)
                }
            ))),
        }
    }
}

/// Why a STOW-RS response says `sop_instance_uid` failed: the instance is in
/// FailedSOPSequence (0008,1198), with its FailureReason (0008,1197) when given. `None` when
/// the body is not a DICOM JSON response (some servers answer nothing) or does not list it.
pub fn stow_failure(body: &[u8], sop_instance_uid: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    // The response is a data set, or (some servers) an array holding one.
    let ds = v.as_array().and_then(|a| a.first()).unwrap_or(&v);
    let failed = ds.get("00081198")?.get("Value")?.as_array()?;
    let first = |item: &serde_json::Value, tag: &str| {
        item.get(tag)?.get("Value")?.as_array()?.first().cloned()
    };
    let item = failed.iter().find(|item| {
        first(item, "00081155").and_then(|u| u.as_str().map(str::to_string))
            == Some(sop_instance_uid.to_string())
    });
    // A failed item that names no instance still means our single instance failed.
    let item = item.or_else(|| {
        (failed.len() == 1 && first(&failed[0], "00081155").is_none()).then(|| &failed[0])
    })?;
    Some(match first(item, "00081197").and_then(|r| r.as_u64()) {
        Some(code) => format!("failure reason {code:04X}H ({})", stow_reason(code)),
        None => "no failure reason given".into(),
    })
}

/// The failure reasons PS3.18 (Store Instances Response) lists.
fn stow_reason(code: u64) -> &'static str {
    match code {
        0xA700 => "out of resources",
        0xA900 => "data set does not match SOP class",
        0xC000 => "cannot understand",
        0xC122 => "referenced transfer syntax not supported",
        0x0110 => "processing failure",
        0x0122 => "referenced SOP class not supported",
        0x0124 => "not authorized",
        _ => "see the server's log",
    }
}

/// Checks a FHIR transaction response: a `transaction-response` Bundle with one entry per
/// request, each with a 2xx `response.status`.
fn check_transaction_response(v: &serde_json::Value, sent: usize) -> Result<(), String> {
    if v["resourceType"] != "Bundle" || v["type"] != "transaction-response" {
        return Err(format!(
            "FHIR server answered 200 with {} '{}', not a transaction-response Bundle",
            v["resourceType"].as_str().unwrap_or("no resourceType"),
            v["type"].as_str().unwrap_or_default()
        ));
    }
    let entries = v["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    if entries.len() != sent {
        return Err(format!(
            "FHIR transaction-response has {} entries for {sent} requests",
            entries.len()
        ));
    }
    for (i, e) in entries.iter().enumerate() {
        let status = e["response"]["status"].as_str().unwrap_or_default();
        if !status.trim_start().starts_with('2') {
            let why = outcome_text(&e["response"]["outcome"])
                .map(|t| format!(": {t}"))
                .unwrap_or_default();
            return Err(format!(
                "FHIR transaction entry {i} answered '{status}'{why}"
            ));
        }
    }
    Ok(())
}

/// The first issue of an OperationOutcome, short, for the row's `last_error`.
fn outcome_text(v: &serde_json::Value) -> Option<String> {
    if v["resourceType"] != "OperationOutcome" {
        return None;
    }
    let issue = v["issue"].as_array()?.first()?;
    let text = issue["diagnostics"]
        .as_str()
        .or_else(|| issue["details"]["text"].as_str())
        .or_else(|| issue["code"].as_str())?;
    Some(text.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stow_failed_sop_sequence_is_a_failure() {
        let uid = "2.25.1";
        let ok = json!({"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]}}]}});
        assert_eq!(stow_failure(ok.to_string().as_bytes(), uid), None);
        assert_eq!(stow_failure(b"", uid), None);
        let failed = json!({"00081198": {"vr": "SQ", "Value": [{
            "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.88.34"]},
            "00081155": {"vr": "UI", "Value": [uid]},
            "00081197": {"vr": "US", "Value": [0xA900]}}]}});
        let why = stow_failure(failed.to_string().as_bytes(), uid).unwrap();
        assert!(
            why.contains("A900H") && why.contains("does not match"),
            "{why}"
        );
        // Another instance failing is not ours; a bare array wrapper is accepted.
        assert_eq!(
            stow_failure(json!([failed]).to_string().as_bytes(), "2.25.2"),
            None
        );
        assert!(stow_failure(json!([failed]).to_string().as_bytes(), uid).is_some());
        let anonymous = json!({"00081198": {"vr": "SQ", "Value": [{}]}});
        assert_eq!(
            stow_failure(anonymous.to_string().as_bytes(), uid).as_deref(),
            Some("no failure reason given")
        );
    }

    #[test]
    fn transaction_response_needs_every_entry_2xx() {
        let ok = json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
            {"response": {"status": "200 OK"}}, {"response": {"status": "201 Created"}}]});
        check_transaction_response(&ok, 2).unwrap();
        assert!(check_transaction_response(&ok, 3)
            .unwrap_err()
            .contains("2 entries for 3"));
        let bad = json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
            {"response": {"status": "200 OK"}},
            {"response": {"status": "422 Unprocessable Entity", "outcome": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "invalid", "diagnostics": "bad code"}]}}}]});
        let e = check_transaction_response(&bad, 2).unwrap_err();
        assert!(
            e.contains("entry 1") && e.contains("422") && e.contains("bad code"),
            "{e}"
        );
        let search = json!({"resourceType": "Bundle", "type": "searchset"});
        assert!(check_transaction_response(&search, 0).is_err());
        let oo = json!({"resourceType": "OperationOutcome", "issue": [{"code": "exception"}]});
        assert_eq!(outcome_text(&oo).as_deref(), Some("exception"));
    }
}
