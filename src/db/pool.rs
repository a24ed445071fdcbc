//! The connection pool that every store holds.
//!
//! PostgreSQL connections come from sqlx's pool. SQLite connections come
//! from a pool of their own: sqlx's pool pings each connection as it comes
//! back, which for SQLite is one more round trip to the connection's worker
//! thread after every statement. An embedded database has no socket that
//! could have dropped, and a connection runs its commands in order, so a
//! rollback left by a cancelled request still runs before the next
//! statement. The ping bought nothing, and it was about a quarter of the
//! CPU time that a password login spent outside the hash in
//! benches/login_overhead.rs.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, QueueMode, RecycleResult};
use either::Either;
use futures_util::{Stream, TryStreamExt as _};
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyQueryResult, AnyRow, AnyTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{
    Any, AnyConnection, AnyPool, Connection as _, Database, Describe, Execute, Executor,
    TransactionManager as _,
};

use super::Engine;
use super::begin_write;
use super::inline::{InlineSqlite, Results, may_hold_several};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type BoxStream<'a, T> = Pin<Box<dyn Stream<Item = T> + Send + 'a>>;

/// A pool of connections to the configured database. Cloning it is cheap and
/// shares the connections.
#[derive(Clone)]
pub struct DbPool {
    inner: Inner,
    /// Connections for `inline`, on a SQLite file only.
    inline: Option<Arc<InlineSqlite>>,
}

#[derive(Clone)]
enum Inner {
    Server(AnyPool),
    Embedded(managed::Pool<SqliteConnections>),
}

impl fmt::Debug for DbPool {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DbPool")
            .field("engine", &self.engine())
            .field("max_connections", &self.max_connections())
            .finish()
    }
}

impl DbPool {
    /// Wraps sqlx's pool, for PostgreSQL.
    pub(super) fn server(pool: AnyPool) -> Self {
        Self {
            inner: Inner::Server(pool),
            inline: None,
        }
    }

    /// Opens a pool of at most `size` SQLite connections made from
    /// `options`, and opens the first one so that a bad path fails here.
    /// With the database's `file`, it also opens as many connections for
    /// `inline`.
    pub(super) async fn embedded(
        options: AnyConnectOptions,
        size: usize,
        acquire_timeout: Duration,
        file: Option<&Path>,
    ) -> Result<Self, sqlx::Error> {
        let pool = managed::Pool::builder(SqliteConnections { options })
            .max_size(size)
            .wait_timeout(Some(acquire_timeout))
            .create_timeout(Some(acquire_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            // The connection returned last ran a moment ago, so its worker
            // thread's data is likelier to be in the CPU caches, and its page
            // cache is current unless another connection wrote since.
            // First-in first-out rotated through every connection instead,
            // and cost about a sixth more CPU time outside the hash per
            // login in `benches/password_login.rs`.
            .queue_mode(QueueMode::Lifo)
            .build()
            .map_err(|error| sqlx::Error::Configuration(error.into()))?;
        let mut pool = Self {
            inner: Inner::Embedded(pool),
            inline: None,
        };
        // The first connection creates the file and turns on WAL mode,
        // which the inline connections expect.
        drop(pool.acquire().await?);
        if let Some(file) = file {
            let inline = InlineSqlite::open(file, size).map_err(|error| {
                sqlx::Error::Configuration(
                    format!("cannot open {}: {error}", file.display()).into(),
                )
            })?;
            pool.inline = Some(Arc::new(inline));
        }
        Ok(pool)
    }

    pub fn engine(&self) -> Engine {
        match &self.inner {
            Inner::Server(_) => Engine::Postgres,
            Inner::Embedded(_) => Engine::Sqlite,
        }
    }

    pub fn max_connections(&self) -> u32 {
        match &self.inner {
            Inner::Server(pool) => pool.options().get_max_connections(),
            Inner::Embedded(pool) => pool.status().max_size as u32,
        }
    }

    /// Returns an executor for statements that read or write a few rows by
    /// key. On a SQLite file they run on the calling thread, without the
    /// hand-off to a worker thread and back. Anything that may read many
    /// rows must use the pool itself, because it would hold up the async
    /// runtime meanwhile.
    pub fn inline(&self) -> Inline<'_> {
        Inline { pool: self }
    }

    /// Takes a connection for several statements in a row.
    pub async fn acquire(&self) -> Result<DbConnection, sqlx::Error> {
        match &self.inner {
            Inner::Server(pool) => Ok(DbConnection::Server(pool.acquire().await?)),
            Inner::Embedded(pool) => match pool.get().await {
                Ok(connection) => Ok(DbConnection::Embedded(connection)),
                Err(PoolError::Backend(error)) => Err(error),
                Err(PoolError::Timeout(_)) => Err(sqlx::Error::PoolTimedOut),
                Err(PoolError::Closed) => Err(sqlx::Error::PoolClosed),
                Err(other) => Err(sqlx::Error::Configuration(other.to_string().into())),
            },
        }
    }

    /// Starts a transaction with `statement`, or with `BEGIN` when it is
    /// `None`.
    pub async fn begin_with(
        &self,
        statement: Option<&'static str>,
    ) -> Result<DbTransaction, sqlx::Error> {
        let connection = self.acquire().await?;
        DbTransaction::begin(connection, statement).await
    }

    /// Closes the pool: waiting requests fail, and connections close as
    /// they come back.
    pub async fn close(&self) {
        match &self.inner {
            Inner::Server(pool) => pool.close().await,
            Inner::Embedded(pool) => pool.close(),
        }
    }
}

/// Makes SQLite connections for the embedded pool.
pub struct SqliteConnections {
    options: AnyConnectOptions,
}

impl managed::Manager for SqliteConnections {
    type Type = AnyConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut connection = AnyConnection::connect_with(&self.options).await?;
        connection
            .execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .await?;
        Ok(connection)
    }

