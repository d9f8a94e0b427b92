//! Any answers from an S3 server, and any stored upload handle: the S3 store's XML parsers
//! (multipart creation, completion, listings, error documents), its header parsing, and
//! `MultipartHandle` decoding. Must fail cleanly, never panic.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use futures_executor::block_on;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use openregistry::memory::{ManualClock, MemoryKv};
use openregistry_backends::{S3Config, S3Store};
use openregistry_fuzz::{run_store_operation, Answer, ScriptedHttp, StoreOperation};

#[derive(Debug, Arbitrary)]
enum Operation {
    Store(StoreOperation),
    /// The sweep's listing of multipart uploads.
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
    block_on(async {
        match input.operation {
            Operation::Store(operation) => run_store_operation(&store, operation).await,
            Operation::ListOld => drop(store.uploads_older_than(Duration::from_secs(60)).await),
        }
    });
});
