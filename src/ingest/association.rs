//! One established association: read PDUs, run C-ECHO and C-STORE, answer each store only
//! once the store says the instance is durable.

use std::time::{Duration, Instant};

use dicom_ul::pdu::{AbortRQSource, PDataValue, PDataValueType};
use dicom_ul::Pdu;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dimse::{self, status, Command};
use super::transport::{Assoc, Pdv, Received};
use super::IngestContext;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::commitment;
use crate::mpps::{self, MPPS_SOP_CLASS};
use crate::store::{FileMeta, IncomingFile, Reservation, Source, Store, StoreError, StoreOutcome};

/// Where the data set of the current C-STORE goes.
enum Sink {
    File(Box<(IncomingFile, FileMeta, Reservation)>),
    /// The data set of an N-CREATE or N-SET (a few kilobytes), parsed once complete.
    Memory(Vec<u8>),
    /// The request is refused already; its data set is read and dropped, then answered.
    Discard {
        status: u16,
        comment: String,
    },
}

/// What the association is in the middle of.
enum Pending {
    Idle,
    Command { pc_id: u8, bytes: Vec<u8> },
    Data { pc_id: u8, cmd: Command, sink: Sink },
}

/// An N-CREATE or N-SET data set larger than this is refused.
const MAX_N_DATA_SET: usize = 4 << 20;

/// Counters for the end-of-association log line.
#[derive(Default)]
struct Tally {
    stored: u64,
    failed: u64,
    bytes: u64,
}

/// How an association ended, for the completion logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Released,
    Aborted,
}

/// Serves `assoc` until release, abort, time-out or shutdown.
pub async fn serve(
    mut assoc: Assoc,
    ctx: &IngestContext,
    association_id: &str,
    cancel: CancellationToken,
) -> Ending {
    let calling_ae = assoc.peer_ae_title().trim().to_string();
    let started = Instant::now();
    let mut pending = Pending::Idle;
    let mut tally = Tally::default();
    let idle = Duration::from_secs(ctx.settings.idle_timeout_secs);
    let dimse_timeout = Duration::from_secs(ctx.settings.dimse_timeout_secs);

    let ending = loop {
        let wait = if matches!(pending, Pending::Idle) {
            idle
        } else {
            dimse_timeout
        };
        let pdu = tokio::select! {
            _ = cancel.cancelled() => {
                tracing::info!("shutting down: aborting association");
                let _ = assoc.abort().await;
                break Ending::Aborted;
            }
            r = tokio::time::timeout(wait, assoc.receive()) => r,
        };
        match pdu {
            Err(_) => {
                tracing::warn!(
                    timeout_secs = wait.as_secs(),
                    "association timed out; aborting"
                );
                let _ = assoc.abort().await;
                break Ending::Aborted;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "association failed; closing");
                let _ = assoc.abort().await;
                break Ending::Aborted;
            }
            Ok(Ok(Received::PData(data))) => {
                let mut ok = true;
                for pdv in data {
                    if let Err(reason) = handle_pdv(
                        &mut assoc,
                        ctx,
                        &calling_ae,
                        association_id,
                        &mut pending,
                        &mut tally,
                        pdv,
                    )
                    .await
                    {
                        tracing::warn!(reason, "protocol error; aborting association");
                        ok = false;
                        break;
                    }
                }
                if !ok {
                    let _ = assoc.abort().await;
                    break Ending::Aborted;
                }
            }
            Ok(Ok(Received::Other(Pdu::ReleaseRQ))) => {
                if !matches!(pending, Pending::Idle) {
                    tracing::warn!("release requested in the middle of a message; the partial instance is discarded");
                }
                let _ = assoc.send(&Pdu::ReleaseRP).await;
                break Ending::Released;
            }
            Ok(Ok(Received::Other(Pdu::AbortRQ { source }))) => {
                tracing::info!(?source, "peer aborted the association");
                break Ending::Aborted;
            }
            Ok(Ok(Received::Other(other))) => {
                tracing::warn!(pdu = ?pdu_kind(&other), "unexpected PDU; aborting association");
                let _ = assoc
                    .send(&Pdu::AbortRQ {
                        source: AbortRQSource::ServiceProvider(
                            dicom_ul::pdu::AbortRQServiceProviderReason::UnexpectedPdu,
                        ),
                    })
                    .await;
                break Ending::Aborted;
            }
        }
    };
    // Dropping `pending` deletes the temporary file of an unfinished instance.
    drop(pending);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        ending = ?ending,
        stored = tally.stored,
        failed = tally.failed,
        mb = tally.bytes as f64 / 1e6,
        secs,
        "association ended"
    );
    ending
}

