//! Bodies between the Workers runtime's `ReadableStream`s and the core's chunk streams, both ways,
//! without buffering a whole body.
//!
//! Reading: workerd hands request bodies over in ~4 KiB pieces, and crossing from JS into WASM per
//! piece costs 2–3x in throughput. So bodies are read with a BYOB reader and workerd's
//! `readAtLeast(1 MiB, view)`, one reused 1 MiB buffer per body, and each read is copied once into
//! WASM memory.
//!
//! Writing: a Rust stream becomes a JS `ReadableStream` (one chunk pulled at a time), and when the
//! length is known it is piped through a `FixedLengthStream`, so the runtime sends a
//! `Content-Length` instead of chunked encoding. Large in-memory bodies (a 40 MiB Skynet piece) are
//! handed over in 1 MiB slices, so JS never holds a second full copy.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::lock::Mutex;
use futures_util::StreamExt;
use js_sys::{Array, ArrayBuffer, Function, Object, Promise, Reflect, Uint8Array};
use openregistry::body::{Body, BodyError, ByteStream};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// How much one read asks the runtime for, and the largest slice handed to JS at once.
pub const CHUNK: u32 = 1 << 20;

/// A readable description of a JS exception.
pub fn js_error(error: &JsValue) -> String {
    if let Some(e) = error.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    error.as_string().unwrap_or_else(|| format!("{error:?}"))
}

fn get(target: &JsValue, name: &str) -> Result<JsValue, JsValue> {
    Reflect::get(target, &JsValue::from_str(name))
}

fn method(target: &JsValue, name: &str) -> Option<Function> {
    get(target, name).ok()?.dyn_into::<Function>().ok()
}

thread_local! {
    /// One no-op rejection handler for the whole isolate.
    static NOOP: Closure<dyn FnMut(JsValue)> = Closure::new(|_: JsValue| {});
}

/// Lets a promise reject without an "unhandled rejection" report.
fn ignore_rejection(promise: &Promise) {
    NOOP.with(|noop| {
        let _ = promise.catch(noop);
    });
}

/// One body being read from a JS `ReadableStream`.
struct Reader {
    reader: JsValue,
    /// A BYOB reader (`read(view)` / `readAtLeast(n, view)`), or a default one (`read()`).
    byob: bool,
    read: Function,
    read_at_least: Option<Function>,
    /// The buffer handed back by the last BYOB read, reused for the next.
    buffer: Option<ArrayBuffer>,
    done: bool,
}

impl Reader {
    fn new(stream: &web_sys::ReadableStream) -> Result<Self, String> {
        let stream_js: &JsValue = stream.as_ref();
        let get_reader =
            method(stream_js, "getReader").ok_or("the body is not a ReadableStream")?;
        let options = Object::new();
        let _ = Reflect::set(&options, &"mode".into(), &"byob".into());
        if let Ok(reader) = get_reader.call1(stream_js, &options) {
            if let Some(read) = method(&reader, "read") {
                return Ok(Self {
                    read_at_least: method(&reader, "readAtLeast"),
                    reader,
                    byob: true,
                    read,
                    buffer: None,
                    done: false,
                });
            }
        }
        // Not a byte stream: plain reads.
        let reader = get_reader.call0(stream_js).map_err(|e| js_error(&e))?;
        let read = method(&reader, "read").ok_or("the stream's reader has no read()")?;
        Ok(Self {
            reader,
            byob: false,
            read,
            read_at_least: None,
            buffer: None,
            done: false,
        })
    }

