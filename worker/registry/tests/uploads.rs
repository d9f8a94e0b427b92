//! Blob uploads: sessions, single-request (monolithic) uploads, chunked and streamed PATCHes, the
//! closing PUT, status, cancel, digest algorithms, re-pushes and cross-repository mounts.

mod common;

use common::*;
use http::StatusCode;
use openregistry::Body;

const REPO: &str = "team/app";

// ---------------------------------------------------------------------------------------------
// Opening a session

#[test]
fn opening_an_upload_is_202_with_a_location_an_empty_range_and_an_upload_uuid() {
    let r = TestRegistry::new();
    let reply = r.post("/v2/team/app/blobs/uploads/", &[], Body::Empty);
    reply.expect_status(StatusCode::ACCEPTED);
    assert!(reply.location().starts_with("/v2/team/app/blobs/uploads/"));
    assert_eq!(reply.header("range"), Some("0-0"));
    assert!(!reply.must_header("docker-upload-uuid").is_empty());
}

#[test]
fn the_upload_uuid_is_the_id_in_the_location() {
    let r = TestRegistry::new();
    let reply = r.post("/v2/team/app/blobs/uploads/", &[], Body::Empty);
    assert_eq!(
        reply.must_header("docker-upload-uuid"),
        upload_id(&reply.location())
    );
}

#[test]
fn the_upload_endpoint_also_answers_without_a_trailing_slash() {
    let r = TestRegistry::new();
    r.post("/v2/team/app/blobs/uploads", &[], Body::Empty)
        .expect_status(StatusCode::ACCEPTED);
}

#[test]
fn every_upload_gets_its_own_id() {
    let r = TestRegistry::new();
    let first = r.start_upload(REPO);
    let second = r.start_upload(REPO);
    assert_ne!(upload_id(&first), upload_id(&second));
}

#[test]
fn bytes_of_an_unfinished_upload_are_not_visible_as_a_blob() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.patch_chunk(&location, 0, b"pending")
        .expect_status(StatusCode::ACCEPTED);
    r.head(&format!("/v2/{REPO}/blobs/{}", sha256(b"pending")))
        .expect_status(StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Monolithic uploads (POST ?digest=)

#[test]
fn a_monolithic_post_with_the_digest_creates_the_blob() {
    let r = TestRegistry::new();
    let digest = sha256(b"hello");
    let reply = r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        &[
            ("content-length", "5"),
            ("content-type", "application/octet-stream"),
        ],
        b"hello".to_vec(),
    );
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(reply.location(), format!("/v2/{REPO}/blobs/{digest}"));
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], b"hello");
}

#[test]
fn a_monolithic_post_with_a_wrong_digest_is_digest_invalid_and_keeps_nothing() {
    let r = TestRegistry::new();
    let claimed = sha256(b"something else");
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest={claimed}"),
        &[("content-length", "5")],
        b"hello".to_vec(),
    )
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.head(&format!("/v2/{REPO}/blobs/{claimed}"))
        .expect_status(StatusCode::NOT_FOUND);
    r.head(&format!("/v2/{REPO}/blobs/{}", sha256(b"hello")))
        .expect_status(StatusCode::NOT_FOUND);
    assert_eq!(r.blobs.open_uploads(), 0);
    assert_eq!(r.blobs.blob_count(), 0);
}

#[test]
fn a_monolithic_post_with_a_malformed_digest_is_digest_invalid() {
    let r = TestRegistry::new();
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest=sha256:nothex"),
        &[],
        b"hello".to_vec(),
    )
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert_eq!(r.blobs.open_uploads(), 0);
}

#[test]
fn a_monolithic_post_whose_content_length_disagrees_with_the_body_is_size_invalid() {
    let r = TestRegistry::new();
    let digest = sha256(b"hello");
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        &[("content-length", "9")],
        b"hello".to_vec(),
    )
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    r.head(&format!("/v2/{REPO}/blobs/{digest}"))
        .expect_status(StatusCode::NOT_FOUND);
    assert_eq!(r.blobs.open_uploads(), 0);
}

#[test]
fn a_malformed_content_length_is_size_invalid() {
    let r = TestRegistry::new();
    let digest = sha256(b"hello");
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        &[("content-length", "five")],
        b"hello".to_vec(),
    )
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
}

