//! Every setting of every host, in one table ([`SETTINGS`]), and the one reader that turns a
//! [`SettingSource`] (environment and flags natively, wrangler `[vars]`/secrets, Spin variables)
//! into checked [`Settings`].
//!
//! The README's settings table is rendered from [`SETTINGS`] ([`markdown_table`]) and a test keeps
//! the two equal; another test checks that the reader asks for exactly the names in the table.

use std::net::SocketAddr;
use std::time::Duration;

/// The edge hosts' read path cache (`OPENREGISTRY_EDGE_CACHE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeCache {
    Off,
    /// The location's shared cache: the Cache API on Workers, the key-value store on Spin.
    Shared,
    /// Workers KV (global, eventually consistent) where the Cache API does not reach.
    Kv,
}

/// Which host is reading its settings: what it defaults to and what it requires differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The native binary: embedded defaults (SQLite, files) for everything.
    Native,
    /// A Cloudflare Worker: no embedded defaults; 100 MB request bodies on Free/Pro.
    Cloudflare,
    /// A Spin component: no embedded defaults.
    Spin,
}

impl Host {
    fn is_edge(self) -> bool {
        !matches!(self, Host::Native)
    }

    /// The host's request body limit, advertised as `OCI-Chunk-Max-Length` unless configured.
    pub fn default_chunk_max(self) -> Option<u64> {
        match self {
            Host::Cloudflare => Some(CLOUDFLARE_BODY_LIMIT),
            // Self-hosted Spin has none; Akamai Functions' 10 MiB is set in spin.toml.
            Host::Native | Host::Spin => None,
        }
    }
}

/// Cloudflare's request body limit on the Free and Pro plans (100 MB).
pub const CLOUDFLARE_BODY_LIMIT: u64 = 100_000_000;

/// Blobs up to this size are kept in the Worker's Cache API by default.
pub const DEFAULT_EDGE_CACHE_MAX_BYTES: u64 = 32 * 1024 * 1024;

const ALL: &[Host] = &[Host::Native, Host::Cloudflare, Host::Spin];
const NATIVE: &[Host] = &[Host::Native];
const CLOUDFLARE: &[Host] = &[Host::Cloudflare];
const EDGE: &[Host] = &[Host::Cloudflare, Host::Spin];
/// The hosts that run on a schedule of their own (Spin has no timer).
const SCHEDULED: &[Host] = &[Host::Native, Host::Cloudflare];

/// One row of the settings table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The canonical name (`OPENREGISTRY_…`): the environment variable and wrangler name; Spin
    /// variables are the same in lower case; native flags are `--<rest in kebab case>`.
    pub name: &'static str,
    pub hosts: &'static [Host],
    /// Holds a credential: set as a secret at the edge, never logged.
    pub secret: bool,
    pub default: &'static str,
    pub meaning: &'static str,
}

impl Setting {
    /// The native command-line flag: `OPENREGISTRY_DATA_DIR` is `--data-dir`.
    pub fn flag(&self) -> String {
        self.name
            .strip_prefix("OPENREGISTRY_")
            .unwrap_or(self.name)
            .to_ascii_lowercase()
            .replace('_', "-")
    }

    /// Whether the setting is a yes/no switch (a flag without a value natively).
    pub fn is_switch(&self) -> bool {
        self.default == "`false`" || self.default == "`true`"
    }
}

