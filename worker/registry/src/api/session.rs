//! The web app's sign-in API under `/api/`: passkey sign-up and sign-in, the browser session,
//! and the signed-in user's passkeys.
//!
//! | route | methods | what |
//! |---|---|---|
//! | `/api/session` | GET, DELETE | who is signed in (and the CSRF secret); sign out |
//! | `/api/session/start`, `/finish` | POST | sign in with a passkey: options, then the assertion |
//! | `/api/session/signup/start`, `/finish` | POST | a new account with its first passkey (`OPENREGISTRY_SIGNUP`) |
//! | `/api/passkeys` | GET | the signed-in user's passkeys |
//! | `/api/passkeys/start`, `/finish` | POST | add a passkey |
//! | `/api/passkeys/<id>` | DELETE | remove one (never the last) |
//!
//! The ceremonies (`auth::passkeys`) need `OPENREGISTRY_PUBLIC_URL`; without it these routes
//! answer 404. Sign-in and sign-up requests must come from this registry's origin (login CSRF),
//! and a finished ceremony answers with the session cookie (`auth::session`).

use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::account::{parse_json, ApiError, MAX_API_BODY};
use super::{json_response, Registry};
use crate::auth::passkeys::{self, PasskeyError, RelyingParty};
use crate::auth::session::{self, Session, SessionError};
use crate::auth::{store, AuthSettings, Principal};
use crate::body::Body;
use crate::ports::SqlError;

impl From<PasskeyError> for ApiError {
    fn from(error: PasskeyError) -> Self {
        match error {
            PasskeyError::Registry(r) => r.into(),
            PasskeyError::NotConfigured(_) => ApiError::NotFound(error.to_string()),
            PasskeyError::NoPasskeys(_) => ApiError::Conflict(error.to_string()),
            PasskeyError::UnknownCeremony
            | PasskeyError::WrongCeremony
            | PasskeyError::Refused(_)
            | PasskeyError::UnknownPasskey => ApiError::Unauthorized {
                challenge: String::new(),
                reason: error.to_string(),
            },
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::CrossSite(_) => ApiError::Forbidden(error.to_string()),
            _ => ApiError::Unauthorized {
                challenge: String::new(),
                reason: error.to_string(),
            },
        }
    }
}

/// A ceremony's first request: whose.
#[derive(Deserialize)]
struct Start {
    user: String,
}

/// A ceremony's second request: the browser's answer (`PublicKeyCredential` as JSON).
#[derive(Deserialize)]
struct Finish<C> {
    ceremony: String,
    credential: C,
    /// A name for a new passkey ("laptop", "phone").
    #[serde(default)]
    name: Option<String>,
}

fn passkey_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name.unwrap_or_else(|| "passkey".into());
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "a passkey's name is 1 to 64 printable characters".into(),
        ));
    }
    Ok(name.to_owned())
}

