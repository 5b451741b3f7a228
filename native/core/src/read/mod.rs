//! The read path: verified chunks, the shared chunk cache and lazy segment streams.
//!
//! A segment's `.log` object is read in chunks of the manifest's `chunk_bytes`; every chunk is fetched
//! with one ranged GET and checked against its CRC-32C from the manifest before anyone sees a byte of it.
//! Verified chunks live in a [`ChunkCache`] bounded by `cache.bytes` (least recently used out first)
//! shared by all streams, so the consecutive fetches a consumer makes (each a new stream at a new
//! position) do not download the same chunk twice. A [`SegmentStream`] holds at most one chunk of its
//! own and asks the cache to prefetch `read.ahead.chunks` chunks ahead of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::format::crc32c;
use crate::format::manifest::SegmentManifest;
use crate::metrics::{Metric, Metrics};
use crate::store::ObjectStore;

type ChunkKey = (Arc<str>, u64);

struct Slot {
    cell: Arc<OnceCell<Bytes>>,
    last_use: u64,
    /// Bytes accounted for this slot (0 while loading).
    size: u64,
}

#[derive(Default)]
struct CacheInner {
    slots: HashMap<ChunkKey, Slot>,
    bytes: u64,
    tick: u64,
}

/// Verified chunks shared by every stream of an engine, bounded in bytes.
pub struct ChunkCache {
    capacity: u64,
    inner: Mutex<CacheInner>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache").field("capacity", &self.capacity).finish()
    }
}

impl ChunkCache {
    pub fn new(capacity: u64, metrics: Arc<Metrics>) -> Self {
        ChunkCache { capacity, inner: Mutex::new(CacheInner::default()), metrics }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn contains(&self, key: &ChunkKey) -> bool {
        self.lock().slots.contains_key(key)
    }

    /// Returns the chunk, loading (and verifying, inside `load`) it once if it is not cached. Concurrent
    /// callers for the same chunk share one load. A failed load is not cached.
    pub async fn get_or_load<F, Fut>(&self, key: ChunkKey, load: F) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes>>,
    {
        let cell = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            let slot = inner.slots.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                last_use: tick,
                size: 0,
            });
            slot.last_use = tick;
            slot.cell.clone()
        };
        if let Some(b) = cell.get() {
            self.metrics.inc(Metric::CacheHits);
            return Ok(b.clone());
        }
        let mut loaded_here = false;
        let result = cell
            .get_or_try_init(|| {
                loaded_here = true;
                self.metrics.inc(Metric::CacheMisses);
                load()
            })
            .await
            .cloned();
        if !loaded_here && result.is_ok() {
            self.metrics.inc(Metric::CacheHits);
        }
        let mut inner = self.lock();
        match &result {
            Ok(bytes) if loaded_here => {
                if let Some(slot) = inner.slots.get_mut(&key) {
                    if Arc::ptr_eq(&slot.cell, &cell) && slot.size == 0 {
                        slot.size = bytes.len() as u64;
                        inner.bytes += bytes.len() as u64;
                    }
                }
                self.evict(&mut inner, &key);
            }
            Err(_) => {
                if inner.slots.get(&key).is_some_and(|s| Arc::ptr_eq(&s.cell, &cell) && s.cell.get().is_none()) {
                    inner.slots.remove(&key);
                }
            }
            _ => {}
        }
        self.metrics.set(Metric::CacheBytes, inner.bytes as i64);
        result
    }

    fn evict(&self, inner: &mut CacheInner, keep: &ChunkKey) {
        while inner.bytes > self.capacity {
            let victim = inner
                .slots
                .iter()
                .filter(|(k, s)| s.size > 0 && *k != keep)
                .min_by_key(|(_, s)| s.last_use)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    if let Some(s) = inner.slots.remove(&k) {
                        inner.bytes -= s.size;
                    }
                }
                None => break,
            }
        }
    }

    /// Drops every chunk of `object_key` (after a delete).
    pub fn invalidate(&self, object_key: &str) {
        let mut inner = self.lock();
        let keys: Vec<ChunkKey> = inner.slots.keys().filter(|(k, _)| &**k == object_key).cloned().collect();
        for k in keys {
            if let Some(s) = inner.slots.remove(&k) {
                inner.bytes -= s.size;
            }
        }
        self.metrics.set(Metric::CacheBytes, inner.bytes as i64);
    }
}

