//! The `HttpClient` port on the runtime's `fetch()`: request bodies stream out (with a
//! `Content-Length` when the length is known), response bodies stream in, in 1 MiB reads.
//!
//! The core's [`Timeout`] request extension is honoured with an `AbortController` and a timer: on
//! the whole exchange up to the response headers, then on each wait for a body chunk (as the
//! native host does). Redirects are not followed (the native client does not follow them either).

use futures_util::future::{select, Either};
use http::header::{HeaderName, HeaderValue};
use openregistry::body::Body;
use openregistry::ports::{HttpClient, Timeout, Unavailable};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::streams::{from_js, js_error, to_js, with_chunk_timeout};

/// Outbound HTTP through the Workers runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct FetchClient;

/// Copies an `http::HeaderMap` into JS `Headers` (values that are not visible ASCII are dropped,
/// as the runtime would refuse them).
pub fn js_headers(
    headers: &http::HeaderMap,
    skip: &[HeaderName],
) -> Result<web_sys::Headers, String> {
    let out = web_sys::Headers::new().map_err(|e| js_error(&e))?;
    for (name, value) in headers {
        if skip.contains(name) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            out.append(name.as_str(), value).map_err(|e| js_error(&e))?;
        }
    }
    Ok(out)
}

/// Copies JS `Headers` into an `http::HeaderMap`.
pub fn http_headers(headers: &web_sys::Headers) -> http::HeaderMap {
    let mut out = http::HeaderMap::new();
    let Ok(Some(entries)) = js_sys::try_iter(headers.as_ref()) else {
        return out;
    };
    for entry in entries.flatten() {
        let pair = js_sys::Array::from(&entry);
        let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.append(name, value);
        }
    }
    out
}

/// The `Content-Length` a header map declares, if any.
pub fn declared_len(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[async_trait::async_trait(?Send)]
impl HttpClient for FetchClient {
    async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Unavailable> {
        let limit = Timeout::of(&request);
        let (parts, body) = request.into_parts();
        let host = parts.uri.host().unwrap_or_default().to_owned();
        let fail = |what: String| Unavailable::new("http", format!("{host}: {what}"));

        // The runtime derives Content-Length and Host itself.
        let headers = js_headers(
            &parts.headers,
            &[http::header::CONTENT_LENGTH, http::header::HOST],
        )
        .map_err(fail)?;
        let len = declared_len(&parts.headers).or(body.known_len());
        let init = web_sys::RequestInit::new();
        init.set_method(parts.method.as_str());
        init.set_headers(headers.as_ref());
        init.set_redirect(web_sys::RequestRedirect::Manual);
        let controller = web_sys::AbortController::new().map_err(|e| fail(js_error(&e)))?;
        let signal = controller.signal();
        if let Some(body) = to_js(body, len, Some(&signal)) {
            init.set_body(&body);
        }
        init.set_signal(Some(&signal));
        let js_request = web_sys::Request::new_with_str_and_init(&parts.uri.to_string(), &init)
            .map_err(|e| fail(js_error(&e)))?;
        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let pending = JsFuture::from(global.fetch_with_request(&js_request));
        let timer = worker::Delay::from(limit);
        let answer = match select(pending, timer).await {
            Either::Left((Ok(answer), _)) => answer,
            Either::Left((Err(e), _)) => return Err(fail(js_error(&e))),
            Either::Right(_) => {
                controller.abort();
                return Err(fail(format!("no answer within {limit:?}")));
            }
        };
        let answer: web_sys::Response = answer
            .dyn_into()
            .map_err(|_| fail("fetch() did not return a Response".into()))?;

        let mut response = http::Response::new(Body::Empty);
        *response.status_mut() = http::StatusCode::from_u16(answer.status())
            .map_err(|_| fail(format!("invalid status {}", answer.status())))?;
        *response.headers_mut() = http_headers(&answer.headers());
        if let Some(stream) = answer.body() {
            let chunks = from_js(&stream).map_err(fail)?;
            *response.body_mut() = Body::Stream(with_chunk_timeout(chunks, limit, controller));
        }
        Ok(response)
    }
}
