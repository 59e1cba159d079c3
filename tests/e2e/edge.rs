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
        for b in rq.iter().chain(std::iter::repeat_n(&0x20, 190)) {
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
    let text = without_node_label(&metrics.text().await.unwrap());
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

async fn associate(
    app: &TestApp,
) -> Result<AsyncClientAssociation<TcpStream>, dicom_ul::association::Error> {
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
    let text = without_node_label(&text);
    assert!(
        text.contains("radstream_dicom_associations_rejected_total{reason=\"peer_limit\"} 2"),
        "{text}"
    );
    ping(&app).await;
}
on_both_databases!(one_peer_is_held_to_its_share => one_peer_is_held_to_its_share);

/// A CA, a server certificate for 127.0.0.1/localhost, client certificates (CN MODALITY1 and
/// OTHERNAME) from that CA and one (CN MODALITY1) from another CA: made once per test run
/// with the `openssl` command line.
fn certs() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"set -e
cd "$1"
ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -subj "/CN=$2" -days 2
}
leaf() {
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=%s\n' "$4" "$5" > "$1.ext"
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/O=Radstream Test/CN=$3"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.crt"
}
ca ca "Radstream Test CA"
ca other "Other CA"
leaf server ca localhost serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
leaf client ca MODALITY1 clientAuth "DNS:modality1"
leaf client2 ca OTHERNAME clientAuth "DNS:othername"
leaf rogue other MODALITY1 clientAuth "DNS:modality1"
"#;
        let (ok, out) = run("sh", &["-c", script, "sh", dir.path().to_str().unwrap()]);
        assert!(ok, "making test certificates: {out}");
        dir
    })
    .path()
}

fn cert(name: &str) -> String {
    certs().join(name).display().to_string()
}

/// A node with DICOM TLS and client certificates required; STORESCU must present CN
/// MODALITY1, PLAIN needs no certificate.
async fn tls_node(db: Db) -> TestApp {
    tls_node_with(db, |_| {}).await
}

async fn tls_node_with(
    db: Db,
    tweak: impl FnOnce(&mut radstream::configuration::Settings),
) -> TestApp {
    TestApp::spawn_with(db, |s| {
        s.dicom.tls.enabled = true;
        s.dicom.tls.port = 0;
        s.dicom.tls.certificate = Some(certs().join("server.crt"));
        s.dicom.tls.private_key = Some(certs().join("server.key"));
        s.dicom.tls.client_ca = Some(certs().join("ca.crt"));
        s.dicom.allowed_peers = vec![
            radstream::ingest::PeerRule {
                ae_title: "STORESCU".into(),
                certificate_subject: Some("MODALITY1".into()),
                ..Default::default()
            },
            radstream::ingest::PeerRule {
                ae_title: "PLAIN".into(),
                ..Default::default()
            },
        ];
        tweak(s);
    })
    .await
}

/// `storescu` over TLS with `tls` options (`+tls KEY CERT`, `+tla`...), to port `port`.
async fn storescu_tls(port: u16, tls: &[&str], file: &Path) -> (bool, String) {
    let ca = cert("ca.crt");
    let port = port.to_string();
    let mut args: Vec<&str> = tls.to_vec();
    args.extend(["+cf", &ca, "-aec", "RADSTREAM", "127.0.0.1", &port]);
    args.push(file.to_str().unwrap());
    run_async("storescu", &args).await
}

