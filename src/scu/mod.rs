//! The DICOM SCU: C-ECHO and C-STORE to another node. Used by `radstream echo` and
//! `radstream send`, and by result export.
//!
//! Files are sent in the transfer syntax they are stored in (no transcoding); the data set is
//! streamed from disk in PDU-sized fragments. One association per study, over plain TCP or
//! DICOM TLS ([`Peer::tls`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::client::{AsyncClientAssociation, AsyncTlsStream};
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociationOptions, Pdu};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ingest::dimse;

pub mod mpps_forward;

/// Errors of the SCU.
#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error("cannot associate with {addr}: {reason}")]
    Associate { addr: String, reason: String },
    #[error("association with the peer failed: {0}")]
    Protocol(String),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `host:port`
    pub addr: String,
    pub calling_ae: String,
    pub called_ae: String,
    pub max_pdu_length: u32,
    pub timeout: Duration,
    /// DICOM TLS: the peer's certificate is verified against the CA and the host dialled.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Peer {
    pub fn new(addr: impl Into<String>, calling_ae: &str, called_ae: &str) -> Peer {
        Peer {
            addr: addr.into(),
            calling_ae: calling_ae.into(),
            called_ae: called_ae.into(),
            max_pdu_length: 262_144,
            timeout: Duration::from_secs(60),
            tls: None,
        }
    }

    /// The host part of `addr`, as the TLS server name (a name or an IP address).
    fn host(&self) -> &str {
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    fn options(&self) -> ClientAssociationOptions<'static> {
        ClientAssociationOptions::new()
            .calling_ae_title(self.calling_ae.clone())
            .called_ae_title(self.called_ae.clone())
            .max_pdu_length(self.max_pdu_length)
            .read_timeout(self.timeout)
            .write_timeout(self.timeout)
            .connection_timeout(self.timeout)
    }
}

/// What an association can run over: plain TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Client<S> = AsyncClientAssociation<S>;

/// The error with its causes (a TLS failure is the cause of "could not connect").
fn associate_error(peer: &Peer, e: dicom_ul::association::Error) -> ScuError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason.push_str(&format!(": {s}"));
        source = s.source();
    }
    ScuError::Associate {
        addr: peer.addr.clone(),
        reason,
    }
}

async fn establish(
    peer: &Peer,
    opts: ClientAssociationOptions<'static>,
) -> Result<Client<TcpStream>, ScuError> {
    let mut assoc = opts
        .establish_async(peer.addr.as_str())
        .await
        .map_err(|e| associate_error(peer, e))?;
    let _ = assoc.inner_stream().set_nodelay(true);
    Ok(assoc)
}

async fn establish_tls(
    peer: &Peer,
    opts: ClientAssociationOptions<'static>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Client<AsyncTlsStream>, ScuError> {
    let mut assoc = opts
        .tls_config(tls.clone())
        .server_name(peer.host())
        .establish_tls_async(peer.addr.as_str())
        .await
        .map_err(|e| associate_error(peer, e))?;
    let _ = assoc.inner_stream().get_ref().0.set_nodelay(true);
    Ok(assoc)
}

/// Sends a C-ECHO and returns its status.
pub async fn echo(peer: &Peer) -> Result<u16, ScuError> {
    let opts = peer
        .options()
        .with_abstract_syntax(crate::ingest::sop_classes::VERIFICATION);
    match &peer.tls {
        None => echo_on(establish(peer, opts).await?).await,
        Some(tls) => echo_on(establish_tls(peer, opts, tls).await?).await,
    }
}

async fn echo_on<S: Stream>(mut assoc: Client<S>) -> Result<u16, ScuError> {
    let pc_id = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| pc.id)
        .ok_or_else(|| ScuError::Protocol("peer refused the Verification SOP class".into()))?;
    let cmd = dimse::request(
        dimse::C_ECHO_RQ,
        1,
        crate::ingest::sop_classes::VERIFICATION,
        None,
        false,
    );
    send_command(&mut assoc, pc_id, cmd).await?;
    let (status, _) = receive_status(&mut assoc).await?;
    let _ = assoc.release().await;
    Ok(status)
}

/// A file ready to send: what its meta says and where its data set starts.
#[derive(Debug, Clone)]
pub struct OutgoingFile {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub study_uid: String,
    data_offset: u64,
}

