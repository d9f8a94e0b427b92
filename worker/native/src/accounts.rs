//! `openregistry user …`, `openregistry token …` and `openregistry token-key …`, and the token
//! signing key kept in the data directory when none is configured.

use std::path::Path;

use clap::Subcommand;
use openregistry::auth::store;
use openregistry::auth::{ScopePattern, Signer};
use openregistry::ports::{Clock, Sql};
use pasetors::keys::{AsymmetricKeyPair, Generate};
use pasetors::paserk::FormatAsPaserk;
use pasetors::version4::V4;

use crate::embedded::{OsRandom, SystemClock};

#[derive(Subcommand)]
pub enum UserAction {
    /// Create a user (they own the namespace `<name>/…`).
    Create {
        name: String,
        /// May do anything on every repository.
        #[arg(long)]
        admin: bool,
    },
    /// Delete a user and all their access tokens.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum TokenAction {
    /// Create an access token; it is printed once and never again.
    Create {
        #[arg(long)]
        user: String,
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// Limit it to `repository:<name|prefix/*|*>:<actions>` (repeatable); default: all the
        /// user's rights.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Expire it after this many days.
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// List a user's tokens (never their secrets).
    List {
        #[arg(long)]
        user: String,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum TokenKeyAction {
    /// Print the signing key's public key (PASERK `k4.public`): what another registry lists in
    /// OPENREGISTRY_TOKEN_PUBLIC_KEYS to accept this one's tokens, for instance after a rotation.
    Public,
}

fn now() -> u64 {
    SystemClock.now_unix_millis()
}

pub async fn user(action: UserAction, sql: &dyn Sql) -> Result<(), String> {
    match action {
        UserAction::Create { name, admin } => {
            store::create_user(sql, &name, admin, now())
                .await
                .map_err(|e| e.to_string())?;
            println!("created user {name}{}", if admin { " (admin)" } else { "" });
        }
        UserAction::Delete { name } => {
            if !store::delete_user(sql, &name)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no such user: {name}"));
            }
            println!("deleted user {name} and their access tokens");
        }
    }
    Ok(())
}

pub async fn token(action: TokenAction, sql: &dyn Sql) -> Result<(), String> {
    match action {
        TokenAction::Create {
            user,
            name,
            scopes,
            expires_in_days,
        } => {
            let parsed: Option<Vec<ScopePattern>> =
                scopes.iter().map(|s| ScopePattern::parse(s)).collect();
            let parsed =
                parsed.ok_or("a --scope is not repository:<name|prefix/*|*>:<pull,push,delete>")?;
            let expires = expires_in_days.map(|d| now() + d * 24 * 3600 * 1000);
            let (id, token) =
                store::create_token(sql, &OsRandom, &user, &name, &parsed, expires, now())
                    .await
                    .map_err(|e| e.to_string())?;
            eprintln!("created access token {id} for {user}; it is shown once:");
            println!("{token}");
        }
        TokenAction::List { user } => {
            for t in store::list_tokens(sql, &user)
                .await
                .map_err(|e| e.to_string())?
            {
                let scopes: Vec<String> = t
                    .scopes
                    .iter()
                    .map(|s| {
                        let actions: Vec<&str> = s.actions.iter().map(|a| a.name()).collect();
                        format!("repository:{}:{}", s.repository, actions.join(","))
                    })
                    .collect();
                let state = if t.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{}\t{}",
                    t.id,
                    t.name,
                    state,
                    if scopes.is_empty() {
                        "all".into()
                    } else {
                        scopes.join(" ")
                    }
                );
            }
        }
        TokenAction::Revoke { id } => {
            if !store::revoke_token(sql, None, &id, now())
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no active token {id}"));
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

pub fn token_key_command(
    action: TokenKeyAction,
    configured: Option<&str>,
    data_dir: &Path,
) -> Result<(), String> {
    match action {
        TokenKeyAction::Public => {
            let signer = existing_token_key(configured, data_dir)?.ok_or_else(|| {
                format!(
                    "no signing key: OPENREGISTRY_TOKEN_KEY is unset and {} does not exist",
                    data_dir.join(KEY_FILE).display()
                )
            })?;
            println!("{}", signer.public_paserk().map_err(|e| e.to_string())?);
        }
    }
    Ok(())
}

/// The data directory's signing key file.
const KEY_FILE: &str = "token-key.paserk";

/// The configured signing key, or the data directory's if there is one.
fn existing_token_key(configured: Option<&str>, data_dir: &Path) -> Result<Option<Signer>, String> {
    if let Some(paserk) = configured {
        return Signer::from_paserk(paserk)
            .map(Some)
            .map_err(|e| format!("OPENREGISTRY_TOKEN_KEY: {e}"));
    }
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(existing) => Signer::from_paserk(&existing)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(_) => Ok(None),
    }
}

/// The signing key: the configured one, or the data directory's (generated on first use).
pub fn token_key(configured: Option<&str>, data_dir: &Path) -> Result<Signer, String> {
    if let Some(signer) = existing_token_key(configured, data_dir)? {
        return Ok(signer);
    }
    let path = data_dir.join(KEY_FILE);
    let pair =
        AsymmetricKeyPair::<V4>::generate().map_err(|e| format!("cannot generate a key: {e:?}"))?;
    let mut paserk = String::new();
    pair.secret.fmt(&mut paserk).map_err(|e| e.to_string())?;
    write_private(&path, &paserk).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a token signing key");
    Signer::from_paserk(&paserk).map_err(|e| e.to_string())
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}
