//! Org mode's vocabulary: the fine-grained [`Permission`]s, sets of them, the built-in roles,
//! `*` globs over repository names and tags, grant resources (`acme/app:ci-*`) and the [`Rule`]s a
//! principal's grants resolve to. Pure values and functions: no I/O.
//!
//! Docker's token vocabulary (`pull`, `push`, `delete`) maps onto permissions by
//! [`Permission::covered_by`]: `push` covers push and overwrite-tag, `delete` covers delete-tag
//! and delete-manifest.

use serde::{Deserialize, Serialize};

use super::Action;

/// What a grant may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload blobs, push manifests and point new tags at them.
    Push,
    /// Move an existing tag to another manifest (without it, tags are immutable).
    OverwriteTag,
    DeleteTag,
    /// Delete manifests by digest, and blobs.
    DeleteManifest,
    /// Change a repository's visibility and its grants.
    ManageRepo,
    /// Manage the organization: members, teams, robots, roles, grants, the audit log.
    ManageOrg,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::Pull,
        Permission::Push,
        Permission::OverwriteTag,
        Permission::DeleteTag,
        Permission::DeleteManifest,
        Permission::ManageRepo,
        Permission::ManageOrg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::Pull => "pull",
            Permission::Push => "push",
            Permission::OverwriteTag => "overwrite-tag",
            Permission::DeleteTag => "delete-tag",
            Permission::DeleteManifest => "delete-manifest",
            Permission::ManageRepo => "manage-repo",
            Permission::ManageOrg => "manage-org",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == text)
    }

    /// The Docker action a token needs for this permission to be usable on a registry route.
    pub fn covered_by(self) -> Option<Action> {
        match self {
            Permission::Pull => Some(Action::Pull),
            Permission::Push | Permission::OverwriteTag | Permission::ManageRepo => {
                Some(Action::Push)
            }
            Permission::DeleteTag | Permission::DeleteManifest => Some(Action::Delete),
            Permission::ManageOrg => None,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u8);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    pub fn of(list: &[Permission]) -> Self {
        Permissions(list.iter().fold(0, |bits, p| bits | p.bit()))
    }

    pub fn all() -> Self {
        Self::of(&Permission::ALL)
    }

    /// What the Docker actions of a request or an access token's scope stand for.
    pub fn for_actions(actions: &[Action]) -> Self {
        Self::of(
            &Permission::ALL
                .into_iter()
                .filter(|p| p.covered_by().is_some_and(|a| actions.contains(&a)))
                .collect::<Vec<_>>(),
        )
    }

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Self) -> Self {
        Permissions(self.0 | other.0)
    }

    pub fn intersection(self, other: Self) -> Self {
        Permissions(self.0 & other.0)
    }

    /// Whether every permission of `other` is in this set.
    pub fn includes(self, other: Self) -> bool {
        other.0 & !self.0 == 0
    }

    pub fn list(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.contains(*p))
            .collect()
    }

    pub fn names(self) -> Vec<&'static str> {
        self.list().into_iter().map(Permission::name).collect()
    }

    /// Parses a list of names; the first unknown one is the error.
    pub fn parse_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = Self::NONE;
        for name in names {
            let permission = Permission::parse(name).ok_or_else(|| name.to_owned())?;
            set = set.union(Self::of(&[permission]));
        }
        Ok(set)
    }

    /// The Docker actions these permissions amount to (a token's `actions`): `pull` for pull,
    /// `push` for push (overwrite-tag or manage-repo alone upload nothing), `delete` for either
    /// kind of delete.
    pub fn actions(self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.contains(Permission::Pull) {
            out.push(Action::Pull);
        }
        if self.contains(Permission::Push) {
            out.push(Action::Push);
        }
        if self.contains(Permission::DeleteTag) || self.contains(Permission::DeleteManifest) {
            out.push(Action::Delete);
        }
        out
    }

    /// Only the permissions registry routes check (the others are the account API's).
    pub fn on_routes(self) -> Self {
        use Permission::*;
        self.intersection(Self::of(&[
            Pull,
            Push,
            OverwriteTag,
            DeleteTag,
            DeleteManifest,
        ]))
    }
}

