//! The embedded SQLite `Sql` and `Kv`, and the host's clock and randomness.
//!
//! Queries (`SELECT`, a `Kv` get) run inline on the async worker that asks, on one of the
//! database's read-only WAL connections (`SqliteSql::read`): a point query takes microseconds and
//! a reader never waits for a lock, so handing it to another thread would cost more than running
//! it (each hand-off is a wake-up and a context switch, and under load the blocking pool grew to
//! a hundred threads contending for one connection's mutex). A read declined by the readers
//! (busy, failed) falls back to the writer. Everything that writes (`batch`, statements that are
//! not queries, `Kv` put/delete) goes to the single writer connection on tokio's blocking pool,
//! since commits wait for fsync. WAL makes every commit visible to reads started after it
//! returns, so a read sees every write acknowledged before it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openregistry::ports::{Clock, Kv, Random, Row, Sql, SqlError, Statement, Unavailable};
use openregistry_sqlite::{SqliteKv, SqliteSql};

fn join_error(err: tokio::task::JoinError) -> Unavailable {
    Unavailable::new("sqlite", format!("worker thread failed: {err}"))
}

/// `SqliteSql`: queries on read connections in place, writes on tokio's blocking pool.
#[derive(Clone)]
pub struct EmbeddedSql(pub SqliteSql);

#[async_trait::async_trait]
impl Sql for EmbeddedSql {
    async fn query(&self, statement: Statement) -> Result<Vec<Row>, SqlError> {
        if let Ok(rows) = self.0.read(&statement) {
            return Ok(rows);
        }
        let db = self.0.clone();
        tokio::task::spawn_blocking(move || db.query_blocking(&statement))
            .await
            .map_err(join_error)?
    }

    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>, SqlError> {
        let db = self.0.clone();
        tokio::task::spawn_blocking(move || db.batch_blocking(&statements))
            .await
            .map_err(join_error)?
    }
}

/// `SqliteKv`: gets on read connections in place, puts and deletes on tokio's blocking pool.
#[derive(Clone)]
pub struct EmbeddedKv(pub SqliteKv);

#[async_trait::async_trait]
impl Kv for EmbeddedKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        if let Ok(value) = self.0.get_on_reader(key) {
            return Ok(value);
        }
        let (kv, key) = (self.0.clone(), key.to_owned());
        tokio::task::spawn_blocking(move || kv.get_blocking(&key))
            .await
            .map_err(join_error)?
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Unavailable> {
        let (kv, key) = (self.0.clone(), key.to_owned());
        tokio::task::spawn_blocking(move || kv.put_blocking(&key, value, ttl))
            .await
            .map_err(join_error)?
    }

    async fn delete(&self, key: &str) -> Result<(), Unavailable> {
        let (kv, key) = (self.0.clone(), key.to_owned());
        tokio::task::spawn_blocking(move || kv.delete_blocking(&key))
            .await
            .map_err(join_error)?
    }
}

/// The operating system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_millis(&self) -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

/// The operating system's CSPRNG.
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buffer: &mut [u8]) {
        // The OS generator failing is not recoverable, and continuing with predictable session
        // ids would be worse than stopping.
        #[allow(clippy::expect_used)]
        getrandom::fill(buffer).expect("the operating system's random generator failed");
    }
}
