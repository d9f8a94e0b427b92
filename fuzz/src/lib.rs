//! What the fuzz targets share: a registry over in-memory ports (with authentication off and on),
//! SQL that answers nothing, and an `HttpClient` that answers whatever the fuzzer says, so the
//! backend clients' response parsers see arbitrary bytes.

// The fuzz harness is test code: a panic here is a finding, not a crashed isolate.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use openregistry::auth::{AuthSettings, Signer};
use openregistry::digest::{Algorithm, Digest};
use openregistry::memory::{ManualClock, MemoryBlobStore, MemoryKv, SeededRandom};
use openregistry::ports::{
    BlobStore, HttpClient, NoHttpClient, Ports, Row, Sql, SqlError, Statement, Unavailable,
};
use openregistry::range::ByteRange;
use openregistry::{Body, Config, Registry};

/// SQL that finds nothing and stores nothing: handlers run their parsing and checks, then take
/// the "not found" or "not stored" path. (No SQLite here: the fuzz build stays small and fast.)
pub struct NullSql;

#[async_trait::async_trait]
impl Sql for NullSql {
    async fn query(&self, _statement: Statement) -> Result<Vec<Row>, SqlError> {
        Ok(Vec::new())
    }
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>, SqlError> {
        Ok(statements.iter().map(|_| Vec::new()).collect())
    }
}

/// A registry over in-memory ports; with `auth`, tokens are required and `/token` signs them.
pub fn registry(auth: bool) -> Registry {
    let ports = Ports {
        kv: Arc::new(MemoryKv::default()),
        sql: Arc::new(NullSql),
        blobs: Arc::new(MemoryBlobStore::default()),
        http: Arc::new(NoHttpClient),
        clock: Arc::new(ManualClock::new(1_700_000_000_000)),
        random: Arc::new(SeededRandom::default()),
    };
    let registry = Registry::new(ports, Config::default());
    if !auth {
        return registry;
    }
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]));
    let paserk = format!(
        "k4.secret.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.sk.to_vec())
    );
    let signer = Signer::from_paserk(&paserk).expect("a valid key");
    registry.with_auth(AuthSettings::new("openregistry", signer).expect("settings"))
}

/// One scripted HTTP answer.
#[derive(Debug, Clone, Arbitrary)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Vec<u8>,
}

/// Names of the headers backend clients read.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum HeaderName {
    Location,
    ContentLength,
    ContentType,
    ContentRange,
    ETag,
    UploadOffset,
    UploadLength,
    RetryAfter,
    Skylink,
}

impl HeaderName {
    fn as_str(self) -> &'static str {
        match self {
            HeaderName::Location => "location",
            HeaderName::ContentLength => "content-length",
            HeaderName::ContentType => "content-type",
            HeaderName::ContentRange => "content-range",
            HeaderName::ETag => "etag",
            HeaderName::UploadOffset => "upload-offset",
            HeaderName::UploadLength => "upload-length",
            HeaderName::RetryAfter => "retry-after",
            HeaderName::Skylink => "skynet-skylink",
        }
    }
}

/// An `HttpClient` that answers each request with the next scripted answer (then 500s).
pub struct ScriptedHttp {
    answers: Mutex<Vec<Answer>>,
}

impl ScriptedHttp {
    pub fn new(mut answers: Vec<Answer>) -> Self {
        answers.reverse();
        Self {
            answers: Mutex::new(answers),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ScriptedHttp {
    async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Unavailable> {
        // Read what the client sends, as a server would.
        let _ = request.into_body().collect(64 * 1024 * 1024).await;
        let next = self
            .answers
            .lock()
            .map_err(|_| Unavailable::new("fuzz", "poisoned"))?
            .pop();
        let Some(answer) = next else {
            return Err(Unavailable::new("fuzz", "no more answers"));
        };
        let mut response = http::Response::builder().status(
            http::StatusCode::from_u16(answer.status % 600).unwrap_or(http::StatusCode::OK),
        );
        for (name, value) in &answer.headers {
            if let Ok(value) = http::HeaderValue::from_str(value) {
                response = response.header(name.as_str(), value);
            }
        }
        response
            .body(Body::Full(Bytes::from(answer.body)))
            .map_err(|e| Unavailable::new("fuzz", e.to_string()))
    }
}

/// One call on a blob store, with arbitrary arguments (handles and locators as a database or a
/// session store might hand back).
#[derive(Debug, Arbitrary)]
pub enum StoreOperation {
    Begin,
    Append {
        handle: String,
        offset: u64,
        data: Vec<u8>,
    },
    Finish {
        handle: String,
        size: u64,
    },
    Read {
        locator: String,
        range: Option<(u64, u64)>,
    },
    Redirect {
        locator: String,
    },
    Abort {
        handle: String,
    },
    Delete {
        locator: String,
    },
}

/// Runs `operation` on `store`, reading any body it returns; every outcome but a panic is fine.
pub async fn run_store_operation(store: &dyn BlobStore, operation: StoreOperation) {
    let digest = Digest::of(Algorithm::Sha256, b"fuzz");
    match operation {
        StoreOperation::Begin => drop(store.begin_upload("0a1b2c").await),
        StoreOperation::Append {
            handle,
            offset,
            data,
        } => {
            let stream = futures_util::stream::iter(vec![Ok(Bytes::from(data))]);
            drop(store.append(&handle, offset, Box::pin(stream)).await);
        }
        StoreOperation::Finish { handle, size } => {
            drop(store.finish_upload(&handle, &digest, size).await)
        }
        StoreOperation::Read { locator, range } => {
            let range = range.map(|(start, end)| ByteRange { start, end });
            if let Ok(body) = store.read(&locator, range).await {
                drop(body.collect(u64::MAX).await);
            }
        }
        StoreOperation::Redirect { locator } => drop(store.redirect_url(&locator).await),
        StoreOperation::Abort { handle } => drop(store.abort_upload(&handle).await),
        StoreOperation::Delete { locator } => drop(store.delete(&locator).await),
    }
}
