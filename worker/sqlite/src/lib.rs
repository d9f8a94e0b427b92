//! SQLite behind OpenRegistry's `Sql` and `Kv` ports: the native host's embedded defaults, and
//! the real SQL engine the core's tests run against.
//!
//! The schema is written in Postgres' dialect, kept to the subset SQLite runs; the two differences
//! left are bridged here: `$n` parameters become `?n`, and a `"C"` (bytewise) collation exists.
//!
//! A database file has one writer connection, behind a mutex, and a small pool of read-only
//! connections. WAL lets readers run beside the writer; each read is its own transaction, started
//! after every commit that had returned, so a read sees every write that returned before it
//! (read-your-writes across connections). `read` runs a `SELECT` on a read connection and never
//! waits for a lock: when a read connection is busy or fails, or the statement could write, it
//! declines and the caller uses the writer (`query_blocking`, `batch_blocking`), whose commits may
//! wait on fsync. In-memory databases (tests) are private to one connection, so they have no
//! readers and everything runs on the writer.
//!
//! Calls are synchronous: SQLite statements take microseconds. Hosts that must not block an async
//! worker wrap these types: the native host runs `read` inline and the writer on `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openregistry::ports::{Kv, Row, Sql, SqlError, SqlValue, Statement, Unavailable};
use rusqlite::types::{ToSqlOutput, Value as SqliteValue, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};

/// Why a database could not be opened.
pub type OpenError = rusqlite::Error;

/// Prepared statements kept per connection (the core has a few dozen distinct statements).
const STATEMENT_CACHE: usize = 64;
/// Idle read connections kept per database. One is in use per thread reading at the same moment
/// (the native host: its async workers); more are opened on demand and closed when returned.
const MAX_IDLE_READERS: usize = 8;

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL + FULL: a commit is durable when it returns, and readers never block the writer.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    add_collation(conn)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Postgres' "C" collation orders bytewise; so does this one.
fn add_collation(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.create_collation("C", |a: &str, b: &str| a.as_bytes().cmp(b.as_bytes()))
}

/// A read-only connection to a database the writer has already put in WAL mode.
fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    // Never wait for a lock (readers run on async workers): a busy reader declines instead.
    conn.busy_timeout(Duration::ZERO)?;
    // Read-only twice over: the open flags, and this.
    conn.pragma_update(None, "query_only", "ON")?;
    add_collation(&conn)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Rewrites Postgres `$n` placeholders to SQLite's `?n`, leaving string literals alone.
pub fn postgres_to_sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_string = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_string = !in_string;
                out.push(c);
            }
            '$' if !in_string && chars.peek().is_some_and(|d| d.is_ascii_digit()) => out.push('?'),
            _ => out.push(c),
        }
    }
    out
}

struct Param<'a>(&'a SqlValue);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            SqlValue::Null => ToSqlOutput::Owned(SqliteValue::Null),
            SqlValue::Int(i) => ToSqlOutput::Owned(SqliteValue::Integer(*i)),
            SqlValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            SqlValue::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn map_error(err: rusqlite::Error) -> SqlError {
    match &err {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let unique = failure.code == ErrorCode::ConstraintViolation
                && matches!(
                    failure.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                        | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                );
            let text = message.clone().unwrap_or_else(|| err.to_string());
            if unique {
                SqlError::UniqueViolation(text)
            } else if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY {
                SqlError::ForeignKeyViolation(text)
            } else if matches!(
                failure.code,
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked
            ) {
                SqlError::Unavailable(Unavailable::new("sqlite", text))
            } else {
                SqlError::Database {
                    code: format!("{:?}", failure.code),
                    message: text,
                }
            }
        }
        _ => SqlError::Database {
            code: "sqlite".into(),
            message: err.to_string(),
        },
    }
}

fn run(conn: &Connection, statement: &Statement) -> Result<Vec<Row>, SqlError> {
    let sql = postgres_to_sqlite_placeholders(&statement.sql);
    let mut prepared = conn.prepare_cached(&sql).map_err(map_error)?;
    collect(&mut prepared, statement)
}

