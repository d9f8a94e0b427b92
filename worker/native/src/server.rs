//! The HTTP server: hyper connections on tokio, each request converted to the core's types and
//! back with streaming bodies, an access log line per request, and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use openregistry::body::Body;
use openregistry::Registry;
use tokio::net::TcpListener;

use crate::bodies::{from_incoming, to_hyper, HyperBody};

/// hyper's request as the core's.
fn into_core_request(request: Request<Incoming>) -> Request<Body> {
    request.map(from_incoming)
}

/// The core's response as hyper's.
fn into_hyper_response(response: openregistry::http::Response<Body>) -> Response<HyperBody> {
    response.map(to_hyper)
}

async fn serve_one(
    registry: Arc<Registry>,
    request: Request<Incoming>,
) -> Result<Response<HyperBody>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = registry.handle(into_core_request(request)).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(into_hyper_response(response))
}

/// Serves until `shutdown` resolves, then lets open requests finish (up to `grace`).
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
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
                let service = service_fn(move |request| serve_one(registry.clone(), request));
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
    Ok(())
}
