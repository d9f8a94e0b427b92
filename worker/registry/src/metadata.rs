//! Every SQL statement the registry runs, behind typed functions, so handlers never see SQL.
//!
//! Round trips: each read a request needs is one query; each write is one batch (one
//! transaction, one HTTP request on Neon).

use bytes::Bytes;

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest::{Dependency, ParsedManifest, ReferenceKind};
use crate::names::{RepoName, Tag};
use crate::ports::{Row, Sql, SqlError, Statement};

/// A blob as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub size: u64,
    pub locator: String,
    /// When the repository's link was made or last refreshed (0 when not asked in a repository).
    pub linked_at: u64,
}

/// A stored manifest (content only when asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub content: Option<Bytes>,
}

/// One entry of the referrers index.
/// A tag as the web app lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TagDetail {
    pub name: String,
    pub digest: String,
    /// When the tag was last pushed (moved to this digest).
    pub pushed_at_ms: u64,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub manifest_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// The metadata store over any `Sql` executor.
#[derive(Clone, Copy)]
pub struct Metadata<'a> {
    sql: &'a dyn Sql,
}

fn ensure_repository(repo: &RepoName, now_ms: u64) -> Statement {
    Statement::new(
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(repo.as_str())
    .bind(now_ms)
}

fn stored_digest(row: &Row, index: usize) -> Result<Digest, RegistryError> {
    row.text(index)?
        .parse()
        .map_err(|e| RegistryError::Internal(format!("database holds a bad digest: {e}")))
}

impl<'a> Metadata<'a> {
    pub fn new(sql: &'a dyn Sql) -> Self {
        Self { sql }
    }

    /// The blob `digest` if it is linked to `repo`.
    pub async fn blob_in_repository(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, RegistryError> {
        let rows = self
            .sql
            .query(
                Statement::new(
                    "SELECT b.size, b.locator, rb.created_at FROM repository_blobs rb \
                     JOIN blobs b ON b.digest = rb.digest \
                     WHERE rb.repository = $1 AND rb.digest = $2",
                )
                .bind(repo.as_str())
                .bind(digest.as_str()),
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(BlobRecord {
                    size: r.uint(0)?,
                    locator: r.text(1)?,
                    linked_at: r.uint(2)?,
                })
            })
            .transpose()
    }

    /// Refreshes `repo`'s link to `digest` (its age is the collector's grace window): a client
    /// told the blob is there may reference it in a manifest next. False when the link is gone.
    pub async fn refresh_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_ms: u64,
    ) -> Result<bool, RegistryError> {
        let rows = self
            .sql
            .query(
                Statement::new(
                    "UPDATE repository_blobs SET created_at = $3 \
                     WHERE repository = $1 AND digest = $2 RETURNING digest",
                )
                .bind(repo.as_str())
                .bind(digest.as_str())
                .bind(now_ms),
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// The blob `digest` in any repository (content is stored once per digest).
    pub async fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, RegistryError> {
        let rows = self
            .sql
            .query(
                Statement::new("SELECT size, locator FROM blobs WHERE digest = $1")
                    .bind(digest.as_str()),
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(BlobRecord {
                    size: r.uint(0)?,
                    locator: r.text(1)?,
                    linked_at: 0,
                })
            })
            .transpose()
    }

    /// Records a verified blob and links it to `repo`, in one transaction; returns the locator
    /// the registry keeps for it: `locator`, or another upload's when that one committed first.
    pub async fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        locator: &str,
        now_ms: u64,
    ) -> Result<String, RegistryError> {
        let results = self
            .sql
            .batch(vec![
                ensure_repository(repo, now_ms),
                Statement::new(
                    "INSERT INTO blobs (digest, size, locator, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(digest.as_str())
                .bind(size)
                .bind(locator)
                .bind(now_ms),
                link_statement(repo, digest, now_ms),
                Statement::new("SELECT locator FROM blobs WHERE digest = $1").bind(digest.as_str()),
            ])
            .await?;
        match results.last().and_then(|rows| rows.first()) {
            Some(row) => Ok(row.text(0)?),
            None => Err(RegistryError::Internal(format!(
                "blob {digest} is not recorded after its commit"
            ))),
        }
    }

    /// Links an already stored blob to `repo`.
    pub async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_ms: u64,
    ) -> Result<(), RegistryError> {
        self.sql
            .batch(vec![
                ensure_repository(repo, now_ms),
                link_statement(repo, digest, now_ms),
            ])
            .await?;
        Ok(())
    }

    /// Links `digest` to `repo` if `from` has it; true when `repo` has it afterwards.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
        now_ms: u64,
    ) -> Result<bool, RegistryError> {
        let results = self
            .sql
            .batch(vec![
                Statement::new(
                    "INSERT INTO repositories (name, created_at) SELECT CAST($1 AS TEXT), CAST($2 AS BIGINT) \
                     WHERE EXISTS (SELECT 1 FROM repository_blobs WHERE repository = $3 AND digest = $4) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(repo.as_str())
                .bind(now_ms)
                .bind(from.as_str())
                .bind(digest.as_str()),
                Statement::new(
                    "INSERT INTO repository_blobs (repository, digest, created_at) \
                     SELECT CAST($1 AS TEXT), digest, CAST($2 AS BIGINT) FROM repository_blobs \
                     WHERE repository = $3 AND digest = $4 \
                     ON CONFLICT (repository, digest) DO UPDATE SET created_at = excluded.created_at \
                     RETURNING digest",
                )
                .bind(repo.as_str())
                .bind(now_ms)
                .bind(from.as_str())
                .bind(digest.as_str()),
            ])
            .await?;
        Ok(results.get(1).is_some_and(|rows| !rows.is_empty()))
    }

    /// Unlinks a blob from `repo`; false when it was not linked.
    pub async fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        // The manifests that name it keep their rows otherwise (and so the link): a deleted blob
        // is deleted even when a manifest still names it, as in every registry.
        let results = self
            .sql
            .batch(vec![
                Statement::new("DELETE FROM manifest_blobs WHERE repository = $1 AND digest = $2")
                    .bind(repo.as_str())
                    .bind(digest.as_str()),
                Statement::new(
                    "DELETE FROM repository_blobs WHERE repository = $1 AND digest = $2 RETURNING digest",
                )
                .bind(repo.as_str())
                .bind(digest.as_str()),
            ])
            .await?;
        Ok(results.get(1).is_some_and(|rows| !rows.is_empty()))
    }

    /// A manifest by digest; with its bytes when `with_content`.
    pub async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_content: bool,
    ) -> Result<Option<ManifestRecord>, RegistryError> {
        let sql = if with_content {
            "SELECT digest, media_type, size, content FROM manifests WHERE repository = $1 AND digest = $2"
        } else {
            "SELECT digest, media_type, size FROM manifests WHERE repository = $1 AND digest = $2"
        };
        let rows = self
            .sql
            .query(
                Statement::new(sql)
                    .bind(repo.as_str())
                    .bind(digest.as_str()),
            )
            .await?;
        rows.first()
            .map(|r| manifest_record(r, with_content))
            .transpose()
    }

    /// The manifest a tag points at; with its bytes when `with_content`.
    pub async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        with_content: bool,
    ) -> Result<Option<ManifestRecord>, RegistryError> {
        let sql = if with_content {
            "SELECT m.digest, m.media_type, m.size, m.content FROM tags t JOIN manifests m \
             ON m.repository = t.repository AND m.digest = t.digest WHERE t.repository = $1 AND t.name = $2"
        } else {
            "SELECT m.digest, m.media_type, m.size FROM tags t JOIN manifests m \
             ON m.repository = t.repository AND m.digest = t.digest WHERE t.repository = $1 AND t.name = $2"
        };
        let rows = self
            .sql
            .query(Statement::new(sql).bind(repo.as_str()).bind(tag.as_str()))
            .await?;
        rows.first()
            .map(|r| manifest_record(r, with_content))
            .transpose()
    }

    /// Of the given dependencies, those `repo` does not have (as a blob or as a manifest, as the
    /// dependency requires) with the declared size: one query.
    pub async fn missing_dependencies(
        &self,
        repo: &RepoName,
        wanted: &[Dependency],
    ) -> Result<Vec<String>, RegistryError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut digests: Vec<&str> = wanted.iter().map(|d| d.digest.as_str()).collect();
        digests.sort_unstable();
        digests.dedup();
        let placeholders: Vec<String> = (0..digests.len()).map(|i| format!("${}", i + 2)).collect();
        let list = placeholders.join(", ");
        let sql = format!(
            "SELECT rb.digest, b.size, 'blob' FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repository = $1 AND rb.digest IN ({list}) \
             UNION ALL SELECT digest, size, 'manifest' FROM manifests WHERE repository = $1 AND digest IN ({list})"
        );
        let mut statement = Statement::new(sql).bind(repo.as_str());
        for digest in &digests {
            statement = statement.bind(*digest);
        }
        let rows = self.sql.query(statement).await?;
        let mut present: Vec<(String, u64, ReferenceKind)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind = if row.text(2)? == "manifest" {
                ReferenceKind::Manifest
            } else {
                ReferenceKind::Blob
            };
            present.push((row.text(0)?, row.uint(1)?, kind));
        }
        let mut missing: Vec<String> = Vec::new();
        for dep in wanted {
            let found = present.iter().any(|(digest, size, kind)| {
                digest == dep.digest.as_str() && *size == dep.size && *kind == dep.kind
            });
            let text = format!("{} ({} bytes)", dep.digest, dep.size);
            if !found && !missing.contains(&text) {
                missing.push(text);
            }
        }
        Ok(missing)
    }

    /// The digests the given tags of `repo` point at (tags that do not exist are left out).
    pub async fn tag_digests(
        &self,
        repo: &RepoName,
        tags: &[Tag],
    ) -> Result<Vec<(String, String)>, RegistryError> {
        let list: Vec<String> = (0..tags.len()).map(|i| format!("${}", i + 2)).collect();
        let mut statement = Statement::new(format!(
            "SELECT name, digest FROM tags WHERE repository = $1 AND name IN ({})",
            list.join(", ")
        ))
        .bind(repo.as_str());
        for tag in tags {
            statement = statement.bind(tag.as_str());
        }
        let rows = self.sql.query(statement).await?;
        rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect()
    }

    /// Stores a manifest and points `tags` at it: one batch. Tags in `immutable` are only
    /// created, never moved (a concurrent push that created one first keeps it).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &ParsedManifest,
        content: String,
        tags: &[Tag],
        immutable: &[Tag],
        now_ms: u64,
    ) -> Result<(), RegistryError> {
        let size = content.len() as u64;
        let mut batch = vec![
            ensure_repository(repo, now_ms),
            Statement::new(
                "INSERT INTO manifests (repository, digest, media_type, artifact_type, subject, \
                 annotations, size, content, created_at, indexed) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1) \
                 ON CONFLICT (repository, digest) DO NOTHING",
            )
            .bind(repo.as_str())
            .bind(digest.as_str())
            .bind(manifest.media_type.as_str())
            .bind(manifest.artifact_type.clone())
            .bind(manifest.subject.as_ref().map(|s| s.to_string()))
            .bind(manifest.subject.as_ref().and(manifest.annotations.clone()))
            .bind(size)
            .bind(content)
            .bind(now_ms),
        ];
        batch.extend(reference_statements(
            repo,
            digest,
            manifest,
            References::Checked,
        ));
        for tag in tags {
            let sql = if immutable.contains(tag) {
                "INSERT INTO tags (repository, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository, name) DO NOTHING"
            } else {
                "INSERT INTO tags (repository, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository, name) DO UPDATE SET digest = excluded.digest, \
                 updated_at = excluded.updated_at"
            };
            batch.push(
                Statement::new(sql)
                    .bind(repo.as_str())
                    .bind(tag.as_str())
                    .bind(digest.as_str())
                    .bind(now_ms),
            );
        }
        match self.sql.batch(batch).await {
            Ok(_) => Ok(()),
            // Checked just before; only a garbage collector can have removed one since.
            Err(SqlError::ForeignKeyViolation(_)) => Err(RegistryError::ManifestBlobUnknown(
                "a blob or manifest it references was garbage-collected while it was pushed; \
                 push it again"
                    .into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a manifest and every tag pointing at it; `None` when it did not exist, else the
    /// tags that went with it.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let results =
            self.sql
                .batch(vec![
                Statement::new(
                    "DELETE FROM tags WHERE repository = $1 AND digest = $2 RETURNING name",
                )
                .bind(repo.as_str())
                .bind(digest.as_str()),
                // Indexes naming it keep their other rows: a deleted manifest is deleted, as in
                // every registry, even while an index still names it. Its own rows cascade.
                Statement::new("DELETE FROM manifest_children WHERE repository = $1 AND child = $2")
                    .bind(repo.as_str())
                    .bind(digest.as_str()),
                Statement::new(
                    "DELETE FROM manifests WHERE repository = $1 AND digest = $2 RETURNING digest",
                )
                .bind(repo.as_str())
                .bind(digest.as_str()),
            ])
                .await?;
        if results.get(2).is_none_or(|rows| rows.is_empty()) {
            return Ok(None);
        }
        let tags = results
            .first()
            .map(|rows| {
                rows.iter()
                    .map(|r| r.text(0))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Some(tags))
    }

    /// Deletes a tag (not the manifest); false when it did not exist.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, RegistryError> {
        let rows = self
            .sql
            .query(
                Statement::new(
                    "DELETE FROM tags WHERE repository = $1 AND name = $2 RETURNING name",
                )
                .bind(repo.as_str())
                .bind(tag.as_str()),
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Up to `limit` tags of `repo` after `last`, in byte order.
    pub async fn tags(
        &self,
        repo: &RepoName,
        last: &str,
        limit: u64,
    ) -> Result<Vec<String>, RegistryError> {
        let rows = self
            .sql
            .query(
                Statement::new(
                    "SELECT name FROM tags WHERE repository = $1 AND name > $2 ORDER BY name LIMIT $3",
                )
                .bind(repo.as_str())
                .bind(last)
                .bind(limit),
            )
            .await?;
        rows.iter().map(|r| r.text(0).map_err(Into::into)).collect()
    }

    /// Up to `limit` tags of `repo` after `last` with what each points at and when it was
    /// pushed (the web app's tag list: one query instead of a manifest request per tag).
    pub async fn tag_details(
        &self,
        repo: &RepoName,
        last: &str,
        limit: u64,
    ) -> Result<Vec<TagDetail>, RegistryError> {
        let rows = self
            .sql
            .query(
                Statement::new(
                    "SELECT t.name, t.digest, t.updated_at, m.media_type, m.artifact_type, m.size \
                     FROM tags t JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest \
                     WHERE t.repository = $1 AND t.name > $2 ORDER BY t.name LIMIT $3",
                )
                .bind(repo.as_str())
                .bind(last)
                .bind(limit),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TagDetail {
                    name: r.text(0)?,
                    digest: r.text(1)?,
                    pushed_at_ms: r.uint(2)?,
                    media_type: r.text(3)?,
                    artifact_type: r.opt_text(4)?,
                    manifest_size: r.uint(5)?,
                })
            })
            .collect::<Result<_, SqlError>>()
            .map_err(Into::into)
    }

    pub async fn repository_exists(&self, repo: &RepoName) -> Result<bool, RegistryError> {
        let rows = self
            .sql
            .query(Statement::new("SELECT 1 FROM repositories WHERE name = $1").bind(repo.as_str()))
            .await?;
        Ok(!rows.is_empty())
    }

    /// Up to `limit` repository names after `last`, in byte order.
    pub async fn repositories(&self, last: &str, limit: u64) -> Result<Vec<String>, RegistryError> {
        let rows = self
            .sql
            .query(
                Statement::new(
                    "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
                )
                .bind(last)
                .bind(limit),
            )
            .await?;
        rows.iter().map(|r| r.text(0).map_err(Into::into)).collect()
    }

    /// Like [`Self::repositories`], but only public ones, those in `namespace` (`<ns>` and
    /// `<ns>/…`) and those of the organizations `namespace` (a user) is a member of: the
    /// policy's [`CatalogView::Visible`](crate::auth::CatalogView), as SQL.
    pub async fn visible_repositories(
        &self,
        last: &str,
        limit: u64,
        namespace: Option<&str>,
    ) -> Result<Vec<String>, RegistryError> {
        let owner = namespace.unwrap_or_default();
        let rows = self
            .sql
            .query(
                Statement::new(
                    "SELECT name FROM repositories WHERE name > $1 AND (visibility = 'public' \
                     OR (name = $3 AND $3 <> '') OR substr(name, 1, $4) = $5 \
                     OR EXISTS (SELECT 1 FROM org_members m WHERE m.user_name = $3 AND $3 <> '' \
                     AND (name = m.org OR substr(name, 1, length(m.org) + 1) = m.org || '/'))) \
                     ORDER BY name LIMIT $2",
                )
                .bind(last)
                .bind(limit)
                .bind(owner)
                .bind(owner.len() as u64 + 1)
                .bind(if owner.is_empty() {
                    String::new()
                } else {
                    format!("{owner}/")
                }),
            )
            .await?;
        rows.iter().map(|r| r.text(0).map_err(Into::into)).collect()
    }

    /// Manifests in `repo` whose subject is `subject`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, RegistryError> {
        let mut statement = Statement::new(match artifact_type {
            None => "SELECT digest, media_type, size, artifact_type, annotations FROM manifests \
                     WHERE repository = $1 AND subject = $2 ORDER BY digest",
            Some(_) => "SELECT digest, media_type, size, artifact_type, annotations FROM manifests \
                        WHERE repository = $1 AND subject = $2 AND artifact_type = $3 ORDER BY digest",
        })
        .bind(repo.as_str())
        .bind(subject.as_str());
        if let Some(artifact_type) = artifact_type {
            statement = statement.bind(artifact_type);
        }
        let rows = self.sql.query(statement).await?;
        rows.iter()
            .map(|r| {
                Ok(Referrer {
                    digest: r.text(0)?,
                    media_type: r.text(1)?,
                    size: r.uint(2)?,
                    artifact_type: r.opt_text(3)?,
                    annotations: r.opt_text(4)?,
                })
            })
            .collect()
    }
}

/// Links a blob to a repository, or refreshes the link (its age is the collector's grace window).
fn link_statement(repo: &RepoName, digest: &Digest, now_ms: u64) -> Statement {
    Statement::new(
        "INSERT INTO repository_blobs (repository, digest, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (repository, digest) DO UPDATE SET created_at = excluded.created_at",
    )
    .bind(repo.as_str())
    .bind(digest.as_str())
    .bind(now_ms)
}

/// Whether reference rows are written with a pushed manifest or recorded for an old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum References {
    /// With the manifest's batch: their foreign keys fail the batch if a garbage collector
    /// removed a target since it was checked.
    Checked,
    /// For a manifest stored before reference rows existed: only references whose targets are
    /// still there are recorded (no foreign key can fail).
    OfExistingTargets,
}