impl Registry {
    /// The relying party, or 404 when passkeys are not configured.
    fn relying_party<'a>(&self, auth: &'a AuthSettings) -> Result<&'a RelyingParty, ApiError> {
        auth.relying_party.as_deref().ok_or_else(|| {
            ApiError::NotFound(
                "passkey sign-in is off: set OPENREGISTRY_PUBLIC_URL to the registry's origin"
                    .into(),
            )
        })
    }

    /// The session of a request's cookie, if it has a valid one.
    pub(super) fn browser_session(
        &self,
        auth: &AuthSettings,
        headers: &http::HeaderMap,
    ) -> Option<Result<Session, SessionError>> {
        let text = session::from_cookies(headers)?;
        Some(Session::verify(
            text,
            &auth.keys,
            &auth.service,
            self.now_ms(),
        ))
    }

    /// The user of a request signed in with the session cookie; state changes pass the CSRF
    /// checks first. `None`: the request has no session cookie.
    pub(super) async fn session_principal(
        &self,
        auth: &AuthSettings,
        method: &Method,
        headers: &http::HeaderMap,
    ) -> Option<Result<Principal, ApiError>> {
        let session = match self.browser_session(auth, headers)? {
            Ok(session) => session,
            Err(e) => return Some(Err(e.into())),
        };
        let origin = match self.relying_party(auth) {
            Ok(rp) => rp.origin().to_owned(),
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = session.check_request(method, headers, &origin) {
            return Some(Err(e.into()));
        }
        Some(
            match store::user_principal(self.ports.sql.as_ref(), &session.sub).await {
                Ok(Some(principal)) => Ok(principal),
                Ok(None) => Err(SessionError::Expired.into()),
                Err(e) => Err(e.into()),
            },
        )
    }

    /// `/api/session…` and `/api/passkeys…`; `None` for any other path.
    pub(super) async fn session_api(
        &self,
        auth: &AuthSettings,
        path: &str,
        request: Request<Body>,
    ) -> Option<Result<Response<Body>, ApiError>> {
        // Headers and body apart: only the headers are held across the awaits below (a body is
        // not `Sync`).
        let (parts, body) = request.into_parts();
        let parts = &parts;
        let method = parts.method.clone();
        let result = match path {
            "session" => match method {
                Method::GET => self.whoami(auth, parts).await,
                Method::DELETE => Ok(signed_out()),
                _ => Err(ApiError::MethodNotAllowed {
                    allow: "GET, DELETE",
                }),
            },
            "session/start" => self.sign_in_start(auth, parts, body).await,
            "session/finish" => self.sign_in_finish(auth, parts, body).await,
            "session/signup/start" => self.sign_up_start(auth, parts, body).await,
            "session/signup/finish" => self.sign_up_finish(auth, parts, body).await,
            "passkeys" => match method {
                Method::GET => self.list_passkeys(auth, parts).await,
                _ => Err(ApiError::MethodNotAllowed { allow: "GET" }),
            },
            "passkeys/start" => self.add_passkey_start(auth, parts, body).await,
            "passkeys/finish" => self.add_passkey_finish(auth, parts, body).await,
            _ => {
                let id = path.strip_prefix("passkeys/")?;
                if id.is_empty() || id.contains('/') {
                    return None;
                }
                match method {
                    Method::DELETE => self.remove_passkey(auth, parts, id).await,
                    _ => Err(ApiError::MethodNotAllowed { allow: "DELETE" }),
                }
            }
        };
        Some(result)
    }

    /// A ceremony request: POST, JSON, from this registry's origin.
    async fn ceremony_body(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
        body: Body,
    ) -> Result<bytes::Bytes, ApiError> {
        if parts.method != Method::POST {
            return Err(ApiError::MethodNotAllowed { allow: "POST" });
        }
        let rp = self.relying_party(auth)?;
        session::same_origin(&parts.headers, rp.origin())?;
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().starts_with("application/json"));
        if !json {
            // A form post (the one kind a cross-site page sends without a preflight) never is.
            return Err(ApiError::BadRequest("send application/json".into()));
        }
        Ok(body.collect(MAX_API_BODY).await?)
    }

    /// Starts registering a passkey for `user` (a new account when `signup`).
    async fn start_registration(
        &self,
        auth: &AuthSettings,
        user: &str,
        signup: bool,
    ) -> Result<Response<Body>, ApiError> {
        let (ceremony, options) = passkeys::start_registration(
            self.relying_party(auth)?,
            self.ports.kv.as_ref(),
            self.ports.random.as_ref(),
            self.ports.sql.as_ref(),
            user,
            signup,
            self.now_ms(),
        )
        .await?;
        Ok(ceremony_started(&ceremony, &options))
    }

    /// Reads and checks the browser's answer to a registration ceremony: the passkey, not yet
    /// stored, and the name it is to have.
    async fn finish_registration(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
        body: Body,
    ) -> Result<(passkeys::Registered, String), ApiError> {
        let body = self.ceremony_body(auth, parts, body).await?;
        let finish: Finish<webauthn_rs::prelude::RegisterPublicKeyCredential> = parse_json(&body)?;
        let name = passkey_name(finish.name)?;
        let registered = passkeys::finish_registration(
            self.relying_party(auth)?,
            self.ports.kv.as_ref(),
            &finish.ceremony,
            &finish.credential,
            self.now_ms(),
        )
        .await?;
        Ok((registered, name))
    }

    /// The signed-in user of a request under `/api/passkeys`: the session (with its CSRF
    /// checks) or Basic credentials with an unscoped access token.
    async fn passkey_owner(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
    ) -> Result<Principal, ApiError> {
        let principal = self
            .api_principal(auth, &parts.method, &parts.headers)
            .await?;
        if principal.robot || !self.policy.may_manage_tokens(&principal) {
            return Err(ApiError::Forbidden(
                "passkeys are managed by their user, with full rights".into(),
            ));
        }
        Ok(principal)
    }

    /// Answers a finished ceremony: the session cookie, and the session as `GET /api/session`
    /// shows it.
    fn signed_in(
        &self,
        auth: &AuthSettings,
        user: &str,
        admin: bool,
    ) -> Result<Response<Body>, ApiError> {
        let signer = auth.signer.as_ref().ok_or_else(|| {
            ApiError::NotFound("this host verifies tokens only; it cannot sign sessions".into())
        })?;
        let session = Session::new(
            user,
            &auth.service,
            self.ports.random.as_ref(),
            self.now_ms(),
        );
        let token = session
            .sign(signer)
            .map_err(|e| ApiError::Internal(format!("cannot sign a session: {e}")))?;
        Ok(with_cookie(
            session_answer(auth, user, admin, &session),
            &Session::cookie(&token),
        ))
    }

    async fn whoami(&self, auth: &AuthSettings, parts: &Parts) -> Result<Response<Body>, ApiError> {
        // Not signed in is an answer too: what the sign-in screen may offer.
        let signed_out = json_response(
            StatusCode::OK,
            json!({
                "user": null,
                "passkeys": auth.relying_party.is_some(),
                "signup": auth.signup && auth.relying_party.is_some(),
            })
            .to_string(),
        );
        let Some(Ok(session)) = self.browser_session(auth, &parts.headers) else {
            return Ok(signed_out);
        };
        let Some(principal) = store::user_principal(self.ports.sql.as_ref(), &session.sub).await?
        else {
            return Ok(signed_out);
        };
        Ok(session_answer(
            auth,
            &principal.name,
            principal.admin,
            &session,
        ))
    }

    async fn sign_in_start(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
        body: Body,
    ) -> Result<Response<Body>, ApiError> {
        let body = self.ceremony_body(auth, parts, body).await?;
        let start: Start = parse_json(&body)?;
        let rp = self.relying_party(auth)?;
        let (ceremony, options) = passkeys::start_authentication(
            rp,
            self.ports.kv.as_ref(),
            self.ports.random.as_ref(),
            self.ports.sql.as_ref(),
            &start.user,
            self.now_ms(),
        )
        .await
        .map_err(|e| match e {
            // The same answer whether the user is unknown or has no passkey.
            PasskeyError::NoPasskeys(_) => ApiError::NotFound(format!(
                "{} has no passkey here (or no such user)",
                start.user
            )),
            other => other.into(),
        })?;
        Ok(ceremony_started(&ceremony, &options))
    }

    async fn sign_in_finish(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
        body: Body,
    ) -> Result<Response<Body>, ApiError> {
        let body = self.ceremony_body(auth, parts, body).await?;
        let finish: Finish<webauthn_rs::prelude::PublicKeyCredential> = parse_json(&body)?;
        let rp = self.relying_party(auth)?;
        let user = passkeys::finish_authentication(
            rp,
            self.ports.kv.as_ref(),
            self.ports.sql.as_ref(),
            &finish.ceremony,
            &finish.credential,
            self.now_ms(),
        )
        .await?;
        let principal = store::user_principal(self.ports.sql.as_ref(), &user)
            .await?
            .ok_or(PasskeyError::UnknownPasskey)?;
        self.signed_in(auth, &principal.name, principal.admin)
    }

    async fn sign_up_start(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
        body: Body,
    ) -> Result<Response<Body>, ApiError> {
        if !auth.signup {
            return Err(ApiError::Forbidden(
                "sign-up is closed here (OPENREGISTRY_SIGNUP): ask an admin for an account".into(),
            ));
        }
        let body = self.ceremony_body(auth, parts, body).await?;
        let start: Start = parse_json(&body)?;
        if !store::valid_user_name(&start.user) {
            return Err(store::StoreError::BadUserName.into());
        }
        if store::user_principal(self.ports.sql.as_ref(), &start.user)
            .await?
            .is_some()
        {
            return Err(store::StoreError::UserExists(start.user).into());
        }
        self.start_registration(auth, &start.user, true).await
    }

    async fn sign_up_finish(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
        body: Body,
    ) -> Result<Response<Body>, ApiError> {
        if !auth.signup {
            return Err(ApiError::Forbidden("sign-up is closed here".into()));
        }
        let (registered, name) = self.finish_registration(auth, parts, body).await?;
        if !registered.signup {
            return Err(PasskeyError::WrongCeremony.into());
        }
        let now = self.now_ms();
        let sql = self.ports.sql.as_ref();
        // The account and its first passkey in one transaction: both or neither.
        store::create_user_with(
            sql,
            &registered.user,
            false,
            now,
            vec![passkeys::insert_statement(&registered, &name, now)?],
        )
        .await?;
        self.signed_in(auth, &registered.user, false)
    }

    async fn list_passkeys(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
    ) -> Result<Response<Body>, ApiError> {
        let principal = self.passkey_owner(auth, parts).await?;
        let list = passkeys::list(self.ports.sql.as_ref(), &principal.name).await?;
        Ok(json_response(
            StatusCode::OK,
            json!({ "passkeys": list }).to_string(),
        ))
    }

    async fn add_passkey_start(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
        body: Body,
    ) -> Result<Response<Body>, ApiError> {
        let principal = self.passkey_owner(auth, parts).await?;
        let _ = self.ceremony_body(auth, parts, body).await?;
        self.start_registration(auth, &principal.name, false).await
    }

    async fn add_passkey_finish(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
        body: Body,
    ) -> Result<Response<Body>, ApiError> {
        let principal = self.passkey_owner(auth, parts).await?;
        let (registered, name) = self.finish_registration(auth, parts, body).await?;
        if registered.signup || registered.user != principal.name {
            return Err(PasskeyError::WrongCeremony.into());
        }
        let statement = passkeys::insert_statement(&registered, &name, self.now_ms())?;
        match self.ports.sql.query(statement).await {
            Ok(_) => {}
            Err(SqlError::UniqueViolation(_)) => {
                return Err(ApiError::Conflict(
                    "this passkey is registered already".into(),
                ))
            }
            Err(e) => return Err(crate::error::RegistryError::from(e).into()),
        }
        let list = passkeys::list(self.ports.sql.as_ref(), &principal.name).await?;
        Ok(json_response(
            StatusCode::CREATED,
            json!({ "passkeys": list }).to_string(),
        ))
    }

    async fn remove_passkey(
        &self,
        auth: &AuthSettings,
        parts: &Parts,
        id: &str,
    ) -> Result<Response<Body>, ApiError> {
        let principal = self.passkey_owner(auth, parts).await?;
        if !passkeys::remove(self.ports.sql.as_ref(), &principal.name, id).await? {
            return Err(ApiError::NotFound(format!("you have no passkey {id}")));
        }
        Ok(json_response(StatusCode::OK, "{}".into()))
    }
}

/// `DELETE /api/session`: the cookie removed (a session token itself cannot be revoked; it
/// expires within `SESSION_TTL`).
fn signed_out() -> Response<Body> {
    with_cookie(
        json_response(StatusCode::OK, "{}".into()),
        &Session::removal_cookie(),
    )
}

fn with_cookie(mut response: Response<Body>, cookie: &str) -> Response<Body> {
    if let Ok(cookie) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// A ceremony's first answer: its id, and the options for `navigator.credentials`.
fn ceremony_started(ceremony: &str, options: &impl serde::Serialize) -> Response<Body> {
    json_response(
        StatusCode::OK,
        json!({ "ceremony": ceremony, "options": options }).to_string(),
    )
}

/// The session as `GET /api/session` shows it (a finished sign-in answers the same).
fn session_answer(
    auth: &AuthSettings,
    user: &str,
    admin: bool,
    session: &Session,
) -> Response<Body> {
    json_response(
        StatusCode::OK,
        json!({
            "user": user,
            "admin": admin,
            "csrf": session.csrf,
            "expires_at_ms": session.exp,
            "service": auth.service,
            "passkeys": true,
            "signup": auth.signup,
        })
        .to_string(),
    )
}
