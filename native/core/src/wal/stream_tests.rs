//! Tests of the WAL stream protocol over [`MemoryStore`] and [`FaultyStore`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::format::{TopicId, WalHead, WalObjectBuilder, WalStamp};
use super::*;
use crate::error::Error;
use crate::store::faulty::{FaultKind, FaultyStore, Op, Target};
use crate::store::memory::MemoryStore;
use crate::store::{ObjectStore, PutOptions};

const PREFIX: &str = "t/";
const BROKER: i32 = 7;

fn tid(n: u8) -> TopicId {
    let mut t = [0u8; 16];
    t[3] = n;
    t
}

/// An object's content: a few partitions, bytes derived from `tag` so every object differs.
fn content(tag: u32) -> WalObjectBuilder {
    let mut b = WalObjectBuilder::new();
    for p in 0..3 {
        let data: Vec<u8> = (0..(50 + p * 10)).map(|i| (tag as usize * 31 + i * 7 + p) as u8).collect();
        let first = i64::from(tag) * 100;
        b.add(tid(p as u8 % 2), p as i32, 1, first, first + 9, Bytes::from(data)).unwrap();
    }
    b
}

fn mem() -> (Arc<MemoryStore>, Arc<dyn ObjectStore>) {
    let m = Arc::new(MemoryStore::new());
    (m.clone(), m)
}

fn faulty() -> (Arc<MemoryStore>, Arc<FaultyStore<MemoryStore>>, Arc<dyn ObjectStore>) {
    let m = Arc::new(MemoryStore::new());
    let f = Arc::new(FaultyStore::new(m.clone()));
    (m, f.clone(), f)
}

fn fast_reader() -> ReaderOptions {
    ReaderOptions { behind: BehindPolicy::Error, head_recheck: Duration::ZERO }
}

async fn writer(store: &Arc<dyn ObjectStore>) -> WalWriter {
    WalWriter::open(store.clone(), PREFIX, BROKER, WalWriterOptions::default()).await.unwrap()
}

async fn reader(store: &Arc<dyn ObjectStore>, start: StartAt) -> WalReader {
    WalReader::open(store.clone(), PREFIX, BROKER, start, fast_reader()).await.unwrap()
}

async fn head(store: &Arc<dyn ObjectStore>) -> WalHead {
    let key = head_key(PREFIX, BROKER);
    WalHead::decode(&key, &store.get(&key).await.unwrap()).unwrap()
}

/// Reads the whole stream from the oldest object, checking the chain; returns seq → (incarnation, bytes).
async fn read_all(store: &Arc<dyn ObjectStore>) -> BTreeMap<u64, (u64, Bytes)> {
    let mut r = reader(store, StartAt::Oldest).await;
    let mut out = BTreeMap::new();
    while let Some(o) = r.next().await.unwrap() {
        o.verify_data().unwrap();
        out.insert(o.seq(), (o.header().stamp.incarnation, o.bytes().clone()));
    }
    out
}

/// The seqs of every object in the store (via LIST, sorted here).
async fn stored_seqs(store: &Arc<dyn ObjectStore>) -> Vec<u64> {
    let dir = stream_prefix(PREFIX, BROKER);
    let mut seqs: Vec<u64> = store
        .list(&dir)
        .await
        .unwrap()
        .iter()
        .filter_map(|m| parse_object_name(m.key.strip_prefix(dir.as_str()).unwrap()))
        .collect();
    seqs.sort_unstable();
    seqs
}