    /// Hands the connection out again without a round trip, unless sqlx
    /// still counts an open transaction on it. That happens when SQLite
    /// ended a transaction itself (after `OR ROLLBACK`, a full disk or an
    /// I/O error): the rollback queued on drop then fails, and every later
    /// `BEGIN` on the connection would fail with it.
    async fn recycle(
        &self,
        connection: &mut AnyConnection,
        _metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        let depth = <Any as Database>::TransactionManager::get_transaction_depth;
        if depth(connection) == 0 {
            return Ok(());
        }
        // The ping waits for the queued rollback to run.
        connection.ping().await?;
        if depth(connection) == 0 {
            return Ok(());
        }
        tracing::warn!(
            transaction_depth = depth(connection),
            "dropping a SQLite connection that is stuck in a transaction"
        );
        Err(managed::RecycleError::message(
            "connection still in a transaction after its rollback",
        ))
    }
}

/// A connection taken from a `DbPool`, back in the pool when dropped.
pub enum DbConnection {
    Server(PoolConnection<Any>),
    Embedded(Object<SqliteConnections>),
}

impl DbConnection {
    /// Closes the connection instead of returning it to the pool, which
    /// ends whatever the server keeps per connection, such as session
    /// locks.
    pub async fn close(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Server(connection) => connection.detach().close().await,
            Self::Embedded(connection) => Object::take(connection).close().await,
        }
    }
}

impl Deref for DbConnection {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Self::Server(connection) => connection,
            Self::Embedded(connection) => connection,
        }
    }
}

impl DerefMut for DbConnection {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Self::Server(connection) => connection,
            Self::Embedded(connection) => connection,
        }
    }
}

/// A transaction on a pooled connection. Dropped without `commit`, it rolls
/// back: the rollback is queued on the connection and runs before anything
/// the next user of the connection sends.
pub struct DbTransaction {
    connection: DbConnection,
    open: bool,
}

impl DbTransaction {
    async fn begin(
        connection: DbConnection,
        statement: Option<&'static str>,
    ) -> Result<Self, sqlx::Error> {
        // Marked open before `BEGIN` is sent, so that a request cancelled
        // while it waits still queues the rollback.
        let mut transaction = Self {
            connection,
            open: true,
        };
        <Any as Database>::TransactionManager::begin(
            &mut transaction.connection,
            statement.map(Into::into),
        )
        .await?;
        Ok(transaction)
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        <Any as Database>::TransactionManager::commit(&mut self.connection).await?;
        self.open = false;
        Ok(())
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        <Any as Database>::TransactionManager::rollback(&mut self.connection).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for DbTransaction {
    fn drop(&mut self) {
        if self.open {
            <Any as Database>::TransactionManager::start_rollback(&mut self.connection);
        }
    }
}

impl Deref for DbTransaction {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.connection
    }
}

impl DerefMut for DbTransaction {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.connection
    }
}