fn pdu_kind(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        _ => "unknown",
    }
}

async fn handle_pdv(
    assoc: &mut Assoc,
    ctx: &IngestContext,
    calling_ae: &str,
    association_id: &str,
    pending: &mut Pending,
    tally: &mut Tally,
    pdv: Pdv,
) -> Result<(), &'static str> {
    match (pdv.value_type, std::mem::replace(pending, Pending::Idle)) {
        (PDataValueType::Command, Pending::Idle) => {
            *pending = Pending::Command {
                pc_id: pdv.presentation_context_id,
                bytes: pdv.data.to_vec(),
            };
        }
        (PDataValueType::Command, Pending::Command { pc_id, mut bytes }) => {
            if pc_id != pdv.presentation_context_id {
                return Err("command fragments on two presentation contexts");
            }
            if bytes.len() + pdv.data.len() > dimse::MAX_COMMAND_BYTES {
                return Err("command set larger than 64 KiB");
            }
            bytes.extend_from_slice(&pdv.data);
            *pending = Pending::Command { pc_id, bytes };
        }
        (
            PDataValueType::Data,
            Pending::Data {
                pc_id,
                cmd,
                mut sink,
            },
        ) => {
            if pc_id != pdv.presentation_context_id {
                return Err("data set fragment on another presentation context");
            }
            if let Sink::File(f) = &mut sink {
                let file = &mut f.0;
                if let Err(e) = file.write(&pdv.data).await {
                    tracing::error!(error = %e, "cannot write the incoming instance");
                    sink = Sink::Discard {
                        status: status::OUT_OF_RESOURCES,
                        comment: "cannot write the instance to disk".into(),
                    };
                }
            } else if let Sink::Memory(buf) = &mut sink {
                if buf.len() + pdv.data.len() > MAX_N_DATA_SET {
                    sink = Sink::Discard {
                        status: status::PROCESSING_FAILURE,
                        comment: "data set larger than 4 MiB".into(),
                    };
                } else {
                    buf.extend_from_slice(&pdv.data);
                }
            }
            if pdv.is_last && matches!(sink, Sink::Memory(_)) {
                let Sink::Memory(bytes) = sink else {
                    unreachable!("checked above")
                };
                return normalized(assoc, ctx, calling_ae, pc_id, cmd, &bytes).await;
            }
            if pdv.is_last {
                finish_store(
                    assoc,
                    ctx,
                    calling_ae,
                    association_id,
                    pc_id,
                    cmd,
                    sink,
                    tally,
                )
                .await?;
            } else {
                *pending = Pending::Data { pc_id, cmd, sink };
            }
            return Ok(());
        }
        (PDataValueType::Data, _) => return Err("data set fragment without a command"),
        (PDataValueType::Command, Pending::Data { .. }) => {
            return Err("new command before the data set was complete")
        }
    }
    // A command set is complete: dispatch it.
    if pdv.is_last {
        if let Pending::Command { pc_id, bytes } = std::mem::replace(pending, Pending::Idle) {
            let cmd = match dimse::parse_command(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable command set");
                    return Err("unreadable command set");
                }
            };
            *pending = dispatch(assoc, ctx, calling_ae, pc_id, cmd).await?;
        }
    }
    Ok(())
}

