//! spin-test-host: runs one HTTP component of a Spin app (spin.toml, manifest version 2)
//! the way `spin up` does, without the Spin CLI, for tests in CI.
//!
//! It serves the WASIp2 proxy world (`wasi:http/incoming-handler@0.2.x` export; outbound
//! `wasi:http/outgoing-handler`) plus `fermyon:spin/key-value@2.0.0` and
//! `fermyon:spin/variables@2.0.0`, on wasmtime 48. This file owns the command line, engine
//! and linker setup, startup checks and shutdown; see the other modules for the rest.

mod allowed_hosts;
mod kv;
mod manifest;
mod outbound;
mod routes;
mod server;
mod spin_apis;

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

const USAGE: &str = "\
usage: spin-test-host --manifest <spin.toml> [options]

  --manifest PATH              the Spin app manifest (spin_manifest_version = 2)
  --component ID               the component to serve (default: the only one with HTTP routes)
  --listen ADDR                address to listen on (default 127.0.0.1:0, a free port)
  --wasm PATH                  use this .wasm instead of the component's `source`
  --kv-dir DIR                 keep the key-value stores in DIR across restarts (default: memory only)
  --kv-max-value-bytes N       key-value value size limit (default 1000000)
  --kv-max-key-bytes N         key-value key size limit (default 256)
  --max-body-bytes N           refuse larger request bodies with 413 (default: no limit)
  --handler-timeout-secs N     stop a handler running longer than N s (default: no limit)

Application variables come from SPIN_VARIABLE_<NAME> environment variables, as in Spin.
Prints `listening on http://ADDR` on stdout once ready; logs go to stderr.";

struct Args {
    manifest: PathBuf,
    component: Option<String>,
    listen: SocketAddr,
    wasm: Option<PathBuf>,
    kv_dir: Option<PathBuf>,
    kv_max_value_bytes: usize,
    kv_max_key_bytes: usize,
    max_body_bytes: Option<u64>,
    handler_timeout: Option<Duration>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let mut manifest = None;
    let mut parsed = Args {
        manifest: PathBuf::new(),
        component: None,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        wasm: None,
        kv_dir: None,
        kv_max_value_bytes: 1_000_000,
        kv_max_key_bytes: 256,
        max_body_bytes: None,
        handler_timeout: None,
    };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))?;
        let number = |what: &str| -> Result<u64> {
            value
                .parse()
                .with_context(|| format!("{what}: {value:?} is not a non-negative integer"))
        };
        match flag.as_str() {
            "--manifest" => manifest = Some(PathBuf::from(&value)),
            "--component" => parsed.component = Some(value.clone()),
            "--listen" => {
                parsed.listen = value
                    .parse()
                    .with_context(|| format!("--listen: {value:?} is not an IP:PORT address"))?
            }
            "--wasm" => parsed.wasm = Some(PathBuf::from(&value)),
            "--kv-dir" => parsed.kv_dir = Some(PathBuf::from(&value)),
            "--kv-max-value-bytes" => {
                parsed.kv_max_value_bytes = usize::try_from(number(&flag)?)?;
            }
            "--kv-max-key-bytes" => parsed.kv_max_key_bytes = usize::try_from(number(&flag)?)?,
            "--max-body-bytes" => parsed.max_body_bytes = Some(number(&flag)?),
            "--handler-timeout-secs" => {
                parsed.handler_timeout = Some(Duration::from_secs(number(&flag)?));
            }
            _ => bail!("unknown option {flag:?}\n\n{USAGE}"),
        }
    }
    parsed.manifest = manifest.with_context(|| format!("--manifest is required\n\n{USAGE}"))?;
    Ok(parsed)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("spin-test-host: error: {e:#}");
        std::process::exit(1);
    }
}

#[tokio::main]
async fn run() -> Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let env = |name: &str| std::env::var(name).ok();
    let mut component = manifest::load(&args.manifest, args.component.as_deref(), &env)?;
    if let Some(wasm) = &args.wasm {
        component.source = wasm.clone();
    }

    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let compile_start = Instant::now();
    let wasm = Component::from_file(&engine, &component.source)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot load component {}", component.source.display()))?;
    eprintln!(
        "spin-test-host: compiled {} in {} ms",
        component.source.display(),
        compile_start.elapsed().as_millis()
    );

    let mut linker = Linker::<server::Ctx>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    spin_apis::add_to_linker(&mut linker, server::Ctx::spin)?;
    let instance_pre = linker
        .instantiate_pre(&wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "component {:?} needs an import this host does not provide",
                component.id
            )
        })?;
    let pre = ProxyPre::new(instance_pre)
        .map_err(anyhow::Error::from)
        .context("the component does not export wasi:http/incoming-handler@0.2.x")?;

    // Epoch ticks drive the guests' cooperative yields (see server::run_guest).
    let ticker = engine.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(10));
        ticker.increment_epoch();
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local_addr = listener.local_addr()?;

    let shared = Arc::new(spin_apis::SpinShared::new(
        &component.id,
        &component.key_value_stores,
        std::mem::take(&mut component.variables),
        &spin_apis::KvOptions {
            dir: args.kv_dir.as_deref(),
            max_key_bytes: args.kv_max_key_bytes,
            max_value_bytes: args.kv_max_value_bytes,
        },
    )?);
    let server = Arc::new(server::Server {
        pre,
        component_id: Arc::from(component.id.as_str()),
        routes: component.routes,
        environment: component.environment,
        shared,
        allowed_hosts: Arc::new(component.allowed_hosts),
        local_addr,
        max_body_bytes: args.max_body_bytes,
        handler_timeout: args.handler_timeout,
    });

    println!("listening on http://{local_addr}");
    std::io::stdout().flush()?;

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = server::serve(server, listener) => {}
        _ = sigterm.recv() => eprintln!("spin-test-host: SIGTERM, stopping"),
        _ = tokio::signal::ctrl_c() => eprintln!("spin-test-host: SIGINT, stopping"),
    }
    Ok(())
}
