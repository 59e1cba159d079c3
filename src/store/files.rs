//! Instance files on disk: stream to a temporary file, then make it durable in its final place.
//!
//! Layout under the data folder:
//! - `tmp/node-<uuid>/<uuid>.part`: an instance being received, or an empty spare made ahead
//!   of time, or the second name of an instance in place whose folder is not synced yet;
//!   removed on any failure. Each running node has a folder of its own, held by a
//!   lock on its `.lock` file, so nodes sharing a data folder never touch each other's files.
//!   A starting node settles the folders whose lock is free (their node is gone) through the
//!   store: a file whose row was committed goes into place, the rest were never acknowledged
//!   and are removed, and so is the folder. `tmp/*.part` of an earlier layout is settled too;
//! - `instances/<study>/<series>/<sop>.dcm`: Part 10 files, data set bytes exactly as received.
//!
//! With `storage.backend = "s3"` the same relative paths are the objects' keys in a bucket
//! ([`super::objects`]): a received file is put there before its row is committed
//! ([`FileStore::upload`]), and the data folder is a cache that readers fill on demand
//! ([`FileStore::local_copy`]) and that is trimmed to `storage.s3.cache_max_bytes`
//! ([`FileStore::evict`]).
//!
//! Durability (`storage.durability = "fsync"`): before the sender gets 0000, a new instance's
//! file is linked into place and fsynced, durable under its temporary name (whose folder was
//! synced before); the final name's folder is synced afterwards and the temporary name then
//! removed (`super::sync`). A replacement is renamed into place and its folders fsynced.

use std::io;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;

use super::objects::{Bucket, ObjectError};
use super::settings::{Durability, StorageBackend, StorageSettings};
use crate::dataset::{DataSetError, Limits, Problem, Scanner, Summary};
use crate::domain::Uid;

/// Errors of the file store.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not enough free space in {dir}: {free} bytes free, at least {needed} required")]
    OutOfSpace { dir: String, free: u64, needed: u64 },
    #[error("storage I/O failed on {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("cannot write the file meta information: {0}")]
    Meta(String),
    #[error(transparent)]
    Object(#[from] ObjectError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The file half of the store: folders and free-space policy.
#[derive(Debug, Clone)]
pub struct FileStore {
    data_dir: PathBuf,
    instances_dir: PathBuf,
    durability: Durability,
    min_free_bytes: u64,
    min_free_percent: f64,
    spares: Arc<Spares>,
    /// This node's folder for temporary files, claimed while the store lives.
    node: Arc<NodeFolder>,
    /// With `storage.backend = "s3"`: where files live for good; the data folder is then the
    /// spool of what arrives and a cache of what is read ([`local_copy`](Self::local_copy)).
    bucket: Option<Bucket>,
    /// Bytes of local copies kept at most with a bucket (0: no limit).
    cache_max_bytes: u64,
}

/// What goes into the Part 10 file meta group, known from the C-STORE command before any data
/// set byte arrives.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    /// Calling AE of the sender, recorded as Source AE Title.
    pub source_ae: String,
    /// Our AE, recorded as Receiving AE Title.
    pub receiving_ae: String,
}