#[test]
fn a_monolithic_post_may_stream_its_body_without_a_length() {
    let r = TestRegistry::new();
    let digest = sha256(b"streamed blob");
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        &[],
        stream_body(&[b"stream", b"ed ", b"blob"]),
    )
    .expect_status(StatusCode::CREATED);
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], b"streamed blob");
}

#[test]
fn a_sha512_monolithic_upload_is_stored_under_its_sha512_digest() {
    let r = TestRegistry::new();
    let digest = sha512(b"sha512 content");
    let reply = r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        &[("content-length", "14")],
        b"sha512 content".to_vec(),
    );
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], b"sha512 content");
}

#[test]
fn a_zero_byte_blob_can_be_uploaded_monolithically() {
    let r = TestRegistry::new();
    let digest = sha256(b"");
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        &[("content-length", "0")],
        Body::Empty,
    )
    .expect_status(StatusCode::CREATED);
    let head = r.head(&format!("/v2/{REPO}/blobs/{digest}"));
    head.expect_status(StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("0"));
}

// ---------------------------------------------------------------------------------------------
// POST then PUT, chunked and streamed PATCHes

#[test]
fn a_post_then_a_put_with_the_whole_body_creates_the_blob() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let digest = sha256(b"whole body");
    let reply = r.finish_upload(&location, &digest, b"whole body");
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(reply.location(), format!("/v2/{REPO}/blobs/{digest}"));
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], b"whole body");
}

#[test]
fn a_zero_byte_blob_can_be_uploaded_with_a_post_then_an_empty_put() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let digest = sha256(b"");
    r.finish_upload(&location, &digest, b"")
        .expect_status(StatusCode::CREATED);
    let get = r.get(&format!("/v2/{REPO}/blobs/{digest}"));
    get.expect_status(StatusCode::OK);
    assert!(get.body.is_empty());
    assert_eq!(get.header("content-length"), Some("0"));
}

#[test]
fn a_blob_uploaded_in_one_byte_chunks_is_assembled_in_order() {
    let r = TestRegistry::new();
    let content = b"one byte at a time";
    let mut location = r.start_upload(REPO);
    for (offset, byte) in content.iter().enumerate() {
        let reply = r.patch_chunk(&location, offset as u64, &[*byte]);
        reply.expect_status(StatusCode::ACCEPTED);
        location = reply.location();
    }
    let digest = sha256(content);
    r.finish_upload(&location, &digest, b"")
        .expect_status(StatusCode::CREATED);
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], content);
}

#[test]
fn chunks_of_uneven_sizes_are_assembled_in_order() {
    let r = TestRegistry::new();
    let content = bytes_of(10_000, 1);
    let mut location = r.start_upload(REPO);
    let mut offset = 0usize;
    for size in [1usize, 4096, 7, 333, 5000] {
        let reply = r.patch_chunk(&location, offset as u64, &content[offset..offset + size]);
        reply.expect_status(StatusCode::ACCEPTED);
        location = reply.location();
        offset += size;
    }
    let digest = sha256(&content);
    r.finish_upload(&location, &digest, &content[offset..])
        .expect_status(StatusCode::CREATED);
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], &content[..]);
}

#[test]
fn each_chunk_answers_202_with_the_range_received_so_far_and_a_location() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let first = r.patch_chunk(&location, 0, b"abcd");
    first.expect_status(StatusCode::ACCEPTED);
    assert_eq!(first.header("range"), Some("0-3"));
    assert_eq!(
        upload_id(&first.location()),
        upload_id(&location),
        "the session continues at the same id"
    );
    let second = r.patch_chunk(&first.location(), 4, b"efg");
    assert_eq!(second.header("range"), Some("0-6"));
    assert_eq!(
        second.must_header("docker-upload-uuid"),
        upload_id(&location)
    );
}

#[test]
fn a_chunk_may_name_its_range_in_the_rfc_form() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.patch(
        &location,
        &[("content-range", "bytes 0-2/*"), ("content-length", "3")],
        b"abc".to_vec(),
    )
    .expect_status(StatusCode::ACCEPTED);
    let digest = sha256(b"abcdef");
    r.finish_upload(&location, &digest, b"def")
        .expect_status(StatusCode::CREATED);
}