/// Every setting, in the order the README lists them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "OPENREGISTRY_LISTEN",
        hosts: NATIVE,
        secret: false,
        default: "`127.0.0.1:5000`",
        meaning: "address to listen on",
    },
    Setting {
        name: "OPENREGISTRY_DATA_DIR",
        hosts: NATIVE,
        secret: false,
        default: "`./data`",
        meaning: "blobs (`blobs/`, `uploads/`), embedded metadata (`registry.sqlite`), upload sessions (`sessions.sqlite`), the generated token key",
    },
    Setting {
        name: "OPENREGISTRY_DATABASE_URL",
        hosts: ALL,
        secret: true,
        default: "native: embedded SQLite; edge: required",
        meaning: "a `postgres://` URL (Neon's); metadata then lives in that Postgres, reached over Neon's SQL-over-HTTP protocol",
    },
    Setting {
        name: "OPENREGISTRY_DATABASE_HTTP_ENDPOINT",
        hosts: ALL,
        secret: false,
        default: "Neon's, from the URL's host",
        meaning: "the SQL-over-HTTP endpoint, like the official driver's `fetchEndpoint` (local development and tests)",
    },
    Setting {
        name: "OPENREGISTRY_DATABASE_TIMEOUT_MS",
        hosts: ALL,
        secret: false,
        default: "`10000`",
        meaning: "how long one SQL round trip may take before the request answers 503",
    },
    Setting {
        name: "OPENREGISTRY_SKYNET_PORTAL",
        hosts: ALL,
        secret: false,
        default: "none: native keeps blobs in files under the data directory, Workers in the R2 binding `BLOBS`; Spin needs this or S3",
        meaning: "base URL of a Skynet portal for blob bytes",
    },
    Setting {
        name: "OPENREGISTRY_SKYNET_API_KEY",
        hosts: ALL,
        secret: true,
        default: "unset",
        meaning: "the portal account's API key, sent as `Skynet-Api-Key`",
    },
    Setting {
        name: "OPENREGISTRY_SKYNET_TIMEOUT_MS",
        hosts: ALL,
        secret: false,
        default: "`300000`",
        meaning: "how long one portal request may take before the request answers 503",
    },
    Setting {
        name: "OPENREGISTRY_S3_ENDPOINT",
        hosts: ALL,
        secret: false,
        default: "none",
        meaning: "base URL of S3-compatible object storage for blob bytes (AWS S3, R2's S3 API, renterd, Storj, Filebase, MinIO, Ceph, Garage), e.g. `https://s3.eu-central-1.amazonaws.com`; on Workers with an R2 binding it only signs redirects",
    },
    Setting {
        name: "OPENREGISTRY_S3_BUCKET",
        hosts: ALL,
        secret: false,
        default: "required with an endpoint",
        meaning: "the bucket; blobs are objects `blobs/<algorithm>/<hex>.<upload id>` and `uploads/<upload id>`, keys unique per upload",
    },
    Setting {
        name: "OPENREGISTRY_S3_REGION",
        hosts: ALL,
        secret: false,
        default: "`us-east-1`",
        meaning: "the region requests are signed for (R2: `auto`)",
    },
    Setting {
        name: "OPENREGISTRY_S3_ACCESS_KEY_ID",
        hosts: ALL,
        secret: true,
        default: "required with an endpoint",
        meaning: "the access key requests are signed with (AWS Signature V4)",
    },
    Setting {
        name: "OPENREGISTRY_S3_SECRET_ACCESS_KEY",
        hosts: ALL,
        secret: true,
        default: "required with an endpoint",
        meaning: "the access key's secret",
    },
    Setting {
        name: "OPENREGISTRY_S3_PATH_STYLE",
        hosts: ALL,
        secret: false,
        default: "`false`",
        meaning: "address the bucket as `<endpoint>/<bucket>/` instead of `<bucket>.<endpoint host>` (needed for IP addresses and most self-hosted servers)",
    },
    Setting {
        name: "OPENREGISTRY_S3_PRESIGN_SECONDS",
        hosts: ALL,
        secret: false,
        default: "`300`",
        meaning: "how long the presigned download URL of a blob redirect stays valid (1 to 604800)",
    },
    Setting {
        name: "OPENREGISTRY_BLOB_REDIRECT",
        hosts: ALL,
        secret: false,
        default: "`false`",
        meaning: "answer blob GETs with a redirect to the storage's URL instead of streaming through (S3: a presigned URL, so private blobs redirect too)",
    },
    Setting {
        name: "OPENREGISTRY_CHUNK_MIN_LENGTH",
        hosts: ALL,
        secret: false,
        default: "the store's (Skynet: 41943040, S3: 8388608)",
        meaning: "advertised `OCI-Chunk-Min-Length`",
    },
    Setting {
        name: "OPENREGISTRY_CHUNK_MAX_LENGTH",
        hosts: ALL,
        secret: false,
        default: "Workers: `100000000`; else none",
        meaning: "advertised `OCI-Chunk-Max-Length`: the platform's request body limit (Workers: 100 MB Free/Pro, 200 MB Business, 500 MB Enterprise; Akamai Functions: 10 MiB)",
    },
    Setting {
        name: "OPENREGISTRY_UPLOAD_ORIGIN",
        hosts: ALL,
        secret: false,
        default: "none",
        meaning: "base URL of a registry sharing this one's database, storage and token key (e.g. the container on Akash): upload starts are forwarded there, so big layers bypass this host's body limit while pulls stay here",
    },
    Setting {
        name: "OPENREGISTRY_UPLOAD_TTL_SECONDS",
        hosts: ALL,
        secret: false,
        default: "`86400`",
        meaning: "how long an unfinished upload lives, counted from its start (Workers: at least 60, KV's shortest expiry); then its URLs answer 404 `BLOB_UPLOAD_UNKNOWN` and its partial data is removed: at its next request on every host; also by a sweep of S3 multipart uploads (natively at start and hourly, with files; on Workers by the hourly Cron Trigger of wrangler.toml)",
    },
    Setting {
        name: "OPENREGISTRY_GC_GRACE_SECONDS",
        hosts: ALL,
        secret: false,
        default: "`86400`",
        meaning: "the garbage collector's grace window: blob links, manifests and referrers younger than this are never collected (a push in progress is about to reference them): keep it above the longest push. GC runs with `openregistry gc`, `POST /api/gc` (admins), natively hourly and on Workers by the hourly Cron Trigger (`OPENREGISTRY_GC_SCHEDULE`)",
    },
    Setting {
        name: "OPENREGISTRY_GC_KEEP_UNTAGGED",
        hosts: ALL,
        secret: false,
        default: "none: untagged manifests are kept",
        meaning: "collect untagged manifests, keeping this many of the newest per repository (never one an index names, never a referrer of a kept manifest)",
    },
    Setting {
        name: "OPENREGISTRY_GC_SCHEDULE",
        hosts: SCHEDULED,
        secret: false,
        default: "`true`",
        meaning: "run the garbage collector on the host's schedule (natively hourly, with the upload sweep; on Workers by the Cron Trigger); `false`: only when asked",
    },
    Setting {
        name: "OPENREGISTRY_METRICS_TOKEN",
        hosts: NATIVE,
        secret: true,
        default: "none: `/metrics` is open without auth, off with it",
        meaning: "bearer token Prometheus scrapes `/metrics` with (`authorization: credentials`)",
    },
    Setting {
        name: "OPENREGISTRY_AUTH",
        hosts: ALL,
        secret: false,
        default: "`false`",
        meaning: "require tokens on every route (Docker's token flow, section Authentication)",
    },
    Setting {
        name: "OPENREGISTRY_TOKEN_KEY",
        hosts: ALL,
        secret: true,
        default: "native: generated into `<data dir>/token-key.paserk`; edge: required with auth",
        meaning: "PASERK `k4.secret` key tokens are signed with (`scripts/token-key`)",
    },
    Setting {
        name: "OPENREGISTRY_TOKEN_PUBLIC_KEYS",
        hosts: ALL,
        secret: false,
        default: "none",
        meaning: "comma-separated PASERK `k4.public` keys whose tokens are accepted too (earlier signing keys, during a rotation)",
    },
    Setting {
        name: "OPENREGISTRY_SERVICE",
        hosts: ALL,
        secret: false,
        default: "`openregistry`",
        meaning: "token audience and challenge `service`",
    },
    Setting {
        name: "OPENREGISTRY_PUBLIC_URL",
        hosts: ALL,
        secret: false,
        default: "from the request's `Host`; no passkey sign-in",
        meaning: "the registry's public base URL (token realm); also the origin the web app's passkeys sign for (`https://…`, or `http://localhost:<port>`)",
    },
    Setting {
        name: "OPENREGISTRY_SIGNUP",
        hosts: ALL,
        secret: false,
        default: "`false`",
        meaning: "with auth and a public URL: anyone may create an account in the web app with a passkey (else accounts are made with `openregistry users add`)",
    },
    Setting {
        name: "OPENREGISTRY_TOKEN_TTL_SECONDS",
        hosts: ALL,
        secret: false,
        default: "`300`",
        meaning: "access token lifetime",
    },
    Setting {
        name: "OPENREGISTRY_OPEN",
        hosts: ALL,
        secret: false,
        default: "`false`",
        meaning: "serve without authentication where anyone can reach it (natively: a non-loopback address; at the edge: always) — anyone may then push and delete",
    },
    Setting {
        name: "OPENREGISTRY_CACHE_BYTES",
        hosts: NATIVE,
        secret: false,
        default: "`0` (off)",
        meaning: "memory for the read path's cache (manifests, tags, blob links; an LRU), so warm pulls ask the database nothing; `0`: no cache",
    },
    Setting {
        name: "OPENREGISTRY_TAG_CACHE_SECONDS",
        hosts: ALL,
        secret: false,
        default: "`5`",
        meaning: "with the cache on: how long a tag's answer is kept (another process sharing the database sees a moved tag within it; this one at once)",
    },
    Setting {
        name: "OPENREGISTRY_CACHE_BLOB_BYTES",
        hosts: ALL,
        secret: false,
        default: "`1048576`",
        meaning: "with the cache on: blobs up to this size (configs, small layers) are kept whole in it, behind the same access check; `0`: only metadata",
    },
    Setting {
        name: "OPENREGISTRY_EDGE_CACHE",
        hosts: EDGE,
        secret: false,
        default: "`true`",
        meaning: "the read path's cache (manifests, tags, blob links, anonymous pull decisions; checked after the access check), so warm pulls ask the database nothing: on Workers the isolate's memory in front of the Cache API, on Spin its key-value store; `kv`: Workers KV instead of the Cache API (workers.dev, where the Cache API does nothing); `false`: none. On Workers with authentication off, blobs and manifests by digest are also kept whole in the Cache API",
    },
    Setting {
        name: "OPENREGISTRY_ISOLATE_CACHE_MS",
        hosts: CLOUDFLARE,
        secret: false,
        default: "`1000`",
        meaning: "how long the Worker keeps a cache entry in its isolate's memory (16 MiB) in front of the location's shared cache: the longest another isolate's change goes unseen in this one; `0`: no memory tier",
    },
    Setting {
        name: "OPENREGISTRY_EDGE_CACHE_MAX_BYTES",
        hosts: CLOUDFLARE,
        secret: false,
        default: "`33554432`",
        meaning: "with authentication off: the largest blob kept in the Cache API as a whole response",
    },
    Setting {
        name: "OPENREGISTRY_REQUEST_LOG",
        hosts: CLOUDFLARE,
        secret: false,
        default: "`true`",
        meaning: "the Worker's metrics: one JSON log line per request (route kind, method, status, ms, body bytes) for Workers Logs, `wrangler tail` and Logpush; `false`: none",
    },
    Setting {
        name: "OPENREGISTRY_TEST_KV_LAG",
        hosts: CLOUDFLARE,
        secret: false,
        default: "`false`",
        meaning: "tests only: simulate stale KV reads",
    },
];

