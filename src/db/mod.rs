//! Database connection and schema migrations.
//!
//! SQLite is the embedded default, and PostgreSQL lets several instances share
//! one database. Both are reached through sqlx's `Any` driver, so the stores
//! hold one pool type and write their SQL once: `$1`-style placeholders,
//! integer flags and Unix-second timestamps, which both engines read alike.

mod inline;
mod pool;

pub use pool::{DbConnection, DbPool, DbTransaction, Inline};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection, Executor};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a PostgreSQL connection may sit idle before the pool checks
/// that it is still alive, before handing it out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => anyhow::bail!(
                "database_url must start with sqlite:// or postgres://, not '{scheme}:'"
            ),
        }
    }

    /// Connections an instance keeps unless the configuration sets
    /// another number. SQLite runs one write at a time, and each write makes
    /// every other connection drop its page cache before its next read, so
    /// each extra connection adds cost. A few let short requests go on
    /// while a long read, such as a report, occupies one. In benches/ on
    /// 2 CPUs, four served the login page and SAML logins faster than two
    /// or eight, and password logins faster than eight.
    fn default_connections(self) -> u32 {
        match self {
            Self::Sqlite => 4,
            Self::Postgres => 8,
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Self::Sqlite => &SQLITE_MIGRATIONS,
            Self::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

/// Start-up behaviour when the database schema is older than this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationMode {
    /// Apply pending migrations at start-up. On PostgreSQL a lock lets only
    /// one starting instance migrate while the others wait for it.
    #[default]
    Apply,
    /// Reject start-up until `unified-login db migrate` has been run, for
    /// deployments that upgrade the schema as a separate step.
    Verify,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub migrations: MigrationMode,
    /// Connections each instance keeps at most. Unset: 4 for SQLite, 8 for
    /// PostgreSQL.
    pub max_connections: Option<u32>,
    /// Seconds a request waits for a free connection before it fails with
    /// 503, so that a lost database never leaves a request hanging.
    pub acquire_timeout_seconds: u64,
    /// Seconds PostgreSQL lets one statement run before cancelling it.
    pub statement_timeout_seconds: u64,
    /// Seconds start-up keeps retrying an unreachable database before it
    /// gives up.
    pub connect_retry_seconds: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            migrations: MigrationMode::Apply,
            max_connections: None,
            acquire_timeout_seconds: 5,
            statement_timeout_seconds: 10,
            connect_retry_seconds: 60,
        }
    }
}

/// Schema version of the database, next to the latest one this binary contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    pub applied: Option<i64>,
    pub latest: i64,
    pub pending: Vec<i64>,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Opens the database, retrying while it is unreachable, then checks the
/// schema and applies or rejects pending migrations as `config` sets.
pub async fn connect(url: &str, config: &DatabaseConfig) -> anyhow::Result<DbPool> {
    let pool = open_with_retry(url, config).await?;
    match config.migrations {
        MigrationMode::Apply => migrate(&pool).await?,
        MigrationMode::Verify => {
            let status = schema_status(&pool).await?;
            if !status.is_current() {
                anyhow::bail!(
                    "the database schema is at version {} but this binary needs {}; \
                     run `unified-login db migrate` once, then start the service again",
                    status
                        .applied
                        .map_or_else(|| "none".to_owned(), |v| v.to_string()),
                    status.latest
                );
            }
        }
    }
    Ok(pool)
}

/// Opens the database at `url` with default settings and applies pending
/// migrations, for tools and tests that need no retries.
pub async fn connect_default(url: &str) -> anyhow::Result<DbPool> {
    connect(url, &DatabaseConfig::default()).await
}

async fn open_with_retry(url: &str, config: &DatabaseConfig) -> anyhow::Result<DbPool> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(config.connect_retry_seconds);
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1u32;
    loop {
        match open(url, config).await {
            Ok(pool) => return Ok(pool),
            Err(error)
                if is_unreachable(&error) && tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(
                    error = %format!("{error:#}"),
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "database unreachable, retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Returns true when the error means the server could not be reached, which a retry
/// may cure. Bad credentials or a bad URL are reported at once.
fn is_unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_))
        )
    })
}

