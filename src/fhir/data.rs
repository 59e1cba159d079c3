//! Reading what the FHIR resources are built from: studies with series and instances,
//! patients, and result versions.

use std::collections::HashMap;

use crate::db::Database;
use crate::result::{self, StudyResult};
use crate::store::index;

/// A patient row of the index (from the DICOM header of the first instance received).
pub use crate::store::index::PatientRow as PatientInfo;

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

pub async fn patient(db: &Database, pk: i64) -> Result<Option<PatientInfo>, sqlx::Error> {
    index::find_patient(db, pk).await
}

/// Patients, optionally only those with this Patient ID, ordered by key.
pub async fn patients(
    db: &Database,
    patient_id: Option<&str>,
) -> Result<Vec<PatientInfo>, sqlx::Error> {
    index::patients(db, patient_id).await
}

pub async fn study(db: &Database, uid: &str) -> Result<Option<StudyInfo>, sqlx::Error> {
    let Some(row) = index::find_study(&db.pool, uid).await? else {
        return Ok(None);
    };
    let series_rows = index::series_of_study(db, uid).await?;
    let instance_rows = index::instances_of_study(db, uid).await?;
    let series = series_rows
        .into_iter()
        .map(|s| SeriesInfo {
            instances: instance_rows
                .iter()
                .filter(|i| i.series_uid == s.series_uid)
                .map(|i| InstanceInfo {
                    uid: i.sop_instance_uid.clone(),
                    sop_class_uid: i.sop_class_uid.clone(),
                    number: i.instance_number,
                })
                .collect(),
            derived: s.is_derived(),
            uid: s.series_uid,
            modality: s.modality,
            number: s.series_number,
            description: s.series_description,
        })
        .collect();
    Ok(Some(StudyInfo {
        uid: row.study_uid,
        patient_pk: row.patient_pk,
        study_date: row.study_date,
        study_time: row.study_time,
        description: row.study_description,
        first_received_at: row.first_received_at,
        series,
    }))
}

/// Study UIDs, optionally of one patient and/or one UID, ordered by first receipt.
pub async fn study_uids(
    db: &Database,
    patient_pk: Option<i64>,
    uid: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    let studies = index::studies_of_patient(db, patient_pk, uid).await?;
    Ok(studies.into_iter().map(|s| s.study_uid).collect())
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

/// Result rows, optionally of one patient and/or one study, oldest first.
pub async fn result_rows(
    db: &Database,
    patient_pk: Option<i64>,
    study_uid: Option<&str>,
) -> Result<Vec<ResultRow>, sqlx::Error> {
    let studies: HashMap<String, index::StudyRow> =
        index::studies_of_patient(db, patient_pk, study_uid)
            .await?
            .into_iter()
            .map(|s| (s.study_uid.clone(), s))
            .collect();
    let results = result::store::summaries(db, study_uid).await?;
    Ok(results
        .into_iter()
        .filter_map(|r| {
            let s = studies.get(&r.study_uid)?;
            Some(ResultRow {
                id: r.id,
                version: r.version,
                latest_version: r.latest_version,
                patient_pk: s.patient_pk,
                study_date: s.study_date.clone(),
                study_time: s.study_time.clone(),
                first_received_at: s.first_received_at,
                study_uid: r.study_uid,
            })
        })
        .collect())
}

/// One result by its row id.
pub async fn result(db: &Database, id: i64) -> Result<Option<StoredResult>, sqlx::Error> {
    let Some(record) = result::store::record(db, id).await? else {
        return Ok(None);
    };
    let Ok(mut result) = record.parse() else {
        tracing::error!(result_id = id, "stored result body does not parse");
        return Ok(None);
    };
    result.superseded = result.version < record.latest_version;
    Ok(Some(StoredResult {
        result,
        latest_version: record.latest_version,
    }))
}

/// The id of the result that supersedes `study_uid`'s versions (its latest), if any.
pub async fn latest_result_id(db: &Database, study_uid: &str) -> Result<Option<i64>, sqlx::Error> {
    result::store::latest_id(db, study_uid).await
}

/// Models that produced results: (id, version), for Device reads of models no longer
/// installed.
pub async fn result_models(db: &Database) -> Result<Vec<(String, String)>, sqlx::Error> {
    let models = result::store::models_used(db).await?;
    Ok(models
        .into_iter()
        .map(|m| (m.model_id, m.model_version))
        .collect())
}
