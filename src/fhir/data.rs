//! Reading what the FHIR resources are built from: studies with series and instances,
//! patients, and result versions.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::Database;
use crate::result::StudyResult;

/// A patient row of the index (from the DICOM header of the first instance received).
#[derive(Debug, Clone, PartialEq)]
pub struct PatientInfo {
    /// Primary key of `patients`; the FHIR id is `pt-<pk>`.
    pub pk: i64,
    pub patient_id: Option<String>,
    /// DICOM PN (`FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX`).
    pub name: Option<String>,
    /// DICOM DA (`YYYYMMDD`).
    pub birth_date: Option<String>,
    /// DICOM CS (`M`, `F`, `O`).
    pub sex: Option<String>,
}

/// An instance of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInfo {
    pub uid: String,
    pub sop_class_uid: String,
    pub number: Option<i64>,
}

/// A series of a study.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    pub uid: String,
    pub modality: Option<String>,
    pub number: Option<i64>,
    pub description: Option<String>,
    pub instances: Vec<InstanceInfo>,
    /// One of the node's own outputs (SR, overlay), not an acquired series.
    pub derived: bool,
}

/// A study with its series and instances.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyInfo {
    pub uid: String,
    pub patient_pk: i64,
    /// DICOM DA and TM of the study.
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub description: Option<String>,
    /// Epoch ms.
    pub first_received_at: i64,
    pub series: Vec<SeriesInfo>,
}

impl StudyInfo {
    /// Distinct modalities of the series, in series order.
    pub fn modalities(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for m in self.series.iter().filter_map(|s| s.modality.clone()) {
            if !v.contains(&m) {
                v.push(m);
            }
        }
        v
    }

    pub fn instance_count(&self) -> usize {
        self.series.iter().map(|s| s.instances.len()).sum()
    }

    /// Modalities and image count of the acquired series only: what the exam was, before
    /// the node added its SR and overlays to the study.
    pub fn acquired(&self) -> (Vec<String>, usize) {
        let mut modalities: Vec<String> = Vec::new();
        let mut images = 0;
        for s in self.series.iter().filter(|s| !s.derived) {
            images += s.instances.len();
            if let Some(m) = s.modality.clone().filter(|m| !modalities.contains(m)) {
                modalities.push(m);
            }
        }
        (modalities, images)
    }
}

fn patient_row(r: &AnyRow) -> PatientInfo {
    PatientInfo {
        pk: r.get(0),
        patient_id: r.get(1),
        name: r.get(2),
        birth_date: r.get(3),
        sex: r.get(4),
    }
}

const PATIENT_COLUMNS: &str = "id, patient_id, patient_name, birth_date, sex";

pub async fn patient(db: &Database, pk: i64) -> Result<Option<PatientInfo>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {PATIENT_COLUMNS} FROM patients WHERE id = $1"
    ))
    .bind(pk)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.as_ref().map(patient_row))
}

/// Patients, optionally only those with this Patient ID, ordered by key.
pub async fn patients(
    db: &Database,
    patient_id: Option<&str>,
) -> Result<Vec<PatientInfo>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {PATIENT_COLUMNS} FROM patients WHERE ($1 IS NULL OR patient_id = $1) ORDER BY id"
    ))
    .bind(patient_id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(patient_row).collect())
}

pub async fn study(db: &Database, uid: &str) -> Result<Option<StudyInfo>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT study_uid, patient_pk, study_date, study_time, study_description, \
           first_received_at FROM studies WHERE study_uid = $1",
    )
    .bind(uid)
    .fetch_optional(&db.pool)
    .await?
    else {
        return Ok(None);
    };
    let series_rows = sqlx::query(
        "SELECT s.series_uid, s.modality, s.series_number, s.series_description, \
           CAST(CASE WHEN EXISTS (SELECT 1 FROM instances i WHERE i.series_uid = s.series_uid \
             AND i.association_id LIKE 'derived:%') THEN 1 ELSE 0 END AS BIGINT) \
         FROM series s WHERE s.study_uid = $1 ORDER BY s.series_number, s.series_uid",
    )
    .bind(uid)
    .fetch_all(&db.pool)
    .await?;
    let instance_rows = sqlx::query(
        "SELECT series_uid, sop_instance_uid, sop_class_uid, instance_number FROM instances \
         WHERE study_uid = $1 ORDER BY instance_number, sop_instance_uid",
    )
    .bind(uid)
    .fetch_all(&db.pool)
    .await?;
    let series = series_rows
        .iter()
        .map(|s| {
            let series_uid: String = s.get(0);
            SeriesInfo {
                instances: instance_rows
                    .iter()
                    .filter(|i| i.get::<String, _>(0) == series_uid)
                    .map(|i| InstanceInfo {
                        uid: i.get(1),
                        sop_class_uid: i.get(2),
                        number: i.get(3),
                    })
                    .collect(),
                uid: series_uid,
                modality: s.get(1),
                number: s.get(2),
                description: s.get(3),
                derived: s.get::<i64, _>(4) != 0,
            }
        })
        .collect();
    Ok(Some(StudyInfo {
        uid: row.get(0),
        patient_pk: row.get(1),
        study_date: row.get(2),
        study_time: row.get(3),
        description: row.get(4),
        first_received_at: row.get(5),
        series,
    }))
}

