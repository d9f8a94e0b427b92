//! Outbound HTTP (`wasi:http/outgoing-handler`): the component's allow-list, checked before
//! wasmtime-wasi-http's stock sender runs (which honours the guest's connect, first-byte and
//! between-bytes timeouts, default 600 s each). A request that is not allowed fails with
//! `error-code::HTTP-request-denied`, as in Spin. `http://self.alt/...` is sent to this
//! host's own listener when `self`/`self.alt`/`*` is allowed.

use crate::allowed_hosts::AllowedHosts;
use http_body_util::BodyExt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

pub struct OutboundHooks {
    pub allowed: Arc<AllowedHosts>,
    pub component_id: Arc<str>,
    /// This host's own address, for self requests.
    pub self_addr: SocketAddr,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl OutboundHooks {
    /// Applies the allow-list; rewrites a self request to this host's address.
    fn check(&self, request: &mut http::Request<WasiBody>) -> Result<(), Error> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or("");
        if host.eq_ignore_ascii_case("self.alt") {
            if !self.allowed.allows_self() {
                self.deny(&uri.to_string());
                return Err(Error::HttpRequestDenied);
            }
            let authority = self.self_addr.to_string();
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let new_uri = format!("http://{authority}{path}")
                .parse::<http::Uri>()
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            *request.uri_mut() = new_uri;
            let host_value = http::HeaderValue::from_str(&authority)
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            request.headers_mut().insert(http::header::HOST, host_value);
            return Ok(());
        }
        if self.allowed.allows(&scheme, host, uri.port_u16()) {
            Ok(())
        } else {
            self.deny(&uri.to_string());
            Err(Error::HttpRequestDenied)
        }
    }

    fn deny(&self, url: &str) {
        eprintln!(
            "spin-test-host: component {:?} tried to send a request to {url}, which is not in its allowed_outbound_hosts",
            self.component_id
        );
    }
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let checked = self.check(&mut request);
        Box::new(async move {
            checked?;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}
