//! The uploader against synthetic partition directories and the memory / fault-injecting stores.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;
use crate::format::batch::testing::BatchSpec;
use crate::metrics::Metric;
use crate::runtime::{shared, RuntimeLease};
use crate::store::faulty::FaultyStore;
use crate::store::memory::MemoryStore;
use crate::wal::{ReaderOptions, StartAt, WalReader};

const TOPIC_ID: &str = "AAAAAAAAAAAAAAAAAAAAAQ";

fn tp(p: i32) -> PartitionInfo {
    PartitionInfo { topic: "orders".into(), topic_id: TOPIC_ID.into(), partition: p }
}

fn wal_config(extra: &[(&str, &str)]) -> WalConfig {
    let mut pairs = vec![
        ("storage.backend", "memory"),
        ("wal.upload.interval.ms", "20"),
        ("wal.head.interval.ms", "50"),
        ("wal.cleanup.interval.ms", "50"),
        ("wal.safety.horizon.ms", "0"),
    ];
    pairs.extend_from_slice(extra);
    Config::from_pairs(&pairs).unwrap().wal
}

struct Bed {
    _tmp: tempfile::TempDir,
    log_dir: PathBuf,
    rt: Arc<RuntimeLease>,
    store: Arc<dyn ObjectStore>,
    metrics: Arc<Metrics>,
    coverage: Arc<Coverage>,
}

impl Bed {
    fn new(store: Arc<dyn ObjectStore>) -> Bed {
        let tmp = tempfile::tempdir().unwrap();
        let log_dir = tmp.path().to_path_buf();
        Bed {
            _tmp: tmp,
            log_dir,
            rt: shared(2, 4).unwrap(),
            store,
            metrics: Arc::new(Metrics::default()),
            coverage: Arc::new(Coverage::default()),
        }
    }

    fn dir(&self, p: i32) -> PathBuf {
        self.log_dir.join(format!("orders-{p}"))
    }

    fn fast(&self, cfg: WalConfig) -> FastTier {
        let f = FastTier::new(
            cfg,
            1,
            self.store.clone(),
            self.store.clone(),
            String::new(),
            self.metrics.clone(),
            self.coverage.clone(),
            self.rt.handle().clone(),
        );
        f.set_log_dirs(vec![self.log_dir.clone()]);
        f
    }

    /// Appends batches `(offset, records, epoch)` to segment `base` of partition `p`; returns the bytes.
    fn append(&self, p: i32, base: i64, batches: &[(i64, i32, i32)]) -> Vec<u8> {
        self.append_sized(p, base, batches, 0)
    }

    /// As [`Bed::append`], each record carrying `value_bytes` of payload.
    fn append_sized(&self, p: i32, base: i64, batches: &[(i64, i32, i32)], value_bytes: usize) -> Vec<u8> {
        fs::create_dir_all(self.dir(p)).unwrap();
        let mut out = Vec::new();
        for &(offset, n, epoch) in batches {
            let now = crate::fast::tests::now_ms();
            let mut spec = BatchSpec::new(offset, n).epoch(epoch).timestamps(now, now);
            if value_bytes > 0 {
                spec = spec.values(&vec![vec![b'v'; value_bytes]; n as usize]);
            }
            out.extend(spec.build());
        }
        let path = self.dir(p).join(format!("{base:020}.log"));
        OpenOptions::new().append(true).create(true).open(path).unwrap().write_all(&out).unwrap();
        out
    }

    /// Everything the stream holds for partition `p`, in stream order: (epoch, first, last, bytes).
    fn stream(&self, p: i32) -> Vec<(i32, i64, i64, Vec<u8>)> {
        let store = self.store.clone();
        self.rt.handle().block_on(async move {
            let mut r = WalReader::open(store, "", 1, StartAt::Oldest, ReaderOptions::default()).await.unwrap();
            let mut out = Vec::new();
            while let Some(obj) = r.next().await.unwrap() {
                let id = parse_topic_id(TOPIC_ID).unwrap();
                if let Some(data) = obj.range(&id, p).unwrap() {
                    for (e, bytes) in data.slices() {
                        out.push((e.leader_epoch, e.first_offset, e.last_offset, bytes.to_vec()));
                    }
                }
            }
            out
        })
    }

