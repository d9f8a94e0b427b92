//! Any answers from a Skynet portal, and any stored upload handle: the TUS exchange (offsets,
//! locations), skylink answers, and the handle's decoding. Must fail cleanly, never panic.
#![no_main]

use std::sync::Arc;

use futures_executor::block_on;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use openregistry::memory::MemoryKv;
use openregistry_backends::{SkynetConfig, SkynetStore};
use openregistry_fuzz::{run_store_operation, Answer, ScriptedHttp, StoreOperation};

#[derive(Debug, Arbitrary)]
struct Input {
    operation: StoreOperation,
    answers: Vec<Answer>,
}

fuzz_target!(|input: Input| {
    let store = SkynetStore::new(
        Arc::new(ScriptedHttp::new(input.answers)),
        Arc::new(MemoryKv::default()),
        SkynetConfig::new("https://portal.example", Some("key".into())),
    );
    block_on(run_store_operation(&store, input.operation));
});