/// The built-in roles, weakest first.
pub const BUILTIN_ROLES: [&str; 5] = ["reader", "developer", "maintainer", "admin", "owner"];

/// The permissions of a built-in role; `None` for any other name.
pub fn builtin_role(name: &str) -> Option<Permissions> {
    use Permission::*;
    let maintainer = [
        Pull,
        Push,
        OverwriteTag,
        DeleteTag,
        DeleteManifest,
        ManageRepo,
    ];
    Some(match name {
        "reader" => Permissions::of(&[Pull]),
        "developer" => Permissions::of(&[Pull, Push]),
        "maintainer" => Permissions::of(&maintainer),
        "admin" | "owner" => Permissions::all(),
        _ => return None,
    })
}

/// A `*` glob: `*` matches any run of characters (`/` included), everything else itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Glob(String);

impl Glob {
    pub fn new(text: &str) -> Self {
        Glob(text.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.0.as_bytes(), text.as_bytes(), false)
    }

    /// Whether every text this glob matches is matched by `self` too (so a grant of `other` is
    /// no wider than one of `self`): `other`'s `*` can only be absorbed by a `*` of `self`.
    pub fn covers(&self, other: &Glob) -> bool {
        glob_match(self.0.as_bytes(), other.0.as_bytes(), true)
    }
}

/// Iterative glob matching with backtracking to the last `*` (linear-ish, no recursion). With
/// `literal_stars`, a `*` in `text` is a character only a `*` in `pattern` may match.
fn glob_match(pattern: &[u8], text: &[u8], literal_stars: bool) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let pc = pattern.get(p).copied();
        let tc = text.get(t).copied();
        match pc {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if Some(c) == tc && !(literal_stars && c == b'*') => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// What a grant names: repositories of one organization (a glob below `<org>`, or `<org>`
/// itself), optionally narrowed to tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub org: String,
    pub repositories: Glob,
    pub tags: Option<Glob>,
}

impl Resource {
    /// Parses `<org>[/<glob>][:<tag glob>]` for the organization `org`. Repository globs use the
    /// characters of repository names plus `*`; tag globs those of tags plus `*`.
    pub fn parse(org: &str, text: &str) -> Result<Self, String> {
        let (repositories, tags) = match text.split_once(':') {
            Some((repositories, tags)) => (repositories, Some(tags)),
            None => (text, None),
        };
        let below = if repositories == org {
            None
        } else {
            let rest = repositories
                .strip_prefix(org)
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(|| {
                    format!("a resource of {org} is {org} or {org}/<pattern>, not {repositories:?}")
                })?;
            Some(rest)
        };
        if let Some(rest) = below {
            let chars_ok = rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*".contains(&b));
            let segments_ok = rest
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".." && !s.starts_with(['.', '_', '-']));
            if rest.is_empty() || rest.len() > 255 || !chars_ok || !segments_ok {
                return Err(format!(
                    "{repositories:?} is not a repository pattern: lowercase names and `*` \
                     between slashes"
                ));
            }
        }
        let tags = match tags {
            None => None,
            Some(t) => {
                let ok = !t.is_empty()
                    && t.len() <= 128
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b))
                    && !t.starts_with(['.', '-']);
                if !ok {
                    return Err(format!(
                        "{t:?} is not a tag pattern: letters, digits, `_`, `.`, `-` and `*`"
                    ));
                }
                Some(Glob::new(t))
            }
        };
        Ok(Resource {
            org: org.to_owned(),
            repositories: Glob::new(repositories),
            tags,
        })
    }

    pub fn text(&self) -> String {
        match &self.tags {
            Some(tags) => format!("{}:{}", self.repositories.as_str(), tags.as_str()),
            None => self.repositories.as_str().to_owned(),
        }
    }
}

/// One resolved right of a principal: permissions on the repositories a glob matches, narrowed to
/// the tags a glob matches (`None`: every tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub repositories: Glob,
    pub tags: Option<Glob>,
    pub permissions: Permissions,
}

impl Rule {
    /// Every permission on an organization's repositories (`<org>` and `<org>/…`), as a role.
    pub fn org_wide(org: &str, permissions: Permissions) -> [Rule; 2] {
        [
            Rule {
                repositories: Glob::new(org),
                tags: None,
                permissions,
            },
            Rule {
                repositories: Glob::new(&format!("{org}/*")),
                tags: None,
                permissions,
            },
        ]
    }

