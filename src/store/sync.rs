//! Group sync of received files: one thread finishes the files that concurrent associations
//! have received and makes them durable in batches.
//!
//! A batch is whatever is queued when the thread comes back for more (up to [`MAX_BATCH`]).
//! For each job of the batch it first runs the job's own file work (the last write, the header
//! check, the move into place), then starts the writeback of every file of the batch, so their
//! data goes to the disk together, then syncs each file, then each folder the batch changed,
//! once per folder however many of the batch's files went into it. Only then is each job
//! answered: a job's answer never comes before its file and folders are on the disk, and an
//! error in a folder's sync is the answer of every job that needed that folder.
//!
//! A new instance's file is given its final name as a second name ([`Settle`]): it is durable
//! under its temporary name, whose folder was synced before, as soon as the file is. The
//! final names' folders are synced later, when the thread has nothing else to do or
//! [`SETTLE_AT`] files wait, once per folder for all of them (a series of a hundred images
//! costs a few folder syncs, not a hundred), and only then are the temporary names removed.
//!
//! The files of a batch are synced side by side (a disk slow to flush its cache flushes it
//! once for all of them), and each association's task is woken once per instance for its
//! file work and syncs (the answer) instead of once per blocking hop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::files::{FolderSync, Settle};
use super::StoreError;

/// Largest number of jobs finished and synced together.
pub const MAX_BATCH: usize = 64;

/// Files whose final names' folders wait to be synced, at most, before they are synced even
/// though more jobs are queued.
pub const SETTLE_AT: usize = 64;

/// How long the thread waits for another job before it syncs the folders of the files that
/// wait to settle.
const SETTLE_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// What a job's file work leaves to sync, with the value its waiter gets once it is synced.
pub struct Prepared<T> {
    /// The file to sync (none with durability `os`, or when nothing was written).
    pub file: Option<std::fs::File>,
    /// The folders whose entries the job changed, synced before the job is answered.
    pub folders: FolderSync,
    /// A second name to settle once the job is answered; both names are removed if the file
    /// cannot be synced.
    pub settle: Option<Settle>,
    pub value: T,
}

/// A job's file work, run on the sync thread.
pub type Work<T> = Box<dyn FnOnce() -> Result<Prepared<T>, StoreError> + Send>;

struct Job<T> {
    work: Work<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

/// The system calls the sync thread makes; tests put a disk of their own in their place.
pub trait Disk: Send + Sync + 'static {
    /// Starts writing the file's dirty pages without waiting for them.
    fn start_writeback(&self, file: &std::fs::File);
    /// Makes the file's data and metadata durable (`fsync`: its size, and the count of its
    /// names, which a second name changed).
    fn sync_file(&self, file: &std::fs::File) -> std::io::Result<()>;
    /// Makes the folder's entries durable (`fsync` of the folder).
    fn sync_folder(&self, dir: &Path) -> std::io::Result<()>;
}

/// The real disk.
pub struct SystemDisk;

impl Disk for SystemDisk {
    fn start_writeback(&self, file: &std::fs::File) {
        super::files::start_writeback(file, 0, 0);
    }

    fn sync_file(&self, file: &std::fs::File) -> std::io::Result<()> {
        file.sync_all()
    }

    fn sync_folder(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir).and_then(|f| f.sync_all())
    }
}

/// The handle on the sync thread; the thread ends once every handle is dropped and the queue
/// is empty.
pub struct GroupSync<T> {
    tx: mpsc::Sender<Job<T>>,
}

