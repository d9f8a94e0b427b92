//! The edge's blob store: Skynet, with the chunk sizes this deployment advertises.

use openregistry::body::{Body, ByteStream};
use openregistry::digest::Digest;
use openregistry::ports::{BlobStore, ChunkLimits, StoreError};
use openregistry::range::ByteRange;
use openregistry::skynet::SkynetStore;

/// Delegates everything to Skynet except [`BlobStore::chunk_limits`], which comes from the
/// configuration (`OPENREGISTRY_CHUNK_MIN_LENGTH` / `OPENREGISTRY_CHUNK_MAX_LENGTH`): the maximum
/// is the plan's request body limit, which only the deployment knows.
pub struct EdgeStore {
    pub inner: SkynetStore,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[async_trait::async_trait(?Send)]
impl BlobStore for EdgeStore {
    async fn begin_upload(&self, upload_id: &str) -> Result<String, StoreError> {
        self.inner.begin_upload(upload_id).await
    }

    async fn append(
        &self,
        handle: &str,
        offset: u64,
        bytes: ByteStream,
    ) -> Result<String, StoreError> {
        self.inner.append(handle, offset, bytes).await
    }

    async fn finish_upload(
        &self,
        handle: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<String, StoreError> {
        self.inner.finish_upload(handle, digest, size).await
    }

    async fn read_upload(&self, handle: &str, len: u64) -> Result<Body, StoreError> {
        self.inner.read_upload(handle, len).await
    }

    async fn abort_upload(&self, handle: &str) -> Result<(), StoreError> {
        self.inner.abort_upload(handle).await
    }

    async fn read(&self, locator: &str, range: Option<ByteRange>) -> Result<Body, StoreError> {
        self.inner.read(locator, range).await
    }

    async fn redirect_url(&self, locator: &str) -> Result<Option<String>, StoreError> {
        self.inner.redirect_url(locator).await
    }

    async fn delete(&self, locator: &str) -> Result<(), StoreError> {
        self.inner.delete(locator).await
    }

    fn chunk_limits(&self) -> ChunkLimits {
        let store = self.inner.chunk_limits();
        let max = self.max.or(store.max);
        // The store's preferred minimum, unless configured, and never above the maximum.
        let min = self
            .min
            .or(store.min)
            .map(|min| max.map_or(min, |max| min.min(max)));
        ChunkLimits { min, max }
    }
}
