//! Modality Performed Procedure Steps (PS3.4 Annex F): what a modality says it performed.
//!
//! The DICOM listener hands each N-CREATE and N-SET data set here; the step and the
//! instances its Performed Series Sequence lists are kept in `mpps_steps` and
//! `mpps_instances`. Study completion (the study tracker) reads them back: a COMPLETED step
//! whose instances have all arrived is evidence that the study is complete.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use sqlx::{Any, Transaction};

use crate::clock::now_ms;
use crate::db::Database;

pub mod settings;
pub use settings::{ForwardTarget, MppsSettings};

/// A stored N-CREATE or N-SET to pass on to the RIS (`[mpps] forward`), in arrival order.
#[derive(Debug, Clone)]
pub struct Forward {
    /// `true` for N-CREATE, `false` for N-SET.
    pub create: bool,
    pub step_uid: String,
    pub data_set: InMemDicomObject,
}

/// MPPS SOP class (1.2.840.10008.3.1.2.3.3).
pub const MPPS_SOP_CLASS: &str = "1.2.840.10008.3.1.2.3.3";

/// Performed Procedure Step Status values (PS3.3 C.4.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    InProgress,
    Completed,
    Discontinued,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::InProgress => "IN PROGRESS",
            StepStatus::Completed => "COMPLETED",
            StepStatus::Discontinued => "DISCONTINUED",
        }
    }

    pub fn parse(s: &str) -> Option<StepStatus> {
        match s.trim() {
            "IN PROGRESS" => Some(StepStatus::InProgress),
            "COMPLETED" => Some(StepStatus::Completed),
            "DISCONTINUED" => Some(StepStatus::Discontinued),
            _ => None,
        }
    }

    /// COMPLETED and DISCONTINUED steps may no longer be updated (PS3.4 F.7.2.2.2).
    pub fn is_final(self) -> bool {
        self != StepStatus::InProgress
    }
}

/// One instance a step lists (Performed Series Sequence → Referenced Image Sequence or
/// Referenced Non-Image Composite SOP Instance Sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub series_uid: String,
}

/// The attributes of an N-CREATE or N-SET data set that completion needs. `None` where the
/// data set does not carry the attribute (an N-SET changes only what it carries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepAttributes {
    /// Performed Procedure Step Status, as sent.
    pub status: Option<String>,
    pub study_uid: Option<String>,
    pub accession_number: Option<String>,
    pub modality: Option<String>,
    pub procedure_step_id: Option<String>,
    /// The Performed Series Sequence's instances; `Some(empty)` for an empty sequence.
    pub instances: Option<Vec<ListedInstance>>,
}

/// Why a request is refused, with the DIMSE status it is answered with (PS3.7 Annex C).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// 0x0120.
    #[error("missing attribute {0}")]
    MissingAttribute(&'static str),
    /// 0x0106.
    #[error("invalid attribute value: {0}")]
    InvalidValue(String),
    /// 0x0111.
    #[error("a procedure step with this SOP instance UID exists")]
    Duplicate,
    /// 0x0112.
    #[error("no such procedure step")]
    NoSuchInstance,
    /// 0x0110 (Error ID A710).
    #[error("Performed Procedure Step Object may no longer be updated")]
    Final,
    /// 0x0110.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl StepError {
    /// The DIMSE status for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            StepError::MissingAttribute(_) => 0x0120,
            StepError::InvalidValue(_) => 0x0106,
            StepError::Duplicate => 0x0111,
            StepError::NoSuchInstance => 0x0112,
            StepError::Final | StepError::Db(_) => 0x0110,
        }
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
}

fn items(obj: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    obj.get(tag).and_then(|e| e.items())
}

