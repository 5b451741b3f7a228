//! The engine: one per `RemoteStorageManager` instance. It owns the object store, the slow tier and the
//! metrics, holds a lease on the shared runtime, and offers blocking entry points for callers that are
//! plain (non-tokio) threads, such as Kafka's plugin threads arriving through JNI.
//!
//! Blocking entry points must never be called from a runtime worker thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::catchup::FastReplication;
use crate::config::{Backend, Config};
use crate::error::{Error, Result};
use crate::fast::{Coverage, FastTier};
use crate::format::keys::SegmentRef;
use crate::format::manifest::IndexKind;
use crate::metrics::Metrics;
use crate::read::SegmentStream;
use crate::runtime::{shared, Cancel, RuntimeLease};
use crate::slow::{CopyRequest, SlowTier, SlowTierSettings};
use crate::store::memory::MemoryStore;
use crate::store::s3::S3Store;
use crate::store::ObjectStore;
use crate::upload::UploadSettings;

/// How long a cancelled copy may take to clean up before the caller stops waiting.
const CANCEL_CLEANUP_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Engine {
    config: Config,
    slow: Arc<SlowTier>,
    metrics: Arc<Metrics>,
    /// What the slow tier holds per partition, as far as this engine's copies tell (fed to the fast tier's
    /// cleanup).
    coverage: Arc<Coverage>,
    /// The fast tier, when `wal.enable` is set.
    fast: Option<Arc<FastTier>>,
    /// Replication through the fast tier, when `replication.fast.enable` is set.
    catchup: Option<FastReplication>,
    // Dropped last (field order): tasks above may still reference the runtime while it shuts down.
    runtime: Arc<RuntimeLease>,
}

/// A copy running on the runtime.
#[derive(Debug)]
pub struct CopyOp {
    task: JoinHandle<Result<()>>,
    cancel: Cancel,
    segment: SegmentRef,
}

/// Connects to the configured store and checks that the bucket is usable.
pub async fn open_store(config: &Config) -> Result<Arc<dyn ObjectStore>> {
    Ok(match config.backend {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::S3 => {
            let store = S3Store::new(config.s3.clone()).await?;
            store.check_bucket().await?;
            Arc::new(store)
        }
    })
}

/// The fast tier's store: the slow tier's own store when the settings are the same (one client, one
/// bucket), otherwise a client of its own whose bucket is checked too.
pub async fn open_wal_store(config: &Config, slow: &Arc<dyn ObjectStore>) -> Result<Arc<dyn ObjectStore>> {
    if config.backend == Backend::Memory || config.wal.s3 == config.s3 {
        return Ok(slow.clone());
    }
    let store = S3Store::new(config.wal.s3.clone()).await?;
    store.check_bucket().await?;
    Ok(Arc::new(store))
}

impl Engine {
    /// Validates the configuration, starts (or joins) the runtime, connects to the store and checks that
    /// the bucket is usable.
    pub fn open(map: &BTreeMap<String, String>) -> Result<Engine> {
        let config = Config::from_map(map)?;
        let runtime = shared(config.worker_threads, config.max_blocking_threads)?;
        let store = runtime.handle().block_on(open_store(&config))?;
        let wal_store = if config.wal.enabled || config.replication.enabled {
            Some(runtime.handle().block_on(open_wal_store(&config, &store))?)
        } else {
            None
        };
        let metrics = Arc::new(Metrics::default());
        let catchup = match &wal_store {
            Some(ws) if config.replication.enabled => Some(runtime.handle().block_on(FastReplication::start(
                config.replication.clone(),
                config.broker_id,
                ws.clone(),
                &config.wal,
                metrics.clone(),
                config.s3.connect_timeout,
            ))?),
            _ => None,
        };
        let mut engine = Self::build(config, store, wal_store, runtime, metrics);
        engine.catchup = catchup;
        Ok(engine)
    }

    /// An engine over a given store (tests, benchmarks).
    pub fn with_store(config: Config, store: Arc<dyn ObjectStore>, runtime: Arc<RuntimeLease>) -> Engine {
        Self::with_stores(config, store, None, runtime)
    }