impl FileStore {
    /// Creates the folders. Temporary files left by a crash are the store's to settle
    /// ([`crate::store::Store::recover`]): one may hold an instance whose row was committed.
    pub fn open(settings: &StorageSettings) -> Result<FileStore, FileError> {
        let data_dir = settings.data_dir.clone();
        let tmp_root = data_dir.join("tmp");
        let instances_dir = data_dir.join("instances");
        for d in [&data_dir, &tmp_root, &instances_dir] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let node = NodeFolder::create(&tmp_root)?;
        let bucket = match settings.backend {
            StorageBackend::Local => None,
            StorageBackend::S3 => Some(Bucket::open(&settings.s3)?),
        };
        Ok(FileStore {
            bucket,
            cache_max_bytes: settings.s3.cache_max_bytes,
            spares: Arc::new(Spares::new(node.path.clone(), settings.durability)),
            node: Arc::new(node),
            data_dir,
            instances_dir,
            durability: settings.durability,
            min_free_bytes: settings.min_free_bytes,
            min_free_percent: settings.min_free_percent,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// This node's folder for temporary files.
    pub fn tmp_dir(&self) -> &Path {
        &self.node.path
    }

    /// Free and total bytes of the volume holding the data folder.
    pub fn space(&self) -> Result<(u64, u64), FileError> {
        let stats = fs4::statvfs(&self.data_dir).map_err(io_err(&self.data_dir))?;
        Ok((stats.available_space(), stats.total_space()))
    }

    /// Refuses when the volume is below either threshold, so a sender gets A700 up front
    /// instead of a failure half-way through a large object.
    pub fn check_room(&self) -> Result<(), FileError> {
        let (free, total) = self.space()?;
        let pct_needed = (total as f64 * self.min_free_percent / 100.0) as u64;
        let needed = self.min_free_bytes.max(pct_needed);
        if free < needed {
            return Err(FileError::OutOfSpace {
                dir: self.data_dir.display().to_string(),
                free,
                needed,
            });
        }
        Ok(())
    }

    /// Final place of an instance, relative to the data folder.
    pub fn relative_path(study: &Uid, series: &Uid, sop: &Uid) -> PathBuf {
        Path::new("instances")
            .join(study.as_str())
            .join(series.as_str())
            .join(format!("{}.dcm", sop.as_str()))
    }

    /// Absolute path of a path stored in the index.
    pub fn absolute(&self, relative: &Path) -> PathBuf {
        self.data_dir.join(relative)
    }

    /// The bucket files live in for good, when `storage.backend = "s3"`.
    pub fn bucket(&self) -> Option<&Bucket> {
        self.bucket.as_ref()
    }

    /// Puts the final file at `relative` into the bucket and returns once the store confirmed
    /// it; nothing to do on the local backend.
    pub async fn upload(&self, relative: &Path) -> Result<(), FileError> {
        if let Some(bucket) = &self.bucket {
            bucket.put_file(relative, &self.absolute(relative)).await?;
        }
        Ok(())
    }

    /// The local path of the file the index names `relative`, fetched from the bucket first
    /// when this node has no copy (it was received by another node, or evicted from the
    /// cache): streamed to a temporary file, then renamed into place, so no reader sees half
    /// of it. On the local backend this is [`absolute`](Self::absolute), whether the file
    /// exists or not, as before. Every reader of instance files and derived objects goes
    /// through here.
    pub async fn local_copy(&self, relative: &Path) -> Result<PathBuf, FileError> {
        let path = self.absolute(relative);
        let Some(bucket) = &self.bucket else {
            return Ok(path);
        };
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            if self.cache_max_bytes > 0 {
                touch(&path).await;
            }
            return Ok(path);
        }
        let tmp = super::objects::download_name(self.tmp_dir());
        let size = bucket.get_to_file(relative, &tmp, &path).await?;
        tracing::debug!(file = %relative.display(), size, "fetched from the bucket");
        Ok(path)
    }

    /// The first `len` bytes of the file `relative` (fewer when it is shorter): from the local
    /// copy when there is one, else a ranged GET from the bucket, without fetching the rest.
    pub async fn read_prefix(&self, relative: &Path, len: u64) -> Result<Vec<u8>, FileError> {
        let path = self.absolute(relative);
        match (
            &self.bucket,
            tokio::fs::try_exists(&path).await.unwrap_or(false),
        ) {
            (Some(bucket), false) => Ok(bucket.get_range(relative, 0..len).await?.to_vec()),
            _ => {
                let mut f = tokio::fs::File::open(&path).await.map_err(io_err(&path))?;
                let mut buf = Vec::with_capacity(len.min(1 << 20) as usize);
                (&mut f)
                    .take(len)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(io_err(&path))?;
                Ok(buf)
            }
        }
    }

    /// This store with `bucket` behind it (tests: a bucket on another object store).
    #[cfg(test)]
    pub(crate) fn with_bucket(mut self, bucket: Bucket, cache_max_bytes: u64) -> FileStore {
        self.bucket = Some(bucket);
        self.cache_max_bytes = cache_max_bytes;
        self
    }

    /// Whether the file `relative` is held anywhere: on this disk or in the bucket.
    pub async fn is_stored(&self, relative: &Path) -> Result<bool, FileError> {
        if tokio::fs::try_exists(self.absolute(relative))
            .await
            .unwrap_or(false)
        {
            return Ok(true);
        }
        match &self.bucket {
            Some(bucket) => Ok(bucket.size(relative).await?.is_some()),
            None => Ok(false),
        }
    }

    /// Deletes the bucket's copies of `relatives` (their local files are the caller's);
    /// returns those gone from the bucket (all of them on the local backend).
    pub async fn delete_objects(&self, relatives: Vec<String>) -> Vec<String> {
        let Some(bucket) = &self.bucket else {
            return relatives;
        };
        let mut gone = Vec::with_capacity(relatives.len());
        for rel in relatives {
            match bucket.delete(Path::new(&rel)).await {
                Ok(()) => gone.push(rel),
                Err(e) => tracing::warn!(file = %rel, error = %e, "cannot delete an object"),
            }
        }
        gone
    }

    /// Removes the least recently used local copies of objects that are in the bucket (same
    /// size there) until the copies take at most 90 % of `storage.s3.cache_max_bytes`. A copy
    /// used (written, fetched or read) less than `min_age` ago stays ([`CACHE_MIN_AGE`]), so a
    /// file being uploaded or about to be opened is not the one removed. Returns the bytes
    /// removed.
    pub async fn evict(&self, min_age: std::time::Duration) -> Result<u64, FileError> {
        let Some(bucket) = self.bucket.clone().filter(|_| self.cache_max_bytes > 0) else {
            return Ok(0);
        };
        let roots = [self.instances_dir.clone(), self.data_dir.join("derived")];
        let mut copies = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for root in &roots {
                walk_files(root, &mut found);
            }
            found
        })
        .await
        .map_err(|e| FileError::Io {
            path: self.data_dir.display().to_string(),
            source: io::Error::other(e),
        })?;
        let mut total: u64 = copies.iter().map(|c| c.1).sum();
        if total <= self.cache_max_bytes {
            return Ok(0);
        }
        let target = self.cache_max_bytes / 10 * 9;
        let recent = std::time::SystemTime::now() - min_age;
        copies.sort_by_key(|c| c.2);
        let mut freed = 0;
        for (path, size, used) in copies {
            if total <= target || used > recent {
                break;
            }
            let Ok(rel) = path.strip_prefix(&self.data_dir) else {
                continue;
            };
            if bucket.size(rel).await? != Some(size) {
                continue;
            }
            if tokio::fs::remove_file(&path).await.is_ok() {
                total -= size;
                freed += size;
            }
        }
        if freed > 0 {
            tracing::info!(
                freed,
                kept = total,
                "evicted local copies of objects in the bucket"
            );
        }
        Ok(freed)
    }