/// The settings table as the README shows it.
pub fn markdown_table() -> String {
    let mut out = String::from("| name | hosts | default | meaning |\n| --- | --- | --- | --- |\n");
    for setting in SETTINGS {
        let hosts = if setting.hosts == ALL {
            "all".to_owned()
        } else {
            setting
                .hosts
                .iter()
                .map(|h| match h {
                    Host::Native => "native",
                    Host::Cloudflare => "Workers",
                    Host::Spin => "Spin",
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let flag = if setting.hosts.contains(&Host::Native) {
            format!(" (`--{}`)", setting.flag())
        } else {
            String::new()
        };
        let secret = if setting.secret { " (secret)" } else { "" };
        out.push_str(&format!(
            "| `{}`{flag} | {hosts} | {}{secret} | {} |\n",
            setting.name, setting.default, setting.meaning
        ));
    }
    out
}

/// Where a host's settings come from.
pub trait SettingSource {
    /// The value of a setting by its canonical name (`OPENREGISTRY_…`); unset or blank is `None`.
    fn get(&self, name: &str) -> Option<String>;

    /// The name an operator sets on this host (Spin variables are lower case, for example).
    fn spelled(&self, name: &str) -> String {
        name.to_owned()
    }

    /// How a secret is set on this host, appended to "… is not set" messages.
    fn how_to_set_secret(&self, name: &str) -> String;
}

/// Where metadata lives when not in the embedded SQLite: Postgres over Neon's HTTP protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    pub url: String,
    pub endpoint: Option<String>,
    pub timeout: Duration,
}

/// Where blob bytes live when not in files: a Skynet portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkynetSettings {
    pub portal: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

/// Where blob bytes live when on S3-compatible object storage.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub path_style: bool,
    pub presign: Duration,
}

/// Never prints the keys.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("presign", &self.presign)
            .finish_non_exhaustive()
    }
}

