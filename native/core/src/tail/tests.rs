//! Tests of the log tailer against synthetic partition directories written the way Kafka writes them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use super::segments::log_path;
use super::*;
use crate::format::batch::testing::{batch, BatchSpec};

/// A partition directory in a temporary log dir.
struct Log {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Log {
    fn new() -> Log {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("topic-0");
        fs::create_dir(&dir).unwrap();
        Log { _tmp: tmp, dir }
    }

    fn seg(&self, base: i64) -> PathBuf {
        log_path(&self.dir, base)
    }

    fn create(&self, base: i64) {
        File::create(self.seg(base)).unwrap();
    }

    /// A preallocated (zero-filled) segment of `size` bytes, as with `log.preallocate=true`.
    fn preallocate(&self, base: i64, size: u64) {
        File::create(self.seg(base)).unwrap().set_len(size).unwrap();
    }

    fn append(&self, base: i64, bytes: &[u8]) {
        OpenOptions::new().append(true).create(true).open(self.seg(base)).unwrap().write_all(bytes).unwrap();
    }

    fn write_at(&self, base: i64, pos: u64, bytes: &[u8]) {
        OpenOptions::new().write(true).open(self.seg(base)).unwrap().write_all_at(bytes, pos).unwrap();
    }

    fn set_len(&self, base: i64, len: u64) {
        OpenOptions::new().write(true).open(self.seg(base)).unwrap().set_len(len).unwrap();
    }

    fn len(&self, base: i64) -> u64 {
        fs::metadata(self.seg(base)).unwrap().len()
    }

    fn rename_deleted(&self, base: i64) {
        let p = self.seg(base);
        fs::rename(&p, p.with_extension("log.deleted")).unwrap();
    }

    fn tailer(&self, start: i64) -> PartitionTailer {
        PartitionTailer::new(self.dir.clone(), start).with_options(opts())
    }
}

/// Test options: corruption reported at first sight.
fn opts() -> TailerOptions {
    TailerOptions { corrupt_confirm_after: Duration::ZERO, ..TailerOptions::default() }
}

/// A batch of `n` records at `base` with leader epoch `epoch`; its size varies with the base offset.
fn b(base: i64, epoch: i32, n: i32) -> Vec<u8> {
    batch(base, epoch, n, &vec![base as u8; 10 + (base % 7) as usize])
}

/// Consecutive one-record batches `from..to` with `epoch`.
fn run(from: i64, to: i64, epoch: i32) -> Vec<Vec<u8>> {
    (from..to).map(|o| b(o, epoch, 1)).collect()
}

fn cat(batches: &[Vec<u8>]) -> Vec<u8> {
    batches.concat()
}

fn data(ev: TailEvent) -> TailChunk {
    match ev {
        TailEvent::Data(c) => c,
        other => panic!("expected data, got {other:?}"),
    }
}

/// Polls until `Idle`, returning the chunks; any other event fails the test.
fn drain(t: &mut PartitionTailer, max_bytes: usize) -> Vec<TailChunk> {
    let mut out = Vec::new();
    loop {
        match t.poll(max_bytes).unwrap() {
            TailEvent::Idle => return out,
            TailEvent::Data(c) => out.push(c),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn drained_bytes(t: &mut PartitionTailer) -> Vec<u8> {
    drain(t, 1 << 20).iter().flat_map(|c| c.bytes.to_vec()).collect()
}

#[test]
fn half_written_batch_waits_for_the_rest() {
    let log = Log::new();
    let (b0, b1) = (b(0, 0, 2), b(2, 0, 3));
    log.append(0, &b0);
    log.append(0, &b1[..b1.len() / 2]);
    let mut t = log.tailer(0);
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.first_offset, c.last_offset, c.batch_count), (0, 1, 1));
    assert_eq!(&c.bytes[..], &b0[..]);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    // The rest arrives one byte at a time: nothing until the last byte.
    for i in b1.len() / 2..b1.len() - 1 {
        log.append(0, &b1[i..i + 1]);
        assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle, "byte {i}");
    }
    log.append(0, &b1[b1.len() - 1..]);
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.first_offset, c.last_offset, c.file_position), (2, 4, b0.len() as u64));
    assert_eq!(&c.bytes[..], &b1[..]);
    assert_eq!(t.next_offset(), 5);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
}

#[test]
fn empty_directory_and_empty_segment_are_idle() {
    let log = Log::new();
    let mut t = log.tailer(0);
    assert_eq!(t.poll(100).unwrap(), TailEvent::Idle);
    log.create(0);
    assert_eq!(t.poll(100).unwrap(), TailEvent::Idle);
    log.append(0, &b(0, 0, 1));
    assert_eq!(data(t.poll(100).unwrap()).first_offset, 0);
}

