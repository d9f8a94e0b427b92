//! The `BlobStore` port on the Worker's R2 bucket binding (`BLOBS`): a Worker deploy then needs
//! no storage outside Cloudflare (KV for sessions, R2 for bytes, Neon for metadata).
//!
//! The same shape as the S3 store (`openregistry_backends::s3`): uploads stream into an R2
//! multipart upload in parts of [`PART_SIZE`] (R2 wants every part but the last of one size,
//! at least 5 MiB), cut by the core's part planner; the rest of each request waits in `Kv`
//! (`openregistry_backends::tail`); a blob smaller than one part is one `put` at
//! `blobs/<algorithm>/<hex>`. One departure: the binding has no copy, so a multi-part blob stays
//! where its multipart upload completed, `uploads/<upload id>`, and that key is its locator (the
//! database maps digest → locator; the core checks the database first, so a stored blob is not
//! uploaded again).
//!
//! The binding cannot presign URLs: blob redirects go through R2's S3 API when the S3 settings
//! name the same bucket (an R2 API token's keys), else blobs stream through the Worker.

use std::rc::Rc;

use bytes::BytesMut;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use worker::{Bucket, Range, ResponseBody, UploadedPart};

use openregistry::body::{Body, ByteStream};
use openregistry::digest::Digest;
use openregistry::planner::{Cut, PartPlanner};
use openregistry::ports::{BlobStore, ChunkLimits, StoreError, Unavailable};
use openregistry::range::ByteRange;
use openregistry_backends::tail::{tail_len, Segment, Tails};
use openregistry_backends::{valid_s3_locator, S3Store, PART_SIZE};

use crate::streams::from_js;

/// The R2 bucket binding that holds blob bytes.
pub const R2_BINDING: &str = "BLOBS";

/// R2's most parts in one multipart upload.
const MAX_PARTS: usize = 10_000;

/// The blob store.
pub struct R2Store {
    bucket: Rc<Bucket>,
    tails: Tails,
    /// The same bucket through R2's S3 API, for presigned redirects (when configured).
    presigner: Option<S3Store>,
}

/// An upload in progress, as kept in the upload session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Handle {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<String>,
    /// The `ETag`s of the uploaded parts (part `n` is entry `n - 1`), each [`PART_SIZE`] bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    etags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    segments: Vec<Segment>,
}

impl Handle {
    fn parse(text: &str) -> Result<Self, StoreError> {
        serde_json::from_str(text).map_err(|_| StoreError::NotFound(format!("upload {text:?}")))
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn stored(&self) -> u64 {
        self.etags.len() as u64 * PART_SIZE + tail_len(&self.segments)
    }

    fn key(&self) -> String {
        format!("uploads/{}", self.id)
    }
}

fn r2_error(what: &str, error: worker::Error) -> StoreError {
    StoreError::Unavailable(Unavailable::new("r2", format!("{what}: {error}")))
}

impl R2Store {
    pub fn new(bucket: Bucket, tails: Tails, presigner: Option<S3Store>) -> Self {
        Self {
            bucket: Rc::new(bucket),
            tails,
            presigner,
        }
    }

    /// Uploads one part (retried once); its `ETag`.
    async fn upload_part(
        &self,
        key: &str,
        multipart: &str,
        number: usize,
        data: &[u8],
    ) -> Result<String, StoreError> {
        let number = u16::try_from(number)
            .map_err(|_| StoreError::Refused(format!("part {number} is past R2's last")))?;
        let upload = self
            .bucket
            .resume_multipart_upload(key, multipart)
            .map_err(|e| r2_error("resuming a multipart upload", e))?;
        let mut last = None;
        for _ in 0..2 {
            match upload.upload_part(number, data.to_vec()).await {
                Ok(part) => return Ok(part.etag()),
                Err(e) => last = Some(e),
            }
        }
        Err(r2_error(
            "uploading a part",
            last.unwrap_or(worker::Error::RustError("no attempt".into())),
        ))
    }
}

#[async_trait::async_trait(?Send)]
impl BlobStore for R2Store {
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
        let part_size = usize::try_from(PART_SIZE).unwrap_or(usize::MAX);
        let key = handle.key();
        let mut planner = PartPlanner::new(PART_SIZE, tail_len(&handle.segments));
        let mut part = BytesMut::new();
        while let Some(chunk) = bytes.next().await {
            let mut chunk = chunk?;
            for cut in planner.cut(chunk.len() as u64) {
                if part.capacity() == 0 {
                    part.reserve(part_size);
                }
                let (Cut::CompletesPart { len } | Cut::ExtendsTail { len }) = cut;
                let len = usize::try_from(len).unwrap_or(usize::MAX).min(chunk.len());
                part.extend_from_slice(&chunk.split_to(len));
                if let Cut::CompletesPart { .. } = cut {
                    if handle.etags.len() + 1 >= MAX_PARTS {
                        return Err(StoreError::Refused(format!(
                            "a blob on R2 holds at most {} bytes here",
                            (MAX_PARTS as u64 - 1) * PART_SIZE
                        )));
                    }
                    let whole = self
                        .tails
                        .complete_part(&handle.segments, std::mem::take(&mut part))
                        .await?;
                    let multipart = match &handle.multipart {
                        Some(id) => id.clone(),
                        None => {
                            let upload = self
                                .bucket
                                .create_multipart_upload(key.clone())
                                .execute()
                                .await
                                .map_err(|e| r2_error("starting a multipart upload", e))?;
                            let id = upload.upload_id().await;
                            handle.multipart = Some(id.clone());
                            id
                        }
                    };
                    let number = handle.etags.len() + 1;
                    let etag = self.upload_part(&key, &multipart, number, &whole).await?;
                    handle.etags.push(etag);
                    handle.segments.clear();
                }
            }
        }
        let stored = handle.stored();
        self.tails
            .save(&handle.id, &mut handle.segments, stored, part.freeze())
            .await?;
        Ok(handle.encode())
    }

