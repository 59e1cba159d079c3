//! QIDO-RS (PS3.18 10.6) over the index.
//!
//! Matching (PS3.4 C.2.2.2) on the attributes the index holds: single value (exact, or `*`/`?`
//! wildcards), UID lists (`a,b` or `a\b`), date and time ranges (`a-b`, `-b`, `a-`), empty
//! value = universal. PersonName matches case-insensitively. `limit`/`offset` page; an empty
//! result is 204 (PS3.18 Table 10.6.3-1). `includefield` adds attributes the index lacks,
//! read from a stored file's header; `includefield=all` returns the whole header at instance
//! level. `fuzzymatching` is accepted and ignored (matching is never fuzzy).

use std::collections::BTreeSet;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_core::Tag;
use dicom_dictionary_std::{tags, StandardDataDictionary};
use serde_json::{json, Map, Value};

use super::json::{self as dj, tag_key};
use super::DicomWeb;
use super::{base_url, DICOM_JSON};

/// The answer of a search.
const MATCHES: &str = "Matches as DICOM JSON. Query: attribute keywords or tags as matching \
    keys, `includefield`, `limit`, `offset`, `fuzzymatching`";
use crate::api::error::valid_uid;
use crate::api::ApiError;
use crate::db::push_like_literal;
use crate::store::index::qido::{self as index, Field, Level, Match, QidoQuery, QidoRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Pn,
    Date,
    Time,
    Uid,
    Int,
    /// ModalitiesInStudy: matched against the study's series.
    Modalities,
    /// Computed counts: returned, not matched.
    Count,
}

struct Attr {
    keyword: &'static str,
    tag: Tag,
    vr: &'static str,
    field: Field,
    kind: Kind,
}

const fn a(keyword: &'static str, tag: Tag, vr: &'static str, field: Field, kind: Kind) -> Attr {
    Attr {
        keyword,
        tag,
        vr,
        field,
        kind,
    }
}

use Kind::*;
use Level::*;

/// The attributes the index answers, and the field holding each.
const ATTRS: &[Attr] = &[
    a(
        "StudyInstanceUID",
        tags::STUDY_INSTANCE_UID,
        "UI",
        Field::StudyUid,
        Uid,
    ),
    a("PatientID", tags::PATIENT_ID, "LO", Field::PatientId, Text),
    a(
        "PatientName",
        tags::PATIENT_NAME,
        "PN",
        Field::PatientName,
        Pn,
    ),
    a(
        "PatientBirthDate",
        tags::PATIENT_BIRTH_DATE,
        "DA",
        Field::PatientBirthDate,
        Date,
    ),
    a(
        "PatientSex",
        tags::PATIENT_SEX,
        "CS",
        Field::PatientSex,
        Text,
    ),
    a(
        "AccessionNumber",
        tags::ACCESSION_NUMBER,
        "SH",
        Field::AccessionNumber,
        Text,
    ),
    a("StudyID", tags::STUDY_ID, "SH", Field::StudyId, Text),
    a("StudyDate", tags::STUDY_DATE, "DA", Field::StudyDate, Date),
    a("StudyTime", tags::STUDY_TIME, "TM", Field::StudyTime, Time),
    a(
        "StudyDescription",
        tags::STUDY_DESCRIPTION,
        "LO",
        Field::StudyDescription,
        Text,
    ),
    a(
        "ReferringPhysicianName",
        tags::REFERRING_PHYSICIAN_NAME,
        "PN",
        Field::ReferringPhysician,
        Pn,
    ),
    a(
        "ModalitiesInStudy",
        tags::MODALITIES_IN_STUDY,
        "CS",
        Field::Modalities,
        Modalities,
    ),
    a(
        "NumberOfStudyRelatedSeries",
        tags::NUMBER_OF_STUDY_RELATED_SERIES,
        "IS",
        Field::StudySeriesCount,
        Count,
    ),
    a(
        "NumberOfStudyRelatedInstances",
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        "IS",
        Field::StudyInstanceCount,
        Count,
    ),
    a(
        "SeriesInstanceUID",
        tags::SERIES_INSTANCE_UID,
        "UI",
        Field::SeriesUid,
        Uid,
    ),
    a("Modality", tags::MODALITY, "CS", Field::Modality, Text),
    a(
        "SeriesNumber",
        tags::SERIES_NUMBER,
        "IS",
        Field::SeriesNumber,
        Int,
    ),
    a(
        "SeriesDescription",
        tags::SERIES_DESCRIPTION,
        "LO",
        Field::SeriesDescription,
        Text,
    ),
    a(
        "BodyPartExamined",
        tags::BODY_PART_EXAMINED,
        "CS",
        Field::BodyPart,
        Text,
    ),
    a(
        "NumberOfSeriesRelatedInstances",
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        "IS",
        Field::SeriesInstanceCount,
        Count,
    ),
    a(
        "SOPInstanceUID",
        tags::SOP_INSTANCE_UID,
        "UI",
        Field::SopInstanceUid,
        Uid,
    ),
    a(
        "SOPClassUID",
        tags::SOP_CLASS_UID,
        "UI",
        Field::SopClassUid,
        Uid,
    ),
    a(
        "InstanceNumber",
        tags::INSTANCE_NUMBER,
        "IS",
        Field::InstanceNumber,
        Int,
    ),
    a("Rows", tags::ROWS, "US", Field::Rows, Int),
    a("Columns", tags::COLUMNS, "US", Field::Columns, Int),
    a(
        "NumberOfFrames",
        tags::NUMBER_OF_FRAMES,
        "IS",
        Field::Frames,
        Int,
    ),
];