    /// An engine over given stores; the fast tier runs when `wal_store` is given and `wal.enable` is set.
    pub fn with_stores(
        config: Config,
        store: Arc<dyn ObjectStore>,
        wal_store: Option<Arc<dyn ObjectStore>>,
        runtime: Arc<RuntimeLease>,
    ) -> Engine {
        Self::build(config, store, wal_store, runtime, Arc::new(Metrics::default()))
    }

    fn build(
        config: Config,
        store: Arc<dyn ObjectStore>,
        wal_store: Option<Arc<dyn ObjectStore>>,
        runtime: Arc<RuntimeLease>,
        metrics: Arc<Metrics>,
    ) -> Engine {
        let settings = SlowTierSettings {
            prefix: config.prefix.clone(),
            upload: UploadSettings {
                chunk_bytes: config.chunk_bytes,
                part_bytes: config.part_bytes,
                multipart_threshold_bytes: config.multipart_threshold_bytes,
                concurrency: config.upload_concurrency,
            },
            cache_bytes: config.cache_bytes,
            read_ahead_chunks: config.read_ahead_chunks,
        };
        let coverage = Arc::new(Coverage::default());
        let fast = match wal_store {
            Some(ws) if config.wal.enabled => Some(Arc::new(FastTier::new(
                config.wal.clone(),
                config.broker_id,
                ws,
                store.clone(),
                config.prefix.clone(),
                metrics.clone(),
                coverage.clone(),
                runtime.handle().clone(),
            ))),
            _ => None,
        };
        let slow = Arc::new(SlowTier::new(store, settings, metrics.clone()));
        Engine { config, slow, metrics, coverage, fast, catchup: None, runtime }
    }

    /// The fast tier, if enabled.
    pub fn fast(&self) -> Option<&Arc<FastTier>> {
        self.fast.as_ref()
    }

    /// Replication through the fast tier, if enabled.
    pub fn catchup(&self) -> Option<&FastReplication> {
        self.catchup.as_ref()
    }

