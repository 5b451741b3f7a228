//! `fasttier-bench`: the native half of the benchmarks in `tests/bench` (driven by `tests/bench/bench.py`,
//! described in `docs/benchmarks.md`).
//!
//! Every subcommand builds its object store exactly as the plugin does (`Config::from_map` over the
//! `rsm.config.*` settings given with `--set`, then `engine::open_store`, on the shared runtime), so the
//! raw PUT/GET baselines use the same S3 client, the same runtime and the same request sizes as the
//! engine they are compared with. Each run prints one JSON object on the last line of stdout.
//!
//! Subcommands:
//! * `mkfile`      — a stand-in segment (pseudo-random bytes) and index files next to it;
//! * `copy`        — segment copy through the engine vs raw multipart PUT of the same bytes;
//! * `mem-copy`    — peak RSS added by copying one file through the engine (run in a fresh process);
//! * `mem-streams` — RSS added per open stream after reading one chunk from each of N streams;
//! * `get`         — reading a topic's `.log` objects: raw ranged GETs (plugin pattern or highly
//!   parallel) or through the engine's segment streams;
//! * `delay-relay` — a TCP relay in front of an object store that delays every HTTP request by a time
//!   that depends on its method (a distant or slower store's time to first byte for a broker, see
//!   `delay_relay.rs`); prints its address, then its request counts every 10 s, and runs until killed.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use fasttier_core::config::Config;
use fasttier_core::engine::{open_store, Engine};
use fasttier_core::error::{Error, Result};
use fasttier_core::format::keys::{parse_segment_file_name, segments_root, SegmentRef};
use fasttier_core::format::manifest::IndexKind;
use fasttier_core::metrics::{Metric, Metrics};
use fasttier_core::runtime::{shared, RuntimeLease};
use fasttier_core::slow::CopyRequest;
use fasttier_core::store::faulty::{FaultyStore, Op};
use fasttier_core::store::{CompletedPart, ObjectStore, PutOptions};
use fasttier_core::upload::read_at;
use serde_json::{json, Value};
use tokio::task::JoinSet;

mod delay_relay;

const MIB: u64 = 1 << 20;
/// Bytes per `stream_read` in mode engine: what the JNI bridge copies from a chunk into the Java array at a
/// time (`STREAM_COPY_SLICE` in native/jni; one copy, like `stream_read` into this buffer).
const READ_CALL_BYTES: usize = 1 << 20;

