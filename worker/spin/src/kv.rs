//! The `Kv` port on a Spin key-value store (the `default` label in `spin.toml`).
//!
//! Spin's store has no expiry and no compare-and-swap, and on hosted platforms (Akamai Functions)
//! reads are only guaranteed fresh within one request. The core copes: every upload-session state
//! and every Skynet tail segment is written once under its own key (see `openregistry::session`),
//! so this adapter is a plain mapping. Time-to-live is not supported and is ignored: finished
//! sessions leave small tombstones behind (documented in the README).

use std::time::Duration;

use bytes::Bytes;
use openregistry::ports::{Kv, Unavailable};
use spin_sdk::key_value::Store;

/// Values are kept under 1 MB, the limit of Akamai Functions and of Spin's local SQLite store.
pub const MAX_VALUE_LEN: usize = 1_000_000;

/// The store label the component is granted in `spin.toml`.
pub const STORE_LABEL: &str = "default";

pub struct SpinKv {
    store: Store,
}

impl SpinKv {
    pub fn open() -> Result<Self, String> {
        Store::open(STORE_LABEL)
            .map(|store| Self { store })
            .map_err(|e| {
                format!("cannot open the key-value store {STORE_LABEL:?} (is it in the component's key_value_stores?): {e}")
            })
    }
}

fn unavailable(what: &str, key: &str, error: impl std::fmt::Display) -> Unavailable {
    Unavailable::new("kv", format!("{what} {key}: {error}"))
}

#[async_trait::async_trait(?Send)]
impl Kv for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        self.store
            .get(key)
            .map(|value| value.map(Bytes::from))
            .map_err(|e| unavailable("reading", key, e))
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        _ttl: Option<Duration>,
    ) -> Result<(), Unavailable> {
        self.store
            .set(key, &value)
            .map_err(|e| unavailable("writing", key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), Unavailable> {
        self.store
            .delete(key)
            .map_err(|e| unavailable("deleting", key, e))
    }

    fn max_value_len(&self) -> usize {
        MAX_VALUE_LEN
    }
}
