//! Events: the durable log ([`log`]), the in-process fan-out ([`bus`]) and the subscription a
//! stream client holds ([`subscription`]).
//!
//! Writers append an event in the same transaction as the change it reports, then wake the
//! bus. The bus tails the table in id order and broadcasts; a subscriber first subscribes to
//! the broadcast, then replays the table from its resume point, then goes live, skipping ids
//! it has already sent: no gap and no duplicate. A subscriber that falls further behind than
//! the broadcast buffer goes back to replaying from the table, so it never holds back others.

pub mod bus;
pub mod log;
pub mod subscription;

pub use bus::{EventBus, EventSettings};
pub use log::{append, fetch_after, latest_id, Event, EventType, NOTIFY_CHANNEL};
pub use subscription::{EventFilter, Subscription};