/// Study UIDs, optionally of one patient and/or one UID, ordered by first receipt.
pub async fn study_uids(
    db: &Database,
    patient_pk: Option<i64>,
    uid: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT study_uid FROM studies WHERE ($1 IS NULL OR patient_pk = $1) \
           AND ($2 IS NULL OR study_uid = $2) ORDER BY first_received_at, study_uid",
    )
    .bind(patient_pk)
    .bind(uid)
    .fetch_all(&db.pool)
    .await
}

/// One result version with what decides its FHIR status.
#[derive(Debug, Clone)]
pub struct StoredResult {
    pub result: StudyResult,
    /// The highest version of the study: a lower one is superseded.
    pub latest_version: i64,
}

impl StoredResult {
    pub fn superseded(&self) -> bool {
        self.result.version < self.latest_version
    }
}

/// A result row for search: enough to filter without parsing the body.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub id: i64,
    pub study_uid: String,
    pub version: i64,
    pub latest_version: i64,
    pub patient_pk: i64,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub first_received_at: i64,
}

const RESULT_FILTER: &str = "FROM results r JOIN studies s ON s.study_uid = r.study_uid \
    WHERE ($1 IS NULL OR s.patient_pk = $1) AND ($2 IS NULL OR r.study_uid = $2)";

/// Result rows, optionally of one patient and/or one study, oldest first.
pub async fn result_rows(
    db: &Database,
    patient_pk: Option<i64>,
    study_uid: Option<&str>,
) -> Result<Vec<ResultRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT r.id, r.study_uid, r.version, \
           (SELECT MAX(m.version) FROM results m WHERE m.study_uid = r.study_uid), \
           s.patient_pk, s.study_date, s.study_time, s.first_received_at \
         {RESULT_FILTER} ORDER BY r.id"
    ))
    .bind(patient_pk)
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| ResultRow {
            id: r.get(0),
            study_uid: r.get(1),
            version: r.get(2),
            latest_version: r.get(3),
            patient_pk: r.get(4),
            study_date: r.get(5),
            study_time: r.get(6),
            first_received_at: r.get(7),
        })
        .collect())
}

/// One result by its row id.
pub async fn result(db: &Database, id: i64) -> Result<Option<StoredResult>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT r.id, r.version, r.body, \
           (SELECT MAX(m.version) FROM results m WHERE m.study_uid = r.study_uid) \
         FROM results r WHERE r.id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let body: String = row.get(2);
    let Ok(mut result) = serde_json::from_str::<StudyResult>(&body) else {
        tracing::error!(result_id = id, "stored result body does not parse");
        return Ok(None);
    };
    result.id = row.get(0);
    result.version = row.get(1);
    let latest_version: i64 = row.get(3);
    result.superseded = result.version < latest_version;
    Ok(Some(StoredResult {
        result,
        latest_version,
    }))
}

/// The id of the result that supersedes `study_uid`'s versions (its latest), if any.
pub async fn latest_result_id(db: &Database, study_uid: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM results WHERE study_uid = $1 ORDER BY version DESC LIMIT 1")
        .bind(study_uid)
        .fetch_optional(&db.pool)
        .await
}

/// Models that produced results: (id, version), for Device reads of models no longer
/// installed.
pub async fn result_models(db: &Database) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT model_id, model_version FROM results ORDER BY model_id, model_version",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