#[test]
fn reads_across_segment_rolls() {
    let log = Log::new();
    let seg0 = run(0, 5, 0);
    log.append(0, &cat(&seg0));
    let mut t = log.tailer(0);
    assert_eq!(drained_bytes(&mut t), cat(&seg0));

    // More data in segment 0, then a roll to 6 with data, before the next poll: segment 0 is finished
    // first, then the new one is read.
    let late = b(5, 0, 1);
    log.append(0, &late);
    let seg6 = run(6, 9, 1);
    log.append(6, &cat(&seg6));
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.segment_base_offset, c.first_offset, c.last_offset), (0, 5, 5));
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.segment_base_offset, c.first_offset, c.last_offset, c.file_position), (6, 6, 8, 0));
    assert_eq!(&c.bytes[..], &cat(&seg6)[..]);
    assert_eq!(c.epochs, vec![EpochRun { epoch: 1, start_offset: 6, byte_offset: 0 }]);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);

    // An empty new segment, then data in it.
    log.create(9);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    assert_eq!(t.position(), Some((9, 0)));
    log.append(9, &b(9, 1, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 9);

    // Several rolls between two polls.
    for base in 10..14 {
        log.append(base, &b(base, 1, 1));
    }
    let chunks = drain(&mut t, 1 << 20);
    assert_eq!(chunks.iter().map(|c| c.first_offset).collect::<Vec<_>>(), vec![10, 11, 12, 13]);
}

#[test]
fn idle_in_a_fresh_empty_segment_uses_the_fast_path() {
    let log = Log::new();
    log.append(0, &b(0, 0, 1));
    log.create(1);
    for base in [0, 1] {
        let old = SystemTime::now() - Duration::from_secs(5);
        OpenOptions::new().write(true).open(log.seg(base)).unwrap().set_modified(old).unwrap();
    }
    let mut t = log.tailer(0);
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 0);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    assert_eq!(t.position(), Some((1, 0)));
    // An empty segment cannot roll: the fast path is the one stat of the segment.
    assert_eq!(t.idle.as_ref().unwrap().next_path, None);
    let slow = t.slow_polls;
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    assert_eq!(t.slow_polls, slow);
    log.append(1, &b(1, 0, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 1);
}

#[test]
fn roll_to_an_unexpected_base_is_found_by_the_full_check() {
    let log = Log::new();
    log.append(0, &cat(&run(0, 3, 0)));
    let mut t = log.tailer(0).with_options(TailerOptions { full_check_interval: Duration::ZERO, ..opts() });
    drain(&mut t, 1 << 20);
    // Kafka rolls at max(expected next offset, log end): a base above the log end leaves a gap.
    log.append(10, &b(10, 0, 1));
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Missing { from_offset: 3, to_offset: 10 });
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 10);
}

#[test]
fn start_offset_inside_segments_and_at_boundaries() {
    let log = Log::new();
    let seg0 = run(0, 10, 0);
    let seg10 = run(10, 20, 1);
    log.append(0, &cat(&seg0));
    log.append(10, &cat(&seg10));

    // In the middle of the first segment, on a batch boundary.
    let mut t = log.tailer(4);
    let chunks = drain(&mut t, 1 << 20);
    assert_eq!(chunks[0].first_offset, 4);
    assert_eq!(chunks[0].file_position, cat(&seg0[..4]).len() as u64);
    let got: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.to_vec()).collect();
    assert_eq!(got, [cat(&seg0[4..]), cat(&seg10)].concat());

    // At the boundary between the segments (end of segment 0 = base of segment 10).
    let mut t = log.tailer(10);
    let chunks = drain(&mut t, 1 << 20);
    assert_eq!((chunks[0].segment_base_offset, chunks[0].first_offset), (10, 10));
    assert_eq!(chunks.len(), 1);

    // At the log end: idle until new data.
    let mut t = log.tailer(20);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    assert_eq!(t.position(), Some((10, cat(&seg10).len() as u64)));
    log.append(10, &b(20, 1, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 20);
}

#[test]
fn start_offset_inside_a_batch_returns_the_whole_batch() {
    let log = Log::new();
    let bs = [b(0, 0, 5), b(5, 0, 5), b(10, 0, 5)];
    log.append(0, &cat(&bs));
    let mut t = log.tailer(7);
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.first_offset, c.last_offset), (5, 14));
    assert_eq!(&c.bytes[..], &cat(&bs[1..])[..]);
}

#[test]
fn start_outside_the_local_log() {
    let log = Log::new();
    log.append(100, &cat(&run(100, 110, 0)));
    // Below the log start: the missing range is reported, then data from the log start.
    let mut t = log.tailer(50);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Missing { from_offset: 50, to_offset: 100 });
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 100);
    // Beyond the log end: the store holds offsets this log does not have.
    let mut t = log.tailer(120);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Truncated { at_offset: 110 });
    assert_eq!(t.next_offset(), 110);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    log.append(100, &b(110, 1, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 110);
}