#[derive(Parser)]
#[command(name = "fasttier-bench", about = "fasttier benchmarks (native part); see docs/benchmarks.md")]
struct Cli {
    /// Plugin setting KEY=VALUE without the rsm.config. prefix (repeatable), as a broker would pass it.
    #[arg(long = "set", global = true)]
    set: Vec<String>,
    /// Add this delay before every ranged GET (a model of a distant object store's time to first byte;
    /// loopback MinIO answers in well under a millisecond).
    #[arg(long, global = true, default_value_t = 0)]
    get_latency_ms: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GetMode {
    /// Raw ranged GETs of chunk.bytes, in order, 1 + read.ahead.chunks in flight per stream (the
    /// plugin's pattern for one reader; no prefetch across objects, like the plugin).
    Seq,
    /// Raw ranged GETs of chunk.bytes with `--parallel` in flight over all objects (server ceiling).
    Par,
    /// Through the engine: SegmentStream reads of 1 MiB (as the JNI bridge does), a new stream every
    /// `--fetch-bytes` (the broker opens one per fetch) or one per segment (0).
    Engine,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes FILE (MIB MiB of pseudo-random bytes) and FILE's .index/.timeindex/.snapshot next to it.
    Mkfile {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        mib: u64,
    },
    /// Copies FILE as a segment through the engine and uploads it raw (same part size and concurrency),
    /// alternating, REPS times each. Objects are deleted after each run.
    Copy {
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 2)]
        reps: u32,
    },
    /// Copies FILE through the engine once and reports the peak RSS it added (run in a fresh process).
    MemCopy {
        #[arg(long)]
        file: PathBuf,
        /// Keep the copied segment (topic `--topic`) for mem-streams.
        #[arg(long)]
        keep: bool,
        #[arg(long, default_value = "bench-mem")]
        topic: String,
        #[arg(long, default_value = "QmVuY2hNZW1Ub3BpY0lkMQ")]
        topic_id: String,
    },
    /// Opens N streams at distinct chunks of the topic's segments, reads one chunk from each, and reports
    /// the RSS added per stream.
    MemStreams {
        #[arg(long, default_value = "bench-mem")]
        topic: String,
        #[arg(long, default_value = "QmVuY2hNZW1Ub3BpY0lkMQ")]
        topic_id: String,
        #[arg(long, value_delimiter = ',', default_value = "16,40")]
        n: Vec<usize>,
    },
    /// Reads every copied `.log` object of a topic (partitions one after another, or all at once).
    Get {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        topic_id: String,
        #[arg(long, value_enum)]
        mode: GetMode,
        /// Read the partitions concurrently (one stream each) instead of one after another.
        #[arg(long)]
        concurrent_partitions: bool,
        /// GETs in flight (mode par).
        #[arg(long, default_value_t = 16)]
        parallel: usize,
        /// Mode engine: bytes read per stream before it is closed and a new one opened where it ended.
        #[arg(long, default_value_t = 0)]
        fetch_bytes: u64,
        /// Stop after this many bytes per partition (0 = everything).
        #[arg(long, default_value_t = 0)]
        limit_bytes: u64,
    },
    /// Listens on LISTEN (port 0: any) and relays every connection to TARGET, holding each HTTP request
    /// a client sends for the delay of its method (DELAY_MS unless --method-delay names it) before passing
    /// it on. Prints {"listen": "host:port", ...}, then {"stats": ...} every 10 s when it changed, and runs
    /// until killed.
    DelayRelay {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        target: std::net::SocketAddr,
        /// Delay of every request whose method has no --method-delay (and of bytes that are not HTTP/1.1).
        #[arg(long)]
        delay_ms: u64,
        /// METHOD=MS: the delay of requests with this method (repeatable), e.g. --method-delay PUT=30.
        #[arg(long = "method-delay", value_parser = delay_relay::Delays::parse_method)]
        method_delay: Vec<(String, Duration)>,
        /// Most bytes held in one connection's delay line.
        #[arg(long, default_value_t = 64)]
        max_buffered_mib: usize,
    },
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("fasttier-bench: {e}");
    std::process::exit(1)
}

struct Ctx {
    config: Config,
    runtime: Arc<RuntimeLease>,
    store: Arc<dyn ObjectStore>,
}

impl Ctx {
    fn new(set: &[String], get_latency_ms: u64) -> Ctx {
        let mut map = BTreeMap::new();
        for kv in set {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| fail(format!("--set {kv}: expected KEY=VALUE")));
            map.insert(k.trim().trim_start_matches("rsm.config.").to_string(), v.trim().to_string());
        }
        let config = Config::from_map(&map).unwrap_or_else(|e| fail(e));
        let runtime = shared(config.worker_threads, config.max_blocking_threads).unwrap_or_else(|e| fail(e));
        let mut store = runtime.handle().block_on(open_store(&config)).unwrap_or_else(|e| fail(e));
        if get_latency_ms > 0 {
            let faulty = FaultyStore::new(store);
            faulty.set_latency(Op::GetRange, Duration::from_millis(get_latency_ms));
            store = Arc::new(faulty);
        }
        Ctx { config, runtime, store }
    }

    /// A fresh engine (own chunk cache, own metrics) over the shared store and runtime.
    fn engine(&self) -> Engine {
        Engine::with_store(self.config.clone(), self.store.clone(), self.runtime.clone())
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.handle().block_on(f)
    }
}

