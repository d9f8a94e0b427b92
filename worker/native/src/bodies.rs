//! Conversions between hyper's bodies and the core's `Body`, both ways, without buffering, and
//! what happens to the part of a request body the handler did not read.
//!
//! The core answers some requests without reading their body (a `416` for a chunk at the wrong
//! offset, a `401`, a refused mount). hyper then cannot reuse the connection, and if the server
//! stops reading while the client is still sending, the kernel resets the connection and the
//! client (which typically writes the whole body before it reads the answer) sees a broken pipe
//! or a reset instead of the answer. So the server keeps a handle on the request body, and after
//! the handler:
//!
//! * a small remainder (up to [`DRAIN_LIMIT`], arriving within [`DRAIN_TIME`]) is read and
//!   dropped before the response goes out, as Go's net/http does, and the connection stays
//!   usable;
//! * a larger one is never processed: the response goes out at once with `Connection: close`,
//!   and a task of its own ([`RequestBody::linger`]) then reads and drops the rest, in constant
//!   memory, so that the client can finish sending and read the response; hyper closes the
//!   connection cleanly once the body has ended. That discard is bounded ([`LINGER_LIMIT`],
//!   [`LINGER_TIME`]): past either, the handle is dropped and the connection closed (reset).
//!
//! hyper 1.x keeps reading a request body after the response has been written for as long as
//! the body is alive and polled (its dispatcher finishes a server connection only when both
//! directions are done); the test at the bottom checks that.

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
/// The most of a refused body read and dropped after the response (`Connection: close`) so that
/// the client can finish sending and read the answer. A chunk is rarely more than a few hundred
/// MiB (Skynet's pieces are 40 MiB, Docker sends whole layers of up to a few GiB in one PATCH);
/// beyond this bound reading on would only serve a client that ignores the answer.
pub const LINGER_LIMIT: u64 = 1024 * 1024 * 1024;
/// How long the discard may take: 1 GiB at ~20 MiB/s, a slow uplink; a client that sends
/// slower than that, or stops sending, gets its connection closed.
pub const LINGER_TIME: Duration = Duration::from_secs(60);

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

    /// How many bytes of the body are still to come at least (its declared length, less what
    /// has been read).
    fn known_remainder(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size_hint()
            .lower()
    }

    /// Reads and drops what the handler left of the body, if that is small and arrives soon.
    /// `true` when the body has been read to its end (the connection can be reused).
    pub async fn drain(&self) -> bool {
        if self.is_read() {
            return true;
        }
        if self.known_remainder() > DRAIN_LIMIT {
            return false;
        }
        self.discard(DRAIN_LIMIT, DRAIN_TIME).await
    }

    /// Reads and drops up to `limit` bytes of what is left of the body, for up to `time`.
    /// `true` when the body ended within both bounds.
    async fn discard(&self, limit: u64, time: Duration) -> bool {
        let read_rest = async {
            let mut read = 0u64;
            loop {
                match std::future::poll_fn(|cx| self.poll_chunk(cx)).await {
                    None => return true,
                    Some(Ok(chunk)) => {
                        read = read.saturating_add(chunk.len() as u64);
                        if read > limit {
                            return false;
                        }
                    }
                    Some(Err(_)) => return false,
                }
            }
        };
        tokio::time::timeout(time, read_rest)
            .await
            .unwrap_or(false)
    }

    /// For a response that says `Connection: close` while the client is still sending: reads
    /// and drops the rest of the body in a task of its own (up to [`LINGER_LIMIT`] bytes and
    /// [`LINGER_TIME`]), so that the response goes out now and the client, once it has sent
    /// everything, can read it. Dropping the handle at the end lets hyper close the connection.
    pub fn linger(self) {
        self.linger_within(LINGER_LIMIT, LINGER_TIME);
    }

    fn linger_within(self, limit: u64, time: Duration) {
        if self.is_read() {
            return;
        }
        tokio::spawn(async move {
            if !self.discard(limit, time).await {
                tracing::debug!(
                    limit,
                    seconds = time.as_secs(),
                    "refused request body not finished within the bounds; closing the connection"
                );
            }
        });
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