/// Acts on a complete command: answers C-ECHO, prepares the sink of a C-STORE.
async fn dispatch(
    assoc: &mut Assoc,
    ctx: &IngestContext,
    calling_ae: &str,
    pc_id: u8,
    cmd: Command,
) -> Result<Pending, &'static str> {
    match cmd.field {
        dimse::C_ECHO_RQ => {
            tracing::debug!("C-ECHO");
            send_response(assoc, pc_id, &cmd, status::SUCCESS, None).await?;
            Ok(Pending::Idle)
        }
        dimse::C_STORE_RQ if cmd.has_data_set => {
            let sink = match prepare_store(assoc, ctx, calling_ae, pc_id, &cmd).await {
                Ok(s) => s,
                Err((status, comment)) => Sink::Discard { status, comment },
            };
            Ok(Pending::Data { pc_id, cmd, sink })
        }
        dimse::N_CREATE_RQ | dimse::N_SET_RQ | dimse::N_EVENT_REPORT_RQ if cmd.has_data_set => {
            let wanted = match cmd.field {
                dimse::N_EVENT_REPORT_RQ => commitment::PUSH_MODEL_SOP_CLASS,
                _ => MPPS_SOP_CLASS,
            };
            let sink = match negotiated(assoc, pc_id, &cmd) {
                Ok(_) if cmd.sop_class_uid == wanted => Sink::Memory(Vec::new()),
                Ok(_) => Sink::Discard {
                    status: status::SOP_CLASS_NOT_SUPPORTED,
                    comment: format!(
                        "operation {:#06x} is not supported for {}",
                        cmd.field, cmd.sop_class_uid
                    ),
                },
                Err((status, comment)) => Sink::Discard { status, comment },
            };
            Ok(Pending::Data { pc_id, cmd, sink })
        }
        _ if cmd.has_data_set => Ok(Pending::Data {
            pc_id,
            sink: Sink::Discard {
                status: status::UNRECOGNIZED_OPERATION,
                comment: format!("operation {:#06x} is not supported", cmd.field),
            },
            cmd,
        }),
        _ => {
            send_response(
                assoc,
                pc_id,
                &cmd,
                status::UNRECOGNIZED_OPERATION,
                Some("operation not supported"),
            )
            .await?;
            Ok(Pending::Idle)
        }
    }
}

/// The presentation context `pc_id` if it was negotiated for the command's SOP class.
fn negotiated<'a>(
    assoc: &'a Assoc,
    pc_id: u8,
    cmd: &Command,
) -> Result<&'a dicom_ul::pdu::PresentationContextNegotiated, (u16, String)> {
    let pc = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.id == pc_id)
        .ok_or((
            status::CANNOT_UNDERSTAND,
            "unknown presentation context".to_string(),
        ))?;
    if cmd.sop_class_uid != pc.abstract_syntax.trim_end_matches(['\0', ' ']) {
        return Err((
            status::SOP_CLASS_NOT_SUPPORTED,
            format!(
                "SOP class {} was not negotiated on this context",
                cmd.sop_class_uid
            ),
        ));
    }
    Ok(pc)
}

/// A complete N-CREATE, N-SET or N-EVENT-REPORT data set: parsed in the context's transfer
/// syntax, then handed to its service.
async fn normalized(
    assoc: &mut Assoc,
    ctx: &IngestContext,
    calling_ae: &str,
    pc_id: u8,
    cmd: Command,
    bytes: &[u8],
) -> Result<(), &'static str> {
    let ts = negotiated(assoc, pc_id, &cmd)
        .ok()
        .map(|pc| pc.transfer_syntax.trim_end_matches(['\0', ' ']).to_string())
        .and_then(|uid| TransferSyntaxRegistry.get(&uid));
    let Some(ts) = ts else {
        return send_response(
            assoc,
            pc_id,
            &cmd,
            status::CANNOT_UNDERSTAND,
            Some("transfer syntax not supported"),
        )
        .await;
    };
    let obj = match InMemDicomObject::read_dataset_with_ts(bytes, ts) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable MPPS data set");
            return send_response(
                assoc,
                pc_id,
                &cmd,
                status::CANNOT_UNDERSTAND,
                Some("data set cannot be parsed"),
            )
            .await;
        }
    };
    if cmd.field == dimse::N_EVENT_REPORT_RQ {
        return commitment_report(assoc, ctx, calling_ae, pc_id, &cmd, &obj).await;
    }
    procedure_step(assoc, ctx, calling_ae, pc_id, cmd, &obj).await
}