    async fn finish_upload(
        &self,
        handle: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<String, StoreError> {
        let handle = Handle::parse(handle)?;
        if handle.stored() != size {
            return Err(StoreError::Refused(format!(
                "upload holds {} bytes, not {size}",
                handle.stored()
            )));
        }
        let tail = self.tails.load(&handle.segments).await?;
        let locator = match (&handle.multipart, handle.etags.is_empty()) {
            (Some(multipart), false) => {
                let key = handle.key();
                // Completed by an earlier finish that failed after it: nothing left to do.
                let done = self
                    .bucket
                    .head(key.clone())
                    .await
                    .map_err(|e| r2_error("looking up an upload", e))?
                    .is_some_and(|object| object.size() == size);
                if !done {
                    let mut parts: Vec<UploadedPart> = handle
                        .etags
                        .iter()
                        .enumerate()
                        .map(|(i, etag)| {
                            UploadedPart::new(
                                u16::try_from(i + 1).unwrap_or(u16::MAX),
                                etag.clone(),
                            )
                        })
                        .collect();
                    if !tail.is_empty() {
                        let number = handle.etags.len() + 1;
                        let etag = self.upload_part(&key, multipart, number, &tail).await?;
                        parts.push(UploadedPart::new(
                            u16::try_from(number).unwrap_or(u16::MAX),
                            etag,
                        ));
                    }
                    self.bucket
                        .resume_multipart_upload(key.clone(), multipart.clone())
                        .map_err(|e| r2_error("resuming a multipart upload", e))?
                        .complete(parts)
                        .await
                        .map_err(|e| r2_error("completing a multipart upload", e))?;
                }
                key
            }
            (multipart, _) => {
                if let Some(multipart) = multipart {
                    if let Ok(upload) = self
                        .bucket
                        .resume_multipart_upload(handle.key(), multipart.clone())
                    {
                        let _ = upload.abort().await;
                    }
                }
                let key = format!("blobs/{}/{}", digest.algorithm().name(), digest.hex());
                self.bucket
                    .put(key.clone(), tail.to_vec())
                    .execute()
                    .await
                    .map_err(|e| r2_error("storing a blob", e))?;
                key
            }
        };
        self.tails.forget(&handle.segments).await;
        Ok(locator)
    }

    async fn read_upload(&self, handle: &str, len: u64) -> Result<Body, StoreError> {
        let handle = Handle::parse(handle)?;
        if !handle.etags.is_empty() {
            // Parts cannot be read before the upload completes; the core then verifies the
            // finished blob, whose key is this upload's own, so a bad one replaces nothing.
            return Err(StoreError::Refused(
                "parts of an unfinished R2 upload cannot be read".into(),
            ));
        }
        let tail = self.tails.load(&handle.segments).await?;
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(tail.len());
        Ok(Body::Full(tail.slice(..len)))
    }

    async fn abort_upload(&self, handle: &str) -> Result<(), StoreError> {
        let handle = Handle::parse(handle)?;
        if let Some(multipart) = &handle.multipart {
            let upload = self
                .bucket
                .resume_multipart_upload(handle.key(), multipart.clone())
                .map_err(|e| r2_error("resuming a multipart upload", e))?;
            // Already completed or aborted is fine.
            let _ = upload.abort().await;
        }
        self.tails.forget(&handle.segments).await;
        Ok(())
    }

    async fn read(&self, locator: &str, range: Option<ByteRange>) -> Result<Body, StoreError> {
        if !valid_s3_locator(locator) {
            return Err(StoreError::NotFound(format!("object {locator:?}")));
        }
        let mut get = self.bucket.get(locator);
        if let Some(range) = range {
            get = get.range(Range::OffsetWithLength {
                offset: range.start,
                length: range.len(),
            });
        }
        let object = get
            .execute()
            .await
            .map_err(|e| r2_error("downloading", e))?
            .ok_or_else(|| StoreError::NotFound(format!("object {locator}")))?;
        let body = object
            .body()
            .ok_or_else(|| StoreError::NotFound(format!("object {locator} without a body")))?
            .response_body()
            .map_err(|e| r2_error("downloading", e))?;
        match body {
            ResponseBody::Stream(stream) => {
                Ok(Body::Stream(from_js(&stream).map_err(|e| {
                    StoreError::Unavailable(Unavailable::new("r2", e))
                })?))
            }
            ResponseBody::Body(bytes) => Ok(Body::Full(bytes.into())),
            ResponseBody::Empty => Ok(Body::Empty),
        }
    }

    async fn redirect_url(&self, locator: &str) -> Result<Option<String>, StoreError> {
        match &self.presigner {
            Some(s3) => s3.redirect_url(locator).await,
            None => Ok(None),
        }
    }

    async fn delete(&self, locator: &str) -> Result<(), StoreError> {
        if !valid_s3_locator(locator) {
            return Err(StoreError::NotFound(format!("object {locator:?}")));
        }
        self.bucket
            .delete(locator)
            .await
            .map_err(|e| r2_error("deleting", e))
    }

    fn chunk_limits(&self) -> ChunkLimits {
        ChunkLimits {
            min: Some(PART_SIZE),
            max: None,
        }
    }
}