/// Authentication settings (`OPENREGISTRY_AUTH=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `None` natively: the data directory's generated key.
    pub token_key: Option<String>,
    pub public_keys: Option<String>,
    pub service: String,
    pub public_url: Option<String>,
    pub token_ttl: Duration,
    /// Self-service sign-up with a passkey (`OPENREGISTRY_SIGNUP`).
    pub signup: bool,
}

/// Every setting of a host, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub host: Host,
    /// Native only.
    pub listen: SocketAddr,
    /// Native only.
    pub data_dir: String,
    /// `None`: the embedded SQLite (native only).
    pub database: Option<DatabaseSettings>,
    /// Blobs on a Skynet portal.
    pub skynet: Option<SkynetSettings>,
    /// Blobs on S3-compatible storage (on Workers with an R2 binding: redirects only).
    pub s3: Option<S3Settings>,
    pub blob_redirect: bool,
    /// Where uploads are sent (`OPENREGISTRY_UPLOAD_ORIGIN`), without a trailing `/`.
    pub upload_origin: Option<String>,
    /// The bearer token `/metrics` answers to (native only).
    pub metrics_token: Option<String>,
    pub chunk_min: Option<u64>,
    pub chunk_max: Option<u64>,
    /// `None`: open (no authentication).
    pub auth: Option<AuthConfig>,
    pub open: bool,
    /// How long an unfinished upload lives without a request.
    pub upload_ttl: Duration,
    /// The garbage collector's grace window, its untagged-manifest policy, and whether it runs
    /// on the host's schedule.
    pub gc_grace: Duration,
    pub gc_keep_untagged: Option<u64>,
    pub gc_schedule: bool,
    /// Workers only.
    pub request_log: bool,
    pub edge_cache: EdgeCache,
    pub isolate_cache: Duration,
    pub edge_cache_max_bytes: u64,
    /// Native only: the read path's cache, in bytes (0: none), and its tag lifetime.
    pub cache_bytes: u64,
    pub tag_cache: Duration,
    pub cache_blob_bytes: u64,
    pub test_kv_lag: bool,
}

/// Reads settings by canonical name, naming them as the host spells them in errors.
struct Reader<'a>(&'a dyn SettingSource);

impl Reader<'_> {
    fn text(&self, name: &str) -> Option<String> {
        debug_assert!(
            SETTINGS.iter().any(|s| s.name == name),
            "{name} is missing from SETTINGS"
        );
        self.0
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str, why: &str) -> Result<String, String> {
        self.text(name).ok_or_else(|| {
            format!(
                "{} is not set: {why}; {}",
                self.0.spelled(name),
                self.0.how_to_set_secret(name)
            )
        })
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.text(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(format!(
                "{} must be true or false, not {other:?}",
                self.0.spelled(name)
            )),
        }
    }

    fn edge_cache(&self) -> Result<EdgeCache, String> {
        let name = "OPENREGISTRY_EDGE_CACHE";
        let value = self.text(name);
        if value
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("kv"))
        {
            return Ok(EdgeCache::Kv);
        }
        match self.flag(name, true) {
            Ok(true) => Ok(EdgeCache::Shared),
            Ok(false) => Ok(EdgeCache::Off),
            Err(_) => Err(format!(
                "{} must be true, kv or false, not {:?}",
                self.0.spelled(name),
                value.unwrap_or_default()
            )),
        }
    }

    fn number(&self, name: &str) -> Result<Option<u64>, String> {
        self.text(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    format!("{} must be a whole number, not {v:?}", self.0.spelled(name))
                })
            })
            .transpose()
    }

    fn millis(&self, name: &str, default: u64) -> Result<Duration, String> {
        Ok(Duration::from_millis(self.number(name)?.unwrap_or(default)))
    }
}

impl Settings {
    /// The read path cache's policy these settings describe.
    pub fn cache_policy(&self) -> openregistry::cache::CachePolicy {
        openregistry::cache::CachePolicy {
            tag: self.tag_cache,
            blob_bytes: self.cache_blob_bytes,
            ..Default::default()
        }
    }

