//! The OCI Distribution API: routing a request to its handler, and the response helpers the
//! handlers share.
//!
//! Paths are parsed from the right, since repository names may contain any number of `/`:
//! `/v2/<name>/blobs/uploads/[<id>]`, `/v2/<name>/blobs/<digest>`, `/v2/<name>/manifests/<ref>`,
//! `/v2/<name>/tags/list`, `/v2/<name>/referrers/<digest>`, plus `/v2/` and `/v2/_catalog`.

mod account;
mod blobs;
mod listing;
mod manifests;
mod orgs;
mod session;
mod token;
mod uploads;
mod webapp;

pub use webapp::webapp_bytes;

pub use account::ApiError;

use std::sync::Arc;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};

use crate::auth::{AuthSettings, Claims, Policy, RouteKind};
use crate::body::Body;
use crate::cache::{CachePolicy, MetadataCache};
use crate::config::Config;
use crate::error::RegistryError;
use crate::gc::{self, GcOptions, GcReport};
use crate::metadata::Metadata;
use crate::names::RepoName;
use crate::operations::{Event, EventLog, FollowUp, Operations, Subscriber};
use crate::ports::{Cache, Ports};

/// The registry: stateless; build one per request or share one, as the host prefers.
#[derive(Clone)]
pub struct Registry {
    ports: Ports,
    config: Config,
    /// `None`: open mode (no authentication; the native host allows it on loopback only).
    auth: Option<AuthSettings>,
    /// Every access decision.
    policy: Policy,
    /// Told about every request's events after its response.
    subscribers: Vec<Arc<dyn Subscriber>>,
    /// The read path's cache, if the host has one ([`crate::cache`]).
    cache: Option<MetadataCache>,
    /// Tokens already verified, if the host keeps them ([`Self::with_verified_tokens`]).
    verified_tokens: Option<Arc<dyn Cache>>,
}

/// Which endpoint a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, session: &'a str },
    Referrers { name: &'a str, digest: &'a str },
    Token,
    Api { path: &'a str },
}

impl<'a> Route<'a> {
    /// The route as the access policy sees it.
    fn kind(&self) -> RouteKind<'a> {
        match *self {
            Route::Base => RouteKind::Base,
            Route::Catalog => RouteKind::Catalog,
            Route::Tags { name } => RouteKind::Tags { name },
            Route::Manifest { name, .. } => RouteKind::Manifest { name },
            Route::Blob { name, .. } => RouteKind::Blob { name },
            Route::UploadStart { name } => RouteKind::UploadStart { name },
            Route::Upload { name, .. } => RouteKind::Upload { name },
            Route::Referrers { name, .. } => RouteKind::Referrers { name },
            Route::Token => RouteKind::Token,
            Route::Api { .. } => RouteKind::Api,
        }
    }
}

/// The kind of route a path names, as a short fixed name (`manifest`, `blob`, `upload`, …;
/// `other` for none): a label for hosts' metrics that never carries a repository name.
pub fn route_name(path: &str) -> &'static str {
    match route(path) {
        None if webapp::is_webapp_path(path) => "ui",
        None => "other",
        Some(Route::Base) => "base",
        Some(Route::Catalog) => "catalog",
        Some(Route::Tags { .. }) => "tags",
        Some(Route::Manifest { .. }) => "manifest",
        Some(Route::Blob { .. }) => "blob",
        Some(Route::UploadStart { .. }) => "upload_start",
        Some(Route::Upload { .. }) => "upload",
        Some(Route::Referrers { .. }) => "referrers",
        Some(Route::Token) => "token",
        Some(Route::Api { .. }) => "api",
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    if path == "/token" {
        return Some(Route::Token);
    }
    if path == "/api" {
        return Some(Route::Api { path: "" });
    }
    if let Some(api) = path.strip_prefix("/api/") {
        return Some(Route::Api { path: api });
    }
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags { name });
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart { name });
    }
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest {
            name,
            reference: last,
        }),
        "blobs" => Some(Route::Blob { name, digest: last }),
        "referrers" => Some(Route::Referrers { name, digest: last }),
        "uploads" => {
            let name = name.strip_suffix("/blobs")?;
            Some(Route::Upload {
                name,
                session: last,
            })
        }
        _ => None,
    }
}

