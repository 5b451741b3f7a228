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

/// How long [`Engine::shutdown`] waits, in all, for the copies it cancels to clean up and for the fast
/// tier's uploader to stop: `close()` returns within this (plus the runtime's own bounded shutdown, see
/// `runtime.rs`) whatever the store does. What is left then is abandoned (docs/operations.md).
pub const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// How long the start-up check of a bucket may take before the store counts as not answering.
const STARTUP_CHECK_WAIT: Duration = Duration::from_secs(10);
/// How often a store that did not answer at start-up is checked again (only to log what it says).
const STARTUP_RECHECK_EVERY: Duration = Duration::from_secs(15);

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
    /// Cancelled by [`Engine::interrupt`] / [`Engine::close`]: every blocking entry point then returns
    /// `Cancelled` at once instead of waiting for the store.
    closing: Cancel,
    /// The new-object notification listener for followers, when `replication.fast.notify.port` is set.
    notify: std::sync::Mutex<Option<crate::catchup::notify::NotifyServer>>,
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

/// Connects to the configured store and checks that the bucket is usable (see [`check_at_startup`]).
pub async fn open_store(config: &Config) -> Result<Arc<dyn ObjectStore>> {
    Ok(match config.backend {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::S3 => {
            let store = Arc::new(S3Store::new(config.s3.clone()).await?);
            check_at_startup(&store, "rsm.config.s3").await?;
            store
        }
    })
}

/// The fast tier's store: the slow tier's own store when the settings are the same (one client, one
/// bucket), otherwise a client of its own whose bucket is checked too.
pub async fn open_wal_store(config: &Config, slow: &Arc<dyn ObjectStore>) -> Result<Arc<dyn ObjectStore>> {
    if config.backend == Backend::Memory || config.wal.s3 == config.s3 {
        return Ok(slow.clone());
    }
    let store = Arc::new(S3Store::new(config.wal.s3.clone()).await?);
    check_at_startup(&store, "rsm.config.wal.s3").await?;
    Ok(store)
}

/// What the start-up check of a bucket concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupCheck {
    /// The store answered: the bucket is usable.
    Usable,
    /// The store did not answer (refused, timed out, 5xx, throttled): not a configuration error. The
    /// broker starts like a stock one and serves its local data; the tiers resume when the store is back.
    NotAnswering(String),
}

