//! The database behind each test broker: a SQLite file in the broker's
//! folder, or a fresh PostgreSQL database when `TEST_DATABASE`
//! is `postgres`.
//!
//! `TEST_POSTGRES_URL` contains the URL of a PostgreSQL server and a
//! role that may create databases, for example
//! `postgres://role:password@127.0.0.1:5432/postgres`. Tests that need
//! PostgreSQL itself (such as losing the connection to it) read it even when
//! the brokers run on SQLite. Each database is created and dropped with the
//! `psql` client, so the test crate needs no PostgreSQL driver. Brokers made
//! with `Broker::prepare_sibling` share the first broker's database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable with the PostgreSQL server's URL.
pub const POSTGRES_ENV: &str = "TEST_POSTGRES_URL";
/// The environment variable that puts every test broker on PostgreSQL when
/// it is `postgres`.
pub const ENGINE_ENV: &str = "TEST_DATABASE";

/// Returns the URL of the PostgreSQL server for tests, if one is set.
pub fn postgres_server() -> Option<String> {
    std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|url| !url.is_empty())
}

/// Maximum wait, in seconds, for `psql` to connect to the server.
const CONNECT_TIMEOUT_SECONDS: &str = "10";

/// Databases created by this test process so far, for unique names.
static CREATED: AtomicU32 = AtomicU32::new(0);

/// The database of one broker, or of several that share it.
#[derive(Clone)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(Arc<PostgresDatabase>),
}

impl Database {
    /// Creates the database for a new broker whose folder is `dir`: a
    /// PostgreSQL database when `TEST_DATABASE` is `postgres`,
    /// else the path of a SQLite file that the broker creates at its first
    /// start.
    pub fn create(dir: &Path) -> Self {
        match std::env::var(ENGINE_ENV).as_deref() {
            Ok("postgres") => {
                let server_url = postgres_server().unwrap_or_else(|| {
                    panic!("{ENGINE_ENV} is postgres but {POSTGRES_ENV} names no server")
                });
                Self::Postgres(Arc::new(PostgresDatabase::create(&server_url)))
            }
            Ok("sqlite") | Err(_) => Self::Sqlite(dir.join("broker.db")),
            Ok(other) => panic!("{ENGINE_ENV} must be sqlite or postgres, not {other:?}"),
        }
    }

    /// Returns the value of `database_url` in the broker's config.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(database) => database.url.clone(),
        }
    }

    /// Returns the path of the SQLite file, or `None` for PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }

    /// Returns the stored bytes: the SQLite file followed by its write-ahead
    /// log, or the data that `pg_dump` writes for the PostgreSQL database.
    pub fn dump(&self) -> Vec<u8> {
        match self {
            Self::Sqlite(path) => {
                let mut wal_path = path.clone().into_os_string();
                wal_path.push("-wal");
                let mut bytes = std::fs::read(path).unwrap_or_default();
                bytes.extend(std::fs::read(wal_path).unwrap_or_default());
                bytes
            }
            Self::Postgres(database) => database.dump(),
        }
    }
}

/// A PostgreSQL database that this test process created. Dropping the last
/// reference drops the database, after the brokers that use it have stopped.
pub struct PostgresDatabase {
    /// The URL of the maintenance database that `CREATE DATABASE` and
    /// `DROP DATABASE` run in.
    server_url: String,
    name: String,
    /// The server URL with the path replaced by `/name`.
    url: String,
}

impl PostgresDatabase {
    /// Creates a database with a name that no other test or test run uses.
    /// Panics with `psql`'s output when that fails.
    pub fn create(server_url: &str) -> Self {
        let mut url = url::Url::parse(server_url).unwrap_or_else(|error| {
            panic!("{POSTGRES_ENV} is not a valid URL ({error}); expected postgres://role:password@127.0.0.1:5432/postgres")
        });
        assert!(
            matches!(url.scheme(), "postgres" | "postgresql"),
            "{POSTGRES_ENV} has the scheme {:?}; expected postgres://role:password@127.0.0.1:5432/postgres",
            url.scheme()
        );
        let name = format!(
            "unified_login_test_{}_{}_{:08x}",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let output = psql(server_url, &format!("CREATE DATABASE \"{name}\""));
        assert!(
            output.status.success(),
            "psql failed to create the database {name} on the server of {POSTGRES_ENV}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        url.set_path(&format!("/{name}"));
        Self {
            server_url: server_url.to_owned(),
            name,
            url: url.into(),
        }
    }
}

impl PostgresDatabase {
    /// Returns the database's URL, for `database_url`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Returns the database's URL with the server's port replaced, for a
    /// broker that reaches the server through a relay on that port.
    pub fn url_through(&self, port: u16) -> String {
        let mut url = url::Url::parse(&self.url).expect("database URL");
        url.set_port(Some(port)).expect("a URL with a host");
        url.into()
    }

    /// Returns the port of the PostgreSQL server.
    pub fn server_port(&self) -> u16 {
        url::Url::parse(&self.url)
            .expect("database URL")
            .port()
            .unwrap_or(5432)
    }

    /// Ends every server session on this database but psql's own, as a
    /// server restart would, and returns how many it ended.
    pub fn end_sessions(&self) -> usize {
        let output = psql(
            &self.url,
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) AS ended",
        );
        assert!(
            output.status.success(),
            "psql failed to end the sessions on {}: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a count from psql")
    }

    /// Returns the data of every table as `pg_dump --data-only` writes it.
    fn dump(&self) -> Vec<u8> {
        let output = Command::new("pg_dump")
            .args(["--data-only", "--no-owner"])
            .arg("--dbname")
            .arg(&self.url)
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECONDS)
            .output()
            .unwrap_or_else(|error| {
                panic!("running pg_dump failed ({error}); install the postgresql-client package")
            });
        assert!(
            output.status.success(),
            "pg_dump failed for {}: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        // FORCE ends connections that a broker killed mid-request may have left.
        let output = psql(
            &self.server_url,
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        );
        if !output.status.success() {
            eprintln!(
                "psql failed to drop the test database {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Runs one SQL command with `psql` against `url`, without reading
/// `~/.psqlrc`, and stops at the first error. Query results come without
/// headers, alignment or row counts.
fn psql(url: &str, sql: &str) -> Output {
    Command::new("psql")
        .args([
            "--no-psqlrc",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "--set",
            "ON_ERROR_STOP=1",
        ])
        .arg("--dbname")
        .arg(url)
        .arg("--command")
        .arg(sql)
        .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECONDS)
        .output()
        .unwrap_or_else(|error| {
            panic!("running psql failed ({error}); {POSTGRES_ENV} is set, so install the postgresql-client package")
        })
}
