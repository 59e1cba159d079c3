//! Series and instance rows: what a study holds, what the pipeline and the report read, what
//! a retrieve serves, the node's own outputs added to a study, and the removal of received
//! instances (retention).

use sqlx::{Any, Transaction};

use super::{recount_series, recount_study, studies};
use crate::db::{Database, SqlBuilder};

/// `association_id` prefix of the node's own outputs (SR, overlays); the pipeline never
/// analyses them.
pub const DERIVED_PREFIX: &str = "derived:";
/// [`DERIVED_PREFIX`] as a SQL `LIKE` pattern.
const DERIVED_LIKE: &str = "'derived:%'";

/// A row of `series`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SeriesRow {
    pub series_uid: String,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub view_position: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub num_instances: i64,
    /// 1 when the series holds one of the node's own outputs (read as an integer: the two
    /// backends type a boolean expression differently).
    derived: i64,
}

impl SeriesRow {
    /// One of the node's own outputs (SR, overlay), not an acquired series.
    pub fn is_derived(&self) -> bool {
        self.derived != 0
    }
}

/// A row of `instances`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct InstanceRow {
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub study_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub instance_number: Option<i64>,
    #[sqlx(rename = "rows_")]
    pub rows: Option<i64>,
    #[sqlx(rename = "columns_")]
    pub columns: Option<i64>,
    pub frames: Option<i64>,
    pub photometric: Option<String>,
    /// Relative to the data folder.
    pub file_path: String,
    pub file_size: i64,
    /// Epoch milliseconds.
    pub received_at: i64,
    pub calling_ae: String,
    pub association_id: String,
    pub study_version: i64,
}

impl InstanceRow {
    /// One of the node's own outputs (SR, overlay), indexed by [`add_derived`].
    pub fn is_derived(&self) -> bool {
        self.association_id.starts_with(DERIVED_PREFIX)
    }
}

const INSTANCE_ROW_COLUMNS: &str = "sop_instance_uid, series_uid, study_uid, sop_class_uid, \
    transfer_syntax, instance_number, rows_, columns_, frames, photometric, file_path, \
    file_size, received_at, calling_ae, association_id, study_version";

/// The series of a study, by series number.
pub async fn series_of_study(
    db: &Database,
    study_uid: &str,
) -> Result<Vec<SeriesRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT s.series_uid, s.modality, s.body_part, s.view_position, s.series_number, \
           s.series_description, s.num_instances, \
           CAST(CASE WHEN EXISTS (SELECT 1 FROM instances i WHERE i.series_uid = s.series_uid \
             AND i.association_id LIKE {DERIVED_LIKE}) THEN 1 ELSE 0 END AS BIGINT) AS derived \
         FROM series s WHERE s.study_uid = $1 ORDER BY s.series_number, s.series_uid"
    ))
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await
}

/// The instances of a study, by instance number.
pub async fn instances_of_study(
    db: &Database,
    study_uid: &str,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {INSTANCE_ROW_COLUMNS} FROM instances WHERE study_uid = $1 \
         ORDER BY instance_number, sop_instance_uid"
    ))
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await
}

/// The instances of a study, optionally of one series and/or one instance UID, in the order
/// a retrieve serves them (series, instance number).
pub async fn retrievable(
    db: &Database,
    study_uid: &str,
    series_uid: Option<&str>,
    sop_instance_uid: Option<&str>,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    let mut sql = SqlBuilder::new(format!("SELECT {INSTANCE_ROW_COLUMNS} FROM instances"));
    sql.push_condition()
        .push("study_uid = ")
        .push_bind(study_uid);
    if let Some(series) = series_uid {
        sql.push_condition().push("series_uid = ").push_bind(series);
    }
    if let Some(sop) = sop_instance_uid {
        sql.push_condition()
            .push("sop_instance_uid = ")
            .push_bind(sop);
    }
    sql.push(" ORDER BY series_uid, instance_number, sop_instance_uid");
    sql.build().build_query_as().fetch_all(&db.pool).await
}

/// A received (not derived) instance with its series' modality: what a model runs on and a
/// report overlays.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SourceInstance {
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub sop_class_uid: String,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub view_position: Option<String>,
    /// Relative to the data folder.
    pub file_path: String,
    pub calling_ae: String,
}

/// The received instances of a study, by series number, then instance number.
pub async fn source_instances(
    db: &Database,
    study_uid: &str,
) -> Result<Vec<SourceInstance>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT i.sop_instance_uid, i.series_uid, i.sop_class_uid, s.modality, s.body_part, \
           s.view_position, i.file_path, i.calling_ae \
         FROM instances i JOIN series s ON s.series_uid = i.series_uid \
         WHERE i.study_uid = $1 AND i.association_id NOT LIKE {DERIVED_LIKE} \
         ORDER BY s.series_number, i.series_uid, i.instance_number, i.sop_instance_uid"
    ))
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await
}

/// A received instance's file, as a purge removes it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReceivedFile {
    pub sop_instance_uid: String,
    /// Relative to the data folder.
    pub file_path: String,
    pub file_size: i64,
}

