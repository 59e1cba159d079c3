//! The inbound MLLP listener: each framed ORM^O01 / OMI^O23 is stored ([`super::orders`]) and
//! answered with an ACK (AA, or AE with the reason), on as many messages per connection as the
//! sender sends.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::mllp::frame;
use super::orders;
use crate::clock::{format_ms, now_ms};
use crate::db::Database;

/// A message larger than this closes the connection.
const MAX_MESSAGE: usize = 1 << 20;
/// A connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(300);

/// Accepts connections until `cancel` fires.
pub async fn run(listener: TcpListener, db: Database, cancel: CancellationToken) {
    loop {
        let (socket, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "HL7 listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let db = db.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = connection(socket, &db) => if let Err(why) = r {
                    tracing::warn!(%peer, why, "HL7 connection closed");
                },
            }
        });
    }
}

async fn connection(mut socket: TcpStream, db: &Database) -> Result<(), String> {
    let _ = socket.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A whole frame in the buffer: answer it.
        if let Some(end) = buf.windows(2).position(|w| w == [0x1C, 0x0D]) {
            let raw: Vec<u8> = buf.drain(..end + 2).collect();
            let start = raw
                .iter()
                .position(|b| *b == 0x0B)
                .ok_or("a frame without its start byte")?;
            let message = String::from_utf8_lossy(&raw[start + 1..raw.len() - 2]).into_owned();
            let answer = handle(db, &message).await;
            socket
                .write_all(&frame(&answer))
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        if buf.len() > MAX_MESSAGE {
            return Err("message larger than 1 MiB".into());
        }
        let n = tokio::time::timeout(IDLE, socket.read(&mut chunk))
            .await
            .map_err(|_| "idle".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Stores one order; returns the ACK.
async fn handle(db: &Database, message: &str) -> String {
    let now = format_ms(now_ms());
    let now = now.replace(['-', ':', 'T'], "");
    let now = now.get(..14).unwrap_or(&now);
    let parsed = orders::parse(message);
    let control_id = match &parsed {
        Ok(o) => o.control_id.clone(),
        Err(_) => message
            .split(['\r', '\n'])
            .find(|s| s.starts_with("MSH"))
            .and_then(|s| s.split('|').nth(9))
            .unwrap_or_default()
            .to_string(),
    };
    let stored = match parsed {
        Ok(o) => orders::store(db, &o)
            .await
            .map(|()| o)
            .map_err(orders::OrderError::from),
        Err(e) => Err(e),
    };
    match stored {
        Ok(o) => {
            tracing::info!(
                accession = %o.accession_number,
                priority = %o.priority,
                order_control = %o.order_control,
                "HL7 order stored"
            );
            orders::ack(&control_id, "AA", "", now)
        }
        Err(e) => {
            tracing::warn!(error = %e, "HL7 order refused");
            orders::ack(&control_id, "AE", &e.to_string(), now)
        }
    }
}
