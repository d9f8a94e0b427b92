-- Users, their personal access tokens, and repository visibility.
--
-- A user owns the namespace `<name>/…`. Access tokens are random secrets shown once; only their
-- SHA-256 is kept. `scopes` is a JSON list of {"repository": <pattern>, "actions": [...]}, the
-- most a token may grant. Repositories are private until their owner makes them public.

CREATE TABLE users (
    name TEXT COLLATE "C" PRIMARY KEY,
    admin BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE access_tokens (
    id TEXT PRIMARY KEY,
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE INDEX access_tokens_by_user ON access_tokens (user_name);

ALTER TABLE repositories ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private';
