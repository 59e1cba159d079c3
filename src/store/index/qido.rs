//! The QIDO-RS search over the index: a typed query (level, the study/series a path names,
//! matching keys already parsed by `dicomweb::qido`) turned into one SELECT.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{Backend, Database, SqlBuilder, LIKE_ESCAPE};

/// The level a QIDO search returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Study,
    Series,
    Instance,
}

/// An attribute the index holds for QIDO: its column, the level it belongs to, and whether
/// it is an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    StudyUid,
    PatientId,
    PatientName,
    PatientBirthDate,
    PatientSex,
    AccessionNumber,
    StudyId,
    StudyDate,
    StudyTime,
    StudyDescription,
    ReferringPhysician,
    Modalities,
    StudySeriesCount,
    StudyInstanceCount,
    SeriesUid,
    Modality,
    SeriesNumber,
    SeriesDescription,
    BodyPart,
    SeriesInstanceCount,
    SopInstanceUid,
    SopClassUid,
    InstanceNumber,
    Rows,
    Columns,
    Frames,
}

use Field::*;

/// Every field, for the SELECT of a level.
const FIELDS: &[Field] = &[
    StudyUid,
    PatientId,
    PatientName,
    PatientBirthDate,
    PatientSex,
    AccessionNumber,
    StudyId,
    StudyDate,
    StudyTime,
    StudyDescription,
    ReferringPhysician,
    Modalities,
    StudySeriesCount,
    StudyInstanceCount,
    SeriesUid,
    Modality,
    SeriesNumber,
    SeriesDescription,
    BodyPart,
    SeriesInstanceCount,
    SopInstanceUid,
    SopClassUid,
    InstanceNumber,
    Rows,
    Columns,
    Frames,
];

impl Field {
    /// The column (`s` studies, `e` series, `i` instances) and the name it is selected as.
    fn column(self) -> (&'static str, &'static str) {
        match self {
            StudyUid => ("s.study_uid", "study_uid"),
            PatientId => ("s.patient_id", "patient_id"),
            PatientName => ("s.patient_name", "patient_name"),
            PatientBirthDate => ("s.patient_birth_date", "patient_birth_date"),
            PatientSex => ("s.patient_sex", "patient_sex"),
            AccessionNumber => ("s.accession_number", "accession_number"),
            StudyId => ("s.study_id", "study_id"),
            StudyDate => ("s.study_date", "study_date"),
            StudyTime => ("s.study_time", "study_time"),
            StudyDescription => ("s.study_description", "study_description"),
            ReferringPhysician => ("s.referring_physician", "referring_physician"),
            Modalities => ("s.modalities", "modalities"),
            StudySeriesCount => ("s.num_series", "study_num_series"),
            StudyInstanceCount => ("s.num_instances", "study_num_instances"),
            SeriesUid => ("e.series_uid", "series_uid"),
            Modality => ("e.modality", "modality"),
            SeriesNumber => ("e.series_number", "series_number"),
            SeriesDescription => ("e.series_description", "series_description"),
            BodyPart => ("e.body_part", "body_part"),
            SeriesInstanceCount => ("e.num_instances", "series_num_instances"),
            SopInstanceUid => ("i.sop_instance_uid", "sop_instance_uid"),
            SopClassUid => ("i.sop_class_uid", "sop_class_uid"),
            InstanceNumber => ("i.instance_number", "instance_number"),
            Rows => ("i.rows_", "rows_"),
            Columns => ("i.columns_", "columns_"),
            Frames => ("i.frames", "frames"),
        }
    }

    /// The level whose table holds the field.
    pub fn level(self) -> Level {
        match self.column().0.as_bytes()[0] {
            b's' => Level::Study,
            b'e' => Level::Series,
            _ => Level::Instance,
        }
    }

    /// Read as an integer (counts, numbers, dimensions); every other field is text.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            StudySeriesCount
                | StudyInstanceCount
                | SeriesNumber
                | SeriesInstanceCount
                | InstanceNumber
                | Rows
                | Columns
                | Frames
        )
    }
}

