//! Manifests: pushing (by tag, by digest, with `?tag=`), reading (GET and HEAD by tag and by
//! digest), validation of content and references, and deletes.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

const REPO: &str = "library/busybox";

// ---------------------------------------------------------------------------------------------
// Pushing and reading back

#[test]
fn putting_a_manifest_by_tag_is_201_with_its_location_and_digest() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    let reply = r.put_manifest(REPO, "latest", &manifest);
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(
        reply.location(),
        format!("/v2/{REPO}/manifests/{}", manifest.digest)
    );
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(manifest.digest.as_str())
    );
}

#[test]
fn a_manifest_reads_back_byte_for_byte_by_tag_and_by_digest() {
    let r = TestRegistry::new();
    let manifest = r.push_image(REPO, "latest", "one");
    let by_tag = r.get(&format!("/v2/{REPO}/manifests/latest"));
    let by_digest = r.get(&format!("/v2/{REPO}/manifests/{}", manifest.digest));
    by_tag.expect_status(StatusCode::OK);
    by_digest.expect_status(StatusCode::OK);
    assert_eq!(&by_tag.body[..], &manifest.bytes[..]);
    assert_eq!(&by_digest.body[..], &manifest.bytes[..]);
}

#[test]
fn a_manifest_is_served_with_its_media_type_digest_and_length() {
    let r = TestRegistry::new();
    let manifest = r.push_image(REPO, "latest", "one");
    for reference in ["latest", manifest.digest.as_str()] {
        let get = r.get(&format!("/v2/{REPO}/manifests/{reference}"));
        assert_eq!(
            get.header("content-type"),
            Some(OCI_MANIFEST),
            "{reference}"
        );
        assert_eq!(
            get.header("docker-content-digest"),
            Some(manifest.digest.as_str()),
            "{reference}"
        );
        assert_eq!(
            get.header("content-length"),
            Some(manifest.size.to_string().as_str()),
            "{reference}"
        );
    }
}

#[test]
fn head_answers_with_the_headers_of_a_get_and_no_body() {
    let r = TestRegistry::new();
    let manifest = r.push_image(REPO, "latest", "one");
    for reference in ["latest", manifest.digest.as_str()] {
        let head = r.head(&format!("/v2/{REPO}/manifests/{reference}"));
        head.expect_status(StatusCode::OK);
        assert!(head.body.is_empty(), "{reference}");
        assert_eq!(
            head.header("content-type"),
            Some(OCI_MANIFEST),
            "{reference}"
        );
        assert_eq!(
            head.header("docker-content-digest"),
            Some(manifest.digest.as_str()),
            "{reference}"
        );
        assert_eq!(
            head.header("content-length"),
            Some(manifest.size.to_string().as_str()),
            "{reference}"
        );
    }
}

#[test]
fn reads_by_digest_are_cacheable_forever_but_reads_by_tag_are_not() {
    let r = TestRegistry::new();
    let manifest = r.push_image(REPO, "latest", "one");
    let by_digest = r.get(&format!("/v2/{REPO}/manifests/{}", manifest.digest));
    assert_eq!(
        by_digest.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let by_tag = r.get(&format!("/v2/{REPO}/manifests/latest"));
    assert_eq!(by_tag.header("cache-control"), None);
}

#[test]
fn pushing_the_same_manifest_twice_is_idempotent() {
    let r = TestRegistry::new();
    let manifest = r.push_image(REPO, "latest", "one");
    r.push_manifest(REPO, "latest", &manifest);
    assert_eq!(r.tags(REPO), vec!["latest"]);
    assert_eq!(
        &r.get(&format!("/v2/{REPO}/manifests/latest")).body[..],
        &manifest.bytes[..]
    );
}

#[test]
fn pushing_a_tag_again_moves_it_to_the_new_manifest() {
    let r = TestRegistry::new();
    let old = r.push_image(REPO, "latest", "old");
    let new = r.push_image(REPO, "latest", "new");
    let get = r.get(&format!("/v2/{REPO}/manifests/latest"));
    assert_eq!(
        get.header("docker-content-digest"),
        Some(new.digest.as_str())
    );
    assert_eq!(&get.body[..], &new.bytes[..]);
    r.get(&format!("/v2/{REPO}/manifests/{}", old.digest))
        .expect_status(StatusCode::OK);
    assert_eq!(r.tags(REPO), vec!["latest"]);
}

#[test]
fn a_content_type_with_parameters_is_stored_as_its_media_type() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    r.put_manifest_bytes(
        REPO,
        "latest",
        "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
        &manifest.bytes,
    )
    .expect_status(StatusCode::CREATED);
    let get = r.get(&format!("/v2/{REPO}/manifests/latest"));
    assert_eq!(get.header("content-type"), Some(OCI_MANIFEST));
}

