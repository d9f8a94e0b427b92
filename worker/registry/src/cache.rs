//! The read path's cache: manifests by digest and "blob B is linked to repository R" for long
//! (they never change, only disappear), the manifest a tag points at for a few seconds, all in the
//! host's [`Cache`] port, small blobs' bytes by digest, and what an anonymous caller may pull
//! from a repository (the token endpoint's decision: the repository's visibility and any org
//! grants to anonymous) for the same few seconds as a tag.
//!
//! Consistency rules:
//! - The access check comes first: the cache sits behind [`Registry::authorize`] and the tag
//!   checks, inside the handlers, so a cached answer never skips authorization.
//! - Read-your-writes where the write happened: every request's events are applied to the cache
//!   ([`MetadataCache::apply`]) before its response is returned — a moved or deleted tag, a
//!   deleted manifest, an unlinked blob are forgotten at once.
//! - Elsewhere (another process or location sharing the database) a moved tag or a visibility
//!   change is seen within the tag lifetime, a deleted manifest or unlinked blob within the
//!   immutable lifetime. An organization's grant to anonymous callers, changed anywhere, is seen
//!   within the tag lifetime.
//!
//! Misses are never cached: what is not found is asked again, so a push is always seen at once.
//!
//! [`Registry::authorize`]: crate::Registry

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::auth::Access;
use crate::digest::Digest;
use crate::metadata::{BlobRecord, ManifestRecord, Metadata};
use crate::names::{RepoName, Tag};
use crate::operations::Event;
use crate::ports::{Cache, Clock, Sql};

/// How long entries stay, and which blobs are kept whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// The manifest a tag points at (`OPENREGISTRY_TAG_CACHE_SECONDS`).
    pub tag: Duration,
    /// Manifests by digest and blob links: how long a deletion elsewhere may go unseen here.
    pub immutable: Duration,
    /// Blobs up to this size are kept whole (`OPENREGISTRY_CACHE_BLOB_BYTES`; configs and small
    /// layers), read once from the store into memory on a miss; `0`: none.
    pub blob_bytes: u64,
}

/// `OPENREGISTRY_CACHE_BLOB_BYTES`' default.
pub const DEFAULT_CACHE_BLOB_BYTES: u64 = 1024 * 1024;

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            tag: Duration::from_secs(5),
            immutable: Duration::from_secs(3600),
            blob_bytes: DEFAULT_CACHE_BLOB_BYTES,
        }
    }
}

/// A tag's cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub record: ManifestRecord,
    /// Older than half the tag lifetime: served, and refreshed from the database after the
    /// response (stale-while-revalidate within the lifetime, so a tag that is pulled often never
    /// expires on the request path, and is never older than the lifetime either).
    pub refresh: bool,
}

/// Asks the database where a tag points now and keeps the answer (run after a response).
pub struct TagRefresh {
    cache: MetadataCache,
    sql: Arc<dyn Sql>,
    repo: RepoName,
    tag: Tag,
}

impl TagRefresh {
    pub async fn run(self) {
        let metadata = Metadata::new(self.sql.as_ref());
        match metadata.manifest_by_tag(&self.repo, &self.tag, true).await {
            Ok(Some(record)) => self.cache.keep_tagged(&self.repo, &self.tag, &record).await,
            Ok(None) => {
                let key = tag_key(self.repo.as_str(), self.tag.as_str());
                self.cache.store.delete(&key).await;
            }
            // The entry expires at the end of its lifetime, as without a refresh.
            Err(_) => {}
        }
    }
}

/// The registry's records over a [`Cache`] port.
#[derive(Clone)]
pub struct MetadataCache {
    store: Arc<dyn Cache>,
    clock: Arc<dyn Clock>,
    policy: CachePolicy,
}