    /// Stops the fast tier's uploader (bounded wait) and the replication proxy. Idempotent; also done when
    /// the engine is dropped.
    pub fn close(&self) {
        if let Some(f) = &self.fast {
            f.close();
        }
        if let Some(c) = &self.catchup {
            c.close();
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn slow(&self) -> &Arc<SlowTier> {
        &self.slow
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Starts a segment copy in the background.
    pub fn copy_start(&self, req: CopyRequest) -> CopyOp {
        let cancel = Cancel::new();
        let (slow, c, segment) = (self.slow.clone(), cancel.clone(), req.segment.clone());
        let coverage = self.coverage.clone();
        let task = self.runtime().spawn(async move {
            let m = slow.copy_segment(req, &c).await?;
            coverage.record_manifest(&m);
            Ok(())
        });
        CopyOp { task, cancel, segment }
    }

    /// Waits up to `timeout` for `op`. `None` while it is still running.
    pub fn copy_wait(&self, op: &mut CopyOp, timeout: Duration) -> Option<Result<()>> {
        if op.task.is_finished() {
            return Some(join_result(self.runtime().block_on(&mut op.task)));
        }
        let handle = self.runtime().clone();
        handle.block_on(async {
            match tokio::time::timeout(timeout, &mut op.task).await {
                Ok(r) => Some(join_result(r)),
                Err(_) => None,
            }
        })
    }

    /// Cancels `op` and waits (bounded) for its clean-up. Whatever the copy wrote is removed, also when it
    /// had already completed before the cancellation arrived: Kafka does not clean up after a copy it
    /// cancelled itself (leadership change), so a cancelled copy must leave nothing behind.
    pub fn copy_cancel(&self, mut op: CopyOp) {
        op.cancel.cancel();
        let handle = self.runtime().clone();
        let outcome = handle.block_on(async { tokio::time::timeout(CANCEL_CLEANUP_WAIT, &mut op.task).await });
        match outcome {
            Ok(Ok(Ok(()))) => {
                if let Err(e) = handle.block_on(self.slow.delete_segment(&op.segment)) {
                    tracing::warn!("removing a copy that completed as it was cancelled failed: {e}");
                }
            }
            Ok(_) => {} // failed or cancelled: copy_segment already removed what it wrote
            Err(_) => {
                op.task.abort();
                tracing::warn!(
                    "cancelled copy did not finish its clean-up within {CANCEL_CLEANUP_WAIT:?}; aborted: topic={} partition={} segment_id={}",
                    op.segment.topic,
                    op.segment.partition,
                    op.segment.segment_id
                );
            }
        }
    }

    pub fn open_stream(&self, seg: &SegmentRef, start: u64, end_inclusive: Option<u64>) -> Result<SegmentStream> {
        self.runtime().block_on(self.slow.open_stream(seg, start, end_inclusive))
    }

    pub fn stream_read(&self, stream: &mut SegmentStream, buf: &mut [u8]) -> Result<usize> {
        self.runtime().block_on(stream.read(buf))
    }

    pub fn fetch_index(&self, seg: &SegmentRef, kind: IndexKind) -> Result<bytes::Bytes> {
        self.runtime().block_on(self.slow.fetch_index(seg, kind))
    }

    pub fn delete_segment(&self, seg: &SegmentRef) -> Result<()> {
        self.runtime().block_on(self.slow.delete_segment(seg))
    }
}

fn join_result(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(Error::Internal(format!("copy task panicked: {e}"))),
        Err(e) => Err(Error::Internal(format!("copy task ended: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn memory_engine_copies_and_cancels() {
        let engine = Engine::open(&map(&[("storage.backend", "memory"), ("chunk.bytes", "65536")])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let log: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        std::fs::write(p("0.log"), &log).unwrap();
        for n in ["0.index", "0.timeindex", "0.snapshot"] {
            std::fs::write(p(n), b"x").unwrap();
        }
        let seg = SegmentRef::new("t", "AAAAAAAAAAAAAAAAAAAAAQ", 0, 0, "AAAAAAAAAAAAAAAAAAAAAg").unwrap();
        let req = CopyRequest {
            segment: seg.clone(),
            end_offset: 10,
            max_timestamp_ms: 0,
            broker_id: 0,
            segment_size: log.len() as u64,
            leader_epochs: vec![(0, 0)],
            log: p("0.log"),
            offset_index: p("0.index"),
            time_index: p("0.timeindex"),
            transaction_index: None,
            producer_snapshot: p("0.snapshot"),
            leader_epoch_checkpoint: bytes::Bytes::new(),
        };
        let mut op = engine.copy_start(req.clone());
        let r = loop {
            if let Some(r) = engine.copy_wait(&mut op, Duration::from_millis(50)) {
                break r;
            }
        };
        r.unwrap();
        let mut s = engine.open_stream(&seg, 150_000, None).unwrap();
        let mut buf = vec![0u8; 100_000];
        let mut got = Vec::new();
        loop {
            let n = engine.stream_read(&mut s, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, &log[150_000..]);
        // Cancelling a copy (finished or not) leaves no object of it behind.
        let mut req2 = req;
        req2.segment = SegmentRef::new("t", "AAAAAAAAAAAAAAAAAAAAAQ", 0, 0, "AAAAAAAAAAAAAAAAAAAAAw").unwrap();
        let op = engine.copy_start(req2.clone());
        while !op.task.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        engine.copy_cancel(op);
        let left = engine.runtime().block_on(engine.slow().store().list(&req2.segment.partition_prefix(""))).unwrap();
        assert!(left.iter().all(|o| !o.key.contains("AAAAAAAAAAAAAAAAAAAAAw")), "{left:?}");
    }

    #[test]
    fn bad_config_is_reported_before_anything_starts() {
        let e = Engine::open(&map(&[("s3.region", "x")])).unwrap_err();
        assert!(e.to_string().contains("rsm.config.s3.bucket"), "{e}");
    }
}
