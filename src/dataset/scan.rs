//! A streaming structural check of a DICOM data set, fed the bytes as they arrive.
//!
//! It walks element headers without keeping values, so it costs one pass over the bytes and a
//! few hundred bytes of memory whatever the data set declares. It answers the questions the
//! parser of dicom-rs does not bound: does the data set end at an element boundary with every
//! sequence closed, does every declared length fit in what encloses it, is the nesting within
//! [`Limits::max_depth`], and does Pixel Data have the size its attributes imply (native) or a
//! fragment structure (encapsulated). A data set it accepts is one dicom-rs reads without
//! recursing deeper than the limit or sizing a buffer beyond the bytes present.
//!
//! The structure is read the way dicom-rs reads it (an undefined-length element other than
//! Pixel Data is a sequence; an implicit-VR element is a sequence where the dictionary says SQ),
//! except for the one case the standard settles otherwise: the items of an undefined-length UN
//! element are implicit VR little endian (PS3.5 6.2.2). Such a data set is flagged
//! ([`Summary::un_sequences`]) so readers rewrite it before parsing ([`super::normalize`]).

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_encoding::transfer_syntax::{Codec, Endianness, TransferSyntaxIndex};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::storage_classes::is_image_storage;

/// Bounds on what a data set may make a reader do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sequences and items nested deeper than this are refused (each level is two frames:
    /// the sequence and its item). Real objects rarely pass 10; the parser's recursion
    /// reaches the stack limit past about a thousand.
    pub max_depth: usize,
    /// A deflated data set may inflate to at most this many bytes.
    pub max_inflated: u64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_depth: 64,
        max_inflated: 1 << 30,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Whether a refusal is about the encoding or about attributes that contradict each other;
/// they map to different DIMSE statuses (C000 and A900).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The bytes do not form a data set (truncated, lengths that do not fit, too deep).
    Structure,
    /// The data set parses but Pixel Data does not agree with its attributes.
    Attributes,
}

/// Why a data set is refused, with the byte offset (from the start of the data set, inflated
/// where the transfer syntax deflates) where the problem shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at byte {offset} of the data set)")]
pub struct DataSetError {
    pub problem: Problem,
    pub offset: u64,
    pub message: String,
}

/// How a data set is encoded, from its transfer syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub explicit: bool,
    pub big_endian: bool,
    pub deflated: bool,
}

impl Encoding {
    pub const IMPLICIT_LE: Encoding = Encoding {
        explicit: false,
        big_endian: false,
        deflated: false,
    };
    pub const EXPLICIT_LE: Encoding = Encoding {
        explicit: true,
        big_endian: false,
        deflated: false,
    };

    /// The encoding of a transfer syntax the registry knows.
    pub fn of(transfer_syntax: &str) -> Option<Encoding> {
        let uid = transfer_syntax.trim_end_matches(['\0', ' ']);
        let ts = TransferSyntaxRegistry.get(uid)?;
        Some(Encoding {
            // The registry keeps this private; Implicit VR Little Endian is the one such syntax.
            explicit: uid != "1.2.840.10008.1.2",
            big_endian: ts.endianness() == Endianness::Big,
            deflated: matches!(ts.codec(), Codec::Dataset(_)),
        })
    }
}

/// What a complete scan saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Bytes of the data set (inflated).
    pub bytes: u64,
    /// Undefined-length UN elements whose items are implicit VR (see the module comment).
    pub un_sequences: u32,
    /// The scan stopped at the top-level Pixel Data (see [`Scanner::header_only`]).
    pub stopped_at_pixel_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Sequence,
    Item,
    Fragments,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: FrameKind,
    tag: Tag,
    /// Where it ends when its length is defined.
    end: Option<u64>,
    /// Its contents are implicit VR little endian (the items of an undefined-length UN).
    implicit: bool,
    started: u64,
}

/// Pixel attributes read at the top level, for the size check.
#[derive(Debug, Default, Clone)]
struct PixelAttrs {
    rows: Option<u64>,
    columns: Option<u64>,
    bits_allocated: Option<u64>,
    samples: Option<u64>,
    frames: Option<u64>,
    photometric: Option<String>,
    sop_class: Option<String>,
    /// Length of a native Pixel Data (or Float/Double Float Pixel Data) element.
    native: Option<(Tag, u64)>,
    /// Items of an encapsulated Pixel Data (the offset table included).
    fragments: Option<u64>,
}

