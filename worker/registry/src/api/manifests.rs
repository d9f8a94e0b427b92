//! Manifests: GET and HEAD by tag or digest, PUT (with `?tag=` multi-tagging and `OCI-Subject`),
//! and DELETE (a digest deletes the manifest and its tags; a tag deletes only the tag).

use http::{header, Request, Response, StatusCode};

use super::{
    content_length, header_text, response, Query, Registry, DOCKER_CONTENT_DIGEST, IMMUTABLE,
    OCI_SUBJECT, OCI_TAG,
};
use crate::auth::permissions::Permission;
use crate::auth::{orgs, Claims, Principal};
use crate::body::{Body, BodyError};
use crate::digest::{Algorithm, Digest};
use crate::error::RegistryError;
use crate::manifest;
use crate::metadata::{ManifestRecord, Metadata};
use crate::names::{Reference, RepoName, Tag};
use crate::operations::EventLog;

impl Registry {
    pub(super) async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        with_body: bool,
        claims: Option<&Claims>,
        events: &EventLog,
    ) -> Result<Response<Body>, RegistryError> {
        let reference = readable_reference(reference)?;
        if let Reference::Tag(tag) = &reference {
            self.check_tag(claims, repo, tag, Permission::Pull)?;
        }
        let record = self
            .manifest_record(repo, &reference, with_body, events)
            .await?
            .ok_or(RegistryError::ManifestUnknown)?;
        let mut headers = vec![
            (header::CONTENT_TYPE, record.media_type.clone()),
            (header::CONTENT_LENGTH, record.size.to_string()),
            (DOCKER_CONTENT_DIGEST, record.digest.to_string()),
            (header::ETAG, format!("\"{}\"", record.digest)),
        ];
        if matches!(reference, Reference::Digest(_)) {
            headers.push((header::CACHE_CONTROL, IMMUTABLE.to_owned()));
        }
        let body = record.content.map_or(Body::Empty, Body::Full);
        Ok(response(StatusCode::OK, &headers, body))
    }

    /// The manifest `reference` names, through the cache when there is one (which keeps only
    /// whole records, so a miss asks for the bytes even for a HEAD).
    async fn manifest_record(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
        events: &EventLog,
    ) -> Result<Option<ManifestRecord>, RegistryError> {
        let metadata = Metadata::new(self.ports.sql.as_ref());
        let Some(cache) = &self.cache else {
            return match reference {
                Reference::Digest(digest) => {
                    metadata.manifest_by_digest(repo, digest, with_body).await
                }
                Reference::Tag(tag) => metadata.manifest_by_tag(repo, tag, with_body).await,
            };
        };
        match reference {
            Reference::Digest(digest) => {
                if let Some(hit) = cache.manifest(repo, digest).await {
                    return Ok(Some(hit));
                }
                let found = metadata.manifest_by_digest(repo, digest, true).await?;
                if let Some(record) = &found {
                    cache.keep_manifest(repo, record).await;
                }
                Ok(found)
            }
            Reference::Tag(tag) => {
                if let Some(hit) = cache.tagged(repo, tag).await {
                    if hit.refresh {
                        events.refresh_tag(repo, tag);
                    }
                    return Ok(Some(hit.record));
                }
                let found = metadata.manifest_by_tag(repo, tag, true).await?;
                if let Some(record) = &found {
                    cache.keep_tagged(repo, tag, record).await;
                }
                Ok(found)
            }
        }
    }

    pub(super) async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        query: &Query,
        request: Request<Body>,
        claims: Option<&Claims>,
        events: &EventLog,
    ) -> Result<Response<Body>, RegistryError> {
        let reference = Reference::parse(reference)?;
        let mut tags: Vec<Tag> = Vec::new();
        if let Reference::Tag(tag) = &reference {
            tags.push(tag.clone());
        }
        for extra in query.all("tag") {
            let tag = Tag::parse(extra)?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        let address = super::token::client_address(&request);
        for tag in &tags {
            if let Err(denied) = self.check_tag(claims, repo, tag, Permission::Push) {
                self.audit(
                    claims,
                    &address,
                    repo,
                    "push.denied",
                    &format!("{tag}: push"),
                )
                .await;
                return Err(denied);
            }
        }
        // Tags this token may create but not move: they are immutable for it.
        let immutable: Vec<Tag> = tags
            .iter()
            .filter(|tag| {
                !self.policy.token_allows(
                    claims,
                    repo.as_str(),
                    Some(tag.as_str()),
                    Permission::OverwriteTag,
                )
            })
            .cloned()
            .collect();
        let limit = self.config.max_manifest_bytes;
        if content_length(request.headers())?.is_some_and(|len| len > limit) {
            return Err(RegistryError::ManifestTooLarge { limit });
        }
        let content_type = header_text(request.headers(), &header::CONTENT_TYPE).map(str::to_owned);
        let content = request
            .into_body()
            .collect(limit)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { .. } => RegistryError::ManifestTooLarge { limit },
                other => other.into(),
            })?;

        let digest = match &reference {
            Reference::Digest(claimed) => {
                let computed = Digest::of(claimed.algorithm(), &content);
                if &computed != claimed {
                    return Err(RegistryError::DigestInvalid(format!(
                        "the manifest's digest is {computed}, not {claimed}"
                    )));
                }
                computed
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &content),
        };
        let parsed = manifest::parse(&content, content_type.as_deref())?;
        let metadata = Metadata::new(self.ports.sql.as_ref());
        if !immutable.is_empty() {
            let current = metadata.tag_digests(repo, &immutable).await?;
            if let Some((tag, _)) = current.iter().find(|(_, d)| d != digest.as_str()) {
                self.audit(
                    claims,
                    &address,
                    repo,
                    "push.denied",
                    &format!("{tag}: overwrite-tag"),
                )
                .await;
                return Err(RegistryError::Denied(format!(
                    "the tag {tag} exists and this token may not move it (overwrite-tag)"
                )));
            }
        }
        let missing = metadata
            .missing_dependencies(repo, &parsed.dependencies)
            .await?;
        if !missing.is_empty() {
            return Err(RegistryError::ManifestBlobUnknown(missing.join(", ")));
        }
        // Parsing succeeded, so the bytes are JSON and hence UTF-8: stored as text, byte for byte.
        let text = String::from_utf8(content.to_vec())
            .map_err(|_| RegistryError::ManifestInvalid("manifests are UTF-8 JSON".into()))?;
        self.operations()
            .put_manifest(repo, &digest, &parsed, text, &tags, &immutable)
            .await?
            .record(events);

        let mut headers = vec![
            (header::LOCATION, format!("/v2/{repo}/manifests/{digest}")),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (header::CONTENT_LENGTH, "0".to_owned()),
        ];
        if let Some(subject) = &parsed.subject {
            headers.push((OCI_SUBJECT, subject.to_string()));
        }
        for tag in &tags {
            headers.push((OCI_TAG, tag.to_string()));
        }
        Ok(response(StatusCode::CREATED, &headers, Body::Empty))
    }

    pub(super) async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        claims: Option<&Claims>,
        events: &EventLog,
    ) -> Result<Response<Body>, RegistryError> {
        let operations = self.operations();
        let deleted = match readable_reference(reference)? {
            Reference::Digest(digest) => {
                if !self.policy.token_allows(
                    claims,
                    repo.as_str(),
                    None,
                    Permission::DeleteManifest,
                ) {
                    return Err(RegistryError::Denied(format!(
                        "deleting manifests of {repo} needs delete-manifest"
                    )));
                }
                operations.delete_manifest(repo, &digest).await?
            }
            Reference::Tag(tag) => {
                self.check_tag(claims, repo, &tag, Permission::DeleteTag)?;
                operations.delete_tag(repo, &tag).await?
            }
        }
        .record(events);
        if !deleted {
            return Err(RegistryError::ManifestUnknown);
        }
        Ok(response(
            StatusCode::ACCEPTED,
            &[(header::CONTENT_LENGTH, "0".into())],
            Body::Empty,
        ))
    }
}