/// Each statement sent to `&DbPool` runs on a connection taken for it alone.
impl<'p> Executor<'p> for &'p DbPool {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        Box::pin(async_stream::try_stream! {
            let mut connection = self.acquire().await?;
            let mut results = connection.fetch_many(query);
            while let Some(result) = results.try_next().await? {
                yield result;
            }
        })
    }

    fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<AnyQueryResult, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        Box::pin(async move { self.acquire().await?.execute(query).await })
    }

    fn fetch_all<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Vec<AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        Box::pin(async move { self.acquire().await?.fetch_all(query).await })
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        Box::pin(async move { self.acquire().await?.fetch_optional(query).await })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<<Any as Database>::Statement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        Box::pin(async move { self.acquire().await?.prepare_with(sql, parameters).await })
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'p: 'e,
    {
        Box::pin(async move { self.acquire().await?.describe(sql).await })
    }
}

/// The executor that `DbPool::inline` returns.
#[derive(Clone, Copy)]
pub struct Inline<'p> {
    pool: &'p DbPool,
}

impl fmt::Debug for Inline<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Inline")
            .field("pool", self.pool)
            .finish()
    }
}

impl<'p> Inline<'p> {
    /// Runs `query` on one of the pool's inline connections, or returns it
    /// rebuilt for the pool.
    fn run<'q, E>(self, mut query: E, limit: Option<usize>) -> Result<Results, Fallback<'q>>
    where
        E: 'q + Execute<'q, Any>,
    {
        let sql = query.sql();
        let persistent = query.persistent();
        let arguments = match query.take_arguments() {
            Ok(arguments) => arguments,
            Err(error) => return Err(Fallback::Failed(sqlx::Error::Encode(error))),
        };
        let outcome = self.pool.inline.as_ref().and_then(|inline| {
            let values = arguments
                .as_ref()
                .map_or(&[][..], |arguments| &arguments.values.0[..]);
            inline.run(sql, values, limit)
        });
        match outcome {
            Some(Ok(results)) => Ok(results),
            Some(Err(error)) => Err(Fallback::Failed(error)),
            None => Err(Fallback::Pool {
                query: sqlx::query_with(sql, arguments.unwrap_or_default()).persistent(persistent),
                // Without inline connections the pool runs strings as before.
                several: self.pool.inline.is_some() && may_hold_several(sql),
            }),
        }
    }
}

/// The way on for a statement that did not run inline.
enum Fallback<'q> {
    /// The pool has no inline connections, or they were all in use, or the
    /// database was locked. The query's arguments were taken out, so it is
    /// rebuilt. Several statements run in one transaction, as they would
    /// have inline.
    Pool {
        query: sqlx::query::Query<'q, Any, AnyArguments<'q>>,
        several: bool,
    },
    Failed(sqlx::Error),
}