/// The N-EVENT-REPORT of a Storage Commitment transaction we opened (PS3.4 J.3.3): recorded
/// for the exporter waiting on it, then answered.
async fn commitment_report(
    assoc: &mut Assoc,
    ctx: &IngestContext,
    calling_ae: &str,
    pc_id: u8,
    cmd: &Command,
    obj: &InMemDicomObject,
) -> Result<(), &'static str> {
    let report = commitment::read_report(obj);
    let event = cmd.type_id.unwrap_or_default();
    if event != commitment::EVENT_SUCCESS && event != commitment::EVENT_FAILURES {
        return send_response(
            assoc,
            pc_id,
            cmd,
            status::NO_SUCH_EVENT_TYPE,
            Some("event type must be 1 or 2"),
        )
        .await;
    }
    match commitment::record_report(&ctx.db, &report, calling_ae).await {
        Ok(known) => {
            tracing::info!(
                transaction_uid = %report.transaction_uid,
                committed = report.committed.len(),
                failed = report.failed.len(),
                known,
                calling_ae,
                "storage commitment report"
            );
            send_response(assoc, pc_id, cmd, status::SUCCESS, None).await
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record a storage commitment report");
            send_response(
                assoc,
                pc_id,
                cmd,
                status::PROCESSING_FAILURE,
                Some("cannot record the report"),
            )
            .await
        }
    }
}

/// N-CREATE or N-SET of a Modality Performed Procedure Step: stores it, lets the tracker
/// complete the study if the step is the evidence it waited for, then answers.
async fn procedure_step(
    assoc: &mut Assoc,
    ctx: &IngestContext,
    calling_ae: &str,
    pc_id: u8,
    mut cmd: Command,
    obj: &InMemDicomObject,
) -> Result<(), &'static str> {
    let attrs = mpps::read_attributes(obj);
    let create = cmd.field == dimse::N_CREATE_RQ;
    if create && cmd.sop_instance_uid.is_empty() {
        // The SCP assigns the UID when the SCU did not (PS3.4 F.7.2.1.1).
        cmd.sop_instance_uid = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    }
    let span = tracing::info_span!(
        "mpps",
        step_uid = %cmd.sop_instance_uid,
        study_uid = attrs.study_uid.as_deref().unwrap_or_default(),
        create
    );
    let outcome = if create {
        mpps::create(&ctx.db, &cmd.sop_instance_uid, &attrs, calling_ae)
            .instrument(span.clone())
            .await
    } else {
        mpps::update(&ctx.db, &cmd.sop_instance_uid, &attrs)
            .instrument(span.clone())
            .await
    };
    match outcome {
        Ok(row) => {
            let _enter = span.enter();
            tracing::info!(status = %row.status, calling_ae, "procedure step stored");
            drop(_enter);
            if let Some(queue) = &ctx.mpps_forward {
                let _ = queue.send(mpps::Forward {
                    create,
                    step_uid: cmd.sop_instance_uid.clone(),
                    data_set: obj.clone(),
                });
            }
            let finished = mpps::StepStatus::parse(&row.status).is_some_and(|s| s.is_final());
            if let Some(study_uid) = row.study_uid.as_deref() {
                if let Err(e) = ctx
                    .tracker
                    .procedure_step_changed(study_uid, finished)
                    .instrument(span.clone())
                    .await
                {
                    tracing::error!(study_uid, error = %e, "completion check after MPPS failed");
                }
            }
            send_response(assoc, pc_id, &cmd, status::SUCCESS, None).await
        }
        Err(e) => {
            let st = e.status();
            let _enter = span.enter();
            tracing::warn!(status = format!("{st:04X}"), reason = %e, calling_ae, "MPPS request refused");
            drop(_enter);
            send_response(assoc, pc_id, &cmd, st, Some(&e.to_string())).await
        }
    }
}

async fn prepare_store(
    assoc: &Assoc,
    ctx: &IngestContext,
    calling_ae: &str,
    pc_id: u8,
    cmd: &Command,
) -> Result<Sink, (u16, String)> {
    let pc = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.id == pc_id)
        .ok_or((
            status::CANNOT_UNDERSTAND,
            "unknown presentation context".to_string(),
        ))?;
    let mismatch = |e: StoreError| (status::DATA_SET_MISMATCH, e.to_string());
    let class = Store::command_uid("AffectedSOPClassUID", &cmd.sop_class_uid).map_err(mismatch)?;
    let sop =
        Store::command_uid("AffectedSOPInstanceUID", &cmd.sop_instance_uid).map_err(mismatch)?;
    if class.as_str() != pc.abstract_syntax.trim_end_matches(['\0', ' ']) {
        return Err((
            status::SOP_CLASS_NOT_SUPPORTED,
            format!("SOP class {class} was not negotiated on this context"),
        ));
    }
    if let Err(e) = ctx.store.check_room() {
        return Err((status::OUT_OF_RESOURCES, e.to_string()));
    }
    let meta = FileMeta {
        sop_class_uid: class.to_string(),
        sop_instance_uid: sop.to_string(),
        transfer_syntax: pc.transfer_syntax.trim_end_matches(['\0', ' ']).to_string(),
        source_ae: calling_ae.to_string(),
        receiving_ae: ctx.settings.ae_title.clone(),
    };
    let file = ctx
        .store
        .files
        .begin(&meta)
        .await
        .map_err(|e| (status::OUT_OF_RESOURCES, e.to_string()))?;
    let reservation = ctx.store.reserve(&meta.sop_instance_uid).await;
    Ok(Sink::File(Box::new((file, meta, reservation))))
}

