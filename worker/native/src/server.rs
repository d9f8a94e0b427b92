//! The HTTP server: hyper connections on tokio, each request converted to the core's types and
//! back with streaming bodies, an access log line per request, and graceful shutdown.
//!
//! The access log does not go through `tracing`'s writer, which writes each line to stderr on the
//! thread that logs it: a request would wait for that write. Lines, in the same format as the
//! other log lines (`tracing_subscriber`'s default, without colours) and subject to the same
//! filter (`RUST_LOG`, target `openregistry::server`), are appended to a buffer in memory; a
//! thread of their own writes the buffer to stderr a few milliseconds after it stops being empty,
//! many lines per write. If stderr is slower than requests for long enough to fill the buffer,
//! lines are dropped and counted (the next write says how many) rather than slowing the
//! requests. `serve` writes out what is buffered before it returns.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use openregistry::body::Body;
use openregistry::ports::ClientAddress;
use openregistry::Registry;
use tokio::net::TcpListener;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

use crate::bodies::{from_incoming, to_hyper, HyperBody, RequestBody};
use crate::metrics::Metrics;

/// How long the log thread lets lines gather after the first one before writing them out.
const LOG_GATHER: Duration = Duration::from_millis(5);
/// Buffered bytes beyond which lines are dropped (stderr is not keeping up).
const LOG_BUFFER_LIMIT: usize = 1024 * 1024;

#[derive(Default)]
struct LogState {
    buffer: String,
    dropped: u64,
    closed: bool,
}

#[derive(Default)]
struct LogShared {
    state: Mutex<LogState>,
    wake: Condvar,
}

impl LogShared {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        // Nothing panics while holding the lock; if something ever did, the buffer is still text.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The buffered, non-blocking access log (see the module comment).
struct AccessLog {
    shared: Arc<LogShared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// The access log of the server: to stderr.
    fn start() -> Self {
        Self::start_to(Box::new(std::io::stderr()))
    }

    fn start_to(out: Box<dyn std::io::Write + Send>) -> Self {
        let shared = Arc::new(LogShared::default());
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_out(&shared, out))
        };
        let writer = match writer {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "no access log thread: access log lines are dropped");
                shared.lock().closed = true;
                None
            }
        };
        Self {
            shared,
            writer: Mutex::new(writer),
        }
    }

    fn record(&self, method: &hyper::Method, path: &str, status: u16, ms: u64) {
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        let mut line = String::with_capacity(96 + path.len());
        // Writing to a String cannot fail.
        let _ = SystemTime.format_time(&mut Writer::new(&mut line));
        let _ = writeln!(
            line,
            "  INFO {}: request method={method} path={path:?} status={status} ms={ms}",
            module_path!()
        );
        let mut state = self.shared.lock();
        if state.closed {
            return;
        }
        if state.buffer.len() + line.len() > LOG_BUFFER_LIMIT {
            state.dropped += 1;
            return;
        }
        let was_empty = state.buffer.is_empty();
        state.buffer.push_str(&line);
        drop(state);
        if was_empty {
            self.shared.wake.notify_one();
        }
    }

    /// Writes out everything buffered and stops the log thread (blocking until it has).
    fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// The log thread: waits for lines, lets more gather for `LOG_GATHER`, writes them in one go.
fn write_out(shared: &LogShared, mut sink: Box<dyn std::io::Write + Send>) {
    let mut out = String::new();
    loop {
        let mut state = shared.lock();
        while state.buffer.is_empty() && !state.closed {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !state.closed {
            drop(state);
            std::thread::sleep(LOG_GATHER);
            state = shared.lock();
        }
        std::mem::swap(&mut state.buffer, &mut out);
        let dropped = std::mem::take(&mut state.dropped);
        let closed = state.closed;
        drop(state);
        if dropped > 0 {
            let _ = SystemTime.format_time(&mut Writer::new(&mut out));
            let _ = writeln!(
                out,
                "  WARN {}: access log lines dropped, stderr did not keep up dropped={dropped}",
                module_path!()
            );
        }
        if !out.is_empty() {
            let _ = sink.write_all(out.as_bytes());
            let _ = sink.flush();
        }
        out.clear();
        if closed {
            return;
        }
    }
}

/// hyper's request as the core's, and the server's handle on its body.
fn into_core_request(request: Request<Incoming>) -> (Request<Body>, RequestBody) {
    let (parts, incoming) = request.into_parts();
    let (body, handle) = from_incoming(incoming);
    (Request::from_parts(parts, body), handle)
}

/// The core's response as hyper's.
fn into_hyper_response(response: openregistry::http::Response<Body>) -> Response<HyperBody> {
    response.map(to_hyper)
}

/// What `/metrics` answers to.
#[derive(Clone)]
pub struct MetricsEndpoint {
    pub metrics: Arc<Metrics>,
    /// The bearer token a scrape needs; `None`: open, unless `auth` (then the endpoint is off).
    pub token: Option<String>,
    pub auth: bool,
}

impl MetricsEndpoint {
    /// `GET /metrics`: the counters, or 401 for a wrong token, or 404 when it is off.
    fn answer(&self, request: &Request<Incoming>) -> Response<HyperBody> {
        let plain = |status: u16, text: String| {
            let mut response = Response::new(to_hyper(Body::from(text)));
            *response.status_mut() = hyper::StatusCode::from_u16(status)
                .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        };
        match (&self.token, self.auth) {
            (None, true) => plain(
                404,
                "/metrics is off: with authentication on it needs OPENREGISTRY_METRICS_TOKEN\n"
                    .into(),
            ),
            (Some(token), _) => {
                let given = request
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default();
                if openregistry::auth::constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    plain(200, self.metrics.render())
                } else {
                    let mut response = plain(401, "a bearer token is required\n".into());
                    response.headers_mut().insert(
                        hyper::header::WWW_AUTHENTICATE,
                        hyper::header::HeaderValue::from_static("Bearer realm=\"metrics\""),
                    );
                    response
                }
            }
            (None, false) => plain(200, self.metrics.render()),
        }
    }
}

