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
//! - finishing or cancelling writes a final *ended* state, so old `Location`s stop working;
//! - an upload lives for a configured time from its start (`OPENREGISTRY_UPLOAD_TTL_SECONDS`):
//!   past it, the upload is unknown whatever the store still holds, and every key is written to
//!   expire then. The `Location` carries the time its state was saved (`.t<unix seconds>`), so a
//!   state missing long after it was written is an expired upload (404), not a store that has
//!   not caught up (503).

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::names::RepoName;
use crate::ports::{Kv, Unavailable};

/// How many newer states a request looks for beyond the one its `Location` names.
const PROBE_LIMIT: u64 = 64;

/// How long a written state may stay invisible elsewhere in the store: Cloudflare KV documents
/// "up to 60 seconds"; twice that for clocks and slow propagation. A state missing for longer,
/// or for longer than its lifetime, has expired (or never existed).
const VISIBILITY_LAG_SECONDS: u64 = 120;

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
    /// When this state was saved (written by [`save`]); part of the `Location`.
    #[serde(default)]
    pub saved_at_ms: u64,
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
/// Either form may end in `.t<unix seconds>`, the time the named state was saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub id: String,
    pub min_seq: u64,
    pub next_seq: u64,
    /// When the named state was saved, if the URL says (URLs from before this field do not).
    pub saved_at_seconds: Option<u64>,
}

impl SessionRef {
    /// Parses the last path segment of an upload URL. Ids are lowercase hex.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let number = |part: &str| -> Result<u64, RegistryError> {
            part.parse().map_err(|_| RegistryError::BlobUploadUnknown)
        };
        let (text, saved_at_seconds) = match text.rsplit_once(".t") {
            Some((rest, seconds)) => (rest, Some(number(seconds)?)),
            None => (text, None),
        };
        let mut parts = text.split('.');
        let id = parts.next().unwrap_or_default();
        let seq = parts.next().map(number).transpose()?.unwrap_or(0);
        let next = parts.next().map(number).transpose()?.unwrap_or(0);
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
            saved_at_seconds,
        })
    }

    /// True when the named state, missing here, was saved so long ago that it is not on its
    /// way but gone: expired (its lifetime `ttl` is over), or never written.
    fn is_gone(&self, now_ms: u64, ttl: Duration) -> bool {
        let wait = ttl.as_secs().min(VISIBILITY_LAG_SECONDS);
        self.saved_at_seconds
            .is_some_and(|saved| now_ms / 1000 > saved.saturating_add(wait))
    }
}

impl UploadSession {
    /// True once the upload's lifetime `ttl`, counted from its start, is over.
    pub fn is_expired(&self, now_ms: u64, ttl: Duration) -> bool {
        now_ms >= self.expires_at_ms(ttl)
    }

    fn expires_at_ms(&self, ttl: Duration) -> u64 {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.started_at_ms.saturating_add(ttl_ms)
    }

    /// The URL clients continue this upload at.
    pub fn location(&self) -> String {
        self.url(None)
    }

    /// The URL that continues from this state but saves the next one at `next_seq` or later.
    pub fn location_saving_next_at(&self, next_seq: u64) -> String {
        self.url(Some(next_seq))
    }

    /// `…/uploads/<id>.<seq>[.<next>].t<saved at, unix seconds>` (see [`SessionRef`]).
    fn url(&self, next_seq: Option<u64>) -> String {
        let next = next_seq.map(|n| format!(".{n}")).unwrap_or_default();
        format!(
            "/v2/{}/blobs/uploads/{}.{}{next}.t{}",
            self.repository,
            self.id,
            self.seq,
            self.saved_at_ms / 1000
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

/// Loads a session for `repo` at time `now_ms`, states living for `ttl`; unknown ids, expired
/// and ended uploads and ids of another repository are `BLOB_UPLOAD_UNKNOWN`.
pub async fn load(
    kv: &dyn Kv,
    repo: &RepoName,
    reference: &SessionRef,
    now_ms: u64,
    ttl: Duration,
) -> Result<Loaded, RegistryError> {
    let named = read(kv, &reference.id, reference.min_seq).await?;
    let mut loaded = match named {
        Some(session) => Loaded::Current(session),
        None if reference.min_seq == 0 => return Err(RegistryError::BlobUploadUnknown),
        None if reference.is_gone(now_ms, ttl) => return Err(RegistryError::BlobUploadUnknown),
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

/// True while upload `id` may still be continued: its first state is readable and its lifetime
/// `ttl` is not over. Sweeps of stores' partial data ask this before removing any.
pub async fn is_live(
    kv: &dyn Kv,
    id: &str,
    now_ms: u64,
    ttl: Duration,
) -> Result<bool, RegistryError> {
    Ok(read(kv, id, 0)
        .await?
        .is_some_and(|first| !first.is_expired(now_ms, ttl)))
}

/// Writes the session's state under its (new) sequence number, stamped with `now_ms`, to expire
/// with the upload (`ttl` after its start).
pub async fn save(
    kv: &dyn Kv,
    session: &mut UploadSession,
    ttl: Duration,
    now_ms: u64,
) -> Result<(), RegistryError> {
    session.saved_at_ms = now_ms;
    let left_ms = session.expires_at_ms(ttl).saturating_sub(now_ms);
    let ttl = Duration::from_millis(left_ms).max(Duration::from_secs(1));
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
pub async fn end(
    kv: &dyn Kv,
    session: &UploadSession,
    ttl: Duration,
    now_ms: u64,
) -> Result<(), RegistryError> {
    let mut ended = UploadSession {
        seq: session.seq + 1,
        ended: true,
        ..session.clone()
    };
    save(kv, &mut ended, ttl, now_ms).await
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
                next_seq: 0,
                saved_at_seconds: None,
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
    fn session_references_may_carry_the_time_their_state_was_saved() {
        let id = "0123456789abcdef0123456789abcdef";
        let reference = SessionRef::parse(&format!("{id}.7.9.t1796299200")).expect("valid");
        assert_eq!(
            (
                reference.min_seq,
                reference.next_seq,
                reference.saved_at_seconds
            ),
            (7, 9, Some(1_796_299_200))
        );
        let session = UploadSession {
            id: id.into(),
            repository: "a/b".into(),
            offset: 0,
            hash_state: String::new(),
            store_handle: String::new(),
            seq: 7,
            started_at_ms: 0,
            saved_at_ms: 1_796_299_200_999,
            ended: false,
            subject: None,
        };
        let segment = |location: String| {
            location
                .rsplit('/')
                .next()
                .map(str::to_owned)
                .unwrap_or_default()
        };
        assert_eq!(
            SessionRef::parse(&segment(session.location())).expect("valid"),
            SessionRef {
                id: id.into(),
                min_seq: 7,
                next_seq: 0,
                saved_at_seconds: Some(1_796_299_200)
            }
        );
        assert_eq!(
            SessionRef::parse(&segment(session.location_saving_next_at(9)))
                .expect("valid")
                .next_seq,
            9
        );
    }

    #[test]
    fn malformed_session_references_are_unknown_uploads() {
        for bad in [
            "",
            "xyz",
            "../../etc",
            "0123456789abcdef.x",
            "0123456789abcdef.1.t",
            "0123456789abcdef.1.tx",
            "0123456789abcdef.t1.2",
            "0123456789ABCDEF",
        ] {
            assert_eq!(
                SessionRef::parse(bad),
                Err(RegistryError::BlobUploadUnknown)
            );
        }
    }
}
