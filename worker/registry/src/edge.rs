//! What the edge hosts (Cloudflare Workers, Spin) share: their settings, read by name from the
//! platform's variables, and the registry built from them over the host's `Kv`, `HttpClient`,
//! `Clock` and `Random` (metadata in Postgres over Neon's HTTP protocol, blobs on Skynet).
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `OPENREGISTRY_DATABASE_URL` | secret, required | `postgres://` URL of the metadata database (Neon) |
//! | `OPENREGISTRY_DATABASE_HTTP_ENDPOINT` | var | SQL-over-HTTP endpoint override (default: Neon's, from the URL) |
//! | `OPENREGISTRY_DATABASE_TIMEOUT_MS` | var | one SQL round trip's limit (default 10000) |
//! | `OPENREGISTRY_SKYNET_PORTAL` | var, required | the Skynet portal's base URL |
//! | `OPENREGISTRY_SKYNET_API_KEY` | secret | sent as `Skynet-Api-Key` |
//! | `OPENREGISTRY_SKYNET_TIMEOUT_MS` | var | one portal request's limit (default 300000) |
//! | `OPENREGISTRY_BLOB_REDIRECT` | var | `true`: blob GETs redirect to the portal |
//! | `OPENREGISTRY_CHUNK_MIN_LENGTH` | var | advertised `OCI-Chunk-Min-Length` (default: the store's, 40 MiB) |
//! | `OPENREGISTRY_CHUNK_MAX_LENGTH` | var | advertised `OCI-Chunk-Max-Length` (default: the host's) |
//! | `OPENREGISTRY_AUTH` | var | `true`: every route needs a token (Docker's token flow) |
//! | `OPENREGISTRY_TOKEN_KEY` | secret, required with auth | PASERK `k4.secret` signing key |
//! | `OPENREGISTRY_TOKEN_PUBLIC_KEYS` | var | older PASERK `k4.public` keys still accepted (rotation) |
//! | `OPENREGISTRY_SERVICE` | var | token audience and challenge `service` (default `openregistry`) |
//! | `OPENREGISTRY_PUBLIC_URL` | var | base of the token realm (default: from the request's Host) |
//! | `OPENREGISTRY_TOKEN_TTL_SECONDS` | var | access token lifetime (default 300) |
//! | `OPENREGISTRY_OPEN` | var | `true`: serve without authentication (anyone may push and delete) |
//!
//! There are no embedded defaults at the edge: without a database URL or a portal every request is
//! answered 503 with an OCI error that names the missing setting. And as the native host refuses a
//! non-loopback address without authentication, an edge deployment (reachable by anyone) answers
//! 503 unless `OPENREGISTRY_AUTH=true` (with a token key) or, deliberately, `OPENREGISTRY_OPEN=true`.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::token::Signer;
use crate::auth::AuthSettings;
use crate::body::{Body, ByteStream};
use crate::digest::Digest;
use crate::neon::{NeonConfig, NeonSql};
use crate::ports::{
    BlobStore, ChunkLimits, Clock, HttpClient, Kv, Ports, Random, StoreError, Unavailable,
};
use crate::range::ByteRange;
use crate::skynet::{SkynetConfig, SkynetStore};
use crate::{Config, Registry, RegistryError};

/// Where an edge host's settings come from.
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

/// The settings every edge host reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    pub database_url: String,
    pub database_endpoint: Option<String>,
    pub database_timeout: Duration,
    pub portal: String,
    pub portal_api_key: Option<String>,
    pub portal_timeout: Duration,
    pub blob_redirect: bool,
    pub chunk_min: Option<u64>,
    pub chunk_max: Option<u64>,
    pub auth: Option<EdgeAuth>,
}

/// Authentication settings (`OPENREGISTRY_AUTH=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeAuth {
    pub token_key: String,
    pub public_keys: Option<String>,
    pub service: String,
    pub public_url: Option<String>,
    pub token_ttl: Duration,
}

/// Reads settings by canonical name, naming them as the host spells them in errors.
struct Reader<'a>(&'a dyn SettingSource);

