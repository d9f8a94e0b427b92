//! The token endpoint and the access check every registry route goes through.
//!
//! - `GET /token` (Docker's token flow, Basic credentials or anonymous) and `POST /token` (the
//!   OAuth2 form: `grant_type=password` or `refresh_token`), answering PASETO v4.public tokens
//!   that carry what the [`Policy`](crate::auth::Policy) grants.
//! - [`Registry::authorize`]: a route's [`Requirement`] checked against the request's bearer
//!   token by the policy; a missing or insufficient token gets a 401 challenge naming the scope.

use base64::Engine;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{header_text, json_response, Query, Registry, Route};
use crate::auth::token::{self, format_time};
use crate::auth::{orgs, store};
use crate::auth::{Access, Action, AuthSettings, Claims, Policy, Principal, Requirement, Scope};
use crate::body::Body;
use crate::cache::MetadataCache;
use crate::error::RegistryError;
use crate::names::RepoName;

/// Largest `Authorization` header looked at; anything longer is refused unread.
const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;
/// Refresh tokens live this long (each use re-checks the access token they stand for).
const REFRESH_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

pub(super) fn basic_credentials(
    headers: &HeaderMap,
) -> Result<Option<(String, String)>, RegistryError> {
    let Some(value) = header_text(headers, &header::AUTHORIZATION) else {
        return Ok(None);
    };
    let Some(encoded) = strip_scheme(value, "basic") else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| RegistryError::Unauthorized {
            challenge: "Basic realm=\"openregistry\"".into(),
            reason: "malformed Basic credentials".into(),
        })?;
    decoded
        .split_once(':')
        .map(|(u, p)| Some((u.to_owned(), p.to_owned())))
        .ok_or_else(|| RegistryError::Unauthorized {
            challenge: "Basic realm=\"openregistry\"".into(),
            reason: "Basic credentials are user:password".into(),
        })
}

/// The token of a Bearer `Authorization`; an empty one is no token, however the host passed the
/// header's trailing whitespace on (`Bearer ` or `Bearer`).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    strip_scheme(header_text(headers, &header::AUTHORIZATION)?, "bearer")
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// The credentials after an authentication scheme, which is case-insensitive (RFC 9110).
fn strip_scheme<'h>(value: &'h str, scheme: &str) -> Option<&'h str> {
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// The client's address as the host gave it (`unknown` when it did not).
pub(super) fn client_address<B>(request: &Request<B>) -> String {
    request
        .extensions()
        .get::<crate::ports::ClientAddress>()
        .map_or_else(|| "unknown".to_owned(), |a| a.0.clone())
}

