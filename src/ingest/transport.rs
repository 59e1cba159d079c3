//! One established association over plain TCP or TLS: [`association::serve`] handles both
//! through the few operations it needs.
//!
//! P-DATA-TF PDUs are read here rather than by dicom-ul's `receive`, which copies each PDU out
//! of its read buffer and then each value into a `Vec` of its own: a data set then crossed
//! memory three times before reaching the file. Here a PDU is split off the read buffer (no
//! copy) and its values are slices of it, written to the file from there. Every other PDU
//! goes to dicom-ul's reader, from the same buffer.
//!
//! [`association::serve`]: super::association::serve

use bytes::{Buf, Bytes, BytesMut};
use dicom_ul::association::server::AsyncTlsStream;
use dicom_ul::association::{AsyncAssociation, AsyncServerAssociation, Error};
use dicom_ul::pdu::{PDataValueType, PresentationContextNegotiated, PDU_HEADER_SIZE};
use dicom_ul::Pdu;
use tokio::io::{AsyncRead, AsyncReadExt};
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

    /// The next PDU, P-DATA-TF values as slices of the read buffer (see the module doc). PDUs
    /// longer than the maximum we announced are refused, as dicom-ul's strict mode does.
    pub async fn receive(&mut self) -> Result<Received, ReceiveError> {
        match self {
            Assoc::Plain(a) => {
                let max = a.acceptor_max_pdu_length();
                let (socket, buf) = a.get_mut();
                receive_from(socket, buf, max).await
            }
            Assoc::Tls(a) => {
                let max = a.acceptor_max_pdu_length();
                let (socket, buf) = a.get_mut();
                receive_from(socket, buf, max).await
            }
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

/// One presentation data value of a P-DATA-TF PDU, its data a slice of the PDU as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdv {
    pub presentation_context_id: u8,
    pub value_type: PDataValueType,
    pub is_last: bool,
    pub data: Bytes,
}

/// A PDU as [`Assoc::receive`] gives it.
#[derive(Debug)]
pub enum Received {
    PData(Vec<Pdv>),
    Other(Pdu),
}

/// Why no PDU could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("cannot read from the connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("PDU of {length} bytes, larger than the maximum of {max}")]
    TooLarge { length: u32, max: u32 },
    #[error("malformed P-DATA-TF PDU: {0}")]
    Malformed(&'static str),
    #[error("unreadable PDU: {0}")]
    Pdu(#[from] dicom_ul::pdu::ReadError),
}

const P_DATA_TF: u8 = 0x04;

/// Reads the next PDU from `socket`, with `buf` holding what was read already.
async fn receive_from<S: AsyncRead + Unpin>(
    socket: &mut S,
    buf: &mut BytesMut,
    max_pdu_length: u32,
) -> Result<Received, ReceiveError> {
    loop {
        if let Some(received) = take_pdu(buf, max_pdu_length)? {
            return Ok(received);
        }
        // Room for the rest of the PDU under way, so it arrives in as few reads as the
        // socket allows (reserving reuses the buffer once the last PDU's slices are dropped).
        let want = match buf.get(2..6) {
            Some(len) => {
                let len = u32::from_be_bytes(len.try_into().expect("4 bytes"));
                (len as usize + PDU_HEADER_SIZE as usize).saturating_sub(buf.len())
            }
            None => PDU_HEADER_SIZE as usize,
        };
        buf.reserve(want.max(64 << 10));
        if socket.read_buf(buf).await? == 0 {
            return Err(ReceiveError::Closed);
        }
    }
}

/// The PDU at the start of `buf` if it is all there, removed from `buf`.
fn take_pdu(buf: &mut BytesMut, max_pdu_length: u32) -> Result<Option<Received>, ReceiveError> {
    let header = PDU_HEADER_SIZE as usize;
    if buf.len() < header {
        return Ok(None);
    }
    if buf[0] != P_DATA_TF {
        let mut cursor = std::io::Cursor::new(&buf[..]);
        return match dicom_ul::pdu::read_pdu(&mut cursor, max_pdu_length, true)? {
            Some(pdu) => {
                let used = cursor.position() as usize;
                buf.advance(used);
                Ok(Some(Received::Other(pdu)))
            }
            None => Ok(None),
        };
    }
    let length = u32::from_be_bytes(buf[2..6].try_into().expect("4 bytes"));
    if length > max_pdu_length {
        return Err(ReceiveError::TooLarge {
            length,
            max: max_pdu_length,
        });
    }
    if buf.len() < header + length as usize {
        return Ok(None);
    }
    let mut pdu = buf.split_to(header + length as usize).freeze();
    pdu.advance(header);
    parse_pdvs(pdu).map(|v| Some(Received::PData(v)))
}

/// The values of a P-DATA-TF PDU's body (PS3.8 §9.3.5), as the strict reader checks them:
/// each item at least its two header bytes long and within the PDU.
fn parse_pdvs(mut body: Bytes) -> Result<Vec<Pdv>, ReceiveError> {
    let mut values = Vec::with_capacity(1);
    while body.has_remaining() {
        if body.len() < 6 {
            return Err(ReceiveError::Malformed("an item header is cut short"));
        }
        let item_length = body.get_u32() as usize;
        if item_length < 2 {
            return Err(ReceiveError::Malformed(
                "an item is shorter than its header",
            ));
        }
        if body.len() < item_length {
            return Err(ReceiveError::Malformed(
                "an item runs past the end of its PDU",
            ));
        }
        let presentation_context_id = body.get_u8();
        let control = body.get_u8();
        values.push(Pdv {
            presentation_context_id,
            value_type: if control & 0x01 != 0 {
                PDataValueType::Command
            } else {
                PDataValueType::Data
            },
            is_last: control & 0x02 != 0,
            data: body.split_to(item_length - 2),
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PDataValue;

    fn encode(pdu: &Pdu) -> Vec<u8> {
        let mut out = Vec::new();
        dicom_ul::write_pdu(&mut out, pdu).unwrap();
        out
    }

    fn pdata(values: &[(u8, PDataValueType, bool, &[u8])]) -> Pdu {
        Pdu::PData {
            data: values
                .iter()
                .map(|(pc, t, last, d)| PDataValue {
                    presentation_context_id: *pc,
                    value_type: t.clone(),
                    is_last: *last,
                    data: d.to_vec(),
                })
                .collect(),
        }
    }

    /// P-DATA values come out as dicom-ul's reader gives them, whether the PDUs arrive whole
    /// or a byte at a time, and other PDUs go through dicom-ul's reader.
    #[tokio::test]
    async fn reads_what_dicom_ul_reads_in_any_pieces() {
        let first = pdata(&[
            (1, PDataValueType::Command, true, b"command"),
            (1, PDataValueType::Data, false, &[7u8; 3000]),
        ]);
        let second = pdata(&[(3, PDataValueType::Data, true, b"")]);
        let mut wire = encode(&first);
        wire.extend(encode(&second));
        wire.extend(encode(&Pdu::ReleaseRQ));
        for piece in [1usize, 5, 4096] {
            let (mut tx, mut rx) = tokio::io::duplex(piece);
            let bytes = wire.clone();
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for c in bytes.chunks(piece) {
                    tx.write_all(c).await.unwrap();
                }
            });
            let mut buf = BytesMut::new();
            for expected in [&first, &second] {
                let Received::PData(values) = receive_from(&mut rx, &mut buf, 16384).await.unwrap()
                else {
                    panic!("P-DATA expected");
                };
                let Pdu::PData { data } = expected else {
                    unreachable!()
                };
                assert_eq!(values.len(), data.len());
                for (got, want) in values.iter().zip(data) {
                    assert_eq!(got.presentation_context_id, want.presentation_context_id);
                    assert_eq!(got.value_type, want.value_type);
                    assert_eq!(got.is_last, want.is_last);
                    assert_eq!(got.data[..], want.data[..]);
                }
            }
            assert!(matches!(
                receive_from(&mut rx, &mut buf, 16384).await.unwrap(),
                Received::Other(Pdu::ReleaseRQ)
            ));
            writer.await.unwrap();
            assert!(matches!(
                receive_from(&mut rx, &mut buf, 16384).await,
                Err(ReceiveError::Closed)
            ));
        }
    }

    /// A PDU longer than announced, an item longer than its PDU and an item shorter than its
    /// header are refused.
    #[test]
    fn refuses_what_the_strict_reader_refuses() {
        let ok = encode(&pdata(&[(1, PDataValueType::Data, true, &[1u8; 100])]));
        let mut buf = BytesMut::from(&ok[..]);
        assert!(matches!(
            take_pdu(&mut buf, 64),
            Err(ReceiveError::TooLarge { length: 106, .. })
        ));
        let mut long_item = ok.clone();
        long_item[6..10].copy_from_slice(&200u32.to_be_bytes());
        let mut buf = BytesMut::from(&long_item[..]);
        assert!(matches!(
            take_pdu(&mut buf, 16384),
            Err(ReceiveError::Malformed(_))
        ));
        let too_short = [P_DATA_TF, 0, 0, 0, 0, 6, 0, 0, 0, 1, 1, 0];
        let mut buf = BytesMut::from(&too_short[..]);
        assert!(matches!(
            take_pdu(&mut buf, 16384),
            Err(ReceiveError::Malformed(_))
        ));
        let cut_short = [P_DATA_TF, 0, 0, 0, 0, 4, 0, 0, 0, 2];
        let mut buf = BytesMut::from(&cut_short[..]);
        assert!(matches!(
            take_pdu(&mut buf, 16384),
            Err(ReceiveError::Malformed(_))
        ));
    }
}
