//! The filesystem `BlobStore`: the native host's embedded default.
//!
//! Layout under the data directory:
//! - `uploads/<id>`: an unfinished upload, appended to in place;
//! - `blobs/<algorithm>/<first two hex>/<hex>`: finished blobs, content-addressed.
//!
//! A blob becomes a file under `blobs/` only by `rename` from `uploads/` after its bytes were
//! fsynced and its digest verified by the core, followed by an fsync of the directory, so a crash
//! at any moment leaves either no blob or a whole one. The database, committed after the rename,
//! is what makes a blob visible.
//!
//! File I/O runs on tokio's blocking pool with `std::fs`, one trip per megabyte: an upload copies
//! the body's chunks into a 1 MiB buffer and writes it (in 256 KiB `write`s, see `WRITE_PIECE`)
//! while the next one fills, two buffers per upload; every 32 MiB it also starts an `fdatasync`
//! in the background, so the disk writes while the body is still arriving and the final sync,
//! which acknowledges the bytes, has little left to do. An error of a background sync fails the
//! append (the final sync, on the same open file, would not report it again). A download reads
//! 1 MiB at a time straight into the buffer the response sends, one read ahead of the client; the
//! file is opened and the first piece read in one trip.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use openregistry::body::{Body, BodyError, ByteStream};
use openregistry::digest::Digest;
use openregistry::ports::{BlobStore, StoreError, Unavailable};
use openregistry::range::ByteRange;
use tokio::task::JoinHandle;

/// Size of one read of a blob download (and of one chunk of its response body).
const READ_CHUNK: u64 = 1024 * 1024;
/// Write buffer of uploads (an upload has two: one being written, one filling).
const WRITE_BUFFER: usize = 1024 * 1024;
/// The largest single `write(2)` of an upload. Linux sizes page-cache folios after the writes
/// that fill them, and large folios can be several times slower to fill than small ones: on the
/// benchmark VM (memory handed back to the host, which must fault it in again) `write(2)` of
/// 1 MiB pieces ran at 0.3 GB/s, of 256 KiB pieces at 2.5 GB/s.
const WRITE_PIECE: usize = 256 * 1024;
/// An upload starts a background `fdatasync` each time this much more has been written.
const WRITEBACK_EVERY: u64 = 32 * 1024 * 1024;

/// Blobs as files under one directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

fn io_error(what: &str, err: std::io::Error) -> StoreError {
    if err.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound(what.to_owned())
    } else {
        StoreError::Unavailable(Unavailable::new("filesystem", format!("{what}: {err}")))
    }
}

fn join_error(what: &str, err: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(Unavailable::new(
        "filesystem",
        format!("{what}: worker thread failed: {err}"),
    ))
}

/// Runs file I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    what: &str,
    io: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(io)
        .await
        .map_err(|e| join_error(what, e))?
}

/// The file an append writes to, moved to the blocking pool for each write and back.
struct Sink {
    file: std::fs::File,
    /// Bytes of the file that are final (written by this append or acknowledged before it).
    written: u64,
    /// Where the last background `fdatasync` was started (`written` at that moment).
    synced_from: u64,
}

/// A write of one buffer on the blocking pool: gives the sink and the (spent) buffer back.
type BufferWrite = JoinHandle<Result<(Sink, Vec<u8>), StoreError>>;

/// An append in progress: the buffer filling, and the write of the previous one.
struct Appender {
    sink: Option<Sink>,
    writing: Option<BufferWrite>,
    /// The background `fdatasync`, at most one at a time.
    syncing: Option<JoinHandle<std::io::Result<()>>>,
    buffer: Vec<u8>,
}

impl Appender {
    fn new(sink: Sink) -> Self {
        Self {
            sink: Some(sink),
            writing: None,
            syncing: None,
            buffer: Vec::with_capacity(WRITE_BUFFER),
        }
    }

    async fn push(&mut self, mut chunk: &[u8]) -> Result<(), StoreError> {
        while !chunk.is_empty() {
            let room = WRITE_BUFFER - self.buffer.len();
            let (now, later) = chunk.split_at(room.min(chunk.len()));
            self.buffer.extend_from_slice(now);
            chunk = later;
            if self.buffer.len() == WRITE_BUFFER {
                self.write_buffer().await?;
            }
        }
        Ok(())
    }

