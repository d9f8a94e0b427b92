//! How every host (native, Cloudflare Workers, Spin) turns its settings into a registry: one
//! settings table and reader ([`settings`]), and one builder ([`build`]) over the host's ports.
//!
//! The builder picks the backends the settings name — Postgres over Neon's HTTP protocol for
//! metadata, S3-compatible storage or a Skynet portal for blobs — and otherwise takes the ones a
//! host supplies itself (natively SQLite and files; on Workers the R2 binding, which a host
//! supplies only when bound and which then wins over the settings' stores; Spin has none, and its
//! settings require remote ones).

pub mod cache;
pub mod settings;

use std::sync::Arc;

use openregistry::auth::{AuthSettings, Signer};
use openregistry::body::Body;
use openregistry::ports::{BlobStore, Clock, HttpClient, Kv, Ports, Random, Sql, Unavailable};
use openregistry::{Config, Registry, RegistryError};
use openregistry_backends::{NeonConfig, NeonSql, S3Config, S3Store, SkynetConfig, SkynetStore};

pub use settings::{EdgeCache, Host, Setting, SettingSource, Settings, SETTINGS};

/// What a host always supplies.
#[derive(Clone)]
pub struct HostPorts {
    pub kv: Arc<dyn Kv>,
    pub http: Arc<dyn HttpClient>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
}

/// A host's embedded defaults, used where the settings name no remote backend.
#[derive(Default)]
pub struct Embedded {
    pub sql: Option<Arc<dyn Sql>>,
    /// The host's own blob store, used whenever given: natively the files (given only when the
    /// settings name no remote store), on Workers the R2 binding (when bound).
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// The token key when `OPENREGISTRY_TOKEN_KEY` is unset (natively: the data directory's).
    pub token_key: Option<Signer>,
    /// [`Settings::auth_settings`] already made (hosts that keep it between requests: parsing the
    /// keys is a large part of a small request in WASM); `None`: made here.
    pub auth: Option<AuthSettings>,
}

impl Settings {
    /// The metadata database the settings name (Postgres over Neon's HTTP protocol), or `None`
    /// for the host's embedded one.
    pub fn remote_sql(&self, http: Arc<dyn HttpClient>) -> Result<Option<Arc<dyn Sql>>, String> {
        let Some(database) = &self.database else {
            return Ok(None);
        };
        let mut neon = NeonConfig::new(&database.url, database.endpoint.as_deref())
            .map_err(|e| format!("OPENREGISTRY_DATABASE_URL: {e}"))?;
        neon.timeout = database.timeout;
        Ok(Some(Arc::new(NeonSql::new(http, neon))))
    }

    /// Where the remote database is, for logs (never the URL: it holds the password).
    pub fn describe_database(&self) -> Option<String> {
        let database = self.database.as_ref()?;
        NeonConfig::new(&database.url, database.endpoint.as_deref())
            .ok()
            .map(|c| format!("postgres over HTTP at {}", c.endpoint))
    }

    /// Whether the settings name a blob store of their own (S3 or Skynet).
    pub fn remote_storage(&self) -> bool {
        self.s3.is_some() || self.skynet.is_some()
    }

