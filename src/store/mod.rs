//! Durable storage of received instances: the file on disk and its index row.
//!
//! - [`files`]: temporary file, fsync, atomic rename into `instances/`;
//! - [`header`]: the attributes the index needs, read without the pixel data;
//! - [`index`]: every SQL statement on patients, studies, series and instances: indexing,
//!   typed rows and the named queries the rest of the node calls;
//! - [`objects`]: the S3 bucket behind the data folder (`storage.backend = "s3"`);
//! - [`migrate`]: copies a local data folder's indexed files into the bucket;
//! - [`sync`]: the thread that finishes received files and syncs them in batches;
//! - this module: [`Store::accept`], the one path every ingest route (C-STORE, STOW-RS) takes,
//!   and the group committer that batches index rows from concurrent associations into one
//!   transaction, so durable mode costs one database sync per batch, not per instance.

pub mod files;
pub mod header;
pub mod index;
pub mod migrate;
pub mod objects;
pub mod settings;
pub mod sync;

use std::path::PathBuf;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::dataset::Problem;
use crate::db::{Backend, Database};
use crate::domain::Uid;
use crate::events::EventBus;
pub use files::{FileError, FileMeta, FileStore, FolderSync, IncomingFile, Placement, StagedFile};
pub use header::{HeaderError, InstanceHeader};
pub use index::{IndexOutcome, InstanceRecord};
pub use objects::{Bucket, ObjectError};
pub use settings::{DuplicatePolicy, Durability, S3Settings, StorageBackend, StorageSettings};

/// Why an instance was not stored; each maps to one DIMSE status family.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A7xx: no room, or the disk or database failed.
    #[error("out of resources: {0}")]
    Resources(String),
    /// A900: the data set contradicts the command or misses an identifying attribute.
    #[error("data set does not match: {0}")]
    Mismatch(String),
    /// C000: the data set cannot be parsed.
    #[error("cannot understand: {0}")]
    Unparseable(String),
}

impl From<FileError> for StoreError {
    fn from(e: FileError) -> Self {
        StoreError::Resources(e.to_string())
    }
}

/// What happened to an accepted instance.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOutcome {
    /// Stored and indexed.
    Stored(IndexOutcome),
    /// Already present and kept (`on_duplicate = "keep"`); the new copy was discarded.
    DuplicateKept { study_uid: String },
}

struct CommitRequest {
    record: InstanceRecord,
    /// The instance was not in the index when its store began (its in-flight claim keeps it
    /// so): not a replaced duplicate.
    new_instance: bool,
    reply: oneshot::Sender<Result<IndexOutcome, String>>,
}

/// Files plus index, shared by every ingest route.
#[derive(Clone)]
pub struct Store {
    pub files: FileStore,
    db: Database,
    committer: mpsc::Sender<CommitRequest>,
    sync: sync::GroupSync<Placed>,
    on_duplicate: DuplicatePolicy,
    durability: Durability,
    /// Serialises the duplicate check and the rename for one SOP Instance UID at a time.
    inflight: InflightSet,
    bus: EventBus,
}

/// Largest number of instances committed in one transaction.
const MAX_BATCH: usize = 64;

