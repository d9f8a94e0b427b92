//! The account API under `/api/`: a small JSON API for signed-in users, with its own router and
//! its own typed errors (`{"error":{"code","message"}}`, never OCI codes).
//!
//! | route | methods | what |
//! |---|---|---|
//! | `/api/tokens` | GET, POST | list the user's access tokens; create one (its secret shown once) |
//! | `/api/tokens/<id>` | DELETE | revoke one of the user's tokens |
//! | `/api/repositories/<name>/tags` | GET | tags with digests, media types and push times (authorized as `tags/list`) |
//! | `/api/repositories/<name>/visibility` | GET, PUT | whether a repository is `public` or `private`; change it |
//! | `/api/orgs…` | | organizations (see `orgs`) |
//! | `/api/gc` | POST | run the garbage collector (`?dry_run=true`: report only); admins only |
//!
//! Callers sign in with Basic credentials (user name and an access token). Only an unscoped access
//! token manages tokens ([`Policy::may_manage_tokens`]); visibility changes stay within the
//! token's scope ([`Policy::may_set_visibility`]).

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{json_response, Registry};
use crate::auth::{orgs, store, AuthSettings, Principal, ScopePattern};
use crate::body::{Body, BodyError};
use crate::error::RegistryError;
use crate::names::RepoName;
use crate::operations::{Event, EventLog};

/// Why an API call failed; each variant is one status and one `error.code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// No or invalid credentials; `challenge` is the `WWW-Authenticate` to answer with.
    #[error("{reason}")]
    Unauthorized { challenge: String, reason: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method not allowed; this endpoint allows {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The `error.code` and HTTP status of this failure.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            ApiError::BadRequest(_) => ("bad_request", StatusCode::BAD_REQUEST),
            ApiError::Unauthorized { .. } => ("unauthorized", StatusCode::UNAUTHORIZED),
            ApiError::Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN),
            ApiError::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            ApiError::Conflict(_) => ("conflict", StatusCode::CONFLICT),
            ApiError::MethodNotAllowed { .. } => {
                ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED)
            }
            ApiError::PayloadTooLarge(_) => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::Unavailable(_) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The single place an API failure becomes a response.
    pub fn into_response(self) -> Response<Body> {
        let (code, status) = self.code_and_status();
        if matches!(self, ApiError::Unavailable(_) | ApiError::Internal(_)) {
            tracing::error!(error = %self, "API call failed on the server side");
        }
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        let mut response = json_response(status, body.to_string());
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized { challenge, .. } if !challenge.is_empty() => {
                if let Ok(value) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::Unauthorized { challenge, reason } => {
                ApiError::Unauthorized { challenge, reason }
            }
            RegistryError::Unavailable(u) => ApiError::Unavailable(u.to_string()),
            RegistryError::Internal(why) => ApiError::Internal(why),
            RegistryError::NameInvalid(why) => ApiError::BadRequest(why),
            RegistryError::SizeInvalid(why) => ApiError::PayloadTooLarge(why),
            RegistryError::BodyIncomplete(why) => ApiError::BadRequest(why),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(error: store::StoreError) -> Self {
        match error {
            store::StoreError::Registry(r) => r.into(),
            store::StoreError::UserExists(_) | store::StoreError::NameOfAnOrg(_) => {
                ApiError::Conflict(error.to_string())
            }
            store::StoreError::NoSuchUser(_) => ApiError::NotFound(error.to_string()),
            store::StoreError::BadUserName => ApiError::BadRequest(error.to_string()),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge { limit } => {
                ApiError::PayloadTooLarge(format!("the body is larger than {limit} bytes"))
            }
            BodyError::Transport(why) => ApiError::BadRequest(why),
        }
    }
}

/// An endpoint of the account API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    Tokens,
    Token { id: &'a str },
    Visibility { repository: &'a str },
}

/// The endpoint a path below `/api/` names; `None` for anything else (empty or missing parts
/// included: `repositories/visibility` names no repository).
fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    if path == "tokens" {
        return Some(Endpoint::Tokens);
    }
    if let Some(id) = path.strip_prefix("tokens/") {
        return (!id.is_empty() && !id.contains('/')).then_some(Endpoint::Token { id });
    }
    let repository = path
        .strip_prefix("repositories/")?
        .strip_suffix("/visibility")?;
    (!repository.is_empty()).then_some(Endpoint::Visibility { repository })
}

/// The repository of `repositories/<name>/tags`, the one read that needs no account (it is
/// authorized as `tags/list`).
fn tags_of(path: &str) -> Option<&str> {
    path.strip_prefix("repositories/")?
        .strip_suffix("/tags")
        .filter(|repository| !repository.is_empty())
}

/// Largest JSON body an API call reads.
pub(super) const MAX_API_BODY: u64 = 64 * 1024;

pub(super) fn parse_json<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad JSON: {e}")))
}

