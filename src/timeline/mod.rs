//! A study's life as one list: each association that brought its instances, completion, each
//! job claimed, started and finished (with the node that ran it), each model's outcome, the
//! result, and each export with its outcome, with durations. Assembled from the modules that
//! own the data (`store::index` instances, `events` log, `job` queue, `export` outbox); no SQL
//! here. [`routes`] serves it at `GET /v1/studies/{study_uid}/timeline`.

pub mod routes;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::clock::format_ms;
use crate::db::Database;
use crate::events;
use crate::export::outbox::{self, Filter};
use crate::job;
use crate::store::index;

/// Most events, jobs and exports read per study (a study with more shows the oldest events
/// and the newest jobs and exports up to this many).
const LIMIT: i64 = 500;

/// One moment of a study's life.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Entry {
    /// RFC 3339.
    pub time: String,
    /// Epoch milliseconds (the sort key).
    pub at_ms: i64,
    /// `association`, an event type (`study.complete`, `inference.completed`, …),
    /// `job.queued`, `job.started`, `job.finished`, `export.queued`, `export.sent`,
    /// `export.dead`, `export.pending`, `export.cancelled`.
    pub kind: String,
    /// One line for people.
    pub title: String,
    /// The node that did it, where known (a job's worker is `<node id>/<n>`).
    pub node: Option<String>,
    /// How long the step took, where it has a length.
    pub duration_ms: Option<i64>,
    /// What went wrong, or more about the step.
    pub detail: Option<String>,
}

/// `GET /v1/studies/{study_uid}/timeline`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    pub study_uid: String,
    /// Oldest first.
    pub entries: Vec<Entry>,
}

