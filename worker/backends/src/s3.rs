//! A `BlobStore` on any S3-compatible object storage (AWS S3, Cloudflare R2's S3 API, Sia's
//! renterd, Storj, Filebase, MinIO, Ceph, Garage), written against the `HttpClient` and `Kv` ports
//! so every host uses the same code. Requests are signed with AWS Signature V4 by `rusty-s3`, a
//! sans-IO signer (it builds presigned URLs and parses answers; this module sends them), so the
//! same signing runs natively and in both WASM targets.
//!
//! Objects (each one's key is the blob's locator, unique to its upload, so the garbage collector
//! never deletes bytes a blob pushed again relies on):
//! - `blobs/<algorithm>/<hex>.<upload id>`: a blob smaller than one part;
//! - `uploads/<upload id>`: a blob of more than one part, where its multipart upload completed
//!   (no copy: the digest is known only at the end, and a copy would double the writes).
//!
//! An upload streams into an S3 multipart upload in parts of [`PART_SIZE`], cut by the core's
//! part planner; the bytes of a request that do not complete a part wait in `Kv`
//! ([`crate::tail`]) for the next request. A blob smaller than one part is one `PutObject` of
//! its tail. The multipart upload is created with the first part,
//! aborted when the upload is cancelled; part numbers make a retried append idempotent, and a
//! finish retried after it completed finds the object.
//!
//! Memory per request: at most one part plus the chunk being read.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, Method, Request, StatusCode};
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CompleteMultipartUploadResponse,
    CreateMultipartUpload, DeleteObject, GetObject, HeadObject, PutObject, UploadPart,
};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::{Deserialize, Serialize};

use openregistry::body::{Body, ByteStream};
use openregistry::digest::Digest;
use openregistry::ports::{
    BlobStore, ChunkLimits, Clock, HttpClient, Kv, StoreError, Timeout, Unavailable,
};
use openregistry::range::ByteRange;

use crate::tail::{tail_len, PartCutter, Segment, Tails};

/// The size of every part but an upload's last: S3's minimum is 5 MiB and its maximum part
/// count 10 000; 8 MiB (what the AWS CLI uses) allows blobs of up to 78 GiB.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;

/// S3's (and R2's) most parts in one multipart upload.
const MAX_PARTS: usize = 10_000;

/// How often one part is sent before the request fails.
const PART_ATTEMPTS: u32 = 3;

/// How long the signature of a request this store sends itself stays valid (it is sent at once).
const REQUEST_SIGNATURE_TTL: Duration = Duration::from_secs(15 * 60);

/// Where the bucket is and how to sign for it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The service's base URL, e.g. `https://s3.eu-central-1.amazonaws.com` or
    /// `https://<account>.r2.cloudflarestorage.com`.
    pub endpoint: String,
    pub bucket: String,
    /// `auto` for R2; the bucket's region for AWS.
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// How long a presigned download URL (blob redirects) stays valid.
    pub presign: Duration,
    /// Per request.
    pub timeout: Duration,
    /// How long tail segments live in `Kv` (as long as an upload session).
    pub tail_ttl: Duration,
}

/// Never prints the keys.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

/// Why an [`S3Config`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct S3ConfigError(String);

/// The blob store.
#[derive(Clone)]
pub struct S3Store {
    http: Arc<dyn HttpClient>,
    clock: Arc<dyn Clock>,
    tails: Tails,
    bucket: Bucket,
    credentials: Credentials,
    config: S3Config,
}

/// An upload in progress in parts of [`PART_SIZE`], as kept in the upload session: this store's
/// and the Worker's R2 store's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartHandle {
    pub id: String,
    /// The multipart upload, created with the first whole part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<String>,
    /// The `ETag`s of the uploaded parts (part `n` is entry `n - 1`), each [`PART_SIZE`] bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etags: Vec<String>,
    /// The unaligned tail, in `Kv`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
}