/// A streaming checker; [`feed`](Self::feed) it every byte of the data set in order, then
/// [`finish`](Self::finish) it.
pub struct Scanner {
    enc: Encoding,
    limits: Limits,
    inflater: Option<Box<flate2::Decompress>>,
    /// Inflated bytes on their way to [`consume`](Self::consume), kept between feeds.
    inflated: Vec<u8>,
    pos: u64,
    stack: Vec<Frame>,
    header: [u8; 12],
    header_len: usize,
    /// Value bytes still to pass, and the tag they belong to.
    skip: u64,
    skip_tag: Tag,
    /// Value bytes kept for the pixel attributes.
    capture: Option<(Tag, Vec<u8>)>,
    attrs: PixelAttrs,
    un_sequences: u32,
    header_only: bool,
    done: bool,
    failed: Option<DataSetError>,
}

/// Top-level attributes whose (short) values the scanner keeps.
const CAPTURED: [Tag; 7] = [
    Tag(0x0008, 0x0016),
    Tag(0x0028, 0x0002),
    Tag(0x0028, 0x0004),
    Tag(0x0028, 0x0008),
    Tag(0x0028, 0x0010),
    Tag(0x0028, 0x0011),
    Tag(0x0028, 0x0100),
];
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const FLOAT_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0008);
const DOUBLE_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0009);
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const UNDEFINED: u32 = u32::MAX;

impl Scanner {
    pub fn new(enc: Encoding, limits: Limits) -> Scanner {
        Scanner {
            enc,
            limits,
            inflater: enc
                .deflated
                .then(|| Box::new(flate2::Decompress::new(false))),
            inflated: Vec::new(),
            pos: 0,
            stack: Vec::new(),
            header: [0; 12],
            header_len: 0,
            skip: 0,
            skip_tag: Tag(0, 0),
            capture: None,
            attrs: PixelAttrs::default(),
            un_sequences: 0,
            header_only: false,
            done: false,
            failed: None,
        }
    }

    /// A scanner for a transfer syntax; `None` when the registry does not know it.
    pub fn for_transfer_syntax(ts: &str, limits: Limits) -> Option<Scanner> {
        Encoding::of(ts).map(|enc| Scanner::new(enc, limits))
    }

    /// Stops at the top-level Pixel Data: for readers that parse only the header.
    pub fn header_only(mut self) -> Scanner {
        self.header_only = true;
        self
    }

    /// The first problem seen so far, if any.
    pub fn error(&self) -> Option<&DataSetError> {
        self.failed.as_ref()
    }

