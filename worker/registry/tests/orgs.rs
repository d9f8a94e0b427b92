//! Org mode through the registry's HTTP interface, over SQLite:
//!
//! - every organization change is one transaction with its audit entry: a refused change leaves
//!   neither rows nor an audit entry behind;
//! - a robot granted `acme/app:ci-*` pushes `ci-…` tags and is refused others (403 `DENIED`,
//!   audited);
//! - a tag its pusher may not overwrite stays where it is, and the same digest may be pushed
//!   again;
//! - a removed member's next token grants nothing;
//! - deleting an organization with force takes its repositories along.

// Test code indexes what it just built: a panic is a failing test.
#![allow(clippy::indexing_slicing, clippy::string_slice)]

mod common;

use base64::Engine;
use common::*;
use futures_executor::block_on;
use http::{Method, StatusCode};
use openregistry::auth::store;
use openregistry::auth::AuthSettings;
use openregistry::{Body, Config, Registry};
use serde_json::{json, Value};

const SERVICE: &str = "openregistry";

/// Org mode's world: olivia owns `acme`, dan is a developer there; `acme/app` holds an image
/// (pushed in open mode, so tests only push manifests).
struct World {
    t: TestRegistry,
    passwords: std::collections::HashMap<String, String>,
    image: Manifest,
    other_image: Manifest,
}

impl World {
    fn new() -> Self {
        let mut t = TestRegistry::new();
        let image = t.prepare_image("acme/app", "one");
        let other_image = t.prepare_image("acme/app", "two");
        let settings = AuthSettings::new(SERVICE, test_signer(7)).expect("settings");
        t.registry = Registry::new(t.ports.clone(), Config::default()).with_auth(settings);
        let mut w = World {
            t,
            passwords: Default::default(),
            image,
            other_image,
        };
        for user in ["olivia", "dan", "root"] {
            block_on(store::create_user(
                w.t.ports.sql.as_ref(),
                user,
                user == "root",
                START_MS,
            ))
            .expect("user");
            let (_, token) = block_on(store::create_token(
                w.t.ports.sql.as_ref(),
                w.t.ports.random.as_ref(),
                user,
                "main",
                &[],
                None,
                START_MS,
            ))
            .expect("token");
            w.passwords.insert(user.to_owned(), token);
        }
        w.api("POST", "orgs", "olivia", json!({"name": "acme"}))
            .expect_status(StatusCode::CREATED);
        w.api(
            "PUT",
            "orgs/acme/members/dan",
            "olivia",
            json!({"role": "developer"}),
        )
        .expect_status(StatusCode::OK);
        w
    }

    fn basic(&self, user: &str) -> String {
        let password = self.passwords.get(user).expect("a known user");
        basic(user, password)
    }

    fn api(&self, method: &str, path: &str, user: &str, body: Value) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let body = if body.is_null() {
            Body::Empty
        } else {
            Body::from(body.to_string())
        };
        self.t.send(
            method,
            &format!("/api/{path}"),
            &[("authorization", &self.basic(user))],
            body,
        )
    }

    fn audit_actions(&self) -> Vec<String> {
        let reply = self.api("GET", "orgs/acme/audit", "olivia", Value::Null);
        reply.expect_status(StatusCode::OK);
        reply.json()["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn token(&self, authorization: &str, scope: &str) -> String {
        let reply = self.t.get_with(
            &format!("/token?service={SERVICE}&scope={scope}"),
            &[("authorization", authorization)],
        );
        reply.expect_status(StatusCode::OK);
        reply.json()["token"].as_str().expect("a token").to_owned()
    }

    fn put_manifest(&self, token: &str, tag: &str, manifest: &Manifest) -> Reply {
        let len = manifest.bytes.len().to_string();
        self.t.put(
            &format!("/v2/acme/app/manifests/{tag}"),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", &manifest.media_type),
                ("content-length", &len),
            ],
            manifest.bytes.clone(),
        )
    }
}

