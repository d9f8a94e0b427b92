//! Listings: `tags/list` and `_catalog` (bytewise order, `n`/`last` pagination, `Link`), and the
//! referrers API (entries, `artifactType` defaulting and filtering).

// Test code indexes what it just built: a panic is a failing test.
#![allow(clippy::indexing_slicing, clippy::string_slice)]

mod common;

use std::sync::Arc;

use common::*;
use http::StatusCode;
use openregistry::memory::MemoryKv;
use openregistry::Config;
use serde_json::{json, Value};

const REPO: &str = "library/redis";

/// Points each of `tags` at one image in `repo`.
fn tag_all(r: &TestRegistry, repo: &str, tags: &[&str]) {
    let manifest = r.prepare_image(repo, "tagged");
    for tag in tags {
        r.push_manifest(repo, tag, &manifest);
    }
}

/// Creates each repository by pushing a blob to it.
fn create_repositories(r: &TestRegistry, names: &[&str]) {
    for name in names {
        r.push_blob(name, name.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// tags/list

#[test]
fn tags_are_listed_with_the_repository_name_as_json() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["latest"]);
    let reply = r.get(&format!("/v2/{REPO}/tags/list"));
    reply.expect_status(StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), json!({"name": REPO, "tags": ["latest"]}));
}

#[test]
fn tags_are_listed_in_bytewise_order() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["b", "a", "_x", "Z9", "B", "9", "10", "1.0"]);
    assert_eq!(
        r.tags(REPO),
        vec!["1.0", "10", "9", "B", "Z9", "_x", "a", "b"]
    );
}

#[test]
fn n_limits_the_page_and_link_points_at_the_next_one() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["a", "b", "c", "d", "e"]);
    let page = r.get(&format!("/v2/{REPO}/tags/list?n=2"));
    page.expect_status(StatusCode::OK);
    assert_eq!(strings(&page.json()["tags"]), vec!["a", "b"]);
    assert_eq!(
        page.header("link"),
        Some(format!("</v2/{REPO}/tags/list?n=2&last=b>; rel=\"next\"").as_str())
    );
}

#[test]
fn following_link_headers_visits_every_tag_once_and_ends_without_a_link() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["a", "b", "c", "d", "e"]);
    let mut seen = Vec::new();
    let mut next = Some(format!("/v2/{REPO}/tags/list?n=2"));
    let mut pages = 0;
    while let Some(url) = next {
        let page = r.get(&url);
        page.expect_status(StatusCode::OK);
        seen.extend(strings(&page.json()["tags"]));
        next = page.header("link").map(link_target);
        pages += 1;
    }
    assert_eq!(seen, vec!["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
}

#[test]
fn a_page_that_holds_the_last_tags_exactly_has_no_link() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["a", "b", "c"]);
    let page = r.get(&format!("/v2/{REPO}/tags/list?n=3"));
    assert_eq!(strings(&page.json()["tags"]), vec!["a", "b", "c"]);
    assert_eq!(page.header("link"), None);
}

#[test]
fn a_page_larger_than_the_list_has_no_link() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["a", "b", "c"]);
    let page = r.get(&format!("/v2/{REPO}/tags/list?n=100"));
    assert_eq!(strings(&page.json()["tags"]), vec!["a", "b", "c"]);
    assert_eq!(page.header("link"), None);
}

#[test]
fn n_zero_is_an_empty_list_without_a_link() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["a", "b"]);
    let page = r.get(&format!("/v2/{REPO}/tags/list?n=0"));
    page.expect_status(StatusCode::OK);
    assert_eq!(strings(&page.json()["tags"]), Vec::<String>::new());
    assert_eq!(page.header("link"), None);
}

#[test]
fn last_lists_the_tags_after_it() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["a", "b", "c", "d"]);
    let page = r.get(&format!("/v2/{REPO}/tags/list?last=b"));
    assert_eq!(strings(&page.json()["tags"]), vec!["c", "d"]);
}

#[test]
fn last_need_not_be_an_existing_tag() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["a", "c", "e"]);
    let page = r.get(&format!("/v2/{REPO}/tags/list?last=b&n=1"));
    assert_eq!(strings(&page.json()["tags"]), vec!["c"]);
    assert_eq!(
        page.header("link").map(link_target),
        Some(format!("/v2/{REPO}/tags/list?n=1&last=c"))
    );
}

#[test]
fn without_n_the_default_page_size_applies_and_links_onward() {
    let config = Config {
        default_page_size: 2,
        ..Config::default()
    };
    let r = TestRegistry::with(config, Arc::new(MemoryKv::default()));
    tag_all(&r, REPO, &["a", "b", "c"]);
    let page = r.get(&format!("/v2/{REPO}/tags/list"));
    assert_eq!(strings(&page.json()["tags"]), vec!["a", "b"]);
    assert_eq!(
        page.header("link").map(link_target),
        Some(format!("/v2/{REPO}/tags/list?n=2&last=b"))
    );
}

