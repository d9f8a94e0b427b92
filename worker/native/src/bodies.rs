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
        tokio::time::timeout(time, read_rest).await.unwrap_or(false)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::io::{Read as _, Write as _};
    use std::net::SocketAddr;

    use hyper::header::{HeaderValue, CONNECTION};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    const MIB: usize = 1024 * 1024;

    /// Serves one connection the way `server::serve_one` treats a refused chunk: the handler
    /// drops the body unread and answers 416; then the rest is drained, or the response says
    /// `Connection: close` and the body lingers within `bounds`.
    async fn refusing_server(bounds: (u64, Duration)) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let service =
                hyper::service::service_fn(move |request: Request<Incoming>| async move {
                    let (core_body, handle) = from_incoming(request.into_body());
                    drop(core_body);
                    let mut response = Response::new(Full::new(Bytes::from_static(b"refused")));
                    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                    if !handle.drain().await {
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                        handle.linger_within(bounds.0, bounds.1);
                    }
                    Ok::<_, Infallible>(response)
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        addr
    }

    /// Sends a PATCH with a body of `len` bytes, all of it before reading anything (as Python's
    /// http.client and Go's net/http do), then reads until the server closes or `then` is sent
    /// and answered. Everything the server sent, or the first I/O error.
    fn send_then_read(addr: SocketAddr, len: usize, then: Option<&str>) -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: test\r\nContent-Length: {len}\r\n\r\n"
        )?;
        let piece = vec![b'x'; MIB];
        let mut left = len;
        while left > 0 {
            let n = left.min(MIB);
            stream.write_all(&piece[..n])?;
            left -= n;
        }
        let mut answer = Vec::new();
        if let Some(next) = then {
            let mut buffer = [0u8; 4096];
            let n = stream.read(&mut buffer)?;
            answer.extend_from_slice(&buffer[..n]);
            stream.write_all(next.as_bytes())?;
            let n = stream.read(&mut buffer)?;
            answer.extend_from_slice(&buffer[..n]);
        } else {
            stream.read_to_end(&mut answer)?;
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    #[tokio::test]
    async fn a_small_unread_rest_is_drained_and_the_connection_reused() {
        let addr = refusing_server((LINGER_LIMIT, LINGER_TIME)).await;
        let next =
            "PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc";
        let answer = tokio::task::spawn_blocking(move || send_then_read(addr, 1000, Some(next)))
            .await
            .expect("client thread")
            .expect("client I/O");
        assert_eq!(answer.matches("HTTP/1.1 416").count(), 2, "{answer}");
        assert!(!answer.contains("connection: close"), "{answer}");
    }

    #[tokio::test]
    async fn a_large_refused_body_is_discarded_after_the_response_and_the_connection_closed_cleanly(
    ) {
        // 48 MiB: far more than the socket buffers hold, so that a server that stopped reading
        // would reset the connection while the client is still sending.
        let addr = refusing_server((LINGER_LIMIT, LINGER_TIME)).await;
        let answer = tokio::task::spawn_blocking(move || send_then_read(addr, 48 * MIB, None))
            .await
            .expect("client thread")
            .expect("the client sends everything and reads the answer without a reset");
        assert!(answer.starts_with("HTTP/1.1 416"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(answer.ends_with("refused"), "{answer}");
    }

    #[tokio::test]
    async fn past_the_bound_the_refused_body_is_dropped_and_the_connection_closed() {
        let addr = refusing_server((4 * MIB as u64, LINGER_TIME)).await;
        let result = tokio::task::spawn_blocking(move || send_then_read(addr, 64 * MIB, None))
            .await
            .expect("client thread");
        assert!(
            result.is_err(),
            "64 MiB went through a 4 MiB bound: {result:?}"
        );
    }
}
