//! SQLite statements run on the calling thread.
//!
//! sqlx runs each SQLite statement on the connection's worker thread and
//! sends the results back, which wakes two sleeping threads per statement.
//! While password logins keep every CPU hashing, each of those wake-ups
//! preempts a hashing thread. A statement that reads or writes a few rows by
//! key costs less than that hand-off: about 20 µs of CPU time against about
//! 40 µs, as estimated from the per-thread figures in BENCHMARKS.md. For
//! those the pool runs the statement here instead, on connections of its
//! own. Long reads stay on sqlx's worker threads, where they cannot hold up
//! the async runtime.
//!
//! These connections never wait: when all of them are in use, or SQLite
//! reports the database locked by another connection, the statement goes to
//! the pool as it would have without them.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use either::Either;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, Statement};
use sqlx::any::{AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx_core::any::{AnyColumn, AnyValueKind};
use sqlx_core::ext::ustr::UStr;

/// Rows and one result per statement of a statement string, in the order
/// that sqlx's own driver yields them.
pub(super) type Results = Vec<Either<AnyQueryResult, AnyRow>>;

/// Prepared statements kept per connection. The statements sent this way
/// are a fixed set in the code, well under this.
const CACHED_STATEMENTS: usize = 64;

/// SQLite connections for statements that run on the calling thread.
pub(super) struct InlineSqlite {
    connections: Box<[Mutex<Connection>]>,
}

impl InlineSqlite {
    /// Opens `count` connections to the database file at `path`, which the
    /// pool has already opened, so that it exists and is in WAL mode.
    pub(super) fn open(path: &Path, count: usize) -> rusqlite::Result<Self> {
        let connections = (0..count.max(1))
            .map(|_| open_connection(path).map(Mutex::new))
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self { connections })
    }

    /// Runs `sql` with `arguments` on the first idle connection and returns
    /// what it produced, or `None` when it did not run: every connection
    /// was in use, or the database was locked. At most `limit` rows are
    /// kept, and no statement of the string runs after the last of them.
    pub(super) fn run(
        &self,
        sql: &str,
        arguments: &[AnyValueKind<'_>],
        limit: Option<usize>,
    ) -> Option<Result<Results, sqlx::Error>> {
        // Trying the connections in order keeps most statements on the
        // first, whose page cache then stays current.
        let connection = self.connections.iter().find_map(take)?;
        match run(&connection, sql, arguments, limit) {
            Ok(results) => Some(Ok(results)),
            Err(error) if is_locked(&error) => None,
            Err(error) => Some(Err(into_sqlx(error))),
        }
    }
}

impl fmt::Debug for InlineSqlite {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("InlineSqlite")
            .field("connections", &self.connections.len())
            .finish()
    }
}

/// Returns whether `sql` may contain more than one statement. Statements
/// are separated by semicolons, so a string without an inner semicolon is
/// one statement. A semicolon in a literal only costs an extra transaction.
pub(super) fn may_hold_several(sql: &str) -> bool {
    sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .contains(';')
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // No waiting on the calling thread. A locked database sends the
    // statement to the pool, whose connections wait on their own threads.
    connection.busy_timeout(Duration::ZERO)?;
    // The same settings as the pool's connections. Foreign keys are off in
    // SQLite unless each connection turns them on.
    connection.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
    connection.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
    Ok(connection)
}

/// Takes `slot` unless another thread has it locked. Statements sent here
/// should leave no transaction open, but one left open (by a `BEGIN` sent
/// here, or a thread that panicked midway) would keep the write lock for
/// good, so it is rolled back first.
fn take(slot: &Mutex<Connection>) -> Option<MutexGuard<'_, Connection>> {
    let guard = match slot.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::WouldBlock) => return None,
        Err(TryLockError::Poisoned(poisoned)) => {
            slot.clear_poison();
            poisoned.into_inner()
        }
    };
    if !guard.is_autocommit() && guard.execute_batch("ROLLBACK").is_err() {
        return None;
    }
    Some(guard)
}

