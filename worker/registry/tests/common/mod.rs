//! Shared setup for the registry's specification tests: a registry over in-memory ports and the
//! real SQLite engine, request helpers, and builders for blobs, manifests and artifacts.
//!
//! Every helper panics with a message that names the request when something unexpected happens,
//! so a failing specification reads as "PUT /v2/... answered 400 {...}".

#![allow(dead_code)]
// Test helpers index what they just built: a panic is a failing test, not a crashed isolate.
#![allow(clippy::indexing_slicing, clippy::string_slice)]

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures_executor::block_on;
use http::{HeaderMap, Method, Request, StatusCode};
use openregistry::auth::token::Signer;
use openregistry::digest::{Algorithm, Digest};
use openregistry::memory::{ManualClock, MemoryBlobStore, MemoryKv, SeededRandom};
use openregistry::ports::{Kv, NoHttpClient, Ports, Sql};
use openregistry::{Body, BodyError, Config, Registry};
use openregistry_sqlite::SqliteSql;
use serde_json::{json, Value};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The 4 MiB manifest limit of the default configuration.
pub const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;

pub const START_MS: u64 = 1_700_000_000_000;

pub fn sha256(bytes: &[u8]) -> String {
    Digest::of(Algorithm::Sha256, bytes).to_string()
}

pub fn sha512(bytes: &[u8]) -> String {
    Digest::of(Algorithm::Sha512, bytes).to_string()
}

/// A PASERK `k4.secret` key derived from a fixed seed.
pub fn secret_key(seed: u8) -> String {
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]));
    format!(
        "k4.secret.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.sk.to_vec())
    )
}

/// A token signer with the key of `seed` ([`secret_key`]).
pub fn test_signer(seed: u8) -> Signer {
    Signer::from_paserk(&secret_key(seed)).expect("a valid k4.secret key")
}

/// An `Authorization: Basic …` value.
pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// A well-formed sha256 digest of content nobody pushed.
pub fn unknown_digest() -> String {
    sha256(b"content that was never pushed anywhere")
}

/// A body streamed in the given chunks, with no known length.
pub fn stream_body(chunks: &[&[u8]]) -> Body {
    let items: Vec<Result<Bytes, BodyError>> = chunks
        .iter()
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures_util::stream::iter(items))
}

/// A body that yields `first`, then breaks off as if the client went away.
pub fn broken_body(first: &[u8]) -> Body {
    let items: Vec<Result<Bytes, BodyError>> = vec![
        Ok(Bytes::copy_from_slice(first)),
        Err(BodyError::Transport("connection reset by peer".into())),
    ];
    Body::from_stream(futures_util::stream::iter(items))
}

/// Deterministic, distinct test content of `len` bytes.
pub fn bytes_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + u64::from(seed) * 7 + 3) as u8)
        .collect()
}

/// A response, with its body read into memory.
#[derive(Debug)]
pub struct Reply {
    pub method: Method,
    pub uri: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    fn what(&self) -> String {
        format!(
            "{} {} answered {} {}",
            self.method,
            self.uri,
            self.status,
            String::from_utf8_lossy(&self.body)
        )
    }

    /// Asserts the status, with the whole exchange in the failure message.
    pub fn expect_status(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "{}", self.what());
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is text"))
    }

    /// A header that must be present.
    pub fn must_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header: {}", self.what()))
    }

    /// Every value of a repeated header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("header value is text"))
            .collect()
    }

    pub fn location(&self) -> String {
        self.must_header("location").to_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.what()))
    }

    /// The OCI error code, after checking the whole error envelope:
    /// `{"errors":[{"code","message","detail"}]}` served as `application/json`.
    pub fn error_code(&self) -> String {
        assert!(
            self.status.is_client_error() || self.status.is_server_error(),
            "not an error: {}",
            self.what()
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.what()
        );
        let body = self.json();
        // The account API (`/api/`) answers `{"error":{"code","message"}}`.
        if let Some(code) = body["error"]["code"].as_str() {
            assert!(
                body["error"]["message"].is_string(),
                "an API error has a message: {}",
                self.what()
            );
            return code.to_owned();
        }
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {}", self.what()));
        assert!(!errors.is_empty(), "empty errors array: {}", self.what());
        for error in errors {
            let error = error
                .as_object()
                .unwrap_or_else(|| panic!("an error is not an object: {}", self.what()));
            assert!(error["code"].is_string(), "code: {}", self.what());
            assert!(error["message"].is_string(), "message: {}", self.what());
            assert!(error.contains_key("detail"), "detail: {}", self.what());
        }
        errors[0]["code"].as_str().unwrap_or_default().to_owned()
    }

    /// Asserts an OCI error response of this status and code.
    pub fn expect_error(&self, status: StatusCode, code: &str) -> &Self {
        self.expect_status(status);
        assert_eq!(self.error_code(), code, "{}", self.what());
        self
    }

    /// The `detail` of the first error.
    pub fn error_detail(&self) -> Value {
        self.json()["errors"][0]["detail"].clone()
    }
}

/// A blob known to be in a repository.
#[derive(Debug, Clone)]
pub struct Blob {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub size: u64,
}