/// Binds `statement`'s parameters to `prepared`, runs it and converts its rows. The statement is
/// reset when this returns (rusqlite resets it when its `Rows` are dropped), so no read
/// transaction outlives the call.
fn collect(
    prepared: &mut rusqlite::Statement<'_>,
    statement: &Statement,
) -> Result<Vec<Row>, SqlError> {
    let params: Vec<Param<'_>> = statement.params.iter().map(Param).collect();
    let columns = prepared.column_count();
    let mut rows = prepared
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(map_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(map_error)? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match row.get_ref(i).map_err(map_error)? {
                ValueRef::Null => SqlValue::Null,
                ValueRef::Integer(v) => SqlValue::Int(v),
                ValueRef::Real(v) => SqlValue::Text(v.to_string()),
                ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => SqlValue::Bytes(Bytes::copy_from_slice(b)),
            });
        }
        out.push(Row(values));
    }
    Ok(out)
}

/// Whether `sql` starts like a query. Only a hint: `read` also asks SQLite whether the prepared
/// statement is read-only, and read connections are opened read-only.
fn looks_like_read(sql: &str) -> bool {
    let sql = sql.trim_start();
    ["select", "with"].iter().any(|word| {
        sql.get(..word.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(word))
    })
}

/// Why `SqliteSql::read` did not run a statement; the caller runs it on the writer instead.
#[derive(Debug)]
pub enum NotOnReader {
    /// The statement is not a query, or SQLite says it may write.
    MayWrite,
    /// The database has no read connections (an in-memory database).
    NoReaders,
    /// The read connection failed (it was busy, or any other error); the writer is the reference,
    /// so the statement is run there, which reports the error if it is real.
    Failed(SqlError),
}

/// The read-only connections of one database file, taken by one thread at a time.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn take(&self) -> Result<Connection, rusqlite::Error> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(conn) => Ok(conn),
            None => open_reader(&self.path),
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
    }
}

/// An SQLite database implementing the `Sql` port.
#[derive(Clone)]
pub struct SqliteSql {
    conn: Arc<Mutex<Connection>>,
    readers: Option<Arc<Readers>>,
}

impl SqliteSql {
    /// Opens (creating it if needed) the database at `path` in WAL mode, with its writer and one
    /// read connection.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let conn = Connection::open(path)?;
        configure(&conn)?;
        // The writer has made the file a WAL database; a reader now opens like any later one.
        let readers = Readers {
            path: path.to_owned(),
            idle: Mutex::new(vec![open_reader(path)?]),
        };
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: Some(Arc::new(readers)),
        })
    }

    /// A private in-memory database (tests): the writer alone.
    pub fn open_in_memory() -> Result<Self, OpenError> {
        let conn = Connection::open_in_memory()?;
        configure(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: None,
        })
    }

    /// Runs a query on a read connection, synchronously, without ever waiting for a lock. Sees
    /// every write whose `query_blocking`/`batch_blocking` returned before this was called.
    pub fn read(&self, statement: &Statement) -> Result<Vec<Row>, NotOnReader> {
        let readers = self.readers.as_ref().ok_or(NotOnReader::NoReaders)?;
        if !looks_like_read(&statement.sql) {
            return Err(NotOnReader::MayWrite);
        }
        let conn = readers
            .take()
            .map_err(|e| NotOnReader::Failed(map_error(e)))?;
        let outcome = Self::read_on(&conn, statement);
        match &outcome {
            // A connection that failed is closed rather than reused, in case its state is odd.
            Err(NotOnReader::Failed(_)) => drop(conn),
            _ => readers.give_back(conn),
        }
        outcome
    }

    fn read_on(conn: &Connection, statement: &Statement) -> Result<Vec<Row>, NotOnReader> {
        let sql = postgres_to_sqlite_placeholders(&statement.sql);
        let mut prepared = conn
            .prepare_cached(&sql)
            .map_err(|e| NotOnReader::Failed(map_error(e)))?;
        if !prepared.readonly() {
            return Err(NotOnReader::MayWrite);
        }
        collect(&mut prepared, statement).map_err(NotOnReader::Failed)
    }

    /// A query on a read connection when it can run there, else on the writer (which may wait).
    pub fn read_blocking(&self, statement: &Statement) -> Result<Vec<Row>, SqlError> {
        match self.read(statement) {
            Ok(rows) => Ok(rows),
            Err(_) => self.query_blocking(statement),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, SqlError> {
        self.conn.lock().map_err(|_| {
            SqlError::Unavailable(Unavailable::new("sqlite", "connection lock poisoned"))
        })
    }

    /// Runs one statement on the writer connection, synchronously.
    pub fn query_blocking(&self, statement: &Statement) -> Result<Vec<Row>, SqlError> {
        let conn = self.lock()?;
        run(&conn, statement)
    }

    /// Runs statements in one transaction, synchronously; all or nothing.
    pub fn batch_blocking(&self, statements: &[Statement]) -> Result<Vec<Vec<Row>>, SqlError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(map_error)?;
        let mut results = Vec::with_capacity(statements.len());
        for statement in statements {
            results.push(run(&tx, statement)?);
        }
        tx.commit().map_err(map_error)?;
        Ok(results)
    }
}

