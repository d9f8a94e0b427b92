//! Upload sessions: the state of a blob upload between requests, kept in the `Kv` port.
//!
//! A session holds the repository, how many bytes were accepted, the saved hash state and the
//! blob store's handle. Every successful write bumps `seq`; the upload `Location` carries it
//! (`<id>.<seq>`), so a host with an eventually consistent KV can tell a stale read from the truth.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::names::RepoName;
use crate::ports::Kv;

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
    /// Incremented on every saved change.
    pub seq: u64,
    pub started_at_ms: u64,
}

/// A session reference as it appears in an upload URL: `<id>` or `<id>.<seq>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub id: String,
    pub min_seq: u64,
}

impl SessionRef {
    /// Parses the last path segment of an upload URL. Ids are lowercase hex.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let (id, seq) = match text.split_once('.') {
            Some((id, seq)) => (
                id,
                seq.parse().map_err(|_| RegistryError::BlobUploadUnknown)?,
            ),
            None => (text, 0),
        };
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

fn key(id: &str) -> String {
    format!("upload/{id}")
}

/// Loads a session for `repo`; unknown ids, and ids of another repository, are `BLOB_UPLOAD_UNKNOWN`.
pub async fn load(
    kv: &dyn Kv,
    repo: &RepoName,
    reference: &SessionRef,
) -> Result<UploadSession, RegistryError> {
    let raw = kv
        .get(&key(&reference.id))
        .await?
        .ok_or(RegistryError::BlobUploadUnknown)?;
    let session: UploadSession = serde_json::from_slice(&raw)
        .map_err(|e| RegistryError::Internal(format!("corrupt upload session: {e}")))?;
    if session.repository != repo.as_str() {
        return Err(RegistryError::BlobUploadUnknown);
    }
    if session.seq < reference.min_seq {
        return Err(RegistryError::Unavailable(crate::ports::Unavailable::new(
            "kv",
            "the upload session's latest state is not visible here yet; retry",
        )));
    }
    Ok(session)
}

pub async fn save(
    kv: &dyn Kv,
    session: &UploadSession,
    ttl: Duration,
) -> Result<(), RegistryError> {
    let value = serde_json::to_vec(session)
        .map_err(|e| RegistryError::Internal(format!("cannot encode upload session: {e}")))?;
    kv.put(&key(&session.id), Bytes::from(value), Some(ttl))
        .await?;
    Ok(())
}

pub async fn remove(kv: &dyn Kv, id: &str) -> Result<(), RegistryError> {
    kv.delete(&key(id)).await?;
    Ok(())
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
                min_seq: 0
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
