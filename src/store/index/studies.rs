//! Study rows: lookups, the study search, and the state changes other modules make to a
//! study (completion, its current result, purge).

use sqlx::{Any, Executor, Transaction};

use crate::db::{like_literal, Backend, Database, SqlBuilder, LIKE_ESCAPE};

/// A row of `studies`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StudyRow {
    pub study_uid: String,
    /// Key of the `patients` row.
    pub patient_pk: i64,
    pub patient_id: Option<String>,
    /// DICOM PN.
    pub patient_name: Option<String>,
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    pub patient_age: Option<String>,
    pub accession_number: Option<String>,
    pub study_id: Option<String>,
    /// DICOM DA and TM.
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub study_description: Option<String>,
    pub referring_physician: Option<String>,
    /// Backslash-separated modality codes of every series, the node's own outputs included.
    pub modalities: String,
    pub num_series: i64,
    pub num_instances: i64,
    /// `receiving` or `complete`.
    pub status: String,
    pub version: i64,
    /// Urgency of the current result.
    pub urgency: Option<String>,
    pub result_version: Option<i64>,
    /// Epoch milliseconds.
    pub first_received_at: i64,
    pub last_received_at: i64,
    pub completed_at: Option<i64>,
    /// How the last completion was decided: `release+quiet`, `stable-age` or `mpps`.
    pub completed_by: Option<String>,
    pub result_at: Option<i64>,
    /// When retention removed the received instances.
    pub purged_at: Option<i64>,
}

impl StudyRow {
    /// The modality codes, in the order they arrived.
    pub fn modality_list(&self) -> Vec<&str> {
        self.modalities
            .split('\\')
            .filter(|m| !m.is_empty())
            .collect()
    }
}

const STUDY_COLUMNS: &str = "study_uid, patient_pk, patient_id, patient_name, \
    patient_birth_date, patient_sex, patient_age, accession_number, study_id, study_date, \
    study_time, study_description, referring_physician, modalities, num_series, num_instances, \
    status, version, urgency, result_version, first_received_at, last_received_at, \
    completed_at, completed_by, result_at, purged_at";

/// A study by its UID.
pub async fn find_study<'e, E>(ex: E, study_uid: &str) -> Result<Option<StudyRow>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    sqlx::query_as(&format!(
        "SELECT {STUDY_COLUMNS} FROM studies WHERE study_uid = $1"
    ))
    .bind(study_uid)
    .fetch_optional(ex)
    .await
}

/// What a study search matches; `None` (or an empty list) matches everything.
#[derive(Debug, Clone, Default)]
pub struct StudyFilter {
    /// Exact Patient ID.
    pub patient_id: Option<String>,
    /// Case-insensitive substring of the patient's name.
    pub patient_name: Option<String>,
    /// Study date range, `YYYYMMDD`, inclusive.
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    /// `receiving` or `complete`.
    pub status: Option<String>,
    /// Any of these urgencies.
    pub urgencies: Vec<String>,
    /// A modality code the study contains (any case).
    pub modality: Option<String>,
    /// Most urgent result first (critical, urgent, standard, low, none), then most recently
    /// received; otherwise most recently received first.
    pub urgent_first: bool,
}

impl StudyFilter {
    fn push_where<'a>(&'a self, sql: &mut SqlBuilder<'a>) {
        if let Some(id) = &self.patient_id {
            sql.push_condition()
                .push("patient_id = ")
                .push_bind(id.as_str());
        }
        if let Some(name) = &self.patient_name {
            sql.push_condition()
                .push("LOWER(patient_name) LIKE ")
                .push_bind(format!("%{}%", like_literal(&name.to_lowercase())))
                .push(format_args!(" {LIKE_ESCAPE}"));
        }
        if let Some(from) = &self.date_from {
            sql.push_condition()
                .push("study_date >= ")
                .push_bind(from.as_str());
        }
        if let Some(to) = &self.date_to {
            sql.push_condition()
                .push("study_date <= ")
                .push_bind(to.as_str());
        }
        if let Some(status) = &self.status {
            sql.push_condition()
                .push("status = ")
                .push_bind(status.as_str());
        }
        if !self.urgencies.is_empty() {
            sql.push_condition().push("urgency IN (");
            for (i, u) in self.urgencies.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push_bind(u.as_str());
            }
            sql.push(")");
        }
        if let Some(m) = &self.modality {
            sql.push_condition()
                .push("('|' || REPLACE(modalities, '\\', '|') || '|') LIKE ")
                .push_bind(format!("%|{}|%", m.to_uppercase()));
        }
    }
}

