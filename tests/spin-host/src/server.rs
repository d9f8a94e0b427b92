//! The HTTP server: accepts connections (a task each), routes requests like Spin's HTTP
//! trigger, and runs each request in a fresh instance of the component (a task each), as
//! Spin does for WASIp2 components. Request bodies stream into the guest and response
//! bodies stream out with backpressure; nothing is buffered whole. One log line per
//! request goes to stderr when its response body is done.

use crate::allowed_hosts::AllowedHosts;
use crate::outbound::OutboundHooks;
use crate::routes::{self, RouteMatch};
use crate::spin_apis::{SpinShared, SpinView};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The `T` of every `Store<T>`; one per request.
pub struct Ctx {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    shared: Arc<SpinShared>,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl Ctx {
    pub fn spin(&mut self) -> SpinView<'_> {
        SpinView {
            shared: &self.shared,
            table: &mut self.table,
        }
    }
}

pub struct Server {
    pub pre: ProxyPre<Ctx>,
    pub component_id: Arc<str>,
    pub routes: Vec<routes::Route>,
    pub environment: Vec<(String, String)>,
    pub shared: Arc<SpinShared>,
    pub allowed_hosts: Arc<AllowedHosts>,
    pub local_addr: SocketAddr,
    pub max_body_bytes: Option<u64>,
    pub handler_timeout: Option<Duration>,
}

/// Accepts connections until the task is dropped.
pub async fn serve(server: Arc<Server>, listener: TcpListener) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("spin-test-host: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req, client).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                eprintln!("spin-test-host: connection from {client}: {e}");
            }
        });
    }
}

/// A response the host makes itself (404, 413, 500, ...).
type Refusal = (StatusCode, String);

impl Server {
    async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<LoggedBody> {
        let log = RequestLog {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            start: Instant::now(),
        };
        let (response, abort) = match self.dispatch(req, client).await {
            Ok(pair) => pair,
            Err((status, text)) => (plain(status, text), None),
        };
        let status = response.status().as_u16();
        response.map(|inner| LoggedBody {
            inner,
            log,
            status,
            bytes: 0,
            abort,
        })
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<(Response<HyperOutgoingBody>, Option<AbortHandle>), Refusal> {
        let path = req.uri().path().to_string();
        // Spin answers these itself, whatever the routes say.
        if let Some(well_known) = path.strip_prefix("/.well-known/spin/") {
            return match well_known {
                "health" => Ok((plain(StatusCode::OK, "OK".into()), None)),
                _ => Err((StatusCode::NOT_FOUND, String::new())),
            };
        }
        let Some(route) = routes::find(&self.routes, &path) else {
            return Err((StatusCode::NOT_FOUND, String::new()));
        };
        if let Some(max) = self.max_body_bytes {
            let declared = req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body exceeds the {max}-byte limit\n"),
                ));
            }
        }
        let req = prepare_request(req, &route, client, self.max_body_bytes)?;
        self.run_guest(req).await
    }

    /// Runs the request in a new instance. Returns once the guest has set the response
    /// (the guest task keeps running to stream the body) or has failed.
    async fn run_guest(
        &self,
        req: Request<RequestBody>,
    ) -> Result<(Response<HyperOutgoingBody>, Option<AbortHandle>), Refusal> {
        let internal = |what: &str, e: &dyn std::fmt::Debug| {
            eprintln!("spin-test-host: {what}: {e:?}");
            (StatusCode::INTERNAL_SERVER_ERROR, String::new())
        };
        let wasi = WasiCtx::builder()
            .stdout(wasmtime_wasi::cli::stderr())
            .stderr(wasmtime_wasi::cli::stderr())
            .envs(&self.environment)
            .build();
        let ctx = Ctx {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                allowed: self.allowed_hosts.clone(),
                component_id: self.component_id.clone(),
                self_addr: self.local_addr,
            },
            shared: self.shared.clone(),
        };
        let mut store = Store::new(self.pre.engine(), ctx);
        // The epoch ticks every 10 ms (see main); yielding then lets timeouts fire and other
        // requests run even while a guest computes.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));

        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| internal("cannot create the incoming request", &e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .map_err(|e| internal("cannot create the response outparam", &e))?;

        let pre = self.pre.clone();
        let timeout = self.handler_timeout;
        let task = tokio::spawn(async move {
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
            };
            match timeout {
                None => run.await,
                Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                    Err(wasmtime::format_err!(
                        "handler timed out after {} s (--handler-timeout-secs)",
                        limit.as_secs()
                    ))
                }),
            }
        });
        let abort = task.abort_handle();

        match rx.await {
            Ok(Ok(response)) => {
                let id = self.component_id.clone();
                tokio::spawn(async move {
                    match task.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => eprintln!(
                            "spin-test-host: component {id:?} failed after the response started (the body may be cut short): {e:?}"
                        ),
                        Err(e) if e.is_cancelled() => {}
                        Err(e) => eprintln!("spin-test-host: component task panicked: {e}"),
                    }
                });
                Ok((response, Some(abort)))
            }
            Ok(Err(code)) => Err(internal("guest set an error instead of a response", &code)),
            Err(_) => Err(match task.await {
                Ok(Ok(())) => internal(
                    "guest failed to produce a response prior to returning",
                    &self.component_id,
                ),
                Ok(Err(e)) => internal("guest invocation failed", &e),
                Err(e) => internal("guest task panicked", &e),
            }),
        }
    }
}

