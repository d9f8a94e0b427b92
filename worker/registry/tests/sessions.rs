//! Upload sessions on an eventually consistent key-value store: every state is written once under
//! its own sequence number, and the upload `Location` names the state a request continues from.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use openregistry::memory::MemoryKv;
use openregistry::ports::{Kv, Unavailable};

const REPO: &str = "team/app";

/// A `Kv` that can hide a key from the next few reads, as a store location that has not yet seen
/// a write made elsewhere; and that records every write.
#[derive(Default)]
struct LaggingKv {
    inner: MemoryKv,
    hidden: Mutex<Option<(String, usize)>>,
    writes: Mutex<Vec<String>>,
}

impl LaggingKv {
    fn hide_next_reads_of(&self, key: &str, reads: usize) {
        *self.hidden.lock().unwrap() = Some((key.to_owned(), reads));
    }

    /// Every key's lifetime runs out, as the store's TTL would do.
    fn expire_everything(&self) {
        for key in self.writes.lock().unwrap().iter() {
            futures_executor::block_on(self.inner.delete(key)).unwrap();
        }
    }
}

#[async_trait::async_trait]
impl Kv for LaggingKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        let hide = {
            let mut hidden = self.hidden.lock().unwrap();
            match hidden.as_mut() {
                Some((k, left)) if k == key && *left > 0 => {
                    *left -= 1;
                    true
                }
                _ => false,
            }
        };
        if hide {
            return Ok(None);
        }
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Unavailable> {
        self.writes.lock().unwrap().push(key.to_owned());
        self.inner.put(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), Unavailable> {
        self.inner.delete(key).await
    }
}

/// The key of the state a `Location` names (`.../uploads/<id>.<seq>` → `upload/<id>/<seq>`).
fn state_key(location: &str) -> String {
    let reference = location.rsplit('/').next().unwrap();
    let mut parts = reference.split('.');
    let (id, seq) = (parts.next().unwrap(), parts.next().unwrap());
    format!("upload/{id}/{seq}")
}

#[test]
fn no_session_key_is_ever_written_twice() {
    let kv = Arc::new(LaggingKv::default());
    let r = TestRegistry::with_kv(kv.clone());
    let data = bytes_of(100, 3);
    let mut location = r.start_upload(REPO);
    for (i, chunk) in data.chunks(7).enumerate() {
        location = r
            .patch_chunk(&location, (i * 7) as u64, chunk)
            .expect_status(StatusCode::ACCEPTED)
            .location();
    }
    r.finish_upload(&location, &sha256(&data), b"")
        .expect_status(StatusCode::CREATED);
    let writes = kv.writes.lock().unwrap().clone();
    let mut unique = writes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(writes.len(), unique.len(), "{writes:?}");
}

#[test]
fn a_state_not_visible_yet_sends_the_client_back_to_the_previous_one_and_the_push_completes() {
    let kv = Arc::new(LaggingKv::default());
    let r = TestRegistry::with_kv(kv.clone());
    let data = bytes_of(30, 9);
    let first = r.start_upload(REPO);
    let second = r
        .patch_chunk(&first, 0, &data[..10])
        .expect_status(StatusCode::ACCEPTED)
        .location();

    // This location of the store does not see the state after the first chunk for a while.
    kv.hide_next_reads_of(&state_key(&second), 2);
    let stale = r.patch_chunk(&second, 10, &data[10..20]);
    stale.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(stale.must_header("range"), "0-0");
    let resume_at = stale.location();
    // Back to the first state, and told to save the next one after the state it cannot see.
    assert!(resume_at.contains(".0.2.t"), "{resume_at}");

    // The client resumes where the registry said; the bytes it re-sends are counted once.
    let next = r
        .patch_chunk(&resume_at, 0, &data[..20])
        .expect_status(StatusCode::ACCEPTED)
        .location();
    r.finish_upload(&next, &sha256(&data), &data[20..])
        .expect_status(StatusCode::CREATED);
    assert_eq!(&r.blob_bytes(REPO, &sha256(&data))[..], &data[..]);
    let writes = kv.writes.lock().unwrap().clone();
    let mut unique = writes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        writes.len(),
        unique.len(),
        "a key was written twice: {writes:?}"
    );
}

