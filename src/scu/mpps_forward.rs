//! Forwards stored MPPS N-CREATE and N-SET to a RIS (`[mpps] forward`), one at a time in the
//! order they arrived (an N-SET must not overtake its N-CREATE). Each is tried a few times with
//! a growing pause, then given up with an error logged: forwarding is best effort and not
//! durable (a restart loses what was still queued); the step itself is stored already.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{n_request, NRequest, Peer};
use crate::ingest::dimse;
use crate::mpps::{Forward, ForwardTarget, MPPS_SOP_CLASS};

/// Tries per request.
const ATTEMPTS: u32 = 4;

/// Starts the forwarding task; returns the queue the listener puts stored steps on.
pub fn start(
    target: ForwardTarget,
    calling_ae: &str,
    timeout: Duration,
    cancel: CancellationToken,
) -> mpsc::UnboundedSender<Forward> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut peer = Peer::new(target.addr.clone(), calling_ae, &target.ae_title);
    peer.timeout = timeout;
    tokio::spawn(run(peer, rx, cancel));
    tx
}

async fn run(peer: Peer, mut rx: mpsc::UnboundedReceiver<Forward>, cancel: CancellationToken) {
    loop {
        let f = tokio::select! {
            _ = cancel.cancelled() => return,
            f = rx.recv() => match f { Some(f) => f, None => return },
        };
        let rq = NRequest {
            field: if f.create {
                dimse::N_CREATE_RQ
            } else {
                dimse::N_SET_RQ
            },
            sop_class_uid: MPPS_SOP_CLASS,
            sop_instance_uid: &f.step_uid,
            action_type_id: None,
            data_set: &f.data_set,
        };
        let op = if f.create { "N-CREATE" } else { "N-SET" };
        for attempt in 1..=ATTEMPTS {
            match n_request(&peer, &rq).await {
                Ok((0x0000, _)) => {
                    tracing::info!(step_uid = %f.step_uid, op, ris = %peer.called_ae, "MPPS forwarded");
                    break;
                }
                Ok((status, comment)) => {
                    // The RIS refused it: sending it again changes nothing.
                    tracing::error!(step_uid = %f.step_uid, op, status = format!("{status:04X}"), comment, "the RIS refused the forwarded MPPS");
                    break;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(step_uid = %f.step_uid, op, error = %e, attempt, "forwarding MPPS failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500 << attempt)) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(step_uid = %f.step_uid, op, error = %e, "forwarding MPPS failed; giving up");
                }
            }
        }
    }
}