async fn dcmtk_over_tls_is_stored_and_checked(db: Db) {
    let app = tls_node(db).await;
    let tls_port = app.dicom_tls.expect("TLS listener").port();
    let dir = tempfile::tempdir().unwrap();
    let (key, crt) = (cert("client.key"), cert("client.crt"));

    let (sop, path) = one_instance(dir.path()).await;
    let (ok, out) = storescu_tls(tls_port, &["+tls", &key, &crt], &path).await;
    assert!(ok, "storescu over TLS: {out}");
    assert!(indexed_path(&app.db, &sop).await.is_some(), "not indexed");

    // A certificate from another CA, or none, ends in the TLS handshake.
    let (sop2, path2) = one_instance(dir.path()).await;
    let (rk, rc) = (cert("rogue.key"), cert("rogue.crt"));
    let (ok, out) = storescu_tls(tls_port, &["+tls", &rk, &rc], &path2).await;
    assert!(
        !ok,
        "a client certificate from another CA was accepted: {out}"
    );
    let (ok, out) = storescu_tls(tls_port, &["+tla"], &path2).await;
    assert!(!ok, "a client without a certificate was accepted: {out}");
    // A good certificate with another subject than the allow-list asks for: A-ASSOCIATE-RJ.
    let (k2, c2) = (cert("client2.key"), cert("client2.crt"));
    let (ok, out) = storescu_tls(tls_port, &["+tls", &k2, &c2], &path2).await;
    assert!(!ok && out.contains("Rejected"), "{out}");
    // Plain DICOM on the TLS port fails; the plain port keeps working (without a certificate
    // STORESCU is refused there, PLAIN is served).
    let (ok, out) = run_async(
        "storescu",
        &[
            "-aet",
            "PLAIN",
            "-aec",
            "RADSTREAM",
            "127.0.0.1",
            &tls_port.to_string(),
            path2.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok, "plain DICOM was served on the TLS port: {out}");
    let (ok, out) = run_async(
        "storescu",
        &[
            "-aec",
            "RADSTREAM",
            "127.0.0.1",
            &app.dicom_port(),
            path2.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        !ok && out.contains("Rejected"),
        "STORESCU without TLS: {out}"
    );
    assert!(indexed_path(&app.db, &sop2).await.is_none());
    storescu_with(&app, &["-aet", "PLAIN"], &[path2]).await;
    assert!(indexed_path(&app.db, &sop2).await.is_some());
    ping(&app).await;
}
on_both_databases!(dcmtk_over_tls_is_stored_and_checked => dcmtk_over_tls_is_stored_and_checked);

/// A child process killed when dropped (also when a test fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// DCMTK `storescp +tls` requiring a client certificate from the test CA, writing to `out`.
fn storescp_tls(port: u16, out: &Path) -> Killed {
    let child = std::process::Command::new("storescp")
        .args([
            "+tls",
            &cert("server.key"),
            &cert("server.crt"),
            "+cf",
            &cert("ca.crt"),
            "-od",
            out.to_str().unwrap(),
            "-aet",
            "STORESCP",
            &port.to_string(),
        ])
        .spawn()
        .expect("storescp (dcmtk) is needed");
    Killed(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radstream_send_and_echo_over_tls_reach_dcmtk() {
    let dir = tempfile::tempdir().unwrap();
    let received = dir.path().join("received");
    std::fs::create_dir_all(&received).unwrap();
    let (_, path) = one_instance(dir.path()).await;
    let port = free_port();
    let scp = storescp_tls(port, &received);
    crate::ingest::wait_port(port).await;
    let addr = format!("127.0.0.1:{port}");
    let bin = radstream_bin();
    let (ca, crt, key) = (cert("ca.crt"), cert("client.crt"), cert("client.key"));
    let tls = ["--tls-ca", &ca, "--tls-cert", &crt, "--tls-key", &key];
    let mut echo = vec!["echo", &addr, "--called-ae", "STORESCP"];
    echo.extend(tls);
    let (echo_ok, echo_out) = run_async(bin.to_str().unwrap(), &echo).await;
    let mut send = vec![
        "send",
        &addr,
        path.to_str().unwrap(),
        "--called-ae",
        "STORESCP",
    ];
    send.extend(tls);
    let (send_ok, send_out) = run_async(bin.to_str().unwrap(), &send).await;
    // The server certificate must chain to the CA given.
    let other = cert("other.crt");
    let (wrong_ok, wrong_out) = run_async(
        bin.to_str().unwrap(),
        &[
            "echo",
            &addr,
            "--called-ae",
            "STORESCP",
            "--tls-ca",
            &other,
            "--tls-cert",
            &crt,
            "--tls-key",
            &key,
        ],
    )
    .await;
    drop(scp);
    assert!(echo_ok, "radstream echo over TLS: {echo_out}");
    assert!(
        send_ok && send_out.contains("0000 x1"),
        "radstream send over TLS: {send_out}"
    );
    assert_eq!(radstream::scu::collect_files(&[received]).len(), 1);
    assert!(
        !wrong_ok,
        "a server certificate from an unknown CA was trusted: {wrong_out}"
    );
    // A missing key file is named, and the command stops before connecting.
    let missing = dir.path().join("nope.key");
    let (ok, out) = run_async(
        bin.to_str().unwrap(),
        &[
            "echo",
            &addr,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &crt,
            "--tls-key",
            missing.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok && out.contains("nope.key"), "{out}");
}

async fn results_are_exported_over_tls(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let received = dir.path().join("received");
    std::fs::create_dir_all(&received).unwrap();
    let port = free_port();
    let scp = storescp_tls(port, &received);
    crate::ingest::wait_port(port).await;
    let app = TestApp::spawn_with(db, |s| {
        s.export.retry_base_ms = 200;
        s.export.retry_max_ms = 500;
        s.export.poll_ms = 100;
        let mut d =
            crate::export_http::destination("pacs-tls", radstream::export::DestinationKind::Dicom);
        d.ae_title = Some("STORESCP".into());
        d.host = Some("127.0.0.1".into());
        d.port = Some(port);
        d.tls_ca = Some(certs().join("ca.crt"));
        d.tls_certificate = Some(certs().join("client.crt"));
        d.tls_private_key = Some(certs().join("client.key"));
        s.export.destinations = vec![d];
    })
    .await;
    let (_, files) = fixture_copy("cr_cardiomegaly", &dir.path().join("src"), 1);
    storescu(&app, &files).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = crate::export_http::exports(&app, "pacs-tls").await;
        if !rows.is_empty() && rows.iter().all(|r| r["state"] == "sent") {
            break rows;
        }
        assert!(Instant::now() < deadline, "not all sent over TLS: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(scp);
    assert_eq!(
        radstream::scu::collect_files(&[received]).len(),
        rows.len(),
        "storescp +tls received every output"
    );
}
on_both_databases!(results_are_exported_over_tls => results_are_exported_over_tls);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tls_key_stops_the_node_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = test_settings(dir.path());
    s.dicom.tls.enabled = true;
    s.dicom.tls.certificate = Some(certs().join("server.crt"));
    s.dicom.tls.private_key = Some(dir.path().join("missing.key"));
    let e = match radstream::startup::Application::build(s).await {
        Ok(_) => panic!("the node started without its TLS key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("missing.key") && e.contains("dicom.tls"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_share_the_slots_and_the_time_out() {
    let app = tls_node_with(Db::Sqlite, |s| {
        s.dicom.pre_association_timeout_secs = 1;
        s.dicom.max_associations_per_peer = 1;
    })
    .await;
    let tls_addr = app.dicom_tls.expect("TLS listener");
    // No TLS handshake: closed at the pre-association time-out.
    let mut idle = TcpStream::connect(tls_addr).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    // One TLS association held open takes this peer's only slot.
    let files = radstream::tls::ClientTlsFiles {
        ca: certs().join("ca.crt"),
        certificate: Some(certs().join("client.crt")),
        private_key: Some(certs().join("client.key")),
    };
    let held = ClientAssociationOptions::new()
        .calling_ae_title("STORESCU")
        .called_ae_title("RADSTREAM")
        .with_abstract_syntax(VERIFICATION)
        .tls_config(files.client_config().unwrap())
        .server_name("127.0.0.1")
        .establish_tls_async(tls_addr)
        .await
        .expect("TLS association");
    let dir = tempfile::tempdir().unwrap();
    let (sop, path) = one_instance(dir.path()).await;
    let (key, crt) = (cert("client.key"), cert("client.crt"));
    let (ok, out) = storescu_tls(tls_addr.port(), &["+tls", &key, &crt], &path).await;
    assert!(!ok && out.contains("Transient"), "{out}");
    held.release().await.expect("release");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = storescu_tls(tls_addr.port(), &["+tls", &key, &crt], &path).await;
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(indexed_path(&app.db, &sop).await.is_some());
}