impl<T> Clone for GroupSync<T> {
    fn clone(&self) -> Self {
        GroupSync {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static> GroupSync<T> {
    /// Starts the sync thread on `disk`.
    pub fn start(disk: impl Disk) -> std::io::Result<GroupSync<T>> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || run(disk, rx))?;
        Ok(GroupSync { tx })
    }

    /// Runs `work` on the sync thread, then syncs what it wrote; returns its value once that
    /// is durable.
    pub async fn finish(&self, work: Work<T>) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let gone = || StoreError::Resources("the store's sync thread has stopped".into());
        self.tx.send(Job { work, reply }).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

fn run<T>(disk: impl Disk, rx: mpsc::Receiver<Job<T>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut settling: Vec<Settle> = Vec::new();
    loop {
        let first = if settling.is_empty() {
            rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(SETTLE_AFTER)
        };
        let first = match first {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                settle(&disk, &mut settling);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        sync_batch(&disk, &mut batch, &mut settling);
        if settling.len() >= SETTLE_AT {
            settle(&disk, &mut settling);
        }
    }
    settle(&disk, &mut settling);
}

/// Syncs the folders of the final names waiting in `settling`, once each, then removes the
/// temporary names whose folders all synced. A folder that cannot be synced keeps its files'
/// temporary names: the next start settles them ([`crate::store::Store::recover`]).
fn settle(disk: &impl Disk, settling: &mut Vec<Settle>) {
    let mut folders: HashMap<&Path, bool> = HashMap::new();
    for s in settling.iter() {
        for dir in s.folders.dirs() {
            if !folders.contains_key(dir.as_path()) {
                let ok = match disk.sync_folder(dir) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, dir = %dir.display(), "cannot sync a folder of received instances; their temporary names stay for the next start");
                        false
                    }
                };
                folders.insert(dir.as_path(), ok);
            }
        }
    }
    for s in settling.iter() {
        if s.folders.dirs().iter().all(|d| folders[d.as_path()]) {
            let _ = std::fs::remove_file(&s.tmp);
        }
    }
    settling.clear();
}

/// Syncs the files of a batch side by side, one thread each but the first: a disk that is
/// slow to flush its cache then flushes it once for all of them, where one `fsync` after
/// another would wait for one flush each.
fn sync_files<T>(disk: &impl Disk, pending: &[Pending<T>]) -> Vec<std::io::Result<()>> {
    let files: Vec<Option<&std::fs::File>> = pending
        .iter()
        .map(|p| match &p.prepared {
            Ok(Prepared { file: Some(f), .. }) => Some(f),
            _ => None,
        })
        .collect();
    let sync = |f: Option<&std::fs::File>| f.map_or(Ok(()), |f| disk.sync_file(f));
    if files.iter().flatten().count() < 2 {
        return files.into_iter().map(sync).collect();
    }
    std::thread::scope(|scope| {
        let others: Vec<_> = files[1..]
            .iter()
            .map(|f| {
                let f = *f;
                scope.spawn(move || sync(f))
            })
            .collect();
        let mut results = vec![sync(files[0])];
        results.extend(others.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the sync thread panicked")))
        }));
        results
    })
}

