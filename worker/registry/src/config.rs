//! Registry settings that are the same on every host (read by the host from `OPENREGISTRY_*`
//! environment variables, wrangler `[vars]`, or Spin variables).

use std::time::Duration;

use crate::ports::ChunkLimits;

/// Settings of the core handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Manifests larger than this are refused with 413 (the spec's recommended floor is 4 MiB).
    pub max_manifest_bytes: u64,
    /// How long an idle upload session stays resumable.
    pub upload_session_ttl: Duration,
    /// Answer blob GETs with a redirect to the store's download URL when it has one.
    pub redirect_blob_downloads: bool,
    /// Default and largest page of `tags/list`, `_catalog` and `referrers`.
    pub default_page_size: u64,
    pub max_page_size: u64,
    /// Advertised `OCI-Chunk-Min-Length`; `None`: the blob store's own preference.
    pub chunk_min_length: Option<u64>,
    /// Advertised `OCI-Chunk-Max-Length` (the host's request body limit); `None`: the store's.
    /// Request bodies over it are refused with 413 before a byte is stored.
    pub chunk_max_length: Option<u64>,
    /// Another registry sharing this one's metadata, storage and token keys (an origin such as
    /// `https://uploads.example`): upload starts are forwarded there, so the bytes of big layers
    /// go to it directly (past this host's body limit) while pulls stay here.
    pub upload_origin: Option<String>,
    /// The garbage collector's grace window: links, manifests and referrers younger than this are
    /// never collected (a push in progress is about to reference them). A blob link told to a
    /// pusher as present (HEAD, mount, upload) is refreshed when older than half of it.
    pub gc_grace: Duration,
    /// Untagged manifests kept per repository, newest first (`None`: every one is kept).
    pub gc_keep_untagged: Option<u64>,
}

impl Config {
    /// The chunk sizes to advertise: configured values over the store's, the minimum never above
    /// the maximum.
    pub fn chunk_limits(&self, store: ChunkLimits) -> ChunkLimits {
        let max = self.chunk_max_length.or(store.max);
        let min = self
            .chunk_min_length
            .or(store.min)
            .map(|min| max.map_or(min, |max| min.min(max)));
        ChunkLimits { min, max }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_session_ttl: Duration::from_secs(24 * 60 * 60),
            redirect_blob_downloads: false,
            default_page_size: 1000,
            max_page_size: 10_000,
            chunk_min_length: None,
            chunk_max_length: None,
            upload_origin: None,
            gc_grace: Duration::from_secs(24 * 60 * 60),
            gc_keep_untagged: None,
        }
    }
}