    /// The sink, once the write in flight (if any) has finished; its buffer becomes the next one.
    async fn sink(&mut self) -> Result<Sink, StoreError> {
        if let Some(writing) = self.writing.take() {
            let (sink, mut spare) = writing.await.map_err(|e| join_error("upload", e))??;
            spare.clear();
            self.sink = Some(sink);
            if self.buffer.is_empty() {
                self.buffer = spare;
            }
        }
        self.sink.take().ok_or_else(|| {
            StoreError::Unavailable(Unavailable::new("filesystem", "upload: file lost"))
        })
    }

    /// Starts writing the buffer (after the previous write finished) and carries on filling the
    /// other one.
    async fn write_buffer(&mut self) -> Result<(), StoreError> {
        let full = std::mem::take(&mut self.buffer);
        let mut sink = self.sink().await?;
        if self.buffer.capacity() == 0 {
            self.buffer = Vec::with_capacity(WRITE_BUFFER);
        }
        if sink.written - sink.synced_from >= WRITEBACK_EVERY && self.background_sync_idle().await?
        {
            if let Ok(clone) = sink.file.try_clone() {
                sink.synced_from = sink.written;
                self.syncing = Some(tokio::task::spawn_blocking(move || clone.sync_data()));
            }
        }
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write_pieces(&mut sink.file, &full)?;
            sink.written += full.len() as u64;
            Ok((sink, full))
        }));
        Ok(())
    }

    /// Whether no background `fdatasync` is running; one that has finished is collected, and its
    /// error returned.
    async fn background_sync_idle(&mut self) -> Result<bool, StoreError> {
        match self.syncing.take() {
            None => Ok(true),
            Some(handle) if handle.is_finished() => {
                Self::synced(handle).await?;
                Ok(true)
            }
            running => {
                self.syncing = running;
                Ok(false)
            }
        }
    }

    async fn synced(handle: JoinHandle<std::io::Result<()>>) -> Result<(), StoreError> {
        handle
            .await
            .map_err(|e| join_error("upload", e))?
            .map_err(|e| io_error("upload", e))
    }

    /// Waits for what is in flight, so that nothing writes to the file after the append returns.
    async fn settle(&mut self) {
        if let Some(writing) = self.writing.take() {
            if let Ok(Ok((sink, _))) = writing.await {
                self.sink = Some(sink);
            }
        }
        if let Some(syncing) = self.syncing.take() {
            let _ = syncing.await;
        }
    }

    /// Writes the rest and makes every byte durable.
    async fn finish(mut self) -> Result<(), StoreError> {
        let rest = std::mem::take(&mut self.buffer);
        let sink = self.sink().await?;
        if let Some(syncing) = self.syncing.take() {
            // Its error is not reported again by the final sync (same open file): report it here.
            Self::synced(syncing).await?;
        }
        blocking("upload", move || {
            let mut file = sink.file;
            write_pieces(&mut file, &rest)?;
            // The session will say these bytes are ours: make that true across a crash.
            file.sync_data().map_err(|e| io_error("upload", e))
        })
        .await
    }
}

/// Writes `bytes` in `WRITE_PIECE`s.
fn write_pieces(file: &mut std::fs::File, bytes: &[u8]) -> Result<(), StoreError> {
    bytes
        .chunks(WRITE_PIECE)
        .try_for_each(|piece| file.write_all(piece))
        .map_err(|e| io_error("upload", e))
}

/// The next piece of a download: up to `READ_CHUNK` bytes read into a buffer of their own.
fn read_chunk(
    mut file: std::fs::File,
    left: u64,
    what: &str,
) -> Result<(std::fs::File, u64, Bytes), BodyError> {
    let want = left.min(READ_CHUNK);
    let mut buffer = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    (&mut file)
        .take(want)
        .read_to_end(&mut buffer)
        .map_err(|e| BodyError::Transport(format!("reading {what}: {e}")))?;
    if buffer.is_empty() {
        return Err(BodyError::Transport(format!(
            "reading {what}: the file ended {left} bytes early"
        )));
    }
    let left = left - buffer.len() as u64;
    Ok((file, left, Bytes::from(buffer)))
}