#[tokio::test]
async fn append_and_read_back_with_ranges() {
    let (_, store) = mem();
    let mut w = writer(&store).await;
    assert_eq!((w.next_seq(), w.low_water()), (0, 0));
    let h = head(&store).await;
    assert_eq!((h.incarnation, h.next_seq, h.low_water), (w.incarnation(), 0, 0));
    for tag in 0..3 {
        let a = w.append(&content(tag)).await.unwrap();
        assert_eq!((a.seq, a.skipped, a.recovered), (u64::from(tag), 0, false));
        assert_eq!(a.key, object_key(PREFIX, BROKER, a.seq));
        assert_eq!(a.size, content(tag).object_len());
    }
    assert_eq!(w.head_lag(), 3);
    w.update_head().await.unwrap();
    assert_eq!(w.head_lag(), 0);
    assert_eq!(head(&store).await.next_seq, 3);

    let mut r = reader(&store, StartAt::Oldest).await;
    for tag in 0..3u32 {
        let o = r.next().await.unwrap().unwrap();
        assert_eq!(o.seq(), u64::from(tag));
        assert_eq!(o.header().stamp.incarnation, w.incarnation());
        let p = o.range(&tid(0), 2).unwrap().unwrap();
        assert_eq!(p.first_offset(), Some(i64::from(tag) * 100));
        let expect = WalObject::parse("x", content(tag).build(&o.header().stamp).unwrap().bytes).unwrap();
        assert_eq!(o.range(&tid(1), 1).unwrap(), expect.range(&tid(1), 1).unwrap());
    }
    assert!(r.next().await.unwrap().is_none());
    assert_eq!(r.position(), 3);
}

#[tokio::test]
async fn restart_resumes_without_gap_or_overwrite() {
    let (_, store) = mem();
    let mut w1 = writer(&store).await;
    for tag in 0..4 {
        w1.append(&content(tag)).await.unwrap();
    }
    // The head still says next_seq=0: the new writer must probe forward, not trust it.
    let inc1 = w1.incarnation();
    drop(w1);
    let mut w2 = writer(&store).await;
    assert_eq!(w2.next_seq(), 4);
    assert!(w2.incarnation() > inc1);
    assert_eq!(head(&store).await.incarnation, w2.incarnation());
    let a = w2.append(&content(4)).await.unwrap();
    assert_eq!((a.seq, a.skipped), (4, 0));
    let all = read_all(&store).await;
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(all[&3].0, inc1);
    assert_eq!(all[&4].0, w2.incarnation());
}

#[tokio::test]
async fn restart_recovers_from_missing_or_corrupt_head() {
    for damage in ["delete", "corrupt", "other-broker"] {
        let (m, store) = mem();
        let mut w = writer(&store).await;
        for tag in 0..6 {
            w.append(&content(tag)).await.unwrap();
        }
        w.update_head().await.unwrap();
        w.advance_low_water(2).await.unwrap();
        let hk = head_key(PREFIX, BROKER);
        match damage {
            "delete" => store.delete(&hk).await.unwrap(),
            "corrupt" => m.overwrite_raw(&hk, Bytes::from_static(b"FTWALHEAD1 00000000 2\n{}")),
            _ => {
                let mut h = head(&store).await;
                h.broker_id = BROKER + 1;
                m.overwrite_raw(&hk, Bytes::from(h.encode()));
            }
        }
        let mut w2 = writer(&store).await;
        assert_eq!((w2.next_seq(), w2.low_water(), w2.cleaned_below()), (6, 2, 2), "{damage}");
        assert_eq!(w2.append(&content(6)).await.unwrap().seq, 6);
        assert_eq!(read_all(&store).await.len(), 5, "{damage}");
    }
}

#[tokio::test]
async fn restart_never_reuses_seqs_of_vanished_objects() {
    let (_, f, store) = faulty();
    let mut w = writer(&store).await;
    for tag in 0..3 {
        w.append(&content(tag)).await.unwrap();
    }
    w.update_head().await.unwrap();
    // An operator deletes every object but not the head.
    for seq in 0..3 {
        store.delete(&object_key(PREFIX, BROKER, seq)).await.unwrap();
    }
    let mut w2 = writer(&store).await;
    assert_eq!((w2.next_seq(), w2.low_water(), w2.cleaned_below()), (3, 3, 3));
    let a = w2.append(&content(3)).await.unwrap();
    assert_eq!(a.seq, 3);
    assert_eq!(a.header.stamp.prev_header_crc, 0);
    f.reset_counters();
    assert_eq!(w2.advance_low_water(100).await.unwrap(), 0);
    assert_eq!(f.calls(Op::Delete), 0);
    assert_eq!(reader(&store, StartAt::Oldest).await.position(), 3);
}

