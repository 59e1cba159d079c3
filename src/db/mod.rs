//! The index database: one `sqlx::AnyPool` over SQLite (embedded default) or PostgreSQL.
//!
//! Queries are written once in the dialect both accept (`$1` parameters, `ON CONFLICT`,
//! `RETURNING`, epoch-millisecond integers); where the two differ (row claiming, locks) the
//! caller asks [`Database::backend`]. Each table's SQL lives in the module that owns it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Arguments, Encode, Executor, QueryBuilder, Type};

pub mod settings;

pub use settings::{redact_credentials, DatabaseSettings, Durability};

/// How a SQLite write transaction starts (see [`Database::begin_write`]).
pub const SQLITE_BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Which server is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to the database at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot create the folder for the SQLite database {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool plus the knowledge of which dialect it speaks.
#[derive(Clone, Debug)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
}

/// The escape clause of every `LIKE` built from user input. `!` rather than `\\`: a backslash
/// literal means different things to PostgreSQL with `standard_conforming_strings` off.
pub const LIKE_ESCAPE: &str = "ESCAPE '!'";

/// LIKE's escape character (see [`LIKE_ESCAPE`]).
pub const LIKE_ESCAPE_CHAR: char = '!';

/// Appends `c` to a LIKE pattern so that it matches itself only: `%`, `_` and the escape
/// character get escaped. Use with [`LIKE_ESCAPE`].
pub fn push_like_literal(pattern: &mut String, c: char) {
    if matches!(c, '%' | '_' | LIKE_ESCAPE_CHAR) {
        pattern.push(LIKE_ESCAPE_CHAR);
    }
    pattern.push(c);
}

/// `s` as a LIKE pattern matching exactly `s` (see [`push_like_literal`]).
pub fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        push_like_literal(&mut out, c);
    }
    out
}

/// Dynamic SQL for both backends: [`SqlBuilder::push_bind`] writes numbered `$n` parameters.
/// sqlx's own `QueryBuilder::push_bind` writes `?` for the Any driver, which PostgreSQL refuses;
/// [`SqlBuilder::build`] hands the text and its arguments to a `QueryBuilder` once written.
#[derive(Default)]
pub struct SqlBuilder<'a> {
    sql: String,
    args: AnyArguments<'a>,
    has_where: bool,
}

impl<'a> SqlBuilder<'a> {
    pub fn new(init: impl Into<String>) -> Self {
        SqlBuilder {
            sql: init.into(),
            args: AnyArguments::default(),
            has_where: false,
        }
    }

    /// Starts a condition: ` WHERE ` the first time, ` AND ` after.
    pub fn push_condition(&mut self) -> &mut Self {
        let word = if self.has_where { " AND " } else { " WHERE " };
        self.has_where = true;
        self.push(word)
    }

    /// Appends SQL text as is.
    pub fn push(&mut self, sql: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write;
        let _ = write!(self.sql, "{sql}");
        self
    }

    /// Appends a parameter placeholder and binds `value` to it.
    pub fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'a + Encode<'a, Any> + Type<Any>,
    {
        // As QueryBuilder::push_bind: the Any driver refuses only types it cannot carry,
        // which is a programming error, not a runtime condition.
        self.args
            .add(value)
            .expect("BUG: a type the Any driver cannot bind");
        let n = self.args.len();
        self.push(format_args!("${n}"))
    }

    /// The SQL written so far.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// A query builder holding the text and its arguments; run it with its `build*` methods.
    pub fn build(self) -> QueryBuilder<'a, Any> {
        QueryBuilder::with_arguments(self.sql, self.args)
    }
}

impl Database {
    /// Connects with the settings' URL (SQLite in `data_dir` when none is given).
    pub async fn connect(
        settings: &DatabaseSettings,
        data_dir: &std::path::Path,
        durability: Durability,
    ) -> Result<Database, DbError> {
        Self::connect_url(
            &settings.url(data_dir),
            settings.max_connections,
            durability,
        )
        .await
    }