#[async_trait::async_trait]
impl Sql for SqliteSql {
    async fn query(&self, statement: Statement) -> Result<Vec<Row>, SqlError> {
        self.read_blocking(&statement)
    }

    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>, SqlError> {
        self.batch_blocking(&statements)
    }
}

/// An SQLite table implementing the `Kv` port, with expiry. Strongly consistent.
#[derive(Clone)]
pub struct SqliteKv {
    db: SqliteSql,
}

fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn kv_unavailable(err: SqlError) -> Unavailable {
    match err {
        SqlError::Unavailable(u) => u,
        other => Unavailable::new("kv", other.to_string()),
    }
}

impl SqliteKv {
    /// Opens (and creates if needed) the key-value table in `db`.
    pub fn new(db: SqliteSql) -> Result<Self, SqlError> {
        db.query_blocking(&Statement::new(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER)",
        ))?;
        Ok(Self { db })
    }

    fn get_statement(key: &str) -> Statement {
        Statement::new(
            "SELECT value FROM kv WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(key)
        .bind(now_ms())
    }

    fn value(rows: &[Row]) -> Result<Option<Bytes>, SqlError> {
        rows.first().map(|r| r.bytes(0)).transpose()
    }

    /// `get` on a read connection, never waiting for a lock; on `Err` use `get_blocking`.
    pub fn get_on_reader(&self, key: &str) -> Result<Option<Bytes>, NotOnReader> {
        let rows = self.db.read(&Self::get_statement(key))?;
        Self::value(&rows).map_err(NotOnReader::Failed)
    }

    /// `get` on a read connection when it can, else on the writer (which may wait).
    pub fn get_blocking(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        let rows = self
            .db
            .read_blocking(&Self::get_statement(key))
            .map_err(kv_unavailable)?;
        Self::value(&rows).map_err(kv_unavailable)
    }

    pub fn put_blocking(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), Unavailable> {
        let expires =
            ttl.map(|t| now_ms().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)));
        self.db
            .batch_blocking(&[
                Statement::new("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= $1").bind(now_ms()),
                Statement::new(
                    "INSERT INTO kv (key, value, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                )
                .bind(key)
                .bind(value)
                .bind(expires),
            ])
            .map(|_| ())
            .map_err(kv_unavailable)
    }

    pub fn delete_blocking(&self, key: &str) -> Result<(), Unavailable> {
        self.db
            .query_blocking(&Statement::new("DELETE FROM kv WHERE key = $1").bind(key))
            .map(|_| ())
            .map_err(kv_unavailable)
    }
}

