//! Patient rows (taken from the DICOM header of the instance that opened a study).

use crate::db::Database;

/// A row of `patients`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PatientRow {
    /// Primary key; the FHIR id is `pt-<pk>`.
    #[sqlx(rename = "id")]
    pub pk: i64,
    pub patient_id: Option<String>,
    /// DICOM PN (`FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX`).
    #[sqlx(rename = "patient_name")]
    pub name: Option<String>,
    /// DICOM DA (`YYYYMMDD`).
    pub birth_date: Option<String>,
    /// DICOM CS (`M`, `F`, `O`).
    pub sex: Option<String>,
}

const PATIENT_COLUMNS: &str = "id, patient_id, patient_name, birth_date, sex";

/// A patient by key.
pub async fn find_patient(db: &Database, pk: i64) -> Result<Option<PatientRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PATIENT_COLUMNS} FROM patients WHERE id = $1"
    ))
    .bind(pk)
    .fetch_optional(&db.pool)
    .await
}

/// Patients, optionally only those with this Patient ID, ordered by key.
pub async fn patients(
    db: &Database,
    patient_id: Option<&str>,
) -> Result<Vec<PatientRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PATIENT_COLUMNS} FROM patients WHERE ($1 IS NULL OR patient_id = $1) ORDER BY id"
    ))
    .bind(patient_id)
    .fetch_all(&db.pool)
    .await
}