#[test]
fn a_manifest_pushed_as_generic_json_is_served_with_its_declared_media_type() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    r.put_manifest_bytes(REPO, "latest", "application/json", &manifest.bytes)
        .expect_status(StatusCode::CREATED);
    let get = r.get(&format!("/v2/{REPO}/manifests/latest"));
    assert_eq!(get.header("content-type"), Some(OCI_MANIFEST));
}

#[test]
fn manifests_are_scoped_to_their_repository() {
    let r = TestRegistry::new();
    let manifest = r.push_image(REPO, "latest", "one");
    r.get(&format!("/v2/other/manifests/{}", manifest.digest))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.get("/v2/other/manifests/latest")
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[test]
fn manifests_work_under_deeply_nested_repository_names() {
    let r = TestRegistry::new();
    let repo = "a/b/c/d/e/f/g/h";
    let manifest = r.push_image(repo, "v1", "deep");
    let get = r.get(&format!("/v2/{repo}/manifests/v1"));
    get.expect_status(StatusCode::OK);
    assert_eq!(&get.body[..], &manifest.bytes[..]);
    assert_eq!(r.tags(repo), vec!["v1"]);
}

// ---------------------------------------------------------------------------------------------
// Kinds of manifests

#[test]
fn an_oci_index_whose_children_exist_is_accepted() {
    let r = TestRegistry::new();
    let amd64 = r.push_image(REPO, "amd64", "amd64");
    let arm64 = r.push_image(REPO, "arm64", "arm64");
    let mut amd64_entry = amd64.descriptor();
    amd64_entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut arm64_entry = arm64.descriptor();
    arm64_entry["platform"] = json!({"architecture": "arm64", "os": "linux"});
    let index = Manifest::new(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd64_entry, arm64_entry]}),
    );
    r.push_manifest(REPO, "multi", &index);
    let get = r.get(&format!("/v2/{REPO}/manifests/multi"));
    assert_eq!(get.header("content-type"), Some(OCI_INDEX));
    assert_eq!(&get.body[..], &index.bytes[..]);
}

#[test]
fn an_oci_index_with_a_missing_child_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    let child = r.prepare_image(REPO, "never pushed");
    let index = Manifest::new(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child.descriptor()]}),
    );
    r.put_manifest(REPO, "multi", &index)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    r.get(&format!("/v2/{REPO}/manifests/multi"))
        .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn an_oci_index_whose_child_has_the_wrong_size_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    let child = r.push_image(REPO, "child", "child");
    let mut entry = child.descriptor();
    entry["size"] = json!(child.size + 1);
    let index = Manifest::new(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
    );
    r.put_manifest(REPO, "multi", &index)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn an_oci_index_whose_child_is_a_blob_rather_than_a_manifest_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    // A blob that happens to hold a manifest's bytes is not a manifest of the repository.
    let child = r.prepare_image(REPO, "uploaded as a blob");
    r.push_blob(REPO, &child.bytes);
    let index = Manifest::new(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child.descriptor()]}),
    );
    r.put_manifest(REPO, "multi", &index)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn an_oci_index_without_a_media_type_is_recognised_by_its_manifests() {
    let r = TestRegistry::new();
    let child = r.push_image(REPO, "child", "child");
    let index = Manifest::new(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "manifests": [child.descriptor()]}),
    );
    r.put_manifest_bytes(REPO, "multi", "application/json", &index.bytes)
        .expect_status(StatusCode::CREATED);
    let get = r.get(&format!("/v2/{REPO}/manifests/multi"));
    assert_eq!(get.header("content-type"), Some(OCI_INDEX));
}