    /// The S3 store the settings name, if any (on Workers with an R2 binding, for presigned
    /// redirects to the same bucket).
    pub fn s3_store(
        &self,
        http: Arc<dyn HttpClient>,
        kv: Arc<dyn Kv>,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<S3Store>, String> {
        let Some(s3) = &self.s3 else {
            return Ok(None);
        };
        let config = S3Config {
            endpoint: s3.endpoint.clone(),
            bucket: s3.bucket.clone(),
            region: s3.region.clone(),
            access_key_id: s3.access_key_id.clone(),
            secret_access_key: s3.secret_access_key.clone(),
            path_style: s3.path_style,
            presign: s3.presign,
            timeout: std::time::Duration::from_secs(300),
            tail_ttl: self.config().upload_session_ttl,
        };
        S3Store::new(http, kv, clock, config)
            .map(Some)
            .map_err(|e| format!("OPENREGISTRY_S3_ENDPOINT: {e}"))
    }

    /// The blob store the settings name (S3-compatible storage or a Skynet portal), or `None` for
    /// the host's embedded one.
    pub fn remote_blobs(
        &self,
        http: Arc<dyn HttpClient>,
        kv: Arc<dyn Kv>,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<Arc<dyn BlobStore>>, String> {
        if let Some(s3) = self.s3_store(http.clone(), kv.clone(), clock)? {
            return Ok(Some(Arc::new(s3)));
        }
        let Some(skynet) = self.skynet.as_ref() else {
            return Ok(None);
        };
        let mut config = SkynetConfig::new(&skynet.portal, skynet.api_key.clone());
        config.timeout = skynet.timeout;
        Ok(Some(Arc::new(SkynetStore::new(http, kv, config))))
    }

    /// Where blobs live, for logs.
    pub fn describe_storage(&self) -> Option<String> {
        if let Some(s3) = &self.s3 {
            return Some(format!("S3 bucket {} at {}", s3.bucket, s3.endpoint));
        }
        self.skynet
            .as_ref()
            .map(|skynet| format!("Skynet portal {}", skynet.portal))
    }

    /// The core's settings.
    pub fn config(&self) -> Config {
        Config {
            redirect_blob_downloads: self.blob_redirect,
            upload_origin: self.upload_origin.clone(),
            chunk_min_length: self.chunk_min,
            chunk_max_length: self.chunk_max,
            upload_session_ttl: self.upload_ttl,
            gc_grace: self.gc_grace,
            gc_keep_untagged: self.gc_keep_untagged,
            ..Config::default()
        }
    }

    /// Token settings when authentication is on; `default_key` is asked only when no key is set.
    pub fn auth_settings(
        &self,
        default_key: Option<Signer>,
    ) -> Result<Option<AuthSettings>, String> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let signer = match (&auth.token_key, default_key) {
            (Some(key), _) => {
                Signer::from_paserk(key).map_err(|e| format!("OPENREGISTRY_TOKEN_KEY: {e}"))?
            }
            (None, Some(key)) => key,
            (None, None) => return Err("OPENREGISTRY_TOKEN_KEY is not set".into()),
        };
        let mut core = AuthSettings::new(&auth.service, signer)
            .map_err(|e| format!("OPENREGISTRY_TOKEN_KEY: {e}"))?;
        if let Some(list) = &auth.public_keys {
            core.accept_public_keys(list)
                .map_err(|e| format!("OPENREGISTRY_TOKEN_PUBLIC_KEYS: {e}"))?;
        }
        core.token_ttl = auth.token_ttl;
        // The web app's passkeys sign for one origin: the configured public URL's.
        if let Some(url) = &auth.public_url {
            core = core
                .with_passkeys(url, auth.signup)
                .map_err(|e| format!("OPENREGISTRY_PUBLIC_URL: {e}"))?;
        }
        Ok(Some(core))
    }
}

/// The registry the settings describe, over the host's ports: the one builder of every host.
/// The error names the bad or missing setting.
pub fn build(
    settings: &Settings,
    ports: HostPorts,
    embedded: Embedded,
) -> Result<Registry, String> {
    let sql = match settings.remote_sql(ports.http.clone())? {
        Some(sql) => sql,
        None => embedded
            .sql
            .ok_or("OPENREGISTRY_DATABASE_URL is not set and this host has no embedded database")?,
    };
    let blobs = match embedded.blobs {
        Some(blobs) => blobs,
        None => settings
            .remote_blobs(ports.http.clone(), ports.kv.clone(), ports.clock.clone())?
            .ok_or(
                "neither OPENREGISTRY_S3_ENDPOINT nor OPENREGISTRY_SKYNET_PORTAL is set and this \
                 host has no storage of its own",
            )?,
    };
    let core_ports = Ports {
        kv: ports.kv,
        sql,
        blobs,
        http: ports.http,
        clock: ports.clock,
        random: ports.random,
    };
    let mut registry = Registry::new(core_ports, settings.config());
    let auth = match embedded.auth {
        Some(auth) => Some(auth),
        None => settings.auth_settings(embedded.token_key)?,
    };
    if let Some(auth) = auth {
        registry = registry.with_auth(auth);
    }
    Ok(registry)
}

/// The OCI error answer for a request a host cannot serve (bad configuration): 503.
pub fn misconfigured(message: String) -> http::Response<Body> {
    RegistryError::Unavailable(Unavailable::new("configuration", message)).into_response()
}

/// Aborts the S3 multipart uploads of expired upload sessions, on every host's schedule (natively
/// hourly, on Workers the Cron Trigger): started more than the upload lifetime ago by the bucket's
/// clock and, checked in the sessions' `Kv`, no longer live. Returns how many were aborted.
pub async fn sweep_expired_uploads(
    s3: &S3Store,
    kv: &dyn Kv,
    clock: &dyn Clock,
    ttl: std::time::Duration,
) -> Result<usize, String> {
    let pending = s3
        .uploads_older_than(ttl)
        .await
        .map_err(|e| e.to_string())?;
    let mut aborted = 0;
    for upload in &pending {
        let live =
            openregistry::upload_is_live(kv, &upload.upload_id, clock.now_unix_millis(), ttl)
                .await
                .map_err(|e| e.to_string())?;
        if !live {
            s3.abort_pending(upload).await.map_err(|e| e.to_string())?;
            aborted += 1;
        }
    }
    Ok(aborted)
}
