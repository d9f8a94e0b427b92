//! OpenRegistry as a Cloudflare Worker: the `#[event(fetch)]` entry converts the runtime's
//! `Request` into the core's `http::Request<Body>` (body streamed, read in 1 MiB pieces), builds
//! the ports from the bindings (KV namespace → `Kv`, `fetch()` → `HttpClient`, Postgres over
//! Neon's HTTP protocol → `Sql`, the R2 binding (or S3 over `fetch()`, or Skynet) → `BlobStore`),
//! and converts the answer back, streaming.
//!
//! Stateless: nothing is kept between requests but caches (`OPENREGISTRY_EDGE_CACHE`): the read
//! path's metadata in the isolate's memory and the Cache API (see [`cache`]), and, with
//! authentication off, whole immutable responses in the Cache API; and, per isolate, the settings
//! and token keys as first read. Configuration: see [`config`]. The `#[event(scheduled)]` entry
//! (a Cron Trigger, `[triggers]` in wrangler.toml) sweeps the multipart uploads of expired upload
//! sessions.

// The core's `Ports` hold `Arc`s; on wasm32 there is one thread and nothing needs to be `Send`.
#![allow(clippy::arc_with_non_send_sync)]

mod cache;
mod config;
mod fetch;
mod kv;
mod r2;
mod streams;

use std::sync::Arc;

use http::{header, Method, StatusCode};
use js_sys::{Promise, Reflect};
use openregistry::auth::AuthSettings;
use openregistry::body::Body;
use openregistry::ports::{Clock, Kv, Random};
use openregistry::Registry;
use openregistry_backends::tail::Tails;
use openregistry_host::{misconfigured, EdgeCache, Embedded, HostPorts, Settings};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::{event, Context, Env, ScheduleContext, ScheduledEvent};

use crate::config::KV_BINDING;
use crate::fetch::{declared_len, http_headers, js_headers, FetchClient};
use crate::kv::WorkersKv;
use crate::r2::{R2Store, R2_BINDING};
use crate::streams::{js_error, to_js, RequestBody};

/// `Date.now()`: `SystemTime::now` panics on wasm32-unknown-unknown.
struct JsClock;

impl Clock for JsClock {
    fn now_unix_millis(&self) -> u64 {
        js_sys::Date::now() as u64
    }
}

/// `crypto.getRandomValues`, 64 KiB at a time (its limit per call).
struct JsRandom;

impl Random for JsRandom {
    fn fill(&self, buffer: &mut [u8]) {
        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let crypto = global.crypto().ok();
        for piece in buffer.chunks_mut(65_536) {
            let filled = crypto
                .as_ref()
                .is_some_and(|c| c.get_random_values_with_u8_array(piece).is_ok());
            // workerd always has Web Crypto; without it there is no safe way to go on.
            assert!(filled, "crypto.getRandomValues is unavailable");
        }
    }
}

