//! Any answers from an S3 server, and any stored upload handle: the S3 store's XML parsers
//! (multipart creation, completion, listings, error documents), its header parsing, and
//! `MultipartHandle` decoding. Must fail cleanly, never panic.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_executor::block_on;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use openregistry::digest::{Algorithm, Digest};
use openregistry::memory::{ManualClock, MemoryKv};
use openregistry::ports::BlobStore;
use openregistry_backends::{S3Config, S3Store};
use openregistry_fuzz::{Answer, ScriptedHttp};

#[derive(Debug, Arbitrary)]
enum Operation {
    Begin,
    Append {
        handle: String,
        offset: u64,
        data: Vec<u8>,
    },
    Finish {
        handle: String,
        size: u64,
    },
    Read {
        locator: String,
        range: Option<(u64, u64)>,
    },
    Redirect {
        locator: String,
    },
    Abort {
        handle: String,
    },
    Delete {
        locator: String,
    },
    ListOld,
}

#[derive(Debug, Arbitrary)]
struct Input {
    operation: Operation,
    answers: Vec<Answer>,
}

fuzz_target!(|input: Input| {
    let config = S3Config {
        endpoint: "https://s3.example".into(),
        bucket: "bucket".into(),
        region: "us-east-1".into(),
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "secret".into(),
        path_style: true,
        presign: Duration::from_secs(300),
        timeout: Duration::from_secs(30),
        tail_ttl: Duration::from_secs(3600),
    };
    let store = S3Store::new(
        Arc::new(ScriptedHttp::new(input.answers)),
        Arc::new(MemoryKv::default()),
        Arc::new(ManualClock::new(1_700_000_000_000)),
        config,
    )
    .expect("a valid config");
    let digest = Digest::of(Algorithm::Sha256, b"fuzz");
    block_on(async {
        match input.operation {
            Operation::Begin => drop(store.begin_upload("0a1b2c").await),
            Operation::Append {
                handle,
                offset,
                data,
            } => {
                let stream = futures_util::stream::iter(vec![Ok(Bytes::from(data))]);
                drop(store.append(&handle, offset, Box::pin(stream)).await);
            }
            Operation::Finish { handle, size } => {
                drop(store.finish_upload(&handle, &digest, size).await)
            }
            Operation::Read { locator, range } => {
                let range = range.map(|(start, end)| openregistry::range::ByteRange { start, end });
                if let Ok(body) = store.read(&locator, range).await {
                    drop(body.collect(u64::MAX).await);
                }
            }
            Operation::Redirect { locator } => drop(store.redirect_url(&locator).await),
            Operation::Abort { handle } => drop(store.abort_upload(&handle).await),
            Operation::Delete { locator } => drop(store.delete(&locator).await),
            Operation::ListOld => drop(store.uploads_older_than(Duration::from_secs(60)).await),
        }
    });
});