#[test]
fn a_docker_schema2_manifest_is_accepted_and_served_with_its_media_type() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, br#"{"architecture":"amd64","os":"linux"}"#);
    let layer = r.push_blob(REPO, b"docker layer");
    let manifest = Manifest::new(
        DOCKER_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(DOCKER_CONFIG),
            "layers": [layer.descriptor(DOCKER_LAYER)],
        }),
    );
    r.push_manifest(REPO, "docker", &manifest);
    let get = r.get(&format!("/v2/{REPO}/manifests/docker"));
    assert_eq!(get.header("content-type"), Some(DOCKER_MANIFEST));
    assert_eq!(&get.body[..], &manifest.bytes[..]);
}

#[test]
fn a_docker_manifest_list_is_accepted_and_served_with_its_media_type() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, br#"{"architecture":"amd64","os":"linux"}"#);
    let layer = r.push_blob(REPO, b"docker layer");
    let child = Manifest::new(
        DOCKER_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(DOCKER_CONFIG),
            "layers": [layer.descriptor(DOCKER_LAYER)],
        }),
    );
    r.push_manifest(REPO, &child.digest, &child);
    let mut entry = child.descriptor();
    entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let list = Manifest::new(
        DOCKER_MANIFEST_LIST,
        &json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": [entry]}),
    );
    r.push_manifest(REPO, "list", &list);
    let get = r.get(&format!("/v2/{REPO}/manifests/list"));
    assert_eq!(get.header("content-type"), Some(DOCKER_MANIFEST_LIST));
    assert_eq!(&get.body[..], &list.bytes[..]);
}

#[test]
fn an_artifact_with_an_artifact_type_and_a_custom_config_is_accepted() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, br#"{"tool":"example"}"#);
    let layer = r.push_blob(REPO, b"an sbom");
    let artifact = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom.v1",
            "config": config.descriptor("application/vnd.example.config.v1+json"),
            "layers": [layer.descriptor("application/spdx+json")],
        }),
    );
    r.push_manifest(REPO, "sbom", &artifact);
    assert_eq!(
        &r.get(&format!("/v2/{REPO}/manifests/sbom")).body[..],
        &artifact.bytes[..]
    );
}

#[test]
fn an_artifact_with_the_empty_config_is_accepted() {
    let r = TestRegistry::new();
    let config = r.push_empty_config(REPO);
    let layer = r.push_blob(REPO, b"a signature");
    let artifact = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.signature.v1",
            "config": config.descriptor(OCI_EMPTY),
            "layers": [layer.descriptor("application/octet-stream")],
        }),
    );
    r.push_manifest(REPO, "sig", &artifact);
}

#[test]
fn an_artifact_of_an_unknown_media_type_is_accepted_and_served_with_it() {
    let r = TestRegistry::new();
    let blob = r.push_blob(REPO, b"thing");
    let media_type = "application/vnd.example.thing.v1+json";
    let artifact = Manifest::new(
        media_type,
        &json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "blobs": [blob.descriptor("text/plain")],
        }),
    );
    r.push_manifest(REPO, "thing", &artifact);
    let get = r.get(&format!("/v2/{REPO}/manifests/thing"));
    assert_eq!(get.header("content-type"), Some(media_type));
    assert_eq!(&get.body[..], &artifact.bytes[..]);
}

