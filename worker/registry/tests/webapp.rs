//! The web app's server side, through the registry's HTTP interface (the browser ceremonies
//! themselves run in Chromium: tests/e2e/test_webapp.py):
//!
//! - the web app's files are served at `/` and `/ui/…` with a strict Content-Security-Policy;
//! - sign-up is off unless configured, and ceremonies only come from the registry's own origin,
//!   as JSON;
//! - a ceremony is answered once and within its lifetime: an unknown, finished or expired one is
//!   refused with 401 before any credential is looked at;
//! - a session cookie signs in to `/api/` (state changes only with its CSRF secret, from the
//!   same origin) and to `/token`, and is never a registry bearer token;
//! - `/api/repositories/<name>/tags` lists tags with push times, authorized as `tags/list`.

// Test code indexes what it just built: a panic is a failing test.
#![allow(clippy::indexing_slicing, clippy::string_slice)]

mod common;

use std::time::Duration;

use common::*;
use futures_executor::block_on;
use http::StatusCode;
use openregistry::auth::session::{Session, COOKIE, CSRF_HEADER};
use openregistry::auth::store;
use openregistry::auth::AuthSettings;
use openregistry::memory::SeededRandom;
use openregistry::{Config, Registry};
use serde_json::json;

const SERVICE: &str = "openregistry";
const ORIGIN: &str = "https://registry.example";

fn registry(signup: bool) -> TestRegistry {
    let mut t = TestRegistry::new();
    let settings = AuthSettings::new(SERVICE, test_signer(5))
        .expect("settings")
        .with_passkeys(ORIGIN, signup)
        .expect("passkeys");
    t.registry = Registry::new(t.ports.clone(), Config::default()).with_auth(settings);
    t
}

fn json_post(
    t: &TestRegistry,
    path: &str,
    extra: &[(&str, &str)],
    body: serde_json::Value,
) -> Reply {
    let mut headers = vec![("content-type", "application/json"), ("origin", ORIGIN)];
    headers.extend_from_slice(extra);
    t.post(path, &headers, body.to_string().into_bytes())
}

/// A session cookie for `user` (who must exist), as a finished sign-in would set it.
fn session_for(_t: &TestRegistry, user: &str) -> (String, Session) {
    let session = Session::new(user, SERVICE, &SeededRandom::default(), START_MS);
    let token = session.sign(&test_signer(5)).expect("signed");
    (format!("{COOKIE}={token}"), session)
}

fn create_user(t: &TestRegistry, name: &str) {
    block_on(store::create_user(
        t.ports.sql.as_ref(),
        name,
        false,
        START_MS,
    ))
    .expect("user");
}