    /// Reads and checks every setting of `host`; the error names the first bad one as the host
    /// spells it.
    pub fn read(source: &dyn SettingSource, host: Host) -> Result<Self, String> {
        let read = Reader(source);
        let spelled = |name: &str| source.spelled(name);
        let edge = host.is_edge();

        let (listen, data_dir) = if edge {
            (SocketAddr::from(([127, 0, 0, 1], 0)), String::new())
        } else {
            let listen = read
                .text("OPENREGISTRY_LISTEN")
                .unwrap_or_else(|| "127.0.0.1:5000".into());
            let listen = listen.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "{} must be an address such as 127.0.0.1:5000, not {listen:?}",
                    spelled("OPENREGISTRY_LISTEN")
                )
            })?;
            let data_dir = read
                .text("OPENREGISTRY_DATA_DIR")
                .unwrap_or_else(|| "./data".into());
            (listen, data_dir)
        };

        let database_url = if edge {
            Some(read.required(
                "OPENREGISTRY_DATABASE_URL",
                "the edge keeps metadata in Postgres over HTTP (Neon) and has no embedded default",
            )?)
        } else {
            read.text("OPENREGISTRY_DATABASE_URL")
        };
        let database = database_url
            .map(|url| -> Result<DatabaseSettings, String> {
                Ok(DatabaseSettings {
                    url,
                    endpoint: read.text("OPENREGISTRY_DATABASE_HTTP_ENDPOINT"),
                    timeout: read.millis("OPENREGISTRY_DATABASE_TIMEOUT_MS", 10_000)?,
                })
            })
            .transpose()?;

        let portal = read.text("OPENREGISTRY_SKYNET_PORTAL");
        let skynet = portal
            .map(|portal| -> Result<SkynetSettings, String> {
                if !(portal.starts_with("https://") || portal.starts_with("http://")) {
                    return Err(format!(
                        "{} must be an http(s) URL, not {portal:?}",
                        spelled("OPENREGISTRY_SKYNET_PORTAL")
                    ));
                }
                Ok(SkynetSettings {
                    portal,
                    api_key: read.text("OPENREGISTRY_SKYNET_API_KEY"),
                    timeout: read.millis("OPENREGISTRY_SKYNET_TIMEOUT_MS", 300_000)?,
                })
            })
            .transpose()?;
        let s3 = Self::read_s3(&read)?;
        if skynet.is_some() && s3.is_some() {
            return Err(format!(
                "both {} and {} are set: blobs live in one store, set one of them",
                spelled("OPENREGISTRY_SKYNET_PORTAL"),
                spelled("OPENREGISTRY_S3_ENDPOINT")
            ));
        }
        // Natively blobs default to files, on Workers to the R2 binding; Spin has no store of
        // its own.
        if host == Host::Spin && skynet.is_none() && s3.is_none() {
            return Err(format!(
                "neither {} nor {} is set: a Spin component keeps blobs on S3-compatible \
                 storage or a Skynet portal and has no embedded default",
                spelled("OPENREGISTRY_S3_ENDPOINT"),
                spelled("OPENREGISTRY_SKYNET_PORTAL")
            ));
        }

        let chunk_min = read.number("OPENREGISTRY_CHUNK_MIN_LENGTH")?;
        let chunk_max = read
            .number("OPENREGISTRY_CHUNK_MAX_LENGTH")?
            .or(host.default_chunk_max())
            .filter(|max| *max > 0);
        if let (Some(min), Some(max)) = (chunk_min, chunk_max) {
            if min > max {
                return Err(format!(
                    "{} ({min}) is larger than {} ({max})",
                    spelled("OPENREGISTRY_CHUNK_MIN_LENGTH"),
                    spelled("OPENREGISTRY_CHUNK_MAX_LENGTH")
                ));
            }
        }

        let upload_origin = match read.text("OPENREGISTRY_UPLOAD_ORIGIN") {
            None => None,
            Some(url) => {
                let url = url.trim().trim_end_matches('/').to_owned();
                let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
                let host_ok = url.split_once("://").is_some_and(|(_, rest)| {
                    !rest.is_empty() && !rest.contains(['/', '?', '#', ' '])
                });
                if !scheme_ok || !host_ok {
                    return Err(format!(
                        "{} must be an origin like https://uploads.example:8443 (no path), not {url:?}",
                        spelled("OPENREGISTRY_UPLOAD_ORIGIN")
                    ));
                }
                Some(url)
            }
        };
        let open = read.flag("OPENREGISTRY_OPEN", false)?;
        let auth = if read.flag("OPENREGISTRY_AUTH", false)? {
            let token_key = if edge {
                Some(read.required(
                    "OPENREGISTRY_TOKEN_KEY",
                    &format!(
                        "{}=true needs the PASERK k4.secret key tokens are signed with \
                         (make one with `scripts/token-key`)",
                        spelled("OPENREGISTRY_AUTH")
                    ),
                )?)
            } else {
                read.text("OPENREGISTRY_TOKEN_KEY")
            };
            Some(AuthConfig {
                token_key,
                public_keys: read.text("OPENREGISTRY_TOKEN_PUBLIC_KEYS"),
                service: read
                    .text("OPENREGISTRY_SERVICE")
                    .unwrap_or_else(|| "openregistry".into()),
                public_url: read.text("OPENREGISTRY_PUBLIC_URL"),
                token_ttl: Duration::from_secs(
                    read.number("OPENREGISTRY_TOKEN_TTL_SECONDS")?
                        .unwrap_or(300),
                ),
                signup: read.flag("OPENREGISTRY_SIGNUP", false)?,
            })
        } else {
            None
        };
        // Without authentication anyone who reaches the registry may push and delete: an edge
        // deployment (reachable by anyone) serves open only when the operator says so. Natively,
        // `serve` checks its address with `refuse_unprotected_listen`.
        if edge && auth.is_none() && !open {
            return Err(format!(
                "authentication is off and an edge deployment is reachable by anyone, who \
                 could then push and delete: set {}=true (with the secret {}), or {}=true if \
                 an open registry is really what you want",
                spelled("OPENREGISTRY_AUTH"),
                spelled("OPENREGISTRY_TOKEN_KEY"),
                spelled("OPENREGISTRY_OPEN"),
            ));
        }

        let cloudflare = host == Host::Cloudflare;
        let upload_ttl = read
            .number("OPENREGISTRY_UPLOAD_TTL_SECONDS")?
            .unwrap_or(86_400);
        let shortest = if cloudflare { 60 } else { 1 };
        if upload_ttl < shortest {
            return Err(format!(
                "{} must be at least {shortest}, not {upload_ttl}",
                spelled("OPENREGISTRY_UPLOAD_TTL_SECONDS")
            ));
        }
        let gc_grace = read
            .number("OPENREGISTRY_GC_GRACE_SECONDS")?
            .unwrap_or(86_400);
        let gc_keep_untagged = read.number("OPENREGISTRY_GC_KEEP_UNTAGGED")?;
        let gc_schedule = host != Host::Spin && read.flag("OPENREGISTRY_GC_SCHEDULE", true)?;
        Ok(Self {
            host,
            listen,
            data_dir,
            database,
            skynet,
            s3,
            blob_redirect: read.flag("OPENREGISTRY_BLOB_REDIRECT", false)?,
            upload_origin,
            metrics_token: if host == Host::Native {
                read.text("OPENREGISTRY_METRICS_TOKEN")
            } else {
                None
            },
            chunk_min,
            chunk_max,
            auth,
            open,
            upload_ttl: Duration::from_secs(upload_ttl),
            gc_grace: Duration::from_secs(gc_grace),
            gc_keep_untagged,
            gc_schedule,
            request_log: cloudflare && read.flag("OPENREGISTRY_REQUEST_LOG", true)?,
            edge_cache: if host.is_edge() {
                read.edge_cache()?
            } else {
                EdgeCache::Off
            },
            isolate_cache: if cloudflare {
                read.millis("OPENREGISTRY_ISOLATE_CACHE_MS", 1000)?
            } else {
                Duration::ZERO
            },
            edge_cache_max_bytes: if cloudflare {
                read.number("OPENREGISTRY_EDGE_CACHE_MAX_BYTES")?
                    .unwrap_or(DEFAULT_EDGE_CACHE_MAX_BYTES)
            } else {
                0
            },
            test_kv_lag: cloudflare && read.flag("OPENREGISTRY_TEST_KV_LAG", false)?,
            cache_bytes: if host == Host::Native {
                read.number("OPENREGISTRY_CACHE_BYTES")?.unwrap_or(0)
            } else {
                0
            },
            tag_cache: Duration::from_secs(
                read.number("OPENREGISTRY_TAG_CACHE_SECONDS")?.unwrap_or(5),
            ),
            cache_blob_bytes: read
                .number("OPENREGISTRY_CACHE_BLOB_BYTES")?
                .unwrap_or(openregistry::cache::DEFAULT_CACHE_BLOB_BYTES),
        })
    }
}

