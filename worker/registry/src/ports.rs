//! The ports: everything the core needs from its host, as object-safe async traits.
//!
//! | port         | native (embedded)      | Cloudflare      | Spin            |
//! |--------------|------------------------|-----------------|-----------------|
//! | [`Kv`]       | SQLite table           | KV binding      | Spin key-value  |
//! | [`Sql`]      | SQLite / Neon HTTP     | Neon HTTP       | Neon HTTP       |
//! | [`BlobStore`]| files / Skynet / S3    | R2 / Skynet / S3| Skynet / S3     |
//! | [`HttpClient`]| hyper                 | `Fetch`         | outbound HTTP   |
//! | [`Cache`]    | in-memory LRU (optional) | —             | —               |
//!
//! plus a [`Clock`] and a [`Random`] source. Futures are `Send` natively and not on wasm32, which is
//! what the paired `async_trait` attributes below say.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::body::{Body, ByteStream, MaybeSend, MaybeSync};
use crate::digest::Digest;
use crate::range::ByteRange;

/// A failure of a port that is not the caller's fault: the backing service is down, timed out, or
/// answered something the port could not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service} unavailable: {message}")]
pub struct Unavailable {
    pub service: &'static str,
    pub message: String,
}

impl Unavailable {
    pub fn new(service: &'static str, message: impl Into<String>) -> Self {
        Self {
            service,
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kv

/// Small values with an optional time-to-live: upload sessions, challenges, caches.
///
/// Implementations may be eventually consistent (Cloudflare KV); callers detect stale reads with
/// versions they carry themselves.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Kv: MaybeSend + MaybeSync {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Unavailable>;
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Unavailable>;
    async fn delete(&self, key: &str) -> Result<(), Unavailable>;
    /// The largest value this store accepts (25 MiB on Cloudflare KV, 1 MB on Spin).
    fn max_value_len(&self) -> usize {
        usize::MAX
    }
}

// ---------------------------------------------------------------------------------------------
// Cache

/// A cache close to the client for the registry's read path (see [`crate::cache`]): values it
/// may lose at any time. Failures are misses, never errors, so a cache outage only costs speed.
/// Natively a bounded in-memory LRU.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Cache: MaybeSend + MaybeSync {
    async fn get(&self, key: &str) -> Option<Bytes>;
    async fn put(&self, key: &str, value: Bytes, ttl: Duration);
    async fn delete(&self, key: &str);
    /// Forgets everything it can (after a garbage collection); a no-op where that is impossible.
    async fn clear(&self) {}
}

// ---------------------------------------------------------------------------------------------
// Sql

/// A parameter or a column value. The dialect is Postgres, kept to what SQLite also runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Text(String),
    Bytes(Bytes),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}
impl From<u64> for SqlValue {
    fn from(v: u64) -> Self {
        // Sizes and timestamps never reach 2^63; saturate rather than wrap if one ever did.
        SqlValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_owned())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}
impl From<Bytes> for SqlValue {
    fn from(v: Bytes) -> Self {
        SqlValue::Bytes(v)
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

/// One SQL statement with `$1..$n` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: Cow<'static, str>,
    pub params: Vec<SqlValue>,
}

impl Statement {
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// Appends the next positional parameter.
    pub fn bind(mut self, value: impl Into<SqlValue>) -> Self {
        self.params.push(value.into());
        self
    }
}

/// One result row; columns in `SELECT` order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row(pub Vec<SqlValue>);

impl Row {
    fn column(&self, index: usize) -> Result<&SqlValue, SqlError> {
        self.0
            .get(index)
            .ok_or_else(|| SqlError::Decode(format!("no column {index}")))
    }

    /// A non-null text column.
    pub fn text(&self, index: usize) -> Result<String, SqlError> {
        match self.column(index)? {
            SqlValue::Text(s) => Ok(s.clone()),
            SqlValue::Int(i) => Ok(i.to_string()),
            other => Err(SqlError::Decode(format!(
                "column {index}: expected text, got {other:?}"
            ))),
        }
    }

