//! The access policy: the one place every authorization decision of the registry is made.
//!
//! Two stages, as in Docker's token flow:
//! - **granting** (the token endpoint, the account API): what a signed-in [`Principal`] — or
//!   anonymous — may do on a repository, given its visibility. An admin may do anything; a user
//!   may pull, push and delete in their namespace (`<user>` and `<user>/…`); anyone may pull a
//!   public repository. A personal access token's scope patterns can only narrow that.
//! - **checking** (every registry route): what the bearer token's `access` list permits, verified
//!   at the edge from the token alone. With authentication off (open mode) everything is allowed.
//!
//! Every caller asks here: the route check ([`Policy::required`] + [`Policy::token_permits`]), the
//! token endpoint ([`Policy::grants`]), the catalog's filter ([`Policy::catalog_view`]), the
//! cross-repository mount ([`Policy::may_mount_from`]), upload sessions
//! ([`Policy::may_use_upload`]), visibility ([`Policy::may_set_visibility`]) and access tokens
//! ([`Policy::may_manage_tokens`]). Organizations, teams and finer grants extend this type.

use http::Method;

use super::{Action, Claims, Principal};

/// What a route needs before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement<'a> {
    /// Nothing (the token and account endpoints authenticate on their own).
    Nothing,
    /// A valid token, whatever it grants: the base route, which clients probe for the challenge.
    AnyToken,
    /// A token, if there is one; without one the answer is filtered ([`Policy::catalog_view`]).
    OptionalToken,
    /// `action` on the repository `name`.
    Repository { name: &'a str, action: Action },
}

/// The kinds of route the policy knows (the registry's router maps paths to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Referrers { name: &'a str },
    Manifest { name: &'a str },
    Blob { name: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str },
    Token,
    Api,
}

/// Which repositories a catalog listing may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogView {
    /// Every repository (open mode, or a token with `registry:catalog:*`).
    All,
    /// Public repositories, and those in `namespace` (the caller's own) when there is one.
    Visible { namespace: Option<String> },
}

/// The registry's access rules. Stateless today; organizations will give it their grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `false`: open mode, no authentication, everything allowed.
    pub auth: bool,
}

impl Policy {
    pub fn new(auth: bool) -> Self {
        Self { auth }
    }

    /// What a route needs, by method. Blob and manifest deletes need `delete`, writes `push`.
    pub fn required<'a>(route: RouteKind<'a>, method: &Method) -> Requirement<'a> {
        let on = |name, action| Requirement::Repository { name, action };
        match route {
            RouteKind::Token | RouteKind::Api => Requirement::Nothing,
            RouteKind::Base => Requirement::AnyToken,
            RouteKind::Catalog => Requirement::OptionalToken,
            RouteKind::Tags { name } | RouteKind::Referrers { name } => on(name, Action::Pull),
            RouteKind::Manifest { name } | RouteKind::Blob { name } => match *method {
                Method::PUT | Method::POST | Method::PATCH => on(name, Action::Push),
                Method::DELETE => on(name, Action::Delete),
                _ => on(name, Action::Pull),
            },
            // Pull on a mount's `from` is checked by the mount itself (without it: a plain upload).
            RouteKind::UploadStart { name } | RouteKind::Upload { name } => on(name, Action::Push),
        }
    }

    /// Granting: whether `principal` may do `action` on `repository` of the given visibility.
    pub fn grants(
        &self,
        principal: &Principal,
        repository: &str,
        public: bool,
        action: Action,
    ) -> bool {
        if !self.auth {
            return true;
        }
        let public_pull = action == Action::Pull && public;
        let by_role = principal.admin || owns(principal, repository) || public_pull;
        let by_token = match &principal.limits {
            None => true,
            // A public pull never needs the token's permission: anyone may do it.
            Some(_) if public_pull => true,
            Some(patterns) => patterns
                .iter()
                .any(|p| p.matches(repository) && p.actions.contains(&action)),
        };
        by_role && by_token
    }

    /// Granting `registry:catalog:*` (every repository in the catalog): admins only.
    pub fn grants_full_catalog(&self, principal: &Principal) -> bool {
        !self.auth || principal.admin
    }

    /// Checking: whether the request's token (`None`: no token) permits `action` on `repository`.
    pub fn token_permits(&self, claims: Option<&Claims>, repository: &str, action: Action) -> bool {
        if !self.auth {
            return true;
        }
        claims.is_some_and(|c| {
            c.actions_on("repository", repository)
                .contains(&action.name())
        })
    }

    /// Checking: which repositories the catalog shows to this token (or to no token).
    pub fn catalog_view(&self, claims: Option<&Claims>) -> CatalogView {
        if !self.auth || claims.is_some_and(|c| c.actions_on("registry", "catalog").contains(&"*"))
        {
            return CatalogView::All;
        }
        CatalogView::Visible {
            namespace: claims.map(|c| c.sub.clone()).filter(|s| !s.is_empty()),
        }
    }

    /// A cross-repository mount reads the blob from `from`: it needs pull there. Without it the
    /// registry opens a plain upload instead, revealing nothing about `from`.
    pub fn may_mount_from(&self, claims: Option<&Claims>, from: &str) -> bool {
        self.token_permits(claims, from, Action::Pull)
    }

    /// An upload session answers only to the principal that opened it (anyone else is told it
    /// does not exist).
    pub fn may_use_upload(&self, owner: Option<&str>, caller: Option<&str>) -> bool {
        !self.auth || owner == caller
    }

    /// Changing a repository's visibility is a push-level act, within the token's own limits.
    pub fn may_set_visibility(&self, principal: &Principal, repository: &str) -> bool {
        !principal.is_anonymous() && self.grants(principal, repository, false, Action::Push)
    }

    /// Listing, creating and revoking a user's access tokens needs the user's full rights (an
    /// unscoped access token). Scope patterns name repositories and actions on them, and none of
    /// them grants managing the account: a scoped token (even `repository:*:…`, and an admin's)
    /// must not reveal the user's other tokens, revoke them, or mint new ones.
    pub fn may_manage_tokens(&self, principal: &Principal) -> bool {
        !principal.is_anonymous() && principal.limits.is_none()
    }
}