#[test]
fn an_artifact_of_an_unknown_media_type_with_a_missing_blob_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    let media_type = "application/vnd.example.thing.v1+json";
    let artifact = Manifest::new(
        media_type,
        &json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "blobs": [{"mediaType": "text/plain", "digest": unknown_digest(), "size": 3}],
        }),
    );
    r.put_manifest(REPO, "thing", &artifact)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn a_non_distributable_layer_need_not_be_pushed() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, b"{}");
    let mut foreign = json!({"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                             "digest": unknown_digest(), "size": 1234});
    foreign["urls"] = json!(["https://example.com/layer.tar.gz"]);
    let manifest = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [foreign],
        }),
    );
    r.push_manifest(REPO, "foreign", &manifest);
}

// ---------------------------------------------------------------------------------------------
// References to blobs and subjects

#[test]
fn a_manifest_referencing_a_missing_blob_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, b"{}");
    let manifest = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [{"mediaType": OCI_LAYER, "digest": unknown_digest(), "size": 10}],
        }),
    );
    r.put_manifest(REPO, "latest", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    r.get(&format!("/v2/{REPO}/manifests/latest"))
        .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn a_manifest_whose_config_is_missing_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    let layer = r.push_blob(REPO, b"layer");
    let manifest = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": unknown_digest(), "size": 2},
            "layers": [layer.descriptor(OCI_LAYER)],
        }),
    );
    r.put_manifest(REPO, "latest", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn a_manifest_referencing_a_blob_with_the_wrong_size_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, b"{}");
    let layer = r.push_blob(REPO, b"ten bytes!");
    let mut wrong = layer.descriptor(OCI_LAYER);
    wrong["size"] = json!(11);
    let manifest = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [wrong],
        }),
    );
    r.put_manifest(REPO, "latest", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn a_manifest_listing_a_blob_twice_with_one_wrong_size_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, b"{}");
    let layer = r.push_blob(REPO, b"ten bytes!");
    let mut wrong = layer.descriptor(OCI_LAYER);
    wrong["size"] = json!(11);
    let manifest = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [layer.descriptor(OCI_LAYER), wrong],
        }),
    );
    r.put_manifest(REPO, "latest", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn a_manifest_may_list_the_same_blob_twice() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, b"{}");
    let layer = r.push_blob(REPO, b"repeated layer");
    let manifest = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [layer.descriptor(OCI_LAYER), layer.descriptor(OCI_LAYER)],
        }),
    );
    r.push_manifest(REPO, "latest", &manifest);
}

#[test]
fn a_manifest_referencing_a_blob_of_another_repository_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image("elsewhere", "one");
    r.put_manifest(REPO, "latest", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn a_manifest_referencing_a_deleted_blob_is_manifest_blob_unknown() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, b"{}");
    let layer = r.push_blob(REPO, b"deleted layer");
    r.delete(&format!("/v2/{REPO}/blobs/{}", layer.digest))
        .expect_status(StatusCode::ACCEPTED);
    let manifest = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [layer.descriptor(OCI_LAYER)],
        }),
    );
    r.put_manifest(REPO, "latest", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn a_manifest_whose_subject_is_missing_is_accepted_and_answers_oci_subject() {
    let r = TestRegistry::new();
    let absent = r.prepare_image(REPO, "subject never pushed");
    let referrer = r.prepare_referrer(REPO, &absent, "application/vnd.example.sig", None);
    let reply = r.put_manifest(REPO, &referrer.digest, &referrer);
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(reply.header("oci-subject"), Some(absent.digest.as_str()));
}

#[test]
fn a_manifest_whose_subject_exists_answers_oci_subject() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let referrer = r.prepare_referrer(REPO, &subject, "application/vnd.example.sig", None);
    let reply = r.put_manifest(REPO, &referrer.digest, &referrer);
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(reply.header("oci-subject"), Some(subject.digest.as_str()));
}

#[test]
fn a_manifest_without_a_subject_answers_no_oci_subject() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    let reply = r.push_manifest(REPO, "latest", &manifest);
    assert_eq!(reply.header("oci-subject"), None);
}