/// An entry's fixed fields (a JSON line); a manifest's bytes follow it.
#[derive(Serialize, Deserialize)]
struct Header {
    /// When the database answered (ms since the epoch): entries older than their lifetime are
    /// misses even where the store keeps them longer.
    at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locator: Option<String>,
    #[serde(default)]
    linked_at: u64,
    /// When a request took on this tag entry's background refresh (ms since the epoch; 0: none):
    /// the others leave it to that one for half a lifetime, so a hot tag is asked for once.
    #[serde(default, skip_serializing_if = "is_zero")]
    refresh_claimed: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn manifest_key(repo: &str, digest: &str) -> String {
    format!("m/{repo}@{digest}")
}

fn tag_key(repo: &str, tag: &str) -> String {
    format!("t/{repo}:{tag}")
}

fn blob_key(repo: &str, digest: &str) -> String {
    format!("b/{repo}@{digest}")
}

/// Blob bytes by digest alone: the same for every repository (each request's access check and
/// link lookup come first).
fn bytes_key(digest: &str) -> String {
    format!("d/{digest}")
}

fn anonymous_pull_key(repo: &str) -> String {
    format!("a/{repo}")
}

/// The anonymous pull decision for one repository.
#[derive(Serialize, Deserialize)]
struct AnonymousPull {
    at: u64,
    /// The token's `access` entry for `pull`; `None`: nothing granted.
    access: Option<Access>,
}

fn encode(header: &Header, content: Option<&Bytes>) -> Option<Bytes> {
    let json = serde_json::to_vec(header).ok()?;
    let mut out = BytesMut::with_capacity(json.len() + 1 + content.map_or(0, Bytes::len));
    out.put_slice(&json);
    out.put_u8(b'\n');
    if let Some(content) = content {
        out.put_slice(content);
    }
    Some(out.freeze())
}

/// A manifest entry's record (`None` for an entry that is not a manifest's).
fn manifest_record(header: &Header, content: Bytes) -> Option<ManifestRecord> {
    Some(ManifestRecord {
        digest: header.digest.as_deref()?.parse().ok()?,
        media_type: header.media_type.clone()?,
        size: header.size,
        content: Some(content),
    })
}

fn decode(value: &Bytes) -> Option<(Header, Bytes)> {
    let end = value.iter().position(|b| *b == b'\n')?;
    let header: Header = serde_json::from_slice(value.get(..end)?).ok()?;
    Some((header, value.slice(end + 1..)))
}

impl MetadataCache {
    pub fn new(store: Arc<dyn Cache>, clock: Arc<dyn Clock>, policy: CachePolicy) -> Self {
        Self {
            store,
            clock,
            policy,
        }
    }

    /// The age of what the database answered at `at` (ms since the epoch), if under `lifetime`.
    fn age_within(&self, at: u64, lifetime: Duration) -> Option<Duration> {
        let age = Duration::from_millis(self.clock.now_unix_millis().saturating_sub(at));
        (age < lifetime).then_some(age)
    }

    /// The entry under `key` if younger than `lifetime`, and its age.
    async fn fresh(&self, key: &str, lifetime: Duration) -> Option<(Header, Bytes, Duration)> {
        let (header, rest) = decode(&self.store.get(key).await?)?;
        let age = self.age_within(header.at, lifetime)?;
        Some((header, rest, age))
    }

    async fn put_manifest_entry(&self, key: &str, record: &ManifestRecord, lifetime: Duration) {
        // Only whole records: a HEAD's answer without the bytes could not serve a later GET.
        let Some(content) = record.content.as_ref() else {
            return;
        };
        let header = Header {
            at: self.clock.now_unix_millis(),
            digest: Some(record.digest.to_string()),
            media_type: Some(record.media_type.clone()),
            size: record.size,
            locator: None,
            linked_at: 0,
            refresh_claimed: 0,
        };
        if let Some(value) = encode(&header, Some(content)) {
            self.store.put(key, value, lifetime).await;
        }
    }

    pub async fn manifest(&self, repo: &RepoName, digest: &Digest) -> Option<ManifestRecord> {
        let key = manifest_key(repo.as_str(), digest.as_str());
        let (header, content, _) = self.fresh(&key, self.policy.immutable).await?;
        manifest_record(&header, content)
    }

    pub async fn keep_manifest(&self, repo: &RepoName, record: &ManifestRecord) {
        let key = manifest_key(repo.as_str(), record.digest.as_str());
        self.put_manifest_entry(&key, record, self.policy.immutable)
            .await;
    }

