//! One subscriber's view of the event log: replay from a resume point, then live.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use super::bus::EventBus;
use super::log::{fetch_after, Event};
use crate::domain::Urgency;

/// Which events a subscriber wants. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub types: Option<HashSet<String>>,
    pub study_uid: Option<String>,
    pub patient_id: Option<String>,
    /// Only events carrying an urgency at least this high.
    pub min_urgency: Option<Urgency>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        if let Some(t) = &self.types {
            if !t.contains(&e.kind) {
                return false;
            }
        }
        if let Some(s) = &self.study_uid {
            if e.study_uid.as_deref() != Some(s.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.patient_id {
            if e.patient_id.as_deref() != Some(p.as_str()) {
                return false;
            }
        }
        if let Some(min) = self.min_urgency {
            if e.urgency().is_none_or(|u| u < min) {
                return false;
            }
        }
        true
    }
}

/// Rows fetched per replay query.
const REPLAY_PAGE: i64 = 500;

/// Yields every matching event after the resume point exactly once, in id order.
pub struct Subscription {
    bus: EventBus,
    rx: Receiver<Arc<Event>>,
    cursor: i64,
    filter: EventFilter,
    pending: VecDeque<Arc<Event>>,
    replaying: bool,
}

impl Subscription {
    /// Subscribes to the broadcast before replaying, so nothing committed in between is
    /// missed. Without `after`, starts at the newest event already broadcast.
    pub fn new(bus: &EventBus, after: Option<i64>, filter: EventFilter) -> Subscription {
        let rx = bus.subscribe();
        Subscription {
            cursor: after.unwrap_or_else(|| bus.published_id()).max(0),
            bus: bus.clone(),
            rx,
            filter,
            pending: VecDeque::new(),
            replaying: true,
        }
    }

    /// Id of the last event handled (sent or filtered out).
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// The next matching event; `None` when the node shuts down.
    pub async fn next(&mut self) -> Result<Option<Arc<Event>>, sqlx::Error> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            if self.replaying {
                let batch = fetch_after(
                    self.bus.db(),
                    self.cursor,
                    self.filter.study_uid.as_deref(),
                    REPLAY_PAGE,
                )
                .await?;
                if (batch.len() as i64) < REPLAY_PAGE {
                    self.replaying = false;
                }
                for e in batch {
                    self.cursor = e.id;
                    if self.filter.matches(&e) {
                        self.pending.push_back(Arc::new(e));
                    }
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if e.id <= self.cursor {
                        continue;
                    }
                    self.cursor = e.id;
                    if self.filter.matches(&e) {
                        return Ok(Some(e));
                    }
                }
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, cursor = self.cursor, "slow subscriber replays");
                    self.replaying = true;
                }
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(id: i64, kind: &str, urgency: Option<&str>) -> Event {
        Event::new(
            id,
            kind.into(),
            Some("1.2".into()),
            Some("P1".into()),
            0,
            urgency.map_or(json!({}), |u| json!({ "urgency": u })),
        )
    }

    #[test]
    fn filter_by_type_study_patient_and_urgency() {
        let f = EventFilter {
            types: Some(["inference.completed".to_string()].into()),
            ..Default::default()
        };
        assert!(f.matches(&ev(1, "inference.completed", None)));
        assert!(!f.matches(&ev(1, "study.complete", None)));
        let f = EventFilter {
            min_urgency: Some(Urgency::Urgent),
            ..Default::default()
        };
        assert!(f.matches(&ev(1, "inference.completed", Some("critical"))));
        assert!(f.matches(&ev(1, "inference.completed", Some("urgent"))));
        assert!(!f.matches(&ev(1, "inference.completed", Some("standard"))));
        assert!(!f.matches(&ev(1, "study.complete", None)));
        let f = EventFilter {
            study_uid: Some("9.9".into()),
            ..Default::default()
        };
        assert!(!f.matches(&ev(1, "study.complete", None)));
        let f = EventFilter {
            patient_id: Some("P1".into()),
            ..Default::default()
        };
        assert!(f.matches(&ev(1, "study.complete", None)));
    }
}