/// The rows recording what `manifest` (stored as `digest` in `repo`) references: one per blob
/// and per child manifest.
pub(crate) fn reference_statements(
    repo: &RepoName,
    digest: &Digest,
    manifest: &ParsedManifest,
    references: References,
) -> Vec<Statement> {
    let mut seen: Vec<&str> = Vec::new();
    let mut statements = Vec::new();
    for dependency in &manifest.dependencies {
        let target = dependency.digest.as_str();
        if seen.contains(&target) {
            continue;
        }
        seen.push(target);
        let sql = match (dependency.kind, references) {
            (ReferenceKind::Blob, References::Checked) => {
                "INSERT INTO manifest_blobs (repository, manifest, digest) VALUES ($1, $2, $3) \
                 ON CONFLICT (repository, manifest, digest) DO NOTHING"
            }
            (ReferenceKind::Manifest, References::Checked) => {
                "INSERT INTO manifest_children (repository, manifest, child) VALUES ($1, $2, $3) \
                 ON CONFLICT (repository, manifest, child) DO NOTHING"
            }
            (ReferenceKind::Blob, References::OfExistingTargets) => {
                "INSERT INTO manifest_blobs (repository, manifest, digest) \
                 SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT) WHERE EXISTS \
                 (SELECT 1 FROM repository_blobs WHERE repository = $1 AND digest = $3) \
                 ON CONFLICT (repository, manifest, digest) DO NOTHING"
            }
            (ReferenceKind::Manifest, References::OfExistingTargets) => {
                "INSERT INTO manifest_children (repository, manifest, child) \
                 SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT) WHERE EXISTS \
                 (SELECT 1 FROM manifests WHERE repository = $1 AND digest = $3) \
                 ON CONFLICT (repository, manifest, child) DO NOTHING"
            }
        };
        statements.push(
            Statement::new(sql)
                .bind(repo.as_str())
                .bind(digest.as_str())
                .bind(target),
        );
    }
    statements
}

fn manifest_record(row: &Row, with_content: bool) -> Result<ManifestRecord, RegistryError> {
    Ok(ManifestRecord {
        digest: stored_digest(row, 0)?,
        media_type: row.text(1)?,
        size: row.uint(2)?,
        content: if with_content {
            Some(row.bytes(3)?)
        } else {
            None
        },
    })
}
