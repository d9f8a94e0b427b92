//! The [`Cache`] ports the hosts put in front of the core's read path (see `openregistry::cache`):
//!
//! - [`MemoryLru`]: a least-recently-used map bounded by the bytes it holds, its entries expiring
//!   after the lifetime they were put with (by the [`Clock`] port, so it runs on wasm32 too).
//!   Natively the whole cache (`OPENREGISTRY_CACHE_BYTES`); on Workers the isolate's near tier.
//! - [`KvCache`]: the cache over a [`Kv`] port, under its own key prefix (Spin's key-value store;
//!   Workers KV where the Cache API does not reach). Entries carry their age (the core checks
//!   it), so a store that keeps them longer than asked never serves one too old.
//! - [`Tiered`]: a near tier with a short lifetime in front of a far one (the Worker's isolate
//!   memory in front of the Cache API).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use lru::LruCache;
use openregistry::ports::{Cache, Clock, Kv};

struct Entry {
    value: Bytes,
    /// ms since the epoch.
    expires: u64,
    /// The bytes it is counted as (key and value, plus bookkeeping).
    weight: u64,
}

struct State {
    entries: LruCache<String, Entry>,
    bytes: u64,
}

pub struct MemoryLru {
    state: Mutex<State>,
    capacity: u64,
    clock: Arc<dyn Clock>,
}

