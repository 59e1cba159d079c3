//! PostgreSQL `LISTEN/NOTIFY` between nodes. A writer calls `pg_notify(channel, payload)` in
//! the transaction that commits the change, so the notification is delivered at commit, to
//! every listening node including itself. The listener calls the channel's handler, which
//! only wakes whoever reads the table. After the connection is lost (the server restarted),
//! notifications sent meanwhile are gone: once LISTEN is in place again every handler is
//! called, so readers catch up from the table.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

/// What a notification on a channel does.
pub type Handler = Box<dyn Fn() + Send + Sync>;

/// Listens on `channels` of the PostgreSQL database at `url` until `cancel` fires.
pub async fn listen(
    url: SecretString,
    channels: Vec<(&'static str, Handler)>,
    cancel: CancellationToken,
) {
    let names: Vec<&str> = channels.iter().map(|(c, _)| *c).collect();
    let wake_all = || channels.iter().for_each(|(_, h)| h());
    let mut backoff = Duration::from_millis(250);
    loop {
        let connected = async {
            let mut l = PgListener::connect(url.expose_secret()).await?;
            l.listen_all(names.iter().copied()).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = cancel.cancelled() => return,
            r = connected => match r {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN on the database; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(250);
        tracing::debug!(channels = ?names, "listening for other nodes' notifications");
        wake_all();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match next {
                Ok(Some(n)) => {
                    if let Some((_, h)) = channels.iter().find(|(c, _)| *c == n.channel()) {
                        h();
                    }
                }
                // The connection was lost: reconnect here, so that readers are woken only
                // once LISTEN is in place again and nothing committed after goes unseen.
                Ok(None) => {
                    tracing::warn!("lost the LISTEN connection; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}
