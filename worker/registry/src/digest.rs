//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the resumable hasher that computes them
//! while bytes stream past.
//!
//! The hasher's state can be saved into an upload session and restored by another request, on
//! another instance: the edge is stateless, and an upload spans many requests. `sha2` (through
//! `digest`'s `SerializableState`) provides the state encoding; this module only frames it.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use digest::common::hazmat::SerializableState;
use digest::Digest as _;
use serde::{Deserialize, Serialize};

/// A digest algorithm the registry can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// Why a string is not a digest the registry accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form algorithm:encoded")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (use sha256 or sha512)")]
    UnsupportedAlgorithm(String),
    #[error(
        "digest {0:?} does not have the length and lowercase hex encoding its algorithm requires"
    )]
    BadEncoding(String),
}

/// A validated digest. Its string form is canonical: lowercase algorithm and hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
}

impl Digest {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn algorithm(&self) -> Algorithm {
        // The constructor only admits the two algorithms; the prefix decides which.
        if self.text.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex part after `algorithm:`.
    pub fn hex(&self) -> &str {
        self.text
            .split_once(':')
            .map_or(self.text.as_str(), |(_, hex)| hex)
    }

    /// Hashes a complete buffer (manifests are small and arrive whole).
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(bytes);
        hasher.finish()
    }
}

/// True for the spec's digest grammar: `[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`.
fn matches_digest_grammar(text: &str) -> bool {
    let Some((algorithm, encoded)) = text.split_once(':') else {
        return false;
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
    algorithm_ok && encoded_ok
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if !matches_digest_grammar(text) {
            return Err(DigestError::Malformed(text.to_owned()));
        }
        let (algorithm, encoded) = text.split_once(':').unwrap_or_default();
        let algorithm = Algorithm::parse(algorithm)
            .ok_or_else(|| DigestError::UnsupportedAlgorithm(algorithm.to_owned()))?;
        let lower_hex = encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if encoded.len() != algorithm.hex_len() || !lower_hex {
            return Err(DigestError::BadEncoding(text.to_owned()));
        }
        Ok(Digest {
            text: text.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A running hash whose state survives between requests.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Why a saved hasher state could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saved hash state is corrupt")]
pub struct CorruptHashState;

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            text: format!("{}:{hex}", algorithm.name()),
        }
    }

    /// The state as a short string (`sha256:<base64>`), to keep in an upload session.
    pub fn save(&self) -> String {
        let state = match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        };
        format!(
            "{}:{}",
            self.algorithm().name(),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(state)
        )
    }

    /// Restores a state written by [`Hasher::save`].
    pub fn restore(saved: &str) -> Result<Self, CorruptHashState> {
        let (name, encoded) = saved.split_once(':').ok_or(CorruptHashState)?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| CorruptHashState)?;
        match Algorithm::parse(name).ok_or(CorruptHashState)? {
            Algorithm::Sha256 => {
                let state = bytes.as_slice().try_into().map_err(|_| CorruptHashState)?;
                sha2::Sha256::deserialize(state)
                    .map(Hasher::Sha256)
                    .map_err(|_| CorruptHashState)
            }
            Algorithm::Sha512 => {
                let state = bytes.as_slice().try_into().map_err(|_| CorruptHashState)?;
                sha2::Sha512::deserialize(state)
                    .map(Hasher::Sha512)
                    .map_err(|_| CorruptHashState)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_and_sha512_digests_parse() {
        let d: Digest = EMPTY_SHA256.parse().expect("valid");
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        let long = format!("sha512:{}", "ab".repeat(64));
        assert_eq!(
            long.parse::<Digest>().expect("valid").algorithm(),
            Algorithm::Sha512
        );
    }

    #[test]
    fn malformed_digests_are_rejected_with_the_reason() {
        assert!(matches!(
            "sha256".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            "sha256:".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            "SHA256:abc".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::BadEncoding(_))
        ));
        let upper = EMPTY_SHA256.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(
            upper.parse::<Digest>(),
            Err(DigestError::BadEncoding(_))
        ));
    }

    #[test]
    fn a_saved_hash_state_resumes_where_it_stopped() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut first = Hasher::new(algorithm);
            first.update(b"hello ");
            let saved = first.save();
            let mut resumed = Hasher::restore(&saved).expect("restores");
            resumed.update(b"world");
            assert_eq!(resumed.finish(), Digest::of(algorithm, b"hello world"));
        }
    }

    #[test]
    fn corrupt_hash_states_are_refused() {
        assert!(Hasher::restore("sha256:!!!").is_err());
        assert!(Hasher::restore("sha256:AAAA").is_err());
        assert!(Hasher::restore("md5:AAAA").is_err());
    }
}
