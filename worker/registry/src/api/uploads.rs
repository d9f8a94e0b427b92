//! Blob uploads: opening a session (or a single-request upload, or a cross-repository mount),
//! chunked and streamed `PATCH`es, the closing `PUT` that verifies the digest, status and cancel.
//!
//! Every byte passes through a [`Hasher`] on its way to the blob store; the hash state and the
//! offset are saved in the session after each request, so any instance can take the next one.
//! Nothing becomes visible before the closing `PUT` has verified the digest and committed SQL.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use http::{header, HeaderName, Request, Response, StatusCode};

use super::{
    content_length, header_text, response, Query, Registry, DOCKER_CONTENT_DIGEST,
    DOCKER_UPLOAD_UUID, OCI_CHUNK_MAX_LENGTH, OCI_CHUNK_MIN_LENGTH,
};
use crate::auth::Claims;
use crate::body::{Body, ByteStream};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{range_header, RegistryError};
use crate::metadata::Metadata;
use crate::names::RepoName;
use crate::operations::{Event, EventLog};
use crate::ports::StoreError;
use crate::range::parse_content_range;
use crate::session::{self, Loaded, SessionRef, UploadSession};

/// What streamed past while a body was being stored.
struct Progress {
    hasher: Hasher,
    written: u64,
}

/// Wraps a body so every chunk is hashed and counted as the store consumes it.
fn hashing(stream: ByteStream, progress: Arc<Mutex<Progress>>) -> ByteStream {
    Box::pin(stream.map(move |chunk| {
        if let Ok(bytes) = &chunk {
            // A poisoned lock means a panic elsewhere already failed this request.
            if let Ok(mut p) = progress.lock() {
                p.hasher.update(bytes);
                p.written += bytes.len() as u64;
            }
        }
        chunk
    }))
}

/// The result of storing one request body.
struct Ingested {
    handle: String,
    hasher: Hasher,
    written: u64,
}

/// Headers of an upload start that the origin's answer passes on to the client.
const FORWARDED_ANSWER: [&str; 7] = [
    "location",
    "range",
    "docker-upload-uuid",
    "oci-chunk-min-length",
    "oci-chunk-max-length",
    "content-type",
    "www-authenticate",
];