#[test]
fn an_n_above_the_maximum_is_clamped_and_links_onward() {
    let config = Config {
        max_page_size: 2,
        ..Config::default()
    };
    let r = TestRegistry::with(config, Arc::new(MemoryKv::default()));
    tag_all(&r, REPO, &["a", "b", "c"]);
    let page = r.get(&format!("/v2/{REPO}/tags/list?n=50"));
    assert_eq!(strings(&page.json()["tags"]), vec!["a", "b"]);
    assert_eq!(
        page.header("link").map(link_target),
        Some(format!("/v2/{REPO}/tags/list?n=2&last=b"))
    );
}

#[test]
fn a_non_numeric_n_is_refused() {
    let r = TestRegistry::new();
    tag_all(&r, REPO, &["a"]);
    let reply = r.get(&format!("/v2/{REPO}/tags/list?n=many"));
    reply.expect_status(StatusCode::BAD_REQUEST);
    reply.error_code();
}

#[test]
fn the_tags_of_an_unknown_repository_are_name_unknown() {
    let r = TestRegistry::new();
    r.get("/v2/nobody/here/tags/list")
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
}

#[test]
fn a_repository_with_blobs_but_no_tags_lists_no_tags() {
    let r = TestRegistry::new();
    r.push_blob(REPO, b"just a blob");
    let reply = r.get(&format!("/v2/{REPO}/tags/list"));
    reply.expect_status(StatusCode::OK);
    assert_eq!(strings(&reply.json()["tags"]), Vec::<String>::new());
}

#[test]
fn tags_are_listed_per_repository() {
    let r = TestRegistry::new();
    tag_all(&r, "one", &["a"]);
    tag_all(&r, "two", &["b"]);
    assert_eq!(r.tags("one"), vec!["a"]);
    assert_eq!(r.tags("two"), vec!["b"]);
}

// ---------------------------------------------------------------------------------------------
// _catalog

#[test]
fn an_empty_registry_has_an_empty_catalog() {
    let r = TestRegistry::new();
    let reply = r.get("/v2/_catalog");
    reply.expect_status(StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), json!({"repositories": []}));
}

#[test]
fn the_catalog_lists_repositories_in_bytewise_order() {
    let r = TestRegistry::new();
    create_repositories(&r, &["b", "a/b", "a", "a.b", "a-b"]);
    let reply = r.get("/v2/_catalog");
    assert_eq!(
        strings(&reply.json()["repositories"]),
        vec!["a", "a-b", "a.b", "a/b", "b"]
    );
}

#[test]
fn the_catalog_pages_with_n_and_a_link() {
    let r = TestRegistry::new();
    create_repositories(&r, &["a", "b", "c"]);
    let page = r.get("/v2/_catalog?n=2");
    assert_eq!(strings(&page.json()["repositories"]), vec!["a", "b"]);
    assert_eq!(
        page.header("link"),
        Some("</v2/_catalog?n=2&last=b>; rel=\"next\"")
    );
}

#[test]
fn following_catalog_links_visits_every_repository_once() {
    let r = TestRegistry::new();
    let names = ["a", "a/b", "a/b/c", "b", "c/d"];
    create_repositories(&r, &names);
    let mut seen = Vec::new();
    let mut next = Some("/v2/_catalog?n=2".to_owned());
    while let Some(url) = next {
        let page = r.get(&url);
        page.expect_status(StatusCode::OK);
        seen.extend(strings(&page.json()["repositories"]));
        next = page.header("link").map(link_target);
    }
    assert_eq!(seen, names);
}

#[test]
fn the_last_catalog_page_has_no_link() {
    let r = TestRegistry::new();
    create_repositories(&r, &["a", "b", "c"]);
    let page = r.get("/v2/_catalog?n=2&last=b");
    assert_eq!(strings(&page.json()["repositories"]), vec!["c"]);
    assert_eq!(page.header("link"), None);
}

#[test]
fn a_catalog_with_n_zero_is_empty_without_a_link() {
    let r = TestRegistry::new();
    create_repositories(&r, &["a", "b"]);
    let page = r.get("/v2/_catalog?n=0");
    page.expect_status(StatusCode::OK);
    assert_eq!(strings(&page.json()["repositories"]), Vec::<String>::new());
    assert_eq!(page.header("link"), None);
}

