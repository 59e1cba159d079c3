//! Accept loop: TCP_NODELAY, the association limit, negotiation with the peer policy, and one
//! task per association (tracked, so shutdown can wait for them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::association::{self, Ending};
use super::policy::PeerPolicy;
use super::IngestContext;

/// A bound DICOM listener, not yet accepting.
pub struct DicomListener {
    listener: TcpListener,
    ctx: Arc<IngestContext>,
    open: Arc<AtomicUsize>,
}

impl DicomListener {
    pub async fn bind(ctx: IngestContext) -> std::io::Result<DicomListener> {
        let addr = SocketAddr::new(ctx.settings.host, ctx.settings.port);
        let listener = TcpListener::bind(addr).await?;
        Ok(DicomListener {
            listener,
            ctx: Arc::new(ctx),
            open: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Count of associations being served (for `/health`).
    pub fn open_associations(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    /// Accepts until `cancel` fires, then aborts open associations and waits for them.
    pub async fn run(self, cancel: CancellationToken) {
        let limit = Arc::new(Semaphore::new(self.ctx.settings.max_associations));
        let tasks = TaskTracker::new();
        tracing::info!(
            addr = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            ae_title = %self.ctx.settings.ae_title,
            "DICOM listener ready"
        );
        loop {
            let (socket, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max = self.ctx.settings.max_associations, "association limit reached; rejecting");
                self.ctx.metrics.association_rejected("association_limit");
                tasks.spawn(reject_busy(socket));
                continue;
            };
            let ctx = self.ctx.clone();
            let cancel = cancel.child_token();
            let open = self.open.clone();
            let association_id = uuid::Uuid::new_v4().simple().to_string();
            let span = tracing::info_span!("association", %peer, association_id = %association_id, calling_ae = tracing::field::Empty);
            tasks.spawn(
                async move {
                    open.fetch_add(1, Ordering::Relaxed);
                    handle_connection(socket, peer, &ctx, &association_id, cancel).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                }
                .instrument(span),
            );
        }
        tasks.close();
        tasks.wait().await;
        tracing::info!("DICOM listener stopped");
    }
}

async fn handle_connection(
    socket: TcpStream,
    peer: SocketAddr,
    ctx: &IngestContext,
    association_id: &str,
    cancel: CancellationToken,
) {
    let s = &ctx.settings;
    let policy = PeerPolicy {
        check_called_ae: s.check_called_ae,
        allowed_peers: &s.allowed_peers,
        peer_ip: peer.ip(),
    };
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(policy)
        .ae_title(s.ae_title.as_str())
        .max_pdu_length(s.max_pdu_length)
        .write_timeout(Duration::from_secs(s.dimse_timeout_secs));
    for a in &ctx.abstract_syntaxes {
        options = options.with_abstract_syntax(a.as_str());
    }
    for t in &ctx.transfer_syntaxes {
        options = options.with_transfer_syntax(*t);
    }
    let artim = Duration::from_secs(s.artim_timeout_secs);
    let assoc = match tokio::time::timeout(artim, options.establish_async(socket)).await {
        Err(_) => {
            tracing::warn!("no A-ASSOCIATE-RQ within the ARTIM time-out; closing");
            ctx.metrics.association_rejected("artim_timeout");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "association not established");
            ctx.metrics.association_rejected(rejection_reason(&e));
            return;
        }
        Ok(Ok(a)) => a,
    };
    use dicom_ul::association::Association;
    ctx.metrics.association_accepted();
    let calling = assoc.peer_ae_title().trim().to_string();
    tracing::Span::current().record("calling_ae", calling.as_str());
    let accepted = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance)
        .count();
    tracing::info!(
        accepted_contexts = accepted,
        max_pdu = assoc.peer_max_pdu_length(),
        "association established"
    );
    let ending = association::serve(assoc, ctx, association_id, cancel).await;
    ctx.tracker
        .association_ended(association_id, ending == Ending::Released);
}

/// The metric label for an association that was not established.
fn rejection_reason(e: &dicom_ul::association::Error) -> &'static str {
    use dicom_ul::association::Error;
    use dicom_ul::pdu::AssociationRJServiceUserReason as User;
    match e {
        Error::Rejected { association_rj, .. } => match &association_rj.source {
            AssociationRJSource::ServiceUser(User::CallingAETitleNotRecognized) => {
                "calling_ae_not_recognized"
            }
            AssociationRJSource::ServiceUser(User::CalledAETitleNotRecognized) => {
                "called_ae_not_recognized"
            }
            AssociationRJSource::ServiceUser(User::ApplicationContextNameNotSupported) => {
                "application_context_not_supported"
            }
            _ => "rejected_other",
        },
        _ => "protocol_error",
    }
}

/// Answers an association beyond the limit with a transient rejection (local limit exceeded).
async fn reject_busy(mut socket: TcpStream) {
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut buf = Vec::new();
    if dicom_ul::write_pdu(&mut buf, &rj).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.write_all(&buf)).await;
    }
    let _ = socket.shutdown().await;
}