    /// The manifest `tag` points at, if cached less than the tag lifetime ago. The first request
    /// that finds it older than half the lifetime takes on its refresh (and says so in the entry).
    pub async fn tagged(&self, repo: &RepoName, tag: &Tag) -> Option<Tagged> {
        let key = tag_key(repo.as_str(), tag.as_str());
        let lifetime = self.policy.tag;
        let (mut header, content, age) = self.fresh(&key, lifetime).await?;
        let record = manifest_record(&header, content.clone())?;
        let now = self.clock.now_unix_millis();
        let half = u64::try_from((lifetime / 2).as_millis()).unwrap_or(u64::MAX);
        let refresh = age >= lifetime / 2 && now.saturating_sub(header.refresh_claimed) >= half;
        if refresh {
            header.refresh_claimed = now;
            if let Some(value) = encode(&header, Some(&content)) {
                self.store
                    .put(&key, value, lifetime.saturating_sub(age))
                    .await;
            }
        }
        Some(Tagged { record, refresh })
    }

    /// The background refresh of a tag's entry (see [`Tagged::refresh`]).
    pub fn tag_refresh(&self, sql: Arc<dyn Sql>, repo: RepoName, tag: Tag) -> TagRefresh {
        TagRefresh {
            cache: self.clone(),
            sql,
            repo,
            tag,
        }
    }

    pub async fn keep_tagged(&self, repo: &RepoName, tag: &Tag, record: &ManifestRecord) {
        let key = tag_key(repo.as_str(), tag.as_str());
        self.put_manifest_entry(&key, record, self.policy.tag).await;
    }

    pub async fn blob(&self, repo: &RepoName, digest: &Digest) -> Option<BlobRecord> {
        let key = blob_key(repo.as_str(), digest.as_str());
        let (header, _, _) = self.fresh(&key, self.policy.immutable).await?;
        Some(BlobRecord {
            size: header.size,
            locator: header.locator?,
            linked_at: header.linked_at,
        })
    }

    pub async fn keep_blob(&self, repo: &RepoName, digest: &Digest, record: &BlobRecord) {
        let header = Header {
            at: self.clock.now_unix_millis(),
            digest: None,
            media_type: None,
            size: record.size,
            locator: Some(record.locator.clone()),
            linked_at: record.linked_at,
            refresh_claimed: 0,
        };
        if let Some(value) = encode(&header, None) {
            let key = blob_key(repo.as_str(), digest.as_str());
            self.store.put(&key, value, self.policy.immutable).await;
        }
    }

    /// Whether a blob of `size` bytes is kept whole.
    pub fn keeps_bytes_of(&self, size: u64) -> bool {
        size > 0 && size <= self.policy.blob_bytes
    }

    /// A blob's bytes, if kept (and of the size the link says).
    pub async fn blob_bytes(&self, digest: &Digest, size: u64) -> Option<Bytes> {
        let bytes = self.store.get(&bytes_key(digest.as_str())).await?;
        (bytes.len() as u64 == size).then_some(bytes)
    }

    pub async fn keep_blob_bytes(&self, digest: &Digest, bytes: Bytes) {
        let key = bytes_key(digest.as_str());
        self.store.put(&key, bytes, self.policy.immutable).await;
    }

    /// Forgets a link the database no longer has.
    pub async fn forget_blob(&self, repo: &RepoName, digest: &Digest) {
        self.store
            .delete(&blob_key(repo.as_str(), digest.as_str()))
            .await;
    }

    /// What a token for an anonymous caller asking for `pull` on `repo` grants, if decided less
    /// than the tag lifetime ago: `Some(None)` is "nothing".
    pub async fn anonymous_pull(&self, repo: &str) -> Option<Option<Access>> {
        let value = self.store.get(&anonymous_pull_key(repo)).await?;
        let entry: AnonymousPull = serde_json::from_slice(&value).ok()?;
        self.age_within(entry.at, self.policy.tag)?;
        Some(entry.access)
    }

    pub async fn keep_anonymous_pull(&self, repo: &str, access: Option<Access>) {
        let entry = AnonymousPull {
            at: self.clock.now_unix_millis(),
            access,
        };
        if let Ok(value) = serde_json::to_vec(&entry) {
            let key = anonymous_pull_key(repo);
            self.store.put(&key, value.into(), self.policy.tag).await;
        }
    }

