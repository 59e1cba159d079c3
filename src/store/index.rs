//! The index half of the store: patients, studies, series and instances rows. The only
//! module with SQL on those tables: this file indexes received instances; `studies`,
//! `instances` and `patients` hold the typed rows (read by column name) and the named
//! queries other modules call; [`qido`] builds the QIDO-RS search.
//!
//! The indexing functions take the caller's transaction; the caller commits. A study row
//! carries its completion state: `receiving` until the study module completes it; an instance
//! arriving for a `complete` study re-opens it with `version + 1`.

use std::sync::LazyLock;

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Connection, Row, Transaction};

mod instances;
mod patients;
pub mod qido;
mod studies;

pub use instances::{
    add_derived, all_files, indexed_paths, instances_of_study, received_files, remove_received,
    retrievable, series_of_study, source_instances, DerivedInstance, InstanceRow, ReceivedFile,
    SeriesRow, SourceInstance, DERIVED_PREFIX,
};
pub use patients::{find_patient, patients, PatientRow};
pub use studies::{
    complete_study, count_present, count_studies, find_study, lock_receiving, lock_status,
    mark_purged, purge_candidates, receiving_studies, search_studies, set_current_result,
    studies_of_patient, unpurged_version, Completed, PurgeCandidate, ReceivingStudy, StudyFilter,
    StudyRow,
};

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
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IndexedFile {
    pub study_uid: String,
    pub series_uid: String,
    pub file_path: String,
    pub file_size: i64,
}

/// Looks an instance up by its SOP Instance UID.
pub async fn find_instance(
    db: &Database,
    sop_instance_uid: &str,
) -> Result<Option<IndexedFile>, sqlx::Error> {
    sqlx::query_as(
        "SELECT study_uid, series_uid, file_path, file_size FROM instances \
         WHERE sop_instance_uid = $1",
    )
    .bind(sop_instance_uid)
    .fetch_optional(&db.pool)
    .await
}

/// The state of a study row an instance is indexed into.
#[derive(sqlx::FromRow)]
struct OpenState {
    status: String,
    version: i64,
    modalities: String,
}

