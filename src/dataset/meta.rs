//! A lenient reader of the Part 10 file meta group (PS3.10 7.1).
//!
//! dicom-rs refuses a meta group with an odd-length value (DCMTK writes some: a Source AE
//! Title of odd length) or without a Transfer Syntax UID. DCMTK and pydicom read those files,
//! and so does this reader: it takes each group 0002 element at its declared length, ends the
//! group at the first element of another group, and detects the data set's encoding when the
//! transfer syntax is missing. Readers then hand dicom-rs a meta group rebuilt by
//! [`MetaInfo::part10_header`], never the one in the file.

use dicom_core::VR;

use super::scan::{has_long_length, DataSetError, Encoding, Problem};

/// The meta group may not exceed this (real ones are a few hundred bytes).
pub const MAX_META_BYTES: usize = 64 << 10;

/// The meta attributes readers need, values trimmed of padding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaInfo {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub transfer_syntax: Option<String>,
    pub source_ae: Option<String>,
    /// Where the data set starts in the file.
    pub data_set_offset: usize,
}

/// The transfer syntax a data set in this encoding is read with.
pub fn transfer_syntax_of(enc: Encoding) -> &'static str {
    match (enc.explicit, enc.big_endian) {
        (false, _) => "1.2.840.10008.1.2",
        (true, false) => "1.2.840.10008.1.2.1",
        (true, true) => "1.2.840.10008.1.2.2",
    }
}

fn meta_error(offset: usize, message: impl Into<String>) -> DataSetError {
    DataSetError {
        problem: Problem::Structure,
        offset: offset as u64,
        message: message.into(),
    }
}

/// Reads the meta group from the start of a file: `Ok(None)` when `head` ends before the meta
/// group does (give it more bytes, up to [`MAX_META_BYTES`] past the preamble). A file whose
/// meta lacks a Transfer Syntax UID gets the one detected from the data set's first element.
pub fn read(head: &[u8]) -> Result<Option<MetaInfo>, DataSetError> {
    let start = if head.len() >= 132 && &head[128..132] == b"DICM" {
        132
    } else if head.len() >= 4 && &head[..4] == b"DICM" {
        4
    } else if head.len() < 132 {
        return Ok(None);
    } else {
        return Err(meta_error(
            0,
            "not a DICOM Part 10 file: no DICM prefix after the 128-byte preamble",
        ));
    };
    let mut info = MetaInfo::default();
    let mut at = start;
    loop {
        if at - start > MAX_META_BYTES {
            return Err(meta_error(
                at,
                format!("the file meta group is longer than {MAX_META_BYTES} bytes"),
            ));
        }
        let Some(tag) = head.get(at..at + 4) else {
            return Ok(None);
        };
        let group = u16::from_le_bytes([tag[0], tag[1]]);
        let element = u16::from_le_bytes([tag[2], tag[3]]);
        if group != 0x0002 {
            break;
        }
        let Some(vr_bytes) = head.get(at + 4..at + 6) else {
            return Ok(None);
        };
        // Explicit VR as PS3.10 says; some old writers used implicit VR for the meta too.
        let (header, len) = match VR::from_binary([vr_bytes[0], vr_bytes[1]]) {
            Some(vr) if has_long_length(vr) => match head.get(at + 8..at + 12) {
                Some(l) => (12, u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize),
                None => return Ok(None),
            },
            Some(_) => match head.get(at + 6..at + 8) {
                Some(l) => (8, u16::from_le_bytes([l[0], l[1]]) as usize),
                None => return Ok(None),
            },
            None => match head.get(at + 4..at + 8) {
                Some(l) => (8, u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize),
                None => return Ok(None),
            },
        };
        if len > MAX_META_BYTES {
            return Err(meta_error(
                at,
                format!("file meta element (0002,{element:04X}) declares {len} bytes"),
            ));
        }
        let Some(value) = head.get(at + header..at + header + len) else {
            return Ok(None);
        };
        let text = || {
            let s = String::from_utf8_lossy(value)
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string();
            (!s.is_empty()).then_some(s)
        };
        match element {
            0x0002 => info.sop_class_uid = text(),
            0x0003 => info.sop_instance_uid = text(),
            0x0010 => info.transfer_syntax = text(),
            0x0016 => info.source_ae = text(),
            _ => {}
        }
        at += header + len;
    }
    info.data_set_offset = at;
    if info.transfer_syntax.is_none() {
        let Some(first) = head.get(at..at + 8) else {
            return Ok(None);
        };
        info.transfer_syntax = Some(transfer_syntax_of(detect_encoding(first)).to_string());
    }
    Ok(Some(info))
}