/// A job whose file work is done, waiting for its syncs.
struct Pending<T> {
    prepared: Result<Prepared<T>, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

fn sync_batch<T>(disk: &impl Disk, batch: &mut Vec<Job<T>>, settling: &mut Vec<Settle>) {
    let mut pending: Vec<Pending<T>> = batch
        .drain(..)
        .map(|job| Pending {
            prepared: (job.work)(),
            reply: job.reply,
        })
        .collect();
    for p in &pending {
        if let Ok(Prepared { file: Some(f), .. }) = &p.prepared {
            disk.start_writeback(f);
        }
    }
    let synced = sync_files(disk, &pending);
    for (p, synced) in pending.iter_mut().zip(synced) {
        if let Ok(Prepared { file: Some(_), .. }) = &p.prepared {
            if let Err(e) = synced {
                if let Ok(Prepared {
                    settle: Some(s), ..
                }) = &p.prepared
                {
                    let _ = std::fs::remove_file(&s.dest);
                    let _ = std::fs::remove_file(&s.tmp);
                }
                p.prepared = Err(StoreError::Resources(format!("cannot sync the file: {e}")));
            }
        }
    }
    let mut folders: HashMap<PathBuf, Result<(), String>> = HashMap::new();
    for p in &pending {
        if let Ok(prepared) = &p.prepared {
            for dir in prepared.folders.dirs() {
                if !folders.contains_key(dir) {
                    let res = disk.sync_folder(dir).map_err(|e| e.to_string());
                    folders.insert(dir.to_path_buf(), res);
                }
            }
        }
    }
    for p in pending {
        let res = p.prepared.and_then(|prepared| {
            for dir in prepared.folders.dirs() {
                if let Some(Err(e)) = folders.get(dir) {
                    return Err(StoreError::Resources(format!(
                        "cannot sync the folder {}: {e}",
                        dir.display()
                    )));
                }
            }
            settling.extend(prepared.settle);
            Ok(prepared.value)
        });
        let _ = p.reply.send(res);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A disk that records each call and can hold a file's sync until told to go on, and fail
    /// the syncs of the folders it is told to.
    #[derive(Clone, Default)]
    struct FakeDisk {
        calls: Arc<Mutex<Vec<String>>>,
        hold: Arc<Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
        failing: Arc<Mutex<Vec<PathBuf>>>,
    }

    impl FakeDisk {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        fn log(&self, s: String) {
            self.calls.lock().unwrap().push(s);
        }
    }

    fn name(f: &std::fs::File) -> String {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    impl Disk for FakeDisk {
        fn start_writeback(&self, file: &std::fs::File) {
            self.log(format!("writeback {}", name(file)));
        }
        fn sync_file(&self, file: &std::fs::File) -> std::io::Result<()> {
            if let Some(hold) = self.hold.lock().unwrap().take() {
                let _ = hold.recv();
            }
            self.log(format!("sync {}", name(file)));
            Ok(())
        }
        fn sync_folder(&self, dir: &Path) -> std::io::Result<()> {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            self.log(format!("folder {name}"));
            if self.failing.lock().unwrap().iter().any(|d| d == dir) {
                return Err(std::io::Error::other("injected"));
            }
            Ok(())
        }
    }

    /// A job that writes `file` in `dir` and reports `value`, its folder `folder`.
    fn job(dir: &Path, file: &str, folder: &Path, value: u32) -> Work<u32> {
        let path = dir.join(file);
        let folder = folder.to_path_buf();
        Box::new(move || {
            Ok(Prepared {
                file: Some(std::fs::File::create(path).unwrap()),
                folders: FolderSync::of(vec![folder]),
                settle: None,
                value,
            })
        })
    }

    /// The answer waits for the file's sync: while the disk holds it, the waiter is not
    /// answered; once it lets go, the file and then its folder are synced, and only then is
    /// the waiter answered.
    #[tokio::test]
    async fn no_answer_before_the_file_and_its_folder_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FakeDisk::default();
        let (go, hold) = std::sync::mpsc::channel();
        *disk.hold.lock().unwrap() = Some(hold);
        let sync = GroupSync::start(disk.clone()).unwrap();
        let folder = dir.path().join("series");
        let waiter = tokio::spawn({
            let sync = sync.clone();
            let work = job(dir.path(), "a", &folder, 7);
            async move { sync.finish(work).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "answered before the file was synced");
        assert_eq!(disk.calls(), vec!["writeback a"]);
        go.send(()).unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
        assert_eq!(disk.calls(), vec!["writeback a", "sync a", "folder series"]);
    }

    /// Jobs queued while a batch is being synced form the next batch: their writebacks all
    /// start before the first of their syncs, and the folder they share is synced once.
    #[tokio::test]
    async fn jobs_queued_meanwhile_are_synced_as_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FakeDisk::default();
        let (go, hold) = std::sync::mpsc::channel();
        *disk.hold.lock().unwrap() = Some(hold);
        let sync = GroupSync::start(disk.clone()).unwrap();
        let folder = dir.path().join("series");
        let first = tokio::spawn({
            let sync = sync.clone();
            let work = job(dir.path(), "a", &folder, 0);
            async move { sync.finish(work).await }
        });
        while disk.calls().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut rest = Vec::new();
        for (i, f) in ["b", "c", "d"].into_iter().enumerate() {
            let sync = sync.clone();
            let work = job(dir.path(), f, &folder, i as u32 + 1);
            rest.push(tokio::spawn(async move { sync.finish(work).await }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        go.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 0);
        for (i, w) in rest.into_iter().enumerate() {
            assert_eq!(w.await.unwrap().unwrap(), i as u32 + 1);
        }
        let calls = disk.calls();
        assert_eq!(
            calls[..6],
            [
                "writeback a",
                "sync a",
                "folder series",
                "writeback b",
                "writeback c",
                "writeback d",
            ]
        );
        let mut syncs = calls[6..9].to_vec();
        syncs.sort();
        assert_eq!(
            syncs,
            ["sync b", "sync c", "sync d"],
            "side by side, in any order"
        );
        assert_eq!(calls[9..], ["folder series"]);
    }

    /// A folder whose sync fails fails every job of the batch that needed it, and only those;
    /// a job whose own work failed gets its own error and costs the others nothing.
    #[tokio::test]
    async fn a_failed_folder_sync_fails_every_job_that_needed_it() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FakeDisk::default();
        let (go, hold) = std::sync::mpsc::channel();
        *disk.hold.lock().unwrap() = Some(hold);
        let bad = dir.path().join("bad");
        disk.failing.lock().unwrap().push(bad.clone());
        let sync = GroupSync::start(disk.clone()).unwrap();
        let good = dir.path().join("good");
        let first = tokio::spawn({
            let sync = sync.clone();
            let work = job(dir.path(), "a", &good, 0);
            async move { sync.finish(work).await }
        });
        while disk.calls().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut batch = Vec::new();
        for (f, folder) in [("b", &bad), ("c", &good), ("d", &bad)] {
            let sync = sync.clone();
            let work = job(dir.path(), f, folder, 1);
            batch.push(tokio::spawn(async move { sync.finish(work).await }));
        }
        let refused = tokio::spawn({
            let sync = sync.clone();
            let work: Work<u32> =
                Box::new(|| Err(StoreError::Mismatch("not the instance named".into())));
            async move { sync.finish(work).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        go.send(()).unwrap();
        assert!(first.await.unwrap().is_ok());
        let results: Vec<_> = futures::future::join_all(batch)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert!(matches!(&results[0], Err(StoreError::Resources(m)) if m.contains("bad")));
        assert!(results[1].is_ok());
        assert!(matches!(&results[2], Err(StoreError::Resources(m)) if m.contains("bad")));
        assert!(matches!(
            refused.await.unwrap(),
            Err(StoreError::Mismatch(_))
        ));
        let folder_syncs = disk
            .calls()
            .iter()
            .filter(|c| c.as_str() == "folder bad")
            .count();
        assert_eq!(folder_syncs, 1, "one sync of the folder for the batch");
    }

    /// A file whose sync fails is refused; its neighbours in the batch are not.
    #[tokio::test]
    async fn a_failed_file_sync_fails_its_own_job_only() {
        struct FailOne(PathBuf);
        impl Disk for FailOne {
            fn start_writeback(&self, _: &std::fs::File) {}
            fn sync_file(&self, file: &std::fs::File) -> std::io::Result<()> {
                if name(file) == self.0.to_string_lossy() {
                    return Err(std::io::Error::other("injected"));
                }
                Ok(())
            }
            fn sync_folder(&self, _: &Path) -> std::io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::start(FailOne("b".into())).unwrap();
        let a = sync.finish(job(dir.path(), "a", dir.path(), 1));
        let b = sync.finish(job(dir.path(), "b", dir.path(), 2));
        let (a, b) = tokio::join!(a, b);
        assert_eq!(a.unwrap(), 1);
        assert!(matches!(b, Err(StoreError::Resources(m)) if m.contains("sync the file")));
    }

    /// A file linked under its final name is answered once it is synced, before the final
    /// name's folder is; that folder is synced once for all the files waiting, when the thread
    /// is idle, and only then do their temporary names go. A folder that cannot be synced
    /// keeps its files' temporary names.
    #[tokio::test]
    async fn second_names_settle_once_their_folder_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FakeDisk::default();
        let bad = dir.path().join("bad");
        disk.failing.lock().unwrap().push(bad.clone());
        let sync = GroupSync::start(disk.clone()).unwrap();
        let series = dir.path().join("series");
        std::fs::create_dir_all(&series).unwrap();
        std::fs::create_dir_all(&bad).unwrap();
        let linked = |name: &str, folder: &Path| -> Work<()> {
            let tmp = dir.path().join(format!("{name}.part"));
            let dest = folder.join(name);
            let folder = folder.to_path_buf();
            Box::new(move || {
                let file = std::fs::File::create(&tmp).unwrap();
                std::fs::hard_link(&tmp, &dest).unwrap();
                Ok(Prepared {
                    file: Some(file),
                    folders: FolderSync::default(),
                    settle: Some(Settle {
                        tmp,
                        dest,
                        folders: FolderSync::of(vec![folder]),
                    }),
                    value: (),
                })
            })
        };
        let (a, b, c) = tokio::join!(
            sync.finish(linked("a", &series)),
            sync.finish(linked("b", &series)),
            sync.finish(linked("c", &bad)),
        );
        a.unwrap();
        b.unwrap();
        c.unwrap();
        for _ in 0..200 {
            if !dir.path().join("a.part").exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!dir.path().join("a.part").exists());
        assert!(!dir.path().join("b.part").exists());
        assert!(
            dir.path().join("c.part").exists(),
            "its folder never synced"
        );
        assert!(series.join("a").exists() && series.join("b").exists());
        let calls = disk.calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.as_str() == "folder series")
                .count(),
            1,
            "{calls:?}"
        );
        let answered_before = calls.iter().position(|c| c == "sync c.part").unwrap();
        let settled_at = calls.iter().position(|c| c == "folder series").unwrap();
        assert!(answered_before < settled_at);
    }
}
