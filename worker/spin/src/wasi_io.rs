//! Streams over the WASIp2 `wasi:io` interfaces, driven by spin-executor: an incoming body as the
//! core's [`ByteStream`] (read in up to 1 MiB pieces), the core's [`Body`] written into an
//! outgoing body with back-pressure, and the request body shared between the core and the entry
//! ([`RequestBody`]), which discards what the core left unread.
//!
//! Written here rather than taken from spin-sdk because its helpers read 16 KiB at a time, copy
//! every chunk into a `Vec`, and cannot keep an incoming response alive next to its body (dropping
//! the response first cancels the exchange in wasmtime, wasmtime#7413).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use openregistry::body::{Body, BodyError, ByteStream};
use spin_executor::CancelOnDropToken;
use spin_sdk::http::{IncomingResponse, OutgoingBody};
use spin_sdk::wit::wasi::http0_2_0::types::IncomingBody;
use wasi::clocks::monotonic_clock;
use wasi::io::poll::Pollable;
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// The most one read takes from the host.
const READ_SIZE: u64 = 1024 * 1024;

/// Parks the current task until `pollable` is ready; the registration is cancelled when dropped.
#[derive(Default)]
pub struct Parked(Option<CancelOnDropToken>);

impl Parked {
    pub fn park<T>(&mut self, pollable: Pollable, cx: &mut Context<'_>) -> Poll<T> {
        self.0 = Some(CancelOnDropToken::from(
            spin_executor::push_waker_and_get_token(pollable, cx.waker().clone()),
        ));
        Poll::Pending
    }
}

fn transport(error: StreamError) -> BodyError {
    match error {
        StreamError::LastOperationFailed(e) => BodyError::Transport(e.to_debug_string()),
        StreamError::Closed => BodyError::Transport("stream closed".into()),
    }
}

/// An incoming body (of the request being served, or of an outbound response) as a stream.
struct Incoming {
    // Fields drop in order: the stream before its body, the body before its response.
    stream: Option<InputStream>,
    _body: IncomingBody,
    _response: Option<IncomingResponse>,
    parked: Parked,
}

impl futures::Stream for Incoming {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(stream) = &this.stream else {
            return Poll::Ready(None);
        };
        match stream.read(READ_SIZE) {
            Ok(bytes) if bytes.is_empty() => {
                let pollable = stream.subscribe();
                this.parked.park(pollable, cx)
            }
            Ok(bytes) => Poll::Ready(Some(Ok(Bytes::from(bytes)))),
            Err(StreamError::Closed) => {
                this.stream = None;
                Poll::Ready(None)
            }
            Err(error) => {
                this.stream = None;
                Poll::Ready(Some(Err(transport(error))))
            }
        }
    }
}

/// The body of an incoming request or response as the core's stream. A response, when given, is
/// kept alive until the stream is dropped.
pub fn incoming(
    body: IncomingBody,
    response: Option<IncomingResponse>,
) -> Result<ByteStream, String> {
    Ok(Box::pin(Incoming::new(body, response)?))
}

impl Incoming {
    fn new(body: IncomingBody, response: Option<IncomingResponse>) -> Result<Self, String> {
        let stream = body
            .stream()
            .map_err(|()| "the body stream was already taken".to_owned())?;
        Ok(Incoming {
            stream: Some(stream),
            _body: body,
            _response: response,
            parked: Parked::default(),
        })
    }
}

/// The body of the request being served, shared by the core's stream ([`RequestBody::stream`])
/// and the entry, which discards what the core did not read ([`RequestBody::discard`]).
#[derive(Clone)]
pub struct RequestBody(Rc<RefCell<Incoming>>);

impl RequestBody {
    pub fn new(body: IncomingBody) -> Result<Self, String> {
        Ok(Self(Rc::new(RefCell::new(Incoming::new(body, None)?))))
    }

    /// The body as the core's stream.
    pub fn stream(&self) -> ByteStream {
        let shared = self.0.clone();
        Box::pin(futures::stream::poll_fn(move |cx| {
            shared.borrow_mut().poll_next_unpin(cx)
        }))
    }

    /// Whether the body has been read to its end.
    pub fn is_read(&self) -> bool {
        self.0.borrow().stream.is_none()
    }

    /// Reads and drops up to `limit` bytes of what is left of the body, for up to `time`, in
    /// constant memory. `true` when the body ended within both bounds.
    pub async fn discard(&self, limit: u64, time: Duration) -> bool {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        let deadline = monotonic_clock::now().saturating_add(nanos);
        let mut timer = Parked::default();
        let mut read = 0u64;
        futures::future::poll_fn(|cx| loop {
            if monotonic_clock::now() >= deadline {
                return Poll::Ready(false);
            }
            match self.0.borrow_mut().poll_next_unpin(cx) {
                Poll::Ready(None) => return Poll::Ready(true),
                Poll::Ready(Some(Ok(bytes))) => {
                    read = read.saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
                    if read > limit {
                        return Poll::Ready(false);
                    }
                }
                Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                // Woken by the body's stream (parked by `Incoming`) or by the deadline.
                Poll::Pending => {
                    return timer.park(monotonic_clock::subscribe_instant(deadline), cx)
                }
            }
        })
        .await
    }
}

/// Waits until `stream` takes more bytes (`check-write` > 0) and returns how many.
fn writable(stream: &OutputStream) -> impl Future<Output = Result<u64, StreamError>> + '_ {
    let mut parked = Parked::default();
    futures::future::poll_fn(move |cx| match stream.check_write() {
        Ok(0) => parked.park(stream.subscribe(), cx),
        other => Poll::Ready(other),
    })
}

async fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let room = writable(stream).await?;
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        let Some((now, rest)) = bytes.split_at_checked(n) else {
            break;
        };
        stream.write(now)?;
        bytes = rest;
    }
    Ok(())
}

/// Writes `body` into `outgoing` and finishes it. A failed source stream leaves the body
/// unfinished, so the receiver sees a truncated (failed) message rather than a short one.
pub async fn write_body(body: Body, outgoing: OutgoingBody) -> Result<(), String> {
    let stream = outgoing
        .write()
        .map_err(|()| "the outgoing body was already taken".to_owned())?;
    let result = async {
        match body {
            Body::Empty => {}
            Body::Full(bytes) => write_all(&stream, &bytes)
                .await
                .map_err(|e| format!("{e:?}"))?,
            Body::Stream(mut chunks) => {
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk.map_err(|e| e.to_string())?;
                    write_all(&stream, &chunk)
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                }
            }
        }
        stream.flush().map_err(|e| format!("{e:?}"))?;
        writable(&stream).await.map_err(|e| format!("{e:?}"))?;
        Ok::<(), String>(())
    }
    .await;
    drop(stream);
    match result {
        Ok(()) => OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}")),
        // Dropping an unfinished body tells the host the message is incomplete.
        Err(error) => Err(error),
    }
}
