//! Registry access tokens: PASETO v4.public (Ed25519), signed with a PASERK `k4.secret` key and
//! verified with public keys alone, so an edge instance checks a request without a database hit.
//!
//! Claims: `iss`, `sub`, `aud` (the service), `exp`, `nbf`, `iat` (RFC 3339, as PASETO's registered
//! claims are), `jti`, and `access` — Docker's list of `{type, name, actions}`. The footer carries
//! the signing key's PASERK id (`{"kid":"k4.pid.…"}`), so keys can rotate: verifiers hold a set.

use pasetors::keys::{AsymmetricPublicKey, AsymmetricSecretKey};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use pasetors::Public;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
    /// Org mode's finer rights on this repository (see `Policy::access_entry`); absent when the
    /// Docker actions say it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<super::permissions::TagRule>>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: String,
    pub nbf: String,
    pub iat: String,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
    /// `refresh` for refresh tokens (they grant nothing by themselves); absent for access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The personal access token a refresh token stands for (checked again at every refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
}

impl Claims {
    /// Expiry in Unix milliseconds.
    pub fn expires_ms(&self) -> Result<u64, TokenError> {
        parse_time(&self.exp)
    }

    /// The actions granted on `kind:name`.
    pub fn actions_on(&self, kind: &str, name: &str) -> Vec<&str> {
        self.access
            .iter()
            .filter(|a| a.kind == kind && a.name == name)
            .flat_map(|a| a.actions.iter().map(String::as_str))
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct Footer {
    kid: String,
}

/// Why a token was refused; each is answered 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a v4.public PASETO")]
    Malformed,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token's claims are invalid")]
    BadClaims,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued for another service")]
    WrongAudience,
    #[error("the signing key is invalid: {0}")]
    Key(String),
}

pub fn format_time(unix_ms: u64) -> String {
    let seconds = i64::try_from(unix_ms / 1000).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn parse_time(text: &str) -> Result<u64, TokenError> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TokenError::BadClaims)?;
    u64::try_from(t.unix_timestamp())
        .map(|s| s * 1000)
        .map_err(|_| TokenError::BadClaims)
}

/// Signs tokens (the service that answers `/token`).
pub struct Signer {
    secret: AsymmetricSecretKey<V4>,
    kid: String,
}

impl Signer {
    /// From a PASERK `k4.secret.…` string.
    pub fn from_paserk(paserk: &str) -> Result<Self, TokenError> {
        let secret = AsymmetricSecretKey::<V4>::try_from(paserk.trim())
            .map_err(|_| TokenError::Key("not a PASERK k4.secret key".into()))?;
        let public = AsymmetricPublicKey::<V4>::try_from(&secret)
            .map_err(|_| TokenError::Key("cannot derive the public key".into()))?;
        let kid = key_id(&public);
        Ok(Self { secret, kid })
    }

    /// The public key as PASERK `k4.public.…` (for verifiers elsewhere).
    pub fn public_paserk(&self) -> Result<String, TokenError> {
        let public = AsymmetricPublicKey::<V4>::try_from(&self.secret)
            .map_err(|_| TokenError::Key("cannot derive the public key".into()))?;
        let mut out = String::new();
        public
            .fmt(&mut out)
            .map_err(|_| TokenError::Key("cannot format the public key".into()))?;
        Ok(out)
    }

    pub fn verifier_key(&self) -> Result<VerifyingKey, TokenError> {
        VerifyingKey::from_paserk(&self.public_paserk()?)
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let message = serde_json::to_vec(claims).map_err(|_| TokenError::BadClaims)?;
        let footer = serde_json::to_vec(&Footer {
            kid: self.kid.clone(),
        })
        .map_err(|_| TokenError::BadClaims)?;
        PublicToken::sign(&self.secret, &message, Some(&footer), None)
            .map_err(|_| TokenError::Key("signing failed".into()))
    }

    /// Signs any payload bound to an implicit assertion (`purpose`): such a token verifies only
    /// through [`verify_purpose`] with the same assertion, never as an access token, and no
    /// access token verifies as one of them (browser sessions use this).
    pub fn sign_purpose(&self, payload: &[u8], purpose: &[u8]) -> Result<String, TokenError> {
        let footer = serde_json::to_vec(&Footer {
            kid: self.kid.clone(),
        })
        .map_err(|_| TokenError::BadClaims)?;
        PublicToken::sign(&self.secret, payload, Some(&footer), Some(purpose))
            .map_err(|_| TokenError::Key("signing failed".into()))
    }
}

/// The payload of a token signed by [`Signer::sign_purpose`] for `purpose` with one of `keys`.
pub fn verify_purpose(
    token: &str,
    keys: &[VerifyingKey],
    purpose: &[u8],
) -> Result<String, TokenError> {
    let (key, untrusted) = untrusted_with_key(token, keys)?;
    let trusted = PublicToken::verify(&key.public, &untrusted, None, Some(purpose))
        .map_err(|_| TokenError::BadSignature)?;
    Ok(trusted.payload().to_owned())
}

/// The token, parsed but unverified, and the key its footer names.
fn untrusted_with_key<'k>(
    token: &str,
    keys: &'k [VerifyingKey],
) -> Result<(&'k VerifyingKey, UntrustedToken<Public, V4>), TokenError> {
    let untrusted =
        UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
    let footer: Footer =
        serde_json::from_slice(untrusted.untrusted_footer()).map_err(|_| TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.kid == footer.kid)
        .ok_or(TokenError::UnknownKey)?;
    Ok((key, untrusted))
}

