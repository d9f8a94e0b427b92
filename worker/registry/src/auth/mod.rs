//! Authentication and authorization: Docker's token flow with PASETO v4.public tokens, users
//! with personal access tokens, repository visibility, and the one place every route's access is
//! checked.
//!
//! - [`token`]: signing and verifying tokens (public keys only at the edge).
//! - [`store`]: users, access tokens and visibility in SQL.
//! - [`permissions`]: Org mode's permissions, roles, globs, resources and rules (pure values).
//! - [`orgs`]: organizations, members, teams, robots, roles, grants and the audit log in SQL.
//! - [`policy`]: who may do what — the one place every access decision is made.
//! - [`passkeys`]: WebAuthn ceremonies and the stored passkeys (the web app's sign-in).
//! - [`session`]: the web app's browser sessions (cookie, CSRF checks).
//! - this module: actions, scopes, principals and settings.

pub mod orgs;
pub mod passkeys;
pub mod permissions;
pub mod policy;
pub mod session;
pub mod store;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use policy::{CatalogView, Policy, Requirement, RouteKind};
pub use token::{Access, Claims, Signer, TokenError, VerifyingKey};

/// An action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];
}

/// A requested scope: `repository:<name>:<action>[,<action>…]`. The name may contain `:` (a
/// registry host with a port), so the type is split off the left and the actions off the right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub name: String,
    pub actions: Vec<Action>,
    /// `*` in the actions (Docker's "all"): every action.
    pub wildcard: bool,
}

impl Scope {
    /// Parses one scope; anything that is not a well-formed repository scope is `None` and is
    /// simply not granted, as the token spec says.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("repository:")?;
        let (name, actions) = rest.rsplit_once(':')?;
        crate::names::RepoName::parse(name).ok()?;
        let mut parsed = Vec::new();
        let mut wildcard = false;
        for action in actions.split(',') {
            match action {
                "*" => wildcard = true,
                other => parsed.push(Action::parse(other)?),
            }
        }
        Some(Scope {
            name: name.to_owned(),
            actions: parsed,
            wildcard,
        })
    }

    /// Every scope in a space-separated list (Docker sends several `scope` parameters or one
    /// parameter with spaces).
    pub fn parse_all<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<Scope> {
        texts
            .flat_map(|t| t.split(' '))
            .filter_map(Scope::parse)
            .collect()
    }
}

/// A pattern in an access token's scopes: a repository (`alice/app`), a namespace (`alice/*`),
/// or everything (`*`), with the actions allowed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopePattern {
    pub repository: String,
    pub actions: Vec<Action>,
}

