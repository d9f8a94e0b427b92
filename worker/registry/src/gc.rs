//! Online garbage collection: frees what nothing references while pushes and pulls go on.
//!
//! What is collected, in this order, each pass repeated until it frees nothing more:
//! 1. untagged manifests, when a policy keeps only the newest N per repository (off by default);
//!    never one an index names, and never a referrer (a referrer lives as long as its subject);
//! 2. referrers whose subject is gone;
//! 3. repository links to blobs no manifest of that repository references;
//! 4. blobs no repository links, whose rows are deleted and whose storage locators are queued in
//!    `blob_deletions`; then the queue is drained: the bytes are deleted from the store.
//!
//! Why a concurrent push never loses a blob (three guards, as Harbor, zot and serverless-registry
//! each use one of them):
//! - **Reference rows** (`manifest_blobs`, `manifest_children`, written with the manifest) with
//!   foreign keys: every delete here is one conditional statement (`... AND NOT EXISTS
//!   (reference)`), and a push that references the row at the same moment either makes the
//!   delete fail with a foreign-key violation (counted as `skipped_in_use`) or, if the delete
//!   committed first, fails itself with `MANIFEST_BLOB_UNKNOWN` before anything is stored.
//! - **A grace window** (`Config::gc_grace`, default 24 h): links, manifests and referrers younger
//!   than it are kept, so the blobs of a push in progress (uploaded, manifest not yet put) stay.
//!   A link told to a pusher as present (HEAD, mount, upload) is refreshed, so a push that
//!   skips an upload because the blob exists is inside the window too.
//! - **Unique locators, deleted after their row** (the marker check): stores name each upload's
//!   bytes uniquely, so a queued locator belongs to a row that no longer exists and never will;
//!   a blob pushed again gets new bytes under a new locator. A crash between the row and the
//!   bytes leaves the queue entry, and the next run deletes the bytes.
//!
//! Every step is idempotent: a run killed at any point leaves a consistent database (each batch
//! is one transaction) and the next run finishes the work.

use std::time::Duration;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest;
use crate::metadata::{reference_statements, References};
use crate::names::RepoName;
use crate::ports::{BlobStore, Row, Sql, SqlError, Statement, StoreError};

/// How many candidates one statement batch (one transaction, one round trip) handles.
const CHUNK: u64 = 100;
/// Rounds of the manifest passes (an index freed makes its children untagged orphans, a
/// referrer freed makes its own referrers orphans): far more than real nesting.
const MAX_ROUNDS: usize = 16;

/// What a run may collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Report what would be collected; change nothing.
    pub dry_run: bool,
    /// Nothing younger than this is collected.
    pub grace: Duration,
    /// Untagged manifests kept per repository, newest first; `None` keeps every one.
    pub keep_untagged: Option<u64>,
}

/// What a run collected (or, in a dry run, would collect first: freeing manifests frees more).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Manifests stored before reference rows existed whose references were recorded now.
    pub manifests_indexed: u64,
    pub untagged_manifests_deleted: u64,
    pub referrers_deleted: u64,
    pub manifest_bytes_freed: u64,
    pub blob_links_deleted: u64,
    pub blobs_deleted: u64,
    /// Bytes deleted from the blob store (in a dry run: held by blobs that would be deleted).
    pub blob_bytes_freed: u64,
    /// Candidates a concurrent push referenced just as they were to be deleted: kept.
    pub skipped_in_use: u64,
    /// Blob bytes the store failed to delete: still queued, retried by the next run.
    pub storage_errors: u64,
}