impl Registry {
    /// `POST …/blobs/uploads/` with an upload origin configured: the same request goes to the
    /// origin (credentials included: it verifies the same tokens) and its answer, with the
    /// `Location` made absolute on the origin, goes back to the client, which then sends the
    /// bytes there. The origin shares this registry's database and storage, so what it commits
    /// is pulled here.
    async fn forward_upload_start(
        &self,
        origin: &str,
        repo: &RepoName,
        request: Request<Body>,
    ) -> Result<Response<Body>, RegistryError> {
        let query = request
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let target = format!("{origin}/v2/{repo}/blobs/uploads/{query}");
        let mut forwarded = Request::post(&target)
            .header(header::CONTENT_LENGTH, "0")
            .body(Body::Empty)
            .map_err(|e| RegistryError::Internal(format!("{target}: {e}")))?;
        for name in [header::AUTHORIZATION, header::USER_AGENT] {
            if let Some(value) = request.headers().get(&name) {
                forwarded.headers_mut().insert(name, value.clone());
            }
        }
        forwarded
            .extensions_mut()
            .insert(crate::ports::Timeout(std::time::Duration::from_secs(30)));
        let answer = self.ports.http.send(forwarded).await?;
        let (parts, body) = answer.into_parts();
        if parts.status.is_server_error() {
            return Err(RegistryError::Unavailable(crate::ports::Unavailable::new(
                "upload origin",
                format!("{target} answered {}", parts.status),
            )));
        }
        let mut response = Response::new(body);
        *response.status_mut() = parts.status;
        for name in FORWARDED_ANSWER {
            let Some(value) = parts.headers.get(name) else {
                continue;
            };
            let value = match value.to_str() {
                Ok(location) if name == "location" && location.starts_with('/') => {
                    http::HeaderValue::from_str(&format!("{origin}{location}"))
                        .unwrap_or_else(|_| value.clone())
                }
                _ => value.clone(),
            };
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
        if let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, length.clone());
        }
        Ok(response)
    }

    fn new_upload_id(&self) -> String {
        let mut id = [0u8; 16];
        self.ports.random.fill(&mut id);
        hex::encode(id)
    }

    /// Streams `body` into the upload `handle` at `offset`, hashing it. When `expected` is known
    /// (Content-Length or Content-Range), a different byte count is `SIZE_INVALID` and is not
    /// counted (the next append starts from the old offset again).
    async fn ingest(
        &self,
        handle: &str,
        offset: u64,
        hasher: Hasher,
        body: Body,
        expected: Option<u64>,
    ) -> Result<Ingested, RegistryError> {
        // A body that declares more than the advertised chunk limit (the host's body limit) is
        // refused before a byte is read or stored. One of unknown length is bounded by the host
        // (Workers and Spin platforms cut it off at their limit).
        let limit = self
            .config
            .chunk_limits(self.ports.blobs.chunk_limits())
            .max;
        if let (Some(limit), Some(expected)) = (limit, expected) {
            if expected > limit {
                return Err(RegistryError::ChunkTooLarge { limit });
            }
        }
        let progress = Arc::new(Mutex::new(Progress { hasher, written: 0 }));
        let stream = hashing(body.into_stream(), progress.clone());
        let handle = self
            .ports
            .blobs
            .append(handle, offset, stream)
            .await
            .map_err(|e| match e {
                // The store no longer has this upload (finished or cancelled elsewhere).
                StoreError::NotFound(_) => RegistryError::BlobUploadUnknown,
                other => other.into(),
            })?;
        let Progress { hasher, written } = {
            let mut guard = progress
                .lock()
                .map_err(|_| RegistryError::Internal("hash state lock poisoned".into()))?;
            let algorithm = guard.hasher.algorithm();
            std::mem::replace(
                &mut *guard,
                Progress {
                    hasher: Hasher::new(algorithm),
                    written: 0,
                },
            )
        };
        if let Some(expected) = expected {
            if expected != written {
                return Err(RegistryError::SizeInvalid(format!(
                    "expected {expected} bytes, received {written}"
                )));
            }
        }
        Ok(Ingested {
            handle,
            hasher,
            written,
        })
    }

    fn chunk_headers(&self) -> Vec<(HeaderName, String)> {
        let limits = self.config.chunk_limits(self.ports.blobs.chunk_limits());
        let mut headers = Vec::new();
        if let Some(min) = limits.min {
            headers.push((OCI_CHUNK_MIN_LENGTH, min.to_string()));
        }
        if let Some(max) = limits.max {
            headers.push((OCI_CHUNK_MAX_LENGTH, max.to_string()));
        }
        headers
    }

    fn session_response(&self, status: StatusCode, session: &UploadSession) -> Response<Body> {
        let mut headers = vec![
            (header::LOCATION, session.location()),
            (header::RANGE, range_header(session.offset)),
            (DOCKER_UPLOAD_UUID, session.id.clone()),
            (header::CONTENT_LENGTH, "0".to_owned()),
        ];
        headers.extend(self.chunk_headers());
        response(status, &headers, Body::Empty)
    }

    fn blob_created(repo: &RepoName, digest: &Digest) -> Response<Body> {
        response(
            StatusCode::CREATED,
            &[
                (header::LOCATION, format!("/v2/{repo}/blobs/{digest}")),
                (DOCKER_CONTENT_DIGEST, digest.to_string()),
                (header::CONTENT_LENGTH, "0".to_owned()),
            ],
            Body::Empty,
        )
    }

    /// `POST /v2/<name>/blobs/uploads/`: mount, single-request upload, or a new session.
    pub(super) async fn start_upload(
        &self,
        repo: &RepoName,
        query: &Query,
        request: Request<Body>,
        claims: Option<&Claims>,
        events: &EventLog,
    ) -> Result<Response<Body>, RegistryError> {
        if let Some(mount) = query.get("mount") {
            let digest: Digest = mount.parse()?;
            // Without `from` we do not search other repositories: knowing a digest must not be
            // enough to read a blob from a repository one cannot pull from.
            if let Some(from) = query.get("from") {
                let from = RepoName::parse(from)?;
                // Mounting needs pull on the source; without it, a plain upload (202) that does
                // not reveal whether the blob exists there.
                if self.policy.may_mount_from(claims, from.as_str())
                    && self
                        .operations()
                        .mount_blob(repo, &from, &digest)
                        .await?
                        .record(events)
                {
                    return Ok(Self::blob_created(repo, &digest));
                }
            }
        } else if let Some(digest) = query.get("digest") {
            let digest: Digest = digest.parse()?;
            let declared = content_length(request.headers())?;
            self.upload_whole(repo, &digest, request.into_body(), declared, events)
                .await?;
            return Ok(Self::blob_created(repo, &digest));
        }
        if let Some(origin) = &self.config.upload_origin {
            return self.forward_upload_start(origin, repo, request).await;
        }
        let algorithm = match query.get("digest-algorithm") {
            None => Algorithm::Sha256,
            Some(name) => Algorithm::parse(name).ok_or_else(|| {
                RegistryError::DigestInvalid(format!("digest algorithm {name:?} is not supported"))
            })?,
        };
        let id = self.new_upload_id();
        let handle = self.ports.blobs.begin_upload(&id).await?;
        let mut session = UploadSession {
            id,
            repository: repo.to_string(),
            offset: 0,
            hash_state: Hasher::new(algorithm).save(),
            store_handle: handle,
            seq: 0,
            started_at_ms: self.now_ms(),
            saved_at_ms: 0,
            ended: false,
            subject: claims.map(|c| c.sub.clone()),
        };
        session::save(
            self.ports.kv.as_ref(),
            &mut session,
            self.config.upload_session_ttl,
            self.now_ms(),
        )
        .await?;
        events.push(Event::UploadStarted {
            repository: repo.to_string(),
            upload: session.id.clone(),
        });
        Ok(self.session_response(StatusCode::ACCEPTED, &session))
    }

    /// A whole blob in one request body, verified against `digest` before anything is kept.
    async fn upload_whole(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: Body,
        declared: Option<u64>,
        events: &EventLog,
    ) -> Result<(), RegistryError> {
        let metadata = Metadata::new(self.ports.sql.as_ref());
        let operations = self.operations();
        if metadata.blob(digest).await?.is_some() {
            // Stored already (content is global): verify the bytes, keep none of them.
            let (computed, written) = hash_body(digest.algorithm(), body).await?;
            check_size(declared, written)?;
            check_digest(computed, digest)?;
            operations.link_blob(repo, digest).await?.record(events);
            return Ok(());
        }
        let id = self.new_upload_id();
        let handle = self.ports.blobs.begin_upload(&id).await?;
        let result = async {
            let ingested = self
                .ingest(&handle, 0, Hasher::new(digest.algorithm()), body, declared)
                .await?;
            check_digest(ingested.hasher.finish(), digest)?;
            let locator = self
                .ports
                .blobs
                .finish_upload(&ingested.handle, digest, ingested.written)
                .await?;
            let kept = operations
                .commit_blob(repo, digest, ingested.written, &locator)
                .await?
                .record(events);
            self.forget_unkept(&locator, &kept).await;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.discard(&handle).await;
        }
        result
    }

    /// Best effort: a failed abort only leaves garbage for the collector, never visible data.
    async fn discard(&self, handle: &str) {
        if let Err(e) = self.ports.blobs.abort_upload(handle).await {
            tracing::warn!(error = %e, "could not discard an unfinished upload");
        }
    }

    /// The session to continue: the newest visible state. If the state the client's `Location`
    /// names has not reached this store location yet, the client is sent back to the one before
    /// (416 with its `Range` and `Location`) and re-sends from there.
    async fn load_session(
        &self,
        repo: &RepoName,
        reference: &str,
        subject: Option<&str>,
    ) -> Result<UploadSession, RegistryError> {
        let next_seq = SessionRef::parse(reference)?.next_seq;
        match self.load_any_session(repo, reference, subject).await? {
            // The next save uses `seq + 1`: start from at least `next - 1`.
            Loaded::Current(mut session) => {
                session.seq = session.seq.max(next_seq.saturating_sub(1));
                Ok(session)
            }
            // Continue from the previous state, but save the next one after the state that is
            // not visible yet, so no key is ever written twice.
            Loaded::Behind(previous) => Err(RegistryError::UploadRangeInvalid {
                offset: previous.offset,
                location: Some(previous.location_saving_next_at(previous.seq + 2)),
            }),
        }
    }

    /// An upload bound to a principal answers only to them: anyone else gets
    /// `BLOB_UPLOAD_UNKNOWN`, as if it did not exist.
    async fn load_any_session(
        &self,
        repo: &RepoName,
        reference: &str,
        subject: Option<&str>,
    ) -> Result<Loaded, RegistryError> {
        let reference = SessionRef::parse(reference)?;
        let loaded = session::load(
            self.ports.kv.as_ref(),
            repo,
            &reference,
            self.now_ms(),
            self.config.upload_session_ttl,
        )
        .await?;
        let (Loaded::Current(session) | Loaded::Behind(session)) = &loaded;
        if !self
            .policy
            .may_use_upload(session.subject.as_deref(), subject)
        {
            return Err(RegistryError::BlobUploadUnknown);
        }
        if session.is_expired(self.now_ms(), self.config.upload_session_ttl) {
            // Past its lifetime the upload is gone, even where the store keeps keys longer (Spin
            // KV has no expiry; Workers KV rounds up to a minute): its partial data goes too.
            self.discard(&session.store_handle).await;
            return Err(RegistryError::BlobUploadUnknown);
        }
        Ok(loaded)
    }

    /// Checks an optional `Content-Range` against the session; returns the byte count it declares.
    fn check_chunk_range(
        session: &UploadSession,
        request: &Request<Body>,
    ) -> Result<Option<u64>, RegistryError> {
        let declared = content_length(request.headers())?;
        let Some(text) = header_text(request.headers(), &header::CONTENT_RANGE) else {
            return Ok(declared);
        };
        let out_of_range = || RegistryError::UploadRangeInvalid {
            offset: session.offset,
            location: Some(session.location()),
        };
        let (start, end) = parse_content_range(text).ok_or_else(out_of_range)?;
        if start != session.offset {
            return Err(out_of_range());
        }
        let length = end - start + 1;
        if declared.is_some_and(|d| d != length) {
            return Err(RegistryError::SizeInvalid(format!(
                "Content-Range {text} declares {length} bytes but Content-Length is {}",
                declared.unwrap_or_default()
            )));
        }
        Ok(Some(length))
    }

    /// `PATCH <location>`: one chunk (with `Content-Range`) or a stream of unknown length.
    pub(super) async fn patch_upload(
        &self,
        repo: &RepoName,
        reference: &str,
        request: Request<Body>,
        subject: Option<&str>,
    ) -> Result<Response<Body>, RegistryError> {
        let mut session = self.load_session(repo, reference, subject).await?;
        let expected = Self::check_chunk_range(&session, &request)?;
        let hasher = Hasher::restore(&session.hash_state)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        let ingested = self
            .ingest(
                &session.store_handle,
                session.offset,
                hasher,
                request.into_body(),
                expected,
            )
            .await?;
        session.offset += ingested.written;
        session.hash_state = ingested.hasher.save();
        session.store_handle = ingested.handle;
        session.seq += 1;
        session::save(
            self.ports.kv.as_ref(),
            &mut session,
            self.config.upload_session_ttl,
            self.now_ms(),
        )
        .await?;
        Ok(self.session_response(StatusCode::ACCEPTED, &session))
    }

    /// `PUT <location>?digest=`: optional final bytes, then verify and commit.
    pub(super) async fn finish_upload(
        &self,
        repo: &RepoName,
        reference: &str,
        query: &Query,
        request: Request<Body>,
        subject: Option<&str>,
        events: &EventLog,
    ) -> Result<Response<Body>, RegistryError> {
        let session = self.load_session(repo, reference, subject).await?;
        let digest: Digest = query
            .get("digest")
            .ok_or_else(|| {
                RegistryError::DigestInvalid("the digest query parameter is required".into())
            })?
            .parse()?;
        let expected = Self::check_chunk_range(&session, &request)?;
        let hasher = Hasher::restore(&session.hash_state)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        let body = request.into_body();
        let (handle, hasher, size) = if body.known_len() == Some(0) || expected == Some(0) {
            (session.store_handle.clone(), hasher, session.offset)
        } else {
            let ingested = self
                .ingest(
                    &session.store_handle,
                    session.offset,
                    hasher,
                    body,
                    expected,
                )
                .await?;
            (
                ingested.handle,
                ingested.hasher,
                session.offset + ingested.written,
            )
        };

        let computed = if hasher.algorithm() == digest.algorithm() {
            Some(hasher.finish())
        } else {
            // Hashed with another algorithm while streaming: hash the stored bytes again, before
            // finishing if the store can re-read an unfinished upload, after finishing otherwise.
            match self.ports.blobs.read_upload(&handle, size).await {
                Ok(body) => Some(hash_body(digest.algorithm(), body).await?.0),
                Err(StoreError::Refused(_)) => None,
                Err(other) => return Err(other.into()),
            }
        };
        let outcome = self
            .commit_upload(repo, &digest, computed, &handle, size, events)
            .await;
        if let Err(RegistryError::Unavailable(_)) = &outcome {
            // A service was down or slow: keep the session so the client can retry the PUT.
            return outcome.map(|()| Self::blob_created(repo, &digest));
        }
        if outcome.is_err() {
            self.discard(&handle).await;
        }
        // Otherwise the session ends: a verified blob is committed, a bad one is discarded.
        let removed = session::end(
            self.ports.kv.as_ref(),
            &session,
            self.config.upload_session_ttl,
            self.now_ms(),
        )
        .await;
        outcome?;
        removed?;
        Ok(Self::blob_created(repo, &digest))
    }

    /// Verifies (when `computed` is known) and commits. A store that cannot re-read unfinished
    /// uploads gets `computed == None`: the finished blob is read back and verified before SQL
    /// makes it visible, and deleted if it does not match. (Such stores give every upload its own
    /// locator, so a bad upload never replaces a good blob.)
    async fn commit_upload(
        &self,
        repo: &RepoName,
        digest: &Digest,
        computed: Option<Digest>,
        handle: &str,
        size: u64,
        events: &EventLog,
    ) -> Result<(), RegistryError> {
        if let Some(computed) = &computed {
            check_digest(computed.clone(), digest)?;
        }
        let metadata = Metadata::new(self.ports.sql.as_ref());
        let operations = self.operations();
        if computed.is_some() && metadata.blob(digest).await?.is_some() {
            self.discard(handle).await;
            operations.link_blob(repo, digest).await?.record(events);
            return Ok(());
        }
        let locator = self.ports.blobs.finish_upload(handle, digest, size).await?;
        if computed.is_none() {
            let body = self.ports.blobs.read(&locator, None).await?;
            let verified = hash_body(digest.algorithm(), body)
                .await
                .and_then(|(read_back, _)| check_digest(read_back, digest));
            if let Err(e) = verified {
                if let Err(d) = self.ports.blobs.delete(&locator).await {
                    tracing::warn!(error = %d, "could not delete a blob that failed verification");
                }
                return Err(e);
            }
        }
        let kept = operations
            .commit_blob(repo, digest, size, &locator)
            .await?
            .record(events);
        self.forget_unkept(&locator, &kept).await;
        Ok(())
    }

    /// A concurrent push of the same blob committed first under another locator (stores that
    /// keep each upload's object, such as R2's multipart blobs): ours is referenced by nothing,
    /// so it goes. Best effort: a failure leaves garbage for the collector, never visible data.
    async fn forget_unkept(&self, ours: &str, kept: &str) {
        if ours == kept {
            return;
        }
        if let Err(e) = self.ports.blobs.delete(ours).await {
            tracing::warn!(error = %e, "could not delete the copy of a blob another push stored first");
        }
    }

    /// `GET <location>`: how far the upload is.
    pub(super) async fn upload_status(
        &self,
        repo: &RepoName,
        reference: &str,
        subject: Option<&str>,
    ) -> Result<Response<Body>, RegistryError> {
        // Status reports what this location of the store can see, even if it is behind.
        let (Loaded::Current(session) | Loaded::Behind(session)) =
            self.load_any_session(repo, reference, subject).await?;
        Ok(self.session_response(StatusCode::NO_CONTENT, &session))
    }

    /// `DELETE <location>`: cancel and discard.
    pub(super) async fn cancel_upload(
        &self,
        repo: &RepoName,
        reference: &str,
        subject: Option<&str>,
        events: &EventLog,
    ) -> Result<Response<Body>, RegistryError> {
        let session = self.load_session(repo, reference, subject).await?;
        events.push(Event::UploadCancelled {
            repository: repo.to_string(),
            upload: session.id.clone(),
        });
        self.discard(&session.store_handle).await;
        session::end(
            self.ports.kv.as_ref(),
            &session,
            self.config.upload_session_ttl,
            self.now_ms(),
        )
        .await?;
        Ok(response(
            StatusCode::NO_CONTENT,
            &[(header::CONTENT_LENGTH, "0".into())],
            Body::Empty,
        ))
    }
}

/// The digest and length of a whole body, read as a stream.
async fn hash_body(algorithm: Algorithm, body: Body) -> Result<(Digest, u64), RegistryError> {
    let mut hasher = Hasher::new(algorithm);
    let mut len = 0u64;
    let mut stream = body.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        len += chunk.len() as u64;
    }
    Ok((hasher.finish(), len))
}

fn check_size(declared: Option<u64>, written: u64) -> Result<(), RegistryError> {
    match declared {
        Some(declared) if declared != written => Err(RegistryError::SizeInvalid(format!(
            "Content-Length is {declared}, received {written} bytes"
        ))),
        _ => Ok(()),
    }
}

fn check_digest(computed: Digest, claimed: &Digest) -> Result<(), RegistryError> {
    if &computed == claimed {
        Ok(())
    } else {
        Err(RegistryError::DigestInvalid(format!(
            "the content's digest is {computed}, not {claimed}"
        )))
    }
}
