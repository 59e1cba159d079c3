//! HL7 v2 results: an ORU^R01 per result version ([`message`]) sent over MLLP ([`mllp`]) to
//! `kind = "hl7"` export destinations; the outbox counts a delivery as sent on an AA
//! acknowledgement only. Inbound, an MLLP [`listener`] takes ORM^O01 / OMI^O23 [`orders`]:
//! a STAT order raises the urgency floor of its study's results.

pub mod listener;
pub mod message;
pub mod mllp;
pub mod orders;
pub mod settings;

pub use message::{Ack, Envelope, OrderFacts};
pub use settings::Hl7Settings;
