//! Storage Commitment Push Model (PS3.4 Annex J), as the SCU asking a PACS to take custody of
//! what the node exported.
//!
//! After a C-STORE, the exporter opens a transaction here ([`request`]) and sends the N-ACTION
//! the data set of [`action_data_set`] carries; the PACS answers later with an
//! N-EVENT-REPORT, usually on a new association to our listener, which hands it to
//! [`record_report`]. The exporter polls [`outcome`] until the report arrives or its
//! time-out passes. Rows live in the database, so a report reaching any node resolves the
//! transaction.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::clock::now_ms;
use crate::db::Database;

/// Storage Commitment Push Model SOP Class.
pub const PUSH_MODEL_SOP_CLASS: &str = "1.2.840.10008.1.20.1";
/// Its well-known SOP instance (the N-ACTION's Requested SOP Instance UID).
pub const PUSH_MODEL_SOP_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
/// Action Type ID "Request Storage Commitment".
pub const ACTION_REQUEST: u16 = 1;
/// Event Type IDs of the report: all committed, or failures exist.
pub const EVENT_SUCCESS: u16 = 1;
pub const EVENT_FAILURES: u16 = 2;

/// How a transaction ended, or that it is still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Requested,
    Committed { at: i64 },
    Failed { reason: String },
}

/// Opens a transaction for one exported instance; returns its Transaction UID.
pub async fn request(
    db: &Database,
    export_id: i64,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> Result<String, sqlx::Error> {
    let uid = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    sqlx::query(
        "INSERT INTO storage_commitments (transaction_uid, export_id, sop_class_uid, \
         sop_instance_uid, state, requested_at) VALUES ($1, $2, $3, $4, 'requested', $5)",
    )
    .bind(&uid)
    .bind(export_id)
    .bind(sop_class_uid)
    .bind(sop_instance_uid)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(uid)
}

#[derive(sqlx::FromRow)]
struct StateRow {
    state: String,
    failure_reason: Option<String>,
    reported_at: Option<i64>,
}

/// The transaction's state.
pub async fn outcome(db: &Database, transaction_uid: &str) -> Result<Outcome, sqlx::Error> {
    let row: Option<StateRow> = sqlx::query_as(
        "SELECT state, failure_reason, reported_at FROM storage_commitments \
         WHERE transaction_uid = $1",
    )
    .bind(transaction_uid)
    .fetch_optional(&db.pool)
    .await?;
    Ok(match row {
        Some(r) if r.state == "committed" => Outcome::Committed {
            at: r.reported_at.unwrap_or_default(),
        },
        Some(r) if r.state == "failed" => Outcome::Failed {
            reason: r.failure_reason.unwrap_or_default(),
        },
        _ => Outcome::Requested,
    })
}

/// The N-ACTION data set: the Transaction UID and the instance (Referenced SOP Sequence).
pub fn action_data_set(
    transaction_uid: &str,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> InMemDicomObject {
    let item = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class_uid),
        ),
        DataElement::new(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance_uid),
        ),
    ]);
    InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::TRANSACTION_UID,
            VR::UI,
            PrimitiveValue::from(transaction_uid),
        ),
        DataElement::new(
            tags::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![item]),
        ),
    ])
}

/// What an N-EVENT-REPORT says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub transaction_uid: String,
    /// SOP Instance UIDs committed.
    pub committed: Vec<String>,
    /// SOP Instance UIDs not committed, with the Failure Reason.
    pub failed: Vec<(String, u16)>,
}