/// The encoding of a data set from its first element header: explicit VR where bytes 4-5 are
/// a VR, big endian where the group reads as a small number only that way round.
pub fn detect_encoding(first: &[u8]) -> Encoding {
    let explicit = VR::from_binary([first[4], first[5]]).is_some();
    let le = u16::from_le_bytes([first[0], first[1]]);
    let be = u16::from_be_bytes([first[0], first[1]]);
    let big_endian = explicit && be < le && be != 0 && be <= 0x00FF;
    Encoding {
        explicit,
        big_endian,
        deflated: false,
    }
}

impl MetaInfo {
    /// A correct preamble and meta group for this file's data set, as the store writes them.
    pub fn part10_header(&self) -> Result<Vec<u8>, DataSetError> {
        let table = dicom_object::meta::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(self.sop_class_uid.as_deref().unwrap_or("1.2"))
            .media_storage_sop_instance_uid(self.sop_instance_uid.as_deref().unwrap_or("1.2"))
            .transfer_syntax(
                self.transfer_syntax
                    .as_deref()
                    .unwrap_or("1.2.840.10008.1.2.1"),
            )
            .implementation_class_uid(crate::IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(crate::IMPLEMENTATION_VERSION_NAME)
            .build()
            .map_err(|e| meta_error(0, format!("cannot rebuild the file meta: {e}")))?;
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        table
            .write(&mut out)
            .map_err(|e| meta_error(0, format!("cannot rebuild the file meta: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One explicit VR little endian meta element, written as given (odd lengths included).
    pub(crate) fn element(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OB" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
    }

    #[test]
    fn odd_length_values_and_a_missing_transfer_syntax_are_read() {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        element(&mut f, 0x0001, b"OB", &[0, 1]);
        element(&mut f, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
        element(&mut f, 0x0003, b"UI", b"1.2.3.4");
        element(&mut f, 0x0016, b"AE", b"CTAWP");
        let offset = f.len();
        // The data set in implicit VR: (0008,0016) UI, length 4.
        f.extend_from_slice(&[0x08, 0, 0x16, 0, 4, 0, 0, 0]);
        f.extend_from_slice(b"1.2\0");
        let info = read(&f).unwrap().unwrap();
        assert_eq!(info.sop_instance_uid.as_deref(), Some("1.2.3.4"));
        assert_eq!(info.source_ae.as_deref(), Some("CTAWP"));
        assert_eq!(info.transfer_syntax.as_deref(), Some("1.2.840.10008.1.2"));
        assert_eq!(info.data_set_offset, offset);
        assert!(read(&f[..offset - 3]).unwrap().is_none());
        let rebuilt = info.part10_header().unwrap();
        let table = dicom_object::meta::FileMetaTable::from_reader(&rebuilt[128..]).unwrap();
        assert_eq!(table.transfer_syntax(), "1.2.840.10008.1.2");
    }

    #[test]
    fn the_encoding_is_detected_from_the_first_element() {
        assert_eq!(
            detect_encoding(&[0x08, 0, 0x05, 0, b'C', b'S', 10, 0]),
            Encoding::EXPLICIT_LE
        );
        assert_eq!(
            detect_encoding(&[0x08, 0, 0x05, 0, 10, 0, 0, 0]),
            Encoding::IMPLICIT_LE
        );
        assert!(detect_encoding(&[0, 0x08, 0, 0x05, b'C', b'S', 0, 10]).big_endian);
    }

    #[test]
    fn a_file_without_the_prefix_is_refused() {
        let e = read(&[0u8; 200]).unwrap_err();
        assert!(e.message.contains("DICM"), "{e}");
    }
}