/// How one matching key matches (PS3.4 C.2.2.2), values already checked by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// One of these values (UID list matching).
    AnyOf(Vec<String>),
    /// A range; an absent bound is open.
    Range {
        from: Option<String>,
        to: Option<String>,
    },
    /// Exactly this value.
    Equals(String),
    /// This integer, compared as text.
    Integer(i64),
    /// A LIKE pattern escaped with [`LIKE_ESCAPE`], optionally ignoring case (PN).
    Like { pattern: String, ignore_case: bool },
    /// This value, ignoring case (PN).
    EqualsIgnoreCase(String),
    /// The study has a series of one of these modalities.
    SeriesModality(Vec<String>),
}

/// A QIDO search: level, the study and series its path names, matching keys, paging.
#[derive(Debug, Clone)]
pub struct QidoQuery {
    pub level: Level,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub filters: Vec<(Field, Match)>,
    pub limit: Option<i64>,
    pub offset: i64,
}

/// One match: the fields of its level and above, and the file of one of its instances.
pub struct QidoRow(AnyRow);

impl QidoRow {
    /// A text field; `None` when NULL.
    pub fn text(&self, field: Field) -> Option<String> {
        self.0
            .try_get::<Option<String>, _>(field.column().1)
            .ok()
            .flatten()
    }

    /// An integer field; `None` when NULL.
    pub fn integer(&self, field: Field) -> Option<i64> {
        self.0
            .try_get::<Option<i64>, _>(field.column().1)
            .ok()
            .flatten()
    }

    /// Path, relative to the data folder, of the instance (or the first of the study or series).
    pub fn file_path(&self) -> Option<String> {
        self.0
            .try_get::<Option<String>, _>("file_path")
            .ok()
            .flatten()
    }
}

fn push_match<'a>(sql: &mut SqlBuilder<'a>, field: Field, m: &'a Match) {
    let col = field.column().0;
    match m {
        Match::AnyOf(values) | Match::SeriesModality(values) => {
            if let Match::SeriesModality(_) = m {
                sql.push(
                    "EXISTS (SELECT 1 FROM series m WHERE m.study_uid = s.study_uid \
                     AND m.modality IN (",
                );
            } else {
                sql.push(format_args!("{col} IN ("));
            }
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push_bind(v.as_str());
            }
            sql.push(if let Match::SeriesModality(_) = m {
                "))"
            } else {
                ")"
            });
        }
        Match::Range { from, to } => {
            let mut first = true;
            for (op, bound) in [(">=", from), ("<=", to)] {
                if let Some(b) = bound {
                    if !first {
                        sql.push_condition();
                    }
                    first = false;
                    sql.push(format_args!("{col} {op} ")).push_bind(b.as_str());
                }
            }
        }
        Match::Equals(v) => {
            sql.push(format_args!("{col} = ")).push_bind(v.as_str());
        }
        Match::Integer(n) => {
            sql.push(format_args!("CAST({col} AS TEXT) = "))
                .push_bind(n.to_string());
        }
        Match::Like {
            pattern,
            ignore_case: true,
        } => {
            sql.push(format_args!("LOWER({col}) LIKE LOWER("))
                .push_bind(pattern.as_str())
                .push(format_args!(") {LIKE_ESCAPE}"));
        }
        Match::Like {
            pattern,
            ignore_case: false,
        } => {
            sql.push(format_args!("{col} LIKE "))
                .push_bind(pattern.as_str())
                .push(format_args!(" {LIKE_ESCAPE}"));
        }
        Match::EqualsIgnoreCase(v) => {
            sql.push(format_args!("LOWER({col}) = LOWER("))
                .push_bind(v.as_str())
                .push(")");
        }
    }
}