/// What a stream needs to load chunks.
#[derive(Debug, Clone)]
pub struct ReadContext {
    pub store: Arc<dyn ObjectStore>,
    pub cache: Arc<ChunkCache>,
    pub metrics: Arc<Metrics>,
    pub read_ahead_chunks: u32,
}

impl ReadContext {
    /// Fetches chunk `index` of the manifest's log object with one ranged GET and verifies it.
    async fn load_chunk(&self, manifest: &SegmentManifest, index: u64) -> Result<Bytes> {
        let log = &manifest.log;
        let start = index * log.chunk_bytes;
        let end = (start + log.chunk_bytes).min(log.size);
        let expected = *log
            .chunk_crc32c
            .get(index as usize)
            .ok_or_else(|| Error::Internal(format!("chunk index={index} beyond manifest key={}", log.key)))?;
        self.metrics.inc(Metric::StoreGets);
        let data = self.store.get_range(&log.key, start..end).await?;
        self.metrics.add(Metric::StoreGetBytes, data.len() as i64);
        if data.len() as u64 != end - start {
            self.metrics.inc(Metric::CorruptObjects);
            return Err(Error::corrupt(
                &log.key,
                format!("chunk={index} range={start}..{end} expected_len={} actual_len={}", end - start, data.len()),
            ));
        }
        let actual = crc32c(&data);
        if actual != expected {
            self.metrics.inc(Metric::CorruptObjects);
            return Err(Error::corrupt(
                &log.key,
                format!("chunk={index} range={start}..{end} crc32c expected={expected:08x} actual={actual:08x}"),
            ));
        }
        Ok(data)
    }

    /// Returns verified chunk `index`, through the cache.
    pub async fn chunk(&self, manifest: &Arc<SegmentManifest>, key: &Arc<str>, index: u64) -> Result<Bytes> {
        self.cache.get_or_load((key.clone(), index), || self.load_chunk(manifest, index)).await
    }

    /// Starts background loads of chunks `from..to` that are not cached yet.
    fn prefetch(&self, manifest: &Arc<SegmentManifest>, key: &Arc<str>, from: u64, to: u64) {
        for index in from..to {
            if self.cache.contains(&(key.clone(), index)) {
                continue;
            }
            let (ctx, manifest, key) = (self.clone(), manifest.clone(), key.clone());
            tokio::spawn(async move {
                if let Err(e) = ctx.chunk(&manifest, &key, index).await {
                    tracing::debug!("prefetch failed (the reader will retry and report it): {e}");
                }
            });
        }
    }
}

/// A lazy stream over `[start, end)` of a segment's bytes. Dropping it releases its chunk.
pub struct SegmentStream {
    ctx: ReadContext,
    manifest: Arc<SegmentManifest>,
    key: Arc<str>,
    pos: u64,
    end: u64,
    current: Option<(u64, Bytes)>,
}

impl std::fmt::Debug for SegmentStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentStream").field("key", &self.key).field("pos", &self.pos).field("end", &self.end).finish()
    }
}

impl SegmentStream {
    /// Opens a stream; `end` is exclusive and already clamped to the segment size by the caller.
    pub fn new(ctx: ReadContext, manifest: Arc<SegmentManifest>, start: u64, end: u64) -> Self {
        ctx.metrics.inc(Metric::FetchStreams);
        ctx.metrics.add(Metric::OpenStreams, 1);
        let key: Arc<str> = Arc::from(manifest.log.key.as_str());
        SegmentStream { ctx, manifest, key, pos: start, end, current: None }
    }

