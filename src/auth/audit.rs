//! The read audit: who saw which patient's data, when, from where. Handlers that return a
//! patient's results call [`record`] (or the `api::auth::Audit` extractor's `record`); admins
//! read the log at `GET /v1/audit`.

use serde::Serialize;
use sqlx::Row;

use super::Principal;
use crate::clock::now_ms;
use crate::db::Database;

/// What was done, to whom, and how it ended.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry<'a> {
    /// Dotted verb, e.g. `results.read`, `study.read`, `events.subscribe`.
    pub action: &'a str,
    pub patient_id: Option<&'a str>,
    pub study_uid: Option<&'a str>,
    /// Peer address of the HTTP connection (`ip:port`).
    pub remote_addr: Option<&'a str>,
    /// `x-request-id` of the request.
    pub request_id: Option<&'a str>,
    /// HTTP status answered.
    pub status: Option<u16>,
    /// What a search asked for: its query string (never a credential: `access_token` is
    /// removed before handlers see the URI).
    pub query: Option<&'a str>,
}

/// One row waiting in the [`AuditWriter`]'s queue, and who waits for it.
struct Pending {
    at: i64,
    principal: String,
    auth_method: &'static str,
    action: String,
    patient_id: Option<String>,
    study_uid: Option<String>,
    remote_addr: Option<String>,
    request_id: Option<String>,
    status: Option<i64>,
    query: Option<String>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Most rows one commit takes.
const MAX_BATCH: usize = 256;

/// Group commit for audit rows of bursty reads (a viewer fetching a study's frames in
/// parallel): one task writes whatever is queued in one transaction, so concurrent requests
/// share a commit (and its fsync) instead of queueing for SQLite's single writer one by one.
/// [`AuditWriter::record`] still returns only once its row is committed: nothing is served
/// unaudited. The queue is bounded; a full queue makes callers wait.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

impl AuditWriter {
    /// Starts the writer task on `db` (it ends when every clone of the writer is dropped).
    pub fn spawn(db: Database) -> AuditWriter {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Pending>(4 * MAX_BATCH);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let written = write_batch(&db, &batch).await.map_err(|e| e.to_string());
                if let Err(e) = &written {
                    tracing::error!(rows = batch.len(), error = %e, "writing audit rows failed");
                }
                for p in batch {
                    let _ = p.done.send(written.clone());
                }
            }
        });
        AuditWriter { queue }
    }

    /// Queues one row and waits for its commit.
    pub async fn record(
        &self,
        principal: &Principal,
        entry: &AuditEntry<'_>,
    ) -> Result<(), String> {
        let (done, committed) = tokio::sync::oneshot::channel();
        let pending = Pending {
            at: now_ms(),
            principal: principal.subject.clone(),
            auth_method: principal.method.as_str(),
            action: entry.action.to_string(),
            patient_id: entry.patient_id.map(str::to_string),
            study_uid: entry.study_uid.map(str::to_string),
            remote_addr: entry.remote_addr.map(str::to_string),
            request_id: entry.request_id.map(str::to_string),
            status: entry.status.map(i64::from),
            query: entry.query.map(str::to_string),
            done,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?;
        committed
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?
    }
}

