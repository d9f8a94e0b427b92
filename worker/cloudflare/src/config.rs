//! Settings from wrangler `[vars]` and secrets, under the native host's names.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `OPENREGISTRY_DATABASE_URL` | secret, required | `postgres://` URL of the metadata database (Neon) |
//! | `OPENREGISTRY_DATABASE_HTTP_ENDPOINT` | var | SQL-over-HTTP endpoint override (default: Neon's, from the URL) |
//! | `OPENREGISTRY_DATABASE_TIMEOUT_MS` | var | one SQL round trip's limit (default 10000) |
//! | `OPENREGISTRY_SKYNET_PORTAL` | secret or var, required | the Skynet portal's base URL |
//! | `OPENREGISTRY_SKYNET_API_KEY` | secret | sent as `Skynet-Api-Key` |
//! | `OPENREGISTRY_SKYNET_TIMEOUT_MS` | var | one portal request's limit (default 300000) |
//! | `OPENREGISTRY_BLOB_REDIRECT` | var | `true`: blob GETs redirect to the portal |
//! | `OPENREGISTRY_CHUNK_MIN_LENGTH` | var | advertised `OCI-Chunk-Min-Length` (default: the store's, 40 MiB) |
//! | `OPENREGISTRY_CHUNK_MAX_LENGTH` | var | advertised `OCI-Chunk-Max-Length` (default 100000000, the Free/Pro body limit) |
//! | `OPENREGISTRY_EDGE_CACHE` | var | `false` turns the Cache API off (default on) |
//! | `OPENREGISTRY_EDGE_CACHE_MAX_BYTES` | var | largest blob kept in the Cache API (default 32 MiB) |
//! | `OPENREGISTRY_AUTH` | var | `true`: every route needs a token (Docker's token flow) |
//! | `OPENREGISTRY_TOKEN_KEY` | secret, required with auth | PASERK `k4.secret` signing key |
//! | `OPENREGISTRY_TOKEN_PUBLIC_KEYS` | var | comma-separated PASERK `k4.public` keys also accepted (earlier signing keys, during a rotation) |
//! | `OPENREGISTRY_SERVICE` | var | token audience and challenge `service` (default `openregistry`) |
//! | `OPENREGISTRY_PUBLIC_URL` | var | base of the token realm (default: from the request's Host) |
//! | `OPENREGISTRY_TOKEN_TTL_SECONDS` | var | access token lifetime (default 300) |
//! | `OPENREGISTRY_OPEN` | var | `true`: serve without authentication (anyone may push and delete) |
//! | `OPENREGISTRY_TEST_KV_LAG` | var, tests only | `1`: simulate stale KV reads (see `kv.rs`) |
//!
//! There are no embedded defaults at the edge: without a database URL or a portal every request is
//! answered 503 with an OCI error that names the missing setting. And as the native host refuses a
//! non-loopback address without authentication, a Worker (reachable by anyone) answers 503 unless
//! `OPENREGISTRY_AUTH=true` (with a token key) or, deliberately, `OPENREGISTRY_OPEN=true`.

use std::time::Duration;

use js_sys::Reflect;
use wasm_bindgen::JsValue;
use worker::Env;

/// The KV namespace binding that holds upload sessions (and Skynet tail segments).
pub const KV_BINDING: &str = "UPLOAD_SESSIONS";

/// Cloudflare's request body limit on the Free and Pro plans (100 MB).
pub const DEFAULT_CHUNK_MAX: u64 = 100_000_000;

/// Blobs up to this size are kept in the Cache API by default.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub database_url: String,
    pub database_endpoint: Option<String>,
    pub database_timeout: Duration,
    pub portal: String,
    pub portal_api_key: Option<String>,
    pub portal_timeout: Duration,
    pub blob_redirect: bool,
    pub chunk_min: Option<u64>,
    pub chunk_max: Option<u64>,
    pub edge_cache: bool,
    pub edge_cache_max_bytes: u64,
    pub auth: Option<AuthConfig>,
    pub test_kv_lag: bool,
}

/// Authentication settings (`OPENREGISTRY_AUTH=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub token_key: String,
    /// `OPENREGISTRY_TOKEN_PUBLIC_KEYS` as given; the core parses it.
    pub public_keys: Option<String>,
    pub service: String,
    pub public_url: Option<String>,
    pub token_ttl: Duration,
}

/// A setting's value as text; unset or empty is `None`. `[vars]` may hold numbers and booleans.
fn text(env: &Env, name: &str) -> Option<String> {
    let value = Reflect::get(env.as_ref(), &JsValue::from_str(name)).ok()?;
    let text = if let Some(s) = value.as_string() {
        s
    } else if let Some(n) = value.as_f64() {
        if n.fract() == 0.0 && n.abs() < 9.0e15 {
            format!("{}", n as i64)
        } else {
            n.to_string()
        }
    } else if let Some(b) = value.as_bool() {
        b.to_string()
    } else {
        return None;
    };
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn required(env: &Env, name: &str, how: &str) -> Result<String, String> {
    text(env, name).ok_or_else(|| format!("{name} is not set: {how}"))
}

fn parse_bool(name: &str, value: Option<String>, default: bool) -> Result<bool, String> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(format!("{name} must be true or false, not {other:?}")),
    }
}