#[test]
fn a_patch_streamed_without_a_length_is_accepted() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let reply = r.patch(
        &location,
        &[],
        stream_body(&[b"streamed ", b"without ", b"length"]),
    );
    reply.expect_status(StatusCode::ACCEPTED);
    assert_eq!(reply.header("range"), Some("0-22"));
    let digest = sha256(b"streamed without length");
    r.finish_upload(&reply.location(), &digest, b"")
        .expect_status(StatusCode::CREATED);
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], b"streamed without length");
}

#[test]
fn streamed_patches_append_to_each_other() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let first = r.patch(&location, &[], stream_body(&[b"first,"]));
    let second = r.patch(&first.location(), &[], stream_body(&[b"second"]));
    assert_eq!(second.header("range"), Some("0-11"));
    let digest = sha256(b"first,second");
    r.finish_upload(&second.location(), &digest, b"")
        .expect_status(StatusCode::CREATED);
}

#[test]
fn the_closing_put_may_carry_the_final_bytes() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"most of it, ");
    let digest = sha256(b"most of it, and the rest");
    r.finish_upload(&patched.location(), &digest, b"and the rest")
        .expect_status(StatusCode::CREATED);
    assert_eq!(
        &r.blob_bytes(REPO, &digest)[..],
        b"most of it, and the rest"
    );
}

#[test]
fn the_closing_put_may_carry_a_final_chunk_with_its_content_range() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"12345");
    let digest = sha256(b"1234567");
    r.put(
        &with_query(&patched.location(), &format!("digest={digest}")),
        &[("content-range", "5-6"), ("content-length", "2")],
        b"67".to_vec(),
    )
    .expect_status(StatusCode::CREATED);
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], b"1234567");
}

#[test]
fn a_closing_put_whose_chunk_does_not_start_at_the_offset_is_416() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.patch_chunk(&location, 0, b"12345");
    let digest = sha256(b"1234567");
    let reply = r.put(
        &with_query(&location, &format!("digest={digest}")),
        &[("content-range", "9-10"), ("content-length", "2")],
        b"67".to_vec(),
    );
    reply.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(reply.header("range"), Some("0-4"));
}

// ---------------------------------------------------------------------------------------------
// Refused chunks

#[test]
fn a_chunk_that_does_not_start_at_the_offset_is_416_with_the_current_range() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    let reply = r.patch_chunk(&patched.location(), 5, b"fgh");
    reply.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(reply.header("range"), Some("0-2"));
    assert_eq!(reply.error_detail()["offset"], 3);
}

#[test]
fn a_chunk_that_resends_accepted_bytes_is_416_with_the_current_range() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    let reply = r.patch_chunk(&patched.location(), 0, b"abcdef");
    reply.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(reply.header("range"), Some("0-2"));
}

#[test]
fn a_malformed_content_range_is_416() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.patch(
        &location,
        &[("content-range", "three-to-five"), ("content-length", "3")],
        b"abc".to_vec(),
    )
    .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
}

#[test]
fn a_refused_chunk_leaves_the_upload_where_it_was() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    r.patch_chunk(&patched.location(), 7, b"zzz")
        .expect_status(StatusCode::RANGE_NOT_SATISFIABLE);
    let status = r.get(&patched.location());
    status.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-2"));
    let next = r.patch_chunk(&patched.location(), 3, b"def");
    next.expect_status(StatusCode::ACCEPTED);
    r.finish_upload(&next.location(), &sha256(b"abcdef"), b"")
        .expect_status(StatusCode::CREATED);
}

#[test]
fn a_content_range_that_disagrees_with_content_length_is_size_invalid() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.patch(
        &location,
        &[("content-range", "0-9"), ("content-length", "3")],
        b"abc".to_vec(),
    )
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
}

#[test]
fn a_patch_whose_content_length_disagrees_with_the_bytes_is_size_invalid() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.patch(&location, &[("content-length", "10")], b"abc".to_vec())
        .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
}

#[test]
fn a_chunk_whose_bytes_fall_short_of_its_content_range_is_size_invalid_and_not_counted() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.patch(
        &location,
        &[("content-range", "0-9")],
        stream_body(&[b"abc"]),
    )
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    let status = r.get(&location);
    assert_eq!(status.header("range"), Some("0-0"));
    let resumed = r.patch_chunk(&location, 0, b"xyz");
    resumed.expect_status(StatusCode::ACCEPTED);
    assert_eq!(resumed.header("range"), Some("0-2"));
}

