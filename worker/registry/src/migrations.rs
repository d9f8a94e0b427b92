//! The SQL migrations in `schema/`, embedded, and the routine that applies the pending ones
//! through the `Sql` port (so the same code migrates SQLite and Postgres over HTTP).
//!
//! Each migration runs as one batch (one transaction) together with the row that records it in
//! `schema_migrations`; a concurrent migrator loses on that row's primary key and rolls back.

use crate::ports::{Sql, SqlError, Statement};

/// One numbered migration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_registry.sql",
        sql: include_str!("../../../schema/0001_registry.sql"),
    },
    Migration {
        version: 2,
        name: "0002_auth.sql",
        sql: include_str!("../../../schema/0002_auth.sql"),
    },
    Migration {
        version: 3,
        name: "0003_orgs.sql",
        sql: include_str!("../../../schema/0003_orgs.sql"),
    },
    Migration {
        version: 4,
        name: "0004_gc.sql",
        sql: include_str!("../../../schema/0004_gc.sql"),
    },
    Migration {
        version: 5,
        name: "0005_passkeys.sql",
        sql: include_str!("../../../schema/0005_passkeys.sql"),
    },
];

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Splits a migration into statements: on `;` at the end of a line, dropping `--` comments.
/// (Migrations are plain DDL; no statement contains a `;` inside a string or a function body.)
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let line = line.split("--").next().unwrap_or_default().trim_end();
        if line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            if !statement.is_empty() {
                out.push(statement);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// Applies every pending migration; returns the names of those applied now. Idempotent.
pub async fn migrate(sql: &dyn Sql, now_ms: u64) -> Result<Vec<&'static str>, SqlError> {
    sql.query(Statement::new(CREATE_LEDGER)).await?;
    let rows = sql
        .query(Statement::new("SELECT version FROM schema_migrations"))
        .await?;
    let applied: Vec<i64> = rows.iter().map(|r| r.int(0)).collect::<Result<_, _>>()?;
    let mut now_applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let mut batch: Vec<Statement> = statements(migration.sql)
            .into_iter()
            .map(Statement::new)
            .collect();
        batch.push(
            Statement::new(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(now_ms),
        );
        match sql.batch(batch).await {
            Ok(_) => now_applied.push(migration.name),
            // Another instance applied it between our read and our write.
            Err(SqlError::UniqueViolation(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(now_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_split_into_statements_without_comments() {
        let parts = statements(
            "-- c\nCREATE TABLE a (x INT); -- trailing\n\nCREATE INDEX i\n  ON a (x);\n",
        );
        assert_eq!(
            parts,
            vec!["CREATE TABLE a (x INT)", "CREATE INDEX i\n  ON a (x)"]
        );
    }

    #[test]
    fn every_migration_is_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            assert!(!statements(m.sql).is_empty());
        }
    }
}