impl Registry {
    /// Org mode's tag-level check: `permission` on `tag` of `repo` by the token.
    fn check_tag(
        &self,
        claims: Option<&Claims>,
        repo: &RepoName,
        tag: &Tag,
        permission: Permission,
    ) -> Result<(), RegistryError> {
        if self
            .policy
            .token_allows(claims, repo.as_str(), Some(tag.as_str()), permission)
        {
            Ok(())
        } else {
            Err(RegistryError::Denied(format!(
                "this token may not {} the tag {tag} of {repo}",
                match permission {
                    Permission::Push => "push to",
                    Permission::DeleteTag => "delete",
                    _ => "pull",
                }
            )))
        }
    }

    /// An audit entry in the repository's organization (none for a user's namespace). Best
    /// effort: the refusal it records is answered either way.
    async fn audit(
        &self,
        claims: Option<&Claims>,
        address: &str,
        repo: &RepoName,
        action: &str,
        detail: &str,
    ) {
        let who = claims.map_or("anonymous", |c| c.sub.as_str());
        let principal = Principal::user(who, false);
        let ctx = self.org_context(&principal, address);
        let entry = ctx.audit_if_org(
            orgs::namespace_of(repo.as_str()),
            action,
            repo.as_str(),
            detail,
        );
        if let Err(e) = self.ports.sql.query(entry).await {
            tracing::warn!(error = %e, "could not write an audit entry");
        }
    }
}

/// The reference of a GET, HEAD or DELETE: one that is neither a valid tag nor a valid digest
/// names nothing that can exist, so it is simply not found (`MANIFEST_UNKNOWN`, as the
/// conformance suite expects). Only a PUT is told its tag or digest is invalid.
fn readable_reference(reference: &str) -> Result<Reference, RegistryError> {
    Reference::parse(reference).map_err(|_| RegistryError::ManifestUnknown)
}
