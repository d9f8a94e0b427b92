//! Request and response bodies: empty, a complete buffer, or a stream of chunks.
//!
//! The stream is boxed so hosts can hand over their own body types (hyper's `Incoming`, a Workers
//! `ReadableStream`, a Spin incoming body) without the core knowing any of them. On wasm32 the
//! stream need not be `Send`; natively it must be, so hosts can run handlers on a work-stealing
//! runtime. [`MaybeSend`] expresses exactly that.

use std::fmt;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_util::StreamExt;

/// `Send` natively, nothing on wasm32 (where host futures and streams are not `Send`).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` natively, nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> MaybeSync for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSync for T {}

/// A boxed stream of body chunks, `Send` where the target allows it.
#[cfg(not(target_arch = "wasm32"))]
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send + 'static>>;
/// A boxed stream of body chunks, `Send` where the target allows it.
#[cfg(target_arch = "wasm32")]
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + 'static>>;

/// Reading a body failed: the peer went away, the host's stream broke, or a limit was hit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The underlying transport failed (connection dropped, truncated chunked encoding ...).
    #[error("body stream failed: {0}")]
    Transport(String),
    /// The body was larger than the caller allowed.
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// An HTTP body as the core sees it.
#[derive(Default)]
pub enum Body {
    /// No body at all.
    #[default]
    Empty,
    /// A body already in memory (small responses, manifests).
    Full(Bytes),
    /// A body that arrives, or leaves, in chunks.
    Stream(ByteStream),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Full(bytes) => write!(f, "Body::Full({} bytes)", bytes.len()),
            Body::Stream(_) => f.write_str("Body::Stream(..)"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::Full(bytes)
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::Full(Bytes::from(bytes))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body::Full(Bytes::from(text))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Body::Full(Bytes::from_static(text.as_bytes()))
    }
}

impl Body {
    /// Wraps any chunk stream.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Send + 'static,
    {
        Body::Stream(Box::pin(stream))
    }

    /// Wraps any chunk stream.
    #[cfg(target_arch = "wasm32")]
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, BodyError>> + 'static,
    {
        Body::Stream(Box::pin(stream))
    }

    /// The body's length when it is known without reading it.
    pub fn known_len(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Full(bytes) => Some(bytes.len() as u64),
            Body::Stream(_) => None,
        }
    }

    /// Turns any body into a chunk stream (empty chunks are never yielded).
    pub fn into_stream(self) -> ByteStream {
        match self {
            Body::Empty => Box::pin(futures_util::stream::empty()),
            Body::Full(bytes) if bytes.is_empty() => Box::pin(futures_util::stream::empty()),
            Body::Full(bytes) => Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
            Body::Stream(stream) => stream,
        }
    }

    /// Reads the whole body into memory, refusing more than `limit` bytes.
    pub async fn collect(self, limit: u64) -> Result<Bytes, BodyError> {
        match self {
            Body::Empty => Ok(Bytes::new()),
            Body::Full(bytes) if bytes.len() as u64 > limit => Err(BodyError::TooLarge { limit }),
            Body::Full(bytes) => Ok(bytes),
            Body::Stream(mut stream) => {
                let mut buffer = BytesMut::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    if (buffer.len() + chunk.len()) as u64 > limit {
                        return Err(BodyError::TooLarge { limit });
                    }
                    buffer.extend_from_slice(&chunk);
                }
                Ok(buffer.freeze())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;

    fn chunks(parts: &[&'static [u8]]) -> Body {
        let items: Vec<Result<Bytes, BodyError>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Body::from_stream(futures_util::stream::iter(items))
    }

    #[test]
    fn collect_joins_chunks_within_the_limit() {
        let body = block_on(chunks(&[b"ab", b"cd"]).collect(4)).expect("fits");
        assert_eq!(&body[..], b"abcd");
    }

    #[test]
    fn collect_refuses_bodies_over_the_limit() {
        let err = block_on(chunks(&[b"ab", b"cd"]).collect(3)).expect_err("too large");
        assert_eq!(err, BodyError::TooLarge { limit: 3 });
    }

    #[test]
    fn empty_full_bodies_stream_nothing() {
        let mut stream = Body::Full(Bytes::new()).into_stream();
        assert!(block_on(stream.next()).is_none());
    }
}
