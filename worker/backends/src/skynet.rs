//! A `BlobStore` on a Skynet portal, written against the `HttpClient` and `Kv` ports so every host
//! uses the same code.
//!
//! Skynet's TUS endpoint takes any number of bytes in an upload's last PATCH, but every other PATCH
//! must be a multiple of 40 MiB ([`TUS_ALIGN`]). OCI clients send chunks of any size, one request
//! at a time, to a stateless handler. So the store:
//! - cuts the incoming stream into 40 MiB pieces (the core's part planner decides where), each uploaded as one TUS *partial* upload
//!   (`Upload-Concat: partial`), retried from the portal's `Upload-Offset` after a failure;
//! - keeps the unaligned rest (the *tail*) in `Kv` ([`crate::tail`]), listed in the upload
//!   handle; the next request continues from them;
//! - at the end uploads the tail as the last partial and concatenates all partials into **one
//!   skylink** (`Upload-Concat: final;...`), or, for a blob smaller than one piece, posts it as one
//!   skyfile.
//!
//! Memory per request: at most one 40 MiB piece plus the chunk being read. A skylink is not a
//! content hash: the core verifies digests itself and keeps `digest → skylink` in SQL.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, Method, Request, StatusCode};
use serde::{Deserialize, Serialize};

use openregistry::body::{Body, ByteStream};
use openregistry::digest::Digest;
use openregistry::ports::{
    BlobStore, ChunkLimits, HttpClient, Kv, StoreError, Timeout, Unavailable,
};
use openregistry::range::ByteRange;

use crate::tail::{tail_len, PartCutter, Segment, Tails};

/// Every TUS PATCH but an upload's last must be a multiple of this (skyd's erasure-coded chunk).
pub const TUS_ALIGN: u64 = 41_943_040;

/// How often one piece is retried (from the portal's offset) before the request fails.
const PIECE_ATTEMPTS: u32 = 3;

/// Where the portal is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkynetConfig {
    /// Base URL, e.g. `https://siasky.net` (no trailing slash).
    pub portal: String,
    /// Sent as `Skynet-Api-Key` on every request.
    pub api_key: Option<String>,
    /// Per request; TUS PATCHes only return once the data is on the network.
    pub timeout: Duration,
    /// How long tail segments live in `Kv` (as long as an upload session).
    pub tail_ttl: Duration,
}

