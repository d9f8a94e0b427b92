//! Any bytes as a manifest, under any media type: the manifest parser (image manifests, indexes,
//! Docker schema 2 and lists, artifacts, subjects, annotations) behind `PUT /manifests`.
#![no_main]

use bytes::Bytes;
use futures_executor::block_on;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use openregistry::Body;

const MEDIA_TYPES: [&str; 6] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json",
    "",
];

#[derive(Debug, Arbitrary)]
struct Input {
    media_type: u8,
    by_digest: bool,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let media_type = MEDIA_TYPES[usize::from(input.media_type) % MEDIA_TYPES.len()];
    let reference = if input.by_digest {
        openregistry::digest::Digest::of(openregistry::digest::Algorithm::Sha256, &input.body)
            .to_string()
    } else {
        "latest".to_owned()
    };
    let mut request = http::Request::put(format!("/v2/fuzz/manifests/{reference}"))
        .header("content-length", input.body.len().to_string());
    if !media_type.is_empty() {
        request = request.header("content-type", media_type);
    }
    let request = request
        .body(Body::Full(Bytes::from(input.body)))
        .expect("a valid request");
    let response = block_on(openregistry_fuzz::registry(false).handle(request));
    let _ = block_on(response.into_body().collect(u64::MAX));
});