#[allow(clippy::too_many_arguments)]
async fn finish_store(
    assoc: &mut Assoc,
    ctx: &IngestContext,
    calling_ae: &str,
    association_id: &str,
    pc_id: u8,
    cmd: Command,
    sink: Sink,
    tally: &mut Tally,
) -> Result<(), &'static str> {
    let span = tracing::info_span!("c_store", sop_instance_uid = %cmd.sop_instance_uid, study_uid = tracing::field::Empty);
    let result = async {
        match sink {
            Sink::Discard { status, comment } => Err((status, comment)),
            Sink::Memory(_) => Err((
                status::CANNOT_UNDERSTAND,
                "a data set without a C-STORE".to_string(),
            )),
            Sink::File(f) => {
                let (file, meta, reservation) = *f;
                let size = file.len();
                let source = Source {
                    calling_ae,
                    association_id,
                    expected_study: None,
                };
                let outcome = ctx
                    .store
                    .accept(reservation, file, &meta, &source)
                    .await
                    .map_err(|e| {
                        let st = match &e {
                            StoreError::Resources(_) => status::OUT_OF_RESOURCES,
                            StoreError::Mismatch(_) => status::DATA_SET_MISMATCH,
                            StoreError::Unparseable(_) => status::CANNOT_UNDERSTAND,
                        };
                        (st, e.to_string())
                    })?;
                Ok((outcome, size))
            }
        }
    }
    .instrument(span.clone())
    .await;
    let _enter = span.enter();
    match result {
        Ok((outcome, size)) => {
            let study_uid = match &outcome {
                StoreOutcome::Stored(o) => &o.study_uid,
                StoreOutcome::DuplicateKept { study_uid } => study_uid,
            };
            span.record("study_uid", study_uid.as_str());
            if let StoreOutcome::Stored(o) = &outcome {
                ctx.tracker.instance_stored(&o.study_uid, association_id);
            }
            tally.stored += 1;
            tally.bytes += size;
            ctx.metrics.instance_stored(size);
            tracing::debug!(bytes = size, "stored");
            drop(_enter);
            let evidence = match &outcome {
                StoreOutcome::Stored(o) if ctx.tracker.awaits_evidence(&o.study_uid) => {
                    Some(o.study_uid.clone())
                }
                _ => None,
            };
            send_response(assoc, pc_id, &cmd, status::SUCCESS, None).await?;
            // An instance a finished procedure step listed may be the last one it waited for.
            if let Some(study_uid) = evidence {
                if let Err(e) = ctx
                    .tracker
                    .check_evidence(&study_uid)
                    .instrument(span)
                    .await
                {
                    tracing::error!(study_uid, error = %e, "completion check after an instance failed");
                }
            }
            Ok(())
        }
        Err((st, comment)) => {
            tally.failed += 1;
            ctx.metrics.store_failed(st);
            tracing::warn!(status = format!("{st:04X}"), reason = %comment, calling_ae, "C-STORE refused");
            ctx.store
                .record_failure(
                    Some(&cmd.sop_instance_uid),
                    Some(&cmd.sop_class_uid),
                    calling_ae,
                    st,
                    &comment,
                )
                .await;
            drop(_enter);
            send_response(assoc, pc_id, &cmd, st, Some(&comment)).await
        }
    }
}

async fn send_response(
    assoc: &mut Assoc,
    pc_id: u8,
    cmd: &Command,
    st: u16,
    comment: Option<&str>,
) -> Result<(), &'static str> {
    let data = dimse::response(cmd, st, comment);
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot send the response");
            "cannot send the response"
        })
}