#[test]
fn a_refused_change_leaves_neither_rows_nor_an_audit_entry() {
    let w = World::new();
    let before = w.audit_actions();
    let refused = [
        (
            "PUT",
            "orgs/acme/members/nobody",
            json!({"role": "reader"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "PUT",
            "orgs/acme/members/dan",
            json!({"role": "boss"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "orgs/acme/teams",
            json!({"name": "Bad Name"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "orgs/acme/grants",
            json!({"principal": "team:ghosts", "resource": "acme/*", "actions": ["pull"]}),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "orgs/acme/grants",
            json!({"principal": "user:dan", "resource": "other/*", "actions": ["pull"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "orgs/acme/grants",
            json!({"principal": "user:dan", "resource": "acme/*", "actions": ["fly"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "DELETE",
            "orgs/acme/teams/ghosts",
            Value::Null,
            StatusCode::NOT_FOUND,
        ),
        (
            "DELETE",
            "orgs/acme/robots/ghost",
            Value::Null,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "orgs/acme/robots/ghost/secret",
            Value::Null,
            StatusCode::NOT_FOUND,
        ),
        (
            "DELETE",
            "orgs/acme/members/olivia",
            Value::Null,
            StatusCode::CONFLICT,
        ),
        ("POST", "orgs", json!({"name": "dan"}), StatusCode::CONFLICT),
    ];
    for (method, path, body, status) in refused {
        let reply = w.api(method, path, "olivia", body);
        assert_eq!(reply.status, status, "{method} {path}: {:?}", reply.json());
    }
    w.api("POST", "orgs/acme/teams", "olivia", json!({"name": "devs"}))
        .expect_status(StatusCode::CREATED);
    w.api("POST", "orgs/acme/teams", "olivia", json!({"name": "devs"}))
        .expect_status(StatusCode::CONFLICT);
    let after = w.audit_actions();
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert_eq!(
        after.iter().filter(|a| *a == "team.create").count(),
        1,
        "{after:?}"
    );
    assert_eq!(
        w.api("GET", "orgs/acme/members", "olivia", Value::Null)
            .json()["members"],
        json!([{"user": "dan", "role": "developer"}, {"user": "olivia", "role": "owner"}])
    );
}

#[test]
fn a_robot_pushes_only_the_tags_it_was_granted_and_a_refusal_is_audited() {
    let w = World::new();
    let robot = w.api("POST", "orgs/acme/robots", "olivia", json!({"name": "ci"}));
    robot.expect_status(StatusCode::CREATED);
    let secret = robot.json()["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    w.api(
        "POST",
        "orgs/acme/grants",
        "olivia",
        json!({"principal": "robot:ci", "resource": "acme/app:ci-*", "actions": ["pull", "push"]}),
    )
    .expect_status(StatusCode::CREATED);
    let token = w.token(&basic("acme+ci", &secret), "repository:acme/app:pull,push");
    w.put_manifest(&token, "ci-1", &w.image)
        .expect_status(StatusCode::CREATED);
    w.put_manifest(&token, "release-1", &w.image)
        .expect_error(StatusCode::FORBIDDEN, "DENIED");
    let tags = w.t.get_with(
        "/v2/acme/app/tags/list",
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(tags.json()["tags"], json!(["ci-1"]));
    assert!(w.audit_actions().contains(&"push.denied".to_owned()));
    // The robot has no account: the account API refuses it whatever the endpoint.
    for path in ["tokens", "orgs", "orgs/acme"] {
        w.t.get_with(
            &format!("/api/{path}"),
            &[("authorization", &basic("acme+ci", &secret))],
        )
        .expect_status(StatusCode::FORBIDDEN);
    }
}

#[test]
fn a_tag_is_immutable_without_overwrite_tag_yet_the_same_digest_may_be_pushed_again() {
    let w = World::new();
    let dan = w.token(&w.basic("dan"), "repository:acme/app:pull,push");
    w.put_manifest(&dan, "v1", &w.image)
        .expect_status(StatusCode::CREATED);
    w.put_manifest(&dan, "v1", &w.image)
        .expect_status(StatusCode::CREATED);
    w.put_manifest(&dan, "v1", &w.other_image)
        .expect_error(StatusCode::FORBIDDEN, "DENIED");
    let olivia = w.token(&w.basic("olivia"), "repository:acme/app:pull,push");
    w.put_manifest(&olivia, "v1", &w.other_image)
        .expect_status(StatusCode::CREATED);
    let reply = w.t.get_with(
        "/v2/acme/app/manifests/v1",
        &[("authorization", &format!("Bearer {olivia}"))],
    );
    reply.expect_status(StatusCode::OK);
    assert_eq!(&reply.body[..], &w.other_image.bytes[..]);
}

#[test]
fn a_removed_members_next_token_grants_nothing() {
    let w = World::new();
    let granted = |token: &str| -> Value {
        let claims = token.split('.').nth(2).expect("a payload");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .expect("base64url");
        let json = &raw[..raw.len() - 64];
        serde_json::from_slice::<Value>(json).expect("claims")["access"].clone()
    };
    let before = w.token(&w.basic("dan"), "repository:acme/app:pull");
    assert_eq!(granted(&before)[0]["actions"], json!(["pull"]));
    w.api("DELETE", "orgs/acme/members/dan", "olivia", Value::Null)
        .expect_status(StatusCode::OK);
    let after = w.token(&w.basic("dan"), "repository:acme/app:pull");
    assert_eq!(granted(&after), json!([]));
}

#[test]
fn members_see_their_organizations_repositories_in_the_catalog() {
    let w = World::new();
    let olivia = w.token(&w.basic("olivia"), "repository:acme/app:pull,push");
    w.put_manifest(&olivia, "v1", &w.image)
        .expect_status(StatusCode::CREATED);
    let catalog = |user: &str| {
        let token = w.token(&w.basic(user), "registry:catalog:*");
        w.t.get_with(
            "/v2/_catalog",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .json()["repositories"]
            .clone()
    };
    assert_eq!(catalog("dan"), json!(["acme/app"]), "a developer of acme");
    w.api("DELETE", "orgs/acme/members/dan", "olivia", Value::Null)
        .expect_status(StatusCode::OK);
    assert_eq!(catalog("dan"), json!([]), "no longer a member");
}

#[test]
fn deleting_an_org_with_force_takes_its_repositories_along() {
    let w = World::new();
    let olivia = w.token(&w.basic("olivia"), "repository:acme/app:pull,push");
    w.put_manifest(&olivia, "v1", &w.image)
        .expect_status(StatusCode::CREATED);
    w.api("DELETE", "orgs/acme", "dan", Value::Null)
        .expect_status(StatusCode::FORBIDDEN);
    w.api("DELETE", "orgs/acme", "olivia", Value::Null)
        .expect_error(StatusCode::CONFLICT, "conflict");
    let reply = w.api("DELETE", "orgs/acme?force=true", "olivia", Value::Null);
    reply.expect_status(StatusCode::OK);
    assert_eq!(reply.json()["repositories_deleted"], json!(1));
    w.api("GET", "orgs/acme", "root", Value::Null)
        .expect_status(StatusCode::NOT_FOUND);
    let root = w.token(&w.basic("root"), "repository:acme/app:pull");
    w.t.get_with(
        "/v2/acme/app/manifests/v1",
        &[("authorization", &format!("Bearer {root}"))],
    )
    .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    // The name is free again, for a user or an organization.
    w.api("POST", "orgs", "olivia", json!({"name": "acme"}))
        .expect_status(StatusCode::CREATED);
}
