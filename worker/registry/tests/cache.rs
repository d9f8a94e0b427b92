//! The read path's cache (`Registry::with_cache`), as its consistency rules say:
//!
//! - where a tag moved or a manifest was deleted, the next read sees it at once;
//! - another location (a registry with its own cache over the same database) sees a moved tag
//!   within the tag lifetime, and serves its cached answer meanwhile without asking the database;
//! - a cached answer is served only after the access check: a private repository's cached blob
//!   is refused to a token without pull, and to no token at all.

// Test code indexes what it just built: a panic is a failing test.
#![allow(clippy::indexing_slicing, clippy::string_slice)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::*;
use futures_executor::block_on;
use http::StatusCode;
use openregistry::auth::store;
use openregistry::auth::AuthSettings;
use openregistry::cache::CachePolicy;
use openregistry::memory::MemoryCache;
use openregistry::ports::{Cache, Row, Sql, SqlError, Statement};
use openregistry::{Config, Registry};

const REPO: &str = "team/app";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Counts the statements that reach the database (a batch counts once: one round trip).
struct Counting {
    inner: Arc<dyn Sql>,
    round_trips: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Sql for Counting {
    async fn query(&self, statement: Statement) -> Result<Vec<Row>, SqlError> {
        self.round_trips.fetch_add(1, Ordering::SeqCst);
        self.inner.query(statement).await
    }
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>, SqlError> {
        self.round_trips.fetch_add(1, Ordering::SeqCst);
        self.inner.batch(statements).await
    }
}

/// A registry with a cache of its own, and the count of its database round trips.
fn cached_registry() -> (TestRegistry, Arc<AtomicUsize>) {
    cached_registry_with(Config::default())
}

fn cached_registry_with(config: Config) -> (TestRegistry, Arc<AtomicUsize>) {
    let round_trips = Arc::new(AtomicUsize::new(0));
    let counter = round_trips.clone();
    let mut t = TestRegistry::with_sql(
        config,
        Arc::new(openregistry::memory::MemoryKv::default()),
        move |inner| {
            Arc::new(Counting {
                inner,
                round_trips: counter,
            })
        },
    );
    t.registry = t
        .registry
        .clone()
        .with_cache(Arc::new(MemoryCache::default()), CachePolicy::default());
    (t, round_trips)
}

/// Another location: the same database and storage, its own cache.
fn elsewhere(t: &TestRegistry) -> Registry {
    Registry::new(t.ports.clone(), Config::default())
        .with_cache(Arc::new(MemoryCache::default()), CachePolicy::default())
}

fn with_registry(t: &TestRegistry, registry: Registry) -> TestRegistry {
    TestRegistry {
        registry,
        ports: t.ports.clone(),
        blobs: t.blobs.clone(),
        clock: t.clock.clone(),
    }
}

fn digest_of_tag(t: &TestRegistry, tag: &str) -> String {
    t.get_with(
        &format!("/v2/{REPO}/manifests/{tag}"),
        &[("accept", MANIFEST)],
    )
    .expect_status(StatusCode::OK)
    .must_header("docker-content-digest")
    .to_owned()
}

#[test]
fn a_warm_pull_asks_the_database_nothing() {
    let (t, round_trips) = cached_registry();
    let manifest = t.push_image(REPO, "v1", "one");
    let (config, layer) = t.push_image_blobs(REPO, "one");
    let pull = |t: &TestRegistry| {
        digest_of_tag(t, "v1");
        t.get(&format!("/v2/{REPO}/manifests/{}", manifest.digest))
            .expect_status(StatusCode::OK);
        t.head(&format!("/v2/{REPO}/blobs/{}", config.digest))
            .expect_status(StatusCode::OK);
        t.get(&format!("/v2/{REPO}/blobs/{}", layer.digest))
            .expect_status(StatusCode::OK);
    };
    pull(&t);
    round_trips.store(0, Ordering::SeqCst);
    pull(&t);
    assert_eq!(round_trips.load(Ordering::SeqCst), 0);
}

#[test]
fn a_tag_moved_here_is_seen_here_at_once_and_elsewhere_within_the_tag_lifetime() {
    let (t, _) = cached_registry();
    let there = with_registry(&t, elsewhere(&t));
    let v1 = t.push_image(REPO, "latest", "one");
    assert_eq!(digest_of_tag(&t, "latest"), v1.digest);
    assert_eq!(digest_of_tag(&there, "latest"), v1.digest);

    let v2 = t.push_image(REPO, "latest", "two");
    assert_eq!(digest_of_tag(&t, "latest"), v2.digest, "read-your-writes");
    assert_eq!(
        digest_of_tag(&there, "latest"),
        v1.digest,
        "elsewhere, the cached tag until it expires"
    );
    t.clock.advance(CachePolicy::default().tag);
    assert_eq!(digest_of_tag(&there, "latest"), v2.digest);
}

#[test]
fn a_tag_pulled_after_half_its_lifetime_is_refreshed_after_the_response_not_on_the_request_path() {
    let (t, round_trips) = cached_registry();
    let there = with_registry(&t, elsewhere(&t));
    let v1 = t.push_image(REPO, "latest", "one");
    assert_eq!(digest_of_tag(&t, "latest"), v1.digest);
    let v2 = there.push_image(REPO, "latest", "two");

    t.clock.advance(CachePolicy::default().tag / 2);
    let (reply, follow_up) = block_on(
        t.registry.handle_deferred(
            http::Request::get(format!("/v2/{REPO}/manifests/latest"))
                .header("accept", MANIFEST)
                .body(openregistry::body::Body::Empty)
                .expect("a request"),
        ),
    );
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(
        reply.headers()["docker-content-digest"],
        v1.digest.as_str(),
        "served from the cache, within the lifetime"
    );
    assert!(!follow_up.is_empty(), "a refresh is due");
    round_trips.store(0, Ordering::SeqCst);
    block_on(follow_up.run());
    assert_eq!(
        round_trips.load(Ordering::SeqCst),
        1,
        "one query, after the response"
    );

    round_trips.store(0, Ordering::SeqCst);
    assert_eq!(
        digest_of_tag(&t, "latest"),
        v2.digest,
        "the refreshed answer"
    );
    assert_eq!(round_trips.load(Ordering::SeqCst), 0);
}

#[test]
fn a_deleted_manifest_is_never_served_from_cache_where_it_was_deleted() {
    let (t, _) = cached_registry();
    let manifest = t.push_image(REPO, "v1", "one");
    let by_digest = format!("/v2/{REPO}/manifests/{}", manifest.digest);
    // Warm every entry: by tag and by digest, GET and HEAD.
    digest_of_tag(&t, "v1");
    t.get(&by_digest).expect_status(StatusCode::OK);
    t.head(&by_digest).expect_status(StatusCode::OK);

    t.delete(&by_digest).expect_status(StatusCode::ACCEPTED);
    t.get(&by_digest)
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    t.head(&by_digest).expect_status(StatusCode::NOT_FOUND);
    t.get(&format!("/v2/{REPO}/manifests/v1"))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[test]
fn a_deleted_tag_and_an_unlinked_blob_are_forgotten_at_once() {
    let (t, _) = cached_registry();
    t.push_image(REPO, "v1", "one");
    let blob = t.push_blob(REPO, b"some bytes");
    let blob_url = format!("/v2/{REPO}/blobs/{}", blob.digest);
    digest_of_tag(&t, "v1");
    t.get(&blob_url).expect_status(StatusCode::OK);

    t.delete(&format!("/v2/{REPO}/manifests/v1"))
        .expect_status(StatusCode::ACCEPTED);
    t.get(&format!("/v2/{REPO}/manifests/v1"))
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    t.delete(&blob_url).expect_status(StatusCode::ACCEPTED);
    t.get(&blob_url)
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    t.head(&blob_url).expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn a_cached_link_older_than_half_the_grace_window_is_refreshed_by_head() {
    // A grace window whose half is within the cache's lifetime of links.
    let config = Config {
        gc_grace: Duration::from_secs(600),
        ..Config::default()
    };
    let (t, round_trips) = cached_registry_with(config.clone());
    let blob = t.push_blob(REPO, b"layer");
    let url = format!("/v2/{REPO}/blobs/{}", blob.digest);
    t.head(&url).expect_status(StatusCode::OK);
    round_trips.store(0, Ordering::SeqCst);
    t.clock
        .advance(config.gc_grace / 2 + Duration::from_secs(1));
    t.head(&url).expect_status(StatusCode::OK);
    assert_eq!(round_trips.load(Ordering::SeqCst), 1, "one refresh");
    t.head(&url).expect_status(StatusCode::OK);
    assert_eq!(round_trips.load(Ordering::SeqCst), 1, "then cached again");
}

// ---------------------------------------------------------------------------------------------
// With authentication on

const SERVICE: &str = "openregistry";

fn user_with_token(t: &TestRegistry, name: &str) -> String {
    block_on(store::create_user(
        t.ports.sql.as_ref(),
        name,
        false,
        START_MS,
    ))
    .expect("user");
    let (_, token) = block_on(store::create_token(
        t.ports.sql.as_ref(),
        t.ports.random.as_ref(),
        name,
        "ci",
        &[],
        None,
        START_MS,
    ))
    .expect("token");
    token
}

/// A bearer token for `scope`, as `GET /token` grants it to `user`.
fn bearer(t: &TestRegistry, user: &str, password: &str, scope: &str) -> String {
    let reply = t.get_with(
        &format!("/token?service={SERVICE}&scope={scope}"),
        &[("authorization", &basic(user, password))],
    );
    reply.expect_status(StatusCode::OK);
    format!(
        "Bearer {}",
        reply.json()["token"].as_str().expect("a token")
    )
}

#[test]
fn a_private_repositorys_cached_blob_is_refused_to_a_token_without_pull() {
    let mut t = TestRegistry::new();
    let alice = user_with_token(&t, "alice");
    let bob = user_with_token(&t, "bob");
    // Pushed while open; the repository is private (the default).
    let blob = t.push_blob("alice/app", b"private bytes");
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::default());
    t.registry = Registry::new(t.ports.clone(), Config::default())
        .with_auth(AuthSettings::new(SERVICE, test_signer(7)).expect("settings"))
        .with_cache(cache, CachePolicy::default());
    let url = format!("/v2/alice/app/blobs/{}", blob.digest);
    let scope = "repository:alice/app:pull";

    let alices = bearer(&t, "alice", &alice, scope);
    let reply = t.get_with(&url, &[("authorization", &alices)]);
    reply.expect_status(StatusCode::OK);
    assert_eq!(reply.body, blob.bytes, "served, and now cached");
    t.get_with(&url, &[("authorization", &alices)])
        .expect_status(StatusCode::OK);

    let bobs = bearer(&t, "bob", &bob, scope);
    t.get_with(&url, &[("authorization", &bobs)])
        .expect_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    t.head(&url).expect_status(StatusCode::UNAUTHORIZED);
}

/// An anonymous `GET /token` for `scope`: the token's `access` claim as granted.
fn anonymous_access(t: &TestRegistry, scope: &str) -> serde_json::Value {
    let reply = t.get(&format!("/token?service={SERVICE}&scope={scope}"));
    reply.expect_status(StatusCode::OK);
    let token = reply.json()["token"].as_str().expect("a token").to_owned();
    let payload = token
        .strip_prefix("v4.public.")
        .and_then(|p| p.split('.').next())
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .expect("a PASETO v4.public token");
    // The claims are the payload without its 64-byte signature.
    serde_json::from_slice(&payload[..payload.len() - 64]).expect("JSON claims")
}

fn set_visibility(t: &TestRegistry, user: &str, password: &str, repo: &str, visibility: &str) {
    t.send(
        http::Method::PUT,
        &format!("/api/repositories/{repo}/visibility"),
        &[
            ("authorization", &basic(user, password)),
            ("content-type", "application/json"),
        ],
        format!("{{\"visibility\":\"{visibility}\"}}")
            .into_bytes()
            .into(),
    )
    .expect_status(StatusCode::OK);
}

#[test]
fn an_anonymous_pull_is_decided_without_the_database_when_warm_and_at_once_after_a_visibility_change(
) {
    let (mut t, round_trips) = cached_registry();
    let alice = user_with_token(&t, "alice");
    t.push_blob("alice/app", b"public bytes");
    t.registry = t
        .registry
        .clone()
        .with_auth(AuthSettings::new(SERVICE, test_signer(7)).expect("settings"));
    let scope = "repository:alice/app:pull";
    set_visibility(&t, "alice", &alice, "alice/app", "public");

    let first = anonymous_access(&t, scope);
    assert_eq!(first["access"][0]["actions"], serde_json::json!(["pull"]));
    let before = round_trips.load(Ordering::SeqCst);
    let warm = anonymous_access(&t, scope);
    assert_eq!(warm["access"], first["access"]);
    assert_eq!(
        round_trips.load(Ordering::SeqCst),
        before,
        "a warm anonymous token request asks the database nothing"
    );

    // Made private here: the next anonymous token grants nothing, at once.
    set_visibility(&t, "alice", &alice, "alice/app", "private");
    let after = anonymous_access(&t, scope);
    assert_eq!(after["access"], serde_json::json!([]));
}

#[test]
fn a_small_blob_is_served_whole_and_by_range_from_its_cached_bytes() {
    let (t, _) = cached_registry();
    let blob = t.push_blob(REPO, b"0123456789");
    let url = format!("/v2/{REPO}/blobs/{}", blob.digest);
    for _ in 0..2 {
        let whole = t.get(&url);
        whole.expect_status(StatusCode::OK);
        assert_eq!(&whole.body[..], b"0123456789");
        let part = t.get_with(&url, &[("range", "bytes=2-4")]);
        part.expect_status(StatusCode::PARTIAL_CONTENT);
        assert_eq!(&part.body[..], b"234");
        assert_eq!(part.must_header("content-range"), "bytes 2-4/10");
        t.get_with(&url, &[("range", "bytes=20-30")])
            .expect_status(StatusCode::RANGE_NOT_SATISFIABLE);
    }
}

#[test]
fn a_remembered_token_is_checked_against_the_clock_and_refused_once_expired() {
    let mut t = TestRegistry::new();
    let alice = user_with_token(&t, "alice");
    let blob = t.push_blob("alice/app", b"private bytes");
    t.registry = Registry::new(t.ports.clone(), Config::default())
        .with_auth(AuthSettings::new(SERVICE, test_signer(7)).expect("settings"))
        .with_verified_tokens(Arc::new(MemoryCache::default()));
    let url = format!("/v2/alice/app/blobs/{}", blob.digest);
    let token = bearer(&t, "alice", &alice, "repository:alice/app:pull");
    for _ in 0..2 {
        t.get_with(&url, &[("authorization", &token)])
            .expect_status(StatusCode::OK);
    }
    // Another token than the one remembered: checked in full (a flipped character breaks it).
    let mut forged = token.clone();
    let last = forged.pop().expect("a character");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    t.get_with(&url, &[("authorization", &forged)])
        .expect_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    t.clock.advance(Duration::from_secs(301));
    t.get_with(&url, &[("authorization", &token)])
        .expect_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}
