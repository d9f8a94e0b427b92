//! In-memory ports for tests: a `Kv`, a `Cache`, a `BlobStore`, a settable clock and a seeded random source.
//! Not for production: nothing here is durable, and the blob store keeps whole blobs in memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::body::{Body, ByteStream};
use crate::digest::Digest;
use crate::ports::{BlobStore, Cache, Clock, Kv, Random, StoreError, Unavailable};
use crate::range::ByteRange;

fn poisoned() -> Unavailable {
    Unavailable::new("memory", "lock poisoned")
}

/// A `Kv` in a hash map (TTLs are ignored).
#[derive(Default)]
pub struct MemoryKv {
    values: Mutex<HashMap<String, Bytes>>,
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Kv for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        Ok(self
            .values
            .lock()
            .map_err(|_| poisoned())?
            .get(key)
            .cloned())
    }
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        _ttl: Option<Duration>,
    ) -> Result<(), Unavailable> {
        self.values
            .lock()
            .map_err(|_| poisoned())?
            .insert(key.to_owned(), value);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), Unavailable> {
        self.values.lock().map_err(|_| poisoned())?.remove(key);
        Ok(())
    }
}

/// A `Cache` in a hash map, unbounded (lifetimes are the reader's business: entries carry their
/// time).
#[derive(Default)]
pub struct MemoryCache {
    values: Mutex<HashMap<String, Bytes>>,
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        self.values.lock().ok()?.get(key).cloned()
    }
    async fn put(&self, key: &str, value: Bytes, _ttl: Duration) {
        if let Ok(mut values) = self.values.lock() {
            values.insert(key.to_owned(), value);
        }
    }
    async fn delete(&self, key: &str) {
        if let Ok(mut values) = self.values.lock() {
            values.remove(key);
        }
    }
    async fn clear(&self) {
        if let Ok(mut values) = self.values.lock() {
            values.clear();
        }
    }
}

/// A `BlobStore` in hash maps: uploads by handle, blobs by locator (`mem:<digest>`).
#[derive(Default)]
pub struct MemoryBlobStore {
    uploads: Mutex<HashMap<String, BytesMut>>,
    blobs: Mutex<HashMap<String, Bytes>>,
    failing_deletes: std::sync::atomic::AtomicBool,
}

impl MemoryBlobStore {
    /// How many unfinished uploads the store holds (tests check that failures clean up).
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().map_or(0, |u| u.len())
    }

    /// How many finished blobs the store holds.
    pub fn blob_count(&self) -> usize {
        self.blobs.lock().map_or(0, |b| b.len())
    }

    /// The bytes of every finished blob the store holds.
    pub fn stored_bytes(&self) -> u64 {
        self.blobs
            .lock()
            .map_or(0, |b| b.values().map(|v| v.len() as u64).sum())
    }

    /// Makes every `delete` fail as an unreachable store would (a fault injected in tests).
    pub fn fail_deletes(&self, failing: bool) {
        self.failing_deletes.store(failing, Ordering::SeqCst);
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl BlobStore for MemoryBlobStore {
    async fn begin_upload(&self, upload_id: &str) -> Result<String, StoreError> {
        self.uploads
            .lock()
            .map_err(|_| poisoned())?
            .insert(upload_id.to_owned(), BytesMut::new());
        Ok(upload_id.to_owned())
    }

    async fn append(
        &self,
        handle: &str,
        offset: u64,
        mut bytes: ByteStream,
    ) -> Result<String, StoreError> {
        // Collect first, then commit: an interrupted stream leaves the upload as it was.
        let mut incoming = BytesMut::new();
        while let Some(chunk) = bytes.next().await {
            incoming.extend_from_slice(&chunk?);
        }
        let mut uploads = self.uploads.lock().map_err(|_| poisoned())?;
        let upload = uploads
            .get_mut(handle)
            .ok_or_else(|| StoreError::NotFound(handle.to_owned()))?;
        upload.truncate(usize::try_from(offset).unwrap_or(usize::MAX));
        upload.extend_from_slice(&incoming);
        Ok(handle.to_owned())
    }

    async fn finish_upload(
        &self,
        handle: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<String, StoreError> {
        let mut data = self
            .uploads
            .lock()
            .map_err(|_| poisoned())?
            .remove(handle)
            .ok_or_else(|| StoreError::NotFound(handle.to_owned()))?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if data.len() < size {
            return Err(StoreError::NotFound(format!(
                "{handle}: {} of {size} bytes",
                data.len()
            )));
        }
        // Bytes beyond `size` are leftovers of a refused append; they are not part of the blob.
        data.truncate(size);
        // Unique to the upload, as the port requires.
        let locator = format!("mem:{digest}:{handle}");
        self.blobs
            .lock()
            .map_err(|_| poisoned())?
            .insert(locator.clone(), data.freeze());
        Ok(locator)
    }

    async fn read_upload(&self, handle: &str, len: u64) -> Result<Body, StoreError> {
        let uploads = self.uploads.lock().map_err(|_| poisoned())?;
        let data = uploads
            .get(handle)
            .ok_or_else(|| StoreError::NotFound(handle.to_owned()))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let data = data.get(..len).unwrap_or(data);
        Ok(Body::Full(Bytes::copy_from_slice(data)))
    }

    async fn abort_upload(&self, handle: &str) -> Result<(), StoreError> {
        self.uploads.lock().map_err(|_| poisoned())?.remove(handle);
        Ok(())
    }

    async fn read(&self, locator: &str, range: Option<ByteRange>) -> Result<Body, StoreError> {
        let blobs = self.blobs.lock().map_err(|_| poisoned())?;
        let data = blobs
            .get(locator)
            .ok_or_else(|| StoreError::NotFound(locator.to_owned()))?;
        let Some(range) = range else {
            return Ok(Body::Full(data.clone()));
        };
        let start = usize::try_from(range.start).map_err(|_| StoreError::RangeNotSatisfiable)?;
        let end = usize::try_from(range.end).map_err(|_| StoreError::RangeNotSatisfiable)?;
        if end >= data.len() || start > end {
            return Err(StoreError::RangeNotSatisfiable);
        }
        Ok(Body::Full(data.slice(start..=end)))
    }

    async fn delete(&self, locator: &str) -> Result<(), StoreError> {
        if self.failing_deletes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(Unavailable::new(
                "memory",
                "deletes are failing (injected)",
            )));
        }
        self.blobs.lock().map_err(|_| poisoned())?.remove(locator);
        Ok(())
    }
}

/// A clock that starts at a fixed instant and only moves when told to.
#[derive(Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(now_ms),
        }
    }
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_millis(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A deterministic, NOT secure random source (a counter run through SHA-256).
#[derive(Default)]
pub struct SeededRandom {
    counter: AtomicU64,
}

impl Random for SeededRandom {
    fn fill(&self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(32) {
            let n = self.counter.fetch_add(1, Ordering::SeqCst);
            let digest = Digest::of(crate::digest::Algorithm::Sha256, &n.to_le_bytes());
            let bytes = hex::decode(digest.hex()).unwrap_or_default();
            for (to, from) in chunk.iter_mut().zip(&bytes) {
                *to = *from;
            }
        }
    }
}
