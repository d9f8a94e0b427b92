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

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use openregistry::body::{Body, BodyError, ByteStream};
use openregistry::digest::Digest;
use openregistry::ports::{BlobStore, StoreError, Unavailable};
use openregistry::range::ByteRange;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

/// Read buffer of blob downloads.
const READ_CHUNK: usize = 256 * 1024;
/// Write buffer of uploads.
const WRITE_BUFFER: usize = 1024 * 1024;

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

    fn locator_for(digest: &Digest) -> String {
        let hex = digest.hex();
        format!("{}/{}/{}", digest.algorithm().name(), &hex[..2], hex)
    }

    fn blob_path(&self, locator: &str) -> Result<PathBuf, StoreError> {
        // Locators are ours (`<alg>/<xx>/<hex>`), but they come back from a database: check them.
        let parts: Vec<&str> = locator.split('/').collect();
        let well_formed = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()));
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

    async fn stream_file(
        path: &Path,
        what: &str,
        start: u64,
        len: u64,
    ) -> Result<Body, StoreError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_error(what, e))?;
        let size = file.metadata().await.map_err(|e| io_error(what, e))?.len();
        if start.saturating_add(len) > size {
            return Err(StoreError::RangeNotSatisfiable);
        }
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| io_error(what, e))?;
        let stream = ReaderStream::with_capacity(file.take(len), READ_CHUNK)
            .map(|chunk| chunk.map_err(|e| BodyError::Transport(e.to_string())));
        Ok(Body::from_stream(stream))
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
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .map_err(|e| io_error("upload", e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| io_error("upload", e))?
            .len();
        if len < offset {
            return Err(StoreError::Unavailable(Unavailable::new(
                "filesystem",
                format!("upload {handle} has {len} bytes on disk but {offset} were acknowledged"),
            )));
        }
        // Drop whatever an interrupted append left beyond the acknowledged offset.
        file.set_len(offset)
            .await
            .map_err(|e| io_error("upload", e))?;
        let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| io_error("upload", e))?;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .await
                .map_err(|e| io_error("upload", e))?;
        }
        file.flush().await.map_err(|e| io_error("upload", e))?;
        // The session will say these bytes are ours: make that true across a crash.
        file.get_ref()
            .sync_data()
            .await
            .map_err(|e| io_error("upload", e))?;
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
        let locator = Self::locator_for(digest);
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
        Self::stream_file(&self.upload_path(handle)?, "upload", 0, len).await
    }

    async fn abort_upload(&self, handle: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.upload_path(handle)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("upload", e)),
            _ => Ok(()),
        }
    }

    async fn read(&self, locator: &str, range: Option<ByteRange>) -> Result<Body, StoreError> {
        let path = self.blob_path(locator)?;
        match range {
            Some(range) => Self::stream_file(&path, locator, range.start, range.len()).await,
            None => {
                let size = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| io_error(locator, e))?
                    .len();
                Self::stream_file(&path, locator, 0, size).await
            }
        }
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

    #[tokio::test]
    async fn handles_and_locators_cannot_escape_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).await.expect("open");
        assert!(store.begin_upload("../evil").await.is_err());
        assert!(store.read("../../etc/passwd", None).await.is_err());
        assert!(store.read("sha256/../x", None).await.is_err());
    }
}
