//! Browser sessions of the web app: a short PASETO in an `HttpOnly; Secure; SameSite=Strict`
//! cookie, and the CSRF checks every state-changing request made with it passes.
//!
//! A session token is signed with the registry's token key but bound to its own implicit
//! assertion ([`PURPOSE`]), so it never verifies as a registry access token and no access token
//! verifies as a session. It names the user and carries a random CSRF secret, which the web app
//! reads from `GET /api/session` and sends back in [`CSRF_HEADER`]: a cross-site page can make
//! the browser send the cookie (SameSite aside) but can neither read the secret nor set a custom
//! header without a CORS preflight this registry never answers. `Origin` and `Sec-Fetch-Site`
//! are checked too, when the browser sends them.

use std::time::Duration;

use http::{header, HeaderMap, Method};
use serde::{Deserialize, Serialize};

use super::constant_time_eq;
use super::token::{self, Signer, TokenError, VerifyingKey};
use crate::ports::Random;

/// The cookie's name: `__Host-` makes browsers refuse it unless it is `Secure`, for `Path=/` and
/// without a `Domain` (so no sibling host can set or shadow it).
pub const COOKIE: &str = "__Host-openregistry-session";
/// The header the web app echoes the session's CSRF secret in.
pub const CSRF_HEADER: &str = "x-openregistry-csrf";
/// How long a browser session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The implicit assertion session tokens are signed with.
const PURPOSE: &[u8] = b"openregistry browser session v1";

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The signed-in user.
    pub sub: String,
    /// The service it was issued by (`OPENREGISTRY_SERVICE`).
    pub aud: String,
    /// Unix milliseconds.
    pub iat: u64,
    pub exp: u64,
    /// The CSRF secret (hex).
    pub csrf: String,
}

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session is invalid: {0}")]
    Invalid(#[from] TokenError),
    #[error("the session has expired: sign in again")]
    Expired,
    #[error("the session was issued by another service")]
    WrongService,
    #[error("cross-site request refused: {0}")]
    CrossSite(&'static str),
}

impl Session {
    /// A new session for `user` at `now_ms`.
    pub fn new(user: &str, service: &str, random: &dyn Random, now_ms: u64) -> Self {
        let mut csrf = [0u8; 32];
        random.fill(&mut csrf);
        Self {
            sub: user.to_owned(),
            aud: service.to_owned(),
            iat: now_ms,
            exp: now_ms.saturating_add(u64::try_from(SESSION_TTL.as_millis()).unwrap_or(0)),
            csrf: hex::encode(csrf),
        }
    }

    pub fn sign(&self, signer: &Signer) -> Result<String, TokenError> {
        let payload = serde_json::to_vec(self).map_err(|_| TokenError::BadClaims)?;
        signer.sign_purpose(&payload, PURPOSE)
    }

    /// Verifies a session token for `service` at `now_ms`.
    pub fn verify(
        text: &str,
        keys: &[VerifyingKey],
        service: &str,
        now_ms: u64,
    ) -> Result<Self, SessionError> {
        let payload = token::verify_purpose(text, keys, PURPOSE)?;
        let session: Session = serde_json::from_str(&payload).map_err(|_| TokenError::BadClaims)?;
        if session.aud != service {
            return Err(SessionError::WrongService);
        }
        if session.exp <= now_ms {
            return Err(SessionError::Expired);
        }
        Ok(session)
    }

    /// The `Set-Cookie` value that stores `token` in the browser.
    pub fn cookie(token: &str) -> String {
        format!(
            "{COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            SESSION_TTL.as_secs()
        )
    }

    /// The `Set-Cookie` value that signs the browser out.
    pub fn removal_cookie() -> String {
        format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
    }

    /// Whether a request made with this session may change state: safe methods always; others
    /// only with the session's CSRF secret in [`CSRF_HEADER`] and from this registry's origin.
    pub fn check_request(
        &self,
        method: &Method,
        headers: &HeaderMap,
        origin: &str,
    ) -> Result<(), SessionError> {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        same_origin(headers, origin)?;
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(SessionError::CrossSite("the CSRF token is missing"))?;
        if !constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            return Err(SessionError::CrossSite("the CSRF token is wrong"));
        }
        Ok(())
    }
}

/// The session token in a request's `Cookie` headers, if any.
pub fn from_cookies(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Refuses a request a browser marks as cross-site or sent from another origin (a sign-in
/// ceremony too: login CSRF). Clients that send neither header (not browsers) pass.
pub fn same_origin(headers: &HeaderMap, origin: &str) -> Result<(), SessionError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(SessionError::CrossSite("Sec-Fetch-Site is not same-origin"));
        }
    }
    if let Some(sent) = text("origin") {
        if sent.trim_end_matches('/') != origin.trim_end_matches('/') {
            return Err(SessionError::CrossSite("Origin is not this registry's"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SeededRandom;
    use http::HeaderValue;
    use pasetors::keys::AsymmetricSecretKey;
    use pasetors::paserk::FormatAsPaserk;
    use pasetors::version4::V4;

    fn signer() -> Signer {
        let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3u8; 32]));
        let secret = AsymmetricSecretKey::<V4>::from(pair.sk.as_ref()).expect("key");
        let mut paserk = String::new();
        secret.fmt(&mut paserk).expect("format");
        Signer::from_paserk(&paserk).expect("signer")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn a_session_verifies_only_as_a_session_and_only_until_it_expires() {
        let signer = signer();
        let keys = [signer.verifier_key().expect("key")];
        let session = Session::new("alice", "svc", &SeededRandom::default(), 1_000);
        let text = session.sign(&signer).expect("signed");
        assert_eq!(
            Session::verify(&text, &keys, "svc", 2_000),
            Ok(session.clone())
        );
        assert_eq!(
            Session::verify(&text, &keys, "other", 2_000),
            Err(SessionError::WrongService)
        );
        assert_eq!(
            Session::verify(&text, &keys, "svc", session.exp),
            Err(SessionError::Expired)
        );
        // Not an access token, whatever it says.
        assert!(token::verify(&text, &keys, "svc", 2_000).is_err());
    }

    #[test]
    fn state_changes_need_the_csrf_secret_and_the_same_origin() {
        let session = Session::new("alice", "svc", &SeededRandom::default(), 0);
        let origin = "https://registry.example";
        let good = headers(&[("origin", origin), (CSRF_HEADER, &session.csrf)]);
        assert!(session.check_request(&Method::POST, &good, origin).is_ok());
        assert!(session
            .check_request(&Method::GET, &HeaderMap::new(), origin)
            .is_ok());
        let missing = headers(&[("origin", origin)]);
        assert!(session
            .check_request(&Method::POST, &missing, origin)
            .is_err());
        let wrong = headers(&[("origin", origin), (CSRF_HEADER, "00")]);
        assert!(session
            .check_request(&Method::DELETE, &wrong, origin)
            .is_err());
        let cross = headers(&[
            ("origin", "https://evil.example"),
            (CSRF_HEADER, &session.csrf),
        ]);
        assert!(session.check_request(&Method::PUT, &cross, origin).is_err());
        let site = headers(&[
            ("sec-fetch-site", "cross-site"),
            (CSRF_HEADER, &session.csrf),
        ]);
        assert!(session.check_request(&Method::POST, &site, origin).is_err());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=1; __Host-openregistry-session=tok; b=2")]);
        assert_eq!(from_cookies(&map), Some("tok"));
        assert_eq!(from_cookies(&headers(&[("cookie", "a=1")])), None);
        let set = Session::cookie("tok");
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(part), "{set}");
        }
    }
}
