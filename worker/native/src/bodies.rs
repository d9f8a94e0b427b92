//! Conversions between hyper's bodies and the core's `Body`, both ways, without buffering.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use openregistry::body::{Body, BodyError};

/// A hyper body carrying the core's chunks.
pub type HyperBody = UnsyncBoxBody<Bytes, BodyError>;

/// hyper's streaming body as the core's `Body`.
pub fn from_incoming(incoming: Incoming) -> Body {
    let stream = BodyStream::new(incoming).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(BodyError::Transport(e.to_string()))),
        }
    });
    Body::from_stream(stream)
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
