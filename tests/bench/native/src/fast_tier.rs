//! `fasttier-bench-fast`: what the fast tier's uploader costs a broker that leads many partitions, without
//! a broker (driven by `tests/bench/fast_tier.py`, described in `docs/benchmarks.md`, "Fast tier").
//!
//! One process, in this order:
//! 1. writes `--partitions` partition directories in Kafka's layout
//!    (`<dir>/fbench-<p>/00000000000000000000.log`, a few valid record batches each);
//! 2. baseline: the shared runtime and the object store open, no fast tier: process CPU over
//!    `--measure-secs`;
//! 3. starts [`FastTier`] (as the engine does, on the same runtime and store) leading every partition, waits
//!    until everything is uploaded, lets it settle, then measures process CPU and store requests over
//!    `--measure-secs` of idle tailing;
//! 4. active: a thread appends one batch every `1 / --trickle-batches-per-sec` s, round-robin over the
//!    partitions; process CPU minus the appender thread's own CPU, store requests, objects and upload lag
//!    over `--measure-secs`.
//!
//! CPU is utime + stime of `/proc/self/stat` (every thread of the process, exited ones included; 10 ms
//! ticks, so ±0.1 % of a core over 10 s). The store is the one `--set` describes (`storage.backend=memory`
//! by default; `storage.backend=s3` with `s3.*` for MinIO or S3), wrapped in a counting [`FaultyStore`] that
//! injects nothing. Prints readable lines, then one JSON object on the last line of stdout.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use fasttier_core::config::Config;
use fasttier_core::engine::{open_store, open_wal_store};
use fasttier_core::fast::{Coverage, FastTier, PartitionInfo};
use fasttier_core::format::batch::testing::BatchSpec;
use fasttier_core::metrics::{Metric, Metrics, WAL_LAG_BUCKETS};
use fasttier_core::runtime::shared;
use fasttier_core::store::faulty::{FaultyStore, Op};
use fasttier_core::store::ObjectStore;
use serde_json::{json, Value};

const TOPIC: &str = "fbench";
/// base64url of "BenchFastTierId1".
const TOPIC_ID: &str = "QmVuY2hGYXN0VGllcklkMQ";
const BROKER_ID: i32 = 1;
/// Linux reports /proc CPU times in USER_HZ ticks, 100 per second on every architecture Kafka runs on.
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Parser)]
#[command(name = "fasttier-bench-fast", about = "fast tier uploader CPU, no broker; see docs/benchmarks.md")]
struct Cli {
    /// Plugin setting KEY=VALUE without the rsm.config. prefix (repeatable), as a broker would pass it.
    #[arg(long = "set")]
    set: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    partitions: i32,
    /// Batches written to each partition before the fast tier starts.
    #[arg(long, default_value_t = 10)]
    initial_batches: i64,
    /// Records per batch (initial and trickle).
    #[arg(long, default_value_t = 10)]
    records: i32,
    /// Value bytes per record.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Length of each measured window (baseline, idle, active).
    #[arg(long, default_value_t = 10.0)]
    measure_secs: f64,
    /// Active case: batches appended per second over all partitions (0 skips the active case).
    #[arg(long, default_value_t = 100.0)]
    trickle_batches_per_sec: f64,
    /// Parent of the temporary log directory (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("fasttier-bench-fast: {e}");
    std::process::exit(1)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// (utime, stime) of a /proc `stat` file, in seconds.
fn cpu_secs(stat_path: &str) -> (f64, f64) {
    let s = fs::read_to_string(stat_path).unwrap_or_else(|e| fail(format!("reading {stat_path}: {e}")));
    // Fields after the command name (which may hold spaces) start at field 3 (state); utime is field 14.
    let rest = &s[s.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) as f64;
    (tick(11) / TICKS_PER_SEC, tick(12) / TICKS_PER_SEC)
}

fn process_cpu() -> (f64, f64) {
    cpu_secs("/proc/self/stat")
}

fn thread_cpu() -> (f64, f64) {
    cpu_secs("/proc/thread-self/stat")
}

fn proc_status(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// One partition's log: its directory and the next offset to write.
struct Log {
    path: PathBuf,
    next: i64,
}

impl Log {
    /// Appends `n` batches of `records` records (`value_bytes` each), timestamped now; returns the bytes.
    fn append(&mut self, n: i64, records: i32, value: &[u8]) -> usize {
        let mut out = Vec::new();
        let now = now_ms();
        for _ in 0..n {
            let values = vec![value; records as usize];
            out.extend(BatchSpec::new(self.next, records).epoch(1).timestamps(now, now).values(&values).build());
            self.next += records as i64;
        }
        let seg = self.path.join(format!("{:020}.log", 0));
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&seg)
            .unwrap_or_else(|e| fail(format!("{}: {e}", seg.display())));
        f.write_all(&out).unwrap_or_else(|e| fail(format!("{}: {e}", seg.display())));
        out.len()
    }
}

/// Request counts of the counting store, per operation.
fn calls(store: &FaultyStore) -> BTreeMap<&'static str, u64> {
    Op::ALL.iter().map(|&op| (op.name(), store.calls(op))).collect()
}