type ChunkRead = JoinHandle<Result<(std::fs::File, u64, Bytes), BodyError>>;

/// The rest of a download after its first chunk: each chunk is yielded once the next one is
/// being read.
fn read_ahead(file: std::fs::File, left: u64, what: String) -> ByteStream {
    let start =
        move |file: std::fs::File, left: u64, what: String| -> Option<(ChunkRead, String)> {
            (left > 0).then(|| {
                let name = what.clone();
                (
                    tokio::task::spawn_blocking(move || read_chunk(file, left, &name)),
                    what,
                )
            })
        };
    let first = start(file, left, what);
    Box::pin(futures_util::stream::unfold(
        first,
        move |next| async move {
            let (reading, what) = next?;
            match reading.await {
                Ok(Ok((file, left, chunk))) => Some((Ok(chunk), start(file, left, what))),
                Ok(Err(e)) => Some((Err(e), None)),
                Err(e) => Some((
                    Err(BodyError::Transport(format!(
                        "reading {what}: worker thread failed: {e}"
                    ))),
                    None,
                )),
            }
        },
    ))
}

/// Upload handles are the core's hex session ids; anything else could name another file.
fn valid_handle(handle: &str) -> Result<&str, StoreError> {
    let ok = !handle.is_empty()
        && handle.len() <= 64
        && handle
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(handle)
        .ok_or_else(|| StoreError::NotFound(format!("upload {handle:?}")))
}