fn declared_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn serve_one(
    registry: Arc<Registry>,
    log: Arc<AccessLog>,
    metrics: MetricsEndpoint,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<HyperBody>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if path == "/metrics" && method == hyper::Method::GET {
        let response = metrics.answer(&request);
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        log.record(&method, &path, response.status().as_u16(), ms);
        return Ok(response);
    }
    let route = openregistry::route_name(&path);
    let request_bytes = declared_length(request.headers());
    // A client waiting for `100 Continue` must not be prompted to send a body nobody reads.
    let expects_continue = request
        .headers()
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (mut core_request, body) = into_core_request(request);
    core_request
        .extensions_mut()
        .insert(ClientAddress(peer.ip().to_string()));
    let (mut response, follow_up) = registry.handle_deferred(core_request).await;
    // The request's events (for caches, webhooks, GC) are delivered after the response.
    if !follow_up.is_empty() {
        tokio::spawn(follow_up.run());
    }
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    log.record(&method, &path, response.status().as_u16(), ms);
    metrics.metrics.record(
        route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
        request_bytes,
        declared_length(response.headers()),
    );
    // What the handler left of the body: a small rest is read now and the connection reused; a
    // large one is read and dropped after the response, which says `Connection: close` (see
    // `bodies`). A client waiting for `100 Continue` has sent nothing: its body is not asked for.
    let reusable = if expects_continue {
        body.is_read()
    } else {
        body.drain().await
    };
    if !reusable {
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        if !expects_continue {
            body.linger();
        }
    }
    Ok(into_hyper_response(response))
}

/// Serves until `shutdown` resolves, then lets open requests finish (up to `grace`).
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    metrics: MetricsEndpoint,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let log = Arc::new(AccessLog::start());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer): (_, SocketAddr) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let registry = registry.clone();
                let log = log.clone();
                let metrics = metrics.clone();
                let service =
                    service_fn(move |request| {
                        serve_one(registry.clone(), log.clone(), metrics.clone(), peer, request)
                    });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: waiting for open requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all requests finished"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing open connections"),
    }
    // Lines of requests still running after the grace period are not written.
    let _ = tokio::task::spawn_blocking(move || log.close()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into()
        }
    }

    fn with_info_logging(f: impl FnOnce()) {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn access_log_lines_are_written_soon_and_all_of_them_on_close() {
        let out = Captured::default();
        with_info_logging(|| {
            let log = AccessLog::start_to(Box::new(out.clone()));
            log.record(&hyper::Method::GET, "/v2/", 200, 0);
            let deadline = Instant::now() + Duration::from_secs(5);
            while out.text().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(out.text().ends_with(
                "  INFO openregistry::server: request method=GET path=\"/v2/\" status=200 ms=0\n"
            ));
            for k in 0..1000 {
                log.record(&hyper::Method::HEAD, &format!("/v2/a\"{k}"), 404, 3);
            }
            log.close();
            log.record(&hyper::Method::GET, "/after-close", 200, 0);
        });
        let text = out.text();
        assert_eq!(text.lines().count(), 1001);
        assert!(text.contains("method=HEAD path=\"/v2/a\\\"999\" status=404 ms=3\n"));
        assert!(!text.contains("after-close"));
        // The timestamp is tracing's: 2026-01-02T03:04:05.678901Z
        let stamp = text.split_whitespace().next().unwrap_or_default();
        assert!(stamp.len() == 27 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T');
    }

    #[test]
    fn lines_beyond_the_buffer_are_dropped_and_counted() {
        /// A writer that is stuck until the test lets it go.
        struct Stuck(Arc<(Mutex<bool>, Condvar)>, Captured);
        impl std::io::Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (go, cv) = &*self.0;
                let mut go = go.lock().unwrap_or_else(PoisonError::into_inner);
                while !*go {
                    go = cv.wait(go).unwrap_or_else(PoisonError::into_inner);
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Captured::default();
        with_info_logging(|| {
            let log = AccessLog::start_to(Box::new(Stuck(gate.clone(), out.clone())));
            log.record(&hyper::Method::GET, "/first", 200, 0);
            std::thread::sleep(LOG_GATHER * 4); // the log thread is now stuck writing it
            let long = "x".repeat(1000);
            let started = Instant::now();
            for _ in 0..3000 {
                log.record(&hyper::Method::GET, &long, 200, 0);
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "recording waited"
            );
            *gate.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
            gate.1.notify_all();
            log.close();
        });
        let text = out.text();
        assert!(
            text.contains("access log lines dropped"),
            "{}",
            text.get(..200).unwrap_or(&text)
        );
        let kept = text.lines().filter(|l| l.contains("xxxx")).count();
        assert!(kept > 500 && kept < 3000, "{kept} lines kept");
    }
}
