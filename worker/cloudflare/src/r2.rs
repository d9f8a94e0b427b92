//! The `BlobStore` port on the Worker's R2 bucket binding (`BLOBS`): a Worker deploy then needs
//! no storage outside Cloudflare (KV for sessions, R2 for bytes, Neon for metadata).
//!
//! The same shape as the S3 store (`openregistry_backends::s3`): uploads stream into an R2
//! multipart upload in parts of [`PART_SIZE`] (R2 wants every part but the last of one size,
//! at least 5 MiB), cut by the core's part planner; the rest of each request waits in `Kv`
//! (`openregistry_backends::tail`); a blob smaller than one part is one `put` at
//! `blobs/<algorithm>/<hex>.<upload id>`, and a multi-part blob stays where its multipart upload
//! completed, `uploads/<upload id>`. Every key is unique to its upload, as in the S3 store (the
//! garbage collector relies on it).
//!
//! The binding cannot presign URLs: blob redirects go through R2's S3 API when the S3 settings
//! name the same bucket (an R2 API token's keys), else blobs stream through the Worker.

use std::rc::Rc;

use futures_util::StreamExt;
use worker::{Bucket, Range, ResponseBody, UploadedPart};

use openregistry::body::{Body, ByteStream};
use openregistry::digest::Digest;
use openregistry::ports::{BlobStore, ChunkLimits, StoreError, Unavailable};
use openregistry::range::ByteRange;
use openregistry_backends::tail::{tail_len, PartCutter, Tails};
use openregistry_backends::{valid_s3_locator, MultipartHandle, S3Store, PART_SIZE};

use crate::streams::from_js;

/// The R2 bucket binding that holds blob bytes.
pub const R2_BINDING: &str = "BLOBS";

/// The blob store.
pub struct R2Store {
    bucket: Rc<Bucket>,
    tails: Tails,
    /// The same bucket through R2's S3 API, for presigned redirects (when configured).
    presigner: Option<S3Store>,
}

/// The key a multi-part upload completes at: its locator.
fn upload_key(handle: &MultipartHandle) -> String {
    format!("uploads/{}", handle.id)
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
        let key = upload_key(&handle);
        let mut cutter = PartCutter::new(PART_SIZE, tail_len(&handle.segments));
        while let Some(chunk) = bytes.next().await {
            for fresh in cutter.push(chunk?) {
                handle.check_room("R2")?;
                let whole = self.tails.complete_part(&handle.segments, fresh).await?;
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
        let tail = self.tails.load(&handle.segments).await?;
        let locator = match (&handle.multipart, handle.etags.is_empty()) {
            (Some(multipart), false) => {
                let key = upload_key(&handle);
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
                        .resume_multipart_upload(upload_key(&handle), multipart.clone())
                    {
                        let _ = upload.abort().await;
                    }
                }
                // Unique to this upload, as every locator (see the S3 store).
                let key = format!(
                    "blobs/{}/{}.{}",
                    digest.algorithm().name(),
                    digest.hex(),
                    handle.id
                );
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
        let handle = MultipartHandle::parse(handle)?;
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
        let handle = MultipartHandle::parse(handle)?;
        if let Some(multipart) = &handle.multipart {
            let upload = self
                .bucket
                .resume_multipart_upload(upload_key(&handle), multipart.clone())
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