    /// True once a header-only scan reached Pixel Data: later bytes are not needed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next bytes of the data set. After a problem it ignores what follows and
    /// keeps returning it.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), DataSetError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.done {
            return Ok(());
        }
        let r = if self.inflater.is_some() {
            self.inflate(data)
        } else {
            self.consume(data)
        };
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// Checks that the data set ended where it may, and that Pixel Data agrees with its
    /// attributes.
    pub fn finish(mut self) -> Result<Summary, DataSetError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let summary = Summary {
            bytes: self.pos,
            un_sequences: self.un_sequences,
            stopped_at_pixel_data: self.done,
        };
        if self.done {
            return Ok(summary);
        }
        if let Some(mut inflater) = self.inflater.take() {
            // The deflate stream must have ended: a cut one may still end at a boundary.
            let before = inflater.total_out();
            let status = inflater.decompress(&[], &mut [0u8; 64], flate2::FlushDecompress::Finish);
            if !matches!(status, Ok(flate2::Status::StreamEnd)) || inflater.total_out() != before {
                return Err(self.fail("the deflated data set ends before its deflate stream does"));
            }
        }
        if self.header_len > 0 {
            return Err(self.fail(format!(
                "the data set ends inside an element header ({} of its bytes arrived)",
                self.header_len
            )));
        }
        if self.skip > 0 {
            return Err(self.fail(format!(
                "the data set ends inside the value of {}: {} more bytes were declared",
                tag_name(self.skip_tag),
                self.skip
            )));
        }
        self.close_ended()?;
        if let Some(open) = self.stack.last() {
            let what = match open.kind {
                FrameKind::Sequence => "sequence",
                FrameKind::Item => "item of the sequence",
                FrameKind::Fragments => "encapsulated Pixel Data",
            };
            let tag = self
                .stack
                .iter()
                .rev()
                .find(|f| f.kind != FrameKind::Item)
                .map_or(open.tag, |f| f.tag);
            return Err(self.fail(format!(
                "the data set ends inside the {what} {} opened at byte {}",
                tag_name(tag),
                open.started
            )));
        }
        if self.pos == 0 {
            return Err(self.fail("the data set is empty"));
        }
        self.check_pixel_data()?;
        Ok(summary)
    }

    fn fail(&self, message: impl Into<String>) -> DataSetError {
        DataSetError {
            problem: Problem::Structure,
            offset: self.pos,
            message: message.into(),
        }
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<(), DataSetError> {
        let mut out = std::mem::take(&mut self.inflated);
        out.resize(64 << 10, 0);
        let r = self.inflate_into(&mut input, &mut out);
        self.inflated = out;
        r
    }

    fn inflate_into(&mut self, input: &mut &[u8], out: &mut [u8]) -> Result<(), DataSetError> {
        loop {
            let inflater = self.inflater.as_mut().expect("deflated");
            let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
            let result = inflater.decompress(input, out, flate2::FlushDecompress::None);
            let status =
                result.map_err(|e| self.fail(format!("the deflated data set is corrupt: {e}")))?;
            let inflater = self.inflater.as_ref().expect("deflated");
            let used = (inflater.total_in() - in_before) as usize;
            let made = (inflater.total_out() - out_before) as usize;
            *input = &input[used..];
            if inflater.total_out() > self.limits.max_inflated {
                return Err(self.fail(format!(
                    "the deflated data set inflates beyond {} bytes",
                    self.limits.max_inflated
                )));
            }
            self.consume(&out[..made])?;
            if self.done {
                return Ok(());
            }
            if status == flate2::Status::StreamEnd {
                // Bytes after the end of the deflate stream are passed over, as pydicom and
                // dicom-rs do (real files carry padding there).
                return Ok(());
            }
            if input.is_empty() && made < out.len() {
                return Ok(());
            }
            if used == 0 && made == 0 {
                return Ok(());
            }
        }
    }

    fn consume(&mut self, mut data: &[u8]) -> Result<(), DataSetError> {
        while !data.is_empty() && !self.done {
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                if let Some((_, kept)) = &mut self.capture {
                    kept.extend_from_slice(&data[..n]);
                }
                self.skip -= n as u64;
                self.pos += n as u64;
                data = &data[n..];
                if self.skip == 0 {
                    self.value_done();
                }
                continue;
            }
            if self.header_len == 0 {
                self.close_ended()?;
            }
            let want = self.header_size();
            let n = (want - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            self.pos += n as u64;
            data = &data[n..];
            if self.header_len < want {
                continue;
            }
            if want < self.header_size() {
                continue;
            }
            let (tag, vr, len) = self.decode_header();
            self.header_len = 0;
            self.on_header(tag, vr, len)?;
        }
        Ok(())
    }

    /// Bytes the header being read needs, given those read so far.
    fn header_size(&self) -> usize {
        if self.header_len < 4 {
            return 4;
        }
        let (group, _) = self.tag_parts();
        if group == 0xFFFE || !self.explicit_here() {
            return 8;
        }
        if self.header_len < 6 {
            return 6;
        }
        match VR::from_binary([self.header[4], self.header[5]]) {
            Some(vr) if !has_long_length(vr) => 8,
            _ => 12,
        }
    }

    fn big_endian_here(&self) -> bool {
        self.enc.big_endian && !self.in_implicit_region()
    }

    fn explicit_here(&self) -> bool {
        self.enc.explicit && !self.in_implicit_region()
    }

    fn in_implicit_region(&self) -> bool {
        self.stack.iter().any(|f| f.implicit)
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = [self.header[at], self.header[at + 1]];
        if self.big_endian_here() {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = [
            self.header[at],
            self.header[at + 1],
            self.header[at + 2],
            self.header[at + 3],
        ];
        if self.big_endian_here() {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn tag_parts(&self) -> (u16, u16) {
        (self.u16_at(0), self.u16_at(2))
    }

    fn decode_header(&self) -> (Tag, Option<VR>, u32) {
        let (group, element) = self.tag_parts();
        let tag = Tag(group, element);
        if group == 0xFFFE || !self.explicit_here() {
            let vr = (group != 0xFFFE).then(|| dictionary_vr(tag));
            return (tag, vr, self.u32_at(4));
        }
        let vr = VR::from_binary([self.header[4], self.header[5]]).unwrap_or(VR::UN);
        let len = if has_long_length(vr) {
            self.u32_at(8)
        } else {
            u32::from(self.u16_at(6))
        };
        (tag, Some(vr), len)
    }

    /// The end of the innermost frame whose length is defined.
    fn bound(&self) -> Option<u64> {
        self.stack.iter().rev().find_map(|f| f.end)
    }

    /// Checks that `len` bytes from here fit in what encloses them.
    fn fits(&self, tag: Tag, len: u32) -> Result<u64, DataSetError> {
        let end = self.pos + u64::from(len);
        match self.bound() {
            Some(bound) if self.pos > bound => Err(self.fail(format!(
                "the header of {} runs past the end of the sequence or item that holds it",
                tag_name(tag)
            ))),
            Some(bound) if end > bound => Err(self.fail(format!(
                "{} declares {len} bytes, but what encloses it ends {} bytes from there",
                tag_name(tag),
                bound - self.pos
            ))),
            _ => Ok(end),
        }
    }

    /// Pops the frames whose defined length ends here.
    fn close_ended(&mut self) -> Result<(), DataSetError> {
        while let Some(end) = self.stack.last().and_then(|f| f.end) {
            if self.pos < end {
                break;
            }
            if self.pos > end {
                return Err(self.fail("an element runs past the end of its sequence or item"));
            }
            self.stack.pop();
        }
        Ok(())
    }

    fn push(
        &mut self,
        kind: FrameKind,
        tag: Tag,
        len: u32,
        implicit: bool,
    ) -> Result<(), DataSetError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.fail(format!(
                "sequences are nested deeper than {} levels (at {})",
                self.limits.max_depth / 2,
                tag_name(tag)
            )));
        }
        let end = if len == UNDEFINED {
            None
        } else {
            Some(self.fits(tag, len)?)
        };
        self.stack.push(Frame {
            kind,
            tag,
            end,
            implicit,
            started: self.pos,
        });
        Ok(())
    }

    fn skip_value(&mut self, tag: Tag, len: u32) -> Result<(), DataSetError> {
        self.fits(tag, len)?;
        if len == 0 {
            return Ok(());
        }
        self.skip = u64::from(len);
        self.skip_tag = tag;
        if self.stack.is_empty() && CAPTURED.contains(&tag) && len <= 64 {
            self.capture = Some((tag, Vec::with_capacity(len as usize)));
        }
        Ok(())
    }

    fn value_done(&mut self) {
        let Some((tag, bytes)) = self.capture.take() else {
            return;
        };
        let us = || -> Option<u64> {
            let b: [u8; 2] = bytes.get(..2)?.try_into().ok()?;
            Some(u64::from(if self.enc.big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }))
        };
        let text = || {
            String::from_utf8_lossy(&bytes)
                .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string()
        };
        let a = &mut self.attrs;
        match tag {
            Tag(0x0008, 0x0016) => a.sop_class = Some(text()),
            Tag(0x0028, 0x0002) => a.samples = us(),
            Tag(0x0028, 0x0004) => a.photometric = Some(text()),
            Tag(0x0028, 0x0008) => a.frames = text().parse().ok(),
            Tag(0x0028, 0x0010) => a.rows = us(),
            Tag(0x0028, 0x0011) => a.columns = us(),
            Tag(0x0028, 0x0100) => a.bits_allocated = us(),
            _ => {}
        }
    }

    fn on_header(&mut self, tag: Tag, vr: Option<VR>, len: u32) -> Result<(), DataSetError> {
        let kind = self.stack.last().map(|f| f.kind);
        match kind {
            Some(FrameKind::Fragments) => return self.on_fragment(tag, len),
            Some(FrameKind::Sequence) => return self.on_sequence_item(tag, len),
            Some(FrameKind::Item) | None => {}
        }
        let top = self.stack.is_empty();
        match tag {
            ITEM_END => {
                if top {
                    // Stray delimiters at the top level are passed over, as dicom-rs does.
                    return self.skip_value(tag, len);
                }
                self.stack.pop();
                return Ok(());
            }
            Tag(0xFFFE, _) => {
                return Err(self.fail(format!(
                    "{} stands where a data element was expected",
                    tag_name(tag)
                )))
            }
            _ => {}
        }
        if top && self.header_only && tag >= PIXEL_DATA {
            self.done = true;
            return Ok(());
        }
        if tag == PIXEL_DATA && len == UNDEFINED {
            if top {
                self.attrs.fragments = Some(0);
            }
            return self.push(FrameKind::Fragments, tag, len, false);
        }
        let vr = vr.unwrap_or(VR::UN);
        if vr == VR::SQ {
            return self.push(FrameKind::Sequence, tag, len, false);
        }
        if len == UNDEFINED {
            // PS3.5 6.2.2: an undefined-length UN holds a sequence in implicit VR little
            // endian; dicom-rs takes any other undefined-length element for a sequence too.
            let implicit = vr == VR::UN && self.explicit_here();
            if implicit {
                if self.enc.big_endian {
                    return Err(self.fail(format!(
                        "{} is an undefined-length UN in a big endian data set",
                        tag_name(tag)
                    )));
                }
                self.un_sequences += 1;
            }
            return self.push(FrameKind::Sequence, tag, len, implicit);
        }
        if top && matches!(tag, PIXEL_DATA | FLOAT_PIXEL_DATA | DOUBLE_PIXEL_DATA) {
            self.attrs.native = Some((tag, u64::from(len)));
        }
        // dicom-rs reads whole values of a binary VR only: a remainder would shift its reading
        // of every later header away from this one's (the dataset_file fuzzer's find).
        if let Some(unit) = value_size(vr).filter(|u| len % u != 0) {
            return Err(self.fail(format!(
                "{} ({vr:?}) has the length {len}, not a multiple of its value size {unit}",
                tag_name(tag)
            )));
        }
        self.skip_value(tag, len)
    }

    fn on_sequence_item(&mut self, tag: Tag, len: u32) -> Result<(), DataSetError> {
        match tag {
            ITEM => self.push(FrameKind::Item, tag, len, false),
            SEQUENCE_END if self.stack.last().is_some_and(|f| f.end.is_none()) => {
                self.stack.pop();
                Ok(())
            }
            _ => Err(self.fail(format!(
                "{} stands where an item of the sequence {} was expected",
                tag_name(tag),
                tag_name(self.stack.last().map_or(tag, |f| f.tag))
            ))),
        }
    }

    fn on_fragment(&mut self, tag: Tag, len: u32) -> Result<(), DataSetError> {
        match tag {
            ITEM if len != UNDEFINED => {
                if self.stack.len() == 1 {
                    if let Some(n) = &mut self.attrs.fragments {
                        *n += 1;
                    }
                }
                self.skip_value(tag, len)
            }
            ITEM => {
                Err(self.fail("a fragment of the encapsulated Pixel Data has an undefined length"))
            }
            SEQUENCE_END => {
                self.stack.pop();
                Ok(())
            }
            _ => Err(self.fail(format!(
                "{} stands where a fragment of the encapsulated Pixel Data was expected",
                tag_name(tag)
            ))),
        }
    }

    fn check_pixel_data(&self) -> Result<(), DataSetError> {
        let a = &self.attrs;
        let attributes = |message: String| DataSetError {
            problem: Problem::Attributes,
            offset: self.pos,
            message,
        };
        if let Some(items) = a.fragments {
            let frames = a.frames.unwrap_or(1).max(1);
            if items < 2 {
                return Err(attributes(
                    "the encapsulated Pixel Data holds no fragment after its offset table".into(),
                ));
            }
            if items - 1 < frames {
                return Err(attributes(format!(
                    "the encapsulated Pixel Data holds {} fragments for {frames} frames",
                    items - 1
                )));
            }
            return Ok(());
        }
        let Some((tag, actual)) = a.native else {
            if let Some(class) = a.sop_class.as_deref().filter(|c| is_image_storage(c)) {
                return Err(attributes(format!(
                    "the data set of image class {class} has no Pixel Data: it ends after \
                     {} bytes, cut short?",
                    self.pos
                )));
            }
            return Ok(());
        };
        let (Some(rows), Some(columns), Some(bits)) = (a.rows, a.columns, a.bits_allocated) else {
            return Ok(());
        };
        if a.photometric
            .as_deref()
            .is_some_and(|p| p.ends_with("_422") || p.ends_with("_420"))
        {
            // Subsampled native YBR: two samples per pixel pair, not worth a special case.
            return Ok(());
        }
        let bits = match tag {
            FLOAT_PIXEL_DATA => 32,
            DOUBLE_PIXEL_DATA => 64,
            _ => bits,
        };
        let samples = a.samples.unwrap_or(1).max(1);
        let frames = a.frames.unwrap_or(1).max(1);
        // Attributes come from the peer: their product must not overflow.
        let expected = [columns, samples, frames, bits]
            .into_iter()
            .fold(rows, u64::saturating_mul)
            .div_ceil(8);
        if actual < expected {
            return Err(attributes(format!(
                "{} holds {actual} bytes, but Rows {rows} x Columns {columns} x SamplesPerPixel \
                 {samples} x NumberOfFrames {frames} x BitsAllocated {bits} imply {expected}",
                tag_name(tag)
            )));
        }
        Ok(())
    }
}