// ---------------------------------------------------------------------------------------------
// Invalid manifests

#[test]
fn invalid_json_is_manifest_invalid() {
    let r = TestRegistry::new();
    r.put_manifest_bytes(REPO, "latest", OCI_MANIFEST, b"{not json")
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

#[test]
fn an_empty_body_is_manifest_invalid() {
    let r = TestRegistry::new();
    r.put_manifest_bytes(REPO, "latest", OCI_MANIFEST, b"")
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

#[test]
fn a_json_document_that_is_not_an_object_is_manifest_invalid() {
    let r = TestRegistry::new();
    r.put_manifest_bytes(REPO, "latest", OCI_MANIFEST, b"[1, 2, 3]")
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

#[test]
fn a_content_type_that_contradicts_the_media_type_is_manifest_invalid() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    r.put_manifest_bytes(REPO, "latest", OCI_INDEX, &manifest.bytes)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

#[test]
fn a_manifest_whose_media_type_cannot_be_told_is_manifest_invalid() {
    let r = TestRegistry::new();
    r.put_manifest_bytes(
        REPO,
        "latest",
        "application/json",
        br#"{"schemaVersion":2}"#,
    )
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

#[test]
fn a_schema_version_other_than_2_is_manifest_invalid() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, b"{}");
    let manifest = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 1,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [],
        }),
    );
    r.put_manifest(REPO, "latest", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

#[test]
fn an_image_manifest_without_layers_is_manifest_invalid() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, b"{}");
    let manifest = Manifest::new(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(OCI_CONFIG)}),
    );
    r.put_manifest(REPO, "latest", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

#[test]
fn a_docker_schema1_manifest_is_manifest_invalid() {
    let r = TestRegistry::new();
    r.put_manifest_bytes(
        REPO,
        "latest",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        br#"{"schemaVersion":1,"name":"library/busybox","tag":"latest","fsLayers":[]}"#,
    )
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

#[test]
fn a_rejected_manifest_leaves_no_tag_behind() {
    let r = TestRegistry::new();
    r.push_image(REPO, "keep", "one");
    r.put_manifest_bytes(REPO, "broken", OCI_MANIFEST, b"{not json")
        .expect_status(StatusCode::BAD_REQUEST);
    assert_eq!(r.tags(REPO), vec!["keep"]);
}

// ---------------------------------------------------------------------------------------------
// Size limit

#[test]
fn a_manifest_larger_than_4_mib_is_413() {
    let r = TestRegistry::new();
    let body = vec![b' '; MANIFEST_LIMIT + 1];
    let reply = r.put_manifest_bytes(REPO, "latest", OCI_MANIFEST, &body);
    reply.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
}

#[test]
fn a_streamed_manifest_larger_than_4_mib_is_413() {
    let r = TestRegistry::new();
    let mib = vec![b' '; 1024 * 1024];
    let chunks: Vec<&[u8]> = vec![&mib; 5];
    r.put(
        &format!("/v2/{REPO}/manifests/latest"),
        &[("content-type", OCI_MANIFEST)],
        stream_body(&chunks),
    )
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
}

#[test]
fn a_manifest_of_exactly_4_mib_is_accepted() {
    let r = TestRegistry::new();
    let config = r.push_blob(REPO, b"{}");
    let layer = r.push_blob(REPO, b"layer");
    let document = |padding: usize| {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [layer.descriptor(OCI_LAYER)],
            "annotations": {"org.example.padding": "x".repeat(padding)},
        })
    };
    let base = serde_json::to_vec(&document(0)).expect("json").len();
    let manifest = Manifest::new(OCI_MANIFEST, &document(MANIFEST_LIMIT - base));
    assert_eq!(manifest.bytes.len(), MANIFEST_LIMIT);
    r.push_manifest(REPO, "big", &manifest);
    assert_eq!(
        r.get(&format!("/v2/{REPO}/manifests/big")).body.len(),
        MANIFEST_LIMIT
    );
}

