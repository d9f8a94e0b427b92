//! Organizations in SQL: orgs, members, teams, robot accounts, custom roles, grants and the audit
//! log, and the one query that resolves a principal's grants into [`Rule`]s at the token endpoint.
//!
//! Every change is one batch (one transaction) together with its audit entry. Who may make a change
//! is the [`Policy`](super::Policy)'s decision, made by the callers (the API and the CLI); this
//! module checks only what the data itself requires (names, existence, the last owner).
//!
//! A robot secret reads `orr_<id>_<secret>`, like an access token: the id finds the row, the
//! secret is compared with its stored SHA-256 in constant time and never kept.

use serde::Serialize;

use super::permissions::{builtin_role, Permission, Permissions, Resource, Rule, BUILTIN_ROLES};
use super::store::valid_user_name;
use super::{
    constant_time_eq, expired, hash_secret, mint_secret, split_secret, MintedSecret, Principal,
};
use crate::error::RegistryError;
use crate::ports::{Random, Row, Sql, SqlError, Statement};

/// Why an organization change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<SqlError> for OrgError {
    fn from(e: SqlError) -> Self {
        OrgError::Registry(e.into())
    }
}

/// Who makes a change and from where, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub source: String,
}

impl Actor {
    /// The operator at the command line.
    pub fn cli() -> Self {
        Actor {
            name: "cli".into(),
            source: "cli".into(),
        }
    }
}

/// Clock and randomness of a change.
pub struct Context<'a> {
    pub sql: &'a dyn Sql,
    pub random: &'a dyn Random,
    pub now_ms: u64,
    pub actor: Actor,
}

impl Context<'_> {
    fn id(&self) -> String {
        let mut id = [0u8; 8];
        self.random.fill(&mut id);
        hex::encode(id)
    }

    /// The audit entry of a change, to be put in the change's batch.
    pub fn audit(&self, org: &str, action: &str, target: &str, detail: &str) -> Statement {
        Statement::new(
            "INSERT INTO audit_log (org, at, id, actor, action, target, detail, source) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(org)
        .bind(self.now_ms)
        .bind(self.id())
        .bind(self.actor.name.as_str())
        .bind(action)
        .bind(target)
        .bind(detail)
        .bind(self.actor.source.as_str())
    }

    /// An audit entry for `org` if it is an organization (a no-op for a user's namespace).
    pub fn audit_if_org(&self, org: &str, action: &str, target: &str, detail: &str) -> Statement {
        Statement::new(
            "INSERT INTO audit_log (org, at, id, actor, action, target, detail, source) \
             SELECT name, CAST($2 AS BIGINT), CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS TEXT), \
             CAST($6 AS TEXT), CAST($7 AS TEXT), CAST($8 AS TEXT) FROM orgs WHERE name = $1",
        )
        .bind(org)
        .bind(self.now_ms)
        .bind(self.id())
        .bind(self.actor.name.as_str())
        .bind(action)
        .bind(target)
        .bind(detail)
        .bind(self.actor.source.as_str())
    }
}

fn check_name(kind: &str, name: &str) -> Result<(), OrgError> {
    if valid_user_name(name) {
        Ok(())
    } else {
        Err(OrgError::Invalid(format!(
            "{kind} names are 1 to 39 characters: lowercase letters, digits and single hyphens \
             ({name:?} is not one)"
        )))
    }
}

/// The organization a repository belongs to, by its first path segment (it may be a user).
pub fn namespace_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

// ---------------------------------------------------------------------------
// organizations
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrgInfo {
    pub name: String,
    pub created_at_ms: u64,
    /// The caller's role in it (`None` when not a member, e.g. an admin).
    pub role: Option<String>,
}

/// Whether `name` is an organization.
pub async fn exists(sql: &dyn Sql, name: &str) -> Result<bool, OrgError> {
    let rows = sql
        .query(Statement::new("SELECT name FROM orgs WHERE name = $1").bind(name))
        .await?;
    Ok(!rows.is_empty())
}

