//! Conversions between hyper's bodies and the core's `Body`, both ways, without buffering, and
//! what happens to the part of a request body the handler did not read.
//!
//! The core answers some requests without reading their body (a `416` for a chunk at the wrong
//! offset, a `401`, a refused mount). hyper then cannot reuse the connection, and a client that
//! sends its next request on it before it sees the close gets a reset. So the server keeps a
//! handle on the request body: after the handler, a small remainder is read and dropped (as Go's
//! net/http does) and the connection stays usable; a large one is left unread and the response
//! says `Connection: close`, so clients open a new connection instead of racing the close.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use openregistry::body::{Body, BodyError};

/// A hyper body carrying the core's chunks.
pub type HyperBody = UnsyncBoxBody<Bytes, BodyError>;

/// The most of an unread request body that is read and dropped to keep a connection alive.
const DRAIN_LIMIT: u64 = 256 * 1024;
/// How long draining may wait for the client.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// A request body shared by the core's stream and the server (which drains what is left).
#[derive(Clone)]
pub struct RequestBody(Arc<Mutex<Incoming>>);

impl RequestBody {
    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let mut body = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            return match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_trailers) => continue,
                },
                Poll::Ready(Some(Err(e))) => {
                    Poll::Ready(Some(Err(BodyError::Transport(e.to_string()))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }

    /// Whether the body has been read to its end (or had none).
    pub fn is_read(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_end_stream()
    }

    /// Reads and drops what the handler left of the body, if that is small and arrives soon.
    /// `true` when the body has been read to its end (the connection can be reused).
    pub async fn drain(&self) -> bool {
        if self.is_read() {
            return true;
        }
        let read_rest = async {
            let mut left = DRAIN_LIMIT;
            loop {
                match std::future::poll_fn(|cx| self.poll_chunk(cx)).await {
                    None => return true,
                    Some(Ok(chunk)) if (chunk.len() as u64) <= left => left -= chunk.len() as u64,
                    Some(_) => return false,
                }
            }
        };
        tokio::time::timeout(DRAIN_TIME, read_rest)
            .await
            .unwrap_or(false)
    }
}

/// hyper's streaming body as the core's `Body`, and the server's handle on it.
pub fn from_incoming(incoming: Incoming) -> (Body, RequestBody) {
    let shared = RequestBody(Arc::new(Mutex::new(incoming)));
    let reader = shared.clone();
    let stream = futures_util::stream::poll_fn(move |cx| reader.poll_chunk(cx));
    (Body::from_stream(stream), shared)
}

/// The core's `Body` as a hyper body, still streaming.
pub fn to_hyper(body: Body) -> HyperBody {
    match body {
        Body::Empty => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        Body::Full(bytes) => Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
        Body::Stream(stream) => {
            BodyExt::boxed_unsync(StreamBody::new(stream.map(|chunk| chunk.map(Frame::data))))
        }
    }
}
