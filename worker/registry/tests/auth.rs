//! Authentication settings and the token API, through the registry's HTTP interface:
//!
//! - key rotation: tokens signed with an earlier key are accepted while its public key is listed
//!   (`AuthSettings::accept_public_keys`, `OPENREGISTRY_TOKEN_PUBLIC_KEYS`), and refused with 401
//!   once it is not; a malformed list is a configuration error that names the entry;
//! - an empty bearer is no token (a challenge without `error`), whatever whitespace it kept;
//! - `/api/tokens` is for the user's full rights: a scoped access token may neither list, create
//!   nor revoke tokens (403 with the account API's JSON error `forbidden`).

// Test code indexes what it just built: a panic is a failing test.
#![allow(clippy::indexing_slicing, clippy::string_slice)]

mod common;

use common::*;
use futures_executor::block_on;
use http::StatusCode;
use openregistry::auth::store;
use openregistry::auth::token::{self, Signer};
use openregistry::auth::{AuthSettings, PublicKeyListError, ScopePattern, TokenError};
use openregistry::{Body, Config, Registry};
use serde_json::json;

const SERVICE: &str = "openregistry";

fn signer(secret: &str) -> Signer {
    Signer::from_paserk(secret).expect("a valid k4.secret key")
}

fn public_key(secret: &str) -> String {
    signer(secret).public_paserk().expect("a public key")
}

/// Settings signing with `secret` and also accepting the keys in `public_keys`.
fn settings(secret: &str, public_keys: Option<&str>) -> AuthSettings {
    let mut settings = AuthSettings::new(SERVICE, signer(secret)).expect("settings");
    if let Some(list) = public_keys {
        settings.accept_public_keys(list).expect("a valid key list");
    }
    settings
}

/// The registry (re)started over the same state with these settings.
fn restart(t: &mut TestRegistry, settings: AuthSettings) {
    t.registry = Registry::new(t.ports.clone(), Config::default()).with_auth(settings);
}

fn auth_registry(secret: &str) -> TestRegistry {
    let mut t = TestRegistry::new();
    restart(&mut t, settings(secret, None));
    t
}

fn create_user(t: &TestRegistry, name: &str, admin: bool) {
    block_on(store::create_user(
        t.ports.sql.as_ref(),
        name,
        admin,
        START_MS,
    ))
    .expect("user");
}

/// A new access token (`orp_…`) of `user`, limited to `scopes` if any.
fn access_token(t: &TestRegistry, user: &str, name: &str, scopes: &[&str]) -> String {
    let scopes: Vec<ScopePattern> = scopes
        .iter()
        .map(|s| ScopePattern::parse(s).expect("a valid scope pattern"))
        .collect();
    let (_, token) = block_on(store::create_token(
        t.ports.sql.as_ref(),
        t.ports.random.as_ref(),
        user,
        name,
        &scopes,
        None,
        START_MS,
    ))
    .expect("token");
    token
}

/// `GET /token` with Basic credentials; the whole JSON answer (asserting 200).
fn token_response(t: &TestRegistry, user: &str, password: &str, query: &str) -> serde_json::Value {
    t.get_with(
        &format!("/token?service={SERVICE}&{query}"),
        &[("authorization", &basic(user, password))],
    )
    .expect_status(StatusCode::OK)
    .json()
}

fn bearer_header(token: &str) -> String {
    format!("Bearer {token}")
}

fn pull_blob(t: &TestRegistry, repo: &str, digest: &str, token: &str) -> Reply {
    t.get_with(
        &format!("/v2/{repo}/blobs/{digest}"),
        &[("authorization", &bearer_header(token))],
    )
}