impl Store {
    /// Opens the folders and starts the group committer (it stops when `cancel` fires and the
    /// queue has drained). The committer wakes `bus` after committing a `study.received`, so
    /// the event streams at once whichever way the instance came in.
    pub fn open(
        settings: &StorageSettings,
        db: Database,
        bus: EventBus,
        cancel: CancellationToken,
    ) -> Result<(Store, tokio::task::JoinHandle<()>), FileError> {
        let files = FileStore::open(settings)?;
        let sync = sync::GroupSync::start(sync::SystemDisk).map_err(|source| FileError::Io {
            path: "the store's sync thread".into(),
            source,
        })?;
        if files.bucket().is_some() && settings.s3.cache_max_bytes > 0 {
            tokio::spawn(run_eviction(files.clone(), cancel.clone()));
        }
        let (tx, rx) = mpsc::channel(1024);
        let handle = tokio::spawn(run_committer(db.clone(), bus.clone(), rx, cancel));
        Ok((
            Store {
                files,
                db,
                committer: tx,
                sync,
                on_duplicate: settings.on_duplicate,
                durability: settings.durability,
                inflight: Arc::default(),
                bus,
            },
            handle,
        ))
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Claims `sop_instance_uid` for one store and starts looking it up in the index, so the
    /// lookup runs while the data set is still arriving. Two stores of the same instance wait
    /// for each other here, not between the duplicate check and the rename.
    pub async fn reserve(&self, sop_instance_uid: &str) -> Reservation {
        let guard = InflightGuard::acquire(&self.inflight, sop_instance_uid).await;
        let db = self.db.clone();
        let sop = sop_instance_uid.to_string();
        let lookup = tokio::spawn(async move { index::find_instance(&db, &sop).await });
        Reservation { guard, lookup }
    }

    /// Holds each of `sop_instance_uids` as a store of it would, so that no copy of one can be
    /// moved into place until the holds are dropped (retention removes files under them).
    pub(crate) async fn hold(&self, sop_instance_uids: &[String]) -> Vec<impl Drop + Send> {
        let mut held = Vec::with_capacity(sop_instance_uids.len());
        for sop in sop_instance_uids {
            held.push(InflightGuard::acquire(&self.inflight, sop).await);
        }
        held
    }

    /// Finishes a received file, validates it against its command (and, for STOW-RS, the
    /// study the request names), moves it into place and indexes it. Returns only once the file
    /// and its row are durable. `reservation` must come from [`reserve`](Self::reserve) with
    /// the command's SOP Instance UID.
    ///
    /// All the file work (the last write, the header, the checks, the duplicate policy, the
    /// move into place, the sync) is one hop to the sync thread ([`sync`]), which syncs the
    /// files of concurrent associations in batches; then the row goes to the group committer.
    /// A new instance is linked under its final name and durable under its temporary one once
    /// its file is synced ([`FileStore::place_new_blocking`]): a crash before the final
    /// name's folder is synced leaves it there with its row, and [`recover`](Self::recover)
    /// moves it into place. A replacement is renamed and its folder synced before the commit,
    /// since its row already names a file.
    ///
    /// With a bucket (`storage.backend = "s3"`) the file, once final and synced, is put into
    /// it before the row goes to the committer: the answer 0000 means the object store has
    /// confirmed the object and the index names it. A refused PUT (store down, time-out)
    /// refuses the instance (A7xx) and removes the local copy; nothing is indexed.
    pub async fn accept(
        &self,
        reservation: Reservation,
        mut file: IncomingFile,
        meta: &FileMeta,
        source: &Source<'_>,
    ) -> Result<StoreOutcome, StoreError> {
        let lookup_failed =
            |e: &dyn std::fmt::Display| StoreError::Resources(format!("index lookup failed: {e}"));
        let existing = reservation
            .lookup
            .await
            .map_err(|e| lookup_failed(&e))?
            .map_err(|e| lookup_failed(&e))?;
        let new_instance = existing.is_none();
        let earlier_path = existing.as_ref().map(|f| f.file_path.clone());
        // With a bucket, a copy this node does not hold may be there (another node received
        // it, or the cache let it go): the duplicate policy looks there too.
        let stored_in_bucket = match &existing {
            Some(f) if self.files.bucket().is_some() => self
                .files
                .is_stored(f.file_path.as_ref())
                .await
                .map_err(StoreError::from)?,
            _ => false,
        };
        let scanned = file.check().map_err(|e| match e.problem {
            Problem::Structure => StoreError::Unparseable(e.to_string()),
            Problem::Attributes => StoreError::Mismatch(e.to_string()),
        })?;
        file.settle().await?;
        let files = self.files.clone();
        let meta_owned = meta.clone();
        let on_duplicate = self.on_duplicate;
        let durability = self.durability;
        let expected_study = source.expected_study.map(str::to_string);
        let placed = self
            .sync
            .finish(Box::new(move || {
                let (mut staged, head) = file.finish_blocking(durability)?;
                let mut synced = staged
                    .take_file()
                    .filter(|_| durability == Durability::Fsync);
                if existing.is_some() {
                    // A copy that may replace one the index names is synced before it is
                    // renamed over it, not after.
                    if let Some(f) = synced.take() {
                        f.sync_all().map_err(|e| {
                            StoreError::Resources(format!("cannot sync the file: {e}"))
                        })?;
                    }
                }
                let checks = Checks {
                    meta: &meta_owned,
                    expected_study: expected_study.as_deref(),
                    un_sequences: scanned.un_sequences > 0,
                };
                let (placed, placement) = place(
                    &files,
                    staged,
                    head,
                    &checks,
                    existing,
                    stored_in_bucket,
                    on_duplicate,
                )?;
                let (folders, settle) = match placement {
                    None => (FolderSync::default(), None),
                    Some(Placement::Renamed(folders)) => (folders, None),
                    Some(Placement::Linked(settle)) => (FolderSync::default(), Some(settle)),
                };
                Ok(sync::Prepared {
                    file: synced.filter(|_| placement_synced(&placed)),
                    folders,
                    settle,
                    value: placed,
                })
            }))
            .await?;
        let (header, rel, size) = match placed {
            Placed::Kept { study_uid } => return Ok(StoreOutcome::DuplicateKept { study_uid }),
            Placed::Moved { header, rel, size } => (header, rel, size),
        };
        if let Err(e) = self.files.upload(&rel).await {
            // Never acknowledged, so never kept: the sender is told to try again later.
            let _ = tokio::fs::remove_file(self.files.absolute(&rel)).await;
            tracing::warn!(sop_instance_uid = %meta.sop_instance_uid, error = %e, "the object store did not take the instance");
            return Err(StoreError::Resources(format!(
                "the object store did not take the instance: {e}"
            )));
        }
        let record = InstanceRecord {
            file_path: rel.to_string_lossy().into_owned(),
            file_size: size,
            calling_ae: source.calling_ae.to_string(),
            association_id: source.association_id.to_string(),
            received_at: now_ms(),
            header: *header,
        };
        let (reply, rx) = oneshot::channel();
        self.committer
            .send(CommitRequest {
                record,
                new_instance,
                reply,
            })
            .await
            .map_err(|_| StoreError::Resources("the index committer has stopped".into()))?;
        let outcome = rx
            .await
            .map_err(|_| StoreError::Resources("the index committer has stopped".into()))?
            .map_err(StoreError::Resources)?;
        if let Some(old) = earlier_path.filter(|p| std::path::Path::new(p) != rel) {
            // A replacement stored under another path (its study or series changed): the
            // bucket's copy under the old one is no one's any more.
            self.files.delete_objects(vec![old]).await;
        }
        drop(reservation.guard);
        Ok(StoreOutcome::Stored(outcome))
    }

    /// Settles the temporary files of nodes that are gone (an earlier run of this one, or
    /// another node sharing the data folder); call it before listening. One whose instance
    /// has a row but no file in place was lost between the index commit and the folder sync
    /// (a machine crash: the rename was not durable yet). It is whole, because it was synced
    /// before its rename, so it goes into place. Every other one was never acknowledged and is
    /// removed, spares included.
    pub async fn recover(&self) -> Result<(), StoreError> {
        let (mut restored, mut swept) = (0usize, 0usize);
        let leftovers = self.files.leftovers()?;
        for (part, size) in &leftovers.parts {
            let (part, size) = (part.as_path(), *size);
            let claim = match files::part_sop_instance_uid(part) {
                Some(sop) => index::find_instance(&self.db, &sop)
                    .await
                    .map_err(|e| StoreError::Resources(format!("index lookup failed: {e}")))?,
                None => None,
            };
            match claim {
                Some(f)
                    if u64::try_from(f.file_size).ok() == Some(size)
                        && !self.files.absolute(f.file_path.as_ref()).exists() =>
                {
                    self.files.adopt_part_blocking(part, f.file_path.as_ref())?;
                    tracing::warn!(file = %f.file_path, "restored an indexed instance whose rename a crash undid");
                    restored += 1;
                }
                _ => {
                    if std::fs::remove_file(part).is_ok() {
                        swept += 1;
                    }
                }
            }
        }
        leftovers.clear();
        if restored + swept > 0 {
            tracing::info!(
                restored,
                swept,
                "settled temporary files left by an earlier run"
            );
        }
        Ok(())
    }

    /// Writes a `store.failed` event for a refused instance, whichever route it came by
    /// (`source` is the calling AE, or `STOW-RS`); a failure to do so is logged, never fatal.
    pub async fn record_failure(
        &self,
        sop_instance_uid: Option<&str>,
        sop_class_uid: Option<&str>,
        source: &str,
        status: u16,
        reason: &str,
    ) {
        let res = async {
            let mut tx = self.db.begin_write().await?;
            crate::events::append(
                &mut tx,
                self.db.backend,
                crate::events::EventType::StoreFailed,
                None,
                None,
                &serde_json::json!({
                    "sop_instance_uid": sop_instance_uid,
                    "sop_class_uid": sop_class_uid,
                    "calling_ae": source,
                    "status": format!("{status:04X}"),
                    "reason": reason,
                }),
            )
            .await?;
            tx.commit().await
        }
        .await;
        match res {
            Ok(()) => self.bus.notify(),
            Err(e) => tracing::error!(error = %e, "cannot record the store.failed event"),
        }
    }

    /// Checks the free-space policy (A700 before any byte is written).
    pub fn check_room(&self) -> Result<(), StoreError> {
        self.files.check_room().map_err(StoreError::from)
    }

    /// Parses a UID from a command, mapping a bad one to A900.
    pub fn command_uid(field: &'static str, raw: &str) -> Result<Uid, StoreError> {
        Uid::parse(field, raw).map_err(|e| StoreError::Mismatch(e.to_string()))
    }
}

/// A claim on one SOP Instance UID with its index lookup under way ([`Store::reserve`]).
pub struct Reservation {
    guard: InflightGuard,
    lookup: tokio::task::JoinHandle<Result<Option<index::IndexedFile>, sqlx::Error>>,
}

enum Placed {
    Kept {
        study_uid: String,
    },
    Moved {
        header: Box<InstanceHeader>,
        rel: PathBuf,
        size: i64,
    },
}

/// Whether the file of `placed` is kept, so must be synced (a discarded duplicate is not).
fn placement_synced(placed: &Placed) -> bool {
    matches!(placed, Placed::Moved { .. })
}

/// Who sent an instance, and what the request promised about it.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The calling AE title, or `STOW-RS`.
    pub calling_ae: &'a str,
    pub association_id: &'a str,
    /// STOW-RS to `/studies/{study}`: the instance must belong to that study.
    pub expected_study: Option<&'a str>,
}