#[test]
fn a_size_invalid_patch_followed_by_an_empty_put_commits_only_the_accepted_bytes() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    r.patch(
        &patched.location(),
        &[("content-length", "10")],
        b"defgh".to_vec(),
    )
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    let digest = sha256(b"abc");
    r.finish_upload(&patched.location(), &digest, b"")
        .expect_status(StatusCode::CREATED);
    let get = r.get(&format!("/v2/{REPO}/blobs/{digest}"));
    assert_eq!(get.header("content-length"), Some("3"));
    assert_eq!(
        &get.body[..],
        b"abc",
        "the blob holds exactly its digest's bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// A body that breaks off

#[test]
fn a_body_that_breaks_off_mid_patch_is_refused_and_leaves_the_previous_offset() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    r.patch(&patched.location(), &[], broken_body(b"def"))
        .expect_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");
    let status = r.get(&patched.location());
    status.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-2"));
}

#[test]
fn an_upload_interrupted_by_a_broken_body_can_resume_and_finish() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    r.patch(&patched.location(), &[], broken_body(b"dXX"));
    let resumed = r.patch_chunk(&patched.location(), 3, b"def");
    resumed.expect_status(StatusCode::ACCEPTED);
    assert_eq!(resumed.header("range"), Some("0-5"));
    let digest = sha256(b"abcdef");
    r.finish_upload(&resumed.location(), &digest, b"")
        .expect_status(StatusCode::CREATED);
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], b"abcdef");
}

#[test]
fn a_monolithic_post_whose_body_breaks_off_keeps_nothing() {
    let r = TestRegistry::new();
    let digest = sha256(b"abcdef");
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        &[],
        broken_body(b"abc"),
    )
    .expect_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");
    r.head(&format!("/v2/{REPO}/blobs/{digest}"))
        .expect_status(StatusCode::NOT_FOUND);
    assert_eq!(r.blobs.open_uploads(), 0);
}

// ---------------------------------------------------------------------------------------------
// Closing the upload

#[test]
fn a_closing_put_without_a_digest_is_digest_invalid_and_the_upload_stays_open() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    r.put(&patched.location(), &[("content-length", "0")], Body::Empty)
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get(&patched.location())
        .expect_status(StatusCode::NO_CONTENT);
}

#[test]
fn a_closing_put_with_a_malformed_digest_is_digest_invalid() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.finish_upload(&location, "sha256:xyz", b"abc")
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[test]
fn a_closing_put_with_the_wrong_digest_is_digest_invalid_and_keeps_nothing() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    let wrong = sha256(b"not abc");
    r.finish_upload(&patched.location(), &wrong, b"")
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.head(&format!("/v2/{REPO}/blobs/{wrong}"))
        .expect_status(StatusCode::NOT_FOUND);
    r.head(&format!("/v2/{REPO}/blobs/{}", sha256(b"abc")))
        .expect_status(StatusCode::NOT_FOUND);
    r.get(&patched.location())
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(r.blobs.open_uploads(), 0);
    assert_eq!(r.blobs.blob_count(), 0);
}

#[test]
fn a_finished_upload_can_no_longer_be_used() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.finish_upload(&location, &sha256(b"done"), b"done")
        .expect_status(StatusCode::CREATED);
    r.get(&location)
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.patch_chunk(&location, 4, b"more")
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(r.blobs.open_uploads(), 0);
}

// ---------------------------------------------------------------------------------------------
// Status and cancel

#[test]
fn upload_status_is_204_with_the_range_and_the_location() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"0123456789");
    let status = r.get(&patched.location());
    status.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-9"));
    assert_eq!(status.location(), patched.location());
    assert_eq!(
        status.must_header("docker-upload-uuid"),
        upload_id(&location)
    );
    assert!(status.body.is_empty());
}

#[test]
fn the_status_of_a_fresh_upload_reports_range_0_0() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let status = r.get(&location);
    status.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-0"));
}

#[test]
fn an_earlier_location_of_the_same_upload_still_works() {
    let r = TestRegistry::new();
    let first = r.start_upload(REPO);
    r.patch_chunk(&first, 0, b"abc")
        .expect_status(StatusCode::ACCEPTED);
    let status = r.get(&first);
    status.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-2"));
    r.patch_chunk(&first, 3, b"def")
        .expect_status(StatusCode::ACCEPTED);
}

