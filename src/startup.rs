//! Wiring: database, store, study tracker, DICOM and HTTP listeners ([`http`] assembles the
//! HTTP surface, [`openapi`] builds its OpenAPI document and [`docs`] serves it), all
//! supervised under one cancellation token, and graceful shutdown.

pub mod docs;
pub mod http;
pub mod openapi;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::limits::HttpLimits;
use crate::api::AppState;
use crate::auth::Authenticator;
use crate::cluster::{signals, Membership, Role};
use crate::configuration::Settings;
use crate::db::Backend;
use crate::events::EventBus;
use crate::inference::Engine;
use crate::ingest::{DicomListener, IngestContext};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::study::StudyTracker;
use crate::supervisor::{Background, Supervisor};

/// A node with its listeners bound, ready to run.
pub struct Application {
    /// The DICOM listener (role `ingest`).
    dicom: Option<DicomListener>,
    /// The node's registration among the nodes on the database.
    membership: Membership,
    /// Cross-node wake-ups (PostgreSQL `LISTEN/NOTIFY`).
    signals: Option<Vec<(&'static str, signals::Handler)>>,
    database_url: secrecy::SecretString,
    /// Whether the study tracker runs (roles `ingest` or `api`, which receive instances).
    tracks_studies: bool,
    http: TcpListener,
    parts: http::Parts,
    /// Work requests started that outlives them (adapter jobs).
    background: Background,
    tracker: StudyTracker,
    committer: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
    bus: EventBus,
    pipeline: Option<Pipeline>,
    /// SR/overlay generation and the export outbox (`export.enabled`).
    outputs: Option<(crate::report::Reporter, crate::export::Exporter)>,
    /// The background purge (`retention.keep_days` > 0).
    retention: Option<crate::retention::Retention>,
    /// Whether `[ui] guide_dir` holds the built guide (said at start, with where it is).
    guide_built: bool,
}

impl Application {
    /// Connects and migrates the database, opens the store, re-arms study timers and binds
    /// both listeners (port 0 picks a free port; see [`Self::dicom_addr`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        crate::file_modes::restrict_umask();
        let cancel = CancellationToken::new();
        let db = settings
            .connect_database()
            .await
            .context("opening the index database")?;
        crate::file_modes::tighten_folder(&settings.storage.data_dir)
            .and_then(|_| crate::file_modes::tighten_sqlite(&settings.database_url()))
            .context("removing group/other access from the data folder")?;
        db.migrate().await.context("migrating the index database")?;
        let roles = settings.node.roles;
        let membership = Membership::join(db.clone(), &settings.node, roles)
            .await
            .context("registering the node in the database")?;
        let node_id = membership.id().to_string();
        tracing::info!(node_id = %node_id, roles = %roles, "node registered");
        let metrics = Metrics::for_node(&node_id);
        let bus = EventBus::new(db.clone(), &settings.events, metrics.clone())
            .await
            .context("reading the event log")?;
        let (store, committer) =
            Store::open(&settings.storage, db.clone(), bus.clone(), cancel.clone())
                .context("opening the data folder")?;
        if let Some(bucket) = store.files.bucket().cloned() {
            // Not fatal: instances are refused (A700) until the store answers.
            match bucket.size(std::path::Path::new(".radstream-probe")).await {
                Ok(_) => {
                    tracing::info!(bucket = %settings.storage.s3.bucket, "object store reachable")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the object store does not answer; instances are refused until it does")
                }
            }
            metrics.watch_object_store(move || bucket.requests().snapshot());
        }
        store
            .recover()
            .await
            .context("settling temporary files left by an earlier run")?;
        crate::retention::finish_interrupted(&db, &store)
            .await
            .context("removing the files of an interrupted purge")?;
        let engine = load_engine(&settings).await?;
        let jobs_ready = Arc::new(Notify::new());
        let mut tracker = StudyTracker::new(
            db.clone(),
            &node_id,
            &settings.study,
            jobs_ready.clone(),
            bus.clone(),
        );
        if db.backend == Backend::Postgres {
            tracker = tracker
                .in_cluster()
                .await
                .context("sharing open associations with the other nodes")?;
        }
        let tracks_studies = roles.has(Role::Ingest) || roles.has(Role::Api);
        let restored = if tracks_studies {
            tracker
                .restore()
                .await
                .context("restoring study completion timers")?
        } else {
            0
        };
        if restored > 0 {
            tracing::info!(
                studies = restored,
                "re-armed completion timers of studies still receiving"
            );
        }
        let files = store.files.clone();
        let mut dicomweb = crate::dicomweb::DicomWebContext::new(
            &settings.dicomweb,
            &settings.dicom,
            settings.http.port,
            store.clone(),
        );
        let mut ctx = IngestContext::new(
            settings.dicom.clone(),
            store.clone(),
            tracker.clone(),
            db.clone(),
            metrics.clone(),
        );
        if let Some(addr) = settings.hl7.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("binding the HL7 listener on {addr}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, "HL7 order listener (MLLP)");
            tokio::spawn(crate::hl7::listener::run(
                listener,
                db.clone(),
                cancel.clone(),
            ));
        }
        // Validated with the configuration: a bad `mpps.forward` never gets here.
        if let Ok(Some(target)) = settings.mpps.target() {
            ctx = ctx.with_mpps_forward(crate::scu::mpps_forward::start(
                target,
                &settings.dicom.ae_title,
                std::time::Duration::from_secs(settings.export.timeout_secs.max(1)),
                cancel.clone(),
            ));
        }
        let works = roles.has(Role::Worker);
        let pipeline = (works && settings.pipeline.enabled).then(|| {
            Pipeline::new(
                db.clone(),
                files.clone(),
                engine.clone(),
                bus.clone(),
                jobs_ready.clone(),
                metrics.clone(),
                settings.pipeline.clone(),
                settings.triage.clone(),
            )
            .on_node(&node_id)
        });
        let outputs = (works && settings.export.enabled).then(|| {
            let exports_ready = Arc::new(Notify::new());
            (
                crate::report::Reporter::new(
                    db.clone(),
                    files.clone(),
                    settings.export.clone(),
                    &settings.dicom.ae_title,
                    exports_ready.clone(),
                    bus.clone(),
                ),
                crate::export::Exporter::new(
                    db.clone(),
                    files.clone(),
                    settings.export.clone(),
                    &settings.dicom.ae_title,
                    exports_ready,
                    bus.clone(),
                )
                .with_fhir(engine.models(), settings.fhir.clone()),
            )
        });
        let retention = (works && settings.retention.purges_in_background()).then(|| {
            crate::retention::Retention {
                store: store.clone(),
                db: db.clone(),
                bus: bus.clone(),
                settings: settings.retention.clone(),
            }
        });
        let dicom = match roles.has(Role::Ingest) {
            true => Some(DicomListener::bind(ctx).await?),
            false => None,
        };
        let signals = (db.backend == Backend::Postgres).then(|| {
            let mut channels: Vec<(&'static str, signals::Handler)> = Vec::new();
            if bus.pushed() {
                let b = bus.clone();
                channels.push((crate::events::NOTIFY_CHANNEL, Box::new(move || b.notify())));
            }
            let j = jobs_ready.clone();
            channels.push((
                crate::job::NOTIFY_CHANNEL,
                Box::new(move || j.notify_waiters()),
            ));
            channels
        });
        let auth =
            Authenticator::from_settings(&settings.auth, &settings.storage.data_dir, db.clone())
                .context("loading the API authentication keys")?;
        let http_addr = SocketAddr::new(settings.http.host, settings.http.port);
        let http = TcpListener::bind(http_addr)
            .await
            .with_context(|| format!("binding the HTTP listener to {http_addr}"))?;
        dicomweb.http_port = http.local_addr()?.port();
        let app = AppState {
            audit: crate::auth::audit::AuditWriter::spawn(db.clone()),
            db,
            files,
            store: store.clone(),
            tracker: tracker.clone(),
            open_associations: dicom
                .as_ref()
                .map(DicomListener::open_associations)
                .unwrap_or_default(),
            dicom_addr: match &dicom {
                Some(d) => d.local_addr()?.to_string(),
                None => String::new(),
            },
            node: Arc::new(membership.node().clone()),
            node_expire_secs: settings.node.expire_secs,
            ae_title: settings.dicom.ae_title.clone(),
            engine,
            bus: bus.clone(),
            jobs_ready: jobs_ready.clone(),
            pipeline_model: settings.pipeline.model.clone(),
            metrics,
            auth: Arc::new(auth),
            http_limits: HttpLimits::from_settings(&settings.http),
        };
        let background = Background::new(cancel.clone());
        let parts = http::Parts::new(&settings, app, dicomweb, background.clone())?;
        Ok(Application {
            dicom,
            membership,
            signals,
            database_url: secrecy::SecretString::from(settings.database_url()),
            tracks_studies,
            http,
            parts,
            background,
            tracker,
            committer,
            cancel,
            bus,
            pipeline,
            outputs,
            retention,
            guide_built: crate::ui::guide::Guide::built(&settings.ui.guide_dir),
        })
    }