impl Registry {
    pub fn new(ports: Ports, config: Config) -> Self {
        Self {
            ports,
            config,
            auth: None,
            policy: Policy::new(false),
            subscribers: Vec::new(),
            cache: None,
            verified_tokens: None,
        }
    }

    /// Reads manifests, tags and blob links through `cache` ([`crate::cache`]).
    pub fn with_cache(mut self, cache: Arc<dyn Cache>, policy: CachePolicy) -> Self {
        self.cache = Some(MetadataCache::new(cache, self.ports.clock.clone(), policy));
        self
    }

    /// Remembers the claims of tokens it verified (by the token's SHA-256, until they expire) in
    /// `memory`, for hosts where checking a signature is a large part of a request (Ed25519 in
    /// WASM): a token seen again is checked against the clock only. `memory` must be private to
    /// the process or isolate (never a shared store: an entry there would stand for a signature).
    pub fn with_verified_tokens(mut self, memory: Arc<dyn Cache>) -> Self {
        self.verified_tokens = Some(memory);
        self
    }

    /// Requires tokens on every registry route, and serves `/token` and `/api/`.
    pub fn with_auth(mut self, auth: AuthSettings) -> Self {
        self.auth = Some(auth);
        self.policy = Policy::new(true);
        self
    }

    /// Adds a subscriber to the registry's events (see [`crate::operations`]).
    pub fn subscribe(mut self, subscriber: Arc<dyn Subscriber>) -> Self {
        self.subscribers.push(subscriber);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The state changes, as typed operations that report their events.
    fn operations(&self) -> Operations<'_> {
        Operations::new(Metadata::new(self.ports.sql.as_ref()), self.now_ms())
    }

    fn now_ms(&self) -> u64 {
        self.ports.clock.now_unix_millis()
    }

    /// Runs the garbage collector ([`crate::gc`]) with this registry's grace window and
    /// untagged-manifest policy: what hosts call on their schedule, and `POST /api/gc`.
    /// A finished run is reported to the subscribers as [`Event::GarbageCollected`].
    pub async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport, RegistryError> {
        let report = gc::collect(
            self.ports.sql.as_ref(),
            self.ports.blobs.as_ref(),
            self.now_ms(),
            GcOptions {
                dry_run,
                grace: self.config.gc_grace,
                keep_untagged: self.config.gc_keep_untagged,
            },
        )
        .await?;
        if !dry_run {
            let event = Event::GarbageCollected {
                manifests_deleted: report.untagged_manifests_deleted + report.referrers_deleted,
                blob_links_deleted: report.blob_links_deleted,
                blobs_deleted: report.blobs_deleted,
                blob_bytes_freed: report.blob_bytes_freed,
            };
            let events = vec![event];
            if let Some(cache) = &self.cache {
                cache.apply(&events).await;
            }
            FollowUp::new(self.subscribers.clone(), events).run().await;
        }
        Ok(report)
    }

