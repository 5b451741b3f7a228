//! The read path: verified chunks, the shared chunk cache and lazy segment streams.
//!
//! A segment's `.log` object is read in chunks of the manifest's `chunk_bytes`; every chunk is fetched
//! with one ranged GET and checked against its CRC-32C from the manifest before anyone sees a byte of it.
//! Verified chunks live in a [`ChunkCache`] bounded by `cache.bytes` (least recently used out first)
//! shared by all streams, so the consecutive fetches a consumer makes (each a new stream at a new
//! position) do not download the same chunk twice. A [`SegmentStream`] holds at most one chunk of its
//! own and asks the cache to prefetch `read.ahead.chunks` chunks ahead of it. The read-ahead is started
//! *before* the stream waits for the chunk it needs, so its GETs run together with that one.
//!
//! Whoever loads a chunk — a reader or a read-ahead task — verifies it, and a corrupt chunk is logged at
//! WARN with its object key where it is found. A failed load is never cached: a reader that needs the
//! chunk loads it itself, so the error it returns is its own and names the key too.

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
            Err(_) if inner.slots.get(&key).is_some_and(|s| Arc::ptr_eq(&s.cell, &cell) && s.cell.get().is_none()) => {
                inner.slots.remove(&key);
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
            return Err(self.corrupt(
                &log.key,
                format!("chunk={index} range={start}..{end} expected_len={} actual_len={}", end - start, data.len()),
            ));
        }
        let actual = crc32c(&data);
        if actual != expected {
            return Err(self.corrupt(
                &log.key,
                format!("chunk={index} range={start}..{end} crc32c expected={expected:08x} actual={actual:08x}"),
            ));
        }
        Ok(data)
    }

    /// A corrupt chunk: counted and logged here, where it is found, whether a reader or a read-ahead task
    /// loaded it (read-ahead failures are otherwise quiet).
    fn corrupt(&self, key: &str, detail: String) -> Error {
        self.metrics.inc(Metric::CorruptObjects);
        let e = Error::corrupt(key, detail);
        tracing::warn!("{e} (the chunk failed verification; none of it is served)");
        e
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
                    // Corruption was logged at WARN by load_chunk; a reader that needs the chunk loads
                    // it again and gets (and reports) the error itself.
                    tracing::debug!("read-ahead failed: {e}");
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
        self.peek().len()
    }

    /// Makes the chunk holding the current position available: returns `false` at the end of the stream,
    /// otherwise [`SegmentStream::peek`] is non-empty afterwards. Starts the read-ahead of the chunks after
    /// it before waiting for it, so their GETs overlap.
    pub async fn fill(&mut self) -> Result<bool> {
        if self.pos >= self.end {
            return Ok(false);
        }
        let chunk_bytes = self.manifest.log.chunk_bytes;
        let index = self.pos / chunk_bytes;
        if self.current.as_ref().map(|(i, _)| *i) != Some(index) {
            self.current = None;
            let last_needed = (self.end - 1) / chunk_bytes;
            let ahead_to = (index + 1 + self.ctx.read_ahead_chunks as u64).min(last_needed + 1);
            self.ctx.prefetch(&self.manifest, &self.key, index + 1, ahead_to);
            let data = match self.ctx.chunk(&self.manifest, &self.key, index).await {
                Ok(d) => d,
                Err(e) => {
                    self.ctx.metrics.inc(Metric::FetchErrors);
                    return Err(e);
                }
            };
            self.current = Some((index, data));
        }
        Ok(true)
    }

    /// The verified bytes from the current position to the end of the loaded chunk (or of the stream);
    /// empty unless [`SegmentStream::fill`] returned `true` since the last [`SegmentStream::consume`] that
    /// reached the end of a chunk.
    pub fn peek(&self) -> &[u8] {
        match &self.current {
            Some((index, data)) if self.pos < self.end => {
                let chunk_start = index * self.manifest.log.chunk_bytes;
                let Some(from) = self.pos.checked_sub(chunk_start).filter(|&o| o < data.len() as u64) else {
                    return &[];
                };
                let to = (data.len() as u64).min(self.end - chunk_start);
                &data[from as usize..to as usize]
            }
            _ => &[],
        }
    }

    /// Moves the position `n` bytes on; `n` must not exceed `peek().len()`.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.peek().len(), "consume({n}) beyond the {} bytes available", self.peek().len());
        self.pos += n as u64;
        self.ctx.metrics.add(Metric::FetchBytes, n as i64);
    }

    /// Reads up to `buf.len()` bytes; 0 means end of stream (or an empty `buf`).
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() || !self.fill().await? {
            return Ok(0);
        }
        let src = self.peek();
        let n = buf.len().min(src.len());
        buf[..n].copy_from_slice(&src[..n]);
        self.consume(n);
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

    /// WARN (and higher) records emitted on this thread while installed.
    #[derive(Default, Clone)]
    struct Warnings(Arc<Mutex<Vec<String>>>);

    struct Message(String);

    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0.push_str(&format!("{value:?}"));
            }
        }
    }

    impl tracing::Subscriber for Warnings {
        fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
            *meta.level() <= tracing::Level::WARN
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    fn faulty_ctx(data: &[u8], read_ahead_chunks: u32) -> (Arc<FaultyStore<MemoryStore>>, ReadContext) {
        let mem = Arc::new(MemoryStore::new());
        mem.overwrite_raw("seg.log", Bytes::from(data.to_vec()));
        let faulty = Arc::new(FaultyStore::new(mem));
        let metrics = Arc::new(Metrics::default());
        let ctx = ReadContext {
            store: faulty.clone(),
            cache: Arc::new(ChunkCache::new(1 << 20, metrics.clone())),
            metrics,
            read_ahead_chunks,
        };
        (faulty, ctx)
    }

    #[tokio::test(start_paused = true)]
    async fn read_ahead_gets_are_in_flight_with_the_chunk_awaited() {
        use crate::store::faulty::Op;
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let (faulty, ctx) = faulty_ctx(&data, 2);
        faulty.set_latency(Op::GetRange, std::time::Duration::from_millis(20));
        let m = manifest(&data, 1024);
        let mut s = SegmentStream::new(ctx.clone(), m, 0, 4096);
        let mut buf = vec![0u8; 10];
        assert_eq!(s.read(&mut buf).await.unwrap(), 10);
        // chunks 1 and 2 were requested while chunk 0 was on its way, not after it arrived
        assert_eq!(faulty.calls(Op::GetRange), 3);
        assert_eq!(read_all(&mut s, 1000).await.unwrap(), &data[10..]);
        assert_eq!(faulty.calls(Op::GetRange), 4);
        assert_eq!(ctx.metrics.get(Metric::CacheMisses), 4);
    }

    #[tokio::test]
    async fn corrupt_chunk_found_by_read_ahead_is_logged_and_the_reader_gets_the_key() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let (faulty, ctx) = faulty_ctx(&data, 3);
        let mut bad = data.clone();
        bad[2100] ^= 0x40; // chunk 2
        faulty.inner().overwrite_raw("seg.log", Bytes::from(bad));
        let m = manifest(&data, 1024);
        let warnings = Warnings::default();
        let _guard = tracing::subscriber::set_default(warnings.clone());
        let mut s = SegmentStream::new(ctx.clone(), m.clone(), 0, 4096);
        let mut buf = vec![0u8; 1024];
        assert_eq!(s.read(&mut buf).await.unwrap(), 1024);
        assert_eq!(&buf[..], &data[..1024]);
        // let the read-ahead of chunks 1..3 finish: chunk 2's load fails there first
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(ctx.metrics.get(Metric::CorruptObjects), 1);
        let logged = warnings.0.lock().unwrap().clone();
        assert!(logged.iter().any(|l| l.contains("corrupt object: key=seg.log chunk=2")), "{logged:?}");
        assert!(!ctx.cache.contains(&(Arc::from("seg.log"), 2)), "a failed load must not stay cached");
        assert_eq!(s.read(&mut buf).await.unwrap(), 1024);
        assert_eq!(&buf[..], &data[1024..2048]);
        // the reader loads chunk 2 itself: its error names the key, and nothing of the chunk is returned
        let e = s.read(&mut buf).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("key=seg.log chunk=2"), "{e}");
        assert_eq!(s.position(), 2048);
        assert_eq!(s.peek(), &[] as &[u8]);
        assert_eq!(ctx.metrics.get(Metric::CorruptObjects), 2);
        assert_eq!(warnings.0.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn fill_peek_consume_walk_the_stream_chunk_by_chunk() {
        let (_mem, ctx, m, data) = setup(2500, 1024, 1 << 20).await;
        let mut s = SegmentStream::new(ctx.clone(), m, 1000, 2100);
        assert_eq!(s.peek(), &[] as &[u8]);
        assert_eq!(s.available(), 0);
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        while s.fill().await.unwrap() {
            let n = s.peek().len();
            assert!(n > 0);
            assert_eq!(s.available(), n);
            sizes.push(n);
            out.extend_from_slice(s.peek());
            s.consume(n);
        }
        assert_eq!(sizes, vec![24, 1024, 52]);
        assert_eq!(out, &data[1000..2100]);
        assert_eq!(ctx.metrics.get(Metric::FetchBytes), 1100);
        assert!(!s.fill().await.unwrap());
    }
}