    /// Whether this rule gives `wanted` on everything `resource` names: its globs cover the
    /// resource's and it has every permission asked for.
    pub fn covers(&self, resource: &Resource, wanted: Permissions) -> bool {
        let tags_ok = match (&self.tags, &resource.tags) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine.covers(theirs),
        };
        self.repositories.covers(&resource.repositories)
            && tags_ok
            && self.permissions.includes(wanted)
    }
}

/// A token's fine-grained rights on one repository (the `rules` of an `access` entry): the
/// permissions, narrowed to tags matching a glob (`None`: every tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRule {
    pub tags: Option<Glob>,
    pub actions: Vec<Permission>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_any_run_of_characters_at_each_star() {
        let cases = [
            ("acme/*", "acme/app", true),
            ("acme/*", "acme/a/b", true),
            ("acme/*", "acme", false),
            ("acme/*", "acmex/app", false),
            ("acme/app-*", "acme/app-web", true),
            ("acme/app-*", "acme/app", false),
            ("ci-*", "ci-1", true),
            ("ci-*", "release-1", false),
            ("*-rc*", "v1-rc2", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("*", "", true),
            ("", "", true),
            ("x", "", false),
        ];
        for (glob, text, expected) in cases {
            assert_eq!(Glob::new(glob).matches(text), expected, "{glob} ~ {text}");
        }
    }

    #[test]
    fn a_glob_covers_another_only_when_it_matches_everything_the_other_does() {
        let cases = [
            ("acme/*", "acme/app", true),
            ("acme/*", "acme/app-*", true),
            ("acme/*", "acme/*", true),
            ("acme/app-*", "acme/app-web-*", true),
            ("acme/app", "acme/app", true),
            ("acme/app", "acme/*", false),
            ("acme/app-*", "acme/*", false),
            ("acme/app*", "acme/*pp", false),
            ("*", "anything*", true),
        ];
        for (mine, theirs, expected) in cases {
            assert_eq!(
                Glob::new(mine).covers(&Glob::new(theirs)),
                expected,
                "{mine} ⊇ {theirs}"
            );
        }
    }

    #[test]
    fn resources_name_the_org_its_repositories_and_optionally_tags() {
        let r = Resource::parse("acme", "acme/app:ci-*").expect("valid");
        assert_eq!(r.repositories.as_str(), "acme/app");
        assert_eq!(r.tags, Some(Glob::new("ci-*")));
        assert_eq!(r.text(), "acme/app:ci-*");
        assert!(Resource::parse("acme", "acme").is_ok());
        assert!(Resource::parse("acme", "acme/*").is_ok());
        assert!(Resource::parse("acme", "acme/*:release-*").is_ok());
        for bad in [
            "",
            "other/app",
            "acmex/app",
            "acme/",
            "acme/../x",
            "acme//x",
            "acme/App",
            "acme/app:",
            "acme/app:bad tag",
            "acme/app:-x",
            "acme/app:a:b",
            "*",
        ] {
            assert!(Resource::parse("acme", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn docker_actions_stand_for_the_permissions_they_cover() {
        let push = Permissions::for_actions(&[Action::Push]);
        assert_eq!(
            push.names(),
            vec!["push", "overwrite-tag", "manage-repo"],
            "push covers moving tags and the repository's settings"
        );
        let delete = Permissions::for_actions(&[Action::Delete]);
        assert_eq!(delete.names(), vec!["delete-tag", "delete-manifest"]);
        assert!(!Permissions::all()
            .intersection(Permissions::for_actions(&Action::ALL))
            .contains(Permission::ManageOrg));
        assert_eq!(
            Permissions::of(&[Permission::DeleteTag]).actions(),
            vec![Action::Delete]
        );
        assert_eq!(
            builtin_role("developer").map(Permissions::names),
            Some(vec!["pull", "push"])
        );
        assert_eq!(builtin_role("boss"), None);
        assert_eq!(
            Permissions::parse_names(["pull", "fly"]),
            Err("fly".to_owned())
        );
    }
}