/// Upserts patient, study, series and instance rows for one stored file.
///
/// Four statements on the common path (an instance of a study and series already open): the
/// study lookup, the series upsert, the study update and the instance insert. The series and
/// study counts are incremented, not recounted (a recount reads every row of a study, which
/// makes a large study quadratic); only an instance that was already indexed (a replaced
/// duplicate) recounts the series and studies it leaves and joins.
#[tracing::instrument(skip_all, fields(study_uid, sop_instance_uid))]
pub async fn index_instance(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    rec: &InstanceRecord,
) -> Result<IndexOutcome, sqlx::Error> {
    let h = &rec.header;
    let study_uid = uid(&h.study_uid);
    let series_uid = uid(&h.series_uid);
    let sop_uid = uid(&h.sop_instance_uid);
    tracing::Span::current().record("study_uid", study_uid);
    tracing::Span::current().record("sop_instance_uid", sop_uid);
    let now = rec.received_at;
    let modality = h.modality.clone().unwrap_or_default();

    if backend == Backend::Sqlite {
        if let Some(outcome) = index_into_open_study_sqlite(tx, rec).await? {
            return Ok(outcome);
        }
    }

    let lock = if backend == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let existing: Option<OpenState> = sqlx::query_as(&format!(
        "SELECT status, version, modalities FROM studies WHERE study_uid = $1{lock}"
    ))
    .bind(study_uid)
    .fetch_optional(&mut **tx)
    .await?;

    // Patient demographics are taken when a study opens (new, or re-opened by a later send),
    // not re-written by every instance of it.
    let reopened = matches!(&existing, Some(s) if s.status == "complete");
    let version = match &existing {
        None => {
            let patient_pk = upsert_patient(tx, rec, study_uid).await?;
            insert_study(tx, rec, study_uid, patient_pk, &modality).await?;
            1
        }
        Some(s) if reopened => {
            upsert_patient(tx, rec, study_uid).await?;
            s.version + 1
        }
        Some(s) => s.version,
    };
    let opened = existing.is_none() || reopened;

    let series_instances: i64 = sqlx::query_scalar(
        "INSERT INTO series (series_uid, study_uid, modality, body_part, view_position, \
           series_number, series_description, created_at, num_instances) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) \
         ON CONFLICT (series_uid) DO UPDATE SET num_instances = series.num_instances + 1 \
         RETURNING num_instances",
    )
    .bind(series_uid)
    .bind(study_uid)
    .bind(h.modality.as_deref())
    .bind(h.body_part.as_deref())
    .bind(h.view_position.as_deref())
    .bind(h.series_number)
    .bind(h.series_description.as_deref())
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    let new_series = series_instances == 1;

    if let Some(OpenState { modalities, .. }) = &existing {
        sqlx::query(
            "UPDATE studies SET status = 'receiving', version = $2, modalities = $3, \
               last_received_at = $4, updated_at = $4, purged_at = NULL, \
               completed_at = CASE WHEN $5 THEN NULL ELSE completed_at END, \
               num_instances = num_instances + 1, num_series = num_series + $6 \
             WHERE study_uid = $1",
        )
        .bind(study_uid)
        .bind(version)
        .bind(merge_modalities(modalities, &modality))
        .bind(now)
        .bind(reopened)
        .bind(i64::from(new_series))
        .execute(&mut **tx)
        .await?;
    }

    let sql = format!(
        "INSERT INTO instances ({INSTANCE_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (sop_instance_uid) DO NOTHING"
    );
    let inserted = bind_instance(sqlx::query(&sql), rec, version)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if inserted == 0 {
        replace_instance(tx, rec, version).await?;
    }

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

/// SQLite's common path, an instance of a study that is open already, in one round trip to
/// the connection's worker thread instead of four: on one association each round trip is
/// latency the sender waits for. Every statement is conditional on the study being open, so
/// when it is not (a new study, or a complete one that this instance re-opens) nothing is
/// changed and `None` sends the caller down the general path.
///
/// Relies on sqlx-sqlite 0.8 running every statement of a prepared query, binding `$N` by
/// number in each. The series and study counts follow the general path's rules: the study's
/// series count grows when the series row is new; a replaced duplicate is recounted.
async fn index_into_open_study_sqlite(
    tx: &mut Transaction<'_, Any>,
    rec: &InstanceRecord,
) -> Result<Option<IndexOutcome>, sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| open_study_statements().to_string());
    let rows = bind_open_study(sqlx::query(&SQL), rec)
        .fetch_all(&mut **tx)
        .await?;
    let Some((outcome, inserted)) = open_study_outcome(rec, &rows) else {
        return Ok(None);
    };
    if !inserted {
        replace_instance(tx, rec, outcome.study_version).await?;
    }
    Ok(Some(outcome))
}

/// [`index_into_open_study_sqlite`] for a batch of one new instance (the case of a single
/// association): the transaction's `BEGIN` and `COMMIT` travel in the same round trip, so
/// the whole index write is one. After an error the transaction's state is unknown: the
/// caller closes `conn`.
pub async fn index_alone_into_open_study_sqlite(
    conn: &mut AnyConnection,
    rec: &InstanceRecord,
) -> Result<Option<IndexOutcome>, sqlx::Error> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("BEGIN IMMEDIATE; {}; COMMIT", open_study_statements()));
    let rows = bind_open_study(sqlx::query(&SQL), rec)
        .fetch_all(&mut *conn)
        .await?;
    let Some((outcome, inserted)) = open_study_outcome(rec, &rows) else {
        return Ok(None);
    };
    if !inserted {
        // Only a new instance comes this way, under its in-flight claim; should one have been
        // indexed after all, its counts are recounted as for a replaced duplicate.
        tracing::warn!(
            sop_instance_uid = uid(&rec.header.sop_instance_uid),
            "instance was indexed already; recounting its series and study"
        );
        let mut tx = conn.begin_with(crate::db::SQLITE_BEGIN_WRITE).await?;
        replace_instance(&mut tx, rec, outcome.study_version).await?;
        tx.commit().await?;
    }
    Ok(Some(outcome))
}

