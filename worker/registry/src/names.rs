//! Repository names, tags and manifest references, validated against the spec's grammar.
//!
//! Name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most
//! [`MAX_NAME_LEN`] bytes. Tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. Hand-written rather than a
//! regex: two tiny grammars don't justify a regex engine in every WASM build.

use std::fmt;

use crate::digest::Digest;
use crate::error::RegistryError;

/// Longest repository name accepted (the spec's limit for `<host>/<name>` is 255 characters).
pub const MAX_NAME_LEN: usize = 255;

/// A validated repository name, such as `library/alpine` or `a/b/c/d/e/f/g/h`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        if text.is_empty() || text.len() > MAX_NAME_LEN {
            return Err(RegistryError::NameInvalid(format!(
                "repository names have 1 to {MAX_NAME_LEN} characters"
            )));
        }
        if !text.split('/').all(is_path_component) {
            return Err(RegistryError::NameInvalid(format!(
                "{text:?} does not match [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*(/...)*"
            )));
        }
        Ok(RepoName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `/`-separated component: alphanumeric runs joined by `.`, `_`, `__` or `-+`.
fn is_path_component(component: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut rest = component.as_bytes();
    loop {
        // An alphanumeric run.
        let run = rest.iter().take_while(|b| alnum(b)).count();
        if run == 0 {
            return false;
        }
        rest = rest.get(run..).unwrap_or_default();
        // A separator, or the end.
        let Some((&separator, after)) = rest.split_first() else {
            return true;
        };
        rest = match separator {
            b'.' => after,
            b'_' => after.strip_prefix(b"_").unwrap_or(after),
            b'-' => {
                let dashes = after.iter().take_while(|b| **b == b'-').count();
                after.get(dashes..).unwrap_or_default()
            }
            _ => return false,
        };
    }
}

/// A validated tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let bytes = text.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || bytes.len() > 128 {
            return Err(RegistryError::TagInvalid(format!(
                "{text:?} does not match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"
            )));
        }
        Ok(Tag(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// Anything with a `:` is a digest (tags cannot contain one); the rest must be a tag.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        if text.contains(':') {
            Ok(Reference::Digest(text.parse()?))
        } else {
            Ok(Reference::Tag(Tag::parse(text)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar_at_any_depth() {
        for ok in [
            "a",
            "library/alpine",
            "a/b/c/d/e/f/g/h",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "v1.2",
            "0",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a.", "a_", "a/.b", "a b",
            "a:b",
        ] {
            assert!(
                matches!(RepoName::parse(bad), Err(RegistryError::NameInvalid(_))),
                "{bad:?} should be invalid"
            );
        }
        assert!(RepoName::parse(&"a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(RepoName::parse(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for ok in ["latest", "v1.0.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["", ".x", "-x", "a/b", "a+b", &"t".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn references_with_a_colon_are_digests() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse("sha256:nothex"),
            Err(RegistryError::DigestInvalid(_))
        ));
    }
}
