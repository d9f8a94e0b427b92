//! The unaligned tail of an upload kept in `Kv`, shared by the stores that take uploads in aligned
//! parts (Skynet's 40 MiB TUS pieces, S3's multipart parts): the bytes of a request that do not
//! complete a part wait here, as write-once segments no larger than the host's value limit, until
//! a later request completes the part or the upload finishes.
//!
//! [`PartCutter`] moves a request's bytes as the core's part planner cuts them.
//!
//! Segment keys name their content (the upload, the offset and a SHA-256 prefix): a client that
//! rewinds and re-sends other bytes writes other keys, so a key never holds two different values,
//! which is what makes an eventually consistent `Kv` (Cloudflare's) safe here.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use openregistry::planner::{Cut, PartPlanner};
use openregistry::ports::{Kv, StoreError, Unavailable};

/// One tail segment: a `Kv` key and the length of the value written there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub key: String,
    pub len: u64,
}

/// Reads and writes tail segments in one `Kv`, under one key prefix.
#[derive(Clone)]
pub struct Tails {
    kv: Arc<dyn Kv>,
    /// `skynet-tail`, `s3-tail`: keeps the stores' keys apart.
    prefix: &'static str,
    /// How long segments live (as long as an upload session).
    ttl: Duration,
}

/// Moves one request's bytes as the core's part planner cuts them: [`PartCutter::push`] hands
/// back the fresh bytes of each part a chunk completes (the stored tail still goes in front of
/// the first: [`Tails::complete_part`]), [`PartCutter::rest`] the bytes that extend the tail.
/// One buffer of one part, allocated when the first byte arrives.
pub struct PartCutter {
    planner: PartPlanner,
    part_size: usize,
    part: BytesMut,
}

impl PartCutter {
    /// A cutter for parts of `part_size` bytes over an upload whose tail holds `stored_tail`.
    pub fn new(part_size: u64, stored_tail: u64) -> Self {
        Self {
            planner: PartPlanner::new(part_size, stored_tail),
            part_size: usize::try_from(part_size).unwrap_or(usize::MAX),
            part: BytesMut::new(),
        }
    }

    /// Takes the next chunk of the request; returns the parts it completes, in order.
    pub fn push(&mut self, mut chunk: Bytes) -> Vec<BytesMut> {
        let mut complete = Vec::new();
        for cut in self.planner.cut(chunk.len() as u64) {
            if self.part.capacity() == 0 {
                self.part.reserve(self.part_size);
            }
            let (Cut::CompletesPart { len } | Cut::ExtendsTail { len }) = cut;
            let len = usize::try_from(len).unwrap_or(usize::MAX).min(chunk.len());
            self.part.extend_from_slice(&chunk.split_to(len));
            if let Cut::CompletesPart { .. } = cut {
                complete.push(std::mem::take(&mut self.part));
            }
        }
        complete
    }

    /// The request's bytes after its last complete part: the tail's extension.
    pub fn rest(self) -> Bytes {
        self.part.freeze()
    }
}

/// The number of bytes the segments hold.
pub fn tail_len(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| s.len).sum()
}

impl Tails {
    pub fn new(kv: Arc<dyn Kv>, prefix: &'static str, ttl: Duration) -> Self {
        Self { kv, prefix, ttl }
    }

    /// Reads the whole tail back, in order.
    pub async fn load(&self, segments: &[Segment]) -> Result<Bytes, StoreError> {
        let mut tail = BytesMut::with_capacity(usize::try_from(tail_len(segments)).unwrap_or(0));
        for segment in segments {
            tail.extend_from_slice(&self.segment(segment).await?);
        }
        Ok(tail.freeze())
    }

    /// Puts the stored tail in front of `fresh` (the bytes that followed it), making one whole
    /// part; one copy of the fresh bytes within their own buffer.
    pub async fn complete_part(
        &self,
        segments: &[Segment],
        mut fresh: BytesMut,
    ) -> Result<Bytes, StoreError> {
        let tail = usize::try_from(tail_len(segments)).unwrap_or(usize::MAX);
        if tail == 0 {
            return Ok(fresh.freeze());
        }
        let fresh_len = fresh.len();
        fresh.resize(fresh_len + tail, 0);
        fresh.copy_within(0..fresh_len, tail);
        let mut at = 0;
        for segment in segments {
            let value = self.segment(segment).await?;
            let place = fresh.get_mut(at..at + value.len()).ok_or_else(|| {
                StoreError::Unavailable(Unavailable::new(
                    "kv",
                    format!("upload data {} is longer than listed", segment.key),
                ))
            })?;
            place.copy_from_slice(&value);
            at += value.len();
        }
        Ok(fresh.freeze())
    }

    /// One segment, checked against its listed length.
    async fn segment(&self, segment: &Segment) -> Result<Bytes, StoreError> {
        let value = self.kv.get(&segment.key).await?.ok_or_else(|| {
            // Written once by an earlier request: not visible yet (eventual consistency) or expired.
            StoreError::Unavailable(Unavailable::new(
                "kv",
                format!("upload data {} is not readable (yet)", segment.key),
            ))
        })?;
        if value.len() as u64 != segment.len {
            return Err(StoreError::Unavailable(Unavailable::new(
                "kv",
                format!("upload data {} has the wrong length", segment.key),
            )));
        }
        Ok(value)
    }

    /// Stores `bytes`, which start at upload offset `offset`, as new segments of at most the
    /// `Kv`'s value size, appended to `segments`.
    pub async fn save(
        &self,
        upload_id: &str,
        segments: &mut Vec<Segment>,
        mut offset: u64,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        let max = self.kv.max_value_len().max(1);
        let mut rest = bytes;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(max));
            let fingerprint =
                hex::encode(sha2::Sha256::digest(&piece).get(..16).unwrap_or_default());
            let key = format!("{}/{upload_id}/{offset}-{fingerprint}", self.prefix);
            let len = piece.len() as u64;
            self.kv.put(&key, piece, Some(self.ttl)).await?;
            segments.push(Segment { key, len });
            offset += len;
        }
        Ok(())
    }

    /// Deletes the segments (best effort: what is left expires with its time-to-live).
    pub async fn forget(&self, segments: &[Segment]) {
        for segment in segments {
            if let Err(e) = self.kv.delete(&segment.key).await {
                tracing::debug!(error = %e, key = segment.key, "tail segment left to expire");
            }
        }
    }
}
