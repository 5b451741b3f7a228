//! `fasttier partition verify` and `show` as library calls: a partition directory written to a temporary
//! directory, both tiers in one `MemoryStore` (slow segments copied by the real `SlowTier`, WAL objects
//! appended by the real `WalWriter`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use fasttier_cli::partition::{show, verify, Stores, VerifyReport};
use fasttier_cli::wal_cmd;
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

const TOPIC_ID: &str = "AAAAAAAAAAAAAAAAAAAAAQ";

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("fasttier-cli-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The leader's log: offset `o` is one batch of one record; epoch 0 below 50, epoch 1 from 50.
fn epoch_of(o: i64) -> i32 {
    i32::from(o >= 50)
}

/// Batches `first..=last` of the log; `tag` 0 is the real data, anything else different bytes.
fn log_bytes(first: i64, last: i64, tag: u8) -> Vec<u8> {
    (first..=last).flat_map(|o| batch(o, epoch_of(o), 1, &[tag, o as u8, 7])).collect()
}

/// Knobs of the scenario: what differs from a healthy partition.
#[derive(Default, Clone, Copy)]
struct Faults {
    /// The slow segment 20..=39 holds different bytes at offset 25.
    slow_differs: bool,
    /// Neither stream uploaded 40..=44.
    gap: bool,
    /// Broker 2 uploads 50..=52 twice.
    duplicate: bool,
    /// Broker 2's copy of 45 differs from broker 1's (same epoch).
    conflict: bool,
}

struct Scenario {
    _tmp: TempDir,
    dir: PathBuf,
    stores: Stores,
}

/// Partition `orders-0`. Slow tier: segments 0..=19 and 20..=39. Fast tier: broker 1 (leader in epoch 0)
/// uploaded 40..=49 and, as a zombie, epoch-0 data at 50..=52 that the new leader does not have;
/// broker 2 (leader from epoch 1 at offset 50) re-uploaded its active segment from 40 and 50..=55.
/// Local log (broker 2): segment 0 already deleted, segment 20..=39, active segment 40..=59 ending in a
/// half-written batch.
async fn scenario(f: Faults) -> Scenario {
    let tmp = TempDir::new();
    let dir = tmp.0.join("orders-0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("partition.metadata"), format!("version: 0\ntopic_id: {TOPIC_ID}\n")).unwrap();
    std::fs::write(dir.join("00000000000000000020.log"), log_bytes(20, 39, 0)).unwrap();
    let mut active = log_bytes(40, 59, 0);
    active.extend_from_slice(&batch(60, 1, 1, b"half written")[..30]);
    std::fs::write(dir.join("00000000000000000040.log"), active).unwrap();
    std::fs::write(dir.join("leader-epoch-checkpoint"), "0\n2\n0 0\n1 50\n").unwrap();

    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let slow = SlowTier::new(
        store.clone(),
        SlowTierSettings {
            prefix: "slow/".into(),
            upload: UploadSettings {
                chunk_bytes: 256,
                part_bytes: 5 << 20,
                multipart_threshold_bytes: 5 << 20,
                concurrency: 1,
            },
            cache_bytes: 1 << 20,
            read_ahead_chunks: 0,
        },
        Arc::new(Metrics::default()),
    );
    let scratch = tmp.0.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    for (start, end, id) in [(0, 19, "AAAAAAAAAAAAAAAAAAAAAg"), (20, 39, "AAAAAAAAAAAAAAAAAAAAAw")] {
        let mut bytes = log_bytes(start, end, 0);
        if f.slow_differs && start == 20 {
            bytes = [log_bytes(20, 24, 0), log_bytes(25, 25, 9), log_bytes(26, 39, 0)].concat();
        }
        let p = |n: &str| scratch.join(format!("{start}.{n}"));
        std::fs::write(p("log"), &bytes).unwrap();
        for n in ["index", "timeindex", "snapshot"] {
            std::fs::write(p(n), b"").unwrap();
        }
        let req = CopyRequest {
            segment: SegmentRef::new("orders", TOPIC_ID, 0, start, id).unwrap(),
            end_offset: end,
            max_timestamp_ms: 0,
            broker_id: 1,
            segment_size: bytes.len() as u64,
            leader_epochs: vec![(0, start)],
            log: p("log"),
            offset_index: p("index"),
            time_index: p("timeindex"),
            transaction_index: None,
            producer_snapshot: p("snapshot"),
            leader_epoch_checkpoint: Default::default(),
        };
        slow.copy_segment(req, &Cancel::new()).await.unwrap();
    }

    let tid = parse_topic_id(TOPIC_ID).unwrap();
    let range = |b: &mut WalObjectBuilder, first: i64, last: i64, tag: u8| {
        b.add(tid, 0, epoch_of(first), first, last, log_bytes(first, last, tag).into()).unwrap();
    };
    let zombie = |b: &mut WalObjectBuilder| {
        let data: Vec<u8> = (50..=52).flat_map(|o| batch(o, 0, 1, &[5, o as u8])).collect();
        b.add(tid, 0, 0, 50, 52, data.into()).unwrap();
    };
    let mut w1 = WalWriter::open(store.clone(), "wal/", 1, WalWriterOptions::default()).await.unwrap();
    let mut w2 = WalWriter::open(store.clone(), "wal/", 2, WalWriterOptions::default()).await.unwrap();
    let mut b = WalObjectBuilder::new();
    if f.gap {
        range(&mut b, 45, 49, 0);
    } else {
        range(&mut b, 40, 49, 0);
    }
    w1.append(&b).await.unwrap();
    let mut b = WalObjectBuilder::new();
    zombie(&mut b);
    w1.append(&b).await.unwrap();
    let mut b = WalObjectBuilder::new();
    if !f.gap {
        range(&mut b, 40, 44, 0);
    }
    range(&mut b, 45, 45, if f.conflict { 3 } else { 0 });
    range(&mut b, 46, 49, 0);
    range(&mut b, 50, 52, 0);
    w2.append(&b).await.unwrap();
    let mut b = WalObjectBuilder::new();
    if f.duplicate {
        range(&mut b, 50, 52, 0);
    }
    range(&mut b, 53, 55, 0);
    w2.append(&b).await.unwrap();
    // Another partition in the same objects is ignored.
    let mut b = WalObjectBuilder::new();
    b.add(tid, 1, 0, 0, 0, batch(0, 0, 1, b"x").into()).unwrap();
    w2.append(&b).await.unwrap();

    let stores = Stores { slow: store.clone(), slow_prefix: "slow/".into(), wal: store, wal_prefix: "wal/".into() };
    Scenario { _tmp: tmp, dir, stores }
}

async fn run(f: Faults) -> VerifyReport {
    let s = scenario(f).await;
    verify(&s.stores, &s.dir).await.unwrap()
}

#[tokio::test]
async fn healthy_partition_verifies() {
    let r = run(Faults::default()).await;
    assert!(r.ok(), "{}", r.render());
    assert_eq!((r.topic.as_str(), r.partition, r.topic_id.as_str()), ("orders", 0, TOPIC_ID));
    assert_eq!((r.local_batches, r.local_log_start_offset, r.local_log_end_offset), (40, Some(20), Some(60)));
    assert!(r.local_tail.as_deref().unwrap().contains("incomplete"), "{:?}", r.local_tail);
    assert_eq!((r.tier_first_offset, r.last_uploaded_offset), (Some(0), Some(55)));
    assert_eq!((r.slow_segments, r.fast_ranges), (2, 7));
    // 20..=55 are in the tiers; 56..=59 are not uploaded yet.
    assert_eq!((r.checked, r.matched, r.mismatched, r.not_uploaded, r.missing, r.below_tiers), (36, 36, 0, 4, 0, 0));
    assert!(r.tier_gaps.is_empty());
    // Broker 2's re-upload of 40..=49 duplicates broker 1's; the zombie's 50..=52 are discarded.
    assert_eq!((r.duplicates, r.overlaps, r.conflicts, r.discarded), (0, 10, 0, 3));
    let j = r.to_json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["batches_checked"], 36);
    assert_eq!(j["local_not_uploaded"], 4);
    assert_eq!(j["last_uploaded_offset"], 55);
    assert_eq!(j["local_log_end_offset"], 60);
    assert_eq!(j["tier_gaps"], serde_json::json!([]));
}

#[tokio::test]
async fn a_differing_slow_segment_is_a_mismatch() {
    let r = run(Faults { slow_differs: true, ..Faults::default() }).await;
    assert!(!r.ok());
    assert_eq!((r.checked, r.matched, r.mismatched), (36, 35, 1));
    assert!(r.details.iter().any(|d| d.starts_with("MISMATCH 25..=25") && d.contains("slow/")), "{:?}", r.details);
}

#[tokio::test]
async fn a_gap_in_the_tiers_is_reported() {
    let r = run(Faults { gap: true, ..Faults::default() }).await;
    assert!(!r.ok());
    assert_eq!(r.tier_gaps, vec![(40, 44)]);
    assert_eq!((r.missing, r.checked, r.mismatched), (5, 31, 0));
    assert_eq!(r.to_json()["tier_gaps"], serde_json::json!([[40, 44]]));
}

#[tokio::test]
async fn duplicates_and_conflicts_fail() {
    let r = run(Faults { duplicate: true, ..Faults::default() }).await;
    assert!(!r.ok());
    assert_eq!((r.duplicates, r.conflicts, r.mismatched), (3, 0, 0));
    let r = run(Faults { conflict: true, ..Faults::default() }).await;
    assert!(!r.ok());
    assert_eq!(r.conflicts, 1);
    // Broker 1's copy is kept (lower broker id) and matches the local log.
    assert_eq!(r.mismatched, 0);
    assert!(r.details.iter().any(|d| d.starts_with("CONFLICT different bytes: 45..=45")), "{:?}", r.details);
}

#[tokio::test]
async fn show_and_wal_list() {
    let s = scenario(Faults::default()).await;
    let v = show(&s.stores, "orders", 0, None).await.unwrap();
    assert_eq!(v.coverage, vec![(0, 55)]);
    let j = v.to_json();
    assert_eq!(j["slow"]["segments"].as_array().unwrap().len(), 2);
    assert_eq!(j["fast"]["ranges"].as_array().unwrap().len(), 7);
    assert_eq!((j["fast"]["first_offset"].as_i64(), j["fast"]["last_offset"].as_i64()), (Some(40), Some(55)));
    assert_eq!(j["fast"]["discarded"], 3);
    assert_eq!(j["coverage"]["gaps"], serde_json::json!([]));
    let text = v.render();
    assert!(text.contains("coverage (slow ∪ fast): 0..=55; gaps: none"), "{text}");
    // An unknown topic needs its id.
    let e = show(&s.stores, "payments", 0, None).await.unwrap_err();
    assert!(e.to_string().contains("--topic-id"), "{e}");
    // The fast tier knows topics by id only: another id has nothing.
    let v = show(&s.stores, "payments", 0, Some("BAAAAAAAAAAAAAAAAAAAAQ")).await.unwrap();
    assert!(v.coverage.is_empty() && v.ranges.is_empty());
    assert!(v.render().contains("coverage (slow ∪ fast): nothing"));

    let j: serde_json::Value =
        serde_json::from_str(&wal_cmd::list(&s.stores.wal, "wal/", None, true).await.unwrap()).unwrap();
    let streams = j["streams"].as_array().unwrap();
    assert_eq!(streams.iter().map(|s| s["broker_id"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!((streams[1]["objects"].as_u64(), streams[1]["last_seq"].as_u64()), (Some(3), Some(2)));
    let j: serde_json::Value =
        serde_json::from_str(&wal_cmd::list(&s.stores.wal, "wal/", Some(2), true).await.unwrap()).unwrap();
    let entries: Vec<u64> = j["objects"].as_array().unwrap().iter().map(|o| o["entries"].as_u64().unwrap()).collect();
    assert_eq!(entries, vec![4, 1, 1]);
    let text = wal_cmd::list(&s.stores.wal, "wal/", Some(2), false).await.unwrap();
    assert!(text.lines().count() >= 6, "{text}");
    assert!(wal_cmd::list(&s.stores.wal, "wal/", Some(9), false).await.unwrap().contains("no stream"));
}

#[tokio::test]
async fn bad_directories_are_refused() {
    let tmp = TempDir::new();
    let stores = scenario(Faults::default()).await.stores;
    let e = verify(&stores, &tmp.0.join("not_a_partition")).await.unwrap_err();
    assert!(e.to_string().contains("--dir"), "{e}");
    let dir = tmp.0.join("orders-0");
    std::fs::create_dir_all(&dir).unwrap();
    let e = verify(&stores, &dir).await.unwrap_err();
    assert!(e.to_string().contains("partition.metadata"), "{e}");
    // A rolled segment that ends inside a batch is corrupt.
    std::fs::write(dir.join("partition.metadata"), format!("version: 0\ntopic_id: {TOPIC_ID}\n")).unwrap();
    std::fs::write(dir.join("00000000000000000020.log"), &log_bytes(20, 39, 0)[..100]).unwrap();
    std::fs::write(dir.join("00000000000000000040.log"), log_bytes(40, 59, 0)).unwrap();
    let e = verify(&stores, &dir).await.unwrap_err();
    assert!(e.to_string().contains("00000000000000000020.log"), "{e}");
}