impl FsBlobStore {
    /// Creates the directory layout under `root` if needed.
    pub async fn open(root: &Path) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(root.join("uploads")).await?;
        tokio::fs::create_dir_all(root.join("blobs")).await?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn upload_path(&self, handle: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("uploads").join(valid_handle(handle)?))
    }

    /// `<alg>/<xx>/<hex>.<upload handle>`: unique per upload, so the garbage collector deletes a
    /// file only after its row is gone for good (a blob pushed again is a new file). Blobs stored
    /// before locators were unique are `<alg>/<xx>/<hex>`, still read and deleted.
    fn locator_for(digest: &Digest, handle: &str) -> String {
        let hex = digest.hex();
        let fanout = hex.get(..2).unwrap_or(hex);
        format!(
            "{}/{}/{}.{}",
            digest.algorithm().name(),
            fanout,
            hex,
            handle
        )
    }

    fn blob_path(&self, locator: &str) -> Result<PathBuf, StoreError> {
        // Locators are ours, but they come back from a database: check them.
        let parts: Vec<&str> = locator.split('/').collect();
        let alphanumeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric());
        let file_name = |p: &str| match p.split_once('.') {
            Some((hex, handle)) => alphanumeric(hex) && alphanumeric(handle),
            None => alphanumeric(p),
        };
        let well_formed = parts.len() == 3
            && parts.iter().take(2).all(|p| alphanumeric(p))
            && parts.get(2).is_some_and(|p| file_name(p));
        if !well_formed {
            return Err(StoreError::NotFound(format!("blob {locator:?}")));
        }
        Ok(self.root.join("blobs").join(locator))
    }

    /// Deletes unfinished uploads untouched for longer than `max_age` (their sessions expired).
    pub async fn sweep_stale_uploads(&self, max_age: Duration) -> std::io::Result<usize> {
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(self.root.join("uploads")).await?;
        while let Some(entry) = entries.next_entry().await? {
            let modified = entry.metadata().await?.modified()?;
            let age = SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default();
            if age > max_age {
                tokio::fs::remove_file(entry.path()).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The file at `path`, streamed (see the module comment): `len` bytes from `start`, or all
    /// of it. The file is opened and its first chunk read before this returns, in one trip to
    /// the blocking pool: a small blob (a config) costs one.
    async fn stream_file(
        path: &Path,
        what: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Body, StoreError> {
        let (path, what) = (path.to_owned(), what.to_owned());
        blocking("blob", move || {
            let mut file = std::fs::File::open(&path).map_err(|e| io_error(&what, e))?;
            let size = file.metadata().map_err(|e| io_error(&what, e))?.len();
            let (start, len) = range.unwrap_or((0, size));
            if start.saturating_add(len) > size {
                return Err(StoreError::RangeNotSatisfiable);
            }
            if len == 0 {
                return Ok(Body::Empty);
            }
            file.seek(SeekFrom::Start(start))
                .map_err(|e| io_error(&what, e))?;
            let (file, left, first) = read_chunk(file, len, &what)?;
            if left == 0 {
                return Ok(Body::Full(first));
            }
            let rest = read_ahead(file, left, what);
            let first = futures_util::stream::once(async move { Ok(first) });
            Ok(Body::from_stream(first.chain(rest)))
        })
        .await
    }
}

async fn sync_dir(path: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(path).await?.sync_all().await
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn begin_upload(&self, upload_id: &str) -> Result<String, StoreError> {
        let path = self.upload_path(upload_id)?;
        tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_error("new upload", e))?;
        Ok(upload_id.to_owned())
    }

    async fn append(
        &self,
        handle: &str,
        offset: u64,
        mut bytes: ByteStream,
    ) -> Result<String, StoreError> {
        let path = self.upload_path(handle)?;
        let name = handle.to_owned();
        let sink = blocking("upload", move || {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_error("upload", e))?;
            let len = file.metadata().map_err(|e| io_error("upload", e))?.len();
            if len < offset {
                return Err(StoreError::Unavailable(Unavailable::new(
                    "filesystem",
                    format!("upload {name} has {len} bytes on disk but {offset} were acknowledged"),
                )));
            }
            // Drop whatever an interrupted append left beyond the acknowledged offset.
            file.set_len(offset).map_err(|e| io_error("upload", e))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| io_error("upload", e))?;
            Ok(Sink {
                file,
                written: offset,
                synced_from: offset,
            })
        })
        .await?;
        let mut appender = Appender::new(sink);
        while let Some(chunk) = bytes.next().await {
            let pushed = match chunk {
                Ok(chunk) => appender.push(&chunk).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = pushed {
                appender.settle().await;
                return Err(e);
            }
        }
        appender.finish().await?;
        Ok(handle.to_owned())
    }

    async fn finish_upload(
        &self,
        handle: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<String, StoreError> {
        let from = self.upload_path(handle)?;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&from)
            .await
            .map_err(|e| io_error("upload", e))?;
        // Bytes beyond `size` can only be leftovers of an interrupted append.
        file.set_len(size)
            .await
            .map_err(|e| io_error("upload", e))?;
        file.sync_all().await.map_err(|e| io_error("upload", e))?;
        drop(file);
        let locator = Self::locator_for(digest, valid_handle(handle)?);
        let to = self.blob_path(&locator)?;
        let dir = to
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| self.root.clone());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error("blob directory", e))?;
        tokio::fs::rename(&from, &to)
            .await
            .map_err(|e| io_error("blob", e))?;
        sync_dir(&dir)
            .await
            .map_err(|e| io_error("blob directory", e))?;
        Ok(locator)
    }

    async fn read_upload(&self, handle: &str, len: u64) -> Result<Body, StoreError> {
        Self::stream_file(&self.upload_path(handle)?, "upload", Some((0, len))).await
    }

    async fn abort_upload(&self, handle: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.upload_path(handle)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("upload", e)),
            _ => Ok(()),
        }
    }

    async fn read(&self, locator: &str, range: Option<ByteRange>) -> Result<Body, StoreError> {
        let path = self.blob_path(locator)?;
        let range = range.map(|range| (range.start, range.len()));
        Self::stream_file(&path, locator, range).await
    }

    async fn delete(&self, locator: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.blob_path(locator)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(locator, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use openregistry::digest::Algorithm;

    fn stream(parts: Vec<Result<Bytes, BodyError>>) -> ByteStream {
        Box::pin(futures_util::stream::iter(parts))
    }

    async fn read_all(body: Body) -> Vec<u8> {
        body.collect(u64::MAX).await.expect("read").to_vec()
    }

    #[tokio::test]
    async fn an_upload_becomes_a_content_addressed_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).await.expect("open");
        let handle = store.begin_upload("abc123").await.expect("begin");
        store
            .append(&handle, 0, stream(vec![Ok(Bytes::from_static(b"hello "))]))
            .await
            .expect("append");
        store
            .append(&handle, 6, stream(vec![Ok(Bytes::from_static(b"world"))]))
            .await
            .expect("append");
        let digest = Digest::of(Algorithm::Sha256, b"hello world");
        let locator = store
            .finish_upload(&handle, &digest, 11)
            .await
            .expect("finish");
        assert_eq!(
            read_all(store.read(&locator, None).await.expect("read")).await,
            b"hello world"
        );
        let range = ByteRange { start: 6, end: 10 };
        assert_eq!(
            read_all(store.read(&locator, Some(range)).await.expect("read")).await,
            b"world"
        );
        assert!(!dir.path().join("uploads/abc123").exists());
    }

    #[tokio::test]
    async fn an_interrupted_append_is_discarded_by_the_next_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).await.expect("open");
        let handle = store.begin_upload("abc").await.expect("begin");
        let broken = stream(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(BodyError::Transport("connection reset".into())),
        ]);
        assert!(store.append(&handle, 0, broken).await.is_err());
        store
            .append(&handle, 0, stream(vec![Ok(Bytes::from_static(b"ok"))]))
            .await
            .expect("append");
        assert_eq!(
            read_all(store.read_upload(&handle, 2).await.expect("read")).await,
            b"ok"
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("uploads/abc"))
                .expect("stat")
                .len(),
            2
        );
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_appends_and_reads_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).await.expect("open");
        let handle = store.begin_upload("beef").await.expect("begin");
        // Chunks smaller and larger than the write buffer, over the background-sync interval.
        let sizes = [
            1usize,
            7_000,
            3 << 20,
            65_536,
            (WRITEBACK_EVERY as usize) + 12_345,
            5,
        ];
        let parts: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| pattern(n, k as u8))
            .collect();
        let first = parts[0].len() as u64 + parts[1].len() as u64;
        store
            .append(
                &handle,
                0,
                stream(
                    parts[..2]
                        .iter()
                        .map(|p| Ok(Bytes::from(p.clone())))
                        .collect(),
                ),
            )
            .await
            .expect("append");
        store
            .append(
                &handle,
                first,
                stream(
                    parts[2..]
                        .iter()
                        .map(|p| Ok(Bytes::from(p.clone())))
                        .collect(),
                ),
            )
            .await
            .expect("append");
        let all: Vec<u8> = parts.concat();
        let digest = Digest::of(Algorithm::Sha256, &all);
        let locator = store
            .finish_upload(&handle, &digest, all.len() as u64)
            .await
            .expect("finish");
        let read = read_all(store.read(&locator, None).await.expect("read")).await;
        assert!(read == all, "the blob reads back differently");
        let range = ByteRange {
            start: 1_000_000,
            end: 3_500_000,
        };
        let part = read_all(store.read(&locator, Some(range)).await.expect("read")).await;
        assert!(
            part[..] == all[1_000_000..=3_500_000],
            "the range reads back differently"
        );
        let one = read_all(
            store
                .read(&locator, Some(ByteRange { start: 0, end: 0 }))
                .await
                .expect("read"),
        )
        .await;
        assert_eq!(one, all[..1]);
    }

    #[tokio::test]
    async fn reads_past_the_end_are_not_satisfiable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).await.expect("open");
        let handle = store.begin_upload("abcd").await.expect("begin");
        store
            .append(&handle, 0, stream(vec![Ok(Bytes::from_static(b"four"))]))
            .await
            .expect("append");
        let range = ByteRange { start: 2, end: 4 };
        let digest = Digest::of(Algorithm::Sha256, b"four");
        let locator = store
            .finish_upload(&handle, &digest, 4)
            .await
            .expect("finish");
        assert!(matches!(
            store.read(&locator, Some(range)).await,
            Err(StoreError::RangeNotSatisfiable)
        ));
        assert!(matches!(
            store.read("sha256/ab/abcdef", None).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn handles_and_locators_cannot_escape_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).await.expect("open");
        assert!(store.begin_upload("../evil").await.is_err());
        assert!(store.read("../../etc/passwd", None).await.is_err());
        assert!(store.read("sha256/../x", None).await.is_err());
        assert!(store.read("sha256/ab/abcdef..x", None).await.is_err());
        assert!(store.read("sha256/ab/.abcdef", None).await.is_err());
        assert!(store.read("sha256/ab/abcdef./", None).await.is_err());
    }
}