/// The files of the received (not derived) instances of a study, by SOP Instance UID.
pub async fn received_files(
    db: &Database,
    study_uid: &str,
) -> Result<Vec<ReceivedFile>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT sop_instance_uid, file_path, file_size FROM instances \
         WHERE study_uid = $1 AND association_id NOT LIKE {DERIVED_LIKE} \
         ORDER BY sop_instance_uid"
    ))
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await
}

/// A page of every indexed file, received and derived, in SOP Instance UID order after
/// `after` (`""` for the first page), at most `limit` (`radstream storage migrate-to-s3`).
pub async fn all_files(
    db: &Database,
    after: &str,
    limit: i64,
) -> Result<Vec<ReceivedFile>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sop_instance_uid, file_path, file_size FROM instances \
         WHERE sop_instance_uid > $1 ORDER BY sop_instance_uid LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}

/// Removes the rows of `files` from the index (those still naming the same file), drops the
/// series left empty and recounts the study. Returns the files whose rows were removed.
pub async fn remove_received<'f>(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
    files: &'f [ReceivedFile],
) -> Result<Vec<&'f ReceivedFile>, sqlx::Error> {
    let mut removed = Vec::with_capacity(files.len());
    for f in files {
        let r = sqlx::query(
            "DELETE FROM instances WHERE sop_instance_uid = $1 AND study_uid = $2 \
             AND file_path = $3",
        )
        .bind(&f.sop_instance_uid)
        .bind(study_uid)
        .bind(&f.file_path)
        .execute(&mut **tx)
        .await?;
        if r.rows_affected() == 1 {
            removed.push(f);
        }
    }
    sqlx::query(
        "DELETE FROM series WHERE study_uid = $1 AND NOT EXISTS \
         (SELECT 1 FROM instances i WHERE i.series_uid = series.series_uid)",
    )
    .bind(study_uid)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE series SET num_instances = \
         (SELECT COUNT(*) FROM instances i WHERE i.series_uid = series.series_uid) \
         WHERE study_uid = $1",
    )
    .bind(study_uid)
    .execute(&mut **tx)
    .await?;
    recount_study(tx, study_uid).await?;
    Ok(removed)
}

/// Of `paths` (relative to the data folder), those an instance row names.
pub async fn indexed_paths(db: &Database, paths: &[String]) -> Result<Vec<String>, sqlx::Error> {
    let mut found = Vec::new();
    // A few hundred parameters a statement: well inside both backends' limits.
    for chunk in paths.chunks(500) {
        let mut sql =
            SqlBuilder::new("SELECT DISTINCT file_path FROM instances WHERE file_path IN (");
        for (i, p) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push_bind(p.as_str());
        }
        sql.push(")");
        let hits: Vec<String> = sql.build().build_query_scalar().fetch_all(&db.pool).await?;
        found.extend(hits);
    }
    Ok(found)
}

/// One of the node's own outputs (SR, overlay), indexed as a new series of its study.
#[derive(Debug, Clone)]
pub struct DerivedInstance<'a> {
    pub study_uid: &'a str,
    pub series_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub sop_class_uid: &'a str,
    pub transfer_syntax: &'a str,
    pub modality: &'a str,
    pub series_number: i64,
    pub series_description: &'a str,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub frames: Option<i64>,
    pub photometric: Option<&'a str>,
    /// Relative to the data folder.
    pub file_path: &'a str,
    pub file_size: i64,
    pub calling_ae: &'a str,
    /// Starts with `derived:`.
    pub association_id: String,
    pub study_version: i64,
    /// Epoch milliseconds.
    pub now: i64,
}

/// Adds an output to the index as a new series of its study, without re-opening the study;
/// ModalitiesInStudy then covers it too (SR, OT).
pub async fn add_derived(
    tx: &mut Transaction<'_, Any>,
    d: &DerivedInstance<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO series (series_uid, study_uid, modality, series_number, series_description, \
           created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (series_uid) DO NOTHING",
    )
    .bind(d.series_uid)
    .bind(d.study_uid)
    .bind(d.modality)
    .bind(d.series_number)
    .bind(d.series_description)
    .bind(d.now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO instances (sop_instance_uid, series_uid, study_uid, sop_class_uid, \
           transfer_syntax, instance_number, rows_, columns_, frames, photometric, file_path, \
           file_size, received_at, calling_ae, association_id, study_version) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (sop_instance_uid) DO NOTHING",
    )
    .bind(d.sop_instance_uid)
    .bind(d.series_uid)
    .bind(d.study_uid)
    .bind(d.sop_class_uid)
    .bind(d.transfer_syntax)
    .bind(d.rows)
    .bind(d.columns)
    .bind(d.frames)
    .bind(d.photometric)
    .bind(d.file_path)
    .bind(d.file_size)
    .bind(d.now)
    .bind(d.calling_ae)
    .bind(&d.association_id)
    .bind(d.study_version)
    .execute(&mut **tx)
    .await?;
    recount_series(tx, d.series_uid).await?;
    recount_study(tx, d.study_uid).await?;
    studies::add_modality(tx, d.study_uid, d.modality).await
}
