//! Rewrites an explicit VR little endian data set holding undefined-length UN elements so
//! that dicom-rs reads it as the standard means it.
//!
//! PS3.5 6.2.2: the value of an undefined-length UN element is a sequence whose items are
//! encoded in implicit VR little endian. dicom-rs takes such an element for a sequence but reads
//! its items as explicit VR, which fails or misreads them. The rewrite makes each one an
//! undefined-length SQ and re-encodes its items in explicit VR (the dictionary's VR, UN where
//! it has none). Headers grow in the process, so every sequence and item of the data set gets
//! an undefined length and delimiters; values are copied unchanged. Run it only on a data set
//! the [`Scanner`](super::Scanner) accepted.

use dicom_core::{Tag, VR};

use super::scan::{dictionary_vr, has_long_length, tag_name, DataSetError, Problem};

const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const UNDEFINED: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sequence,
    Item,
    Fragments,
}

struct Frame {
    kind: Kind,
    end: Option<usize>,
    implicit: bool,
}

fn put_tag(out: &mut Vec<u8>, tag: Tag) {
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
}

fn put_delimiter(out: &mut Vec<u8>, tag: Tag, len: u32) {
    put_tag(out, tag);
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_header(out: &mut Vec<u8>, tag: Tag, vr: VR, len: u32) {
    put_tag(out, tag);
    let (vr, short) = if !has_long_length(vr) && len <= 0xFFFF {
        (vr, true)
    } else if !has_long_length(vr) {
        (VR::UN, false)
    } else {
        (vr, false)
    };
    out.extend_from_slice(&vr.to_bytes());
    if short {
        out.extend_from_slice(&(len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    }
}

/// The rewritten data set; with `until_pixel_data`, it ends before the top-level Pixel Data.
pub fn un_sequences(data: &[u8], until_pixel_data: bool) -> Result<Vec<u8>, DataSetError> {
    let fail = |at: usize, message: String| DataSetError {
        problem: Problem::Structure,
        offset: at as u64,
        message,
    };
    let u16_at = |at: usize| u16::from_le_bytes([data[at], data[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    let mut out = Vec::with_capacity(data.len() + data.len() / 8);
    let mut stack: Vec<Frame> = Vec::new();
    let mut pos = 0usize;
    loop {
        while let Some(f) = stack.last() {
            if f.end != Some(pos) {
                break;
            }
            let f = stack.pop().expect("checked");
            match f.kind {
                Kind::Sequence => put_delimiter(&mut out, SEQUENCE_END, 0),
                Kind::Item => put_delimiter(&mut out, ITEM_END, 0),
                Kind::Fragments => {}
            }
        }
        if pos == data.len() {
            break;
        }
        if pos + 8 > data.len() {
            return Err(fail(
                pos,
                "the data set ends inside an element header".into(),
            ));
        }
        let tag = Tag(u16_at(pos), u16_at(pos + 2));
        let implicit = stack.last().is_some_and(|f| f.implicit);
        let (vr, len, header) = if tag.0 == 0xFFFE || implicit {
            let vr = (tag.0 != 0xFFFE).then(|| dictionary_vr(tag));
            (vr, u32_at(pos + 4), 8)
        } else {
            let vr = VR::from_binary([data[pos + 4], data[pos + 5]]).unwrap_or(VR::UN);
            if !has_long_length(vr) {
                (Some(vr), u32::from(u16_at(pos + 6)), 8)
            } else {
                if pos + 12 > data.len() {
                    return Err(fail(
                        pos,
                        "the data set ends inside an element header".into(),
                    ));
                }
                (Some(vr), u32_at(pos + 8), 12)
            }
        };
        let value = pos + header;
        let end = (len != UNDEFINED).then(|| value + len as usize);
        if end.is_some_and(|e| e > data.len()) {
            return Err(fail(
                pos,
                format!("{} runs past the data set", tag_name(tag)),
            ));
        }
        let kind = stack.last().map(|f| f.kind);
        pos = value;
        match (kind, tag) {
            (Some(Kind::Fragments), ITEM) => {
                put_delimiter(&mut out, ITEM, len);
                out.extend_from_slice(&data[value..end.unwrap_or(value)]);
                pos = end.unwrap_or(value);
            }
            (Some(Kind::Fragments), SEQUENCE_END) => {
                put_delimiter(&mut out, SEQUENCE_END, 0);
                stack.pop();
            }
            (Some(Kind::Sequence), ITEM) => {
                put_delimiter(&mut out, ITEM, UNDEFINED);
                stack.push(Frame {
                    kind: Kind::Item,
                    end,
                    implicit,
                });
            }
            (Some(Kind::Sequence), SEQUENCE_END) | (Some(Kind::Item), ITEM_END) => {
                // A delimiter closes its frame, early where the frame's length is defined.
                stack.pop();
                put_delimiter(&mut out, tag, 0);
            }
            (None, ITEM_END) => pos = end.unwrap_or(value),
            (_, Tag(0xFFFE, _)) | (Some(Kind::Sequence) | Some(Kind::Fragments), _) => {
                return Err(fail(pos, format!("{} is out of place", tag_name(tag))));
            }
            _ => {
                if stack.is_empty() && until_pixel_data && tag >= PIXEL_DATA {
                    break;
                }
                let vr = vr.unwrap_or(VR::UN);
                if tag == PIXEL_DATA && len == UNDEFINED {
                    put_header(&mut out, tag, vr, UNDEFINED);
                    stack.push(Frame {
                        kind: Kind::Fragments,
                        end: None,
                        implicit: false,
                    });
                } else if vr == VR::SQ || len == UNDEFINED {
                    put_header(&mut out, tag, VR::SQ, UNDEFINED);
                    stack.push(Frame {
                        kind: Kind::Sequence,
                        end,
                        implicit: implicit || (vr == VR::UN && len == UNDEFINED),
                    });
                } else {
                    let end = end.expect("defined");
                    put_header(&mut out, tag, vr, len);
                    out.extend_from_slice(&data[value..end]);
                    pos = end;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dicom_dictionary_std::tags;

    /// A data set with a private undefined-length UN sequence whose item is implicit VR, as
    /// PS3.5 6.2.2 says, then a Modality after it.
    pub(crate) fn with_un_sequence() -> Vec<u8> {
        let mut d = Vec::new();
        put_header(&mut d, tags::SOP_INSTANCE_UID, VR::UI, 4);
        d.extend_from_slice(b"1.23");
        put_tag(&mut d, Tag(0x0009, 0x0010));
        d.extend_from_slice(b"LO");
        d.extend_from_slice(&4u16.to_le_bytes());
        d.extend_from_slice(b"ACME");
        // (0009,1001) UN, undefined length: one item with (0008,0060) CS in implicit VR.
        put_tag(&mut d, Tag(0x0009, 0x1001));
        d.extend_from_slice(b"UN\0\0");
        d.extend_from_slice(&UNDEFINED.to_le_bytes());
        put_delimiter(&mut d, ITEM, 10);
        put_tag(&mut d, tags::MODALITY);
        d.extend_from_slice(&2u32.to_le_bytes());
        d.extend_from_slice(b"MR");
        put_delimiter(&mut d, SEQUENCE_END, 0);
        put_header(&mut d, tags::MODALITY, VR::CS, 2);
        d.extend_from_slice(b"CT");
        d
    }

    #[test]
    fn an_undefined_length_un_sequence_reads_as_the_standard_means_it() {
        let d = with_un_sequence();
        let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
        let fixed = un_sequences(&d, false).unwrap();
        let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(&fixed[..], &ts).unwrap();
        assert_eq!(obj.element(tags::MODALITY).unwrap().to_str().unwrap(), "CT");
        let seq = obj.element(Tag(0x0009, 0x1001)).unwrap();
        let items = seq.items().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].element(tags::MODALITY).unwrap().to_str().unwrap(),
            "MR"
        );
    }
}