impl OutgoingFile {
    /// Reads the file meta and the study UID of a Part 10 file.
    pub fn inspect(path: &Path) -> Result<OutgoingFile, ScuError> {
        let err = |reason: String| ScuError::File {
            path: path.display().to_string(),
            reason,
        };
        // The meta is read leniently and the data set checked as the node checks what it
        // receives; the data set is sent as it is in the file.
        let meta = crate::dataset::read_meta(path).map_err(|e| err(e.to_string()))?;
        let header = crate::store::InstanceHeader::read(path).map_err(|e| err(e.to_string()))?;
        let uid = |from_meta: Option<String>, from_data_set: Option<crate::domain::Uid>| {
            from_meta
                .or_else(|| from_data_set.map(|u| u.to_string()))
                .unwrap_or_default()
        };
        Ok(OutgoingFile {
            path: path.to_path_buf(),
            sop_class_uid: uid(meta.sop_class_uid, header.sop_class_uid),
            sop_instance_uid: uid(meta.sop_instance_uid, header.sop_instance_uid),
            transfer_syntax: meta.transfer_syntax.unwrap_or_default(),
            study_uid: header.study_uid.map(|u| u.to_string()).unwrap_or_default(),
            data_offset: meta.data_set_offset as u64,
        })
    }
}

/// The outcome for one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SendResult {
    pub path: PathBuf,
    pub sop_instance_uid: String,
    /// DIMSE status, or `None` when the file was never answered.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Expands folders recursively into files, sorted for a stable order.
pub fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Groups inspectable files by study; files that cannot be read come back as failed results.
pub fn group_by_study(files: &[PathBuf]) -> (BTreeMap<String, Vec<OutgoingFile>>, Vec<SendResult>) {
    let mut studies: BTreeMap<String, Vec<OutgoingFile>> = BTreeMap::new();
    let mut failed = Vec::new();
    for p in files {
        match OutgoingFile::inspect(p) {
            Ok(f) => studies.entry(f.study_uid.clone()).or_default().push(f),
            Err(e) => failed.push(SendResult {
                path: p.clone(),
                sop_instance_uid: String::new(),
                status: None,
                error: Some(e.to_string()),
            }),
        }
    }
    (studies, failed)
}

/// Sends the files of one study over one association. `on_done` is called after each file.
pub async fn send_study(
    peer: &Peer,
    files: &[OutgoingFile],
    on_done: impl FnMut(&SendResult),
) -> Result<Vec<SendResult>, ScuError> {
    let mut contexts: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.sop_class_uid.clone(), f.transfer_syntax.clone()))
        .collect();
    contexts.sort();
    contexts.dedup();
    if contexts.len() > 127 {
        return Err(ScuError::Protocol(format!(
            "{} distinct SOP class/transfer syntax pairs exceed the 127 presentation contexts of one association",
            contexts.len()
        )));
    }
    let mut opts = peer.options();
    for (class, ts) in &contexts {
        opts = opts.with_presentation_context(class.clone(), vec![ts.clone()]);
    }
    match &peer.tls {
        None => send_on(establish(peer, opts).await?, files, on_done).await,
        Some(tls) => send_on(establish_tls(peer, opts, tls).await?, files, on_done).await,
    }
}

/// Sends one N-ACTION with its data set on an association of its own; returns the
/// N-ACTION-RSP status and comment.
pub async fn n_action(
    peer: &Peer,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    action_type_id: u16,
    data_set: &dicom_object::InMemDicomObject,
) -> Result<(u16, Option<String>), ScuError> {
    n_request(
        peer,
        &NRequest {
            field: dimse::N_ACTION_RQ,
            sop_class_uid,
            sop_instance_uid,
            action_type_id: Some(action_type_id),
            data_set,
        },
    )
    .await
}

/// One N-CREATE, N-SET or N-ACTION with its data set.
pub struct NRequest<'a> {
    pub field: u16,
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub action_type_id: Option<u16>,
    pub data_set: &'a dicom_object::InMemDicomObject,
}

/// Sends `rq` on an association of its own (Explicit or Implicit VR Little Endian); returns
/// the response status and comment.
pub async fn n_request(peer: &Peer, rq: &NRequest<'_>) -> Result<(u16, Option<String>), ScuError> {
    let opts = peer.options().with_presentation_context(
        rq.sop_class_uid.to_string(),
        vec![
            "1.2.840.10008.1.2.1".to_string(),
            "1.2.840.10008.1.2".to_string(),
        ],
    );
    match &peer.tls {
        None => n_request_on(establish(peer, opts).await?, rq).await,
        Some(tls) => n_request_on(establish_tls(peer, opts, tls).await?, rq).await,
    }
}