fn attr_by_tag(tag: Tag) -> Option<&'static Attr> {
    ATTRS.iter().find(|a| a.tag == tag)
}

/// A keyword or `GGGGEEEE` to a tag; the error names the parameter.
fn parse_tag(field: &str, raw: &str) -> Result<Tag, ApiError> {
    if raw.len() == 8 && raw.chars().all(|c| c.is_ascii_hexdigit()) {
        let g = u16::from_str_radix(&raw[..4], 16).unwrap_or_default();
        let e = u16::from_str_radix(&raw[4..], 16).unwrap_or_default();
        return Ok(Tag(g, e));
    }
    use dicom_core::dictionary::DataDictionary;
    StandardDataDictionary
        .by_name(raw)
        .map(|e| e.tag.inner())
        .ok_or_else(|| ApiError::invalid(field, format!("'{raw}' is not a DICOM keyword or tag")))
}

/// A parsed QIDO request.
#[derive(Debug, Default)]
struct Query {
    filters: Vec<(Tag, String)>,
    include: BTreeSet<Tag>,
    include_all: bool,
    limit: Option<i64>,
    offset: i64,
}

fn parse_query(raw: Option<&str>, level: Level) -> Result<Query, ApiError> {
    let mut q = Query::default();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        match k.as_str() {
            "limit" => {
                let n: i64 = v.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::invalid("limit", format!("'{v}' is not a non-negative integer"))
                })?;
                q.limit = Some(n);
            }
            "offset" => {
                q.offset = v.parse().ok().filter(|n: &i64| *n >= 0).ok_or_else(|| {
                    ApiError::invalid("offset", format!("'{v}' is not a non-negative integer"))
                })?;
            }
            "fuzzymatching" => {
                if v != "true" && v != "false" {
                    return Err(ApiError::invalid("fuzzymatching", "must be true or false"));
                }
            }
            "includefield" => {
                for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if f == "all" {
                        q.include_all = true;
                    } else {
                        q.include.insert(parse_tag("includefield", f)?);
                    }
                }
            }
            "access_token" => {}
            _ => {
                let tag = parse_tag(&k, &k)?;
                let attr = attr_by_tag(tag).ok_or_else(|| {
                    ApiError::invalid(
                        &k,
                        "matching on this attribute is not supported (the index does not hold it)",
                    )
                })?;
                if attr.field.level() > level {
                    return Err(ApiError::invalid(
                        &k,
                        "is not an attribute of this query level or above",
                    ));
                }
                if attr.kind == Count {
                    return Err(ApiError::invalid(&k, "is computed; it cannot be matched"));
                }
                q.filters.push((tag, v));
            }
        }
    }
    Ok(q)
}

/// `*`/`?` to LIKE's `%`/`_`; every other character matches itself (the pattern of
/// [`Match::Like`], escaped for [`crate::db::LIKE_ESCAPE`]).
fn like_pattern(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            c => push_like_literal(&mut out, c),
        }
    }
    out
}

fn check_range_part(field: &str, kind: Kind, v: &str) -> Result<(), ApiError> {
    let ok = match kind {
        Date => v.len() == 8 && v.chars().all(|c| c.is_ascii_digit()),
        _ => {
            !v.is_empty()
                && v.len() <= 16
                && v.chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == ':')
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!(
                "'{v}' is not a valid {}",
                if kind == Date {
                    "date (YYYYMMDD)"
                } else {
                    "time (HHMMSS.FFFFFF)"
                }
            ),
        ))
    }
}