impl Blob {
    pub fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.size })
    }
}

/// A manifest document (pushed or not).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl Manifest {
    pub fn new(media_type: &str, document: &Value) -> Self {
        let bytes = serde_json::to_vec(document).expect("a manifest serializes");
        Self::from_bytes(media_type, bytes)
    }

    pub fn from_bytes(media_type: &str, bytes: Vec<u8>) -> Self {
        Manifest {
            digest: sha256(&bytes),
            size: bytes.len() as u64,
            bytes,
            media_type: media_type.to_owned(),
        }
    }

    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

/// An OCI image manifest over `config` and `layers` (not pushed).
pub fn image_manifest(config: &Blob, layers: &[&Blob]) -> Manifest {
    let layers: Vec<Value> = layers.iter().map(|l| l.descriptor(OCI_LAYER)).collect();
    Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": layers,
        }),
    )
}

/// The registry under test and the in-memory ports behind it.
pub struct TestRegistry {
    pub registry: Registry,
    /// The ports behind `registry` (to set up users and tokens, or build another registry over
    /// the same state).
    pub ports: Ports,
    pub blobs: Arc<MemoryBlobStore>,
    pub clock: Arc<ManualClock>,
}

impl Default for TestRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRegistry {
    pub fn new() -> Self {
        Self::with(Config::default(), Arc::new(MemoryKv::default()))
    }

    /// A registry whose upload sessions live in `kv`.
    pub fn with_kv(kv: Arc<dyn Kv>) -> Self {
        Self::with(Config::default(), kv)
    }

    pub fn with(config: Config, kv: Arc<dyn Kv>) -> Self {
        Self::with_sql(config, kv, |sql| sql)
    }

    /// A registry whose SQL goes through `wrap` (to inject faults or races) to in-memory SQLite.
    pub fn with_sql(
        config: Config,
        kv: Arc<dyn Kv>,
        wrap: impl FnOnce(Arc<dyn Sql>) -> Arc<dyn Sql>,
    ) -> Self {
        let sql = SqliteSql::open_in_memory().expect("in-memory SQLite opens");
        block_on(openregistry::migrations::migrate(&sql, START_MS)).expect("migrations apply");
        let blobs = Arc::new(MemoryBlobStore::default());
        let clock = Arc::new(ManualClock::new(START_MS));
        let ports = Ports {
            kv,
            sql: wrap(Arc::new(sql)),
            blobs: blobs.clone(),
            http: Arc::new(NoHttpClient),
            clock: clock.clone(),
            random: Arc::new(SeededRandom::default()),
        };
        TestRegistry {
            registry: Registry::new(ports.clone(), config),
            ports,
            blobs,
            clock,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests

    pub fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Body) -> Reply {
        let mut request = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body).expect("a valid test request");
        let response = block_on(self.registry.handle(request));
        let (parts, body) = response.into_parts();
        let body = block_on(body.collect(u64::MAX)).expect("response bodies are readable");
        Reply {
            method,
            uri: uri.to_owned(),
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, &[], Body::Empty)
    }