fn run(
    connection: &Connection,
    sql: &str,
    arguments: &[AnyValueKind<'_>],
    limit: Option<usize>,
) -> rusqlite::Result<Results> {
    let mut results = Vec::new();
    if !may_hold_several(sql) {
        let mut statement = connection.prepare_cached(sql)?;
        step(
            connection,
            &mut statement,
            arguments,
            0,
            limit,
            &mut results,
        )?;
        return Ok(results);
    }
    // The statements of one string commit together, and a locked database
    // shows at `BEGIN`, before any of them ran.
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let outcome = run_each(connection, sql, arguments, limit, &mut results)
        .and_then(|()| connection.execute_batch("COMMIT"));
    if outcome.is_err() && !connection.is_autocommit() {
        // A failed `COMMIT` (a deferred foreign key, a full disk) leaves
        // the transaction open. The statement's error describes the failure,
        // so a failed rollback is dropped here, and `take` tries again.
        let _ = connection.execute_batch("ROLLBACK");
    }
    outcome.map(|()| results)
}

/// Runs the statements of `sql` one after another. `prepare_cached`
/// would prepare only the first, so these are prepared afresh each time.
fn run_each(
    connection: &Connection,
    sql: &str,
    arguments: &[AnyValueKind<'_>],
    limit: Option<usize>,
    results: &mut Results,
) -> rusqlite::Result<()> {
    let mut batch = rusqlite::Batch::new(connection, sql);
    let mut offset = 0;
    let mut rows_kept = 0;
    while let Some(mut statement) = batch.next()? {
        // As sqlx does, a string read for one row stops at that row.
        if limit.is_some_and(|limit| rows_kept >= limit) {
            break;
        }
        let before = results.len();
        offset += step(
            connection,
            &mut statement,
            arguments,
            offset,
            limit.map(|limit| limit - rows_kept),
            results,
        )?;
        rows_kept += results[before..]
            .iter()
            .filter(|result| result.is_right())
            .count();
    }
    Ok(())
}

/// Binds `arguments` to `statement`, runs it, and appends its rows and its
/// result. Returns how many positional (`?`) parameters it took, so that
/// the next statement of a string starts after them, as in sqlx.
fn step(
    connection: &Connection,
    statement: &mut Statement<'_>,
    arguments: &[AnyValueKind<'_>],
    offset: usize,
    limit: Option<usize>,
    results: &mut Results,
) -> rusqlite::Result<usize> {
    let positional = bind(statement, arguments, offset)?;
    let read_only = statement.readonly();
    let names: Vec<UStr> = statement
        .column_names()
        .into_iter()
        .map(UStr::new)
        .collect();
    let index: Arc<sqlx_core::HashMap<UStr, usize>> = Arc::new(
        names
            .iter()
            .enumerate()
            .map(|(ordinal, name)| (name.clone(), ordinal))
            .collect(),
    );

    let mut rows_kept = 0;
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next()? {
        if limit.is_some_and(|limit| rows_kept >= limit) {
            // A write runs to its end whatever the caller keeps of what it
            // returns, but a read can stop here.
            if read_only {
                break;
            }
            continue;
        }
        results.push(Either::Right(any_row(row, &names, &index)?));
        rows_kept += 1;
    }

    // `changes` counts the last INSERT, UPDATE or DELETE to finish, which
    // for a read is some earlier statement's.
    let rows_affected = if read_only { 0 } else { connection.changes() };
    results.push(Either::Left(AnyQueryResult {
        rows_affected,
        last_insert_id: None,
    }));
    Ok(positional)
}

/// Binds `arguments` to the parameters of `statement`. `$N` and `?N` name
/// the Nth argument of the whole string, and each bare `?` takes the next
/// one after `offset`. Returns how many bare `?` there were.
fn bind(
    statement: &mut Statement<'_>,
    arguments: &[AnyValueKind<'_>],
    offset: usize,
) -> rusqlite::Result<usize> {
    let mut next = offset;
    for index in 1..=statement.parameter_count() {
        let number = match statement.parameter_name(index) {
            Some(name) => parameter_number(name)?,
            None => {
                next += 1;
                next
            }
        };
        // SQLite reads a parameter left unbound as NULL. sqlx leaves those
        // beyond the arguments given unbound, and so does this.
        let Some(argument) = arguments.get(number - 1) else {
            break;
        };
        statement.raw_bind_parameter(index, Argument(argument))?;
    }
    Ok(next - offset)
}

/// Converts one result row into the row type of sqlx's `Any` driver.
fn any_row(
    row: &rusqlite::Row<'_>,
    names: &[UStr],
    index: &Arc<sqlx_core::HashMap<UStr, usize>>,
) -> rusqlite::Result<AnyRow> {
    let mut values = Vec::with_capacity(names.len());
    for ordinal in 0..names.len() {
        values.push(value(row.get_ref(ordinal)?)?);
    }
    let columns = names
        .iter()
        .zip(&values)
        .enumerate()
        .map(|(ordinal, (name, value))| AnyColumn {
            ordinal,
            name: name.clone(),
            type_info: AnyTypeInfo {
                kind: kind_of(&value.kind),
            },
        })
        .collect();
    Ok(AnyRow {
        column_names: Arc::clone(index),
        columns,
        values,
    })
}

fn parameter_number(name: &str) -> rusqlite::Result<usize> {
    name.strip_prefix(['$', '?'])
        .and_then(|digits| digits.parse::<usize>().ok())
        .filter(|number| *number > 0)
        .ok_or_else(|| {
            rusqlite::Error::InvalidParameterName(format!(
                "invalid parameter name {name}: use numbered parameters ($1, ?1) or ?"
            ))
        })
}

/// One of sqlx's argument values, bound the way sqlx's SQLite driver binds
/// it.
struct Argument<'a, 'q>(&'a AnyValueKind<'q>);

impl rusqlite::ToSql for Argument<'_, '_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let value = match self.0 {
            AnyValueKind::Null(_) => ValueRef::Null,
            AnyValueKind::Bool(flag) => ValueRef::Integer(i64::from(*flag)),
            AnyValueKind::SmallInt(number) => ValueRef::Integer(i64::from(*number)),
            AnyValueKind::Integer(number) => ValueRef::Integer(i64::from(*number)),
            AnyValueKind::BigInt(number) => ValueRef::Integer(*number),
            AnyValueKind::Real(number) => ValueRef::Real(f64::from(*number)),
            AnyValueKind::Double(number) => ValueRef::Real(*number),
            AnyValueKind::Text(text) => ValueRef::Text(text.as_bytes()),
            AnyValueKind::Blob(bytes) => ValueRef::Blob(bytes),
            other => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    format!("no SQLite value for the argument {other:?}").into(),
                ));
            }
        };
        Ok(ToSqlOutput::Borrowed(value))
    }
}

