//! Blob reads (GET and HEAD, whole and ranged) and blob deletes.

mod common;

use common::*;
use http::StatusCode;

const REPO: &str = "library/alpine";

/// A 100-byte blob pushed to `REPO`.
fn hundred_bytes(r: &TestRegistry) -> Blob {
    r.push_blob(REPO, &bytes_of(100, 9))
}

// ---------------------------------------------------------------------------------------------
// Whole reads

#[test]
fn get_returns_the_bytes_with_length_digest_and_immutable_caching() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let get = r.get(&format!("/v2/{REPO}/blobs/{}", blob.digest));
    get.expect_status(StatusCode::OK);
    assert_eq!(&get.body[..], &blob.bytes[..]);
    assert_eq!(get.header("content-length"), Some("100"));
    assert_eq!(
        get.header("docker-content-digest"),
        Some(blob.digest.as_str())
    );
    assert_eq!(
        get.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
}

#[test]
fn get_serves_blobs_as_octet_streams_that_accept_ranges() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let get = r.get(&format!("/v2/{REPO}/blobs/{}", blob.digest));
    assert_eq!(get.header("content-type"), Some("application/octet-stream"));
    assert_eq!(get.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        get.header("etag"),
        Some(format!("\"{}\"", blob.digest).as_str())
    );
}

#[test]
fn head_answers_with_the_headers_of_a_get_and_no_body() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let head = r.head(&format!("/v2/{REPO}/blobs/{}", blob.digest));
    head.expect_status(StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("100"));
    assert_eq!(
        head.header("docker-content-digest"),
        Some(blob.digest.as_str())
    );
    assert_eq!(
        head.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
}

#[test]
fn a_zero_byte_blob_reads_as_an_empty_body() {
    let r = TestRegistry::new();
    let blob = r.push_blob(REPO, b"");
    let get = r.get(&format!("/v2/{REPO}/blobs/{}", blob.digest));
    get.expect_status(StatusCode::OK);
    assert!(get.body.is_empty());
    assert_eq!(get.header("content-length"), Some("0"));
}

#[test]
fn a_large_blob_round_trips_byte_for_byte() {
    let r = TestRegistry::new();
    let content = bytes_of(3 * 1024 * 1024 + 17, 4);
    let blob = r.push_blob(REPO, &content);
    assert_eq!(&r.blob_bytes(REPO, &blob.digest)[..], &content[..]);
}

#[test]
fn a_sha512_blob_is_read_by_its_sha512_digest() {
    let r = TestRegistry::new();
    let digest = sha512(b"long digest");
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        &[],
        b"long digest".to_vec(),
    )
    .expect_status(StatusCode::CREATED);
    let get = r.get(&format!("/v2/{REPO}/blobs/{digest}"));
    get.expect_status(StatusCode::OK);
    assert_eq!(get.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(&get.body[..], b"long digest");
}

// ---------------------------------------------------------------------------------------------
// Ranged reads

#[test]
fn a_range_of_the_first_ten_bytes_is_206_with_its_content_range() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let get = r.get_with(
        &format!("/v2/{REPO}/blobs/{}", blob.digest),
        &[("range", "bytes=0-9")],
    );
    get.expect_status(StatusCode::PARTIAL_CONTENT);
    assert_eq!(&get.body[..], &blob.bytes[0..10]);
    assert_eq!(get.header("content-range"), Some("bytes 0-9/100"));
    assert_eq!(get.header("content-length"), Some("10"));
    assert_eq!(
        get.header("docker-content-digest"),
        Some(blob.digest.as_str())
    );
}

#[test]
fn a_range_in_the_middle_returns_exactly_those_bytes() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let get = r.get_with(
        &format!("/v2/{REPO}/blobs/{}", blob.digest),
        &[("range", "bytes=40-49")],
    );
    get.expect_status(StatusCode::PARTIAL_CONTENT);
    assert_eq!(&get.body[..], &blob.bytes[40..50]);
    assert_eq!(get.header("content-range"), Some("bytes 40-49/100"));
}