/// The match of one matching key; `None` for an empty value (universal matching).
fn matching(attr: &Attr, value: &str) -> Result<Option<Match>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    let field = attr.keyword;
    let m = match attr.kind {
        Uid => {
            let list: Vec<&str> = value
                .split([',', '\\'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let mut uids = Vec::new();
            for u in list {
                crate::domain::Uid::parse("uid", u)
                    .map_err(|e| ApiError::invalid(field, e.problem))?;
                uids.push(u.to_string());
            }
            Match::AnyOf(uids)
        }
        Date | Time => {
            let v = if attr.kind == Time {
                value.replace(':', "")
            } else {
                value.to_string()
            };
            if let Some((lo, hi)) = v.split_once('-') {
                let from = if lo.is_empty() {
                    None
                } else {
                    check_range_part(field, attr.kind, lo)?;
                    Some(lo.to_string())
                };
                let to = if hi.is_empty() {
                    None
                } else {
                    check_range_part(field, attr.kind, hi)?;
                    // A time upper bound `1030` includes 10:30:59.
                    Some(if attr.kind == Time {
                        format!("{hi}\u{7f}")
                    } else {
                        hi.to_string()
                    })
                };
                if from.is_none() && to.is_none() {
                    return Err(ApiError::invalid(field, "a range needs at least one bound"));
                }
                Match::Range { from, to }
            } else {
                check_range_part(field, attr.kind, &v)?;
                Match::Equals(v)
            }
        }
        Int => {
            let n: i64 = value
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid(field, format!("'{value}' is not an integer")))?;
            Match::Integer(n)
        }
        Modalities => Match::SeriesModality(
            value
                .split([',', '\\'])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        Text | Pn => {
            let ignore_case = attr.kind == Pn;
            if value.contains(['*', '?']) {
                Match::Like {
                    pattern: like_pattern(value),
                    ignore_case,
                }
            } else if ignore_case {
                Match::EqualsIgnoreCase(value.to_string())
            } else {
                Match::Equals(value.to_string())
            }
        }
        Count => return Ok(None),
    };
    Ok(Some(m))
}

/// The fixed part of a search: level and the study/series the path names.
struct Scope<'a> {
    level: Level,
    study: Option<&'a str>,
    series: Option<&'a str>,
}

async fn search(
    state: &DicomWeb,
    headers: &HeaderMap,
    scope: Scope<'_>,
    raw: Option<&str>,
) -> Result<Response, ApiError> {
    let q = parse_query(raw, scope.level)?;
    let mut filters = Vec::new();
    for (tag, v) in &q.filters {
        let attr = attr_by_tag(*tag).expect("BUG: filter tags were checked against ATTRS");
        if let Some(m) = matching(attr, v)? {
            filters.push((attr.field, m));
        }
    }
    let query = QidoQuery {
        level: scope.level,
        study_uid: scope.study.map(str::to_string),
        series_uid: scope.series.map(str::to_string),
        filters,
        limit: q.limit,
        offset: q.offset,
    };
    let rows = index::search(&state.app.db, &query).await?;
    if rows.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let attrs: Vec<&Attr> = ATTRS
        .iter()
        .filter(|a| a.field.level() <= scope.level)
        .collect();
    let base = base_url(&state.dicomweb, headers);
    let extra: Vec<Tag> = q
        .include
        .iter()
        .copied()
        .filter(|t| attr_by_tag(*t).is_none())
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut m = row_json(row, &attrs);
        let uid = |f: Field| row.text(f).unwrap_or_default();
        let url = match scope.level {
            Study => format!("{base}/studies/{}", uid(Field::StudyUid)),
            Series => format!(
                "{base}/studies/{}/series/{}",
                uid(Field::StudyUid),
                uid(Field::SeriesUid)
            ),
            Instance => format!(
                "{base}/studies/{}/series/{}/instances/{}",
                uid(Field::StudyUid),
                uid(Field::SeriesUid),
                uid(Field::SopInstanceUid)
            ),
        };
        m.insert(
            tag_key(tags::RETRIEVE_URL),
            json!({"vr":"UR","Value":[url]}),
        );
        let file = row.file_path();
        let all = q.include_all && scope.level == Instance;
        if (all || !extra.is_empty()) && file.is_some() {
            let header = super::wado::stored_header(&state.app.files, &file.unwrap_or_default())
                .await
                .ok()
                .map(|obj| dj::dataset(&obj, None));
            if let Some(h) = header {
                for (k, v) in h {
                    let tag = Tag(
                        u16::from_str_radix(&k[..4], 16).unwrap_or_default(),
                        u16::from_str_radix(&k[4..], 16).unwrap_or_default(),
                    );
                    if (all || extra.contains(&tag)) && !m.contains_key(&k) {
                        m.insert(k, v);
                    }
                }
            }
        }
        out.push(Value::Object(m));
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        serde_json::to_vec(&out).unwrap_or_default(),
    )
        .into_response())
}

/// The JSON model of a stored file's header (up to Pixel Data), off the runtime.
fn row_json(row: &QidoRow, attrs: &[&Attr]) -> Map<String, Value> {
    let mut m = Map::new();
    for a in attrs {
        let v = match a.kind {
            Int | Count => dj::integer(a.vr, row.integer(a.field)),
            _ => {
                let t = row.text(a.field).filter(|t| !t.is_empty());
                dj::string(a.vr, t.as_deref())
            }
        };
        m.insert(tag_key(a.tag), v);
    }
    m
}