fn key_id(public: &AsymmetricPublicKey<V4>) -> String {
    let mut out = String::new();
    // Formatting a PASERK id into a String cannot fail.
    let _ = Id::from(public).fmt(&mut out);
    out
}

/// A public key tokens are checked against.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    public: AsymmetricPublicKey<V4>,
}

impl VerifyingKey {
    /// From a PASERK `k4.public.…` string.
    pub fn from_paserk(paserk: &str) -> Result<Self, TokenError> {
        let public = AsymmetricPublicKey::<V4>::try_from(paserk.trim())
            .map_err(|_| TokenError::Key("not a PASERK k4.public key".into()))?;
        Ok(Self {
            kid: key_id(&public),
            public,
        })
    }

    /// The key's PASERK id (`k4.pid.…`), which tokens name in their footer.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Verifies a token against a set of keys, for one service, at `now_ms`.
pub fn verify(
    token: &str,
    keys: &[VerifyingKey],
    service: &str,
    now_ms: u64,
) -> Result<Claims, TokenError> {
    verify_with_grace(token, keys, service, now_ms, 0)
}

/// Whether the claims of a token verified earlier still hold at `now_ms` (the checks of
/// [`verify`] that depend on the time).
pub fn is_current(claims: &Claims, now_ms: u64) -> bool {
    check_times(claims, now_ms, 0).is_ok()
}

/// `nbf` (with a second of clock skew) and `exp` (with `grace_ms`) at `now_ms`.
fn check_times(claims: &Claims, now_ms: u64, grace_ms: u64) -> Result<(), TokenError> {
    if parse_time(&claims.nbf)? > now_ms + 1000 {
        return Err(TokenError::NotYetValid);
    }
    if parse_time(&claims.exp)?.saturating_add(grace_ms) <= now_ms {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// Like [`verify`], but a token that expired less than `grace_ms` ago still passes (everything
/// else, `nbf` included, is checked at `now_ms`).
pub fn verify_with_grace(
    token: &str,
    keys: &[VerifyingKey],
    service: &str,
    now_ms: u64,
    grace_ms: u64,
) -> Result<Claims, TokenError> {
    let (key, untrusted) = untrusted_with_key(token, keys)?;
    let trusted = PublicToken::verify(&key.public, &untrusted, None, None)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims =
        serde_json::from_str(trusted.payload()).map_err(|_| TokenError::BadClaims)?;
    if claims.aud != service {
        return Err(TokenError::WrongAudience);
    }
    check_times(&claims, now_ms, grace_ms)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A fixed test key (PASERK test vector style): generated once for these tests only.
    fn signer() -> Signer {
        Signer::from_paserk(&test_secret()).expect("valid key")
    }

    fn test_secret() -> String {
        // Ed25519 secret = seed || public key; derive a consistent pair from a fixed seed.
        let kp = ed25519_pair([9u8; 32]);
        let secret = AsymmetricSecretKey::<V4>::from(&kp).expect("key");
        let mut out = String::new();
        secret.fmt(&mut out).expect("format");
        out
    }

    fn ed25519_pair(seed: [u8; 32]) -> Vec<u8> {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        kp.sk.to_vec()
    }

    fn claims(now_ms: u64) -> Claims {
        Claims {
            iss: "openregistry".into(),
            sub: "alice".into(),
            aud: "registry.test".into(),
            exp: format_time(now_ms + 300_000),
            nbf: format_time(now_ms),
            iat: format_time(now_ms),
            jti: "j1".into(),
            access: vec![Access {
                kind: "repository".into(),
                name: "alice/app".into(),
                actions: vec!["pull".into()],
                rules: None,
            }],
            purpose: None,
            tid: None,
        }
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_signed_token_verifies_with_the_public_key_alone() {
        let signer = signer();
        let token = signer.sign(&claims(NOW)).expect("signs");
        assert!(token.starts_with("v4.public."));
        let keys = [signer.verifier_key().expect("key")];
        let verified = verify(&token, &keys, "registry.test", NOW).expect("valid");
        assert_eq!(verified.actions_on("repository", "alice/app"), vec!["pull"]);
    }

    #[test]
    fn expired_early_foreign_and_tampered_tokens_are_refused() {
        let signer = signer();
        let keys = [signer.verifier_key().expect("key")];
        let token = signer.sign(&claims(NOW)).expect("signs");
        assert_eq!(
            verify(&token, &keys, "registry.test", NOW + 300_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&token, &keys, "registry.test", NOW - 60_000),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            verify(&token, &keys, "other", NOW),
            Err(TokenError::WrongAudience)
        );
        let mut tampered = token.clone().into_bytes();
        let i = 20;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(verify(&tampered, &keys, "registry.test", NOW).is_err());
        assert_eq!(
            verify("v4.local.abc", &keys, "registry.test", NOW),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify("", &keys, "registry.test", NOW),
            Err(TokenError::Malformed)
        );
        let other = Signer::from_paserk(&{
            let secret = AsymmetricSecretKey::<V4>::from(&ed25519_pair([1u8; 32])).expect("key");
            let mut out = String::new();
            secret.fmt(&mut out).expect("format");
            out
        })
        .expect("key");
        let forged = other.sign(&claims(NOW)).expect("signs");
        assert_eq!(
            verify(&forged, &keys, "registry.test", NOW),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
    }
}