/// How many studies match `filter`.
pub async fn count_studies(db: &Database, filter: &StudyFilter) -> Result<i64, sqlx::Error> {
    let mut sql = SqlBuilder::new("SELECT COUNT(*) FROM studies");
    filter.push_where(&mut sql);
    sql.build().build_query_scalar().fetch_one(&db.pool).await
}

/// The studies matching `filter`, most recently received first (or most urgent first, see
/// [`StudyFilter::urgent_first`]); `limit` rows from `offset`.
pub async fn search_studies(
    db: &Database,
    filter: &StudyFilter,
    limit: i64,
    offset: i64,
) -> Result<Vec<StudyRow>, sqlx::Error> {
    let mut sql = SqlBuilder::new(format!("SELECT {STUDY_COLUMNS} FROM studies"));
    filter.push_where(&mut sql);
    if filter.urgent_first {
        sql.push(
            " ORDER BY CASE urgency WHEN 'critical' THEN 0 WHEN 'urgent' THEN 1 \
             WHEN 'standard' THEN 2 WHEN 'low' THEN 3 ELSE 4 END,",
        );
    } else {
        sql.push(" ORDER BY");
    }
    sql.push(" last_received_at DESC, study_uid LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    sql.build().build_query_as().fetch_all(&db.pool).await
}

/// Studies, optionally only those of one patient and/or one UID, first received first.
pub async fn studies_of_patient(
    db: &Database,
    patient_pk: Option<i64>,
    study_uid: Option<&str>,
) -> Result<Vec<StudyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {STUDY_COLUMNS} FROM studies WHERE ($1 IS NULL OR patient_pk = $1) \
           AND ($2 IS NULL OR study_uid = $2) ORDER BY first_received_at, study_uid"
    ))
    .bind(patient_pk)
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await
}

/// A study waiting for its completion timer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReceivingStudy {
    pub study_uid: String,
    /// Epoch milliseconds.
    pub last_received_at: i64,
}

/// The studies still receiving.
pub async fn receiving_studies(db: &Database) -> Result<Vec<ReceivingStudy>, sqlx::Error> {
    sqlx::query_as("SELECT study_uid, last_received_at FROM studies WHERE status = 'receiving'")
        .fetch_all(&db.pool)
        .await
}

/// The study's row if it is still receiving, read in `tx` and on PostgreSQL locked
/// `FOR UPDATE`, so a node deciding to complete it decides on the row it then updates.
pub async fn lock_receiving(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    study_uid: &str,
) -> Result<Option<ReceivingStudy>, sqlx::Error> {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    sqlx::query_as(&format!(
        "SELECT study_uid, last_received_at FROM studies \
         WHERE study_uid = $1 AND status = 'receiving'{lock}"
    ))
    .bind(study_uid)
    .fetch_optional(&mut **tx)
    .await
}

/// What completing a study read from its row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Completed {
    pub version: i64,
    pub patient_id: Option<String>,
    pub num_instances: i64,
    pub num_series: i64,
    /// Epoch milliseconds.
    pub first_received_at: i64,
}

/// Marks a receiving study complete at `now`, decided by `completed_by`; `None` when it was
/// not receiving.
pub async fn complete_study(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
    now: i64,
    completed_by: &str,
) -> Result<Option<Completed>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE studies SET status = 'complete', completed_at = $2, updated_at = $2, \
         completed_by = $3 WHERE study_uid = $1 AND status = 'receiving' \
         RETURNING version, patient_id, num_instances, num_series, first_received_at",
    )
    .bind(study_uid)
    .bind(now)
    .bind(completed_by)
    .fetch_optional(&mut **tx)
    .await
}

