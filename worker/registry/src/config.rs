//! Registry settings that are the same on every host (read by the host from `OPENREGISTRY_*`
//! environment variables, wrangler `[vars]`, or Spin variables).

use std::time::Duration;

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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_session_ttl: Duration::from_secs(24 * 60 * 60),
            redirect_blob_downloads: false,
            default_page_size: 1000,
            max_page_size: 10_000,
        }
    }
}