impl Registry {
    /// `/api/<path>`: routes, signs the caller in, and answers JSON.
    pub(super) async fn account_api(
        &self,
        path: &str,
        request: Request<Body>,
        events: &EventLog,
    ) -> Response<Body> {
        match self.account_call(path, request, events).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn account_call(
        &self,
        path: &str,
        request: Request<Body>,
        events: &EventLog,
    ) -> Result<Response<Body>, ApiError> {
        let not_found = || ApiError::NotFound(format!("no API endpoint /api/{path}"));
        if path == "gc" {
            return self.gc_call(request).await;
        }
        // Open mode too: it is authorized as the registry's own routes are.
        if let Some(repository) = tags_of(path) {
            return self.tag_details(repository, request).await;
        }
        let auth = self.auth.as_ref().ok_or_else(not_found)?;
        let first = path.split('/').next().unwrap_or_default();
        if first == "session" || first == "passkeys" {
            return self
                .session_api(auth, path, request)
                .await
                .unwrap_or_else(|| Err(not_found()));
        }
        if path == "orgs" || path.starts_with("orgs/") {
            let principal = self
                .api_principal(auth, request.method(), request.headers())
                .await?;
            return self
                .org_api(path, request, &principal)
                .await
                .unwrap_or_else(|| Err(not_found()));
        }
        let endpoint = endpoint(path).ok_or_else(not_found)?;
        let method = request.method().clone();
        let allow = match endpoint {
            Endpoint::Tokens => "GET, POST",
            Endpoint::Token { .. } => "DELETE",
            Endpoint::Visibility { .. } => "GET, PUT",
        };
        let allowed = match endpoint {
            Endpoint::Tokens => method == Method::GET || method == Method::POST,
            Endpoint::Token { .. } => method == Method::DELETE,
            Endpoint::Visibility { .. } => method == Method::PUT || method == Method::GET,
        };
        if !allowed {
            return Err(ApiError::MethodNotAllowed { allow });
        }
        let principal = self
            .api_principal(auth, request.method(), request.headers())
            .await?;
        if principal.robot {
            return Err(ApiError::Forbidden(
                "robot accounts push and pull; they have no account to manage".into(),
            ));
        }
        match endpoint {
            Endpoint::Tokens | Endpoint::Token { .. }
                if !self.policy.may_manage_tokens(&principal) =>
            {
                // Refused before anything is read.
                Err(ApiError::Forbidden(
                    "access tokens are managed with the user's full rights: sign in with an \
                     unscoped access token"
                        .into(),
                ))
            }
            Endpoint::Tokens if method == Method::GET => self.list_tokens(&principal).await,
            Endpoint::Tokens => self.create_token(&principal, request).await,
            Endpoint::Token { id } => self.revoke_token(&principal, id).await,
            Endpoint::Visibility { repository } => {
                self.visibility(&principal, repository, request, events)
                    .await
            }
        }
    }

    /// `POST /api/gc[?dry_run=true]`: collects garbage now and answers the report. With
    /// authentication on, only an admin may (without it, anyone may already delete anything).
    async fn gc_call(&self, request: Request<Body>) -> Result<Response<Body>, ApiError> {
        if request.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed { allow: "POST" });
        }
        if let Some(auth) = &self.auth {
            let principal = self
                .api_principal(auth, request.method(), request.headers())
                .await?;
            if !principal.admin {
                return Err(ApiError::Forbidden(
                    "only an admin may run the garbage collector".into(),
                ));
            }
        }
        let mut dry_run = false;
        for (key, value) in
            form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        {
            match (key.as_ref(), value.as_ref()) {
                ("dry_run", "true" | "1") => dry_run = true,
                ("dry_run", "false" | "0") => dry_run = false,
                (key, _) => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown or bad parameter {key:?}; this endpoint takes dry_run=true|false"
                    )))
                }
            }
        }
        let report = self.collect_garbage(dry_run).await?;
        Ok(json_response(
            StatusCode::OK,
            serde_json::to_string(&report)
                .map_err(|e| ApiError::Internal(format!("cannot encode the report: {e}")))?,
        ))
    }

    /// The signed-in user of an `/api/` call: Basic credentials with an access token, or the web
    /// app's session cookie (whose state changes pass the CSRF checks).
    pub(super) async fn api_principal(
        &self,
        auth: &AuthSettings,
        method: &Method,
        headers: &http::HeaderMap,
    ) -> Result<Principal, ApiError> {
        let unauthorized = |reason: &str| ApiError::Unauthorized {
            challenge: format!("Basic realm=\"{}\"", self.realm(auth, headers)),
            reason: reason.to_owned(),
        };
        let basic = super::token::basic_credentials(headers)?;
        if basic.is_none() {
            if let Some(signed_in) = self.session_principal(auth, method, headers).await {
                return signed_in;
            }
        }
        let Some((user, password)) = basic else {
            return Err(unauthorized(
                "sign in with your user name and an access token",
            ));
        };
        store::authenticate(self.ports.sql.as_ref(), &user, &password, self.now_ms())
            .await?
            .ok_or_else(|| unauthorized("invalid username or access token"))
    }

    /// `GET /api/repositories/<name>/tags[?n=&last=]`: the tags with their digests, media types
    /// and push times, for whoever may pull the repository: it is authorized as `tags/list` is
    /// (a registry bearer token, or anonymous on a public repository), not with the session.
    async fn tag_details(
        &self,
        repository: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, ApiError> {
        if request.method() != Method::GET {
            return Err(ApiError::MethodNotAllowed { allow: "GET" });
        }
        let repo = RepoName::parse(repository)?;
        self.authorize(
            &super::Route::Tags {
                name: repo.as_str(),
            },
            &Method::GET,
            request.headers(),
        )
        .await?;
        let query = super::Query::parse(request.uri().query());
        let limit = query
            .get("n")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(100)
            .clamp(1, 1000);
        let last = query.get("last").unwrap_or_default();
        let metadata = crate::metadata::Metadata::new(self.ports.sql.as_ref());
        let tags = metadata.tag_details(&repo, last, limit).await?;
        // As `tags/list`: a repository that does not exist is 404, not an empty list.
        if tags.is_empty() && last.is_empty() && !metadata.repository_exists(&repo).await? {
            return Err(ApiError::NotFound(format!("no repository {repo}")));
        }
        Ok(json_response(
            StatusCode::OK,
            json!({ "name": repo.as_str(), "tags": tags }).to_string(),
        ))
    }

    async fn list_tokens(&self, principal: &Principal) -> Result<Response<Body>, ApiError> {
        let tokens = store::list_tokens(self.ports.sql.as_ref(), &principal.name).await?;
        Ok(json_response(
            StatusCode::OK,
            json!({ "tokens": tokens }).to_string(),
        ))
    }

    async fn create_token(
        &self,
        principal: &Principal,
        request: Request<Body>,
    ) -> Result<Response<Body>, ApiError> {
        #[derive(Deserialize)]
        struct NewToken {
            name: String,
            #[serde(default)]
            scopes: Vec<String>,
            expires_in_days: Option<u64>,
        }
        let body = request.into_body().collect(MAX_API_BODY).await?;
        let new: NewToken = parse_json(&body)?;
        let scopes: Option<Vec<ScopePattern>> =
            new.scopes.iter().map(|s| ScopePattern::parse(s)).collect();
        let scopes = scopes.ok_or_else(|| {
            ApiError::BadRequest("a scope is not repository:<pattern>:<actions>".into())
        })?;
        let now = self.now_ms();
        let expires = new
            .expires_in_days
            .map(|d| now.saturating_add(d.saturating_mul(24 * 3600 * 1000)));
        let (id, token) = store::create_token(
            self.ports.sql.as_ref(),
            self.ports.random.as_ref(),
            &principal.name,
            &new.name,
            &scopes,
            expires,
            now,
        )
        .await?;
        Ok(json_response(
            StatusCode::CREATED,
            json!({ "id": id, "token": token }).to_string(),
        ))
    }

    async fn revoke_token(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Response<Body>, ApiError> {
        let revoked = store::revoke_token(
            self.ports.sql.as_ref(),
            Some(&principal.name),
            id,
            self.now_ms(),
        )
        .await?;
        if !revoked {
            return Err(ApiError::NotFound(format!("you have no access token {id}")));
        }
        Ok(json_response(StatusCode::OK, "{}".into()))
    }

    /// `GET` and `PUT /api/repositories/<r>/visibility`, for whoever may change it.
    async fn visibility(
        &self,
        principal: &Principal,
        repository: &str,
        request: Request<Body>,
        events: &EventLog,
    ) -> Result<Response<Body>, ApiError> {
        let repo = RepoName::parse(repository)?;
        let sql = self.ports.sql.as_ref();
        let namespace = orgs::namespace_of(repo.as_str());
        let rules = orgs::rules_for(sql, principal, &[namespace]).await?;
        if !self
            .policy
            .may_set_visibility(principal, repo.as_str(), &rules)
        {
            return Err(ApiError::Forbidden(format!(
                "you may not change the visibility of {repo}"
            )));
        }
        if request.method() == Method::GET {
            let public = store::public_repositories(sql, &[repo.as_str()]).await?;
            let visibility = if public.is_empty() {
                "private"
            } else {
                "public"
            };
            return Ok(json_response(
                StatusCode::OK,
                json!({ "name": repo.as_str(), "visibility": visibility }).to_string(),
            ));
        }
        #[derive(Deserialize)]
        struct Visibility {
            visibility: String,
        }
        let request_address = {
            let mut bare = Request::new(());
            if let Some(a) = request.extensions().get::<crate::ports::ClientAddress>() {
                bare.extensions_mut().insert(a.clone());
            }
            bare
        };
        let body = request.into_body().collect(4096).await?;
        let wanted: Visibility = parse_json(&body)?;
        let public = match wanted.visibility.as_str() {
            "public" => true,
            "private" => false,
            _ => {
                return Err(ApiError::BadRequest(
                    "visibility is public or private".into(),
                ))
            }
        };
        if !store::set_visibility(sql, repo.as_str(), public).await? {
            return Err(ApiError::NotFound(format!("no repository {repo}")));
        }
        events.push(Event::VisibilityChanged {
            repository: repo.as_str().to_owned(),
            public,
        });
        let address = super::token::client_address(&request_address);
        let ctx = self.org_context(principal, &address);
        sql.query(ctx.audit_if_org(
            namespace,
            "repository.visibility",
            repo.as_str(),
            &wanted.visibility,
        ))
        .await
        .map_err(RegistryError::from)?;
        Ok(json_response(
            StatusCode::OK,
            json!({ "name": repo.as_str(), "visibility": wanted.visibility }).to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_need_every_part_of_their_path() {
        assert_eq!(endpoint("tokens"), Some(Endpoint::Tokens));
        assert_eq!(endpoint("tokens/abc"), Some(Endpoint::Token { id: "abc" }));
        assert_eq!(
            endpoint("repositories/a/b/visibility"),
            Some(Endpoint::Visibility { repository: "a/b" })
        );
        for bad in [
            "",
            "tokens/",
            "tokens/a/b",
            "repositories/visibility",
            "repositories//visibility",
            "repositories/",
            "repositories/a",
            "visibility",
            "tokensx",
            "é",
        ] {
            assert_eq!(endpoint(bad), None, "{bad:?}");
        }
    }
}
