//! HL7 v2 results: an ORU^R01 per result version ([`message`]) sent over MLLP ([`mllp`]) to
//! `kind = "hl7"` export destinations; the outbox counts a delivery as sent on an AA
//! acknowledgement only.

pub mod message;
pub mod mllp;

pub use message::{Ack, Envelope, OrderFacts};