/// Collects garbage in the metadata behind `sql` and the bytes in `blobs`, as of `now_ms`.
pub async fn collect(
    sql: &dyn Sql,
    blobs: &dyn BlobStore,
    now_ms: u64,
    options: GcOptions,
) -> Result<GcReport, RegistryError> {
    let grace_ms = u64::try_from(options.grace.as_millis()).unwrap_or(u64::MAX);
    let cutoff = now_ms.saturating_sub(grace_ms);
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    if options.dry_run {
        estimate(sql, cutoff, options.keep_untagged, &mut report).await?;
        return Ok(report);
    }
    report.manifests_indexed = index_manifests(sql).await?;
    for _ in 0..MAX_ROUNDS {
        let mut freed = 0;
        if let Some(keep) = options.keep_untagged {
            let (count, bytes, in_use) =
                delete_manifests(sql, Pass::Untagged { keep }, cutoff).await?;
            report.untagged_manifests_deleted += count;
            report.manifest_bytes_freed += bytes;
            report.skipped_in_use += in_use;
            freed += count;
        }
        let (count, bytes, in_use) = delete_manifests(sql, Pass::OrphanReferrers, cutoff).await?;
        report.referrers_deleted += count;
        report.manifest_bytes_freed += bytes;
        report.skipped_in_use += in_use;
        freed += count;
        if freed == 0 {
            break;
        }
    }
    let (links, in_use) = delete_links(sql, cutoff).await?;
    report.blob_links_deleted = links;
    report.skipped_in_use += in_use;
    let (rows, in_use) = delete_blob_rows(sql, now_ms).await?;
    report.blobs_deleted = rows;
    report.skipped_in_use += in_use;
    let (bytes, errors) = drain_deletions(sql, blobs).await?;
    report.blob_bytes_freed = bytes;
    report.storage_errors = errors;
    tracing::info!(
        indexed = report.manifests_indexed,
        untagged = report.untagged_manifests_deleted,
        referrers = report.referrers_deleted,
        links = report.blob_links_deleted,
        blobs = report.blobs_deleted,
        bytes = report.blob_bytes_freed,
        in_use = report.skipped_in_use,
        storage_errors = report.storage_errors,
        "garbage collection finished"
    );
    Ok(report)
}

/// Records the references of manifests stored before reference rows existed; returns how many.
/// Only references whose targets are still there are recorded (a target deleted by its user
/// leaves a dangling manifest, as before).
async fn index_manifests(sql: &dyn Sql) -> Result<u64, RegistryError> {
    let mut indexed = 0;
    loop {
        let rows = sql
            .query(
                Statement::new(
                    "SELECT repository, digest, media_type, content FROM manifests \
                     WHERE indexed = 0 LIMIT $1",
                )
                .bind(CHUNK),
            )
            .await?;
        if rows.is_empty() {
            return Ok(indexed);
        }
        let mut batch = Vec::new();
        for row in &rows {
            let repo = RepoName::parse(&row.text(0)?)
                .map_err(|e| RegistryError::Internal(format!("database holds a bad name: {e}")))?;
            let digest: Digest = row.text(1)?.parse().map_err(|e| {
                RegistryError::Internal(format!("database holds a bad digest: {e}"))
            })?;
            let content = row.bytes(3)?;
            // Parsed once already, when pushed: failing now is a parser change, and freeing its
            // blobs on a guess would lose data. Stop instead.
            let parsed = manifest::parse(&content, Some(&row.text(2)?)).map_err(|e| {
                RegistryError::Internal(format!(
                    "garbage collection stopped: manifest {digest} in {repo} no longer parses \
                     ({e}); its references are unknown"
                ))
            })?;
            batch.extend(reference_statements(
                &repo,
                &digest,
                &parsed,
                References::OfExistingTargets,
            ));
            batch.push(
                Statement::new(
                    "UPDATE manifests SET indexed = 1 WHERE repository = $1 AND digest = $2",
                )
                .bind(repo.as_str())
                .bind(digest.as_str()),
            );
        }
        sql.batch(batch).await?;
        indexed += rows.len() as u64;
    }
}

/// The two manifest passes.
#[derive(Debug, Clone, Copy)]
enum Pass {
    Untagged { keep: u64 },
    OrphanReferrers,
}

/// Conditions every collected manifest meets, for `m` (candidates) or `$1`/`$2` (the delete).
const UNREFERENCED_MANIFEST: &str = "NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository = m.repository AND t.digest = m.digest) \
     AND NOT EXISTS (SELECT 1 FROM manifest_children c WHERE c.repository = m.repository AND c.child = m.digest)";
const ORPHAN: &str = "m.subject IS NOT NULL AND NOT EXISTS \
     (SELECT 1 FROM manifests s WHERE s.repository = m.repository AND s.digest = m.subject)";

