//! The native `HttpClient`: hyper with rustls (webpki roots), streaming both ways, and the
//! per-request `Timeout` the core sets (on the whole exchange up to the response headers, and on
//! each wait for a body chunk after that).

use std::time::Duration;

use futures_util::StreamExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use openregistry::body::{Body, BodyError};
use openregistry::ports::{HttpClient, Timeout, Unavailable};

use crate::bodies::{from_incoming, to_hyper, HyperBody};

/// Outbound HTTP and HTTPS.
#[derive(Clone)]
pub struct HyperClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, HyperBody>,
}

impl HyperClient {
    pub fn new() -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Self { client }
    }
}

#[async_trait::async_trait]
impl HttpClient for HyperClient {
    async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Unavailable> {
        let limit = Timeout::of(&request);
        let host = request.uri().host().unwrap_or_default().to_owned();
        let request = request.map(to_hyper);
        let response = tokio::time::timeout(limit, self.client.request(request))
            .await
            .map_err(|_| Unavailable::new("http", format!("{host}: no answer within {limit:?}")))?
            .map_err(|e| Unavailable::new("http", format!("{host}: {e}")))?;
        Ok(response.map(|incoming| {
            let chunks = from_incoming(incoming).0.into_stream();
            let guarded = tokio_stream_timeout(chunks, limit);
            Body::from_stream(guarded)
        }))
    }
}

/// Ends a body stream with an error when one chunk takes longer than `limit` to arrive.
fn tokio_stream_timeout(
    stream: openregistry::body::ByteStream,
    limit: Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, BodyError>> + Send {
    futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(limit, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((
                Err(BodyError::Transport(format!("no data for {limit:?}"))),
                None,
            )),
        }
    })
}