#[derive(sqlx::FromRow)]
struct PresentCount {
    n: i64,
}

/// How many of `sop_instance_uids` are stored in the study, read in `tx` (the completing
/// transaction).
pub async fn count_present(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
    sop_instance_uids: &[String],
) -> Result<usize, sqlx::Error> {
    let mut present = 0;
    for chunk in sop_instance_uids.chunks(500) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT COUNT(*) AS n FROM instances WHERE study_uid = $1 \
             AND sop_instance_uid IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query_as::<_, PresentCount>(&sql).bind(study_uid);
        for uid in chunk {
            q = q.bind(uid);
        }
        present += q.fetch_one(&mut **tx).await?.n as usize;
    }
    Ok(present)
}

/// Records the study's current result version and its urgency.
pub async fn set_current_result(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
    urgency: &str,
    result_version: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE studies SET urgency = $2, result_version = $3, result_at = $4 WHERE study_uid = $1",
    )
    .bind(study_uid)
    .bind(urgency)
    .bind(result_version)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The version of a study whose instances are still there (not purged), read in `tx` so a
/// job inserted next sees the same row: on PostgreSQL it is locked `FOR SHARE`, so a purge
/// committing meanwhile waits or is seen.
pub async fn unpurged_version(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    study_uid: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let lock = match backend {
        Backend::Postgres => " FOR SHARE",
        Backend::Sqlite => "",
    };
    sqlx::query_scalar(&format!(
        "SELECT version FROM studies WHERE study_uid = $1 AND purged_at IS NULL{lock}"
    ))
    .bind(study_uid)
    .fetch_optional(&mut **tx)
    .await
}

/// The study's status, read in `tx` and on PostgreSQL locked `FOR UPDATE` (a purge's check).
pub async fn lock_status(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    study_uid: &str,
) -> Result<Option<String>, sqlx::Error> {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    sqlx::query_scalar(&format!(
        "SELECT status FROM studies WHERE study_uid = $1{lock}"
    ))
    .bind(study_uid)
    .fetch_optional(&mut **tx)
    .await
}

/// A study that retention may purge: complete, not purged, received before a cutoff.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PurgeCandidate {
    pub study_uid: String,
    /// Epoch milliseconds.
    pub last_received_at: i64,
}

/// Up to `limit` complete, unpurged studies last received before `cutoff`, least recently
/// received first, after the key `after` (keyset paging: last received, then UID).
pub async fn purge_candidates(
    db: &Database,
    cutoff: i64,
    after: (i64, &str),
    limit: i64,
) -> Result<Vec<PurgeCandidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT study_uid, last_received_at FROM studies WHERE status = 'complete' \
         AND purged_at IS NULL AND last_received_at < $1 \
         AND (last_received_at > $2 OR (last_received_at = $2 AND study_uid > $3)) \
         ORDER BY last_received_at, study_uid LIMIT $4",
    )
    .bind(cutoff)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}

/// Marks the study's received instances removed at `now`; returns its Patient ID.
pub async fn mark_purged(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE studies SET purged_at = $2, updated_at = $2 \
         WHERE study_uid = $1 RETURNING patient_id",
    )
    .bind(study_uid)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
}

/// Adds `modality` to the study's modalities (the node's own output series).
pub async fn add_modality(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
    modality: &str,
) -> Result<(), sqlx::Error> {
    let modalities: Option<String> =
        sqlx::query_scalar("SELECT modalities FROM studies WHERE study_uid = $1")
            .bind(study_uid)
            .fetch_optional(&mut **tx)
            .await?;
    let modalities = super::merge_modalities(modalities.as_deref().unwrap_or_default(), modality);
    sqlx::query("UPDATE studies SET modalities = $2 WHERE study_uid = $1")
        .bind(study_uid)
        .bind(&modalities)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
