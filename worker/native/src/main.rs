//! `openregistry`: the native host. `serve` runs the registry on embedded defaults (filesystem
//! blobs, SQLite metadata and sessions under one data directory); `migrate` applies the schema;
//! `gc` collects garbage once.

mod accounts;
mod bodies;
mod embedded;
mod fs_store;
mod http_client;
mod metrics;
mod orgs_cli;
mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use openregistry::ports::{Clock, HttpClient, Kv, Sql};
use openregistry_host::{Embedded, Host, HostPorts, Setting, SettingSource, Settings, SETTINGS};
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

/// Every native setting of the one settings table (`openregistry_host::SETTINGS`) as a flag that
/// also reads its environment variable: `--data-dir` / `OPENREGISTRY_DATA_DIR`. Defaults and
/// checks are the table's reader's (`Settings::read`), the same as on the edge hosts.
#[derive(Clone, Debug, Default)]
struct SettingFlags(BTreeMap<&'static str, String>);

fn native_settings() -> impl Iterator<Item = &'static Setting> {
    SETTINGS.iter().filter(|s| s.hosts.contains(&Host::Native))
}

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for setting in native_settings() {
            if let Ok(Some(value)) = matches.try_get_one::<String>(setting.name) {
                self.0.insert(setting.name, value.clone());
            }
        }
        Ok(())
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(mut command: clap::Command) -> clap::Command {
        for setting in native_settings() {
            let mut arg = clap::Arg::new(setting.name)
                .long(setting.flag())
                .env(setting.name)
                .global(true)
                .hide_env_values(setting.secret)
                .help(format!(
                    "{} [default: {}]",
                    setting.meaning, setting.default
                ));
            if setting.is_switch() {
                // `--auth` alone means true; `--auth=false` and the variable's text also work.
                arg = arg
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_name("BOOL");
            }
            command = command.arg(arg);
        }
        command
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl SettingSource for SettingFlags {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    fn spelled(&self, name: &str) -> String {
        let flag = native_settings()
            .find(|s| s.name == name)
            .map(|s| format!(" (--{})", s.flag()))
            .unwrap_or_default();
        format!("{name}{flag}")
    }

    fn how_to_set_secret(&self, name: &str) -> String {
        format!("set the environment variable {name}")
    }
}

impl SettingFlags {
    fn settings(&self) -> Result<Settings, String> {
        Settings::read(self, Host::Native)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// Check that the registry on this machine answers (`GET /v2/` gives 200, or 401 with auth
    /// on): exit status 0 if it does, 1 if not. For container health checks.
    Health {
        /// The registry's base URL; default: the listen address's.
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// Collect garbage once (what nothing references, past the grace window; see
    /// OPENREGISTRY_GC_GRACE_SECONDS and OPENREGISTRY_GC_KEEP_UNTAGGED), print the report as JSON,
    /// then exit. Safe while the registry serves pushes and pulls.
    Gc {
        /// Report what would be collected first; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// Apply pending schema migrations to the configured database, then exit.
    Migrate {
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        action: accounts::UserAction,
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// Manage personal access tokens (the password for `docker login`).
    Token {
        #[command(subcommand)]
        action: accounts::TokenAction,
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// Manage organizations: create, delete, list, members, custom roles, the audit log.
    Org {
        #[command(subcommand)]
        action: orgs_cli::OrgAction,
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// Manage an organization's teams.
    Team {
        #[command(subcommand)]
        action: orgs_cli::TeamAction,
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// Manage an organization's robot accounts (`<org>+<name>`, for CI).
    Robot {
        #[command(subcommand)]
        action: orgs_cli::RobotAction,
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// Manage an organization's grants: (principal, resource, actions).
    Grant {
        #[command(subcommand)]
        action: orgs_cli::GrantAction,
        #[command(flatten)]
        settings: SettingFlags,
    },
    /// The token signing key (the configured one, or the data directory's).
    TokenKey {
        #[command(subcommand)]
        action: accounts::TokenKeyAction,
        #[command(flatten)]
        settings: SettingFlags,
    },
}

/// The configured metadata database, migrated: Postgres over HTTP when a URL is set, else the
/// embedded SQLite in the data directory.
async fn open_metadata(
    settings: &Settings,
    http: Arc<dyn HttpClient>,
) -> Result<Arc<dyn Sql>, String> {
    let data_dir = Path::new(&settings.data_dir);
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let (sql, described): (Arc<dyn Sql>, String) = match settings.remote_sql(http)? {
        Some(sql) => (sql, settings.describe_database().unwrap_or_default()),
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

/// The registry the settings describe, over this machine's ports (migrated metadata, sessions in
/// the data directory, the configured or embedded store), and the S3 store to sweep, if any.
async fn open_registry(
    settings: &Settings,
    metrics: Option<Arc<metrics::Metrics>>,
) -> Result<
    (
        openregistry::Registry,
        Arc<dyn Kv>,
        Option<openregistry_backends::S3Store>,
    ),
    String,
> {
    let http: Arc<dyn HttpClient> = Arc::new(HyperClient::new());
    let metadata = open_metadata(settings, http.clone()).await?;
    let data_dir = PathBuf::from(&settings.data_dir);
    let kv_path = data_dir.join("sessions.sqlite");
    let kv_db =
        SqliteSql::open(&kv_path).map_err(|e| format!("cannot open {}: {e}", kv_path.display()))?;
    let kv = SqliteKv::new(kv_db).map_err(|e| format!("cannot open {}: {e}", kv_path.display()))?;
    let kv: Arc<dyn Kv> = Arc::new(EmbeddedKv(kv));
    let mut embedded = Embedded {
        sql: Some(metadata),
        ..Embedded::default()
    };
    let mut s3 = None;
    if let Some(storage) = settings.describe_storage() {
        tracing::info!(storage = %storage, "blob storage");
        s3 = settings.s3_store(http.clone(), kv.clone(), Arc::new(SystemClock))?;
    } else {
        let blobs = FsBlobStore::open(&data_dir)
            .await
            .map_err(|e| format!("cannot prepare {}: {e}", data_dir.display()))?;
        match blobs
            .sweep_stale_uploads(settings.config().upload_session_ttl)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed expired unfinished uploads"),
            Err(e) => tracing::warn!(error = %e, "could not sweep expired uploads"),
        }
        embedded.blobs = Some(Arc::new(blobs));
    }
    if let Some(auth) = &settings.auth {
        if auth.token_key.is_none() {
            embedded.token_key = Some(accounts::token_key(None, &data_dir)?);
        }
    }
    let ports = HostPorts {
        kv: kv.clone(),
        http,
        clock: Arc::new(SystemClock),
        random: Arc::new(OsRandom),
    };
    let mut registry = openregistry_host::build(settings, ports, embedded)?;
    if settings.cache_bytes > 0 {
        let policy = settings.cache_policy();
        let cache = Arc::new(openregistry_host::cache::MemoryLru::new(
            settings.cache_bytes,
            Arc::new(SystemClock),
        ));
        registry = registry.with_cache(cache, policy);
        tracing::info!(
            bytes = settings.cache_bytes,
            tag_seconds = settings.tag_cache.as_secs(),
            "read path cache on"
        );
    }
    if let Some(metrics) = metrics {
        registry = registry.subscribe(metrics);
    }
    Ok((registry, kv, s3))
}

/// The host's schedule, hourly (or every upload lifetime, if shorter), from the start: expired
/// uploads' S3 multipart uploads are aborted; from the first hour on, garbage is collected
/// (`OPENREGISTRY_GC_SCHEDULE`).
fn spawn_schedule(
    registry: Arc<openregistry::Registry>,
    settings: &Settings,
    sessions: Arc<dyn Kv>,
    s3: Option<openregistry_backends::S3Store>,
    metrics: Arc<metrics::Metrics>,
) {
    let ttl = settings.config().upload_session_ttl;
    let gc = settings.gc_schedule;
    let pause = ttl.clamp(Duration::from_secs(1), Duration::from_secs(3600));
    tokio::spawn(async move {
        let mut last_gc = tokio::time::Instant::now();
        loop {
            if let Some(s3) = &s3 {
                let swept = openregistry_host::sweep_expired_uploads(
                    s3,
                    sessions.as_ref(),
                    &SystemClock,
                    ttl,
                );
                match swept.await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(aborted = n, "aborted expired multipart uploads"),
                    Err(e) => tracing::warn!(error = %e, "could not sweep expired uploads"),
                }
            }
            if gc && last_gc.elapsed() >= Duration::from_secs(3600) {
                last_gc = tokio::time::Instant::now();
                match registry.collect_garbage(false).await {
                    Ok(_) => {}
                    Err(e) => {
                        metrics.record_gc_failure();
                        tracing::warn!(error = %e, "garbage collection failed")
                    }
                }
            }
            tokio::time::sleep(pause).await;
        }
    });
}

/// `openregistry gc`: one garbage collection run against the configured database and store; the
/// report on standard output as JSON.
async fn gc(settings: Settings, dry_run: bool) -> Result<(), String> {
    let (registry, _, _) = open_registry(&settings, None).await?;
    let report = registry
        .collect_garbage(dry_run)
        .await
        .map_err(|e| format!("garbage collection failed: {e}"))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

async fn serve(settings: Settings) -> Result<(), String> {
    settings.refuse_unprotected_listen()?;
    let data_dir = PathBuf::from(&settings.data_dir);
    let metrics = Arc::new(metrics::Metrics::default());
    let (registry, kv, s3) = open_registry(&settings, Some(metrics.clone())).await?;
    if let Some(auth) = &settings.auth {
        tracing::info!(service = %auth.service, "authentication required (tokens at /token)");
    } else {
        tracing::warn!(
            "authentication is off: anyone who can reach the registry can push and delete"
        );
    }
    let registry = Arc::new(registry);
    spawn_schedule(registry.clone(), &settings, kv, s3, metrics.clone());
    let metrics = server::MetricsEndpoint {
        metrics,
        token: settings.metrics_token.clone(),
        auth: settings.auth.is_some(),
    };
    let listen = settings.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %local, data_dir = %data_dir.display(), "openregistry listening");
    server::serve(
        listener,
        registry,
        metrics,
        shutdown_signal(),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| e.to_string())
}

/// `openregistry health`: one `GET /v2/` to the local registry, within 5 s.
async fn health(url: Option<String>, settings: &Settings) -> Result<(), String> {
    let base = url.unwrap_or_else(|| {
        let listen = settings.listen;
        // A wildcard listen address is reached on loopback.
        let host = if listen.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            listen.ip().to_string()
        };
        format!("http://{host}:{}", listen.port())
    });
    let target = format!("{}/v2/", base.trim_end_matches('/'));
    let request = http::Request::get(&target)
        .body(openregistry::Body::Empty)
        .map_err(|e| format!("{target}: {e}"))?;
    let client = HyperClient::new();
    let answer = tokio::time::timeout(Duration::from_secs(5), client.send(request))
        .await
        .map_err(|_| format!("{target}: no answer within 5 s"))?
        .map_err(|e| format!("{target}: {e}"))?;
    match answer.status().as_u16() {
        200 | 401 => {
            println!("{target}: {}", answer.status());
            Ok(())
        }
        other => Err(format!("{target} answered {other}")),
    }
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

/// The metadata database for the account and migration commands.
async fn accounts_database(flags: &SettingFlags) -> Result<Arc<dyn Sql>, String> {
    open_metadata(&flags.settings()?, Arc::new(HyperClient::new())).await
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
        Command::Serve { settings } => match settings.settings() {
            Ok(settings) => serve(settings).await,
            Err(e) => Err(e),
        },
        Command::User { action, settings } => match accounts_database(&settings).await {
            Ok(sql) => accounts::user(action, sql.as_ref()).await,
            Err(e) => Err(e),
        },
        Command::Token { action, settings } => match accounts_database(&settings).await {
            Ok(sql) => accounts::token(action, sql.as_ref()).await,
            Err(e) => Err(e),
        },
        Command::Org { action, settings } => match accounts_database(&settings).await {
            Ok(sql) => orgs_cli::org(action, sql.as_ref()).await,
            Err(e) => Err(e),
        },
        Command::Team { action, settings } => match accounts_database(&settings).await {
            Ok(sql) => orgs_cli::team(action, sql.as_ref()).await,
            Err(e) => Err(e),
        },
        Command::Robot { action, settings } => match accounts_database(&settings).await {
            Ok(sql) => orgs_cli::robot(action, sql.as_ref()).await,
            Err(e) => Err(e),
        },
        Command::Grant { action, settings } => match accounts_database(&settings).await {
            Ok(sql) => orgs_cli::grant(action, sql.as_ref()).await,
            Err(e) => Err(e),
        },
        Command::TokenKey {
            action,
            settings: flags,
        } => flags.settings().and_then(|settings| {
            // The configured key even when authentication is off: `token-key` inspects it.
            let key = flags.get("OPENREGISTRY_TOKEN_KEY");
            accounts::token_key_command(action, key.as_deref(), Path::new(&settings.data_dir))
        }),
        Command::Health { url, settings } => match settings.settings() {
            Ok(settings) => health(url, &settings).await,
            Err(e) => Err(e),
        },
        Command::Gc { dry_run, settings } => match settings.settings() {
            Ok(settings) => gc(settings, dry_run).await,
            Err(e) => Err(e),
        },
        Command::Migrate { settings } => accounts_database(&settings).await.map(|_| ()),
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
