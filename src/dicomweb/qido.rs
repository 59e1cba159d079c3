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
use sqlx::any::AnyRow;
use sqlx::Row;

use super::json::{self as dj, tag_key};
use super::DicomWeb;
use super::{base_url, DICOM_JSON};
use crate::api::error::valid_uid;
use crate::api::ApiError;
use crate::db::{push_like_literal, LIKE_ESCAPE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Study,
    Series,
    Instance,
}

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
    column: &'static str,
    level: Level,
    kind: Kind,
}

const fn a(
    keyword: &'static str,
    tag: Tag,
    vr: &'static str,
    column: &'static str,
    level: Level,
    kind: Kind,
) -> Attr {
    Attr {
        keyword,
        tag,
        vr,
        column,
        level,
        kind,
    }
}

use Kind::*;
use Level::*;

/// The attributes the index answers, and the column holding each.
const ATTRS: &[Attr] = &[
    a(
        "StudyInstanceUID",
        tags::STUDY_INSTANCE_UID,
        "UI",
        "s.study_uid",
        Study,
        Uid,
    ),
    a(
        "PatientID",
        tags::PATIENT_ID,
        "LO",
        "s.patient_id",
        Study,
        Text,
    ),
    a(
        "PatientName",
        tags::PATIENT_NAME,
        "PN",
        "s.patient_name",
        Study,
        Pn,
    ),
    a(
        "PatientBirthDate",
        tags::PATIENT_BIRTH_DATE,
        "DA",
        "s.patient_birth_date",
        Study,
        Date,
    ),
    a(
        "PatientSex",
        tags::PATIENT_SEX,
        "CS",
        "s.patient_sex",
        Study,
        Text,
    ),
    a(
        "AccessionNumber",
        tags::ACCESSION_NUMBER,
        "SH",
        "s.accession_number",
        Study,
        Text,
    ),
    a("StudyID", tags::STUDY_ID, "SH", "s.study_id", Study, Text),
    a(
        "StudyDate",
        tags::STUDY_DATE,
        "DA",
        "s.study_date",
        Study,
        Date,
    ),
    a(
        "StudyTime",
        tags::STUDY_TIME,
        "TM",
        "s.study_time",
        Study,
        Time,
    ),
    a(
        "StudyDescription",
        tags::STUDY_DESCRIPTION,
        "LO",
        "s.study_description",
        Study,
        Text,
    ),
    a(
        "ReferringPhysicianName",
        tags::REFERRING_PHYSICIAN_NAME,
        "PN",
        "s.referring_physician",
        Study,
        Pn,
    ),
    a(
        "ModalitiesInStudy",
        tags::MODALITIES_IN_STUDY,
        "CS",
        "s.modalities",
        Study,
        Modalities,
    ),
    a(
        "NumberOfStudyRelatedSeries",
        tags::NUMBER_OF_STUDY_RELATED_SERIES,
        "IS",
        "s.num_series",
        Study,
        Count,
    ),
    a(
        "NumberOfStudyRelatedInstances",
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        "IS",
        "s.num_instances",
        Study,
        Count,
    ),
    a(
        "SeriesInstanceUID",
        tags::SERIES_INSTANCE_UID,
        "UI",
        "e.series_uid",
        Series,
        Uid,
    ),
    a("Modality", tags::MODALITY, "CS", "e.modality", Series, Text),
    a(
        "SeriesNumber",
        tags::SERIES_NUMBER,
        "IS",
        "e.series_number",
        Series,
        Int,
    ),
    a(
        "SeriesDescription",
        tags::SERIES_DESCRIPTION,
        "LO",
        "e.series_description",
        Series,
        Text,
    ),
    a(
        "BodyPartExamined",
        tags::BODY_PART_EXAMINED,
        "CS",
        "e.body_part",
        Series,
        Text,
    ),
    a(
        "NumberOfSeriesRelatedInstances",
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        "IS",
        "e.num_instances",
        Series,
        Count,
    ),
    a(
        "SOPInstanceUID",
        tags::SOP_INSTANCE_UID,
        "UI",
        "i.sop_instance_uid",
        Instance,
        Uid,
    ),
    a(
        "SOPClassUID",
        tags::SOP_CLASS_UID,
        "UI",
        "i.sop_class_uid",
        Instance,
        Uid,
    ),
    a(
        "InstanceNumber",
        tags::INSTANCE_NUMBER,
        "IS",
        "i.instance_number",
        Instance,
        Int,
    ),
    a("Rows", tags::ROWS, "US", "i.rows_", Instance, Int),
    a("Columns", tags::COLUMNS, "US", "i.columns_", Instance, Int),
    a(
        "NumberOfFrames",
        tags::NUMBER_OF_FRAMES,
        "IS",
        "i.frames",
        Instance,
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
                if attr.level > level {
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

/// `*`/`?` to LIKE's `%`/`_`; every other character matches itself (use with [`LIKE_ESCAPE`]).
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

/// Adds one matching key to the WHERE clause.
fn add_filter(
    attr: &Attr,
    value: &str,
    clauses: &mut Vec<String>,
    binds: &mut Vec<String>,
) -> Result<(), ApiError> {
    if value.is_empty() {
        return Ok(()); // universal matching
    }
    let bind = |v: String, binds: &mut Vec<String>| {
        binds.push(v);
        format!("${}", binds.len())
    };
    let col = attr.column;
    let field = attr.keyword;
    match attr.kind {
        Uid => {
            let list: Vec<&str> = value
                .split([',', '\\'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let mut ps = Vec::new();
            for u in list {
                crate::domain::Uid::parse("uid", u)
                    .map_err(|e| ApiError::invalid(field, e.problem))?;
                ps.push(bind(u.to_string(), binds));
            }
            clauses.push(format!("{col} IN ({})", ps.join(", ")));
        }
        Date | Time => {
            let v = if attr.kind == Time {
                value.replace(':', "")
            } else {
                value.to_string()
            };
            if let Some((lo, hi)) = v.split_once('-') {
                if !lo.is_empty() {
                    check_range_part(field, attr.kind, lo)?;
                    let p = bind(lo.to_string(), binds);
                    clauses.push(format!("{col} >= {p}"));
                }
                if !hi.is_empty() {
                    check_range_part(field, attr.kind, hi)?;
                    // A time upper bound `1030` includes 10:30:59.
                    let hi = if attr.kind == Time {
                        format!("{hi}\u{7f}")
                    } else {
                        hi.to_string()
                    };
                    let p = bind(hi, binds);
                    clauses.push(format!("{col} <= {p}"));
                }
                if lo.is_empty() && hi.is_empty() {
                    return Err(ApiError::invalid(field, "a range needs at least one bound"));
                }
            } else {
                check_range_part(field, attr.kind, &v)?;
                let p = bind(v, binds);
                clauses.push(format!("{col} = {p}"));
            }
        }
        Int => {
            let n: i64 = value
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid(field, format!("'{value}' is not an integer")))?;
            let p = bind(n.to_string(), binds);
            clauses.push(format!("CAST({col} AS TEXT) = {p}"));
        }
        Modalities => {
            let list: Vec<&str> = value.split([',', '\\']).filter(|s| !s.is_empty()).collect();
            let mut ps = Vec::new();
            for m in list {
                ps.push(bind(m.to_string(), binds));
            }
            clauses.push(format!(
                "EXISTS (SELECT 1 FROM series m WHERE m.study_uid = s.study_uid AND m.modality IN ({}))",
                ps.join(", ")
            ));
        }
        Text | Pn => {
            let wild = value.contains(['*', '?']);
            let (op, v) = if wild {
                ("LIKE", like_pattern(value))
            } else {
                ("=", value.to_string())
            };
            let p = bind(v, binds);
            let esc = if wild {
                format!(" {LIKE_ESCAPE}")
            } else {
                String::new()
            };
            if attr.kind == Pn {
                clauses.push(format!("LOWER({col}) {op} LOWER({p}){esc}"));
            } else {
                clauses.push(format!("{col} {op} {p}{esc}"));
            }
        }
        Count => {}
    }
    Ok(())
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
    let mut clauses = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    if let Some(s) = scope.study {
        binds.push(s.to_string());
        clauses.push(format!("s.study_uid = ${}", binds.len()));
    }
    if let Some(s) = scope.series {
        binds.push(s.to_string());
        clauses.push(format!("e.series_uid = ${}", binds.len()));
    }
    for (tag, v) in &q.filters {
        let attr = attr_by_tag(*tag).expect("BUG: filter tags were checked against ATTRS");
        add_filter(attr, v, &mut clauses, &mut binds)?;
    }
    let attrs: Vec<&Attr> = ATTRS.iter().filter(|a| a.level <= scope.level).collect();
    let cols: Vec<String> = attrs
        .iter()
        .map(|a| match a.kind {
            Int | Count => format!("CAST({} AS BIGINT)", a.column),
            _ => format!("CAST({} AS TEXT)", a.column),
        })
        .collect();
    let (from, order, file_col) = match scope.level {
        Study => (
            "studies s",
            "s.study_date DESC, s.study_time DESC, s.study_uid",
            "(SELECT f.file_path FROM instances f WHERE f.study_uid = s.study_uid ORDER BY f.sop_instance_uid LIMIT 1)",
        ),
        Series => (
            "series e JOIN studies s ON s.study_uid = e.study_uid",
            "s.study_uid, e.series_number, e.series_uid",
            "(SELECT f.file_path FROM instances f WHERE f.series_uid = e.series_uid ORDER BY f.sop_instance_uid LIMIT 1)",
        ),
        Instance => (
            "instances i JOIN series e ON e.series_uid = i.series_uid JOIN studies s ON s.study_uid = i.study_uid",
            "s.study_uid, e.series_number, e.series_uid, i.instance_number, i.sop_instance_uid",
            "i.file_path",
        ),
    };
    let where_ = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let limit = q.limit.map(|l| format!(" LIMIT {l}")).unwrap_or_else(|| {
        if q.offset > 0 {
            " LIMIT -1".into()
        } else {
            String::new()
        }
    });
    let limit = if limit == " LIMIT -1" && state.app.db.backend == crate::db::Backend::Postgres {
        " LIMIT ALL".to_string()
    } else {
        limit
    };
    let offset = if q.offset > 0 {
        format!(" OFFSET {}", q.offset)
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {}, {file_col} FROM {from}{where_} ORDER BY {order}{limit}{offset}",
        cols.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query.fetch_all(&state.app.db.pool).await?;
    if rows.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
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
        let url = match scope.level {
            Study => format!("{base}/studies/{}", text(row, 0).unwrap_or_default()),
            Series => format!(
                "{base}/studies/{}/series/{}",
                text(row, 0).unwrap_or_default(),
                text(row, 14).unwrap_or_default()
            ),
            Instance => format!(
                "{base}/studies/{}/series/{}/instances/{}",
                text(row, 0).unwrap_or_default(),
                text(row, 14).unwrap_or_default(),
                text(row, 20).unwrap_or_default()
            ),
        };
        m.insert(
            tag_key(tags::RETRIEVE_URL),
            json!({"vr":"UR","Value":[url]}),
        );
        let file: Option<String> = row.try_get(attrs.len()).ok().flatten();
        let all = q.include_all && scope.level == Instance;
        if (all || !extra.is_empty()) && file.is_some() {
            let path = state
                .app
                .files
                .absolute(std::path::Path::new(&file.unwrap_or_default()));
            let header = read_header(path).await;
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
async fn read_header(path: std::path::PathBuf) -> Option<Map<String, Value>> {
    tokio::task::spawn_blocking(move || {
        crate::dataset::open_file(&path, crate::dataset::Part::Header)
            .ok()
            .map(|obj| dj::dataset(&obj, None))
    })
    .await
    .ok()
    .flatten()
}

fn text(row: &AnyRow, i: usize) -> Option<String> {
    row.try_get::<Option<String>, _>(i).ok().flatten()
}

fn row_json(row: &AnyRow, attrs: &[&Attr]) -> Map<String, Value> {
    let mut m = Map::new();
    for (i, a) in attrs.iter().enumerate() {
        let v = match a.kind {
            Int | Count => dj::integer(a.vr, row.try_get::<Option<i64>, _>(i).ok().flatten()),
            _ => {
                let t = text(row, i).filter(|t| !t.is_empty());
                dj::string(a.vr, t.as_deref())
            }
        };
        m.insert(tag_key(a.tag), v);
    }
    m
}

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
    fn ranges_and_lists_build_clauses() {
        let attr = attr_by_tag(tags::STUDY_DATE).unwrap();
        let (mut c, mut b) = (Vec::new(), Vec::new());
        add_filter(attr, "20200101-", &mut c, &mut b).unwrap();
        assert_eq!(c, vec!["s.study_date >= $1"]);
        assert!(add_filter(attr, "2020-01-01", &mut c, &mut b).is_err());
        let uid = attr_by_tag(tags::STUDY_INSTANCE_UID).unwrap();
        let (mut c, mut b) = (Vec::new(), Vec::new());
        add_filter(uid, "1.2,1.3", &mut c, &mut b).unwrap();
        assert_eq!(c, vec!["s.study_uid IN ($1, $2)"]);
        assert!(add_filter(uid, "1.2,x", &mut c, &mut b).is_err());
    }
}