    /// Position of the next byte.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes readable without another fetch.
    pub fn available(&self) -> usize {
        match &self.current {
            Some((index, data)) if self.pos < self.end => {
                let chunk_start = index * self.manifest.log.chunk_bytes;
                let in_chunk = (chunk_start + data.len() as u64).saturating_sub(self.pos);
                in_chunk.min(self.end - self.pos) as usize
            }
            _ => 0,
        }
    }

    /// Reads up to `buf.len()` bytes; 0 means end of stream (or an empty `buf`).
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let chunk_bytes = self.manifest.log.chunk_bytes;
        let index = self.pos / chunk_bytes;
        if self.current.as_ref().map(|(i, _)| *i) != Some(index) {
            self.current = None;
            let data = match self.ctx.chunk(&self.manifest, &self.key, index).await {
                Ok(d) => d,
                Err(e) => {
                    self.ctx.metrics.inc(Metric::FetchErrors);
                    return Err(e);
                }
            };
            let last_needed = (self.end - 1) / chunk_bytes;
            let ahead_to = (index + 1 + self.ctx.read_ahead_chunks as u64).min(last_needed + 1);
            self.ctx.prefetch(&self.manifest, &self.key, index + 1, ahead_to);
            self.current = Some((index, data));
        }
        let (_, data) = self.current.as_ref().expect("chunk loaded above");
        let offset_in_chunk = (self.pos - index * chunk_bytes) as usize;
        let n = buf.len().min(data.len() - offset_in_chunk).min((self.end - self.pos) as usize);
        buf[..n].copy_from_slice(&data[offset_in_chunk..offset_in_chunk + n]);
        self.pos += n as u64;
        self.ctx.metrics.add(Metric::FetchBytes, n as i64);
        Ok(n)
    }
}

