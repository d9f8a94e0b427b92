-- Org mode: organizations, their members, teams, robot accounts, custom roles, grants and the
-- audit log.
--
-- An organization owns the namespace `<org>/…`, as a user does; org and user names never clash
-- (checked when either is created). Roles are built in (reader, developer, maintainer, admin,
-- owner) or per org (`org_roles`, a JSON list of permissions). A grant gives a principal
-- (`user:<name>`, `team:<name>`, `robot:<org>+<name>`, `anonymous`, `signed-in`) a role or a
-- JSON list of permissions on a resource (`<org>/<glob>[:<tag glob>]`). Robot secrets are kept as
-- SHA-256 only. Rows are removed explicitly, in the batch that removes their owner (no cascades).

CREATE TABLE orgs (
    name TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE org_members (
    org TEXT COLLATE "C" NOT NULL REFERENCES orgs (name),
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org, user_name)
);

CREATE INDEX org_members_by_user ON org_members (user_name);

CREATE TABLE org_roles (
    org TEXT COLLATE "C" NOT NULL REFERENCES orgs (name),
    name TEXT COLLATE "C" NOT NULL,
    permissions TEXT NOT NULL,
    PRIMARY KEY (org, name)
);

CREATE TABLE teams (
    org TEXT COLLATE "C" NOT NULL REFERENCES orgs (name),
    name TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org, name)
);

CREATE TABLE team_members (
    org TEXT COLLATE "C" NOT NULL,
    team TEXT COLLATE "C" NOT NULL,
    user_name TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (org, team, user_name),
    FOREIGN KEY (org, team) REFERENCES teams (org, name),
    FOREIGN KEY (org, user_name) REFERENCES org_members (org, user_name)
);

CREATE TABLE robots (
    org TEXT COLLATE "C" NOT NULL REFERENCES orgs (name),
    name TEXT COLLATE "C" NOT NULL,
    secret_id TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT,
    expires_at BIGINT,
    PRIMARY KEY (org, name)
);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    org TEXT COLLATE "C" NOT NULL REFERENCES orgs (name),
    principal TEXT COLLATE "C" NOT NULL,
    resource TEXT NOT NULL,
    role TEXT,
    permissions TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX grants_by_org ON grants (org, principal);

CREATE TABLE audit_log (
    org TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (org, at, id)
);
