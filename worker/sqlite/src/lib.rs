//! SQLite behind OpenRegistry's `Sql` and `Kv` ports: the native host's embedded defaults, and
//! the real SQL engine the core's tests run against.
//!
//! The schema is written in Postgres' dialect, kept to the subset SQLite runs; the two differences
//! left are bridged here: `$n` parameters become `?n`, and a `"C"` (bytewise) collation exists.
//!
//! Calls are synchronous under a mutex: SQLite statements take microseconds, and hosts that must
//! not block an async worker wrap these types (the native host uses `spawn_blocking`).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openregistry::ports::{Kv, Row, Sql, SqlError, SqlValue, Statement, Unavailable};
use rusqlite::types::{ToSqlOutput, Value as SqliteValue, ValueRef};
use rusqlite::{Connection, ErrorCode};

/// Why a database could not be opened.
pub type OpenError = rusqlite::Error;

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL + FULL: a commit is durable when it returns, and readers never block the writer.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Postgres' "C" collation orders bytewise; so does this one.
    conn.create_collation("C", |a: &str, b: &str| a.as_bytes().cmp(b.as_bytes()))?;
    Ok(())
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

/// An SQLite database implementing the `Sql` port.
#[derive(Clone)]
pub struct SqliteSql {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteSql {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let conn = Connection::open(path)?;
        configure(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, OpenError> {
        let conn = Connection::open_in_memory()?;
        configure(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, SqlError> {
        self.conn.lock().map_err(|_| {
            SqlError::Unavailable(Unavailable::new("sqlite", "connection lock poisoned"))
        })
    }

    /// Runs one statement, synchronously.
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
        self.query_blocking(&statement)
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

    pub fn get_blocking(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        let rows = self
            .db
            .query_blocking(
                &Statement::new("SELECT value FROM kv WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)")
                    .bind(key)
                    .bind(now_ms()),
            )
            .map_err(kv_unavailable)?;
        rows.first()
            .map(|r| r.bytes(0))
            .transpose()
            .map_err(kv_unavailable)
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
