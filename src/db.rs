//! Database connection and schema migrations.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Opens the SQLite database at `url`, creating the file and its folder when
/// missing, and applies pending migrations.
pub async fn connect_sqlite(url: &str) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database_url '{url}'"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));

    if let Some(parent) = Path::new(options.get_filename()).parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create database folder {}", parent.display()))?;
    }

    // An in-memory database exists once per connection, so it must not be pooled.
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if !in_memory {
        create_private_file(Path::new(options.get_filename()))?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(if in_memory { 1 } else { 8 })
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open database {url}"))?;

    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("database migration failed")?;
    Ok(pool)
}

/// Creates the database file readable by its owner only, because it contains
/// session ids and TOTP secrets. SQLite gives its -wal and -shm files the
/// same permissions. An existing file is left as it is.
fn create_private_file(path: &Path) -> anyhow::Result<()> {
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
