//! Accept loops (plain TCP and, when enabled, DICOM TLS), the pre-association phase with its
//! own slots and time-out, negotiation with the peer policy, and one task per connection
//! (tracked, so shutdown can wait for them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::association::{self, Ending};
use super::policy::PeerPolicy;
use super::slots::{AssociationSlot, Refusal, Slots};
use super::transport::Assoc;
use super::IngestContext;
use crate::tls::{PeerCertificate, ServerTls};

/// Bound DICOM listeners, not yet accepting.
pub struct DicomListener {
    listener: TcpListener,
    /// The DICOM TLS listener and its certificate (`dicom.tls.enabled`).
    tls: Option<(TcpListener, ServerTls)>,
    ctx: Arc<IngestContext>,
    open: Arc<AtomicUsize>,
}

impl DicomListener {
    /// Binds the plain port and, when enabled, loads the TLS files and binds the TLS port.
    pub async fn bind(ctx: IngestContext) -> anyhow::Result<DicomListener> {
        let s = &ctx.settings;
        let addr = SocketAddr::new(s.host, s.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the DICOM listener to {addr}"))?;
        let tls = match (&s.tls.enabled, &s.tls.certificate, &s.tls.private_key) {
            (true, Some(cert), Some(key)) => {
                let server = ServerTls::load(cert, key, s.tls.client_ca.as_deref())
                    .context("loading the DICOM TLS files (dicom.tls)")?;
                let addr = SocketAddr::new(s.host, s.tls.port);
                let l = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the DICOM TLS listener to {addr}"))?;
                Some((l, server))
            }
            (true, _, _) => anyhow::bail!("dicom.tls.enabled needs certificate and private_key"),
            _ => None,
        };
        Ok(DicomListener {
            listener,
            tls,
            ctx: Arc::new(ctx),
            open: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address of the TLS listener, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Count of associations being served (for `/health`).
    pub fn open_associations(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    /// Accepts until `cancel` fires, then aborts open associations and waits for them.
    pub async fn run(self, cancel: CancellationToken) {
        let s = &self.ctx.settings;
        let slots = Arc::new(Slots::new(
            s.max_associations,
            s.max_associations_per_peer,
            s.max_pending_connections,
        ));
        let tasks = TaskTracker::new();
        tracing::info!(
            addr = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            tls_addr = %self.tls_addr().map(|a| a.to_string()).unwrap_or_default(),
            ae_title = %s.ae_title,
            "DICOM listener ready"
        );
        let accept_tls = || async {
            match &self.tls {
                Some((l, server)) => l.accept().await.map(|a| (a, Some(server.clone()))),
                None => std::future::pending().await,
            }
        };
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.listener.accept() => r.map(|a| (a, None)),
                r = accept_tls() => r,
            };
            let ((socket, peer), tls) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let Some(pending) = slots.pending() else {
                tracing::warn!(
                    %peer,
                    max = s.max_pending_connections,
                    "too many connections without an A-ASSOCIATE-RQ; closing this one"
                );
                self.ctx.metrics.association_rejected("pending_limit");
                continue;
            };
            let conn = Connection {
                peer,
                ctx: self.ctx.clone(),
                slots: slots.clone(),
                open: self.open.clone(),
                association_id: uuid::Uuid::new_v4().simple().to_string(),
            };
            let span = tracing::info_span!(
                "association",
                %peer,
                tls = tls.is_some(),
                association_id = %conn.association_id,
                calling_ae = tracing::field::Empty
            );
            let cancel = cancel.child_token();
            tasks.spawn(
                async move {
                    match tls {
                        None => conn.plain(socket, pending, cancel).await,
                        Some(server) => conn.tls(socket, &server, pending, cancel).await,
                    }
                }
                .instrument(span),
            );
        }
        tasks.close();
        tasks.wait().await;
        tracing::info!("DICOM listener stopped");
    }
}

/// One accepted connection, from its pre-association phase to the end of its association.
struct Connection {
    peer: SocketAddr,
    ctx: Arc<IngestContext>,
    slots: Arc<Slots>,
    open: Arc<AtomicUsize>,
    association_id: String,
}

impl Connection {
    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.ctx.settings.pre_association_timeout_secs)
    }

    fn options(
        &self,
        peer_certificate: Option<PeerCertificate>,
    ) -> ServerAssociationOptions<'_, PeerPolicy<'_>, super::sop_classes::CommitmentRoles> {
        let s = &self.ctx.settings;
        let policy = PeerPolicy {
            check_called_ae: s.check_called_ae,
            allowed_peers: &s.allowed_peers,
            peer_ip: self.peer.ip(),
            peer_certificate,
        };
        let mut options = ServerAssociationOptions::new()
            .ae_access_control(policy)
            .ae_title(s.ae_title.as_str())
            .max_pdu_length(s.max_pdu_length)
            .write_timeout(Duration::from_secs(s.dimse_timeout_secs))
            .with_negotiation(super::sop_classes::CommitmentRoles);
        for a in &self.ctx.abstract_syntaxes {
            options = options.with_abstract_syntax(a.as_str());
        }
        for t in &self.ctx.transfer_syntaxes {
            options = options.with_transfer_syntax(*t);
        }
        options
    }

    /// Logs and counts a refused association slot.
    fn refused(&self, why: Refusal) {
        let s = &self.ctx.settings;
        tracing::warn!(
            peer = %self.peer.ip(),
            limit = why.label(),
            max_associations = s.max_associations,
            max_associations_per_peer = s.max_associations_per_peer,
            "association limit reached; rejecting (transient, local limit exceeded)"
        );
        self.ctx.metrics.association_rejected(why.label());
    }

    /// Plain TCP: the association slot is taken once the whole A-ASSOCIATE-RQ has arrived.
    async fn plain(
        self,
        socket: TcpStream,
        pending: OwnedSemaphorePermit,
        cancel: CancellationToken,
    ) {
        let deadline = self.deadline();
        match tokio::time::timeout_at(deadline, request_arrived(&socket)).await {
            Err(_) => return self.timed_out(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "connection closed before an A-ASSOCIATE-RQ");
                self.ctx.metrics.association_rejected("protocol_error");
                return;
            }
            Ok(Ok(())) => {}
        }
        let slot = match self.slots.associate(self.peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                self.refused(why);
                // Read the request first: closing with unread bytes would reset the
                // connection under the rejection.
                let _ = socket.try_read(&mut vec![0; REQUEST_PEEK_LIMIT]);
                let mut socket = socket;
                let _ = tokio::time::timeout_at(deadline, reject_busy(&mut socket)).await;
                return;
            }
        };
        drop(pending);
        let options = self.options(None);
        let established = tokio::time::timeout_at(deadline, options.establish_async(socket)).await;
        drop(options);
        if let Some(assoc) = self.established(established) {
            self.serve(assoc.into(), slot, cancel).await;
        }
    }

    /// TLS: the handshake and the A-ASSOCIATE-RQ share the pre-association time-out. The
    /// slot is checked before the handshake (so a full node answers A-ASSOCIATE-RJ) and taken
    /// after it; a peer that lost the race meanwhile gets A-ABORT.
    async fn tls(
        self,
        mut socket: TcpStream,
        server: &ServerTls,
        pending: OwnedSemaphorePermit,
        cancel: CancellationToken,
    ) {
        let deadline = self.deadline();
        let (config, peer_certificate) = server.for_connection();
        if let Some(why) = self.slots.would_refuse(self.peer.ip()) {
            self.refused(why);
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let _ = tokio::time::timeout_at(deadline, async {
                if let Ok(mut tls) = acceptor.accept(&mut socket).await {
                    reject_busy(&mut tls).await;
                }
            })
            .await;
            return;
        }
        let options = self.options(Some(peer_certificate)).tls_config(config);
        let established =
            tokio::time::timeout_at(deadline, options.establish_tls_async(socket)).await;
        drop(options);
        let Some(assoc) = self.established(established) else {
            return;
        };
        match self.slots.associate(self.peer.ip()) {
            Ok(slot) => {
                drop(pending);
                self.serve(assoc.into(), slot, cancel).await
            }
            Err(why) => {
                self.refused(why);
                let _ = assoc.abort().await;
            }
        }
    }

    fn timed_out(&self) {
        tracing::warn!(
            timeout_secs = self.ctx.settings.pre_association_timeout_secs,
            "no whole A-ASSOCIATE-RQ within the pre-association time-out; closing"
        );
        self.ctx
            .metrics
            .association_rejected("pre_association_timeout");
    }

    /// The association, or `None` after logging and counting why there is none.
    fn established<T>(
        &self,
        r: Result<Result<T, dicom_ul::association::Error>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        match r {
            Err(_) => {
                self.timed_out();
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "association not established");
                self.ctx.metrics.association_rejected(rejection_reason(&e));
                None
            }
            Ok(Ok(a)) => Some(a),
        }
    }

    async fn serve(self, assoc: Assoc, slot: AssociationSlot, cancel: CancellationToken) {
        let ctx = &self.ctx;
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
        self.open.fetch_add(1, Ordering::Relaxed);
        let ending = association::serve(assoc, ctx, &self.association_id, cancel).await;
        self.open.fetch_sub(1, Ordering::Relaxed);
        drop(slot);
        ctx.tracker
            .association_ended(&self.association_id, ending == Ending::Released);
    }
}