impl Registry {
    /// The context of an organization change (or audit entry) made by `principal`.
    pub(super) fn org_context<'a>(
        &'a self,
        principal: &Principal,
        address: &str,
    ) -> orgs::Context<'a> {
        let name = if principal.is_anonymous() {
            "anonymous".to_owned()
        } else {
            principal.name.clone()
        };
        orgs::Context {
            sql: self.ports.sql.as_ref(),
            random: self.ports.random.as_ref(),
            now_ms: self.now_ms(),
            actor: orgs::Actor {
                name,
                source: address.to_owned(),
            },
        }
    }

    pub(super) fn realm(&self, auth: &AuthSettings, headers: &HeaderMap) -> String {
        let base = match &auth.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = header_text(headers, &header::HOST).unwrap_or("localhost");
                let scheme =
                    header_text(headers, &http::HeaderName::from_static("x-forwarded-proto"))
                        .unwrap_or("http");
                format!("{scheme}://{host}")
            }
        };
        format!("{base}/token")
    }

    fn challenge(
        &self,
        auth: &AuthSettings,
        headers: &HeaderMap,
        scope: Option<String>,
        error: Option<&str>,
    ) -> String {
        let mut challenge = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(auth, headers),
            auth.service
        );
        if let Some(scope) = scope {
            challenge.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        challenge
    }

    /// Checks the request's token against what the route needs. Returns the token's claims
    /// (`None` when auth is off). Uploads may continue with a token that expired less than the
    /// grace period ago; the upload handlers then check it belongs to the session's principal.
    pub(super) async fn authorize(
        &self,
        route: &Route<'_>,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Option<Claims>, RegistryError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let requirement = Policy::required(route.kind(), method);
        if requirement == Requirement::Nothing {
            return Ok(None);
        }
        // Names go into the challenge: only valid ones (a quote could inject parameters).
        let scope = match requirement {
            Requirement::Repository { name, action } => {
                RepoName::parse(name)?;
                Some(format!("repository:{name}:{}", action.name()))
            }
            Requirement::Nothing | Requirement::OptionalToken | Requirement::AnyToken => None,
        };
        if header_text(headers, &header::AUTHORIZATION)
            .is_some_and(|h| h.len() > MAX_AUTHORIZATION_LEN)
        {
            return Err(RegistryError::Unauthorized {
                challenge: self.challenge(auth, headers, scope, Some("invalid_token")),
                reason: "the Authorization header is too large".into(),
            });
        }
        let Some(token) = bearer(headers) else {
            if requirement == Requirement::OptionalToken {
                return Ok(None); // anonymous catalog: public repositories only
            }
            return Err(RegistryError::Unauthorized {
                challenge: self.challenge(auth, headers, scope, None),
                reason: "a bearer token is required".into(),
            });
        };
        let now = self.now_ms();
        let grace = u64::try_from(auth.upload_grace.as_millis()).unwrap_or(u64::MAX);
        let claims = match self.verify_token(token, auth, now).await {
            Ok(claims) => claims,
            Err(token::TokenError::Expired) if matches!(route, Route::Upload { .. }) => {
                token::verify_with_grace(token, &auth.keys, &auth.service, now, grace).map_err(
                    |e| RegistryError::Unauthorized {
                        challenge: self.challenge(
                            auth,
                            headers,
                            scope.clone(),
                            Some("invalid_token"),
                        ),
                        reason: e.to_string(),
                    },
                )?
            }
            Err(e) => {
                return Err(RegistryError::Unauthorized {
                    challenge: self.challenge(auth, headers, scope, Some("invalid_token")),
                    reason: e.to_string(),
                })
            }
        };
        if claims.purpose.is_some() {
            return Err(RegistryError::Unauthorized {
                challenge: self.challenge(auth, headers, scope, Some("invalid_token")),
                reason: "a refresh token is not an access token".into(),
            });
        }
        if let Requirement::Repository { name, action } = requirement {
            if !self.policy.token_permits(Some(&claims), name, action) {
                return Err(RegistryError::Unauthorized {
                    challenge: self.challenge(auth, headers, scope, Some("insufficient_scope")),
                    reason: format!("the token does not grant {} on {name}", action.name()),
                });
            }
        }
        Ok(Some(claims))
    }

    /// [`token::verify`], through the memory of verified tokens when the host keeps one.
    async fn verify_token(
        &self,
        token: &str,
        auth: &AuthSettings,
        now: u64,
    ) -> Result<Claims, token::TokenError> {
        let Some(memory) = &self.verified_tokens else {
            return token::verify(token, &auth.keys, &auth.service, now);
        };
        let key = format!("k/{}", hex::encode(Sha256::digest(token.as_bytes())));
        let remembered = memory
            .get(&key)
            .await
            .and_then(|value| serde_json::from_slice::<Claims>(&value).ok())
            .filter(|claims| token::is_current(claims, now));
        if let Some(claims) = remembered {
            return Ok(claims);
        }
        let claims = token::verify(token, &auth.keys, &auth.service, now)?;
        let left = claims.expires_ms().unwrap_or(now).saturating_sub(now);
        if let Ok(value) = serde_json::to_vec(&claims) {
            let ttl = std::time::Duration::from_millis(left.min(3_600_000));
            memory.put(&key, value.into(), ttl).await;
        }
        Ok(claims)
    }

    /// `GET /token` and `POST /token`.
    pub(super) async fn token(
        &self,
        request: Request<Body>,
        query: &Query,
    ) -> Result<Response<Body>, RegistryError> {
        let auth = self.auth.as_ref().ok_or(RegistryError::NotFound)?;
        let signer = auth.signer.clone().ok_or(RegistryError::NotFound)?;
        let basic_challenge = format!("Basic realm=\"{}\"", self.realm(auth, request.headers()));
        let refused = |reason: &str| RegistryError::Unauthorized {
            challenge: basic_challenge.clone(),
            reason: reason.to_owned(),
        };
        let now = self.now_ms();
        let sql = self.ports.sql.as_ref();
        let address = client_address(&request);
        let mut wants_catalog = query
            .all("scope")
            .any(|s| s.split(' ').any(|s| s == "registry:catalog:*"));
        let (principal, scopes, offline, via_token) = match *request.method() {
            Method::GET => {
                let principal = match basic_credentials(request.headers())? {
                    Some((user, password)) => store::authenticate(sql, &user, &password, now)
                        .await?
                        .ok_or_else(|| refused("invalid username or access token"))?,
                    // The web app asks with its session cookie.
                    None => match self
                        .session_principal(auth, &Method::GET, request.headers())
                        .await
                    {
                        Some(signed_in) => signed_in.map_err(|e| refused(&e.to_string()))?,
                        None => Principal::anonymous(),
                    },
                };
                let via = basic_credentials(request.headers())?
                    .and_then(|(_, p)| store::token_id(&p).map(str::to_owned));
                (
                    principal,
                    Scope::parse_all(query.all("scope")),
                    query.get("offline_token") == Some("true"),
                    via,
                )
            }
            Method::POST => {
                let form = request.into_body().collect(64 * 1024).await?;
                let form = Query::parse(std::str::from_utf8(&form).ok());
                let scopes = Scope::parse_all(form.all("scope"));
                wants_catalog |= form
                    .all("scope")
                    .any(|s| s.split(' ').any(|s| s == "registry:catalog:*"));
                match form.get("grant_type") {
                    Some("password") => {
                        let user = form.get("username").unwrap_or_default();
                        let password = form.get("password").unwrap_or_default();
                        let principal = store::authenticate(sql, user, password, now)
                            .await?
                            .ok_or_else(|| refused("invalid username or access token"))?;
                        (
                            principal,
                            scopes,
                            true,
                            store::token_id(password).map(str::to_owned),
                        )
                    }
                    Some("refresh_token") => {
                        let refresh = form.get("refresh_token").unwrap_or_default();
                        let claims = token::verify(refresh, &auth.keys, &auth.service, now)
                            .map_err(|e| refused(&e.to_string()))?;
                        let tid = claims
                            .tid
                            .filter(|_| claims.purpose.as_deref() == Some("refresh"))
                            .ok_or_else(|| refused("not a refresh token"))?;
                        let principal = store::principal_for_token(sql, &tid, now)
                            .await?
                            .ok_or_else(|| {
                                refused(
                                    "the access token behind this refresh token is no longer valid",
                                )
                            })?;
                        (principal, scopes, true, Some(tid))
                    }
                    _ => {
                        return Err(RegistryError::Unsupported(
                            "grant_type must be password or refresh_token".into(),
                        ))
                    }
                }
            }
            _ => return Err(RegistryError::MethodNotAllowed { allow: "GET, POST" }),
        };

        // An anonymous pull is decided from the cache when it can be (see `crate::cache`): the
        // warm path of a public pull then asks the database nothing.
        let anonymous_pull = principal.is_anonymous()
            && !scopes.is_empty()
            && scopes
                .iter()
                .all(|s| !s.wildcard && s.actions == [Action::Pull]);
        let cache = self.cache.as_ref().filter(|_| anonymous_pull);
        let mut access = match cache {
            Some(cache) => remembered_pulls(cache, &scopes).await,
            None => None,
        };
        if access.is_none() {
            let granted = self.grant(&principal, &scopes, &address).await?;
            if let Some(cache) = cache {
                for scope in &scopes {
                    let entry = granted.iter().find(|a| a.name == scope.name).cloned();
                    cache.keep_anonymous_pull(&scope.name, entry).await;
                }
            }
            access = Some(granted);
        }
        let mut access = access.unwrap_or_default();
        if wants_catalog && self.policy.grants_full_catalog(&principal) {
            access.push(Access {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
                rules: None,
            });
        }
        let mut jti = [0u8; 16];
        self.ports.random.fill(&mut jti);
        let ttl = u64::try_from(auth.token_ttl.as_millis()).unwrap_or(300_000);
        let claims = Claims {
            iss: auth.service.clone(),
            sub: principal.name.clone(),
            aud: auth.service.clone(),
            exp: format_time(now + ttl),
            nbf: format_time(now),
            iat: format_time(now),
            jti: hex::encode(jti),
            access,
            purpose: None,
            tid: None,
        };
        let token = signer
            .sign(&claims)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": ttl / 1000,
            "issued_at": claims.iat,
        });
        if offline {
            if let Some(tid) = via_token {
                let refresh = Claims {
                    exp: format_time(now + REFRESH_TTL_MS),
                    access: Vec::new(),
                    purpose: Some("refresh".into()),
                    tid: Some(tid),
                    ..claims
                };
                let refresh = signer
                    .sign(&refresh)
                    .map_err(|e| RegistryError::Internal(e.to_string()))?;
                if let Some(fields) = body.as_object_mut() {
                    fields.insert("refresh_token".into(), json!(refresh));
                }
            }
        }
        let mut response = json_response(StatusCode::OK, body.to_string());
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        Ok(response)
    }

    /// The token's `access` for `scopes`: the intersection of what was asked for and what the
    /// principal may do, by its namespace, the repositories' visibility and, in organizations, its
    /// memberships and grants (evaluated now, so a removed member's next token has nothing).
    /// Denied pushes into organizations are audited.
    async fn grant(
        &self,
        principal: &Principal,
        scopes: &[Scope],
        address: &str,
    ) -> Result<Vec<Access>, RegistryError> {
        let sql = self.ports.sql.as_ref();
        let names: Vec<&str> = scopes.iter().map(|s| s.name.as_str()).collect();
        let public = store::public_repositories(sql, &names).await?;
        let mut namespaces: Vec<&str> = names.iter().map(|n| orgs::namespace_of(n)).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let rules = if principal.admin || !self.policy.auth {
            Vec::new()
        } else {
            orgs::rules_for(sql, principal, &namespaces).await?
        };
        let mut access: Vec<Access> = Vec::new();
        let mut denied_pushes: Vec<&str> = Vec::new();
        for scope in scopes {
            let is_public = public.iter().any(|p| p == &scope.name);
            let wanted: Vec<Action> = if scope.wildcard {
                Action::ALL.to_vec()
            } else {
                scope.actions.clone()
            };
            let rights = self
                .policy
                .rights(principal, &scope.name, is_public, &rules);
            let entry = self.policy.access_entry(&scope.name, &rights, &wanted);
            let pushes = entry
                .as_ref()
                .is_some_and(|e| e.actions.iter().any(|a| a == "push"));
            if wanted.contains(&Action::Push) && !pushes {
                denied_pushes.push(scope.name.as_str());
            }
            access.extend(entry);
        }
        if !denied_pushes.is_empty() && self.policy.auth && !principal.is_anonymous() {
            // Denied pushes into organizations are audited (a no-op for users' namespaces); only
            // those of signed-in callers, so that nobody can fill an org's log anonymously.
            let ctx = self.org_context(principal, address);
            let batch = denied_pushes
                .iter()
                .map(|name| {
                    ctx.audit_if_org(
                        orgs::namespace_of(name),
                        "push.denied",
                        name,
                        "the token request asked for push",
                    )
                })
                .collect();
            sql.batch(batch).await?;
        }
        Ok(access)
    }
}

/// The cached anonymous pull decisions for every scope, or `None` if any is missing.
async fn remembered_pulls(cache: &MetadataCache, scopes: &[Scope]) -> Option<Vec<Access>> {
    let mut access = Vec::new();
    for scope in scopes {
        access.extend(cache.anonymous_pull(&scope.name).await?);
    }
    Some(access)
}