    async fn next(&mut self) -> Option<Result<Bytes, BodyError>> {
        while !self.done {
            match self.read_once(true).await {
                Ok(Some(bytes)) => return Some(Ok(bytes)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(BodyError::Transport(e)));
                }
            }
        }
        None
    }

    /// Reads and discards the rest (nothing is copied into WASM memory).
    async fn drain(&mut self) {
        while !self.done {
            if self.read_once(false).await.is_err() {
                self.done = true;
            }
        }
    }

    /// One read; `Ok(None)` when it produced no bytes (the end, an empty chunk, or `keep` unset).
    async fn read_once(&mut self, keep: bool) -> Result<Option<Bytes>, String> {
        let promise = if self.byob {
            let buffer = self
                .buffer
                .take()
                .unwrap_or_else(|| ArrayBuffer::new(CHUNK));
            let view = Uint8Array::new(&buffer);
            match &self.read_at_least {
                Some(read_at_least) => {
                    read_at_least.call2(&self.reader, &JsValue::from(view.byte_length()), &view)
                }
                None => self.read.call1(&self.reader, &view),
            }
        } else {
            self.read.call0(&self.reader)
        }
        .map_err(|e| js_error(&e))?;
        let promise: Promise = promise
            .dyn_into()
            .map_err(|_| "read() did not return a promise".to_owned())?;
        let result = JsFuture::from(promise).await.map_err(|e| js_error(&e))?;
        let done = get(&result, "done")
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(false);
        let value = get(&result, "value").unwrap_or(JsValue::UNDEFINED);
        let mut bytes = None;
        if let Some(view) = value.dyn_ref::<Uint8Array>() {
            if keep && view.byte_length() > 0 {
                bytes = Some(Bytes::from(view.to_vec()));
            }
            if self.byob {
                self.buffer = Some(view.buffer());
            }
        } else if !value.is_undefined() && !done {
            return Err("the stream yielded something that is not a Uint8Array".into());
        }
        if done {
            self.done = true;
        }
        Ok(bytes)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Abandoned before the end (an error, a refused chunk): release the source.
        if !self.done {
            if let Some(cancel) = method(&self.reader, "cancel") {
                if let Ok(promise) = cancel.call0(&self.reader) {
                    if let Ok(promise) = promise.dyn_into::<Promise>() {
                        ignore_rejection(&promise);
                    }
                }
            }
        }
    }
}

/// A JS body as the core's chunk stream, read in 1 MiB pieces.
pub fn from_js(stream: &web_sys::ReadableStream) -> Result<ByteStream, String> {
    let reader = Reader::new(stream)?;
    Ok(Box::pin(futures_util::stream::unfold(
        reader,
        |mut reader| async move { reader.next().await.map(|item| (item, reader)) },
    )))
}

/// An incoming request's body: the core reads it as a stream, and whatever the core left unread
/// (it answered before the end, e.g. a 416) is drained before the response goes out, so the client
/// gets the answer instead of a connection reset.
pub struct RequestBody {
    reader: Rc<Mutex<Reader>>,
}

impl RequestBody {
    pub fn new(stream: &web_sys::ReadableStream) -> Result<(Self, ByteStream), String> {
        let reader = Rc::new(Mutex::new(Reader::new(stream)?));
        let chunks: ByteStream = Box::pin(futures_util::stream::unfold(
            reader.clone(),
            |reader| async move {
                let item = reader.lock().await.next().await;
                item.map(|item| (item, reader))
            },
        ));
        Ok((Self { reader }, chunks))
    }

    /// Reads and drops the rest of the body, if any.
    pub async fn drain(&self) {
        // The core is done with the body: its stream (and its lock) is gone.
        if let Some(mut reader) = self.reader.try_lock() {
            reader.drain().await;
        }
    }
}

/// Splits big chunks so JS receives at most [`CHUNK`] bytes at once (zero-copy on the Rust side).
fn sliced(stream: ByteStream) -> ByteStream {
    Box::pin(stream.flat_map(|item| {
        let pieces: Vec<Result<Bytes, BodyError>> = match item {
            Ok(bytes) if bytes.len() > CHUNK as usize => {
                let mut rest = bytes;
                let mut out = Vec::with_capacity(rest.len() / CHUNK as usize + 1);
                while !rest.is_empty() {
                    out.push(Ok(rest.split_to(rest.len().min(CHUNK as usize))));
                }
                out
            }
            other => vec![other],
        };
        futures_util::stream::iter(pieces)
    }))
}