impl SkynetConfig {
    pub fn new(portal: &str, api_key: Option<String>) -> Self {
        Self {
            portal: portal.trim_end_matches('/').to_owned(),
            api_key: api_key.filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(300),
            tail_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The blob store.
#[derive(Clone)]
pub struct SkynetStore {
    http: Arc<dyn HttpClient>,
    tails: Tails,
    config: SkynetConfig,
}

/// An upload in progress, as kept in the upload session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Handle {
    id: String,
    /// Finished TUS partial uploads, each exactly `TUS_ALIGN` bytes, in order.
    parts: Vec<String>,
    /// The unaligned tail, in `Kv`, in order.
    segments: Vec<Segment>,
}

impl Handle {
    fn parse(text: &str) -> Result<Self, StoreError> {
        serde_json::from_str(text).map_err(|_| StoreError::NotFound(format!("upload {text:?}")))
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn tail_len(&self) -> u64 {
        tail_len(&self.segments)
    }

    fn stored(&self) -> u64 {
        self.parts.len() as u64 * TUS_ALIGN + self.tail_len()
    }
}

fn portal_error(what: &str, status: StatusCode, body: &[u8]) -> StoreError {
    let text = String::from_utf8_lossy(body.get(..300).unwrap_or(body))
        .trim()
        .to_owned();
    StoreError::Unavailable(Unavailable::new(
        "skynet",
        format!("{what}: HTTP {}: {text}", status.as_u16()),
    ))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A V1 skylink as the portal prints it: 46 characters of unpadded base64url.
fn valid_skylink(text: &str) -> bool {
    text.len() == 46
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The skylink in a finished TUS upload's HEAD: nginx's `Skynet-Skylink`, or skyd's
/// `Upload-Metadata` entry `Skylink <base64>`.
fn skylink_from_head(headers: &HeaderMap) -> Option<String> {
    if let Some(link) = header_str(headers, "skynet-skylink") {
        return Some(link.trim().to_owned());
    }
    header_str(headers, "upload-metadata")?
        .split(',')
        .filter_map(|pair| pair.trim().split_once(' '))
        .find(|(key, _)| *key == "Skylink")
        .and_then(|(_, value)| base64::engine::general_purpose::STANDARD.decode(value).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

impl SkynetStore {
    pub fn new(http: Arc<dyn HttpClient>, kv: Arc<dyn Kv>, config: SkynetConfig) -> Self {
        Self {
            http,
            tails: Tails::new(kv, "skynet-tail", config.tail_ttl),
            config,
        }
    }

    fn request(&self, method: Method, url: &str) -> http::request::Builder {
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(key) = &self.config.api_key {
            builder = builder.header("skynet-api-key", key);
        }
        builder
    }

    /// Sends a request and reads a small answer (not for downloads).
    async fn exchange(
        &self,
        what: &str,
        builder: http::request::Builder,
        body: Body,
    ) -> Result<(StatusCode, HeaderMap, Bytes), StoreError> {
        let mut request = builder.body(body).map_err(|e| {
            StoreError::Unavailable(Unavailable::new("skynet", format!("{what}: {e}")))
        })?;
        request
            .extensions_mut()
            .insert(Timeout(self.config.timeout));
        let response = self.http.send(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect(1024 * 1024)
            .await
            .map_err(|e| {
                StoreError::Unavailable(Unavailable::new("skynet", format!("{what}: {e}")))
            })?;
        Ok((status, headers, body))
    }

    fn tus(&self, method: Method, url: &str) -> http::request::Builder {
        self.request(method, url).header("tus-resumable", "1.0.0")
    }

    /// Uploads one piece as a TUS partial upload; resumes from the portal's offset on failure.
    async fn upload_piece(&self, data: Bytes) -> Result<String, StoreError> {
        let create = self
            .tus(Method::POST, &format!("{}/skynet/tus", self.config.portal))
            .header("upload-length", data.len().to_string())
            .header("upload-concat", "partial");
        let (status, headers, body) = self
            .exchange("creating a TUS upload", create, Body::Empty)
            .await?;
        if status != StatusCode::CREATED {
            return Err(portal_error("creating a TUS upload", status, &body));
        }
        let location = header_str(&headers, "location")
            .ok_or_else(|| portal_error("TUS upload without Location", status, &body))?
            .to_owned();
        let total = data.len() as u64;
        let mut offset = 0u64;
        let mut last_error = None;
        for _ in 0..PIECE_ATTEMPTS {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let patch = self
                .tus(Method::PATCH, &location)
                .header("upload-offset", offset.to_string())
                .header("upload-concat", "partial")
                .header(header::CONTENT_TYPE, "application/offset+octet-stream");
            match self
                .exchange("uploading a piece", patch, Body::Full(data.slice(start..)))
                .await
            {
                Ok((StatusCode::NO_CONTENT, headers, _))
                    if header_str(&headers, "upload-offset") == Some(&total.to_string()) =>
                {
                    return Ok(location);
                }
                Ok((status, _, body)) => {
                    last_error = Some(portal_error("uploading a piece", status, &body))
                }
                Err(e) => last_error = Some(e),
            }
            // Ask the portal how much it kept, and continue from there.
            let head = self.tus(Method::HEAD, &location);
            match self.exchange("resuming a piece", head, Body::Empty).await {
                Ok((StatusCode::OK, headers, _)) => {
                    offset = header_str(&headers, "upload-offset")
                        .and_then(|o| o.parse().ok())
                        .filter(|o| *o <= total)
                        .unwrap_or(0);
                    if offset == total {
                        return Ok(location);
                    }
                }
                Ok(_) | Err(_) => offset = 0,
            }
        }
        Err(last_error.unwrap_or_else(|| {
            StoreError::Unavailable(Unavailable::new("skynet", "piece upload failed"))
        }))
    }

    /// Concatenates finished partial uploads into one skyfile; returns its skylink.
    async fn concatenate(&self, parts: &[String], filename: &str) -> Result<String, StoreError> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let metadata = format!(
            "filename {},filetype {}",
            b64(filename),
            b64("application/octet-stream")
        );
        let create = self
            .tus(Method::POST, &format!("{}/skynet/tus", self.config.portal))
            .header("upload-concat", format!("final;{}", parts.join(" ")))
            .header("upload-metadata", metadata);
        let (status, headers, body) = self
            .exchange("concatenating pieces", create, Body::Empty)
            .await?;
        if status != StatusCode::CREATED {
            return Err(portal_error("concatenating pieces", status, &body));
        }
        let location = header_str(&headers, "location")
            .ok_or_else(|| portal_error("concatenation without Location", status, &body))?
            .to_owned();
        let (status, headers, body) = self
            .exchange(
                "reading the skylink",
                self.tus(Method::HEAD, &location),
                Body::Empty,
            )
            .await?;
        if status != StatusCode::OK {
            return Err(portal_error("reading the skylink", status, &body));
        }
        skylink_from_head(&headers)
            .filter(|l| valid_skylink(l))
            .ok_or_else(|| portal_error("finished upload without a skylink", status, &body))
    }

    /// Uploads a blob smaller than one piece as one skyfile; returns its skylink.
    async fn upload_skyfile(&self, data: Bytes, filename: &str) -> Result<String, StoreError> {
        let url = format!(
            "{}/skynet/skyfile?filename={}",
            self.config.portal,
            form_urlencoded::byte_serialize(filename.as_bytes()).collect::<String>()
        );
        let post = self
            .request(Method::POST, &url)
            .header(header::CONTENT_TYPE, "application/octet-stream");
        let (status, _, body) = self
            .exchange("uploading a skyfile", post, Body::Full(data))
            .await?;
        if status != StatusCode::OK {
            return Err(portal_error("uploading a skyfile", status, &body));
        }
        #[derive(Deserialize)]
        struct Answer {
            skylink: String,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| portal_error("unreadable skyfile answer", status, &body))?;
        let link = answer.skylink.trim_start_matches("sia://").to_owned();
        if valid_skylink(&link) {
            Ok(link)
        } else {
            Err(portal_error(
                "skyfile answer without a skylink",
                status,
                &body,
            ))
        }
    }
}

fn filename_for(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().name(), digest.hex())
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl BlobStore for SkynetStore {
    async fn begin_upload(&self, upload_id: &str) -> Result<String, StoreError> {
        Ok(Handle {
            id: upload_id.to_owned(),
            ..Handle::default()
        }
        .encode())
    }

    async fn append(
        &self,
        handle: &str,
        offset: u64,
        mut bytes: ByteStream,
    ) -> Result<String, StoreError> {
        let mut handle = Handle::parse(handle)?;
        if handle.stored() != offset {
            return Err(StoreError::Refused(format!(
                "upload holds {} bytes, not {offset}",
                handle.stored()
            )));
        }
        // Which bytes complete a piece and which extend the tail: the core's part planner.
        let mut cutter = PartCutter::new(TUS_ALIGN, handle.tail_len());
        while let Some(chunk) = bytes.next().await {
            for fresh in cutter.push(chunk?) {
                let complete = self.tails.complete_part(&handle.segments, fresh).await?;
                let url = self.upload_piece(complete).await?;
                handle.parts.push(url);
                handle.segments.clear();
            }
        }
        let stored = handle.stored();
        self.tails
            .save(&handle.id, &mut handle.segments, stored, cutter.rest())
            .await?;
        Ok(handle.encode())
    }

    async fn finish_upload(
        &self,
        handle: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<String, StoreError> {
        let mut handle = Handle::parse(handle)?;
        if handle.stored() != size {
            return Err(StoreError::Refused(format!(
                "upload holds {} bytes, not {size}",
                handle.stored()
            )));
        }
        let tail = self.tails.load(&handle.segments).await?;
        let filename = filename_for(digest);
        let skylink = if handle.parts.is_empty() {
            self.upload_skyfile(tail, &filename).await?
        } else {
            if !tail.is_empty() {
                let url = self.upload_piece(tail).await?;
                handle.parts.push(url);
            }
            self.concatenate(&handle.parts, &filename).await?
        };
        self.tails.forget(&handle.segments).await;
        Ok(skylink)
    }

    async fn abort_upload(&self, handle: &str) -> Result<(), StoreError> {
        // Finished partial uploads are pruned by the portal after 24 hours.
        self.tails.forget(&Handle::parse(handle)?.segments).await;
        Ok(())
    }

    async fn read(&self, locator: &str, range: Option<ByteRange>) -> Result<Body, StoreError> {
        if !valid_skylink(locator) {
            return Err(StoreError::NotFound(format!("skylink {locator:?}")));
        }
        let mut builder = self.request(Method::GET, &format!("{}/{locator}", self.config.portal));
        if let Some(range) = range {
            builder = builder.header(
                header::RANGE,
                format!("bytes={}-{}", range.start, range.end),
            );
        }
        let mut request = builder
            .body(Body::Empty)
            .map_err(|e| StoreError::Unavailable(Unavailable::new("skynet", e.to_string())))?;
        request
            .extensions_mut()
            .insert(Timeout(self.config.timeout));
        let response = self.http.send(request).await?;
        match response.status() {
            StatusCode::OK if range.is_none() => Ok(response.into_body()),
            StatusCode::PARTIAL_CONTENT if range.is_some() => Ok(response.into_body()),
            StatusCode::NOT_FOUND => Err(StoreError::NotFound(format!("skylink {locator}"))),
            StatusCode::RANGE_NOT_SATISFIABLE => Err(StoreError::RangeNotSatisfiable),
            status => {
                let body = response.into_body().collect(4096).await.unwrap_or_default();
                Err(portal_error("downloading", status, &body))
            }
        }
    }

    async fn redirect_url(&self, locator: &str) -> Result<Option<String>, StoreError> {
        Ok(valid_skylink(locator).then(|| format!("{}/{locator}", self.config.portal)))
    }

    async fn delete(&self, _locator: &str) -> Result<(), StoreError> {
        // Portals expose no delete: content lives until nobody pins it. Forgetting the skylink in
        // SQL (done by the caller) is what removes the blob from the registry.
        Ok(())
    }

    fn chunk_limits(&self) -> ChunkLimits {
        ChunkLimits {
            min: Some(TUS_ALIGN),
            max: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skylinks_come_from_the_nginx_header_or_the_tus_metadata() {
        let link = "AACogzrAimYPG42tDOKhS3lXZD8YvlF8Q8R17afe95iV2Q";
        let mut headers = HeaderMap::new();
        let meta = format!(
            "filename ZmlsZQ==,Skylink {}",
            base64::engine::general_purpose::STANDARD.encode(link)
        );
        headers.insert("upload-metadata", meta.parse().expect("header"));
        assert_eq!(skylink_from_head(&headers).as_deref(), Some(link));
        headers.insert("skynet-skylink", link.parse().expect("header"));
        assert_eq!(skylink_from_head(&headers).as_deref(), Some(link));
    }

    #[test]
    fn only_v1_skylinks_are_used_in_urls() {
        assert!(valid_skylink(
            "AACogzrAimYPG42tDOKhS3lXZD8YvlF8Q8R17afe95iV2Q"
        ));
        assert!(!valid_skylink("../../etc/passwd"));
        assert!(!valid_skylink(
            "AACogzrAimYPG42tDOKhS3lXZD8YvlF8Q8R17afe95iV2?"
        ));
    }

    #[test]
    fn a_handle_counts_pieces_and_tail() {
        let handle = Handle {
            id: "x".into(),
            parts: vec!["a".into(), "b".into()],
            segments: vec![Segment {
                key: "k".into(),
                len: 5,
            }],
        };
        assert_eq!(handle.stored(), 2 * TUS_ALIGN + 5);
        assert_eq!(Handle::parse(&handle.encode()).expect("round trip"), handle);
    }
}
