//! Durable metering (`radanalyzer_calls`) and per-patient measurement history
//! (`radanalyzer_history`). [`settle`] bills one event and records the measurement in one
//! transaction, serialised per key (SQLite `BEGIN IMMEDIATE`; a PostgreSQL advisory lock per
//! key), so two concurrent calls can neither both take the recheck grace nor both miss it.

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{Any, Row, Transaction};

use super::billing::{self, Billing, CallType, Rates, Reason};
use crate::db::{now_ms, Backend, Database};

/// Lock namespace for the per-key billing lock on PostgreSQL ("rana" in ASCII, high half).
const LOCK_NAMESPACE: i64 = 0x7261_6e61 << 32;

/// One billable event to settle.
#[derive(Debug, Clone, PartialEq)]
pub struct Call<'a> {
    /// `api_keys.id` of the caller.
    pub key_id: i64,
    /// The patient identifier the client sent, if any.
    pub uuid: Option<&'a str>,
    pub call_type: CallType,
    /// Which endpoint: `predict`, `predict_stream`, `pop_session`.
    pub endpoint: &'a str,
    /// The result code of the call (a session's: its best image's).
    pub result_code: u8,
    /// The measurement (CTR) when the result is valid (codes 1–4); `None` bills nothing.
    pub measurement: Option<f64>,
}

/// Past measurements of one patient, oldest first, as `[date, value]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct History {
    pub vhs: Vec<(String, f64)>,
    /// Always empty: a chest radiograph has no VLAS analogue.
    pub vlas: Vec<(String, f64)>,
}

impl History {
    /// `historic_vhs` / `historic_vlas` values: `[[date, value], …]`.
    pub fn vhs_json(&self) -> Value {
        pairs(&self.vhs)
    }

    pub fn vlas_json(&self) -> Value {
        pairs(&self.vlas)
    }
}

fn pairs(v: &[(String, f64)]) -> Value {
    Value::Array(v.iter().map(|(d, x)| json!([d, x])).collect())
}

/// What settling a call gives back.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub billing: Billing,
    /// The patient's measurements before this call; `None` without a `uuid`.
    pub history: Option<History>,
}

/// Bills `call` and records its measurement; on a database failure nothing is charged
/// (`billing_error`, logged) and the history is read on its own if it can be.
pub async fn settle(db: &Database, rates: &Rates, call: &Call<'_>) -> Settled {
    match settle_at(db, rates, call, now_ms()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, key_id = call.key_id, "RadAnalyzer: billing failed");
            let usage = monthly_usage(db, call.key_id, &billing::month_of(now_ms()))
                .await
                .ok();
            let history = match call.uuid {
                Some(uuid) => history(db, call.key_id, uuid).await.ok(),
                None => None,
            };
            Settled {
                billing: Billing::error(call.call_type, usage),
                history,
            }
        }
    }
}

/// [`settle`] at a given time (tests), returning database errors.
pub async fn settle_at(
    db: &Database,
    rates: &Rates,
    call: &Call<'_>,
    now: i64,
) -> Result<Settled, sqlx::Error> {
    // SQLite's write lock (taken at the start) serialises calls; PostgreSQL locks the key.
    let mut tx = db.begin_write().await?;
    if db.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_NAMESPACE | (call.key_id & 0xffff_ffff))
            .execute(&mut *tx)
            .await?;
    }
    let history = match call.uuid {
        Some(uuid) => Some(read_history(&mut tx, call.key_id, uuid).await?),
        None => None,
    };
    let month = billing::month_of(now);
    let usage_before: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM radanalyzer_calls WHERE key_id = $1 AND month = $2 AND billable = 1",
    )
    .bind(call.key_id)
    .bind(&month)
    .fetch_one(&mut *tx)
    .await?;
    let billed_recently = match (call.uuid, call.measurement) {
        (Some(uuid), Some(_)) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM radanalyzer_calls \
                 WHERE key_id = $1 AND uuid = $2 AND billable = 1 AND created_at > $3",
            )
            .bind(call.key_id)
            .bind(uuid)
            .bind(now - billing::RECHECK_GRACE_MS)
            .fetch_one(&mut *tx)
            .await?;
            n > 0
        }
        _ => false,
    };
    let reason = Reason::decide(call.measurement.is_some(), billed_recently);
    let bill = Billing::assess(rates, call.call_type, reason, usage_before);
    let call_id: i64 = sqlx::query_scalar(
        "INSERT INTO radanalyzer_calls \
         (key_id, uuid, call_type, endpoint, result_code, billable, reason, tier, rate_cents, \
          month, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(call.key_id)
    .bind(call.uuid)
    .bind(call.call_type.as_str())
    .bind(call.endpoint)
    .bind(i64::from(call.result_code))
    .bind(i64::from(bill.billable))
    .bind(reason.as_str())
    .bind(bill.tier.unwrap_or(billing::Tier::Paygo).as_str())
    .bind(bill.rate_cents)
    .bind(&month)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if let (Some(uuid), Some(value)) = (call.uuid, call.measurement) {
        sqlx::query(
            "INSERT INTO radanalyzer_history (key_id, uuid, call_id, measured_at, vhs, vlas) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(call.key_id)
        .bind(uuid)
        .bind(call_id)
        .bind(now)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Settled {
        billing: bill,
        history,
    })
}

async fn read_history(
    tx: &mut Transaction<'_, Any>,
    key_id: i64,
    uuid: &str,
) -> Result<History, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT measured_at, vhs FROM radanalyzer_history \
         WHERE key_id = $1 AND uuid = $2 ORDER BY measured_at, id",
    )
    .bind(key_id)
    .bind(uuid)
    .fetch_all(&mut **tx)
    .await?;
    Ok(History {
        vhs: rows
            .iter()
            .map(|r| {
                (
                    billing::date_of(r.get("measured_at")),
                    r.get::<f64, _>("vhs"),
                )
            })
            .collect(),
        vlas: Vec::new(),
    })
}