impl MultipartHandle {
    /// A fresh upload's handle, encoded.
    pub fn begin(upload_id: &str) -> String {
        Self {
            id: upload_id.to_owned(),
            ..Self::default()
        }
        .encode()
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        serde_json::from_str(text).map_err(|_| StoreError::NotFound(format!("upload {text:?}")))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The bytes stored so far: whole parts and the tail.
    pub fn stored(&self) -> u64 {
        self.etags.len() as u64 * PART_SIZE + tail_len(&self.segments)
    }

    /// `Refused` unless `stored` is what the upload holds (the core's offset check).
    pub fn check_stored(&self, stored: u64) -> Result<(), StoreError> {
        if self.stored() == stored {
            Ok(())
        } else {
            Err(StoreError::Refused(format!(
                "upload holds {} bytes, not {stored}",
                self.stored()
            )))
        }
    }

    /// `Refused` when one more whole part would leave no part number for the last one.
    pub fn check_room(&self, service: &str) -> Result<(), StoreError> {
        if self.etags.len() + 1 >= MAX_PARTS {
            return Err(StoreError::Refused(format!(
                "a blob on {service} holds at most {} bytes here",
                (MAX_PARTS as u64 - 1) * PART_SIZE
            )));
        }
        Ok(())
    }
}

/// The object key of a blob stored in one `PutObject`: its locator, unique to its upload (so the
/// garbage collector, which deletes a locator only after its row, never deletes the bytes of a
/// blob pushed again: that one has its own key).
fn blob_key(digest: &Digest, upload_id: &str) -> String {
    format!(
        "blobs/{}/{}.{upload_id}",
        digest.algorithm().name(),
        digest.hex()
    )
}

/// The key a multi-part upload completes at: its locator.
fn upload_key(upload_id: &str) -> String {
    format!("uploads/{upload_id}")
}

/// A locator of this store's shapes, nothing that could name another key:
/// `blobs/<algorithm>/<hex>.<upload id>` (`blobs/<algorithm>/<hex>` for blobs stored before
/// locators were unique), or `uploads/<upload id>` (where multi-part uploads complete, here and in
/// the Worker's R2 store, presigned through this store for redirects).
pub fn valid_locator(locator: &str) -> bool {
    if let Some(id) = locator.strip_prefix("uploads/") {
        return !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric());
    }
    let Some(rest) = locator.strip_prefix("blobs/") else {
        return false;
    };
    let Some((algorithm, name)) = rest.split_once('/') else {
        return false;
    };
    let hex = match name.split_once('.') {
        Some((hex, id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) => hex,
        Some(_) => return false,
        None => name,
    };
    !algorithm.is_empty()
        && algorithm.bytes().all(|b| b.is_ascii_alphanumeric())
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `<Code>` of an S3 error document. (A substring search: the code is all this store reads
/// of an error, and a full XML parser for it would be one more dependency in both WASM builds.)
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let (_, rest) = text.split_once("<Code>")?;
    let (code, _) = rest.split_once("</Code>")?;
    Some(code.trim().to_owned())
}

/// An S3 error answer as a store error: overload and server faults are worth retrying (503),
/// anything else (credentials, a missing bucket, a refused request) is not (500).
fn s3_error(what: &str, status: StatusCode, body: &[u8]) -> StoreError {
    let code = error_code(body).unwrap_or_default();
    let message = format!("{what}: HTTP {} {code}", status.as_u16());
    let retryable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || matches!(
            code.as_str(),
            "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
        );
    if retryable {
        StoreError::Unavailable(Unavailable::new("s3", message))
    } else {
        StoreError::Failed(format!("s3 {message}"))
    }
}

fn transport_error(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(Unavailable::new("s3", format!("{what}: {error}")))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether an answer says the multipart upload is gone (completed or aborted).
fn no_such_upload(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::NOT_FOUND && error_code(body).as_deref() == Some("NoSuchUpload")
}

impl S3Store {
    pub fn new(
        http: Arc<dyn HttpClient>,
        kv: Arc<dyn Kv>,
        clock: Arc<dyn Clock>,
        config: S3Config,
    ) -> Result<Self, S3ConfigError> {
        let endpoint = url::Url::parse(&config.endpoint)
            .map_err(|e| S3ConfigError(format!("endpoint {:?}: {e}", config.endpoint)))?;
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, config.bucket.clone(), config.region.clone())
            .map_err(|e| {
                S3ConfigError(format!(
                    "bucket {:?} at {:?}: {e}{}",
                    config.bucket,
                    config.endpoint,
                    if config.path_style {
                        ""
                    } else {
                        " (an IP address or a bucket name that is no host name needs path-style addressing)"
                    }
                ))
            })?;
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.clone(),
        );
        Ok(Self {
            http,
            clock,
            tails: Tails::new(kv, "s3-tail", config.tail_ttl),
            bucket,
            credentials,
            config,
        })
    }

    fn now(&self) -> jiff::Timestamp {
        let millis = i64::try_from(self.clock.now_unix_millis()).unwrap_or(i64::MAX);
        jiff::Timestamp::from_millisecond(millis).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// Signs `action` for a request sent now.
    fn signed<'a>(&self, action: &impl S3Action<'a>) -> String {
        action
            .sign_with_time(REQUEST_SIGNATURE_TTL, &self.now())
            .to_string()
    }

    fn request(&self, method: Method, url: &str) -> http::request::Builder {
        Request::builder().method(method).uri(url)
    }

    /// Sends a request and returns its answer unread.
    async fn send(
        &self,
        what: &str,
        builder: http::request::Builder,
        body: Body,
    ) -> Result<http::Response<Body>, StoreError> {
        let mut request = builder.body(body).map_err(|e| transport_error(what, e))?;
        request
            .extensions_mut()
            .insert(Timeout(self.config.timeout));
        Ok(self.http.send(request).await?)
    }

    /// Sends a request and reads a small answer (not for downloads).
    async fn exchange(
        &self,
        what: &str,
        builder: http::request::Builder,
        body: Body,
    ) -> Result<(StatusCode, HeaderMap, Bytes), StoreError> {
        let response = self.send(what, builder, body).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect(1024 * 1024)
            .await
            .map_err(|e| transport_error(what, e))?;
        Ok((status, headers, body))
    }

    /// `PutObject`: a whole object in one request.
    async fn put_object(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let url = self.signed(&PutObject::new(&self.bucket, Some(&self.credentials), key));
        let builder = self
            .request(Method::PUT, &url)
            .header(header::CONTENT_LENGTH, data.len())
            .header(header::CONTENT_TYPE, "application/octet-stream");
        let (status, _, body) = self
            .exchange("storing a blob", builder, Body::Full(data))
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(s3_error("storing a blob", status, &body))
        }
    }