    /// Starts a temporary file with the preamble and file meta group. The file is a spare
    /// created ahead of time when one is ready ([`Spares`]); [`IncomingFile::write`] then
    /// writes the first MiB through as it arrives ([`WRITE_THROUGH`]) and the rest in spills.
    pub async fn begin(&self, meta: &FileMeta) -> Result<IncomingFile, FileError> {
        let header = part10_header(meta)?;
        let (file, path) = match self.spares.take() {
            Some((file, path)) => (Some(file), path),
            None => (None, self.spares.fresh_path()),
        };
        self.spares.refill();
        // The whole spill buffer at once (plus room for one more PDV): growing it by doubling
        // copied about as many bytes as the data set itself. Pages are touched only as filled.
        let mut buf = Vec::with_capacity(SPILL_AT + (1 << 16));
        buf.extend_from_slice(&header);
        Ok(IncomingFile {
            check: Scanner::for_transfer_syntax(&meta.transfer_syntax, Limits::DEFAULT),
            file,
            bytes: buf.len() as u64,
            buf,
            spare: None,
            inflight: None,
            path: Some(path),
            spilled: 0,
            head: None,
            writeback: self.durability == Durability::Fsync,
        })
    }

    /// Moves a finished temporary file to `relative` (replacing any file there) and makes the
    /// rename durable. Blocking: call it from a blocking task.
    pub fn persist_blocking(&self, staged: StagedFile, relative: &Path) -> Result<(), FileError> {
        self.rename_blocking(staged, relative)?.run_blocking()
    }

    /// Moves a finished temporary file to `relative` (replacing any file there). The rename is
    /// durable once the returned folders are synced, which the caller may overlap with other
    /// work. Blocking.
    pub fn rename_blocking(
        &self,
        staged: StagedFile,
        relative: &Path,
    ) -> Result<FolderSync, FileError> {
        let dest = self.data_dir.join(relative);
        let mut staged = staged;
        let tmp = staged
            .path
            .take()
            .expect("BUG: staged file persisted twice");
        let parent = dest.parent().expect("BUG: instance path has a parent");
        let created = create_dirs(parent, &self.instances_dir)?;
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&dest)(e));
        }
        if self.durability == Durability::Os {
            return Ok(FolderSync::default());
        }
        let mut dirs = vec![parent.to_path_buf()];
        dirs.extend(
            created
                .iter()
                .filter_map(|d| d.parent().map(Path::to_path_buf)),
        );
        Ok(FolderSync(dirs))
    }

    /// Gives a finished temporary file of a new instance its final name at `relative` while
    /// keeping its temporary one (a hard link), so that it need not wait for a folder sync:
    /// the temporary name was made durable before the file was handed out ([`Spares`]), and
    /// once the file is synced (after this, so the second link is recorded with it) the
    /// instance survives a crash under that name, which [`crate::store::Store::recover`] moves
    /// into place at start. The folders of the final name are synced later, for many instances
    /// at once, and only then is the temporary name removed ([`Settle`]). With durability
    /// `os`, when a file is in the way (a copy nobody indexed) or the link fails (a file system
    /// without hard links), it is renamed instead and the folders are left to the caller to
    /// sync before answering. Blocking.
    pub fn place_new_blocking(
        &self,
        mut staged: StagedFile,
        relative: &Path,
    ) -> Result<Placement, FileError> {
        if self.durability == Durability::Os {
            return self
                .rename_blocking(staged, relative)
                .map(Placement::Renamed);
        }
        let dest = self.data_dir.join(relative);
        let parent = dest.parent().expect("BUG: instance path has a parent");
        let created = create_dirs(parent, &self.instances_dir)?;
        let tmp = staged.path().to_path_buf();
        match std::fs::hard_link(&tmp, &dest) {
            Ok(()) => {
                staged.path = None;
                let mut dirs = vec![parent.to_path_buf()];
                dirs.extend(
                    created
                        .iter()
                        .filter_map(|d| d.parent().map(Path::to_path_buf)),
                );
                Ok(Placement::Linked(Settle {
                    tmp,
                    dest,
                    folders: FolderSync(dirs),
                }))
            }
            // A file in the way, or a file system without hard links: renamed, as with `os`.
            Err(_) => self
                .rename_blocking(staged, relative)
                .map(Placement::Renamed),
        }
    }

    /// Temporary files left by nodes that are gone (their folder's lock is free), with their
    /// sizes, and those of an earlier layout directly in `tmp/`. The folders stay claimed until
    /// [`Leftovers::clear`], so two nodes starting at once do not settle the same one.
    pub fn leftovers(&self) -> Result<Leftovers, FileError> {
        let root = self.data_dir.join("tmp");
        let mut found = Leftovers::default();
        for entry in std::fs::read_dir(&root).map_err(io_err(&root))?.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.extension().is_some_and(|e| e == "part") {
                found.parts.push(part_with_size(path));
            } else if name.to_string_lossy().starts_with(NODE_PREFIX) && path != self.node.path {
                let Some(lock) = NodeFolder::claim_abandoned(&path) else {
                    continue;
                };
                for part in std::fs::read_dir(&path).map_err(io_err(&path))?.flatten() {
                    let part = part.path();
                    if part.extension().is_some_and(|e| e == "part") {
                        found.parts.push(part_with_size(part));
                    }
                }
                found.folders.push((path, lock));
            }
        }
        Ok(found)
    }

    /// Moves a leftover temporary file (see [`leftovers`](Self::leftovers)) to
    /// `relative` durably. Blocking.
    pub fn adopt_part_blocking(&self, part: &Path, relative: &Path) -> Result<(), FileError> {
        let staged = StagedFile {
            path: Some(part.to_path_buf()),
            file: None,
            size: 0,
        };
        self.persist_blocking(staged, relative)
    }
}

/// How long a local copy stays after its last use however full the cache is.
pub const CACHE_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Marks a local copy as used now (its modification time is the cache's clock); a failure
/// only makes it an earlier candidate for eviction.
async fn touch(path: &Path) {
    let path = path.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || {
        std::fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
    })
    .await;
}