    /// Forgets what a request's events made stale.
    pub async fn apply(&self, events: &[Event]) {
        for event in events {
            match event {
                Event::TagMoved {
                    repository, tag, ..
                }
                | Event::TagDeleted { repository, tag } => {
                    self.store.delete(&tag_key(repository, tag)).await;
                }
                Event::ManifestDeleted { repository, digest } => {
                    self.store.delete(&manifest_key(repository, digest)).await;
                }
                Event::BlobUnlinked { repository, digest } => {
                    self.store.delete(&blob_key(repository, digest)).await;
                }
                Event::VisibilityChanged { repository, .. } => {
                    self.store.delete(&anonymous_pull_key(repository)).await;
                }
                Event::GarbageCollected { .. } => self.store.clear().await,
                Event::UploadStarted { .. }
                | Event::UploadCancelled { .. }
                | Event::BlobCommitted { .. }
                | Event::BlobLinked { .. }
                | Event::ManifestPushed { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ManualClock, MemoryCache};
    use futures_executor::block_on;

    fn cache() -> (MetadataCache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = MetadataCache::new(
            Arc::new(MemoryCache::default()),
            clock.clone(),
            CachePolicy::default(),
        );
        (cache, clock)
    }

    fn record(content: &'static [u8]) -> ManifestRecord {
        let digest = Digest::of(crate::digest::Algorithm::Sha256, content);
        ManifestRecord {
            digest,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: content.len() as u64,
            content: Some(Bytes::from_static(content)),
        }
    }

    #[test]
    fn a_tag_entry_lives_for_the_tag_lifetime_only_and_is_due_for_refresh_after_half() {
        block_on(async {
            let (cache, clock) = cache();
            let repo = RepoName::parse("a/b").expect("valid");
            let tag = Tag::parse("latest").expect("valid");
            cache.keep_tagged(&repo, &tag, &record(b"{}")).await;
            let fresh = cache.tagged(&repo, &tag).await.expect("kept");
            assert_eq!((fresh.record, fresh.refresh), (record(b"{}"), false));
            clock.advance(Duration::from_millis(2500));
            let older = cache.tagged(&repo, &tag).await.expect("still kept");
            assert!(
                older.refresh,
                "due for a background refresh after half its lifetime"
            );
            let again = cache.tagged(&repo, &tag).await.expect("still kept");
            assert!(!again.refresh, "taken on by the first request only");
            clock.advance(Duration::from_millis(2500));
            assert_eq!(cache.tagged(&repo, &tag).await, None);
        })
    }

    #[test]
    fn events_forget_moved_tags_deleted_manifests_and_unlinked_blobs() {
        block_on(async {
            let (cache, _) = cache();
            let repo = RepoName::parse("a/b").expect("valid");
            let tag = Tag::parse("latest").expect("valid");
            let manifest = record(b"{\"x\":1}");
            let blob = BlobRecord {
                size: 3,
                locator: "mem:x".into(),
                linked_at: 7,
            };
            cache.keep_tagged(&repo, &tag, &manifest).await;
            cache.keep_manifest(&repo, &manifest).await;
            cache.keep_blob(&repo, &manifest.digest, &blob).await;
            assert_eq!(cache.blob(&repo, &manifest.digest).await, Some(blob));
            cache
                .apply(&[
                    Event::TagMoved {
                        repository: "a/b".into(),
                        tag: "latest".into(),
                        digest: "sha256:00".into(),
                    },
                    Event::ManifestDeleted {
                        repository: "a/b".into(),
                        digest: manifest.digest.to_string(),
                    },
                    Event::BlobUnlinked {
                        repository: "a/b".into(),
                        digest: manifest.digest.to_string(),
                    },
                ])
                .await;
            assert_eq!(cache.tagged(&repo, &tag).await, None);
            assert_eq!(cache.manifest(&repo, &manifest.digest).await, None);
            assert_eq!(cache.blob(&repo, &manifest.digest).await, None);
        })
    }

    #[test]
    fn a_damaged_entry_is_a_miss() {
        block_on(async {
            let store = Arc::new(MemoryCache::default());
            let clock = Arc::new(ManualClock::new(1));
            let cache = MetadataCache::new(store.clone(), clock, CachePolicy::default());
            let repo = RepoName::parse("a").expect("valid");
            let tag = Tag::parse("t").expect("valid");
            store
                .put(
                    &tag_key("a", "t"),
                    Bytes::from_static(b"not json"),
                    Duration::from_secs(9),
                )
                .await;
            assert_eq!(cache.tagged(&repo, &tag).await, None);
        })
    }
}