/// The statements of the open-study path; each binds the numbered arguments of
/// [`bind_open_study`] it uses.
fn open_study_statements() -> String {
    format!(
        "\
        UPDATE studies SET status = 'receiving', \
          modalities = CASE \
            WHEN $17 = '' OR instr('\\' || modalities || '\\', '\\' || $17 || '\\') > 0 \
              THEN modalities \
            WHEN modalities = '' THEN $17 ELSE modalities || '\\' || $17 END, \
          last_received_at = $13, updated_at = $13, num_instances = num_instances + 1, \
          num_series = num_series + NOT EXISTS (SELECT 1 FROM series WHERE series_uid = $2) \
        WHERE study_uid = $3 AND status <> 'complete' \
        RETURNING version AS study_version; \
        INSERT INTO series (series_uid, study_uid, modality, body_part, view_position, \
          series_number, series_description, created_at, num_instances) \
        SELECT $2, $3, NULLIF($17, ''), $18, $19, $20, $21, $13, 1 \
        WHERE EXISTS (SELECT 1 FROM studies WHERE study_uid = $3 AND status = 'receiving') \
        ON CONFLICT (series_uid) DO UPDATE SET num_instances = series.num_instances + 1; \
        INSERT INTO instances ({INSTANCE_COLUMNS}) \
        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, version \
        FROM studies WHERE study_uid = $3 AND status = 'receiving' \
        ON CONFLICT (sop_instance_uid) DO NOTHING \
        RETURNING 1 AS inserted"
    )
}

/// The instance row's arguments as [`bind_instance`] binds them (`$1`..`$15`; the version,
/// `$16`, is taken from the study row instead), then the series' (`$17`..`$21`).
fn bind_open_study<'q>(q: AnyQuery<'q>, rec: &'q InstanceRecord) -> AnyQuery<'q> {
    let h = &rec.header;
    bind_instance(q, rec, 0)
        .bind(h.modality.as_deref().unwrap_or_default())
        .bind(h.body_part.as_deref())
        .bind(h.view_position.as_deref())
        .bind(h.series_number)
        .bind(h.series_description.as_deref())
}

/// The outcome of the open-study statements, and whether the instance row was inserted
/// (not, when it was indexed already); `None` when the study was not open.
fn open_study_outcome(rec: &InstanceRecord, rows: &[AnyRow]) -> Option<(IndexOutcome, bool)> {
    let version = rows
        .iter()
        .find_map(|r| r.try_get::<i64, _>("study_version").ok())?;
    let inserted = rows.iter().any(|r| r.try_get::<i64, _>("inserted").is_ok());
    Some((
        IndexOutcome {
            study_uid: uid(&rec.header.study_uid).to_string(),
            study_version: version,
            study_opened: false,
        },
        inserted,
    ))
}

const INSTANCE_COLUMNS: &str = "sop_instance_uid, series_uid, study_uid, sop_class_uid, \
    transfer_syntax, instance_number, rows_, columns_, frames, photometric, file_path, \
    file_size, received_at, calling_ae, association_id, study_version";

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// Binds an instance row in [`INSTANCE_COLUMNS`] order.
fn bind_instance<'q>(q: AnyQuery<'q>, rec: &'q InstanceRecord, version: i64) -> AnyQuery<'q> {
    let h = &rec.header;
    q.bind(uid(&h.sop_instance_uid))
        .bind(uid(&h.series_uid))
        .bind(uid(&h.study_uid))
        .bind(uid(&h.sop_class_uid))
        .bind(&h.transfer_syntax)
        .bind(h.instance_number)
        .bind(h.rows)
        .bind(h.columns)
        .bind(h.frames)
        .bind(h.photometric.as_deref())
        .bind(&rec.file_path)
        .bind(rec.file_size)
        .bind(rec.received_at)
        .bind(&rec.calling_ae)
        .bind(&rec.association_id)
        .bind(version)
}

