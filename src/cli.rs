//! The `radstream` command line.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::auth::cli::{KeysCommand, TokenCommand};
use crate::configuration::Settings;
use crate::db::Database;
use crate::scu::{self, Peer};
use crate::startup::Application;

#[derive(Debug, Parser)]
#[command(name = "radstream", version, about = "An AI node beside the PACS")]
pub struct Cli {
    /// Configuration file (default: config/radstream.toml if present).
    #[arg(long, global = true, env = "RADSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node: DICOM listener, HTTP API, study completion, workers.
    Serve {
        /// What this node runs: `all`, or a comma list of `ingest`, `worker`, `api`
        /// (overrides `node.roles`).
        #[arg(long, value_parser = crate::cluster::Roles::parse)]
        role: Option<crate::cluster::Roles>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Send a C-ECHO to [AE@]HOST:PORT.
    Echo {
        /// HOST:PORT or AE@HOST:PORT of the peer.
        addr: String,
        #[arg(long, default_value = "RADSTREAM")]
        calling_ae: String,
        /// Called AE title (default: the AE of AE@HOST:PORT, else this node's dicom.ae_title).
        #[arg(long)]
        called_ae: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Send DICOM files or folders to [AE@]HOST:PORT, one association per study.
    Send {
        /// HOST:PORT or AE@HOST:PORT of the peer.
        addr: String,
        /// Files or folders (searched recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, default_value = "RADSTREAM")]
        calling_ae: String,
        /// Called AE title (default: the AE of AE@HOST:PORT, else this node's dicom.ae_title).
        #[arg(long)]
        called_ae: Option<String>,
        /// Studies sent at once, each on its own association.
        #[arg(long, default_value_t = 1)]
        associations: usize,
        /// Print one JSON line per file instead of a progress bar.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// List the installed models: members, checksums, execution provider.
    Models,
    /// Run the ensemble on DICOM, PNG or JPEG files and print one JSON result per file
    /// (findings, or landmarks and the cardiothoracic ratio for a landmark model).
    Infer {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Model id (default: the first installed classification model).
        #[arg(long)]
        model: Option<String>,
    },
    /// Run a lung segmentation model on DICOM, PNG or JPEG files and print one JSON result per
    /// file: the lung fields' plausibility, their figures, the thoracic width and the
    /// cardiothoracic ratio read from the lung borders, with its measuring points.
    Segment {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Model id (default: the first installed segmentation model).
        #[arg(long)]
        model: Option<String>,
        /// Also print the label mask (run lengths in the model's grid); large.
        #[arg(long)]
        mask: bool,
    },
    /// Check DICOM files as the node checks what it receives (complete, bounded, Pixel Data of
    /// the right size), without parsing them: by default every file the store holds. Prints
    /// one line per broken file; exits 1 when any is broken.
    Verify {
        /// Files or folders (searched recursively) instead of the store's instances folder.
        paths: Vec<PathBuf>,
        /// Print one JSON line per file checked.
        #[arg(long)]
        json: bool,
    },
    /// Object storage: copy a local data folder into the bucket of `[storage.s3]`.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// List the studies in the index.
    Studies {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// API keys (x-api-key): create, list, revoke.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// JSON Web Tokens: issue one signed with the node's key.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit log of patient data reads, exported.
    Audit {
        #[command(subcommand)]
        command: crate::auth::cli::AuditCommand,
    },
    /// RadAnalyzer V3 metering per API key: billable calls, rechecks, amount, tier.
    Usage {
        /// Calendar month (UTC), YYYY-MM; default the current month.
        #[arg(long)]
        month: Option<String>,
        /// One key only, by id or name.
        #[arg(long)]
        key: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// DICOM TLS for `echo` and `send` (PS3.15 B.1).
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// Use DICOM TLS; the peer's certificate must chain to this PEM CA file and name the host
    /// dialled.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Our PEM certificate, for peers that require one (with --tls-key).
    #[arg(long, requires = "tls_ca", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_ca", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The peer with TLS set when --tls-ca is given.
    fn apply(self, mut peer: Peer) -> anyhow::Result<Peer> {
        if let Some(ca) = self.tls_ca {
            let files = crate::tls::ClientTlsFiles {
                ca,
                certificate: self.tls_cert,
                private_key: self.tls_key,
            };
            peer.tls = Some(files.client_config()?);
        }
        Ok(peer)
    }
}

/// Splits `AE@HOST:PORT` (or `HOST:PORT`) and picks the called AE title: the one in the
/// address, else `--called-ae`, else `own_ae()` (this node's, so that sending to one's own
/// node works as typed). Both given and different is an error.
pub fn called_peer(
    addr: &str,
    called_ae: Option<&str>,
    own_ae: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<(String, String)> {
    let (in_addr, host_port) = match addr.split_once('@') {
        Some((ae, rest)) => (Some(ae), rest),
        None => (None, addr),
    };
    anyhow::ensure!(
        !host_port.is_empty() && in_addr.is_none_or(|ae| !ae.is_empty()),
        "{addr:?}: expected HOST:PORT or AE@HOST:PORT"
    );
    let ae = match (in_addr, called_ae) {
        (Some(a), Some(b)) if a != b => {
            anyhow::bail!("{addr:?} names called AE {a:?} but --called-ae says {b:?}")
        }
        (Some(a), _) | (None, Some(a)) => a.to_string(),
        (None, None) => own_ae()?,
    };
    Ok((host_port.to_string(), ae))
}

/// Opens and migrates the index database (for the commands that read or write it).
async fn open_database(settings: &Settings) -> anyhow::Result<Database> {
    let db = settings.connect_database().await?;
    db.migrate().await?;
    Ok(db)
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Copy every indexed instance file and derived object of the data folder into the bucket
    /// of `[storage.s3]` (whatever `storage.backend` says). Idempotent: objects already there
    /// with the same size are skipped. Exits 1 when any file could not be copied.
    MigrateToS3,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check,
    /// Print the configuration reference (every key, its type, default and meaning) as
    /// Markdown: the guide's `docs/src/operate/configuration.md`.
    Reference,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Before any command creates a file (database, key, secret): see `file_modes`.
    crate::file_modes::restrict_umask();
    let load = || Settings::load(cli.config.as_deref());
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let s = load()?;
            println!("{}", s.to_redacted_toml());
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Reference,
        } => {
            print!("{}", crate::configuration::reference::markdown());
            Ok(())
        }
        Command::Serve { role } => {
            let mut settings = load()?;
            if let Some(role) = role {
                settings.node.roles = role;
            }
            crate::telemetry::init(&settings.log);
            settings.log_effective();
            let app = Application::build(settings).await?;
            app.run_until_stopped(true).await
        }
        Command::Migrate => {
            let settings = load()?;
            crate::telemetry::init(&settings.log);
            let db = open_database(&settings).await?;
            println!("migrations applied ({:?})", db.backend);
            Ok(())
        }
        Command::Echo {
            addr,
            calling_ae,
            called_ae,
            tls,
        } => {
            let (host_port, called) =
                called_peer(&addr, called_ae.as_deref(), || Ok(load()?.dicom.ae_title))?;
            let peer = tls.apply(Peer::new(host_port, &calling_ae, &called))?;
            let t = Instant::now();
            let status = scu::echo(&peer).await?;
            println!(
                "C-ECHO {}: status {status:04X} in {:.1} ms",
                peer.addr,
                t.elapsed().as_secs_f64() * 1000.0
            );
            anyhow::ensure!(status == 0, "C-ECHO failed with status {status:04X}");
            Ok(())
        }
        Command::Send {
            addr,
            paths,
            calling_ae,
            called_ae,
            associations,
            json,
            tls,
        } => {
            let (host_port, called) =
                called_peer(&addr, called_ae.as_deref(), || Ok(load()?.dicom.ae_title))?;
            let peer = tls.apply(Peer::new(host_port, &calling_ae, &called))?;
            send(peer, paths, associations, json).await
        }
        Command::Models => {
            let settings = load()?;
            crate::telemetry::init(&settings.log);
            let engine = load_engine(&settings).await?;
            let listing = serde_json::json!({
                "models": engine.models(),
                "unavailable": engine.unavailable_models(),
            });
            println!("{}", serde_json::to_string_pretty(&listing)?);
            Ok(())
        }
        Command::Infer { files, model } => {
            let settings = load()?;
            crate::telemetry::init(&settings.log);
            let engine = load_engine(&settings).await?;
            let model = model.as_deref();
            let landmarks = model.is_some() && engine.landmark_manifest(model).is_ok();
            each_file(&files, "analysed", async |input| match input {
                Input::Dicom(f) if landmarks => {
                    json_result(engine.infer_landmarks_dicom(model, f).await)
                }
                Input::Dicom(f) => json_result(engine.infer_dicom(model, f).await),
                Input::Image(bytes) if landmarks => {
                    json_result(engine.infer_landmarks_bytes(model, &bytes).await)
                }
                Input::Image(bytes) => json_result(engine.infer_image_bytes(model, &bytes).await),
            })
            .await
        }
        Command::Segment { files, model, mask } => {
            let settings = load()?;
            crate::telemetry::init(&settings.log);
            let engine = load_engine(&settings).await?;
            segment(&engine, model.as_deref(), &files, mask).await
        }
        Command::Keys { command } => {
            crate::auth::cli::keys(&open_database(&load()?).await?, command).await
        }
        Command::Token { command } => {
            let settings = load()?;
            crate::auth::cli::token(&settings.auth, &settings.storage.data_dir, command)
        }
        Command::Audit { command } => {
            let settings = load()?;
            let db = open_database(&settings).await?;
            crate::auth::cli::audit(&db, &settings.dicom.ae_title, command).await
        }
        Command::Usage { month, key, json } => {
            let db = open_database(&load()?).await?;
            crate::compat::radanalyzer::usage::cli(&db, month, key, json).await
        }
        Command::Verify { paths, json } => {
            let paths = if paths.is_empty() {
                vec![load()?.storage.data_dir.join("instances")]
            } else {
                paths
            };
            let files = scu::collect_files(&paths);
            let mut broken = 0usize;
            for f in &files {
                let verdict = crate::dataset::verify_file(f);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "path": f,
                            "ok": verdict.is_ok(),
                            "error": verdict.as_ref().err().map(|e| e.to_string()),
                        })
                    );
                } else if let Err(e) = &verdict {
                    println!("{}: {e}", f.display());
                }
                broken += usize::from(verdict.is_err());
            }
            eprintln!("{} files checked, {broken} broken", files.len());
            if broken > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Storage {
            command: StorageCommand::MigrateToS3,
        } => migrate_to_s3(&load()?).await,
        Command::Studies { limit } => {
            let db = open_database(&load()?).await?;
            let rows = crate::store::index::search_studies(
                &db,
                &crate::store::index::StudyFilter::default(),
                limit,
                0,
            )
            .await?;
            println!(
                "{:<64} {:<16} {:<8} {:<8} {:>6} {:>9} {:<9} {:>3}",
                "STUDY UID", "PATIENT ID", "DATE", "MOD", "SERIES", "INSTANCES", "STATUS", "V"
            );
            for r in rows {
                println!(
                    "{:<64} {:<16} {:<8} {:<8} {:>6} {:>9} {:<9} {:>3}",
                    r.study_uid,
                    r.patient_id.unwrap_or_default(),
                    r.study_date.unwrap_or_default(),
                    r.modalities,
                    r.num_series,
                    r.num_instances,
                    r.status,
                    r.version
                );
            }
            Ok(())
        }
    }
}

/// `radstream storage migrate-to-s3`: prints the counts after each page and at the end.
async fn migrate_to_s3(settings: &Settings) -> anyhow::Result<()> {
    crate::telemetry::init(&settings.log);
    let s3 = &settings.storage.s3;
    s3.validate()
        .map_err(|(key, problem)| anyhow::anyhow!("{key} {problem}"))?;
    let bucket = crate::store::Bucket::open(s3).context("opening the bucket")?;
    let db = open_database(settings).await?;
    let data_dir = &settings.storage.data_dir;
    let line = |m: &crate::store::migrate::Migrated| {
        format!(
            "uploaded {} ({} bytes), already there {}, missing {}, failed {}",
            m.uploaded, m.uploaded_bytes, m.skipped, m.missing, m.failed
        )
    };
    let done = crate::store::migrate::migrate_to_bucket(&db, data_dir, &bucket, |m| {
        eprintln!("{}", line(m))
    })
    .await
    .context("reading the index")?;
    println!("{}", line(&done));
    anyhow::ensure!(
        done.failed == 0,
        "{} files could not be copied",
        done.failed
    );
    Ok(())
}

/// A result as JSON, keeping the error for the caller to report.
fn json_result<T: serde::Serialize>(
    r: Result<T, crate::inference::InferenceError>,
) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(r?)?)
}

