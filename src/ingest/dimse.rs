//! DIMSE command sets (PS3.7 §9.3): parsing requests, building responses. Commands are always
//! Implicit VR Little Endian, whatever the presentation context says.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field values we handle.
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
pub const N_SET_RQ: u16 = 0x0120;
pub const N_ACTION_RQ: u16 = 0x0130;
pub const N_CREATE_RQ: u16 = 0x0140;
/// Command Data Set Type meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;

/// DIMSE status codes used by the SCP (PS3.4 Annex B, PS3.7 Annex C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Failure: processing failure (N-SET of a final procedure step, database errors).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Failure: no such SOP instance.
    pub const NO_SUCH_SOP_INSTANCE: u16 = 0x0112;
    /// Failure: no such event type.
    pub const NO_SUCH_EVENT_TYPE: u16 = 0x0113;
}

/// The fields of a request command we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub has_data_set: bool,
    /// Event Type ID (N-EVENT-REPORT) or Action Type ID (N-ACTION).
    pub type_id: Option<u16>,
}

/// Why a command set cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("command set cannot be parsed: {0}")]
    Parse(String),
    #[error("command set lacks {0}")]
    Missing(&'static str),
}

fn uid_text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// A command set is a few hundred bytes; one growing past this is refused, not buffered.
pub const MAX_COMMAND_BYTES: usize = 64 << 10;

/// Reads a command set from a peer. A command set holds only group 0000 elements, each of a
/// defined length that is a whole number of values of its VR (PS3.7 §6.3.1, §E.1; PS3.5
/// §7.1.1); that is checked first, because dicom-rs allocates a declared length before
/// reading it (a 1.5 GB length in a 70-byte command asked for 1.5 GB), follows undefined
/// lengths into nested items, and reads a UL of length 3 or 34 short, taking the next
/// header from inside the value.
fn read_command_set(bytes: &[u8]) -> Result<InMemDicomObject, CommandError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some((head, tail)) = rest.split_first_chunk::<8>() else {
            return Err(CommandError::Parse(
                "the command set ends inside an element header".into(),
            ));
        };
        let group = u16::from_le_bytes([head[0], head[1]]);
        let element = u16::from_le_bytes([head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if group != 0x0000 {
            return Err(CommandError::Parse(format!(
                "element ({group:04X},{element:04X}) outside group 0000"
            )));
        }
        // The size of one value: a length that is not a multiple of it is read short.
        let unit = match StandardDataDictionary
            .by_tag(Tag(group, element))
            .map(|e| e.vr())
        {
            Some(VirtualVr::Exact(VR::UL | VR::SL | VR::FL | VR::AT)) => 4,
            Some(VirtualVr::Exact(VR::FD | VR::SV | VR::UV)) => 8,
            _ => 2,
        };
        if len % unit != 0 {
            return Err(CommandError::Parse(format!(
                "element (0000,{element:04X}) has the length {len}, not a multiple of {unit}"
            )));
        }
        let Some(value) = usize::try_from(len).ok().filter(|&n| n <= tail.len()) else {
            return Err(CommandError::Parse(format!(
                "element (0000,{element:04X}) declares {len} bytes, {} remain",
                tail.len()
            )));
        };
        rest = &tail[value..];
    }
    InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| CommandError::Parse(e.to_string()))
}

