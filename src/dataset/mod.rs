//! Reading DICOM data sets from peers and files safely: the one gate every path that parses
//! DICOM goes through (C-STORE, STOW-RS, upload APIs, server paths, the command line).
//!
//! - [`scan`]: a streaming structural check, fed while the bytes arrive, so an instance is
//!   acknowledged only when whole, and nothing reaches the parser of dicom-rs that would make it
//!   recurse past [`Limits::max_depth`] or size a buffer beyond the bytes present;
//! - [`meta`]: a lenient reader of the file meta group (odd lengths, a missing transfer syntax);
//! - [`normalize`]: the rewrite of undefined-length UN sequences (PS3.5 6.2.2);
//! - this module: [`open_file`], which puts the three in front of dicom-rs.
//!
//! It sits below every other module: it knows DICOM encoding and nothing of the node.

pub mod meta;
pub mod normalize;
pub mod scan;
pub mod storage_classes;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

pub use meta::MetaInfo;
pub use scan::{DataSetError, Encoding, Limits, Problem, Scanner, Summary};

/// How much of a file a reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything before the top-level Pixel Data.
    Header,
    /// The whole data set.
    Whole,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    DataSet(#[from] DataSetError),
    #[error("transfer syntax {0} is not supported")]
    TransferSyntax(String),
    #[error("the data set cannot be parsed: {0}")]
    Parse(String),
}

impl ReadError {
    /// True when the file itself is at fault (not the disk).
    pub fn is_invalid(&self) -> bool {
        !matches!(self, ReadError::Io { .. })
    }
}

const CHUNK: usize = 256 << 10;

/// A file checked and ready for dicom-rs: its meta, what the scan saw, and the file open.
struct Checked {
    info: MetaInfo,
    summary: Summary,
    file: std::fs::File,
}

/// Reads a file's meta group leniently; gives the file positioned somewhere after it, and the
/// bytes read so far.
fn read_head(path: &Path) -> Result<(MetaInfo, std::fs::File, Vec<u8>), ReadError> {
    let io = |source| ReadError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut head = Vec::new();
    let info = loop {
        let before = head.len();
        (&mut file)
            .take(16 << 10)
            .read_to_end(&mut head)
            .map_err(io)?;
        match meta::read(&head)? {
            Some(info) => break info,
            None if head.len() == before => {
                return Err(DataSetError {
                    problem: Problem::Structure,
                    offset: head.len() as u64,
                    message: "the file ends inside its meta group".into(),
                }
                .into())
            }
            None => continue,
        }
    };
    Ok((info, file, head))
}

/// The file meta of a Part 10 file, read leniently (see [`meta`]).
pub fn read_meta(path: &Path) -> Result<MetaInfo, ReadError> {
    read_head(path).map(|(info, _, _)| info)
}

fn check(path: &Path, part: Part) -> Result<Checked, ReadError> {
    let io = |source| ReadError::Io {
        path: path.display().to_string(),
        source,
    };
    let (info, mut file, head) = read_head(path)?;
    let ts = info.transfer_syntax.clone().unwrap_or_default();
    let mut scanner = Scanner::for_transfer_syntax(&ts, Limits::DEFAULT)
        .ok_or_else(|| ReadError::TransferSyntax(ts.clone()))?;
    if part == Part::Header {
        scanner = scanner.header_only();
    }
    scanner.feed(&head[info.data_set_offset.min(head.len())..])?;
    let mut buf = vec![0u8; CHUNK];
    while !scanner.is_done() {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        scanner.feed(&buf[..n])?;
    }
    let summary = scanner.finish()?;
    Ok(Checked {
        info,
        summary,
        file,
    })
}

/// Opens a Part 10 file after checking it: the file meta read leniently and rebuilt, the data
/// set scanned within [`Limits::DEFAULT`], undefined-length UN sequences rewritten.
pub fn open_file(path: &Path, part: Part) -> Result<DefaultDicomObject, ReadError> {
    let Checked {
        info,
        summary,
        mut file,
    } = check(path, part)?;
    let io = |source| ReadError::Io {
        path: path.display().to_string(),
        source,
    };
    let header = info.part10_header()?;
    file.seek(SeekFrom::Start(info.data_set_offset as u64))
        .map_err(io)?;
    let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Always);
    if part == Part::Header {
        options = options.read_until(tags::PIXEL_DATA);
    }
    let parsed = if summary.un_sequences > 0 {
        if Encoding::of(info.transfer_syntax.as_deref().unwrap_or_default())
            != Some(Encoding::EXPLICIT_LE)
        {
            return Err(ReadError::Parse(
                "undefined-length UN sequences are read only in Explicit VR Little Endian".into(),
            ));
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let fixed = normalize::un_sequences(&data, part == Part::Header)?;
        options.from_reader(std::io::Cursor::new(header).chain(&fixed[..]))
    } else {
        options.from_reader(std::io::Cursor::new(header).chain(std::io::BufReader::new(file)))
    };
    let mut obj = parsed.map_err(|e| ReadError::Parse(e.to_string()))?;
    // A meta that lacked the SOP UIDs gets them from the data set, as dicom-rs does.
    let from_data_set = |obj: &DefaultDicomObject, tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    };
    if info.sop_class_uid.is_none() {
        obj.meta_mut().media_storage_sop_class_uid = from_data_set(&obj, tags::SOP_CLASS_UID);
    }
    if info.sop_instance_uid.is_none() {
        obj.meta_mut().media_storage_sop_instance_uid = from_data_set(&obj, tags::SOP_INSTANCE_UID);
    }
    Ok(obj)
}

/// Checks a whole file as ingest checks a data set, without parsing it (`radstream verify`).
pub fn verify_file(path: &Path) -> Result<Summary, ReadError> {
    check(path, Part::Whole).map(|c| c.summary)
}
