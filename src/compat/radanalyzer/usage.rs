//! The metering report per API key and month, for administrators: `GET
//! /v1/radanalyzer/usage?month=YYYY-MM&key_id=N` (scope `admin`, native envelope, CSV/XML too)
//! and `radstream usage [--month YYYY-MM] [--key ID|NAME]`. Months are calendar months in UTC;
//! the amount is the sum of the rates charged.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::routing::{get, MethodRouter};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::billing::{self, Tier};
use crate::api::error::query_rejection;
use crate::api::response::ENVELOPE;
use crate::api::{spec, Access, ApiError, AppState, Ctx, Reply, RouteSpec};
use crate::auth::Scope;
use crate::clock::now_ms;
use crate::db::Database;

pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![(
        spec(
            Method::GET,
            "/v1/radanalyzer/usage",
            Access::Scope(Scope::Admin),
            "RadAnalyzer V3 metering per API key for a month (filters: month, key_id)",
        ),
        get(usage),
    )]
}

/// One key's month.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct KeyUsage {
    /// `api_keys.id`.
    pub key_id: i64,
    /// The key's name.
    pub key_name: String,
    /// The key's first characters (`rsk_…`).
    pub key_prefix: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Billable events (the monthly usage the tiers count).
    pub billable_calls: i64,
    /// Billable single-image calls.
    pub billable_single: i64,
    /// Billable sessions (batch, stream, capture session).
    pub billable_sessions: i64,
    /// Valid measurements not billed: same `uuid` within 24 h of a billed one.
    pub rechecks: i64,
    /// Calls without a valid measurement (free).
    pub no_valid_measurement: i64,
    /// Dollars charged this month.
    pub amount: f64,
    /// Tier reached by the billable calls.
    pub tier: Tier,
}

impl KeyUsage {
    fn empty(key_id: i64, key_name: String, key_prefix: String, month: &str) -> KeyUsage {
        KeyUsage {
            key_id,
            key_name,
            key_prefix,
            month: month.to_string(),
            billable_calls: 0,
            billable_single: 0,
            billable_sessions: 0,
            rechecks: 0,
            no_valid_measurement: 0,
            amount: 0.0,
            tier: Tier::Paygo,
        }
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("no API key with id or name {0:?}")]
    UnknownKey(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Usage of every key with calls in `month` (or of one key, with zeros if it made none).
pub async fn report(
    db: &Database,
    month: &str,
    key_id: Option<i64>,
) -> Result<Vec<KeyUsage>, UsageError> {
    let filter = if key_id.is_some() {
        " AND c.key_id = $2"
    } else {
        ""
    };
    let sql = format!(
        "SELECT c.key_id, c.call_type, c.reason, COUNT(*) AS calls, \
                CAST(COALESCE(SUM(c.rate_cents), 0) AS BIGINT) AS cents \
         FROM radanalyzer_calls c \
         WHERE c.month = $1{filter} \
         GROUP BY c.key_id, c.call_type, c.reason \
         ORDER BY c.key_id"
    );
    let mut q = sqlx::query(&sql).bind(month);
    if let Some(id) = key_id {
        q = q.bind(id);
    }
    let rows = q.fetch_all(&db.pool).await?;
    // Every key, for names: a key's calls stay after it is revoked, and so does its row.
    let keys = crate::auth::keys::list(db).await?;
    let mut out: Vec<KeyUsage> = Vec::new();
    let mut cents = Vec::new();
    for r in &rows {
        let id: i64 = r.get("key_id");
        let Some(key) = keys.iter().find(|k| k.id == id) else {
            continue;
        };
        if out.last().is_none_or(|u| u.key_id != id) {
            out.push(KeyUsage::empty(
                id,
                key.name.clone(),
                key.key_prefix.clone(),
                month,
            ));
            cents.push(0i64);
        }
        let (Some(u), Some(c)) = (out.last_mut(), cents.last_mut()) else {
            continue;
        };
        let call_type: String = r.get("call_type");
        let reason: String = r.get("reason");
        let n: i64 = r.get("calls");
        *c += r.get::<i64, _>("cents");
        match reason.as_str() {
            "valid_vhs" => {
                u.billable_calls += n;
                if call_type == "single" {
                    u.billable_single += n;
                } else {
                    u.billable_sessions += n;
                }
            }
            "recheck_24h" => u.rechecks += n,
            _ => u.no_valid_measurement += n,
        }
    }
    for (u, c) in out.iter_mut().zip(cents) {
        u.amount = billing::dollars(c);
        u.tier = Tier::for_usage(u.billable_calls);
    }
    if let (Some(id), true) = (key_id, out.is_empty()) {
        let key = keys
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| UsageError::UnknownKey(id.to_string()))?;
        out.push(KeyUsage::empty(key.id, key.name, key.key_prefix, month));
    }
    Ok(out)
}

/// The current month (UTC), `YYYY-MM`.
pub fn current_month() -> String {
    billing::month_of(now_ms())
}

/// `radstream usage`: one line per key (or JSON), for `month` (default the current one) and
/// optionally one key by id or name.
pub async fn cli(
    db: &Database,
    month: Option<String>,
    key: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let month = match month {
        None => current_month(),
        Some(m) => {
            billing::parse_month(&m).with_context(|| format!("--month {m:?}: expected YYYY-MM"))?
        }
    };
    let key_id = match key {
        None => None,
        Some(k) => {
            let keys = crate::auth::keys::list(db).await?;
            let found = match k.parse::<i64>() {
                Ok(id) => keys.iter().find(|x| x.id == id),
                // An active key of that name, else the newest revoked one.
                Err(_) => keys
                    .iter()
                    .rev()
                    .filter(|x| x.name == k)
                    .min_by_key(|x| x.revoked_at.is_some()),
            };
            Some(
                found
                    .with_context(|| format!("no API key with id or name {k:?}"))?
                    .id,
            )
        }
    };
    let rows = report(db, &month, key_id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:>4}  {:<24} {:<14} {:<7} {:>8} {:>6} {:>8} {:>8} {:>10} {:>10}  {:<12}",
        "ID",
        "NAME",
        "PREFIX",
        "MONTH",
        "BILLABLE",
        "SINGLE",
        "SESSIONS",
        "RECHECKS",
        "NO_RESULT",
        "AMOUNT",
        "TIER"
    );
    for u in &rows {
        println!(
            "{:>4}  {:<24} {:<14} {:<7} {:>8} {:>6} {:>8} {:>8} {:>10} {:>10.2}  {:<12}",
            u.key_id,
            u.key_name,
            u.key_prefix,
            u.month,
            u.billable_calls,
            u.billable_single,
            u.billable_sessions,
            u.rechecks,
            u.no_valid_measurement,
            u.amount,
            u.tier.as_str()
        );
    }
    if rows.is_empty() {
        eprintln!("no RadAnalyzer calls in {month}");
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// `YYYY-MM` (UTC); default the current month.
    month: Option<String>,
    /// One key only.
    key_id: Option<i64>,
}

/// `GET /v1/radanalyzer/usage`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UsagePage {
    /// One per key with calls in the month.
    pub items: Vec<KeyUsage>,
    /// `YYYY-MM` (UTC).
    pub month: String,
}