/// Parses a complete command set.
pub fn parse_command(bytes: &[u8]) -> Result<Command, CommandError> {
    let obj = read_command_set(bytes)?;
    let u16_of = |tag, name| -> Result<u16, CommandError> {
        obj.get(tag)
            .and_then(|e| e.to_int::<u16>().ok())
            .ok_or(CommandError::Missing(name))
    };
    let field = u16_of(tags::COMMAND_FIELD, "CommandField")?;
    let message_id = u16_of(tags::MESSAGE_ID, "MessageID")?;
    let data_set_type = u16_of(tags::COMMAND_DATA_SET_TYPE, "CommandDataSetType")?;
    // N-SET and N-ACTION name their object as "Requested", the others as "Affected".
    let either = |affected, requested| {
        let a = uid_text(&obj, affected);
        if a.is_empty() {
            uid_text(&obj, requested)
        } else {
            a
        }
    };
    let type_id = [tags::EVENT_TYPE_ID, tags::ACTION_TYPE_ID]
        .into_iter()
        .find_map(|t| obj.get(t).and_then(|e| e.to_int::<u16>().ok()));
    Ok(Command {
        field,
        message_id,
        sop_class_uid: either(tags::AFFECTED_SOP_CLASS_UID, tags::REQUESTED_SOP_CLASS_UID),
        sop_instance_uid: either(
            tags::AFFECTED_SOP_INSTANCE_UID,
            tags::REQUESTED_SOP_INSTANCE_UID,
        ),
        has_data_set: data_set_type != NO_DATA_SET,
        type_id,
    })
}

/// Builds the response to `rq` with `status`, and an Error Comment for failures.
pub fn response(rq: &Command, status: u16, comment: Option<&str>) -> Vec<u8> {
    let mut elems = vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(rq.sop_class_uid.as_str()),
        ),
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(rq.field | 0x8000),
        ),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            PrimitiveValue::from(rq.message_id),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(NO_DATA_SET),
        ),
        DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)),
    ];
    if !rq.sop_instance_uid.is_empty() {
        elems.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(rq.sop_instance_uid.as_str()),
        ));
    }
    if let Some(c) = comment {
        // Error Comment is LO: at most 64 characters, no backslash.
        let c: String = c
            .chars()
            .filter(|ch| *ch != '\\' && !ch.is_control())
            .take(64)
            .collect();
        elems.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(c),
        ));
    }
    encode(InMemDicomObject::command_from_element_iter(elems))
}

/// Builds a request command (for the SCU side).
pub fn request(
    field: u16,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: Option<&str>,
    with_data_set: bool,
) -> Vec<u8> {
    let mut elems = vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class_uid),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(field)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(if with_data_set {
                0x0000u16
            } else {
                NO_DATA_SET
            }),
        ),
    ];
    if field == C_STORE_RQ {
        elems.push(DataElement::new(
            tags::PRIORITY,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
    }
    if let Some(uid) = sop_instance_uid {
        elems.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(uid),
        ));
    }
    encode(InMemDicomObject::command_from_element_iter(elems))
}

/// Builds an N-CREATE, N-SET or N-ACTION request followed by a data set: N-CREATE names its
/// object as "Affected", N-SET and N-ACTION as "Requested"; N-ACTION carries its Action Type
/// ID.
pub fn n_request(
    field: u16,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    action_type_id: Option<u16>,
) -> Vec<u8> {
    let (class_tag, instance_tag) = if field == N_CREATE_RQ {
        (
            tags::AFFECTED_SOP_CLASS_UID,
            tags::AFFECTED_SOP_INSTANCE_UID,
        )
    } else {
        (
            tags::REQUESTED_SOP_CLASS_UID,
            tags::REQUESTED_SOP_INSTANCE_UID,
        )
    };
    let mut elems = vec![
        DataElement::new(class_tag, VR::UI, PrimitiveValue::from(sop_class_uid)),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(field)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(0x0000u16),
        ),
        DataElement::new(instance_tag, VR::UI, PrimitiveValue::from(sop_instance_uid)),
    ];
    if let Some(t) = action_type_id {
        elems.push(DataElement::new(
            tags::ACTION_TYPE_ID,
            VR::US,
            PrimitiveValue::from(t),
        ));
    }
    encode(InMemDicomObject::command_from_element_iter(elems))
}

