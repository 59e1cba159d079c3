//! `kill -9` while senders stream: every instance that was answered 0000 survives the crash,
//! and the interrupted studies still complete after restart.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use radstream::db::Database;
use radstream::db::Durability;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;
use crate::ingest::wait_port;

pub(crate) const SENDER: &str = r#"
import sys
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation
ae = AE(ae_title="CRASHTEST")
ae.add_requested_context(DigitalXRayImageStorageForPresentation, "1.2.840.10008.1.2.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="RADSTREAM")
if not assoc.is_established:
    sys.exit(2)
for p in sys.argv[2:]:
    ds = dcmread(p)
    st = assoc.send_c_store(ds)
    if "Status" in st and st.Status == 0:
        print(ds.SOPInstanceUID, flush=True)
    else:
        sys.exit(3)
assoc.release()
"#;

/// A node's data folder and ports, kept across its restarts.
struct Site {
    data: PathBuf,
    dicom_port: u16,
    http_port: u16,
}

impl Site {
    fn new(dir: &Path) -> Site {
        Site {
            data: dir.join("data"),
            dicom_port: free_port(),
            http_port: free_port(),
        }
    }

    /// Starts the node and waits for its DICOM port.
    async fn start(&self) -> Child {
        let node = spawn_node(
            &self.data,
            self.dicom_port,
            self.http_port,
            &[
                ("RADSTREAM_STUDY__QUIET_WINDOW_MS", "200".into()),
                ("RADSTREAM_STUDY__STABLE_AGE_SECS", "3".into()),
            ],
        );
        wait_port(self.dicom_port).await;
        node
    }

    /// The node's index database, opened beside it.
    async fn index(&self) -> Database {
        let mut settings = radstream::configuration::Settings::default();
        settings.storage.data_dir = self.data.clone();
        Database::connect_url(&settings.database_url(), Some(2), Durability::Fsync)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_instance_and_interrupted_studies_complete() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path());
    let data = site.data.clone();
    let mut node = site.start().await;

    let mut groups = Vec::new();
    for i in 0..4 {
        groups.push(write_studies(
            &dir.path().join(format!("src{i}")),
            2,
            40,
            128,
        ));
    }
    let mut senders = Vec::new();
    for (_, paths) in &groups {
        let mut cmd = Command::new(python());
        cmd.arg("-c").arg(SENDER).arg(site.dicom_port.to_string());
        cmd.args(paths);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        senders.push(
            cmd.spawn()
                .expect("python venv with pynetdicom (scripts/setup.sh)"),
        );
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut readers = Vec::new();
    for s in &mut senders {
        let out = s.stdout.take().unwrap();
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        }));
    }
    drop(tx);
    let mut acked: HashSet<String> = HashSet::new();
    // Kill the node once a good part of the instances is acknowledged, mid-stream.
    while acked.len() < 120 {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(uid)) => {
                acked.insert(uid);
            }
            _ => panic!("senders stalled after {} acknowledgements", acked.len()),
        }
    }
    node.start_kill().unwrap();
    node.wait().await.unwrap();
    for r in readers {
        let _ = r.await;
    }
    while let Ok(uid) = rx.try_recv() {
        acked.insert(uid);
    }
    for mut s in senders {
        let _ = s.wait().await;
    }
    assert!(
        acked.len() < 320,
        "the node was killed too late to test anything"
    );

    let mut node = site.start().await;
    let db = site.index().await;
    for uid in &acked {
        let rel = indexed_path(&db, uid)
            .await
            .unwrap_or_else(|| panic!("acknowledged instance {uid} is not indexed after kill -9"));
        let stored = data.join(rel);
        let sent = groups
            .iter()
            .flat_map(|(_, p)| p.iter())
            .find(|p| p.file_stem().unwrap().to_string_lossy() == *uid)
            .unwrap();
        assert_eq!(
            data_set_bytes(&stored),
            data_set_bytes(sent),
            "{uid} corrupted"
        );
    }
    // Every study that received anything completes after the restart (stable age 3 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let receiving = count(
            &db,
            "SELECT COUNT(*) FROM studies WHERE status = 'receiving'",
        )
        .await;
        if receiving == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{receiving} studies never completed after restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let studies = count(&db, "SELECT COUNT(*) FROM studies").await;
    let jobs = count(&db, "SELECT COUNT(*) FROM jobs").await;
    assert_eq!(
        studies, jobs,
        "each completed study version has exactly one job"
    );
    let _ = node.start_kill();
    let _ = node.wait().await;
}

