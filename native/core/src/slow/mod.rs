//! The slow tier (KIP-405): rolled segments and their indexes in object storage.
//!
//! One copy of a segment is three objects (see `docs/formats.md`): the segment bytes (`.log`, byte-identical
//! to the local file so positions carry over), its indexes concatenated (`.indexes`) and a manifest
//! (`.manifest`) holding the CRC-32C of every chunk and index. The manifest is written last: a segment
//! without one is an incomplete copy and is never served. Each copy attempt has its own segment id, hence
//! its own keys, so retries never overwrite each other. [`catalog`] reads a partition's segments back.

pub mod catalog;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::format::keys::SegmentRef;
use crate::format::manifest::{IndexEntry, IndexKind, IndexesObject, LogObject, SegmentManifest};
use crate::format::{crc32c, FORMAT_VERSION};
use crate::metrics::{Metric, Metrics};
use crate::read::{ChunkCache, ReadContext, SegmentStream};
use crate::runtime::Cancel;
use crate::store::{ObjectStore, PutOptions};
use crate::upload::{file_size, read_at, upload_file, UploadSettings};

/// Everything `copyLogSegmentData` hands over.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub segment: SegmentRef,
    pub end_offset: i64,
    pub max_timestamp_ms: i64,
    pub broker_id: i32,
    /// Kafka's `segmentSizeInBytes`; the number of bytes of the `.log` file that are uploaded.
    pub segment_size: u64,
    pub leader_epochs: Vec<(i32, i64)>,
    pub log: PathBuf,
    pub offset_index: PathBuf,
    pub time_index: PathBuf,
    pub transaction_index: Option<PathBuf>,
    pub producer_snapshot: PathBuf,
    /// Leader-epoch checkpoint bytes (Kafka passes them in memory).
    pub leader_epoch_checkpoint: Bytes,
}

/// Settings of the slow tier.
#[derive(Debug, Clone)]
pub struct SlowTierSettings {
    pub prefix: String,
    pub upload: UploadSettings,
    pub cache_bytes: u64,
    pub read_ahead_chunks: u32,
}

const MANIFEST_CACHE_ENTRIES: usize = 4096;

/// The slow tier of one engine.
#[derive(Debug)]
pub struct SlowTier {
    store: Arc<dyn ObjectStore>,
    settings: SlowTierSettings,
    read: ReadContext,
    manifests: Mutex<HashMap<String, Arc<SegmentManifest>>>,
    metrics: Arc<Metrics>,
}