fn refresh(t: &TestRegistry, refresh_token: &str) -> Reply {
    let form = format!(
        "grant_type=refresh_token&service={SERVICE}&refresh_token={refresh_token}\
         &scope=repository:alice/app:pull"
    );
    t.post(
        "/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        form.into_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// Key rotation

#[test]
fn a_token_of_a_rotated_out_key_verifies_while_its_public_key_is_listed() {
    let (old, new) = (secret_key(1), secret_key(2));
    let mut t = auth_registry(&old);
    create_user(&t, "alice", false);
    let orp = access_token(&t, "alice", "laptop", &[]);
    let answer = token_response(
        &t,
        "alice",
        &orp,
        "scope=repository:alice/app:pull,push&offline_token=true",
    );
    let old_token = answer["token"].as_str().expect("a token").to_owned();
    let old_refresh = answer["refresh_token"].as_str().expect("a refresh token");
    let blob = b"pushed before the rotation";
    let digest = sha256(blob);
    let len = blob.len().to_string();
    t.post(
        &format!("/v2/alice/app/blobs/uploads/?digest={digest}"),
        &[
            ("authorization", &bearer_header(&old_token)),
            ("content-type", "application/octet-stream"),
            ("content-length", &len),
        ],
        blob.to_vec(),
    )
    .expect_status(StatusCode::CREATED);

    // Signing with the new key, the old one's public key listed: old tokens still work…
    restart(&mut t, settings(&new, Some(&public_key(&old))));
    let reply = pull_blob(&t, "alice/app", &digest, &old_token);
    reply.expect_status(StatusCode::OK);
    assert_eq!(&reply.body[..], blob);
    refresh(&t, old_refresh).expect_status(StatusCode::OK);
    // …and new ones are signed with the new key only.
    let new_token = token_response(&t, "alice", &orp, "scope=repository:alice/app:pull")["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let new_keys = [signer(&new).verifier_key().expect("key")];
    let old_keys = [signer(&old).verifier_key().expect("key")];
    assert!(token::verify(&new_token, &new_keys, SERVICE, START_MS).is_ok());
    assert_eq!(
        token::verify(&new_token, &old_keys, SERVICE, START_MS),
        Err(TokenError::UnknownKey)
    );
    pull_blob(&t, "alice/app", &digest, &new_token).expect_status(StatusCode::OK);

    // Without the old key listed, its tokens are refused like any unknown key's.
    restart(&mut t, settings(&new, None));
    let reply = pull_blob(&t, "alice/app", &digest, &old_token);
    reply.expect_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert!(
        reply
            .must_header("www-authenticate")
            .ends_with(",scope=\"repository:alice/app:pull\",error=\"invalid_token\""),
        "{:?}",
        reply.headers
    );
    let message = reply.json()["errors"][0]["message"].clone();
    assert!(
        message.as_str().is_some_and(|m| m.contains("unknown key")),
        "{message}"
    );
    refresh(&t, old_refresh).expect_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    pull_blob(&t, "alice/app", &digest, &new_token).expect_status(StatusCode::OK);
}

#[test]
fn a_listed_public_key_only_verifies_it_never_signs() {
    let (old, new) = (secret_key(3), secret_key(4));
    let settings = settings(&new, Some(&public_key(&old)));
    assert_eq!(settings.keys.len(), 2);
    let signed = settings
        .signer
        .as_ref()
        .expect("a signer")
        .sign(&token::Claims {
            iss: SERVICE.into(),
            sub: "alice".into(),
            aud: SERVICE.into(),
            exp: token::format_time(START_MS + 60_000),
            nbf: token::format_time(START_MS),
            iat: token::format_time(START_MS),
            jti: "j".into(),
            access: Vec::new(),
            purpose: None,
            tid: None,
        })
        .expect("signs");
    let old_keys = [signer(&old).verifier_key().expect("key")];
    assert_eq!(
        token::verify(&signed, &old_keys, SERVICE, START_MS),
        Err(TokenError::UnknownKey)
    );
    assert!(token::verify(&signed, &settings.keys, SERVICE, START_MS).is_ok());
}

#[test]
fn public_key_lists_are_trimmed_deduplicated_and_may_be_blank() {
    let (signing, a, b) = (secret_key(5), secret_key(6), secret_key(7));
    let mut s = settings(&signing, None);
    s.accept_public_keys("").expect("blank");
    s.accept_public_keys(" \n ").expect("blank");
    assert_eq!(s.keys.len(), 1);
    let list = format!(
        " {} ,\n{},{}, {}",
        public_key(&a),
        public_key(&b),
        public_key(&a),
        public_key(&signing)
    );
    s.accept_public_keys(&list).expect("a valid list");
    assert_eq!(s.keys.len(), 3, "the signing key and a and b, once each");
    let kids: Vec<&str> = s.keys.iter().map(|k| k.kid()).collect();
    assert!(
        kids.iter().all(|kid| kid.starts_with("k4.pid.")),
        "{kids:?}"
    );
}

#[test]
fn malformed_public_key_lists_are_configuration_errors_naming_the_entry() {
    let (signing, a, b) = (secret_key(8), secret_key(9), secret_key(10));
    let (pa, pb) = (public_key(&a), public_key(&b));
    let cases: Vec<(String, PublicKeyListError)> = vec![
        (
            "garbage".into(),
            PublicKeyListError::NotAPublicKey {
                entry: 1,
                header: "not PASERK".into(),
            },
        ),
        (format!("{pa},"), PublicKeyListError::Empty { entry: 2 }),
        (
            format!("{pa},,{pb}"),
            PublicKeyListError::Empty { entry: 2 },
        ),
        (
            format!("{pa},{pb},{b}"),
            PublicKeyListError::SecretKey {
                entry: 3,
                header: "k4.secret".into(),
            },
        ),
        (
            format!("{pa},k4.local.{}", "A".repeat(43)),
            PublicKeyListError::SecretKey {
                entry: 2,
                header: "k4.local".into(),
            },
        ),
        (
            "k4.public.AAAA".into(),
            PublicKeyListError::NotAPublicKey {
                entry: 1,
                header: "k4.public".into(),
            },
        ),
        (
            format!("k3.public.{}", &pa["k4.public.".len()..]),
            PublicKeyListError::NotAPublicKey {
                entry: 1,
                header: "k3.public".into(),
            },
        ),
        (
            pa.replace(',', "").replace("k4.public.", "k4.public.!"),
            PublicKeyListError::NotAPublicKey {
                entry: 1,
                header: "k4.public".into(),
            },
        ),
    ];
    for (list, expected) in cases {
        let mut s = settings(&signing, None);
        let error = s.accept_public_keys(&list).expect_err(&list);
        assert_eq!(error, expected, "{list}");
        assert_eq!(s.keys.len(), 1, "nothing is added from a bad list: {list}");
        let message = error.to_string();
        assert!(
            !message.contains(&b[b.len() - 20..]) && !message.contains(&pa[12..]),
            "the message shows key material: {message}"
        );
        assert!(
            message.contains(&format!("entry {}", entry_of(&expected))),
            "{message}"
        );
    }
}

fn entry_of(error: &PublicKeyListError) -> usize {
    match error {
        PublicKeyListError::Empty { entry }
        | PublicKeyListError::SecretKey { entry, .. }
        | PublicKeyListError::NotAPublicKey { entry, .. } => *entry,
    }
}

#[test]
fn an_empty_bearer_is_no_token() {
    let t = auth_registry(&secret_key(12));
    for value in ["Bearer ", "Bearer   ", "bearer \t"] {
        let reply = t.get_with("/v2/alice/app/tags/list", &[("authorization", value)]);
        reply.expect_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        assert_eq!(
            reply.must_header("www-authenticate"),
            "Bearer realm=\"http://localhost/token\",service=\"openregistry\",\
             scope=\"repository:alice/app:pull\"",
            "{value:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// /api/tokens and scoped access tokens

fn api(t: &TestRegistry, method: http::Method, path: &str, user: &str, password: &str) -> Reply {
    let body = if method == http::Method::POST {
        json!({ "name": "made-by-api" }).to_string().into_bytes()
    } else {
        Vec::new()
    };
    t.send(
        method,
        &format!("/api/{path}"),
        &[
            ("authorization", &basic(user, password)),
            ("content-type", "application/json"),
        ],
        body.into(),
    )
}

#[test]
fn a_scoped_access_token_may_not_list_create_or_revoke_tokens() {
    use http::Method;
    let t = auth_registry(&secret_key(11));
    create_user(&t, "carol", false);
    create_user(&t, "root", true);
    let full = access_token(&t, "carol", "main", &[]);
    let ci = access_token(&t, "carol", "ci", &["repository:carol/ci/*:pull,push"]);
    let star = access_token(&t, "carol", "star", &["repository:*:pull,push,delete"]);
    let root_scoped = access_token(&t, "root", "ci", &["repository:*:pull"]);
    let full_id = store::token_id(&full).expect("an id");
    let ci_id = store::token_id(&ci).expect("an id");

    for (user, scoped) in [("carol", &ci), ("carol", &star), ("root", &root_scoped)] {
        for (method, path) in [
            (Method::GET, "tokens".to_owned()),
            (Method::POST, "tokens".to_owned()),
            (Method::DELETE, format!("tokens/{full_id}")),
            (Method::DELETE, format!("tokens/{ci_id}")),
            (Method::DELETE, "tokens/0000000000000000".to_owned()),
        ] {
            let reply = api(&t, method, &path, user, scoped);
            reply.expect_error(StatusCode::FORBIDDEN, "forbidden");
            assert!(reply.header("www-authenticate").is_none());
        }
    }

    // Nothing was revoked or created by the refused calls; the full token manages them all.
    let listed = api(&t, Method::GET, "tokens", "carol", &full);
    listed.expect_status(StatusCode::OK);
    let tokens = listed.json()["tokens"].clone();
    let tokens = tokens.as_array().expect("a list");
    assert_eq!(tokens.len(), 3);
    assert!(tokens.iter().all(|t| t["revoked_at_ms"].is_null()));
    api(&t, Method::POST, "tokens", "carol", &full).expect_status(StatusCode::CREATED);
    api(
        &t,
        Method::DELETE,
        &format!("tokens/{ci_id}"),
        "carol",
        &full,
    )
    .expect_status(StatusCode::OK);
    // A revoked token no longer signs in at all.
    api(&t, Method::GET, "tokens", "carol", &ci)
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // The visibility API stays within a scoped token's patterns (unchanged by this rule).
    api(
        &t,
        Method::PUT,
        "repositories/carol/app/visibility",
        "carol",
        &star,
    )
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

// ---------------------------------------------------------------------------------------------
// Hostile paths on every route

/// Paths with empty segments, dot segments, missing parts, percent-encoding and huge parts, for
/// every route the registry has (and some it does not).
fn hostile_paths() -> Vec<String> {
    let mut paths: Vec<String> = [
        "/api/repositories/visibility",
        "/api/repositories//visibility",
        "/api/repositories/",
        "/api/repositories",
        "/api/repositories/carol/app/visibility/",
        "/api/repositories/%2e%2e/visibility",
        "/api/repositories/carol/../bob/app/visibility",
        "/api/repositories/Carol%20App/visibility",
        "/api/",
        "/api",
        "/api//",
        "/api/tokens/",
        "/api/tokens//x",
        "/api/tokens/%00",
        "/api/tokens/%C3%A9",
        "/token/",
        "/token/x",
        "/v2",
        "/v2//",
        "/v2/_catalog/x",
        "/v2//manifests/x",
        "/v2/manifests/",
        "/v2/a/manifests/",
        "/v2/a/manifests//",
        "/v2/a//manifests/x",
        "/v2/a/../b/manifests/x",
        "/v2/%2e%2e/a/tags/list",
        "/v2/a/tags/list/",
        "/v2/a/tags/",
        "/v2/a/blobs/",
        "/v2/a/blobs/sha256:",
        "/v2/a/blobs/%73ha256:00",
        "/v2/a//blobs/uploads/",
        "/v2/a/blobs/uploads//",
        "/v2/a/blobs/uploads/../../x",
        "/v2/a/blobs/uploads/zz.99999999999999999999999.1",
        "/v2/a/blobs/uploads/.",
        "/v2/a/blobs/uploads/%C3%A9.1",
        "/v2/a/referrers/",
        "/v2/a/referrers/sha256:zz",
        "/v2/%C3%A9/manifests/%C3%BC",
        "/v2/a/manifests/%FF%FE",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    paths.push(format!("/v2/{}manifests/x", "a/".repeat(300)));
    paths.push(format!("/v2/a/manifests/{}", "x".repeat(10_000)));
    paths.push(format!("/v2/a/blobs/sha256:{}", "0".repeat(10_000)));
    paths.push(format!("/api/repositories/{}/visibility", "a/".repeat(300)));
    paths.push(format!("/api/tokens/{}", "9".repeat(10_000)));
    paths
}

/// An answer that is an error (no 5xx, which would be the server's fault), and a clean one: a
/// JSON body that is an OCI error document or, on `/api/`, the account API's error.
fn assert_clean_refusal(reply: &Reply, what: &str) {
    assert!(
        !reply.status.is_server_error(),
        "{what}: answered {}",
        reply.status
    );
    if reply.status.is_success() || reply.body.is_empty() {
        return;
    }
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    let body: serde_json::Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON: {e}"));
    let oci = body["errors"][0]["code"].is_string();
    let api = body["error"]["code"].is_string() && body["error"]["message"].is_string();
    assert!(oci || api, "{what}: not an error document: {body}");
    assert_eq!(
        api,
        what.contains(" /api"),
        "{what}: the wrong kind of error: {body}"
    );
}

#[test]
fn every_route_answers_hostile_paths_with_a_clean_error_and_never_panics() {
    use http::Method;
    let open = TestRegistry::new();
    let t = auth_registry(&secret_key(12));
    create_user(&t, "carol", false);
    let full = access_token(&t, "carol", "main", &[]);
    let bearer = token_response(
        &t,
        "carol",
        &full,
        "scope=repository:carol/app:pull,push,delete&scope=repository:a:pull,push,delete",
    )["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let credentials = [
        ("no credentials", None),
        ("basic", Some(basic("carol", &full))),
        ("bearer", Some(format!("Bearer {bearer}"))),
    ];
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
    ];
    for path in hostile_paths() {
        for method in &methods {
            for (registry, mode) in [(&open, "open"), (&t, "auth")] {
                for (who, authorization) in &credentials {
                    let mut headers = vec![("content-type", "application/json")];
                    if let Some(value) = authorization {
                        headers.push(("authorization", value.as_str()));
                    }
                    let body = if *method == Method::GET || *method == Method::HEAD {
                        Body::Empty
                    } else {
                        Body::from(r#"{"visibility":"public","name":"x"}"#)
                    };
                    let reply = registry.send(method.clone(), &path, &headers, body);
                    let shown: String = path.chars().take(80).collect();
                    assert_clean_refusal(&reply, &format!("{mode}, {who}: {method} {shown}"));
                }
            }
        }
    }
}

#[test]
fn visibility_without_a_repository_is_not_found_not_a_panic() {
    // Regression: this path used to slice `path[13..12]` and panic the handler.
    let t = auth_registry(&secret_key(13));
    create_user(&t, "carol", false);
    let full = access_token(&t, "carol", "main", &[]);
    t.put(
        "/api/repositories/visibility",
        &[
            ("authorization", &basic("carol", &full)),
            ("content-type", "application/json"),
        ],
        Body::from(r#"{"visibility":"public"}"#),
    )
    .expect_error(StatusCode::NOT_FOUND, "not_found");
}