    /// Handles one request. Never panics on input; every failure is an OCI error response (or,
    /// under `/api/`, a JSON API error). The request's events reach subscribers before this
    /// returns; hosts that can run work after the response use [`Self::handle_deferred`].
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (response, follow_up) = self.handle_deferred(request).await;
        follow_up.run().await;
        response
    }

    /// Handles one request and returns, besides the response, the work to run once it has been
    /// sent: the request's events for the subscribers (`ctx.wait_until` on Workers, a spawned task
    /// natively).
    pub async fn handle_deferred(&self, request: Request<Body>) -> (Response<Body>, FollowUp) {
        let events = EventLog::default();
        let response = self.respond(request, &events).await;
        let refreshes = events.take_tag_refreshes();
        let events = events.take();
        // Before the response goes: the client that wrote reads its own write next.
        let Some(cache) = &self.cache else {
            return (response, FollowUp::new(self.subscribers.clone(), events));
        };
        cache.apply(&events).await;
        let refreshes = refreshes
            .into_iter()
            .map(|(repo, tag)| cache.tag_refresh(self.ports.sql.clone(), repo, tag))
            .collect();
        let follow_up = FollowUp::new(self.subscribers.clone(), events).with_refreshes(refreshes);
        (response, follow_up)
    }

    async fn respond(&self, request: Request<Body>, events: &EventLog) -> Response<Body> {
        let is_head = request.method() == Method::HEAD;
        let mut response = match self.dispatch(request, events).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        if is_head {
            // HEAD answers carry the headers of a GET (Content-Length included) and no body.
            *response.body_mut() = Body::Empty;
        }
        response.headers_mut().insert(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }

    async fn dispatch(
        &self,
        request: Request<Body>,
        events: &EventLog,
    ) -> Result<Response<Body>, RegistryError> {
        let path = request.uri().path().to_owned();
        if webapp::is_webapp_path(&path) {
            return webapp::serve(&path, request.method(), request.headers());
        }
        let Some(route) = route(&path) else {
            return Err(RegistryError::NotFound);
        };
        if let Route::Api { path } = route {
            // The account API answers its own JSON errors.
            let path = path.to_owned();
            return Ok(self.account_api(&path, request, events).await);
        }
        let method = request.method().clone();
        let query = Query::parse(request.uri().query());
        let claims = self.authorize(&route, &method, request.headers()).await?;
        let mut response = self
            .route_request(route, method, query, request, claims.as_ref(), events)
            .await?;
        if let Some(warning) = claims.as_ref().and_then(|c| self.expiry_warning(c)) {
            if let Ok(value) = HeaderValue::from_str(&warning) {
                response.headers_mut().insert(header::WARNING, value);
            }
        }
        Ok(response)
    }

    /// `Warning: 299 - "..."` when the token runs out within a minute (or already has, during an
    /// upload's grace period), so clients can fetch a fresh one.
    fn expiry_warning(&self, claims: &Claims) -> Option<String> {
        let expires = claims.expires_ms().ok()?;
        let now = self.now_ms();
        (expires < now + 60_000).then(|| {
            let left = expires.saturating_sub(now) / 1000;
            format!("299 - \"the access token expires in {left} s; request a new one\"")
        })
    }

    async fn route_request(
        &self,
        route: Route<'_>,
        method: Method,
        query: Query,
        request: Request<Body>,
        claims: Option<&Claims>,
        events: &EventLog,
    ) -> Result<Response<Body>, RegistryError> {
        let subject = claims.map(|c| c.sub.as_str());
        match route {
            Route::Token => self.token(request, &query).await,
            Route::Api { path } => {
                let path = path.to_owned();
                Ok(self.account_api(&path, request, events).await)
            }
            Route::Base => match method {
                Method::GET | Method::HEAD => Ok(json_response(StatusCode::OK, "{}".into())),
                _ => Err(RegistryError::MethodNotAllowed { allow: "GET, HEAD" }),
            },
            Route::Catalog => match method {
                Method::GET => self.catalog(&query, claims).await,
                _ => Err(RegistryError::MethodNotAllowed { allow: "GET" }),
            },
            Route::Tags { name } => {
                let repo = RepoName::parse(name)?;
                match method {
                    Method::GET => self.list_tags(&repo, &query).await,
                    _ => Err(RegistryError::MethodNotAllowed { allow: "GET" }),
                }
            }
            Route::Referrers { name, digest } => {
                let repo = RepoName::parse(name)?;
                match method {
                    Method::GET => self.referrers(&repo, digest, &query).await,
                    _ => Err(RegistryError::MethodNotAllowed { allow: "GET" }),
                }
            }
            Route::Manifest { name, reference } => {
                let repo = RepoName::parse(name)?;
                match method {
                    Method::GET => {
                        self.get_manifest(&repo, reference, true, claims, events)
                            .await
                    }
                    Method::HEAD => {
                        self.get_manifest(&repo, reference, false, claims, events)
                            .await
                    }
                    Method::PUT => {
                        self.put_manifest(&repo, reference, &query, request, claims, events)
                            .await
                    }
                    Method::DELETE => self.delete_manifest(&repo, reference, claims, events).await,
                    _ => Err(RegistryError::MethodNotAllowed {
                        allow: "GET, HEAD, PUT, DELETE",
                    }),
                }
            }
            Route::Blob { name, digest } => {
                let repo = RepoName::parse(name)?;
                match method {
                    Method::GET => self.get_blob(&repo, digest, request.headers(), true).await,
                    Method::HEAD => self.get_blob(&repo, digest, request.headers(), false).await,
                    Method::DELETE => self.delete_blob(&repo, digest, claims, events).await,
                    _ => Err(RegistryError::MethodNotAllowed {
                        allow: "GET, HEAD, DELETE",
                    }),
                }
            }
            Route::UploadStart { name } => {
                let repo = RepoName::parse(name)?;
                match method {
                    Method::POST => {
                        self.start_upload(&repo, &query, request, claims, events)
                            .await
                    }
                    _ => Err(RegistryError::MethodNotAllowed { allow: "POST" }),
                }
            }
            Route::Upload { name, session } => {
                let repo = RepoName::parse(name)?;
                match method {
                    Method::GET => self.upload_status(&repo, session, subject).await,
                    Method::PATCH => self.patch_upload(&repo, session, request, subject).await,
                    Method::PUT => {
                        self.finish_upload(&repo, session, &query, request, subject, events)
                            .await
                    }
                    Method::DELETE => self.cancel_upload(&repo, session, subject, events).await,
                    _ => Err(RegistryError::MethodNotAllowed {
                        allow: "GET, PATCH, PUT, DELETE",
                    }),
                }
            }
        }
    }
}

