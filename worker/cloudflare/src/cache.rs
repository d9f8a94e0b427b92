//! The Worker's read path cache (`OPENREGISTRY_EDGE_CACHE`, see `openregistry::cache`): the
//! isolate's memory (`openregistry_host::cache::MemoryLru`, kept between requests, entries at
//! most `OPENREGISTRY_ISOLATE_CACHE_MS`) in front of the location's Cache API (`caches.default`),
//! or of Workers KV where the Cache API does nothing (workers.dev).
//!
//! Cache API entries are synthetic `GET` responses under a URL of their own (never one a client
//! can ask for), with `Cache-Control: max-age` set to the entry's lifetime; failures are misses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use js_sys::{Reflect, Uint8Array};
use openregistry::ports::{Cache, Kv};
use openregistry_host::cache::{KvCache, MemoryLru, Tiered};
use openregistry_host::{EdgeCache, Settings};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::JsClock;

/// The isolate's memory tier: shared by every request this isolate serves.
const ISOLATE_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Where the Cache API entries live: a host no request can name (`.invalid`, RFC 2606).
const ENTRY_ORIGIN: &str = "https://openregistry-cache.invalid/";

thread_local! {
    static ISOLATE: Arc<MemoryLru> = Arc::new(MemoryLru::new(ISOLATE_CACHE_BYTES, Arc::new(JsClock)));
}

/// The isolate's memory itself (the memory of verified tokens lives there too, see
/// `Registry::with_verified_tokens`).
pub fn isolate_memory() -> Arc<dyn Cache> {
    ISOLATE.with(|memory| memory.clone() as Arc<dyn Cache>)
}

/// The cache the settings ask for, if any.
pub fn edge_cache(settings: &Settings, kv: Arc<dyn Kv>) -> Option<Arc<dyn Cache>> {
    let far: Arc<dyn Cache> = match settings.edge_cache {
        EdgeCache::Off => return None,
        EdgeCache::Shared => Arc::new(CacheApi::new()?),
        EdgeCache::Kv => Arc::new(KvCache::new(kv, "cache/")),
    };
    if settings.isolate_cache.is_zero() {
        return Some(far);
    }
    Some(Arc::new(Tiered {
        near: isolate_memory(),
        near_lifetime: settings.isolate_cache,
        far,
    }))
}

/// `caches.default`, where the runtime has it.
pub fn default_cache() -> Option<web_sys::Cache> {
    let caches = Reflect::get(&js_sys::global(), &"caches".into()).ok()?;
    let cache = Reflect::get(&caches, &"default".into()).ok()?;
    cache.dyn_into::<web_sys::Cache>().ok()
}

/// The location's Cache API.
pub struct CacheApi {
    cache: web_sys::Cache,
}

impl CacheApi {
    fn new() -> Option<Self> {
        default_cache().map(|cache| Self { cache })
    }
}

fn entry_url(key: &str) -> String {
    format!("{ENTRY_ORIGIN}{}", js_sys::encode_uri_component(key))
}

#[async_trait::async_trait(?Send)]
impl Cache for CacheApi {
    async fn get(&self, key: &str) -> Option<Bytes> {
        let found = JsFuture::from(self.cache.match_with_str(&entry_url(key)))
            .await
            .ok()?;
        let response = found.dyn_into::<web_sys::Response>().ok()?;
        let buffer = JsFuture::from(response.array_buffer().ok()?).await.ok()?;
        Some(Bytes::from(Uint8Array::new(&buffer).to_vec()))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) {
        let headers = web_sys::Headers::new().ok();
        let Some(headers) = headers else { return };
        let control = format!("max-age={}", ttl.as_secs().max(1));
        if headers.set("cache-control", &control).is_err() {
            return;
        }
        let init = web_sys::ResponseInit::new();
        init.set_status(200);
        init.set_headers(headers.as_ref());
        let mut body = value.to_vec();
        let Ok(response) =
            web_sys::Response::new_with_opt_u8_array_and_init(Some(&mut body), &init)
        else {
            return;
        };
        let _ = JsFuture::from(self.cache.put_with_str(&entry_url(key), &response)).await;
    }

    async fn delete(&self, key: &str) {
        let _ = JsFuture::from(self.cache.delete_with_str(&entry_url(key))).await;
    }
}