#[test]
fn the_web_app_is_served_at_the_root_with_a_strict_content_security_policy() {
    let t = registry(false);
    let page = t.get("/");
    page.expect_status(StatusCode::OK);
    assert!(page.must_header("content-type").starts_with("text/html"));
    let csp = page.must_header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(page.must_header("x-frame-options"), "DENY");
    let script = t.get("/ui/app.js");
    script.expect_status(StatusCode::OK);
    let etag = script.must_header("etag").to_owned();
    t.get_with("/ui/app.js", &[("if-none-match", &etag)])
        .expect_status(StatusCode::NOT_MODIFIED);
    t.get("/ui/nothing.js").expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn sign_up_is_closed_unless_configured() {
    let t = registry(false);
    let r = json_post(
        &t,
        "/api/session/signup/start",
        &[],
        json!({ "user": "alice" }),
    );
    r.expect_status(StatusCode::FORBIDDEN);
    assert_eq!(t.get("/api/session").json()["signup"], json!(false));
}

#[test]
fn a_sign_up_ceremony_starts_with_options_for_this_relying_party() {
    let t = registry(true);
    let r = json_post(
        &t,
        "/api/session/signup/start",
        &[],
        json!({ "user": "alice" }),
    );
    r.expect_status(StatusCode::OK);
    let answer = r.json();
    let options = &answer["options"]["publicKey"];
    assert_eq!(options["rp"]["id"], json!("registry.example"));
    assert_eq!(options["attestation"], json!("none"));
    assert_eq!(
        options["authenticatorSelection"]["userVerification"],
        json!("required")
    );
    let algorithms: Vec<i64> = options["pubKeyCredParams"]
        .as_array()
        .expect("params")
        .iter()
        .map(|p| p["alg"].as_i64().expect("alg"))
        .collect();
    assert!(algorithms.contains(&-7), "ES256 is offered: {algorithms:?}");
    assert!(answer["ceremony"].as_str().is_some_and(|c| c.len() == 32));
    // A taken or malformed name is refused before any ceremony starts.
    create_user(&t, "bob");
    json_post(
        &t,
        "/api/session/signup/start",
        &[],
        json!({ "user": "bob" }),
    )
    .expect_status(StatusCode::CONFLICT);
    json_post(
        &t,
        "/api/session/signup/start",
        &[],
        json!({ "user": "Not Valid" }),
    )
    .expect_status(StatusCode::BAD_REQUEST);
}

#[test]
fn ceremonies_come_from_the_registrys_origin_as_json() {
    let t = registry(true);
    let body = json!({ "user": "alice" }).to_string().into_bytes();
    let cross = t.post(
        "/api/session/signup/start",
        &[
            ("content-type", "application/json"),
            ("origin", "https://evil.example"),
        ],
        body.clone(),
    );
    cross.expect_status(StatusCode::FORBIDDEN);
    let site = t.post(
        "/api/session/start",
        &[
            ("content-type", "application/json"),
            ("sec-fetch-site", "cross-site"),
        ],
        body.clone(),
    );
    site.expect_status(StatusCode::FORBIDDEN);
    let form = t.post(
        "/api/session/signup/start",
        &[("content-type", "text/plain"), ("origin", ORIGIN)],
        body,
    );
    form.expect_status(StatusCode::BAD_REQUEST);
}

/// A finish request with a syntactically valid assertion that nobody signed.
fn unsigned_assertion(ceremony: &str) -> serde_json::Value {
    json!({
        "ceremony": ceremony,
        "credential": {
            "id": "AAAA", "rawId": "AAAA", "type": "public-key",
            "response": { "authenticatorData": "AAAA", "clientDataJSON": "AAAA", "signature": "AAAA", "userHandle": null },
            "extensions": {}
        }
    })
}

/// A finish request with a syntactically valid attestation that no authenticator made.
fn unsigned_attestation(ceremony: &str) -> serde_json::Value {
    json!({
        "ceremony": ceremony,
        "credential": {
            "id": "AAAA", "rawId": "AAAA", "type": "public-key",
            "response": { "attestationObject": "AAAA", "clientDataJSON": "AAAA" },
            "extensions": {}
        }
    })
}

#[test]
fn a_ceremony_is_answered_once_and_not_after_it_expired() {
    let t = registry(true);
    // Unknown (never started, or malformed ids).
    for id in ["0123456789abcdef0123456789abcdef", "../../etc/passwd"] {
        let r = json_post(&t, "/api/session/finish", &[], unsigned_assertion(id));
        r.expect_status(StatusCode::UNAUTHORIZED);
        assert!(r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such ceremony")));
    }
    // A started ceremony answered wrongly is gone: a second answer finds nothing.
    create_user(&t, "alice");
    let started = json_post(
        &t,
        "/api/session/signup/start",
        &[],
        json!({ "user": "carol" }),
    )
    .json();
    let ceremony = started["ceremony"].as_str().expect("id").to_owned();
    let first = json_post(
        &t,
        "/api/session/finish",
        &[],
        unsigned_assertion(&ceremony),
    );
    first.expect_status(StatusCode::UNAUTHORIZED);
    let again = json_post(
        &t,
        "/api/session/finish",
        &[],
        unsigned_assertion(&ceremony),
    );
    again.expect_status(StatusCode::UNAUTHORIZED);
    assert!(again.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("no such ceremony")));
    // Expired: past five minutes it is refused, whatever the store still holds.
    let started = json_post(
        &t,
        "/api/session/signup/start",
        &[],
        json!({ "user": "dave" }),
    )
    .json();
    let ceremony = started["ceremony"].as_str().expect("id").to_owned();
    t.clock.advance(Duration::from_secs(301));
    let late = json_post(
        &t,
        "/api/session/signup/finish",
        &[],
        unsigned_attestation(&ceremony),
    );
    late.expect_status(StatusCode::UNAUTHORIZED);
    assert!(late.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("no such ceremony")));
}