impl Drop for SegmentStream {
    fn drop(&mut self) {
        self.ctx.metrics.add(Metric::OpenStreams, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{IndexesObject, LogObject};
    use crate::format::{chunk_crcs, FORMAT_VERSION};
    use crate::store::faulty::FaultyStore;
    use crate::store::memory::MemoryStore;
    use crate::store::PutOptions;

    fn manifest(data: &[u8], chunk: u64) -> Arc<SegmentManifest> {
        Arc::new(SegmentManifest {
            format: SegmentManifest::FORMAT.into(),
            version: FORMAT_VERSION,
            topic: "t".into(),
            topic_id: "AAAAAAAAAAAAAAAAAAAAAQ".into(),
            partition: 0,
            segment_id: "AAAAAAAAAAAAAAAAAAAAAg".into(),
            start_offset: 0,
            end_offset: 1,
            max_timestamp_ms: 0,
            broker_id: 0,
            leader_epochs: vec![],
            log: LogObject {
                key: "seg.log".into(),
                size: data.len() as u64,
                chunk_bytes: chunk,
                chunk_crc32c: chunk_crcs(data, chunk as usize),
            },
            indexes: IndexesObject { key: "seg.indexes".into(), size: 0, entries: vec![] },
            created_unix_ms: 0,
            writer: "test".into(),
        })
    }

    async fn setup(
        len: usize,
        chunk: u64,
        cache: u64,
    ) -> (Arc<MemoryStore>, ReadContext, Arc<SegmentManifest>, Vec<u8>) {
        let mem = Arc::new(MemoryStore::new());
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        mem.put("seg.log", Bytes::from(data.clone()), PutOptions::default()).await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let ctx = ReadContext {
            store: mem.clone(),
            cache: Arc::new(ChunkCache::new(cache, metrics.clone())),
            metrics,
            read_ahead_chunks: 1,
        };
        let m = manifest(&data, chunk);
        (mem, ctx, m, data)
    }

    async fn read_all(s: &mut SegmentStream, step: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn streams_return_exact_bytes_from_any_position() {
        let (_mem, ctx, m, data) = setup(10_000, 1024, 4096).await;
        for (start, end, step) in
            [(0u64, 10_000u64, 7usize), (1023, 10_000, 4096), (5000, 5001, 1), (9999, 10_000, 10), (10_000, 10_000, 10)]
        {
            let mut s = SegmentStream::new(ctx.clone(), m.clone(), start, end);
            assert_eq!(read_all(&mut s, step).await.unwrap(), &data[start as usize..end as usize]);
        }
        assert!(ctx.cache.bytes() <= 4096);
        assert_eq!(ctx.metrics.get(Metric::OpenStreams), 0);
    }

    #[tokio::test]
    async fn cache_serves_repeated_reads_without_gets() {
        let (_mem, ctx, m, _) = setup(4096, 1024, 1 << 20).await;
        let mut s = SegmentStream::new(ctx.clone(), m.clone(), 0, 4096);
        read_all(&mut s, 4096).await.unwrap();
        let gets = ctx.metrics.get(Metric::StoreGets);
        assert!(gets <= 4, "gets={gets}");
        let mut s = SegmentStream::new(ctx.clone(), m.clone(), 100, 4096);
        read_all(&mut s, 500).await.unwrap();
        assert_eq!(ctx.metrics.get(Metric::StoreGets), gets);
        assert!(ctx.metrics.get(Metric::CacheHits) >= 4);
    }

    #[tokio::test]
    async fn corrupt_chunk_is_an_error_naming_the_key_and_never_served() {
        let (mem, ctx, m, data) = setup(3000, 1024, 1 << 20).await;
        let mut bad = data.clone();
        bad[2500] ^= 1;
        mem.overwrite_raw("seg.log", Bytes::from(bad));
        let mut s = SegmentStream::new(ctx.clone(), m.clone(), 0, 3000);
        let mut buf = vec![0u8; 1024];
        assert_eq!(s.read(&mut buf).await.unwrap(), 1024);
        assert_eq!(&buf[..], &data[..1024]);
        assert_eq!(s.read(&mut buf).await.unwrap(), 1024);
        let e = s.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("key=seg.log chunk=2"), "{e}");
        assert_eq!(ctx.metrics.get(Metric::CorruptObjects), 1);
        // Truncated object.
        mem.overwrite_raw("seg.log", Bytes::from(data[..2000].to_vec()));
        ctx.cache.invalidate("seg.log");
        let mut s = SegmentStream::new(ctx.clone(), m, 1500, 3000);
        let e = read_all(&mut s, 100).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    #[tokio::test]
    async fn failed_loads_are_retried_not_cached() {
        let data: Vec<u8> = (0..2048).map(|i| i as u8).collect();
        let mem = Arc::new(MemoryStore::new());
        mem.put("seg.log", Bytes::from(data.clone()), PutOptions::default()).await.unwrap();
        let faulty = Arc::new(FaultyStore::new(mem));
        faulty.set_outage(true);
        let metrics = Arc::new(Metrics::default());
        let ctx = ReadContext {
            store: faulty.clone(),
            cache: Arc::new(ChunkCache::new(1 << 20, metrics.clone())),
            metrics,
            read_ahead_chunks: 0,
        };
        let m = manifest(&data, 1024);
        let mut s = SegmentStream::new(ctx.clone(), m.clone(), 0, 2048);
        let e = read_all(&mut s, 100).await.unwrap_err();
        assert_eq!(e.class(), crate::error::ErrorClass::Retriable, "{e}");
        faulty.set_outage(false);
        let mut s = SegmentStream::new(ctx, m, 0, 2048);
        assert_eq!(read_all(&mut s, 100).await.unwrap(), data);
    }

    #[tokio::test]
    async fn cache_stays_within_capacity_under_many_chunks() {
        let (_mem, ctx, m, data) = setup(64 * 1024, 1024, 8 * 1024).await;
        for start in (0..64 * 1024u64).step_by(3000) {
            let mut s = SegmentStream::new(ctx.clone(), m.clone(), start, 64 * 1024);
            let mut buf = vec![0u8; 2000];
            let n = s.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &data[start as usize..start as usize + n]);
            assert!(ctx.cache.bytes() <= 8 * 1024);
        }
    }
}