/// Decoded query parameters, in order (`tag` may repeat).
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Query(
            query
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'q>(&'q self, key: &'q str) -> impl Iterator<Item = &'q str> + 'q {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A header's value as text, if present and visible ASCII.
fn header_text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The declared `Content-Length`, if any. A malformed one is the client's error.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| RegistryError::SizeInvalid("malformed Content-Length".into())),
    }
}

/// Builds a response from a status, headers and a body. Header values we build are always valid;
/// a value that is not (it would have to come from stored data) is dropped, never a panic.
fn response(status: StatusCode, headers: &[(HeaderName, String)], body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().append(name.clone(), value);
        }
    }
    response
}

fn json_response(status: StatusCode, json: String) -> Response<Body> {
    let len = json.len().to_string();
    response(
        status,
        &[
            (header::CONTENT_TYPE, "application/json".into()),
            (header::CONTENT_LENGTH, len),
        ],
        Body::from(json),
    )
}

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
const OCI_CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");
const OCI_CHUNK_MAX_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-max-length");

/// Responses addressed by digest never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_parsed_from_the_right() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            route("/v2/a/b/c/tags/list"),
            Some(Route::Tags { name: "a/b/c" })
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart { name: "a" })
        );
        assert_eq!(
            route("/v2/x/blobs/uploads/blobs/uploads/abc"),
            Some(Route::Upload {
                name: "x/blobs/uploads",
                session: "abc"
            })
        );
        assert_eq!(
            route("/v2/a/manifests/b/manifests/latest"),
            Some(Route::Manifest {
                name: "a/manifests/b",
                reference: "latest"
            })
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00"),
            Some(Route::Blob {
                name: "a",
                digest: "sha256:00"
            })
        );
        assert_eq!(
            route("/v2/a/referrers/sha256:00"),
            Some(Route::Referrers {
                name: "a",
                digest: "sha256:00"
            })
        );
        assert_eq!(route("/v1/a/manifests/x"), None);
        assert_eq!(route("/v2/manifests/x"), None);
        assert_eq!(route("/v2/a/unknown/x"), None);
    }
}