/// Checks a bucket at start-up without ever blocking the broker on the store: a store that answers that
/// the configuration is wrong (no such bucket, wrong credentials, wrong region) is an error, as before; a
/// store that does not answer within [`STARTUP_CHECK_WAIT`] is logged and checked again in the background
/// until it answers (an error it then names is logged, since the broker is already up).
pub async fn check_at_startup(store: &Arc<S3Store>, settings: &'static str) -> Result<StartupCheck> {
    let first = tokio::time::timeout(STARTUP_CHECK_WAIT, store.check_bucket()).await;
    let why = match first {
        Ok(Ok(())) => return Ok(StartupCheck::Usable),
        Ok(Err(e)) if e.class() != crate::error::ErrorClass::Retriable => return Err(e),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {STARTUP_CHECK_WAIT:?}"),
    };
    tracing::warn!(
        "the object store does not answer ({settings}): {why}; starting without it: local data is served as \
         usual, copies to and reads from the tiers fail (and Kafka retries them) until it is back"
    );
    let store = store.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(STARTUP_RECHECK_EVERY).await;
            match tokio::time::timeout(STARTUP_CHECK_WAIT, store.check_bucket()).await {
                Ok(Ok(())) => {
                    tracing::info!("the object store answers again ({settings}): the tiers resume");
                    return;
                }
                Ok(Err(e)) if e.class() != crate::error::ErrorClass::Retriable => {
                    tracing::error!("the object store answers but the configuration is wrong ({settings}): {e}");
                    return;
                }
                _ => {}
            }
        }
    });
    Ok(StartupCheck::NotAnswering(why))
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
        engine.notify = std::sync::Mutex::new(engine.start_notify()?);
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
        Engine {
            config,
            slow,
            metrics,
            coverage,
            fast,
            catchup: None,
            closing: Cancel::new(),
            notify: Default::default(),
            runtime,
        }
    }

    /// The notification listener: on this broker's host from `replication.fast.brokers`, telling followers
    /// the fast tier's tip after every upload (`catchup/notify.rs`).
    fn start_notify(&self) -> Result<Option<crate::catchup::notify::NotifyServer>> {
        let r = &self.config.replication;
        let (Some(fast), Some(_)) = (&self.fast, &self.catchup) else { return Ok(None) };
        if r.notify_port == 0 {
            return Ok(None);
        }
        let Some(me) = r.brokers.iter().find(|b| b.id == self.config.broker_id) else {
            tracing::warn!(
                "fast replication: broker id={} is not in replication.fast.brokers; no notification listener \
                 (its followers poll its stream)",
                self.config.broker_id
            );
            return Ok(None);
        };
        let addr = format!("{}:{}", me.host, r.notify_port);
        let server =
            crate::catchup::notify::NotifyServer::start(&addr, self.config.broker_id, fast.tip(), self.metrics.clone());
        self.runtime.handle().block_on(server).map(Some)
    }

    /// The fast tier, if enabled.
    pub fn fast(&self) -> Option<&Arc<FastTier>> {
        self.fast.as_ref()
    }

    /// Replication through the fast tier, if enabled.
    pub fn catchup(&self) -> Option<&FastReplication> {
        self.catchup.as_ref()
    }

    /// Makes every blocking entry point return `Cancelled` at once, now and from now on; never blocks.
    /// The first step of closing: calls waiting for a slow or hanging store give up their threads.
    pub fn interrupt(&self) {
        self.closing.cancel();
    }

    /// [`Engine::shutdown`] without running copies.
    pub fn close(&self) {
        self.shutdown(Vec::new());
    }

    /// Closes the engine within [`CLOSE_WAIT`] whatever the store does: interrupts blocking calls, cancels
    /// `ops` (their clean-up of partial uploads gets what is left of the wait, all at once; what does not
    /// finish is abandoned and left to Kafka's own clean-up of unfinished copies), stops the fast tier's
    /// uploader (given the rest of the wait) and the replication proxy. Idempotent.
    pub fn shutdown(&self, ops: Vec<CopyOp>) {
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        self.interrupt();
        for op in &ops {
            op.cancel.cancel();
        }
        let slow = self.slow.clone();
        let pending = self.runtime().block_on(async move {
            let mut pending = 0usize;
            for mut op in ops {
                match tokio::time::timeout_at(deadline, &mut op.task).await {
                    // Completed just before the cancellation: remove it (Kafka does not, see copy_cancel).
                    Ok(Ok(Ok(()))) => match tokio::time::timeout_at(deadline, slow.delete_segment(&op.segment)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => pending += 1,
                    },
                    Ok(_) => {}
                    Err(_) => {
                        op.task.abort();
                        pending += 1;
                    }
                }
            }
            pending
        });
        if pending > 0 {
            tracing::warn!(
                "closing: {pending} cancelled copies could not clean up within {CLOSE_WAIT:?}; abandoned (Kafka \
                 deletes segments whose copy never finished)"
            );
        }
        if let Some(f) = &self.fast {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            close_within(f.clone(), left.max(Duration::from_millis(200)));
        }
        if let Some(c) = &self.catchup {
            c.close();
        }
        drop(self.notify.lock().unwrap_or_else(|e| e.into_inner()).take());
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

    /// Runs `fut` to completion on the runtime unless the engine is interrupted first.
    fn blocking<T>(
        &self,
        op: &'static str,
        seg: &SegmentRef,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if self.closing.is_cancelled() {
            return Err(Error::Cancelled { op, key: seg.segment_id.clone() });
        }
        self.runtime().block_on(self.closing.run(op, &seg.segment_id, fut))
    }

    pub fn open_stream(&self, seg: &SegmentRef, start: u64, end_inclusive: Option<u64>) -> Result<SegmentStream> {
        self.blocking("open_stream", seg, self.slow.open_stream(seg, start, end_inclusive))
    }

    pub fn stream_read(&self, stream: &mut SegmentStream, buf: &mut [u8]) -> Result<usize> {
        if self.closing.is_cancelled() {
            return Err(Error::Cancelled { op: "read", key: String::new() });
        }
        self.runtime().block_on(self.closing.run("read", "", stream.read(buf)))
    }

    pub fn fetch_index(&self, seg: &SegmentRef, kind: IndexKind) -> Result<bytes::Bytes> {
        self.blocking("fetch_index", seg, self.slow.fetch_index(seg, kind))
    }

    pub fn delete_segment(&self, seg: &SegmentRef) -> Result<()> {
        self.blocking("delete_segment", seg, self.slow.delete_segment(seg))
    }
}

