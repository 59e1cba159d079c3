//! The event fan-out under a slow subscriber: it overflows the broadcast buffer, falls back to
//! replaying from the table, and still gets every event exactly once, in order, while a fast
//! subscriber is not held back.

use std::time::Duration;

use radstream::db::Database;
use radstream::db::Durability;
use radstream::events::{self, EventBus, EventFilter, EventSettings, EventType, Subscription};
use radstream::metrics::Metrics;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_replays_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ev.db").display());
    let db = Database::connect_url(&url, Some(4), Durability::Os)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let settings = EventSettings {
        buffer: 16,
        poll_ms: 20,
        ..EventSettings::default()
    };
    let bus = EventBus::new(db.clone(), &settings, Metrics::new())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(bus.clone().run(cancel.clone()));

    let mut slow = Subscription::new(&bus, None, EventFilter::default());
    let mut fast = Subscription::new(&bus, None, EventFilter::default());
    const N: i64 = 200;
    let writer = {
        let (db, bus) = (db.clone(), bus.clone());
        tokio::spawn(async move {
            for i in 0..N {
                let mut tx = db.begin_write().await.unwrap();
                events::append(
                    &mut tx,
                    db.backend,
                    EventType::StudyReceived,
                    Some("1.2.3"),
                    None,
                    &json!({ "i": i }),
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
                bus.notify();
            }
        })
    };
    // The fast subscriber keeps up while the slow one reads nothing.
    let mut fast_ids = Vec::new();
    while fast_ids.len() < N as usize {
        let e = tokio::time::timeout(Duration::from_secs(20), fast.next())
            .await
            .expect("fast subscriber not held back")
            .unwrap()
            .unwrap();
        fast_ids.push(e.id);
    }
    writer.await.unwrap();
    assert_eq!(fast_ids, (1..=N).collect::<Vec<_>>());

    // Far more than the buffer was published before the slow one read anything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bus.published_id() < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bus stuck at {}",
            bus.published_id()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut slow_ids = Vec::new();
    while slow_ids.len() < N as usize {
        let e = tokio::time::timeout(Duration::from_secs(20), slow.next())
            .await
            .expect("slow subscriber catches up")
            .unwrap()
            .unwrap();
        slow_ids.push(e.id);
    }
    assert_eq!(
        slow_ids,
        (1..=N).collect::<Vec<_>>(),
        "every event once, in order"
    );
    cancel.cancel();
}