impl ScopePattern {
    /// `repository:<pattern>:<actions>` as given on the command line.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("repository:")?;
        let (pattern, actions) = rest.rsplit_once(':')?;
        let actions: Option<Vec<Action>> = actions.split(',').map(Action::parse).collect();
        let pattern_ok = pattern == "*"
            || crate::names::RepoName::parse(pattern.strip_suffix("/*").unwrap_or(pattern)).is_ok();
        pattern_ok.then_some(ScopePattern {
            repository: pattern.to_owned(),
            actions: actions?,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        if self.repository == "*" {
            return true;
        }
        match self.repository.strip_suffix("/*") {
            Some(prefix) => name
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rest| !rest.is_empty()),
            None => self.repository == name,
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Empty for anonymous.
    pub name: String,
    pub admin: bool,
    /// The access token's limits; `None` means the user's full rights.
    pub limits: Option<Vec<ScopePattern>>,
    /// A robot account (`<org>+<name>`): it has only what its grants give, and never manages
    /// anything.
    pub robot: bool,
}

impl Principal {
    pub fn anonymous() -> Self {
        Self {
            name: String::new(),
            admin: false,
            limits: None,
            robot: false,
        }
    }

    /// A signed-in user with their full rights.
    pub fn user(name: &str, admin: bool) -> Self {
        Self {
            name: name.to_owned(),
            admin,
            limits: None,
            robot: false,
        }
    }

    /// A robot account, `<org>+<name>`.
    pub fn robot(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            admin: false,
            limits: None,
            robot: true,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name.is_empty()
    }
}

/// Token and auth settings of a registry.
#[derive(Clone)]
pub struct AuthSettings {
    /// The `service` (token audience).
    pub service: String,
    /// The public base URL (`https://registry.example`); `None`: derived from the request's Host.
    pub public_url: Option<String>,
    /// Issues tokens; hosts that only verify may leave it out (then `/token` is 404).
    pub signer: Option<Arc<Signer>>,
    /// Keys tokens are accepted from (the signer's, plus older ones during a rotation).
    pub keys: Vec<VerifyingKey>,
    pub token_ttl: Duration,
    /// How long after its token expired an upload opened with it may still be finished.
    pub upload_grace: Duration,
    /// The web app's passkey sign-in ([`Self::with_passkeys`]); `None`: no browser sessions.
    pub relying_party: Option<Arc<passkeys::RelyingParty>>,
    /// Whether anyone may create an account with a passkey (`OPENREGISTRY_SIGNUP`).
    pub signup: bool,
}

impl AuthSettings {
    /// Settings that sign with `signer` and accept its key.
    pub fn new(service: &str, signer: Signer) -> Result<Self, TokenError> {
        let key = signer.verifier_key()?;
        Ok(Self {
            service: service.to_owned(),
            public_url: None,
            signer: Some(Arc::new(signer)),
            keys: vec![key],
            token_ttl: Duration::from_secs(300),
            upload_grace: Duration::from_secs(3600),
            relying_party: None,
            signup: false,
        })
    }

    /// Turns on the web app's passkey sign-in for the origin of `public_url` (also the token
    /// realm's base), with self-service sign-up when `signup`.
    pub fn with_passkeys(
        mut self,
        public_url: &str,
        signup: bool,
    ) -> Result<Self, passkeys::PasskeyError> {
        self.relying_party = Some(Arc::new(passkeys::RelyingParty::from_public_url(
            public_url,
        )?));
        self.public_url = Some(public_url.to_owned());
        self.signup = signup;
        Ok(self)
    }

    /// Also accepts tokens signed by the keys in `list`, comma-separated PASERK `k4.public` keys
    /// (`OPENREGISTRY_TOKEN_PUBLIC_KEYS`): the public halves of earlier signing keys while their
    /// tokens are still around after a rotation. Tokens are signed by [`Self::signer`] alone.
    /// Whitespace around entries is ignored and so is a key already accepted; a blank list adds
    /// nothing. Keys are added only if every entry is one.
    pub fn accept_public_keys(&mut self, list: &str) -> Result<(), PublicKeyListError> {
        if list.trim().is_empty() {
            return Ok(());
        }
        let mut parsed = Vec::new();
        for (index, entry) in list.split(',').map(str::trim).enumerate() {
            let entry_number = index + 1;
            if entry.is_empty() {
                return Err(PublicKeyListError::Empty {
                    entry: entry_number,
                });
            }
            let key = VerifyingKey::from_paserk(entry).map_err(|_| {
                let header = paserk_header(entry);
                // k4.secret, k4.local and their -wrap and -pw forms all hold secrets.
                let kind = header.split('.').nth(1).unwrap_or_default();
                if kind.starts_with("secret") || kind.starts_with("local") {
                    PublicKeyListError::SecretKey {
                        entry: entry_number,
                        header,
                    }
                } else {
                    PublicKeyListError::NotAPublicKey {
                        entry: entry_number,
                        header,
                    }
                }
            })?;
            parsed.push(key);
        }
        for key in parsed {
            if !self.keys.iter().any(|k| k.kid() == key.kid()) {
                self.keys.push(key);
            }
        }
        Ok(())
    }
}

/// Why a list of verification keys ([`AuthSettings::accept_public_keys`]) was refused. Entries
/// are counted from 1 and shown by their PASERK header (`k4.local`) at most: a secret pasted into
/// the list by mistake must not reach an error message or a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyListError {
    #[error("entry {entry} is empty (two commas in a row, or a comma at an end)")]
    Empty { entry: usize },
    #[error("entry {entry} is a secret key ({header}.…): list public keys (k4.public.…) only")]
    SecretKey { entry: usize, header: String },
    #[error("entry {entry} ({header}) is not a valid PASERK k4.public key")]
    NotAPublicKey { entry: usize, header: String },
}

/// `k4.public` of `k4.public.AAAA…`: a PASERK's version (`k<digits>`) and type (lowercase words
/// and hyphens), never its key material; `not PASERK` for anything else.
fn paserk_header(entry: &str) -> String {
    let version_ok = |v: &str| {
        v.strip_prefix('k')
            .is_some_and(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let kind_ok = |k: &str| {
        (1..=16).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
    };
    match entry.splitn(3, '.').collect::<Vec<_>>()[..] {
        [version, kind, _] if version_ok(version) && kind_ok(kind) => format!("{version}.{kind}"),
        _ => "not PASERK".to_owned(),
    }
}

/// A secret credential as minted: `<prefix><16 hex id>_<64 hex secret>` (access tokens `orp_`,
/// robot secrets `orr_`). The id finds the row; only the secret's SHA-256 (`hash`) is stored, and
/// `text` is shown once.
pub struct MintedSecret {
    pub id: String,
    pub hash: String,
    pub text: String,
}

/// Mints a secret credential with `prefix`.
pub fn mint_secret(random: &dyn crate::ports::Random, prefix: &str) -> MintedSecret {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    random.fill(&mut id);
    random.fill(&mut secret);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    MintedSecret {
        hash: hash_secret(&secret),
        text: format!("{prefix}{id}_{secret}"),
        id,
    }
}

/// The id and secret of a credential text with `prefix`; `None` unless the id is 16 hex digits
/// and the secret at most 128 bytes (anything longer is not looked up).
pub fn split_secret<'t>(prefix: &str, text: &'t str) -> Option<(&'t str, &'t str)> {
    let (id, secret) = text.strip_prefix(prefix)?.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && secret.len() <= 128).then_some((id, secret))
}

/// The SHA-256 a secret is stored as; compare with [`constant_time_eq`].
pub(crate) fn hash_secret(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Whether an optional expiry (milliseconds, as stored text) has passed at `now_ms`.
pub fn expired(expires_at: Option<String>, now_ms: u64) -> bool {
    expires_at
        .and_then(|t| t.parse::<u64>().ok())
        .is_some_and(|at| at <= now_ms)
}

/// Constant-time equality of two byte strings (token hashes): no early exit on a mismatch.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_from_both_ends() {
        let scope = Scope::parse("repository:alice/app:pull,push").expect("valid");
        assert_eq!(scope.name, "alice/app");
        assert_eq!(scope.actions, vec![Action::Pull, Action::Push]);
        assert!(
            Scope::parse("repository:alice/app:*")
                .expect("valid")
                .wildcard
        );
        for bad in [
            "repository:../etc:pull",
            "registry:catalog:*",
            "repository:alice/app:pull,fly",
            "repository:alice/app",
            "repository:Alice:pull",
            "repository:a b:pull",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn namespace_patterns_match_below_the_namespace_only() {
        let pattern = ScopePattern::parse("repository:alice/*:pull").expect("valid");
        assert!(pattern.matches("alice/app"));
        assert!(pattern.matches("alice/a/b"));
        assert!(!pattern.matches("alice"));
        assert!(!pattern.matches("alice/"));
        assert!(!pattern.matches("alicebob/app"));
        assert!(ScopePattern::parse("repository:*:pull")
            .expect("valid")
            .matches("x"));
    }

    #[test]
    fn key_list_errors_show_the_paserk_header_only() {
        assert_eq!(paserk_header("k4.secret.c2VjcmV0"), "k4.secret");
        assert_eq!(paserk_header("k4.local-pw.abc.def"), "k4.local-pw");
        assert_eq!(paserk_header("k4.public."), "k4.public");
        assert_eq!(paserk_header("c2VjcmV0"), "not PASERK");
        assert_eq!(paserk_header("a.b"), "not PASERK");
        assert_eq!(paserk_header("k4.c2VjcmV0c2VjcmV0c2VjcmV0.x"), "not PASERK");
        assert_eq!(paserk_header("s3cr3t.public.x"), "not PASERK");
        assert_eq!(paserk_header("k4.S3cr3t.x"), "not PASERK");
    }

    #[test]
    fn hash_comparison_is_length_and_content_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