#[test]
fn repositories_appear_in_the_catalog_once_they_hold_content() {
    let r = TestRegistry::new();
    r.start_upload("pending");
    assert!(strings(&r.get("/v2/_catalog").json()["repositories"]).is_empty());
    r.push_image("holder", "latest", "one");
    assert_eq!(
        strings(&r.get("/v2/_catalog").json()["repositories"]),
        vec!["holder"]
    );
}

// ---------------------------------------------------------------------------------------------
// Referrers

fn referrers(r: &TestRegistry, repo: &str, subject: &str) -> Vec<Value> {
    let reply = r.get(&format!("/v2/{repo}/referrers/{subject}"));
    reply.expect_status(StatusCode::OK);
    reply.json()["manifests"]
        .as_array()
        .expect("a manifests array")
        .clone()
}

#[test]
fn the_referrers_of_an_unknown_subject_in_an_unknown_repository_are_an_empty_index() {
    let r = TestRegistry::new();
    let reply = r.get(&format!("/v2/nobody/referrers/{}", unknown_digest()));
    reply.expect_status(StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
    assert_eq!(
        reply.json(),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    );
}

#[test]
fn a_referrer_is_listed_with_its_descriptor_artifact_type_and_annotations() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let referrer = r.prepare_referrer(
        REPO,
        &subject,
        "application/vnd.example.sbom.v1",
        Some(json!({"org.opencontainers.image.created": "2024-01-01T00:00:00Z"})),
    );
    r.push_manifest(REPO, &referrer.digest, &referrer);
    assert_eq!(
        referrers(&r, REPO, &subject.digest),
        vec![json!({
            "mediaType": OCI_MANIFEST,
            "digest": referrer.digest,
            "size": referrer.size,
            "artifactType": "application/vnd.example.sbom.v1",
            "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        })]
    );
}

#[test]
fn a_referrer_without_annotations_is_listed_without_them() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let referrer = r.prepare_referrer(REPO, &subject, "application/vnd.example.sig", None);
    r.push_manifest(REPO, &referrer.digest, &referrer);
    let entries = referrers(&r, REPO, &subject.digest);
    assert_eq!(entries.len(), 1);
    assert!(entries[0].get("annotations").is_none(), "{}", entries[0]);
}

#[test]
fn the_artifact_type_defaults_to_the_config_media_type() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let config = r.push_blob(REPO, br#"{"kind":"attestation"}"#);
    let layer = r.push_blob(REPO, b"attestation");
    let referrer = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor("application/vnd.example.attestation.config.v1+json"),
            "layers": [layer.descriptor("application/octet-stream")],
            "subject": subject.descriptor(),
        }),
    );
    r.push_manifest(REPO, &referrer.digest, &referrer);
    let entries = referrers(&r, REPO, &subject.digest);
    assert_eq!(
        entries[0]["artifactType"],
        "application/vnd.example.attestation.config.v1+json"
    );
}

#[test]
fn an_index_with_a_subject_is_listed_as_an_index() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let child = r.push_image(REPO, "child", "child");
    let index = Manifest::new(
        OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/vnd.example.bundle.v1",
            "manifests": [child.descriptor()],
            "subject": subject.descriptor(),
        }),
    );
    r.push_manifest(REPO, &index.digest, &index);
    let entries = referrers(&r, REPO, &subject.digest);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["mediaType"], OCI_INDEX);
    assert_eq!(entries[0]["digest"], index.digest.as_str());
    assert_eq!(
        entries[0]["artifactType"],
        "application/vnd.example.bundle.v1"
    );
}

#[test]
fn every_referrer_of_a_subject_is_listed_and_no_other() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let unrelated = r.push_image(REPO, "other", "unrelated");
    let sig = r.prepare_referrer(REPO, &subject, "application/vnd.example.sig", None);
    let sbom = r.prepare_referrer(REPO, &subject, "application/vnd.example.sbom", None);
    let elsewhere = r.prepare_referrer(REPO, &unrelated, "application/vnd.example.sig", None);
    for m in [&sig, &sbom, &elsewhere] {
        r.push_manifest(REPO, &m.digest, m);
    }
    let mut digests: Vec<String> = referrers(&r, REPO, &subject.digest)
        .iter()
        .map(|e| e["digest"].as_str().expect("digest").to_owned())
        .collect();
    digests.sort();
    let mut expected = vec![sig.digest.clone(), sbom.digest.clone()];
    expected.sort();
    assert_eq!(digests, expected);
}

#[test]
fn a_referrer_pushed_before_its_subject_is_listed() {
    let r = TestRegistry::new();
    let subject = r.prepare_image(REPO, "subject");
    let referrer = r.prepare_referrer(REPO, &subject, "application/vnd.example.sig", None);
    r.push_manifest(REPO, &referrer.digest, &referrer);
    assert_eq!(referrers(&r, REPO, &subject.digest).len(), 1);
    r.push_manifest(REPO, "latest", &subject);
    assert_eq!(referrers(&r, REPO, &subject.digest).len(), 1);
}