    /// The DICOM listener's address. Panics on a node without the `ingest` role.
    pub fn dicom_addr(&self) -> SocketAddr {
        self.dicom
            .as_ref()
            .expect("BUG: asked for the DICOM address of a node without the ingest role")
            .local_addr()
            .expect("BUG: bound listener has an address")
    }

    /// The DICOM listener's address; `None` on a node without the `ingest` role.
    pub fn dicom_listener_addr(&self) -> Option<SocketAddr> {
        self.dicom.as_ref().and_then(|d| d.local_addr().ok())
    }

    /// The DICOM TLS listener's address (`dicom.tls.enabled`).
    pub fn dicom_tls_addr(&self) -> Option<SocketAddr> {
        self.dicom.as_ref().and_then(DicomListener::tls_addr)
    }

    /// This node's id among the nodes on the database.
    pub fn node_id(&self) -> &str {
        self.membership.id()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("BUG: bound listener has an address")
    }

    /// A token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs until the token is cancelled (or a signal arrives, with `listen_for_signals`).
    /// Every task runs under the one token: when one stops on its own, the others are
    /// stopped too and the error names it (see [`Supervisor`]).
    pub async fn run_until_stopped(self, listen_for_signals: bool) -> anyhow::Result<()> {
        let cancel = self.cancel.clone();
        if listen_for_signals {
            let c = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown_signal() => tracing::info!("shutdown requested"),
                    _ = c.cancelled() => {}
                }
                c.cancel();
            });
        }
        let dicom = self.dicom_listener_addr();
        tracing::info!(
            http = %self.http_addr(),
            dicom = ?dicom,
            node_id = %self.membership.id(),
            roles = %self.membership.node().roles,
            "radstream ready"
        );
        let base = format!("http://{}", self.http_addr());
        let guide = if self.guide_built {
            format!("{base}/guide/")
        } else {
            "docs/src/ in the repository (not built: scripts/setup.sh builds it)".to_string()
        };
        tracing::info!(
            api_reference = %format!("{base}/docs"),
            guide = %guide,
            web = %format!("{base}/ui/"),
            "documentation"
        );
        let mut node = Supervisor::new(cancel.clone());
        // Adapter jobs a previous run left unfinished.
        crate::compat::pi::resume(&self.parts.pi);
        // Connect info gives handlers the peer address (for the audit log).
        let roles = self.membership.node().roles;
        let serving = http::Serving {
            api: roles.has(Role::Api),
            stow: roles.has(Role::Ingest),
        };
        let app =
            http::router(self.parts, serving).into_make_service_with_connect_info::<SocketAddr>();
        let http_cancel = cancel.clone();
        // Without TCP_NODELAY a response's last small write (a multipart boundary, the
        // final chunk) waits for the client's delayed ACK: tens of ms per WADO-RS answer.
        let listener = self.http.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set on an HTTP connection");
            }
        });
        node.spawn("HTTP server", async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { http_cancel.cancelled().await })
                .await
                .context("HTTP server failed")
        });
        if let Some(d) = self.dicom {
            node.spawn("DICOM listener", quiet(d.run(cancel.clone())));
        }
        if self.tracks_studies {
            node.spawn("study tracker", quiet(self.tracker.run(cancel.clone())));
        }
        node.spawn("event bus", quiet(self.bus.run(cancel.clone())));
        node.spawn(
            "node heartbeat",
            quiet(self.membership.clone().run(cancel.clone())),
        );
        if let Some(channels) = self.signals {
            node.spawn(
                "database notifications",
                quiet(signals::listen(self.database_url, channels, cancel.clone())),
            );
        }
        if let Some(p) = self.pipeline {
            node.spawn("pipeline", quiet(p.run(cancel.clone())));
        }
        if let Some((r, e)) = self.outputs {
            node.spawn("report output worker", quiet(r.run(cancel.clone())));
            node.spawn("export worker", quiet(e.run(cancel.clone())));
        }
        if let Some(r) = self.retention {
            node.spawn("retention", quiet(r.run(cancel.clone())));
        }
        node.spawn("background work", self.background.run());
        // The committer drains what the associations handed it before stopping.
        let committer = self.committer;
        node.spawn("index committer", async move {
            committer.await.context("panicked")
        });
        let result = node.wait().await;
        tracing::info!("radstream stopped");
        result
    }
}

/// A task that reports nothing: it logs its own troubles and ends when cancelled.
async fn quiet(task: impl Future<Output = ()>) -> anyhow::Result<()> {
    task.await;
    Ok(())
}

/// Loads every installed model (blocking work, off the runtime) and checks the triage rules
/// against the labels of the model the pipeline runs.
async fn load_engine(settings: &Settings) -> anyhow::Result<Engine> {
    let inference = settings.inference.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::load(&inference))
        .await
        .context("model loading panicked")?
        .with_context(|| {
            format!(
                "loading the models in {}",
                settings.inference.models_dir.display()
            )
        })?;
    if let Some(id) = &settings.pipeline.model {
        engine.manifest(Some(id)).context("pipeline.model")?;
    }
    crate::pipeline::plan::check_routes(&engine, &settings.pipeline)
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let labels: Vec<String> = engine
        .models()
        .iter()
        .flat_map(|m| m.labels.iter().map(|l| l.key.clone()))
        .collect();
    settings
        .triage
        .validate(&labels, &crate::pipeline::MEASUREMENT_KEYS)
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    Ok(engine)
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
