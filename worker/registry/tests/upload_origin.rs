//! Big layers past the edge's body limit:
//!
//! - a body declaring more than the advertised `OCI-Chunk-Max-Length` is refused with 413
//!   `SIZE_INVALID` (the limit in `detail`) before a byte is stored, and the session goes on;
//! - with an upload origin (`Config::upload_origin`), the edge forwards the upload start, credentials
//!   included, and answers with the origin's session `Location`: the bytes go to the origin, which
//!   shares the edge's database and storage, and the blob is then pulled from the edge.

// Test code indexes what it just built: a panic is a failing test.
#![allow(clippy::indexing_slicing, clippy::string_slice)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use http::StatusCode;
use openregistry::memory::MemoryKv;
use openregistry::ports::{HttpClient, Ports, Unavailable};
use openregistry::{Body, Config, Registry};

const ORIGIN: &str = "https://uploads.example:8443";

/// The edge's `HttpClient`: requests to the origin reach the origin registry's handler; what
/// was sent is kept for the test to read.
struct ToOrigin {
    origin: Registry,
    seen: Mutex<Vec<(String, Option<String>)>>,
}

#[async_trait::async_trait]
impl HttpClient for ToOrigin {
    async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Unavailable> {
        let uri = request.uri().to_string();
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.seen
            .lock()
            .expect("lock")
            .push((uri.clone(), authorization));
        let path = uri
            .strip_prefix(ORIGIN)
            .ok_or_else(|| Unavailable::new("test", format!("unexpected host in {uri}")))?;
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().expect("a path");
        Ok(self
            .origin
            .handle(http::Request::from_parts(parts, body))
            .await)
    }
}

fn limited(max: u64) -> TestRegistry {
    TestRegistry::with(
        Config {
            chunk_max_length: Some(max),
            ..Config::default()
        },
        Arc::new(MemoryKv::default()),
    )
}

#[test]
fn a_chunk_declaring_more_than_the_limit_is_refused_before_anything_is_stored() {
    let t = limited(1000);
    let location = t.start_upload("big/layer");
    let chunk = bytes_of(1001, 3);
    let reply = t.patch(
        &location,
        &[
            ("content-type", "application/octet-stream"),
            ("content-length", "1001"),
            ("content-range", "0-1000"),
        ],
        chunk.clone(),
    );
    reply.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
    assert_eq!(reply.error_detail()["limit"], 1000);
    // Nothing was stored: the session is still at 0 and takes chunks within the limit.
    t.get(&location).expect_status(StatusCode::NO_CONTENT);
    t.patch_chunk(&location, 0, &chunk[..1000])
        .expect_status(StatusCode::ACCEPTED);
    t.finish_upload(&location, &sha256(&chunk), &chunk[1000..])
        .expect_status(StatusCode::CREATED);
    // A single-request upload over the limit is refused the same way.
    let other = bytes_of(1001, 4);
    let digest = sha256(&other);
    t.post(
        &format!("/v2/big/other/blobs/uploads/?digest={digest}"),
        &[
            ("content-type", "application/octet-stream"),
            ("content-length", "1001"),
        ],
        other,
    )
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
}

#[test]
fn with_an_upload_origin_the_bytes_go_there_and_the_blob_is_pulled_from_the_edge() {
    // The origin: its own session store, the edge's database and storage.
    let mut origin = limited(u64::MAX);
    let edge_side = limited(100);
    origin.registry = Registry::new(
        Ports {
            kv: Arc::new(MemoryKv::default()),
            ..edge_side.ports.clone()
        },
        Config::default(),
    );
    let to_origin = Arc::new(ToOrigin {
        origin: origin.registry.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let edge = Registry::new(
        Ports {
            http: to_origin.clone(),
            ..edge_side.ports.clone()
        },
        Config {
            chunk_max_length: Some(100),
            upload_origin: Some(ORIGIN.to_owned()),
            ..Config::default()
        },
    );
    let mut t = edge_side;
    t.registry = edge;

    let reply = t.post(
        "/v2/team/app/blobs/uploads/",
        &[
            ("authorization", "Bearer whatever"),
            ("content-length", "0"),
        ],
        Body::Empty,
    );
    reply.expect_status(StatusCode::ACCEPTED);
    let location = reply.location();
    assert!(
        location.starts_with(&format!("{ORIGIN}/v2/team/app/blobs/uploads/")),
        "{location}"
    );
    assert_eq!(
        to_origin.seen.lock().expect("lock").clone(),
        vec![(
            format!("{ORIGIN}/v2/team/app/blobs/uploads/"),
            Some("Bearer whatever".to_owned())
        )],
        "the start is forwarded once, with the client's credentials"
    );

    // The client sends the bytes to the origin: 1000 bytes in one PATCH, past the edge's limit.
    let layer = bytes_of(1000, 9);
    let path = location.strip_prefix(ORIGIN).expect("on the origin");
    origin
        .patch(
            path,
            &[
                ("content-type", "application/octet-stream"),
                ("content-length", "1000"),
            ],
            layer.clone(),
        )
        .expect_status(StatusCode::ACCEPTED);
    let digest = sha256(&layer);
    origin
        .put(
            &format!("{path}?digest={digest}"),
            &[("content-length", "0")],
            Body::Empty,
        )
        .expect_status(StatusCode::CREATED);

    // Pulled from the edge.
    assert_eq!(&t.blob_bytes("team/app", &digest)[..], &layer[..]);
}