/// A re-sent instance that was already indexed: its row is overwritten, and the series and
/// studies it was in and is now in are recounted (the increments above assumed a new one).
async fn replace_instance(
    tx: &mut Transaction<'_, Any>,
    rec: &InstanceRecord,
    version: i64,
) -> Result<(), sqlx::Error> {
    let h = &rec.header;
    let sop_uid = uid(&h.sop_instance_uid);
    #[derive(sqlx::FromRow)]
    struct Placed {
        series_uid: String,
        study_uid: String,
    }
    let old: Placed =
        sqlx::query_as("SELECT series_uid, study_uid FROM instances WHERE sop_instance_uid = $1")
            .bind(sop_uid)
            .fetch_one(&mut **tx)
            .await?;
    let update = sqlx::query(
        "UPDATE instances SET series_uid = $2, study_uid = $3, sop_class_uid = $4, \
           transfer_syntax = $5, instance_number = $6, rows_ = $7, columns_ = $8, frames = $9, \
           photometric = $10, file_path = $11, file_size = $12, received_at = $13, \
           calling_ae = $14, association_id = $15, study_version = $16 \
         WHERE sop_instance_uid = $1",
    );
    bind_instance(update, rec, version)
        .execute(&mut **tx)
        .await?;
    let new_series = uid(&h.series_uid);
    let new_study = uid(&h.study_uid);
    for series in dedup([old.series_uid.as_str(), new_series]) {
        recount_series(tx, series).await?;
    }
    for study in dedup([old.study_uid.as_str(), new_study]) {
        recount_study(tx, study).await?;
    }
    Ok(())
}

