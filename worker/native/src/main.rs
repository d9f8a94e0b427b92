//! `openregistry`: the native host. `serve` runs the registry on embedded defaults (filesystem
//! blobs, SQLite metadata and sessions under one data directory); `migrate` applies the schema.

mod accounts;
mod bodies;
mod embedded;
mod fs_store;
mod http_client;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use openregistry::auth::AuthSettings;
use openregistry::neon::{NeonConfig, NeonSql};
use openregistry::ports::{BlobStore, Clock, HttpClient, Kv, Ports, Sql};
use openregistry::skynet::{SkynetConfig, SkynetStore};
use openregistry::{Config, Registry};
use openregistry_sqlite::{SqliteKv, SqliteSql};

use crate::embedded::{EmbeddedKv, EmbeddedSql, OsRandom, SystemClock};
use crate::fs_store::FsBlobStore;
use crate::http_client::HyperClient;

#[derive(Parser)]
#[command(name = "openregistry", version, about = "An OCI Distribution registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where metadata lives: the embedded SQLite by default, or Postgres over Neon's HTTP protocol.
#[derive(Args, Clone)]
struct DatabaseArgs {
    /// Where blobs, upload sessions and (without a database URL) metadata are kept.
    #[arg(
        long,
        global = true,
        env = "OPENREGISTRY_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: PathBuf,
    /// A postgres:// or postgresql:// URL (for example a Neon database's). Unset: embedded SQLite.
    #[arg(
        long,
        global = true,
        env = "OPENREGISTRY_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Override of the SQL-over-HTTP endpoint (default: Neon's, derived from the URL's host).
    #[arg(long, global = true, env = "OPENREGISTRY_DATABASE_HTTP_ENDPOINT")]
    database_http_endpoint: Option<String>,
    /// How long one SQL round trip may take before the request fails with 503.
    #[arg(
        long,
        env = "OPENREGISTRY_DATABASE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    database_timeout_ms: u64,
}

/// Where blob bytes live: the data directory by default, or a Skynet portal.
#[derive(Args, Clone)]
struct StorageArgs {
    /// Base URL of a Skynet portal; unset: blobs are files under the data directory.
    #[arg(long, env = "OPENREGISTRY_SKYNET_PORTAL")]
    skynet_portal: Option<String>,
    /// The portal account's API key (sent as Skynet-Api-Key).
    #[arg(long, env = "OPENREGISTRY_SKYNET_API_KEY", hide_env_values = true)]
    skynet_api_key: Option<String>,
    /// How long one request to the portal may take before the registry answers 503.
    #[arg(
        long,
        env = "OPENREGISTRY_SKYNET_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    skynet_timeout_ms: u64,
    /// Answer blob downloads with a redirect to the storage's own URL (Skynet) instead of
    /// streaming the bytes through the registry.
    #[arg(long, env = "OPENREGISTRY_BLOB_REDIRECT", default_value_t = false)]
    blob_redirect: bool,
}

/// Authentication: off (open mode, loopback only) unless enabled.
#[derive(Args, Clone)]
struct AuthArgs {
    /// Require tokens (Docker's token flow); users and access tokens are managed with
    /// `openregistry user` / `openregistry token`.
    #[arg(long, env = "OPENREGISTRY_AUTH", default_value_t = false)]
    auth: bool,
    /// The PASERK `k4.secret` key tokens are signed with; unset: generated on first start and kept
    /// in the data directory (`token-key.paserk`).
    #[arg(long, env = "OPENREGISTRY_TOKEN_KEY", hide_env_values = true)]
    token_key: Option<String>,
    /// The token service name (the `aud` of tokens, `service` in challenges).
    #[arg(long, env = "OPENREGISTRY_SERVICE", default_value = "openregistry")]
    service: String,
    /// The registry's public URL, for the token realm (default: from each request's Host).
    #[arg(long, env = "OPENREGISTRY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "OPENREGISTRY_TOKEN_TTL_SECONDS", default_value_t = 300)]
    token_ttl_seconds: u64,
    /// PASERK `k4.public` keys, comma-separated, whose tokens are accepted besides the token key's
    /// own (earlier signing keys, during a rotation; `openregistry token-key public` prints one).
    #[arg(long, env = "OPENREGISTRY_TOKEN_PUBLIC_KEYS")]
    token_public_keys: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "OPENREGISTRY_LISTEN", default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        auth: AuthArgs,
        /// Allow listening on a non-loopback address without authentication.
        #[arg(long, env = "OPENREGISTRY_OPEN", default_value_t = false)]
        open: bool,
    },
    /// Apply pending schema migrations to the configured database, then exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        action: accounts::UserAction,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Manage personal access tokens (the password for `docker login`).
    Token {
        #[command(subcommand)]
        action: accounts::TokenAction,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// The token signing key (the configured one, or the data directory's).
    TokenKey {
        #[command(subcommand)]
        action: accounts::TokenKeyAction,
        /// The PASERK `k4.secret` signing key; unset: the data directory's `token-key.paserk`.
        #[arg(
            long,
            global = true,
            env = "OPENREGISTRY_TOKEN_KEY",
            hide_env_values = true
        )]
        token_key: Option<String>,
        /// The data directory whose key is meant when none is configured.
        #[arg(
            long,
            global = true,
            env = "OPENREGISTRY_DATA_DIR",
            default_value = "./data"
        )]
        data_dir: PathBuf,
    },
}