#[test]
fn an_artifact_type_filter_keeps_the_matching_referrers_and_says_so() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let sig = r.prepare_referrer(REPO, &subject, "application/vnd.example.sig", None);
    let sbom = r.prepare_referrer(REPO, &subject, "application/vnd.example.sbom", None);
    r.push_manifest(REPO, &sig.digest, &sig);
    r.push_manifest(REPO, &sbom.digest, &sbom);
    let reply = r.get(&format!(
        "/v2/{REPO}/referrers/{}?artifactType=application/vnd.example.sbom",
        subject.digest
    ));
    reply.expect_status(StatusCode::OK);
    assert_eq!(reply.header("oci-filters-applied"), Some("artifactType"));
    let entries = reply.json()["manifests"].as_array().expect("array").clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["digest"], sbom.digest.as_str());
}

#[test]
fn an_artifact_type_filter_matches_artifact_types_defaulted_from_the_config() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let config = r.push_blob(REPO, br#"{"kind":"attestation"}"#);
    let layer = r.push_blob(REPO, b"attestation");
    let referrer = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor("application/vnd.example.attestation.config.v1+json"),
            "layers": [layer.descriptor("application/octet-stream")],
            "subject": subject.descriptor(),
        }),
    );
    r.push_manifest(REPO, &referrer.digest, &referrer);
    let reply = r.get(&format!(
        "/v2/{REPO}/referrers/{}?artifactType=application/vnd.example.attestation.config.v1%2Bjson",
        subject.digest
    ));
    let entries = reply.json()["manifests"].as_array().expect("array").clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["digest"], referrer.digest.as_str());
}

#[test]
fn an_empty_artifact_type_filter_is_no_filter() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let sig = r.prepare_referrer(REPO, &subject, "application/vnd.example.sig", None);
    r.push_manifest(REPO, &sig.digest, &sig);
    let reply = r.get(&format!(
        "/v2/{REPO}/referrers/{}?artifactType=",
        subject.digest
    ));
    assert_eq!(reply.header("oci-filters-applied"), None);
    assert_eq!(
        reply.json()["manifests"].as_array().expect("array").len(),
        1
    );
}

#[test]
fn an_artifact_type_filter_that_matches_nothing_is_an_empty_filtered_index() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let sig = r.prepare_referrer(REPO, &subject, "application/vnd.example.sig", None);
    r.push_manifest(REPO, &sig.digest, &sig);
    let reply = r.get(&format!(
        "/v2/{REPO}/referrers/{}?artifactType=application/vnd.example.none",
        subject.digest
    ));
    reply.expect_status(StatusCode::OK);
    assert_eq!(reply.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(reply.json()["manifests"], json!([]));
}

#[test]
fn an_unfiltered_referrers_answer_claims_no_filter() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let reply = r.get(&format!("/v2/{REPO}/referrers/{}", subject.digest));
    assert_eq!(reply.header("oci-filters-applied"), None);
}

#[test]
fn referrers_with_a_malformed_digest_are_digest_invalid() {
    let r = TestRegistry::new();
    r.get(&format!("/v2/{REPO}/referrers/sha256:abc"))
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get(&format!("/v2/{REPO}/referrers/latest"))
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[test]
fn a_deleted_referrer_is_no_longer_listed() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let referrer = r.prepare_referrer(REPO, &subject, "application/vnd.example.sig", None);
    r.push_manifest(REPO, &referrer.digest, &referrer);
    r.delete(&format!("/v2/{REPO}/manifests/{}", referrer.digest))
        .expect_status(StatusCode::ACCEPTED);
    assert!(referrers(&r, REPO, &subject.digest).is_empty());
}

#[test]
fn referrers_are_listed_per_repository() {
    let r = TestRegistry::new();
    let subject = r.push_image(REPO, "latest", "subject");
    let referrer = r.prepare_referrer(REPO, &subject, "application/vnd.example.sig", None);
    r.push_manifest(REPO, &referrer.digest, &referrer);
    assert!(referrers(&r, "somewhere/else", &subject.digest).is_empty());
}

#[test]
fn referrers_work_under_deeply_nested_repository_names() {
    let r = TestRegistry::new();
    let repo = "a/b/c/d/e/f/g/h";
    let subject = r.push_image(repo, "latest", "subject");
    let referrer = r.prepare_referrer(repo, &subject, "application/vnd.example.sig", None);
    r.push_manifest(repo, &referrer.digest, &referrer);
    assert_eq!(referrers(&r, repo, &subject.digest).len(), 1);
}
