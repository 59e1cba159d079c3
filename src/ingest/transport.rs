//! One established association over plain TCP or TLS: [`association::serve`] handles both
//! through the few operations it needs.
//!
//! [`association::serve`]: super::association::serve

use dicom_ul::association::server::AsyncTlsStream;
use dicom_ul::association::{AsyncServerAssociation, Error};
use dicom_ul::pdu::PresentationContextNegotiated;
use dicom_ul::Pdu;
use tokio::net::TcpStream;

/// An association accepted on the plain or the TLS listener.
#[derive(Debug)]
pub enum Assoc {
    Plain(Box<AsyncServerAssociation<TcpStream>>),
    Tls(Box<AsyncServerAssociation<AsyncTlsStream>>),
}

impl From<AsyncServerAssociation<TcpStream>> for Assoc {
    fn from(a: AsyncServerAssociation<TcpStream>) -> Self {
        Assoc::Plain(Box::new(a))
    }
}

impl From<AsyncServerAssociation<AsyncTlsStream>> for Assoc {
    fn from(a: AsyncServerAssociation<AsyncTlsStream>) -> Self {
        Assoc::Tls(Box::new(a))
    }
}

impl Assoc {
    pub async fn send(&mut self, pdu: &Pdu) -> Result<(), Error> {
        match self {
            Assoc::Plain(a) => a.send(pdu).await,
            Assoc::Tls(a) => a.send(pdu).await,
        }
    }

    pub async fn receive(&mut self) -> Result<Pdu, Error> {
        match self {
            Assoc::Plain(a) => a.receive().await,
            Assoc::Tls(a) => a.receive().await,
        }
    }

    /// Sends A-ABORT and closes the connection.
    pub async fn abort(self) -> Result<(), Error> {
        match self {
            Assoc::Plain(a) => a.abort().await,
            Assoc::Tls(a) => a.abort().await,
        }
    }

    pub fn presentation_contexts(&self) -> &[PresentationContextNegotiated] {
        match self {
            Assoc::Plain(a) => a.presentation_contexts(),
            Assoc::Tls(a) => a.presentation_contexts(),
        }
    }

    /// The calling AE title.
    pub fn peer_ae_title(&self) -> &str {
        use dicom_ul::association::Association;
        match self {
            Assoc::Plain(a) => a.peer_ae_title(),
            Assoc::Tls(a) => a.peer_ae_title(),
        }
    }

    pub fn peer_max_pdu_length(&self) -> u32 {
        use dicom_ul::association::Association;
        match self {
            Assoc::Plain(a) => a.peer_max_pdu_length(),
            Assoc::Tls(a) => a.peer_max_pdu_length(),
        }
    }
}
