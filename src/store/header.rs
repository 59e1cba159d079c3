//! Reads what the index needs from a stored file, stopping before Pixel Data so a
//! gigabyte multi-frame object costs no more than its header.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::domain::{InvalidUid, Uid};

/// The attributes the index keeps for one instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceHeader {
    pub study_uid: Option<Uid>,
    pub series_uid: Option<Uid>,
    pub sop_instance_uid: Option<Uid>,
    pub sop_class_uid: Option<Uid>,
    pub transfer_syntax: String,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    pub patient_age: Option<String>,
    pub accession_number: Option<String>,
    pub study_id: Option<String>,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub study_description: Option<String>,
    pub referring_physician: Option<String>,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub view_position: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub instance_number: Option<i64>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub frames: Option<i64>,
    pub photometric: Option<String>,
}

/// The start of a file, read as a stream whose end is an error rather than the end of input.
struct Prefix<'a>(&'a [u8]);

impl std::io::Read for Prefix<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() && !buf.is_empty() {
            return Err(std::io::Error::other(
                "the bytes held in memory end before Pixel Data",
            ));
        }
        self.0.read(buf)
    }
}

/// Why a data set cannot be indexed.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("data set cannot be parsed: {0}")]
    Unparseable(String),
    #[error("{0}")]
    Uid(#[from] InvalidUid),
    #[error("required attribute {0} is missing")]
    Missing(&'static str),
}

impl InstanceHeader {
    /// Parses a Part 10 file up to (not including) Pixel Data.
    /// The file is checked first ([`crate::dataset::open_file`]): any file, from a peer or
    /// from disk, is read within the parser limits and with a lenient file meta.
    pub fn read(path: &Path) -> Result<InstanceHeader, HeaderError> {
        let obj = crate::dataset::open_file(path, crate::dataset::Part::Header)
            .map_err(|e| HeaderError::Unparseable(e.to_string()))?;
        Self::from_object(&obj)
    }

    /// Parses a whole Part 10 file held in memory, up to (not including) Pixel Data. Only for
    /// bytes the store checked as they arrived.
    pub fn from_part10_bytes(bytes: &[u8]) -> Result<InstanceHeader, HeaderError> {
        Self::from_part10_reader(bytes)
    }

    /// Parses the header from the first bytes of a Part 10 file; an error when they end
    /// before Pixel Data (the caller then reads the file). The parser takes an end of input
    /// at an element boundary for the end of the data set, so the bytes must not simply end.
    pub fn from_part10_prefix(bytes: &[u8]) -> Result<InstanceHeader, HeaderError> {
        Self::from_part10_reader(Prefix(bytes))
    }

    fn from_part10_reader(reader: impl std::io::Read) -> Result<InstanceHeader, HeaderError> {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .read_preamble(dicom_object::file::ReadPreamble::Always)
            .from_reader(reader)
            .map_err(|e| HeaderError::Unparseable(e.to_string()))?;
        Self::from_object(&obj)
    }

    fn from_object(obj: &DefaultDicomObject) -> Result<InstanceHeader, HeaderError> {
        let text = |tag| -> Option<String> {
            obj.get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let int = |tag| -> Option<i64> {
            obj.get(tag)
                .and_then(|e| e.to_str().ok())
                .and_then(|s| s.trim_end_matches(['\0', ' ']).trim().parse::<i64>().ok())
                .or_else(|| obj.get(tag).and_then(|e| e.to_int::<i64>().ok()))
        };
        let uid = |tag, field| -> Result<Option<Uid>, HeaderError> {
            match text(tag) {
                Some(s) => Ok(Some(Uid::parse(field, &s)?)),
                None => Ok(None),
            }
        };
        Ok(InstanceHeader {
            study_uid: uid(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
            series_uid: uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
            sop_instance_uid: uid(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
            sop_class_uid: uid(tags::SOP_CLASS_UID, "SOPClassUID")?,
            transfer_syntax: obj
                .meta()
                .transfer_syntax()
                .trim_end_matches(['\0', ' '])
                .to_string(),
            patient_id: text(tags::PATIENT_ID),
            patient_name: text(tags::PATIENT_NAME),
            patient_birth_date: text(tags::PATIENT_BIRTH_DATE),
            patient_sex: text(tags::PATIENT_SEX),
            patient_age: text(tags::PATIENT_AGE),
            accession_number: text(tags::ACCESSION_NUMBER),
            study_id: text(tags::STUDY_ID),
            study_date: text(tags::STUDY_DATE),
            study_time: text(tags::STUDY_TIME),
            study_description: text(tags::STUDY_DESCRIPTION),
            referring_physician: text(tags::REFERRING_PHYSICIAN_NAME),
            modality: text(tags::MODALITY),
            body_part: text(tags::BODY_PART_EXAMINED),
            view_position: text(tags::VIEW_POSITION),
            series_number: int(tags::SERIES_NUMBER),
            series_description: text(tags::SERIES_DESCRIPTION),
            instance_number: int(tags::INSTANCE_NUMBER),
            rows: int(tags::ROWS),
            columns: int(tags::COLUMNS),
            frames: int(tags::NUMBER_OF_FRAMES),
            photometric: text(tags::PHOTOMETRIC_INTERPRETATION),
        })
    }

    /// The three identifying UIDs, or which one is missing.
    pub fn identity(&self) -> Result<(&Uid, &Uid, &Uid), HeaderError> {
        Ok((
            self.study_uid
                .as_ref()
                .ok_or(HeaderError::Missing("StudyInstanceUID"))?,
            self.series_uid
                .as_ref()
                .ok_or(HeaderError::Missing("SeriesInstanceUID"))?,
            self.sop_instance_uid
                .as_ref()
                .ok_or(HeaderError::Missing("SOPInstanceUID"))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store parses the header from the first chunk it kept in memory and reads the
    /// file only on an error: the start of a file must give the whole header or an error,
    /// never a header with attributes silently missing (as a whole file cut short at an
    /// element boundary does), and a start that reaches Pixel Data must be enough.
    #[test]
    fn the_start_of_a_file_gives_the_whole_header_or_an_error() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dicom");
        for name in [
            "dx_normal",
            "cr_cardiomegaly",
            "ts_implicit",
            "ts_big",
            "ts_deflate",
        ] {
            let bytes = std::fs::read(format!("{dir}/{name}/001.dcm")).unwrap();
            let whole = InstanceHeader::from_part10_bytes(&bytes).unwrap();
            let mut partial = Vec::new();
            let mut first_ok = None;
            for cut in (132..bytes.len().min(8 << 10)).step_by(5) {
                match InstanceHeader::from_part10_prefix(&bytes[..cut]) {
                    Ok(h) if h != whole => partial.push(cut),
                    Ok(_) => {
                        first_ok.get_or_insert(cut);
                    }
                    Err(_) => {}
                }
            }
            assert!(
                partial.is_empty(),
                "{name}: cut at {partial:?} gave a partial header"
            );
            if name != "ts_deflate" {
                assert!(
                    first_ok.is_some(),
                    "{name}: no start of the file was enough"
                );
            }
        }
        // What the guard is for: read as a whole file, some of those cuts parse.
        let bytes = std::fs::read(format!("{dir}/dx_normal/001.dcm")).unwrap();
        let whole = InstanceHeader::from_part10_bytes(&bytes).unwrap();
        assert!((132..2048)
            .any(|cut| InstanceHeader::from_part10_bytes(&bytes[..cut]).is_ok_and(|h| h != whole)));
    }
}