#[utoipa::path(get, path = "/v1/radanalyzer/usage", params(UsageQuery), responses(
    (status = 200, description = "RadAnalyzer metering per API key for the month", body = UsagePage, content_type = ENVELOPE),
))]
async fn usage(
    State(state): State<AppState>,
    ctx: Ctx,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Reply, ApiError> {
    let Query(q) = query.map_err(query_rejection)?;
    let month = match q.month.as_deref() {
        None | Some("") => current_month(),
        Some(m) => {
            billing::parse_month(m).ok_or_else(|| ApiError::invalid("month", "expected YYYY-MM"))?
        }
    };
    let items = report(&state.db, &month, q.key_id)
        .await
        .map_err(|e| match e {
            UsageError::UnknownKey(_) => ApiError::invalid("key_id", e.to_string()),
            UsageError::Db(e) => ApiError::from(e),
        })?;
    let rows = serde_json::to_value(&items).unwrap_or_default();
    Ok(ctx.reply(UsagePage { items, month }).csv_rows(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::radanalyzer::billing::{CallType, Rates};
    use crate::compat::radanalyzer::ledger::{settle_at, Call};

    #[tokio::test]
    async fn counts_and_amounts_per_key_and_month() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, None, crate::db::Durability::Os)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let (a, _) = crate::auth::keys::create(&db, "a", &[Scope::InferenceWrite])
            .await
            .unwrap();
        let (b, _) = crate::auth::keys::create(&db, "b", &[Scope::InferenceWrite])
            .await
            .unwrap();
        let t0 = 1_774_999_800_000 - 5 * 86_400_000; // 2026-03-26
        let rates = Rates::default();
        let calls = [
            (a.id, Some("p1"), CallType::Single, Some(0.4)), // billed 3.00
            (a.id, Some("p1"), CallType::Session, Some(0.4)), // recheck
            (a.id, None, CallType::Session, Some(0.4)),      // billed 4.00
            (a.id, None, CallType::Single, None),            // free
            (b.id, None, CallType::Single, Some(0.5)),       // billed 3.00
        ];
        for (i, (key_id, uuid, call_type, measurement)) in calls.into_iter().enumerate() {
            let call = Call {
                key_id,
                uuid,
                call_type,
                endpoint: "predict",
                result_code: 1,
                measurement,
            };
            settle_at(&db, &rates, &call, t0 + i as i64).await.unwrap();
        }
        let all = report(&db, "2026-03", None).await.unwrap();
        assert_eq!(all.len(), 2);
        let ua = &all[0];
        assert_eq!(
            (
                ua.key_id,
                ua.billable_calls,
                ua.billable_single,
                ua.billable_sessions
            ),
            (a.id, 2, 1, 1)
        );
        assert_eq!((ua.rechecks, ua.no_valid_measurement), (1, 1));
        assert_eq!(ua.amount, 7.0);
        assert_eq!(ua.tier, Tier::Paygo);
        assert_eq!(all[1].amount, 3.0);
        assert!(report(&db, "2026-04", None).await.unwrap().is_empty());
        let one = report(&db, "2026-04", Some(b.id)).await.unwrap();
        assert_eq!((one.len(), one[0].billable_calls), (1, 0));
        assert!(matches!(
            report(&db, "2026-03", Some(999)).await,
            Err(UsageError::UnknownKey(_))
        ));
    }
}
