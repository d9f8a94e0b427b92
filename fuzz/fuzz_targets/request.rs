//! Any request, into a registry with authentication off or on: routing, names, references,
//! digests, query strings, `Range`, `Content-Range`, `Content-Length`, upload session URLs, Basic
//! and Bearer credentials, `/token` scopes, the account API's JSON. Must answer, never panic.
#![no_main]

use bytes::Bytes;
use futures_executor::block_on;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use openregistry::{Body, BodyError};

#[derive(Debug, Arbitrary)]
enum Method {
    Get,
    Head,
    Put,
    Post,
    Patch,
    Delete,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Route {
    Manifest,
    Blob,
    UploadStart,
    Upload,
    Tags,
    Referrers,
    Catalog,
    Base,
    Token,
    Api,
    Raw,
}

#[derive(Debug, Arbitrary)]
enum Header {
    Authorization,
    ContentType,
    ContentLength,
    ContentRange,
    Range,
    Accept,
    Host,
    Other(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    auth: bool,
    method: Method,
    route: Route,
    name: String,
    reference: String,
    query: Option<String>,
    headers: Vec<(Header, String)>,
    body: Vec<u8>,
    /// Sent as a stream of chunks of this size (and a transport error at the end when odd).
    stream: Option<u8>,
}

fn path(input: &Input) -> String {
    let (a, b) = (&input.name, &input.reference);
    match input.route {
        Route::Manifest => format!("/v2/{a}/manifests/{b}"),
        Route::Blob => format!("/v2/{a}/blobs/{b}"),
        Route::UploadStart => format!("/v2/{a}/blobs/uploads/"),
        Route::Upload => format!("/v2/{a}/blobs/uploads/{b}"),
        Route::Tags => format!("/v2/{a}/tags/list"),
        Route::Referrers => format!("/v2/{a}/referrers/{b}"),
        Route::Catalog => "/v2/_catalog".to_owned(),
        Route::Base => "/v2/".to_owned(),
        Route::Token => "/token".to_owned(),
        Route::Api => format!("/api/{a}"),
        Route::Raw => a.clone(),
    }
}

fuzz_target!(|input: Input| {
    let mut uri = path(&input);
    if let Some(query) = &input.query {
        uri.push('?');
        uri.push_str(query);
    }
    let method = match &input.method {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Put => http::Method::PUT,
        Method::Post => http::Method::POST,
        Method::Patch => http::Method::PATCH,
        Method::Delete => http::Method::DELETE,
        Method::Other(m) => match http::Method::from_bytes(m.as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    let mut request = http::Request::builder().method(method).uri(uri);
    for (name, value) in &input.headers {
        let name = match name {
            Header::Authorization => "authorization",
            Header::ContentType => "content-type",
            Header::ContentLength => "content-length",
            Header::ContentRange => "content-range",
            Header::Range => "range",
            Header::Accept => "accept",
            Header::Host => "host",
            Header::Other(name) => name.as_str(),
        };
        request = request.header(name, value.as_str());
    }
    let body = match input.stream {
        None => Body::Full(Bytes::from(input.body.clone())),
        Some(size) => {
            let size = usize::from(size.max(1));
            let mut chunks: Vec<Result<Bytes, BodyError>> = input
                .body
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            if size % 2 == 1 {
                chunks.push(Err(BodyError::Transport("reset".into())));
            }
            Body::from_stream(futures_util::stream::iter(chunks))
        }
    };
    // Requests the http crate itself refuses never reach a host.
    let Ok(request) = request.body(body) else {
        return;
    };
    let registry = openregistry_fuzz::registry(input.auth);
    let response = block_on(registry.handle(request));
    let _ = block_on(response.into_body().collect(u64::MAX));
});
