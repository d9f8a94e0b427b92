//! OpenRegistry as a Spin HTTP component (WASIp2, spin-sdk 5): the entry converts Spin's incoming
//! request into the core's `http::Request<Body>` (body streamed), builds the ports (Spin key-value
//! → `Kv`, outbound HTTP → `HttpClient`, Postgres over Neon's HTTP protocol → `Sql`, Skynet →
//! `BlobStore`) and streams the core's answer back.
//!
//! Stateless: Spin may reuse an instance for several requests, so nothing about a request is kept
//! in globals; every request builds its registry from the variables. Configuration: see
//! `openregistry::edge` and `config`.

// The core's `Ports` hold `Arc`s; a component has one thread and nothing needs to be `Send`.
#![allow(clippy::arc_with_non_send_sync)]

mod config;
mod kv;
mod outbound;
mod wasi_io;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use openregistry::body::Body;
use openregistry_host::{misconfigured, Embedded, Host, HostPorts, Settings};
use openregistry::ports::{Clock, Random};
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};

use crate::config::SpinVariables;
use crate::kv::SpinKv;
use crate::outbound::SpinHttp;

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
        buffer.copy_from_slice(&bytes[..buffer.len()]);
    }
}

fn registry() -> Result<openregistry::Registry, String> {
    let settings = Settings::read(&SpinVariables, Host::Spin)?;
    let ports = HostPorts {
        kv: Arc::new(SpinKv::open()?),
        http: Arc::new(SpinHttp),
        clock: Arc::new(WasiClock),
        random: Arc::new(WasiRandom),
    };
    openregistry_host::build(&settings, ports, Embedded::default())
}

/// Spin's request as the core's, body streamed.
fn core_request(request: IncomingRequest) -> Result<http::Request<Body>, String> {
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
    let body = if method == Method::GET || method == Method::HEAD || declared_empty {
        Body::Empty
    } else {
        let body = request
            .consume()
            .map_err(|()| "the request body was already taken".to_owned())?;
        Body::Stream(wasi_io::incoming(body, None)?)
    };
    let mut core = http::Request::new(body);
    *core.method_mut() = method;
    *core.uri_mut() = path.parse().map_err(|e| format!("{path}: {e}"))?;
    *core.headers_mut() = headers;
    Ok(core)
}

/// Streams the core's response out through Spin.
async fn respond(response: http::Response<Body>, out: ResponseOutparam, is_head: bool) {
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
    let response = match registry().and_then(|registry| Ok((registry, core_request(request)?))) {
        Ok((registry, request)) => registry.handle(request).await,
        Err(message) => {
            eprintln!("openregistry: {message}");
            misconfigured(message)
        }
    };
    respond(response, out, is_head).await;
}