    fn stream_bytes(&self, p: i32) -> Vec<u8> {
        self.stream(p).into_iter().flat_map(|r| r.3).collect()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn uploaded_to(f: &FastTier, p: i32) -> i64 {
    f.status()["uploaded"][format!("{TOPIC_ID}-{p}")].as_i64().unwrap_or(-1)
}

#[test]
fn topic_ids_round_trip_and_bad_ones_are_refused() {
    let id = parse_topic_id("kP3jMn0YTC2yq1u3fT9p8w").unwrap();
    assert_eq!(crate::wal::format::topic_id_string(&id), "kP3jMn0YTC2yq1u3fT9p8w");
    assert!(parse_topic_id("kP3jMn0YTC2yq1u3fT9p8").is_err());
    assert!(parse_topic_id("kP3jMn0YTC2yq1u3fT9p8+").is_err());
    assert!(parse_topic_id("kP3jMn0YTC2yq1u3fT9p8x").is_err(), "non-canonical trailing bits");
}

#[test]
fn uploads_led_partitions_byte_exact_across_rolls_and_stops_when_leadership_goes() {
    let bed = Bed::new(Arc::new(MemoryStore::new()));
    let mut log0 = bed.append(0, 0, &[(0, 5, 3), (5, 5, 3)]);
    let log1 = bed.append(1, 0, &[(0, 2, 3)]);
    let f = bed.fast(wal_config(&[]));
    f.leadership(vec![tp(0), tp(1)], vec![]).unwrap();
    wait_for("first uploads", || uploaded_to(&f, 0) == 9 && uploaded_to(&f, 1) == 1);
    // More data, a roll to a new segment at offset 12 with a new epoch.
    log0.extend(bed.append(0, 0, &[(10, 2, 3)]));
    log0.extend(bed.append(0, 12, &[(12, 3, 4)]));
    wait_for("after the roll", || uploaded_to(&f, 0) == 14);
    assert_eq!(bed.stream_bytes(0), log0, "partition 0 byte-exact");
    assert_eq!(bed.stream_bytes(1), log1, "partition 1 byte-exact");
    let ranges = bed.stream(0);
    let mut next = 0;
    for (_, first, last, _) in &ranges {
        assert_eq!(*first, next, "no gap and no duplicate: {ranges:?}");
        next = last + 1;
    }
    assert!(ranges.iter().any(|r| r.0 == 4 && r.1 == 12), "epoch 4 range: {ranges:?}");
    assert!(bed.metrics.get(Metric::WalObjects) >= 2);
    assert!(bed.metrics.get(Metric::WalLagCount) >= 5, "lag histogram fed");
    assert!(bed.metrics.get(Metric::WalLagLe10000) >= 5);
    wait_for("per-second gauges", || {
        bed.metrics.get(Metric::WalBytesRate) > 0 && bed.metrics.get(Metric::WalPutRate) > 0
    });
    // Partition 1 moves away: new data there is not uploaded.
    f.leadership(vec![], vec![tp(1)]).unwrap();
    wait_for("membership applied", || f.status()["partitions"] == 1);
    bed.append(1, 0, &[(2, 2, 3)]);
    bed.append(0, 12, &[(15, 1, 4)]);
    wait_for("partition 0 still uploads", || uploaded_to(&f, 0) == 15);
    assert_eq!(uploaded_to(&f, 1), 1, "partition 1 no longer uploaded");
    f.close();
    assert_eq!(f.status()["state"], "closed");
}

#[test]
fn restart_resumes_after_the_stored_data_without_duplicates() {
    let bed = Bed::new(Arc::new(MemoryStore::new()));
    let mut log = bed.append(0, 0, &[(0, 4, 1)]);
    let f = bed.fast(wal_config(&[]));
    f.leadership(vec![tp(0)], vec![]).unwrap();
    wait_for("upload", || uploaded_to(&f, 0) == 3);
    f.close();
    log.extend(bed.append(0, 0, &[(4, 4, 1)]));
    let g = bed.fast(wal_config(&[]));
    g.leadership(vec![tp(0)], vec![]).unwrap();
    wait_for("upload after restart", || uploaded_to(&g, 0) == 7);
    g.close();
    assert_eq!(bed.stream_bytes(0), log);
    let firsts: Vec<i64> = bed.stream(0).iter().map(|r| r.1).collect();
    assert_eq!(firsts, vec![0, 4], "continued at offset 4");
}

#[test]
fn a_new_leader_starts_at_its_active_segment() {
    let bed = Bed::new(Arc::new(MemoryStore::new()));
    bed.append(0, 0, &[(0, 10, 1)]);
    let active = bed.append(0, 10, &[(10, 5, 2)]);
    let f = bed.fast(wal_config(&[]));
    f.leadership(vec![tp(0)], vec![]).unwrap();
    wait_for("upload", || uploaded_to(&f, 0) == 14);
    f.close();
    assert_eq!(bed.stream_bytes(0), active, "rolled segments are the slow tier's");
}

#[test]
fn store_outage_holds_one_object_and_catches_up_without_gaps() {
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let bed = Bed::new(faulty.clone());
    let mut log = bed.append(0, 0, &[(0, 2, 1)]);
    let f = bed.fast(wal_config(&[("wal.max.object.bytes", "65536")]));
    f.leadership(vec![tp(0)], vec![]).unwrap();
    wait_for("first upload", || uploaded_to(&f, 0) == 1);
    faulty.set_outage(true);
    // Several objects' worth of data while the store is down.
    let mut off = 2;
    for _ in 0..60 {
        log.extend(bed.append_sized(0, 0, &[(off, 50, 1)], 100));
        off += 50;
    }
    wait_for("an upload attempt fails", || bed.metrics.get(Metric::WalErrors) >= 2);
    std::thread::sleep(Duration::from_millis(200));
    let st = f.status();
    assert_eq!(st["in_flight"], true, "{st}");
    assert!(st["pending_bytes"].as_u64().unwrap() == 0, "nothing read beyond the object in flight: {st}");
    assert!(bed.metrics.get(Metric::WalBehindMs) > 0, "lag visible while the store is down");
    faulty.set_outage(false);
    wait_for("catch-up", || uploaded_to(&f, 0) == off - 1);
    f.close();
    assert_eq!(bed.stream_bytes(0), log);
    assert!(bed.stream(0).len() > 2, "caught up in several objects bounded by wal.max.object.bytes");
}

#[test]
fn cleanup_deletes_covered_objects_and_keeps_the_newest() {
    let bed = Bed::new(Arc::new(MemoryStore::new()));
    let f = bed.fast(wal_config(&[]));
    f.leadership(vec![tp(0)], vec![]).unwrap();
    for i in 0..5 {
        bed.append(0, 0, &[(i * 2, 2, 1)]);
        wait_for("upload", || uploaded_to(&f, 0) == i * 2 + 1);
    }
    assert!(bed.metrics.get(Metric::WalRetainedObjects) >= 5);
    assert_eq!(bed.metrics.get(Metric::WalDeletedObjects), 0, "nothing covered yet");
    bed.coverage.record(Tp { topic_id: parse_topic_id(TOPIC_ID).unwrap(), partition: 0 }, 5);
    wait_for("cleanup", || bed.metrics.get(Metric::WalDeletedObjects) >= 3);
    std::thread::sleep(Duration::from_millis(150));
    let remaining = bed.stream(0);
    assert_eq!(remaining.first().map(|r| r.1), Some(6), "objects holding offsets <= 5 deleted: {remaining:?}");
    bed.coverage.record(Tp { topic_id: parse_topic_id(TOPIC_ID).unwrap(), partition: 0 }, 100);
    wait_for("cleanup to the newest", || bed.metrics.get(Metric::WalRetainedObjects) == 1);
    assert_eq!(bed.stream(0).len(), 1, "the newest object is kept");
    f.close();
}

#[test]
fn a_second_writer_fences_the_first() {
    let bed = Bed::new(Arc::new(MemoryStore::new()));
    bed.append(0, 0, &[(0, 2, 1)]);
    let old = bed.fast(wal_config(&[]));
    old.leadership(vec![tp(0)], vec![]).unwrap();
    wait_for("old uploads", || uploaded_to(&old, 0) == 1);
    let new = bed.fast(wal_config(&[]));
    new.leadership(vec![tp(0)], vec![]).unwrap();
    wait_for("new opened", || new.status()["state"] == "running");
    bed.append(0, 0, &[(2, 2, 1)]);
    wait_for("old fenced", || old.status()["state"] == "fenced");
    wait_for("new uploads", || uploaded_to(&new, 0) == 3);
    new.close();
    old.close();
}

#[test]
fn missing_partition_directory_is_reported_and_picked_up_later() {
    let bed = Bed::new(Arc::new(MemoryStore::new()));
    let f = bed.fast(wal_config(&[]));
    f.leadership(vec![tp(7)], vec![]).unwrap();
    wait_for("problem reported", || {
        f.status()["problems"].as_array().is_some_and(|a| a.iter().any(|p| p.as_str().unwrap().contains("orders-7")))
    });
    bed.append(7, 0, &[(0, 1, 1)]);
    wait_for("picked up", || uploaded_to(&f, 7) == 0);
    f.close();
}

#[test]
fn excluded_topics_are_not_uploaded() {
    let bed = Bed::new(Arc::new(MemoryStore::new()));
    bed.append(0, 0, &[(0, 1, 1)]);
    let f = bed.fast(wal_config(&[("wal.exclude.topics", "ord*")]));
    f.leadership(vec![tp(0)], vec![]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(f.status()["partitions"], 0);
    f.close();
    assert!(bed.stream(0).is_empty());
}

#[test]
fn data_written_during_a_slow_upload_goes_in_the_next_object_and_an_idle_uploader_makes_no_puts() {
    use crate::store::faulty::Op;
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new()) as Arc<dyn ObjectStore>));
    let bed = Bed::new(faulty.clone());
    bed.append(0, 0, &[(0, 1, 3)]);
    let f = bed.fast(wal_config(&[("wal.upload.interval.ms", "0"), ("wal.head.interval.ms", "60000")]));
    f.leadership(vec![tp(0)], vec![]).unwrap();
    wait_for("the first upload", || uploaded_to(&f, 0) == 0);
    wait_for("the head written", || f.status()["state"] == "running");
    std::thread::sleep(Duration::from_millis(300));

    // idle: nothing written, nothing uploaded (no timer-driven objects)
    let objects = bed.metrics.get(Metric::WalObjects);
    let puts = faulty.calls(Op::Put);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(bed.metrics.get(Metric::WalObjects), objects, "no object while idle");
    assert_eq!(faulty.calls(Op::Put), puts, "no PUT while idle");

    // a slow store: data written while an upload is in flight goes into the object right after it
    faulty.set_latency(Op::Put, Duration::from_millis(400));
    bed.append(0, 0, &[(1, 1, 3)]);
    wait_for("the slow upload to start", || faulty.calls(Op::Put) > puts);
    bed.append(0, 0, &[(2, 1, 3)]);
    wait_for("both uploaded", || uploaded_to(&f, 0) == 2);
    let ranges = bed.stream(0);
    let tail: Vec<(i64, i64)> = ranges.iter().map(|r| (r.1, r.2)).filter(|r| r.0 >= 1).collect();
    assert_eq!(tail, vec![(1, 1), (2, 2)], "one object per upload, the second right after the first: {ranges:?}");
    f.close();
}
