//! Inbound orders (ORM^O01, OMI^O23): the accession number and priority of an exam before its
//! images arrive, kept in `hl7_orders`. A STAT order raises the urgency floor of its study's
//! results (see [`priority_of`]).

use sqlx::FromRow;

use crate::clock::now_ms;
use crate::db::Database;

/// What an order message says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Order {
    pub message_type: String,
    pub control_id: String,
    pub sending_application: String,
    pub patient_id: String,
    /// ORC-1.
    pub order_control: String,
    /// ORC-2.1.
    pub placer_order_number: String,
    /// IPC-1 (OMI), else OBR-18, else ORC-2.1.
    pub accession_number: String,
    /// TQ1-9.1 (OMI, ORM 2.5), else ORC-7.6 (ORM's TQ), else OBR-27.6.
    pub priority: String,
}

/// Why a message is refused (answered AE).
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("not an HL7 v2 message (no MSH)")]
    NoHeader,
    #[error("message type {0} is not ORM^O01 or OMI^O23")]
    Unsupported(String),
    #[error("the order names no accession number")]
    NoAccession,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

fn component(field: &str, n: usize) -> String {
    field
        .split('^')
        .nth(n)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Reads an ORM^O01 or OMI^O23 (the first order of the message).
pub fn parse(message: &str) -> Result<Order, OrderError> {
    let segments: Vec<Vec<&str>> = message
        .split(['\r', '\n'])
        .filter(|s| !s.is_empty())
        .map(|s| s.split('|').collect())
        .collect();
    let seg = |name: &str| segments.iter().find(|s| s[0] == name);
    let field = |name: &str, n: usize| -> String {
        // MSH-1 is the separator itself: MSH-n sits at index n-1.
        let idx = if name == "MSH" { n - 1 } else { n };
        seg(name)
            .and_then(|s| s.get(idx))
            .map(|f| f.to_string())
            .unwrap_or_default()
    };
    if seg("MSH").is_none() {
        return Err(OrderError::NoHeader);
    }
    let msh9 = field("MSH", 9);
    let message_type = format!("{}^{}", component(&msh9, 0), component(&msh9, 1));
    if message_type != "ORM^O01" && message_type != "OMI^O23" {
        return Err(OrderError::Unsupported(message_type));
    }
    let placer = component(&field("ORC", 2), 0);
    let accession = [
        component(&field("IPC", 1), 0),
        field("OBR", 18),
        placer.clone(),
    ]
    .into_iter()
    .map(|a| a.split('^').next().unwrap_or_default().trim().to_string())
    .find(|a| !a.is_empty())
    .ok_or(OrderError::NoAccession)?;
    let priority = [
        component(&field("TQ1", 9), 0),
        component(&field("ORC", 7), 5),
        component(&field("OBR", 27), 5),
    ]
    .into_iter()
    .find(|p| !p.is_empty())
    .unwrap_or_default();
    Ok(Order {
        message_type,
        control_id: field("MSH", 10),
        sending_application: component(&field("MSH", 3), 0),
        patient_id: component(&field("PID", 3), 0),
        order_control: field("ORC", 1).trim().to_string(),
        placer_order_number: placer,
        accession_number: accession,
        priority,
    })
}

/// Stores (or updates) the order under its accession number.
pub async fn store(db: &Database, o: &Order) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO hl7_orders (accession_number, patient_id, placer_order_number, \
         order_control, priority, sending_application, received_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (accession_number) DO UPDATE SET patient_id = excluded.patient_id, \
         placer_order_number = excluded.placer_order_number, \
         order_control = excluded.order_control, priority = excluded.priority, \
         sending_application = excluded.sending_application, updated_at = excluded.updated_at",
    )
    .bind(&o.accession_number)
    .bind(&o.patient_id)
    .bind(&o.placer_order_number)
    .bind(&o.order_control)
    .bind(&o.priority)
    .bind(&o.sending_application)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct PriorityRow {
    priority: Option<String>,
    order_control: String,
}

/// The priority of the live (not cancelled) order with this accession number.
pub async fn priority_of(db: &Database, accession: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<PriorityRow> = sqlx::query_as(
        "SELECT priority, order_control FROM hl7_orders WHERE accession_number = $1",
    )
    .bind(accession.trim())
    .fetch_optional(&db.pool)
    .await?;
    Ok(row
        .filter(|r| !matches!(r.order_control.as_str(), "CA" | "OC" | "DC"))
        .and_then(|r| r.priority)
        .filter(|p| !p.is_empty()))
}

/// The ACK answering `message` (MSA-1 `AA` or `AE` with the reason).
pub fn ack(order_control_id: &str, code: &str, text: &str, now: &str) -> String {
    format!(
        "MSH|^~\\&|RADSTREAM||||{now}||ACK^O01^ACK|ACK{id}|P|2.5.1\rMSA|{code}|{id}|{text}\r",
        id = super::message::escape(order_control_id),
        text = super::message::escape(text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orm_and_omi_give_accession_and_priority() {
        let orm = "MSH|^~\\&|RIS|H|RADSTREAM|AI|20261207||ORM^O01|m1|P|2.3\r\
                   PID|1||PAT1^^^^MR||DOE^JANE\r\
                   ORC|NW|PL1^RIS|||||^^^^^S\r\
                   OBR|1|PL1^RIS||36643-5^XR Chest^LN||||||||||||||ACC9\r";
        let o = parse(orm).unwrap();
        assert_eq!(o.accession_number, "ACC9");
        assert_eq!(o.priority, "S");
        assert_eq!(o.patient_id, "PAT1");
        assert_eq!(o.control_id, "m1");
        let omi = "MSH|^~\\&|RIS|H|||20261207||OMI^O23^OMI_O23|m2|P|2.5.1\r\
                   PID|1||PAT2\rORC|NW|PL2\rTQ1|1||||||||A\rOBR|1|PL2\rIPC|ACC10|RP1|1.2.3|SPS1\r";
        let o = parse(omi).unwrap();
        assert_eq!(
            (o.accession_number.as_str(), o.priority.as_str()),
            ("ACC10", "A")
        );
        assert!(matches!(
            parse("MSH|^~\\&|X||||||ADT^A01|1|P|2.5\r"),
            Err(OrderError::Unsupported(_))
        ));
    }
}