fn parse_u64(name: &str, value: Option<String>) -> Result<Option<u64>, String> {
    value
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| format!("{name} must be a whole number, not {v:?}"))
        })
        .transpose()
}

impl Settings {
    /// Reads and checks every setting; the error names the first bad one.
    pub fn from_env(env: &Env) -> Result<Self, String> {
        let database_url = required(
            env,
            "OPENREGISTRY_DATABASE_URL",
            "the Worker keeps metadata in Postgres over HTTP (Neon) and has no embedded default; \
             set it with `wrangler secret put OPENREGISTRY_DATABASE_URL`",
        )?;
        let portal = required(
            env,
            "OPENREGISTRY_SKYNET_PORTAL",
            "the Worker keeps blobs on a Skynet portal and has no embedded default; \
             set it with `wrangler secret put OPENREGISTRY_SKYNET_PORTAL` (or in [vars])",
        )?;
        if !(portal.starts_with("https://") || portal.starts_with("http://")) {
            return Err(format!(
                "OPENREGISTRY_SKYNET_PORTAL must be an http(s) URL, not {portal:?}"
            ));
        }
        let database_timeout = parse_u64(
            "OPENREGISTRY_DATABASE_TIMEOUT_MS",
            text(env, "OPENREGISTRY_DATABASE_TIMEOUT_MS"),
        )?
        .unwrap_or(10_000);
        let chunk_min = parse_u64(
            "OPENREGISTRY_CHUNK_MIN_LENGTH",
            text(env, "OPENREGISTRY_CHUNK_MIN_LENGTH"),
        )?;
        let chunk_max = parse_u64(
            "OPENREGISTRY_CHUNK_MAX_LENGTH",
            text(env, "OPENREGISTRY_CHUNK_MAX_LENGTH"),
        )?
        .or(Some(DEFAULT_CHUNK_MAX))
        .filter(|max| *max > 0);
        if let (Some(min), Some(max)) = (chunk_min, chunk_max) {
            if min > max {
                return Err(format!(
                    "OPENREGISTRY_CHUNK_MIN_LENGTH ({min}) is larger than OPENREGISTRY_CHUNK_MAX_LENGTH ({max})"
                ));
            }
        }
        let auth = if parse_bool("OPENREGISTRY_AUTH", text(env, "OPENREGISTRY_AUTH"), false)? {
            Some(AuthConfig {
                token_key: required(
                    env,
                    "OPENREGISTRY_TOKEN_KEY",
                    "OPENREGISTRY_AUTH=true needs the PASERK k4.secret key tokens are signed with; \
                     make one with `scripts/token-key` and set it with \
                     `wrangler secret put OPENREGISTRY_TOKEN_KEY`",
                )?,
                public_keys: text(env, "OPENREGISTRY_TOKEN_PUBLIC_KEYS"),
                service: text(env, "OPENREGISTRY_SERVICE").unwrap_or_else(|| "openregistry".into()),
                public_url: text(env, "OPENREGISTRY_PUBLIC_URL"),
                token_ttl: Duration::from_secs(
                    parse_u64(
                        "OPENREGISTRY_TOKEN_TTL_SECONDS",
                        text(env, "OPENREGISTRY_TOKEN_TTL_SECONDS"),
                    )?
                    .unwrap_or(300),
                ),
            })
        } else {
            if !parse_bool("OPENREGISTRY_OPEN", text(env, "OPENREGISTRY_OPEN"), false)? {
                return Err(
                    "authentication is off and a Worker is reachable by anyone, who could \
                            then push and delete: set OPENREGISTRY_AUTH=true (with the secret \
                            OPENREGISTRY_TOKEN_KEY), or OPENREGISTRY_OPEN=true if an open \
                            registry is really what you want"
                        .into(),
                );
            }
            None
        };
        Ok(Self {
            auth,
            database_url,
            database_endpoint: text(env, "OPENREGISTRY_DATABASE_HTTP_ENDPOINT"),
            database_timeout: Duration::from_millis(database_timeout),
            portal,
            portal_api_key: text(env, "OPENREGISTRY_SKYNET_API_KEY"),
            portal_timeout: Duration::from_millis(
                parse_u64(
                    "OPENREGISTRY_SKYNET_TIMEOUT_MS",
                    text(env, "OPENREGISTRY_SKYNET_TIMEOUT_MS"),
                )?
                .unwrap_or(300_000),
            ),
            blob_redirect: parse_bool(
                "OPENREGISTRY_BLOB_REDIRECT",
                text(env, "OPENREGISTRY_BLOB_REDIRECT"),
                false,
            )?,
            chunk_min,
            chunk_max,
            edge_cache: parse_bool(
                "OPENREGISTRY_EDGE_CACHE",
                text(env, "OPENREGISTRY_EDGE_CACHE"),
                true,
            )?,
            edge_cache_max_bytes: parse_u64(
                "OPENREGISTRY_EDGE_CACHE_MAX_BYTES",
                text(env, "OPENREGISTRY_EDGE_CACHE_MAX_BYTES"),
            )?
            .unwrap_or(DEFAULT_CACHE_MAX_BYTES),
            test_kv_lag: parse_bool(
                "OPENREGISTRY_TEST_KV_LAG",
                text(env, "OPENREGISTRY_TEST_KV_LAG"),
                false,
            )?,
        })
    }
}
