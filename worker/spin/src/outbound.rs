//! The `HttpClient` port on Spin's outbound HTTP (`wasi:http/outgoing-handler`): request bodies
//! stream out while the response is awaited, response bodies stream in.
//!
//! The core's [`Timeout`] request extension becomes WASI request options: the connect and
//! first-byte timeouts bound the exchange up to the response headers, and the between-bytes
//! timeout each wait for a body chunk (as the native host and the Worker do). Only hosts listed
//! in the component's `allowed_outbound_hosts` can be reached; Spin refuses the rest with
//! `HttpRequestDenied`, which becomes a 503 naming the host.

use std::time::Duration;

use http::header::{CONTENT_LENGTH, HOST};
use openregistry::body::Body;
use openregistry::ports::{HttpClient, Timeout, Unavailable};
use spin_sdk::http::{Fields, Method, OutgoingRequest, Scheme};
// The request options live only in spin-sdk's hidden WIT bindings (its `send` passes none); the
// crate is pinned to an exact version for that reason.
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{FutureIncomingResponse, RequestOptions};

use crate::wasi_io::{incoming, write_body, Parked};

/// Outbound HTTP through the Spin host.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpinHttp;

fn method(method: &http::Method) -> Method {
    match *method {
        http::Method::GET => Method::Get,
        http::Method::HEAD => Method::Head,
        http::Method::POST => Method::Post,
        http::Method::PUT => Method::Put,
        http::Method::PATCH => Method::Patch,
        http::Method::DELETE => Method::Delete,
        http::Method::OPTIONS => Method::Options,
        ref other => Method::Other(other.as_str().to_owned()),
    }
}

/// Nanoseconds, as WASI durations are counted.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Resolves when the host has the response headers (or has failed).
async fn response(
    pending: FutureIncomingResponse,
) -> Result<spin_sdk::http::IncomingResponse, String> {
    let mut parked = Parked::default();
    futures::future::poll_fn(|cx| match pending.get() {
        Some(Ok(Ok(response))) => std::task::Poll::Ready(Ok(response)),
        Some(Ok(Err(code))) => std::task::Poll::Ready(Err(format!("{code:?}"))),
        Some(Err(())) => std::task::Poll::Ready(Err("response already taken".to_owned())),
        None => parked.park(pending.subscribe(), cx),
    })
    .await
}

#[async_trait::async_trait(?Send)]
impl HttpClient for SpinHttp {
    async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Unavailable> {
        let limit = Timeout::of(&request);
        let (parts, body) = request.into_parts();
        let host = parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let fail = |what: String| Unavailable::new("http", format!("{host}: {what}"));

        let headers = Fields::new();
        for (name, value) in &parts.headers {
            // Components may not set Host (Spin derives it from the URL).
            if name != HOST {
                headers
                    .append(name.as_str(), value.as_bytes())
                    .map_err(|e| fail(format!("header {name}: {e:?}")))?;
            }
        }
        if !parts.headers.contains_key(CONTENT_LENGTH) {
            if let Some(len) = body.known_len() {
                headers
                    .append(CONTENT_LENGTH.as_str(), &len.to_string().into_bytes())
                    .map_err(|e| fail(format!("header content-length: {e:?}")))?;
            }
        }
        let outgoing = OutgoingRequest::new(headers);
        let scheme = match parts.uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            other => return Err(fail(format!("unsupported scheme {other:?}"))),
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let set = outgoing
            .set_method(&method(&parts.method))
            .and_then(|()| outgoing.set_scheme(Some(&scheme)))
            .and_then(|()| outgoing.set_authority(Some(&host)))
            .and_then(|()| outgoing.set_path_with_query(Some(path)));
        set.map_err(|()| fail(format!("invalid request line {} {path}", parts.method)))?;
        let out_body = outgoing
            .body()
            .map_err(|()| fail("the request body was already taken".into()))?;

        let options = RequestOptions::new();
        // Hosts may not support every option; an unsupported one is simply not applied.
        let _ = options.set_connect_timeout(Some(nanos(limit)));
        let _ = options.set_first_byte_timeout(Some(nanos(limit)));
        let _ = options.set_between_bytes_timeout(Some(nanos(limit)));
        let pending = outgoing_handler::handle(outgoing, Some(options))
            .map_err(|code| fail(format!("{code:?}")))?;

        // Stream the body out while waiting for the answer (a server may answer before reading
        // all of it, and a large body must never be buffered).
        let (sent, answer) = futures::join!(write_body(body, out_body), response(pending));
        let answer = answer.map_err(fail)?;
        if let Err(error) = sent {
            // The server answered anyway (e.g. it refused the body early); its answer stands.
            tracing_note(&format!("{host}: request body not fully sent: {error}"));
        }

        let status = http::StatusCode::from_u16(answer.status())
            .map_err(|_| fail(format!("invalid status {}", answer.status())))?;
        let mut response = http::Response::new(Body::Empty);
        *response.status_mut() = status;
        for (name, value) in answer.headers().entries() {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        let body = answer
            .consume()
            .map_err(|()| fail("the response body was already taken".into()))?;
        *response.body_mut() = Body::Stream(incoming(body, Some(answer)).map_err(fail)?);
        Ok(response)
    }
}

fn tracing_note(message: &str) {
    eprintln!("openregistry: {message}");
}
