-- Garbage collection: what each manifest references, and blob bytes waiting to be deleted.
--
-- `manifest_blobs` and `manifest_children` are the database's reference counts (as Harbor keeps
-- them): a row per blob or child manifest a manifest names, written in the batch that stores the
-- manifest. Their foreign keys are what makes collection race-safe: inserting a reference locks
-- the row it points at (Postgres takes FOR KEY SHARE; SQLite runs one writer at a time), so a
-- collector's DELETE of a link or manifest a concurrent push is about to reference either waits
-- and fails with a foreign-key violation, or commits first and the push fails cleanly
-- (MANIFEST_BLOB_UNKNOWN) instead of storing a manifest whose blobs are gone. A manifest's own
-- rows go with it (ON DELETE CASCADE).
--
-- Manifests stored before this migration have `indexed = 0`; the collector records their
-- references (parsing `content`) before it frees anything.
--
-- `blob_deletions` queues the storage locators of blob rows already deleted: the bytes are
-- deleted after the row (a crash in between leaves the queue entry, retried by the next run, and
-- never a row without bytes). Locators are unique per upload and never reused, so deleting a
-- queued locator can never delete the bytes of a blob pushed again meanwhile.

CREATE TABLE manifest_blobs (
    repository TEXT COLLATE "C" NOT NULL,
    manifest TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (repository, manifest, digest),
    FOREIGN KEY (repository, manifest) REFERENCES manifests (repository, digest) ON DELETE CASCADE,
    FOREIGN KEY (repository, digest) REFERENCES repository_blobs (repository, digest)
);

CREATE INDEX manifest_blobs_by_digest ON manifest_blobs (repository, digest);

CREATE TABLE manifest_children (
    repository TEXT COLLATE "C" NOT NULL,
    manifest TEXT NOT NULL,
    child TEXT NOT NULL,
    PRIMARY KEY (repository, manifest, child),
    FOREIGN KEY (repository, manifest) REFERENCES manifests (repository, digest) ON DELETE CASCADE,
    FOREIGN KEY (repository, child) REFERENCES manifests (repository, digest)
);

CREATE INDEX manifest_children_by_child ON manifest_children (repository, child);

ALTER TABLE manifests ADD COLUMN indexed BIGINT NOT NULL DEFAULT 0;

CREATE TABLE blob_deletions (
    locator TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    queued_at BIGINT NOT NULL
);

-- The collector's lookups: links by digest alone, rows by locator.
CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);

CREATE INDEX blobs_by_locator ON blobs (locator);