impl Reader<'_> {
    fn text(&self, name: &str) -> Option<String> {
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

    fn number(&self, name: &str) -> Result<Option<u64>, String> {
        self.text(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    format!("{} must be a whole number, not {v:?}", self.0.spelled(name))
                })
            })
            .transpose()
    }
}

impl EdgeSettings {
    /// Reads and checks every setting; the error names the first bad one. `default_chunk_max` is
    /// the host's request body limit, advertised as `OCI-Chunk-Max-Length` unless configured.
    pub fn read(
        source: &dyn SettingSource,
        default_chunk_max: Option<u64>,
    ) -> Result<Self, String> {
        let read = Reader(source);
        let spelled = |name: &str| source.spelled(name);
        let database_url = read.required(
            "OPENREGISTRY_DATABASE_URL",
            "the edge keeps metadata in Postgres over HTTP (Neon) and has no embedded default",
        )?;
        let portal = read.required(
            "OPENREGISTRY_SKYNET_PORTAL",
            "the edge keeps blobs on a Skynet portal and has no embedded default",
        )?;
        if !(portal.starts_with("https://") || portal.starts_with("http://")) {
            return Err(format!(
                "{} must be an http(s) URL, not {portal:?}",
                spelled("OPENREGISTRY_SKYNET_PORTAL")
            ));
        }
        let chunk_min = read.number("OPENREGISTRY_CHUNK_MIN_LENGTH")?;
        let chunk_max = read
            .number("OPENREGISTRY_CHUNK_MAX_LENGTH")?
            .or(default_chunk_max)
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
        let auth = if read.flag("OPENREGISTRY_AUTH", false)? {
            Some(EdgeAuth {
                token_key: read.required(
                    "OPENREGISTRY_TOKEN_KEY",
                    &format!(
                        "{}=true needs the PASERK k4.secret key tokens are signed with \
                         (make one with `scripts/token-key`)",
                        spelled("OPENREGISTRY_AUTH")
                    ),
                )?,
                public_keys: read.text("OPENREGISTRY_TOKEN_PUBLIC_KEYS"),
                service: read
                    .text("OPENREGISTRY_SERVICE")
                    .unwrap_or_else(|| "openregistry".into()),
                public_url: read.text("OPENREGISTRY_PUBLIC_URL"),
                token_ttl: Duration::from_secs(
                    read.number("OPENREGISTRY_TOKEN_TTL_SECONDS")?
                        .unwrap_or(300),
                ),
            })
        } else {
            if !read.flag("OPENREGISTRY_OPEN", false)? {
                return Err(format!(
                    "authentication is off and an edge deployment is reachable by anyone, who \
                     could then push and delete: set {}=true (with the secret {}), or {}=true if \
                     an open registry is really what you want",
                    spelled("OPENREGISTRY_AUTH"),
                    spelled("OPENREGISTRY_TOKEN_KEY"),
                    spelled("OPENREGISTRY_OPEN"),
                ));
            }
            None
        };
        Ok(Self {
            database_url,
            database_endpoint: read.text("OPENREGISTRY_DATABASE_HTTP_ENDPOINT"),
            database_timeout: Duration::from_millis(
                read.number("OPENREGISTRY_DATABASE_TIMEOUT_MS")?
                    .unwrap_or(10_000),
            ),
            portal,
            portal_api_key: read.text("OPENREGISTRY_SKYNET_API_KEY"),
            portal_timeout: Duration::from_millis(
                read.number("OPENREGISTRY_SKYNET_TIMEOUT_MS")?
                    .unwrap_or(300_000),
            ),
            blob_redirect: read.flag("OPENREGISTRY_BLOB_REDIRECT", false)?,
            chunk_min,
            chunk_max,
            auth,
        })
    }

