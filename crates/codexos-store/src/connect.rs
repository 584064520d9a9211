use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use codexos_core::settings::{DatabaseBackend, database_backend, redact_url};
use sqlx::AnyConnection;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Connection, Executor};

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Opens the database at `url` (creating an SQLite file if missing),
    /// checks it is usable and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let open_error = |reason: String| StoreError::Open { url: redact_url(url), reason };
        let backend = match database_backend(url).map_err(open_error)? {
            DatabaseBackend::Sqlite { path } => {
                prepare_sqlite_file(&path).map_err(open_error)?;
                Backend::Sqlite
            }
            DatabaseBackend::Postgres => Backend::Postgres,
        };
        let url_with_options = match backend {
            // rwc: create the file when missing.
            Backend::Sqlite => with_query_param(url, "mode=rwc"),
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url_with_options).map_err(|err| open_error(describe(&err)))?;
        // One direct connection first: the pool would retry a broken
        // database until it times out, hiding the real reason.
        let mut probe = AnyConnection::connect_with(&options).await.map_err(|err| open_error(describe(&err)))?;
        let check = match backend {
            // Reading the schema makes SQLite look at the file's header.
            Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master",
            Backend::Postgres => "SELECT 1",
        };
        probe.execute(check).await.map_err(|err| open_error(describe(&err)))?;
        if backend == Backend::Postgres {
            // As the connecting user, who owns the schema; the pool's
            // connections then act as the restricted application role.
            POSTGRES_MIGRATIONS.run(&mut probe).await?;
        }
        probe.close().await.map_err(|err| open_error(describe(&err)))?;

        let pool_options = match backend {
            // SQLite allows one writer at a time; a handful of connections
            // serve readers while WAL keeps them from blocking the writer.
            // An embedded file's connections do not drop like a server's, so
            // the pool does not ping one before handing it out: that ping was
            // a few per cent of a journal append (BENCHMARKS.md).
            Backend::Sqlite => {
                AnyPoolOptions::new().max_connections(8).test_before_acquire(false).after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;",
                        )
                        .await?;
                        Ok(())
                    })
                })
            }
            // Row-level security binds every role but superusers, owners of
            // the tables and BYPASSRLS roles: the application is none of them.
            Backend::Postgres => AnyPoolOptions::new().max_connections(16).after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET ROLE codexos_app").await?;
                    Ok(())
                })
            }),
        };
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|err| open_error(describe(&err)))?;
        if backend == Backend::Sqlite {
            // WAL is a property of the file: set once, it stays.
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await.map_err(|err| open_error(describe(&err)))?;
        }
        if backend == Backend::Sqlite {
            SQLITE_MIGRATIONS.run(&pool).await?;
        }
        Ok(Store { pool, backend })
    }
}

/// Makes sure the directory of an SQLite file exists and that the file, if
/// present, is a regular file; sqlx's own errors for these are cryptic.
fn prepare_sqlite_file(path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|err| format!("cannot create directory {}: {err}", parent.display()))?;
    }
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(format!("{} is not a regular file", path.display())),
        _ => Ok(()),
    }
}

/// A one-line description of a connection error, without sqlx's wrapping.
fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_owned(),
        other => other.to_string(),
    }
}

/// What `codexos doctor` reports about a database, found without changing it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatabaseReport {
    pub backend: Backend,
    /// The URL with any password redacted.
    pub url: String,
    /// For SQLite: whether the file exists yet (it is created on first start).
    pub exists: bool,
    pub reachable: bool,
    /// The newest migration applied, if any.
    pub schema_version: Option<i64>,
    /// The newest migration this build knows.
    pub latest_version: i64,
    pub error: Option<String>,
}

impl Store {
    /// Looks at a database without creating, migrating or writing anything.
    pub async fn inspect(url: &str) -> Result<DatabaseReport, String> {
        sqlx::any::install_default_drivers();
        let (backend, migrator, inspect_url) = match database_backend(url)? {
            DatabaseBackend::Sqlite { path } => {
                if !path.exists() {
                    return Ok(DatabaseReport {
                        backend: Backend::Sqlite,
                        url: redact_url(url),
                        exists: false,
                        reachable: false,
                        schema_version: None,
                        latest_version: latest(&SQLITE_MIGRATIONS),
                        error: None,
                    });
                }
                (Backend::Sqlite, &SQLITE_MIGRATIONS, with_query_param(url, "mode=ro"))
            }
            DatabaseBackend::Postgres => (Backend::Postgres, &POSTGRES_MIGRATIONS, url.to_owned()),
        };
        let mut report = DatabaseReport {
            backend,
            url: redact_url(url),
            exists: true,
            reachable: false,
            schema_version: None,
            latest_version: latest(migrator),
            error: None,
        };
        let connected = async {
            let options = AnyConnectOptions::from_str(&inspect_url)?;
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            // Reading the schema makes SQLite look at the file's header.
            let has_migrations: i64 = sqlx::query_scalar(match backend {
                Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE name = '_sqlx_migrations'",
                Backend::Postgres => {
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = '_sqlx_migrations'"
                }
            })
            .fetch_one(&pool)
            .await?;
            let version: Option<i64> = if has_migrations > 0 {
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await?
            } else {
                None
            };
            pool.close().await;
            Ok::<_, sqlx::Error>(version)
        };
        match connected.await {
            Ok(version) => {
                report.reachable = true;
                report.schema_version = version;
            }
            Err(err) => report.error = Some(describe(&err)),
        }
        Ok(report)
    }
}

/// Adds `param` to a URL's query string.
fn with_query_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

fn latest(migrator: &sqlx::migrate::Migrator) -> i64 {
    migrator.iter().map(|migration| migration.version).max().unwrap_or(0)
}