#[utoipa::path(get, path = "/dicomweb/studies", responses(
    (status = 200, description = MATCHES, body = Vec<Object>, content_type = DICOM_JSON),
    (status = 204, description = "Nothing matches"),
))]
pub async fn studies(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(
        &s,
        &h,
        Scope {
            level: Study,
            study: None,
            series: None,
        },
        q.as_deref(),
    )
    .await
}

#[utoipa::path(get, path = "/dicomweb/series", responses(
    (status = 200, description = MATCHES, body = Vec<Object>, content_type = DICOM_JSON),
    (status = 204, description = "Nothing matches"),
))]
pub async fn all_series(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(
        &s,
        &h,
        Scope {
            level: Series,
            study: None,
            series: None,
        },
        q.as_deref(),
    )
    .await
}

#[utoipa::path(get, path = "/dicomweb/studies/{study}/series", responses(
    (status = 200, description = MATCHES, body = Vec<Object>, content_type = DICOM_JSON),
    (status = 204, description = "Nothing matches"),
))]
pub async fn study_series(
    State(s): State<DicomWeb>,
    Path(study): Path<String>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let study = valid_uid("study", &study)?;
    search(
        &s,
        &h,
        Scope {
            level: Series,
            study: Some(&study),
            series: None,
        },
        q.as_deref(),
    )
    .await
}

#[utoipa::path(get, path = "/dicomweb/instances", responses(
    (status = 200, description = MATCHES, body = Vec<Object>, content_type = DICOM_JSON),
    (status = 204, description = "Nothing matches"),
))]
pub async fn all_instances(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(
        &s,
        &h,
        Scope {
            level: Instance,
            study: None,
            series: None,
        },
        q.as_deref(),
    )
    .await
}

#[utoipa::path(get, path = "/dicomweb/studies/{study}/instances", responses(
    (status = 200, description = MATCHES, body = Vec<Object>, content_type = DICOM_JSON),
    (status = 204, description = "Nothing matches"),
))]
pub async fn study_instances(
    State(s): State<DicomWeb>,
    Path(study): Path<String>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let study = valid_uid("study", &study)?;
    search(
        &s,
        &h,
        Scope {
            level: Instance,
            study: Some(&study),
            series: None,
        },
        q.as_deref(),
    )
    .await
}

#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances", responses(
    (status = 200, description = MATCHES, body = Vec<Object>, content_type = DICOM_JSON),
    (status = 204, description = "Nothing matches"),
))]
pub async fn series_instances(
    State(s): State<DicomWeb>,
    Path((study, series)): Path<(String, String)>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let study = valid_uid("study", &study)?;
    let series = valid_uid("series", &series)?;
    search(
        &s,
        &h,
        Scope {
            level: Instance,
            study: Some(&study),
            series: Some(&series),
        },
        q.as_deref(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_become_escaped_like_patterns() {
        assert_eq!(like_pattern("DOE*"), "DOE%");
        assert_eq!(like_pattern("D?E_1%!"), "D_E!_1!%!!");
    }

    #[test]
    fn matching_keys_are_checked() {
        assert!(parse_query(
            Some("PatientID=1&StudyDate=20200101-20201231&limit=5"),
            Study
        )
        .is_ok());
        assert!(parse_query(Some("00100020=1"), Study).is_ok());
        let e = parse_query(Some("Bogus=1"), Study).unwrap_err();
        assert_eq!(e.details.unwrap()["field"], "Bogus");
        assert!(parse_query(Some("SOPInstanceUID=1.2"), Study).is_err());
        assert!(parse_query(Some("limit=-1"), Study).is_err());
        let q = parse_query(Some("includefield=00081030,all"), Study).unwrap();
        assert!(q.include_all && q.include.contains(&tags::STUDY_DESCRIPTION));
    }

    #[test]
    fn ranges_and_lists_become_matches() {
        let attr = attr_by_tag(tags::STUDY_DATE).unwrap();
        assert_eq!(
            matching(attr, "20200101-").unwrap(),
            Some(Match::Range {
                from: Some("20200101".into()),
                to: None
            })
        );
        assert!(matching(attr, "2020-01-01").is_err());
        assert!(matching(attr, "-").is_err());
        let uid = attr_by_tag(tags::STUDY_INSTANCE_UID).unwrap();
        assert_eq!(
            matching(uid, "1.2,1.3").unwrap(),
            Some(Match::AnyOf(vec!["1.2".into(), "1.3".into()]))
        );
        assert!(matching(uid, "1.2,x").is_err());
        assert_eq!(matching(uid, "").unwrap(), None);
    }
}
