//! Users, personal access tokens and repository visibility in SQL (the `Sql` port: SQLite
//! natively, Postgres over HTTP at the edge).
//!
//! An access token reads `orp_<id>_<secret>`: the id finds the row, the secret is checked against
//! its stored SHA-256 in constant time. The secret itself is never stored or logged.

use super::{
    constant_time_eq, expired, hash_secret, mint_secret, split_secret, Principal, ScopePattern,
};
use crate::error::RegistryError;
use crate::ports::{Random, Sql, SqlError, Statement};

/// Why a user or token operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("user names are 1 to 39 characters: lowercase letters, digits and single hyphens")]
    BadUserName,
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("{0} is an organization's name")]
    NameOfAnOrg(String),
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<SqlError> for StoreError {
    fn from(e: SqlError) -> Self {
        StoreError::Registry(e.into())
    }
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scopes: Vec<ScopePattern>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 39
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

pub async fn create_user(
    sql: &dyn Sql,
    name: &str,
    admin: bool,
    now_ms: u64,
) -> Result<(), StoreError> {
    create_user_with(sql, name, admin, now_ms, Vec::new()).await
}

/// Creates a user and, in the same transaction, runs `then` (a sign-up's first passkey): all
/// of it happens or none.
pub async fn create_user_with(
    sql: &dyn Sql,
    name: &str,
    admin: bool,
    now_ms: u64,
    then: Vec<Statement>,
) -> Result<(), StoreError> {
    if !valid_user_name(name) {
        return Err(StoreError::BadUserName);
    }
    // Users and organizations share one namespace: no user may take an organization's name.
    let insert = Statement::new(
        "INSERT INTO users (name, admin, created_at) SELECT CAST($1 AS TEXT), CAST($2 AS BIGINT), \
         CAST($3 AS BIGINT) WHERE NOT EXISTS (SELECT 1 FROM orgs WHERE name = $1) RETURNING name",
    )
    .bind(name)
    .bind(i64::from(admin))
    .bind(now_ms);
    let mut statements = vec![insert];
    statements.extend(then);
    match sql.batch(statements).await {
        Ok(results) if results.first().is_none_or(|rows| rows.is_empty()) => {
            Err(StoreError::NameOfAnOrg(name.to_owned()))
        }
        Ok(_) => Ok(()),
        Err(SqlError::UniqueViolation(_)) => Err(StoreError::UserExists(name.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a user and, with them, every token they had, their memberships and their grants.
pub async fn delete_user(sql: &dyn Sql, name: &str) -> Result<bool, StoreError> {
    let results = sql
        .batch(vec![
            Statement::new("DELETE FROM access_tokens WHERE user_name = $1").bind(name),
            Statement::new("DELETE FROM passkeys WHERE user_name = $1").bind(name),
            Statement::new("DELETE FROM team_members WHERE user_name = $1").bind(name),
            Statement::new("DELETE FROM grants WHERE principal = $1").bind(format!("user:{name}")),
            Statement::new("DELETE FROM org_members WHERE user_name = $1").bind(name),
            Statement::new("DELETE FROM users WHERE name = $1 RETURNING name").bind(name),
        ])
        .await?;
    Ok(results.get(5).is_some_and(|rows| !rows.is_empty()))
}

/// Creates an access token; returns its id and the token text, which is shown once.
pub async fn create_token(
    sql: &dyn Sql,
    random: &dyn Random,
    user: &str,
    name: &str,
    scopes: &[ScopePattern],
    expires_at_ms: Option<u64>,
    now_ms: u64,
) -> Result<(String, String), StoreError> {
    let minted = mint_secret(random, "orp_");
    let scopes_json = serde_json::to_string(scopes).unwrap_or_else(|_| "[]".into());
    let rows = sql
        .query(
            Statement::new(
                "INSERT INTO access_tokens (id, user_name, name, token_hash, scopes, created_at, expires_at) \
                 SELECT CAST($1 AS TEXT), name, CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS TEXT), \
                 CAST($6 AS BIGINT), CAST($7 AS BIGINT) FROM users WHERE name = $2 RETURNING id",
            )
            .bind(minted.id.as_str())
            .bind(user)
            .bind(name)
            .bind(minted.hash)
            .bind(scopes_json)
            .bind(now_ms)
            .bind(expires_at_ms),
        )
        .await?;
    if rows.is_empty() {
        return Err(StoreError::NoSuchUser(user.to_owned()));
    }
    Ok((minted.id, minted.text))
}

pub async fn list_tokens(sql: &dyn Sql, user: &str) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = sql
        .query(
            Statement::new(
                "SELECT id, name, scopes, created_at, expires_at, revoked_at FROM access_tokens \
                 WHERE user_name = $1 ORDER BY created_at, id",
            )
            .bind(user),
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(TokenInfo {
            id: row.text(0)?,
            name: row.text(1)?,
            scopes: serde_json::from_str(&row.text(2)?).unwrap_or_default(),
            created_at_ms: row.uint(3)?,
            expires_at_ms: row.opt_text(4)?.and_then(|t| t.parse().ok()),
            revoked_at_ms: row.opt_text(5)?.and_then(|t| t.parse().ok()),
        });
    }
    Ok(out)
}

/// Revokes a token (of `user`, when given); false when there was none to revoke.
pub async fn revoke_token(
    sql: &dyn Sql,
    user: Option<&str>,
    id: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let statement = match user {
        Some(user) => Statement::new(
            "UPDATE access_tokens SET revoked_at = $3 WHERE id = $1 AND user_name = $2 AND revoked_at IS NULL RETURNING id",
        )
        .bind(id)
        .bind(user)
        .bind(now_ms),
        None => Statement::new(
            "UPDATE access_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING id",
        )
        .bind(id)
        .bind(now_ms),
    };
    Ok(!sql.query(statement).await?.is_empty())
}

/// Checks `user` / access-token credentials (or a robot's, `<org>+<name>` / robot secret);
/// `None` for anything wrong (unknown user or token, revoked, expired, or another user's token),
/// without saying which.
pub async fn authenticate(
    sql: &dyn Sql,
    user: &str,
    password: &str,
    now_ms: u64,
) -> Result<Option<Principal>, RegistryError> {
    if user.contains('+') {
        return super::orgs::authenticate_robot(sql, user, password, now_ms).await;
    }
    let Some((id, secret)) = split_secret("orp_", password) else {
        return Ok(None);
    };
    let rows = sql
        .query(
            Statement::new(
                "SELECT t.user_name, t.token_hash, t.scopes, t.expires_at, t.revoked_at, u.admin \
                 FROM access_tokens t JOIN users u ON u.name = t.user_name WHERE t.id = $1",
            )
            .bind(id),
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let owner = row.text(0)?;
    let stored = row.text(1)?;
    let matches = constant_time_eq(hash_secret(secret).as_bytes(), stored.as_bytes());
    let revoked = row.opt_text(4)?.is_some();
    if !matches || expired(row.opt_text(3)?, now_ms) || revoked || owner != user {
        return Ok(None);
    }
    let limits: Vec<ScopePattern> = serde_json::from_str(&row.text(2)?).unwrap_or_default();
    Ok(Some(Principal {
        name: owner,
        admin: row.int(5)? != 0,
        limits: (!limits.is_empty()).then_some(limits),
        robot: false,
    }))
}

/// The principal an access token (by id) stands for, if it is still valid: refresh tokens are
/// checked against this, so revoking the access token or deleting the user ends them too.
pub async fn principal_for_token(
    sql: &dyn Sql,
    id: &str,
    now_ms: u64,
) -> Result<Option<Principal>, RegistryError> {
    let rows = sql
        .query(
            Statement::new(
                "SELECT t.user_name, t.scopes, t.expires_at, t.revoked_at, u.admin \
                 FROM access_tokens t JOIN users u ON u.name = t.user_name WHERE t.id = $1",
            )
            .bind(id),
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    if expired(row.opt_text(2)?, now_ms) || row.opt_text(3)?.is_some() {
        return Ok(None);
    }
    let limits: Vec<ScopePattern> = serde_json::from_str(&row.text(1)?).unwrap_or_default();
    Ok(Some(Principal {
        name: row.text(0)?,
        admin: row.int(4)? != 0,
        limits: (!limits.is_empty()).then_some(limits),
        robot: false,
    }))
}

/// The principal of a signed-in browser session: the user with their full rights, if they
/// still exist.
pub async fn user_principal(sql: &dyn Sql, name: &str) -> Result<Option<Principal>, RegistryError> {
    let rows = sql
        .query(Statement::new("SELECT name, admin FROM users WHERE name = $1").bind(name))
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(Principal {
        name: row.text(0)?,
        admin: row.int(1)? != 0,
        limits: None,
        robot: false,
    }))
}

/// The id part of an `orp_<id>_<secret>` token text.
pub fn token_id(password: &str) -> Option<&str> {
    password
        .strip_prefix("orp_")?
        .split_once('_')
        .map(|(id, _)| id)
}

/// Which of `names` are public (names not in the database are private).
pub async fn public_repositories(
    sql: &dyn Sql,
    names: &[&str],
) -> Result<Vec<String>, RegistryError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = (0..names.len()).map(|i| format!("${}", i + 1)).collect();
    let mut statement = Statement::new(format!(
        "SELECT name FROM repositories WHERE visibility = 'public' AND name IN ({})",
        list.join(", ")
    ));
    for name in names {
        statement = statement.bind(*name);
    }
    let rows = sql.query(statement).await?;
    rows.iter().map(|r| r.text(0).map_err(Into::into)).collect()
}

/// Makes a repository public or private; false when it does not exist.
pub async fn set_visibility(
    sql: &dyn Sql,
    name: &str,
    public: bool,
) -> Result<bool, RegistryError> {
    let rows = sql
        .query(
            Statement::new(
                "UPDATE repositories SET visibility = $2 WHERE name = $1 RETURNING name",
            )
            .bind(name)
            .bind(if public { "public" } else { "private" }),
        )
        .await?;
    Ok(!rows.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_namespace_safe() {
        for ok in ["alice", "a", "bob-2", "x1-y2-z3"] {
            assert!(valid_user_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "-a",
            "a-",
            "a--b",
            "a_b",
            "a/b",
            "a.b",
            &"a".repeat(40),
        ] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }
}
