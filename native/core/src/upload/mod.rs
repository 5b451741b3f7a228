//! Bounded-memory uploads of local files.
//!
//! [`upload_file`] streams a file to one object: a single PUT up to the multipart threshold, otherwise a
//! multipart upload whose parts are read from disk one at a time (`upload.part.bytes`) with at most
//! `upload.concurrency` parts in flight. Memory is bounded by `(concurrency + 1) × part_bytes` whatever the
//! file size. While reading it computes the CRC-32C of every `chunk_bytes` piece for the manifest.
//! On failure or cancellation a started multipart upload is aborted, so no orphan parts are left behind.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::format::chunk_crcs;
use crate::metrics::{Metric, Metrics};
use crate::runtime::Cancel;
use crate::store::{CompletedPart, ObjectStore, PutOptions};

/// Sizes governing one upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadSettings {
    pub chunk_bytes: u64,
    /// A multiple of `chunk_bytes`.
    pub part_bytes: u64,
    pub multipart_threshold_bytes: u64,
    pub concurrency: usize,
}

/// What was uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub size: u64,
    pub chunk_crc32c: Vec<u32>,
}

/// Reads `len` bytes at `offset` of a local file on the blocking pool.
pub async fn read_at(path: &Path, offset: u64, len: usize) -> Result<Bytes> {
    let p: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = File::open(&p).map_err(|e| Error::io(p.display(), e))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io(format!("{} offset={offset} len={len}", p.display()), e))?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|e| Error::Internal(format!("file read task failed: {e}")))?
}

/// Size of a local file.
pub async fn file_size(path: &Path) -> Result<u64> {
    tokio::fs::metadata(path).await.map(|m| m.len()).map_err(|e| Error::io(path.display(), e))
}

/// Uploads the first `len` bytes of the file at `path` (the whole file if `len` is `None`) to `key`.
/// A file shorter than `len` is an error naming the path.
pub async fn upload_file(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    path: &Path,
    len: Option<u64>,
    s: UploadSettings,
    cancel: &Cancel,
    metrics: &Metrics,
) -> Result<Uploaded> {
    let on_disk = file_size(path).await?;
    let size = len.unwrap_or(on_disk);
    if on_disk < size {
        return Err(Error::io(
            path.display(),
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file_size={on_disk} is shorter than expected={size}"),
            ),
        ));
    }
    if size <= s.multipart_threshold_bytes {
        let body = cancel.run("read", key, read_at(path, 0, size as usize)).await?;
        let crcs = chunk_crcs(&body, s.chunk_bytes as usize);
        metrics.inc(Metric::StorePuts);
        cancel.run("put", key, store.put(key, body, PutOptions::default())).await?;
        return Ok(Uploaded { size, chunk_crc32c: crcs });
    }

    let upload_id = cancel.run("create_multipart", key, store.create_multipart(key)).await?;
    let result = async {
        let (parts, crcs) = upload_parts(store, key, &upload_id, path, size, s, cancel, metrics).await?;
        cancel
            .run("complete_multipart", key, store.complete_multipart(key, &upload_id, parts, PutOptions::default()))
            .await?;
        Ok(Uploaded { size, chunk_crc32c: crcs })
    }
    .await;
    if result.is_err() {
        if let Err(e) = store.abort_multipart(key, &upload_id).await {
            tracing::warn!(
                "abort of multipart upload failed, orphan parts may remain until an S3 lifecycle rule \
                 (AbortIncompleteMultipartUpload) removes them: key={key} upload_id={upload_id} error={e}"
            );
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn upload_parts(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    upload_id: &str,
    path: &Path,
    size: u64,
    s: UploadSettings,
    cancel: &Cancel,
    metrics: &Metrics,
) -> Result<(Vec<CompletedPart>, Vec<u32>)> {
    let mut crcs = Vec::with_capacity(size.div_ceil(s.chunk_bytes) as usize);
    let mut in_flight: JoinSet<Result<CompletedPart>> = JoinSet::new();
    let mut parts = Vec::new();
    let mut offset = 0u64;
    let mut part_number = 0i32;
    while offset < size {
        while in_flight.len() >= s.concurrency.max(1) {
            parts.push(cancel.run("put_part", key, join_next(&mut in_flight)).await?);
        }
        let len = (size - offset).min(s.part_bytes) as usize;
        let body = cancel.run("read", key, read_at(path, offset, len)).await?;
        crcs.extend(chunk_crcs(&body, s.chunk_bytes as usize));
        part_number += 1;
        metrics.inc(Metric::StorePuts);
        let (store, key, upload_id, n) = (store.clone(), key.to_string(), upload_id.to_string(), part_number);
        in_flight.spawn(async move { store.put_part(&key, &upload_id, n, body).await });
        offset += len as u64;
    }
    while !in_flight.is_empty() {
        parts.push(cancel.run("put_part", key, join_next(&mut in_flight)).await?);
    }
    parts.sort_by_key(|p| p.part_number);
    Ok((parts, crcs))
}

async fn join_next(set: &mut JoinSet<Result<CompletedPart>>) -> Result<CompletedPart> {
    match set.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) if e.is_panic() => Err(Error::Internal(format!("part upload panicked: {e}"))),
        Some(Err(e)) => Err(Error::Internal(format!("part upload task ended: {e}"))),
        None => Err(Error::Internal("no part upload in flight".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn settings() -> UploadSettings {
        UploadSettings { chunk_bytes: 1 << 20, part_bytes: 5 << 20, multipart_threshold_bytes: 6 << 20, concurrency: 2 }
    }

    fn temp_file(len: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        (dir, path, data)
    }

    #[tokio::test]
    async fn small_and_multipart_uploads_are_exact() {
        for len in [0usize, 10, 6 << 20, (6 << 20) + 1, (17 << 20) + 5] {
            let mem = Arc::new(MemoryStore::new());
            let store: Arc<dyn ObjectStore> = mem.clone();
            let (_d, path, data) = temp_file(len);
            let up =
                upload_file(&store, "k", &path, None, settings(), &Cancel::new(), &Metrics::default()).await.unwrap();
            assert_eq!(up.size, len as u64);
            assert_eq!(up.chunk_crc32c, chunk_crcs(&data, 1 << 20));
            assert_eq!(store.get("k").await.unwrap(), Bytes::from(data));
            assert_eq!(mem.pending_uploads(), 0);
        }
    }

    #[tokio::test]
    async fn cancelled_multipart_upload_is_aborted() {
        let mem = Arc::new(MemoryStore::new());
        let store: Arc<dyn ObjectStore> = mem.clone();
        let (_d, path, _) = temp_file(20 << 20);
        let cancel = Cancel::new();
        cancel.cancel();
        let e = upload_file(&store, "k", &path, None, settings(), &cancel, &Metrics::default()).await.unwrap_err();
        assert!(matches!(e, Error::Cancelled { .. }), "{e}");
        assert_eq!(mem.pending_uploads(), 0);
        assert!(store.get("k").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn missing_file_names_the_path() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let e = upload_file(
            &store,
            "k",
            Path::new("/nonexistent/x.log"),
            None,
            settings(),
            &Cancel::new(),
            &Metrics::default(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("path=/nonexistent/x.log"), "{e}");
    }
}