/// Reads the attributes completion needs from an N-CREATE or N-SET data set.
pub fn read_attributes(obj: &InMemDicomObject) -> StepAttributes {
    let scheduled = items(obj, tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE).and_then(|i| i.first());
    let instances = items(obj, tags::PERFORMED_SERIES_SEQUENCE).map(|series| {
        let mut out = Vec::new();
        for s in series {
            let series_uid = text(s, tags::SERIES_INSTANCE_UID).unwrap_or_default();
            for seq in [
                tags::REFERENCED_IMAGE_SEQUENCE,
                tags::REFERENCED_NON_IMAGE_COMPOSITE_SOP_INSTANCE_SEQUENCE,
            ] {
                for r in items(s, seq).unwrap_or_default() {
                    if let Some(uid) = text(r, tags::REFERENCED_SOP_INSTANCE_UID) {
                        out.push(ListedInstance {
                            sop_instance_uid: uid,
                            sop_class_uid: text(r, tags::REFERENCED_SOP_CLASS_UID)
                                .unwrap_or_default(),
                            series_uid: series_uid.clone(),
                        });
                    }
                }
            }
        }
        out
    });
    StepAttributes {
        status: text(obj, tags::PERFORMED_PROCEDURE_STEP_STATUS),
        study_uid: scheduled.and_then(|s| text(s, tags::STUDY_INSTANCE_UID)),
        accession_number: scheduled.and_then(|s| text(s, tags::ACCESSION_NUMBER)),
        modality: text(obj, tags::MODALITY),
        procedure_step_id: text(obj, tags::PERFORMED_PROCEDURE_STEP_ID),
        instances,
    }
}

/// A stored step.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StepRow {
    pub sop_instance_uid: String,
    pub study_uid: Option<String>,
    pub status: String,
    pub calling_ae: String,
    pub accession_number: Option<String>,
    pub modality: Option<String>,
    pub procedure_step_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Stores a new step (N-CREATE). The status must be IN PROGRESS and the Scheduled Step
/// Attributes Sequence must name the study (PS3.4 F.7.2.1.1).
pub async fn create(
    db: &Database,
    step_uid: &str,
    attrs: &StepAttributes,
    calling_ae: &str,
) -> Result<StepRow, StepError> {
    let status = attrs
        .status
        .as_deref()
        .ok_or(StepError::MissingAttribute("PerformedProcedureStepStatus"))?;
    if StepStatus::parse(status) != Some(StepStatus::InProgress) {
        return Err(StepError::InvalidValue(format!(
            "an N-CREATE must have the status IN PROGRESS, not '{status}'"
        )));
    }
    let study_uid =
        attrs
            .study_uid
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(StepError::MissingAttribute(
                "ScheduledStepAttributesSequence/StudyInstanceUID",
            ))?;
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query(
        "INSERT INTO mpps_steps (sop_instance_uid, study_uid, status, calling_ae, \
         accession_number, modality, procedure_step_id, created_at, updated_at) \
         VALUES ($1, $2, 'IN PROGRESS', $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
    )
    .bind(step_uid)
    .bind(study_uid)
    .bind(calling_ae)
    .bind(&attrs.accession_number)
    .bind(&attrs.modality)
    .bind(&attrs.procedure_step_id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Err(StepError::Duplicate);
    }
    if let Some(list) = &attrs.instances {
        replace_instances(&mut tx, step_uid, list).await?;
    }
    let row = find_in(&mut tx, step_uid)
        .await?
        .ok_or(StepError::NoSuchInstance)?;
    tx.commit().await?;
    Ok(row)
}

/// Applies an N-SET: the status and the instance list change where the data set carries
/// them. A step that is COMPLETED or DISCONTINUED is not changed.
pub async fn update(
    db: &Database,
    step_uid: &str,
    attrs: &StepAttributes,
) -> Result<StepRow, StepError> {
    let new_status = match attrs.status.as_deref() {
        None => None,
        Some(s) => Some(StepStatus::parse(s).ok_or_else(|| {
            StepError::InvalidValue(format!("'{s}' is not a procedure step status"))
        })?),
    };
    let mut tx = db.begin_write().await?;
    let Some(current) = find_in(&mut tx, step_uid).await? else {
        tx.rollback().await?;
        return Err(StepError::NoSuchInstance);
    };
    if StepStatus::parse(&current.status).is_some_and(StepStatus::is_final) {
        tx.rollback().await?;
        return Err(StepError::Final);
    }
    sqlx::query(
        "UPDATE mpps_steps SET status = COALESCE($2, status), \
         modality = COALESCE($3, modality), updated_at = $4 WHERE sop_instance_uid = $1",
    )
    .bind(step_uid)
    .bind(new_status.map(StepStatus::as_str))
    .bind(&attrs.modality)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    if let Some(list) = &attrs.instances {
        replace_instances(&mut tx, step_uid, list).await?;
    }
    let row = find_in(&mut tx, step_uid)
        .await?
        .ok_or(StepError::NoSuchInstance)?;
    tx.commit().await?;
    Ok(row)
}