/// Whether `repository` is in the principal's namespace: `<user>` or `<user>/…`.
fn owns(principal: &Principal, repository: &str) -> bool {
    !principal.is_anonymous()
        && repository
            .strip_prefix(principal.name.as_str())
            .is_some_and(|rest| {
                rest.is_empty() || rest.strip_prefix('/').is_some_and(|r| !r.is_empty())
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Access, ScopePattern};

    const ON: Policy = Policy { auth: true };

    fn user(name: &str) -> Principal {
        Principal {
            name: name.into(),
            admin: false,
            limits: None,
        }
    }

    fn admin() -> Principal {
        Principal {
            admin: true,
            ..user("root")
        }
    }

    fn scoped(name: &str, patterns: &[&str]) -> Principal {
        Principal {
            limits: Some(
                patterns
                    .iter()
                    .map(|p| ScopePattern::parse(p).expect("valid pattern"))
                    .collect(),
            ),
            ..user(name)
        }
    }

    fn token(sub: &str, access: &[(&str, &str, &[&str])]) -> Claims {
        Claims {
            iss: "openregistry".into(),
            sub: sub.into(),
            aud: "openregistry".into(),
            exp: String::new(),
            nbf: String::new(),
            iat: String::new(),
            jti: String::new(),
            access: access
                .iter()
                .map(|(kind, name, actions)| Access {
                    kind: (*kind).into(),
                    name: (*name).into(),
                    actions: actions.iter().map(|a| (*a).to_owned()).collect(),
                })
                .collect(),
            purpose: None,
            tid: None,
        }
    }

    /// Granting, as a table: principal × repository (private / public) × action → allowed.
    #[test]
    fn granting_follows_namespace_visibility_role_and_token_scope() {
        use Action::{Delete, Pull, Push};
        let anonymous = Principal::anonymous();
        let alice = user("alice");
        let alice_ci = scoped("alice", &["repository:alice/ci/*:pull,push"]);
        let alice_everything = scoped("alice", &["repository:*:pull,push,delete"]);
        let root = admin();
        let scoped_root = Principal {
            limits: Some(vec![
                ScopePattern::parse("repository:x/*:pull").expect("valid")
            ]),
            ..admin()
        };
        #[rustfmt::skip]
        let cases: &[(&str, &Principal, &str, bool, Action, bool)] = &[
            // who,                 principal,      repository,     public, action, allowed
            ("anonymous",          &anonymous,      "bob/app",      true,  Pull,   true),
            ("anonymous",          &anonymous,      "bob/app",      false, Pull,   false),
            ("anonymous",          &anonymous,      "bob/app",      true,  Push,   false),
            ("anonymous",          &anonymous,      "bob/app",      true,  Delete, false),
            ("owner",              &alice,          "alice",        false, Push,   true),
            ("owner",              &alice,          "alice/app",    false, Delete, true),
            ("owner",              &alice,          "alice/a/b/c",  false, Pull,   true),
            ("prefix is no owner", &alice,          "alicebob/app", false, Pull,   false),
            ("other user",         &alice,          "bob/app",      false, Pull,   false),
            ("other user",         &alice,          "bob/app",      true,  Pull,   true),
            ("other user",         &alice,          "bob/app",      true,  Push,   false),
            ("scoped token",       &alice_ci,       "alice/ci/app", false, Push,   true),
            ("scoped token",       &alice_ci,       "alice/ci/app", false, Delete, false),
            ("scoped token",       &alice_ci,       "alice/other",  false, Pull,   false),
            ("scoped token",       &alice_ci,       "bob/app",      true,  Pull,   true),
            ("scope never widens", &alice_everything,"bob/app",     false, Push,   false),
            ("admin",              &root,           "bob/app",      false, Delete, true),
            ("scoped admin",       &scoped_root,    "x/app",        false, Pull,   true),
            ("scoped admin",       &scoped_root,    "bob/app",      false, Pull,   false),
        ];
        for (who, principal, repository, public, action, allowed) in cases {
            assert_eq!(
                ON.grants(principal, repository, *public, *action),
                *allowed,
                "{who} {} on {repository} (public: {public})",
                action.name()
            );
            assert!(
                Policy::new(false).grants(principal, repository, *public, *action),
                "open mode allows everything"
            );
        }
    }

    /// Checking, as a table: every route × method × kind of caller → allowed or not.
    #[test]
    fn every_route_checks_the_token_for_what_it_needs() {
        let none: Option<&Claims> = None;
        let anonymous_public = token("", &[("repository", "bob/app", &["pull"])]);
        let puller = token("alice", &[("repository", "bob/app", &["pull"])]);
        let pusher = token("bob", &[("repository", "bob/app", &["pull", "push"])]);
        let owner = token(
            "bob",
            &[("repository", "bob/app", &["pull", "push", "delete"])],
        );
        let elsewhere = token(
            "bob",
            &[("repository", "bob/other", &["pull", "push", "delete"])],
        );
        let callers: [(&str, Option<&Claims>); 6] = [
            ("no token", none),
            ("anonymous pull token", Some(&anonymous_public)),
            ("pull token", Some(&puller)),
            ("push token", Some(&pusher)),
            ("owner token", Some(&owner)),
            ("token for another repository", Some(&elsewhere)),
        ];
        // What each caller may do on bob/app: pull, push, delete.
        let may = |caller: &str| -> [bool; 3] {
            match caller {
                "anonymous pull token" | "pull token" => [true, false, false],
                "push token" => [true, true, false],
                "owner token" => [true, true, true],
                _ => [false, false, false],
            }
        };
        let name = "bob/app";
        let routes: [(RouteKind<'_>, &[Method]); 10] = [
            (RouteKind::Base, &[Method::GET, Method::HEAD]),
            (RouteKind::Catalog, &[Method::GET]),
            (RouteKind::Token, &[Method::GET, Method::POST]),
            (
                RouteKind::Api,
                &[Method::GET, Method::POST, Method::PUT, Method::DELETE],
            ),
            (RouteKind::Tags { name }, &[Method::GET]),
            (RouteKind::Referrers { name }, &[Method::GET]),
            (
                RouteKind::Manifest { name },
                &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            ),
            (
                RouteKind::Blob { name },
                &[Method::GET, Method::HEAD, Method::DELETE],
            ),
            (RouteKind::UploadStart { name }, &[Method::POST]),
            (
                RouteKind::Upload { name },
                &[Method::GET, Method::PATCH, Method::PUT, Method::DELETE],
            ),
        ];
        for (route, methods) in routes {
            for method in methods {
                for (caller, claims) in callers {
                    let allowed = match Policy::required(route, method) {
                        Requirement::Nothing | Requirement::OptionalToken => true,
                        Requirement::AnyToken => claims.is_some(),
                        Requirement::Repository { name, action } => {
                            ON.token_permits(claims, name, action)
                        }
                    };
                    let [pull, push, delete] = may(caller);
                    let expected = match (route, method.clone()) {
                        (RouteKind::Base, _) => caller != "no token",
                        (RouteKind::Catalog | RouteKind::Token | RouteKind::Api, _) => true,
                        (RouteKind::Tags { .. } | RouteKind::Referrers { .. }, _) => pull,
                        (RouteKind::Manifest { .. } | RouteKind::Blob { .. }, Method::PUT) => push,
                        (RouteKind::Manifest { .. } | RouteKind::Blob { .. }, Method::DELETE) => {
                            delete
                        }
                        (RouteKind::Manifest { .. } | RouteKind::Blob { .. }, _) => pull,
                        (RouteKind::UploadStart { .. } | RouteKind::Upload { .. }, _) => push,
                    };
                    assert_eq!(allowed, expected, "{caller}: {method} {route:?}");
                    let open = match Policy::required(route, method) {
                        Requirement::Repository { name, action } => {
                            Policy::new(false).token_permits(claims, name, action)
                        }
                        _ => true,
                    };
                    assert!(open, "open mode allows {method} {route:?}");
                }
            }
        }
    }

    #[test]
    fn the_catalog_shows_public_repositories_the_callers_namespace_or_everything() {
        assert_eq!(
            ON.catalog_view(None),
            CatalogView::Visible { namespace: None }
        );
        let alice = token("alice", &[]);
        assert_eq!(
            ON.catalog_view(Some(&alice)),
            CatalogView::Visible {
                namespace: Some("alice".into())
            }
        );
        let anonymous = token("", &[]);
        assert_eq!(
            ON.catalog_view(Some(&anonymous)),
            CatalogView::Visible { namespace: None }
        );
        let root = token("root", &[("registry", "catalog", &["*"])]);
        assert_eq!(ON.catalog_view(Some(&root)), CatalogView::All);
        assert_eq!(Policy::new(false).catalog_view(None), CatalogView::All);
        assert!(ON.grants_full_catalog(&admin()));
        assert!(!ON.grants_full_catalog(&user("alice")));
    }

    #[test]
    fn mounts_need_pull_on_the_source_and_uploads_answer_to_their_owner() {
        let puller = token("alice", &[("repository", "bob/app", &["pull"])]);
        assert!(ON.may_mount_from(Some(&puller), "bob/app"));
        assert!(!ON.may_mount_from(Some(&puller), "bob/secret"));
        assert!(!ON.may_mount_from(None, "bob/app"));
        assert!(Policy::new(false).may_mount_from(None, "bob/secret"));
        assert!(ON.may_use_upload(Some("alice"), Some("alice")));
        assert!(!ON.may_use_upload(Some("alice"), Some("bob")));
        assert!(!ON.may_use_upload(Some("alice"), None));
        assert!(Policy::new(false).may_use_upload(None, Some("bob")));
    }

    #[test]
    fn visibility_and_tokens_are_managed_by_their_owners_within_the_token() {
        assert!(ON.may_set_visibility(&user("alice"), "alice/app"));
        assert!(!ON.may_set_visibility(&user("alice"), "bob/app"));
        assert!(ON.may_set_visibility(&admin(), "bob/app"));
        assert!(!ON.may_set_visibility(&Principal::anonymous(), "bob/app"));
        let pull_only = scoped("alice", &["repository:alice/*:pull"]);
        assert!(!ON.may_set_visibility(&pull_only, "alice/app"));

        assert!(ON.may_manage_tokens(&user("carol")));
        let everything = scoped("carol", &["repository:*:pull,push,delete"]);
        assert!(
            !ON.may_manage_tokens(&everything),
            "a `*` pattern is still a scoped token"
        );
        let scoped_root = Principal {
            limits: everything.limits.clone(),
            ..admin()
        };
        assert!(!ON.may_manage_tokens(&scoped_root));
        assert!(!ON.may_manage_tokens(&Principal::anonymous()));
    }
}