/// Reads Status (and Error Comment) from a response command set.
pub fn parse_status(bytes: &[u8]) -> Result<(u16, Option<String>), CommandError> {
    let obj = read_command_set(bytes)?;
    let status = obj
        .get(tags::STATUS)
        .and_then(|e| e.to_int::<u16>().ok())
        .ok_or(CommandError::Missing("Status"))?;
    let comment = obj
        .get(tags::ERROR_COMMENT)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string());
    Ok((status, comment))
}

fn encode(obj: InMemDicomObject) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("BUG: writing a command set to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_round_trip() {
        let rq_bytes = request(
            C_STORE_RQ,
            7,
            "1.2.840.10008.5.1.4.1.1.1",
            Some("1.2.3"),
            true,
        );
        let rq = parse_command(&rq_bytes).unwrap();
        assert_eq!(rq.field, C_STORE_RQ);
        assert_eq!(rq.message_id, 7);
        assert_eq!(rq.sop_instance_uid, "1.2.3");
        assert!(rq.has_data_set);
        let action = parse_command(&n_request(
            N_ACTION_RQ,
            3,
            "1.2.840.10008.1.20.1",
            "1.2.840.10008.1.20.1.1",
            Some(1),
        ))
        .unwrap();
        let create = parse_command(&n_request(N_CREATE_RQ, 4, "1.2.3.4", "9.9", None)).unwrap();
        assert_eq!(
            (create.field, create.sop_instance_uid.as_str()),
            (N_CREATE_RQ, "9.9")
        );
        assert_eq!(create.type_id, None);
        assert_eq!(action.field, N_ACTION_RQ);
        assert_eq!(action.sop_instance_uid, "1.2.840.10008.1.20.1.1");
        assert_eq!(action.type_id, Some(1));
        assert!(action.has_data_set);
        let rsp = response(&rq, status::OUT_OF_RESOURCES, Some("disk full\\x"));
        let (st, comment) = parse_status(&rsp).unwrap();
        assert_eq!(st, 0xA700);
        assert_eq!(comment.as_deref(), Some("disk fullx"));
    }

    /// Found by the `pdu` fuzz target: a command element declaring 1.5 GB in a 62-byte command
    /// set made dicom-rs allocate 1.5 GB before reading it.
    #[test]
    fn declared_lengths_past_the_end_and_other_groups_are_refused_before_parsing() {
        let mut huge = request(C_ECHO_RQ, 1, "1.2.840.10008.1.1", None, false);
        huge.extend_from_slice(&[0x00, 0x00, 0x00, 0x08, 0x12, 0x00, 0x00, 0x5b]);
        let e = parse_command(&huge).unwrap_err().to_string();
        assert!(e.contains("declares 1526726674 bytes"), "{e}");
        assert!(parse_status(&huge).is_err());
        // An undefined-length sequence, as nested items would start.
        let nested = [0x08, 0x00, 0x15, 0x11, 0xff, 0xff, 0xff, 0xff];
        let e = parse_command(&nested).unwrap_err().to_string();
        assert!(e.contains("outside group 0000"), "{e}");
        // Found next: group lengths dicom-rs reads short, then a length from inside the value.
        let odd = [0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2, 1, 0, 0, 0, 2];
        let e = parse_command(&odd).unwrap_err().to_string();
        assert!(e.contains("length 3, not a multiple of 4"), "{e}");
        // Then: a group length of 34 (8 UL values and 2 bytes).
        let mut long = vec![0, 0, 0, 0, 34, 0, 0, 0];
        long.extend_from_slice(&[0; 34]);
        let e = parse_command(&long).unwrap_err().to_string();
        assert!(e.contains("length 34, not a multiple of 4"), "{e}");
        let e = parse_command(&[0x00, 0x00, 0x00, 0x01, 0x02])
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside an element header"), "{e}");
    }

    #[test]
    fn garbage_command_is_an_error_not_a_panic() {
        assert!(parse_command(&[0xff, 0x00, 0x13]).is_err());
        assert!(parse_command(&[]).is_err());
    }
}