/// Writes Kafka's offset index for a segment: an entry (last offset of the batch, its position) every
/// `every` batches, followed by a preallocated zero tail.
fn write_index(log: &Log, base: i64, batches: &[Vec<u8>], every: usize) {
    let mut idx = Vec::new();
    let mut pos = 0u32;
    for (i, bb) in batches.iter().enumerate() {
        if i % every == every - 1 {
            let h = BatchHeader::parse(bb, 0).unwrap().unwrap();
            idx.extend_from_slice(&((h.last_offset() - base) as i32).to_be_bytes());
            idx.extend_from_slice(&pos.to_be_bytes());
        }
        pos += bb.len() as u32;
    }
    idx.resize(idx.len() + 800, 0);
    fs::write(log.dir.join(format!("{base:020}.index")), idx).unwrap();
}

#[test]
fn start_offset_is_found_with_the_offset_index() {
    let log = Log::new();
    let bs: Vec<Vec<u8>> = (0..200).map(|i| b(1000 + 2 * i, 0, 2)).collect();
    log.append(1000, &cat(&bs));
    write_index(&log, 1000, &bs, 10);
    for start in [1000, 1002, 1150, 1151, 1298, 1398, 1400] {
        let mut t = log.tailer(start);
        let chunks = drain(&mut t, 1 << 20);
        let first = (start - 1000) as usize / 2;
        let got: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.to_vec()).collect();
        assert_eq!(got, cat(&bs[first.min(200)..]), "start={start}");
    }
    // A garbage index is only a hint: the result is the same.
    fs::write(log.dir.join("00000000000000001000.index"), vec![0x5au8; 4000]).unwrap();
    let mut t = log.tailer(1150);
    assert_eq!(drain(&mut t, 1 << 20)[0].first_offset, 1150);
    // An index pointing into the middle of a batch.
    let mut idx = 200i32.to_be_bytes().to_vec();
    idx.extend_from_slice(&7u32.to_be_bytes());
    fs::write(log.dir.join("00000000000000001000.index"), idx).unwrap();
    let mut t = log.tailer(1300);
    assert_eq!(drain(&mut t, 1 << 20)[0].first_offset, 1300);
}

#[test]
fn preallocated_segment_zero_tail_is_end_of_data() {
    let log = Log::new();
    log.preallocate(0, 1 << 20);
    let bs = run(0, 4, 0);
    let mut pos = 0;
    for bb in &bs[..2] {
        log.write_at(0, pos, bb);
        pos += bb.len() as u64;
    }
    let mut t = log.tailer(0);
    assert_eq!(drained_bytes(&mut t), cat(&bs[..2]));
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    // The size does not change; the data does.
    for bb in &bs[2..] {
        log.write_at(0, pos, bb);
        pos += bb.len() as u64;
    }
    assert_eq!(log.len(0), 1 << 20);
    assert_eq!(drained_bytes(&mut t), cat(&bs[2..]));

    // Roll as Kafka does: trim the old segment to its data, then create the new (preallocated) one.
    log.set_len(0, pos);
    log.preallocate(4, 1 << 20);
    log.write_at(4, 0, &b(4, 0, 1));
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.segment_base_offset, c.first_offset), (4, 4));

    // A rolled segment that kept its zero tail (not trimmed) is finished too.
    log.write_at(4, b(4, 0, 1).len() as u64, &b(5, 0, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 5);
    log.preallocate(6, 1 << 20);
    log.write_at(6, 0, &b(6, 0, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).segment_base_offset, 6);
}

#[test]
fn preallocated_write_in_progress_is_not_corruption() {
    let log = Log::new();
    log.preallocate(0, 4096);
    let (b0, b1) = (b(0, 0, 1), batch(1, 0, 1, &[7; 300]));
    log.write_at(0, 0, &b0);
    let mut t =
        log.tailer(0).with_options(TailerOptions { corrupt_confirm_after: Duration::from_secs(3600), ..opts() });
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 0);
    // Half of the next batch: header present, the rest still zeros (a CRC mismatch for now).
    log.write_at(0, b0.len() as u64, &b1[..150]);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    log.write_at(0, b0.len() as u64 + 150, &b1[150..]);
    assert_eq!(&data(t.poll(1 << 20).unwrap()).bytes[..], &b1[..]);
}

#[test]
fn idle_fast_path_sees_new_data_in_preallocated_file() {
    let log = Log::new();
    log.preallocate(0, 1 << 16);
    log.write_at(0, 0, &b(0, 0, 1));
    let old = SystemTime::now() - Duration::from_secs(5);
    OpenOptions::new().write(true).open(log.seg(0)).unwrap().set_modified(old).unwrap();
    let mut t = log.tailer(0);
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 0);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    assert!(t.idle.is_some(), "settled mtime: the fast path is armed");
    let slow = t.slow_polls;
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    assert_eq!(t.slow_polls, slow);
    log.write_at(0, b(0, 0, 1).len() as u64, &b(1, 0, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 1);
}