fn uid(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// Reads an N-EVENT-REPORT data set (Referenced SOP Sequence, Failed SOP Sequence).
pub fn read_report(obj: &InMemDicomObject) -> Report {
    let items = |tag| {
        obj.get(tag)
            .and_then(|e| e.items())
            .map(<[InMemDicomObject]>::to_vec)
            .unwrap_or_default()
    };
    Report {
        transaction_uid: uid(obj, tags::TRANSACTION_UID),
        committed: items(tags::REFERENCED_SOP_SEQUENCE)
            .iter()
            .map(|i| uid(i, tags::REFERENCED_SOP_INSTANCE_UID))
            .collect(),
        failed: items(tags::FAILED_SOP_SEQUENCE)
            .iter()
            .map(|i| {
                let reason = i
                    .get(tags::FAILURE_REASON)
                    .and_then(|e| e.to_int::<u16>().ok())
                    .unwrap_or(0x0110);
                (uid(i, tags::REFERENCED_SOP_INSTANCE_UID), reason)
            })
            .collect(),
    }
}

/// Failure Reason values (PS3.3 C.14.1.1).
pub fn failure_text(code: u16) -> &'static str {
    match code {
        0x0110 => "processing failure",
        0x0112 => "no such object instance",
        0x0213 => "resource limitation",
        0x0122 => "referenced SOP class not supported",
        0x0119 => "class / instance conflict",
        0x0131 => "duplicate transaction UID",
        _ => "unknown failure reason",
    }
}

/// Records a report; returns whether it matched an open transaction of ours.
pub async fn record_report(
    db: &Database,
    report: &Report,
    reported_by: &str,
) -> Result<bool, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Open {
        sop_instance_uid: String,
    }
    let open: Option<Open> = sqlx::query_as(
        "SELECT sop_instance_uid FROM storage_commitments \
         WHERE transaction_uid = $1 AND state = 'requested'",
    )
    .bind(&report.transaction_uid)
    .fetch_optional(&db.pool)
    .await?;
    let Some(open) = open else {
        return Ok(false);
    };
    let failed = report
        .failed
        .iter()
        .find(|(sop, _)| *sop == open.sop_instance_uid);
    let (state, reason) = match failed {
        Some((_, code)) => (
            "failed",
            Some(format!(
                "failure reason {code:04X}H ({})",
                failure_text(*code)
            )),
        ),
        None if report.committed.contains(&open.sop_instance_uid) => ("committed", None),
        None => (
            "failed",
            Some("the report does not list the instance".to_string()),
        ),
    };
    sqlx::query(
        "UPDATE storage_commitments SET state = $2, failure_reason = $3, reported_by = $4, \
         reported_at = $5 WHERE transaction_uid = $1 AND state = 'requested'",
    )
    .bind(&report.transaction_uid)
    .bind(state)
    .bind(reason)
    .bind(reported_by)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_report_resolves_its_transaction_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, Some(1), crate::db::Durability::Os)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let ok = request(&db, 1, "1.2.840.10008.5.1.4.1.1.88.34", "1.1")
            .await
            .unwrap();
        let bad = request(&db, 2, "1.2.840.10008.5.1.4.1.1.88.34", "1.2")
            .await
            .unwrap();
        assert_eq!(outcome(&db, &ok).await.unwrap(), Outcome::Requested);
        let ds = action_data_set(&ok, "1.2.840.10008.5.1.4.1.1.88.34", "1.1");
        let mut report = read_report(&ds);
        assert_eq!(report.transaction_uid, ok);
        assert_eq!(report.committed, ["1.1"]);
        assert!(record_report(&db, &report, "PACS").await.unwrap());
        assert!(matches!(
            outcome(&db, &ok).await.unwrap(),
            Outcome::Committed { .. }
        ));
        assert!(
            !record_report(&db, &report, "PACS").await.unwrap(),
            "already resolved"
        );
        report.transaction_uid = bad.clone();
        report.committed.clear();
        report.failed = vec![("1.2".into(), 0x0112)];
        record_report(&db, &report, "PACS").await.unwrap();
        assert_eq!(
            outcome(&db, &bad).await.unwrap(),
            Outcome::Failed {
                reason: "failure reason 0112H (no such object instance)".into()
            }
        );
    }
}