/// Largest A-ASSOCIATE-RQ waited for whole before negotiation (larger ones are read by the
/// negotiation itself, still under the pre-association time-out).
const REQUEST_PEEK_LIMIT: usize = 64 * 1024;

/// Waits, without consuming anything, until the socket holds a whole A-ASSOCIATE-RQ PDU (or
/// something that is not one, which negotiation then refuses). Each wake-up is a new segment:
/// a peer dribbling bytes costs one peek per segment until the time-out. A peer that closes
/// its side before a whole request is an error at once: the socket then stays readable for
/// good, so waiting for more would wake without end (a `echo > /dev/tcp/host/port` probe kept
/// a core busy until the node stopped).
#[cfg(unix)]
async fn request_arrived(socket: &TcpStream) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::fd::AsFd;
    // A second handle on the same non-blocking socket, for a synchronous peek.
    let peeker = std::net::TcpStream::from(socket.as_fd().try_clone_to_owned()?);
    let mut buf = vec![0u8; 6];
    let mut header_seen = false;
    loop {
        let ready = socket.ready(tokio::io::Interest::READABLE).await?;
        let peeked = socket.try_io(tokio::io::Interest::READABLE, || {
            let n = peeker.peek(&mut buf)?;
            if n == 0 || (n < buf.len() && ready.is_read_closed()) {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "peer closed before a whole A-ASSOCIATE-RQ",
                ));
            }
            if n < buf.len() {
                return Err(ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match peeked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if header_seen || buf[0] != 0x01 {
            return Ok(());
        }
        let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
        header_seen = true;
        buf = vec![0u8; (6 + len).min(REQUEST_PEEK_LIMIT)];
    }
}

#[cfg(not(unix))]
async fn request_arrived(_socket: &TcpStream) -> std::io::Result<()> {
    Ok(())
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

/// Answers an association beyond a limit with a transient rejection (local limit exceeded).
async fn reject_busy<S: AsyncWrite + Unpin>(socket: &mut S) {
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// A peer that sends a few bytes and closes (a port probe) is done with at once, not
    /// peeked at without end; one that closes without a byte too.
    #[tokio::test]
    async fn a_peer_closing_before_a_whole_request_ends_the_wait() {
        for sent in [&b"\n"[..], b"\x01\x00\x00\x00", b""] {
            let (mut client, server) = pair().await;
            client.write_all(sent).await.unwrap();
            drop(client);
            let res =
                tokio::time::timeout(std::time::Duration::from_secs(5), request_arrived(&server))
                    .await
                    .expect("still waiting on a closed connection");
            assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
        }
    }

    /// A request arriving in pieces is waited for until it is whole; its bytes stay unread.
    #[tokio::test]
    async fn a_request_in_pieces_is_waited_for_whole() {
        let (mut client, server) = pair().await;
        let mut request = vec![0x01, 0x00, 0x00, 0x00, 0x00, 0x08];
        request.extend_from_slice(&[7u8; 8]);
        let waiting = tokio::spawn(async move {
            request_arrived(&server).await.unwrap();
            let mut got = vec![0u8; 14];
            server.try_read(&mut got).unwrap();
            got
        });
        for piece in request.chunks(4) {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(waiting.await.unwrap(), request);
    }
}