/// The configured metadata database, migrated.
async fn open_metadata(
    args: &DatabaseArgs,
    http: Arc<dyn HttpClient>,
) -> Result<Arc<dyn Sql>, String> {
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let (sql, described): (Arc<dyn Sql>, String) = match &args.database_url {
        Some(url) => {
            let mut config = NeonConfig::new(url, args.database_http_endpoint.as_deref())
                .map_err(|e| format!("OPENREGISTRY_DATABASE_URL: {e}"))?;
            config.timeout = Duration::from_millis(args.database_timeout_ms);
            let described = format!("postgres over HTTP at {}", config.endpoint);
            (Arc::new(NeonSql::new(http, config)), described)
        }
        None => {
            let path = data_dir.join("registry.sqlite");
            let db = SqliteSql::open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            (
                Arc::new(EmbeddedSql(db)),
                format!("embedded SQLite at {}", path.display()),
            )
        }
    };
    let applied = openregistry::migrations::migrate(sql.as_ref(), SystemClock.now_unix_millis())
        .await
        .map_err(|e| format!("migrating the metadata database ({described}): {e}"))?;
    tracing::info!(database = %described, applied = ?applied, "metadata database ready");
    Ok(sql)
}

async fn serve(
    listen: SocketAddr,
    database: DatabaseArgs,
    storage: StorageArgs,
    auth: AuthArgs,
    open: bool,
) -> Result<(), String> {
    if !listen.ip().is_loopback() && !open && !auth.auth {
        return Err(format!(
            "refusing to listen on {listen} without authentication: anyone who can reach this \
             address could push and delete. Enable --auth (OPENREGISTRY_AUTH=true), listen on \
             127.0.0.1, or pass --open (OPENREGISTRY_OPEN=true) if that is really what you want."
        ));
    }
    let http: Arc<dyn HttpClient> = Arc::new(HyperClient::new());
    let metadata = open_metadata(&database, http.clone()).await?;
    let data_dir = database.data_dir;
    let kv_path = data_dir.join("sessions.sqlite");
    let kv_db =
        SqliteSql::open(&kv_path).map_err(|e| format!("cannot open {}: {e}", kv_path.display()))?;
    let kv = SqliteKv::new(kv_db).map_err(|e| format!("cannot open {}: {e}", kv_path.display()))?;
    let kv: Arc<dyn Kv> = Arc::new(EmbeddedKv(kv));
    let config = Config {
        redirect_blob_downloads: storage.blob_redirect,
        ..Config::default()
    };
    let blobs: Arc<dyn BlobStore> = match &storage.skynet_portal {
        Some(portal) => {
            let mut skynet = SkynetConfig::new(portal, storage.skynet_api_key.clone());
            skynet.timeout = Duration::from_millis(storage.skynet_timeout_ms);
            tracing::info!(portal = %skynet.portal, "blobs on Skynet");
            Arc::new(SkynetStore::new(http.clone(), kv.clone(), skynet))
        }
        None => {
            let blobs = FsBlobStore::open(&data_dir)
                .await
                .map_err(|e| format!("cannot prepare {}: {e}", data_dir.display()))?;
            match blobs.sweep_stale_uploads(config.upload_session_ttl).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed expired unfinished uploads"),
                Err(e) => tracing::warn!(error = %e, "could not sweep expired uploads"),
            }
            Arc::new(blobs)
        }
    };
    let ports = Ports {
        kv,
        sql: metadata,
        blobs,
        http,
        clock: Arc::new(SystemClock),
        random: Arc::new(OsRandom),
    };
    let mut registry = Registry::new(ports, config);
    if auth.auth {
        let key = accounts::token_key(auth.token_key.as_deref(), &data_dir)?;
        let mut settings = AuthSettings::new(&auth.service, key).map_err(|e| e.to_string())?;
        settings.public_url = auth.public_url.clone();
        settings.token_ttl = Duration::from_secs(auth.token_ttl_seconds);
        if let Some(list) = &auth.token_public_keys {
            settings
                .accept_public_keys(list)
                .map_err(|e| format!("OPENREGISTRY_TOKEN_PUBLIC_KEYS: {e}"))?;
        }
        registry = registry.with_auth(settings);
        tracing::info!(service = %auth.service, "authentication required (tokens at /token)");
    } else {
        tracing::warn!(
            "authentication is off: anyone who can reach the registry can push and delete"
        );
    }
    let registry = Arc::new(registry);
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
            database,
            storage,
            auth,
            open,
        } => serve(listen, database, storage, auth, open).await,
        Command::User { action, database } => {
            match open_metadata(&database, Arc::new(HyperClient::new())).await {
                Ok(sql) => accounts::user(action, sql.as_ref()).await,
                Err(e) => Err(e),
            }
        }
        Command::Token { action, database } => {
            match open_metadata(&database, Arc::new(HyperClient::new())).await {
                Ok(sql) => accounts::token(action, sql.as_ref()).await,
                Err(e) => Err(e),
            }
        }
        Command::TokenKey {
            action,
            token_key,
            data_dir,
        } => accounts::token_key_command(action, token_key.as_deref(), &data_dir),
        Command::Migrate { database } => open_metadata(&database, Arc::new(HyperClient::new()))
            .await
            .map(|_| ()),
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