#[test]
fn a_location_ahead_of_the_stored_session_is_503_to_be_retried() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let future = format!("/v2/{REPO}/blobs/uploads/{}.99", upload_id(&location));
    let reply = r.get(&future);
    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[test]
fn cancelling_an_upload_is_204_and_the_upload_is_gone() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    r.delete(&patched.location())
        .expect_status(StatusCode::NO_CONTENT);
    r.get(&patched.location())
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(r.blobs.open_uploads(), 0);
}

#[test]
fn a_cancelled_upload_cannot_be_finished() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    r.delete(&location).expect_status(StatusCode::NO_CONTENT);
    r.finish_upload(&location, &sha256(b"abc"), b"abc")
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.head(&format!("/v2/{REPO}/blobs/{}", sha256(b"abc")))
        .expect_status(StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Unknown uploads

#[test]
fn an_unknown_upload_id_is_blob_upload_unknown_for_every_method() {
    let r = TestRegistry::new();
    let location = format!("/v2/{REPO}/blobs/uploads/0123456789abcdef0123456789abcdef");
    r.expect_unknown_upload(&location, 0);
}

#[test]
fn garbage_upload_ids_are_blob_upload_unknown() {
    let r = TestRegistry::new();
    for id in [
        "not-an-id",
        "xyz",
        "0123456789ABCDEF0123",
        "0123456789abcdef.x",
        "..",
        "%2e%2e",
    ] {
        r.get(&format!("/v2/{REPO}/blobs/uploads/{id}"))
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    }
}

#[test]
fn an_upload_id_used_under_another_repository_is_blob_upload_unknown() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let elsewhere = format!("/v2/other/repo/blobs/uploads/{}", upload_id(&location));
    r.get(&elsewhere)
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.patch_chunk(&elsewhere, 0, b"abc")
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.finish_upload(&elsewhere, &sha256(b"abc"), b"abc")
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.delete(&elsewhere)
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.get(&location).expect_status(StatusCode::NO_CONTENT);
}

// ---------------------------------------------------------------------------------------------
// Digest algorithms

#[test]
fn a_chunked_upload_opened_without_an_algorithm_can_finish_with_a_sha512_digest() {
    let r = TestRegistry::new();
    let content = bytes_of(3000, 2);
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, &content[..1000]);
    let digest = sha512(&content);
    let reply = r.finish_upload(&patched.location(), &digest, &content[1000..]);
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], &content[..]);
}

#[test]
fn a_sha512_digest_that_does_not_match_a_sha256_hashed_upload_is_digest_invalid() {
    let r = TestRegistry::new();
    let location = r.start_upload(REPO);
    let patched = r.patch_chunk(&location, 0, b"abc");
    r.finish_upload(&patched.location(), &sha512(b"abd"), b"")
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert_eq!(r.blobs.open_uploads(), 0);
}

#[test]
fn an_upload_opened_with_digest_algorithm_sha512_finishes_with_a_sha512_digest() {
    let r = TestRegistry::new();
    let location = r
        .post(
            &format!("/v2/{REPO}/blobs/uploads/?digest-algorithm=sha512"),
            &[],
            Body::Empty,
        )
        .expect_status(StatusCode::ACCEPTED)
        .location();
    let patched = r.patch_chunk(&location, 0, b"hashed as sha512 ");
    let digest = sha512(b"hashed as sha512 all along");
    r.finish_upload(&patched.location(), &digest, b"all along")
        .expect_status(StatusCode::CREATED);
    assert_eq!(
        &r.blob_bytes(REPO, &digest)[..],
        b"hashed as sha512 all along"
    );
}

#[test]
fn an_upload_opened_with_sha512_can_still_finish_with_a_sha256_digest() {
    let r = TestRegistry::new();
    let location = r
        .post(
            &format!("/v2/{REPO}/blobs/uploads/?digest-algorithm=sha512"),
            &[],
            Body::Empty,
        )
        .location();
    let patched = r.patch_chunk(&location, 0, b"abc");
    r.finish_upload(&patched.location(), &sha256(b"abc"), b"")
        .expect_status(StatusCode::CREATED);
}

#[test]
fn an_unsupported_digest_algorithm_is_digest_invalid() {
    let r = TestRegistry::new();
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest-algorithm=md5"),
        &[],
        Body::Empty,
    )
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert_eq!(r.blobs.open_uploads(), 0);
}