    /// `CreateMultipartUpload` at `key`; returns its upload id.
    async fn create_multipart(&self, key: &str) -> Result<String, StoreError> {
        let what = "starting a multipart upload";
        let url = self.signed(&CreateMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
        ));
        let (status, _, body) = self
            .exchange(what, self.request(Method::POST, &url), Body::Empty)
            .await?;
        if !status.is_success() {
            return Err(s3_error(what, status, &body));
        }
        let text = String::from_utf8_lossy(&body);
        CreateMultipartUpload::parse_response(&text)
            .map(|answer| answer.upload_id().to_owned())
            .map_err(|e| s3_error(&format!("{what}: unreadable answer ({e})"), status, &body))
    }

    /// `UploadPart`, retried; returns the part's `ETag`. `Ok(None)`: the multipart upload is gone.
    async fn upload_part(
        &self,
        key: &str,
        multipart: &str,
        number: usize,
        data: Bytes,
    ) -> Result<Option<String>, StoreError> {
        let what = "uploading a part";
        let number = u16::try_from(number)
            .map_err(|_| StoreError::Refused(format!("part {number} is past S3's last")))?;
        let mut last_error = None;
        for _ in 0..PART_ATTEMPTS {
            let url = self.signed(&UploadPart::new(
                &self.bucket,
                Some(&self.credentials),
                key,
                number,
                multipart,
            ));
            let builder = self
                .request(Method::PUT, &url)
                .header(header::CONTENT_LENGTH, data.len());
            match self.exchange(what, builder, Body::Full(data.clone())).await {
                Ok((status, headers, _)) if status.is_success() => {
                    return match header_str(&headers, "etag") {
                        Some(etag) => Ok(Some(etag.to_owned())),
                        None => Err(s3_error(&format!("{what}: no ETag"), status, &[])),
                    };
                }
                Ok((status, _, body)) if no_such_upload(status, &body) => return Ok(None),
                Ok((status, _, body)) => {
                    let error = s3_error(what, status, &body);
                    if let StoreError::Failed(_) = error {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| transport_error(what, "no answer")))
    }

    /// `CompleteMultipartUpload`. `Ok(false)`: the multipart upload is gone (completed before).
    async fn complete_multipart(
        &self,
        key: &str,
        multipart: &str,
        etags: &[String],
    ) -> Result<bool, StoreError> {
        let what = "completing a multipart upload";
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            multipart,
            etags.iter().map(String::as_str),
        );
        let url = self.signed(&action);
        let xml = action.body();
        let builder = self
            .request(Method::POST, &url)
            .header(header::CONTENT_LENGTH, xml.len())
            .header(header::CONTENT_TYPE, "application/xml");
        let (status, _, body) = self
            .exchange(what, builder, Body::Full(Bytes::from(xml)))
            .await?;
        if no_such_upload(status, &body) {
            return Ok(false);
        }
        // S3 may answer 200 and still fail: the body says which.
        let text = String::from_utf8_lossy(&body);
        if status.is_success() && CompleteMultipartUploadResponse::parse(&text).is_ok() {
            Ok(true)
        } else {
            Err(s3_error(what, status, &body))
        }
    }

    /// `AbortMultipartUpload`; a multipart upload already gone is fine.
    async fn abort_multipart(&self, key: &str, multipart: &str) -> Result<(), StoreError> {
        let what = "aborting a multipart upload";
        let url = self.signed(&AbortMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            multipart,
        ));
        let (status, _, body) = self
            .exchange(what, self.request(Method::DELETE, &url), Body::Empty)
            .await?;
        if status.is_success() || no_such_upload(status, &body) {
            Ok(())
        } else {
            Err(s3_error(what, status, &body))
        }
    }

    /// `HeadObject`: the object's size, or `None` when there is none.
    async fn object_size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let what = "looking up an object";
        let url = self.signed(&HeadObject::new(&self.bucket, Some(&self.credentials), key));
        let (status, headers, body) = self
            .exchange(what, self.request(Method::HEAD, &url), Body::Empty)
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(header_str(&headers, "content-length")
                .and_then(|l| l.parse().ok())
                .or(Some(0))),
            status => Err(s3_error(what, status, &body)),
        }
    }

    /// `DeleteObject` (S3 answers 204 whether or not the object was there).
    async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        let what = "deleting an object";
        let url = self.signed(&DeleteObject::new(
            &self.bucket,
            Some(&self.credentials),
            key,
        ));
        let (status, _, body) = self
            .exchange(what, self.request(Method::DELETE, &url), Body::Empty)
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(s3_error(what, status, &body))
        }
    }

    /// A request rusty-s3 has no action for, signed with the same signer: `headers` (lowercase,
    /// sorted by name) are signed and sent.
    fn signed_custom(
        &self,
        method: rusty_s3::Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> String {
        rusty_s3::signing::sign(
            &self.now(),
            method,
            self.bucket.object_url(key),
            self.credentials.key(),
            self.credentials.secret(),
            self.credentials.token(),
            self.bucket.region(),
            REQUEST_SIGNATURE_TTL.as_secs(),
            query.iter().copied(),
            headers.iter().copied(),
        )
        .to_string()
    }

    /// Makes the multipart upload of `handle` the object `uploads/<id>`: uploads the tail as the
    /// last part and completes. An upload completed before (by `read_upload`, or by a finish that
    /// was interrupted after it) is found by its size and left as it is.
    async fn complete_upload(
        &self,
        handle: &MultipartHandle,
        multipart: &str,
    ) -> Result<(), StoreError> {
        let key = upload_key(&handle.id);
        if self.object_size(&key).await? == Some(handle.stored()) {
            return Ok(());
        }
        let tail = self.tails.load(&handle.segments).await?;
        let mut etags = handle.etags.clone();
        if !tail.is_empty() {
            match self
                .upload_part(&key, multipart, etags.len() + 1, tail)
                .await?
            {
                Some(etag) => etags.push(etag),
                None => return Ok(()), // completed before
            }
        }
        self.complete_multipart(&key, multipart, &etags).await?;
        Ok(())
    }

    /// The multipart uploads under `uploads/` started more than `older_than` ago: uploads whose
    /// sessions have probably expired (the caller checks them before [`Self::abort_pending`]:
    /// an S3 server's `Initiated` may be wrong, moto's is a fixed date in 2010). At most 100
    /// pages of 1000 uploads per call; the next call continues.
    /// (`ListMultipartUploads` is not among rusty-s3's actions; it is signed with its signer and
    /// its answer read like the error documents above.)
    pub async fn uploads_older_than(
        &self,
        older_than: Duration,
    ) -> Result<Vec<PendingUpload>, StoreError> {
        let what = "listing multipart uploads";
        let cutoff = self
            .now()
            .checked_sub(
                jiff::SignedDuration::try_from(older_than).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(jiff::Timestamp::MIN);
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        for _ in 0..100 {
            let mut query = vec![("prefix", "uploads/"), ("uploads", "")];
            if !key_marker.is_empty() {
                query.push(("key-marker", &key_marker));
                query.push(("upload-id-marker", &id_marker));
            }
            query.sort_unstable();
            let url = self.signed_custom(rusty_s3::Method::Get, "", &query, &[]);
            let (status, _, body) = self
                .exchange(what, self.request(Method::GET, &url), Body::Empty)
                .await?;
            if !status.is_success() {
                return Err(s3_error(what, status, &body));
            }
            let page = MultipartListing::parse(&String::from_utf8_lossy(&body));
            for upload in page.uploads {
                let started = upload.initiated.parse::<jiff::Timestamp>().ok();
                if started.is_none_or(|t| t >= cutoff) {
                    continue;
                }
                if let Some(upload_id) = upload.key.strip_prefix("uploads/") {
                    found.push(PendingUpload {
                        upload_id: upload_id.to_owned(),
                        key: upload.key,
                        multipart: upload.id,
                    });
                }
            }
            match page.next {
                Some((key, id)) => (key_marker, id_marker) = (key, id),
                None => break,
            }
        }
        Ok(found)
    }

    /// Aborts a multipart upload [`Self::uploads_older_than`] found.
    pub async fn abort_pending(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        self.abort_multipart(&upload.key, &upload.multipart).await
    }

    /// GET of `key`, or of a range of it.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Body, StoreError> {
        let what = "downloading";
        let url = self.signed(&GetObject::new(&self.bucket, Some(&self.credentials), key));
        let mut builder = self.request(Method::GET, &url);
        if let Some(range) = range {
            builder = builder.header(
                header::RANGE,
                format!("bytes={}-{}", range.start, range.end),
            );
        }
        let response = self.send(what, builder, Body::Empty).await?;
        match response.status() {
            StatusCode::OK if range.is_none() => Ok(response.into_body()),
            StatusCode::PARTIAL_CONTENT if range.is_some() => Ok(response.into_body()),
            StatusCode::NOT_FOUND => Err(StoreError::NotFound(format!("object {key}"))),
            StatusCode::RANGE_NOT_SATISFIABLE => Err(StoreError::RangeNotSatisfiable),
            status => {
                let body = response.into_body().collect(4096).await.unwrap_or_default();
                Err(s3_error(what, status, &body))
            }
        }
    }
}