impl Pass {
    fn candidates(self, cutoff: u64) -> Statement {
        match self {
            Pass::Untagged { keep } => Statement::new(format!(
                "SELECT repository, digest FROM (SELECT m.repository, m.digest, m.created_at, \
                 ROW_NUMBER() OVER (PARTITION BY m.repository ORDER BY m.created_at DESC, m.digest) AS n \
                 FROM manifests m WHERE m.subject IS NULL AND {UNREFERENCED_MANIFEST}) u \
                 WHERE n > $1 AND created_at < $2 LIMIT $3"
            ))
            .bind(keep)
            .bind(cutoff)
            .bind(CHUNK),
            Pass::OrphanReferrers => Statement::new(format!(
                "SELECT m.repository, m.digest FROM manifests m WHERE m.created_at < $1 \
                 AND {ORPHAN} AND {UNREFERENCED_MANIFEST} LIMIT $2"
            ))
            .bind(cutoff)
            .bind(CHUNK),
        }
    }

    /// Deletes one candidate if it still qualifies (the keep-N rank is not checked again: a
    /// manifest pushed meanwhile only adds to what is kept). Its reference rows cascade.
    fn delete(self, repository: &str, digest: &str, cutoff: u64) -> Statement {
        let extra = match self {
            Pass::Untagged { .. } => "m.subject IS NULL",
            Pass::OrphanReferrers => ORPHAN,
        };
        Statement::new(format!(
            "DELETE FROM manifests WHERE repository = $1 AND digest = $2 AND EXISTS \
             (SELECT 1 FROM manifests m WHERE m.repository = $1 AND m.digest = $2 \
             AND m.created_at < $3 AND {extra} AND {UNREFERENCED_MANIFEST}) RETURNING size"
        ))
        .bind(repository)
        .bind(digest)
        .bind(cutoff)
    }
}

/// What a pass deleted: the first row each delete returned, and candidates skipped in use.
#[derive(Default)]
struct PassOutcome {
    returned: Vec<Row>,
    in_use: u64,
}

impl PassOutcome {
    fn deleted(&self) -> u64 {
        self.returned.len() as u64
    }
}

/// Runs one pass to the end: takes the next chunk of candidates, deletes each with the
/// statements `delete` makes of its row, until a chunk is empty or frees nothing (what is left
/// is in use, and the next run tries it again).
async fn run_pass(
    sql: &dyn Sql,
    pass: &'static str,
    candidates: impl Fn() -> Statement,
    delete: impl Fn(&Row) -> Result<Vec<Statement>, SqlError>,
) -> Result<PassOutcome, RegistryError> {
    let mut total = PassOutcome::default();
    loop {
        let rows = sql.query(candidates()).await?;
        if rows.is_empty() {
            break;
        }
        let statements = rows.iter().map(&delete).collect::<Result<_, _>>()?;
        let outcome = delete_chunk(sql, statements).await?;
        total.in_use += outcome.in_use;
        let freed = !outcome.deleted.is_empty();
        total.returned.extend(
            outcome
                .deleted
                .into_iter()
                .filter_map(|rows| rows.into_iter().next()),
        );
        tracing::info!(pass, deleted = total.deleted(), "garbage collection");
        if !freed {
            break;
        }
    }
    Ok(total)
}

/// Runs a manifest pass to the end: (deleted, bytes, skipped in use).
async fn delete_manifests(
    sql: &dyn Sql,
    pass: Pass,
    cutoff: u64,
) -> Result<(u64, u64, u64), RegistryError> {
    let name = match pass {
        Pass::Untagged { .. } => "untagged manifests",
        Pass::OrphanReferrers => "orphaned referrers",
    };
    let outcome = run_pass(
        sql,
        name,
        || pass.candidates(cutoff),
        |row| Ok(vec![pass.delete(&row.text(0)?, &row.text(1)?, cutoff)]),
    )
    .await?;
    let mut bytes = 0;
    for row in &outcome.returned {
        bytes += row.uint(0)?;
    }
    Ok((outcome.deleted(), bytes, outcome.in_use))
}