/// Runs `FastTier::close` (which waits up to 15 s for its uploader) on a helper thread and waits for it at
/// most `wait`; past that the uploader is abandoned: its task ends when the runtime shuts down.
fn close_within(fast: Arc<FastTier>, wait: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("fasttier-close".into()).spawn(move || {
        // A panic stays on this thread (never reaches the JVM); the engine goes on closing.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fast.close()));
        let _ = tx.send(());
    });
    match spawned {
        Ok(_) => {
            if rx.recv_timeout(wait).is_err() {
                tracing::warn!("closing: the fast tier's uploader did not stop within {wait:?}; abandoned");
            }
        }
        Err(e) => tracing::warn!("closing: cannot start a thread to stop the fast tier ({e}); not waiting for it"),
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
        let log: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let seg = SegmentRef::new("t", "AAAAAAAAAAAAAAAAAAAAAQ", 0, 0, "AAAAAAAAAAAAAAAAAAAAAg").unwrap();
        let req = copy_request(dir.path(), seg.clone(), &log);
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

    fn copy_request(dir: &std::path::Path, seg: SegmentRef, log: &[u8]) -> CopyRequest {
        let p = |n: &str| dir.join(n);
        std::fs::write(p("0.log"), log).unwrap();
        for n in ["0.index", "0.timeindex", "0.snapshot"] {
            std::fs::write(p(n), b"x").unwrap();
        }
        CopyRequest {
            segment: seg,
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
        }
    }

    /// Closing while the store hangs: a reader blocked in the store gets `Cancelled` at once, a copy being
    /// uploaded is cancelled, and the whole close returns within CLOSE_WAIT (before: a cancelled copy alone
    /// waited up to 30 s for its clean-up, and blocked reads were not interrupted at all).
    #[test]
    fn close_is_bounded_while_the_store_hangs() {
        use crate::store::faulty::{FaultyStore, Target};
        let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let config = Config::from_map(&map(&[("storage.backend", "memory"), ("chunk.bytes", "65536")])).unwrap();
        let runtime = shared(2, 4).unwrap();
        let engine = Arc::new(Engine::with_store(config, store.clone(), runtime));
        let dir = tempfile::tempdir().unwrap();
        let seg = SegmentRef::new("t", "AAAAAAAAAAAAAAAAAAAAAQ", 0, 0, "AAAAAAAAAAAAAAAAAAAAAg").unwrap();
        store.set_latency(Target::All, Duration::from_secs(3600));
        let op = engine.copy_start(copy_request(dir.path(), seg.clone(), &[7u8; 100_000]));
        let e2 = engine.clone();
        let s2 = seg.clone();
        let reader = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            (e2.fetch_index(&s2, IndexKind::Offset), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300)); // both are waiting for the store now
        let t0 = std::time::Instant::now();
        engine.shutdown(vec![op]);
        let took = t0.elapsed();
        assert!(took <= CLOSE_WAIT + Duration::from_millis(500), "close took {took:?}");
        let (r, waited) = reader.join().unwrap();
        assert!(matches!(r, Err(Error::Cancelled { .. })), "{r:?}");
        assert!(waited < Duration::from_secs(2), "reader returned after {waited:?}");
        // Later calls fail at once.
        let t1 = std::time::Instant::now();
        assert!(matches!(engine.delete_segment(&seg), Err(Error::Cancelled { .. })));
        assert!(t1.elapsed() < Duration::from_millis(100));
    }

    /// A store that does not answer at start-up (nothing listens at the endpoint) is not a configuration
    /// error: the check returns within its bound and the engine opens.
    #[test]
    fn a_store_that_does_not_answer_does_not_fail_startup() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        }; // closed again: connections are refused
        let endpoint = format!("http://127.0.0.1:{port}");
        let m = map(&[
            ("s3.bucket", "fasttier-test"),
            ("s3.region", "us-east-1"),
            ("s3.endpoint", endpoint.as_str()),
            ("s3.path.style", "true"),
            ("s3.access.key.id", "k"),
            ("s3.secret.access.key", "s"),
        ]);
        let t = std::time::Instant::now();
        let engine = Engine::open(&m).expect("a store that does not answer must not fail start-up");
        assert!(t.elapsed() < STARTUP_CHECK_WAIT + Duration::from_secs(5), "took {:?}", t.elapsed());
        // Calls fail (retriable) until the store is back.
        let seg = SegmentRef::new("t", "AAAAAAAAAAAAAAAAAAAAAQ", 0, 0, "AAAAAAAAAAAAAAAAAAAAAg").unwrap();
        let e = engine.fetch_index(&seg, IndexKind::Offset).unwrap_err();
        assert_eq!(e.class(), crate::error::ErrorClass::Retriable, "{e}");
        engine.close();
    }
}