impl Settings {
    /// The S3 settings: none without an endpoint; bucket and keys required with one. Every S3
    /// name is read either way (the table test checks what the reader asks for).
    fn read_s3(read: &Reader<'_>) -> Result<Option<S3Settings>, String> {
        let spelled = |name: &str| read.0.spelled(name);
        let endpoint = read.text("OPENREGISTRY_S3_ENDPOINT");
        let bucket = read.text("OPENREGISTRY_S3_BUCKET");
        let region = read
            .text("OPENREGISTRY_S3_REGION")
            .unwrap_or_else(|| "us-east-1".into());
        let access_key_id = read.text("OPENREGISTRY_S3_ACCESS_KEY_ID");
        let secret_access_key = read.text("OPENREGISTRY_S3_SECRET_ACCESS_KEY");
        let path_style = read.flag("OPENREGISTRY_S3_PATH_STYLE", false)?;
        let presign = read
            .number("OPENREGISTRY_S3_PRESIGN_SECONDS")?
            .unwrap_or(300);
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(format!(
                "{} must be an http(s) URL, not {endpoint:?}",
                spelled("OPENREGISTRY_S3_ENDPOINT")
            ));
        }
        if !(1..=604_800).contains(&presign) {
            return Err(format!(
                "{} must be between 1 and 604800 (S3's limit of 7 days), not {presign}",
                spelled("OPENREGISTRY_S3_PRESIGN_SECONDS")
            ));
        }
        let why = format!("{} is set", spelled("OPENREGISTRY_S3_ENDPOINT"));
        let bucket = bucket
            .ok_or_else(|| format!("{} is not set: {why}", spelled("OPENREGISTRY_S3_BUCKET")))?;
        let access_key_id = access_key_id.ok_or_else(|| {
            format!(
                "{} is not set: {why}; {}",
                spelled("OPENREGISTRY_S3_ACCESS_KEY_ID"),
                read.0.how_to_set_secret("OPENREGISTRY_S3_ACCESS_KEY_ID")
            )
        })?;
        let secret_access_key = secret_access_key.ok_or_else(|| {
            format!(
                "{} is not set: {why}; {}",
                spelled("OPENREGISTRY_S3_SECRET_ACCESS_KEY"),
                read.0
                    .how_to_set_secret("OPENREGISTRY_S3_SECRET_ACCESS_KEY")
            )
        })?;
        Ok(Some(S3Settings {
            endpoint,
            bucket,
            region,
            access_key_id,
            secret_access_key,
            path_style,
            presign: Duration::from_secs(presign),
        }))
    }

    /// Natively: refuses to serve without authentication on an address others can reach, unless
    /// `OPENREGISTRY_OPEN` says so (a loopback address is the laptop's own).
    pub fn refuse_unprotected_listen(&self) -> Result<(), String> {
        if self.auth.is_none() && !self.open && !self.listen.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {} without authentication: anyone who can reach this \
                 address could push and delete. Enable --auth (OPENREGISTRY_AUTH=true), listen on \
                 127.0.0.1, or pass --open (OPENREGISTRY_OPEN=true) if that is really what you \
                 want.",
                self.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};

    #[derive(Default)]
    struct Vars {
        values: HashMap<&'static str, &'static str>,
        asked: RefCell<BTreeSet<String>>,
    }

    impl SettingSource for Vars {
        fn get(&self, name: &str) -> Option<String> {
            self.asked.borrow_mut().insert(name.to_owned());
            self.values.get(name).map(|v| v.to_string())
        }
        fn spelled(&self, name: &str) -> String {
            name.to_ascii_lowercase()
        }
        fn how_to_set_secret(&self, name: &str) -> String {
            format!("set {}", name.to_ascii_lowercase())
        }
    }

    fn vars(pairs: &[(&'static str, &'static str)]) -> Vars {
        Vars {
            values: pairs.iter().copied().collect(),
            ..Vars::default()
        }
    }

    fn read_err(pairs: &[(&'static str, &'static str)], host: Host) -> String {
        match Settings::read(&vars(pairs), host) {
            Err(error) => error,
            Ok(settings) => panic!("expected a configuration error, got {settings:?}"),
        }
    }

    fn read_ok(pairs: &[(&'static str, &'static str)], host: Host) -> Settings {
        match Settings::read(&vars(pairs), host) {
            Ok(settings) => settings,
            Err(error) => panic!("expected valid settings: {error}"),
        }
    }

    const EDGE: [(&str, &str); 3] = [
        (
            "OPENREGISTRY_DATABASE_URL",
            "postgres://u:p@db.example.com/x",
        ),
        ("OPENREGISTRY_SKYNET_PORTAL", "https://portal.example"),
        ("OPENREGISTRY_OPEN", "true"),
    ];

    #[test]
    fn native_runs_on_embedded_defaults_with_nothing_set() {
        let settings = read_ok(&[], Host::Native);
        assert_eq!(settings.listen, SocketAddr::from(([127, 0, 0, 1], 5000)));
        assert_eq!(settings.data_dir, "./data");
        assert_eq!(settings.database, None);
        assert_eq!(settings.skynet, None);
        assert_eq!(settings.auth, None);
        assert_eq!(settings.chunk_max, None);
    }

    #[test]
    fn native_refuses_a_public_address_without_auth_or_open() {
        let public = read_ok(&[("OPENREGISTRY_LISTEN", "0.0.0.0:5000")], Host::Native);
        let error = public.refuse_unprotected_listen().expect_err("refused");
        assert!(
            error.starts_with("refusing to listen on 0.0.0.0:5000"),
            "{error}"
        );
        read_ok(
            &[
                ("OPENREGISTRY_LISTEN", "0.0.0.0:5000"),
                ("OPENREGISTRY_OPEN", "true"),
            ],
            Host::Native,
        )
        .refuse_unprotected_listen()
        .expect("--open allows it");
        read_ok(&[], Host::Native)
            .refuse_unprotected_listen()
            .expect("loopback is allowed");
        let settings = read_ok(
            &[
                ("OPENREGISTRY_LISTEN", "0.0.0.0:5000"),
                ("OPENREGISTRY_AUTH", "true"),
            ],
            Host::Native,
        );
        let auth = settings.auth.expect("auth on");
        assert_eq!(auth.token_key, None, "natively the data directory's key");
    }

    #[test]
    fn a_missing_database_url_is_named_as_the_host_spells_it() {
        let error = read_err(&EDGE[1..], Host::Spin);
        assert!(
            error.starts_with("openregistry_database_url is not set"),
            "{error}"
        );
        assert!(error.ends_with("set openregistry_database_url"), "{error}");
    }

    #[test]
    fn without_auth_or_open_the_edge_refuses_to_serve() {
        let error = read_err(&EDGE[..2], Host::Cloudflare);
        assert!(error.contains("openregistry_auth=true"), "{error}");
    }

    #[test]
    fn the_hosts_chunk_limit_applies_unless_configured_and_min_may_not_exceed_it() {
        let settings = read_ok(&EDGE, Host::Cloudflare);
        assert_eq!(settings.chunk_max, Some(CLOUDFLARE_BODY_LIMIT));
        assert_eq!(read_ok(&EDGE, Host::Spin).chunk_max, None);
        let mut pairs = EDGE.to_vec();
        pairs.push(("OPENREGISTRY_CHUNK_MAX_LENGTH", "10485760"));
        pairs.push(("OPENREGISTRY_CHUNK_MIN_LENGTH", "20000000"));
        let error = read_err(&pairs, Host::Spin);
        assert!(error.contains("is larger than"), "{error}");
    }

    #[test]
    fn the_upload_origin_is_an_origin_without_a_path() {
        assert_eq!(read_ok(&EDGE, Host::Cloudflare).upload_origin, None);
        let mut pairs = EDGE.to_vec();
        pairs.push((
            "OPENREGISTRY_UPLOAD_ORIGIN",
            "https://uploads.example:8443/",
        ));
        assert_eq!(
            read_ok(&pairs, Host::Cloudflare).upload_origin.as_deref(),
            Some("https://uploads.example:8443")
        );
        for bad in [
            "uploads.example",
            "https://",
            "https://a.example/v2",
            "ftp://a.example",
        ] {
            let mut pairs = EDGE.to_vec();
            pairs.push(("OPENREGISTRY_UPLOAD_ORIGIN", bad));
            let error = read_err(&pairs, Host::Cloudflare);
            assert!(error.contains("must be an origin"), "{bad}: {error}");
        }
    }

    #[test]
    fn auth_needs_a_token_key_at_the_edge_and_reads_the_rotation_list() {
        let mut pairs = EDGE[..2].to_vec();
        pairs.push(("OPENREGISTRY_AUTH", "yes"));
        let error = read_err(&pairs, Host::Spin);
        assert!(
            error.starts_with("openregistry_token_key is not set"),
            "{error}"
        );
        pairs.push(("OPENREGISTRY_TOKEN_KEY", "k4.secret.x"));
        pairs.push(("OPENREGISTRY_TOKEN_PUBLIC_KEYS", " k4.public.a "));
        let Some(auth) = read_ok(&pairs, Host::Spin).auth else {
            panic!("OPENREGISTRY_AUTH=yes turns authentication on");
        };
        assert_eq!(auth.public_keys.as_deref(), Some("k4.public.a"));
        assert_eq!(auth.service, "openregistry");
        assert_eq!(auth.token_ttl, Duration::from_secs(300));
    }

    #[test]
    fn bad_numbers_flags_and_urls_are_named() {
        let mut pairs = EDGE.to_vec();
        pairs.push(("OPENREGISTRY_BLOB_REDIRECT", "maybe"));
        let error = read_err(&pairs, Host::Spin);
        assert!(error.starts_with("openregistry_blob_redirect must be true or false"));
        let mut pairs = EDGE.to_vec();
        pairs.push(("OPENREGISTRY_DATABASE_TIMEOUT_MS", "10s"));
        let error = read_err(&pairs, Host::Spin);
        assert!(error.starts_with("openregistry_database_timeout_ms must be a whole number"));
        let error = read_err(&[("OPENREGISTRY_SKYNET_PORTAL", "portal")], Host::Native);
        assert!(error.contains("must be an http(s) URL"), "{error}");
        let error = read_err(&[("OPENREGISTRY_LISTEN", "localhost")], Host::Native);
        assert!(error.contains("must be an address"), "{error}");
    }

    const S3: [(&str, &str); 4] = [
        (
            "OPENREGISTRY_S3_ENDPOINT",
            "https://s3.eu-central-1.amazonaws.com/",
        ),
        ("OPENREGISTRY_S3_BUCKET", "layers"),
        ("OPENREGISTRY_S3_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "OPENREGISTRY_S3_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
    ];

    #[test]
    fn s3_needs_a_bucket_and_keys_and_defaults_the_region_and_expiry() {
        let settings = read_ok(&S3, Host::Native);
        let s3 = settings.s3.expect("S3 configured");
        assert_eq!(s3.endpoint, "https://s3.eu-central-1.amazonaws.com");
        assert_eq!(s3.region, "us-east-1");
        assert!(!s3.path_style);
        assert_eq!(s3.presign, Duration::from_secs(300));
        let shown = format!("{s3:?}");
        assert!(
            !shown.contains("EXAMPLEKEY") && !shown.contains("AKIDEXAMPLE"),
            "{shown}"
        );
        for missing in 1..S3.len() {
            let pairs: Vec<_> = S3
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, p)| *p)
                .collect();
            let error = read_err(&pairs, Host::Native);
            assert!(
                error.contains("is not set: openregistry_s3_endpoint is set"),
                "{error}"
            );
        }
        let mut pairs = S3.to_vec();
        pairs.push(("OPENREGISTRY_S3_PRESIGN_SECONDS", "604801"));
        assert!(read_err(&pairs, Host::Native).contains("between 1 and 604800"));
        let error = read_err(&[("OPENREGISTRY_S3_ENDPOINT", "s3.example")], Host::Native);
        assert!(error.contains("must be an http(s) URL"), "{error}");
    }

    #[test]
    fn blobs_live_in_one_store_and_spin_needs_one() {
        let mut both = S3.to_vec();
        both.push(("OPENREGISTRY_SKYNET_PORTAL", "https://portal.example"));
        assert!(read_err(&both, Host::Native).contains("set one of them"));
        let metadata_only = [EDGE[0], EDGE[2]];
        let error = read_err(&metadata_only, Host::Spin);
        assert!(
            error.starts_with("neither openregistry_s3_endpoint nor"),
            "{error}"
        );
        // Workers keep blobs in their R2 binding; natively in files.
        assert_eq!(read_ok(&metadata_only, Host::Cloudflare).s3, None);
        let mut spin_on_s3 = metadata_only.to_vec();
        spin_on_s3.extend(S3);
        assert!(read_ok(&spin_on_s3, Host::Spin).s3.is_some());
    }

    #[test]
    fn the_reader_asks_for_exactly_the_settings_in_the_table_for_each_host() {
        let everything: Vec<(&'static str, &'static str)> = vec![
            (
                "OPENREGISTRY_DATABASE_URL",
                "postgres://u:p@db.example.com/x",
            ),
            ("OPENREGISTRY_SKYNET_PORTAL", "https://portal.example"),
            ("OPENREGISTRY_AUTH", "true"),
            ("OPENREGISTRY_TOKEN_KEY", "k4.secret.x"),
        ];
        for host in [Host::Native, Host::Cloudflare, Host::Spin] {
            let source = vars(&everything);
            Settings::read(&source, host).expect("valid");
            let asked = source.asked.borrow().clone();
            let listed: BTreeSet<String> = SETTINGS
                .iter()
                .filter(|s| s.hosts.contains(&host))
                .map(|s| s.name.to_owned())
                .collect();
            assert_eq!(asked, listed, "{host:?}");
        }
    }

    #[test]
    fn the_readme_shows_the_settings_table() {
        let readme = include_str!("../../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's settings table differs from SETTINGS; replace it with:\n{table}"
        );
    }

    #[test]
    fn flags_are_the_names_in_kebab_case() {
        let data_dir = SETTINGS
            .iter()
            .find(|s| s.name == "OPENREGISTRY_DATA_DIR")
            .expect("listed");
        assert_eq!(data_dir.flag(), "data-dir");
        assert!(!data_dir.is_switch());
    }
}