    pub fn get_with(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, uri, headers, Body::Empty)
    }

    pub fn head(&self, uri: &str) -> Reply {
        self.send(Method::HEAD, uri, &[], Body::Empty)
    }

    pub fn delete(&self, uri: &str) -> Reply {
        self.send(Method::DELETE, uri, &[], Body::Empty)
    }

    pub fn post(&self, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Reply {
        self.send(Method::POST, uri, headers, body.into())
    }

    pub fn put(&self, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Reply {
        self.send(Method::PUT, uri, headers, body.into())
    }

    pub fn patch(&self, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Reply {
        self.send(Method::PATCH, uri, headers, body.into())
    }

    // -----------------------------------------------------------------------------------------
    // Blobs and uploads

    /// Pushes `bytes` in one `POST ?digest=` and returns the blob.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> Blob {
        let digest = sha256(bytes);
        let len = bytes.len().to_string();
        self.post(
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[
                ("content-type", "application/octet-stream"),
                ("content-length", &len),
            ],
            bytes.to_vec(),
        )
        .expect_status(StatusCode::CREATED);
        Blob {
            bytes: bytes.to_vec(),
            digest,
            size: bytes.len() as u64,
        }
    }

    /// Opens an upload session; returns its `Location`.
    pub fn start_upload(&self, repo: &str) -> String {
        self.post(&format!("/v2/{repo}/blobs/uploads/"), &[], Body::Empty)
            .expect_status(StatusCode::ACCEPTED)
            .location()
    }

    /// Sends one chunk with `Content-Range: <start>-<end>` and `Content-Length`.
    pub fn patch_chunk(&self, location: &str, start: u64, chunk: &[u8]) -> Reply {
        let end = start + chunk.len() as u64 - 1;
        let range = format!("{start}-{end}");
        let len = chunk.len().to_string();
        self.patch(
            location,
            &[
                ("content-type", "application/octet-stream"),
                ("content-range", &range),
                ("content-length", &len),
            ],
            chunk.to_vec(),
        )
    }

    /// The closing `PUT <location>?digest=<digest>` with `body` (may be empty).
    pub fn finish_upload(&self, location: &str, digest: &str, body: &[u8]) -> Reply {
        let len = body.len().to_string();
        self.put(
            &with_query(location, &format!("digest={digest}")),
            &[
                ("content-type", "application/octet-stream"),
                ("content-length", &len),
            ],
            body.to_vec(),
        )
    }

    /// Asserts that every method on an upload URL answers 404 `BLOB_UPLOAD_UNKNOWN`: its status,
    /// a chunk at `offset`, the closing PUT and a cancel.
    pub fn expect_unknown_upload(&self, location: &str, offset: u64) {
        self.get(location)
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
        self.patch_chunk(location, offset, b"abc")
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
        self.finish_upload(location, &sha256(b"abc"), b"abc")
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
        self.delete(location)
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    }

    /// Reads a blob's bytes through the API (asserting 200).
    pub fn blob_bytes(&self, repo: &str, digest: &str) -> Bytes {
        self.get(&format!("/v2/{repo}/blobs/{digest}"))
            .expect_status(StatusCode::OK)
            .body
            .clone()
    }

    // -----------------------------------------------------------------------------------------
    // Manifests

    /// `PUT /v2/<repo>/manifests/<reference>` with the manifest's media type as Content-Type.
    pub fn put_manifest(&self, repo: &str, reference: &str, manifest: &Manifest) -> Reply {
        self.put_manifest_bytes(repo, reference, &manifest.media_type, &manifest.bytes)
    }

    pub fn put_manifest_bytes(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Reply {
        let len = bytes.len().to_string();
        self.put(
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", content_type), ("content-length", &len)],
            bytes.to_vec(),
        )
    }

    /// Pushes a manifest, asserting 201.
    pub fn push_manifest(&self, repo: &str, reference: &str, manifest: &Manifest) -> Reply {
        let reply = self.put_manifest(repo, reference, manifest);
        reply.expect_status(StatusCode::CREATED);
        reply
    }

    /// Pushes a config and a layer derived from `seed`, and returns an OCI image manifest over
    /// them (not pushed).
    pub fn prepare_image(&self, repo: &str, seed: &str) -> Manifest {
        let (config, layer) = self.push_image_blobs(repo, seed);
        image_manifest(&config, &[&layer])
    }

    /// Pushes the config and the layer `prepare_image` derives from `seed`, and returns them.
    pub fn push_image_blobs(&self, repo: &str, seed: &str) -> (Blob, Blob) {
        let config = self.push_blob(repo, format!(r#"{{"seed":"{seed}"}}"#).as_bytes());
        let layer = self.push_blob(repo, format!("layer of {seed}").as_bytes());
        (config, layer)
    }

    /// Pushes an OCI image (blobs and manifest) under `reference`.
    pub fn push_image(&self, repo: &str, reference: &str, seed: &str) -> Manifest {
        let manifest = self.prepare_image(repo, seed);
        self.push_manifest(repo, reference, &manifest);
        manifest
    }

    /// Pushes the empty config `{}` and returns it.
    pub fn push_empty_config(&self, repo: &str) -> Blob {
        self.push_blob(repo, b"{}")
    }

    /// An artifact manifest (OCI image manifest with `artifactType`, empty config) that refers
    /// to `subject`; pushes its blobs, not the manifest.
    pub fn prepare_referrer(
        &self,
        repo: &str,
        subject: &Manifest,
        artifact_type: &str,
        annotations: Option<Value>,
    ) -> Manifest {
        let config = self.push_empty_config(repo);
        let layer = self.push_blob(
            repo,
            format!("{artifact_type} about {}", subject.digest).as_bytes(),
        );
        let mut document = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config.descriptor(OCI_EMPTY),
            "layers": [layer.descriptor("application/octet-stream")],
            "subject": subject.descriptor(),
        });
        if let Some(annotations) = annotations {
            document["annotations"] = annotations;
        }
        Manifest::new(OCI_MANIFEST, &document)
    }

    // -----------------------------------------------------------------------------------------
    // Listings

    /// The `tags` array of `tags/list` (asserting 200).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        strings(
            &self
                .get(&format!("/v2/{repo}/tags/list"))
                .expect_status(StatusCode::OK)
                .json()["tags"],
        )
    }
}

/// The strings of a JSON array (`[]` for null).
pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Appends a query parameter to a URL that may already have a query.
pub fn with_query(url: &str, pair: &str) -> String {
    if url.contains('?') {
        format!("{url}&{pair}")
    } else {
        format!("{url}?{pair}")
    }
}

/// The upload id in an upload `Location` (`/v2/<name>/blobs/uploads/<id>.<seq>`).
pub fn upload_id(location: &str) -> String {
    let last = location.rsplit('/').next().expect("a path");
    last.split('.').next().expect("an id").to_owned()
}

/// The `<url>` of a `Link: <url>; rel="next"` header.
pub fn link_target(link: &str) -> String {
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let start = link.find('<').expect("<") + 1;
    let end = link.find('>').expect(">");
    link[start..end].to_owned()
}