async fn load_engine(settings: &Settings) -> anyhow::Result<crate::inference::Engine> {
    let inference = settings.inference.clone();
    tokio::task::spawn_blocking(move || crate::inference::Engine::load(&inference))
        .await
        .context("model loading task failed")?
        .context("loading the models")
}

/// `radstream segment`: one JSON line per file, errors on stderr; fails when any file failed.
async fn segment(
    engine: &crate::inference::Engine,
    model: Option<&str>,
    files: &[PathBuf],
    mask: bool,
) -> anyhow::Result<()> {
    each_file(files, "segmented", async |input| {
        let mut r = match input {
            Input::Dicom(f) => json_result(engine.infer_segmentation_dicom(model, f).await),
            Input::Image(bytes) => {
                json_result(engine.infer_segmentation_bytes(model, &bytes).await)
            }
        }?;
        if !mask {
            if let Some(lungs) = r.get_mut("lungs").and_then(|l| l.as_object_mut()) {
                lungs.remove("mask");
            }
        }
        Ok(r)
    })
    .await
}

/// A file as a model takes it: a DICOM file by its path, another image by its bytes.
enum Input<'a> {
    Dicom(&'a std::path::Path),
    Image(Vec<u8>),
}

/// Runs `analyse` on each file and prints one `{"file", "result"}` line per file; a file that
/// cannot be read or `verb` (analysed, segmented) is named on stderr, and the command fails
/// with their number after the rest have run.
async fn each_file(
    files: &[PathBuf],
    verb: &str,
    analyse: impl AsyncFn(Input<'_>) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<()> {
    let mut failed = 0usize;
    for f in files {
        let result = if is_dicom(f) {
            analyse(Input::Dicom(f)).await
        } else {
            match tokio::fs::read(f).await {
                Ok(bytes) => analyse(Input::Image(bytes)).await,
                Err(e) => Err(e.into()),
            }
        };
        match result {
            Ok(r) => println!("{}", serde_json::json!({ "file": f, "result": r })),
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", f.display());
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} file(s) could not be {verb}");
    Ok(())
}

/// A Part 10 file has "DICM" at offset 128.
fn is_dicom(path: &std::path::Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(128))?;
            f.read_exact(&mut magic)
        })
        .is_ok()
        && &magic == b"DICM"
}