/// Every file under `dir` with its size and modification time (blocking).
fn walk_files(dir: &Path, out: &mut Vec<(PathBuf, u64, std::time::SystemTime)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk_files(&entry.path(), out);
        } else if meta.is_file() {
            let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            out.push((entry.path(), meta.len(), used));
        }
    }
}

/// Temporary files to settle at start ([`FileStore::leftovers`]).
#[derive(Debug, Default)]
pub struct Leftovers {
    pub parts: Vec<(PathBuf, u64)>,
    /// Folders of nodes that are gone, with the lock this node holds on each.
    folders: Vec<(PathBuf, std::fs::File)>,
}

impl Leftovers {
    /// Removes the folders of nodes that are gone, once their parts are settled.
    pub fn clear(self) {
        for (dir, lock) in self.folders {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot remove the temporary folder of a node that is gone");
            }
            drop(lock);
        }
    }
}

fn part_with_size(path: PathBuf) -> (PathBuf, u64) {
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    (path, size)
}

const NODE_PREFIX: &str = "node-";
const LOCK_FILE: &str = ".lock";

/// A running node's folder for temporary files, `tmp/node-<uuid>/`, claimed by an exclusive
/// lock on its `.lock` file for as long as the node lives: the operating system releases it
/// when the process ends, however it ends, and a node starting later settles the folder.
#[derive(Debug)]
struct NodeFolder {
    path: PathBuf,
    lock: Option<std::fs::File>,
}

impl NodeFolder {
    /// Makes the folder under another name, locks it, then renames it into view: a node
    /// scanning `tmp/` never sees a node folder without its lock held.
    fn create(tmp_root: &Path) -> Result<NodeFolder, FileError> {
        use fs4::fs_std::FileExt;
        let id = uuid::Uuid::new_v4().simple();
        let hidden = tmp_root.join(format!(".{NODE_PREFIX}{id}"));
        let path = tmp_root.join(format!("{NODE_PREFIX}{id}"));
        std::fs::create_dir(&hidden).map_err(io_err(&hidden))?;
        let lock_path = hidden.join(LOCK_FILE);
        let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
        if !lock.try_lock_exclusive().map_err(io_err(&lock_path))? {
            return Err(io_err(&lock_path)(io::Error::other("a fresh lock is held")));
        }
        std::fs::rename(&hidden, &path).map_err(io_err(&path))?;
        Ok(NodeFolder {
            path,
            lock: Some(lock),
        })
    }

    /// The lock of another node's folder, if that node is gone.
    fn claim_abandoned(dir: &Path) -> Option<std::fs::File> {
        use fs4::fs_std::FileExt;
        let lock = std::fs::File::open(dir.join(LOCK_FILE)).ok()?;
        lock.try_lock_exclusive().ok()?.then_some(lock)
    }
}

impl Drop for NodeFolder {
    /// On a clean stop the folder goes if nothing but its lock is left in it. Otherwise (a
    /// spare still being made) it stays with its lock file, released, for the next start.
    fn drop(&mut self) {
        let only_lock = std::fs::read_dir(&self.path)
            .map(|entries| entries.flatten().all(|e| e.file_name() == LOCK_FILE))
            .unwrap_or(false);
        if only_lock {
            let _ = std::fs::remove_file(self.path.join(LOCK_FILE));
            let _ = std::fs::remove_dir(&self.path);
        }
        drop(self.lock.take());
    }
}

/// The SOP Instance UID in the file meta group of a temporary file, if it can be read.
pub fn part_sop_instance_uid(part: &Path) -> Option<String> {
    let mut f = std::fs::File::open(part).ok()?;
    let mut preamble = [0u8; 128];
    std::io::Read::read_exact(&mut f, &mut preamble).ok()?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(std::io::BufReader::new(f)).ok()?;
    Some(
        meta.media_storage_sop_instance_uid()
            .trim_end_matches(['\0', ' '])
            .to_string(),
    )
}

/// Empty temporary files created ahead of need. Creating a file allocates an inode, which on a
/// busy volume takes longer than writing half a megabyte into the page cache: made here in the
/// background, it is off the path a sender waits on. Spares left by a stop are empty `.part`
/// files, removed at the next start like any unacknowledged leftover.
///
/// With `fsync`, the folder is synced before new spares are handed out. Should the machine go
/// down once an instance's row is committed but before its rename reaches the disk,
/// [`crate::store::Store::recover`] finds the synced file under its temporary name, so that
/// name must be on disk too: a journalling file system records it with the file's own sync,
/// one without a journal (ext4 on this project's test machines) does not.
#[derive(Debug)]
struct Spares {
    dir: PathBuf,
    ready: Mutex<Vec<(std::fs::File, PathBuf)>>,
    refilling: AtomicBool,
    sync_dir: bool,
}

/// Spares kept ready: enough for a burst of instances from a few associations at once.
const SPARES: usize = 16;

/// Spares made, at most, before their folder is synced and they are handed out. A refill starts
/// once half the spares are taken, so a steady stream of instances costs one sync of the folder
/// per [`SPARE_BATCH`] instances, not one each.
const SPARE_BATCH: usize = 8;

impl Spares {
    fn new(dir: PathBuf, durability: Durability) -> Spares {
        Spares {
            dir,
            ready: Mutex::default(),
            refilling: AtomicBool::new(false),
            sync_dir: durability == Durability::Fsync,
        }
    }