/// Logs the WASM linear memory's high-water mark whenever it grows (it never shrinks; Workers
/// allow 128 MB per isolate, JS heap included), e.g. `wrangler tail` shows it.
fn note_memory_growth() {
    thread_local! {
        static HIGH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    #[cfg(target_arch = "wasm32")]
    let bytes = core::arch::wasm32::memory_size::<0>() * 65_536;
    #[cfg(not(target_arch = "wasm32"))]
    let bytes = 0;
    HIGH.with(|high| {
        if bytes > high.get() {
            high.set(bytes);
            worker::console_log!("openregistry: WASM memory grew to {} MiB", bytes >> 20);
        }
    });
}

thread_local! {
    /// The token keys as this isolate first parsed them (its settings never change, see `config`).
    static AUTH: std::cell::OnceCell<Result<Option<AuthSettings>, String>> =
        const { std::cell::OnceCell::new() };
}

fn isolate_auth(settings: &Settings) -> Result<Option<AuthSettings>, String> {
    AUTH.with(|auth| auth.get_or_init(|| settings.auth_settings(None)).clone())
}

fn registry(settings: &Settings, env: &Env) -> Result<Registry, String> {
    let store = env
        .kv(KV_BINDING)
        .map_err(|e| format!("the KV namespace binding {KV_BINDING} is missing: {e}"))?;
    let kv: Arc<dyn Kv> = Arc::new(WorkersKv::new(store, settings.test_kv_lag));
    let cache = cache::edge_cache(settings, kv.clone());
    let ports = HostPorts {
        kv: kv.clone(),
        http: Arc::new(FetchClient),
        clock: Arc::new(JsClock),
        random: Arc::new(JsRandom),
    };
    // Blobs in the R2 binding when it is bound (the S3 settings then only sign redirects to the
    // same bucket); without it, in the store the settings name (S3 over fetch(), or Skynet).
    let mut embedded = Embedded::default();
    // Asked with `in` first: a missing binding makes `env.bucket` build a JS error (a stack
    // trace) on every request.
    let bound = Reflect::has(env.as_ref(), &R2_BINDING.into()).unwrap_or(false);
    if let Some(bucket) = bound.then(|| env.bucket(R2_BINDING).ok()).flatten() {
        let presigner = settings.s3_store(ports.http.clone(), kv.clone(), ports.clock.clone())?;
        let tails = Tails::new(kv, "r2-tail", settings.config().upload_session_ttl);
        embedded.blobs = Some(Arc::new(R2Store::new(bucket, tails, presigner)));
    }
    // Ed25519 in WASM is a large part of a warm request: a token seen again in this isolate is
    // checked against the clock only.
    embedded.auth = isolate_auth(settings)?;
    let registry = openregistry_host::build(settings, ports, embedded)?
        .with_verified_tokens(cache::isolate_memory());
    Ok(match cache {
        Some(cache) => {
            let policy = settings.cache_policy();
            registry.with_cache(cache, policy)
        }
        None => registry,
    })
}

/// `/path?query` of an absolute URL.
fn path_and_query(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find('/')
        .and_then(|i| after_scheme.get(i..))
        .unwrap_or("/")
}

/// The runtime's request as the core's, body streamed (and a handle to drain what is left of it).
fn core_request(
    request: &web_sys::Request,
) -> Result<(http::Request<Body>, Option<RequestBody>), String> {
    let method = Method::from_bytes(request.method().as_bytes()).map_err(|e| e.to_string())?;
    let url = request.url();
    let headers = http_headers(&request.headers());
    let bodiless = method == Method::GET || method == Method::HEAD;
    let mut rest = None;
    let body = if bodiless || declared_len(&headers) == Some(0) {
        Body::Empty
    } else {
        match request.body() {
            Some(stream) => {
                let (handle, chunks) = RequestBody::new(&stream)?;
                rest = Some(handle);
                Body::Stream(chunks)
            }
            None => Body::Empty,
        }
    };
    let mut core = http::Request::new(body);
    *core.method_mut() = method;
    *core.uri_mut() = path_and_query(&url)
        .parse()
        .map_err(|e| format!("{url}: {e}"))?;
    // Cloudflare sets CF-Connecting-IP on every request it forwards (a client cannot override it).
    if let Some(ip) = headers
        .get("cf-connecting-ip")
        .and_then(|v| v.to_str().ok())
    {
        core.extensions_mut()
            .insert(openregistry::ports::ClientAddress(ip.to_owned()));
    }
    *core.headers_mut() = headers;
    Ok((core, rest))
}

/// The core's response as the runtime's, body streamed (with its `Content-Length` kept).
fn js_response(response: http::Response<Body>, is_head: bool) -> Result<web_sys::Response, String> {
    let (parts, body) = response.into_parts();
    let len = declared_len(&parts.headers);
    // Statuses that may not carry a body get none; HEAD answers keep their Content-Length header.
    let no_body = is_head
        || matches!(
            parts.status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        );
    let body = if no_body {
        None
    } else {
        to_js(body, len, None)
    };
    // With a body the runtime sets Content-Length itself (from the bytes or the FixedLengthStream);
    // without one (HEAD, empty answers) the core's header is what the client must see.
    let skip: &[http::HeaderName] = if body.is_some() {
        &[header::CONTENT_LENGTH]
    } else {
        &[]
    };
    let headers = js_headers(&parts.headers, skip)?;
    let init = web_sys::ResponseInit::new();
    init.set_status(parts.status.as_u16());
    init.set_headers(headers.as_ref());
    // `new Response(body, init)`: the body is a Uint8Array or a ReadableStream; the binding's
    // parameter type does not matter to the runtime.
    let body = body.map(|b| b.unchecked_into::<web_sys::ReadableStream>());
    web_sys::Response::new_with_opt_readable_stream_and_init(body.as_ref(), &init)
        .map_err(|e| js_error(&e))
}

// ---------------------------------------------------------------------------------------------
// Cache API

/// `GET` of a blob or a manifest by digest: the answers the core marks immutable.
fn by_digest(path: &str) -> bool {
    let Some((head, last)) = path.rsplit_once('/') else {
        return false;
    };
    (head.ends_with("/blobs") || head.ends_with("/manifests"))
        && head.starts_with("/v2/")
        && last.contains(':')
}

async fn cached(cache: &web_sys::Cache, url: &str) -> Option<web_sys::Response> {
    let found = JsFuture::from(cache.match_with_str(url)).await.ok()?;
    found.dyn_into::<web_sys::Response>().ok()
}

/// Runs a cache promise after the response went out, ignoring its outcome.
fn in_background(ctx: &Context, promise: Result<Promise, JsValue>) {
    if let Ok(promise) = promise {
        ctx.wait_until(async move {
            let _ = JsFuture::from(promise).await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Entry

/// The Cron Trigger: aborts the multipart uploads older than the upload lifetime in the S3 bucket
/// the settings name (their sessions have expired). Uploads a client comes back to are discarded
/// by that request already; this removes the ones nobody returns to. The R2 binding cannot list
/// multipart uploads: with S3 keys for the same bucket it is swept through R2's S3 API, without
/// them by the bucket's own lifecycle rule (R2 aborts incomplete multipart uploads after 7 days
/// unless configured otherwise).
///
/// Then, unless `OPENREGISTRY_GC_SCHEDULE=false`, it collects garbage (`openregistry::gc`) and logs
/// the report (`wrangler tail`; Workers Logs keep it).
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let settings = match config::from_env(&env) {
        Ok(settings) => settings,
        Err(message) => {
            worker::console_error!("openregistry: scheduled run not started: {message}");
            return;
        }
    };
    match sweep_expired_uploads(&settings, &env).await {
        Ok(Some(aborted)) => {
            worker::console_log!("openregistry: aborted expired multipart uploads: {aborted}")
        }
        Ok(None) => worker::console_log!("openregistry: no S3 bucket configured to sweep"),
        Err(message) => worker::console_error!("openregistry: sweep failed: {message}"),
    }
    match collect_garbage(&settings, &env).await {
        Ok(Some(report)) => worker::console_log!("{{\"openregistry\":\"gc\",\"report\":{report}}}"),
        Ok(None) => {}
        Err(message) => {
            worker::console_error!("openregistry: garbage collection failed: {message}")
        }
    }
}

/// The scheduled garbage collection run, its report as JSON; `None` when switched off.
async fn collect_garbage(settings: &Settings, env: &Env) -> Result<Option<String>, String> {
    if !settings.gc_schedule {
        return Ok(None);
    }
    let report = registry(settings, env)?
        .collect_garbage(false)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::to_string(&report)
        .map(Some)
        .map_err(|e| e.to_string())
}

async fn sweep_expired_uploads(settings: &Settings, env: &Env) -> Result<Option<usize>, String> {
    let store = env
        .kv(KV_BINDING)
        .map_err(|e| format!("the KV namespace binding {KV_BINDING} is missing: {e}"))?;
    let kv: Arc<dyn Kv> = Arc::new(WorkersKv::new(store, false));
    let Some(s3) = settings.s3_store(Arc::new(FetchClient), kv.clone(), Arc::new(JsClock))? else {
        return Ok(None);
    };
    let ttl = settings.config().upload_session_ttl;
    openregistry_host::sweep_expired_uploads(&s3, kv.as_ref(), &JsClock, ttl)
        .await
        .map(Some)
}

#[event(fetch)]
async fn fetch(
    request: web_sys::Request,
    env: Env,
    ctx: Context,
) -> worker::Result<web_sys::Response> {
    let is_head = request.method() == "HEAD";
    let started = js_sys::Date::now();
    note_memory_growth();
    let served = serve(&request, &env, &ctx).await;
    note_memory_growth();
    let response = match served {
        Ok((response, log)) => {
            if let Some(response_bytes) = log {
                log_request(&request, &response, response_bytes, started);
            }
            return Ok(response);
        }
        Err(message) => {
            worker::console_error!("openregistry: {message}");
            misconfigured(message)
        }
    };
    js_response(response, is_head).map_err(worker::Error::from)
}

/// The Worker's metrics: one JSON line per request (`OPENREGISTRY_REQUEST_LOG`), which Workers
/// Logs index by field and Logpush ships anywhere: route kind (never the repository), method,
/// status, milliseconds, declared body bytes. Structured logs rather than Workers Analytics
/// Engine: they need no binding or account set-up, show in `wrangler tail`, and are what
/// Miniflare lets the tests read; the native host's `/metrics` counts the same things.
fn log_request(
    request: &web_sys::Request,
    response: &web_sys::Response,
    response_bytes: Option<u64>,
    started: f64,
) {
    let url = request.url();
    let path = path_and_query(&url).split('?').next().unwrap_or("/");
    let request_bytes = request
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok());
    let line = serde_json::json!({
        "openregistry": "request",
        "route": openregistry::route_name(path),
        "method": request.method(),
        "status": response.status(),
        "ms": (js_sys::Date::now() - started).max(0.0).round() as u64,
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
    });
    worker::console_log!("{line}");
}

/// One request, and (when requests are logged) its response body's declared length; `Err` is a
/// problem of the deployment (configuration, bindings), answered 503.
async fn serve(
    request: &web_sys::Request,
    env: &Env,
    ctx: &Context,
) -> Result<(web_sys::Response, Option<Option<u64>>), String> {
    let settings = config::from_env(env)?;
    let (response, len) = serve_with(request, env, ctx, &settings).await?;
    Ok((response, settings.request_log.then_some(len)))
}

/// The response, and its body's declared length (the runtime keeps `Content-Length` to itself).
async fn serve_with(
    request: &web_sys::Request,
    env: &Env,
    ctx: &Context,
    settings: &Settings,
) -> Result<(web_sys::Response, Option<u64>), String> {
    let registry = registry(settings, env)?;
    let is_head = request.method() == "HEAD";
    let url = request.url();
    let path = path_and_query(&url)
        .split('?')
        .next()
        .unwrap_or("/")
        .to_owned();

    // With authentication on, whether a caller may read a blob is the core's decision, made per
    // request: a response cache in front of it would hand private content to anyone. So whole
    // responses are kept only for open registries; with authentication on, the core's read path
    // cache (`cache`) holds the metadata behind its access check.
    let cache = if settings.edge_cache == EdgeCache::Shared
        && settings.auth.is_none()
        && by_digest(&path)
    {
        cache::default_cache()
    } else {
        None
    };
    let has_range = request.headers().has("range").unwrap_or(false);
    let method = request.method();
    if let Some(cache) = cache.as_ref().filter(|_| method == "GET" && !has_range) {
        if let Some(hit) = cached(cache, &url).await {
            let len = hit
                .headers()
                .get("content-length")
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok());
            return Ok((hit, len));
        }
    }

    let (core, body) = core_request(request)?;
    let (response, follow_up) = registry.handle_deferred(core).await;
    if let Some(body) = body {
        body.drain().await;
    }
    // The request's events (for caches, webhooks, GC) are delivered after the response.
    if !follow_up.is_empty() {
        ctx.wait_until(follow_up.run());
    }

    let status = response.status();
    let len = declared_len(response.headers());
    let immutable = response
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("immutable"));
    let out = js_response(response, is_head)?;
    if let Some(cache) = &cache {
        if method == "GET"
            && !has_range
            && status == StatusCode::OK
            && immutable
            && len.is_some_and(|l| l <= settings.edge_cache_max_bytes)
        {
            // `clone()` tees the body; bounded by the size limit above, so memory stays bounded.
            if let Ok(copy) = out.clone() {
                in_background(ctx, Ok(cache.put_with_str(&url, &copy)));
            }
        } else if method == "DELETE" && status == StatusCode::ACCEPTED {
            // The content is gone from this repository: forget this location's cached copy.
            in_background(ctx, Ok(cache.delete_with_str(&url)));
        }
    }
    Ok((out, len))
}
