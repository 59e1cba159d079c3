//! `radstream keys create|list|revoke`, `radstream token issue` and `radstream audit export`.

use clap::Subcommand;

use super::{jwt, keys, AuthSettings, Scope};
use crate::clock::format_ms;
use crate::db::Database;

/// `radstream keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it (once: only its hash is stored).
    Create {
        /// A name for the key's holder (unique among active keys), e.g. `pacs-viewer`.
        #[arg(long)]
        name: String,
        /// results:read, inference:write or admin; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
    },
    /// List keys: id, name, prefix, scopes, created, revoked, last used (never the key).
    List,
    /// Revoke a key by id or name; requests with it are refused from then on.
    Revoke {
        /// The key's id (a number) or name.
        id_or_name: String,
    },
}

/// `radstream token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a signed JWT for SUBJECT with the given scopes.
    Issue {
        /// `sub` claim: who the token is for.
        #[arg(long)]
        subject: String,
        /// results:read, inference:write or admin; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
        /// Lifetime in days (default: auth.token_ttl_days, 30).
        #[arg(long)]
        days: Option<u32>,
    },
}

/// `radstream audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the audit log, newest first: DICOM audit messages (PS3.15 A.5) or JSON lines.
    Export {
        /// `dicom` (an `<AuditMessages>` document of PS3.15 `AuditMessage`s) or `json`.
        #[arg(long, default_value = "dicom")]
        format: AuditFormat,
        /// Rows at or after this time: epoch milliseconds or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// Reads of this patient only.
        #[arg(long)]
        patient_id: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

/// Renderings of `radstream audit export`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AuditFormat {
    Dicom,
    Json,
}

/// Runs an `audit` subcommand; `ae_title` names the node in DICOM audit messages.
pub async fn audit(db: &Database, ae_title: &str, command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Export {
        format,
        since,
        patient_id,
        limit,
    } = command;
    let since_ms = match since.as_deref() {
        None => None,
        Some(s) => Some(super::audit::parse_since(s).ok_or_else(|| {
            anyhow::anyhow!("--since {s:?}: expected epoch milliseconds or an RFC 3339 time")
        })?),
    };
    anyhow::ensure!(limit >= 1, "--limit must be at least 1");
    let filter = super::audit::AuditFilter {
        patient_id,
        since_ms,
        limit,
    };
    let rows = super::audit::list(db, &filter).await?;
    match format {
        AuditFormat::Dicom => print!("{}", super::atna::document(&rows, ae_title)),
        AuditFormat::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
    }
    Ok(())
}

fn when(ms: Option<i64>) -> String {
    ms.map(format_ms).unwrap_or_else(|| "-".into())
}

/// Runs a `keys` subcommand.
pub async fn keys(db: &Database, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { name, scopes } => {
            let (key, secret) = keys::create(db, &name, &scopes).await?;
            println!("{secret}");
            eprintln!(
                "created API key {} ({:?}, scopes: {}); send it as the x-api-key header. \
                 It is shown only now: store it safely.",
                key.id,
                key.name,
                Scope::join(&key.scopes)
            );
        }
        KeysCommand::List => {
            println!(
                "{:>4}  {:<24} {:<14} {:<36} {:<24} {:<24} {:<24}",
                "ID", "NAME", "PREFIX", "SCOPES", "CREATED", "REVOKED", "LAST USED"
            );
            for k in keys::list(db).await? {
                println!(
                    "{:>4}  {:<24} {:<14} {:<36} {:<24} {:<24} {:<24}",
                    k.id,
                    k.name,
                    k.key_prefix,
                    Scope::join(&k.scopes),
                    format_ms(k.created_at),
                    when(k.revoked_at),
                    when(k.last_used_at)
                );
            }
        }
        KeysCommand::Revoke { id_or_name } => {
            let k = keys::revoke(db, &id_or_name).await?;
            println!("revoked API key {} ({:?})", k.id, k.name);
        }
    }
    Ok(())
}

/// Runs a `token` subcommand.
pub fn token(
    settings: &AuthSettings,
    data_dir: &std::path::Path,
    command: TokenCommand,
) -> anyhow::Result<()> {
    match command {
        TokenCommand::Issue {
            subject,
            scopes,
            days,
        } => {
            anyhow::ensure!(!subject.trim().is_empty(), "--subject must not be empty");
            if let Some(d) = days {
                anyhow::ensure!((1..=3650).contains(&d), "--days must be between 1 and 3650");
            }
            let issuer = jwt::Issuer::from_settings(settings, data_dir)?;
            println!("{}", issuer.issue(&subject, &scopes, days)?);
            eprintln!(
                "token for {subject:?} with scopes {}, valid {} days",
                Scope::join(&scopes),
                days.unwrap_or(settings.token_ttl_days)
            );
        }
    }
    Ok(())
}