// ---------------------------------------------------------------------------------------------
// Pushing by digest, and tags

#[test]
fn putting_by_digest_is_201_and_creates_no_tag() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    let reply = r.put_manifest(REPO, &manifest.digest, &manifest);
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(manifest.digest.as_str())
    );
    assert!(reply.header_values("oci-tag").is_empty());
    assert!(r.tags(REPO).is_empty());
    r.get(&format!("/v2/{REPO}/manifests/{}", manifest.digest))
        .expect_status(StatusCode::OK);
}

#[test]
fn putting_by_a_digest_that_does_not_match_the_content_is_digest_invalid() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    let wrong = sha256(b"another document");
    r.put_manifest(REPO, &wrong, &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get(&format!("/v2/{REPO}/manifests/{wrong}"))
        .expect_status(StatusCode::NOT_FOUND);
    r.get(&format!("/v2/{REPO}/manifests/{}", manifest.digest))
        .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn putting_by_a_sha512_digest_stores_the_manifest_under_it() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    let digest = sha512(&manifest.bytes);
    let reply = r.put_manifest(REPO, &digest, &manifest);
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(reply.location(), format!("/v2/{REPO}/manifests/{digest}"));
    let get = r.get(&format!("/v2/{REPO}/manifests/{digest}"));
    get.expect_status(StatusCode::OK);
    assert_eq!(get.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(&get.body[..], &manifest.bytes[..]);
}

#[test]
fn tag_query_parameters_point_every_tag_at_the_manifest() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    let reply = r.put_manifest(REPO, &format!("{}?tag=a&tag=b", manifest.digest), &manifest);
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(reply.header_values("oci-tag"), vec!["a", "b"]);
    for tag in ["a", "b"] {
        let get = r.get(&format!("/v2/{REPO}/manifests/{tag}"));
        assert_eq!(
            get.header("docker-content-digest"),
            Some(manifest.digest.as_str()),
            "{tag}"
        );
    }
    assert_eq!(r.tags(REPO), vec!["a", "b"]);
}

#[test]
fn tag_query_parameters_add_to_the_tag_in_the_path() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    let reply = r.put_manifest(REPO, "v1?tag=v1.0&tag=v1", &manifest);
    reply.expect_status(StatusCode::CREATED);
    assert_eq!(reply.header_values("oci-tag"), vec!["v1", "v1.0"]);
    assert_eq!(r.tags(REPO), vec!["v1", "v1.0"]);
}

#[test]
fn a_tag_of_128_characters_is_accepted() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    let tag = "t".repeat(128);
    r.push_manifest(REPO, &tag, &manifest);
    r.get(&format!("/v2/{REPO}/manifests/{tag}"))
        .expect_status(StatusCode::OK);
}

#[test]
fn an_invalid_tag_is_tag_invalid() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    for tag in ["-leading-dash", ".hidden", &"t".repeat(129)] {
        r.put_manifest(REPO, tag, &manifest)
            .expect_error(StatusCode::BAD_REQUEST, "TAG_INVALID");
    }
    assert!(r.tags(REPO).is_empty());
}