#[async_trait::async_trait]
impl Kv for SqliteKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        self.get_blocking(key)
    }
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Unavailable> {
        self.put_blocking(key, value, ttl)
    }
    async fn delete(&self, key: &str) -> Result<(), Unavailable> {
        self.delete_blocking(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;

    #[test]
    fn placeholders_are_rewritten_outside_string_literals() {
        assert_eq!(
            postgres_to_sqlite_placeholders("SELECT $1, '$2', $10 WHERE x = '$'"),
            "SELECT ?1, '$2', ?10 WHERE x = '$'"
        );
    }

    #[test]
    fn unique_violations_are_typed() {
        let db = SqliteSql::open_in_memory().expect("open");
        db.query_blocking(&Statement::new("CREATE TABLE t (k TEXT PRIMARY KEY)"))
            .expect("create");
        let insert = Statement::new("INSERT INTO t (k) VALUES ($1)").bind("a");
        db.query_blocking(&insert).expect("first insert");
        assert!(matches!(
            db.query_blocking(&insert),
            Err(SqlError::UniqueViolation(_))
        ));
    }

    #[test]
    fn a_failed_batch_changes_nothing() {
        let db = SqliteSql::open_in_memory().expect("open");
        db.query_blocking(&Statement::new("CREATE TABLE t (k TEXT PRIMARY KEY)"))
            .expect("create");
        let insert = |k: &str| Statement::new("INSERT INTO t (k) VALUES ($1)").bind(k);
        assert!(db.batch_blocking(&[insert("a"), insert("a")]).is_err());
        let rows = db
            .query_blocking(&Statement::new("SELECT count(*) FROM t"))
            .expect("count");
        assert_eq!(rows[0].int(0), Ok(0));
    }

    #[test]
    fn the_c_collation_orders_bytewise() {
        let db = SqliteSql::open_in_memory().expect("open");
        db.query_blocking(&Statement::new(
            "CREATE TABLE t (k TEXT COLLATE \"C\" PRIMARY KEY)",
        ))
        .expect("create");
        for k in ["b", "B", "a", "_", "A"] {
            db.query_blocking(&Statement::new("INSERT INTO t (k) VALUES ($1)").bind(k))
                .expect("insert");
        }
        let rows = db
            .query_blocking(&Statement::new("SELECT k FROM t ORDER BY k"))
            .expect("select");
        let keys: Vec<String> = rows.iter().map(|r| r.text(0).expect("text")).collect();
        assert_eq!(keys, vec!["A", "B", "_", "a", "b"]);
    }

    fn file_db() -> (tempfile::TempDir, SqliteSql) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = SqliteSql::open(&dir.path().join("db.sqlite")).expect("open");
        db.query_blocking(&Statement::new(
            "CREATE TABLE t (k TEXT COLLATE \"C\" PRIMARY KEY, v INTEGER NOT NULL)",
        ))
        .expect("create");
        (dir, db)
    }

    fn count(rows: &[Row]) -> i64 {
        rows[0].int(0).expect("count")
    }

    #[test]
    fn a_read_sees_every_write_that_returned_before_it() {
        let (_dir, db) = file_db();
        let count_all = Statement::new("SELECT count(*) FROM t");
        for i in 0..200 {
            db.batch_blocking(&[Statement::new("INSERT INTO t (k, v) VALUES ($1, $2)")
                .bind(format!("k{i}"))
                .bind(i)])
                .expect("insert");
            assert_eq!(count(&db.read(&count_all).expect("on a reader")), i + 1);
            db.query_blocking(&Statement::new("UPDATE t SET v = v + 1 WHERE k = $1").bind("k0"))
                .expect("update");
            let v = db
                .read(&Statement::new("SELECT v FROM t WHERE k = $1").bind("k0"))
                .expect("on a reader");
            assert_eq!(v[0].int(0), Ok(i + 1));
        }
    }

    #[test]
    fn reads_on_other_threads_see_writes_acknowledged_to_them() {
        let (_dir, db) = file_db();
        let (tx, rx) = std::sync::mpsc::channel::<i64>();
        let reader = {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in rx {
                    let rows = db
                        .read(&Statement::new("SELECT v FROM t WHERE k = $1").bind(format!("k{i}")))
                        .expect("on a reader");
                    assert_eq!(rows.len(), 1, "write {i} acknowledged but not visible");
                    assert_eq!(rows[0].int(0), Ok(i));
                }
            })
        };
        for i in 0..300 {
            db.query_blocking(
                &Statement::new("INSERT INTO t (k, v) VALUES ($1, $2)")
                    .bind(format!("k{i}"))
                    .bind(i),
            )
            .expect("insert");
            tx.send(i).expect("send");
        }
        drop(tx);
        reader.join().expect("reader thread");
    }

    #[test]
    fn readers_decline_statements_that_write() {
        let (_dir, db) = file_db();
        for sql in [
            "INSERT INTO t (k, v) VALUES ('a', 1)",
            "DELETE FROM t",
            "WITH x AS (SELECT 1) DELETE FROM t",
            "CREATE TABLE u (x INTEGER)",
        ] {
            assert!(
                matches!(db.read(&Statement::new(sql)), Err(NotOnReader::MayWrite)),
                "{sql} ran on a reader"
            );
        }
        assert_eq!(
            count(
                &db.query_blocking(&Statement::new("SELECT count(*) FROM t"))
                    .expect("count")
            ),
            0
        );
    }

    #[test]
    fn readers_see_schema_changes_and_the_c_collation() {
        let (_dir, db) = file_db();
        for k in ["b", "B", "_"] {
            db.query_blocking(&Statement::new("INSERT INTO t (k, v) VALUES ($1, 0)").bind(k))
                .expect("insert");
        }
        let rows = db
            .read(&Statement::new("SELECT k FROM t ORDER BY k"))
            .expect("on a reader");
        let keys: Vec<String> = rows.iter().map(|r| r.text(0).expect("text")).collect();
        assert_eq!(keys, vec!["B", "_", "b"]);
        db.query_blocking(&Statement::new("CREATE TABLE u (x INTEGER)"))
            .expect("create");
        db.query_blocking(&Statement::new("INSERT INTO u (x) VALUES (7)"))
            .expect("insert");
        let rows = db
            .read(&Statement::new("SELECT x FROM u"))
            .expect("on a reader");
        assert_eq!(rows[0].int(0), Ok(7));
    }

    #[test]
    fn in_memory_databases_have_no_readers() {
        let db = SqliteSql::open_in_memory().expect("open");
        assert!(matches!(
            db.read(&Statement::new("SELECT 1")),
            Err(NotOnReader::NoReaders)
        ));
        assert_eq!(
            db.read_blocking(&Statement::new("SELECT 1"))
                .expect("on the writer")[0]
                .int(0),
            Ok(1)
        );
    }

    #[test]
    fn kv_reads_see_the_last_put() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = SqliteKv::new(SqliteSql::open(&dir.path().join("kv.sqlite")).expect("open"))
            .expect("kv");
        for i in 0..50u8 {
            kv.put_blocking(
                "session",
                Bytes::from(vec![i]),
                Some(Duration::from_secs(60)),
            )
            .expect("put");
            assert_eq!(
                kv.get_on_reader("session").expect("on a reader"),
                Some(Bytes::from(vec![i]))
            );
        }
        kv.delete_blocking("session").expect("delete");
        assert_eq!(kv.get_on_reader("session").expect("on a reader"), None);
    }

    #[test]
    fn kv_values_expire() {
        let kv = SqliteKv::new(SqliteSql::open_in_memory().expect("open")).expect("kv");
        block_on(kv.put("k", Bytes::from_static(b"v"), None)).expect("put");
        assert_eq!(
            block_on(kv.get("k")).expect("get"),
            Some(Bytes::from_static(b"v"))
        );
        block_on(kv.put("k", Bytes::from_static(b"v"), Some(Duration::ZERO))).expect("put");
        assert_eq!(block_on(kv.get("k")).expect("get"), None);
        block_on(kv.delete("k")).expect("delete");
    }
}
