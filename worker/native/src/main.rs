//! `openregistry`: the native host. `serve` runs the registry on embedded defaults (filesystem
//! blobs, SQLite metadata and sessions under one data directory); `migrate` applies the schema.

mod embedded;
mod fs_store;
mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use openregistry::ports::{Clock, NoHttpClient, Ports};
use openregistry::{Config, Registry};
use openregistry_sqlite::{SqliteKv, SqliteSql};

use crate::embedded::{EmbeddedKv, EmbeddedSql, OsRandom, SystemClock};
use crate::fs_store::FsBlobStore;

#[derive(Parser)]
#[command(name = "openregistry", version, about = "An OCI Distribution registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "OPENREGISTRY_LISTEN", default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        /// Where blobs, metadata and upload sessions are kept.
        #[arg(long, env = "OPENREGISTRY_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Allow listening on a non-loopback address although nobody is authenticated yet.
        #[arg(long, env = "OPENREGISTRY_OPEN", default_value_t = false)]
        open: bool,
    },
    /// Apply pending schema migrations to the configured database, then exit.
    Migrate {
        #[arg(long, env = "OPENREGISTRY_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
}

/// The embedded metadata database in `data_dir`, migrated.
async fn open_metadata(data_dir: &Path) -> Result<SqliteSql, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let path = data_dir.join("registry.sqlite");
    let db = SqliteSql::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let applied =
        openregistry::migrations::migrate(&EmbeddedSql(db.clone()), SystemClock.now_unix_millis())
            .await
            .map_err(|e| format!("migrating {}: {e}", path.display()))?;
    for name in applied {
        tracing::info!(migration = name, "applied");
    }
    Ok(db)
}

async fn serve(listen: SocketAddr, data_dir: PathBuf, open: bool) -> Result<(), String> {
    if !listen.ip().is_loopback() && !open {
        return Err(format!(
            "refusing to listen on {listen}: authentication is not implemented yet, so anyone who \
             can reach this address could push and delete. Listen on 127.0.0.1, or pass --open \
             (OPENREGISTRY_OPEN=true) if that is really what you want."
        ));
    }
    let metadata = open_metadata(&data_dir).await?;
    let kv_path = data_dir.join("sessions.sqlite");
    let kv_db =
        SqliteSql::open(&kv_path).map_err(|e| format!("cannot open {}: {e}", kv_path.display()))?;
    let kv = SqliteKv::new(kv_db).map_err(|e| format!("cannot open {}: {e}", kv_path.display()))?;
    let blobs = FsBlobStore::open(&data_dir)
        .await
        .map_err(|e| format!("cannot prepare {}: {e}", data_dir.display()))?;
    let config = Config::default();
    match blobs.sweep_stale_uploads(config.upload_session_ttl).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed expired unfinished uploads"),
        Err(e) => tracing::warn!(error = %e, "could not sweep expired uploads"),
    }
    let ports = Ports {
        kv: Arc::new(EmbeddedKv(kv)),
        sql: Arc::new(EmbeddedSql(metadata)),
        blobs: Arc::new(blobs),
        http: Arc::new(NoHttpClient),
        clock: Arc::new(SystemClock),
        random: Arc::new(OsRandom),
    };
    let registry = Arc::new(Registry::new(ports, config));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %local, data_dir = %data_dir.display(), "openregistry listening");
    server::serve(
        listener,
        registry,
        shutdown_signal(),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            listen,
            data_dir,
            open,
        } => serve(listen, data_dir, open).await,
        Command::Migrate { data_dir } => open_metadata(&data_dir).await.map(|_| ()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("openregistry: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