#[test]
fn crc_corruption_is_reported_with_position() {
    let log = Log::new();
    let (b0, mut b1, b2) = (b(0, 0, 1), b(1, 0, 1), b(2, 0, 1));
    let n = b1.len();
    b1[n - 1] ^= 0xff;
    log.append(0, &[b0.clone(), b1, b2].concat());
    let mut t = log.tailer(0);
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!(c.last_offset, 0);
    let e = t.poll(1 << 20).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.class(), crate::error::ErrorClass::Fatal);
    assert!(msg.starts_with("corrupt object: key="), "{msg}");
    assert!(msg.contains("00000000000000000000.log"), "{msg}");
    assert!(msg.contains(&format!("position={} base_offset=1 crc32c stored=", b0.len())), "{msg}");
    assert!(msg.contains("segment=0 expected_offset=1"), "{msg}");
    // The position is unchanged: polling again reports it again.
    assert!(t.poll(1 << 20).is_err());
    assert_eq!(t.next_offset(), 1);

    // With a confirmation period, the error comes only once the bytes have stayed bad that long.
    let mut t =
        log.tailer(1).with_options(TailerOptions { corrupt_confirm_after: Duration::from_millis(100), ..opts() });
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    std::thread::sleep(Duration::from_millis(120));
    assert!(t.poll(1 << 20).unwrap_err().to_string().contains("crc32c"));
}

#[test]
fn bad_magic_and_bad_length_are_corruption() {
    for (field_at, value, expect) in
        [(crate::format::batch::field::MAGIC, vec![1u8], "magic=1"), (8, 5i32.to_be_bytes().to_vec(), "length=5")]
    {
        let log = Log::new();
        let mut b1 = b(1, 0, 1);
        b1[field_at..field_at + value.len()].copy_from_slice(&value);
        log.append(0, &[b(0, 0, 1), b1].concat());
        let mut t = log.tailer(0);
        data(t.poll(1 << 20).unwrap());
        let msg = t.poll(1 << 20).unwrap_err().to_string();
        assert!(msg.contains(expect), "{msg}");
    }
}

#[test]
fn incomplete_batch_at_the_end_of_a_rolled_segment_is_corruption() {
    let log = Log::new();
    let b1 = b(1, 0, 1);
    log.append(0, &[b(0, 0, 1), b1[..20].to_vec()].concat());
    let mut t = log.tailer(0);
    data(t.poll(1 << 20).unwrap());
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    log.append(1, &b(1, 0, 1));
    let msg = t.poll(1 << 20).unwrap_err().to_string();
    assert!(msg.contains("incomplete record batch at the end of a rolled segment"), "{msg}");
}

#[test]
fn corrupt_header_in_a_rolled_segment_is_an_error_when_locating() {
    let log = Log::new();
    let bs = run(0, 6, 0);
    let mut s0 = cat(&bs);
    s0[cat(&bs[..2]).len() + crate::format::batch::field::MAGIC] = 7;
    log.append(0, &s0);
    log.append(6, &b(6, 0, 1));
    let mut t = log.tailer(4);
    let msg = t.poll(1 << 20).unwrap_err().to_string();
    assert!(msg.contains(&format!("position={} base_offset=2 magic=7", cat(&bs[..2]).len())), "{msg}");
    // Errors leave the tailer as it was: it reports again.
    assert!(t.poll(1 << 20).is_err());
}

#[test]
fn negative_last_offset_delta_is_corruption() {
    let log = Log::new();
    let mut b1 = BatchSpec::new(1, 1).build();
    b1[23..27].copy_from_slice(&(-2i32).to_be_bytes());
    let crc = crate::format::crc32c(&b1[21..]);
    b1[17..21].copy_from_slice(&crc.to_be_bytes());
    log.append(0, &[b(0, 0, 1), b1].concat());
    let mut t = log.tailer(0);
    data(t.poll(1 << 20).unwrap());
    assert!(t.poll(1 << 20).unwrap_err().to_string().contains("last_offset_delta=-2 is negative"));
}

#[test]
fn tailer_is_send() {
    fn send<T: Send>() {}
    send::<PartitionTailer>();
}

#[test]
fn truncation_by_shrinking_is_reported() {
    let log = Log::new();
    let bs = run(0, 10, 0);
    log.append(0, &cat(&bs));
    let mut t = log.tailer(0);
    assert_eq!(drained_bytes(&mut t).len(), cat(&bs).len());
    // A follower truncation: the log now ends after offset 5.
    log.set_len(0, cat(&bs[..6]).len() as u64);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Truncated { at_offset: 6 });
    assert_eq!(t.next_offset(), 6);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    let new = run(6, 8, 1);
    log.append(0, &cat(&new));
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.first_offset, c.last_offset), (6, 7));
    assert_eq!(&c.bytes[..], &cat(&new)[..]);
}