/// Statements run when the returned stream or future is first polled, as
/// on the pool, so that one dropped unpolled changes nothing.
impl<'p> Executor<'p> for Inline<'p> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        Box::pin(async_stream::try_stream! {
            match self.run(query, None) {
                Ok(results) => {
                    for result in results {
                        yield result;
                    }
                }
                Err(Fallback::Pool { query, several: false }) => {
                    let mut results = self.pool.fetch_many(query);
                    while let Some(result) = results.try_next().await? {
                        yield result;
                    }
                }
                Err(Fallback::Pool { query, several: true }) => {
                    let mut transaction = begin_write(self.pool).await?;
                    let results: Vec<_> = (&mut *transaction).fetch_many(query).try_collect().await?;
                    transaction.commit().await?;
                    for result in results {
                        yield result;
                    }
                }
                Err(Fallback::Failed(error)) => Err(error)?,
            }
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        Box::pin(async move {
            match self.run(query, Some(1)) {
                Ok(results) => Ok(results.into_iter().find_map(Either::right)),
                Err(Fallback::Pool {
                    query,
                    several: false,
                }) => self.pool.fetch_optional(query).await,
                Err(Fallback::Pool {
                    query,
                    several: true,
                }) => {
                    let mut transaction = begin_write(self.pool).await?;
                    let row = (&mut *transaction).fetch_optional(query).await?;
                    transaction.commit().await?;
                    Ok(row)
                }
                Err(Fallback::Failed(error)) => Err(error),
            }
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<<Any as Database>::Statement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.describe(sql)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::path::Path;
    use std::task::Poll;

    use futures_util::StreamExt as _;

    use super::{DbPool, DbTransaction};
    use crate::db::{DatabaseConfig, begin_write, open};

    const INSERT: &str = "INSERT INTO items (name) VALUES ($1)";

    /// Opens a pool of one connection, so that each request gets the
    /// connection the previous request left behind.
    async fn open_single(path: &Path) -> DbPool {
        let config = DatabaseConfig {
            max_connections: Some(1),
            acquire_timeout_seconds: 1,
            ..DatabaseConfig::default()
        };
        let url = format!("sqlite://{}", path.display());
        open(&url, &config).await.unwrap()
    }

    /// Returns the pool under test and an observer pool on the same file,
    /// which reads only committed rows.
    async fn open_pair() -> (tempfile::TempDir, DbPool, DbPool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.db");
        let pool = open_single(&path).await;
        sqlx::query("CREATE TABLE items (name TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let observer = open_single(&path).await;
        (dir, pool, observer)
    }

    async fn insert(transaction: &mut DbTransaction, name: &str) {
        sqlx::query(INSERT)
            .bind(name)
            .execute(&mut **transaction)
            .await
            .unwrap();
    }

    async fn count(pool: &DbPool, name: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// Polls `future` at most `polls` times, yielding in between so that the
    /// connection's worker thread gets ahead, then drops it unless it
    /// finished. Which await point the drop hits varies from run to run, so
    /// callers check only what must hold at every point.
    async fn poll_then_drop<F: Future>(future: F, polls: usize) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        for _ in 0..polls {
            let poll =
                std::future::poll_fn(|context| Poll::Ready(future.as_mut().poll(context))).await;
            if let Poll::Ready(output) = poll {
                return Some(output);
            }
            tokio::task::yield_now().await;
        }
        None
    }

    /// Checks that the pool's only connection is outside any transaction:
    /// it returns 1 for `SELECT 1`, starts `BEGIN IMMEDIATE`, and commits a
    /// row named `name` that the observer reads.
    async fn assert_connection_is_clean(pool: &DbPool, observer: &DbPool, name: &str) {
        let selected: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(selected, 1);
        let mut transaction = begin_write(pool)
            .await
            .expect("BEGIN IMMEDIATE on the reused connection");
        insert(&mut transaction, name).await;
        transaction.commit().await.unwrap();
        assert_eq!(count(observer, name).await, 1, "row {name} is committed");
    }

    #[tokio::test]
    async fn begin_cancelled_leaves_no_transaction() {
        let (_dir, pool, observer) = open_pair().await;
        for polls in 0..12 {
            let cancelled = format!("cancelled {polls}");
            if let Some(result) = poll_then_drop(begin_write(&pool), polls).await {
                let mut transaction = result.unwrap();
                insert(&mut transaction, &cancelled).await;
                drop(transaction);
            }

            assert_connection_is_clean(&pool, &observer, &format!("committed {polls}")).await;
            assert_eq!(count(&pool, &cancelled).await, 0);
            assert_eq!(count(&observer, &cancelled).await, 0);
        }
    }

    #[tokio::test]
    async fn statement_cancelled_in_transaction_rolls_back() {
        let (_dir, pool, observer) = open_pair().await;
        for polls in 0..8 {
            let mut transaction = begin_write(&pool).await.unwrap();
            insert(&mut transaction, "first").await;
            let second = sqlx::query(INSERT)
                .bind("second")
                .execute(&mut *transaction);
            poll_then_drop(second, polls).await;
            drop(transaction);

            for name in ["first", "second"] {
                assert_eq!(count(&pool, name).await, 0, "{name} after {polls} polls");
                assert_eq!(
                    count(&observer, name).await,
                    0,
                    "{name} after {polls} polls"
                );
            }
            assert_connection_is_clean(&pool, &observer, &format!("committed {polls}")).await;
        }
    }

    #[tokio::test]
    async fn stream_dropped_in_transaction_rolls_back() {
        let (_dir, pool, observer) = open_pair().await;
        let mut transaction = begin_write(&pool).await.unwrap();
        for _ in 0..500 {
            insert(&mut transaction, "bulk").await;
        }
        transaction.commit().await.unwrap();

        let mut transaction = begin_write(&pool).await.unwrap();
        insert(&mut transaction, "uncommitted").await;
        {
            let mut rows = sqlx::query("SELECT name FROM items").fetch(&mut *transaction);
            rows.next().await.unwrap().unwrap();
        }
        drop(transaction);

        assert_eq!(count(&pool, "uncommitted").await, 0);
        assert_eq!(count(&observer, "uncommitted").await, 0);
        assert_connection_is_clean(&pool, &observer, "committed").await;
    }

    #[tokio::test]
    async fn acquire_times_out_when_exhausted() {
        let (_dir, pool, _observer) = open_pair().await;
        let checked_out = pool.acquire().await.unwrap();

        let acquired = pool.acquire().await;
        assert!(
            matches!(acquired, Err(sqlx::Error::PoolTimedOut)),
            "acquire: {:?}",
            acquired.err()
        );
        let executed = sqlx::query("SELECT 1").execute(&pool).await;
        assert!(
            matches!(executed, Err(sqlx::Error::PoolTimedOut)),
            "execute: {executed:?}"
        );
        let begun = begin_write(&pool).await;
        assert!(
            matches!(begun, Err(sqlx::Error::PoolTimedOut)),
            "begin: {:?}",
            begun.err()
        );

        drop(checked_out);
        pool.acquire()
            .await
            .expect("acquire after the connection is back");
    }

    /// Returns whether the temporary table `name` exists on `connection`.
    /// Temporary tables belong to one SQLite connection, which lets a test
    /// tell connections apart.
    async fn has_temp_table(connection: &mut sqlx::AnyConnection, name: &str) -> bool {
        let found: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_temp_master WHERE type = 'table' AND name = $1",
        )
        .bind(name)
        .fetch_one(connection)
        .await
        .unwrap();
        found == 1
    }

    #[tokio::test]
    async fn last_returned_connection_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = DatabaseConfig {
            max_connections: Some(2),
            ..DatabaseConfig::default()
        };
        let url = format!("sqlite://{}", dir.path().join("pool.db").display());
        let pool = open(&url, &config).await.unwrap();
        let mut first = pool.acquire().await.unwrap();
        let mut second = pool.acquire().await.unwrap();
        sqlx::query("CREATE TEMP TABLE first_marker (id INTEGER)")
            .execute(&mut *first)
            .await
            .unwrap();
        sqlx::query("CREATE TEMP TABLE second_marker (id INTEGER)")
            .execute(&mut *second)
            .await
            .unwrap();
        drop(first);
        drop(second);

        let mut next = pool.acquire().await.unwrap();
        assert!(
            has_temp_table(&mut next, "second_marker").await,
            "the pool handed out the connection returned first"
        );
        assert!(!has_temp_table(&mut next, "first_marker").await);
    }

    #[tokio::test]
    async fn executor_returns_statement_errors() {
        let (_dir, pool, _observer) = open_pair().await;
        let missing = "SELECT name FROM missing";

        let executed = sqlx::query(missing).execute(&pool).await;
        assert!(
            matches!(executed, Err(sqlx::Error::Database(_))),
            "{executed:?}"
        );
        let all = sqlx::query(missing).fetch_all(&pool).await;
        assert!(
            matches!(all, Err(sqlx::Error::Database(_))),
            "{:?}",
            all.err()
        );
        let optional = sqlx::query(missing).fetch_optional(&pool).await;
        assert!(
            matches!(optional, Err(sqlx::Error::Database(_))),
            "{:?}",
            optional.err()
        );
        let first = sqlx::query(missing).fetch(&pool).next().await;
        assert!(
            matches!(first, Some(Err(sqlx::Error::Database(_)))),
            "{:?}",
            first.map(Result::err)
        );
        let described = sqlx::Executor::describe(&pool, missing).await;
        assert!(described.is_err());

        let described = sqlx::Executor::describe(&pool, "SELECT name FROM items")
            .await
            .unwrap();
        assert_eq!(described.columns().len(), 1);
        let selected: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(selected, 1);
    }

    /// SQLite ends the transaction itself on some errors, such as a conflict
    /// under `OR ROLLBACK`, SQLITE_FULL or SQLITE_IOERR. The ROLLBACK queued
    /// on drop then fails, and sqlx still counts one open transaction on the
    /// connection.
    #[tokio::test]
    async fn connection_recovers_after_implicit_rollback() {
        let (_dir, pool, observer) = open_pair().await;
        sqlx::query("CREATE UNIQUE INDEX items_name ON items (name)")
            .execute(&pool)
            .await
            .unwrap();
        let mut transaction = begin_write(&pool).await.unwrap();
        insert(&mut transaction, "taken").await;
        let conflict = sqlx::query("INSERT OR ROLLBACK INTO items (name) VALUES ('taken')")
            .execute(&mut *transaction)
            .await;
        assert!(conflict.is_err());
        drop(transaction);

        for attempt in 0..3 {
            assert_connection_is_clean(&pool, &observer, &format!("committed {attempt}")).await;
        }
    }
}