/// A machine crash between the index commit and the folder sync can undo a new instance's
/// rename while its row survives: the synced file is back in the node's temporary folder. The
/// restarted node moves it into place (the instance is whole again), removes a leftover nobody
/// indexed, and the dead node's folder with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_lost_in_a_crash_is_redone_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path());
    let data = &site.data;
    let mut node = site.start().await;
    let (_, paths) = write_studies(&dir.path().join("src"), 1, 2, 64);
    storescu_to(site.dicom_port, &[], &paths).await;
    node.start_kill().unwrap();
    node.wait().await.unwrap();

    let db = site.index().await;
    let uid = paths[0].file_stem().unwrap().to_string_lossy().to_string();
    let rel = indexed_path(&db, &uid).await.expect("indexed");
    let stored = data.join(&rel);
    let before = std::fs::read(&stored).unwrap();
    // What the crash leaves: the file under a temporary name in the killed node's folder, its
    // row committed.
    let folders: Vec<_> = std::fs::read_dir(data.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("node-")
        })
        .collect();
    let [killed] = &folders[..] else {
        panic!("one node folder expected in tmp/, found {folders:?}");
    };
    std::fs::rename(&stored, killed.join("0123456789abcdef.part")).unwrap();
    std::fs::write(killed.join("fedcba9876543210.part"), b"never acknowledged").unwrap();

    let mut node = site.start().await;
    assert_eq!(
        std::fs::read(&stored).expect("the lost rename is redone at start"),
        before
    );
    assert_eq!(
        data_set_bytes(&stored),
        data_set_bytes(&paths[0]),
        "{uid} corrupted"
    );
    assert!(instance_parts(data).is_empty());
    assert!(
        !killed.exists(),
        "the killed node's folder is settled and removed"
    );
    let _ = node.start_kill();
    let _ = node.wait().await;
}

/// Two nodes sharing a data folder (and a PostgreSQL index): a node starting beside one that
/// runs settles only the temporary folders of nodes that are gone, so the running node's
/// spare and in-flight files survive and every instance it is sent afterwards is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starting_beside_a_running_one_leaves_its_files_alone() {
    let pg = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("RADSTREAM_DATABASE__URL", pg.url.clone())];
    let (dicom_a, http_a) = (free_port(), free_port());
    let mut a = spawn_node(&data, dicom_a, http_a, &env);
    wait_port(http_a).await;
    let (_, first) = write_studies(&dir.path().join("first"), 1, 2, 64);
    storescu_to(dicom_a, &[], &first).await;
    let spares = |d: &Path| {
        std::fs::read_dir(d.join("tmp"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten())
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .count()
    };
    assert!(spares(&data) > 0, "the running node keeps spare files");

    let (dicom_b, http_b) = (free_port(), free_port());
    let mut b = spawn_node(&data, dicom_b, http_b, &env);
    wait_port(http_b).await;
    assert!(spares(&data) > 0, "the starting node left them alone");
    let (_, second) = write_studies(&dir.path().join("second"), 2, 10, 64);
    storescu_to(dicom_a, &[], &second).await;

    let db = Database::connect_url(&pg.url, Some(2), Durability::Os)
        .await
        .unwrap();
    let stored = count(&db, "SELECT COUNT(*) FROM instances").await;
    assert_eq!(stored as usize, first.len() + second.len());
    for node in [&mut a, &mut b] {
        let _ = node.start_kill();
        let _ = node.wait().await;
    }
}