async fn find_in(
    tx: &mut Transaction<'_, Any>,
    step_uid: &str,
) -> Result<Option<StepRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sop_instance_uid, study_uid, status, calling_ae, accession_number, modality, \
         procedure_step_id, created_at, updated_at FROM mpps_steps WHERE sop_instance_uid = $1",
    )
    .bind(step_uid)
    .fetch_optional(&mut **tx)
    .await
}

/// An N-SET's Performed Series Sequence replaces the whole list (PS3.4 F.7.2.2.1).
async fn replace_instances(
    tx: &mut Transaction<'_, Any>,
    step_uid: &str,
    list: &[ListedInstance],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM mpps_instances WHERE step_uid = $1")
        .bind(step_uid)
        .execute(&mut **tx)
        .await?;
    for i in list {
        sqlx::query(
            "INSERT INTO mpps_instances (step_uid, sop_instance_uid, sop_class_uid, series_uid) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(step_uid)
        .bind(&i.sop_instance_uid)
        .bind(&i.sop_class_uid)
        .bind(&i.series_uid)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The steps of a study and what the COMPLETED ones list, read in the completing
/// transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudySteps {
    pub in_progress: usize,
    pub completed: usize,
    pub discontinued: usize,
    /// SOP Instance UIDs listed by COMPLETED steps.
    pub listed: Vec<String>,
}

impl StudySteps {
    pub fn any(&self) -> bool {
        self.in_progress + self.completed + self.discontinued > 0
    }
}

#[derive(sqlx::FromRow)]
struct StatusCount {
    status: String,
    n: i64,
}

#[derive(sqlx::FromRow)]
struct Listed {
    sop_instance_uid: String,
}

/// The study's steps (see [`StudySteps`]).
pub async fn study_steps(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
) -> Result<StudySteps, sqlx::Error> {
    let counts: Vec<StatusCount> = sqlx::query_as(
        "SELECT status, COUNT(*) AS n FROM mpps_steps WHERE study_uid = $1 GROUP BY status",
    )
    .bind(study_uid)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = StudySteps::default();
    for c in counts {
        let n = c.n as usize;
        match StepStatus::parse(&c.status) {
            Some(StepStatus::InProgress) => out.in_progress += n,
            Some(StepStatus::Completed) => out.completed += n,
            Some(StepStatus::Discontinued) => out.discontinued += n,
            None => {}
        }
    }
    if out.completed > 0 {
        let listed: Vec<Listed> = sqlx::query_as(
            "SELECT DISTINCT i.sop_instance_uid FROM mpps_instances i \
             JOIN mpps_steps s ON s.sop_instance_uid = i.step_uid \
             WHERE s.study_uid = $1 AND s.status = 'COMPLETED'",
        )
        .bind(study_uid)
        .fetch_all(&mut **tx)
        .await?;
        out.listed = listed.into_iter().map(|l| l.sop_instance_uid).collect();
    }
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct StudyOfStep {
    study_uid: String,
}

/// Studies with a COMPLETED or DISCONTINUED step updated since `since_ms` (for a node to
/// learn of steps another node received).
pub async fn recently_finished_studies(
    db: &Database,
    since_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<StudyOfStep> = sqlx::query_as(
        "SELECT DISTINCT study_uid FROM mpps_steps \
         WHERE status <> 'IN PROGRESS' AND updated_at >= $1 AND study_uid IS NOT NULL",
    )
    .bind(since_ms)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.study_uid).collect())
}

/// The steps received for a study (for `/v1/studies/{uid}`), oldest first.
pub async fn steps_of_study(db: &Database, study_uid: &str) -> Result<Vec<StepRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sop_instance_uid, study_uid, status, calling_ae, accession_number, modality, \
         procedure_step_id, created_at, updated_at FROM mpps_steps WHERE study_uid = $1 \
         ORDER BY created_at, sop_instance_uid",
    )
    .bind(study_uid)
    .fetch_all(&db.pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::mem::InMemElement;

    fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
        DataElement::new(tag, VR::SQ, dicom_core::value::DataSetSequence::from(items))
    }

    fn str_el(tag: Tag, vr: VR, v: &str) -> InMemElement {
        DataElement::new(tag, vr, PrimitiveValue::from(v))
    }

    fn step(status: &str, sops: &[&str]) -> InMemDicomObject {
        let refs = sops
            .iter()
            .map(|s| {
                InMemDicomObject::from_element_iter([
                    str_el(
                        tags::REFERENCED_SOP_CLASS_UID,
                        VR::UI,
                        "1.2.840.10008.5.1.4.1.1.1.1",
                    ),
                    str_el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, s),
                ])
            })
            .collect();
        let series = InMemDicomObject::from_element_iter([
            str_el(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4"),
            seq(tags::REFERENCED_IMAGE_SEQUENCE, refs),
        ]);
        let sched = InMemDicomObject::from_element_iter([
            str_el(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
            str_el(tags::ACCESSION_NUMBER, VR::SH, "ACC1"),
        ]);
        InMemDicomObject::from_element_iter([
            str_el(tags::PERFORMED_PROCEDURE_STEP_STATUS, VR::CS, status),
            str_el(tags::MODALITY, VR::CS, "DX"),
            seq(tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE, vec![sched]),
            seq(tags::PERFORMED_SERIES_SEQUENCE, vec![series]),
        ])
    }

    async fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, Some(1), crate::db::Durability::Os)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        (dir, db)
    }

    #[test]
    fn attributes_are_read_from_the_sequences() {
        let a = read_attributes(&step("COMPLETED", &["1.1", "1.2"]));
        assert_eq!(a.status.as_deref(), Some("COMPLETED"));
        assert_eq!(a.study_uid.as_deref(), Some("1.2.3"));
        assert_eq!(a.accession_number.as_deref(), Some("ACC1"));
        let sops: Vec<_> = a
            .instances
            .unwrap()
            .into_iter()
            .map(|i| i.sop_instance_uid)
            .collect();
        assert_eq!(sops, ["1.1", "1.2"]);
        assert_eq!(
            read_attributes(&InMemDicomObject::new_empty()).instances,
            None
        );
    }

    #[tokio::test]
    async fn a_step_is_created_in_progress_completed_once_and_then_refused() {
        let (_dir, db) = db().await;
        let create_attrs = read_attributes(&step("COMPLETED", &[]));
        let e = create(&db, "9.1", &create_attrs, "MOD").await.unwrap_err();
        assert_eq!(e.status(), 0x0106);
        let row = create(
            &db,
            "9.1",
            &read_attributes(&step("IN PROGRESS", &[])),
            "MOD",
        )
        .await
        .unwrap();
        assert_eq!(row.status, "IN PROGRESS");
        let dup = create(
            &db,
            "9.1",
            &read_attributes(&step("IN PROGRESS", &[])),
            "MOD",
        )
        .await
        .unwrap_err();
        assert_eq!(dup.status(), 0x0111);
        let missing = update(&db, "9.9", &read_attributes(&step("COMPLETED", &[])))
            .await
            .unwrap_err();
        assert_eq!(missing.status(), 0x0112);
        let done = update(
            &db,
            "9.1",
            &read_attributes(&step("COMPLETED", &["1.1", "1.2"])),
        )
        .await
        .unwrap();
        assert_eq!(done.status, "COMPLETED");
        let again = update(&db, "9.1", &read_attributes(&step("DISCONTINUED", &[])))
            .await
            .unwrap_err();
        assert_eq!(again.status(), 0x0110);
        let mut tx = db.begin_write().await.unwrap();
        let steps = study_steps(&mut tx, "1.2.3").await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(steps.completed, 1);
        let mut listed = steps.listed;
        listed.sort();
        assert_eq!(listed, ["1.1", "1.2"]);
        assert_eq!(recently_finished_studies(&db, 0).await.unwrap(), ["1.2.3"]);
    }
}
