//! Settings from wrangler `[vars]` and secrets, under the native host's names. The settings every
//! edge host shares are read by `openregistry::edge::EdgeSettings`; this module adds the Worker's own
//! (the Cache API, the KV lag switch) and how a secret is set with wrangler.
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

use js_sys::Reflect;
use openregistry::edge::{EdgeSettings, SettingSource};
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
    /// Database, portal, chunk limits, authentication: what every edge host reads.
    pub edge: EdgeSettings,
    pub edge_cache: bool,
    pub edge_cache_max_bytes: u64,
    pub test_kv_lag: bool,
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

/// The Worker's bindings as a source of settings.
struct Vars<'a>(&'a Env);

impl SettingSource for Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        text(self.0, name)
    }

    fn how_to_set_secret(&self, name: &str) -> String {
        format!("set it with `wrangler secret put {name}` (or in [vars] if it is not a secret)")
    }
}

fn parse_bool(name: &str, value: Option<String>, default: bool) -> Result<bool, String> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(format!("{name} must be true or false, not {other:?}")),
    }
}

impl Settings {
    /// Reads and checks every setting; the error names the first bad one.
    pub fn from_env(env: &Env) -> Result<Self, String> {
        Ok(Self {
            edge: EdgeSettings::read(&Vars(env), Some(DEFAULT_CHUNK_MAX))?,
            edge_cache: parse_bool(
                "OPENREGISTRY_EDGE_CACHE",
                text(env, "OPENREGISTRY_EDGE_CACHE"),
                true,
            )?,
            edge_cache_max_bytes: match text(env, "OPENREGISTRY_EDGE_CACHE_MAX_BYTES") {
                None => DEFAULT_CACHE_MAX_BYTES,
                Some(v) => v.parse().map_err(|_| {
                    format!("OPENREGISTRY_EDGE_CACHE_MAX_BYTES must be a whole number, not {v:?}")
                })?,
            },
            test_kv_lag: parse_bool(
                "OPENREGISTRY_TEST_KV_LAG",
                text(env, "OPENREGISTRY_TEST_KV_LAG"),
                false,
            )?,
        })
    }
}