impl SlowTier {
    pub fn new(store: Arc<dyn ObjectStore>, settings: SlowTierSettings, metrics: Arc<Metrics>) -> Self {
        let read = ReadContext {
            store: store.clone(),
            cache: Arc::new(ChunkCache::new(settings.cache_bytes, metrics.clone())),
            metrics: metrics.clone(),
            read_ahead_chunks: settings.read_ahead_chunks,
        };
        SlowTier { store, settings, read, manifests: Mutex::new(HashMap::new()), metrics }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// Copies one segment: `.log`, then `.indexes`, then `.manifest`. On failure or cancellation the
    /// objects written so far are removed (best effort; Kafka also deletes failed copies).
    pub async fn copy_segment(&self, req: CopyRequest, cancel: &Cancel) -> Result<SegmentManifest> {
        let mut written = Vec::new();
        let result = self.copy_inner(&req, cancel, &mut written).await;
        match &result {
            Ok(m) => {
                self.metrics.inc(Metric::CopySegments);
                self.metrics.add(Metric::CopyBytes, (m.log.size + m.indexes.size) as i64);
            }
            Err(e) => {
                if matches!(e, Error::Cancelled { .. }) {
                    self.metrics.inc(Metric::CopyCancelled);
                } else {
                    self.metrics.inc(Metric::CopyErrors);
                }
                // Only what this attempt actually wrote (a started multipart upload was aborted already).
                for key in &written {
                    self.metrics.inc(Metric::StoreDeletes);
                    if let Err(cleanup) = self.store.delete(key).await {
                        tracing::warn!(
                            "could not remove an object of a failed copy (Kafka deletes failed copies later): {cleanup}"
                        );
                        break;
                    }
                }
            }
        }
        result
    }

    async fn copy_inner(
        &self,
        req: &CopyRequest,
        cancel: &Cancel,
        written: &mut Vec<String>,
    ) -> Result<SegmentManifest> {
        let seg = &req.segment;
        let prefix = &self.settings.prefix;
        let log_key = seg.log_key(prefix);
        let uploaded = upload_file(
            &self.store,
            &log_key,
            &req.log,
            Some(req.segment_size),
            self.settings.upload,
            cancel,
            &self.metrics,
        )
        .await?;
        written.push(log_key.clone());

        let mut sources: Vec<(IndexKind, Option<Bytes>)> = Vec::with_capacity(5);
        for (kind, path) in [
            (IndexKind::Offset, Some(&req.offset_index)),
            (IndexKind::Timestamp, Some(&req.time_index)),
            (IndexKind::Transaction, req.transaction_index.as_ref()),
            (IndexKind::ProducerSnapshot, Some(&req.producer_snapshot)),
        ] {
            let data = match path {
                Some(p) => {
                    let len = file_size(p).await?;
                    Some(cancel.run("read", &log_key, read_at(p, 0, len as usize)).await?)
                }
                None => None,
            };
            sources.push((kind, data));
        }
        sources.push((IndexKind::LeaderEpoch, Some(req.leader_epoch_checkpoint.clone())));

        let indexes_key = seg.indexes_key(prefix);
        let mut body = BytesMut::new();
        let mut entries = Vec::new();
        for (kind, data) in sources {
            if let Some(data) = data {
                entries.push(IndexEntry {
                    kind,
                    position: body.len() as u64,
                    length: data.len() as u64,
                    crc32c: crc32c(&data),
                });
                body.extend_from_slice(&data);
            }
        }
        let indexes_size = body.len() as u64;
        self.metrics.inc(Metric::StorePuts);
        cancel.run("put", &indexes_key, self.store.put(&indexes_key, body.freeze(), PutOptions::default())).await?;
        written.push(indexes_key.clone());

        let manifest = SegmentManifest {
            format: SegmentManifest::FORMAT.to_string(),
            version: FORMAT_VERSION,
            topic: seg.topic.clone(),
            topic_id: seg.topic_id.clone(),
            partition: seg.partition,
            segment_id: seg.segment_id.clone(),
            start_offset: seg.start_offset,
            end_offset: req.end_offset,
            max_timestamp_ms: req.max_timestamp_ms,
            broker_id: req.broker_id,
            leader_epochs: req.leader_epochs.clone(),
            log: LogObject {
                key: log_key,
                size: uploaded.size,
                chunk_bytes: self.settings.upload.chunk_bytes,
                chunk_crc32c: uploaded.chunk_crc32c,
            },
            indexes: IndexesObject { key: indexes_key, size: indexes_size, entries },
            created_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            writer: format!("fasttier {}", env!("CARGO_PKG_VERSION")),
        };
        let manifest_key = seg.manifest_key(prefix);
        self.metrics.inc(Metric::StorePuts);
        cancel
            .run(
                "put",
                &manifest_key,
                self.store.put(&manifest_key, Bytes::from(manifest.encode()), PutOptions::default()),
            )
            .await?;
        Ok(manifest)
    }

    /// The verified manifest of a segment (cached).
    pub async fn manifest(&self, seg: &SegmentRef) -> Result<Arc<SegmentManifest>> {
        let key = seg.manifest_key(&self.settings.prefix);
        if let Some(m) = self.manifests.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(m.clone());
        }
        self.metrics.inc(Metric::StoreGets);
        let data = self.store.get(&key).await?;
        self.metrics.add(Metric::StoreGetBytes, data.len() as i64);
        let m = SegmentManifest::decode(&key, &data).inspect_err(|_| self.metrics.inc(Metric::CorruptObjects))?;
        if m.topic_id != seg.topic_id
            || m.partition != seg.partition
            || m.segment_id != seg.segment_id
            || m.start_offset != seg.start_offset
        {
            self.metrics.inc(Metric::CorruptObjects);
            return Err(Error::corrupt(&key, "manifest describes another segment"));
        }
        let m = Arc::new(m);
        let mut cache = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MANIFEST_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, m.clone());
        Ok(m)
    }

    /// A lazy stream over segment bytes `[start, end_inclusive]` (to the end when `None`).
    pub async fn open_stream(&self, seg: &SegmentRef, start: u64, end_inclusive: Option<u64>) -> Result<SegmentStream> {
        let m = match self.manifest(seg).await {
            Ok(m) => m,
            Err(e) => {
                self.metrics.inc(Metric::FetchErrors);
                return Err(e);
            }
        };
        let size = m.log.size;
        let end = end_inclusive.map(|e| e.saturating_add(1).min(size)).unwrap_or(size);
        if start > size || start > end {
            self.metrics.inc(Metric::FetchErrors);
            return Err(Error::Store {
                op: "fetch",
                key: m.log.key.clone(),
                detail: format!("start_position={start} end={end} outside segment size={size}"),
            });
        }
        Ok(SegmentStream::new(self.read.clone(), m, start, end))
    }

    /// One index of the segment, verified. A segment without that index (e.g. no transaction index) is
    /// `NotFound`.
    pub async fn fetch_index(&self, seg: &SegmentRef, kind: IndexKind) -> Result<Bytes> {
        let m = self.manifest(seg).await?;
        let entry =
            m.index(kind).ok_or_else(|| Error::NotFound { key: format!("{} index={kind:?}", m.indexes.key) })?;
        self.metrics.inc(Metric::IndexFetches);
        if entry.length == 0 {
            return Ok(Bytes::new());
        }
        self.metrics.inc(Metric::StoreGets);
        let data = self.store.get_range(&m.indexes.key, entry.position..entry.position + entry.length).await?;
        self.metrics.add(Metric::StoreGetBytes, data.len() as i64);
        let actual = crc32c(&data);
        if data.len() as u64 != entry.length || actual != entry.crc32c {
            self.metrics.inc(Metric::CorruptObjects);
            return Err(Error::corrupt(
                &m.indexes.key,
                format!(
                    "index={kind:?} range={}..{} crc32c expected={:08x} actual={actual:08x} len={}",
                    entry.position,
                    entry.position + entry.length,
                    entry.crc32c,
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    /// Deletes every object of the segment; idempotent.
    pub async fn delete_segment(&self, seg: &SegmentRef) -> Result<()> {
        let r = self.delete_objects(seg).await;
        match &r {
            Ok(()) => self.metrics.inc(Metric::DeleteSegments),
            Err(_) => self.metrics.inc(Metric::DeleteErrors),
        }
        r
    }

    async fn delete_objects(&self, seg: &SegmentRef) -> Result<()> {
        let prefix = &self.settings.prefix;
        self.manifests.lock().unwrap_or_else(|p| p.into_inner()).remove(&seg.manifest_key(prefix));
        self.read.cache.invalidate(&seg.log_key(prefix));
        // Manifest first: from then on the segment counts as incomplete and is never served.
        for key in seg.all_keys(prefix) {
            self.metrics.inc(Metric::StoreDeletes);
            match self.store.delete(&key).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    struct Fixture {
        _dir: tempfile::TempDir,
        req: CopyRequest,
        log: Vec<u8>,
        offset_index: Vec<u8>,
        snapshot: Vec<u8>,
    }

    fn fixture(log_len: usize, with_txn: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log: Vec<u8> = (0..log_len).map(|i| (i * 7 % 256) as u8).collect();
        let offset_index: Vec<u8> = (0..80u8).collect();
        let snapshot = b"producer-snapshot".to_vec();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("0.log"), &log).unwrap();
        std::fs::write(p("0.index"), &offset_index).unwrap();
        std::fs::write(p("0.timeindex"), [9u8; 24]).unwrap();
        std::fs::write(p("0.snapshot"), &snapshot).unwrap();
        if with_txn {
            std::fs::write(p("0.txnindex"), [3u8; 34]).unwrap();
        }
        let req = CopyRequest {
            segment: SegmentRef::new("t", "AAAAAAAAAAAAAAAAAAAAAQ", 3, 100, "AAAAAAAAAAAAAAAAAAAAAg").unwrap(),
            end_offset: 199,
            max_timestamp_ms: 5,
            broker_id: 1,
            segment_size: log_len as u64,
            leader_epochs: vec![(0, 100)],
            log: p("0.log"),
            offset_index: p("0.index"),
            time_index: p("0.timeindex"),
            transaction_index: with_txn.then(|| p("0.txnindex")),
            producer_snapshot: p("0.snapshot"),
            leader_epoch_checkpoint: Bytes::from_static(b"0\n1\n0 100\n"),
        };
        Fixture { _dir: dir, req, log, offset_index, snapshot }
    }

    fn tier(store: Arc<dyn ObjectStore>) -> SlowTier {
        SlowTier::new(
            store,
            SlowTierSettings {
                prefix: "p/".into(),
                upload: UploadSettings {
                    chunk_bytes: 4096,
                    part_bytes: 5 << 20,
                    multipart_threshold_bytes: 5 << 20,
                    concurrency: 2,
                },
                cache_bytes: 64 << 10,
                read_ahead_chunks: 1,
            },
            Arc::new(Metrics::default()),
        )
    }

    async fn read_stream(s: &mut SegmentStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn copy_fetch_index_delete_round_trip() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let t = tier(store.clone());
        let f = fixture(50_000, false);
        t.copy_segment(f.req.clone(), &Cancel::new()).await.unwrap();
        let seg = &f.req.segment;
        for start in [0u64, 1, 4095, 4096, 49_999, 50_000] {
            let mut s = t.open_stream(seg, start, None).await.unwrap();
            assert_eq!(read_stream(&mut s).await, &f.log[start as usize..]);
        }
        let mut s = t.open_stream(seg, 10, Some(20)).await.unwrap();
        assert_eq!(read_stream(&mut s).await, &f.log[10..=20]);
        assert!(t.open_stream(seg, 50_001, None).await.is_err());

        assert_eq!(t.fetch_index(seg, IndexKind::Offset).await.unwrap(), f.offset_index);
        assert_eq!(t.fetch_index(seg, IndexKind::ProducerSnapshot).await.unwrap(), f.snapshot);
        assert_eq!(t.fetch_index(seg, IndexKind::LeaderEpoch).await.unwrap(), Bytes::from_static(b"0\n1\n0 100\n"));
        assert!(t.fetch_index(seg, IndexKind::Transaction).await.unwrap_err().is_not_found());

        t.delete_segment(seg).await.unwrap();
        t.delete_segment(seg).await.unwrap();
        assert!(store.list("p/").await.unwrap().is_empty());
        assert!(t.open_stream(seg, 0, None).await.unwrap_err().is_not_found());
        assert!(t.fetch_index(seg, IndexKind::Offset).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn transaction_index_is_kept_when_present() {
        let t = tier(Arc::new(MemoryStore::new()));
        let f = fixture(10, true);
        t.copy_segment(f.req.clone(), &Cancel::new()).await.unwrap();
        assert_eq!(t.fetch_index(&f.req.segment, IndexKind::Transaction).await.unwrap(), vec![3u8; 34]);
    }

    #[tokio::test]
    async fn failed_copy_leaves_no_objects_and_no_manifest() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let t = tier(store.clone());
        let mut f = fixture(1000, false);
        f.req.producer_snapshot = PathBuf::from("/nonexistent/0.snapshot");
        let e = t.copy_segment(f.req.clone(), &Cancel::new()).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/0.snapshot"), "{e}");
        assert!(store.list("").await.unwrap().is_empty());
        // A file shorter than Kafka's segment size is refused.
        let mut f = fixture(1000, false);
        f.req.segment_size = 2000;
        assert!(t.copy_segment(f.req.clone(), &Cancel::new()).await.unwrap_err().to_string().contains("shorter"));
    }

    #[tokio::test]
    async fn failed_copy_removes_only_what_it_wrote() {
        use crate::store::faulty::{FaultyStore, Op};
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new()) as Arc<dyn ObjectStore>));
        let t = tier(faulty.clone());
        let f = fixture(1000, false);
        // Outage: nothing is written, so no clean-up requests are sent either.
        faulty.set_outage(true);
        assert_eq!(
            t.copy_segment(f.req.clone(), &Cancel::new()).await.unwrap_err().class(),
            crate::error::ErrorClass::Retriable
        );
        assert_eq!(faulty.calls(Op::Delete), 0);
        faulty.set_outage(false);
        // The .log object is written, then reading an index fails: exactly that one object is removed.
        let mut f2 = fixture(1000, false);
        f2.req.producer_snapshot = PathBuf::from("/nonexistent/0.snapshot");
        assert!(t.copy_segment(f2.req.clone(), &Cancel::new()).await.is_err());
        assert_eq!(faulty.calls(Op::Delete), 1);
        assert!(faulty.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn corrupt_index_and_manifest_are_errors_with_keys() {
        let mem = Arc::new(MemoryStore::new());
        let t = tier(mem.clone());
        let f = fixture(100, false);
        let m = t.copy_segment(f.req.clone(), &Cancel::new()).await.unwrap();
        let mut idx = mem.get(&m.indexes.key).await.unwrap().to_vec();
        idx[3] ^= 0xff;
        mem.overwrite_raw(&m.indexes.key, Bytes::from(idx));
        let e = t.fetch_index(&f.req.segment, IndexKind::Offset).await.unwrap_err();
        assert!(e.to_string().contains(&m.indexes.key), "{e}");
        let mkey = f.req.segment.manifest_key("p/");
        let mut raw = mem.get(&mkey).await.unwrap().to_vec();
        let n = raw.len();
        raw[n - 5] ^= 0x01;
        mem.overwrite_raw(&mkey, Bytes::from(raw));
        let t2 = tier(mem.clone());
        let e = t2.open_stream(&f.req.segment, 0, None).await.unwrap_err();
        assert!(e.to_string().contains(&mkey), "{e}");
    }
}