#[test]
fn an_invalid_tag_query_parameter_is_tag_invalid_and_tags_nothing() {
    let r = TestRegistry::new();
    let manifest = r.prepare_image(REPO, "one");
    r.put_manifest(REPO, "good?tag=.bad", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "TAG_INVALID");
    r.get(&format!("/v2/{REPO}/manifests/good"))
        .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn reading_or_deleting_a_reference_that_cannot_exist_is_manifest_unknown() {
    // The official conformance suite v1.1.1 asks for `.INVALID_MANIFEST_NAME` and expects 404.
    let r = TestRegistry::new();
    r.prepare_image(REPO, "one");
    for reference in ["-bad", ".INVALID_MANIFEST_NAME", "a+b", &"t".repeat(129)] {
        r.get(&format!("/v2/{REPO}/manifests/{reference}"))
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        r.head(&format!("/v2/{REPO}/manifests/{reference}"))
            .expect_status(StatusCode::NOT_FOUND);
        r.delete(&format!("/v2/{REPO}/manifests/{reference}"))
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    }
}

#[test]
fn a_malformed_digest_reference_is_not_found_when_read_and_digest_invalid_when_pushed() {
    let r = TestRegistry::new();
    r.get(&format!("/v2/{REPO}/manifests/sha256:abc"))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    let manifest = r.prepare_image(REPO, "one");
    r.put_manifest(REPO, "sha256:abc", &manifest)
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.delete(&format!("/v2/{REPO}/manifests/sha256:abc"))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[test]
fn an_unknown_tag_is_manifest_unknown() {
    let r = TestRegistry::new();
    r.push_image(REPO, "latest", "one");
    r.get(&format!("/v2/{REPO}/manifests/missing"))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.head(&format!("/v2/{REPO}/manifests/missing"))
        .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn an_unknown_digest_is_manifest_unknown() {
    let r = TestRegistry::new();
    r.get(&format!("/v2/{REPO}/manifests/{}", unknown_digest()))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

// ---------------------------------------------------------------------------------------------
// Deletes

#[test]
fn deleting_by_tag_removes_the_tag_but_keeps_the_manifest() {
    let r = TestRegistry::new();
    let manifest = r.push_image(REPO, "latest", "one");
    r.push_manifest(REPO, "stable", &manifest);
    r.delete(&format!("/v2/{REPO}/manifests/latest"))
        .expect_status(StatusCode::ACCEPTED);
    r.get(&format!("/v2/{REPO}/manifests/latest"))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.get(&format!("/v2/{REPO}/manifests/{}", manifest.digest))
        .expect_status(StatusCode::OK);
    assert_eq!(r.tags(REPO), vec!["stable"]);
}

#[test]
fn deleting_by_digest_removes_the_manifest_and_its_tags() {
    let r = TestRegistry::new();
    let doomed = r.push_image(REPO, "latest", "doomed");
    r.push_manifest(REPO, "v1", &doomed);
    r.push_image(REPO, "other", "survivor");
    assert_eq!(r.tags(REPO), vec!["latest", "other", "v1"]);
    r.delete(&format!("/v2/{REPO}/manifests/{}", doomed.digest))
        .expect_status(StatusCode::ACCEPTED);
    r.get(&format!("/v2/{REPO}/manifests/{}", doomed.digest))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.get(&format!("/v2/{REPO}/manifests/latest"))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_eq!(r.tags(REPO), vec!["other"]);
}

#[test]
fn deleting_an_unknown_manifest_is_manifest_unknown() {
    let r = TestRegistry::new();
    r.push_image(REPO, "latest", "one");
    r.delete(&format!("/v2/{REPO}/manifests/{}", unknown_digest()))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.delete(&format!("/v2/{REPO}/manifests/missing"))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[test]
fn a_deleted_manifest_can_be_pushed_again() {
    let r = TestRegistry::new();
    let manifest = r.push_image(REPO, "latest", "one");
    r.delete(&format!("/v2/{REPO}/manifests/{}", manifest.digest))
        .expect_status(StatusCode::ACCEPTED);
    r.push_manifest(REPO, "latest", &manifest);
    assert_eq!(
        &r.get(&format!("/v2/{REPO}/manifests/latest")).body[..],
        &manifest.bytes[..]
    );
}

#[test]
fn a_manifest_body_that_breaks_off_is_refused() {
    let r = TestRegistry::new();
    let reply = r.put(
        &format!("/v2/{REPO}/manifests/latest"),
        &[("content-type", OCI_MANIFEST)],
        broken_body(b"{\"schemaVersion\":"),
    );
    reply.expect_status(StatusCode::BAD_REQUEST);
    reply.error_code();
    r.get(&format!("/v2/{REPO}/manifests/latest"))
        .expect_status(StatusCode::NOT_FOUND);
}