/// What a stored data set must agree with.
struct Checks<'a> {
    meta: &'a FileMeta,
    expected_study: Option<&'a str>,
    /// The data set holds undefined-length UN sequences: its header is read from the file,
    /// through the rewrite that makes dicom-rs read them as the standard means them.
    un_sequences: bool,
}

/// Reads the header (from memory when it is there), checks it against the command,
/// applies the duplicate policy and gives the file its final name; what that leaves to sync
/// comes back with it (nothing for a discarded duplicate). Blocking.
fn place(
    files: &FileStore,
    staged: StagedFile,
    head: Option<files::Head>,
    checks: &Checks<'_>,
    existing: Option<index::IndexedFile>,
    stored_in_bucket: bool,
    on_duplicate: DuplicatePolicy,
) -> Result<(Placed, Option<Placement>), StoreError> {
    let meta = checks.meta;
    let header = match head {
        _ if checks.un_sequences => InstanceHeader::read(staged.path()),
        Some(h) if h.whole => InstanceHeader::from_part10_bytes(&h.bytes),
        // A header longer than the first chunk is read again from the file.
        Some(h) => InstanceHeader::from_part10_prefix(&h.bytes)
            .or_else(|_| InstanceHeader::read(staged.path())),
        None => InstanceHeader::read(staged.path()),
    }
    .map_err(|e| match e {
        HeaderError::Unparseable(m) => StoreError::Unparseable(m),
        other => StoreError::Mismatch(other.to_string()),
    })?;
    let (study, series, sop) = header
        .identity()
        .map_err(|e| StoreError::Mismatch(e.to_string()))?;
    if sop.as_str() != meta.sop_instance_uid {
        return Err(StoreError::Mismatch(format!(
            "SOPInstanceUID {sop} in the data set differs from Affected SOP Instance UID {} in the command",
            meta.sop_instance_uid
        )));
    }
    match &header.sop_class_uid {
        Some(c) if c.as_str() == meta.sop_class_uid => {}
        Some(c) => {
            return Err(StoreError::Mismatch(format!(
            "SOPClassUID {c} in the data set differs from Affected SOP Class UID {} in the command",
            meta.sop_class_uid
        )))
        }
        None => return Err(StoreError::Mismatch("SOPClassUID is missing".into())),
    }
    if let Some(want) = checks.expected_study.filter(|w| *w != study.as_str()) {
        return Err(StoreError::Mismatch(format!(
            "StudyInstanceUID {study} differs from the study {want} of the request"
        )));
    }
    let rel = FileStore::relative_path(study, series, sop);
    let replacing = existing.is_some();
    if let Some(index::IndexedFile {
        study_uid: existing_study,
        file_path: existing_path,
        ..
    }) = existing
    {
        let stored = files.absolute(existing_path.as_ref());
        if on_duplicate == DuplicatePolicy::Keep && (stored_in_bucket || stored.exists()) {
            tracing::info!(sop_instance_uid = %sop, study_uid = %existing_study,
                "duplicate SOP Instance UID: kept the stored copy, discarded the new one");
            return Ok((
                Placed::Kept {
                    study_uid: existing_study,
                },
                None,
            ));
        }
        if on_duplicate == DuplicatePolicy::Keep {
            // Removed from the disk, or lost to a machine crash before its rename was synced
            // (when it was never acknowledged): the copy re-sent takes its place.
            tracing::warn!(sop_instance_uid = %sop, file = %existing_path,
                "duplicate SOP Instance UID whose stored file is missing: storing the new copy");
        } else {
            tracing::info!(sop_instance_uid = %sop, "duplicate SOP Instance UID: replacing the stored copy");
        }
        if std::path::Path::new(&existing_path) != rel {
            let _ = std::fs::remove_file(&stored);
        }
    }
    let size = staged.size as i64;
    let placement = if replacing {
        Placement::Renamed(files.rename_blocking(staged, &rel)?)
    } else {
        files.place_new_blocking(staged, &rel)?
    };
    Ok((
        Placed::Moved {
            header: Box::new(header),
            rel,
            size,
        },
        Some(placement),
    ))
}