/// Converts a column value by its storage class, as sqlx's SQLite driver
/// does for the `Any` driver, so rows decode the same on either path.
fn value(stored: ValueRef<'_>) -> rusqlite::Result<AnyValue> {
    let kind = match stored {
        ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
        ValueRef::Integer(number) => AnyValueKind::BigInt(number),
        ValueRef::Real(number) => AnyValueKind::Double(number),
        ValueRef::Text(text) => AnyValueKind::Text(Cow::Owned(
            std::str::from_utf8(text)
                .map_err(rusqlite::Error::Utf8Error)?
                .to_owned(),
        )),
        ValueRef::Blob(bytes) => AnyValueKind::Blob(Cow::Owned(bytes.to_vec())),
    };
    Ok(AnyValue { kind })
}

fn kind_of(value: &AnyValueKind<'_>) -> AnyTypeInfoKind {
    match value {
        AnyValueKind::BigInt(_) => AnyTypeInfoKind::BigInt,
        AnyValueKind::Double(_) => AnyTypeInfoKind::Double,
        AnyValueKind::Text(_) => AnyTypeInfoKind::Text,
        AnyValueKind::Blob(_) => AnyTypeInfoKind::Blob,
        _ => AnyTypeInfoKind::Null,
    }
}

fn is_locked(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn into_sqlx(error: rusqlite::Error) -> sqlx::Error {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            sqlx::Error::Database(Box::new(SqliteFailure {
                extended_code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            }))
        }
        rusqlite::Error::ToSqlConversionFailure(source) => sqlx::Error::Encode(source),
        rusqlite::Error::Utf8Error(error) => sqlx::Error::Decode(Box::new(error)),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// An error reported by SQLite, shaped as sqlx reports its own.
#[derive(Debug)]
struct SqliteFailure {
    extended_code: i32,
    message: String,
}

impl fmt::Display for SqliteFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for SqliteFailure {}

impl DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.extended_code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::path::Path;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use sqlx::Row as _;
    use sqlx::error::ErrorKind;

    use crate::db::{DatabaseConfig, DbPool, begin_write, open};

    async fn open_file(path: &Path) -> DbPool {
        let config = DatabaseConfig {
            acquire_timeout_seconds: 5,
            ..DatabaseConfig::default()
        };
        open(&format!("sqlite://{}", path.display()), &config)
            .await
            .unwrap()
    }

    async fn items() -> (tempfile::TempDir, DbPool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = open_file(&dir.path().join("inline.db")).await;
        sqlx::query(
            "CREATE TABLE items (name TEXT PRIMARY KEY, count INTEGER, share REAL, \
             bytes BLOB, note TEXT)",
        )
        .execute(&pool)
        .await
        .unwrap();
        (dir, pool)
    }

    /// Polls `future` once, as the runtime would the first time.
    fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
        let mut context = Context::from_waker(Waker::noop());
        std::pin::pin!(future).poll(&mut context)
    }

    #[tokio::test]
    async fn statements_finish_without_waiting_for_a_worker_thread() {
        let (_dir, pool) = items().await;
        let insert = sqlx::query("INSERT INTO items (name, count) VALUES ($1, $2)")
            .bind("a")
            .bind(1_i64)
            .execute(pool.inline());
        let Poll::Ready(inserted) = poll_once(insert) else {
            panic!("the insert waited for another thread");
        };
        assert_eq!(inserted.unwrap().rows_affected(), 1);
        let select = sqlx::query_scalar::<_, i64>("SELECT count FROM items WHERE name = $1")
            .bind("a")
            .fetch_one(pool.inline());
        let polled = poll_once(select);
        assert!(matches!(polled, Poll::Ready(Ok(1))), "{polled:?}");
    }

    #[tokio::test]
    async fn rows_decode_as_they_do_from_the_pool() {
        let (_dir, pool) = items().await;
        sqlx::query(
            "INSERT INTO items (name, count, share, bytes, note) VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind("a")
        .bind(-7_i64)
        .bind(0.25_f64)
        .bind(vec![0_u8, 255])
        .execute(pool.inline())
        .await
        .unwrap();

        let select = "SELECT name, count, share, bytes, note FROM items WHERE name = $1";
        for row in [
            sqlx::query(select)
                .bind("a")
                .fetch_one(&pool)
                .await
                .unwrap(),
            sqlx::query(select)
                .bind("a")
                .fetch_one(pool.inline())
                .await
                .unwrap(),
        ] {
            assert_eq!(row.try_get::<String, _>("name").unwrap(), "a");
            assert_eq!(row.try_get::<i64, _>("count").unwrap(), -7);
            assert_eq!(row.try_get::<f64, _>(2).unwrap(), 0.25);
            assert_eq!(row.try_get::<Vec<u8>, _>("bytes").unwrap(), vec![0, 255]);
            assert_eq!(row.try_get::<Option<String>, _>("note").unwrap(), None);
            assert!(row.try_get::<i64, _>("missing").is_err());
        }

        let absent = sqlx::query(select)
            .bind("b")
            .fetch_optional(pool.inline())
            .await
            .unwrap();
        assert!(absent.is_none());
    }

    #[tokio::test]
    async fn statements_of_one_string_commit_together() {
        let (_dir, pool) = items().await;
        sqlx::query("INSERT INTO items (name, count) VALUES ($1, 1)")
            .bind("taken")
            .execute(pool.inline())
            .await
            .unwrap();
        // The second statement breaks the primary key, so the first must
        // not stay either.
        let failed = sqlx::query(
            "UPDATE items SET count = $2 WHERE name = $1; \
             INSERT INTO items (name, count) VALUES ($1, $2)",
        )
        .bind("taken")
        .bind(5_i64)
        .execute(pool.inline())
        .await;
        let Err(sqlx::Error::Database(error)) = failed else {
            panic!("expected a constraint error, got {failed:?}");
        };
        assert_eq!(error.kind(), ErrorKind::UniqueViolation);
        assert!(error.message().contains("UNIQUE"), "{}", error.message());
        let count: i64 = sqlx::query_scalar("SELECT count FROM items WHERE name = 'taken'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 1);

        let done = sqlx::query(
            "UPDATE items SET count = ? WHERE name = ?; \
             INSERT INTO items (name, count) VALUES (?, ?)",
        )
        .bind(2_i64)
        .bind("taken")
        .bind("new")
        .bind(3_i64)
        .execute(pool.inline())
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 2);
        let counts: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, count FROM items ORDER BY name")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(counts, [("new".to_owned(), 3), ("taken".to_owned(), 2)]);
    }

    #[tokio::test]
    async fn locked_database_sends_the_statement_to_the_pool() {
        let (dir, pool) = items().await;
        let other = open_file(&dir.path().join("inline.db")).await;
        let transaction = begin_write(&other).await.unwrap();
        let insert = tokio::spawn({
            let pool = pool.clone();
            async move {
                sqlx::query("INSERT INTO items (name) VALUES ('waited')")
                    .execute(pool.inline())
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !insert.is_finished(),
            "the insert did not wait for the lock"
        );
        transaction.commit().await.unwrap();
        insert.await.unwrap().unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE name = 'waited'")
            .fetch_one(pool.inline())
            .await
            .unwrap();
        assert_eq!(count, 1);
    }

    async fn count_named(pool: &DbPool, name: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// SQLite keeps the transaction open when `COMMIT` fails, here on a
    /// deferred foreign key. Left open, it would keep every later write
    /// uncommitted and lock the pool out.
    #[tokio::test]
    async fn failed_commit_leaves_no_transaction_open() {
        let (_dir, pool) = items().await;
        sqlx::raw_sql(
            "CREATE TABLE parents (id INTEGER PRIMARY KEY); \
             CREATE TABLE children (parent INTEGER REFERENCES parents (id) \
             DEFERRABLE INITIALLY DEFERRED)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let failed = sqlx::query(
            "INSERT INTO items (name) VALUES ('first'); \
             INSERT INTO children (parent) VALUES (99)",
        )
        .execute(pool.inline())
        .await;
        assert!(failed.is_err(), "{failed:?}");
        let written = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("INSERT INTO items (name) VALUES ('pool')").execute(&pool),
        )
        .await;
        assert!(matches!(written, Ok(Ok(_))), "{written:?}");
        sqlx::query("INSERT INTO items (name) VALUES ('later')")
            .execute(pool.inline())
            .await
            .unwrap();
        assert_eq!(count_named(&pool, "first").await, 0);
        assert_eq!(count_named(&pool, "later").await, 1);
    }

    #[tokio::test]
    async fn left_open_transaction_is_rolled_back() {
        let (_dir, pool) = items().await;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(pool.inline())
            .await
            .unwrap();
        sqlx::query("INSERT INTO items (name) VALUES ('after')")
            .execute(pool.inline())
            .await
            .unwrap();
        assert_eq!(count_named(&pool, "after").await, 1);
    }

    /// Statements that wait for the pool still commit together.
    #[tokio::test]
    async fn fallback_keeps_string_atomic() {
        let (dir, pool) = items().await;
        sqlx::query("INSERT INTO items (name, count) VALUES ('taken', 1)")
            .execute(&pool)
            .await
            .unwrap();
        let other = open_file(&dir.path().join("inline.db")).await;
        let transaction = begin_write(&other).await.unwrap();
        let update = tokio::spawn({
            let pool = pool.clone();
            async move {
                sqlx::query(
                    "UPDATE items SET count = $2 WHERE name = $1; \
                     INSERT INTO items (name, count) VALUES ($1, $2)",
                )
                .bind("taken")
                .bind(5_i64)
                .execute(pool.inline())
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        transaction.commit().await.unwrap();
        assert!(update.await.unwrap().is_err());
        let count: i64 = sqlx::query_scalar("SELECT count FROM items WHERE name = 'taken'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 1);
    }

    #[tokio::test]
    async fn one_row_read_stops_string() {
        let (_dir, pool) = items().await;
        let sql = "SELECT 1; INSERT INTO items (name) VALUES ($1)";
        for (executor, name) in [(pool.inline(), "inline"), (pool.inline(), "again")] {
            let row = sqlx::query(sql)
                .bind(name)
                .fetch_optional(executor)
                .await
                .unwrap();
            assert!(row.is_some());
            assert_eq!(count_named(&pool, name).await, 0);
        }
        sqlx::query(sql)
            .bind("pool")
            .fetch_optional(&pool)
            .await
            .unwrap();
        assert_eq!(count_named(&pool, "pool").await, 0);
    }

    #[tokio::test]
    async fn invalid_utf8_text_fails_decoding() {
        let (_dir, pool) = items().await;
        sqlx::query("INSERT INTO items (name, note) VALUES ('a', CAST(X'FF' AS TEXT))")
            .execute(&pool)
            .await
            .unwrap();
        let read = sqlx::query("SELECT note FROM items WHERE name = 'a'")
            .fetch_one(pool.inline())
            .await;
        assert!(
            matches!(read, Err(sqlx::Error::Decode(_))),
            "{:?}",
            read.err()
        );
    }

    #[tokio::test]
    async fn stream_dropped_unpolled_changes_nothing() {
        let (_dir, pool) = items().await;
        let stream = sqlx::query("INSERT INTO items (name) VALUES ('never')").fetch(pool.inline());
        drop(stream);
        assert_eq!(count_named(&pool, "never").await, 0);
    }

    #[test]
    fn semicolons_mark_strings_of_several_statements() {
        assert!(!super::may_hold_several("SELECT 1"));
        assert!(!super::may_hold_several("SELECT 1;  \n"));
        assert!(super::may_hold_several("SELECT 1; SELECT 2"));
        assert!(super::may_hold_several("SELECT ';'"));
    }

    #[tokio::test]
    async fn immutable_database_is_not_written() {
        let (dir, pool) = items().await;
        drop(pool);
        let path = dir.path().join("inline.db");
        let url = format!("sqlite://{}?immutable=true", path.display());
        let immutable = open(&url, &DatabaseConfig::default()).await.unwrap();
        let written = sqlx::query("INSERT INTO items (name) VALUES ('written')")
            .execute(immutable.inline())
            .await;
        assert!(written.is_err(), "{written:?}");
        drop(immutable);
        let pool = open_file(&path).await;
        assert_eq!(count_named(&pool, "written").await, 0);
    }

    /// Another connection to `:memory:` would open a database of its own,
    /// without the pool's tables.
    #[tokio::test]
    async fn in_memory_database_keeps_one_database() {
        let pool = open("sqlite::memory:", &DatabaseConfig::default())
            .await
            .unwrap();
        sqlx::query("CREATE TABLE items (name TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO items (name) VALUES ('a')")
            .execute(pool.inline())
            .await
            .unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 1);
    }
}
