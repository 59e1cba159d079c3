//! Instance files on disk: stream to a temporary file, then make it durable in its final place.
//!
//! Layout under the data folder:
//! - `tmp/<uuid>.part`: an instance being received; removed on any failure, and swept at start
//!   (a `.part` file was never acknowledged, so nobody is owed it);
//! - `instances/<study>/<series>/<sop>.dcm`: Part 10 files, data set bytes exactly as received.
//!
//! Durability (`storage.durability = "fsync"`): the file is fsynced, renamed into place
//! atomically, and every folder whose entries changed is fsynced, before the index row is
//! committed and the sender gets 0000.

use std::io;
use std::path::{Path, PathBuf};

use std::io::Write;

use crate::configuration::{Durability, StorageSettings};
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
    tmp_dir: PathBuf,
    instances_dir: PathBuf,
    durability: Durability,
    min_free_bytes: u64,
    min_free_percent: f64,
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
    /// Creates the folders and removes temporary files left by a crash.
    pub fn open(settings: &StorageSettings) -> Result<FileStore, FileError> {
        let data_dir = settings.data_dir.clone();
        let tmp_dir = data_dir.join("tmp");
        let instances_dir = data_dir.join("instances");
        for d in [&data_dir, &tmp_dir, &instances_dir] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let mut swept = 0usize;
        for entry in std::fs::read_dir(&tmp_dir)
            .map_err(io_err(&tmp_dir))?
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "part")
                && std::fs::remove_file(entry.path()).is_ok()
            {
                swept += 1;
            }
        }
        if swept > 0 {
            tracing::info!(
                swept,
                "removed unacknowledged temporary files left by an earlier run"
            );
        }
        Ok(FileStore {
            data_dir,
            tmp_dir,
            instances_dir,
            durability: settings.durability,
            min_free_bytes: settings.min_free_bytes,
            min_free_percent: settings.min_free_percent,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Free and total bytes of the volume holding the data folder.
    pub fn space(&self) -> Result<(u64, u64), FileError> {
        let free = fs4::available_space(&self.data_dir).map_err(io_err(&self.data_dir))?;
        let total = fs4::total_space(&self.data_dir).map_err(io_err(&self.data_dir))?;
        Ok((free, total))
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

    /// Starts a temporary file with the preamble and file meta group. Nothing touches the disk
    /// until [`IncomingFile::write`] has buffered [`SPILL_AT`] bytes or the file is finished, so
    /// a typical instance costs one blocking hop to write and sync instead of one per step.
    pub async fn begin(&self, meta: &FileMeta) -> Result<IncomingFile, FileError> {
        let header = part10_header(meta)?;
        let path = self
            .tmp_dir
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        // The whole spill buffer at once (plus room for one more PDV): growing it by doubling
        // copied about as many bytes as the data set itself. Pages are touched only as filled.
        let mut buf = Vec::with_capacity(SPILL_AT + (1 << 16));
        buf.extend_from_slice(&header);
        Ok(IncomingFile {
            file: None,
            bytes: buf.len() as u64,
            buf,
            path: Some(path),
        })
    }

    /// Moves a finished temporary file to `relative` (replacing any file there) and makes the
    /// rename durable. Blocking: call it from a blocking task.
    pub fn persist_blocking(&self, staged: StagedFile, relative: &Path) -> Result<(), FileError> {
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
        if self.durability == Durability::Fsync {
            sync_dir(parent)?;
            for dir in created {
                if let Some(p) = dir.parent() {
                    sync_dir(p)?;
                }
            }
        }
        Ok(())
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

fn part10_header(meta: &FileMeta) -> Result<Vec<u8>, FileError> {
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

/// Bytes an [`IncomingFile`] buffers in memory before writing them out.
pub const SPILL_AT: usize = 1 << 20;

/// A temporary file receiving a data set. Dropped before
/// [`finish_blocking`](Self::finish_blocking), it deletes
/// itself: an aborted association leaves nothing behind.
pub struct IncomingFile {
    /// Created on the first spill (or at finish).
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    path: Option<PathBuf>,
    bytes: u64,
}

impl IncomingFile {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
        self.buf.extend_from_slice(data);
        self.bytes += data.len() as u64;
        if self.buf.len() >= SPILL_AT {
            self.spill().await?;
        }
        Ok(())
    }

    /// Writes the buffer out on a blocking thread, creating the file if needed.
    async fn spill(&mut self) -> Result<(), FileError> {
        let path = self.path.clone().expect("BUG: write after finish");
        let file = self.file.take();
        let buf = std::mem::take(&mut self.buf);
        let (file, mut buf) = blocking(&path.clone(), move || {
            let f = append(file, &path, &buf)?;
            Ok((f, buf))
        })
        .await?;
        buf.clear();
        self.file = Some(file);
        self.buf = buf;
        Ok(())
    }

    /// Bytes written so far, header included.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Writes what is buffered and (with `fsync`) syncs the file; it stays in `tmp/` until
    /// persisted. Blocking: the store runs it in the same hop as the header check and the
    /// rename. Returns the whole file too when it never left memory (a data set under
    /// [`SPILL_AT`]), so its header is parsed without reading the file back.
    pub fn finish_blocking(
        mut self,
        durability: Durability,
    ) -> Result<(StagedFile, Option<Vec<u8>>), FileError> {
        let path = self.path.take().expect("BUG: finish twice");
        let file = self.file.take();
        let buf = std::mem::take(&mut self.buf);
        // From here on the staged file owns the path (and deletes it if dropped).
        let staged = StagedFile {
            path: Some(path.clone()),
            size: self.bytes,
        };
        let spilled = file.is_some();
        let f = append(file, &path, &buf)?;
        if durability == Durability::Fsync {
            f.sync_data().map_err(io_err(&path))?;
        }
        Ok((staged, (!spilled).then_some(buf)))
    }
}

/// Writes `buf` at the end of `file`, creating the file at `path` first if there is none yet.
fn append(
    file: Option<std::fs::File>,
    path: &Path,
    buf: &[u8],
) -> Result<std::fs::File, FileError> {
    let mut f = match file {
        Some(f) => f,
        None => std::fs::File::create(path).map_err(io_err(path))?,
    };
    f.write_all(buf).map_err(io_err(path))?;
    Ok(f)
}

/// Runs `f` on the blocking pool, mapping a failed task to an I/O error on `path`.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FileError::Io {
            path: path.display().to_string(),
            source: io::Error::other(e),
        })?
}

impl Drop for IncomingFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A complete, flushed temporary file waiting to be validated and moved into place.
#[derive(Debug)]
pub struct StagedFile {
    path: Option<PathBuf>,
    pub size: u64,
}

impl StagedFile {
    pub fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("BUG: staged file already persisted")
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

    #[tokio::test]
    async fn dropped_incoming_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut f = s.begin(&meta()).await.unwrap();
        f.write(b"abc").await.unwrap();
        drop(f);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn persisted_file_is_part10_with_data_set_appended() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut f = s.begin(&meta()).await.unwrap();
        f.write(b"\x08\x00\x16\x00").await.unwrap();
        let (staged, whole) = f.finish_blocking(Durability::Fsync).unwrap();
        assert!(whole.is_some_and(|b| b.ends_with(b"\x08\x00\x16\x00")));
        let uid = |s: &str| Uid::parse("x", s).unwrap();
        let rel = FileStore::relative_path(&uid("1.2"), &uid("1.2.3"), &uid("1.2.3.4"));
        s.persist_blocking(staged, &rel).unwrap();
        let bytes = std::fs::read(s.absolute(&rel)).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        assert!(bytes.ends_with(b"\x08\x00\x16\x00"));
        let meta = dicom_object::meta::FileMetaTable::from_reader(&bytes[128..]).unwrap();
        assert_eq!(meta.transfer_syntax(), "1.2.840.10008.1.2.1");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn stale_part_files_are_swept_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/x.part"), b"half").unwrap();
        store(dir.path());
        assert!(!dir.path().join("tmp/x.part").exists());
    }
}