/// What an entry costs beyond its key and value (the map's node, the `Entry`).
const OVERHEAD: u64 = 96;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl MemoryLru {
    pub fn new(capacity: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Mutex::new(State {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
            clock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.state().bytes
    }
}

impl State {
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.pop(key) {
            self.bytes = self.bytes.saturating_sub(old.weight);
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Cache for MemoryLru {
    async fn get(&self, key: &str) -> Option<Bytes> {
        let now = self.clock.now_unix_millis();
        let mut state = self.state();
        let entry = state.entries.get(key)?;
        if entry.expires > now {
            return Some(entry.value.clone());
        }
        state.remove(key);
        None
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) {
        let weight = (key.len() + value.len()) as u64 + OVERHEAD;
        if weight > self.capacity / 8 {
            return; // one entry never crowds out most of the others
        }
        let expires = self.clock.now_unix_millis().saturating_add(millis(ttl));
        let mut state = self.state();
        state.remove(key);
        while state.bytes + weight > self.capacity {
            match state.entries.pop_lru() {
                Some((_, old)) => state.bytes = state.bytes.saturating_sub(old.weight),
                None => break,
            }
        }
        state.bytes += weight;
        state.entries.put(
            key.to_owned(),
            Entry {
                value,
                expires,
                weight,
            },
        );
    }

    async fn delete(&self, key: &str) {
        self.state().remove(key);
    }

    async fn clear(&self) {
        let mut state = self.state();
        state.entries.clear();
        state.bytes = 0;
    }
}

/// The cache in a key-value store, under `prefix`; its failures are misses.
pub struct KvCache {
    kv: Arc<dyn Kv>,
    prefix: &'static str,
}

impl KvCache {
    pub fn new(kv: Arc<dyn Kv>, prefix: &'static str) -> Self {
        Self { kv, prefix }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Cache for KvCache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        self.kv
            .get(&format!("{}{key}", self.prefix))
            .await
            .ok()
            .flatten()
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) {
        if value.len() <= self.kv.max_value_len() {
            let key = format!("{}{key}", self.prefix);
            let _ = self.kv.put(&key, value, Some(ttl)).await;
        }
    }

    async fn delete(&self, key: &str) {
        let _ = self.kv.delete(&format!("{}{key}", self.prefix)).await;
    }
}

/// `near` (fast, short-lived, private to this process or isolate) in front of `far` (shared by a
/// location). Entries stay in `near` at most `near_lifetime`: that bounds how long a change made
/// through another process or isolate of the same location goes unseen here.
pub struct Tiered {
    pub near: Arc<dyn Cache>,
    pub near_lifetime: Duration,
    pub far: Arc<dyn Cache>,
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Cache for Tiered {
    async fn get(&self, key: &str) -> Option<Bytes> {
        if let Some(value) = self.near.get(key).await {
            return Some(value);
        }
        let value = self.far.get(key).await?;
        self.near.put(key, value.clone(), self.near_lifetime).await;
        Some(value)
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) {
        self.near
            .put(key, value.clone(), ttl.min(self.near_lifetime))
            .await;
        self.far.put(key, value, ttl).await;
    }

    async fn delete(&self, key: &str) {
        self.near.delete(key).await;
        self.far.delete(key).await;
    }

    async fn clear(&self) {
        self.near.clear().await;
        self.far.clear().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openregistry::memory::{ManualClock, MemoryCache, MemoryKv};

    fn lru(capacity: u64) -> MemoryLru {
        MemoryLru::new(capacity, Arc::new(ManualClock::new(1_000)))
    }

    #[tokio::test]
    async fn it_holds_no_more_bytes_than_its_capacity_and_drops_the_least_recently_used() {
        let cache = lru(8 * 1024);
        let value = Bytes::from(vec![0u8; 500]);
        for i in 0..100 {
            cache
                .put(&format!("k{i}"), value.clone(), Duration::from_secs(60))
                .await;
            // k0 stays the most recently used.
            assert!(cache.get("k0").await.is_some(), "after {i}");
        }
        assert!(cache.bytes() <= 8 * 1024);
        assert!(cache.get("k1").await.is_none());
        assert!(cache.get("k99").await.is_some());
    }

    #[tokio::test]
    async fn entries_expire_and_deletes_and_clears_forget() {
        let cache = lru(1 << 20);
        cache
            .put("a", Bytes::from_static(b"1"), Duration::ZERO)
            .await;
        assert!(cache.get("a").await.is_none());
        cache
            .put("b", Bytes::from_static(b"2"), Duration::from_secs(60))
            .await;
        cache
            .put("c", Bytes::from_static(b"3"), Duration::from_secs(60))
            .await;
        cache.delete("b").await;
        assert!(cache.get("b").await.is_none());
        cache.clear().await;
        assert!(cache.get("c").await.is_none());
        assert_eq!(cache.bytes(), 0);
    }

    #[tokio::test]
    async fn an_entry_too_large_for_its_share_is_not_kept() {
        let cache = lru(8 * 1024);
        cache
            .put("big", Bytes::from(vec![0u8; 2000]), Duration::from_secs(60))
            .await;
        assert!(cache.get("big").await.is_none());
    }

    #[tokio::test]
    async fn the_near_tier_keeps_an_entry_no_longer_than_its_lifetime_and_deletes_reach_both() {
        let clock = Arc::new(ManualClock::new(1_000));
        let near = Arc::new(MemoryLru::new(1 << 20, clock.clone()));
        let far = Arc::new(MemoryCache::default());
        let tiered = Tiered {
            near: near.clone(),
            near_lifetime: Duration::from_secs(1),
            far: far.clone(),
        };
        tiered
            .put("k", Bytes::from_static(b"v1"), Duration::from_secs(60))
            .await;
        assert_eq!(near.get("k").await.as_deref(), Some(&b"v1"[..]));
        // Changed in the far tier by someone else: seen here once the near entry is gone.
        far.put("k", Bytes::from_static(b"v2"), Duration::from_secs(60))
            .await;
        assert_eq!(tiered.get("k").await.as_deref(), Some(&b"v1"[..]));
        clock.advance(Duration::from_secs(1));
        assert_eq!(tiered.get("k").await.as_deref(), Some(&b"v2"[..]));
        tiered.delete("k").await;
        assert!(near.get("k").await.is_none());
        assert!(far.get("k").await.is_none());
    }

    #[tokio::test]
    async fn the_kv_cache_keeps_its_entries_under_its_prefix() {
        let kv = Arc::new(MemoryKv::default());
        let cache = KvCache::new(kv.clone(), "cache/");
        cache
            .put("t/a:b", Bytes::from_static(b"x"), Duration::from_secs(5))
            .await;
        assert_eq!(cache.get("t/a:b").await.as_deref(), Some(&b"x"[..]));
        assert!(kv.get("cache/t/a:b").await.expect("kv").is_some());
        cache.delete("t/a:b").await;
        assert!(cache.get("t/a:b").await.is_none());
    }
}
