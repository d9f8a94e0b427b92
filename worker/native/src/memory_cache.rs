//! The native host's [`Cache`] port: a least-recently-used map bounded by the bytes it holds
//! (`OPENREGISTRY_CACHE_BYTES`), shared by every request of the process. Entries also expire
//! after the lifetime they were put with, so a stale entry never outlives it here.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use openregistry::ports::Cache;

struct Entry {
    value: Bytes,
    expires: Instant,
    /// The bytes it is counted as (key and value, plus bookkeeping).
    weight: u64,
}

struct State {
    entries: LruCache<String, Entry>,
    bytes: u64,
}

pub struct MemoryCache {
    state: Mutex<State>,
    capacity: u64,
}

/// What an entry costs beyond its key and value (the map's node, the `Entry`).
const OVERHEAD: u64 = 96;

impl MemoryCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            state: Mutex::new(State {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
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

#[async_trait::async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        let mut state = self.state();
        let entry = state.entries.get(key)?;
        if entry.expires > Instant::now() {
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
        let mut state = self.state();
        state.remove(key);
        while state.bytes + weight > self.capacity {
            match state.entries.pop_lru() {
                Some((_, old)) => state.bytes = state.bytes.saturating_sub(old.weight),
                None => break,
            }
        }
        state.bytes += weight;
        let expires = Instant::now() + ttl;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_holds_no_more_bytes_than_its_capacity_and_drops_the_least_recently_used() {
        let cache = MemoryCache::new(8 * 1024);
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
        let cache = MemoryCache::new(1 << 20);
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
        let cache = MemoryCache::new(8 * 1024);
        cache
            .put("big", Bytes::from(vec![0u8; 2000]), Duration::from_secs(60))
            .await;
        assert!(cache.get("big").await.is_none());
    }
}