/// The SELECT of a QIDO search (see [`search`]).
fn select(q: &QidoQuery, backend: Backend) -> SqlBuilder<'_> {
    let cols: Vec<String> = FIELDS
        .iter()
        .filter(|f| f.level() <= q.level)
        .map(|f| {
            let (col, name) = f.column();
            let ty = if f.is_integer() { "BIGINT" } else { "TEXT" };
            format!("CAST({col} AS {ty}) AS {name}")
        })
        .collect();
    let (from, order, file_col) = match q.level {
        Level::Study => (
            "studies s",
            "s.study_date DESC, s.study_time DESC, s.study_uid",
            "(SELECT f.file_path FROM instances f WHERE f.study_uid = s.study_uid ORDER BY f.sop_instance_uid LIMIT 1)",
        ),
        Level::Series => (
            "series e JOIN studies s ON s.study_uid = e.study_uid",
            "s.study_uid, e.series_number, e.series_uid",
            "(SELECT f.file_path FROM instances f WHERE f.series_uid = e.series_uid ORDER BY f.sop_instance_uid LIMIT 1)",
        ),
        Level::Instance => (
            "instances i JOIN series e ON e.series_uid = i.series_uid JOIN studies s ON s.study_uid = i.study_uid",
            "s.study_uid, e.series_number, e.series_uid, i.instance_number, i.sop_instance_uid",
            "i.file_path",
        ),
    };
    let mut sql = SqlBuilder::new(format!(
        "SELECT {}, {file_col} AS file_path FROM {from}",
        cols.join(", ")
    ));
    if let Some(study) = &q.study_uid {
        sql.push_condition()
            .push("s.study_uid = ")
            .push_bind(study.as_str());
    }
    if let Some(series) = &q.series_uid {
        sql.push_condition()
            .push("e.series_uid = ")
            .push_bind(series.as_str());
    }
    for (field, m) in &q.filters {
        sql.push_condition();
        push_match(&mut sql, *field, m);
    }
    sql.push(format_args!(" ORDER BY {order}"));
    match (q.limit, q.offset > 0, backend) {
        (Some(l), _, _) => {
            sql.push(format_args!(" LIMIT {l}"));
        }
        // An offset alone: SQLite needs a LIMIT before it.
        (None, true, Backend::Sqlite) => {
            sql.push(" LIMIT -1");
        }
        (None, true, Backend::Postgres) => {
            sql.push(" LIMIT ALL");
        }
        (None, false, _) => {}
    }
    if q.offset > 0 {
        sql.push(format_args!(" OFFSET {}", q.offset));
    }
    sql
}

/// Runs a QIDO search.
pub async fn search(db: &Database, q: &QidoQuery) -> Result<Vec<QidoRow>, sqlx::Error> {
    let rows = select(q, db.backend)
        .build()
        .build()
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.into_iter().map(QidoRow).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(filters: Vec<(Field, Match)>) -> QidoQuery {
        QidoQuery {
            level: Level::Study,
            study_uid: None,
            series_uid: None,
            filters,
            limit: None,
            offset: 0,
        }
    }

    #[test]
    fn ranges_and_lists_build_clauses() {
        let q = query(vec![(
            StudyDate,
            Match::Range {
                from: Some("20200101".into()),
                to: None,
            },
        )]);
        let sql = select(&q, Backend::Sqlite);
        assert!(
            sql.sql().contains(" WHERE s.study_date >= $1 ORDER BY"),
            "{}",
            sql.sql()
        );
        let q = query(vec![(
            StudyUid,
            Match::AnyOf(vec!["1.2".into(), "1.3".into()]),
        )]);
        let sql = select(&q, Backend::Sqlite);
        assert!(
            sql.sql()
                .contains(" WHERE s.study_uid IN ($1, $2) ORDER BY"),
            "{}",
            sql.sql()
        );
    }

    #[test]
    fn fields_belong_to_their_level() {
        assert_eq!(StudyUid.level(), Level::Study);
        assert_eq!(SeriesInstanceCount.level(), Level::Series);
        assert_eq!(Frames.level(), Level::Instance);
        let q = query(vec![]);
        let study = select(&q, Backend::Postgres);
        assert!(!study.sql().contains("e.series_uid"));
    }
}