#[test]
fn truncation_with_many_chunks_finds_the_divergence() {
    let log = Log::new();
    let bs = run(0, 40, 0);
    log.append(0, &cat(&bs));
    let mut t = log.tailer(0);
    // Small chunks: many fingerprints; the divergence lies far below the last one.
    let chunks = drain(&mut t, 100);
    assert!(chunks.len() > 20);
    log.set_len(0, cat(&bs[..3]).len() as u64);
    log.append(0, &cat(&run(3, 50, 2)));
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Truncated { at_offset: 3 });
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.first_offset, c.last_offset, c.epochs[0].epoch), (3, 49, 2));
}

#[test]
fn rewrite_with_a_new_epoch_is_detected_even_at_identical_positions() {
    let log = Log::new();
    // Same sizes in the rewrite: the old read position falls exactly on a batch boundary of the new data.
    let bs: Vec<Vec<u8>> = (0..10).map(|o| batch(o, 0, 1, &[1; 20])).collect();
    log.append(0, &cat(&bs));
    let mut t = log.tailer(0);
    drain(&mut t, 1 << 20);
    let new: Vec<Vec<u8>> = (6..14).map(|o| batch(o, 3, 1, &[1; 20])).collect();
    log.set_len(0, cat(&bs[..6]).len() as u64);
    log.append(0, &cat(&new));
    assert!(log.len(0) > cat(&bs).len() as u64);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Truncated { at_offset: 6 });
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.first_offset, c.last_offset), (6, 13));
    assert_eq!(c.epochs, vec![EpochRun { epoch: 3, start_offset: 6, byte_offset: 0 }]);
    assert_eq!(&c.bytes[..], &cat(&new)[..]);
}

#[test]
fn rewrite_with_different_sizes_is_detected() {
    let log = Log::new();
    let bs = run(0, 10, 0);
    log.append(0, &cat(&bs));
    let mut t = log.tailer(0);
    drain(&mut t, 1 << 20);
    let new: Vec<Vec<u8>> = (8..20).map(|o| batch(o, 1, 1, &[9; 33])).collect();
    log.set_len(0, cat(&bs[..8]).len() as u64);
    log.append(0, &cat(&new));
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Truncated { at_offset: 8 });
    assert_eq!(drained_bytes(&mut t), cat(&new));
}

#[test]
fn rewrite_of_only_the_epoch_is_detected() {
    // Same bytes except the leader epoch (outside the CRC), same file size: an idempotent producer's
    // retry written by the new leader.
    let log = Log::new();
    let bs = run(0, 5, 0);
    log.append(0, &cat(&bs));
    let mut t = log.tailer(0);
    drain(&mut t, 1 << 20);
    let new: Vec<u8> = cat(&[bs[..3].to_vec(), run(3, 5, 1)].concat());
    assert_eq!(new.len(), cat(&bs).len());
    log.set_len(0, 0);
    log.append(0, &new);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Truncated { at_offset: 3 });
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.first_offset, c.epochs[0].epoch), (3, 1));
}

#[test]
fn delivered_batch_changed_without_epoch_change_is_corruption() {
    let log = Log::new();
    let bs = run(0, 3, 0);
    log.append(0, &cat(&bs));
    let mut t = log.tailer(0);
    drain(&mut t, 1 << 20);
    // Same offsets, same epoch, different records: not a truncation Kafka can make.
    let changed = batch(2, 0, 1, b"something else");
    log.set_len(0, cat(&bs[..2]).len() as u64);
    log.append(0, &changed);
    let msg = t.poll(1 << 20).unwrap_err().to_string();
    assert!(msg.contains("changed without a leader-epoch change"), "{msg}");
    assert!(msg.contains(&format!("position={} base_offset=2 epoch=0", cat(&bs[..2]).len())), "{msg}");
}

#[test]
fn truncation_across_segments() {
    let log = Log::new();
    let (s0, s5) = (run(0, 5, 0), run(5, 10, 0));
    log.append(0, &cat(&s0));
    log.append(5, &cat(&s5));
    let mut t = log.tailer(0);
    drain(&mut t, 1 << 20);
    assert_eq!(t.position().unwrap().0, 5);
    // truncateTo(3): later segments go (renamed .deleted), segment 0 becomes active again, truncated.
    log.rename_deleted(5);
    log.set_len(0, cat(&s0[..3]).len() as u64);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Truncated { at_offset: 3 });
    assert_eq!(t.position(), Some((0, cat(&s0[..3]).len() as u64)));
    log.append(0, &b(3, 1, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 3);
}

#[test]
fn truncate_fully_and_start_at() {
    for (new_base, expect) in
        [(20, TailEvent::Missing { from_offset: 10, to_offset: 20 }), (4, TailEvent::Truncated { at_offset: 4 })]
    {
        let log = Log::new();
        log.append(0, &cat(&run(0, 10, 0)));
        let mut t = log.tailer(0);
        drain(&mut t, 1 << 20);
        // LocalLog.truncateFullyAndStartAt: the new segment is created, then the old one deleted.
        log.create(new_base);
        log.rename_deleted(0);
        assert_eq!(t.poll(1 << 20).unwrap(), expect, "new_base={new_base}");
        assert_eq!(t.next_offset(), new_base);
        log.append(new_base, &b(new_base, 2, 1));
        assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, new_base);
    }
}