type InflightSet = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// Holds one SOP Instance UID in the in-flight set until dropped, so two associations sending
/// the same instance at once do not race between the duplicate check and the rename.
struct InflightGuard {
    set: InflightSet,
    key: String,
}

impl InflightGuard {
    async fn acquire(set: &InflightSet, key: &str) -> InflightGuard {
        loop {
            if set
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.to_string())
            {
                return InflightGuard {
                    set: set.clone(),
                    key: key.to_string(),
                };
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// How often the local copies are checked against `storage.s3.cache_max_bytes`.
const EVICT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Keeps the local copies of a node on a bucket under `storage.s3.cache_max_bytes`.
async fn run_eviction(files: FileStore, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVICT_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
        if let Err(e) = files.evict(files::CACHE_MIN_AGE).await {
            tracing::warn!(error = %e, "cannot trim the local copies of the bucket's objects");
        }
    }
}

/// Batches index rows: takes whatever is queued (up to [`MAX_BATCH`]), commits it in one
/// transaction and answers each waiter. If the batch fails, each row is retried alone so one
/// bad row cannot fail its neighbours.
async fn run_committer(
    db: Database,
    bus: EventBus,
    mut rx: mpsc::Receiver<CommitRequest>,
    cancel: CancellationToken,
) {
    let mut batch: Vec<CommitRequest> = Vec::with_capacity(MAX_BATCH);
    let mut writer = Writer::new(&db);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = cancel.cancelled() => { rx.close(); rx.recv().await }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match writer.commit(&batch).await {
            Ok(outcomes) => {
                if outcomes.iter().any(|o| o.study_opened) {
                    bus.notify();
                }
                for (req, out) in batch.drain(..).zip(outcomes) {
                    let _ = req.reply.send(Ok(out));
                }
            }
            Err(e) if batch.len() == 1 => {
                tracing::error!(error = %e, "index commit failed");
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(format!("index commit failed: {e}")));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "batched index commit failed; retrying one by one");
                for req in batch.drain(..) {
                    let res = writer
                        .commit(std::slice::from_ref(&req))
                        .await
                        .map(|mut v| v.remove(0))
                        .map_err(|e| format!("index commit failed: {e}"));
                    if res.as_ref().is_ok_and(|o| o.study_opened) {
                        bus.notify();
                    }
                    let _ = req.reply.send(res);
                }
            }
        }
    }
}