#[tokio::test]
async fn indeterminate_put_is_recognised_as_own_object() {
    let (_, f, store) = faulty();
    let mut w = writer(&store).await;
    w.append(&content(0)).await.unwrap();
    // The PUT is applied but the caller sees a timeout.
    f.fail_next_after_apply(Op::Put, 1, FaultKind::Transient);
    let e = w.append(&content(1)).await.unwrap_err();
    assert!(matches!(e, Error::Transient { .. }), "{e}");
    assert!(w.has_pending());
    assert_eq!(w.next_seq(), 1);
    // Different content is refused while the outcome is unknown.
    let e = w.append(&content(2)).await.unwrap_err();
    assert!(e.to_string().contains("same content"), "{e}");
    // The retry meets its own object (412), reads it back, recognises it and moves on.
    let a = w.append(&content(1)).await.unwrap();
    assert_eq!((a.seq, a.recovered, a.skipped), (1, true, 0));
    assert!(!w.has_pending());
    assert_eq!(w.append(&content(2)).await.unwrap().seq, 2);
    assert_eq!(stored_seqs(&store).await, vec![0, 1, 2]);
    assert_eq!(read_all(&store).await.len(), 3);
}

#[tokio::test]
async fn determinate_failure_is_retried_at_the_same_seq() {
    let (_, f, store) = faulty();
    let mut w = writer(&store).await;
    f.fail_next(Op::Put, 2, FaultKind::Transient);
    assert!(w.append(&content(0)).await.is_err());
    assert!(w.append(&content(0)).await.is_err());
    let a = w.append(&content(0)).await.unwrap();
    assert_eq!((a.seq, a.recovered), (0, false));
    // A failed read-back after a 412 keeps the pending object and is retriable.
    f.fail_next_after_apply(Op::Put, 1, FaultKind::Transient);
    assert!(w.append(&content(1)).await.is_err());
    f.fail_next(Op::Get, 1, FaultKind::Transient);
    assert!(matches!(w.append(&content(1)).await.unwrap_err(), Error::Transient { .. }));
    assert_eq!(w.append(&content(1)).await.unwrap().seq, 1);
    assert!(!w.is_fenced());
}

#[tokio::test]
async fn vanished_conflict_object_is_transient_not_fenced() {
    let (_, f, store) = faulty();
    let mut w = writer(&store).await;
    // Something sits at seq 0, but the read-back after the 412 cannot find it (e.g. deleted in between).
    let key0 = object_key(PREFIX, BROKER, 0);
    store.put(&key0, Bytes::from_static(b"x"), PutOptions::default()).await.unwrap();
    f.fail_next(Op::Head, 1, FaultKind::NotFound);
    let e = w.append(&content(0)).await.unwrap_err();
    assert!(matches!(e, Error::Transient { op: "wal_append", .. }), "{e}");
    assert!(!w.is_fenced());
    // Now the read-back sees garbage at our seq: corrupt, naming the key.
    let e = w.append(&content(0)).await.unwrap_err();
    assert!(matches!(&e, Error::Corrupt { key, .. } if key == &key0), "{e}");
}

#[tokio::test]
async fn zombie_is_fenced_and_new_writer_skips_its_objects() {
    let (_, store) = mem();
    let mut a = writer(&store).await;
    a.append(&content(0)).await.unwrap();
    let mut b = writer(&store).await;
    assert!(b.incarnation() > a.incarnation());
    assert_eq!(b.next_seq(), 1);
    // The zombie writes seq 1 before the new writer's first append: allowed (not yet claimed).
    assert_eq!(a.append(&content(1)).await.unwrap().seq, 1);
    // B meets the older incarnation's object at 1, skips past it.
    let got = b.append(&content(10)).await.unwrap();
    assert_eq!((got.seq, got.skipped), (2, 1));
    // A's next append meets B's newer object: fenced for good.
    let e = a.append(&content(2)).await.unwrap_err();
    assert!(is_fenced_error(&e), "{e}");
    assert!(e.to_string().contains("zombie"), "{e}");
    assert!(a.is_fenced());
    assert!(is_fenced_error(&a.append(&content(2)).await.unwrap_err()));
    assert!(is_fenced_error(&a.update_head().await.unwrap_err()));
    assert!(is_fenced_error(&a.advance_low_water(2).await.unwrap_err()));
    // B continues; the stream has no gap, no fork, incarnations never decrease, the chain holds.
    assert_eq!(b.append(&content(11)).await.unwrap().seq, 3);
    let all = read_all(&store).await;
    let incs: Vec<u64> = all.values().map(|(i, _)| *i).collect();
    assert_eq!(incs, vec![a.incarnation(), a.incarnation(), b.incarnation(), b.incarnation()]);
}