async fn n_request_on<S: Stream>(
    mut assoc: Client<S>,
    rq: &NRequest<'_>,
) -> Result<(u16, Option<String>), ScuError> {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    let Some((pc_id, ts)) = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && trim(&pc.abstract_syntax) == rq.sop_class_uid
        })
        .map(|pc| (pc.id, trim(&pc.transfer_syntax)))
    else {
        let _ = assoc.abort().await;
        return Err(ScuError::Protocol(format!(
            "peer accepted no presentation context for {}",
            rq.sop_class_uid
        )));
    };
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(&ts)
        .ok_or_else(|| ScuError::Protocol(format!("unknown transfer syntax {ts}")))?;
    let mut data = Vec::new();
    rq.data_set
        .write_dataset_with_ts(&mut data, ts)
        .map_err(|e| ScuError::Protocol(format!("encoding the N-ACTION data set: {e}")))?;
    let cmd = dimse::n_request(
        rq.field,
        1,
        rq.sop_class_uid,
        rq.sop_instance_uid,
        rq.action_type_id,
    );
    send_command(&mut assoc, pc_id, cmd).await?;
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Data,
                is_last: true,
                data,
            }],
        })
        .await
        .map_err(|e| ScuError::Protocol(e.to_string()))?;
    let status = receive_status(&mut assoc).await;
    let _ = assoc.release().await;
    status
}

async fn send_on<S: Stream>(
    mut assoc: Client<S>,
    files: &[OutgoingFile],
    mut on_done: impl FnMut(&SendResult),
) -> Result<Vec<SendResult>, ScuError> {
    let accepted: Vec<(u8, String, String)> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                pc.id,
                pc.abstract_syntax.clone(),
                pc.transfer_syntax.clone(),
            )
        })
        .collect();
    let mut results = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
        let pc = accepted
            .iter()
            .find(|(_, a, t)| trim(a) == f.sop_class_uid && trim(t) == f.transfer_syntax);
        let result = match pc {
            None => SendResult {
                path: f.path.clone(),
                sop_instance_uid: f.sop_instance_uid.clone(),
                status: None,
                error: Some(format!(
                    "peer accepted no presentation context for {} in {}",
                    f.sop_class_uid, f.transfer_syntax
                )),
            },
            Some((pc_id, _, _)) => {
                let message_id = (i % 0xFFFF) as u16 + 1;
                match store_one(&mut assoc, *pc_id, message_id, f).await {
                    Ok((status, comment)) => SendResult {
                        path: f.path.clone(),
                        sop_instance_uid: f.sop_instance_uid.clone(),
                        status: Some(status),
                        error: comment,
                    },
                    Err(e) => {
                        let _ = assoc.abort().await;
                        return Err(e);
                    }
                }
            }
        };
        on_done(&result);
        results.push(result);
    }
    let _ = assoc.release().await;
    Ok(results)
}

async fn store_one<S: Stream>(
    assoc: &mut Client<S>,
    pc_id: u8,
    message_id: u16,
    f: &OutgoingFile,
) -> Result<(u16, Option<String>), ScuError> {
    let cmd = dimse::request(
        dimse::C_STORE_RQ,
        message_id,
        &f.sop_class_uid,
        Some(&f.sop_instance_uid),
        true,
    );
    send_command(assoc, pc_id, cmd).await?;
    let mut file = tokio::fs::File::open(&f.path)
        .await
        .map_err(|e| ScuError::Protocol(format!("{}: {e}", f.path.display())))?;
    file.seek(std::io::SeekFrom::Start(f.data_offset))
        .await
        .map_err(|e| ScuError::Protocol(e.to_string()))?;
    {
        let mut writer = assoc.send_pdata(pc_id);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| ScuError::Protocol(e.to_string()))?;
            if n == 0 {
                break;
            }
            writer
                .write_all(&buf[..n])
                .await
                .map_err(|e| ScuError::Protocol(e.to_string()))?;
        }
        writer
            .finish()
            .await
            .map_err(|e| ScuError::Protocol(e.to_string()))?;
    }
    receive_status(assoc).await
}

async fn send_command<S: Stream>(
    assoc: &mut Client<S>,
    pc_id: u8,
    data: Vec<u8>,
) -> Result<(), ScuError> {
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
        .map_err(|e| ScuError::Protocol(e.to_string()))
}

async fn receive_status<S: Stream>(
    assoc: &mut Client<S>,
) -> Result<(u16, Option<String>), ScuError> {
    let mut command = Vec::new();
    loop {
        match assoc
            .receive()
            .await
            .map_err(|e| ScuError::Protocol(e.to_string()))?
        {
            Pdu::PData { data } => {
                for pdv in data {
                    if pdv.value_type == PDataValueType::Command {
                        command.extend_from_slice(&pdv.data);
                        if pdv.is_last {
                            return dimse::parse_status(&command)
                                .map_err(|e| ScuError::Protocol(e.to_string()));
                        }
                    }
                }
            }
            Pdu::AbortRQ { source } => {
                return Err(ScuError::Protocol(format!("peer aborted: {source:?}")))
            }
            other => {
                return Err(ScuError::Protocol(format!(
                    "unexpected PDU while waiting for a response: {other:?}"
                )))
            }
        }
    }
}