#[test]
fn segment_renamed_deleted_after_it_was_consumed() {
    let log = Log::new();
    log.append(0, &cat(&run(0, 5, 0)));
    let mut t = log.tailer(0);
    drain(&mut t, 1 << 20);
    // Roll, then retention deletes the consumed segment before the tailer looks again.
    log.append(5, &cat(&run(5, 8, 0)));
    log.rename_deleted(0);
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.segment_base_offset, c.first_offset, c.last_offset), (5, 5, 7));
    // Deleting an older segment while reading a newer one changes nothing.
    log.append(8, &b(8, 0, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 8);
    log.rename_deleted(5);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    log.append(8, &b(9, 0, 1));
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 9);
}

#[test]
fn segment_deleted_before_it_was_consumed_is_missing() {
    let log = Log::new();
    let s0 = run(0, 5, 0);
    log.append(0, &cat(&s0));
    log.append(5, &cat(&run(5, 8, 0)));
    let mut t = log.tailer(0);
    let c = data(t.poll(s0[0].len() + s0[1].len()).unwrap());
    assert_eq!(c.last_offset, 1);
    log.rename_deleted(0);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Missing { from_offset: 2, to_offset: 5 });
    assert_eq!(data(t.poll(1 << 20).unwrap()).first_offset, 5);
}

#[test]
fn partition_directory_removed() {
    let log = Log::new();
    log.append(0, &cat(&run(0, 3, 0)));
    let mut t = log.tailer(0);
    drain(&mut t, 1 << 20);
    // Kafka renames a deleted partition's directory to `<topic>-<partition>.<id>-delete`.
    fs::rename(&log.dir, log.dir.with_file_name("topic-0.abc-delete")).unwrap();
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::PartitionGone);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::PartitionGone);
    // A tailer created for a missing directory says so too.
    let mut t = PartitionTailer::new(log.dir.clone(), 0);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::PartitionGone);
}

#[test]
fn max_bytes_bounds_chunks_and_a_larger_batch_comes_alone() {
    let log = Log::new();
    let small = run(0, 20, 0);
    let big = batch(20, 0, 1, &vec![3u8; 5000]);
    log.append(0, &[cat(&small), big.clone(), cat(&run(21, 23, 0))].concat());
    let mut t = log.tailer(0).with_options(TailerOptions { initial_read_bytes: 64, ..opts() });
    let chunks = drain(&mut t, 300);
    for c in &chunks {
        assert!(c.bytes.len() <= 300 || c.batch_count == 1, "{} bytes in {} batches", c.bytes.len(), c.batch_count);
    }
    let big_chunk = chunks.iter().find(|c| c.first_offset == 20).unwrap();
    assert_eq!(&big_chunk.bytes[..], &big[..]);
    assert_eq!(chunks.last().unwrap().last_offset, 22);
    for w in chunks.windows(2) {
        assert_eq!(w[1].first_offset, w[0].last_offset + 1);
    }

    // A batch above max_batch_bytes is corruption, not an allocation.
    let mut t = log.tailer(20).with_options(TailerOptions { max_batch_bytes: 4096, ..opts() });
    assert!(t.poll(1 << 20).unwrap_err().to_string().contains("above max_batch_bytes=4096"));
}

#[test]
fn chunk_metadata_and_epoch_runs() {
    let log = Log::new();
    let bs = vec![
        BatchSpec::new(0, 2).epoch(1).timestamps(5, 50).build(),
        BatchSpec::new(2, 1).epoch(1).timestamps(6, 60).build(),
        BatchSpec::new(3, 3).epoch(4).timestamps(7, 40).build(),
        BatchSpec::new(6, 1).epoch(5).timestamps(8, 45).build(),
    ];
    log.append(0, &cat(&bs));
    let c = data(log.tailer(0).poll(1 << 20).unwrap());
    assert_eq!((c.first_offset, c.last_offset, c.batch_count, c.max_timestamp), (0, 6, 4, 60));
    let at = |i: usize| cat(&bs[..i]).len();
    assert_eq!(
        c.epochs,
        vec![
            EpochRun { epoch: 1, start_offset: 0, byte_offset: 0 },
            EpochRun { epoch: 4, start_offset: 3, byte_offset: at(2) },
            EpochRun { epoch: 5, start_offset: 6, byte_offset: at(3) },
        ]
    );
}

#[test]
fn history_is_checked_at_start() {
    let log = Log::new();
    log.append(0, &cat(&[run(0, 6, 0), run(6, 10, 2)].concat()));
    // The store's data below 10 came from a leader with epoch 1 from offset 6: it diverges at 6.
    let mut t = log.tailer(10).with_history(&[(0, 0), (1, 6)]);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Truncated { at_offset: 6 });
    let c = data(t.poll(1 << 20).unwrap());
    assert_eq!((c.first_offset, c.last_offset), (6, 9));
    // Matching history: nothing to report.
    let mut t = log.tailer(10).with_history(&[(0, 0), (2, 6)]);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    assert_eq!(t.next_offset(), 10);
    // History that ends mid-batch relative to the log's batch boundaries diverges there.
    log.append(0, &b(10, 2, 4));
    let mut t = log.tailer(12).with_history(&[(2, 6)]);
    assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Truncated { at_offset: 10 });
}

