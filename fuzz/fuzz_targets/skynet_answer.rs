//! Any answers from a Skynet portal, and any stored upload handle: the TUS exchange (offsets,
//! locations), skylink answers, and the handle's decoding. Must fail cleanly, never panic.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use futures_executor::block_on;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use openregistry::digest::{Algorithm, Digest};
use openregistry::memory::MemoryKv;
use openregistry::ports::BlobStore;
use openregistry_backends::{SkynetConfig, SkynetStore};
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
    Abort {
        handle: String,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    operation: Operation,
    answers: Vec<Answer>,
}

fuzz_target!(|input: Input| {
    let store = SkynetStore::new(
        Arc::new(ScriptedHttp::new(input.answers)),
        Arc::new(MemoryKv::default()),
        SkynetConfig::new("https://portal.example", Some("key".into())),
    );
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
            Operation::Abort { handle } => drop(store.abort_upload(&handle).await),
        }
    });
});