fn calls_delta(a: &BTreeMap<&'static str, u64>, b: &BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, u64> {
    b.iter().map(|(k, v)| (*k, v - a.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

/// What a measured window saw.
struct Window {
    secs: f64,
    cpu_secs: f64,
    sys_secs: f64,
    calls: BTreeMap<&'static str, u64>,
    metrics: Vec<i64>,
}

impl Window {
    fn metric(&self, m: Metric) -> i64 {
        self.metrics[m as usize]
    }

    fn core_pct(&self) -> f64 {
        100.0 * self.cpu_secs / self.secs
    }

    fn json(&self) -> Value {
        json!({
            "secs": round(self.secs, 2),
            "cpu_secs": round(self.cpu_secs, 3),
            "sys_secs": round(self.sys_secs, 3),
            "core_pct": round(self.core_pct(), 2),
            "store_requests": self.calls,
            "store_requests_per_sec": round(self.calls.values().sum::<u64>() as f64 / self.secs, 2),
        })
    }
}

/// Measures process CPU, store calls and metric deltas over `secs`; `extra_cpu` (called at both ends)
/// is subtracted (the appender thread's own CPU).
fn measure(secs: f64, store: &FaultyStore, metrics: &Metrics, extra_cpu: impl Fn() -> (f64, f64)) -> Window {
    let (c0, m0, x0, t0) = (calls(store), metrics.snapshot(), extra_cpu(), Instant::now());
    let cpu0 = process_cpu();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let cpu1 = process_cpu();
    let (c1, m1, x1, elapsed) = (calls(store), metrics.snapshot(), extra_cpu(), t0.elapsed());
    let counters: Vec<i64> = m1.iter().zip(&m0).map(|(b, a)| b - a).collect();
    Window {
        secs: elapsed.as_secs_f64(),
        cpu_secs: ((cpu1.0 + cpu1.1 - cpu0.0 - cpu0.1) - (x1.0 + x1.1 - x0.0 - x0.1)).max(0.0),
        sys_secs: ((cpu1.1 - cpu0.1) - (x1.1 - x0.1)).max(0.0),
        calls: calls_delta(&c0, &c1),
        metrics: counters,
    }
}

fn uploaded_all(fast: &FastTier, logs: &[Log]) -> bool {
    let st = fast.status();
    let up = &st["uploaded"];
    logs.iter().enumerate().all(|(p, l)| up[format!("{TOPIC_ID}-{p}")].as_i64() == Some(l.next - 1))
}

fn wait_uploaded(fast: &FastTier, logs: &[Log], what: &str) -> Duration {
    let t0 = Instant::now();
    while !uploaded_all(fast, logs) {
        if t0.elapsed() > Duration::from_secs(300) {
            fail(format!("{what}: not everything uploaded within 300 s; status {}", fast.status()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// Lag figures from the histogram counters of a window (deltas) and the gauges (recent batches).
fn lag_json(w: &Window, metrics: &Metrics) -> Value {
    let count = w.metric(Metric::WalLagCount);
    let mut le = serde_json::Map::new();
    for &(bound, m) in WAL_LAG_BUCKETS {
        let frac = if count > 0 { w.metric(m) as f64 / count as f64 } else { f64::NAN };
        le.insert(format!("le_{bound}ms"), json!(round(frac, 4)));
    }
    // The smallest bucket bound that holds at least this fraction of the window's batches.
    let bound = |q: f64| {
        WAL_LAG_BUCKETS.iter().find(|&&(_, m)| count > 0 && w.metric(m) as f64 >= q * count as f64).map(|&(b, _)| b)
    };
    json!({
        "batches": count,
        "p50_le_ms": bound(0.50),
        "p99_le_ms": bound(0.99),
        "mean_ms": if count > 0 { round(w.metric(Metric::WalLagSumMs) as f64 / count as f64, 1) } else { f64::NAN },
        "fraction": le,
        "gauge_p50_ms": metrics.get(Metric::WalLagP50Ms),
        "gauge_p99_ms": metrics.get(Metric::WalLagP99Ms),
        "gauge_max_ms": metrics.get(Metric::WalLagMaxMs),
    })
}

fn main() {
    let cli = Cli::parse();
    let mut map = BTreeMap::new();
    map.insert("storage.backend".to_string(), "memory".to_string());
    for kv in &cli.set {
        let (k, v) = kv.split_once('=').unwrap_or_else(|| fail(format!("--set {kv}: expected KEY=VALUE")));
        map.insert(k.trim().trim_start_matches("rsm.config.").to_string(), v.trim().to_string());
    }
    let config = Config::from_map(&map).unwrap_or_else(|e| fail(e));
    let interval_ms = config.wal.upload_interval.as_millis() as u64;

    // 1. Partition directories.
    let parent = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = parent.join(format!("fasttier-fbench-{}", std::process::id()));
    let log_dir = root.join("data");
    let value = vec![b'v'; cli.value_bytes];
    let t0 = Instant::now();
    let mut logs: Vec<Log> = (0..cli.partitions)
        .map(|p| {
            let path = log_dir.join(format!("{TOPIC}-{p}"));
            fs::create_dir_all(&path).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
            Log { path, next: 0 }
        })
        .collect();
    let mut initial_bytes = 0;
    for l in &mut logs {
        initial_bytes += l.append(cli.initial_batches, cli.records, &value);
    }
    println!(
        "setup: {} partitions in {} ({} batches x {} records x {} B each, {:.1} MB) in {:.1} s",
        cli.partitions,
        log_dir.display(),
        cli.initial_batches,
        cli.records,
        cli.value_bytes,
        initial_bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );

    // Runtime and store, as the engine opens them.
    let runtime = shared(config.worker_threads, config.max_blocking_threads).unwrap_or_else(|e| fail(e));
    let slow: Arc<dyn ObjectStore> = runtime.handle().block_on(open_store(&config)).unwrap_or_else(|e| fail(e));
    let wal = runtime.handle().block_on(open_wal_store(&config, &slow)).unwrap_or_else(|e| fail(e));
    let counting = Arc::new(FaultyStore::new(wal));
    let metrics = Arc::new(Metrics::default());

    // 2. Baseline: no fast tier.
    std::thread::sleep(Duration::from_secs(1));
    let base = measure(cli.measure_secs, &counting, &metrics, || (0.0, 0.0));
    println!("baseline (runtime + store, no fast tier): {:.2} % of one core over {:.1} s", base.core_pct(), base.secs);

    // 3. The fast tier leading every partition.
    let cpu_start = process_cpu();
    let fast = FastTier::new(
        config.wal.clone(),
        BROKER_ID,
        counting.clone(),
        slow.clone(),
        config.prefix.clone(),
        metrics.clone(),
        Arc::new(Coverage::default()),
        runtime.handle().clone(),
    );
    fast.set_log_dirs(vec![log_dir.clone()]);
    let parts: Vec<PartitionInfo> = (0..cli.partitions)
        .map(|p| PartitionInfo { topic: TOPIC.into(), topic_id: TOPIC_ID.into(), partition: p })
        .collect();
    fast.leadership(parts, vec![]).unwrap_or_else(|e| fail(e));
    let took = wait_uploaded(&fast, &logs, "initial upload");
    let cpu_end = process_cpu();
    let startup_cpu = cpu_end.0 + cpu_end.1 - cpu_start.0 - cpu_start.1;
    println!(
        "initial upload: {:.1} MB of {} partitions in {:.2} s ({} objects, {} PUT attempts), {:.2} CPU s",
        metrics.get(Metric::WalRecordBytes) as f64 / 1e6,
        cli.partitions,
        took.as_secs_f64(),
        metrics.get(Metric::WalObjects),
        metrics.get(Metric::WalPutRequests),
        startup_cpu
    );
    // Let the head update and anything else the first objects caused finish.
    std::thread::sleep(Duration::from_secs(2));
    let idle = measure(cli.measure_secs, &counting, &metrics, || (0.0, 0.0));
    let status = fast.status();
    println!(
        "idle, {} partitions tailed (wal.upload.interval.ms={interval_ms}): {:.2} % of one core \
         (baseline {:.2} %, so {:+.2} points), {:.2} store requests/s {:?}, {} objects",
        status["partitions"],
        idle.core_pct(),
        base.core_pct(),
        idle.core_pct() - base.core_pct(),
        idle.calls.values().sum::<u64>() as f64 / idle.secs,
        idle.calls,
        idle.metric(Metric::WalObjects)
    );

    // 4. Active: a trickle of appends.
    let mut active_json = Value::Null;
    if cli.trickle_batches_per_sec > 0.0 {
        let stop = Arc::new(AtomicBool::new(false));
        let appender_cpu = Arc::new(std::sync::Mutex::new((0.0f64, 0.0f64)));
        let rate = cli.trickle_batches_per_sec;
        let records = cli.records;
        let value2 = value.clone();
        let stop2 = stop.clone();
        let cpu2 = appender_cpu.clone();
        let mut logs_moved = std::mem::take(&mut logs);
        let appender = std::thread::spawn(move || {
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut next = Instant::now();
            let mut i = 0usize;
            let mut bytes = 0usize;
            let mut batches = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let n = logs_moved.len();
                bytes += logs_moved[i % n].append(1, records, &value2);
                batches += 1;
                i += 1;
                *cpu2.lock().unwrap() = thread_cpu();
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
            (logs_moved, bytes, batches)
        });
        std::thread::sleep(Duration::from_secs(3));
        let active = measure(cli.measure_secs, &counting, &metrics, || *appender_cpu.lock().unwrap());
        let lag = lag_json(&active, &metrics);
        stop.store(true, Ordering::Relaxed);
        let (moved_back, bytes, batches) = appender.join().unwrap_or_else(|_| fail("appender panicked"));
        logs = moved_back;
        wait_uploaded(&fast, &logs, "trickle upload");
        let objs = active.metric(Metric::WalObjects);
        let puts = active.metric(Metric::WalPutRequests);
        let rec_bytes = active.metric(Metric::WalRecordBytes);
        println!(
            "active, {rate} batches/s round-robin ({:.1} kB/s of log): {:.2} % of one core without the appender \
             (idle {:.2} %), {:.2} WAL objects/s, {:.2} PUT attempts/s, {:.0} B/object, {:.2} store requests/s {:?}",
            rec_bytes as f64 / active.secs / 1e3,
            active.core_pct(),
            idle.core_pct(),
            objs as f64 / active.secs,
            puts as f64 / active.secs,
            if objs > 0 { active.metric(Metric::WalBytes) as f64 / objs as f64 } else { 0.0 },
            active.calls.values().sum::<u64>() as f64 / active.secs,
            active.calls,
        );
        println!(
            "active, upload lag (batch timestamp to object durable), histogram over the window: p50 <= {} ms, \
             p99 <= {} ms, mean {} ms; gauges (last 4096 batches, may include the initial backlog): \
             p50 {} ms, p99 {} ms",
            lag["p50_le_ms"], lag["p99_le_ms"], lag["mean_ms"], lag["gauge_p50_ms"], lag["gauge_p99_ms"]
        );
        active_json = json!({
            "trickle_batches_per_sec": rate,
            "appended_batches": batches,
            "appended_bytes": bytes,
            "window": active.json(),
            "wal_objects_per_sec": round(objs as f64 / active.secs, 2),
            "wal_put_requests_per_sec": round(puts as f64 / active.secs, 2),
            "wal_bytes_per_object": if objs > 0 { active.metric(Metric::WalBytes) / objs } else { 0 },
            "wal_record_bytes_per_sec": round(rec_bytes as f64 / active.secs, 0),
            "lag": lag,
        });
    }

    let final_status = fast.status();
    fast.close();
    drop(fast);
    let threads = proc_status("Threads:");
    let rss_kib = proc_status("VmRSS:");
    if let Err(e) = fs::remove_dir_all(&root) {
        eprintln!("fasttier-bench-fast: could not remove {}: {e}", root.display());
    }
    let out = json!({
        "partitions": cli.partitions,
        "backend": map.get("storage.backend"),
        "upload_interval_ms": interval_ms,
        "initial": {
            "bytes": initial_bytes,
            "secs": round(took.as_secs_f64(), 3),
            "cpu_secs": round(startup_cpu, 2),
        },
        "baseline": base.json(),
        "idle": idle.json(),
        "idle_minus_baseline_core_pct": round(idle.core_pct() - base.core_pct(), 2),
        "active": active_json,
        "status": {
            "state": final_status["state"],
            "retained_objects": final_status["retained_objects"],
            "retained_bytes": final_status["retained_bytes"],
            "problems": final_status["problems"],
            "last_error": final_status["last_error"],
        },
        "threads": threads,
        "rss_kib": rss_kib,
    });
    println!("{out}");
}