#[test]
fn idle_cost_of_1000_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tailers = Vec::new();
    for p in 0..1000 {
        let dir = tmp.path().join(format!("topic-{p}"));
        fs::create_dir(&dir).unwrap();
        let mut f = File::create(log_path(&dir, 0)).unwrap();
        f.write_all(&cat(&run(0, 3, 0))).unwrap();
        drop(f);
        // An active segment last written a while ago (the idle test does not trust fresh timestamps).
        let old = SystemTime::now() - Duration::from_secs(5);
        OpenOptions::new().write(true).open(log_path(&dir, 0)).unwrap().set_modified(old).unwrap();
        tailers.push(PartitionTailer::new(dir, 0));
    }
    for t in &mut tailers {
        assert_eq!(data(t.poll(1 << 20).unwrap()).last_offset, 2);
        assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    }
    let slow: u64 = tailers.iter().map(|t| t.slow_polls).sum();
    let rounds = 10;
    let mut per_round = Vec::new();
    let start = Instant::now();
    for _ in 0..rounds {
        let round = Instant::now();
        for t in &mut tailers {
            assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
        }
        per_round.push(round.elapsed().as_secs_f64() * 1e6 / tailers.len() as f64);
    }
    let mean = start.elapsed().as_secs_f64() * 1e6 / (rounds * tailers.len()) as f64;
    assert_eq!(tailers.iter().map(|t| t.slow_polls).sum::<u64>(), slow, "every idle poll took the fast path");
    per_round.sort_by(f64::total_cmp);
    // CPU share of 1000 idle partitions polled 5 times a second each.
    let share = |us: f64| us * 1000.0 * 5.0 / 1e6 * 100.0;
    println!(
        "idle poll: mean {mean:.2} us, best round {:.2} us, median round {:.2} us per partition (1000 \
         partitions x {rounds} rounds); 1000 partitions at 5 polls/s: {:.2}% of a core (mean)",
        per_round[0],
        per_round[rounds / 2],
        share(mean)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random batches (records, payload size, leader-epoch bump, segment roll before it), written in random
    /// pieces (optionally into preallocated files), polled with random `max_bytes` between the pieces: the
    /// tailer returns exactly the bytes written, in order, without gaps, and never an event.
    #[test]
    fn random_writes_are_read_back_exactly(
        plan in proptest::collection::vec(
            (1i32..5, 0usize..300, proptest::bool::weighted(0.1), proptest::bool::weighted(0.15)),
            1..40,
        ),
        pieces in proptest::collection::vec(1usize..400, 1..20),
        max_bytes in proptest::collection::vec(1usize..3000, 1..10),
        preallocate in proptest::bool::ANY,
    ) {
        let log = Log::new();
        let opts =
            TailerOptions { corrupt_confirm_after: Duration::from_secs(3600), initial_read_bytes: 256, ..opts() };
        let mut t = PartitionTailer::new(log.dir.clone(), 0).with_options(opts);

        // Lay the batches out in segments.
        let mut segments: Vec<(i64, Vec<u8>)> = Vec::new();
        let (mut offset, mut epoch) = (0i64, 0i32);
        let mut all = Vec::new();
        for (i, &(records, payload, bump, roll)) in plan.iter().enumerate() {
            epoch += bump as i32;
            if i == 0 || roll {
                segments.push((offset, Vec::new()));
            }
            let bytes = batch(offset, epoch, records, &vec![(offset % 251) as u8; payload]);
            segments.last_mut().unwrap().1.extend_from_slice(&bytes);
            all.extend_from_slice(&bytes);
            offset += records as i64;
        }

        let mut got: Vec<u8> = Vec::new();
        let mut next = 0i64;
        let mut polls = 0usize;
        let mut poll = |t: &mut PartitionTailer, got: &mut Vec<u8>, next: &mut i64| -> Result<(), TestCaseError> {
            let mb = max_bytes[polls % max_bytes.len()];
            polls += 1;
            match t.poll(mb).unwrap() {
                TailEvent::Idle => {}
                TailEvent::Data(c) => {
                    prop_assert_eq!(c.first_offset, *next);
                    prop_assert!(c.bytes.len() <= mb || c.batch_count == 1);
                    prop_assert_eq!(c.epochs[0].byte_offset, 0);
                    *next = c.last_offset + 1;
                    got.extend_from_slice(&c.bytes);
                }
                other => prop_assert!(false, "unexpected event {:?}", other),
            }
            Ok(())
        };

        let mut piece = 0usize;
        for (s, (base, bytes)) in segments.iter().enumerate() {
            if s > 0 && preallocate {
                // Kafka trims the old segment before creating the new one.
                let (prev_base, prev) = &segments[s - 1];
                log.set_len(*prev_base, prev.len() as u64);
            }
            if preallocate {
                log.preallocate(*base, bytes.len() as u64 + 4096);
            } else {
                log.create(*base);
            }
            let mut pos = 0usize;
            while pos < bytes.len() {
                let n = pieces[piece % pieces.len()].min(bytes.len() - pos);
                piece += 1;
                log.write_at(*base, pos as u64, &bytes[pos..pos + n]);
                pos += n;
                poll(&mut t, &mut got, &mut next)?;
            }
        }
        for _ in 0..all.len() + 4 {
            poll(&mut t, &mut got, &mut next)?;
        }
        prop_assert_eq!(got.len(), all.len());
        prop_assert!(got == all, "bytes differ");
        prop_assert_eq!(next, offset);
        prop_assert_eq!(t.poll(1 << 20).unwrap(), TailEvent::Idle);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A log in several segments is read to its end, then truncated at a random batch boundary (Kafka's
    /// `truncateTo`: later segments renamed `.deleted`, the segment holding the offset cut) and continued
    /// by a new leader (higher epoch, random sizes, possibly byte-identical apart from the epoch): the tailer
    /// reports `Truncated` at exactly the cut, then returns exactly the new data.
    #[test]
    fn truncation_is_found_at_the_exact_offset(
        sizes in proptest::collection::vec((1i32..4, 0usize..120, proptest::bool::weighted(0.2)), 1..30),
        cut in 0usize..40,
        rewrite in proptest::collection::vec((1i32..4, 0usize..120), 0..8),
        same_bytes in proptest::bool::ANY,
        max_bytes in 1usize..2000,
    ) {
        let log = Log::new();
        let mut t = PartitionTailer::new(log.dir.clone(), 0).with_options(opts());
        // (base offset, segment, position, bytes) of each batch.
        let mut layout: Vec<(i64, i64, u64, Vec<u8>)> = Vec::new();
        let (mut offset, mut seg, mut pos) = (0i64, 0i64, 0u64);
        log.create(0);
        for (i, &(records, payload, roll)) in sizes.iter().enumerate() {
            if roll && i > 0 {
                seg = offset;
                pos = 0;
                log.create(seg);
            }
            let bytes = batch(offset, 0, records, &vec![7u8; payload]);
            log.append(seg, &bytes);
            layout.push((offset, seg, pos, bytes.clone()));
            pos += bytes.len() as u64;
            offset += records as i64;
        }
        let end = offset;
        let mut next = 0;
        for c in drain(&mut t, max_bytes) {
            prop_assert_eq!(c.first_offset, next);
            next = c.next_offset();
        }
        prop_assert_eq!(next, end);

        // Cut at batch `k` (offset `at`): Kafka's LocalLog.truncateTo(at).
        let k = cut.min(layout.len());
        let (at, cut_seg, cut_pos) = match layout.get(k) {
            Some((o, s, p, _)) => (*o, *s, *p),
            None => (end, seg, pos),
        };
        for (_, s, _, _) in layout.iter().filter(|(_, s, _, _)| *s > at) {
            if log.seg(*s).exists() {
                log.rename_deleted(*s);
            }
        }
        // The segment holding the cut becomes the active one again.
        let active = cut_seg;
        log.set_len(active, cut_pos);
        let mut new = Vec::new();
        let mut o = at;
        for (i, &(records, payload)) in rewrite.iter().enumerate() {
            let bytes = match layout.get(k + i).filter(|_| same_bytes) {
                // The same batch again, only the leader epoch differs.
                Some((base, _, _, old)) if *base == o => {
                    let mut b = old.clone();
                    b[12..16].copy_from_slice(&1i32.to_be_bytes());
                    b
                }
                _ => batch(o, 1, records, &vec![9u8; payload]),
            };
            o = BatchHeader::parse(&bytes, 0).unwrap().unwrap().last_offset() + 1;
            new.extend_from_slice(&bytes);
        }
        log.append(active, &new);

        let mut got = Vec::new();
        let mut next = at;
        let first = t.poll(1 << 20).unwrap();
        if at < end {
            prop_assert_eq!(first, TailEvent::Truncated { at_offset: at });
        } else if let TailEvent::Data(c) = first {
            prop_assert_eq!(c.first_offset, next);
            next = c.next_offset();
            got.extend_from_slice(&c.bytes);
        } else {
            prop_assert_eq!(first, TailEvent::Idle);
        }
        for c in drain(&mut t, max_bytes) {
            prop_assert_eq!(c.first_offset, next);
            next = c.next_offset();
            got.extend_from_slice(&c.bytes);
        }
        prop_assert!(got == new, "new data differs: got {} bytes, expected {}", got.len(), new.len());
        prop_assert_eq!(next, o);
    }
}
