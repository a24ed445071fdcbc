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
use std::pin::Pin;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleResult};
use either::Either;
use futures_util::{Stream, TryStreamExt as _};
use sqlx::any::{AnyConnectOptions, AnyQueryResult, AnyRow, AnyTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{
    Any, AnyConnection, AnyPool, Connection as _, Database, Describe, Execute, Executor,
    TransactionManager as _,
};

use super::Engine;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type BoxStream<'a, T> = Pin<Box<dyn Stream<Item = T> + Send + 'a>>;

/// A pool of connections to the configured database. Cloning it is cheap and
/// shares the connections.
#[derive(Clone)]
pub struct DbPool {
    inner: Inner,
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
        }
    }

    /// Opens a pool of at most `size` SQLite connections made from
    /// `options`, and opens the first one so that a bad path fails here.
    pub(super) async fn embedded(
        options: AnyConnectOptions,
        size: usize,
        acquire_timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        let pool = managed::Pool::builder(SqliteConnections { options })
            .max_size(size)
            .wait_timeout(Some(acquire_timeout))
            .create_timeout(Some(acquire_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|error| sqlx::Error::Configuration(error.into()))?;
        let pool = Self {
            inner: Inner::Embedded(pool),
        };
        drop(pool.acquire().await?);
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

    async fn recycle(
        &self,
        _connection: &mut AnyConnection,
        _metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        Ok(())
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
