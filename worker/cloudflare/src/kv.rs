//! The `Kv` port on a Workers KV namespace binding.
//!
//! Workers KV is eventually consistent (a write may take 60 s or more to be seen at other
//! locations) and takes about one write per second per key. The core copes with both by writing
//! every upload-session state and every Skynet tail segment once, under its own key (see
//! `openregistry::session`), so this adapter is a plain mapping with no locking or read-modify-write.
//!
//! For tests, `OPENREGISTRY_TEST_KV_LAG=1` makes it act like a lagging replica: each upload-state
//! key written after the first state of an upload (`upload/<id>/<seq>`, `seq >= 1`) is reported as
//! missing on its first read, once. Unset (the default), nothing is simulated.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use openregistry::ports::{Kv, Unavailable};
use worker::kv::KvStore;

/// Workers KV's value size limit.
pub const MAX_VALUE_LEN: usize = 25 * 1024 * 1024;

/// Workers KV refuses expirations shorter than this.
const MIN_TTL_SECS: u64 = 60;

/// The upload-session namespace.
pub struct WorkersKv {
    store: KvStore,
    lag: bool,
}

thread_local! {
    /// Keys written while lag simulation is on, not read since (each will be "missing" once).
    static LAGGING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Keys that already lagged once (they never lag again, even when written again).
    static LAGGED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// Bounds the test-only bookkeeping (an isolate may live long).
const LAG_MEMORY: usize = 100_000;

/// `upload/<id>/<seq>` with `seq >= 1`.
fn is_later_upload_state(key: &str) -> bool {
    let mut parts = key.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("upload"), Some(_), Some(seq), None) if seq.parse::<u64>().is_ok_and(|s| s >= 1)
    )
}

impl WorkersKv {
    pub fn new(store: KvStore, lag: bool) -> Self {
        Self { store, lag }
    }

    fn note_write(&self, key: &str) {
        if !self.lag || !is_later_upload_state(key) {
            return;
        }
        let already = LAGGED.with(|l| l.borrow().contains(key));
        if !already {
            LAGGING.with(|l| {
                let mut l = l.borrow_mut();
                if l.len() >= LAG_MEMORY {
                    l.clear();
                }
                l.insert(key.to_owned());
            });
        }
    }

    /// True when this read must pretend the key is not visible yet.
    fn lags(&self, key: &str) -> bool {
        if !self.lag || !LAGGING.with(|l| l.borrow_mut().remove(key)) {
            return false;
        }
        LAGGED.with(|l| {
            let mut l = l.borrow_mut();
            if l.len() >= LAG_MEMORY {
                l.clear();
            }
            l.insert(key.to_owned());
        });
        tracing_note(&format!(
            "OPENREGISTRY_TEST_KV_LAG: {key} reported missing once"
        ));
        true
    }
}

fn tracing_note(message: &str) {
    worker::console_log!("{message}");
}

fn unavailable(what: &str, key: &str, error: impl std::fmt::Display) -> Unavailable {
    Unavailable::new("kv", format!("{what} {key}: {error}"))
}

#[async_trait::async_trait(?Send)]
impl Kv for WorkersKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        if self.lags(key) {
            return Ok(None);
        }
        self.store
            .get(key)
            .bytes()
            .await
            .map(|value| value.map(Bytes::from))
            .map_err(|e| unavailable("reading", key, e))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Unavailable> {
        let mut put = self
            .store
            .put_bytes(key, &value)
            .map_err(|e| unavailable("writing", key, e))?;
        if let Some(ttl) = ttl {
            put = put.expiration_ttl(ttl.as_secs().max(MIN_TTL_SECS));
        }
        put.execute()
            .await
            .map_err(|e| unavailable("writing", key, e))?;
        self.note_write(key);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), Unavailable> {
        self.store
            .delete(key)
            .await
            .map_err(|e| unavailable("deleting", key, e))
    }

    fn max_value_len(&self) -> usize {
        MAX_VALUE_LEN
    }
}