    /// Connects to `url`; SQLite gets WAL mode and a `synchronous` level matching `durability`.
    pub async fn connect_url(
        url: &str,
        max_connections: Option<u32>,
        durability: Durability,
    ) -> Result<Database, DbError> {
        sqlx::any::install_default_drivers();
        let redacted = redact_credentials(url);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        if backend == Backend::Sqlite {
            create_sqlite_folder(url)?;
        }
        let opts = AnyConnectOptions::from_str(url).map_err(|source| DbError::Connect {
            url: redacted.clone(),
            source,
        })?;
        let synchronous = match durability {
            Durability::Fsync => "FULL",
            Durability::Os => "NORMAL",
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.unwrap_or(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            }))
            .acquire_timeout(Duration::from_secs(30))
            // A SQLite connection is a handle on a local file: it cannot go stale, so the ping
            // sqlx sends before every acquire is only one more round trip through the
            // connection's worker thread (two per stored instance). PostgreSQL keeps it.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute(format!("PRAGMA synchronous = {synchronous}").as_str())
                            .await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|source| DbError::Connect {
                url: redacted,
                source,
            })?;
        Ok(Database { pool, backend })
    }

    /// Applies the migrations for this backend (idempotent).
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Opens a transaction that will write. SQLite takes its write lock at `BEGIN IMMEDIATE`,
    /// waiting out `busy_timeout`: a deferred transaction that reads first (a version, a
    /// patient id) cannot be upgraded once another connection has committed meanwhile, and
    /// fails at once with "database is locked" (`SQLITE_BUSY_SNAPSHOT`), whatever the timeout.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with(SQLITE_BEGIN_WRITE).await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// A cheap round trip, for `/health`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// Whether `tx` runs on PostgreSQL (for statements only it has, such as `pg_notify`).
pub fn is_postgres(tx: &sqlx::Transaction<'_, Any>) -> bool {
    let conn: &sqlx::AnyConnection = tx;
    conn.backend_name().eq_ignore_ascii_case("postgresql")
}

fn create_sqlite_folder(url: &str) -> Result<(), DbError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|source| DbError::Folder {
                path: parent.display().to_string(),
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An escaped pattern matches itself and nothing else, on SQLite (PostgreSQL in e2e).
    #[tokio::test]
    async fn like_literal_matches_only_itself() {
        assert_eq!(like_literal("a%b_c!d"), "a!%b!_c!!d");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, Some(1), Durability::Os)
            .await
            .unwrap();
        for (text, needle, hit) in [
            ("abc", "%", false),
            ("a%c", "%", true),
            ("abc", "_", false),
            ("a_c", "_", true),
            ("a!c", "!", true),
            ("abc", "!", false),
        ] {
            let sql = format!("SELECT CASE WHEN $1 LIKE $2 {LIKE_ESCAPE} THEN 1 ELSE 0 END");
            let n: i32 = sqlx::query_scalar(&sql)
                .bind(text)
                .bind(format!("%{}%", like_literal(needle)))
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert_eq!(n == 1, hit, "{text} LIKE %{needle}%");
        }
    }

    /// A write transaction that reads first, while another connection commits a write in
    /// between, must wait for its turn rather than fail with "database is locked".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_transaction_that_reads_first_survives_a_concurrent_commit() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect_url(&url, Some(2), Durability::Os)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();

        let mut tx = db.begin_write().await.unwrap();
        let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let other = db.clone();
        let writer = tokio::spawn(async move {
            sqlx::query("INSERT INTO t (n) VALUES (2)")
                .execute(&other.pool)
                .await
        });
        // Time for the other connection's write to commit, were it allowed to.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("INSERT INTO t (n) VALUES ($1)")
            .bind(before + 1)
            .execute(&mut *tx)
            .await
            .expect("the write after the read");
        tx.commit().await.unwrap();
        writer.await.unwrap().expect("the other write, after ours");
        let rows: Vec<i64> = sqlx::query_scalar("SELECT n FROM t ORDER BY rowid")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows, vec![1, 2], "ours first, then the one that waited");
    }
}