const UNREFERENCED_LINK: &str = "NOT EXISTS (SELECT 1 FROM manifest_blobs mb \
     WHERE mb.repository = rb.repository AND mb.digest = rb.digest)";

/// Deletes links no manifest of their repository references: (deleted, skipped in use).
async fn delete_links(sql: &dyn Sql, cutoff: u64) -> Result<(u64, u64), RegistryError> {
    let outcome = run_pass(
        sql,
        "blob links",
        || {
            Statement::new(format!(
                "SELECT rb.repository, rb.digest FROM repository_blobs rb \
                 WHERE rb.created_at < $1 AND {UNREFERENCED_LINK} LIMIT $2"
            ))
            .bind(cutoff)
            .bind(CHUNK)
        },
        |row| {
            Ok(vec![Statement::new(format!(
                "DELETE FROM repository_blobs WHERE repository = $1 AND digest = $2 AND EXISTS \
                 (SELECT 1 FROM repository_blobs rb WHERE rb.repository = $1 AND rb.digest = $2 \
                 AND rb.created_at < $3 AND {UNREFERENCED_LINK}) RETURNING digest"
            ))
            .bind(row.text(0)?)
            .bind(row.text(1)?)
            .bind(cutoff)])
        },
    )
    .await?;
    Ok((outcome.deleted(), outcome.in_use))
}

/// Deletes blob rows no repository links and queues their locators: (deleted, skipped in use).
async fn delete_blob_rows(sql: &dyn Sql, now_ms: u64) -> Result<(u64, u64), RegistryError> {
    let outcome = run_pass(
        sql,
        "blobs",
        || {
            Statement::new(
                "SELECT digest, locator, size FROM blobs b WHERE NOT EXISTS \
                 (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) LIMIT $1",
            )
            .bind(CHUNK)
        },
        |row| {
            let (digest, locator, size) = (row.text(0)?, row.text(1)?, row.uint(2)?);
            Ok(vec![
                Statement::new(
                    "DELETE FROM blobs WHERE digest = $1 AND locator = $2 AND NOT EXISTS \
                     (SELECT 1 FROM repository_blobs rb WHERE rb.digest = $1) RETURNING digest",
                )
                .bind(digest.as_str())
                .bind(locator.as_str()),
                // Queued only if no row names the locator any more (the delete above ran).
                Statement::new(
                    "INSERT INTO blob_deletions (locator, digest, size, queued_at) \
                     SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS BIGINT), CAST($4 AS BIGINT) \
                     WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE locator = $1) \
                     ON CONFLICT (locator) DO NOTHING",
                )
                .bind(locator)
                .bind(digest)
                .bind(size)
                .bind(now_ms),
            ])
        },
    )
    .await?;
    Ok((outcome.deleted(), outcome.in_use))
}

/// Deletes the queued bytes from the store: (bytes freed, storage errors).
async fn drain_deletions(
    sql: &dyn Sql,
    blobs: &dyn BlobStore,
) -> Result<(u64, u64), RegistryError> {
    let (mut freed, mut errors) = (0, 0);
    let mut failed: Vec<String> = Vec::new();
    loop {
        let rows = sql
            .query(
                Statement::new(
                    "SELECT locator, size FROM blob_deletions ORDER BY queued_at, locator LIMIT $1",
                )
                .bind(CHUNK + failed.len() as u64),
            )
            .await?;
        let queued: Vec<(String, u64)> = rows
            .iter()
            .map(|r| Ok((r.text(0)?, r.uint(1)?)))
            .collect::<Result<Vec<_>, SqlError>>()?
            .into_iter()
            .filter(|(locator, _)| !failed.contains(locator))
            .collect();
        if queued.is_empty() {
            break;
        }
        let mut done = Vec::new();
        for (locator, size) in queued {
            match blobs.delete(&locator).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {
                    freed += size;
                    done.push(
                        Statement::new("DELETE FROM blob_deletions WHERE locator = $1")
                            .bind(locator),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, locator, "garbage collection: could not delete blob bytes; retried next run");
                    errors += 1;
                    failed.push(locator);
                }
            }
        }
        if !done.is_empty() {
            sql.batch(done).await?;
        }
    }
    Ok((freed, errors))
}