/// Sets a series' instance count from its rows.
pub(crate) async fn recount_series(
    tx: &mut Transaction<'_, Any>,
    series_uid: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE series SET num_instances = \
           (SELECT COUNT(*) FROM instances WHERE series_uid = $1) WHERE series_uid = $1",
    )
    .bind(series_uid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sets a study's instance and series counts from its rows.
pub(crate) async fn recount_study(
    tx: &mut Transaction<'_, Any>,
    study_uid: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE studies SET \
           num_instances = (SELECT COUNT(*) FROM instances WHERE study_uid = $1), \
           num_series = (SELECT COUNT(*) FROM series WHERE study_uid = $1) \
         WHERE study_uid = $1",
    )
    .bind(study_uid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn dedup(pair: [&str; 2]) -> Vec<&str> {
    if pair[0] == pair[1] {
        vec![pair[0]]
    } else {
        pair.to_vec()
    }
}

/// Inserts or refreshes the patient row (non-null attributes win) and returns its key.
async fn upsert_patient(
    tx: &mut Transaction<'_, Any>,
    rec: &InstanceRecord,
    study_uid: &str,
) -> Result<i64, sqlx::Error> {
    let h = &rec.header;
    let patient_key = match h.patient_id.as_deref() {
        Some(id) => format!("id:{id}"),
        None => format!("study:{study_uid}"),
    };
    sqlx::query_scalar(
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
    .bind(rec.received_at)
    .fetch_one(&mut **tx)
    .await
}

/// Inserts a new study row, counting the instance being indexed (and its series).
async fn insert_study(
    tx: &mut Transaction<'_, Any>,
    rec: &InstanceRecord,
    study_uid: &str,
    patient_pk: i64,
    modality: &str,
) -> Result<(), sqlx::Error> {
    let h = &rec.header;
    sqlx::query(
        "INSERT INTO studies (study_uid, patient_pk, patient_id, patient_name, \
           patient_birth_date, patient_sex, patient_age, accession_number, study_id, \
           study_date, study_time, study_description, referring_physician, modalities, \
           status, version, first_received_at, last_received_at, updated_at, \
           num_instances, num_series) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
           'receiving', 1, $15, $15, $15, 1, 1)",
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
    .bind(modality)
    .bind(rec.received_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A UID of the header as text (`place` has checked the identifying ones are present).
fn uid(u: &Option<crate::domain::Uid>) -> &str {
    u.as_ref().map(|u| u.as_str()).unwrap_or_default()
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
    use super::*;
    use crate::db::Durability;
    use crate::domain::Uid;

    fn record(series: &str, sop: &str, modality: &str) -> InstanceRecord {
        let u = |s: &str| Some(Uid::parse("uid", s).unwrap());
        InstanceRecord {
            header: InstanceHeader {
                study_uid: u("1.2.9"),
                series_uid: u(series),
                sop_instance_uid: u(sop),
                sop_class_uid: u("1.2.840.10008.5.1.4.1.1.1.1"),
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                patient_id: Some("P1".into()),
                modality: Some(modality.into()),
                ..Default::default()
            },
            file_path: format!("instances/{sop}.dcm"),
            file_size: 10,
            calling_ae: "SCU".into(),
            association_id: "a1".into(),
            received_at: 1,
        }
    }

    /// Indexes `rec` as the committer does: alone (one round trip) when `alone` and the
    /// study is open, otherwise in a transaction (the open-study statements, else the
    /// general path). Says whether the open-study statements did it.
    async fn index(db: &Database, rec: &InstanceRecord, alone: bool) -> (IndexOutcome, bool) {
        if alone {
            let mut conn = db.pool.acquire().await.unwrap();
            if let Some(o) = index_alone_into_open_study_sqlite(&mut conn, rec)
                .await
                .unwrap()
            {
                return (o, true);
            }
        }
        let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let o = match index_into_open_study_sqlite(&mut tx, rec).await.unwrap() {
            Some(o) => (o, true),
            None => (
                index_instance(&mut tx, db.backend, rec).await.unwrap(),
                false,
            ),
        };
        tx.commit().await.unwrap();
        o
    }

    async fn study(db: &Database) -> (String, i64, i64, i64, String) {
        sqlx::query_as("SELECT status, version, num_instances, num_series, modalities FROM studies")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    }

    async fn series_counts(db: &Database) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT series_uid, num_instances FROM series ORDER BY series_uid")
            .fetch_all(&db.pool)
            .await
            .unwrap()
    }

    /// The SQLite open-study statements (alone and inside a batch) keep the same counts,
    /// modalities and versions as the general path: new series, a second modality, a
    /// replaced duplicate moved to another series, a re-opened study.
    #[tokio::test]
    async fn open_study_paths_keep_counts_and_versions() {
        for alone in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
            let db = Database::connect_url(&url, None, Durability::Os)
                .await
                .unwrap();
            db.migrate().await.unwrap();

            let (first, fast) = index(&db, &record("1.2.9.1", "1.2.9.1.1", "DX"), alone).await;
            assert!(first.study_opened && !fast);
            for (series, sop, modality) in [
                ("1.2.9.1", "1.2.9.1.2", "DX"),
                ("1.2.9.2", "1.2.9.2.1", "SR"),
                ("1.2.9.1", "1.2.9.1.3", "DX"),
            ] {
                let (o, fast) = index(&db, &record(series, sop, modality), alone).await;
                assert!(!o.study_opened && fast);
            }
            assert_eq!(
                study(&db).await,
                ("receiving".into(), 1, 4, 2, "DX\\SR".into())
            );

            // The second DX instance again, now in the SR series: counts follow it.
            index(&db, &record("1.2.9.2", "1.2.9.1.2", "DX"), false).await;
            assert_eq!(study(&db).await.2, 4);
            assert_eq!(
                series_counts(&db).await,
                vec![("1.2.9.1".into(), 2), ("1.2.9.2".into(), 2)]
            );

            sqlx::query("UPDATE studies SET status = 'complete'")
                .execute(&db.pool)
                .await
                .unwrap();
            let (reopened, fast) = index(&db, &record("1.2.9.1", "1.2.9.1.4", "DX"), alone).await;
            assert!(reopened.study_opened && !fast);
            assert_eq!(reopened.study_version, 2);
            let (o, fast) = index(&db, &record("1.2.9.3", "1.2.9.3.1", "CR"), alone).await;
            assert_eq!((o.study_version, o.study_opened, fast), (2, false, true));
            assert_eq!(
                study(&db).await,
                ("receiving".into(), 2, 6, 3, "DX\\SR\\CR".into())
            );
            let version: i64 = sqlx::query_scalar(
                "SELECT study_version FROM instances WHERE sop_instance_uid = '1.2.9.3.1'",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(version, 2);
            // A series the open-study statements created carries its attributes.
            let series: (String, String, i64) = sqlx::query_as(
                "SELECT study_uid, modality, created_at FROM series WHERE series_uid = '1.2.9.3'",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(series, ("1.2.9".into(), "CR".into(), 1));
        }
    }

    #[test]
    fn modalities_merge_without_duplicates() {
        assert_eq!(merge_modalities("", "DX"), "DX");
        assert_eq!(merge_modalities("DX", "DX"), "DX");
        assert_eq!(merge_modalities("DX", "SR"), "DX\\SR");
        assert_eq!(merge_modalities("DX", ""), "DX");
    }
}