async fn send(
    peer: Peer,
    paths: Vec<PathBuf>,
    associations: usize,
    json: bool,
) -> anyhow::Result<()> {
    let files = scu::collect_files(&paths);
    anyhow::ensure!(!files.is_empty(), "no files found under the given paths");
    let (studies, mut results) = tokio::task::spawn_blocking(move || scu::group_by_study(&files))
        .await
        .context("reading the files")?;
    // Files that cannot be read are reported at once, with the reason.
    for r in &results {
        if json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            eprintln!(
                "{}: {}",
                r.path.display(),
                r.error.as_deref().unwrap_or("cannot be read")
            );
        }
    }
    let total: usize = studies.values().map(|v| v.len()).sum();
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} instances {per_sec} {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    };
    let started = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(associations.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (study, files) in studies {
        let peer = peer.clone();
        let bar = bar.clone();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let out = scu::send_study(&peer, &files, |r| {
                bar.inc(1);
                if json {
                    println!("{}", serde_json::to_string(r).unwrap_or_default());
                }
            })
            .await;
            match out {
                Ok(r) => r,
                Err(e) => files
                    .iter()
                    .map(|f| scu::SendResult {
                        path: f.path.clone(),
                        sop_instance_uid: f.sop_instance_uid.clone(),
                        status: None,
                        error: Some(format!("study {study}: {e}")),
                    })
                    .collect(),
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        results.extend(r.context("send task panicked")?);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let mut by_status: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &results {
        let key = match r.status {
            Some(s) => format!("{s:04X}"),
            None => "not sent".into(),
        };
        *by_status.entry(key).or_default() += 1;
        if r.status != Some(0) && !json {
            eprintln!(
                "{}: {}",
                r.path.display(),
                r.error.as_deref().unwrap_or("warning status")
            );
        }
    }
    let ok = by_status.get("0000").copied().unwrap_or(0);
    eprintln!(
        "sent {} files in {secs:.2} s ({:.1} instances/s): {}",
        results.len(),
        ok as f64 / secs.max(1e-9),
        by_status
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    anyhow::ensure!(
        ok == results.len(),
        "{} of {} files were not stored",
        results.len() - ok,
        results.len()
    );
    Ok(())
}