/// The outcome of one chunk of candidate deletes.
struct ChunkOutcome {
    /// The first statement's rows of each candidate that was deleted.
    deleted: Vec<Vec<Row>>,
    in_use: u64,
}

/// Runs each candidate's statements, all candidates in one transaction; if a concurrent push
/// made one of them fail on a foreign key, runs each candidate alone and skips the failing ones.
async fn delete_chunk(
    sql: &dyn Sql,
    candidates: Vec<Vec<Statement>>,
) -> Result<ChunkOutcome, RegistryError> {
    let sizes: Vec<usize> = candidates.iter().map(Vec::len).collect();
    let all: Vec<Statement> = candidates.iter().flatten().cloned().collect();
    match sql.batch(all).await {
        Ok(results) => {
            let mut deleted = Vec::new();
            let mut index = 0;
            for size in sizes {
                if let Some(rows) = results.get(index).filter(|rows| !rows.is_empty()) {
                    deleted.push(rows.clone());
                }
                index += size;
            }
            Ok(ChunkOutcome { deleted, in_use: 0 })
        }
        Err(SqlError::ForeignKeyViolation(_)) => {
            let mut outcome = ChunkOutcome {
                deleted: Vec::new(),
                in_use: 0,
            };
            for statements in candidates {
                match sql.batch(statements).await {
                    Ok(results) => {
                        if let Some(rows) = results.into_iter().next().filter(|r| !r.is_empty()) {
                            outcome.deleted.push(rows);
                        }
                    }
                    Err(SqlError::ForeignKeyViolation(_)) => outcome.in_use += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(outcome)
        }
        Err(e) => Err(e.into()),
    }
}

/// A dry run: what the first round would collect, counted in one query per pass.
async fn estimate(
    sql: &dyn Sql,
    cutoff: u64,
    keep_untagged: Option<u64>,
    report: &mut GcReport,
) -> Result<(), RegistryError> {
    let count = |rows: Vec<Row>| -> Result<(u64, u64), RegistryError> {
        let row = rows.first();
        Ok((
            row.map(|r| r.uint(0)).transpose()?.unwrap_or(0),
            row.map(|r| r.uint(1)).transpose()?.unwrap_or(0),
        ))
    };
    if let Some(keep) = keep_untagged {
        let (n, bytes) = count(
            sql.query(
                Statement::new(format!(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM (SELECT m.size, m.created_at, \
                     ROW_NUMBER() OVER (PARTITION BY m.repository ORDER BY m.created_at DESC, m.digest) AS n \
                     FROM manifests m WHERE m.subject IS NULL AND {UNREFERENCED_MANIFEST}) u \
                     WHERE n > $1 AND created_at < $2"
                ))
                .bind(keep)
                .bind(cutoff),
            )
            .await?,
        )?;
        report.untagged_manifests_deleted = n;
        report.manifest_bytes_freed += bytes;
    }
    let (n, bytes) = count(
        sql.query(
            Statement::new(format!(
                "SELECT COUNT(*), COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.created_at < $1 \
                 AND {ORPHAN} AND {UNREFERENCED_MANIFEST}"
            ))
            .bind(cutoff),
        )
        .await?,
    )?;
    report.referrers_deleted = n;
    report.manifest_bytes_freed += bytes;
    let (n, _) = count(
        sql.query(
            Statement::new(format!(
                "SELECT COUNT(*), 0 FROM repository_blobs rb WHERE rb.created_at < $1 AND {UNREFERENCED_LINK}"
            ))
            .bind(cutoff),
        )
        .await?,
    )?;
    report.blob_links_deleted = n;
    // Blobs none of whose links would be kept.
    let (n, bytes) = count(
        sql.query(
            Statement::new(format!(
                "SELECT COUNT(*), COALESCE(SUM(b.size), 0) FROM blobs b WHERE NOT EXISTS \
                 (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest \
                 AND NOT (rb.created_at < $1 AND {UNREFERENCED_LINK}))"
            ))
            .bind(cutoff),
        )
        .await?,
    )?;
    report.blobs_deleted = n;
    report.blob_bytes_freed = bytes;
    Ok(())
}
