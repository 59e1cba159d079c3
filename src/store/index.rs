//! The index half of the store: patients, studies, series and instances rows.
//!
//! Each function takes the caller's transaction; the caller commits. A study row carries its
//! completion state: `receiving` until the study module completes it; an instance arriving
//! for a `complete` study re-opens it with `version + 1`.

use serde_json::json;
use sqlx::{Any, Row, Transaction};

use super::header::InstanceHeader;
use crate::db::{Backend, Database};
use crate::events::{self, EventType};

/// One stored instance, ready to index.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub header: InstanceHeader,
    /// Path relative to the data folder.
    pub file_path: String,
    pub file_size: i64,
    pub calling_ae: String,
    pub association_id: String,
    pub received_at: i64,
}

/// What indexing one instance changed.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexOutcome {
    pub study_uid: String,
    pub study_version: i64,
    /// The instance opened a study (new, or re-opened after completion).
    pub study_opened: bool,
}

/// Where an already indexed instance lives.
pub async fn find_instance(
    db: &Database,
    sop_instance_uid: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT study_uid, file_path FROM instances WHERE sop_instance_uid = $1")
        .bind(sop_instance_uid)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Upserts patient, study, series and instance rows for one stored file.
#[tracing::instrument(skip_all, fields(study_uid, sop_instance_uid))]
pub async fn index_instance(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    rec: &InstanceRecord,
) -> Result<IndexOutcome, sqlx::Error> {
    let h = &rec.header;
    let study_uid = h.study_uid.as_ref().map(|u| u.as_str()).unwrap_or_default();
    let series_uid = h
        .series_uid
        .as_ref()
        .map(|u| u.as_str())
        .unwrap_or_default();
    let sop_uid = h
        .sop_instance_uid
        .as_ref()
        .map(|u| u.as_str())
        .unwrap_or_default();
    tracing::Span::current().record("study_uid", study_uid);
    tracing::Span::current().record("sop_instance_uid", sop_uid);
    let now = rec.received_at;

    let patient_key = match h.patient_id.as_deref() {
        Some(id) => format!("id:{id}"),
        None => format!("study:{study_uid}"),
    };
    let patient_pk: i64 = sqlx::query_scalar(
        "INSERT INTO patients (patient_key, patient_id, patient_name, birth_date, sex, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (patient_key) DO UPDATE SET \
           patient_name = COALESCE(excluded.patient_name, patients.patient_name), \
           birth_date = COALESCE(excluded.birth_date, patients.birth_date), \
           sex = COALESCE(excluded.sex, patients.sex), updated_at = excluded.updated_at \
         RETURNING id",
    )
    .bind(&patient_key)
    .bind(h.patient_id.as_deref())
    .bind(h.patient_name.as_deref())
    .bind(h.patient_birth_date.as_deref())
    .bind(h.patient_sex.as_deref())
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;

    let lock = if backend == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let existing = sqlx::query(&format!(
        "SELECT status, version, modalities FROM studies WHERE study_uid = $1{lock}"
    ))
    .bind(study_uid)
    .fetch_optional(&mut **tx)
    .await?;
    let modality = h.modality.clone().unwrap_or_default();
    let (version, opened) = match existing {
        None => {
            sqlx::query(
                "INSERT INTO studies (study_uid, patient_pk, patient_id, patient_name, \
                   patient_birth_date, patient_sex, patient_age, accession_number, study_id, \
                   study_date, study_time, study_description, referring_physician, modalities, \
                   status, version, first_received_at, last_received_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                   'receiving', 1, $15, $15, $15)",
            )
            .bind(study_uid)
            .bind(patient_pk)
            .bind(h.patient_id.as_deref())
            .bind(h.patient_name.as_deref())
            .bind(h.patient_birth_date.as_deref())
            .bind(h.patient_sex.as_deref())
            .bind(h.patient_age.as_deref())
            .bind(h.accession_number.as_deref())
            .bind(h.study_id.as_deref())
            .bind(h.study_date.as_deref())
            .bind(h.study_time.as_deref())
            .bind(h.study_description.as_deref())
            .bind(h.referring_physician.as_deref())
            .bind(&modality)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            (1, true)
        }
        Some(row) => {
            let status: String = row.get(0);
            let version: i64 = row.get(1);
            let modalities: String = row.get(2);
            let reopened = status == "complete";
            let version = if reopened { version + 1 } else { version };
            let modalities = merge_modalities(&modalities, &modality);
            sqlx::query(
                "UPDATE studies SET status = 'receiving', version = $2, modalities = $3, \
                   last_received_at = $4, updated_at = $4, completed_at = CASE WHEN $5 THEN NULL ELSE completed_at END \
                 WHERE study_uid = $1",
            )
            .bind(study_uid)
            .bind(version)
            .bind(&modalities)
            .bind(now)
            .bind(reopened)
            .execute(&mut **tx)
            .await?;
            (version, reopened)
        }
    };

    sqlx::query(
        "INSERT INTO series (series_uid, study_uid, modality, body_part, view_position, \
           series_number, series_description, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (series_uid) DO NOTHING",
    )
    .bind(series_uid)
    .bind(study_uid)
    .bind(h.modality.as_deref())
    .bind(h.body_part.as_deref())
    .bind(h.view_position.as_deref())
    .bind(h.series_number)
    .bind(h.series_description.as_deref())
    .bind(now)
    .execute(&mut **tx)
    .await?;

    sqlx::query(
        "INSERT INTO instances (sop_instance_uid, series_uid, study_uid, sop_class_uid, \
           transfer_syntax, instance_number, rows_, columns_, frames, photometric, file_path, \
           file_size, received_at, calling_ae, association_id, study_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (sop_instance_uid) DO UPDATE SET series_uid = excluded.series_uid, \
           study_uid = excluded.study_uid, sop_class_uid = excluded.sop_class_uid, \
           transfer_syntax = excluded.transfer_syntax, instance_number = excluded.instance_number, \
           rows_ = excluded.rows_, columns_ = excluded.columns_, frames = excluded.frames, \
           photometric = excluded.photometric, file_path = excluded.file_path, \
           file_size = excluded.file_size, received_at = excluded.received_at, \
           calling_ae = excluded.calling_ae, association_id = excluded.association_id, \
           study_version = excluded.study_version",
    )
    .bind(sop_uid)
    .bind(series_uid)
    .bind(study_uid)
    .bind(
        h.sop_class_uid
            .as_ref()
            .map(|u| u.as_str())
            .unwrap_or_default(),
    )
    .bind(&h.transfer_syntax)
    .bind(h.instance_number)
    .bind(h.rows)
    .bind(h.columns)
    .bind(h.frames)
    .bind(h.photometric.as_deref())
    .bind(&rec.file_path)
    .bind(rec.file_size)
    .bind(now)
    .bind(&rec.calling_ae)
    .bind(&rec.association_id)
    .bind(version)
    .execute(&mut **tx)
    .await?;

    sqlx::query(
        "UPDATE series SET num_instances = (SELECT COUNT(*) FROM instances WHERE series_uid = $1) \
         WHERE series_uid = $1",
    )
    .bind(series_uid)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE studies SET \
           num_instances = (SELECT COUNT(*) FROM instances WHERE study_uid = $1), \
           num_series = (SELECT COUNT(*) FROM series WHERE study_uid = $1) \
         WHERE study_uid = $1",
    )
    .bind(study_uid)
    .execute(&mut **tx)
    .await?;

    if opened {
        events::append(
            tx,
            backend,
            EventType::StudyReceived,
            Some(study_uid),
            h.patient_id.as_deref(),
            &json!({
                "study_uid": study_uid,
                "study_version": version,
                "first_sop_instance_uid": sop_uid,
                "calling_ae": rec.calling_ae,
                "modality": h.modality,
            }),
        )
        .await?;
    }
    Ok(IndexOutcome {
        study_uid: study_uid.to_string(),
        study_version: version,
        study_opened: opened,
    })
}

/// Adds `modality` to a backslash-separated list if it is not there yet.
pub(crate) fn merge_modalities(list: &str, modality: &str) -> String {
    if modality.is_empty() || list.split('\\').any(|m| m == modality) {
        return list.to_string();
    }
    if list.is_empty() {
        modality.to_string()
    } else {
        format!("{list}\\{modality}")
    }
}

#[cfg(test)]
mod tests {
    use super::merge_modalities;

    #[test]
    fn modalities_merge_without_duplicates() {
        assert_eq!(merge_modalities("", "DX"), "DX");
        assert_eq!(merge_modalities("DX", "DX"), "DX");
        assert_eq!(merge_modalities("DX", "SR"), "DX\\SR");
        assert_eq!(merge_modalities("DX", ""), "DX");
    }
}