/// Gives the request an absolute `http://<Host>/...` URI and adds the `spin-*` headers, as
/// Spin's HTTP trigger does; caps the body when `--max-body-bytes` is set.
fn prepare_request(
    req: Request<Incoming>,
    route: &RouteMatch<'_>,
    client: SocketAddr,
    max_body_bytes: Option<u64>,
) -> Result<Request<RequestBody>, Refusal> {
    let (mut parts, body) = req.into_parts();
    let host = match parts.headers.get(HOST) {
        Some(h) => h.to_str().ok().map(str::to_owned),
        None => parts.uri.authority().map(|a| a.to_string()),
    };
    let Some(host) = host else {
        return Err((StatusCode::BAD_REQUEST, "no valid Host header\n".into()));
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let full_url = format!("http://{host}{path_and_query}");
    parts.uri = full_url
        .parse()
        .map_err(|_| (StatusCode::BAD_REQUEST, "invalid Host header\n".to_string()))?;

    let mut spin_headers = vec![
        ("spin-path-info".to_string(), route.path_info.clone()),
        ("spin-full-url".to_string(), full_url),
        (
            "spin-matched-route".to_string(),
            route.route.based().to_string(),
        ),
        ("spin-base-path".to_string(), "/".to_string()),
        (
            "spin-raw-component-route".to_string(),
            route.route.raw().to_string(),
        ),
        (
            "spin-component-route".to_string(),
            route.route.raw_or_prefix().to_string(),
        ),
        ("spin-client-addr".to_string(), client.to_string()),
    ];
    for (name, value) in &route.params {
        let name = format!(
            "spin-path-match-{}",
            name.to_ascii_lowercase().replace('_', "-")
        );
        spin_headers.push((name, value.clone()));
    }
    for (name, value) in spin_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            parts.headers.insert(name, value);
        }
    }
    let body = RequestBody {
        inner: body,
        seen: 0,
        limit: max_body_bytes,
    };
    Ok(Request::from_parts(parts, body))
}

fn plain(status: StatusCode, text: String) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(text))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// The incoming body, failing once more than `limit` bytes arrive (for bodies without a
/// `content-length`; a declared length over the limit is refused before the guest runs).
pub struct RequestBody {
    inner: Incoming,
    seen: u64,
    limit: Option<u64>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(HttpError::Hyper(e)))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            self.seen += data.len() as u64;
            if self.limit.is_some_and(|limit| self.seen > limit) {
                return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(self.seen)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct RequestLog {
    method: String,
    path: String,
    start: Instant,
}

/// The response body as sent: counts bytes, logs the request when dropped (finished or
/// abandoned) and then, like Spin, aborts the guest task if it is still running.
pub struct LoggedBody {
    inner: HyperOutgoingBody,
    log: RequestLog,
    status: u16,
    bytes: u64,
    abort: Option<AbortHandle>,
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            self.bytes += f.data_ref().map_or(0, |d| d.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(abort) = &self.abort {
            abort.abort();
        }
        eprintln!(
            "{} {} {} {:.1}ms {}B",
            self.log.method,
            self.log.path,
            self.status,
            self.log.start.elapsed().as_secs_f64() * 1000.0,
            self.bytes
        );
    }
}
