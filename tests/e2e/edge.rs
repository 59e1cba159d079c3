//! Trust at the network edge: association slots against idle and greedy peers, and DICOM TLS
//! with real DCMTK peers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{AssociationRJServiceProviderPresentationReason, AssociationRJSource};
use dicom_ul::ClientAssociationOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Whether the node closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    loop {
        match tokio::time::timeout(within, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An A-ASSOCIATE-RJ or A-ABORT before the close.
            Ok(Ok(_)) => continue,
        }
    }
}

async fn idle_connections(app: &TestApp, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(TcpStream::connect(app.dicom).await.expect("connect"));
    }
    v
}

async fn ping(app: &TestApp) {
    let r = reqwest::get(app.url("/ping")).await.expect("GET /ping");
    assert_eq!(r.status(), 200);
}

async fn one_instance(dir: &Path) -> (String, PathBuf) {
    let sop = new_uid();
    let path = write_dx(dir, &new_uid(), &new_uid(), &sop, 64, 64);
    (sop, path)
}

async fn idle_peers_do_not_lock_out_a_modality(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.dicom.max_associations = 4;
        s.dicom.pre_association_timeout_secs = 10;
    })
    .await;
    let idle = idle_connections(&app, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let (sop, path) = one_instance(dir.path()).await;
    let started = Instant::now();
    storescu(&app, &[path]).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the store waited for idle peers: {:?}",
        started.elapsed()
    );
    assert!(indexed_path(&app.db, &sop).await.is_some(), "not indexed");
    drop(idle);
    ping(&app).await;
}
on_both_databases!(idle_peers_do_not_lock_out_a_modality => idle_peers_do_not_lock_out_a_modality);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_dribbling_peers_are_cut_at_the_pre_association_timeout() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.dicom.pre_association_timeout_secs = 1;
    })
    .await;
    let mut idle = TcpStream::connect(app.dicom).await.unwrap();
    // The start of a real A-ASSOCIATE-RQ (type 1, length 200), one byte every 100 ms.
    let mut dribbler = TcpStream::connect(app.dicom).await.unwrap();
    let rq = [0x01u8, 0x00, 0x00, 0x00, 0x00, 0xc8, 0x00, 0x01, 0x00, 0x00];
    let started = Instant::now();
    let (closed, _) = tokio::join!(closed_within(&mut idle, Duration::from_secs(4)), async {
        for b in rq.iter().chain(std::iter::repeat(&0x20).take(190)) {
            if dribbler.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(closed, "the idle connection was kept");
    assert!(
        closed_within(&mut dribbler, Duration::from_secs(1)).await,
        "the dribbling connection was kept"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let metrics = app.client().get(app.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            "radstream_dicom_associations_rejected_total{reason=\"pre_association_timeout\"} 2"
        ),
        "{text}"
    );
    let (ok, out) = run_async(
        "echoscu",
        &["-aec", "RADSTREAM", "127.0.0.1", &app.dicom_port()],
    )
    .await;
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pending_pool_closes_new_connections_and_frees_with_them() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.dicom.max_pending_connections = 4;
        s.dicom.pre_association_timeout_secs = 30;
    })
    .await;
    let mut idle = idle_connections(&app, 4).await;
    let mut extra = TcpStream::connect(app.dicom).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    assert!(!closed_within(&mut idle[0], Duration::from_millis(300)).await);
    drop(idle);
    // The pool frees as the idle peers go (the node sees their close).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = run_async(
            "echoscu",
            &["-aec", "RADSTREAM", "127.0.0.1", &app.dicom_port()],
        )
        .await;
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ping(&app).await;
}

async fn associate(app: &TestApp) -> Result<AsyncClientAssociation<TcpStream>, dicom_ul::association::Error> {
    ClientAssociationOptions::new()
        .calling_ae_title("GREEDY")
        .called_ae_title("RADSTREAM")
        .with_abstract_syntax(VERIFICATION)
        .establish_async(app.dicom)
        .await
}

async fn one_peer_is_held_to_its_share(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.dicom.max_associations = 8;
        s.dicom.max_associations_per_peer = 2;
    })
    .await;
    let first = associate(&app).await.expect("first association");
    let _second = associate(&app).await.expect("second association");
    match associate(&app).await {
        Err(dicom_ul::association::Error::Rejected { association_rj, .. }) => {
            assert_eq!(
                association_rj.result,
                dicom_ul::pdu::AssociationRJResult::Transient
            );
            assert_eq!(
                association_rj.source,
                AssociationRJSource::ServiceProviderPresentation(
                    AssociationRJServiceProviderPresentationReason::LocalLimitExceeded
                )
            );
        }
        other => panic!("expected a transient rejection, got {other:?}"),
    }
    // DCMTK's storescu from the same address is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    let (sop, path) = one_instance(dir.path()).await;
    let port = app.dicom_port();
    let p = path.to_str().unwrap();
    let (ok, out) = run_async("storescu", &["-aec", "RADSTREAM", "127.0.0.1", &port, p]).await;
    assert!(!ok && out.contains("Transient"), "{out}");
    first.release().await.expect("release");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = run_async("storescu", &["-aec", "RADSTREAM", "127.0.0.1", &port, p]).await;
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(indexed_path(&app.db, &sop).await.is_some());
    let text = app
        .client()
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("radstream_dicom_associations_rejected_total{reason=\"peer_limit\"} 2"),
        "{text}"
    );
    ping(&app).await;
}
on_both_databases!(one_peer_is_held_to_its_share => one_peer_is_held_to_its_share);