async fn write_batch(db: &Database, batch: &[Pending]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    for p in batch {
        sqlx::query(
            "INSERT INTO audit_log (at, principal, auth_method, action, patient_id, study_uid, \
               remote_addr, request_id, status, query) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(p.at)
        .bind(&p.principal)
        .bind(p.auth_method)
        .bind(&p.action)
        .bind(p.patient_id.as_deref())
        .bind(p.study_uid.as_deref())
        .bind(p.remote_addr.as_deref())
        .bind(p.request_id.as_deref())
        .bind(p.status)
        .bind(p.query.as_deref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Appends one row to `audit_log` and returns its id.
pub async fn record(
    db: &Database,
    principal: &Principal,
    entry: &AuditEntry<'_>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO audit_log (at, principal, auth_method, action, patient_id, study_uid, \
           remote_addr, request_id, status, query) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(now_ms())
    .bind(&principal.subject)
    .bind(principal.method.as_str())
    .bind(entry.action)
    .bind(entry.patient_id)
    .bind(entry.study_uid)
    .bind(entry.remote_addr)
    .bind(entry.request_id)
    .bind(entry.status.map(i64::from))
    .bind(entry.query)
    .fetch_one(&db.pool)
    .await
}

/// One audit row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    /// Epoch milliseconds.
    pub at: i64,
    pub principal: String,
    /// `jwt` or `api_key`.
    pub auth_method: String,
    pub action: String,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub remote_addr: Option<String>,
    pub request_id: Option<String>,
    pub status: Option<i64>,
    pub query: Option<String>,
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub patient_id: Option<String>,
    /// Rows at or after this epoch millisecond.
    pub since_ms: Option<i64>,
    /// Rows returned, newest first.
    pub limit: i64,
}

/// Matching rows, newest first.
pub async fn list(db: &Database, filter: &AuditFilter) -> Result<Vec<AuditRecord>, sqlx::Error> {
    let mut sql = String::from(
        "SELECT id, at, principal, auth_method, action, patient_id, study_uid, remote_addr, \
           request_id, status, query FROM audit_log WHERE 1 = 1",
    );
    let mut n = 0;
    if filter.patient_id.is_some() {
        n += 1;
        sql.push_str(&format!(" AND patient_id = ${n}"));
    }
    if filter.since_ms.is_some() {
        n += 1;
        sql.push_str(&format!(" AND at >= ${n}"));
    }
    sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT ${}", n + 1));
    let mut q = sqlx::query(&sql);
    if let Some(p) = &filter.patient_id {
        q = q.bind(p);
    }
    if let Some(s) = filter.since_ms {
        q = q.bind(s);
    }
    let rows = q.bind(filter.limit).fetch_all(&db.pool).await?;
    Ok(rows
        .iter()
        .map(|r| AuditRecord {
            id: r.get("id"),
            at: r.get("at"),
            principal: r.get("principal"),
            auth_method: r.get("auth_method"),
            action: r.get("action"),
            patient_id: r.get("patient_id"),
            study_uid: r.get("study_uid"),
            remote_addr: r.get("remote_addr"),
            request_id: r.get("request_id"),
            status: r.get("status"),
            query: r.get("query"),
        })
        .collect())
}

/// `since` as epoch milliseconds or RFC 3339 (`2026-11-22T10:00:00Z`).
pub fn parse_since(s: &str) -> Option<i64> {
    if let Ok(ms) = s.trim().parse::<i64>() {
        return Some(ms);
    }
    crate::clock::parse_rfc3339_ms(s.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthMethod, Scope};

    #[test]
    fn since_accepts_ms_and_rfc3339() {
        assert_eq!(parse_since("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_since("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            parse_since("2026-11-22T10:00:00+01:00"),
            Some(1_795_338_000_000)
        );
        assert_eq!(parse_since("yesterday"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_commits_concurrent_rows_before_answering() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, None, crate::db::Durability::Fsync)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let writer = AuditWriter::spawn(db.clone());
        let p = Principal {
            subject: "viewer".into(),
            method: AuthMethod::Jwt,
            scopes: vec![Scope::ResultsRead],
            key_id: None,
        };
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (writer, p) = (writer.clone(), p.clone());
                tokio::spawn(async move {
                    let uid = format!("1.2.{i}");
                    let entry = AuditEntry {
                        action: "dicomweb.frames.frames",
                        study_uid: Some(&uid),
                        status: Some(200),
                        ..Default::default()
                    };
                    writer.record(&p, &entry).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // Every caller was answered only after its row was committed.
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE principal = 'viewer'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(n, 64);
    }

    #[tokio::test]
    async fn record_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, None, crate::db::Durability::Os)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let p = Principal {
            subject: "viewer".into(),
            method: AuthMethod::ApiKey,
            scopes: vec![Scope::ResultsRead],
            key_id: Some(1),
        };
        for pid in ["P1", "P2", "P1"] {
            record(
                &db,
                &p,
                &AuditEntry {
                    action: "results.read",
                    patient_id: Some(pid),
                    study_uid: Some("1.2.3"),
                    remote_addr: Some("127.0.0.1:5000"),
                    request_id: Some("r"),
                    status: Some(200),
                    query: Some("PatientID=P1"),
                },
            )
            .await
            .unwrap();
        }
        let all = list(
            &db,
            &AuditFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(all.len(), 3);
        assert!(all[0].id > all[1].id, "newest first");
        assert_eq!(all[0].auth_method, "api_key");
        assert_eq!(all[0].status, Some(200));
        assert_eq!(all[0].query.as_deref(), Some("PatientID=P1"));
        let p1 = list(
            &db,
            &AuditFilter {
                patient_id: Some("P1".into()),
                since_ms: Some(0),
                limit: 1,
            },
        )
        .await
        .unwrap();
        assert_eq!(p1.len(), 1);
        assert_eq!(p1[0].patient_id.as_deref(), Some("P1"));
        let future = list(
            &db,
            &AuditFilter {
                since_ms: Some(now_ms() + 60_000),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(future.is_empty());
    }
}