#[test]
fn a_client_holding_an_older_location_continues_from_the_newest_state() {
    let r = TestRegistry::new();
    let data = bytes_of(20, 4);
    let first = r.start_upload(REPO);
    r.patch_chunk(&first, 0, &data[..10])
        .expect_status(StatusCode::ACCEPTED);
    let status = r.get(&first);
    status.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(status.must_header("range"), "0-9");
    // A chunk that starts at the old offset is out of order; one at the newest offset is not.
    r.patch_chunk(&first, 0, &data[..10])
        .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    let last = r
        .patch_chunk(&first, 10, &data[10..])
        .expect_status(StatusCode::ACCEPTED)
        .location();
    r.finish_upload(&last, &sha256(&data), b"")
        .expect_status(StatusCode::CREATED);
}

#[test]
fn a_finished_upload_is_unknown_at_every_one_of_its_locations() {
    let r = TestRegistry::new();
    let data = bytes_of(10, 5);
    let first = r.start_upload(REPO);
    let second = r
        .patch_chunk(&first, 0, &data)
        .expect_status(StatusCode::ACCEPTED)
        .location();
    r.finish_upload(&second, &sha256(&data), b"")
        .expect_status(StatusCode::CREATED);
    for location in [first, second] {
        r.get(&location)
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    }
}

#[test]
fn a_missing_state_is_retryable_while_it_may_be_on_its_way_and_unknown_once_it_cannot_be() {
    let kv = Arc::new(LaggingKv::default());
    let r = TestRegistry::with_kv(kv.clone());
    let data = bytes_of(10, 6);
    let first = r.start_upload(REPO);
    let second = r
        .patch_chunk(&first, 0, &data)
        .expect_status(StatusCode::ACCEPTED)
        .location();
    // The session's lifetime runs out: its states are gone from the store.
    kv.expire_everything();

    // Seconds after the last write, a missing state may still be on its way here: retry.
    r.clock.advance(Duration::from_secs(5));
    let early = r.get(&second);
    early.expect_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(early.header("retry-after").is_some());

    // Minutes after it, no store is that far behind: the upload is gone, whatever is asked.
    r.clock.advance(Duration::from_secs(300));
    r.expect_unknown_upload(&second, 10);
    r.get(&first)
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn an_upload_is_unknown_once_its_lifetime_from_its_start_is_over_and_its_data_is_discarded() {
    let r = TestRegistry::new();
    let data = bytes_of(10, 7);
    let location = r.start_upload(REPO);
    r.clock.advance(Duration::from_secs(23 * 3600));
    // Activity does not extend the lifetime: it counts from the start, as the stores' sweeps do.
    let location = r
        .patch_chunk(&location, 0, &data)
        .expect_status(StatusCode::ACCEPTED)
        .location();
    assert_eq!(r.blobs.open_uploads(), 1);
    r.clock.advance(Duration::from_secs(3600));
    r.get(&location)
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.finish_upload(&location, &sha256(&data), b"")
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(r.blobs.open_uploads(), 0, "the partial data stays behind");
}

#[test]
fn sweeps_see_an_upload_as_live_until_its_lifetime_is_over() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let id = state_key(&location).split('/').nth(1).unwrap().to_owned();
    let ttl = Duration::from_secs(24 * 3600);
    let live = |id: &str| {
        let now = openregistry::ports::Clock::now_unix_millis(r.clock.as_ref());
        futures_executor::block_on(openregistry::upload_is_live(
            r.ports.kv.as_ref(),
            id,
            now,
            ttl,
        ))
        .unwrap()
    };
    assert!(live(&id));
    assert!(
        !live("0123456789abcdef0123456789abcdef"),
        "an unknown upload"
    );
    r.clock.advance(ttl);
    assert!(!live(&id), "an upload past its lifetime");
}