/// Creates an organization; `owner` (when given) becomes its first owner.
pub async fn create(
    ctx: &Context<'_>,
    name: &str,
    owner: Option<&str>,
) -> Result<OrgInfo, OrgError> {
    check_name("organization", name)?;
    let mut lookup = Statement::new(
        "SELECT 'user', name FROM users WHERE name = $1 UNION ALL SELECT 'org', name FROM orgs WHERE name = $1",
    )
    .bind(name);
    if let Some(owner) = owner {
        lookup = Statement::new(
            "SELECT 'user', name FROM users WHERE name = $1 OR name = $2 \
             UNION ALL SELECT 'org', name FROM orgs WHERE name = $1",
        )
        .bind(name)
        .bind(owner);
    }
    let rows = ctx.sql.query(lookup).await?;
    let taken = rows.iter().any(|r| r.text(1).is_ok_and(|n| n == name));
    if taken {
        return Err(OrgError::Conflict(format!(
            "the name {name} is taken (by a user or an organization)"
        )));
    }
    if let Some(owner) = owner {
        if !rows.iter().any(|r| r.text(1).is_ok_and(|n| n == owner)) {
            return Err(OrgError::NotFound(format!("no such user: {owner}")));
        }
    }
    let mut batch = vec![
        Statement::new("INSERT INTO orgs (name, created_at) VALUES ($1, $2)")
            .bind(name)
            .bind(ctx.now_ms),
    ];
    if let Some(owner) = owner {
        batch.push(
            Statement::new(
                "INSERT INTO org_members (org, user_name, role, created_at) VALUES ($1, $2, 'owner', $3)",
            )
            .bind(name)
            .bind(owner)
            .bind(ctx.now_ms),
        );
    }
    batch.push(ctx.audit(name, "org.create", name, owner.map_or("", |o| o)));
    match ctx.sql.batch(batch).await {
        Ok(_) => Ok(OrgInfo {
            name: name.to_owned(),
            created_at_ms: ctx.now_ms,
            role: owner.map(|_| "owner".to_owned()),
        }),
        Err(SqlError::UniqueViolation(_)) => Err(OrgError::Conflict(format!(
            "the name {name} is taken (by a user or an organization)"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The organizations `user` belongs to (every one, for `None`: an admin or the CLI).
pub async fn list(sql: &dyn Sql, user: Option<&str>) -> Result<Vec<OrgInfo>, OrgError> {
    let statement = match user {
        Some(user) => Statement::new(
            "SELECT o.name, o.created_at, m.role FROM orgs o JOIN org_members m ON m.org = o.name \
             WHERE m.user_name = $1 ORDER BY o.name",
        )
        .bind(user),
        None => {
            Statement::new("SELECT name, created_at, CAST(NULL AS TEXT) FROM orgs ORDER BY name")
        }
    };
    let rows = sql.query(statement).await?;
    rows.iter().map(org_info).collect()
}

/// An `OrgInfo` from a row of (name, created_at, role).
fn org_info(row: &Row) -> Result<OrgInfo, OrgError> {
    Ok(OrgInfo {
        name: row.text(0)?,
        created_at_ms: row.uint(1)?,
        role: row.opt_text(2)?,
    })
}

/// An organization and `user`'s role in it; `None` when there is no such organization.
pub async fn get(sql: &dyn Sql, name: &str, user: &str) -> Result<Option<OrgInfo>, OrgError> {
    let rows = sql
        .query(
            Statement::new(
                "SELECT o.name, o.created_at, m.role FROM orgs o LEFT JOIN org_members m \
                 ON m.org = o.name AND m.user_name = $2 WHERE o.name = $1",
            )
            .bind(name)
            .bind(user),
        )
        .await?;
    rows.first().map(org_info).transpose()
}

fn repositories_of(org: &str) -> (String, String) {
    (org.to_owned(), format!("{org}/%"))
}

/// Deletes an organization with its members, teams, robots, roles and grants (its audit log is
/// kept). Refused while it owns repositories, unless `force`, which deletes them (their blobs are
/// left to garbage collection). Returns how many repositories went.
pub async fn delete(ctx: &Context<'_>, org: &str, force: bool) -> Result<u64, OrgError> {
    if !exists(ctx.sql, org).await? {
        return Err(OrgError::NotFound(format!("no organization {org}")));
    }
    let (exact, below) = repositories_of(org);
    let count = ctx
        .sql
        .query(
            Statement::new("SELECT COUNT(*) FROM repositories WHERE name = $1 OR name LIKE $2")
                .bind(exact.as_str())
                .bind(below.as_str()),
        )
        .await?;
    let repositories = count.first().map(|r| r.uint(0)).transpose()?.unwrap_or(0);
    if repositories > 0 && !force {
        return Err(OrgError::Conflict(format!(
            "{org} owns {repositories} repositories: delete them first, or delete with force"
        )));
    }
    let in_org = |table: &str, column: &str| {
        Statement::new(format!(
            "DELETE FROM {table} WHERE {column} = $1 OR {column} LIKE $2"
        ))
        .bind(exact.as_str())
        .bind(below.as_str())
    };
    let of_org =
        |table: &str| Statement::new(format!("DELETE FROM {table} WHERE org = $1")).bind(org);
    let batch = vec![
        in_org("tags", "repository"),
        in_org("manifests", "repository"),
        in_org("repository_blobs", "repository"),
        in_org("repositories", "name"),
        of_org("grants"),
        of_org("team_members"),
        of_org("teams"),
        of_org("robots"),
        of_org("org_roles"),
        of_org("org_members"),
        Statement::new("DELETE FROM orgs WHERE name = $1").bind(org),
        ctx.audit(
            org,
            "org.delete",
            org,
            &format!("repositories deleted: {repositories}"),
        ),
    ];
    ctx.sql.batch(batch).await?;
    Ok(repositories)
}

// ---------------------------------------------------------------------------
// roles
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleInfo {
    pub name: String,
    pub actions: Vec<&'static str>,
    pub builtin: bool,
}

fn parse_permissions(text: &str) -> Permissions {
    let names: Vec<String> = serde_json::from_str(text).unwrap_or_default();
    Permissions::parse_names(names.iter().map(String::as_str)).unwrap_or_default()
}

fn permissions_json(permissions: Permissions) -> String {
    serde_json::to_string(&permissions.names()).unwrap_or_else(|_| "[]".into())
}

/// The built-in roles and the organization's own.
pub async fn roles(sql: &dyn Sql, org: &str) -> Result<Vec<RoleInfo>, OrgError> {
    let mut out: Vec<RoleInfo> = BUILTIN_ROLES
        .iter()
        .map(|name| RoleInfo {
            name: (*name).to_owned(),
            actions: builtin_role(name).unwrap_or_default().names(),
            builtin: true,
        })
        .collect();
    let rows = sql
        .query(
            Statement::new("SELECT name, permissions FROM org_roles WHERE org = $1 ORDER BY name")
                .bind(org),
        )
        .await?;
    for row in rows {
        out.push(RoleInfo {
            name: row.text(0)?,
            actions: parse_permissions(&row.text(1)?).names(),
            builtin: false,
        });
    }
    Ok(out)
}

/// The permissions of a role of `org` (built in or its own); `None` for an unknown role.
pub async fn role_permissions(
    sql: &dyn Sql,
    org: &str,
    role: &str,
) -> Result<Option<Permissions>, OrgError> {
    if let Some(builtin) = builtin_role(role) {
        return Ok(Some(builtin));
    }
    let rows = sql
        .query(
            Statement::new("SELECT permissions FROM org_roles WHERE org = $1 AND name = $2")
                .bind(org)
                .bind(role),
        )
        .await?;
    rows.first()
        .map(|r| Ok(parse_permissions(&r.text(0)?)))
        .transpose()
}

/// Creates or changes a custom role.
pub async fn set_role(
    ctx: &Context<'_>,
    org: &str,
    name: &str,
    permissions: Permissions,
) -> Result<RoleInfo, OrgError> {
    check_name("role", name)?;
    if builtin_role(name).is_some() {
        return Err(OrgError::Invalid(format!(
            "{name} is a built-in role and cannot be changed"
        )));
    }
    ensure_org(ctx.sql, org).await?;
    let json = permissions_json(permissions);
    ctx.sql
        .batch(vec![
            Statement::new(
                "INSERT INTO org_roles (org, name, permissions) VALUES ($1, $2, $3) \
                 ON CONFLICT (org, name) DO UPDATE SET permissions = excluded.permissions",
            )
            .bind(org)
            .bind(name)
            .bind(json.as_str()),
            ctx.audit(org, "role.set", name, &json),
        ])
        .await?;
    Ok(RoleInfo {
        name: name.to_owned(),
        actions: permissions.names(),
        builtin: false,
    })
}

/// Deletes a custom role; refused while a member or a grant has it.
pub async fn delete_role(ctx: &Context<'_>, org: &str, name: &str) -> Result<(), OrgError> {
    ensure_found(
        ctx.sql,
        Statement::new("SELECT name FROM org_roles WHERE org = $1 AND name = $2")
            .bind(org)
            .bind(name),
        format!("{org} has no custom role {name}"),
    )
    .await?;
    let uses = ctx
        .sql
        .query(
            Statement::new(
                "SELECT 'member' FROM org_members WHERE org = $1 AND role = $2 \
                 UNION ALL SELECT 'grant' FROM grants WHERE org = $1 AND role = $2",
            )
            .bind(org)
            .bind(name),
        )
        .await?;
    if !uses.is_empty() {
        return Err(OrgError::Conflict(format!(
            "the role {name} is in use by {} members or grants",
            uses.len()
        )));
    }
    let results = ctx
        .sql
        .batch(vec![
            Statement::new("DELETE FROM org_roles WHERE org = $1 AND name = $2 RETURNING name")
                .bind(org)
                .bind(name),
            ctx.audit(org, "role.delete", name, ""),
        ])
        .await?;
    if results.first().is_none_or(|rows| rows.is_empty()) {
        return Err(OrgError::NotFound(format!(
            "{org} has no custom role {name}"
        )));
    }
    Ok(())
}

/// Fails with `NotFound(missing)` unless `statement` finds a row: checked before a change's batch,
/// so that a change to nothing writes no audit entry.
async fn ensure_found(
    sql: &dyn Sql,
    statement: Statement,
    missing: String,
) -> Result<(), OrgError> {
    if sql.query(statement).await?.is_empty() {
        Err(OrgError::NotFound(missing))
    } else {
        Ok(())
    }
}

async fn ensure_org(sql: &dyn Sql, org: &str) -> Result<(), OrgError> {
    if exists(sql, org).await? {
        Ok(())
    } else {
        Err(OrgError::NotFound(format!("no organization {org}")))
    }
}

async fn ensure_role(sql: &dyn Sql, org: &str, role: &str) -> Result<Permissions, OrgError> {
    role_permissions(sql, org, role)
        .await?
        .ok_or_else(|| OrgError::Invalid(format!("{org} has no role {role}")))
}

// ---------------------------------------------------------------------------
// members and teams
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    pub user: String,
    pub role: String,
}

pub async fn members(sql: &dyn Sql, org: &str) -> Result<Vec<MemberInfo>, OrgError> {
    let rows = sql
        .query(
            Statement::new(
                "SELECT user_name, role FROM org_members WHERE org = $1 ORDER BY user_name",
            )
            .bind(org),
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(MemberInfo {
                user: r.text(0)?,
                role: r.text(1)?,
            })
        })
        .collect()
}

/// The role of `user` in `org`, if a member.
pub async fn member_role(sql: &dyn Sql, org: &str, user: &str) -> Result<Option<String>, OrgError> {
    let rows = sql
        .query(
            Statement::new("SELECT role FROM org_members WHERE org = $1 AND user_name = $2")
                .bind(org)
                .bind(user),
        )
        .await?;
    rows.first()
        .map(|r| r.text(0))
        .transpose()
        .map_err(Into::into)
}

/// Adds a member, or changes their role.
pub async fn set_member(
    ctx: &Context<'_>,
    org: &str,
    user: &str,
    role: &str,
) -> Result<MemberInfo, OrgError> {
    ensure_org(ctx.sql, org).await?;
    ensure_role(ctx.sql, org, role).await?;
    let current = member_role(ctx.sql, org, user).await?;
    if current.as_deref() == Some("owner") && role != "owner" {
        refuse_last_owner(ctx.sql, org, user).await?;
    }
    let known = ctx
        .sql
        .query(Statement::new("SELECT name FROM users WHERE name = $1").bind(user))
        .await?;
    if known.is_empty() {
        return Err(OrgError::NotFound(format!("no such user: {user}")));
    }
    ctx.sql
        .batch(vec![
            Statement::new(
                "INSERT INTO org_members (org, user_name, role, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (org, user_name) DO UPDATE SET role = excluded.role",
            )
            .bind(org)
            .bind(user)
            .bind(role)
            .bind(ctx.now_ms),
            ctx.audit(org, "member.set", user, role),
        ])
        .await?;
    Ok(MemberInfo {
        user: user.to_owned(),
        role: role.to_owned(),
    })
}

async fn refuse_last_owner(sql: &dyn Sql, org: &str, user: &str) -> Result<(), OrgError> {
    let owners = sql
        .query(
            Statement::new("SELECT user_name FROM org_members WHERE org = $1 AND role = 'owner'")
                .bind(org),
        )
        .await?;
    let others = owners
        .iter()
        .filter(|r| r.text(0).is_ok_and(|n| n != user))
        .count();
    if others == 0 {
        return Err(OrgError::Conflict(format!(
            "{user} is the last owner of {org}: make someone else owner first"
        )));
    }
    Ok(())
}

/// Removes a member from the organization and from its teams.
pub async fn remove_member(ctx: &Context<'_>, org: &str, user: &str) -> Result<(), OrgError> {
    match member_role(ctx.sql, org, user).await?.as_deref() {
        None => {
            return Err(OrgError::NotFound(format!(
                "{user} is not a member of {org}"
            )))
        }
        Some("owner") => refuse_last_owner(ctx.sql, org, user).await?,
        Some(_) => {}
    }
    ctx.sql
        .batch(vec![
            Statement::new("DELETE FROM team_members WHERE org = $1 AND user_name = $2")
                .bind(org)
                .bind(user),
            Statement::new("DELETE FROM grants WHERE org = $1 AND principal = $2")
                .bind(org)
                .bind(format!("user:{user}")),
            Statement::new("DELETE FROM org_members WHERE org = $1 AND user_name = $2")
                .bind(org)
                .bind(user),
            ctx.audit(org, "member.remove", user, ""),
        ])
        .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeamInfo {
    pub name: String,
    pub members: Vec<String>,
}

pub async fn teams(sql: &dyn Sql, org: &str) -> Result<Vec<TeamInfo>, OrgError> {
    let rows = sql
        .query(
            Statement::new(
                "SELECT t.name, m.user_name FROM teams t LEFT JOIN team_members m \
                 ON m.org = t.org AND m.team = t.name WHERE t.org = $1 ORDER BY t.name, m.user_name",
            )
            .bind(org),
        )
        .await?;
    let mut out: Vec<TeamInfo> = Vec::new();
    for row in rows {
        let name = row.text(0)?;
        let member = row.opt_text(1)?;
        if out.last().is_none_or(|t| t.name != name) {
            out.push(TeamInfo {
                name,
                members: Vec::new(),
            });
        }
        if let (Some(team), Some(member)) = (out.last_mut(), member) {
            team.members.push(member);
        }
    }
    Ok(out)
}

pub async fn create_team(ctx: &Context<'_>, org: &str, team: &str) -> Result<TeamInfo, OrgError> {
    check_name("team", team)?;
    ensure_org(ctx.sql, org).await?;
    let result = ctx
        .sql
        .batch(vec![
            Statement::new("INSERT INTO teams (org, name, created_at) VALUES ($1, $2, $3)")
                .bind(org)
                .bind(team)
                .bind(ctx.now_ms),
            ctx.audit(org, "team.create", team, ""),
        ])
        .await;
    match result {
        Ok(_) => Ok(TeamInfo {
            name: team.to_owned(),
            members: Vec::new(),
        }),
        Err(SqlError::UniqueViolation(_)) => Err(OrgError::Conflict(format!(
            "{org} already has a team {team}"
        ))),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete_team(ctx: &Context<'_>, org: &str, team: &str) -> Result<(), OrgError> {
    ensure_found(
        ctx.sql,
        Statement::new("SELECT name FROM teams WHERE org = $1 AND name = $2")
            .bind(org)
            .bind(team),
        format!("{org} has no team {team}"),
    )
    .await?;
    let results = ctx
        .sql
        .batch(vec![
            Statement::new("DELETE FROM team_members WHERE org = $1 AND team = $2")
                .bind(org)
                .bind(team),
            Statement::new("DELETE FROM grants WHERE org = $1 AND principal = $2")
                .bind(org)
                .bind(format!("team:{team}")),
            Statement::new("DELETE FROM teams WHERE org = $1 AND name = $2 RETURNING name")
                .bind(org)
                .bind(team),
            ctx.audit(org, "team.delete", team, ""),
        ])
        .await?;
    if results.get(2).is_none_or(|rows| rows.is_empty()) {
        return Err(OrgError::NotFound(format!("{org} has no team {team}")));
    }
    Ok(())
}

pub async fn add_team_member(
    ctx: &Context<'_>,
    org: &str,
    team: &str,
    user: &str,
) -> Result<(), OrgError> {
    let found = ctx
        .sql
        .query(
            Statement::new(
                "SELECT 'team' FROM teams WHERE org = $1 AND name = $2 \
                 UNION ALL SELECT 'member' FROM org_members WHERE org = $1 AND user_name = $3",
            )
            .bind(org)
            .bind(team)
            .bind(user),
        )
        .await?;
    let has = |what: &str| found.iter().any(|r| r.text(0).is_ok_and(|t| t == what));
    if !has("team") {
        return Err(OrgError::NotFound(format!("{org} has no team {team}")));
    }
    if !has("member") {
        return Err(OrgError::Invalid(format!(
            "{user} is not a member of {org}: add them to the organization first"
        )));
    }
    ctx.sql
        .batch(vec![
            Statement::new(
                "INSERT INTO team_members (org, team, user_name) VALUES ($1, $2, $3) \
                 ON CONFLICT (org, team, user_name) DO NOTHING",
            )
            .bind(org)
            .bind(team)
            .bind(user),
            ctx.audit(org, "team.member.add", team, user),
        ])
        .await?;
    Ok(())
}

pub async fn remove_team_member(
    ctx: &Context<'_>,
    org: &str,
    team: &str,
    user: &str,
) -> Result<(), OrgError> {
    ensure_found(
        ctx.sql,
        Statement::new(
            "SELECT user_name FROM team_members WHERE org = $1 AND team = $2 AND user_name = $3",
        )
        .bind(org)
        .bind(team)
        .bind(user),
        format!("{user} is not in {org}'s team {team}"),
    )
    .await?;
    let results = ctx
        .sql
        .batch(vec![
            Statement::new(
                "DELETE FROM team_members WHERE org = $1 AND team = $2 AND user_name = $3 RETURNING user_name",
            )
            .bind(org)
            .bind(team)
            .bind(user),
            ctx.audit(org, "team.member.remove", team, user),
        ])
        .await?;
    if results.first().is_none_or(|rows| rows.is_empty()) {
        return Err(OrgError::NotFound(format!(
            "{user} is not in {org}'s team {team}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// robots
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RobotInfo {
    pub name: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub rotated_at_ms: Option<u64>,
}

/// A robot's secret, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RobotSecret {
    pub name: String,
    pub secret: String,
    pub expires_at_ms: Option<u64>,
}

fn expiry(ctx: &Context<'_>, days: Option<u64>) -> Option<u64> {
    days.map(|d| {
        ctx.now_ms
            .saturating_add(d.saturating_mul(24 * 3600 * 1000))
    })
}

pub async fn robots(sql: &dyn Sql, org: &str) -> Result<Vec<RobotInfo>, OrgError> {
    let rows = sql
        .query(
            Statement::new(
                "SELECT name, created_at, expires_at, rotated_at FROM robots WHERE org = $1 ORDER BY name",
            )
            .bind(org),
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(RobotInfo {
                name: format!("{org}+{}", r.text(0)?),
                created_at_ms: r.uint(1)?,
                expires_at_ms: opt_uint(r, 2)?,
                rotated_at_ms: opt_uint(r, 3)?,
            })
        })
        .collect()
}

fn opt_uint(row: &Row, index: usize) -> Result<Option<u64>, OrgError> {
    Ok(row.opt_text(index)?.and_then(|t| t.parse().ok()))
}

/// The short name of a robot given as `name` or `<org>+name`.
pub fn robot_short_name<'a>(org: &str, name: &'a str) -> &'a str {
    name.strip_prefix(org)
        .and_then(|rest| rest.strip_prefix('+'))
        .unwrap_or(name)
}

/// Fails with `NotFound` unless `org` has the robot `name` (`<name>` or `<org>+<name>`).
async fn ensure_robot(sql: &dyn Sql, org: &str, name: &str) -> Result<(), OrgError> {
    let short = robot_short_name(org, name);
    ensure_found(
        sql,
        Statement::new("SELECT name FROM robots WHERE org = $1 AND name = $2")
            .bind(org)
            .bind(short),
        format!("{org} has no robot {org}+{short}"),
    )
    .await
}

pub async fn create_robot(
    ctx: &Context<'_>,
    org: &str,
    name: &str,
    expires_in_days: Option<u64>,
) -> Result<RobotSecret, OrgError> {
    let name = robot_short_name(org, name);
    check_name("robot", name)?;
    ensure_org(ctx.sql, org).await?;
    let MintedSecret {
        id,
        hash,
        text: secret,
    } = mint_secret(ctx.random, "orr_");
    let expires = expiry(ctx, expires_in_days);
    let full = format!("{org}+{name}");
    let result = ctx
        .sql
        .batch(vec![
            Statement::new(
                "INSERT INTO robots (org, name, secret_id, secret_hash, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(org)
            .bind(name)
            .bind(id)
            .bind(hash)
            .bind(ctx.now_ms)
            .bind(expires),
            ctx.audit(org, "robot.create", &full, ""),
        ])
        .await;
    match result {
        Ok(_) => Ok(RobotSecret {
            name: full,
            secret,
            expires_at_ms: expires,
        }),
        Err(SqlError::UniqueViolation(_)) => Err(OrgError::Conflict(format!(
            "{org} already has a robot {full}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Gives a robot a new secret (the old one stops working at once) and, optionally, a new expiry.
pub async fn rotate_robot(
    ctx: &Context<'_>,
    org: &str,
    name: &str,
    expires_in_days: Option<u64>,
) -> Result<RobotSecret, OrgError> {
    ensure_robot(ctx.sql, org, name).await?;
    let name = robot_short_name(org, name);
    let MintedSecret {
        id,
        hash,
        text: secret,
    } = mint_secret(ctx.random, "orr_");
    let expires = expiry(ctx, expires_in_days);
    let full = format!("{org}+{name}");
    let results = ctx
        .sql
        .batch(vec![
            Statement::new(
                "UPDATE robots SET secret_id = $3, secret_hash = $4, rotated_at = $5, expires_at = $6 \
                 WHERE org = $1 AND name = $2 RETURNING name",
            )
            .bind(org)
            .bind(name)
            .bind(id)
            .bind(hash)
            .bind(ctx.now_ms)
            .bind(expires),
            ctx.audit(org, "robot.rotate", &full, ""),
        ])
        .await?;
    if results.first().is_none_or(|rows| rows.is_empty()) {
        return Err(OrgError::NotFound(format!("{org} has no robot {full}")));
    }
    Ok(RobotSecret {
        name: full,
        secret,
        expires_at_ms: expires,
    })
}

pub async fn delete_robot(ctx: &Context<'_>, org: &str, name: &str) -> Result<(), OrgError> {
    ensure_robot(ctx.sql, org, name).await?;
    let name = robot_short_name(org, name);
    let full = format!("{org}+{name}");
    let results = ctx
        .sql
        .batch(vec![
            Statement::new("DELETE FROM grants WHERE org = $1 AND principal = $2")
                .bind(org)
                .bind(format!("robot:{full}")),
            Statement::new("DELETE FROM robots WHERE org = $1 AND name = $2 RETURNING name")
                .bind(org)
                .bind(name),
            ctx.audit(org, "robot.delete", &full, ""),
        ])
        .await?;
    if results.get(1).is_none_or(|rows| rows.is_empty()) {
        return Err(OrgError::NotFound(format!("{org} has no robot {full}")));
    }
    Ok(())
}

/// Checks robot credentials (`<org>+<name>`, `orr_<id>_<secret>`); `None` for anything wrong
/// (unknown robot or secret, rotated, expired), without saying which.
pub async fn authenticate_robot(
    sql: &dyn Sql,
    user: &str,
    password: &str,
    now_ms: u64,
) -> Result<Option<Principal>, RegistryError> {
    let Some((org, name)) = user.split_once('+') else {
        return Ok(None);
    };
    let Some((id, secret)) = split_secret("orr_", password) else {
        return Ok(None);
    };
    let rows = sql
        .query(
            Statement::new(
                "SELECT org, name, secret_hash, expires_at FROM robots WHERE secret_id = $1",
            )
            .bind(id),
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let matches = constant_time_eq(hash_secret(secret).as_bytes(), row.text(2)?.as_bytes());
    if !matches || expired(row.opt_text(3)?, now_ms) || row.text(0)? != org || row.text(1)? != name
    {
        return Ok(None);
    }
    Ok(Some(Principal::robot(user)))
}

// ---------------------------------------------------------------------------
// grants
// ---------------------------------------------------------------------------

/// A grant as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantInfo {
    pub id: String,
    pub principal: String,
    pub resource: String,
    pub role: Option<String>,
    pub actions: Vec<&'static str>,
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    User(String),
    Team(String),
    /// `<org>+<name>`
    Robot(String),
    Anonymous,
    SignedIn,
}

impl Grantee {
    /// `user:<name>`, `team:<name>`, `robot:<org>+<name>` (or `robot:<name>`), `anonymous`,
    /// `signed-in`.
    pub fn parse(org: &str, text: &str) -> Result<Self, OrgError> {
        let bad = || {
            OrgError::Invalid(format!(
                "a principal is user:<name>, team:<name>, robot:<name>, anonymous or signed-in, \
                 not {text:?}"
            ))
        };
        match text {
            "anonymous" => return Ok(Grantee::Anonymous),
            "signed-in" => return Ok(Grantee::SignedIn),
            _ => {}
        }
        let (kind, name) = text.split_once(':').ok_or_else(bad)?;
        match kind {
            "user" if valid_user_name(name) => Ok(Grantee::User(name.to_owned())),
            "team" if valid_user_name(name) => Ok(Grantee::Team(name.to_owned())),
            "robot" => {
                let short = robot_short_name(org, name);
                if valid_user_name(short) {
                    Ok(Grantee::Robot(format!("{org}+{short}")))
                } else {
                    Err(bad())
                }
            }
            _ => Err(bad()),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Grantee::User(name) => format!("user:{name}"),
            Grantee::Team(name) => format!("team:{name}"),
            Grantee::Robot(name) => format!("robot:{name}"),
            Grantee::Anonymous => "anonymous".into(),
            Grantee::SignedIn => "signed-in".into(),
        }
    }
}

/// What a grant gives: a role (its current permissions, also after the role is edited) or a set
/// of permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    Role(String),
    Permissions(Permissions),
}

/// Checks that the grantee exists in `org` (users must be members, robots the org's own).
async fn ensure_grantee(sql: &dyn Sql, org: &str, grantee: &Grantee) -> Result<(), OrgError> {
    let statement = match grantee {
        Grantee::Anonymous | Grantee::SignedIn => return Ok(()),
        Grantee::User(user) => {
            Statement::new("SELECT user_name FROM org_members WHERE org = $1 AND user_name = $2")
                .bind(org)
                .bind(user.as_str())
        }
        Grantee::Team(team) => {
            Statement::new("SELECT name FROM teams WHERE org = $1 AND name = $2")
                .bind(org)
                .bind(team.as_str())
        }
        Grantee::Robot(full) => {
            Statement::new("SELECT name FROM robots WHERE org = $1 AND name = $2")
                .bind(org)
                .bind(robot_short_name(org, full))
        }
    };
    if sql.query(statement).await?.is_empty() {
        return Err(OrgError::NotFound(format!(
            "{} is not a member, team or robot of {org}",
            grantee.text()
        )));
    }
    Ok(())
}

/// Stores a grant (the caller has checked the granter holds everything it gives).
pub async fn create_grant(
    ctx: &Context<'_>,
    grantee: &Grantee,
    resource: &Resource,
    granted: &Granted,
) -> Result<GrantInfo, OrgError> {
    let org = resource.org.as_str();
    ensure_org(ctx.sql, org).await?;
    ensure_grantee(ctx.sql, org, grantee).await?;
    let (role, permissions) = match granted {
        Granted::Role(role) => (Some(role.clone()), ensure_role(ctx.sql, org, role).await?),
        Granted::Permissions(p) => (None, *p),
    };
    let everyone = matches!(grantee, Grantee::Anonymous | Grantee::SignedIn);
    if everyone && !Permissions::of(&[Permission::Pull]).includes(permissions) {
        return Err(OrgError::Invalid(format!(
            "grants to {} may only pull: writing needs an account that can be held to account",
            grantee.text()
        )));
    }
    let id = ctx.id();
    let stored_permissions = match granted {
        Granted::Role(_) => None,
        Granted::Permissions(p) => Some(permissions_json(*p)),
    };
    let info = GrantInfo {
        id: id.clone(),
        principal: grantee.text(),
        resource: resource.text(),
        role: role.clone(),
        actions: permissions.names(),
    };
    let detail = format!(
        "{} on {}: {}",
        info.principal,
        info.resource,
        role.clone().unwrap_or_else(|| info.actions.join(","))
    );
    ctx.sql
        .batch(vec![
            Statement::new(
                "INSERT INTO grants (id, org, principal, resource, role, permissions, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id.as_str())
            .bind(org)
            .bind(info.principal.as_str())
            .bind(info.resource.as_str())
            .bind(role)
            .bind(stored_permissions)
            .bind(ctx.actor.name.as_str())
            .bind(ctx.now_ms),
            ctx.audit(org, "grant.create", &id, &detail),
        ])
        .await?;
    Ok(info)
}

pub async fn grants(sql: &dyn Sql, org: &str) -> Result<Vec<GrantInfo>, OrgError> {
    let rows = sql
        .query(
            Statement::new(
                "SELECT g.id, g.principal, g.resource, g.role, g.permissions, r.permissions \
                 FROM grants g LEFT JOIN org_roles r ON r.org = g.org AND r.name = g.role \
                 WHERE g.org = $1 ORDER BY g.created_at, g.id",
            )
            .bind(org),
        )
        .await?;
    rows.iter()
        .map(|r| {
            let role = r.opt_text(3)?;
            let permissions = grant_permissions(role.as_deref(), r.opt_text(4)?, r.opt_text(5)?);
            Ok(GrantInfo {
                id: r.text(0)?,
                principal: r.text(1)?,
                resource: r.text(2)?,
                role,
                actions: permissions.names(),
            })
        })
        .collect()
}

fn grant_permissions(
    role: Option<&str>,
    own: Option<String>,
    custom_role: Option<String>,
) -> Permissions {
    match (role, own) {
        (Some(role), _) => builtin_role(role)
            .or_else(|| custom_role.map(|p| parse_permissions(&p)))
            .unwrap_or_default(),
        (None, Some(own)) => parse_permissions(&own),
        (None, None) => Permissions::NONE,
    }
}

/// A grant of `org` by id, as a resource and permissions (for the granter check on deletion).
pub async fn grant(sql: &dyn Sql, org: &str, id: &str) -> Result<Option<GrantInfo>, OrgError> {
    Ok(grants(sql, org).await?.into_iter().find(|g| g.id == id))
}

pub async fn delete_grant(ctx: &Context<'_>, org: &str, id: &str) -> Result<(), OrgError> {
    ensure_found(
        ctx.sql,
        Statement::new("SELECT id FROM grants WHERE org = $1 AND id = $2")
            .bind(org)
            .bind(id),
        format!("{org} has no grant {id}"),
    )
    .await?;
    let results = ctx
        .sql
        .batch(vec![
            Statement::new("DELETE FROM grants WHERE org = $1 AND id = $2 RETURNING id")
                .bind(org)
                .bind(id),
            ctx.audit(org, "grant.delete", id, ""),
        ])
        .await?;
    if results.first().is_none_or(|rows| rows.is_empty()) {
        return Err(OrgError::NotFound(format!("{org} has no grant {id}")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// resolving a principal's rights
// ---------------------------------------------------------------------------

/// Every rule `principal` has in the organizations among `namespaces` (names that are not
/// organizations contribute nothing): their membership role on the whole org, and the grants to
/// them, their teams, `signed-in` (users) and `anonymous` (everyone). One query.
pub async fn rules_for(
    sql: &dyn Sql,
    principal: &Principal,
    namespaces: &[&str],
) -> Result<Vec<Rule>, RegistryError> {
    if namespaces.is_empty() {
        return Ok(Vec::new());
    }
    let user = if principal.robot || principal.is_anonymous() {
        ""
    } else {
        principal.name.as_str()
    };
    let me = if principal.robot {
        format!("robot:{}", principal.name)
    } else {
        format!("user:{user}")
    };
    let signed_in = if user.is_empty() {
        "anonymous"
    } else {
        "signed-in"
    };
    let list: Vec<String> = (0..namespaces.len())
        .map(|i| format!("${}", i + 4))
        .collect();
    let list = list.join(", ");
    let mut statement = Statement::new(format!(
        "SELECT 'member', m.org, m.role, CAST(NULL AS TEXT), CAST(NULL AS TEXT) FROM org_members m \
         WHERE m.user_name = $1 AND m.org IN ({list}) \
         UNION ALL SELECT 'grant', g.org, g.role, g.permissions, g.resource FROM grants g \
         WHERE g.org IN ({list}) AND (g.principal IN ('anonymous', $2, $3) OR g.principal IN \
         (SELECT 'team:' || t.team FROM team_members t WHERE t.org = g.org AND t.user_name = $1)) \
         UNION ALL SELECT 'role', r.org, r.name, r.permissions, CAST(NULL AS TEXT) FROM org_roles r \
         WHERE r.org IN ({list})"
    ))
    .bind(user)
    .bind(me)
    .bind(signed_in);
    for namespace in namespaces {
        statement = statement.bind(*namespace);
    }
    let rows = sql.query(statement).await?;
    let mut custom: Vec<(String, String, Permissions)> = Vec::new();
    for row in &rows {
        if row.text(0)? == "role" {
            let permissions = parse_permissions(&row.opt_text(3)?.unwrap_or_default());
            custom.push((row.text(1)?, row.text(2)?, permissions));
        }
    }
    let role_of = |org: &str, role: &str| {
        builtin_role(role).or_else(|| {
            custom
                .iter()
                .find(|(o, r, _)| o == org && r == role)
                .map(|(_, _, p)| *p)
        })
    };
    let mut rules = Vec::new();
    for row in &rows {
        let org = row.text(1)?;
        match row.text(0)?.as_str() {
            "member" => {
                let permissions = role_of(&org, &row.opt_text(2)?.unwrap_or_default());
                if let Some(permissions) = permissions {
                    rules.extend(Rule::org_wide(&org, permissions));
                }
            }
            "grant" => {
                let permissions = match row.opt_text(2)? {
                    Some(role) => role_of(&org, &role).unwrap_or_default(),
                    None => parse_permissions(&row.opt_text(3)?.unwrap_or_default()),
                };
                let resource = Resource::parse(&org, &row.opt_text(4)?.unwrap_or_default());
                if let Ok(resource) = resource {
                    rules.push(Rule {
                        repositories: resource.repositories,
                        tags: resource.tags,
                        permissions,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(rules)
}

// ---------------------------------------------------------------------------
// the audit log
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub source: String,
}

/// The newest `limit` entries of `org`'s audit log, newest first.
pub async fn audit_log(sql: &dyn Sql, org: &str, limit: u64) -> Result<Vec<AuditEntry>, OrgError> {
    let rows = sql
        .query(
            Statement::new(
                "SELECT at, actor, action, target, detail, source FROM audit_log WHERE org = $1 \
                 ORDER BY at DESC, id DESC LIMIT $2",
            )
            .bind(org)
            .bind(limit),
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at_ms: r.uint(0)?,
                actor: r.text(1)?,
                action: r.text(2)?,
                target: r.text(3)?,
                detail: r.text(4)?,
                source: r.text(5)?,
            })
        })
        .collect()
}