/// Opens a pool without touching the schema.
pub async fn open(url: &str, config: &DatabaseConfig) -> anyhow::Result<DbPool> {
    sqlx::any::install_default_drivers();
    let engine = Engine::from_url(url)?;
    let max_connections = config
        .max_connections
        .unwrap_or(engine.default_connections())
        .max(1);
    let acquire_timeout = Duration::from_secs(config.acquire_timeout_seconds.max(1));
    let options = AnyConnectOptions::from_str(url)
        .with_context(|| format!("invalid database_url '{}'", redact(url)))?;
    let opened = match engine {
        Engine::Sqlite => {
            // An in-memory database exists once per connection, so it must not be pooled.
            let (size, file) = match sqlite_file(url)? {
                Some(path) => {
                    prepare_sqlite_file(&path)?;
                    let inline = opened_as_inline(url)?;
                    (max_connections, inline.then_some(path))
                }
                None => (1, None),
            };
            DbPool::embedded(options, size as usize, acquire_timeout, file.as_deref()).await
        }
        Engine::Postgres => {
            let milliseconds = config.statement_timeout_seconds.max(1) * 1000;
            AnyPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(acquire_timeout)
                // By default sqlx pings each connection before handing it
                // out, which costs one more round trip to the server per
                // statement. A connection in use a moment ago is alive, so
                // only one that sat idle for a second or more, and may have
                // missed a server restart or a failover, is checked first.
                .test_before_acquire(false)
                .before_acquire(|connection, metadata| {
                    Box::pin(async move {
                        if metadata.idle_for >= IDLE_BEFORE_PING {
                            connection.ping().await?;
                        }
                        Ok(true)
                    })
                })
                .after_connect(move |connection, _| {
                    Box::pin(async move {
                        connection
                            .execute(format!("SET statement_timeout = {milliseconds}").as_str())
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await
                .map(DbPool::server)
        }
    };
    opened.map_err(|error| {
        let reason = match &error {
            sqlx::Error::PoolTimedOut => format!(
                "no connection within {} s; check that the server runs and accepts \
                 connections at this address",
                acquire_timeout.as_secs()
            ),
            other => other.to_string(),
        };
        anyhow::Error::new(error).context(format!("cannot open database {}: {reason}", redact(url)))
    })
}

/// Applies pending migrations. Fails with a clear message when the database
/// has migrations this binary does not know, which means a newer version
/// already upgraded it.
pub async fn migrate(pool: &DbPool) -> anyhow::Result<()> {
    with_schema_lock(pool, migrate_locked(pool)).await
}

async fn migrate_locked(pool: &DbPool) -> anyhow::Result<()> {
    let status = schema_status_locked(pool).await?;
    let engine = pool.engine();
    let mut connection = pool.acquire().await.context("cannot reach the database")?;
    engine
        .migrator()
        .run(&mut *connection)
        .await
        .map_err(|error| match error {
            sqlx::migrate::MigrateError::VersionMissing(version) => anyhow::anyhow!(
                "the database has schema version {version}, which this binary does not know; \
             it was upgraded by a newer unified-login, so run that version"
            ),
            sqlx::migrate::MigrateError::VersionMismatch(version) => anyhow::anyhow!(
                "schema migration {version} in the database differs from this binary's; \
             the database was migrated by a different build"
            ),
            other => anyhow::Error::new(other).context("database migration failed"),
        })?;
    if !status.pending.is_empty() {
        tracing::info!(
            from = status.applied,
            to = status.latest,
            applied = status.pending.len(),
            "database schema migrated"
        );
    }
    Ok(())
}

/// Reads which migrations the database has.
pub async fn schema_status(pool: &DbPool) -> anyhow::Result<SchemaStatus> {
    with_schema_lock(pool, schema_status_locked(pool)).await
}

/// Runs `work` while this process holds PostgreSQL's schema lock, so that
/// instances starting together check and migrate one after the other.
/// Without it, two instances on a new database both create sqlx's
/// migrations table, and the slower one stops with a duplicate-key error.
/// SQLite needs no lock here, because several instances share a database
/// only on PostgreSQL.
async fn with_schema_lock<T>(
    pool: &DbPool,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    if pool.engine() != Engine::Postgres {
        return work.await;
    }
    let mut holder = pool.acquire().await.context("cannot reach the database")?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(SCHEMA_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .context("cannot take the schema lock")?;
    let result = work.await;
    // A session-level lock lasts as long as its connection, so closing the
    // connection releases it on every path, errors included.
    if let Err(error) = holder.close().await {
        tracing::warn!(%error, "closing the schema-lock connection failed");
    }
    result
}

async fn schema_status_locked(pool: &DbPool) -> anyhow::Result<SchemaStatus> {
    let migrator = pool.engine().migrator();
    let mut connection = pool.acquire().await.context("cannot reach the database")?;
    connection
        .ensure_migrations_table()
        .await
        .context("cannot read the schema version")?;
    if let Some(version) = connection
        .dirty_version()
        .await
        .context("cannot read the schema version")?
    {
        anyhow::bail!(
            "schema migration {version} failed part-way; restore the database from a backup \
             taken before the upgrade, then run `unified-login db migrate` again"
        );
    }
    let applied_migrations = connection
        .list_applied_migrations()
        .await
        .context("cannot read the schema version")?;
    let known_migrations: Vec<_> = migrator
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .collect();
    for applied in &applied_migrations {
        match known_migrations
            .iter()
            .find(|known| known.version == applied.version)
        {
            None => anyhow::bail!(
                "the database has schema version {}, which this binary does not know; \
                 it was upgraded by a newer unified-login, so run that version",
                applied.version
            ),
            Some(known) if known.checksum != applied.checksum => anyhow::bail!(
                "schema migration {} in the database differs from this binary's; \
                 the database was migrated by a different build",
                applied.version
            ),
            Some(_) => {}
        }
    }
    let applied: Vec<i64> = applied_migrations
        .iter()
        .map(|migration| migration.version)
        .collect();
    let known: Vec<i64> = known_migrations
        .iter()
        .map(|migration| migration.version)
        .collect();
    Ok(SchemaStatus {
        applied: applied.iter().copied().max(),
        latest: known.iter().copied().max().unwrap_or_default(),
        pending: known
            .into_iter()
            .filter(|version| !applied.contains(version))
            .collect(),
    })
}

/// Starts a transaction that reads before it writes. SQLite takes its write
/// lock at once: a deferred transaction that reads first fails with
/// SQLITE_BUSY, which the busy timeout does not retry, when another
/// connection commits between its read and its write. PostgreSQL locks rows
/// as they are written, so a plain transaction does.
pub async fn begin_write(pool: &DbPool) -> Result<DbTransaction, sqlx::Error> {
    match pool.engine() {
        Engine::Sqlite => pool.begin_with(Some("BEGIN IMMEDIATE")).await,
        Engine::Postgres => pool.begin_with(None).await,
    }
}

/// Starts a transaction that runs alone: it checks something (a free login
/// ID, an empty key table) and then writes what depends on it. SQLite has one
/// writer at a time anyway. PostgreSQL takes one database-wide advisory
/// lock, so these transactions run one at a time on every instance.
pub async fn begin_exclusive(pool: &DbPool) -> Result<DbTransaction, sqlx::Error> {
    match pool.engine() {
        Engine::Sqlite => pool.begin_with(Some("BEGIN IMMEDIATE")).await,
        Engine::Postgres => {
            let mut transaction = pool.begin_with(None).await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(EXCLUSIVE_LOCK_KEY)
                .execute(&mut *transaction)
                .await?;
            Ok(transaction)
        }
    }
}

/// The advisory-lock key of `begin_exclusive`, an arbitrary constant that
/// other applications sharing the server are unlikely to use.
const EXCLUSIVE_LOCK_KEY: i64 = 0x0075_6e69_6669_6564;

/// The advisory-lock key that serialises schema checks and migrations.
const SCHEMA_LOCK_KEY: i64 = EXCLUSIVE_LOCK_KEY + 1;

/// Reads an integer flag column. Both engines store flags as 0 or 1,
/// because the `Any` driver reads SQLite integers as numbers, never as
/// booleans. A flag is bound as `i64::from(flag)` for the same reason.
pub fn flag(row: &sqlx::any::AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    use sqlx::Row;
    Ok(row.try_get::<i64, _>(column)? != 0)
}

/// Checks that the database responds, for the readiness probe.
pub async fn ping(pool: &DbPool) -> Result<(), sqlx::Error> {
    use sqlx::Connection as _;
    let mut connection = pool.acquire().await?;
    connection.ping().await
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Returns the file that the SQLite URL `url` names, or `None` when the
/// database is in memory.
/// Returns whether the pool's connections to the SQLite database at `url`
/// open it as the inline connections do: for writing, with the default
/// VFS. A read-only, immutable or other-VFS URL keeps every statement on
/// the pool, so that nothing writes to a database opened not to be written.
fn opened_as_inline(url: &str) -> anyhow::Result<bool> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database_url '{}'", redact(url)))?;
    // The URL that sqlx rebuilds from its options spells each setting one
    // way, whatever spelling the configured URL used.
    let canonical = options.to_url_lossy();
    let inline = canonical.query_pairs().all(|(key, value)| match &*key {
        "mode" => value == "rw" || value == "rwc",
        "immutable" | "vfs" => false,
        _ => true,
    });
    Ok(inline)
}

pub fn sqlite_file(url: &str) -> anyhow::Result<Option<PathBuf>> {
    let sqlite = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database_url '{url}'"))?;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    Ok((!in_memory).then(|| sqlite.get_filename().to_path_buf()))
}

/// An exclusive lock on a file beside a SQLite database, held while one
/// instance serves it. Released when dropped or when the process exits.
#[derive(Debug)]
pub struct ServingLock {
    _file: std::fs::File,
}

/// Takes the serving lock of the SQLite database at `url`, or returns
/// `None` for PostgreSQL and in-memory databases. An instance on SQLite
/// keeps the rate limit and copies of recent sessions in memory, which a
/// second instance on the same file would not see. That instance could let
/// an address through twice as often, or keep a session that the first one
/// signed out.
pub fn lock_for_serving(url: &str) -> anyhow::Result<Option<ServingLock>> {
    if Engine::from_url(url)? != Engine::Sqlite {
        return Ok(None);
    }
    let Some(database) = sqlite_file(url)? else {
        return Ok(None);
    };

    prepare_sqlite_file(&database)?;
    // The lock goes by the real file, so that two symbolic links to one
    // database share it.
    let database = std::fs::canonicalize(&database)
        .with_context(|| format!("cannot resolve the path {}", database.display()))?;
    let mut name = database.clone().into_os_string();
    name.push(".lock");
    let path = PathBuf::from(name);

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // A lock file left readable by others would let another account hold it
    // and keep the service from starting.
    #[cfg(unix)]
    file.set_permissions(
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .with_context(|| format!("cannot make {} private to its owner", path.display()))?;

    match file.try_lock() {
        Ok(()) => Ok(Some(ServingLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another unified-login instance is serving the SQLite database {}, \
             because it holds the lock on {}: stop that instance first, or move \
             every instance to PostgreSQL to run several",
            database.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Creates the database file and its folder, the file readable by its owner
/// only, because it contains TOTP secrets. SQLite gives its -wal and -shm
/// files the same permissions. An existing file is left as it is.
fn prepare_sqlite_file(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create database folder {}", parent.display()))?;
    }
    let name = path.as_os_str();
    if name.is_empty() || path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => {
            Err(error).with_context(|| format!("cannot create database file {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_urls_keep_statements_on_the_pool() {
        for url in [
            "sqlite://data/ul.db",
            "sqlite://data/ul.db?mode=rwc",
            "sqlite:data/ul.db?mode=rw&cache=private",
        ] {
            assert!(opened_as_inline(url).unwrap(), "{url}");
        }
        for url in [
            "sqlite://data/ul.db?mode=ro",
            "sqlite://data/ul.db?immutable=true",
            "sqlite://data/ul.db?immutable=1",
            "sqlite://data/ul.db?vfs=unix-dotfile",
        ] {
            assert!(!opened_as_inline(url).unwrap(), "{url}");
        }
    }

    #[tokio::test]
    async fn sqlite_pool_is_small_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("pool.db").display());
        let pool = open(&url, &DatabaseConfig::default()).await.unwrap();
        assert_eq!(pool.max_connections(), 4);
        let configured = DatabaseConfig {
            max_connections: Some(5),
            ..DatabaseConfig::default()
        };
        let pool = open(&url, &configured).await.unwrap();
        assert_eq!(pool.max_connections(), 5);
    }

    #[test]
    fn engine_follows_the_url_scheme() {
        assert_eq!(
            Engine::from_url("sqlite://data/x.db").unwrap(),
            Engine::Sqlite
        );
        assert_eq!(Engine::from_url("sqlite::memory:").unwrap(), Engine::Sqlite);
        assert_eq!(
            Engine::from_url("postgres://u:p@127.0.0.1/db").unwrap(),
            Engine::Postgres
        );
        let error = Engine::from_url("mysql://127.0.0.1/db").unwrap_err();
        assert!(
            error.to_string().contains("sqlite:// or postgres://"),
            "{error}"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://broker:s3cret@127.0.0.1:5432/login"),
            "postgres://broker:***@127.0.0.1:5432/login"
        );
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[tokio::test]
    async fn fresh_database_is_migrated_to_the_latest_version() {
        let pool = connect_default("sqlite::memory:").await.unwrap();
        let status = schema_status(&pool).await.unwrap();
        assert!(status.is_current(), "{status:?}");
        assert_eq!(status.applied, Some(status.latest));
    }

    #[tokio::test]
    async fn changed_or_failed_migration_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("changed.db").display());
        let pool = connect_default(&url).await.unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 20261204000001")
            .execute(&pool)
            .await
            .unwrap();
        let error = schema_status(&pool).await.unwrap_err();
        assert!(error.to_string().contains("differs"), "{error}");

        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 20261204000001")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET success = false WHERE version = 20261204000002")
            .execute(&pool)
            .await
            .unwrap();
        let error = schema_status(&pool).await.unwrap_err();
        assert!(error.to_string().contains("failed part-way"), "{error}");
    }

    #[tokio::test]
    async fn verify_mode_rejects_old_schema() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let config = DatabaseConfig {
            migrations: MigrationMode::Verify,
            ..DatabaseConfig::default()
        };
        let error = connect(&url, &config).await.unwrap_err();
        assert!(error.to_string().contains("db migrate"), "{error}");
        connect_default(&url).await.unwrap();
        connect(&url, &config).await.unwrap();
    }
}