#[test]
fn a_suffix_range_returns_the_last_bytes() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let get = r.get_with(
        &format!("/v2/{REPO}/blobs/{}", blob.digest),
        &[("range", "bytes=-10")],
    );
    get.expect_status(StatusCode::PARTIAL_CONTENT);
    assert_eq!(&get.body[..], &blob.bytes[90..]);
    assert_eq!(get.header("content-range"), Some("bytes 90-99/100"));
}

#[test]
fn a_suffix_longer_than_the_blob_returns_the_whole_blob_as_206() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let get = r.get_with(
        &format!("/v2/{REPO}/blobs/{}", blob.digest),
        &[("range", "bytes=-1000")],
    );
    get.expect_status(StatusCode::PARTIAL_CONTENT);
    assert_eq!(&get.body[..], &blob.bytes[..]);
    assert_eq!(get.header("content-range"), Some("bytes 0-99/100"));
}

#[test]
fn an_open_range_returns_the_rest_of_the_blob() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let get = r.get_with(
        &format!("/v2/{REPO}/blobs/{}", blob.digest),
        &[("range", "bytes=95-")],
    );
    get.expect_status(StatusCode::PARTIAL_CONTENT);
    assert_eq!(&get.body[..], &blob.bytes[95..]);
    assert_eq!(get.header("content-range"), Some("bytes 95-99/100"));
    assert_eq!(get.header("content-length"), Some("5"));
}

#[test]
fn a_range_ending_past_the_blob_is_clamped_to_its_end() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let get = r.get_with(
        &format!("/v2/{REPO}/blobs/{}", blob.digest),
        &[("range", "bytes=90-5000")],
    );
    get.expect_status(StatusCode::PARTIAL_CONTENT);
    assert_eq!(&get.body[..], &blob.bytes[90..]);
    assert_eq!(get.header("content-range"), Some("bytes 90-99/100"));
}

#[test]
fn a_range_whose_end_precedes_its_start_is_416_range_invalid() {
    let r = TestRegistry::new();
    let blob = r.push_blob(REPO, &bytes_of(1000, 3));
    let get = r.get_with(
        &format!("/v2/{REPO}/blobs/{}", blob.digest),
        &[("range", "bytes=500-0")],
    );
    get.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID");
    assert_eq!(get.header("content-range"), Some("bytes */1000"));
}

#[test]
fn a_range_starting_past_the_end_is_416_with_the_blob_size() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let get = r.get_with(
        &format!("/v2/{REPO}/blobs/{}", blob.digest),
        &[("range", "bytes=100-200")],
    );
    get.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID");
    assert_eq!(get.header("content-range"), Some("bytes */100"));
    assert_eq!(get.error_detail()["size"], 100);
}

#[test]
fn an_unintelligible_range_serves_the_whole_blob() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    for range in ["items=0-9", "bytes=a-b", "bytes=0-1,5-6"] {
        let get = r.get_with(
            &format!("/v2/{REPO}/blobs/{}", blob.digest),
            &[("range", range)],
        );
        get.expect_status(StatusCode::OK);
        assert_eq!(get.body.len(), 100, "{range}");
    }
}

#[test]
fn head_with_a_range_answers_the_partial_headers_without_a_body() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let head = r.send(
        http::Method::HEAD,
        &format!("/v2/{REPO}/blobs/{}", blob.digest),
        &[("range", "bytes=0-9")],
        openregistry::Body::Empty,
    );
    head.expect_status(StatusCode::PARTIAL_CONTENT);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-range"), Some("bytes 0-9/100"));
}

// ---------------------------------------------------------------------------------------------
// Unknown and unreadable blobs

#[test]
fn a_malformed_digest_is_digest_invalid() {
    let r = TestRegistry::new();
    for digest in [
        "sha256:abc",
        "sha256",
        "sha256:",
        "SHA256:abc",
        "md5:5d41402abc4b2a76b9719d911017c592",
    ] {
        r.get(&format!("/v2/{REPO}/blobs/{digest}"))
            .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    }
}

#[test]
fn head_of_a_malformed_digest_is_400_without_a_body() {
    let r = TestRegistry::new();
    let head = r.head(&format!("/v2/{REPO}/blobs/sha256:abc"));
    head.expect_status(StatusCode::BAD_REQUEST);
    assert!(head.body.is_empty());
}