#[tokio::test]
async fn zombie_maintenance_is_fenced_by_the_announced_head() {
    let (_, store) = mem();
    let mut a = writer(&store).await;
    a.append(&content(0)).await.unwrap();
    a.append(&content(1)).await.unwrap();
    let _b = writer(&store).await; // announces itself in the head
    let e = a.update_head().await.unwrap_err();
    assert!(is_fenced_error(&e), "{e}");
    assert_eq!(stored_seqs(&store).await, vec![0, 1]);
    let mut a2 = writer(&store).await;
    drop(a2.append(&content(2)).await.unwrap());
    // A writer that is told to use an incarnation not above what the stream holds refuses to open.
    let opts = WalWriterOptions { incarnation: Some(a2.incarnation()), ..Default::default() };
    let e = WalWriter::open(store.clone(), PREFIX, BROKER, opts).await.unwrap_err();
    assert!(is_fenced_error(&e), "{e}");
    let opts = WalWriterOptions { incarnation: Some(a2.incarnation() + 1), ..Default::default() };
    let w = WalWriter::open(store.clone(), PREFIX, BROKER, opts).await.unwrap();
    assert_eq!((w.incarnation(), w.next_seq()), (a2.incarnation() + 1, 3));
    assert!(a2.advance_low_water(1).await.is_err());
}

#[tokio::test]
async fn zombie_append_is_fenced_by_the_head_check_without_a_conflict() {
    let (_, f, store) = faulty();
    let opts = WalWriterOptions { fence_check_interval: Some(Duration::ZERO), ..Default::default() };
    let mut a = WalWriter::open(store.clone(), PREFIX, BROKER, opts.clone()).await.unwrap();
    a.append(&content(0)).await.unwrap();
    let b = WalWriter::open(store.clone(), PREFIX, BROKER, opts).await.unwrap();
    // B has not written any object, yet A stops before its next PUT.
    f.reset_counters();
    let e = a.append(&content(1)).await.unwrap_err();
    assert!(is_fenced_error(&e) && e.to_string().contains(&head_key(PREFIX, BROKER)), "{e}");
    assert_eq!(f.calls(Op::Put), 0);
    assert_eq!(stored_seqs(&store).await, vec![0]);
    assert_eq!(b.next_seq(), 1);
    // With the default interval the check costs one GET per second, not one per append.
    let mut c = writer(&store).await;
    f.reset_counters();
    for tag in 0..5 {
        c.append(&content(tag)).await.unwrap();
    }
    assert_eq!(f.calls(Op::Get), 0);
}

#[tokio::test]
async fn same_incarnation_collision_fences() {
    let (_, store) = mem();
    let mut a = writer(&store).await;
    a.append(&content(0)).await.unwrap();
    // Forge an object at seq 1 with A's incarnation but other bytes.
    let stamp =
        WalStamp { broker_id: BROKER, incarnation: a.incarnation(), seq: 1, prev_header_crc: 0, created_unix_ms: 0 };
    let forged = content(99).build(&stamp).unwrap().bytes;
    store.put(&object_key(PREFIX, BROKER, 1), forged, PutOptions::default()).await.unwrap();
    let e = a.append(&content(1)).await.unwrap_err();
    assert!(is_fenced_error(&e) && e.to_string().contains("same incarnation"), "{e}");
}

