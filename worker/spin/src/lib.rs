//! OpenRegistry as a Spin HTTP component (WASIp2, spin-sdk 5): the entry converts Spin's incoming
//! request into the core's `http::Request<Body>` (body streamed), builds the ports (Spin key-value
//! → `Kv`, outbound HTTP → `HttpClient`, Postgres over Neon's HTTP protocol → `Sql`, Skynet →
//! `BlobStore`) and streams the core's answer back.
//!
//! Stateless: Spin may reuse an instance for several requests, so nothing about a request is kept
//! in globals; every request builds its registry from the variables. The read path's cache
//! (`openregistry_edge_cache`, on by default) lives in the key-value store, under `cache/`. Configuration: see
//! `openregistry_host::settings` and `config`.

// The core's `Ports` hold `Arc`s; a component has one thread and nothing needs to be `Send`.
#![allow(clippy::arc_with_non_send_sync)]

mod config;
mod kv;
mod outbound;
mod wasi_io;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use openregistry::body::Body;
use openregistry::ports::{Clock, Kv, Random};
use openregistry_host::cache::KvCache;
use openregistry_host::{misconfigured, EdgeCache, Embedded, Host, HostPorts, Settings};
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};

use crate::config::SpinVariables;
use crate::kv::SpinKv;
use crate::outbound::SpinHttp;
use crate::wasi_io::RequestBody;

/// Wall-clock time from `wasi:clocks/wall-clock`.
struct WasiClock;

impl Clock for WasiClock {
    fn now_unix_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// `wasi:random/random`, the host's cryptographically secure source.
struct WasiRandom;

impl Random for WasiRandom {
    fn fill(&self, buffer: &mut [u8]) {
        let len = u64::try_from(buffer.len()).unwrap_or(u64::MAX);
        let bytes = wasi::random::random::get_random_bytes(len);
        for (byte, random) in buffer.iter_mut().zip(bytes) {
            *byte = random;
        }
    }
}

fn registry() -> Result<openregistry::Registry, String> {
    let settings = Settings::read(&SpinVariables, Host::Spin)?;
    let kv: Arc<dyn Kv> = Arc::new(SpinKv::open()?);
    let ports = HostPorts {
        kv: kv.clone(),
        http: Arc::new(SpinHttp),
        clock: Arc::new(WasiClock),
        random: Arc::new(WasiRandom),
    };
    let registry = openregistry_host::build(&settings, ports, Embedded::default())?;
    if settings.edge_cache == EdgeCache::Off {
        return Ok(registry);
    }
    // The read path's cache in the same store, under its own prefix: the store keeps what it is
    // given (no expiry), the entries carry their age and the core ignores old ones.
    let policy = settings.cache_policy();
    Ok(registry.with_cache(Arc::new(KvCache::new(kv, "cache/")), policy))
}

/// The most of a request body the core did not read (a refused chunk) that is read and dropped
/// before the response is finished, so that a client that sends its whole body before it reads
/// the answer gets the answer rather than a broken pipe. A chunk is rarely more than a few hundred
/// MiB (Skynet's pieces are 40 MiB); past this the component ends and the host closes.
const DISCARD_LIMIT: u64 = 1024 * 1024 * 1024;
/// How long that may take: 1 GiB at ~20 MiB/s. Spin's own per-request limits may be shorter.
const DISCARD_TIME: Duration = Duration::from_secs(60);

/// Spin's request as the core's, body streamed, and the entry's handle on that body.
fn core_request(
    request: IncomingRequest,
) -> Result<(http::Request<Body>, Option<RequestBody>), String> {
    let method = request.method().to_string();
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let path = request.path_with_query().unwrap_or_else(|| "/".into());
    let mut headers = http::HeaderMap::new();
    for (name, value) in request.headers().entries() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    // WASI HTTP carries the Host header as the request's authority; the core builds the token
    // realm and upload Locations from it.
    if !headers.contains_key(http::header::HOST) {
        if let Some(value) = request
            .authority()
            .and_then(|a| http::HeaderValue::from_str(&a).ok())
        {
            headers.insert(http::header::HOST, value);
        }
    }
    let declared_empty = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    let (body, handle) = if method == Method::GET || method == Method::HEAD || declared_empty {
        (Body::Empty, None)
    } else {
        let body = request
            .consume()
            .map_err(|()| "the request body was already taken".to_owned())?;
        let handle = RequestBody::new(body)?;
        (Body::Stream(handle.stream()), Some(handle))
    };
    // A client waiting for `100 Continue` has sent nothing yet: reading its body would ask for it.
    let expects_continue = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let handle = handle.filter(|_| !expects_continue);
    let mut core = http::Request::new(body);
    *core.method_mut() = method;
    *core.uri_mut() = path.parse().map_err(|e| format!("{path}: {e}"))?;
    *core.headers_mut() = headers;
    Ok((core, handle))
}

/// Streams the core's response out through Spin. `unread` is the request body, of which the
/// core may have left a part unread (it refuses some chunks without reading them).
async fn respond(
    response: http::Response<Body>,
    out: ResponseOutparam,
    is_head: bool,
    unread: Option<RequestBody>,
) {
    let (parts, body) = response.into_parts();
    let headers = Fields::new();
    for (name, value) in &parts.headers {
        if let Err(e) = headers.append(name.as_str(), value.as_bytes()) {
            eprintln!("openregistry: response header {name} dropped: {e:?}");
        }
    }
    let response = OutgoingResponse::new(headers);
    if response.set_status_code(parts.status.as_u16()).is_err() {
        eprintln!("openregistry: status {} refused", parts.status);
    }
    let Ok(outgoing) = response.body() else {
        eprintln!("openregistry: response body already taken");
        return;
    };
    out.set(response);
    // The status and headers are on their way. Spin ends the component as soon as the host has
    // sent the response body (its `AbortOnDropBody`), which then drops the request body unread
    // and resets a client still sending it. So what the core left of the request body is read
    // and dropped now, between the head and the body of the response (bounded; past the bounds
    // the host closes the connection).
    if let Some(rest) = unread.filter(|body| !body.is_read()) {
        if !rest.discard(DISCARD_LIMIT, DISCARD_TIME).await {
            eprintln!("openregistry: unread request body beyond {DISCARD_LIMIT} bytes or {DISCARD_TIME:?}; dropped");
        }
    }
    // Statuses that may not carry a body get none; HEAD answers keep their Content-Length header.
    let no_body = is_head
        || matches!(
            parts.status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        );
    let body = if no_body { Body::Empty } else { body };
    if let Err(error) = wasi_io::write_body(body, outgoing).await {
        eprintln!("openregistry: response body failed: {error}");
    }
}

#[spin_sdk::http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let is_head = matches!(request.method(), spin_sdk::http::Method::Head);
    let (response, unread, follow_up) =
        match registry().and_then(|registry| Ok((registry, core_request(request)?))) {
            Ok((registry, (request, unread))) => {
                let (response, follow_up) = registry.handle_deferred(request).await;
                (response, unread, Some(follow_up))
            }
            Err(message) => {
                eprintln!("openregistry: {message}");
                (misconfigured(message), None, None)
            }
        };
    // The request's events (for caches, webhooks, GC). Spin ends the instance as soon as the
    // response body is finished, so there is no "after the response" here: they are delivered
    // before it (today no subscriber is registered, and this costs nothing).
    if let Some(follow_up) = follow_up {
        follow_up.run().await;
    }
    respond(response, out, is_head, unread).await;
}