// ---------------------------------------------------------------------------------------------- helpers

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

/// (VmRSS, VmHWM) of this process in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux >= 4.0: `echo 5 > /proc/self/clear_refs`).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Samples VmRSS every 5 ms in a thread; `stop()` returns the maximum seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(rss_kib().0));
        let (s, m) = (stop.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(rss_kib().0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssSampler { stop, max, thread: Some(thread) }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

fn random_id(seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seed ^ SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
    (0..22)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // first character a letter, like most Kafka ids (any of the alphabet is valid)
            ALPHABET[(x % if i == 0 { 52 } else { 64 }) as usize] as char
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn sibling(file: &Path, ext: &str) -> PathBuf {
    file.with_extension(ext)
}

fn metrics_json(m: &Metrics) -> Value {
    let mut o = serde_json::Map::new();
    for (i, metric) in Metric::ALL.iter().enumerate() {
        let name = metric.descriptor().split('|').next().unwrap_or("?").to_string();
        o.insert(name, json!(m.snapshot()[i]));
    }
    Value::Object(o)
}

fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------- mkfile

fn mkfile(file: &Path, mib: u64) {
    let write = |path: &Path, len: u64, seed: u64| {
        let mut f = std::io::BufWriter::with_capacity(
            8 * MIB as usize,
            std::fs::File::create(path).unwrap_or_else(|e| fail(format!("{}: {e}", path.display()))),
        );
        let mut x = seed | 1;
        let mut buf = vec![0u8; MIB as usize];
        let mut left = len;
        while left > 0 {
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            let n = left.min(MIB) as usize;
            f.write_all(&buf[..n]).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
            left -= n as u64;
        }
        f.flush().unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
    };
    write(file, mib * MIB, 0x9e37_79b9_7f4a_7c15);
    // Index sizes of a real segment with the default index.interval.bytes (4096): 8 bytes per offset
    // entry, 12 per time entry.
    write(&sibling(file, "index"), mib * MIB / 4096 * 8, 3);
    write(&sibling(file, "timeindex"), mib * MIB / 4096 * 12, 5);
    write(&sibling(file, "snapshot"), 1024, 7);
    emit(json!({"bench": "mkfile", "file": file.display().to_string(), "bytes": mib * MIB}));
}

fn copy_request(file: &Path, topic: &str, topic_id: &str, partition: i32, start_offset: i64, seed: u64) -> CopyRequest {
    let size = std::fs::metadata(file).unwrap_or_else(|e| fail(format!("{}: {e}", file.display()))).len();
    let segment_id = random_id(seed);
    CopyRequest {
        segment: SegmentRef::new(topic, topic_id, partition, start_offset, &segment_id).unwrap_or_else(|e| fail(e)),
        end_offset: start_offset + (size / 1024) as i64,
        max_timestamp_ms: now_ms(),
        broker_id: 0,
        segment_size: size,
        leader_epochs: vec![(0, start_offset)],
        log: file.to_path_buf(),
        offset_index: sibling(file, "index"),
        time_index: sibling(file, "timeindex"),
        transaction_index: None,
        producer_snapshot: sibling(file, "snapshot"),
        leader_epoch_checkpoint: Bytes::from(format!("0\n1\n0 {start_offset}\n")),
    }
}

/// One segment copy through the engine, the way the JNI bridge runs it (copy_start + copy_wait).
fn engine_copy(engine: &Engine, req: CopyRequest) -> Result<f64> {
    let t = Instant::now();
    let mut op = engine.copy_start(req);
    loop {
        if let Some(r) = engine.copy_wait(&mut op, Duration::from_millis(100)) {
            r?;
            return Ok(t.elapsed().as_secs_f64());
        }
    }
}

/// The baseline: the same bytes uploaded by the same client with the same request sizes and the same
/// number of requests in flight, without CRC-32C, indexes or manifest.
async fn raw_put(c: &Ctx, key: &str, file: &Path, size: u64) -> Result<()> {
    let store = &c.store;
    if size <= c.config.multipart_threshold_bytes {
        let body = read_at(file, 0, size as usize).await?;
        return store.put(key, body, PutOptions::default()).await;
    }
    let upload_id = store.create_multipart(key).await?;
    let mut set: JoinSet<Result<CompletedPart>> = JoinSet::new();
    let mut parts = Vec::new();
    let (mut offset, mut n) = (0u64, 0i32);
    let join = |r: Option<std::result::Result<Result<CompletedPart>, tokio::task::JoinError>>| match r {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Error::Internal(format!("part task: {e}"))),
        None => Err(Error::Internal("no part in flight".into())),
    };
    while offset < size {
        while set.len() >= c.config.upload_concurrency.max(1) {
            parts.push(join(set.join_next().await)?);
        }
        let len = (size - offset).min(c.config.part_bytes) as usize;
        let body = read_at(file, offset, len).await?;
        n += 1;
        let (store, key, id, pn) = (store.clone(), key.to_string(), upload_id.clone(), n);
        set.spawn(async move { store.put_part(&key, &id, pn, body).await });
        offset += len as u64;
    }
    while !set.is_empty() {
        parts.push(join(set.join_next().await)?);
    }
    parts.sort_by_key(|p| p.part_number);
    store.complete_multipart(key, &upload_id, parts, PutOptions::default()).await
}

fn copy_bench(c: &Ctx, file: &Path, reps: u32) {
    let size = std::fs::metadata(file).unwrap_or_else(|e| fail(format!("{}: {e}", file.display()))).len();
    let engine = c.engine();
    // Warm-up (connections, credentials, runtime threads): one small object each way.
    c.block_on(c.store.put("bench-warmup/x", Bytes::from(vec![1u8; 1 << 16]), PutOptions::default()))
        .unwrap_or_else(|e| fail(e));
    let mut engine_s = Vec::new();
    let mut raw_s = Vec::new();
    for rep in 0..reps {
        for which in if rep % 2 == 0 { ["engine", "raw"] } else { ["raw", "engine"] } {
            if which == "engine" {
                let req =
                    copy_request(file, "bench-copy", "QmVuY2hDb3B5VG9waWNJZA", 0, rep as i64 * 1_000_000, rep as u64);
                let seg = req.segment.clone();
                let secs = engine_copy(&engine, req).unwrap_or_else(|e| fail(e));
                engine.delete_segment(&seg).unwrap_or_else(|e| fail(e));
                engine_s.push(secs);
            } else {
                let key = format!("{}bench-raw/{rep}.log", c.config.prefix);
                let t = Instant::now();
                c.block_on(raw_put(c, &key, file, size)).unwrap_or_else(|e| fail(e));
                raw_s.push(t.elapsed().as_secs_f64());
                c.block_on(c.store.delete(&key)).unwrap_or_else(|e| fail(e));
            }
        }
    }
    let _ = c.block_on(c.store.delete("bench-warmup/x"));
    let mbps = |v: &[f64]| v.iter().map(|s| mb_per_s(size, *s)).collect::<Vec<_>>();
    emit(json!({
        "bench": "copy",
        "bytes": size,
        "part_bytes": c.config.part_bytes,
        "upload_concurrency": c.config.upload_concurrency,
        "chunk_bytes": c.config.chunk_bytes,
        "engine_secs": engine_s,
        "raw_put_secs": raw_s,
        "engine_mbps": mbps(&engine_s),
        "raw_put_mbps": mbps(&raw_s),
        "metrics": metrics_json(engine.metrics()),
    }));
}

// ---------------------------------------------------------------------------------------------- memory

fn mem_copy(c: &Ctx, file: &Path, keep: bool, topic: &str, topic_id: &str) {
    let engine = c.engine();
    // Warm-up without big buffers (they would stay in the allocator and hide the copy's own needs): a
    // tiny PUT/GET/DELETE creates the client's connection pool; a tiny file read starts a blocking thread.
    c.block_on(async {
        c.store.put("bench-warmup/m", Bytes::from_static(b"x"), PutOptions::default()).await?;
        c.store.get("bench-warmup/m").await?;
        c.store.delete("bench-warmup/m").await?;
        read_at(&sibling(file, "snapshot"), 0, 16).await.map(|_| ())
    })
    .unwrap_or_else(|e| fail(e));
    std::thread::sleep(Duration::from_millis(300));
    let hwm_reset = reset_hwm();
    let (rss0, hwm0) = rss_kib();
    let sampler = RssSampler::start();
    let req = copy_request(file, topic, topic_id, 0, 0, 11);
    let seg = req.segment.clone();
    let secs = engine_copy(&engine, req).unwrap_or_else(|e| fail(e));
    let sampled_max = sampler.stop();
    let (rss1, hwm1) = rss_kib();
    if !keep {
        engine.delete_segment(&seg).unwrap_or_else(|e| fail(e));
    }
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let peak = hwm1.max(sampled_max);
    let cfg = &c.config;
    emit(json!({
        "bench": "mem-copy",
        "bytes": size,
        "secs": secs,
        "mbps": mb_per_s(size, secs),
        "hwm_reset": hwm_reset,
        "rss_before_kib": rss0,
        "hwm_before_kib": hwm0,
        "rss_after_kib": rss1,
        "hwm_after_kib": hwm1,
        "sampled_max_kib": sampled_max,
        "peak_delta_mib": (peak.saturating_sub(rss0)) as f64 / 1024.0,
        "bound_mib": ((cfg.upload_concurrency as u64 + 1) * cfg.part_bytes) as f64 / MIB as f64,
        "part_bytes": cfg.part_bytes,
        "upload_concurrency": cfg.upload_concurrency,
        "segment": {"topic": seg.topic, "topic_id": seg.topic_id, "partition": seg.partition,
                    "start_offset": seg.start_offset, "segment_id": seg.segment_id},
    }));
}

/// Every complete segment (one with a manifest) of a topic: (ref, .log key, size), by partition and offset.
fn list_segments(c: &Ctx, topic: &str, topic_id: &str) -> Vec<(SegmentRef, String, u64)> {
    let dir = format!("{}{topic}-{topic_id}/", segments_root(&c.config.prefix));
    let objects = c.block_on(c.store.list(&dir)).unwrap_or_else(|e| fail(e));
    let manifests: std::collections::HashSet<String> =
        objects.iter().filter_map(|o| o.key.strip_suffix(".manifest").map(str::to_string)).collect();
    let mut out = Vec::new();
    for o in &objects {
        let Some(stem) = o.key.strip_suffix(".log") else { continue };
        if !manifests.contains(stem) {
            continue;
        }
        let rest = &o.key[dir.len()..];
        let Some((part, name)) = rest.split_once('/') else { continue };
        let (Ok(partition), Some((start, segment_id, _))) = (part.parse::<i32>(), parse_segment_file_name(name)) else {
            continue;
        };
        let seg = SegmentRef::new(topic, topic_id, partition, start, segment_id).unwrap_or_else(|e| fail(e));
        out.push((seg, o.key.clone(), o.size));
    }
    out.sort_by_key(|(s, _, _)| (s.partition, s.start_offset));
    if out.is_empty() {
        fail(format!("no complete segments under {dir}"));
    }
    out
}

fn mem_streams(c: &Ctx, topic: &str, topic_id: &str, ns: &[usize]) {
    let segs = list_segments(c, topic, topic_id);
    let chunk = c.config.chunk_bytes;
    // Distinct chunks, spaced so that one stream's read-ahead never lands on another stream's chunk.
    let spacing = 2 + c.config.read_ahead_chunks as u64;
    let mut slots = Vec::new();
    for (i, (_, _, size)) in segs.iter().enumerate() {
        let chunks = size.div_ceil(chunk);
        for k in (0..chunks.saturating_sub(c.config.read_ahead_chunks as u64)).step_by(spacing as usize) {
            slots.push((i, k));
        }
    }
    let mut results = Vec::new();
    for &n in ns {
        if n == 0 || n > slots.len() {
            fail(format!("n={n}: only {} distinct chunk positions in the segments", slots.len()));
        }
        // A fresh engine per N: an empty cache.
        let engine = c.engine();
        for (s, _, _) in &segs {
            c.block_on(engine.slow().manifest(s)).unwrap_or_else(|e| fail(e));
        }
        engine.fetch_index(&segs[0].0, IndexKind::Offset).unwrap_or_else(|e| fail(e));
        let mut buf = vec![1u8; chunk as usize]; // touched: resident before the baseline
        std::thread::sleep(Duration::from_millis(300));
        let (rss0, _) = rss_kib();
        let mut streams = Vec::with_capacity(n);
        let step = slots.len() as f64 / n as f64;
        for j in 0..n {
            let (si, k) = slots[(j as f64 * step) as usize];
            let mut s = engine.open_stream(&segs[si].0, k * chunk, None).unwrap_or_else(|e| fail(e));
            let mut got = 0usize;
            while got < chunk as usize {
                let r = engine.stream_read(&mut s, &mut buf[got..]).unwrap_or_else(|e| fail(e));
                if r == 0 {
                    break;
                }
                got += r;
            }
            streams.push(s);
        }
        // Let the read-ahead GETs finish.
        let mut last = -1;
        let mut stable = 0;
        while stable < 3 {
            std::thread::sleep(Duration::from_millis(200));
            let now = engine.metrics().get(Metric::StoreGetBytes);
            stable = if now == last { stable + 1 } else { 0 };
            last = now;
        }
        let (rss1, _) = rss_kib();
        let cache = engine.metrics().get(Metric::CacheBytes) as u64;
        drop(streams);
        std::thread::sleep(Duration::from_millis(200));
        let (rss2, _) = rss_kib();
        let per_stream = (rss1.saturating_sub(rss0)) as f64 * 1024.0 / n as f64;
        results.push(json!({
            "n": n,
            "rss_before_kib": rss0,
            "rss_open_kib": rss1,
            "rss_closed_kib": rss2,
            "cache_bytes": cache,
            "per_stream_mib": per_stream / MIB as f64,
            "per_stream_chunks": per_stream / chunk as f64,
            "gets": engine.metrics().get(Metric::StoreGets),
        }));
    }
    emit(json!({
        "bench": "mem-streams",
        "chunk_bytes": chunk,
        "read_ahead_chunks": c.config.read_ahead_chunks,
        "cache_capacity": c.config.cache_bytes,
        "segments": segs.len(),
        "runs": results,
    }));
}

// ---------------------------------------------------------------------------------------------- reads

/// Raw: one object, chunk-sized ranged GETs in order, `window` in flight.
async fn read_object_windowed(
    store: Arc<dyn ObjectStore>,
    key: String,
    size: u64,
    chunk: u64,
    window: usize,
) -> Result<u64> {
    let chunks = size.div_ceil(chunk);
    let mut q = VecDeque::new();
    let mut next = 0u64;
    let mut total = 0u64;
    let spawn = |i: u64| {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move { store.get_range(&key, i * chunk..((i + 1) * chunk).min(size)).await })
    };
    while next < chunks && q.len() < window {
        q.push_back(spawn(next));
        next += 1;
    }
    while let Some(h) = q.pop_front() {
        let b = h.await.map_err(|e| Error::Internal(format!("get task: {e}")))??;
        total += b.len() as u64;
        drop(b);
        if next < chunks {
            q.push_back(spawn(next));
            next += 1;
        }
    }
    Ok(total)
}

fn limit(objs: &[(SegmentRef, String, u64)], limit_bytes: u64) -> Vec<(SegmentRef, String, u64)> {
    if limit_bytes == 0 {
        return objs.to_vec();
    }
    let mut out = Vec::new();
    let mut total = 0;
    for o in objs {
        if total >= limit_bytes {
            break;
        }
        total += o.2;
        out.push(o.clone());
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn get_bench(
    c: &Ctx,
    topic: &str,
    topic_id: &str,
    mode: GetMode,
    concurrent: bool,
    parallel: usize,
    fetch_bytes: u64,
    limit_bytes: u64,
    get_latency_ms: u64,
) {
    let all = list_segments(c, topic, topic_id);
    let mut by_partition: BTreeMap<i32, Vec<(SegmentRef, String, u64)>> = BTreeMap::new();
    for o in all {
        by_partition.entry(o.0.partition).or_default().push(o);
    }
    let groups: Vec<Vec<(SegmentRef, String, u64)>> = by_partition.values().map(|v| limit(v, limit_bytes)).collect();
    let chunk = c.config.chunk_bytes;
    let window = 1 + c.config.read_ahead_chunks as usize;
    let engine = c.engine(); // fresh cache
    let objects: usize = groups.iter().map(|g| g.len()).sum();
    let t = Instant::now();
    let bytes: u64 = match mode {
        GetMode::Seq => {
            let read_group = |g: Vec<(SegmentRef, String, u64)>| {
                let store = c.store.clone();
                async move {
                    let mut n = 0;
                    for (_, key, size) in g {
                        n += read_object_windowed(store.clone(), key, size, chunk, window).await?;
                    }
                    Ok::<u64, Error>(n)
                }
            };
            c.block_on(async {
                if concurrent {
                    let mut set = JoinSet::new();
                    for g in groups.clone() {
                        set.spawn(read_group(g));
                    }
                    let mut n = 0;
                    while let Some(r) = set.join_next().await {
                        n += r.map_err(|e| Error::Internal(e.to_string()))??;
                    }
                    Ok::<u64, Error>(n)
                } else {
                    let mut n = 0;
                    for g in groups.clone() {
                        n += read_group(g).await?;
                    }
                    Ok(n)
                }
            })
            .unwrap_or_else(|e| fail(e))
        }
        GetMode::Par => c
            .block_on(async {
                let mut ranges = Vec::new();
                for g in &groups {
                    for (_, key, size) in g {
                        for i in 0..size.div_ceil(chunk) {
                            ranges.push((key.clone(), i * chunk..((i + 1) * chunk).min(*size)));
                        }
                    }
                }
                let mut set = JoinSet::new();
                let mut n = 0u64;
                for (key, range) in ranges {
                    while set.len() >= parallel.max(1) {
                        let b: Bytes = set.join_next().await.unwrap().map_err(|e| Error::Internal(e.to_string()))??;
                        n += b.len() as u64;
                    }
                    let store = c.store.clone();
                    set.spawn(async move { store.get_range(&key, range).await });
                }
                while let Some(r) = set.join_next().await {
                    n += r.map_err(|e| Error::Internal(e.to_string()))??.len() as u64;
                }
                Ok::<u64, Error>(n)
            })
            .unwrap_or_else(|e| fail(e)),
        GetMode::Engine => {
            let read_group = |g: &Vec<(SegmentRef, String, u64)>| -> Result<u64> {
                let mut buf = vec![0u8; READ_CALL_BYTES];
                let mut n = 0u64;
                for (seg, _, size) in g {
                    let mut pos = 0u64;
                    while pos < *size {
                        let mut s = engine.open_stream(seg, pos, None)?;
                        let mut in_stream = 0u64;
                        loop {
                            let want = if fetch_bytes == 0 {
                                buf.len()
                            } else {
                                (fetch_bytes - in_stream).min(buf.len() as u64) as usize
                            };
                            if want == 0 {
                                break;
                            }
                            let r = engine.stream_read(&mut s, &mut buf[..want])?;
                            if r == 0 {
                                break;
                            }
                            in_stream += r as u64;
                        }
                        if in_stream == 0 {
                            break;
                        }
                        pos += in_stream;
                        n += in_stream;
                    }
                }
                Ok(n)
            };
            if concurrent {
                std::thread::scope(|sc| {
                    let hs: Vec<_> = groups.iter().map(|g| sc.spawn(|| read_group(g))).collect();
                    hs.into_iter().map(|h| h.join().unwrap().unwrap_or_else(|e| fail(e))).sum()
                })
            } else {
                groups.iter().map(|g| read_group(g).unwrap_or_else(|e| fail(e))).sum()
            }
        }
    };
    let secs = t.elapsed().as_secs_f64();
    emit(json!({
        "bench": "get",
        "mode": match mode { GetMode::Seq => "seq", GetMode::Par => "par", GetMode::Engine => "engine" },
        "concurrent_partitions": concurrent,
        "partitions": groups.len(),
        "objects": objects,
        "bytes": bytes,
        "secs": secs,
        "mbps": mb_per_s(bytes, secs),
        "chunk_bytes": chunk,
        "window": window,
        "parallel": parallel,
        "fetch_bytes": fetch_bytes,
        "get_latency_ms": get_latency_ms,
        "metrics": if mode == GetMode::Engine { metrics_json(engine.metrics()) } else { Value::Null },
    }));
}

fn main() {
    let cli = Cli::parse();
    let ctx = || Ctx::new(&cli.set, cli.get_latency_ms);
    match &cli.cmd {
        Cmd::Mkfile { file, mib } => mkfile(file, *mib),
        Cmd::Copy { file, reps } => copy_bench(&ctx(), file, *reps),
        Cmd::MemCopy { file, keep, topic, topic_id } => mem_copy(&ctx(), file, *keep, topic, topic_id),
        Cmd::MemStreams { topic, topic_id, n } => mem_streams(&ctx(), topic, topic_id, n),
        Cmd::Get { topic, topic_id, mode, concurrent_partitions, parallel, fetch_bytes, limit_bytes } => get_bench(
            &ctx(),
            topic,
            topic_id,
            *mode,
            *concurrent_partitions,
            *parallel,
            *fetch_bytes,
            *limit_bytes,
            cli.get_latency_ms,
        ),
        Cmd::DelayRelay { listen, target, delay_ms, method_delay, max_buffered_mib } => {
            let delays =
                delay_relay::Delays { default: Duration::from_millis(*delay_ms), by_method: method_delay.clone() };
            run_delay_relay(*listen, *target, delays, *max_buffered_mib)
        }
    }
}

fn run_delay_relay(
    listen: std::net::SocketAddr,
    target: std::net::SocketAddr,
    delays: delay_relay::Delays,
    max_mib: usize,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("delay-relay: tokio runtime: {e}")));
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| fail(format!("delay-relay: cannot listen on {listen}: {e}")));
        let addr = listener.local_addr().unwrap_or_else(|e| fail(format!("delay-relay: {e}")));
        println!("{}", json!({"listen": addr.to_string(), "target": target.to_string(), "delays": delays.describe()}));
        let _ = std::io::stdout().flush();
        let stats = Arc::new(delay_relay::Stats::default());
        let spec = delay_relay::RelaySpec {
            target,
            delays: Arc::new(delays),
            max_buffered: max_mib.saturating_mul(MIB as usize),
            stats: stats.clone(),
        };
        tokio::spawn(async move {
            let mut last = Value::Null;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let now = stats.snapshot();
                if now != last {
                    println!("{}", json!({"stats": now}));
                    let _ = std::io::stdout().flush();
                    last = now;
                }
            }
        });
        if let Err(e) = delay_relay::serve(listener, spec).await {
            fail(format!("delay-relay: accepting on {addr}: {e}"));
        }
    })
}
