//! MLLP (HL7 v2 over TCP, optionally TLS): one message per connection, framed
//! `0x0B message 0x1C 0x0D`, and the ACK read back the same way.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::message::{parse_ack, Ack};

const START: u8 = 0x0B;
const END: [u8; 2] = [0x1C, 0x0D];
/// An ACK is a few hundred bytes; a peer sending more is not answering.
const MAX_ACK: usize = 1 << 20;

/// Why no ACK came back.
#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no ACK within {0} s")]
    TimedOut(u64),
    #[error("the peer closed the connection without an ACK")]
    Closed,
    #[error("the answer is not an MLLP-framed ACK: {0}")]
    Malformed(String),
}

/// Frames a message for MLLP.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(&END);
    out
}

/// Sends `message` to `host:port` and waits (at most `timeout`, everything included) for
/// its ACK. With `tls`, the peer's certificate must name `host`.
pub async fn send(
    host: &str,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    message: &str,
    timeout: Duration,
) -> Result<Ack, MllpError> {
    let exchange = async {
        let addr = format!("{host}:{port}");
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| MllpError::Connect(addr.clone(), e))?;
        tcp.set_nodelay(true)?;
        match tls {
            None => exchange(tcp, message).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| MllpError::Tls(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| MllpError::Tls(e.to_string()))?;
                exchange(stream, message).await
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| MllpError::TimedOut(timeout.as_secs()))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    message: &str,
) -> Result<Ack, MllpError> {
    stream.write_all(&frame(message)).await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(MllpError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(&END) {
            break;
        }
        if buf.len() > MAX_ACK {
            return Err(MllpError::Malformed(
                "more than 1 MiB without an end".into(),
            ));
        }
    }
    let body = buf
        .strip_prefix(&[START])
        .and_then(|b| b.strip_suffix(&END))
        .ok_or_else(|| MllpError::Malformed("missing the start byte".into()))?;
    let text = String::from_utf8_lossy(body);
    parse_ack(&text).ok_or_else(|| {
        MllpError::Malformed(format!(
            "no MSA segment in {:?}",
            text.chars().take(120).collect::<String>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_mllp_bytes() {
        assert_eq!(frame("MSH|x\r"), b"\x0bMSH|x\r\x1c\x0d");
    }
}
