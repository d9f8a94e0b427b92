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
//! ([`Policy::may_manage_tokens`]), and Org mode: a principal's [`Policy::rights`] on a
//! repository from its namespace, its org rules and its token's limits, the token's `access`
//! entry ([`Policy::access_entry`]), the tag-level check of routes ([`Policy::token_allows`]),
//! managing an org ([`Policy::may_manage_org`]) and granting ([`Policy::may_grant`]).

use http::Method;

use super::permissions::{Glob, Permission, Permissions, Resource, Rule, TagRule};
use super::{Access, Action, Claims, Principal};

/// A principal's rights on one repository: sets of permissions, each narrowed to the tags a glob
/// matches (`None`: every tag).
pub type Rights = Vec<(Option<Glob>, Permissions)>;

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
    /// Public repositories, and those in `namespace` (the caller's own) and in the organizations
    /// the caller is a member of, when there is one.
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

    /// Granting: whether `principal` may do `action` on `repository` of the given visibility
    /// (outside organizations: no org rules).
    pub fn grants(
        &self,
        principal: &Principal,
        repository: &str,
        public: bool,
        action: Action,
    ) -> bool {
        self.rights(principal, repository, public, &[])
            .iter()
            .any(|(_, permissions)| permissions.actions().contains(&action))
    }

    /// Granting: everything `principal` may do on `repository`. An admin may do anything; a user
    /// everything in their namespace; anyone may pull a public repository; org `rules` (the
    /// principal's memberships and grants, see `orgs::rules_for`) add theirs. A personal access
    /// token's scope patterns narrow all of it except public pulls.
    pub fn rights(
        &self,
        principal: &Principal,
        repository: &str,
        public: bool,
        rules: &[Rule],
    ) -> Rights {
        if !self.auth {
            return vec![(None, Permissions::all())];
        }
        let mut rights: Rights = Vec::new();
        if principal.admin {
            rights.push((None, Permissions::all()));
        } else if !principal.robot && owns(principal, repository) {
            let everything_but_the_org =
                Permissions::all().intersection(Permissions::for_actions(&Action::ALL));
            rights.push((None, everything_but_the_org));
        }
        for rule in rules.iter().filter(|r| r.repositories.matches(repository)) {
            rights.push((rule.tags.clone(), rule.permissions));
        }
        if let Some(patterns) = &principal.limits {
            let allowed = patterns
                .iter()
                .filter(|p| p.matches(repository))
                .fold(Permissions::NONE, |all, p| {
                    all.union(Permissions::for_actions(&p.actions))
                });
            for (_, permissions) in &mut rights {
                *permissions = permissions.intersection(allowed);
            }
        }
        if public {
            // A public pull never needs the token's permission: anyone may do it.
            rights.push((None, Permissions::of(&[Permission::Pull])));
        }
        rights.retain(|(_, permissions)| !permissions.is_empty());
        rights
    }

    /// The token's `access` entry for a request of `wanted` on `repository`, given the
    /// principal's `rights` there; `None` when nothing is granted. Its `actions` are Docker's;
    /// `rules` are added only when the rights are finer than those actions say (narrowed to tags,
    /// push without overwrite-tag, one kind of delete).
    pub fn access_entry(
        &self,
        repository: &str,
        rights: &Rights,
        wanted: &[Action],
    ) -> Option<Access> {
        let wanted = Permissions::for_actions(wanted);
        let granted: Rights = rights
            .iter()
            .map(|(tags, permissions)| (tags.clone(), permissions.intersection(wanted).on_routes()))
            .filter(|(_, permissions)| !permissions.is_empty())
            .collect();
        let union = granted
            .iter()
            .fold(Permissions::NONE, |all, (_, p)| all.union(*p));
        let actions = union.actions();
        if actions.is_empty() {
            return None;
        }
        let classic = granted.iter().all(|(tags, _)| tags.is_none())
            && union == Permissions::for_actions(&actions).on_routes();
        let rules = (!classic).then(|| {
            granted
                .iter()
                .map(|(tags, permissions)| TagRule {
                    tags: tags.clone(),
                    actions: permissions.list(),
                })
                .collect()
        });
        Some(Access {
            kind: "repository".into(),
            name: repository.to_owned(),
            actions: actions.iter().map(|a| a.name().to_owned()).collect(),
            rules,
        })
    }

    /// Checking, below the route: whether the token permits `permission` on `repository`, for
    /// `tag` when the request names one. Entries without `rules` mean what their Docker actions
    /// say; a rule narrowed to tags gives its repository-level effects (blobs, digests) on the
    /// whole repository and its tag-level ones on matching tags only.
    pub fn token_allows(
        &self,
        claims: Option<&Claims>,
        repository: &str,
        tag: Option<&str>,
        permission: Permission,
    ) -> bool {
        if !self.auth {
            return true;
        }
        let Some(claims) = claims else {
            return false;
        };
        claims
            .access
            .iter()
            .filter(|a| a.kind == "repository" && a.name == repository)
            .any(|access| match &access.rules {
                None => permission
                    .covered_by()
                    .is_some_and(|action| access.actions.iter().any(|a| a == action.name())),
                Some(rules) => rules.iter().any(|rule| {
                    rule.actions.contains(&permission)
                        && match (&rule.tags, tag) {
                            (Some(glob), Some(tag)) => glob.matches(tag),
                            _ => true,
                        }
                }),
            })
    }

    /// Managing an organization (members, teams, robots, roles, grants, its audit log): an admin,
    /// or a user whose org rules hold manage-org, signed in with full rights (never a robot or a
    /// scoped token).
    pub fn may_manage_org(&self, principal: &Principal, rules: &[Rule]) -> bool {
        if !self.may_manage_tokens(principal) || principal.robot {
            return false;
        }
        principal.admin
            || rules
                .iter()
                .any(|r| r.permissions.contains(Permission::ManageOrg))
    }

    /// Granting `permissions` on `resource`: the granter must hold manage-repo and every one of
    /// them on all of it (a rule covering the resource), with full rights: a grant is never wider
    /// than what its granter holds now.
    pub fn may_grant(
        &self,
        principal: &Principal,
        resource: &Resource,
        permissions: Permissions,
        rules: &[Rule],
    ) -> bool {
        if !self.may_manage_tokens(principal) || principal.robot {
            return false;
        }
        if principal.admin || !self.auth {
            return true;
        }
        let held = rules
            .iter()
            .filter(|r| r.covers(resource, Permissions::NONE))
            .fold(Permissions::NONE, |all, r| all.union(r.permissions));
        held.includes(permissions.union(Permissions::of(&[Permission::ManageRepo])))
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

    /// Changing a repository's visibility needs manage-repo on all of it (a user has it in their
    /// namespace, an org member by role or grant), within the token's own limits.
    pub fn may_set_visibility(
        &self,
        principal: &Principal,
        repository: &str,
        rules: &[Rule],
    ) -> bool {
        !principal.is_anonymous()
            && !principal.robot
            && self
                .rights(principal, repository, false, rules)
                .iter()
                .any(|(tags, p)| tags.is_none() && p.contains(Permission::ManageRepo))
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
        Principal::user(name, false)
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
                    rules: None,
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
        assert!(ON.may_set_visibility(&user("alice"), "alice/app", &[]));
        assert!(!ON.may_set_visibility(&user("alice"), "bob/app", &[]));
        assert!(ON.may_set_visibility(&admin(), "bob/app", &[]));
        assert!(!ON.may_set_visibility(&Principal::anonymous(), "bob/app", &[]));
        let pull_only = scoped("alice", &["repository:alice/*:pull"]);
        assert!(!ON.may_set_visibility(&pull_only, "alice/app", &[]));

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

    // -----------------------------------------------------------------------------------------
    // Org mode: grants resolved to rules, through the token, to the route's check.
    // -----------------------------------------------------------------------------------------

    use crate::auth::permissions::{builtin_role, Glob, Permission, Permissions, Resource, Rule};

    fn role_rules(org: &str, role: &str) -> Vec<Rule> {
        Rule::org_wide(org, builtin_role(role).expect("a built-in role")).to_vec()
    }

    fn grant(resource: &str, permissions: &[Permission]) -> Rule {
        let resource = Resource::parse("acme", resource).expect("a valid resource");
        Rule {
            repositories: resource.repositories,
            tags: resource.tags,
            permissions: Permissions::of(permissions),
        }
    }

    /// The whole path of a decision: the principal's rights from its rules, the token's entry
    /// for a request of everything (`*`), and the route's checks (Docker action, then tag-level).
    fn allowed(
        principal: &Principal,
        rules: &[Rule],
        public: bool,
        repository: &str,
        tag: Option<&str>,
        permission: Permission,
    ) -> bool {
        let rights = ON.rights(principal, repository, public, rules);
        let Some(entry) = ON.access_entry(repository, &rights, &Action::ALL) else {
            return false;
        };
        let claims = Claims {
            access: vec![entry],
            ..token(&principal.name, &[])
        };
        let action = permission.covered_by().expect("a route permission");
        ON.token_permits(Some(&claims), repository, action)
            && ON.token_allows(Some(&claims), repository, tag, permission)
    }

    /// principal kind × role × action on an org repository, every built-in role.
    #[test]
    fn each_role_allows_exactly_its_actions_on_every_repository_of_the_org() {
        use Permission::*;
        let route_permissions = [Pull, Push, OverwriteTag, DeleteTag, DeleteManifest];
        #[rustfmt::skip]
        let expected: &[(&str, [bool; 5])] = &[
            //              pull   push   overwrite delete-tag delete-manifest
            ("reader",     [true,  false, false,    false,     false]),
            ("developer",  [true,  true,  false,    false,     false]),
            ("maintainer", [true,  true,  true,     true,      true]),
            ("admin",      [true,  true,  true,     true,      true]),
            ("owner",      [true,  true,  true,     true,      true]),
        ];
        let bob = user("bob");
        for (role, allows) in expected {
            let rules = role_rules("acme", role);
            for repository in ["acme", "acme/app", "acme/a/b/c"] {
                for (permission, allow) in route_permissions.iter().zip(allows) {
                    assert_eq!(
                        allowed(&bob, &rules, false, repository, Some("v1"), *permission),
                        *allow,
                        "{role} {} on {repository}",
                        permission.name()
                    );
                }
            }
            for elsewhere in ["acmex/app", "other/app", "bob-acme/app"] {
                assert!(
                    !allowed(&bob, &rules, false, elsewhere, Some("v1"), Pull),
                    "{role} of acme has nothing on {elsewhere}"
                );
            }
        }
    }

    /// Grants to users, teams, robots, `signed-in` and `anonymous`, with repository and tag
    /// globs: what each allows, and every way it is denied.
    #[test]
    #[allow(clippy::type_complexity, clippy::cloned_ref_to_slice_refs)] // a readable table
    fn grants_narrow_by_repository_glob_and_tag_glob() {
        use Permission::*;
        let ci = grant("acme/app:ci-*", &[Pull, Push]);
        let release = grant("acme/*:release-*", &[Push]);
        let team_web = grant("acme/web-*", &[Pull, Push, DeleteTag]);
        let immutable = grant("acme/app", &[Pull, Push]);
        let everyone = grant("acme/pub", &[Pull]);
        let robot = Principal::robot("acme+ci");
        let carol = user("carol");
        let anonymous = Principal::anonymous();
        #[rustfmt::skip]
        let cases: &[(&str, &Principal, &[Rule], &str, Option<&str>, Permission, bool)] = &[
            // what,                                    who,        rules,                 repository,    tag,              action,        allowed
            ("robot pushes a ci tag",                   &robot,     &[ci.clone()],         "acme/app",    Some("ci-1"),     Push,          true),
            ("robot pushes a manifest by digest",       &robot,     &[ci.clone()],         "acme/app",    None,             Push,          true),
            ("robot is refused a release tag",          &robot,     &[ci.clone()],         "acme/app",    Some("release-1"),Push,          false),
            ("robot pulls by a ci tag",                 &robot,     &[ci.clone()],         "acme/app",    Some("ci-2"),     Pull,          true),
            ("robot cannot pull another tag",           &robot,     &[ci.clone()],         "acme/app",    Some("latest"),   Pull,          false),
            ("robot has nothing on another repo",       &robot,     &[ci.clone()],         "acme/other",  Some("ci-1"),     Push,          false),
            ("robot cannot move a ci tag",              &robot,     &[ci.clone()],         "acme/app",    Some("ci-1"),     OverwriteTag,  false),
            ("robot cannot delete",                     &robot,     &[ci.clone()],         "acme/app",    Some("ci-1"),     DeleteTag,     false),
            ("a robot owns no namespace",               &robot,     &[],                   "acme+ci/app", Some("v1"),       Push,          false),
            ("release glob on any repo",                &carol,     &[release.clone()],    "acme/x/y",    Some("release-9"),Push,          true),
            ("release glob is not ci",                  &carol,     &[release.clone()],    "acme/x/y",    Some("ci-9"),     Push,          false),
            ("release glob gives no pull",              &carol,     &[release.clone()],    "acme/x/y",    Some("release-9"),Pull,          false),
            ("repository glob prefix",                  &carol,     &[team_web.clone()],   "acme/web-ui", Some("v1"),       DeleteTag,     true),
            ("repository glob is not another prefix",   &carol,     &[team_web.clone()],   "acme/webui",  Some("v1"),       Pull,          false),
            ("delete-tag is not delete-manifest",       &carol,     &[team_web.clone()],   "acme/web-ui", None,             DeleteManifest,false),
            ("no overwrite-tag: the tag is immutable",  &carol,     &[immutable.clone()],  "acme/app",    Some("v1"),       OverwriteTag,  false),
            ("without overwrite-tag new tags still go", &carol,     &[immutable.clone()],  "acme/app",    Some("v2"),       Push,          true),
            ("grants add up",                           &carol,     &[immutable.clone(), grant("acme/app:v*", &[OverwriteTag])], "acme/app", Some("v1"), OverwriteTag, true),
            ("anonymous grant for anyone",              &anonymous, &[everyone.clone()],   "acme/pub",    Some("v1"),       Pull,          true),
            ("anonymous grant pulls only",              &anonymous, &[everyone.clone()],   "acme/pub",    Some("v1"),       Push,          false),
            ("anonymous without grant, private",        &anonymous, &[],                   "acme/app",    Some("v1"),       Pull,          false),
            ("no rules at all (a removed member)",      &carol,     &[],                   "acme/app",    Some("v1"),       Pull,          false),
        ];
        for (what, who, rules, repository, tag, permission, expected) in cases {
            assert_eq!(
                allowed(who, rules, false, repository, *tag, *permission),
                *expected,
                "{what}: {} on {repository}:{tag:?}",
                permission.name()
            );
        }
        assert!(
            allowed(
                &anonymous,
                &[],
                true,
                "acme/app",
                Some("v1"),
                Permission::Pull
            ),
            "a public org repository is pulled anonymously"
        );
    }

    #[test]
    fn a_token_never_grants_more_than_its_owner_has_now() {
        use Permission::*;
        let maintainer = role_rules("acme", "maintainer");
        let pull_only = scoped("bob", &["repository:acme/app:pull"]);
        assert!(allowed(
            &pull_only,
            &maintainer,
            false,
            "acme/app",
            Some("v1"),
            Pull
        ));
        for permission in [Push, OverwriteTag, DeleteTag, DeleteManifest] {
            assert!(
                !allowed(
                    &pull_only,
                    &maintainer,
                    false,
                    "acme/app",
                    Some("v1"),
                    permission
                ),
                "a pull-only token of a maintainer has no {}",
                permission.name()
            );
        }
        let everything = scoped("bob", &["repository:*:pull,push,delete"]);
        let reader = role_rules("acme", "reader");
        assert!(
            !allowed(&everything, &reader, false, "acme/app", Some("v1"), Push),
            "a wide token of a reader is a reader's"
        );
        assert!(
            !allowed(&everything, &[], false, "acme/app", Some("v1"), Pull),
            "a wide token of someone who left is nothing"
        );
        // The entry: Docker's actions, and rules only when finer than those.
        let developer = role_rules("acme", "developer");
        let rights = ON.rights(&user("bob"), "acme/app", false, &developer);
        let entry = ON
            .access_entry("acme/app", &rights, &[Action::Pull, Action::Push])
            .expect("granted");
        assert_eq!(entry.actions, vec!["pull", "push"]);
        let rules = entry
            .rules
            .expect("push without overwrite-tag is finer than Docker's push");
        assert_eq!(rules[0].actions, vec![Pull, Push]);
        let owner = ON.rights(&user("acme"), "acme/app", false, &[]);
        assert_eq!(
            ON.access_entry("acme/app", &owner, &Action::ALL)
                .and_then(|e| e.rules),
            None,
            "a namespace owner's token is Docker's plain one"
        );
        let ci = ON.rights(
            &Principal::robot("acme+ci"),
            "acme/app",
            false,
            &[grant("acme/app:ci-*", &[Push])],
        );
        let entry = ON
            .access_entry("acme/app", &ci, &[Action::Pull, Action::Push])
            .expect("granted");
        assert_eq!(entry.actions, vec!["push"]);
        assert_eq!(
            entry.rules.expect("tag-narrowed")[0].tags,
            Some(Glob::new("ci-*"))
        );
    }

    #[test]
    #[allow(clippy::type_complexity)] // a readable table
    fn managing_and_granting_stay_within_what_the_manager_holds() {
        use Permission::*;
        let bob = user("bob");
        let admin_rules = role_rules("acme", "admin");
        let maintainer_rules = role_rules("acme", "maintainer");
        let app_maintainer = vec![grant(
            "acme/app",
            &[
                Pull,
                Push,
                OverwriteTag,
                DeleteTag,
                DeleteManifest,
                ManageRepo,
            ],
        )];
        let developer = role_rules("acme", "developer");
        let resource = |text: &str| Resource::parse("acme", text).expect("valid");
        let pull_push = Permissions::of(&[Pull, Push]);
        assert!(ON.may_manage_org(&bob, &admin_rules));
        assert!(!ON.may_manage_org(&bob, &maintainer_rules));
        assert!(
            !ON.may_manage_org(&Principal::robot("acme+ci"), &admin_rules),
            "robots never manage"
        );
        assert!(
            !ON.may_manage_org(
                &scoped("bob", &["repository:*:pull,push,delete"]),
                &admin_rules
            ),
            "a scoped token never manages"
        );
        assert!(
            ON.may_manage_org(&admin(), &[]),
            "a registry admin manages every org"
        );
        #[rustfmt::skip]
        let cases: &[(&str, &[Rule], &str, Permissions, bool)] = &[
            ("admin grants anything",                  &admin_rules,       "acme/*",        Permissions::all(),                 true),
            ("maintainer grants pull, push on the org", &maintainer_rules, "acme/*:ci-*",   pull_push,                          true),
            ("maintainer cannot grant manage-org",     &maintainer_rules,  "acme/*",        Permissions::of(&[ManageOrg]),      false),
            ("app maintainer grants on the app",       &app_maintainer,    "acme/app:ci-*", pull_push,                          true),
            ("app maintainer cannot grant the org",    &app_maintainer,    "acme/*",        pull_push,                          false),
            ("app maintainer cannot grant a glob",     &app_maintainer,    "acme/app*",     pull_push,                          false),
            ("developer has no manage-repo",           &developer,         "acme/app",      Permissions::of(&[Pull]),           false),
            ("nobody with nothing",                    &[],                "acme/app",      Permissions::of(&[Pull]),           false),
        ];
        for (what, rules, text, permissions, expected) in cases {
            assert_eq!(
                ON.may_grant(&bob, &resource(text), *permissions, rules),
                *expected,
                "{what}"
            );
        }
        assert!(!ON.may_grant(
            &Principal::robot("acme+ci"),
            &resource("acme/app"),
            pull_push,
            &admin_rules
        ));
        assert!(ON.may_set_visibility(&bob, "acme/app", &maintainer_rules));
        assert!(!ON.may_set_visibility(&bob, "acme/app", &developer));
    }
}