    /// The registry over the host's ports: Neon for metadata, Skynet (with the advertised chunk
    /// limits) for blobs. The error names the bad setting.
    pub fn registry(
        &self,
        kv: Arc<dyn Kv>,
        http: Arc<dyn HttpClient>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Result<Registry, String> {
        let mut neon = NeonConfig::new(&self.database_url, self.database_endpoint.as_deref())
            .map_err(|e| format!("OPENREGISTRY_DATABASE_URL: {e}"))?;
        neon.timeout = self.database_timeout;
        let mut skynet = SkynetConfig::new(&self.portal, self.portal_api_key.clone());
        skynet.timeout = self.portal_timeout;
        let blobs = EdgeStore {
            inner: SkynetStore::new(http.clone(), kv.clone(), skynet),
            min: self.chunk_min,
            max: self.chunk_max,
        };
        let ports = Ports {
            kv,
            sql: Arc::new(NeonSql::new(http.clone(), neon)),
            blobs: Arc::new(blobs),
            http,
            clock,
            random,
        };
        let config = Config {
            redirect_blob_downloads: self.blob_redirect,
            ..Config::default()
        };
        let mut registry = Registry::new(ports, config);
        if let Some(auth) = &self.auth {
            let signer = Signer::from_paserk(&auth.token_key)
                .map_err(|e| format!("OPENREGISTRY_TOKEN_KEY: {e}"))?;
            let mut core = AuthSettings::new(&auth.service, signer)
                .map_err(|e| format!("OPENREGISTRY_TOKEN_KEY: {e}"))?;
            if let Some(list) = &auth.public_keys {
                core.accept_public_keys(list)
                    .map_err(|e| format!("OPENREGISTRY_TOKEN_PUBLIC_KEYS: {e}"))?;
            }
            core.public_url = auth.public_url.clone();
            core.token_ttl = auth.token_ttl;
            registry = registry.with_auth(core);
        }
        Ok(registry)
    }
}

/// The OCI error answer for a request an edge host cannot serve (bad configuration): 503.
pub fn misconfigured(message: String) -> http::Response<Body> {
    RegistryError::Unavailable(Unavailable::new("configuration", message)).into_response()
}

/// The edge's blob store: Skynet, with the chunk sizes this deployment advertises.
///
/// Delegates everything to Skynet except [`BlobStore::chunk_limits`], which comes from the
/// configuration (`OPENREGISTRY_CHUNK_MIN_LENGTH` / `OPENREGISTRY_CHUNK_MAX_LENGTH`): the maximum
/// is the platform's request body limit, which only the deployment knows.
pub struct EdgeStore {
    pub inner: SkynetStore,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl BlobStore for EdgeStore {
    async fn begin_upload(&self, upload_id: &str) -> Result<String, StoreError> {
        self.inner.begin_upload(upload_id).await
    }

    async fn append(
        &self,
        handle: &str,
        offset: u64,
        bytes: ByteStream,
    ) -> Result<String, StoreError> {
        self.inner.append(handle, offset, bytes).await
    }

    async fn finish_upload(
        &self,
        handle: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<String, StoreError> {
        self.inner.finish_upload(handle, digest, size).await
    }

    async fn read_upload(&self, handle: &str, len: u64) -> Result<Body, StoreError> {
        self.inner.read_upload(handle, len).await
    }

    async fn abort_upload(&self, handle: &str) -> Result<(), StoreError> {
        self.inner.abort_upload(handle).await
    }

    async fn read(&self, locator: &str, range: Option<ByteRange>) -> Result<Body, StoreError> {
        self.inner.read(locator, range).await
    }

    async fn redirect_url(&self, locator: &str) -> Result<Option<String>, StoreError> {
        self.inner.redirect_url(locator).await
    }

    async fn delete(&self, locator: &str) -> Result<(), StoreError> {
        self.inner.delete(locator).await
    }

    fn chunk_limits(&self) -> ChunkLimits {
        let store = self.inner.chunk_limits();
        let max = self.max.or(store.max);
        // The store's preferred minimum, unless configured, and never above the maximum.
        let min = self
            .min
            .or(store.min)
            .map(|min| max.map_or(min, |max| min.min(max)));
        ChunkLimits { min, max }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Vars(HashMap<&'static str, &'static str>);

    impl SettingSource for Vars {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
        fn spelled(&self, name: &str) -> String {
            name.to_ascii_lowercase()
        }
        fn how_to_set_secret(&self, name: &str) -> String {
            format!("set {}", name.to_ascii_lowercase())
        }
    }

    fn vars(pairs: &[(&'static str, &'static str)]) -> Vars {
        Vars(pairs.iter().copied().collect())
    }

    fn read_err(pairs: &[(&'static str, &'static str)], chunk_max: Option<u64>) -> String {
        match EdgeSettings::read(&vars(pairs), chunk_max) {
            Err(error) => error,
            Ok(settings) => panic!("expected a configuration error, got {settings:?}"),
        }
    }

    fn read_ok(pairs: &[(&'static str, &'static str)], chunk_max: Option<u64>) -> EdgeSettings {
        match EdgeSettings::read(&vars(pairs), chunk_max) {
            Ok(settings) => settings,
            Err(error) => panic!("expected valid settings: {error}"),
        }
    }

    const BASE: [(&str, &str); 3] = [
        (
            "OPENREGISTRY_DATABASE_URL",
            "postgres://u:p@db.example.com/x",
        ),
        ("OPENREGISTRY_SKYNET_PORTAL", "https://portal.example"),
        ("OPENREGISTRY_OPEN", "true"),
    ];

    #[test]
    fn a_missing_database_url_is_named_as_the_host_spells_it() {
        let error = read_err(&BASE[1..], None);
        assert!(
            error.starts_with("openregistry_database_url is not set"),
            "{error}"
        );
        assert!(error.ends_with("set openregistry_database_url"), "{error}");
    }

    #[test]
    fn without_auth_or_open_the_edge_refuses_to_serve() {
        let error = read_err(&BASE[..2], None);
        assert!(error.contains("openregistry_auth=true"), "{error}");
    }

    #[test]
    fn the_hosts_chunk_limit_applies_unless_configured_and_min_may_not_exceed_it() {
        let settings = read_ok(&BASE, Some(10 << 20));
        assert_eq!(settings.chunk_max, Some(10 << 20));
        let mut pairs = BASE.to_vec();
        pairs.push(("OPENREGISTRY_CHUNK_MIN_LENGTH", "20000000"));
        let error = read_err(&pairs, Some(10 << 20));
        assert!(error.contains("is larger than"), "{error}");
    }

    #[test]
    fn auth_needs_a_token_key_and_reads_the_rotation_list() {
        let mut pairs = BASE[..2].to_vec();
        pairs.push(("OPENREGISTRY_AUTH", "yes"));
        let error = read_err(&pairs, None);
        assert!(
            error.starts_with("openregistry_token_key is not set"),
            "{error}"
        );
        pairs.push(("OPENREGISTRY_TOKEN_KEY", "k4.secret.x"));
        pairs.push(("OPENREGISTRY_TOKEN_PUBLIC_KEYS", " k4.public.a "));
        let Some(auth) = read_ok(&pairs, None).auth else {
            panic!("OPENREGISTRY_AUTH=yes turns authentication on");
        };
        assert_eq!(auth.public_keys.as_deref(), Some("k4.public.a"));
        assert_eq!(auth.service, "openregistry");
        assert_eq!(auth.token_ttl, Duration::from_secs(300));
    }

    #[test]
    fn bad_numbers_and_flags_are_named() {
        let mut pairs = BASE.to_vec();
        pairs.push(("OPENREGISTRY_BLOB_REDIRECT", "maybe"));
        let error = read_err(&pairs, None);
        assert!(error.starts_with("openregistry_blob_redirect must be true or false"));
        let mut pairs = BASE.to_vec();
        pairs.push(("OPENREGISTRY_DATABASE_TIMEOUT_MS", "10s"));
        let error = read_err(&pairs, None);
        assert!(error.starts_with("openregistry_database_timeout_ms must be a whole number"));
    }
}