/// Two writers append concurrently on a multi-threaded runtime: every seq has exactly one object, the older
/// writer ends fenced (by a conflict or by its head check), the newer never is, and the stream reads back
/// gap-free with an intact chain, each object holding what its writer appended at that seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_never_fork_the_stream() {
    let mut fenced_rounds = 0;
    for round in 0..10u32 {
        let (_, f, store) = faulty();
        // The zombie checks the head every 5 ms: until then only object conflicts can stop it, and however
        // the race goes it must be stopped by then.
        let zombie = WalWriterOptions { fence_check_interval: Some(Duration::from_millis(5)), ..Default::default() };
        let mut old = WalWriter::open(store.clone(), PREFIX, BROKER, zombie).await.unwrap();
        old.append(&content(0)).await.unwrap();
        let opts = WalWriterOptions { fence_check_interval: None, ..Default::default() };
        let new = WalWriter::open(store.clone(), PREFIX, BROKER, opts).await.unwrap();
        let run = |mut w: WalWriter, base: u32| async move {
            let mut mine = BTreeMap::new();
            for i in 0..40u32 {
                let c = content(base + i);
                loop {
                    match w.append(&c).await {
                        Ok(a) => {
                            mine.insert(a.seq, c.clone());
                            break;
                        }
                        Err(e) if is_fenced_error(&e) => return (w, mine),
                        Err(Error::Transient { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                // The upload interval (scaled down).
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (w, mine)
        };
        // The zombie writes once more after the new writer opened; then both run, with store latency so
        // their requests interleave.
        old.append(&content(1)).await.unwrap();
        f.set_latency(Target::All, Duration::from_micros(200));
        let (ho, hn) = (tokio::spawn(run(old, 1000)), tokio::spawn(run(new, 5000)));
        let ((old, old_objs), (new, new_objs)) = (ho.await.unwrap(), hn.await.unwrap());
        f.set_latency(Target::All, Duration::ZERO);
        fenced_rounds += usize::from(old.is_fenced());
        assert!(!new.is_fenced(), "round {round}");
        assert_eq!(new_objs.len(), 40, "round {round}");
        assert!(old.is_fenced(), "round {round}");
        // Every seq exactly once; each holds what its writer appended there.
        let all = read_all(&store).await;
        let seqs: Vec<u64> = all.keys().copied().collect();
        assert_eq!(seqs, (0..all.len() as u64).collect::<Vec<_>>(), "round {round}");
        assert_eq!(stored_seqs(&store).await, seqs);
        assert_eq!(all.len(), 2 + old_objs.len() + new_objs.len(), "round {round}");
        for (seq, c) in old_objs.iter().chain(new_objs.iter()) {
            let (inc, bytes) = &all[seq];
            let w_inc = if new_objs.contains_key(seq) { new.incarnation() } else { old.incarnation() };
            assert_eq!(*inc, w_inc);
            let o = WalObject::parse("k", bytes.clone()).unwrap();
            assert_eq!(c.build(&o.header().stamp).unwrap().bytes, *bytes);
        }
    }
    assert_eq!(fenced_rounds, 10, "the zombie outlived the new writer");
}

#[tokio::test]
async fn reader_follows_a_growing_stream_from_the_tail() {
    let (_, store) = mem();
    let mut w = writer(&store).await;
    w.append(&content(0)).await.unwrap();
    w.append(&content(1)).await.unwrap();
    let mut r = reader(&store, StartAt::Tail).await;
    assert_eq!(r.position(), 2);
    assert!(r.next().await.unwrap().is_none());
    for tag in 2..6 {
        w.append(&content(tag)).await.unwrap();
        let o = r.next().await.unwrap().unwrap();
        assert_eq!(o.seq(), u64::from(tag));
        assert!(r.next().await.unwrap().is_none());
    }
    // A reader of an empty stream waits at 0.
    let (_, empty) = mem();
    let mut r = WalReader::open(empty.clone(), PREFIX, BROKER, StartAt::Oldest, fast_reader()).await.unwrap();
    assert!(r.next().await.unwrap().is_none());
    let mut w = writer(&empty).await;
    w.append(&content(0)).await.unwrap();
    assert_eq!(r.next().await.unwrap().unwrap().seq(), 0);
}

#[tokio::test]
async fn header_only_reads_and_ranged_partitions() {
    let (_, f, store) = faulty();
    let mut w = writer(&store).await;
    // 200 partitions: the header (11,268 bytes) is longer than the first ranged read.
    let mut big = WalObjectBuilder::new();
    for p in 0..200 {
        big.add(tid(9), p, 3, 10, 12, Bytes::from(vec![p as u8; 33])).unwrap();
    }
    w.append(&content(0)).await.unwrap();
    w.append(&big).await.unwrap();
    let mut r = reader(&store, StartAt::Seq(0)).await;
    let (k0, h0) = r.next_header().await.unwrap().unwrap();
    assert_eq!(h0.entries.len(), 3);
    let p = r.read_partition(&k0, &h0, &tid(0), 2).await.unwrap().unwrap();
    assert_eq!(p.data.len(), 70);
    f.reset_counters();
    let (k1, h1) = r.next_header().await.unwrap().unwrap();
    assert_eq!(f.calls(Op::GetRange), 2);
    assert_eq!(h1.entries.len(), 200);
    let p = r.read_partition(&k1, &h1, &tid(9), 150).await.unwrap().unwrap();
    assert_eq!(p.data, Bytes::from(vec![150u8; 33]));
    assert!(r.read_partition(&k1, &h1, &tid(9), 200).await.unwrap().is_none());
    // A corrupted ranged read is an error naming key and partition.
    f.corrupt_reads_containing(".wal");
    let e = r.read_partition(&k1, &h1, &tid(9), 150).await.unwrap_err().to_string();
    assert!(e.contains(&k1) && e.contains("partition=150"), "{e}");
    assert!(r.next_header().await.unwrap().is_none());
}

#[tokio::test]
async fn low_water_cleanup_and_readers_that_fall_behind() {
    let (_, store) = mem();
    let mut w = writer(&store).await;
    for tag in 0..10 {
        w.append(&content(tag)).await.unwrap();
    }
    let mut behind = reader(&store, StartAt::Seq(2)).await;
    let mut skipper = WalReader::open(
        store.clone(),
        PREFIX,
        BROKER,
        StartAt::Seq(1),
        ReaderOptions { behind: BehindPolicy::SkipToOldest, head_recheck: Duration::ZERO },
    )
    .await
    .unwrap();
    assert_eq!(w.advance_low_water(6).await.unwrap(), 6);
    assert_eq!((w.low_water(), w.cleaned_below()), (6, 6));
    assert_eq!(head(&store).await.low_water, 6);
    assert_eq!(stored_seqs(&store).await, (6..10).collect::<Vec<_>>());
    // Idempotent, monotone.
    assert_eq!(w.advance_low_water(3).await.unwrap(), 0);
    assert_eq!(w.low_water(), 6);
    // A reader at a deleted seq: error naming the key (default policy) ...
    let e = behind.next().await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { key } if key == &object_key(PREFIX, BROKER, 2)), "{e}");
    assert_eq!(behind.position(), 2);
    // ... or a skip to the oldest retained object.
    assert_eq!(skipper.next().await.unwrap().unwrap().seq(), 6);
    assert_eq!(skipper.skipped_objects(), 5);
    // New readers start at the low-water mark.
    let mut r = reader(&store, StartAt::Oldest).await;
    assert_eq!(r.position(), 6);
    assert_eq!(r.next().await.unwrap().unwrap().seq(), 6);
    // The newest object is never deleted.
    assert_eq!(w.advance_low_water(u64::MAX).await.unwrap(), 3);
    assert_eq!(stored_seqs(&store).await, vec![9]);
    assert_eq!(w.low_water(), 9);
    let mut r = reader(&store, StartAt::Oldest).await;
    assert_eq!(r.next().await.unwrap().unwrap().seq(), 9);
    assert!(r.next().await.unwrap().is_none());
    // A restarted writer continues after the newest object with the right chain.
    let mut w2 = writer(&store).await;
    assert_eq!((w2.next_seq(), w2.low_water()), (10, 9));
    w2.append(&content(10)).await.unwrap();
    assert_eq!(read_all(&store).await.keys().copied().collect::<Vec<_>>(), vec![9, 10]);
}

#[tokio::test]
async fn interrupted_cleanup_resumes_and_restart_finds_leftovers() {
    let (_, f, store) = faulty();
    let mut w = writer(&store).await;
    for tag in 0..10 {
        w.append(&content(tag)).await.unwrap();
    }
    assert_eq!(w.advance_low_water(2).await.unwrap(), 2);
    // The next round's first delete fails: the head already says 8, the objects from 2 on stay.
    f.fail_next(Op::Delete, 1, FaultKind::Transient);
    let res = w.advance_low_water(8).await;
    assert!(res.is_err());
    assert_eq!((w.low_water(), w.cleaned_below()), (8, 2));
    assert_eq!(stored_seqs(&store).await, (2..10).collect::<Vec<_>>());
    // A restarted writer finds the leftovers below the low-water mark and removes them on its next round.
    drop(w);
    let mut w2 = writer(&store).await;
    assert_eq!((w2.low_water(), w2.cleaned_below(), w2.next_seq()), (8, 2, 10));
    assert_eq!(w2.advance_low_water(8).await.unwrap(), 6);
    assert_eq!(stored_seqs(&store).await, vec![8, 9]);
    // Readers never start on a leftover below the low-water mark.
    assert_eq!(reader(&store, StartAt::Oldest).await.position(), 8);
}

#[tokio::test]
async fn corrupt_truncated_and_forked_objects_are_errors_naming_the_key() {
    let (m, f, store) = faulty();
    let mut w = writer(&store).await;
    for tag in 0..4 {
        w.append(&content(tag)).await.unwrap();
    }
    let key1 = object_key(PREFIX, BROKER, 1);
    // Bit flip on the way.
    f.corrupt_reads_matching({
        let k = key1.clone();
        move |key| key == k
    });
    let mut r = reader(&store, StartAt::Seq(0)).await;
    r.next().await.unwrap().unwrap();
    // The flipped (middle) byte lies in the header: the object is rejected as a whole.
    let e = r.next().await.unwrap_err();
    assert!(matches!(&e, Error::Corrupt { key, .. } if key == &key1), "{e}");
    assert_eq!(r.position(), 1);
    f.clear_corruption();
    assert_eq!(r.next().await.unwrap().unwrap().seq(), 1);
    // A truncated object.
    let key2 = object_key(PREFIX, BROKER, 2);
    let full = store.get(&key2).await.unwrap();
    m.overwrite_raw(&key2, full.slice(..full.len() - 1));
    let e = r.next().await.unwrap_err();
    assert!(matches!(&e, Error::Corrupt { key, .. } if key == &key2), "{e}");
    // A well-formed object that does not chain to its predecessor (a rewritten stream).
    let o = WalObject::parse(&key2, full).unwrap();
    let forged = WalStamp { prev_header_crc: o.header().stamp.prev_header_crc ^ 1, ..o.header().stamp };
    m.overwrite_raw(&key2, content(2).build(&forged).unwrap().bytes);
    let e = r.next().await.unwrap_err().to_string();
    assert!(e.contains("chain broken") && e.contains(&key2), "{e}");
    // An object stored under the wrong key.
    let wrong = WalStamp { seq: 7, ..o.header().stamp };
    m.overwrite_raw(&key2, content(2).build(&wrong).unwrap().bytes);
    let e = r.next().await.unwrap_err().to_string();
    assert!(e.contains("seq=7") && e.contains(&key2), "{e}");
}

#[tokio::test]
async fn reader_rereads_the_head_only_after_the_recheck_interval() {
    let (_, f, store) = faulty();
    let mut w = writer(&store).await;
    w.append(&content(0)).await.unwrap();
    let opts = ReaderOptions { behind: BehindPolicy::Error, head_recheck: Duration::from_secs(3600) };
    let mut r = WalReader::open(store.clone(), PREFIX, BROKER, StartAt::Tail, opts).await.unwrap();
    f.reset_counters();
    for _ in 0..5 {
        assert!(r.next().await.unwrap().is_none());
    }
    // One GET per poll, no head reads.
    assert_eq!(f.calls(Op::Get), 5);
    assert_eq!(f.total_calls(), 5);
}

#[tokio::test]
async fn retention_index_loads_and_drives_cleanup() {
    let (_, store) = mem();
    let mut w = writer(&store).await;
    let mut idx = RetentionIndex::new();
    for tag in 0..5 {
        let a = w.append(&content(tag)).await.unwrap();
        idx.record(&a.header).unwrap();
    }
    // Slow tier holds offsets < 250 of every partition: objects 0..=1 (last offsets 9, 109) are covered,
    // object 2 (offsets 200..=209) too, object 3 (300..) is not.
    let lw = idx.low_water(i64::MAX, 0, |_, _, last| last < 250).unwrap();
    assert_eq!(lw, 3);
    assert_eq!(w.advance_low_water(lw).await.unwrap(), 3);
    idx.forget_below(w.low_water());
    // A restarted writer rebuilds the index from the retained headers.
    let w2 = writer(&store).await;
    let mut idx2 = RetentionIndex::new();
    idx2.load(store.as_ref(), PREFIX, BROKER, w2.low_water()..w2.next_seq()).await.unwrap();
    assert_eq!((idx2.len(), idx2.oldest_seq()), (2, Some(3)));
    assert_eq!(idx2.low_water(i64::MAX, 0, |_, _, _| true), Some(4));
}

mod fault_schedules {
    use super::*;
    use proptest::prelude::*;

    /// What goes wrong on one attempt of an append.
    #[derive(Debug, Clone, Copy)]
    enum Fault {
        None,
        /// The PUT never reaches the store.
        PutBefore,
        /// The PUT is stored but the caller sees a timeout.
        PutAfter,
        /// The PUT is stored, the caller sees a timeout, and the next read-back fails too.
        PutAfterThenGet,
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![Just(Fault::None), Just(Fault::PutBefore), Just(Fault::PutAfter), Just(Fault::PutAfterThenGet)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever mix of determinate and indeterminate failures happens, retrying with the same content
        /// yields exactly the appended objects, in order, each once.
        #[test]
        fn retries_under_faults_give_exactly_the_appended_stream(
            schedule in prop::collection::vec(prop::collection::vec(fault(), 0..4), 1..12),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (_, f, store) = faulty();
                let mut w = writer(&store).await;
                for (i, faults) in schedule.iter().enumerate() {
                    let c = content(i as u32);
                    for fault in faults {
                        match fault {
                            Fault::None => {}
                            Fault::PutBefore => f.fail_next(Op::Put, 1, FaultKind::Transient),
                            Fault::PutAfter => f.fail_next_after_apply(Op::Put, 1, FaultKind::Transient),
                            Fault::PutAfterThenGet => {
                                f.fail_next_after_apply(Op::Put, 1, FaultKind::Transient);
                                f.fail_next(Op::Get, 1, FaultKind::Transient);
                            }
                        }
                        // An attempt may still succeed (e.g. the read-back fault hits a later call).
                        let _ = w.append(&c).await;
                        f.clear_faults();
                        if !w.has_pending() {
                            break;
                        }
                    }
                    if w.has_pending() || w.next_seq() == i as u64 {
                        let a = w.append(&c).await.unwrap();
                        assert_eq!(a.seq, i as u64);
                    }
                    assert_eq!(w.next_seq(), i as u64 + 1);
                }
                let all = read_all(&store).await;
                assert_eq!(all.len(), schedule.len());
                for (seq, (_, bytes)) in &all {
                    let o = WalObject::parse("k", bytes.clone()).unwrap();
                    assert_eq!(&content(*seq as u32).build(&o.header().stamp).unwrap().bytes, bytes);
                }
                assert_eq!(stored_seqs(&store).await, (0..schedule.len() as u64).collect::<Vec<_>>());
            });
        }
    }
}