/// The size of one value of a binary VR, whose length must be a multiple of it.
fn value_size(vr: VR) -> Option<u32> {
    match vr {
        VR::US | VR::SS | VR::OW => Some(2),
        VR::UL | VR::SL | VR::FL | VR::AT | VR::OL | VR::OF => Some(4),
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => Some(8),
        _ => None,
    }
}

/// VRs whose explicit-VR header has a 4-byte length (PS3.5 7.1.2); unknown VRs read as UN.
pub(crate) fn has_long_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
    )
}

/// The VR an implicit-VR reader gives a tag: the dictionary's, UN when it does not know.
pub(crate) fn dictionary_vr(tag: Tag) -> VR {
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.vr.relaxed())
        .unwrap_or(VR::UN)
}

/// `(gggg,eeee)` with the keyword where the dictionary has one.
pub fn tag_name(tag: Tag) -> String {
    match StandardDataDictionary.by_tag(tag) {
        Some(e) => format!("({:04X},{:04X}) {}", tag.0, tag.1, e.alias),
        None => format!("({:04X},{:04X})", tag.0, tag.1),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const FIXTURES: [&str; 6] = [
        "dx_normal",
        "cr_cardiomegaly",
        "dx_effusion_rle",
        "ts_implicit",
        "ts_big",
        "ts_deflate",
    ];

    /// A fixture's data set (after its file meta) and transfer syntax.
    pub(crate) fn fixture(name: &str) -> (Vec<u8>, String) {
        let path = format!(
            "{}/fixtures/dicom/{name}/001.dcm",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(path).unwrap();
        let info = crate::dataset::meta::read(&bytes).unwrap().unwrap();
        (
            bytes[info.data_set_offset..].to_vec(),
            info.transfer_syntax.unwrap(),
        )
    }

    /// Scans the first 8 KiB in chunks of `chunk` bytes (headers split everywhere), the rest
    /// in chunks of 64 KiB.
    pub(crate) fn scan_in_chunks(
        data: &[u8],
        ts: &str,
        chunk: usize,
    ) -> Result<Summary, DataSetError> {
        let mut s = Scanner::for_transfer_syntax(ts, Limits::DEFAULT).unwrap();
        let (head, tail) = data.split_at(data.len().min(8 << 10));
        for c in head.chunks(chunk.max(1)).chain(tail.chunks(64 << 10)) {
            if s.feed(c).is_err() {
                break;
            }
        }
        s.finish()
    }

    #[test]
    fn whole_data_sets_pass_in_any_chunking() {
        for name in FIXTURES {
            let (data, ts) = fixture(name);
            for chunk in [1, 7, 4096, data.len()] {
                let summary = scan_in_chunks(&data, &ts, chunk)
                    .unwrap_or_else(|e| panic!("{name} in chunks of {chunk}: {e}"));
                if !name.contains("deflate") {
                    assert_eq!(summary.bytes, data.len() as u64);
                }
            }
        }
    }

    #[test]
    fn every_cut_of_a_data_set_is_refused() {
        for name in FIXTURES {
            let (data, ts) = fixture(name);
            let mut cuts: Vec<usize> = (0..data.len().min(4096)).step_by(3).collect();
            cuts.extend((0..200).map(|i| data.len() * i / 200));
            cuts.extend([
                data.len() - 1,
                data.len() - 2,
                data.len() - 200_000.min(data.len() / 2),
            ]);
            // A cut before the SOP Class UID is whole as far as encoding goes; the store
            // refuses it for the identifying attributes it lacks.
            let class_end = first_cut_with_class(&data, &ts);
            for cut in cuts.into_iter().filter(|c| *c >= class_end) {
                let r = scan_in_chunks(&data[..cut], &ts, 1000);
                assert!(r.is_err(), "{name} cut at {cut} of {} passed", data.len());
            }
        }
    }

    /// The shortest prefix of a data set whose scan has seen its SOP Class UID.
    fn first_cut_with_class(data: &[u8], ts: &str) -> usize {
        let mut s = Scanner::for_transfer_syntax(ts, Limits::DEFAULT).unwrap();
        (1..data.len())
            .find(|cut| {
                s.feed(&data[cut - 1..*cut]).unwrap();
                s.attrs.sop_class.is_some()
            })
            .unwrap()
    }

    /// An explicit VR little endian element with a long length field.
    fn long(out: &mut Vec<u8>, tag: Tag, vr: &[u8; 2], len: u32) {
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    }

    fn delimiter(out: &mut Vec<u8>, tag: Tag, len: u32) {
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }

    /// `levels` sequences of undefined length, each in an item of the one above.
    pub(crate) fn nested(levels: usize) -> Vec<u8> {
        let mut d = Vec::new();
        for _ in 0..levels {
            long(&mut d, Tag(0x0040, 0xA730), b"SQ", UNDEFINED);
            delimiter(&mut d, ITEM, UNDEFINED);
        }
        for _ in 0..levels {
            delimiter(&mut d, ITEM_END, 0);
            delimiter(&mut d, SEQUENCE_END, 0);
        }
        d
    }

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";

    #[test]
    fn nesting_is_bounded() {
        assert!(scan_in_chunks(&nested(20), EXPLICIT, 64).is_ok());
        let e = scan_in_chunks(&nested(1500), EXPLICIT, 64).unwrap_err();
        assert!(e.message.contains("nested deeper than 32"), "{e}");
        assert_eq!(e.problem, Problem::Structure);
    }

    #[test]
    fn lengths_must_fit_in_what_arrived_and_what_encloses_them() {
        // A 4 GB element in a small message: refused at the end, nothing allocated for it.
        let mut d = Vec::new();
        long(&mut d, Tag(0x0009, 0x1010), b"OB", 0xFFFF_FFF0);
        d.extend_from_slice(&[0; 64]);
        let e = scan_in_chunks(&d, EXPLICIT, 1 << 20).unwrap_err();
        assert!(e.message.contains("4294967216 more bytes"), "{e}");
        // An element longer than the defined-length item that holds it.
        let mut d = Vec::new();
        long(&mut d, Tag(0x0040, 0xA730), b"SQ", 24);
        delimiter(&mut d, ITEM, 16);
        long(&mut d, Tag(0x0009, 0x1010), b"OB", 100);
        d.extend_from_slice(&[0; 100]);
        let e = scan_in_chunks(&d, EXPLICIT, 7).unwrap_err();
        assert!(e.message.contains("declares 100 bytes"), "{e}");
    }

    #[test]
    fn a_binary_value_of_a_partial_length_is_refused() {
        // (0000,0000) UL of length 2 in implicit VR: dicom-rs would read the next header two
        // bytes early (found by the dataset_file fuzzer).
        let d = [0, 0, 0, 0, 2, 0, 0, 0, 0, 0];
        let e = scan_in_chunks(&d, "1.2.840.10008.1.2", 3).unwrap_err();
        assert!(
            e.message.contains("not a multiple of its value size 4"),
            "{e}"
        );
    }

    #[test]
    fn a_header_that_runs_past_its_item_is_refused() {
        // An item of 4 bytes holding an 8-byte header (found by the dataset_network fuzzer).
        let mut d = Vec::new();
        long(&mut d, Tag(0x0040, 0xA730), b"SQ", 12);
        delimiter(&mut d, ITEM, 4);
        d.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, b'C', b'S', 0, 0]);
        let e = scan_in_chunks(&d, EXPLICIT, 3).unwrap_err();
        assert!(e.message.contains("runs past the end"), "{e}");
    }

    #[test]
    fn pixel_data_must_have_the_size_its_attributes_imply() {
        let (data, ts) = fixture("dx_normal");
        let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(
            &data[..],
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        let mut short = obj.clone();
        let pixels = obj.element(dicom_dictionary_std::tags::PIXEL_DATA).unwrap();
        let mut bytes = pixels.to_bytes().unwrap().to_vec();
        bytes.truncate(bytes.len() / 2);
        short.put(dicom_core::DataElement::new(
            dicom_dictionary_std::tags::PIXEL_DATA,
            VR::OW,
            dicom_core::PrimitiveValue::from(bytes),
        ));
        let mut out = Vec::new();
        short
            .write_dataset_with_ts(
                &mut out,
                &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            )
            .unwrap();
        let e = scan_in_chunks(&out, &ts, 4096).unwrap_err();
        assert_eq!(e.problem, Problem::Attributes, "{e}");
        assert!(e.message.contains("imply"), "{e}");
    }

    #[test]
    fn encapsulated_pixel_data_needs_its_fragments_and_delimiter() {
        let (data, ts) = fixture("dx_effusion_rle");
        // Find the Pixel Data header and keep only the offset table item, then close it.
        let at = data
            .windows(8)
            .rposition(|w| w[..4] == [0xE0, 0x7F, 0x10, 0x00] && &w[4..6] == b"OB")
            .unwrap();
        let mut d = data[..at + 12].to_vec();
        let bot_len = u32::from_le_bytes(data[at + 16..at + 20].try_into().unwrap()) as usize;
        d.extend_from_slice(&data[at + 12..at + 20 + bot_len]);
        delimiter(&mut d, SEQUENCE_END, 0);
        let e = scan_in_chunks(&d, &ts, 4096).unwrap_err();
        assert!(e.message.contains("no fragment"), "{e}");
        // A data element among the fragments.
        let mut d = data[..at + 20 + bot_len].to_vec();
        long(&mut d, Tag(0x0008, 0x0060), b"UN", 0);
        let e = scan_in_chunks(&d, &ts, 4096).unwrap_err();
        assert!(e.message.contains("fragment"), "{e}");
    }

    #[test]
    fn absurd_pixel_attributes_do_not_overflow() {
        let mut d = Vec::new();
        for (element, value) in [
            (0x0002u16, 0xFFFFu16),
            (0x0010, 0xFFFF),
            (0x0011, 0xFFFF),
            (0x0100, 0xFFFF),
        ] {
            d.extend_from_slice(&0x0028u16.to_le_bytes());
            d.extend_from_slice(&element.to_le_bytes());
            d.extend_from_slice(b"US");
            d.extend_from_slice(&2u16.to_le_bytes());
            d.extend_from_slice(&value.to_le_bytes());
        }
        d.extend_from_slice(&[0x28, 0, 0x08, 0, b'I', b'S', 20, 0]);
        d.extend_from_slice(b"99999999999999999999");
        long(&mut d, PIXEL_DATA, b"OW", 4);
        d.extend_from_slice(&[0; 4]);
        let e = scan_in_chunks(&d, EXPLICIT, 3).unwrap_err();
        assert_eq!(e.problem, Problem::Attributes);
    }

    #[test]
    fn a_header_only_scan_stops_at_pixel_data() {
        let (data, ts) = fixture("cr_cardiomegaly");
        let mut s = Scanner::for_transfer_syntax(&ts, Limits::DEFAULT)
            .unwrap()
            .header_only();
        s.feed(&data[..data.len() / 2]).unwrap();
        assert!(s.is_done());
        assert!(s.finish().unwrap().stopped_at_pixel_data);
    }

    #[test]
    fn a_deflate_bomb_is_cut_at_the_limit() {
        use std::io::Write;
        let mut d = Vec::new();
        long(&mut d, Tag(0x0009, 0x1010), b"OB", 4 << 20);
        d.resize(d.len() + (4 << 20), 0);
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&d).unwrap();
        let z = z.finish().unwrap();
        let limits = Limits {
            max_inflated: 1 << 20,
            ..Limits::DEFAULT
        };
        let mut s = Scanner::for_transfer_syntax("1.2.840.10008.1.2.1.99", limits).unwrap();
        let e = s.feed(&z).unwrap_err();
        assert!(e.message.contains("inflates beyond"), "{e}");
    }

    #[test]
    fn an_undefined_length_un_is_read_as_implicit_vr() {
        let d = crate::dataset::normalize::tests::with_un_sequence();
        let summary = scan_in_chunks(&d, EXPLICIT, 5).unwrap();
        assert_eq!(summary.un_sequences, 1);
    }
}
