//! In-memory [`ObjectStore`]: a map behind a mutex. Used by unit tests and by the `memory` backend.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{CompletedPart, ObjectMeta, ObjectStore, PutOptions};
use crate::error::{Error, Result};

/// A multipart upload in progress: its key and the parts received so far, by part number.
type Upload = (String, BTreeMap<i32, Bytes>);

#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
    uploads: Mutex<HashMap<String, Upload>>,
    next_upload: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of multipart uploads started and neither completed nor aborted (for leak checks in tests).
    pub fn pending_uploads(&self) -> usize {
        self.uploads.lock().unwrap().len()
    }

    /// Replaces the stored bytes of `key` directly (for corruption tests).
    pub fn overwrite_raw(&self, key: &str, body: Bytes) {
        self.objects.lock().unwrap().insert(key.to_string(), body);
    }
}

pub(crate) fn slice_range(key: &str, data: &Bytes, range: Range<u64>) -> Result<Bytes> {
    let len = data.len() as u64;
    if range.start > range.end || (range.start >= len && !(len == 0 && range.start == 0)) {
        return Err(Error::Store {
            op: "get_range",
            key: key.to_string(),
            detail: format!("range={}..{} object_size={len} not satisfiable", range.start, range.end),
        });
    }
    let end = range.end.min(len);
    Ok(data.slice(range.start as usize..end as usize))
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<()> {
        let mut objects = self.objects.lock().unwrap();
        if opts.if_none_match && objects.contains_key(key) {
            return Err(Error::AlreadyExists { key: key.to_string() });
        }
        objects.insert(key.to_string(), body);
        Ok(())
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let data = self.get(key).await?;
        slice_range(key, &data, range)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.objects.lock().unwrap().get(key).cloned().ok_or_else(|| Error::NotFound { key: key.to_string() })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let size = self.get(key).await?.len() as u64;
        Ok(ObjectMeta { key: key.to_string(), size })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta { key: k.clone(), size: v.len() as u64 })
            .collect())
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        let id = format!("mem-{}", self.next_upload.fetch_add(1, Ordering::Relaxed));
        self.uploads.lock().unwrap().insert(id.clone(), (key.to_string(), BTreeMap::new()));
        Ok(id)
    }

    async fn put_part(&self, key: &str, upload_id: &str, part_number: i32, body: Bytes) -> Result<CompletedPart> {
        let mut uploads = self.uploads.lock().unwrap();
        let (k, parts) = uploads
            .get_mut(upload_id)
            .ok_or_else(|| Error::NotFound { key: format!("{key} upload_id={upload_id}") })?;
        if k != key {
            return Err(Error::Store {
                op: "put_part",
                key: key.to_string(),
                detail: format!("upload_id={upload_id} belongs to key={k}"),
            });
        }
        let etag = format!("\"{:08x}\"", crc32c::crc32c(&body));
        parts.insert(part_number, body);
        Ok(CompletedPart { part_number, etag })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        opts: PutOptions,
    ) -> Result<()> {
        let mut uploads = self.uploads.lock().unwrap();
        let (k, stored) =
            uploads.get(upload_id).ok_or_else(|| Error::NotFound { key: format!("{key} upload_id={upload_id}") })?;
        if k != key {
            return Err(Error::Store {
                op: "complete_multipart",
                key: key.to_string(),
                detail: format!("upload_id={upload_id} belongs to key={k}"),
            });
        }
        let mut body = BytesMut::new();
        let mut last = 0;
        for p in &parts {
            if p.part_number <= last {
                return Err(Error::Store {
                    op: "complete_multipart",
                    key: key.to_string(),
                    detail: "parts not in ascending order".into(),
                });
            }
            last = p.part_number;
            let data = stored.get(&p.part_number).ok_or_else(|| Error::Store {
                op: "complete_multipart",
                key: key.to_string(),
                detail: format!("part={} was never uploaded", p.part_number),
            })?;
            body.extend_from_slice(data);
        }
        let mut objects = self.objects.lock().unwrap();
        if opts.if_none_match && objects.contains_key(key) {
            return Err(Error::AlreadyExists { key: key.to_string() });
        }
        objects.insert(key.to_string(), body.freeze());
        uploads.remove(upload_id);
        Ok(())
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<()> {
        self.uploads.lock().unwrap().remove(upload_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_passes_conformance() {
        let store = MemoryStore::new();
        crate::store::conformance::run_all(&store, "conformance/").await;
        assert_eq!(store.pending_uploads(), 0);
    }
}