    fn count(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Makes spares until [`SPARES`] are ready, [`SPARE_BATCH`] at a time. Blocking.
    fn top_up_blocking(&self) -> Result<(), FileError> {
        while self.count() < SPARES {
            let mut batch = Vec::with_capacity(SPARE_BATCH);
            let made = (|| {
                for _ in 0..(SPARES - self.count()).min(SPARE_BATCH) {
                    let path = self.fresh_path();
                    batch.push((std::fs::File::create(&path).map_err(io_err(&path))?, path));
                }
                if self.sync_dir {
                    sync_dir(&self.dir)?;
                }
                Ok(())
            })();
            if let Err(e) = made {
                for (_, path) in batch {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
            self.ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(batch);
        }
        Ok(())
    }

    fn fresh_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()))
    }

    fn take(&self) -> Option<(std::fs::File, PathBuf)> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Tops the spares up on the blocking pool once half of them are taken, unless that is
    /// under way already or there is no runtime (a blocking caller then creates its file
    /// itself).
    fn refill(self: &Arc<Self>) {
        if self.count() > SPARES - SPARE_BATCH {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let spares = self.clone();
        rt.spawn_blocking(move || {
            if let Err(e) = spares.top_up_blocking() {
                tracing::warn!(error = %e, "cannot make spare temporary files");
            }
            spares.refilling.store(false, Ordering::Release);
        });
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        for (_, path) in self
            .ready
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How [`FileStore::place_new_blocking`] gave a file its final name.
#[derive(Debug)]
pub enum Placement {
    /// Linked: durable under its temporary name once the file is synced.
    Linked(Settle),
    /// Renamed: durable once these folders are synced.
    Renamed(FolderSync),
}

/// A file with two names, its final one and its temporary one: once the final name's folders
/// are synced, the temporary name can go.
#[derive(Debug)]
pub struct Settle {
    pub tmp: PathBuf,
    /// The final name, removed with the temporary one if the file cannot be synced.
    pub dest: PathBuf,
    pub folders: FolderSync,
}

/// Folders whose entries a rename changed: the rename is durable once they are synced.
#[must_use = "the rename is not durable until its folders are synced"]
#[derive(Debug, Default)]
pub struct FolderSync(Vec<PathBuf>);

impl FolderSync {
    /// Syncs the folders. Blocking.
    pub fn run_blocking(self) -> Result<(), FileError> {
        self.0.iter().try_for_each(|d| sync_dir(d))
    }

    /// Nothing to sync (durability `os`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The folders, for a caller that syncs them itself (once each for a batch).
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn of(dirs: Vec<PathBuf>) -> FolderSync {
        FolderSync(dirs)
    }
}

/// Creates the missing folders of `dir` below `root`, returning those it made (outermost first).
fn create_dirs(dir: &Path, root: &Path) -> Result<Vec<PathBuf>, FileError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() && cur != root {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    missing.reverse();
    for d in &missing {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(d)(e)),
        }
    }
    Ok(missing)
}

fn sync_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

/// The 128-byte preamble, `DICM` and the file meta group that [`FileStore::begin`] writes
/// before the data set a C-STORE delivers.
pub fn part10_header(meta: &FileMeta) -> Result<Vec<u8>, FileError> {
    let table = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(meta.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(meta.sop_instance_uid.as_str())
        .transfer_syntax(meta.transfer_syntax.as_str())
        .implementation_class_uid(crate::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(crate::IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(meta.source_ae.as_str())
        .receiving_application_entity_title(meta.receiving_ae.as_str())
        .build()
        .map_err(|e| FileError::Meta(e.to_string()))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    table
        .write(&mut out)
        .map_err(|e| FileError::Meta(e.to_string()))?;
    Ok(out)
}

/// Bytes an [`IncomingFile`] buffers in memory before handing them to the blocking pool to
/// write, past the first [`SPILL_AT`] bytes of a file (see [`WRITE_THROUGH`]). With durability
/// `fsync` each chunk is also handed to the disk at once (`sync_file_range`), so the closing
/// `fdatasync` of a large object finds little left to write.
pub const SPILL_AT: usize = 1 << 20;

/// The first [`SPILL_AT`] bytes of a file (the whole of a typical radiograph) are written as
/// they arrive, in chunks of this size, by the receiving task itself, and their writeback
/// starts at once: the sender then waits only for the tail and the metadata to reach the
/// disk, not for the whole instance. A write of this size into the page cache takes tens of
/// microseconds; a hop to the blocking pool and back would cost about as much, per chunk. The
/// price: on a disk so congested that the kernel throttles writers, the write stalls the other
/// tasks of the runtime worker it runs on (large objects past their first MiB are unaffected).
pub const WRITE_THROUGH: usize = 128 << 10;

/// A spill running on the blocking pool; it gives back the file and the emptied buffer.
type Spill = tokio::task::JoinHandle<Result<(std::fs::File, Vec<u8>), FileError>>;

/// A temporary file receiving a data set. Dropped before
/// [`finish_blocking`](Self::finish_blocking), it deletes
/// itself: an aborted association leaves nothing behind.
pub struct IncomingFile {
    /// The structural check of the data set, fed as it arrives (`None`: a transfer syntax
    /// whose encoding is unknown, refused at the end).
    check: Option<Scanner>,
    /// A spare made ahead of time, or else created by the first spill (or at finish); away
    /// while a spill is in flight.
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    /// The buffer the last spill gave back, reused for the next one.
    spare: Option<Vec<u8>>,
    /// At most one spill writes while the next chunk arrives.
    inflight: Option<Spill>,
    path: Option<PathBuf>,
    bytes: u64,
    /// Bytes handed to the file so far (written through or spilled): the offset of the next.
    spilled: u64,
    /// The first chunk written through, kept for reading the header without the disk.
    head: Option<Vec<u8>>,
    /// Start each chunk's writeback (durability `fsync`).
    writeback: bool,
}

/// The start of a finished file, held in memory so its header is read without the disk.
#[derive(Debug)]
pub struct Head {
    pub bytes: Vec<u8>,
    /// `bytes` is the whole file; otherwise a header cut short in them is read from the file.
    pub whole: bool,
}

impl IncomingFile {
    /// Appends data set bytes. Once the check has found the data set broken, the bytes are
    /// only counted: the instance will be refused, so the disk is spared the rest.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
        if let Some(check) = &mut self.check {
            if check.feed(data).is_err() {
                self.bytes += data.len() as u64;
                return Ok(());
            }
        }
        self.bytes += data.len() as u64;
        if self.buf.len() + data.len() >= WRITE_THROUGH
            && self.spilled < SPILL_AT as u64
            && self.inflight.is_none()
            && self.file.is_some()
        {
            self.write_through(data)?;
        } else {
            self.buf.extend_from_slice(data);
            if self.buf.len() >= SPILL_AT {
                self.spill().await?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered, then `data`, into the file from the calling task, in one
    /// system call and without copying `data` (a PDU's value, straight from the receive
    /// buffer), and starts their writeback (see [`WRITE_THROUGH`]). The file exists already (a
    /// spare): creating one is left to the blocking pool. The first [`WRITE_THROUGH`] bytes
    /// are kept for the header.
    fn write_through(&mut self, data: &[u8]) -> Result<(), FileError> {
        let path = self.path.as_deref().expect("BUG: write after finish");
        let file = self
            .file
            .as_mut()
            .expect("BUG: write-through without a file");
        write_both(file, &self.buf, data).map_err(io_err(path))?;
        let len = (self.buf.len() + data.len()) as u64;
        if self.writeback {
            start_writeback(file, self.spilled, len);
        }
        self.spilled += len;
        if self.head.is_none() {
            let keep = data.len().min(WRITE_THROUGH.saturating_sub(self.buf.len()));
            let mut head = std::mem::take(&mut self.buf);
            head.extend_from_slice(&data[..keep]);
            self.head = Some(head);
            self.buf = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(WRITE_THROUGH));
        }
        self.buf.clear();
        Ok(())
    }

    /// Hands the buffer to a blocking task that appends it (creating the file if needed) and,
    /// with `fsync`, starts its writeback; reception goes on meanwhile. Waits for the previous
    /// spill first, so writes stay in order.
    async fn spill(&mut self) -> Result<(), FileError> {
        self.settle().await?;
        let path = self.path.clone().expect("BUG: write after finish");
        let file = self.file.take();
        let fresh = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(SPILL_AT + (1 << 16)));
        let buf = std::mem::replace(&mut self.buf, fresh);
        let offset = self.spilled;
        self.spilled += buf.len() as u64;
        let writeback = self.writeback;
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            let f = append(file, &path, &buf, writeback)?;
            if writeback {
                start_writeback(&f, offset, buf.len() as u64);
            }
            let mut buf = buf;
            buf.clear();
            Ok((f, buf))
        }));
        Ok(())
    }

    /// Waits for the spill in flight, if any. Call it before
    /// [`finish_blocking`](Self::finish_blocking).
    pub async fn settle(&mut self) -> Result<(), FileError> {
        if let Some(spill) = self.inflight.take() {
            let path = self.path.clone().unwrap_or_default();
            let (file, buf) = spill.await.map_err(|e| FileError::Io {
                path: path.display().to_string(),
                source: io::Error::other(e),
            })??;
            self.file = Some(file);
            self.spare = Some(buf);
        }
        Ok(())
    }

    /// The verdict of the structural check on everything written: call it once the data set
    /// is complete. Refused: broken encoding is [`Problem::Structure`], Pixel Data at odds with
    /// its attributes [`Problem::Attributes`].
    pub fn check(&mut self) -> Result<Summary, DataSetError> {
        match self.check.take() {
            Some(scanner) => scanner.finish(),
            None => Err(DataSetError {
                problem: Problem::Structure,
                offset: 0,
                message: "the transfer syntax has no known encoding".into(),
            }),
        }
    }

    /// Bytes written so far, header included.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Writes what is buffered; the file stays in `tmp/` until persisted, and is synced by the
    /// caller ([`StagedFile::take_file`]): the store syncs it with the other files of its
    /// batch once it is in place. Blocking: call
    /// it after [`settle`](Self::settle). Returns the start of the file too when memory still
    /// holds it, so its header is parsed without reading the file back.
    pub fn finish_blocking(
        mut self,
        durability: Durability,
    ) -> Result<(StagedFile, Option<Head>), FileError> {
        let path = self.path.take().expect("BUG: finish twice");
        if self.inflight.is_some() {
            // Not settled: the spill may still be writing. Keep the path so Drop cleans up.
            self.path = Some(path.clone());
            return Err(FileError::Io {
                path: path.display().to_string(),
                source: io::Error::other("finished while a write was still in flight"),
            });
        }
        let file = self.file.take();
        let buf = std::mem::take(&mut self.buf);
        // From here on the staged file owns the path (and deletes it if dropped).
        let mut staged = StagedFile {
            path: Some(path.clone()),
            file: None,
            size: self.bytes,
        };
        let f = append(file, &path, &buf, durability == Durability::Fsync)?;
        staged.file = Some(f);
        let head = match self.head.take() {
            Some(bytes) => Some(Head {
                bytes,
                whole: false,
            }),
            None if self.spilled == 0 => Some(Head {
                bytes: buf,
                whole: true,
            }),
            None => None,
        };
        Ok((staged, head))
    }
}

/// Starts writing `len` bytes at `offset` of `file` (`len` 0: to its end) to the disk without
/// waiting for them: the closing `fdatasync` then has only the tail (and the metadata) left.
/// Advisory: a failure here only means that sync does all the work.
#[cfg(target_os = "linux")]
pub(super) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is open for the call.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

/// Writes `a` then `b` with as few system calls as the kernel allows.
fn write_both(file: &mut std::fs::File, a: &[u8], b: &[u8]) -> io::Result<()> {
    let mut slices = [io::IoSlice::new(a), io::IoSlice::new(b)];
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `buf` at the end of `file`, creating the file at `path` first if there is none yet
/// (no spare was ready); with `sync_name`, its folder is then synced, as the spares' is.
fn append(
    file: Option<std::fs::File>,
    path: &Path,
    buf: &[u8],
    sync_name: bool,
) -> Result<std::fs::File, FileError> {
    let mut f = match file {
        Some(f) => f,
        None => {
            let f = std::fs::File::create(path).map_err(io_err(path))?;
            if sync_name {
                if let Some(dir) = path.parent() {
                    sync_dir(dir)?;
                }
            }
            f
        }
    };
    f.write_all(buf).map_err(io_err(path))?;
    Ok(f)
}

impl Drop for IncomingFile {
    fn drop(&mut self) {
        let Some(p) = self.path.take() else { return };
        // A spill in flight may still create the file: remove it once that spill is done.
        if let (Some(spill), Ok(rt)) = (self.inflight.take(), tokio::runtime::Handle::try_current())
        {
            rt.spawn(async move {
                let _ = spill.await;
                let _ = std::fs::remove_file(p);
            });
            return;
        }
        let _ = std::fs::remove_file(p);
    }
}

/// A complete temporary file waiting to be validated, moved into place and synced.
#[derive(Debug)]
pub struct StagedFile {
    path: Option<PathBuf>,
    /// Still open, for the sync after the move (none for a leftover adopted at start, synced
    /// before).
    file: Option<std::fs::File>,
    pub size: u64,
}

impl StagedFile {
    pub fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("BUG: staged file already persisted")
    }

    /// The open file, to sync once it is in place.
    pub fn take_file(&mut self) -> Option<std::fs::File> {
        self.file.take()
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> FileStore {
        FileStore::open(&StorageSettings {
            data_dir: dir.to_path_buf(),
            min_free_bytes: 0,
            min_free_percent: 0.0,
            ..Default::default()
        })
        .unwrap()
    }

    fn meta() -> FileMeta {
        FileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(),
            sop_instance_uid: "1.2.3.4".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            source_ae: "SCU".into(),
            receiving_ae: "RADSTREAM".into(),
        }
    }

    /// Files in `tmp/` once no refill of the spares is under way, spares included.
    async fn settled_tmp(s: &FileStore) -> usize {
        spares_ready(s).await;
        parts_in(s.tmp_dir())
    }

    fn parts_in(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "part")
            })
            .count()
    }

    /// An instance dropped before it is finished, spare or fresh file, leaves only the spares.
    #[tokio::test]
    async fn dropped_incoming_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for data in [&b"abc"[..], &[9u8; WRITE_THROUGH + 5]] {
            let mut f = s.begin(&meta()).await.unwrap();
            f.write(data).await.unwrap();
            drop(f);
            assert_eq!(settled_tmp(&s).await, s.spares.count());
        }
    }

    #[tokio::test]
    async fn persisted_file_is_part10_with_data_set_appended() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut f = s.begin(&meta()).await.unwrap();
        f.write(b"\x08\x00\x16\x00").await.unwrap();
        let (staged, head) = f.finish_blocking(Durability::Fsync).unwrap();
        assert!(head.is_some_and(|h| h.whole && h.bytes.ends_with(b"\x08\x00\x16\x00")));
        let uid = |s: &str| Uid::parse("x", s).unwrap();
        let rel = FileStore::relative_path(&uid("1.2"), &uid("1.2.3"), &uid("1.2.3.4"));
        s.persist_blocking(staged, &rel).unwrap();
        let bytes = std::fs::read(s.absolute(&rel)).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        assert!(bytes.ends_with(b"\x08\x00\x16\x00"));
        let meta = dicom_object::meta::FileMetaTable::from_reader(&bytes[128..]).unwrap();
        assert_eq!(meta.transfer_syntax(), "1.2.840.10008.1.2.1");
        assert_eq!(settled_tmp(&s).await, s.spares.count());
    }

    /// Writes `data` in pieces of `piece` bytes and finishes; returns the file's bytes, the
    /// offset where `data` starts in it, and the head kept in memory.
    async fn round_trip(
        s: &FileStore,
        data: &[u8],
        piece: usize,
    ) -> (Vec<u8>, usize, Option<Head>) {
        let mut f = s.begin(&meta()).await.unwrap();
        let start = f.len() as usize;
        for p in data.chunks(piece) {
            f.write(p).await.unwrap();
        }
        f.settle().await.unwrap();
        let (staged, head) = f.finish_blocking(Durability::Fsync).unwrap();
        let bytes = std::fs::read(staged.path()).unwrap();
        assert_eq!(staged.size as usize, bytes.len());
        assert_eq!(
            part_sop_instance_uid(staged.path()).as_deref(),
            Some("1.2.3.4")
        );
        (bytes, start, head)
    }

    /// Waits until the spares are at rest (more than half of them ready, no refill under way)
    /// and the task that made them has let go of them.
    async fn spares_ready(s: &FileStore) {
        for _ in 0..500 {
            if s.spares.count() > SPARES - SPARE_BATCH
                && !s.spares.refilling.load(Ordering::Acquire)
                && Arc::strong_count(&s.spares) == 1
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the spares were never made");
    }

    /// A data set larger than the write-through part goes out first in chunks from the task,
    /// then in spills, in order, and the finished file holds every byte once; the first chunk
    /// stays in memory for the header. Without a spare ready, it goes out in spills alone.
    #[tokio::test]
    async fn written_through_and_spilled_file_keeps_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let data: Vec<u8> = (0..SPILL_AT * 3 + 1234).map(|i| (i % 251) as u8).collect();

        let (bytes, start, head) = round_trip(&s, &data, 16 << 10).await;
        assert_eq!(&bytes[start..], &data[..], "no spare ready: spills alone");
        assert!(head.is_none(), "a spilled file's header is read from disk");

        spares_ready(&s).await;
        for piece in [16 << 10, 300 << 10, SPILL_AT + 7] {
            let (bytes, start, head) = round_trip(&s, &data, piece).await;
            assert_eq!(&bytes[start..], &data[..], "pieces of {piece} bytes");
            let head = head.expect("the first chunk is kept");
            assert!(!head.whole);
            assert!(head.bytes.len() >= WRITE_THROUGH);
            assert_eq!(head.bytes[..], bytes[..head.bytes.len()]);
        }
    }

    /// Taken spares are replaced in the background, a batch at a time once half of them are
    /// taken, and the spares still unused when the store goes are removed with it, and so is
    /// its folder, with nothing left in it.
    #[tokio::test]
    async fn spares_are_refilled_and_removed_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let folder = s.tmp_dir().to_path_buf();
        drop(s.begin(&meta()).await.unwrap());
        spares_ready(&s).await;
        assert_eq!(parts_in(&folder), SPARES);
        let mut taken = Vec::new();
        for _ in 0..SPARE_BATCH - 1 {
            taken.push(s.begin(&meta()).await.unwrap());
        }
        spares_ready(&s).await;
        assert_eq!(s.spares.count(), SPARES - SPARE_BATCH + 1, "no refill yet");
        taken.push(s.begin(&meta()).await.unwrap());
        for _ in 0..500 {
            if s.spares.count() == SPARES {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        spares_ready(&s).await;
        assert_eq!(parts_in(&folder), SPARES + SPARE_BATCH);
        drop(taken);
        drop(s);
        assert!(!folder.exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    /// Each store has its own locked folder: another store on the same data folder does not
    /// list its files as leftovers while it lives, and does once it is gone (its lock freed).
    #[tokio::test]
    async fn a_running_store_s_files_are_not_leftovers_of_another() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path());
        let b = store(dir.path());
        assert_ne!(a.tmp_dir(), b.tmp_dir());
        drop(a.begin(&meta()).await.unwrap());
        spares_ready(&a).await;
        let mut f = a.begin(&meta()).await.unwrap();
        f.write(&[1u8; WRITE_THROUGH]).await.unwrap();
        spares_ready(&a).await;
        assert!(b.leftovers().unwrap().parts.is_empty());
        let a_dir = a.tmp_dir().to_path_buf();
        std::mem::forget(f);
        drop(a);
        assert!(
            a_dir.exists(),
            "a folder with files in it stays for the next start"
        );
        let found = b.leftovers().unwrap();
        assert_eq!(
            found.parts.len(),
            1,
            "the instance's file; the spares went with a"
        );
        let c = store(dir.path());
        assert!(
            c.leftovers().unwrap().parts.is_empty(),
            "claimed by b until cleared"
        );
        found.clear();
        assert!(!a_dir.exists());
        assert!(c.leftovers().unwrap().parts.is_empty());
    }

    /// Over the cache limit, the least recently used copies that the bucket holds (same size)
    /// go first, down to 90 % of the limit; a copy the bucket lacks, or used recently, stays.
    /// A read brings an evicted copy back from the bucket.
    #[tokio::test]
    async fn eviction_removes_old_copies_the_bucket_holds_and_reads_fetch_them_back() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::new(
            Arc::new(object_store::memory::InMemory::new()),
            "",
            1 << 20,
            5 << 20,
        );
        let s = store(dir.path()).with_bucket(bucket.clone(), 1000);
        let rel = |n: &str| PathBuf::from(format!("instances/1/2/{n}.dcm"));
        let hour = Duration::from_secs(3600);
        for (i, name) in ["old", "not-in-bucket", "newer"].into_iter().enumerate() {
            let path = s.absolute(&rel(name));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![i as u8; 400]).unwrap();
            if name != "not-in-bucket" {
                s.upload(&rel(name)).await.unwrap();
            }
            let used = SystemTime::now() - hour * (3 - i as u32);
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(used)
                .unwrap();
        }
        assert_eq!(s.evict(hour * 10).await.unwrap(), 0, "all used recently");
        assert_eq!(s.evict(Duration::from_secs(60)).await.unwrap(), 400);
        assert!(!s.absolute(&rel("old")).exists());
        assert!(s.absolute(&rel("not-in-bucket")).exists());
        assert!(s.absolute(&rel("newer")).exists());
        let back = s.local_copy(&rel("old")).await.unwrap();
        assert_eq!(std::fs::read(back).unwrap(), vec![0u8; 400]);
        assert!(s.is_stored(&rel("newer")).await.unwrap());
    }

    /// An instance dropped while a spill is still writing leaves no file once that spill ends.
    #[tokio::test]
    async fn dropped_file_with_a_spill_in_flight_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut f = s.begin(&meta()).await.unwrap();
        f.write(&vec![7u8; SPILL_AT + 1]).await.unwrap();
        drop(f);
        for _ in 0..200 {
            if settled_tmp(&s).await == s.spares.count() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the temporary file outlived its instance");
    }
}