/// The committer's database connection. On SQLite it keeps one connection for its writes:
/// a connection's page cache survives only its own commits, and the pool hands out its
/// connections in turn, so each commit would otherwise read its pages afresh after the
/// others' commits. (Not when the pool has a single connection: the lookups need it too.)
struct Writer {
    db: Database,
    keep: bool,
    conn: Option<PoolConnection<Any>>,
}

impl Writer {
    fn new(db: &Database) -> Writer {
        Writer {
            db: db.clone(),
            keep: db.backend == Backend::Sqlite && db.pool.options().get_max_connections() > 1,
            conn: None,
        }
    }

    async fn commit(&mut self, batch: &[CommitRequest]) -> Result<Vec<IndexOutcome>, sqlx::Error> {
        let res = self.try_commit(batch).await;
        if res.is_err() {
            self.discard().await;
        } else if !self.keep {
            self.conn = None;
        }
        res
    }

    /// Closes the connection after an error: its transaction state is unknown, so the next
    /// commit starts on a fresh one.
    async fn discard(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    async fn connection(&mut self) -> Result<&mut PoolConnection<Any>, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.db.pool.acquire().await?);
        }
        Ok(self.conn.as_mut().expect("connection just set"))
    }

    async fn try_commit(
        &mut self,
        batch: &[CommitRequest],
    ) -> Result<Vec<IndexOutcome>, sqlx::Error> {
        let backend = self.db.backend;
        if let [req] = batch {
            if backend == Backend::Sqlite && req.new_instance {
                let conn = self.connection().await?;
                match index::index_alone_into_open_study_sqlite(conn, &req.record).await {
                    Ok(Some(outcome)) => return Ok(vec![outcome]),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "single-instance index write failed; retrying");
                        self.discard().await;
                    }
                }
            }
        }
        let conn = self.connection().await?;
        // The write lock at BEGIN, as in `Database::begin_write` (the index has its own
        // connection here).
        let mut tx = match backend {
            Backend::Sqlite => conn.begin_with(crate::db::SQLITE_BEGIN_WRITE).await?,
            Backend::Postgres => conn.begin().await?,
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for req in batch {
            outcomes.push(index::index_instance(&mut tx, backend, &req.record).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventSettings;
    use crate::metrics::Metrics;

    fn uid(s: &str) -> Uid {
        Uid::parse("uid", s).unwrap()
    }

    /// A temporary file holding `sop` in `dir`, as a crash leaves it; returns its bytes.
    async fn leave_part(
        store: &Store,
        dir: &std::path::Path,
        sop: &str,
        name: &str,
        body: &[u8],
    ) -> Vec<u8> {
        let meta = FileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(),
            sop_instance_uid: sop.into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            source_ae: "SCU".into(),
            receiving_ae: "RADSTREAM".into(),
        };
        let mut f = store.files.begin(&meta).await.unwrap();
        f.write(body).await.unwrap();
        f.settle().await.unwrap();
        let (staged, _) = f.finish_blocking(Durability::Fsync).unwrap();
        let part = dir.join(name);
        std::fs::copy(staged.path(), &part).unwrap();
        std::fs::read(part).unwrap()
    }

    async fn index_row(store: &Store, sop: &str, rel: &std::path::Path, size: usize) {
        let record = InstanceRecord {
            header: InstanceHeader {
                study_uid: Some(uid("1.2.9")),
                series_uid: Some(uid("1.2.9.1")),
                sop_instance_uid: Some(uid(sop)),
                sop_class_uid: Some(uid("1.2.840.10008.5.1.4.1.1.1")),
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                ..Default::default()
            },
            file_path: rel.to_string_lossy().into_owned(),
            file_size: size as i64,
            calling_ae: "SCU".into(),
            association_id: "a1".into(),
            received_at: 1,
        };
        let mut tx = store.db.pool.begin().await.unwrap();
        index::index_instance(&mut tx, store.db.backend, &record)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// After a crash between the index commit and the folder sync, the indexed instance's
    /// temporary file goes into place; a file nobody indexed, one whose row names a file
    /// that exists, and one of the wrong size are removed, and so is the folder of the node
    /// that left them. A node still running (its folder locked) is left alone; a file of the
    /// earlier layout, directly in `tmp/`, is settled too.
    #[tokio::test]
    async fn recover_restores_indexed_parts_and_sweeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StorageSettings {
            data_dir: dir.path().to_path_buf(),
            min_free_bytes: 0,
            min_free_percent: 0.0,
            ..Default::default()
        };
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, None, Durability::Fsync)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let bus = EventBus::new(db.clone(), &EventSettings::default(), Metrics::new())
            .await
            .unwrap();
        let (store, _committer) =
            Store::open(&settings, db, bus, CancellationToken::new()).unwrap();
        let rel = |sop: &str| FileStore::relative_path(&uid("1.2.9"), &uid("1.2.9.1"), &uid(sop));

        let gone = FileStore::open(&settings).unwrap();
        let gone_dir = gone.tmp_dir().to_path_buf();
        let root = dir.path().join("tmp");

        let lost = leave_part(
            &store,
            &gone_dir,
            "1.2.9.1.1",
            "a.part",
            b"\x08\x00\x16\x00lost",
        )
        .await;
        index_row(&store, "1.2.9.1.1", &rel("1.2.9.1.1"), lost.len()).await;
        leave_part(&store, &gone_dir, "1.2.9.1.2", "b.part", b"never indexed").await;
        let placed = leave_part(&store, &gone_dir, "1.2.9.1.3", "c.part", b"placed").await;
        index_row(&store, "1.2.9.1.3", &rel("1.2.9.1.3"), placed.len()).await;
        std::fs::create_dir_all(store.files.absolute(&rel("1.2.9.1.3")).parent().unwrap()).unwrap();
        std::fs::write(store.files.absolute(&rel("1.2.9.1.3")), b"the durable copy").unwrap();
        let short = leave_part(&store, &gone_dir, "1.2.9.1.4", "d.part", b"cut short").await;
        index_row(&store, "1.2.9.1.4", &rel("1.2.9.1.4"), short.len() + 1).await;
        std::fs::write(gone_dir.join("e.part"), b"half").unwrap();
        let early = leave_part(
            &store,
            &root,
            "1.2.9.1.5",
            "f.part",
            b"\x08\x00\x16\x00early",
        )
        .await;
        index_row(&store, "1.2.9.1.5", &rel("1.2.9.1.5"), early.len()).await;
        drop(gone);
        let live = FileStore::open(&settings).unwrap();
        std::fs::write(live.tmp_dir().join("g.part"), b"still arriving").unwrap();

        store.recover().await.unwrap();

        assert_eq!(
            std::fs::read(store.files.absolute(&rel("1.2.9.1.1"))).unwrap(),
            lost
        );
        assert_eq!(
            std::fs::read(store.files.absolute(&rel("1.2.9.1.3"))).unwrap(),
            b"the durable copy"
        );
        assert!(!store.files.absolute(&rel("1.2.9.1.4")).exists());
        assert_eq!(
            std::fs::read(store.files.absolute(&rel("1.2.9.1.5"))).unwrap(),
            early
        );
        assert!(
            !gone_dir.exists(),
            "the folder of a node that is gone is removed"
        );
        assert!(
            live.tmp_dir().join("g.part").exists(),
            "a running node's file is left alone"
        );
        let mut left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        left.sort();
        let mut nodes = vec![
            store.files.tmp_dir().to_path_buf(),
            live.tmp_dir().to_path_buf(),
        ];
        nodes.sort();
        assert_eq!(left, nodes);
    }
}
