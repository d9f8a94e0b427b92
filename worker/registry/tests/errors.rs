//! The base endpoint, routing (unknown routes, wrong methods), name validation at every endpoint,
//! the API-version header on every response, and the OCI error envelope of every error code.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use openregistry::ports::{Kv, Unavailable};
use openregistry::Body;

const REPO: &str = "library/nginx";

/// A request to send, named for failure messages.
struct Call {
    method: Method,
    uri: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn call(method: Method, uri: impl Into<String>) -> Call {
    Call {
        method,
        uri: uri.into(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

impl Call {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    fn send(&self, r: &TestRegistry) -> Reply {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        r.send(
            self.method.clone(),
            &self.uri,
            &headers,
            Body::from(self.body.clone()),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The base endpoint and routing

#[test]
fn the_base_endpoint_answers_200_with_the_api_version_header() {
    let r = TestRegistry::new();
    let reply = r.get("/v2/");
    reply.expect_status(StatusCode::OK);
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[test]
fn the_base_endpoint_answers_without_a_trailing_slash_and_to_head() {
    let r = TestRegistry::new();
    r.get("/v2").expect_status(StatusCode::OK);
    let head = r.head("/v2/");
    head.expect_status(StatusCode::OK);
    assert!(head.body.is_empty());
}

#[test]
fn unknown_routes_are_404_with_an_oci_error_body() {
    let r = TestRegistry::new();
    // `/` is the web app's (tests/webapp.rs); only its own files are under `/ui/`.
    for uri in [
        "/ui/missing.js",
        "/v1/",
        "/v2/library",
        "/v2/library/unknown/thing",
        "/v2/library/manifests",
        "/v3/library/tags/list",
        "/health",
    ] {
        let reply = r.get(uri);
        reply.expect_status(StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code(), "UNSUPPORTED", "{uri}");
    }
}

#[test]
fn wrong_methods_are_405_with_an_oci_error_body() {
    let r = TestRegistry::new();
    let digest = unknown_digest();
    let upload = format!("/v2/{REPO}/blobs/uploads/0123456789abcdef0123456789abcdef");
    for (method, uri) in [
        (Method::POST, "/v2/".to_owned()),
        (Method::DELETE, "/v2/".to_owned()),
        (Method::POST, "/v2/_catalog".to_owned()),
        (Method::PUT, format!("/v2/{REPO}/tags/list")),
        (Method::DELETE, format!("/v2/{REPO}/referrers/{digest}")),
        (Method::POST, format!("/v2/{REPO}/manifests/latest")),
        (Method::PATCH, format!("/v2/{REPO}/manifests/latest")),
        (Method::PUT, format!("/v2/{REPO}/blobs/{digest}")),
        (Method::POST, format!("/v2/{REPO}/blobs/{digest}")),
        (Method::GET, format!("/v2/{REPO}/blobs/uploads/")),
        (Method::PUT, format!("/v2/{REPO}/blobs/uploads/")),
        (Method::POST, upload.clone()),
        (Method::HEAD, upload),
    ] {
        let reply = r.send(method.clone(), &uri, &[], Body::Empty);
        reply.expect_status(StatusCode::METHOD_NOT_ALLOWED);
        let allow = reply.must_header("allow");
        assert!(
            !allow.contains(method.as_str()),
            "{method} {uri}: Allow {allow}"
        );
        if method != Method::HEAD {
            assert_eq!(reply.error_code(), "UNSUPPORTED", "{method} {uri}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Repository names

#[test]
fn an_invalid_name_is_name_invalid_at_every_endpoint() {
    let r = TestRegistry::new();
    let digest = unknown_digest();
    for name in ["UPPER", "a//b", "-a", "a-", "a..b", "a___b", "a/.b"] {
        let upload = format!("/v2/{name}/blobs/uploads/0123456789abcdef0123456789abcdef");
        for call in [
            call(Method::GET, format!("/v2/{name}/tags/list")),
            call(Method::GET, format!("/v2/{name}/manifests/latest")),
            call(Method::PUT, format!("/v2/{name}/manifests/latest"))
                .header("content-type", OCI_MANIFEST)
                .body(b"{}"),
            call(Method::DELETE, format!("/v2/{name}/manifests/latest")),
            call(Method::GET, format!("/v2/{name}/blobs/{digest}")),
            call(Method::DELETE, format!("/v2/{name}/blobs/{digest}")),
            call(Method::POST, format!("/v2/{name}/blobs/uploads/")),
            call(
                Method::POST,
                format!("/v2/{name}/blobs/uploads/?digest={digest}"),
            )
            .body(b"x"),
            call(Method::GET, upload.clone()),
            call(Method::PATCH, upload.clone()).body(b"x"),
            call(Method::PUT, format!("{upload}?digest={digest}")),
            call(Method::DELETE, upload.clone()),
            call(Method::GET, format!("/v2/{name}/referrers/{digest}")),
        ] {
            call.send(&r)
                .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
        }
    }
    assert_eq!(r.blobs.open_uploads(), 0);
}

#[test]
fn head_with_an_invalid_name_is_400_without_a_body() {
    let r = TestRegistry::new();
    for uri in [
        "/v2/UPPER/manifests/latest".to_owned(),
        format!("/v2/UPPER/blobs/{}", unknown_digest()),
    ] {
        let head = r.head(&uri);
        head.expect_status(StatusCode::BAD_REQUEST);
        assert!(head.body.is_empty());
    }
}

#[test]
fn a_name_longer_than_255_characters_is_name_invalid() {
    let r = TestRegistry::new();
    let long = "a".repeat(256);
    r.get(&format!("/v2/{long}/tags/list"))
        .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
    let longest = "a".repeat(255);
    r.start_upload(&longest);
}

#[test]
fn names_with_every_allowed_separator_are_accepted() {
    let r = TestRegistry::new();
    for name in [
        "a.b",
        "a_b",
        "a__b",
        "a-b",
        "a---b",
        "0/1/2",
        "my-org/my_app.v2",
    ] {
        r.push_blob(name, b"x");
    }
}

// ---------------------------------------------------------------------------------------------
// The API version header

#[test]
fn every_response_carries_the_api_version_header_errors_included() {
    let r = TestRegistry::new();
    let blob = r.push_blob(REPO, b"blob");
    let calls = [
        call(Method::GET, "/v2/"),
        call(Method::GET, "/nowhere"),
        call(Method::POST, "/v2/"),
        call(Method::GET, "/v2/_catalog"),
        call(Method::GET, format!("/v2/{REPO}/tags/list")),
        call(Method::GET, "/v2/unknown/tags/list"),
        call(Method::GET, format!("/v2/{REPO}/blobs/{}", blob.digest)),
        call(Method::HEAD, format!("/v2/{REPO}/blobs/{}", blob.digest)),
        call(
            Method::GET,
            format!("/v2/{REPO}/blobs/{}", unknown_digest()),
        ),
        call(Method::GET, format!("/v2/{REPO}/blobs/sha256:bad")),
        call(Method::POST, format!("/v2/{REPO}/blobs/uploads/")),
        call(Method::GET, format!("/v2/{REPO}/manifests/latest")),
        call(Method::HEAD, format!("/v2/{REPO}/manifests/latest")),
        call(Method::GET, "/v2/BAD/manifests/latest"),
        call(Method::GET, format!("/v2/{REPO}/referrers/{}", blob.digest)),
    ];
    for call in calls {
        let reply = call.send(&r);
        assert_eq!(
            reply.header("docker-distribution-api-version"),
            Some("registry/2.0"),
            "{} {} ({})",
            call.method,
            call.uri,
            reply.status
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The error envelope

#[test]
fn every_error_code_answers_with_the_oci_error_envelope_and_its_status() {
    let r = TestRegistry::new();
    let blob = r.push_blob(REPO, &bytes_of(10, 1));
    let upload = r.start_upload(REPO);
    let patched = r.patch_chunk(&upload, 0, b"abc").location();
    let unknown_upload = format!("/v2/{REPO}/blobs/uploads/0123456789abcdef0123456789abcdef");
    let missing_layer = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":10}},"layers":[]}}"#,
        unknown_digest()
    );
    let cases: Vec<(Call, StatusCode, &str)> = vec![
        (
            call(
                Method::GET,
                format!("/v2/{REPO}/blobs/{}", unknown_digest()),
            ),
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
        ),
        (
            call(Method::GET, unknown_upload),
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            call(Method::GET, format!("/v2/{REPO}/blobs/sha256:bad")),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            call(Method::PUT, format!("/v2/{REPO}/manifests/latest"))
                .header("content-type", OCI_MANIFEST)
                .body(missing_layer.as_bytes()),
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        (
            call(Method::PUT, format!("/v2/{REPO}/manifests/latest"))
                .header("content-type", OCI_MANIFEST)
                .body(b"not json"),
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
        ),
        (
            call(Method::GET, format!("/v2/{REPO}/manifests/missing")),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            call(Method::GET, "/v2/Bad/tags/list"),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            call(Method::GET, "/v2/unknown/tags/list"),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        (
            call(Method::PATCH, patched.clone())
                .header("content-length", "10")
                .body(b"abc"),
            StatusCode::BAD_REQUEST,
            "SIZE_INVALID",
        ),
        (
            call(Method::PUT, format!("/v2/{REPO}/manifests/latest"))
                .header("content-type", OCI_MANIFEST)
                .header("content-length", (MANIFEST_LIMIT + 1).to_string())
                .body(&vec![b' '; MANIFEST_LIMIT + 1]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
        ),
        (
            call(Method::PUT, format!("/v2/{REPO}/manifests/-bad"))
                .header("content-type", OCI_MANIFEST)
                .body(b"{}"),
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
        ),
        (
            call(Method::PATCH, patched.clone())
                .header("content-range", "7-9")
                .header("content-length", "3")
                .body(b"xyz"),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
        ),
        (
            call(Method::GET, format!("/v2/{REPO}/blobs/{}", blob.digest))
                .header("range", "bytes=50-60"),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "SIZE_INVALID",
        ),
        (
            call(Method::DELETE, "/v2/_catalog"),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            call(
                Method::GET,
                // A state far ahead of any written, without the time it was saved.
                format!(
                    "{}.999",
                    patched
                        .split(".t")
                        .next()
                        .expect("location")
                        .rsplit_once('.')
                        .expect("seq")
                        .0
                ),
            ),
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
        ),
    ];
    for (call, status, code) in cases {
        let reply = call.send(&r);
        assert_eq!(reply.status, status, "{} {}", call.method, call.uri);
        assert_eq!(reply.error_code(), code, "{} {}", call.method, call.uri);
    }
}

#[test]
fn a_body_that_breaks_off_is_blob_upload_invalid() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.patch(&location, &[], broken_body(b"abc"))
        .expect_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");
}

#[test]
fn error_messages_are_human_readable_text() {
    let r = TestRegistry::new();
    let reply = r.get(&format!("/v2/{REPO}/manifests/missing"));
    let message = reply.json()["errors"][0]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(!message.is_empty());
}

#[test]
fn the_detail_of_an_upload_range_error_names_the_offset() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"12345");
    let reply = r.patch_chunk(&patched.location(), 9, b"x");
    assert_eq!(reply.error_detail(), serde_json::json!({"offset": 5}));
}

#[test]
fn the_detail_of_a_manifest_size_error_names_the_limit() {
    let r = TestRegistry::new();
    let reply = r.put_manifest_bytes(
        REPO,
        "latest",
        OCI_MANIFEST,
        &vec![b' '; MANIFEST_LIMIT + 1],
    );
    assert_eq!(
        reply.error_detail(),
        serde_json::json!({"limit": MANIFEST_LIMIT})
    );
}

// ---------------------------------------------------------------------------------------------
// Failures on the server side

/// A KV store that is down.
struct DownKv;

#[async_trait::async_trait]
impl Kv for DownKv {
    async fn get(&self, _key: &str) -> Result<Option<Bytes>, Unavailable> {
        Err(Unavailable::new("kv", "down for maintenance"))
    }
    async fn put(
        &self,
        _key: &str,
        _value: Bytes,
        _ttl: Option<Duration>,
    ) -> Result<(), Unavailable> {
        Err(Unavailable::new("kv", "down for maintenance"))
    }
    async fn delete(&self, _key: &str) -> Result<(), Unavailable> {
        Err(Unavailable::new("kv", "down for maintenance"))
    }
}

/// A KV store whose every value is garbage.
struct CorruptKv;

#[async_trait::async_trait]
impl Kv for CorruptKv {
    async fn get(&self, _key: &str) -> Result<Option<Bytes>, Unavailable> {
        Ok(Some(Bytes::from_static(b"\x00 not a session")))
    }
    async fn put(
        &self,
        _key: &str,
        _value: Bytes,
        _ttl: Option<Duration>,
    ) -> Result<(), Unavailable> {
        Ok(())
    }
    async fn delete(&self, _key: &str) -> Result<(), Unavailable> {
        Ok(())
    }
}

#[test]
fn an_unavailable_port_is_503_unavailable_with_retry_after() {
    let r = TestRegistry::with_kv(Arc::new(DownKv));
    let reply = r.post(&format!("/v2/{REPO}/blobs/uploads/"), &[], Body::Empty);
    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[test]
fn a_corrupt_upload_session_is_a_500_internal_error_not_a_panic() {
    let r = TestRegistry::with_kv(Arc::new(CorruptKv));
    let reply = r.get(&format!(
        "/v2/{REPO}/blobs/uploads/0123456789abcdef0123456789abcdef"
    ));
    reply.expect_status(StatusCode::INTERNAL_SERVER_ERROR);
    reply.error_code();
}

#[test]
fn monolithic_uploads_and_reads_do_not_need_the_kv_store() {
    let r = TestRegistry::with_kv(Arc::new(DownKv));
    let blob = r.push_blob(REPO, b"no session needed");
    assert_eq!(&r.blob_bytes(REPO, &blob.digest)[..], b"no session needed");
}