#[test]
fn an_unknown_blob_is_blob_unknown() {
    let r = TestRegistry::new();
    r.get(&format!("/v2/{REPO}/blobs/{}", unknown_digest()))
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

#[test]
fn head_of_an_unknown_blob_is_404_without_a_body() {
    let r = TestRegistry::new();
    let head = r.head(&format!("/v2/{REPO}/blobs/{}", unknown_digest()));
    head.expect_status(StatusCode::NOT_FOUND);
    assert!(head.body.is_empty());
}

#[test]
fn a_blob_of_another_repository_is_blob_unknown_until_linked() {
    let r = TestRegistry::new();
    let blob = r.push_blob("somebody/else", b"private layer");
    r.get(&format!("/v2/{REPO}/blobs/{}", blob.digest))
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    r.head(&format!("/v2/{REPO}/blobs/{}", blob.digest))
        .expect_status(StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Deletes

#[test]
fn deleting_a_blob_is_202_and_it_is_gone() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    let delete = r.delete(&format!("/v2/{REPO}/blobs/{}", blob.digest));
    delete.expect_status(StatusCode::ACCEPTED);
    r.get(&format!("/v2/{REPO}/blobs/{}", blob.digest))
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    r.head(&format!("/v2/{REPO}/blobs/{}", blob.digest))
        .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn deleting_an_unknown_blob_is_blob_unknown() {
    let r = TestRegistry::new();
    r.delete(&format!("/v2/{REPO}/blobs/{}", unknown_digest()))
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

#[test]
fn deleting_a_blob_twice_is_blob_unknown_the_second_time() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    r.delete(&format!("/v2/{REPO}/blobs/{}", blob.digest))
        .expect_status(StatusCode::ACCEPTED);
    r.delete(&format!("/v2/{REPO}/blobs/{}", blob.digest))
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

#[test]
fn deleting_a_blob_with_a_malformed_digest_is_digest_invalid() {
    let r = TestRegistry::new();
    r.delete(&format!("/v2/{REPO}/blobs/sha256:abc"))
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[test]
fn deleting_a_blob_in_one_repository_leaves_it_readable_in_another() {
    let r = TestRegistry::new();
    let blob = r.push_blob("one", b"shared");
    r.push_blob("two", b"shared");
    r.delete(&format!("/v2/one/blobs/{}", blob.digest))
        .expect_status(StatusCode::ACCEPTED);
    assert_eq!(&r.blob_bytes("two", &blob.digest)[..], b"shared");
}

#[test]
fn a_blob_of_another_repository_cannot_be_deleted_from_here() {
    let r = TestRegistry::new();
    let blob = r.push_blob("owner", b"not yours");
    r.delete(&format!("/v2/{REPO}/blobs/{}", blob.digest))
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    assert_eq!(&r.blob_bytes("owner", &blob.digest)[..], b"not yours");
}

#[test]
fn a_deleted_blob_can_be_pushed_again() {
    let r = TestRegistry::new();
    let blob = hundred_bytes(&r);
    r.delete(&format!("/v2/{REPO}/blobs/{}", blob.digest));
    r.push_blob(REPO, &blob.bytes);
    assert_eq!(&r.blob_bytes(REPO, &blob.digest)[..], &blob.bytes[..]);
}

#[test]
fn blobs_are_read_under_deeply_nested_repository_names() {
    let r = TestRegistry::new();
    let blob = r.push_blob("a/b/c/d/e/f/g/h", b"deep");
    assert_eq!(&r.blob_bytes("a/b/c/d/e/f/g/h", &blob.digest)[..], b"deep");
    r.head(&format!("/v2/a/b/c/d/e/f/g/blobs/{}", blob.digest))
        .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn with_redirects_enabled_a_store_without_download_urls_serves_the_bytes() {
    let config = openregistry::Config {
        redirect_blob_downloads: true,
        ..openregistry::Config::default()
    };
    let r = TestRegistry::with(
        config,
        std::sync::Arc::new(openregistry::memory::MemoryKv::default()),
    );
    let blob = r.push_blob(REPO, b"served directly");
    assert_eq!(&r.blob_bytes(REPO, &blob.digest)[..], b"served directly");
}