    /// A nullable text column.
    pub fn opt_text(&self, index: usize) -> Result<Option<String>, SqlError> {
        match self.column(index)? {
            SqlValue::Null => Ok(None),
            _ => self.text(index).map(Some),
        }
    }

    /// A non-null integer column (text that parses as an integer is accepted, as Neon's HTTP
    /// protocol returns every value as text).
    pub fn int(&self, index: usize) -> Result<i64, SqlError> {
        match self.column(index)? {
            SqlValue::Int(i) => Ok(*i),
            SqlValue::Text(s) => s
                .parse()
                .map_err(|_| SqlError::Decode(format!("column {index}: {s:?} is not an integer"))),
            other => Err(SqlError::Decode(format!(
                "column {index}: expected integer, got {other:?}"
            ))),
        }
    }

    /// A non-null integer column that must not be negative.
    pub fn uint(&self, index: usize) -> Result<u64, SqlError> {
        u64::try_from(self.int(index)?)
            .map_err(|_| SqlError::Decode(format!("column {index}: negative value")))
    }

    /// A non-null binary column.
    pub fn bytes(&self, index: usize) -> Result<Bytes, SqlError> {
        match self.column(index)? {
            SqlValue::Bytes(b) => Ok(b.clone()),
            SqlValue::Text(s) => Ok(Bytes::from(s.clone().into_bytes())),
            other => Err(SqlError::Decode(format!(
                "column {index}: expected bytes, got {other:?}"
            ))),
        }
    }
}

/// Why a statement failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// A unique or primary-key constraint rejected the write (Postgres SQLSTATE 23505).
    #[error("unique violation: {0}")]
    UniqueViolation(String),
    /// A foreign key rejected the write (SQLSTATE 23503): a row it needs was deleted, or a row it
    /// deletes is still referenced (a garbage collector racing a push).
    #[error("foreign key violation: {0}")]
    ForeignKeyViolation(String),
    /// The database rejected the statement for another reason (a bug, or a schema mismatch).
    #[error("database error {code}: {message}")]
    Database { code: String, message: String },
    /// A result could not be decoded into the expected type.
    #[error("cannot decode result: {0}")]
    Decode(String),
    /// The database could not be reached or did not answer in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Metadata storage: one statement, or a batch run as one transaction (one round trip on Neon).
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Sql: MaybeSend + MaybeSync {
    async fn query(&self, statement: Statement) -> Result<Vec<Row>, SqlError>;
    /// Runs every statement in one transaction; all or nothing. Returns each statement's rows.
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>, SqlError>;
}

// ---------------------------------------------------------------------------------------------
// BlobStore

/// Chunk sizes a store prefers; advertised as `OCI-Chunk-Min-Length` / `OCI-Chunk-Max-Length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkLimits {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The upload handle or blob locator names nothing the store has.
    #[error("not found in storage: {0}")]
    NotFound(String),
    /// The requested range lies outside the blob.
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// Reading the incoming bytes failed (the client went away); nothing new was committed.
    #[error(transparent)]
    Body(#[from] crate::body::BodyError),
    /// The store refused the data (a chunk-size rule, a quota).
    #[error("storage refused the data: {0}")]
    Refused(String),
    /// The store could not be reached or is overloaded: worth retrying (503 + `Retry-After`).
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The store answered with an error retrying will not fix (rejected credentials, a missing
    /// bucket): the operator's to fix (500).
    #[error("storage failed: {0}")]
    Failed(String),
}

/// Blob bytes: resumable uploads that become immutable, content-addressed objects.
///
/// An upload is named by an opaque *handle* (a string the core keeps in the upload session); a
/// finished blob by an opaque *locator* (a string the core keeps in SQL). Both are the store's own
/// business: a file name, a list of TUS partial-upload URLs, a skylink.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait BlobStore: MaybeSend + MaybeSync {
    /// Starts an upload and returns its handle.
    async fn begin_upload(&self, upload_id: &str) -> Result<String, StoreError>;

    /// Appends a stream at `offset` (the number of bytes already accepted). Bytes beyond `offset`
    /// left by an earlier, interrupted append are discarded first. Returns the new handle (which
    /// may equal the old one). On error, nothing beyond `offset` counts as written.
    async fn append(
        &self,
        handle: &str,
        offset: u64,
        bytes: ByteStream,
    ) -> Result<String, StoreError>;

    /// Makes the first `size` bytes of the upload an immutable blob under its (already verified)
    /// digest; returns its locator. Bytes beyond `size` (left by an append the core refused) are
    /// not part of the blob. The locator must be unique to this upload, never returned for
    /// another one: the garbage collector deletes a locator's bytes once its row is gone, and a
    /// blob pushed again meanwhile must not be stored under it. (A store whose `delete` keeps the
    /// bytes, like Skynet's, may name content by its hash.)
    async fn finish_upload(
        &self,
        handle: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<String, StoreError>;

    /// Streams the first `len` bytes of an unfinished upload. Used only when the client's final
    /// digest uses another algorithm than the one hashed while streaming (a chunked sha512 upload
    /// opened without `digest-algorithm`), so the bytes must be hashed again before they are kept.
    async fn read_upload(&self, _handle: &str, _len: u64) -> Result<Body, StoreError> {
        Err(StoreError::Refused(
            "this store cannot re-read an unfinished upload; open it with ?digest-algorithm="
                .into(),
        ))
    }

    /// Throws an unfinished upload away.
    async fn abort_upload(&self, handle: &str) -> Result<(), StoreError>;

    /// Streams a finished blob, or a range of it.
    async fn read(&self, locator: &str, range: Option<ByteRange>) -> Result<Body, StoreError>;

    /// A URL clients may download the blob from directly, when the store has one and it is
    /// configured to hand it out.
    async fn redirect_url(&self, _locator: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// Deletes a finished blob's bytes.
    async fn delete(&self, locator: &str) -> Result<(), StoreError>;

    /// The chunk sizes this store works best with.
    fn chunk_limits(&self) -> ChunkLimits {
        ChunkLimits::default()
    }
}

// ---------------------------------------------------------------------------------------------
// HttpClient

/// Where a request came from (an IP address), set as a request extension by hosts that know it
/// (natively the peer address, on Workers `CF-Connecting-IP`): the audit log's "from where".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress(pub String);

/// How long an outbound request may take in all, set as a request extension by callers; hosts'
/// `HttpClient`s enforce it (the core has no timer of its own). A request without one gets
/// [`Timeout::DEFAULT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl Timeout {
    /// The limit of a request that carries no `Timeout`.
    pub const DEFAULT: Duration = Duration::from_secs(30);

    /// The limit `request` carries, or [`Timeout::DEFAULT`].
    pub fn of<B>(request: &http::Request<B>) -> Duration {
        request
            .extensions()
            .get::<Timeout>()
            .map_or(Self::DEFAULT, |t| t.0)
    }
}

/// Outbound HTTP with streamed bodies: the Skynet and Neon clients are written against this.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait HttpClient: MaybeSend + MaybeSync {
    async fn send(&self, request: http::Request<Body>)
        -> Result<http::Response<Body>, Unavailable>;
}

/// An `HttpClient` for hosts that have none configured: every call fails cleanly.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHttpClient;

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl HttpClient for NoHttpClient {
    async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Unavailable> {
        Err(Unavailable::new(
            "http",
            format!("no outbound HTTP client configured for {}", request.uri()),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Clock and randomness

/// Wall-clock time. (`SystemTime::now` panics on wasm32-unknown-unknown, so hosts supply it.)
pub trait Clock: MaybeSend + MaybeSync {
    fn now_unix_millis(&self) -> u64;
}

/// Cryptographically secure randomness.
pub trait Random: MaybeSend + MaybeSync {
    fn fill(&self, buffer: &mut [u8]);
}

/// Everything a host plugs into the core.
#[derive(Clone)]
pub struct Ports {
    pub kv: Arc<dyn Kv>,
    pub sql: Arc<dyn Sql>,
    pub blobs: Arc<dyn BlobStore>,
    pub http: Arc<dyn HttpClient>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
}
