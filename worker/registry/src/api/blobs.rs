//! Blob reads (GET and HEAD, with `Range`; small blobs through the read path cache) and blob
//! deletes.

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};

use super::{header_text, response, Registry, DOCKER_CONTENT_DIGEST, IMMUTABLE};
use crate::auth::permissions::Permission;
use crate::auth::Claims;
use crate::body::Body;
use crate::cache::MetadataCache;
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::metadata::{BlobRecord, Metadata};
use crate::names::RepoName;
use crate::operations::EventLog;
use crate::ports::StoreError;
use crate::range::{parse_range, ByteRange, RangeRequest};

impl Registry {
    pub(super) async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &str,
        headers: &HeaderMap,
        with_body: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let digest: Digest = digest.parse()?;
        let metadata = Metadata::new(self.ports.sql.as_ref());
        let cached = match &self.cache {
            Some(cache) => cache.blob(repo, &digest).await,
            None => None,
        };
        let blob = match cached {
            Some(blob) => blob,
            None => {
                let blob = metadata
                    .blob_in_repository(repo, &digest)
                    .await?
                    .ok_or(RegistryError::BlobUnknown)?;
                if let Some(cache) = &self.cache {
                    cache.keep_blob(repo, &digest, &blob).await;
                }
                blob
            }
        };
        // A pusher told by HEAD that the blob is here skips its upload and names it in a manifest
        // next: an old link is refreshed so the garbage collector's grace window covers that push
        // (at most one write per link per half window; pulls GET and write nothing). A link
        // collected meanwhile is answered as unknown: the pusher uploads it again.
        let now = self.now_ms();
        let half_grace = u64::try_from(self.config.gc_grace.as_millis() / 2).unwrap_or(u64::MAX);
        if !with_body && now.saturating_sub(blob.linked_at) > half_grace {
            // (A cached link is as old as the database said: the refresh rule holds for it too.)
            if !metadata.refresh_link(repo, &digest, now).await? {
                if let Some(cache) = &self.cache {
                    cache.forget_blob(repo, &digest).await;
                }
                return Err(RegistryError::BlobUnknown);
            }
            if let Some(cache) = &self.cache {
                let refreshed = crate::metadata::BlobRecord {
                    linked_at: now,
                    ..blob.clone()
                };
                cache.keep_blob(repo, &digest, &refreshed).await;
            }
        }

        if with_body && self.config.redirect_blob_downloads {
            if let Some(url) = self.ports.blobs.redirect_url(&blob.locator).await? {
                return Ok(response(
                    StatusCode::TEMPORARY_REDIRECT,
                    &[
                        (header::LOCATION, url),
                        (DOCKER_CONTENT_DIGEST, digest.to_string()),
                    ],
                    Body::Empty,
                ));
            }
        }

        let range = header_text(headers, &header::RANGE)
            .map_or(RangeRequest::Whole, |r| parse_range(r, blob.size));
        let mut headers = vec![
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (header::ETAG, format!("\"{digest}\"")),
            (header::ACCEPT_RANGES, "bytes".to_owned()),
            (header::CACHE_CONTROL, IMMUTABLE.to_owned()),
        ];
        let (status, range) = match range {
            RangeRequest::Whole => {
                headers.push((header::CONTENT_LENGTH, blob.size.to_string()));
                (StatusCode::OK, None)
            }
            RangeRequest::Partial(range) => {
                headers.push((header::CONTENT_LENGTH, range.len().to_string()));
                headers.push((
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{}", range.start, range.end, blob.size),
                ));
                (StatusCode::PARTIAL_CONTENT, Some(range))
            }
            RangeRequest::Unsatisfiable => {
                return Err(RegistryError::BlobRangeInvalid { size: blob.size })
            }
        };
        let kept = match &self.cache {
            Some(cache) if with_body && cache.keeps_bytes_of(blob.size) => {
                self.small_blob(cache, &digest, &blob).await?
            }
            _ => None,
        };
        let body = if let Some(bytes) = kept {
            Body::Full(match range {
                None => bytes,
                Some(range) => slice(&bytes, range)
                    .ok_or(RegistryError::BlobRangeInvalid { size: blob.size })?,
            })
        } else if with_body && blob.size > 0 {
            match self.ports.blobs.read(&blob.locator, range).await {
                Ok(body) => body,
                // The bytes were collected since the link was cached: it is gone.
                Err(StoreError::NotFound(_)) if self.cache.is_some() => {
                    if let Some(cache) = &self.cache {
                        cache.forget_blob(repo, &digest).await;
                    }
                    return Err(RegistryError::BlobUnknown);
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            Body::Empty
        };
        Ok(response(status, &headers, body))
    }

    /// A small blob's bytes from the cache, or read whole from the store and kept; `None` when
    /// the store answers with something else than the link's size (then streamed as usual).
    async fn small_blob(
        &self,
        cache: &MetadataCache,
        digest: &Digest,
        blob: &BlobRecord,
    ) -> Result<Option<Bytes>, RegistryError> {
        if let Some(bytes) = cache.blob_bytes(digest, blob.size).await {
            return Ok(Some(bytes));
        }
        let read = match self.ports.blobs.read(&blob.locator, None).await {
            Ok(body) => body.collect(blob.size).await.ok(),
            Err(StoreError::NotFound(_)) => return Ok(None), // answered below, link forgotten
            Err(e) => return Err(e.into()),
        };
        let Some(bytes) = read.filter(|b| b.len() as u64 == blob.size) else {
            return Ok(None);
        };
        cache.keep_blob_bytes(digest, bytes.clone()).await;
        Ok(Some(bytes))
    }

    pub(super) async fn delete_blob(
        &self,
        repo: &RepoName,
        digest: &str,
        claims: Option<&Claims>,
        events: &EventLog,
    ) -> Result<Response<Body>, RegistryError> {
        let digest: Digest = digest.parse()?;
        if !self
            .policy
            .token_allows(claims, repo.as_str(), None, Permission::DeleteManifest)
        {
            return Err(RegistryError::Denied(format!(
                "deleting blobs of {repo} needs delete-manifest"
            )));
        }
        // Only the repository's link goes; the bytes may be shared and are collected later.
        if !self
            .operations()
            .unlink_blob(repo, &digest)
            .await?
            .record(events)
        {
            return Err(RegistryError::BlobUnknown);
        }
        Ok(response(
            StatusCode::ACCEPTED,
            &[(header::CONTENT_LENGTH, "0".into())],
            Body::Empty,
        ))
    }
}

/// `range` (inclusive) of `bytes`.
fn slice(bytes: &Bytes, range: ByteRange) -> Option<Bytes> {
    let start = usize::try_from(range.start).ok()?;
    let end = usize::try_from(range.end).ok()?.checked_add(1)?;
    (start < end && end <= bytes.len()).then(|| bytes.slice(start..end))
}
