//! `fasttier rebuild` as a library call: a partition held partly by slow-tier segments (copied by the real
//! `SlowTier`) and partly by fast-tier objects (appended by the real `WalWriter`), all in one `MemoryStore`,
//! rebuilt into a temporary log directory; the files are checked byte for byte, and so are the refusals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use fasttier_cli::partition::{verify, Stores};
use fasttier_cli::rebuild::{
    rebuild, tiered_partitions, LocalRetention, LogDirLock, Progress, Quiet, RebuildOptions, RebuildReport, StartAt,
    Target,
};
use fasttier_core::error::{Error, Result};
use fasttier_core::format::batch::testing::batch;
use fasttier_core::format::keys::SegmentRef;
use fasttier_core::metrics::Metrics;
use fasttier_core::runtime::Cancel;
use fasttier_core::slow::{CopyRequest, SlowTier, SlowTierSettings};
use fasttier_core::store::memory::MemoryStore;
use fasttier_core::store::ObjectStore;
use fasttier_core::upload::UploadSettings;
use fasttier_core::wal::catalog::parse_topic_id;
use fasttier_core::wal::{WalObjectBuilder, WalWriter, WalWriterOptions};

const TOPIC: &str = "orders";
const TOPIC_ID: &str = "AAAAAAAAAAAAAAAAAAAAAQ";
/// The last offset the tiers hold.
const LAST: i64 = 44;

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("fasttier-rebuild-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The leader's log: offset `o` is one batch of one record. Epoch 0 below 15, 1 from 15, 2 from 32.
fn epoch_of(o: i64) -> i32 {
    match o {
        ..=14 => 0,
        15..=31 => 1,
        _ => 2,
    }
}

/// Batches `first..=last` of the leader's log; `tag` other than 0 gives other bytes at the same offsets.
fn log_bytes(first: i64, last: i64, tag: u8) -> Vec<u8> {
    (first..=last).flat_map(|o| batch(o, epoch_of(o), 1, &[tag, o as u8, 7, 7, 7])).collect()
}

/// Size of one batch of [`log_bytes`].
fn batch_len() -> usize {
    log_bytes(0, 0, 0).len()
}

/// The stored offset index of the segment starting at `start`: an entry every 4 batches.
fn offset_index(start: i64, end: i64) -> Vec<u8> {
    let n = (end - start + 1) as usize;
    (0..n)
        .step_by(4)
        .skip(1)
        .flat_map(|i| [(i as i32).to_be_bytes(), ((i * batch_len()) as i32).to_be_bytes()].concat())
        .collect()
}

fn time_index(start: i64) -> Vec<u8> {
    [(start * 100).to_be_bytes().as_slice(), &3i32.to_be_bytes()].concat()
}

fn snapshot(end: i64) -> Vec<u8> {
    format!("producer state at {}", end + 1).into_bytes()
}

/// A slow-tier segment: `(start, end, max timestamp, leader epochs)`.
type SlowSegment = (i64, i64, i64, &'static [(i32, i64)]);

/// The slow tier's segments.
const SLOW: [SlowSegment; 3] =
    [(0, 9, 1000, &[(0, 0)]), (10, 19, 2000, &[(0, 10), (1, 15)]), (20, 29, 3000, &[(1, 20)])];

/// What differs from a healthy partition.
#[derive(Default, Clone, Copy)]
struct Faults {
    /// The slow tier lacks segment 10..=19 (the fast tier does not hold it either).
    gap: bool,
    /// Broker 2's copy of offset 40 differs from broker 3's (same epoch).
    fast_conflict: bool,
    /// Broker 1's fast-tier copy of offset 25 differs from the slow segment's.
    tier_conflict: bool,
    /// The slow tier lacks segment 10..=19 and broker 1 uploaded it to the fast tier (from offset 10).
    slow_hole: bool,
    /// Nothing in the slow tier; the fast tier starts at 20.
    fast_only: bool,
}

struct Scenario {
    tmp: Scratch,
    log_dir: PathBuf,
    stores: Stores,
}

impl Scenario {
    fn dir(&self) -> PathBuf {
        self.log_dir.join(format!("{TOPIC}-0"))
    }

    fn target(&self) -> Vec<Target> {
        vec![Target { topic: TOPIC.into(), partition: 0, topic_id: TOPIC_ID.into() }]
    }

    fn opts(&self, start: StartAt) -> RebuildOptions {
        let mut o = RebuildOptions::new(&self.log_dir, start);
        o.now_ms = 3500;
        o
    }

    async fn run(&self, opts: &RebuildOptions) -> Result<RebuildReport> {
        rebuild(&self.stores, &self.target(), opts, Arc::new(Quiet)).await
    }
}

/// Partition `orders-0` and a formatted, empty log directory. Slow tier: segments 0..=9, 10..=19, 20..=29
/// (stored indexes and producer snapshots). Fast tier: broker 1 (leader in epoch 1) uploaded 20..=31 and,
/// as a zombie, epoch-1 data at 32..=33 that the new leader does not have; broker 2 (leader from epoch 2 at
/// offset 32) uploaded 32..=44. Another partition shares the objects.
async fn scenario(f: Faults) -> Scenario {
    let tmp = Scratch::new();
    let log_dir = tmp.0.join("data");
    std::fs::create_dir_all(&log_dir).unwrap();
    std::fs::write(log_dir.join("meta.properties"), "version=1\nnode.id=2\n").unwrap();

    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let slow = SlowTier::new(
        store.clone(),
        SlowTierSettings {
            prefix: "slow/".into(),
            upload: UploadSettings {
                chunk_bytes: 200,
                part_bytes: 5 << 20,
                multipart_threshold_bytes: 5 << 20,
                concurrency: 1,
            },
            cache_bytes: 1 << 20,
            read_ahead_chunks: 0,
        },
        Arc::new(Metrics::default()),
    );
    let files = tmp.0.join("leader");
    std::fs::create_dir_all(&files).unwrap();
    for (i, &(start, end, ts, epochs)) in SLOW.iter().enumerate() {
        if f.fast_only || ((f.gap || f.slow_hole) && start == 10) {
            continue;
        }
        let p = |n: &str| files.join(format!("{start}.{n}"));
        let bytes = log_bytes(start, end, 0);
        std::fs::write(p("log"), &bytes).unwrap();
        std::fs::write(p("index"), offset_index(start, end)).unwrap();
        std::fs::write(p("timeindex"), time_index(start)).unwrap();
        std::fs::write(p("txnindex"), [0u8; 34]).unwrap();
        std::fs::write(p("snapshot"), snapshot(end)).unwrap();
        let req = CopyRequest {
            segment: SegmentRef::new(TOPIC, TOPIC_ID, 0, start, &format!("AAAAAAAAAAAAAAAAAAAA{}A", b"BCD"[i] as char))
                .unwrap(),
            end_offset: end,
            max_timestamp_ms: ts,
            broker_id: 1,
            segment_size: bytes.len() as u64,
            leader_epochs: epochs.to_vec(),
            log: p("log"),
            offset_index: p("index"),
            time_index: p("timeindex"),
            transaction_index: Some(p("txnindex")),
            producer_snapshot: p("snapshot"),
            leader_epoch_checkpoint: Default::default(),
        };
        slow.copy_segment(req, &Cancel::new()).await.unwrap();
    }

    let tid = parse_topic_id(TOPIC_ID).unwrap();
    let range = |b: &mut WalObjectBuilder, first: i64, last: i64, tag: u8| {
        b.add(tid, 0, epoch_of(first), first, last, log_bytes(first, last, tag).into()).unwrap();
    };
    let mut w1 = WalWriter::open(store.clone(), "wal/", 1, WalWriterOptions::default()).await.unwrap();
    let mut w2 = WalWriter::open(store.clone(), "wal/", 2, WalWriterOptions::default()).await.unwrap();
    let mut w3 = WalWriter::open(store.clone(), "wal/", 3, WalWriterOptions::default()).await.unwrap();
    let mut b = WalObjectBuilder::new();
    if f.slow_hole {
        range(&mut b, 10, 14, 0);
        range(&mut b, 15, 19, 0);
    }
    if f.tier_conflict {
        range(&mut b, 20, 24, 0);
        range(&mut b, 25, 25, 9);
        range(&mut b, 26, 31, 0);
    } else {
        range(&mut b, 20, 31, 0);
    }
    w1.append(&b).await.unwrap();
    let mut b = WalObjectBuilder::new();
    let zombie: Vec<u8> = (32..=33).flat_map(|o| batch(o, 1, 1, &[5, o as u8])).collect();
    b.add(tid, 0, 1, 32, 33, zombie.into()).unwrap();
    w1.append(&b).await.unwrap();
    let mut b = WalObjectBuilder::new();
    range(&mut b, 32, 39, 0);
    b.add(tid, 1, 0, 0, 0, batch(0, 0, 1, b"other partition").into()).unwrap();
    w2.append(&b).await.unwrap();
    let mut b = WalObjectBuilder::new();
    range(&mut b, 40, 40, if f.fast_conflict { 3 } else { 0 });
    range(&mut b, 41, LAST, 0);
    w2.append(&b).await.unwrap();
    if f.fast_conflict {
        let mut b = WalObjectBuilder::new();
        range(&mut b, 40, 40, 0);
        w3.append(&b).await.unwrap();
    }

    let stores = Stores { slow: store.clone(), slow_prefix: "slow/".into(), wal: store, wal_prefix: "wal/".into() };
    Scenario { tmp, log_dir, stores }
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
}

fn seg(base: i64, suffix: &str) -> String {
    format!("{base:020}.{suffix}")
}

/// The partition directory's files by name.
fn partition_files(s: &Scenario) -> BTreeMap<String, Vec<u8>> {
    tree(&s.dir())
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[tokio::test]
async fn slow_and_fast_tier_rebuild_byte_for_byte() {
    let s = scenario(Faults::default()).await;
    std::fs::write(s.log_dir.join(".kafka_cleanshutdown"), "{\"version\":\"0\",\"brokerEpoch\":\"7\"}").unwrap();
    std::fs::write(s.log_dir.join("recovery-point-offset-checkpoint"), "0\n2\norders 0 44\nother 1 5\n").unwrap();
    std::fs::write(s.log_dir.join("log-start-offset-checkpoint"), "0\n1\norders 0 12\n").unwrap();
    std::fs::write(s.log_dir.join("replication-offset-checkpoint"), "0\n2\norders 0 44\nother 1 5\n").unwrap();

    let r = s.run(&s.opts(StartAt::Offset(0))).await.unwrap();
    assert!(r.ok(), "{}", r.summary());
    let p = &r.partitions[0];
    assert_eq!((p.first_offset, p.log_end_offset, p.tier_first_offset, p.tier_last_offset), (0, LAST + 1, 0, LAST));
    assert_eq!((p.batches, p.verified_batches), (45, 45));
    assert_eq!(p.leader_epochs, vec![(0, 0), (1, 15), (2, 32)]);
    assert_eq!(p.producer_snapshot, None);
    assert_eq!(
        p.segments.iter().map(|x| (x.base_offset, x.last_offset, x.source, x.indexes)).collect::<Vec<_>>(),
        vec![(0, 9, "slow", true), (10, 19, "slow", true), (20, 29, "slow", true), (30, 44, "fast", false)]
    );
    assert_eq!((p.slow_bytes, p.fast_bytes), (30 * batch_len() as u64, 15 * batch_len() as u64));
    assert!(!p.replaced);
    assert!(r.clean_shutdown_marker_removed);
    assert_eq!(r.checkpoint_entries_removed, 2);

    let files = partition_files(&s);
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for &(start, end, _, _) in &SLOW {
        expected.insert(seg(start, "log"), log_bytes(start, end, 0));
        expected.insert(seg(start, "index"), offset_index(start, end));
        expected.insert(seg(start, "timeindex"), time_index(start));
        expected.insert(seg(start, "txnindex"), vec![0; 34]);
    }
    // The fast tier's data from where the slow tier ends; the zombie's epoch-1 batches at 32..=33 are not.
    expected.insert(seg(30, "log"), log_bytes(30, LAST, 0));
    expected.insert("leader-epoch-checkpoint".into(), b"0\n3\n0 0\n1 15\n2 32\n".to_vec());
    expected.insert("partition.metadata".into(), format!("version: 0\ntopic_id: {TOPIC_ID}").into_bytes());
    assert_eq!(files.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (name, bytes) in &expected {
        assert!(files[name] == *bytes, "{name} differs");
    }

    // Kafka's per-log-dir state: the partition's recovery point and log start offset are gone (others
    // kept), the clean-shutdown marker too; the high watermark starts at the first restored offset.
    let top = tree(&s.log_dir);
    assert_eq!(text(&top["recovery-point-offset-checkpoint"]), "0\n1\nother 1 5\n");
    assert_eq!(text(&top["log-start-offset-checkpoint"]), "0\n0\n");
    assert_eq!(text(&top["replication-offset-checkpoint"]), "0\n2\nother 1 5\norders 0 0\n");
    assert!(!top.contains_key(".kafka_cleanshutdown"));
    assert!(top.contains_key(".lock"));
    // No scratch directory is left behind.
    let names = names(&s.log_dir);
    assert!(!names.iter().any(|n| n.ends_with("-delete")), "{names:?}");

    // The rebuilt partition is what `partition verify` expects of a replica.
    let v = verify(&s.stores, &s.dir()).await.unwrap();
    assert!(v.ok(), "{}", v.render());
    assert_eq!((v.local_batches, v.checked, v.matched), (45, 45, 45));

    let j = r.to_json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["dry_run"], false);
    assert_eq!(j["bytes"], 45 * batch_len() as u64);
    assert_eq!(j["clean_shutdown_marker_removed"], true);
    assert_eq!(j["checkpoint_entries_removed"], 2);
    let jp = &j["partitions"][0];
    assert_eq!(
        (jp["topic"].as_str(), jp["partition"].as_i64(), jp["topic_id"].as_str()),
        (Some(TOPIC), Some(0), Some(TOPIC_ID))
    );
    assert_eq!((jp["first_offset"].as_i64(), jp["log_end_offset"].as_i64()), (Some(0), Some(45)));
    assert_eq!(jp["leader_epochs"], serde_json::json!([[0, 0], [1, 15], [2, 32]]));
    assert_eq!(jp["segments"].as_array().unwrap().len(), 4);
    assert_eq!(jp["segments"][3]["source"], "fast");
    assert_eq!(jp["dir"].as_str(), Some(s.dir().to_str().unwrap()));
    assert!(r.summary().contains("rebuilt 1 partition(s)"), "{}", r.summary());
}

#[tokio::test]
async fn local_retention_and_from_offset_choose_the_start() {
    let s = scenario(Faults::default()).await;
    let seg_bytes = 10 * batch_len() as i64;
    let fast_bytes = 15 * batch_len() as i64;
    // By size: the newest slow segment and the fast-tier data fit.
    let by_size = StartAt::Retention(LocalRetention { ms: -1, bytes: seg_bytes + fast_bytes });
    // By time: segments whose newest record is more than 1 s older than "now" (3.5 s) are gone.
    let by_time = StartAt::Retention(LocalRetention { ms: 1000, bytes: -1 });
    for start in [by_size, by_time, StartAt::Offset(25)] {
        let mut o = s.opts(start);
        o.force = true;
        let r = s.run(&o).await.unwrap();
        let p = &r.partitions[0];
        assert_eq!((p.first_offset, p.log_end_offset), (20, LAST + 1), "{start:?}");
        // The producer snapshot of the segment below (10..=19) is restored at the first offset.
        assert_eq!(p.producer_snapshot, Some(20));
        let files = partition_files(&s);
        assert_eq!(files[&seg(20, "snapshot")], snapshot(19));
        assert!(!files.contains_key(&seg(0, "log")) && !files.contains_key(&seg(10, "log")));
        // Epochs that started below the restored data come from the slow tier's manifests.
        assert_eq!(text(&files["leader-epoch-checkpoint"]), "0\n3\n0 0\n1 15\n2 32\n");
        let hw = std::fs::read_to_string(s.log_dir.join("replication-offset-checkpoint")).unwrap();
        assert_eq!(hw, "0\n1\norders 0 20\n");
    }
    // Nothing local retention allows but the newest piece: the fast tier's run is kept whole.
    for start in [StartAt::Retention(LocalRetention { ms: 0, bytes: 0 }), StartAt::Offset(37)] {
        let mut o = s.opts(start);
        o.force = true;
        let r = s.run(&o).await.unwrap();
        let p = &r.partitions[0];
        assert_eq!((p.first_offset, p.producer_snapshot, p.segments.len()), (30, Some(30), 1), "{start:?}");
        let files = partition_files(&s);
        assert_eq!(files[&seg(30, "log")], log_bytes(30, LAST, 0));
        assert_eq!(files[&seg(30, "snapshot")], snapshot(29));
        assert_eq!(text(&files["leader-epoch-checkpoint"]), "0\n3\n0 0\n1 15\n2 32\n");
    }
    // Below the tiers: from their first offset; beyond them: refused.
    let mut o = s.opts(StartAt::Offset(-5));
    o.force = true;
    assert_eq!(s.run(&o).await.unwrap().partitions[0].first_offset, 0);
    let mut o = s.opts(StartAt::Offset(LAST + 1));
    o.force = true;
    let e = s.run(&o).await.unwrap_err();
    assert!(e.to_string().contains("--from-offset") && e.to_string().contains("44"), "{e}");
}

#[tokio::test]
async fn fast_tier_data_is_split_into_segments() {
    let s = scenario(Faults::default()).await;
    let mut o = s.opts(StartAt::Offset(30));
    o.max_segment_bytes = 4 * batch_len() as u64;
    let r = s.run(&o).await.unwrap();
    let bases: Vec<i64> = r.partitions[0].segments.iter().map(|x| x.base_offset).collect();
    assert_eq!(bases, vec![30, 34, 38, 42]);
    let files = partition_files(&s);
    for (base, last) in [(30, 33), (34, 37), (38, 41), (42, LAST)] {
        assert_eq!(files[&seg(base, "log")], log_bytes(base, last, 0), "segment {base}");
        // Kafka rebuilds the indexes of segments without an offset index.
        assert!(!files.contains_key(&seg(base, "index")));
    }
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let s = scenario(Faults::default()).await;
    std::fs::write(s.log_dir.join(".kafka_cleanshutdown"), "{}").unwrap();
    std::fs::write(s.log_dir.join("recovery-point-offset-checkpoint"), "0\n1\norders 0 44\n").unwrap();
    // It may run beside a broker: the log directory's lock is not needed.
    std::fs::write(s.log_dir.join(".lock"), "").unwrap();
    let lock = LogDirLock::acquire(&s.log_dir, false).unwrap().expect("a .lock file");
    let before = tree(&s.log_dir);
    let mut o = s.opts(StartAt::Retention(LocalRetention { ms: -1, bytes: 0 }));
    o.dry_run = true;
    let r = s.run(&o).await.unwrap();
    drop(lock);
    assert_eq!(tree(&s.log_dir), before);
    assert!(r.ok() && r.dry_run);
    let p = &r.partitions[0];
    assert_eq!((p.first_offset, p.log_end_offset, p.producer_snapshot), (30, LAST + 1, Some(30)));
    assert_eq!((p.batches, p.verified_batches, p.fast_bytes), (0, 0, 15 * batch_len() as u64));
    assert!(!r.clean_shutdown_marker_removed && r.checkpoint_entries_removed == 0);
    assert!(r.summary().starts_with("would rebuild 1 partition(s)"), "{}", r.summary());
    assert_eq!(r.to_json()["dry_run"], true);
}

#[tokio::test]
async fn existing_segments_need_force() {
    let s = scenario(Faults::default()).await;
    std::fs::create_dir_all(s.dir()).unwrap();
    std::fs::write(s.dir().join(seg(0, "log")), b"old data").unwrap();
    std::fs::write(s.dir().join("leader-epoch-checkpoint"), b"0\n1\n0 0\n").unwrap();
    let e = s.run(&s.opts(StartAt::Offset(0))).await.unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    assert!(e.to_string().contains("--force") && e.to_string().contains("orders-0"), "{e}");
    assert_eq!(std::fs::read(s.dir().join(seg(0, "log"))).unwrap(), b"old data");
    // With --force the old directory is replaced as a whole.
    let mut o = s.opts(StartAt::Offset(20));
    o.force = true;
    let r = s.run(&o).await.unwrap();
    assert!(r.partitions[0].replaced);
    let files = partition_files(&s);
    assert!(!files.contains_key(&seg(0, "log")));
    assert_eq!(files[&seg(20, "log")], log_bytes(20, 29, 0));
    let names = names(&s.log_dir);
    assert!(!names.iter().any(|n| n.ends_with("-delete")), "{names:?}");
    // A directory without segment files (e.g. what a broker created before it failed) is replaced silently.
    let s = scenario(Faults::default()).await;
    std::fs::create_dir_all(s.dir()).unwrap();
    std::fs::write(s.dir().join("partition.metadata"), b"version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAQ").unwrap();
    let r = s.run(&s.opts(StartAt::Offset(0))).await.unwrap();
    assert!(r.partitions[0].replaced);
}

#[tokio::test]
async fn a_held_lock_refuses() {
    let s = scenario(Faults::default()).await;
    let lock = LogDirLock::acquire(&s.log_dir, true).unwrap();
    let e = s.run(&s.opts(StartAt::Offset(0))).await.unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    assert!(e.to_string().contains(".lock") && e.to_string().contains("running"), "{e}");
    assert!(!s.dir().exists());
    drop(lock);
    assert!(s.run(&s.opts(StartAt::Offset(0))).await.unwrap().ok());
}

#[tokio::test]
async fn an_unformatted_log_dir_refuses() {
    let s = scenario(Faults::default()).await;
    std::fs::remove_file(s.log_dir.join("meta.properties")).unwrap();
    let e = s.run(&s.opts(StartAt::Offset(0))).await.unwrap_err();
    assert!(e.to_string().contains("meta.properties") && e.to_string().contains("format"), "{e}");
    let e = s.run(&RebuildOptions::new(s.tmp.0.join("nowhere"), StartAt::Offset(0))).await.unwrap_err();
    assert!(e.to_string().contains("nowhere") && e.to_string().contains("not a directory"), "{e}");
}

/// Runs a rebuild expected to fail for the partition; returns the error text. Nothing may be left behind.
async fn refused(f: Faults) -> String {
    let s = scenario(f).await;
    let r = s.run(&s.opts(StartAt::Offset(0))).await.unwrap();
    assert!(!r.ok() && r.partitions.is_empty());
    let e = r.error.clone().unwrap();
    assert!(e.starts_with("partition=orders-0"), "{e}");
    assert!(!r.to_json()["ok"].as_bool().unwrap());
    assert_eq!(r.to_json()["error"].as_str(), Some(e.as_str()));
    let names = names(&s.log_dir);
    assert!(names.iter().all(|n| n == "meta.properties" || n == ".lock"), "{names:?}");
    e
}

#[tokio::test]
async fn a_gap_in_the_tiers_refuses() {
    let e = refused(Faults { gap: true, ..Faults::default() }).await;
    assert!(e.contains("nothing at offset 10"), "{e}");
}

#[tokio::test]
async fn conflicting_batches_refuse() {
    let e = refused(Faults { fast_conflict: true, ..Faults::default() }).await;
    assert!(e.contains("differing copies of offsets 40..=40") && e.contains("wal/"), "{e}");
    // The slow tier lacks 10..=19; the chain takes them from the fast tier, and there the fast tier's copy
    // of 25 is read next to the slow segment's.
    let e = refused(Faults { tier_conflict: true, slow_hole: true, ..Faults::default() }).await;
    assert!(e.contains("batch 25..=25") && e.contains("slow/") && e.contains("wal/"), "{e}");
    assert!(e.contains("the tiers disagree"), "{e}");
}

#[tokio::test]
async fn the_fast_tier_fills_a_hole_of_the_slow_tier() {
    let s = scenario(Faults { slow_hole: true, ..Faults::default() }).await;
    let r = s.run(&s.opts(StartAt::Offset(0))).await.unwrap();
    let p = &r.partitions[0];
    assert_eq!(
        p.segments.iter().map(|x| (x.base_offset, x.last_offset, x.source)).collect::<Vec<_>>(),
        vec![(0, 9, "slow"), (10, 19, "fast"), (20, 29, "slow"), (30, 44, "fast")]
    );
    let files = partition_files(&s);
    for (base, last) in [(0, 9), (10, 19), (20, 29), (30, LAST)] {
        assert_eq!(files[&seg(base, "log")], log_bytes(base, last, 0), "segment {base}");
    }
    assert!(files.contains_key(&seg(20, "index")) && !files.contains_key(&seg(10, "index")));
    assert_eq!(text(&files["leader-epoch-checkpoint"]), "0\n3\n0 0\n1 15\n2 32\n");
}

#[tokio::test]
async fn the_slow_tier_is_taken_where_both_tiers_hold_offsets() {
    // The fast tier's copy of 25 differs, but the slow tier holds 0..=29 without a hole: the fast tier is
    // read only from 30 on, and the rebuilt log has the slow segment's bytes. `partition verify` (which
    // reads both tiers) reports the disagreement.
    let s = scenario(Faults { tier_conflict: true, ..Faults::default() }).await;
    let r = s.run(&s.opts(StartAt::Offset(0))).await.unwrap();
    assert!(r.ok(), "{}", r.summary());
    assert_eq!(partition_files(&s)[&seg(20, "log")], log_bytes(20, 29, 0));
    let v = verify(&s.stores, &s.dir()).await.unwrap();
    assert!(!v.ok() && v.conflicts == 1, "{}", v.render());
}

#[tokio::test]
async fn fast_tier_data_above_untiered_offsets_refuses() {
    let e = refused(Faults { fast_only: true, ..Faults::default() }).await;
    assert!(e.contains("from 20 on only in the fast tier"), "{e}");
}

#[tokio::test]
async fn nothing_tiered_is_a_usage_error() {
    let s = scenario(Faults::default()).await;
    let t = vec![Target { topic: TOPIC.into(), partition: 5, topic_id: TOPIC_ID.into() }];
    let e = rebuild(&s.stores, &t, &s.opts(StartAt::Offset(0)), Arc::new(Quiet)).await.unwrap_err();
    assert!(matches!(e, Error::Config { .. }) && e.to_string().contains("orders-5"), "{e}");
    let twice = [s.target(), s.target()].concat();
    let e = rebuild(&s.stores, &twice, &s.opts(StartAt::Offset(0)), Arc::new(Quiet)).await.unwrap_err();
    assert!(e.to_string().contains("named twice"), "{e}");
    assert_eq!(tiered_partitions(&s.stores, TOPIC, TOPIC_ID).await.unwrap(), vec![0, 1]);
}

#[derive(Default)]
struct Counting {
    planned: AtomicU64,
    wrote: AtomicU64,
}

impl Progress for Counting {
    fn planned(&self, _: &str, bytes: u64) {
        self.planned.fetch_add(bytes, Ordering::Relaxed);
    }

    fn wrote(&self, bytes: u64) {
        self.wrote.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn progress_counts_every_byte() {
    let s = scenario(Faults::default()).await;
    let c = Arc::new(Counting::default());
    let r = rebuild(&s.stores, &s.target(), &s.opts(StartAt::Offset(0)), c.clone()).await.unwrap();
    assert_eq!(c.wrote.load(Ordering::Relaxed), r.bytes());
    assert_eq!(c.planned.load(Ordering::Relaxed), r.bytes());
}

#[tokio::test]
async fn several_partitions_in_one_run() {
    let s = scenario(Faults::default()).await;
    let mut targets = s.target();
    // orders-1 exists only in the fast tier, from offset 0: restored from there.
    targets.push(Target { topic: TOPIC.into(), partition: 1, topic_id: TOPIC_ID.into() });
    let r = rebuild(&s.stores, &targets, &s.opts(StartAt::Offset(0)), Arc::new(Quiet)).await.unwrap();
    assert!(r.ok(), "{}", r.summary());
    assert_eq!(
        r.partitions.iter().map(|p| (p.partition, p.first_offset, p.log_end_offset)).collect::<Vec<_>>(),
        vec![(0, 0, LAST + 1), (1, 0, 1)]
    );
    let one = tree(&s.log_dir.join("orders-1"));
    assert_eq!(one[&seg(0, "log")], batch(0, 0, 1, b"other partition"));
    assert_eq!(text(&one["leader-epoch-checkpoint"]), "0\n1\n0 0\n");
    assert_eq!(text(&tree(&s.log_dir)["replication-offset-checkpoint"]), "0\n2\norders 0 0\norders 1 0\n");
    assert!(
        r.summary().contains("rebuilt 2 partition(s)") && r.summary().contains("orders-1 0..=0"),
        "{}",
        r.summary()
    );
}

/// Every file and directory under `dir` (itself included) with its owner.
fn owners(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), m.uid(), m.gid()));
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

/// Run as root (as operators often do), `rebuild` leaves every file it writes owned like the log directory,
/// so the broker, running as another user, can open them: the partition directory and its files, the
/// checkpoints it rewrote and the `.lock` it created.
#[tokio::test]
async fn files_are_owned_like_the_log_dir() {
    use std::os::unix::fs::{chown, MetadataExt};
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create a log directory owned by another user");
        return;
    }
    let (uid, gid) = (4242u32, 4343u32);
    let s = scenario(Faults::default()).await;
    std::fs::write(s.log_dir.join("recovery-point-offset-checkpoint"), "0\n1\norders 0 44\n").unwrap();
    std::fs::write(s.log_dir.join("replication-offset-checkpoint"), "0\n1\norders 0 44\n").unwrap();
    for (p, _, _) in owners(&s.log_dir) {
        chown(&p, Some(uid), Some(gid)).unwrap();
    }
    let r = s.run(&s.opts(StartAt::Offset(0))).await.unwrap();
    assert!(r.ok(), "{}", r.summary());
    let all = owners(&s.log_dir);
    assert!(all.iter().any(|(p, _, _)| p.ends_with("orders-0")), "{all:?}");
    assert!(all.iter().any(|(p, _, _)| p.ends_with(".lock")), "{all:?}");
    let wrong: Vec<_> = all.iter().filter(|(_, u, g)| (*u, *g) != (uid, gid)).collect();
    assert!(wrong.is_empty(), "files not owned by {uid}:{gid}: {wrong:?}");
    // An existing partition directory owned by yet another user keeps that owner (replaced with --force).
    let (uid2, gid2) = (4545u32, 4646u32);
    for (p, _, _) in owners(&s.dir()) {
        chown(&p, Some(uid2), Some(gid2)).unwrap();
    }
    let mut o = s.opts(StartAt::Offset(0));
    o.force = true;
    let r = s.run(&o).await.unwrap();
    assert!(r.ok() && r.partitions[0].replaced, "{}", r.summary());
    let m = std::fs::metadata(s.dir()).unwrap();
    assert_eq!((m.uid(), m.gid()), (uid2, gid2));
    let wrong: Vec<_> = owners(&s.dir()).into_iter().filter(|(_, u, g)| (*u, *g) != (uid2, gid2)).collect();
    assert!(wrong.is_empty(), "{wrong:?}");
}
