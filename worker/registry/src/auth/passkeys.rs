//! Passkey (WebAuthn) accounts: the relying party, the registration and authentication
//! ceremonies, and the credentials in SQL.
//!
//! The cryptography and the checks of the WebAuthn spec (origin, rpId hash, challenge, user
//! verification, signature, sign counter) are webauthn-rs's. What is ours:
//! - a ceremony's state waits in the `Kv` port between its two requests, under a random id, for
//!   [`CEREMONY_TTL`]; finishing takes it out before anything is checked, so a challenge is
//!   answered once (a replay finds nothing) and not after it expired;
//! - credentials are rows of `passkeys` (schema/0005); the one used to sign in is written back
//!   with its new counter, so a counter that goes backwards (a cloned authenticator) is refused
//!   the next time (webauthn-rs's `CredentialPossibleCompromise`).
//!
//! webauthn-rs 0.6 verifies ES256 and RS256 signatures: it parses EdDSA keys but does not verify
//! them yet (RustCrypto's Ed25519 is not wired in), so EdDSA is not offered.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, CredentialID, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::error::RegistryError;
use crate::ports::{Kv, Random, Sql, SqlError, Statement};

/// How long a started ceremony may be finished.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);

/// Why a passkey operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasskeyError {
    #[error("passkeys need OPENREGISTRY_PUBLIC_URL (the origin browsers sign for): {0}")]
    NotConfigured(String),
    #[error("no such ceremony: it was finished already, expired, or never started")]
    UnknownCeremony,
    #[error("the ceremony was started for something else")]
    WrongCeremony,
    #[error("the passkey was refused: {0}")]
    Refused(String),
    #[error("the passkey is not registered")]
    UnknownPasskey,
    #[error("{0} has no passkey")]
    NoPasskeys(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<SqlError> for PasskeyError {
    fn from(e: SqlError) -> Self {
        PasskeyError::Registry(e.into())
    }
}

/// The relying party: this registry, as the origin `OPENREGISTRY_PUBLIC_URL` names.
pub struct RelyingParty {
    webauthn: Webauthn,
    origin: String,
}

impl RelyingParty {
    /// From the registry's public base URL: its host is the rpId, its origin the one browsers
    /// must sign for (`https://…`, or `http://localhost…` while developing).
    pub fn from_public_url(public_url: &str) -> Result<Self, PasskeyError> {
        let url = Url::parse(public_url)
            .map_err(|e| PasskeyError::NotConfigured(format!("{public_url:?}: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| PasskeyError::NotConfigured(format!("{public_url:?} has no host")))?
            .to_owned();
        let webauthn = WebauthnBuilder::new(&host, &url)
            .and_then(|b| b.rp_name("OpenRegistry").timeout(CEREMONY_TTL).build())
            .map_err(|e| PasskeyError::NotConfigured(format!("{public_url:?}: {e}")))?;
        Ok(Self {
            webauthn,
            origin: url.origin().ascii_serialization(),
        })
    }

    /// `scheme://host[:port]`, as browsers send it in `Origin`.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// A ceremony's state while it waits for the browser's answer.
#[derive(Serialize, Deserialize)]
enum Pending {
    /// A new account (`signup`) or a new passkey of a signed-in user.
    Registration {
        user: String,
        signup: bool,
        state: PasskeyRegistration,
    },
    Authentication {
        user: String,
        state: PasskeyAuthentication,
    },
}

/// A ceremony as kept: its state and when it stops being answerable (checked here too, since
/// not every host's `Kv` expires entries: Spin's keeps them until deleted).
#[derive(Serialize, Deserialize)]
struct Kept {
    expires_at_ms: u64,
    pending: Pending,
}

fn ceremony_key(id: &str) -> String {
    format!("webauthn/{id}")
}

/// Ceremony ids are 32 hex characters; anything else names no ceremony.
fn valid_ceremony_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn keep(
    kv: &dyn Kv,
    random: &dyn Random,
    pending: Pending,
    now_ms: u64,
) -> Result<String, PasskeyError> {
    let mut id = [0u8; 16];
    random.fill(&mut id);
    let id = hex::encode(id);
    let kept = Kept {
        expires_at_ms: now_ms.saturating_add(CEREMONY_TTL.as_secs() * 1000),
        pending,
    };
    let value = serde_json::to_vec(&kept)
        .map_err(|e| RegistryError::Internal(format!("cannot keep a ceremony: {e}")))?;
    kv.put(&ceremony_key(&id), Bytes::from(value), Some(CEREMONY_TTL))
        .await
        .map_err(RegistryError::from)?;
    Ok(id)
}

/// Takes a ceremony out of the store: whatever happens next, it cannot be finished again.
async fn take(kv: &dyn Kv, id: &str, now_ms: u64) -> Result<Pending, PasskeyError> {
    if !valid_ceremony_id(id) {
        return Err(PasskeyError::UnknownCeremony);
    }
    let key = ceremony_key(id);
    let value = kv
        .get(&key)
        .await
        .map_err(RegistryError::from)?
        .ok_or(PasskeyError::UnknownCeremony)?;
    kv.delete(&key).await.map_err(RegistryError::from)?;
    let kept: Kept = serde_json::from_slice(&value).map_err(|_| PasskeyError::UnknownCeremony)?;
    if kept.expires_at_ms <= now_ms {
        return Err(PasskeyError::UnknownCeremony);
    }
    Ok(kept.pending)
}

/// The WebAuthn user handle of a user: derived from the name, so no column holds it (the
/// authenticator keeps it; a credential of a deleted user is gone from `passkeys` with them).
fn user_handle(user: &str) -> Uuid {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("openregistry user {user}").as_bytes());
    Uuid::from_bytes(
        digest
            .as_slice()
            .first_chunk::<16>()
            .copied()
            .unwrap_or_default(),
    )
}

/// A credential id as text (base64url, as browsers report `PublicKeyCredential.id`).
fn credential_text(id: &CredentialID) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(AsRef::<[u8]>::as_ref(id))
}

/// A stored passkey, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasskeyInfo {
    pub id: String,
    pub name: String,
    pub created_at_ms: u64,
    pub last_used_at_ms: Option<u64>,
}

/// Starts registering a passkey for `user` (a new account when `signup`); the ceremony id and
/// the options for `navigator.credentials.create`.
pub async fn start_registration(
    rp: &RelyingParty,
    kv: &dyn Kv,
    random: &dyn Random,
    sql: &dyn Sql,
    user: &str,
    signup: bool,
    now_ms: u64,
) -> Result<(String, CreationChallengeResponse), PasskeyError> {
    let exclude: Vec<CredentialID> = stored_passkeys(sql, user)
        .await?
        .into_iter()
        .map(|(_, passkey)| passkey.cred_id().clone())
        .collect();
    let (options, state) = rp
        .webauthn
        .start_passkey_registration(
            user_handle(user),
            user,
            user,
            (!exclude.is_empty()).then_some(exclude),
        )
        .map_err(|e| PasskeyError::Refused(e.to_string()))?;
    let pending = Pending::Registration {
        user: user.to_owned(),
        signup,
        state,
    };
    Ok((keep(kv, random, pending, now_ms).await?, options))
}

/// A registered passkey, not yet stored: who it is for and whether it opens a new account.
pub struct Registered {
    pub user: String,
    pub signup: bool,
    pub passkey: Passkey,
}

/// Checks the browser's answer to a registration ceremony.
pub async fn finish_registration(
    rp: &RelyingParty,
    kv: &dyn Kv,
    ceremony: &str,
    credential: &RegisterPublicKeyCredential,
    now_ms: u64,
) -> Result<Registered, PasskeyError> {
    let Pending::Registration {
        user,
        signup,
        state,
    } = take(kv, ceremony, now_ms).await?
    else {
        return Err(PasskeyError::WrongCeremony);
    };
    let passkey = rp
        .webauthn
        .finish_passkey_registration(credential, &state)
        .map_err(|e| PasskeyError::Refused(e.to_string()))?;
    Ok(Registered {
        user,
        signup,
        passkey,
    })
}

/// Starts signing `user` in with one of their passkeys.
pub async fn start_authentication(
    rp: &RelyingParty,
    kv: &dyn Kv,
    random: &dyn Random,
    sql: &dyn Sql,
    user: &str,
    now_ms: u64,
) -> Result<(String, RequestChallengeResponse), PasskeyError> {
    let passkeys: Vec<Passkey> = stored_passkeys(sql, user)
        .await?
        .into_iter()
        .map(|(_, passkey)| passkey)
        .collect();
    if passkeys.is_empty() {
        return Err(PasskeyError::NoPasskeys(user.to_owned()));
    }
    let (options, state) = rp
        .webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(|e| PasskeyError::Refused(e.to_string()))?;
    let pending = Pending::Authentication {
        user: user.to_owned(),
        state,
    };
    Ok((keep(kv, random, pending, now_ms).await?, options))
}

/// Checks the browser's answer to a sign-in ceremony, and writes the passkey's new counter back;
/// the user signed in.
pub async fn finish_authentication(
    rp: &RelyingParty,
    kv: &dyn Kv,
    sql: &dyn Sql,
    ceremony: &str,
    credential: &PublicKeyCredential,
    now_ms: u64,
) -> Result<String, PasskeyError> {
    let Pending::Authentication { user, state } = take(kv, ceremony, now_ms).await? else {
        return Err(PasskeyError::WrongCeremony);
    };
    let result: AuthenticationResult = rp
        .webauthn
        .finish_passkey_authentication(credential, &state)
        .map_err(|e| PasskeyError::Refused(e.to_string()))?;
    let id = credential_text(result.cred_id());
    let rows = sql
        .query(
            Statement::new("SELECT passkey FROM passkeys WHERE id = $1 AND user_name = $2")
                .bind(id.as_str())
                .bind(user.as_str()),
        )
        .await?;
    let mut passkey: Passkey = match rows.first() {
        Some(row) => {
            serde_json::from_str(&row.text(0)?).map_err(|_| PasskeyError::UnknownPasskey)?
        }
        None => return Err(PasskeyError::UnknownPasskey),
    };
    passkey.update_credential(&result);
    sql.query(
        Statement::new(
            "UPDATE passkeys SET passkey = $1, last_used_at = $2 WHERE id = $3 AND user_name = $4",
        )
        .bind(to_json(&passkey)?)
        .bind(now_ms)
        .bind(id)
        .bind(user.as_str()),
    )
    .await?;
    Ok(user)
}

fn to_json(passkey: &Passkey) -> Result<String, PasskeyError> {
    serde_json::to_string(passkey)
        .map_err(|e| RegistryError::Internal(format!("cannot store a passkey: {e}")).into())
}

/// The statement that stores a registered passkey (only for a user that exists: in a batch after
/// the user's insert, the two succeed or fail together).
pub fn insert_statement(
    registered: &Registered,
    name: &str,
    now_ms: u64,
) -> Result<Statement, PasskeyError> {
    Ok(Statement::new(
        "INSERT INTO passkeys (id, user_name, name, passkey, created_at) \
         SELECT CAST($1 AS TEXT), name, CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS BIGINT) \
         FROM users WHERE name = $2 RETURNING id",
    )
    .bind(credential_text(registered.passkey.cred_id()))
    .bind(registered.user.as_str())
    .bind(name)
    .bind(to_json(&registered.passkey)?)
    .bind(now_ms))
}

/// Every passkey of `user`, with its id.
async fn stored_passkeys(
    sql: &dyn Sql,
    user: &str,
) -> Result<Vec<(String, Passkey)>, PasskeyError> {
    let rows = sql
        .query(
            Statement::new("SELECT id, passkey FROM passkeys WHERE user_name = $1 ORDER BY id")
                .bind(user),
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        // A row that no longer parses is skipped, not fatal: the user keeps their other passkeys.
        if let Ok(passkey) = serde_json::from_str::<Passkey>(&row.text(1)?) {
            out.push((row.text(0)?, passkey));
        }
    }
    Ok(out)
}

/// The passkeys of `user`, as listed.
pub async fn list(sql: &dyn Sql, user: &str) -> Result<Vec<PasskeyInfo>, PasskeyError> {
    let rows = sql
        .query(
            Statement::new(
                "SELECT id, name, created_at, last_used_at FROM passkeys WHERE user_name = $1 \
                 ORDER BY created_at, id",
            )
            .bind(user),
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(PasskeyInfo {
            id: row.text(0)?,
            name: row.text(1)?,
            created_at_ms: row.uint(2)?,
            last_used_at_ms: row.opt_text(3)?.and_then(|t| t.parse().ok()),
        });
    }
    Ok(out)
}

/// Removes one of `user`'s passkeys, never the last (the account could not be signed in to).
/// `Ok(false)`: no such passkey; [`PasskeyError::NoPasskeys`]: it is the last one.
pub async fn remove(sql: &dyn Sql, user: &str, id: &str) -> Result<bool, PasskeyError> {
    let rows = sql
        .query(
            Statement::new(
                "DELETE FROM passkeys WHERE id = $1 AND user_name = $2 \
                 AND (SELECT COUNT(*) FROM passkeys WHERE user_name = $2) > 1 RETURNING id",
            )
            .bind(id)
            .bind(user),
        )
        .await?;
    if !rows.is_empty() {
        return Ok(true);
    }
    let exists = sql
        .query(
            Statement::new("SELECT 1 FROM passkeys WHERE id = $1 AND user_name = $2")
                .bind(id)
                .bind(user),
        )
        .await?;
    if exists.is_empty() {
        Ok(false)
    } else {
        Err(PasskeyError::NoPasskeys(format!(
            "{user} would be left with no way to sign in: removing their last passkey"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_is_the_public_urls_host_and_origin() {
        let rp = RelyingParty::from_public_url("https://registry.example/").expect("valid");
        assert_eq!(rp.origin(), "https://registry.example");
        let rp = RelyingParty::from_public_url("http://localhost:5000").expect("valid");
        assert_eq!(rp.origin(), "http://localhost:5000");
        assert!(RelyingParty::from_public_url("not a url").is_err());
    }

    #[test]
    fn user_handles_are_stable_and_distinct() {
        assert_eq!(user_handle("alice"), user_handle("alice"));
        assert_ne!(user_handle("alice"), user_handle("bob"));
    }

    #[test]
    fn only_well_formed_ceremony_ids_are_looked_up() {
        assert!(valid_ceremony_id(&"a".repeat(32)));
        assert!(!valid_ceremony_id("../../etc"));
        assert!(!valid_ceremony_id(&"a".repeat(33)));
    }
}