#[test]
fn a_session_signs_in_to_the_api_and_state_changes_need_its_csrf_secret() {
    let t = registry(true);
    create_user(&t, "alice");
    let (cookie, session) = session_for(&t, "alice");
    let me = t.get_with("/api/session", &[("cookie", &cookie)]);
    me.expect_status(StatusCode::OK);
    assert_eq!(me.json()["user"], json!("alice"));
    assert_eq!(me.json()["csrf"], json!(session.csrf));
    t.get_with("/api/tokens", &[("cookie", &cookie)])
        .expect_status(StatusCode::OK);
    let create = |extra: &[(&str, &str)]| {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend_from_slice(extra);
        json_post(&t, "/api/tokens", &headers, json!({ "name": "ci" }))
    };
    create(&[]).expect_status(StatusCode::FORBIDDEN);
    create(&[(CSRF_HEADER, "00")]).expect_status(StatusCode::FORBIDDEN);
    create(&[(CSRF_HEADER, &session.csrf)]).expect_status(StatusCode::CREATED);
    // A deleted user's session signs in no more.
    block_on(store::delete_user(t.ports.sql.as_ref(), "alice")).expect("deleted");
    t.get_with("/api/tokens", &[("cookie", &cookie)])
        .expect_status(StatusCode::UNAUTHORIZED);
    assert_eq!(
        t.get_with("/api/session", &[("cookie", &cookie)]).json()["user"],
        json!(null)
    );
}

#[test]
fn a_session_mints_registry_tokens_but_is_not_one() {
    let t = registry(true);
    create_user(&t, "alice");
    let (cookie, _) = session_for(&t, "alice");
    let token = t
        .get_with(
            &format!("/token?service={SERVICE}&scope=repository:alice/app:pull,push"),
            &[("cookie", &cookie)],
        )
        .expect_status(StatusCode::OK)
        .json();
    let access = token["token"].as_str().expect("a token").to_owned();
    t.get_with(
        "/v2/alice/app/tags/list",
        &[("authorization", &format!("Bearer {access}"))],
    )
    .expect_status(StatusCode::NOT_FOUND);
    let session_token = cookie.split_once('=').expect("cookie").1;
    t.get_with(
        "/v2/alice/app/tags/list",
        &[("authorization", &format!("Bearer {session_token}"))],
    )
    .expect_status(StatusCode::UNAUTHORIZED);
    // And it expires.
    t.clock.advance(Duration::from_secs(8 * 3600 + 1));
    t.get_with("/api/tokens", &[("cookie", &cookie)])
        .expect_status(StatusCode::UNAUTHORIZED);
}

#[test]
fn passkeys_are_listed_and_the_last_one_is_never_removed() {
    let t = registry(true);
    create_user(&t, "alice");
    let (cookie, session) = session_for(&t, "alice");
    let list = t.get_with("/api/passkeys", &[("cookie", &cookie)]);
    list.expect_status(StatusCode::OK);
    assert_eq!(list.json()["passkeys"], json!([]));
    let gone = t.send(
        http::Method::DELETE,
        "/api/passkeys/AAAA",
        &[
            ("cookie", &cookie),
            (CSRF_HEADER, &session.csrf),
            ("origin", ORIGIN),
        ],
        openregistry::Body::Empty,
    );
    gone.expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn tags_are_listed_with_their_push_times_for_whoever_may_pull() {
    let t = TestRegistry::new();
    let config = t.push_blob("lib/app", br#"{"architecture":"amd64","os":"linux"}"#);
    let layer = t.push_blob("lib/app", b"layer");
    t.put_manifest("lib/app", "v1", &image_manifest(&config, &[&layer]))
        .expect_status(StatusCode::CREATED);
    let r = t.get("/api/repositories/lib/app/tags");
    r.expect_status(StatusCode::OK);
    let tags = r.json()["tags"].clone();
    assert_eq!(tags[0]["name"], json!("v1"));
    assert_eq!(tags[0]["pushed_at_ms"], json!(START_MS));
    assert!(tags[0]["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    // A repository that does not exist is 404, as tags/list.
    t.get("/api/repositories/lib/none/tags")
        .expect_status(StatusCode::NOT_FOUND);
    // With authentication on, as tags/list: a private repository asks for a token.
    let private = registry(false);
    let r = private.get("/api/repositories/lib/app/tags");
    r.expect_status(StatusCode::UNAUTHORIZED);
    assert!(r.must_header("www-authenticate").starts_with("Bearer "));
}
