//! `pdu`: bytes from a DICOM peer, read PDU after PDU as the C-STORE SCP reads them
//! (`dicom_ul::pdu::read_pdu` with the node's max PDU length, strict), command fragments
//! gathered until the last one and parsed by `ingest::dimse::parse_command`. An input starting
//! with 0xFF (no PDU type) is a command set alone, read as a request (`parse_command`) and as
//! a peer's response to our C-STORE (`parse_status`).

use dicom_ul::pdu::{read_pdu, PDataValueType, Pdu};
use radstream::ingest::dimse::{parse_command, parse_status};
use radstream::ingest::DicomSettings;

pub fn run(data: &[u8]) {
    if let Some((&0xFF, command)) = data.split_first() {
        let _ = parse_command(command);
        let _ = parse_status(command);
        return;
    }
    let max_pdu_length = DicomSettings::default().max_pdu_length;
    let mut buf = data;
    let mut command: Option<Vec<u8>> = None;
    while let Ok(Some(pdu)) = read_pdu(&mut buf, max_pdu_length, true) {
        let Pdu::PData { data } = pdu else { continue };
        for pdv in data {
            if pdv.value_type != PDataValueType::Command {
                command = None;
                continue;
            }
            let bytes = command.get_or_insert_with(Vec::new);
            bytes.extend_from_slice(&pdv.data);
            if pdv.is_last {
                let _ = parse_command(bytes);
                command = None;
            }
        }
    }
}