/// A core stream as a JS `ReadableStream` (pull-based: one chunk is converted at a time).
fn to_readable(stream: ByteStream) -> web_sys::ReadableStream {
    let js = sliced(stream).map(|item| match item {
        Ok(bytes) => Ok(JsValue::from(Uint8Array::from(&bytes[..]))),
        Err(e) => Err(JsValue::from(js_sys::Error::new(&e.to_string()))),
    });
    wasm_streams::ReadableStream::from_stream(js).into_raw()
}

/// Pipes `readable` through workerd's `FixedLengthStream(len)`, so the runtime sends a
/// `Content-Length`; returns `readable` itself where that class does not exist. With `signal`, an
/// abort also aborts the pipe (an outbound request's body must stop when its fetch is aborted, or
/// the runtime keeps writing it and later requests to that origin stall behind it).
fn with_length(
    readable: web_sys::ReadableStream,
    len: u64,
    signal: Option<&web_sys::AbortSignal>,
) -> JsValue {
    let attempt = || -> Result<JsValue, JsValue> {
        let class: Function = get(&js_sys::global(), "FixedLengthStream")?.dyn_into()?;
        let fixed = Reflect::construct(&class, &Array::of1(&JsValue::from_f64(len as f64)))?;
        let writable = get(&fixed, "writable")?;
        let pipe_to = method(readable.as_ref(), "pipeTo").ok_or(JsValue::NULL)?;
        let options = Object::new();
        if let Some(signal) = signal {
            Reflect::set(&options, &"signal".into(), signal)?;
        }
        let piped: Promise = pipe_to
            .call2(readable.as_ref(), &writable, &options)?
            .dyn_into()?;
        // A failure reaches the reader of `fixed.readable` as an error; nothing else to do here.
        ignore_rejection(&piped);
        get(&fixed, "readable")
    };
    attempt().unwrap_or_else(|_| readable.into())
}

/// A core body as something a JS `Request` or `Response` takes as its body (`None`: no body).
/// `len` is the length the body must have, when known (the `Content-Length` the core set);
/// `signal` is the abort signal of the fetch that sends it, if any.
pub fn to_js(
    body: Body,
    len: Option<u64>,
    signal: Option<&web_sys::AbortSignal>,
) -> Option<JsValue> {
    match body {
        Body::Empty => None,
        Body::Full(bytes) if bytes.len() <= CHUNK as usize => {
            Some(Uint8Array::from(&bytes[..]).into())
        }
        Body::Full(bytes) => {
            let len = bytes.len() as u64;
            let one: ByteStream = Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
            Some(with_length(to_readable(one), len, signal))
        }
        Body::Stream(stream) => {
            let readable = to_readable(stream);
            Some(match len {
                Some(len) => with_length(readable, len, signal),
                None => readable.into(),
            })
        }
    }
}

/// Ends a chunk stream with an error when the next chunk takes longer than `limit` to arrive, and
/// aborts the fetch it comes from then.
pub fn with_chunk_timeout(
    stream: ByteStream,
    limit: std::time::Duration,
    abort: web_sys::AbortController,
) -> ByteStream {
    Box::pin(futures_util::stream::unfold(
        Some((stream, abort)),
        move |state| async move {
            let (mut stream, abort) = state?;
            let outcome = {
                let next = stream.next();
                let timer = worker::Delay::from(limit);
                futures_util::pin_mut!(next);
                match futures_util::future::select(next, timer).await {
                    futures_util::future::Either::Left((item, _)) => Some(item),
                    futures_util::future::Either::Right(_) => None,
                }
            };
            match outcome {
                Some(Some(item)) => Some((item, Some((stream, abort)))),
                Some(None) => None,
                None => {
                    abort.abort();
                    Some((
                        Err(BodyError::Transport(format!("no data for {limit:?}"))),
                        None,
                    ))
                }
            }
        },
    ))
}