/// A multipart upload left in the bucket: its registry upload id (the session's), key and S3 id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub upload_id: String,
    key: String,
    multipart: String,
}

/// One page of a `ListMultipartUploads` answer.
#[derive(Debug, Default, PartialEq, Eq)]
struct MultipartListing {
    uploads: Vec<ListedUpload>,
    /// The markers of the next page, when the answer is truncated.
    next: Option<(String, String)>,
}

#[derive(Debug, PartialEq, Eq)]
struct ListedUpload {
    key: String,
    id: String,
    initiated: String,
}

/// The text of the first `<name>…</name>` in `xml`.
fn element<'x>(xml: &'x str, name: &str) -> Option<&'x str> {
    let (_, rest) = xml.split_once(&format!("<{name}>"))?;
    let (text, _) = rest.split_once(&format!("</{name}>"))?;
    Some(text.trim())
}

impl MultipartListing {
    fn parse(xml: &str) -> Self {
        let mut uploads = Vec::new();
        let mut rest = xml;
        while let Some((_, after)) = rest.split_once("<Upload>") {
            let (entry, tail) = after.split_once("</Upload>").unwrap_or((after, ""));
            if let (Some(key), Some(id), Some(initiated)) = (
                element(entry, "Key"),
                element(entry, "UploadId"),
                element(entry, "Initiated"),
            ) {
                uploads.push(ListedUpload {
                    key: key.to_owned(),
                    id: id.to_owned(),
                    initiated: initiated.to_owned(),
                });
            }
            rest = tail;
        }
        let next = (element(xml, "IsTruncated") == Some("true"))
            .then(|| {
                Some((
                    element(xml, "NextKeyMarker")?.to_owned(),
                    element(xml, "NextUploadIdMarker")?.to_owned(),
                ))
            })
            .flatten();
        Self { uploads, next }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl BlobStore for S3Store {
    async fn begin_upload(&self, upload_id: &str) -> Result<String, StoreError> {
        // Nothing to ask S3 yet: most blobs are smaller than one part and become one PutObject.
        Ok(MultipartHandle::begin(upload_id))
    }

    async fn append(
        &self,
        handle: &str,
        offset: u64,
        mut bytes: ByteStream,
    ) -> Result<String, StoreError> {
        let mut handle = MultipartHandle::parse(handle)?;
        handle.check_stored(offset)?;
        let key = upload_key(&handle.id);
        // This request's bytes after the stored tail: at most one part in memory.
        let mut cutter = PartCutter::new(PART_SIZE, tail_len(&handle.segments));
        while let Some(chunk) = bytes.next().await {
            for fresh in cutter.push(chunk?) {
                handle.check_room("S3")?;
                let whole = self.tails.complete_part(&handle.segments, fresh).await?;
                let multipart = match &handle.multipart {
                    Some(id) => id.clone(),
                    None => {
                        let id = self.create_multipart(&key).await?;
                        handle.multipart = Some(id.clone());
                        id
                    }
                };
                let number = handle.etags.len() + 1;
                let etag = self
                    .upload_part(&key, &multipart, number, whole)
                    .await?
                    .ok_or_else(|| {
                        StoreError::NotFound(format!("multipart upload of {}", handle.id))
                    })?;
                handle.etags.push(etag);
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
        let handle = MultipartHandle::parse(handle)?;
        handle.check_stored(size)?;
        let locator = match (&handle.multipart, handle.etags.is_empty()) {
            (Some(multipart), false) => {
                // Completed in place (idempotent: a finish retried after it completed finds the
                // object): `uploads/<id>` is the blob's locator, unique to this upload.
                self.complete_upload(&handle, multipart).await?;
                upload_key(&handle.id)
            }
            (multipart, _) => {
                if let Some(multipart) = multipart {
                    self.abort_multipart(&upload_key(&handle.id), multipart)
                        .await?;
                }
                let target = blob_key(digest, &handle.id);
                let tail = self.tails.load(&handle.segments).await?;
                self.put_object(&target, tail).await?;
                target
            }
        };
        self.tails.forget(&handle.segments).await;
        Ok(locator)
    }

    async fn read_upload(&self, handle: &str, len: u64) -> Result<Body, StoreError> {
        let handle = MultipartHandle::parse(handle)?;
        let range = (len > 0 && len < handle.stored()).then(|| ByteRange {
            start: 0,
            end: len - 1,
        });
        match (&handle.multipart, handle.etags.is_empty()) {
            (Some(multipart), false) => {
                // Parts are readable only once completed: complete into `uploads/<id>` now;
                // finish_upload then copies what is there.
                self.complete_upload(&handle, multipart).await?;
                self.get(&upload_key(&handle.id), range).await
            }
            _ => {
                let tail = self.tails.load(&handle.segments).await?;
                let len = usize::try_from(len).unwrap_or(usize::MAX).min(tail.len());
                Ok(Body::Full(tail.slice(..len)))
            }
        }
    }

    async fn abort_upload(&self, handle: &str) -> Result<(), StoreError> {
        let handle = MultipartHandle::parse(handle)?;
        if let Some(multipart) = &handle.multipart {
            let key = upload_key(&handle.id);
            self.abort_multipart(&key, multipart).await?;
            // Completed by read_upload, if it ran.
            self.delete_object(&key).await?;
        }
        self.tails.forget(&handle.segments).await;
        Ok(())
    }

    async fn read(&self, locator: &str, range: Option<ByteRange>) -> Result<Body, StoreError> {
        if !valid_locator(locator) {
            return Err(StoreError::NotFound(format!("object {locator:?}")));
        }
        self.get(locator, range).await
    }

    async fn redirect_url(&self, locator: &str) -> Result<Option<String>, StoreError> {
        if !valid_locator(locator) {
            return Ok(None);
        }
        let action = GetObject::new(&self.bucket, Some(&self.credentials), locator);
        Ok(Some(
            action
                .sign_with_time(self.config.presign, &self.now())
                .to_string(),
        ))
    }

    async fn delete(&self, locator: &str) -> Result<(), StoreError> {
        if !valid_locator(locator) {
            return Err(StoreError::NotFound(format!("object {locator:?}")));
        }
        self.delete_object(locator).await
    }

    fn chunk_limits(&self) -> ChunkLimits {
        ChunkLimits {
            min: Some(PART_SIZE),
            max: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_name_only_blob_keys() {
        assert!(valid_locator(
            "blobs/sha256/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        ));
        assert!(valid_locator("uploads/0a1b2c"));
        assert!(valid_locator(&format!(
            "blobs/sha256/{}.0a1b2c",
            "ab".repeat(32)
        )));
        assert!(!valid_locator(&format!(
            "blobs/sha256/{}.",
            "ab".repeat(32)
        )));
        assert!(!valid_locator(&format!(
            "blobs/sha256/{}.x/y",
            "ab".repeat(32)
        )));
        assert!(!valid_locator(&format!(
            "blobs/sha256/{}..x",
            "ab".repeat(32)
        )));
        assert!(!valid_locator("uploads/../blobs"));
        assert!(!valid_locator("uploads/"));
        assert!(!valid_locator("blobs/sha256/../../uploads/x"));
        assert!(!valid_locator("blobs/sha256"));
        assert!(!valid_locator("blobs//00000000000000000000000000000000"));
    }

    #[test]
    fn overload_and_server_faults_are_retryable_and_refusals_are_not() {
        let slow = b"<Error><Code>SlowDown</Code><Message>Reduce</Message></Error>";
        assert!(matches!(
            s3_error("x", StatusCode::SERVICE_UNAVAILABLE, slow),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            s3_error("x", StatusCode::INTERNAL_SERVER_ERROR, b""),
            StoreError::Unavailable(_)
        ));
        let denied = b"<Error><Code>SignatureDoesNotMatch</Code></Error>";
        match s3_error("x", StatusCode::FORBIDDEN, denied) {
            StoreError::Failed(message) => assert!(message.contains("SignatureDoesNotMatch")),
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn a_handle_counts_parts_and_tail_and_round_trips() {
        let handle = MultipartHandle {
            id: "u".into(),
            multipart: Some("m".into()),
            etags: vec!["\"a\"".into(), "\"b\"".into()],
            segments: vec![Segment {
                key: "k".into(),
                len: 5,
            }],
        };
        assert_eq!(handle.stored(), 2 * PART_SIZE + 5);
        assert_eq!(
            MultipartHandle::parse(&handle.encode()).expect("round trip"),
            handle
        );
        let fresh = MultipartHandle {
            id: "u".into(),
            ..MultipartHandle::default()
        };
        assert_eq!(fresh.encode(), r#"{"id":"u"}"#);
    }

    fn store(endpoint: &str, path_style: bool) -> S3Store {
        use openregistry::memory::{ManualClock, MemoryKv};
        use openregistry::ports::NoHttpClient;
        let config = S3Config {
            endpoint: endpoint.into(),
            bucket: "layers".into(),
            region: "eu-central-1".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            path_style,
            presign: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            tail_ttl: Duration::from_secs(60),
        };
        // 2026-12-03T12:00:00Z
        let clock = Arc::new(ManualClock::new(1_796_299_200_000));
        S3Store::new(
            Arc::new(NoHttpClient),
            Arc::new(MemoryKv::default()),
            clock,
            config,
        )
        .expect("valid configuration")
    }

    /// The expected URLs are botocore's (the AWS SDK for Python) `S3SigV4QueryAuth` for the same
    /// GET, keys and instant: the store presigns exactly as AWS does, in both addressing styles.
    #[test]
    fn redirects_are_presigned_as_the_aws_sdk_presigns_them() {
        let locator = format!("blobs/sha256/{}", "ab".repeat(32));
        let virtual_host = store("https://s3.eu-central-1.amazonaws.com", false);
        let url = futures_executor::block_on(virtual_host.redirect_url(&locator))
            .expect("signed")
            .expect("a URL");
        assert_eq!(
            url,
            format!(
                "https://layers.s3.eu-central-1.amazonaws.com/{locator}?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                 &X-Amz-Credential=AKIDEXAMPLE%2F20261203%2Feu-central-1%2Fs3%2Faws4_request\
                 &X-Amz-Date=20261203T120000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host\
                 &X-Amz-Signature=a51c1df46c8640c10e4365b63bb2f5077aa4a1c795c139dd0c492a7a6fef2900"
            )
        );
        let path_style = store("http://127.0.0.1:9000/", true);
        let url = futures_executor::block_on(path_style.redirect_url(&locator))
            .expect("signed")
            .expect("a URL");
        assert!(
            url.starts_with(&format!("http://127.0.0.1:9000/layers/{locator}?")),
            "{url}"
        );
        assert!(
            url.ends_with(
                "X-Amz-Signature=1d6793c46485b7dfba569658e73fe8f93e7694dcff7c6e8da73ef342780d3f60"
            ),
            "{url}"
        );
        // Nothing but this store's keys is ever presigned.
        let other = futures_executor::block_on(path_style.redirect_url("config/../x"));
        assert_eq!(other, Ok(None));
    }

    #[test]
    fn virtual_host_addressing_needs_a_host_name() {
        use openregistry::memory::{ManualClock, MemoryKv};
        use openregistry::ports::NoHttpClient;
        let mut config = store("http://127.0.0.1:9000", true).config;
        config.path_style = false;
        let error = S3Store::new(
            Arc::new(NoHttpClient),
            Arc::new(MemoryKv::default()),
            Arc::new(ManualClock::new(0)),
            config,
        )
        .err()
        .expect("refused");
        assert!(error.to_string().contains("path-style"), "{error}");
    }

    #[test]
    fn a_multipart_listing_names_each_upload_and_the_next_page() {
        let xml = "<?xml version=\"1.0\"?><ListMultipartUploadsResult><Bucket>b</Bucket>\
            <NextKeyMarker>uploads/b</NextKeyMarker><NextUploadIdMarker>id-b</NextUploadIdMarker>\
            <IsTruncated>true</IsTruncated>\
            <Upload><Key>uploads/a</Key><UploadId>id-a</UploadId><Initiated>2026-12-01T10:00:00.000Z</Initiated></Upload>\
            <Upload><Key>uploads/b</Key><UploadId>id-b</UploadId><Initiated>2026-12-03T11:59:00.000Z</Initiated></Upload>\
            </ListMultipartUploadsResult>";
        let page = MultipartListing::parse(xml);
        let keys: Vec<_> = page
            .uploads
            .iter()
            .map(|u| (u.key.as_str(), u.id.as_str()))
            .collect();
        assert_eq!(keys, [("uploads/a", "id-a"), ("uploads/b", "id-b")]);
        assert!(page
            .uploads
            .iter()
            .all(|u| u.initiated.parse::<jiff::Timestamp>().is_ok()));
        assert_eq!(page.next, Some(("uploads/b".into(), "id-b".into())));
        let last = MultipartListing::parse("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>");
        assert_eq!(last, MultipartListing::default());
    }

    #[test]
    fn the_error_code_is_read_from_the_error_document() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchUpload</Code></Error>";
        assert_eq!(error_code(body).as_deref(), Some("NoSuchUpload"));
        assert!(no_such_upload(StatusCode::NOT_FOUND, body));
        assert_eq!(error_code(b"not xml"), None);
    }
}
