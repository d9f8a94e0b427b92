//! Upload sessions: the state of a blob upload between requests, kept in the `Kv` port.
//!
//! A session holds the repository, how many bytes were accepted, the saved hash state and the
//! blob store's handle. Every change is written under a new key, `upload/<id>/<seq>`, and the
//! upload `Location` carries the sequence number (`<id>.<seq>`). Keys are written once, which
//! suits eventually consistent stores with per-key write limits (Cloudflare KV: about one write
//! per second per key, changes visible elsewhere within ~60 s):
//! - a request names the state it continues from; states written after it (by a client that kept
//!   an older `Location`) are found by probing `seq + 1, seq + 2, ...`;
//! - when the named state is not visible yet, the previous one is, and the client is told to
//!   resume from there (416 with that `Range` and `Location`): no byte is lost or counted twice;
//! - finishing or cancelling writes a final *ended* state, so old `Location`s stop working.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::names::RepoName;
use crate::ports::{Kv, Unavailable};

/// How many newer states a request looks for beyond the one its `Location` names.
const PROBE_LIMIT: u64 = 64;

/// The state of one upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    pub id: String,
    pub repository: String,
    /// Bytes accepted so far.
    pub offset: u64,
    /// The hasher state after `offset` bytes (see [`crate::digest::Hasher::save`]).
    pub hash_state: String,
    /// The blob store's handle for this upload.
    pub store_handle: String,
    /// Incremented on every saved change; part of the key and of the `Location`.
    pub seq: u64,
    pub started_at_ms: u64,
    /// Finished or cancelled: the upload URL no longer works.
    #[serde(default)]
    pub ended: bool,
    /// Who opened the upload (the token's subject) when auth is on; only they may continue it.
    #[serde(default)]
    pub subject: Option<String>,
}

/// A session reference as it appears in an upload URL: `<id>`, `<id>.<seq>`, or, after a
/// rewind to an older state, `<id>.<seq>.<next>`: the next state must be saved at `next` or
/// later, since the sequence numbers in between are taken by states not visible here yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub id: String,
    pub min_seq: u64,
    pub next_seq: u64,
}

impl SessionRef {
    /// Parses the last path segment of an upload URL. Ids are lowercase hex.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let mut parts = text.split('.');
        let id = parts.next().unwrap_or_default();
        let number = |part: Option<&str>| -> Result<Option<u64>, RegistryError> {
            part.map(|p| p.parse().map_err(|_| RegistryError::BlobUploadUnknown))
                .transpose()
        };
        let seq = number(parts.next())?.unwrap_or(0);
        let next = number(parts.next())?.unwrap_or(0);
        if parts.next().is_some() {
            return Err(RegistryError::BlobUploadUnknown);
        }
        let id_ok = (16..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !id_ok {
            return Err(RegistryError::BlobUploadUnknown);
        }
        Ok(SessionRef {
            id: id.to_owned(),
            min_seq: seq,
            next_seq: next,
        })
    }
}

impl UploadSession {
    /// The URL clients continue this upload at.
    pub fn location(&self) -> String {
        format!(
            "/v2/{}/blobs/uploads/{}.{}",
            self.repository, self.id, self.seq
        )
    }
}

/// A loaded session: the newest visible state, or an older one when the state the client named
/// has not reached this location of the store yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Current(UploadSession),
    /// The client's state is not visible yet; this is the one before it.
    Behind(UploadSession),
}

fn key(id: &str, seq: u64) -> String {
    format!("upload/{id}/{seq}")
}

async fn read(kv: &dyn Kv, id: &str, seq: u64) -> Result<Option<UploadSession>, RegistryError> {
    let Some(raw) = kv.get(&key(id, seq)).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| RegistryError::Internal(format!("corrupt upload session: {e}")))
}

/// Loads a session for `repo`; unknown ids, ended uploads and ids of another repository are
/// `BLOB_UPLOAD_UNKNOWN`.
pub async fn load(
    kv: &dyn Kv,
    repo: &RepoName,
    reference: &SessionRef,
) -> Result<Loaded, RegistryError> {
    let named = read(kv, &reference.id, reference.min_seq).await?;
    let mut loaded = match named {
        Some(session) => Loaded::Current(session),
        None if reference.min_seq == 0 => return Err(RegistryError::BlobUploadUnknown),
        None => match read(kv, &reference.id, reference.min_seq - 1).await? {
            Some(previous) => Loaded::Behind(previous),
            None => {
                return Err(RegistryError::Unavailable(Unavailable::new(
                    "kv",
                    "the upload session's latest state is not visible here yet; retry",
                )))
            }
        },
    };
    if let Loaded::Current(session) = &mut loaded {
        for _ in 0..PROBE_LIMIT {
            match read(kv, &session.id, session.seq + 1).await? {
                Some(newer) => *session = newer,
                None => break,
            }
        }
    }
    let (Loaded::Current(session) | Loaded::Behind(session)) = &loaded;
    if session.repository != repo.as_str() || session.ended {
        return Err(RegistryError::BlobUploadUnknown);
    }
    Ok(loaded)
}

/// Writes the session's state under its (new) sequence number.
pub async fn save(
    kv: &dyn Kv,
    session: &UploadSession,
    ttl: Duration,
) -> Result<(), RegistryError> {
    let value = serde_json::to_vec(session)
        .map_err(|e| RegistryError::Internal(format!("cannot encode upload session: {e}")))?;
    kv.put(
        &key(&session.id, session.seq),
        Bytes::from(value),
        Some(ttl),
    )
    .await?;
    Ok(())
}

/// Ends the upload: later requests with any of its URLs get `BLOB_UPLOAD_UNKNOWN`.
pub async fn end(kv: &dyn Kv, session: &UploadSession, ttl: Duration) -> Result<(), RegistryError> {
    let ended = UploadSession {
        seq: session.seq + 1,
        ended: true,
        ..session.clone()
    };
    save(kv, &ended, ttl).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_references_carry_an_optional_sequence() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            SessionRef::parse(id).expect("valid"),
            SessionRef {
                id: id.into(),
                min_seq: 0,
                next_seq: 0
            }
        );
        assert_eq!(
            SessionRef::parse(&format!("{id}.7"))
                .expect("valid")
                .min_seq,
            7
        );
    }

    #[test]
    fn malformed_session_references_are_unknown_uploads() {
        for bad in [
            "",
            "xyz",
            "../../etc",
            "0123456789abcdef.x",
            "0123456789ABCDEF",
        ] {
            assert_eq!(
                SessionRef::parse(bad),
                Err(RegistryError::BlobUploadUnknown)
            );
        }
    }
}
