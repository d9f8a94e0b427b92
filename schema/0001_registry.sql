-- The registry's metadata: repositories, blobs and their storage locators, repository links,
-- manifests (stored inline, at most a few MiB), tags and (through manifests.subject) referrers.
--
-- Manifests are JSON, hence valid UTF-8, and are kept as TEXT byte for byte (half the size of
-- bytea's hex on the wire: a 4 MiB manifest stays under Neon's 10 MiB request and response caps).
-- `annotations` is filled only for manifests with a subject: the referrers API is its only reader.
--
-- Dialect: PostgreSQL, kept to the subset SQLite also runs. Names sort bytewise (COLLATE "C";
-- the SQLite executor registers a "C" collation) so tag and catalog pages come from the primary
-- key's order, never from a sort of the whole table.

CREATE TABLE repositories (
    name TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    locator TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE repository_blobs (
    repository TEXT COLLATE "C" NOT NULL REFERENCES repositories (name),
    digest TEXT NOT NULL REFERENCES blobs (digest),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repository, digest)
);

CREATE TABLE manifests (
    repository TEXT COLLATE "C" NOT NULL REFERENCES repositories (name),
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    size BIGINT NOT NULL,
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repository, digest)
);

CREATE INDEX manifests_by_subject ON manifests (repository, subject);

CREATE TABLE tags (
    repository TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repository, name),
    FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest)
);

CREATE INDEX tags_by_digest ON tags (repository, digest);