fn entry(at_ms: i64, kind: &str, title: String) -> Entry {
    Entry {
        time: format_ms(at_ms),
        at_ms,
        kind: kind.to_string(),
        title,
        node: None,
        duration_ms: None,
        detail: None,
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The node of a worker name `<node id>/<n>`.
fn node_of(worker: &str) -> String {
    worker
        .rsplit_once('/')
        .map_or(worker, |(node, _)| node)
        .to_string()
}

/// What an event says, as an entry (`None` for kinds the other sources tell better).
fn from_event(e: &events::Event) -> Option<Entry> {
    let d = &e.data;
    let mut out = match e.kind.as_str() {
        "study.received" => entry(
            e.created_at,
            &e.kind,
            format!(
                "First instance received (study version {}) from {}",
                text(d, "study_version").unwrap_or_default(),
                text(d, "calling_ae").unwrap_or_else(|| "?".into())
            ),
        ),
        "study.complete" => {
            let mut x = entry(
                e.created_at,
                &e.kind,
                format!(
                    "Study complete: {} instances in {} series ({})",
                    text(d, "num_instances").unwrap_or_default(),
                    text(d, "num_series").unwrap_or_default(),
                    text(d, "completed_by").unwrap_or_default()
                ),
            );
            x.node = text(d, "node");
            x.duration_ms = d.get("receive_ms").and_then(Value::as_i64);
            x
        }
        "inference.model_completed" => {
            let mut x = entry(
                e.created_at,
                &e.kind,
                format!(
                    "Model {} {}: {}",
                    text(d, "model_id").unwrap_or_default(),
                    text(d, "model_version").unwrap_or_default(),
                    text(d, "status").unwrap_or_default()
                ),
            );
            x.duration_ms = d.get("elapsed_ms").and_then(Value::as_i64);
            x.detail = text(d, "error");
            x
        }
        "inference.completed" => entry(
            e.created_at,
            &e.kind,
            format!(
                "Result v{}: urgency {}",
                text(d, "result_version")
                    .or_else(|| text(d, "version"))
                    .unwrap_or_else(|| "?".into()),
                text(d, "urgency").unwrap_or_else(|| "?".into())
            ),
        ),
        "inference.failed" => {
            let mut x = entry(e.created_at, &e.kind, "Inference failed".into());
            x.detail = text(d, "error").or_else(|| text(d, "reason"));
            x
        }
        "study.urgent" => entry(
            e.created_at,
            &e.kind,
            format!(
                "Urgent push: {}",
                text(d, "urgency").unwrap_or_else(|| "?".into())
            ),
        ),
        "study.purged" => entry(e.created_at, &e.kind, "Received instances removed".into()),
        "store.failed" => {
            let mut x = entry(
                e.created_at,
                &e.kind,
                "An instance could not be stored".into(),
            );
            x.detail = text(d, "error").or_else(|| text(d, "reason"));
            x
        }
        // Jobs and exports come from their own tables, with their lengths.
        _ => return None,
    };
    if out.node.is_none() {
        out.node = text(d, "node");
    }
    Some(out)
}

/// The study's timeline, oldest first.
pub async fn of_study(db: &Database, study_uid: &str) -> Result<Vec<Entry>, sqlx::Error> {
    let mut entries = Vec::new();

    // Associations: the instances each brought (received instances and the node's outputs).
    let mut assocs: BTreeMap<String, (i64, i64, usize, String, i64, bool)> = BTreeMap::new();
    for i in index::instances_of_study(db, study_uid).await? {
        let a = assocs.entry(i.association_id.clone()).or_insert((
            i.received_at,
            i.received_at,
            0,
            i.calling_ae.clone(),
            i.study_version,
            i.is_derived(),
        ));
        a.0 = a.0.min(i.received_at);
        a.1 = a.1.max(i.received_at);
        a.2 += 1;
    }
    for (first, last, n, ae, version, derived) in assocs.into_values() {
        let title = if derived {
            format!("The node's outputs indexed: {n} instance(s)")
        } else {
            format!("Association from {ae}: {n} instance(s) (study version {version})")
        };
        let mut x = entry(first, "association", title);
        x.duration_ms = Some(last - first);
        entries.push(x);
    }

    entries.extend(
        events::fetch_after(db, 0, Some(study_uid), LIMIT)
            .await?
            .iter()
            .filter_map(from_event),
    );

    for j in job::list(db, None, Some(study_uid), LIMIT, 0).await? {
        let model = j
            .model_id
            .clone()
            .unwrap_or_else(|| "default models".into());
        entries.push(entry(
            j.created_at,
            "job.queued",
            format!("Job {} queued ({}, {model})", j.id, j.kind),
        ));
        if let Some(started) = j.started_at {
            let mut x = entry(
                started,
                "job.started",
                format!("Job {} claimed and started (attempt {})", j.id, j.attempts),
            );
            x.node = j.worker.as_deref().map(node_of);
            x.duration_ms = Some(started - j.created_at);
            x.detail = j.worker.clone().map(|w| format!("worker {w}"));
            entries.push(x);
        }
        if let Some(finished) = j.finished_at {
            let mut x = entry(
                finished,
                "job.finished",
                format!("Job {} {}", j.id, j.state),
            );
            x.node = j.worker.as_deref().map(node_of);
            x.duration_ms = j.started_at.map(|s| finished - s);
            x.detail = j.last_error.clone();
            entries.push(x);
        }
    }

    let filter = Filter {
        state: None,
        destination: None,
        study_uid: Some(study_uid),
        result_id: None,
    };
    for x in outbox::list(db, &filter, LIMIT, 0).await? {
        let what = format!("{} to {} ({})", x.output, x.destination, x.kind);
        entries.push(entry(
            x.created_at,
            "export.queued",
            format!("Export {} queued: {what}", x.id),
        ));
        let (at, kind, title) = match x.state.as_str() {
            outbox::SENT => (
                x.sent_at.unwrap_or(x.updated_at),
                "export.sent",
                format!(
                    "Export {} sent after {} attempt(s): {what}",
                    x.id, x.attempts
                ),
            ),
            outbox::DEAD => (
                x.updated_at,
                "export.dead",
                format!(
                    "Export {} dead after {} attempt(s): {what}",
                    x.id, x.attempts
                ),
            ),
            outbox::CANCELLED => (
                x.updated_at,
                "export.cancelled",
                format!("Export {} cancelled: {what}", x.id),
            ),
            _ if x.attempts == 0 => continue,
            _ => (
                x.updated_at,
                "export.pending",
                format!(
                    "Export {} attempt {} of {} failed; next at {}: {what}",
                    x.id,
                    x.attempts,
                    x.max_attempts,
                    format_ms(x.next_attempt_at)
                ),
            ),
        };
        let mut e = entry(at, kind, title);
        e.duration_ms = Some(at - x.created_at);
        e.detail = x.last_error.clone();
        entries.push(e);
    }

    entries.sort_by_key(|e| e.at_ms);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names_give_their_node() {
        assert_eq!(node_of("node-a/1"), "node-a");
        assert_eq!(node_of("4242-abcd1234/0"), "4242-abcd1234");
        assert_eq!(node_of("plain"), "plain");
    }

    #[test]
    fn completion_carries_node_and_receive_time() {
        let e = events::Event::new(
            7,
            "study.complete".into(),
            Some("1.2.3".into()),
            None,
            1_000,
            serde_json::json!({"num_instances": 2, "num_series": 1, "completed_by": "release",
                "node": "n1", "receive_ms": 420}),
        );
        let x = from_event(&e).unwrap();
        assert_eq!(x.node.as_deref(), Some("n1"));
        assert_eq!(x.duration_ms, Some(420));
        assert!(x.title.contains("2 instances in 1 series"), "{}", x.title);
        let started = events::Event::new(8, "inference.started".into(), None, None, 2, Value::Null);
        assert!(from_event(&started).is_none(), "jobs tell their own start");
    }
}