#[test]
fn a_digest_with_an_unsupported_algorithm_is_digest_invalid() {
    let r = TestRegistry::new();
    r.post(
        &format!("/v2/{REPO}/blobs/uploads/?digest=md5:5d41402abc4b2a76b9719d911017c592"),
        &[],
        b"hello".to_vec(),
    )
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

// ---------------------------------------------------------------------------------------------
// Content that is stored already

#[test]
fn pushing_a_known_blob_to_another_repository_links_it_without_storing_it_again() {
    let r = TestRegistry::new();
    let blob = r.push_blob("first", b"shared layer");
    r.push_blob("second", b"shared layer");
    assert_eq!(r.blobs.blob_count(), 1);
    assert_eq!(r.blobs.open_uploads(), 0);
    assert_eq!(&r.blob_bytes("second", &blob.digest)[..], b"shared layer");
    assert_eq!(&r.blob_bytes("first", &blob.digest)[..], b"shared layer");
}

#[test]
fn pushing_a_known_digest_with_other_bytes_is_digest_invalid_and_not_linked() {
    let r = TestRegistry::new();
    let blob = r.push_blob("first", b"shared layer");
    r.post(
        &format!("/v2/second/blobs/uploads/?digest={}", blob.digest),
        &[],
        b"forged layer".to_vec(),
    )
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.head(&format!("/v2/second/blobs/{}", blob.digest))
        .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn a_chunked_upload_of_a_known_blob_links_it_and_discards_the_copy() {
    let r = TestRegistry::new();
    let blob = r.push_blob("first", b"shared layer");
    let location = r.start_upload("second");
    let patched = r.patch_chunk(&location, 0, b"shared layer");
    r.finish_upload(&patched.location(), &blob.digest, b"")
        .expect_status(StatusCode::CREATED);
    assert_eq!(r.blobs.blob_count(), 1);
    assert_eq!(r.blobs.open_uploads(), 0);
    assert_eq!(&r.blob_bytes("second", &blob.digest)[..], b"shared layer");
}

#[test]
fn two_interleaved_uploads_of_the_same_content_both_succeed_with_one_copy_kept() {
    let r = TestRegistry::new();
    let first = r.start_upload(REPO);
    let second = r.start_upload(REPO);
    let first = r.patch_chunk(&first, 0, b"same bytes").location();
    let second = r.patch_chunk(&second, 0, b"same bytes").location();
    let digest = sha256(b"same bytes");
    r.finish_upload(&first, &digest, b"")
        .expect_status(StatusCode::CREATED);
    r.finish_upload(&second, &digest, b"")
        .expect_status(StatusCode::CREATED);
    assert_eq!(r.blobs.blob_count(), 1);
    assert_eq!(r.blobs.open_uploads(), 0);
    assert_eq!(&r.blob_bytes(REPO, &digest)[..], b"same bytes");
}

#[test]
fn pushing_the_same_blob_twice_to_one_repository_is_harmless() {
    let r = TestRegistry::new();
    let blob = r.push_blob(REPO, b"twice");
    r.push_blob(REPO, b"twice");
    assert_eq!(r.blobs.blob_count(), 1);
    assert_eq!(&r.blob_bytes(REPO, &blob.digest)[..], b"twice");
}

// ---------------------------------------------------------------------------------------------
// Cross-repository mounts

#[test]
fn mounting_from_a_repository_that_has_the_blob_is_201() {
    let r = TestRegistry::new();
    let blob = r.push_blob("source", b"mountable");
    let reply = r.post(
        &format!(
            "/v2/target/blobs/uploads/?mount={}&from=source",
            blob.digest
        ),
        &[],
        Body::Empty,
    );
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(
        reply.location(),
        format!("/v2/target/blobs/{}", blob.digest)
    );
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(blob.digest.as_str())
    );
}

#[test]
fn a_mounted_blob_is_readable_in_the_target_without_a_second_copy() {
    let r = TestRegistry::new();
    let blob = r.push_blob("source", b"mountable");
    r.post(
        &format!(
            "/v2/target/blobs/uploads/?mount={}&from=source",
            blob.digest
        ),
        &[],
        Body::Empty,
    );
    assert_eq!(&r.blob_bytes("target", &blob.digest)[..], b"mountable");
    assert_eq!(r.blobs.blob_count(), 1);
}

#[test]
fn mounting_a_blob_the_target_already_has_is_201() {
    let r = TestRegistry::new();
    let blob = r.push_blob("source", b"mountable");
    r.push_blob("target", b"mountable");
    r.post(
        &format!(
            "/v2/target/blobs/uploads/?mount={}&from=source",
            blob.digest
        ),
        &[],
        Body::Empty,
    )
    .expect_status(StatusCode::CREATED);
}

#[test]
fn mounting_from_a_nested_repository_name_works() {
    let r = TestRegistry::new();
    let blob = r.push_blob("org/team/source", b"mountable");
    r.post(
        &format!(
            "/v2/org/other/target/blobs/uploads/?mount={}&from=org/team/source",
            blob.digest
        ),
        &[],
        Body::Empty,
    )
    .expect_status(StatusCode::CREATED);
    assert_eq!(
        &r.blob_bytes("org/other/target", &blob.digest)[..],
        b"mountable"
    );
}

#[test]
fn mounting_from_a_repository_that_lacks_the_blob_opens_an_upload_session() {
    let r = TestRegistry::new();
    let blob = r.push_blob("holder", b"mountable");
    r.push_blob("source", b"something else");
    let reply = r.post(
        &format!(
            "/v2/target/blobs/uploads/?mount={}&from=source",
            blob.digest
        ),
        &[],
        Body::Empty,
    );
    reply.expect_status(StatusCode::ACCEPTED);
    assert!(reply.location().starts_with("/v2/target/blobs/uploads/"));
    r.head(&format!("/v2/target/blobs/{}", blob.digest))
        .expect_status(StatusCode::NOT_FOUND);
    r.finish_upload(&reply.location(), &blob.digest, b"mountable")
        .expect_status(StatusCode::CREATED);
}

#[test]
fn mounting_from_an_unknown_repository_opens_an_upload_session() {
    let r = TestRegistry::new();
    r.post(
        &format!(
            "/v2/target/blobs/uploads/?mount={}&from=nowhere",
            unknown_digest()
        ),
        &[],
        Body::Empty,
    )
    .expect_status(StatusCode::ACCEPTED);
}

#[test]
fn mounting_without_from_opens_an_upload_session_even_when_the_blob_exists_elsewhere() {
    let r = TestRegistry::new();
    let blob = r.push_blob("source", b"mountable");
    let reply = r.post(
        &format!("/v2/target/blobs/uploads/?mount={}", blob.digest),
        &[],
        Body::Empty,
    );
    reply.expect_status(StatusCode::ACCEPTED);
    assert!(reply.header("docker-upload-uuid").is_some());
    r.head(&format!("/v2/target/blobs/{}", blob.digest))
        .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn a_mount_with_a_malformed_digest_is_digest_invalid() {
    let r = TestRegistry::new();
    r.post(
        "/v2/target/blobs/uploads/?mount=sha256:zzz&from=source",
        &[],
        Body::Empty,
    )
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[test]
fn a_mount_from_an_invalid_repository_name_is_name_invalid() {
    let r = TestRegistry::new();
    r.post(
        &format!(
            "/v2/target/blobs/uploads/?mount={}&from=Not..Valid",
            unknown_digest()
        ),
        &[],
        Body::Empty,
    )
    .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn uploads_work_under_deeply_nested_repository_names() {
    let r = TestRegistry::new();
    let repo = "a/b/c/d/e/f/g/h";
    let location = r.start_upload(repo);
    assert!(location.starts_with("/v2/a/b/c/d/e/f/g/h/blobs/uploads/"));
    let patched = r.patch_chunk(&location, 0, b"deep");
    let digest = sha256(b"deep");
    r.finish_upload(&patched.location(), &digest, b"")
        .expect_status(StatusCode::CREATED)
        .location();
    assert_eq!(&r.blob_bytes(repo, &digest)[..], b"deep");
}

#[test]
fn a_repository_may_be_named_like_an_api_path_segment() {
    let r = TestRegistry::new();
    let repo = "x/blobs/uploads";
    let location = r.start_upload(repo);
    let digest = sha256(b"odd name");
    r.finish_upload(&location, &digest, b"odd name")
        .expect_status(StatusCode::CREATED);
    assert_eq!(&r.blob_bytes(repo, &digest)[..], b"odd name");
}