/// A patient's measurements, outside a billing transaction.
pub async fn history(db: &Database, key_id: i64, uuid: &str) -> Result<History, sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    let h = read_history(&mut tx, key_id, uuid).await?;
    tx.commit().await?;
    Ok(h)
}

/// Billable calls of a key in `month` (`YYYY-MM`).
pub async fn monthly_usage(db: &Database, key_id: i64, month: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM radanalyzer_calls WHERE key_id = $1 AND month = $2 AND billable = 1",
    )
    .bind(key_id)
    .bind(month)
    .fetch_one(&db.pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{keys, Scope};

    async fn db() -> (tempfile::TempDir, Database, i64) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, None, crate::configuration::Durability::Os)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let (k, _) = keys::create(&db, "clinic", &[Scope::InferenceWrite])
            .await
            .unwrap();
        (dir, db, k.id)
    }

    fn call(key_id: i64, uuid: Option<&str>, measurement: Option<f64>) -> Call<'_> {
        Call {
            key_id,
            uuid,
            call_type: CallType::Single,
            endpoint: "predict",
            result_code: if measurement.is_some() { 1 } else { 5 },
            measurement,
        }
    }

    const T0: i64 = 1_774_999_800_000 - 40 * 86_400_000; // 2026-02-19T23:30Z

    #[tokio::test]
    async fn first_valid_call_bills_and_a_recheck_within_24h_is_free() {
        let (_d, db, key) = db().await;
        let rates = Rates::default();
        let s = settle_at(&db, &rates, &call(key, Some("p1"), Some(0.46)), T0)
            .await
            .unwrap();
        assert_eq!(s.billing.reason, Reason::ValidVhs);
        assert_eq!(s.billing.rate_cents, Some(300));
        assert_eq!(s.billing.monthly_usage, Some(1));
        assert_eq!(s.history, Some(History::default()));

        let later = T0 + 23 * 3_600_000;
        let s = settle_at(&db, &rates, &call(key, Some("p1"), Some(0.48)), later)
            .await
            .unwrap();
        assert_eq!(s.billing.reason, Reason::Recheck24h);
        assert_eq!(s.billing.monthly_usage, Some(1));
        let h = s.history.unwrap();
        assert_eq!(h.vhs, vec![("2026-02-19".to_string(), 0.46)]);
        assert_eq!(h.vhs_json(), json!([["2026-02-19", 0.46]]));
        assert_eq!(h.vlas_json(), json!([]));

        // Another patient is billed; the first one is billed again once the day is over.
        let s = settle_at(&db, &rates, &call(key, Some("p2"), Some(0.5)), later)
            .await
            .unwrap();
        assert_eq!(s.billing.reason, Reason::ValidVhs);
        let s = settle_at(
            &db,
            &rates,
            &call(key, Some("p1"), Some(0.47)),
            T0 + 86_400_001,
        )
        .await
        .unwrap();
        assert_eq!(s.billing.reason, Reason::ValidVhs);
        assert_eq!(s.billing.monthly_usage, Some(3));
        assert_eq!(s.history.unwrap().vhs.len(), 2);
    }

    #[tokio::test]
    async fn failures_are_free_and_recorded_without_history() {
        let (_d, db, key) = db().await;
        let rates = Rates::default();
        let s = settle_at(&db, &rates, &call(key, Some("p1"), None), T0)
            .await
            .unwrap();
        assert_eq!(s.billing.reason, Reason::NoValidVhs);
        assert!(!s.billing.billable);
        assert_eq!(s.billing.monthly_usage, Some(0));
        // A failed call opens no grace window: the next valid one is billed.
        let s = settle_at(&db, &rates, &call(key, Some("p1"), Some(0.4)), T0 + 1000)
            .await
            .unwrap();
        assert_eq!(s.billing.reason, Reason::ValidVhs);
        assert_eq!(s.history.unwrap().vhs, vec![]);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM radanalyzer_calls")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows, 2);
        let hist: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM radanalyzer_history")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(hist, 1);
    }

    #[tokio::test]
    async fn usage_counts_the_calendar_month() {
        let (_d, db, key) = db().await;
        let rates = Rates::default();
        for i in 0..3 {
            settle_at(&db, &rates, &call(key, None, Some(0.4)), T0 + i)
                .await
                .unwrap();
        }
        // T0 is late on 19 February; ten days later is March.
        let s = settle_at(
            &db,
            &rates,
            &call(key, None, Some(0.4)),
            T0 + 10 * 86_400_000,
        )
        .await
        .unwrap();
        assert_eq!(s.billing.monthly_usage, Some(1));
        assert_eq!(s.history, None);
        assert_eq!(monthly_usage(&db, key, "2026-02").await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_broken_database_gives_billing_error() {
        let (_d, db, key) = db().await;
        sqlx::query("DROP TABLE radanalyzer_history")
            .execute(&db.pool)
            .await
            .unwrap();
        let s = settle(&db, &Rates::default(), &call(key, Some("p"), Some(0.4))).await;
        assert_eq!(s.billing.reason, Reason::BillingError);
        assert!(!s.billing.billable);
        // The call row was rolled back with the history row.
        assert_eq!(s.billing.monthly_usage, Some(0));
    }
}
