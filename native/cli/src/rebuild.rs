//! `fasttier rebuild`: writes partitions of a stopped broker back into its log directory from the tiers,
//! in Kafka's on-disk format, so that the broker fetches from the leader only what is newer than the tiers.
//!
//! A stock broker offers a plugin no hook to fill a partition's log before it starts replicating, so this
//! runs from the command line while the broker is stopped: the log directory must be formatted
//! (`meta.properties`), and its `.lock` (Kafka's `LogManager` lock, a POSIX lock on the whole file) must be
//! free; this tool holds it while it writes. Per partition:
//!
//! 1. **Plan.** The slow tier's complete segments and the fast tier's ranges resolved by the leader-epoch rule
//!    ([`TierView`]) are chained from the lowest tiered offset to the highest: whole slow segments while
//!    they continue the chain, the fast tier's batches where none does, back to the slow tier as soon as a
//!    copied segment starts where the chain has got to (the fast tier is read only from where the slow
//!    tier first stops covering it: [`load_view`]). A gap, a conflict inside the fast tier, a slow-tier batch
//!    that differs from the fast tier's copy, or a batch straddling the chain's end refuses the partition. The chain
//!    is cut at the start ([`StartAt`]): by default at what the topic's local retention keeps (Kafka's own
//!    rules, applied to the slow segments; fast-tier data is always restored), or at the slow segment
//!    holding `--from-offset` (a run of fast-tier data is kept whole). Data below stays only in the tiers:
//!    a tiered topic's local log normally starts above its log start offset. The local log must start at
//!    offset 0 or on top of the slow tier: if the tiers hold the lowest offsets only in the fast tier, the
//!    offsets below are on the leader's disk alone, and the partition is refused.
//! 2. **Write** into `<topic>-<partition>.<32 hex>-delete` in the log directory (Kafka's own name for a
//!    directory it loads and then deletes at start-up, `LogManager.loadLog`, so a crash never leaves a
//!    half-written partition behind): each slow segment's batches as `<base>.log`, byte-identical to the
//!    stored segment, with its stored `.index`, `.timeindex` and `.txnindex` (CRC-32C checked, entry sizes
//!    sane); the fast tier's batches as further segments of at most `log.segment.bytes`, without indexes
//!    (`LogLoader` finds the offset index missing and recovers the segment, rebuilding its indexes, whatever
//!    the recovery point); the producer snapshot of the slow segment that ends right below the first
//!    restored offset as `<first>.snapshot` (the name Kafka gives the snapshot at a segment's base offset);
//!    `leader-epoch-checkpoint` (the epochs starting below the first restored offset from the slow tier's
//!    manifests, then every epoch change of the restored batches, as Kafka's own appends would record
//!    them); and `partition.metadata` (`version: 0`, the topic id; without it Kafka treats the directory as
//!    a stray replica). Every byte read was verified (chunk and index CRC-32C from the manifests, range
//!    CRC-32C of WAL objects, every batch's own CRC-32C).
//! 3. **Check** the written segment files, read back from disk: every batch's own CRC-32C, and batch by
//!    batch the offsets, leader epoch, size and CRC-32C of what was written.
//! 4. **Swap** it in: the broker's `recovery-point-offset-checkpoint` and `log-start-offset-checkpoint`
//!    lose their entries for the partition (recovery point 0: Kafka recovers every restored segment,
//!    rebuilding indexes and producer state; a tiered log's start offset then is 0 until the first fetch
//!    response raises it to the leader's), `replication-offset-checkpoint` gets the first restored offset
//!    as the partition's high watermark (without an entry Kafka starts it at 0, below the local log, and
//!    warns of a non-monotonic update), and the log dir's `.kafka_cleanshutdown` marker is removed (with
//!    it Kafka would skip recovery; a broker that lost its disk did not shut down cleanly anyway); then the
//!    directory is renamed into place (an existing one is exchanged atomically and deleted).
//!
//! The broker then starts as a follower with a leader-epoch cache, so its fetcher asks the leader from the
//! log end offset (with the last fetched epoch: a diverging log is truncated as Kafka always does), and
//! the remainder crosses from the leader.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fasttier_core::error::{Error, Result};
use fasttier_core::format::crc32c;
use fasttier_core::format::keys::segments_root;
use fasttier_core::format::manifest::{IndexKind, SegmentManifest};
use fasttier_core::slow::catalog::{read_index, slow_segments, SegmentBatches, SlowBatch};
use fasttier_core::wal::catalog::{
    assemble_with_epochs, parse_topic_id, retained_headers, sort_ranges, EpochStarts, RangeRef, ResolvedBatch,
};
use fasttier_core::wal::format::TopicId;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::local::{parse_dir_name, LocalLog};
use crate::partition::{merge, Stores, TierView};

/// Kafka's lock file in every log directory (`LogManager.LockFileName`), held with a POSIX record lock.
pub const LOCK_FILE: &str = ".lock";
/// What `kafka-storage format` writes into every log directory; a broker refuses a log directory without it.
pub const META_PROPERTIES: &str = "meta.properties";
/// Kafka's clean-shutdown marker in a log directory (`CleanShutdownFileHandler`).
pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
/// Kafka's per-log-dir offset checkpoints that hold a partition's recovery point and log start offset.
pub const OFFSET_CHECKPOINTS: [&str; 2] = ["recovery-point-offset-checkpoint", "log-start-offset-checkpoint"];
/// Kafka's per-log-dir high-watermark checkpoint (`ReplicaManager`, `replication-offset-checkpoint`).
pub const HIGH_WATERMARK_CHECKPOINT: &str = "replication-offset-checkpoint";
/// Attempts per partition when something is deleted underneath the rebuild (fast-tier cleanup, retention).
pub const ATTEMPTS: u32 = 3;

/// A topic's local retention as in force for it (`local.retention.ms`, `local.retention.bytes`, with `-2`
/// already resolved to `retention.ms` / `retention.bytes`); negative is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRetention {
    pub ms: i64,
    pub bytes: i64,
}

/// Where a rebuilt partition's local log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At the oldest slow segment Kafka's local retention would still keep (time, then size, counting the
    /// fast-tier data as the active segment that is never deleted); at least the newest piece is restored.
    Retention(LocalRetention),
    /// At the slow segment holding this offset, or at the start of the run of fast-tier data holding it
    /// (the lowest tiered offset if below it).
    Offset(i64),
}

/// What to rebuild and how.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// The broker's log directory (one entry of `log.dirs`).
    pub log_dir: PathBuf,
    pub start: StartAt,
    /// "Now" for the time rule of [`StartAt::Retention`].
    pub now_ms: i64,
    /// Replace partition directories that already hold segment files.
    pub force: bool,
    /// Plan and report only; write nothing.
    pub dry_run: bool,
    /// Largest segment file made from fast-tier data (`log.segment.bytes`).
    pub max_segment_bytes: u64,
    /// Slow segments downloaded at once.
    pub concurrency: usize,
}

impl RebuildOptions {
    pub fn new(log_dir: impl Into<PathBuf>, start: StartAt) -> Self {
        RebuildOptions {
            log_dir: log_dir.into(),
            start,
            now_ms: now_ms(),
            force: false,
            dry_run: false,
            max_segment_bytes: 1 << 30,
            concurrency: 4,
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One partition to rebuild (`topic_id` from the slow tier unless given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub topic: String,
    pub partition: i32,
    pub topic_id: String,
}

/// Progress callbacks (the binary draws a progress bar from them).
pub trait Progress: Send + Sync {
    /// `partition` will write `bytes` (called again if the partition is retried).
    fn planned(&self, _partition: &str, _bytes: u64) {}
    /// `bytes` more were written.
    fn wrote(&self, _bytes: u64) {}
    /// `partition` entered a phase (`planning`, `writing`, `verifying`).
    fn phase(&self, _partition: &str, _phase: &str) {}
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {}

/// One segment file written (or planned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub base_offset: i64,
    pub last_offset: i64,
    pub bytes: u64,
    /// `slow` (a stored segment) or `fast` (resolved fast-tier batches).
    pub source: &'static str,
    /// The stored `.index`/`.timeindex` were written (otherwise Kafka rebuilds them at start-up).
    pub indexes: bool,
}

/// The outcome for one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionReport {
    pub topic: String,
    pub topic_id: String,
    pub partition: i32,
    /// The partition directory (its final place).
    pub dir: String,
    /// First restored offset, and the offset after the last (the log end offset the broker starts with).
    pub first_offset: i64,
    pub log_end_offset: i64,
    /// Lowest and highest offset the tiers held.
    pub tier_first_offset: i64,
    pub tier_last_offset: i64,
    pub segments: Vec<SegmentReport>,
    pub batches: u64,
    pub slow_bytes: u64,
    pub fast_bytes: u64,
    /// Offset of the producer snapshot written (`<offset>.snapshot`), if any.
    pub producer_snapshot: Option<i64>,
    pub leader_epochs: Vec<(i32, i64)>,
    /// An existing directory was replaced (`--force`, or one without segment files).
    pub replaced: bool,
    /// Batches `partition verify` checked in the written directory (all of them).
    pub verified_batches: u64,
    pub seconds: f64,
}

impl PartitionReport {
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    pub fn bytes(&self) -> u64 {
        self.slow_bytes + self.fast_bytes
    }

    pub fn to_json(&self) -> Value {
        json!({
            "topic": self.topic,
            "topic_id": self.topic_id,
            "partition": self.partition,
            "dir": self.dir,
            "first_offset": self.first_offset,
            "log_end_offset": self.log_end_offset,
            "tier_first_offset": self.tier_first_offset,
            "tier_last_offset": self.tier_last_offset,
            "segments": self.segments.iter().map(|s| json!({
                "base_offset": s.base_offset,
                "last_offset": s.last_offset,
                "bytes": s.bytes,
                "source": s.source,
                "indexes": s.indexes,
            })).collect::<Vec<_>>(),
            "batches": self.batches,
            "bytes": self.bytes(),
            "slow_bytes": self.slow_bytes,
            "fast_bytes": self.fast_bytes,
            "producer_snapshot": self.producer_snapshot,
            "leader_epochs": self.leader_epochs,
            "replaced": self.replaced,
            "verified_batches": self.verified_batches,
            "seconds": self.seconds,
        })
    }
}

/// The outcome of [`rebuild`].
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    pub log_dir: String,
    pub dry_run: bool,
    /// Partitions rebuilt (or planned), in order; those before a failure stay rebuilt.
    pub partitions: Vec<PartitionReport>,
    /// The failure that stopped the run, naming the partition.
    pub error: Option<String>,
    /// `.kafka_cleanshutdown` was removed from the log dir.
    pub clean_shutdown_marker_removed: bool,
    /// Entries removed from the log dir's recovery-point and log-start-offset checkpoints.
    pub checkpoint_entries_removed: u64,
    pub seconds: f64,
}

impl RebuildReport {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(PartitionReport::bytes).sum()
    }

    /// `rebuild --json`.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "error": self.error,
            "log_dir": self.log_dir,
            "dry_run": self.dry_run,
            "partitions": self.partitions.iter().map(PartitionReport::to_json).collect::<Vec<_>>(),
            "bytes": self.bytes(),
            "clean_shutdown_marker_removed": self.clean_shutdown_marker_removed,
            "checkpoint_entries_removed": self.checkpoint_entries_removed,
            "seconds": self.seconds,
        })
    }

    /// One line: partitions, offsets, bytes, time.
    pub fn summary(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let slow: u64 = self.partitions.iter().map(|p| p.slow_bytes).sum();
        let fast: u64 = self.partitions.iter().map(|p| p.fast_bytes).sum();
        let segments: usize = self.partitions.iter().map(|p| p.segments.len()).sum();
        let parts: Vec<String> = self
            .partitions
            .iter()
            .map(|p| format!("{} {}..={}", p.name(), p.first_offset, p.log_end_offset - 1))
            .collect();
        let verb = if self.dry_run { "would rebuild" } else { "rebuilt" };
        let mut line = format!(
            "{verb} {} partition(s) in {}: {}; {segments} segments, {:.1} MiB (slow tier {:.1} MiB, fast tier {:.1} MiB){}; {:.1} s",
            self.partitions.len(),
            self.log_dir,
            if parts.is_empty() { "none".into() } else { parts.join(", ") },
            mib(self.bytes()),
            mib(slow),
            mib(fast),
            if self.dry_run { "" } else { ", verified" },
            self.seconds
        );
        if let Some(e) = &self.error {
            line.push_str(&format!("; FAILED: {e}"));
        }
        line
    }
}

// ------------------------------------------------------------------------------------------------ plan

/// A run of data to restore.
#[derive(Debug, Clone)]
enum Piece {
    /// The batches of a complete slow segment from offset `from` on (all of it when `from` is its start).
    Slow { manifest: Arc<SegmentManifest>, from: i64 },
    /// Resolved fast-tier batches `batches[first..end]`.
    Fast { first: usize, end: usize },
}

impl Piece {
    fn first_offset(&self, view: &TierView) -> i64 {
        match self {
            Piece::Slow { from, .. } => *from,
            Piece::Fast { first, .. } => view.fast.batches[*first].info.base_offset,
        }
    }

    fn last_offset(&self, view: &TierView) -> i64 {
        match self {
            Piece::Slow { manifest, .. } => manifest.end_offset,
            Piece::Fast { end, .. } => view.fast.batches[*end - 1].info.last_offset,
        }
    }

    /// Bytes (a slow segment restored from inside counts whole: close enough for planning).
    fn bytes(&self, view: &TierView) -> u64 {
        match self {
            Piece::Slow { manifest, .. } => manifest.log.size,
            Piece::Fast { first, end } => view.fast.batches[*first..*end].iter().map(|b| b.bytes.len() as u64).sum(),
        }
    }
}

/// The tiers' data of a partition as one chain of pieces, from the lowest tiered offset to the highest: slow
/// segments while one continues the chain, fast-tier batches where none does. Errors on a gap, on a
/// fast-tier conflict, and where a batch straddles the chain's end.
fn chain(view: &TierView) -> Result<Vec<Piece>> {
    let name = format!("{}-{}", view.topic, view.partition);
    if let Some(c) = view.fast.conflicts.first() {
        return Err(Error::corrupt(
            &*c.other.source.key,
            format!(
                "partition={name}: the fast tier holds differing copies of offsets {}..={} ({}; also in {}): not rebuilt",
                c.other.base_offset, c.other.last_offset, c.reason, c.kept.source.key
            ),
        ));
    }
    let (Some(first), Some(last)) = (view.first_offset(), view.last_offset()) else { return Ok(Vec::new()) };
    let mut slow: Vec<&Arc<SegmentManifest>> = view.slow.iter().filter_map(|s| s.manifest.as_ref()).collect();
    slow.sort_by_key(|m| (m.start_offset, std::cmp::Reverse(m.end_offset)));
    let fast = &view.fast.batches;
    let (mut pieces, mut next, mut si, mut fi) = (Vec::new(), first, 0, 0);
    while next <= last {
        let before = next;
        while let Some(m) = slow.get(si) {
            if m.end_offset < next {
                si += 1;
                continue;
            }
            if m.start_offset > next {
                break;
            }
            pieces.push(Piece::Slow { manifest: (*m).clone(), from: next });
            next = m.end_offset + 1;
            si += 1;
        }
        while fi < fast.len() && fast[fi].info.last_offset < next {
            fi += 1;
        }
        // Fast-tier batches until the slow tier continues the chain again (a copied segment starts there).
        let run = fi;
        while fi < fast.len() && fast[fi].info.base_offset == next && !slow[si..].iter().any(|m| m.start_offset == next)
        {
            next = fast[fi].info.last_offset + 1;
            fi += 1;
        }
        if fi > run {
            pieces.push(Piece::Fast { first: run, end: fi });
        }
        if next == before {
            if let Some(b) = fast.get(fi).filter(|b| b.info.base_offset < next) {
                return Err(Error::corrupt(
                    &*b.info.source.key,
                    format!(
                        "partition={name}: fast-tier batch {}..={} straddles offset {next} where the slow tier ends (different batch boundaries): not rebuilt",
                        b.info.base_offset, b.info.last_offset
                    ),
                ));
            }
            return Err(Error::corrupt(
                format!("partition={name}"),
                format!("the tiers hold nothing at offset {next} (their data reaches {last}): not rebuilt"),
            ));
        }
    }
    Ok(pieces)
}

/// What the tiers hold of a partition, for a rebuild, given its fast-tier `ranges` ([`FastRanges`]): as
/// [`TierView::load`] (fast tier listed first, then the slow tier; the fast tier resolved with the slow
/// tier's leader epochs known), except that the fast
/// tier's data is read only from the first offset at or above its lowest one that no complete slow segment
/// holds. The chain takes offsets both tiers hold from the slow tier, so the fast tier's copies below are
/// never downloaded (right after a burst, before cleanup, they can be most of the partition).
async fn load_view(stores: &Stores, t: &Target, ranges: Vec<RangeRef>) -> Result<TierView> {
    let slow = slow_segments(&stores.slow, &stores.slow_prefix, &t.topic, &t.topic_id, t.partition).await?;
    let mut epochs = EpochStarts::new();
    let mut slow_spans = Vec::new();
    for m in slow.iter().filter_map(|s| s.manifest.as_ref()) {
        for &(epoch, start) in &m.leader_epochs {
            epochs.insert(epoch, start);
        }
        slow_spans.push((m.start_offset, m.end_offset));
    }
    let slow_cover = merge(slow_spans.clone());
    let mut from = ranges.iter().map(|r| r.entry.first_offset).min().unwrap_or(0);
    for &(a, b) in &slow_cover {
        if a <= from && from <= b {
            from = b + 1;
        }
    }
    let fast = assemble_with_epochs(&stores.wal, &ranges, &epochs, from, i64::MAX).await?;
    slow_spans.extend(fast.batches.iter().map(|b| (b.info.base_offset, b.info.last_offset)));
    let coverage = merge(slow_spans);
    Ok(TierView {
        topic: t.topic.clone(),
        topic_id: t.topic_id.clone(),
        partition: t.partition,
        slow,
        ranges,
        fast,
        coverage,
    })
}

/// Cuts `pieces` where the local log is to start.
fn cut(pieces: Vec<Piece>, view: &TierView, start: StartAt, now_ms: i64) -> Result<Vec<Piece>> {
    if pieces.is_empty() {
        return Ok(pieces);
    }
    match start {
        StartAt::Offset(x) => {
            let last = pieces[pieces.len() - 1].last_offset(view);
            if x > last {
                return Err(Error::config(
                    "--from-offset",
                    format!("offset {x} is beyond the last offset the tiers hold ({last})"),
                ));
            }
            // A fast piece is kept whole: what lies below its start is in the slow tier (or is offset 0),
            // while a log starting inside it would leave offsets that only the leader's disk holds.
            let i = pieces.iter().position(|p| p.last_offset(view) >= x).unwrap_or(0);
            Ok(pieces[i..].to_vec())
        }
        StartAt::Retention(r) => {
            let sizes: Vec<u64> = pieces.iter().map(|p| p.bytes(view)).collect();
            let deletable = |p: &Piece| matches!(p, Piece::Slow { .. });
            let mut by_time = 0;
            if r.ms >= 0 {
                while by_time < pieces.len()
                    && matches!(&pieces[by_time], Piece::Slow { manifest, .. } if now_ms.saturating_sub(manifest.max_timestamp_ms) > r.ms)
                {
                    by_time += 1;
                }
            }
            let mut by_size = 0;
            if r.bytes >= 0 {
                let mut diff = sizes.iter().sum::<u64>() as i128 - r.bytes as i128;
                while by_size < pieces.len() && deletable(&pieces[by_size]) && diff - sizes[by_size] as i128 >= 0 {
                    diff -= sizes[by_size] as i128;
                    by_size += 1;
                }
            }
            let k = by_time.max(by_size).min(pieces.len() - 1);
            Ok(pieces[k..].to_vec())
        }
    }
}

/// Refuses a local log that would start at `first` (> 0) with nothing below it in the slow tier: Kafka's
/// remote storage must hold every offset below a replica's local log (a follower's local log starts at or
/// below the leader's local log start, which never passes what is copied), and fast-tier data right above
/// offsets that are in no copied segment means those offsets sit on the leader's disk only (rolled
/// segments not copied yet).
fn check_start(pieces: &[Piece], view: &TierView) -> Result<()> {
    let Some(p) = pieces.first() else { return Ok(()) };
    let first = p.first_offset(view);
    let below_is_tiered = first == 0
        || matches!(p, Piece::Slow { .. })
        || view
            .slow
            .iter()
            .filter_map(|s| s.manifest.as_ref())
            .any(|m| m.start_offset < first && m.end_offset + 1 >= first);
    if below_is_tiered {
        return Ok(());
    }
    Err(Error::corrupt(
        format!("partition={}-{}", view.topic, view.partition),
        format!(
            "the tiers hold offsets from {first} on only in the fast tier, and no copied segment ends right below {first}: \
             offsets below it are on the leader's disk only (rolled segments not copied to the slow tier yet?); \
             not rebuilt (retry once the slow tier holds them, or let Kafka replicate the partition)"
        ),
    ))
}

/// Output segment files: slow pieces one each, fast pieces split at `max_bytes` (and at an offset span
/// Kafka's 32-bit relative offsets can index).
#[derive(Debug, Clone)]
enum OutSegment {
    Slow { manifest: Arc<SegmentManifest>, from: i64 },
    Fast { first: usize, end: usize },
}

fn layout(pieces: &[Piece], view: &TierView, max_bytes: u64) -> Vec<OutSegment> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Slow { manifest, from } => out.push(OutSegment::Slow { manifest: manifest.clone(), from: *from }),
            Piece::Fast { first, end } => {
                let batches = &view.fast.batches;
                let (mut start, mut bytes) = (*first, 0u64);
                for i in *first..*end {
                    let b = &batches[i];
                    let span = b.info.last_offset - batches[start].info.base_offset;
                    if i > start && (bytes + b.bytes.len() as u64 > max_bytes || span > i32::MAX as i64) {
                        out.push(OutSegment::Fast { first: start, end: i });
                        start = i;
                        bytes = 0;
                    }
                    bytes += b.bytes.len() as u64;
                }
                out.push(OutSegment::Fast { first: start, end: *end });
            }
        }
    }
    out
}

/// The leader-epoch entries of the epochs that start below `first` (from every complete slow segment's
/// manifest), as Kafka's cache would hold them: ascending in epoch and start offset (an epoch that a
/// higher epoch starts at or before is dropped, as `LeaderEpochFileCache.assign` does).
fn epochs_below(view: &TierView, first: i64) -> Vec<(i32, i64)> {
    let mut starts = EpochStarts::new();
    for m in view.slow.iter().filter_map(|s| s.manifest.as_ref()) {
        for &(epoch, start) in m.leader_epochs.iter().filter(|e| e.1 < first) {
            starts.insert(epoch, start);
        }
    }
    let mut out: Vec<(i32, i64)> = Vec::new();
    for (epoch, start) in starts.iter() {
        while out.last().is_some_and(|&(_, s)| s >= start) {
            out.pop();
        }
        out.push((epoch, start));
    }
    out
}

// ------------------------------------------------------------------------------------------------ files

/// The log directory's lock, as Kafka takes it (`.lock`, an exclusive POSIX record lock on the whole
/// file); released when dropped. Taken as an open-file-description lock, which conflicts with the
/// broker's lock and with another rebuild's, in this process too.
#[derive(Debug)]
pub struct LogDirLock {
    _file: File,
}

impl LogDirLock {
    /// Takes the lock (creating `.lock` if `create`); `None` if there is no `.lock` and `!create`. Refuses
    /// (a configuration error) when someone holds it: a broker running on this log directory.
    pub fn acquire(log_dir: &Path, create: bool) -> Result<Option<LogDirLock>> {
        let path = log_dir.join(LOCK_FILE);
        let file = match OpenOptions::new().read(true).write(true).create(create).truncate(false).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        // SAFETY: a zeroed `flock` is a valid value; fcntl only reads it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        // SAFETY: a valid descriptor and a pointer to a live `flock`.
        let mut r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
        let mut err = std::io::Error::last_os_error();
        if r == -1 && err.raw_os_error() == Some(libc::EINVAL) {
            // Kernels without open-file-description locks: a process-associated lock.
            // SAFETY: as above.
            r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut fl) };
            err = std::io::Error::last_os_error();
        }
        if r == -1 {
            if matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
                return Err(Error::config(
                    "--log-dir",
                    format!(
                        "{} is locked: a Kafka broker seems to be running on this log directory; stop it first",
                        path.display()
                    ),
                ));
            }
            return Err(Error::io(path.display(), err));
        }
        Ok(Some(LogDirLock { _file: file }))
    }
}

/// Kafka's name for a directory it deletes at start-up: `<topic>-<partition>.<32 hex>-delete`, the topic
/// shortened so the name stays within 255 bytes.
fn delete_dir_name(topic: &str, partition: i32) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let tag = (u64::from(std::process::id()) << 32) ^ N.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("-{partition}.{nanos:016x}{tag:016x}-delete");
    let keep = topic.len().min(255 - suffix.len());
    format!("{}{suffix}", &topic[..keep])
}

/// A directory removed when dropped, unless kept.
struct Scratch {
    path: Option<PathBuf>,
}

impl Scratch {
    fn keep(mut self) -> PathBuf {
        self.path.take().expect("scratch kept once")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Who must own what `rebuild` writes, so that the broker (often another user than the one running
/// `rebuild`, typically root) can open it: the owner of `preferred` (the partition directory being replaced)
/// if it exists, else the owner of `fallback` (the log directory). `None` when not running as root: then
/// nobody else's files can be given away, and what is written is owned by the user running `rebuild`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    uid: u32,
    gid: u32,
}

fn owner_for(preferred: &Path, fallback: &Path) -> Result<Option<Owner>> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let m = match fs::symlink_metadata(preferred) {
        Ok(m) if m.is_dir() => m,
        _ => fs::metadata(fallback).map_err(|e| Error::io(fallback.display(), e))?,
    };
    Ok(Some(Owner { uid: m.uid(), gid: m.gid() }))
}

/// Gives `path` (not following a symbolic link) to `owner` if it is owned by the user running `rebuild`:
/// only what `rebuild` itself created changes hands.
fn give_to(path: &Path, owner: Option<Owner>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(o) = owner else { return Ok(()) };
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    // SAFETY: geteuid has no preconditions.
    if m.uid() != unsafe { libc::geteuid() } || (m.uid(), m.gid()) == (o.uid, o.gid) {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid)).map_err(|e| Error::io(path.display(), e))
}

/// [`give_to`] for `dir` and everything in it (the scratch partition directory: files only, no nesting).
fn give_tree_to(dir: &Path, owner: Option<Owner>) -> Result<()> {
    if owner.is_none() {
        return Ok(());
    }
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir.display(), e))? {
        let e = e.map_err(|e| Error::io(dir.display(), e))?;
        give_to(&e.path(), owner)?;
    }
    give_to(dir, owner)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir.display(), e))
}

/// Writes `data` to `path` (new file) and syncs it.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let io = |e| Error::io(path.display(), e);
    let mut f = OpenOptions::new().write(true).create_new(true).open(path).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Replaces `path` with `data`: written to `<path>.tmp`, synced, renamed (as Kafka writes checkpoints).
fn replace_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!("{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let _ = fs::remove_file(&tmp);
    write_file(&tmp, data)?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))
}

fn segment_file(dir: &Path, base: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base:020}.{suffix}"))
}

/// The partition directory holds segment files (`*.log`).
fn has_segments(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(|e| Error::io(dir.display(), e))?;
                if e.file_name().to_str().is_some_and(|n| n.ends_with(".log")) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(dir.display(), e)),
    }
}

/// Edits one of Kafka's offset checkpoint files (`0`, a count, then `<topic> <partition> <offset>` lines):
/// removes the entry of `topic`-`partition` and, with `set`, adds it with that offset (creating the file if
/// there is none). Written as Kafka writes checkpoints (`.tmp`, synced, renamed); left alone when nothing
/// changes. Returns whether an entry was removed.
pub fn edit_checkpoint(path: &Path, topic: &str, partition: i32, set: Option<i64>) -> Result<bool> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "0\n0\n".to_string(),
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    let bad = |what: &str| Error::corrupt(path.display().to_string(), format!("offset checkpoint: {what}"));
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("0") {
        return Err(bad("version is not 0"));
    }
    let count: usize = lines.next().and_then(|l| l.trim().parse().ok()).ok_or_else(|| bad("no entry count"))?;
    let entries: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    if entries.len() != count {
        return Err(bad(&format!("{} entries, the count says {count}", entries.len())));
    }
    let mut kept = Vec::new();
    for line in &entries {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(t), Some(p), Some(_), None) = (f.first(), f.get(1), f.get(2), f.get(3)) else {
            return Err(bad(&format!("entry {line:?}")));
        };
        let p: i32 = p.parse().map_err(|_| bad(&format!("entry {line:?}")))?;
        if !(*t == topic && p == partition) {
            kept.push(line.to_string());
        }
    }
    let removed = kept.len() < entries.len();
    if let Some(offset) = set {
        kept.push(format!("{topic} {partition} {offset}"));
    }
    if removed || set.is_some() {
        let mut out = format!("0\n{}\n", kept.len());
        for l in kept {
            out.push_str(&l);
            out.push('\n');
        }
        replace_file(path, out.as_bytes())?;
    }
    Ok(removed)
}

/// Reads the segment files written to `dir` back (every batch's own CRC-32C checked, offsets increasing)
/// and compares them batch by batch with `expected` (offsets, leader epoch, size, CRC-32C of the whole
/// batch). Returns the number of batches checked; a difference is [`Error::Corrupt`] naming the file.
fn check_written(dir: &Path, expected: &[Written]) -> Result<u64> {
    let local = LocalLog::open(dir)?;
    let at = dir.display().to_string();
    if let Some(t) = &local.tail {
        return Err(Error::corrupt(at, format!("the written log ends early: {t}")));
    }
    if local.batches.len() != expected.len() {
        return Err(Error::corrupt(
            at,
            format!("{} batches read back, {} written", local.batches.len(), expected.len()),
        ));
    }
    for (i, (b, w)) in local.batches.iter().zip(expected).enumerate() {
        let got = Written::of(b.base_offset, b.last_offset, b.leader_epoch, &local.read(i)?);
        if got != *w {
            return Err(Error::corrupt(local.describe(i), format!("batch read back as {got:?}, written as {w:?}")));
        }
    }
    Ok(expected.len() as u64)
}

/// `partition.metadata` as Kafka writes it (`PartitionMetadataFile`: two lines, no final newline).
fn partition_metadata(topic_id: &str) -> String {
    format!("version: 0\ntopic_id: {topic_id}")
}

/// Kafka's `leader-epoch-checkpoint` text.
fn epoch_checkpoint(entries: &[(i32, i64)]) -> String {
    let mut out = format!("0\n{}\n", entries.len());
    for (e, o) in entries {
        out.push_str(&format!("{e} {o}\n"));
    }
    out
}

/// Whether stored index bytes look like an index of a `size`-byte segment: whole entries and, for the
/// offset index, relative offsets and positions that increase and stay inside the segment.
fn index_sane(kind: IndexKind, data: &[u8], size: u64) -> bool {
    match kind {
        IndexKind::Offset => {
            if !data.len().is_multiple_of(8) {
                return false;
            }
            let mut prev: Option<(i32, i32)> = None;
            for e in data.chunks_exact(8) {
                let rel = i32::from_be_bytes([e[0], e[1], e[2], e[3]]);
                let pos = i32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                if rel < 0 || pos < 0 || pos as u64 >= size || prev.is_some_and(|(r, p)| rel <= r || pos <= p) {
                    return false;
                }
                prev = Some((rel, pos));
            }
            true
        }
        IndexKind::Timestamp => data.len().is_multiple_of(12),
        IndexKind::Transaction => data.len().is_multiple_of(34),
        _ => true,
    }
}

/// A batch written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    base: i64,
    last: i64,
    epoch: i32,
    size: u32,
    /// CRC-32C of the whole batch as written (not the batch's own CRC, which skips its first 21 bytes).
    crc: u32,
}

impl Written {
    fn of(base: i64, last: i64, epoch: i32, bytes: &[u8]) -> Written {
        Written { base, last, epoch, size: bytes.len() as u32, crc: crc32c(bytes) }
    }
}

/// The fast tier's resolved batches of a partition (shared with the slow-segment writers).
type FastBatches = Arc<Vec<ResolvedBatch>>;

/// Refuses a slow-tier batch that the fast tier also holds in a different form (other bytes, or other
/// batch boundaries): the tiers disagree about the partition's data there.
fn check_against_fast(fast: &[ResolvedBatch], key: &str, b: &SlowBatch) -> Result<()> {
    let start = fast.partition_point(|x| x.info.last_offset < b.base_offset);
    let end = fast.partition_point(|x| x.info.base_offset <= b.last_offset);
    for x in &fast[start..end.max(start)] {
        let same = (x.info.base_offset, x.info.last_offset) == (b.base_offset, b.last_offset) && x.bytes == b.bytes;
        if !same {
            return Err(Error::corrupt(
                key,
                format!(
                    "batch {}..={} at position={} differs from the fast tier's batch {}..={} in {} (the tiers disagree): not rebuilt",
                    b.base_offset, b.last_offset, b.position, x.info.base_offset, x.info.last_offset, x.info.source.key
                ),
            ));
        }
    }
    Ok(())
}

/// Writes a slow segment's batches from offset `from` on into `dir`; with the whole segment, also its
/// stored indexes. Every batch the fast tier also holds must be identical there. Returns the segment
/// report and its batches.
async fn write_slow(
    store: Arc<dyn fasttier_core::store::ObjectStore>,
    manifest: Arc<SegmentManifest>,
    from: i64,
    dir: PathBuf,
    fast: FastBatches,
    progress: Arc<dyn Progress>,
) -> Result<(SegmentReport, Vec<Written>)> {
    let key = manifest.log.key.clone();
    let whole = from <= manifest.start_offset;
    let mut reader = SegmentBatches::new(store.clone(), manifest.clone());
    let mut out: Option<(PathBuf, BufWriter<File>)> = None;
    let (mut batches, mut bytes): (Vec<Written>, u64) = (Vec::new(), 0);
    while let Some(b) = reader.next_batch().await? {
        if b.last_offset < from {
            continue;
        }
        if b.base_offset < from || batches.last().is_some_and(|l: &Written| b.base_offset <= l.last) {
            return Err(Error::corrupt(
                &key,
                format!(
                    "batch {}..={} at position={} does not continue at offset {from}",
                    b.base_offset, b.last_offset, b.position
                ),
            ));
        }
        if out.is_none() {
            let base = if whole { manifest.start_offset } else { b.base_offset };
            let path = segment_file(&dir, base, "log");
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Error::io(path.display(), e))?;
            out = Some((path, BufWriter::with_capacity(1 << 20, f)));
        }
        check_against_fast(&fast, &key, &b)?;
        let (path, w) = out.as_mut().expect("opened above");
        w.write_all(&b.bytes).map_err(|e| Error::io(path.display(), e))?;
        bytes += b.bytes.len() as u64;
        batches.push(Written::of(b.base_offset, b.last_offset, b.leader_epoch, &b.bytes));
        progress.wrote(b.bytes.len() as u64);
    }
    let Some((path, w)) = out else {
        return Err(Error::corrupt(&key, format!("no batch at or after offset {from}")));
    };
    let f = w.into_inner().map_err(|e| Error::io(path.display(), e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(path.display(), e))?;
    let base = if whole { manifest.start_offset } else { batches[0].base };
    let mut indexes = false;
    if whole {
        if bytes != manifest.log.size {
            return Err(Error::corrupt(&key, format!("read {bytes} bytes of a segment of size={}", manifest.log.size)));
        }
        let offset = read_index(&store, &manifest, IndexKind::Offset).await?;
        if let Some(offset) = offset.filter(|d| index_sane(IndexKind::Offset, d, bytes)) {
            write_file(&segment_file(&dir, base, "index"), &offset)?;
            indexes = true;
            for (kind, suffix) in [(IndexKind::Timestamp, "timeindex"), (IndexKind::Transaction, "txnindex")] {
                if let Some(data) = read_index(&store, &manifest, kind).await?.filter(|d| index_sane(kind, d, bytes)) {
                    write_file(&segment_file(&dir, base, suffix), &data)?;
                }
            }
        }
    }
    let last_offset = batches.last().map_or(base, |b| b.last);
    let report = SegmentReport { base_offset: base, last_offset, bytes, source: "slow", indexes };
    Ok((report, batches))
}

/// Writes resolved fast-tier batches `first..end` as one segment file.
fn write_fast(
    view: &TierView,
    first: usize,
    end: usize,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(SegmentReport, Vec<Written>)> {
    let batches = &view.fast.batches[first..end];
    let base = batches[0].info.base_offset;
    let path = segment_file(dir, base, "log");
    let io = |e| Error::io(path.display(), e);
    let f = OpenOptions::new().write(true).create_new(true).open(&path).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut bytes = 0u64;
    for b in batches {
        w.write_all(&b.bytes).map_err(io)?;
        bytes += b.bytes.len() as u64;
        progress.wrote(b.bytes.len() as u64);
    }
    w.into_inner().map_err(|e| Error::io(path.display(), e.into_error()))?.sync_all().map_err(io)?;
    let written = batches
        .iter()
        .map(|b| Written::of(b.info.base_offset, b.info.last_offset, b.info.leader_epoch, &b.bytes))
        .collect();
    let last_offset = batches[batches.len() - 1].info.last_offset;
    Ok((SegmentReport { base_offset: base, last_offset, bytes, source: "fast", indexes: false }, written))
}

// ------------------------------------------------------------------------------------------------ rebuild

/// The fast-tier ranges of the partitions being rebuilt, from one scan of the fast tier's headers
/// ([`retained_headers`]: one LIST and one ranged GET per object for the whole run, however many
/// partitions are rebuilt), each partition's sorted by [`sort_ranges`].
struct FastRanges(std::collections::HashMap<(TopicId, i32), Vec<RangeRef>>);

impl FastRanges {
    async fn scan(stores: &Stores, targets: &[Target]) -> Result<FastRanges> {
        let wanted: std::collections::HashSet<(TopicId, i32)> =
            targets.iter().filter_map(|t| Some((parse_topic_id(&t.topic_id)?, t.partition))).collect();
        let mut map: std::collections::HashMap<(TopicId, i32), Vec<RangeRef>> = Default::default();
        for (key, h) in retained_headers(&stores.wal, &stores.wal_prefix).await? {
            for e in h.entries.iter().filter(|e| wanted.contains(&(e.topic_id, e.partition))) {
                map.entry((e.topic_id, e.partition)).or_default().push(RangeRef::new(&key, &h, e));
            }
        }
        for v in map.values_mut() {
            sort_ranges(v);
        }
        Ok(FastRanges(map))
    }

    /// The ranges of `t`, scanning the fast tier first if `fast` holds no scan (yet, or any more).
    async fn of_target(
        fast: &mut Option<FastRanges>,
        stores: &Stores,
        targets: &[Target],
        t: &Target,
    ) -> Result<Vec<RangeRef>> {
        let id = parse_topic_id(&t.topic_id)
            .ok_or_else(|| Error::config("--topic-id", format!("value={:?} is not a Kafka topic id", t.topic_id)))?;
        if fast.is_none() {
            *fast = Some(FastRanges::scan(stores, targets).await?);
        }
        Ok(fast.as_ref().and_then(|f| f.0.get(&(id, t.partition))).cloned().unwrap_or_default())
    }
}

/// The partitions of `topic` (id `topic_id`) that the tiers hold anything of: directories in the slow
/// tier, ranges in any retained WAL object.
pub async fn tiered_partitions(stores: &Stores, topic: &str, topic_id: &str) -> Result<Vec<i32>> {
    let id = parse_topic_id(topic_id)
        .ok_or_else(|| Error::config("--topic-id", format!("value={topic_id:?} is not a Kafka topic id")))?;
    let base = format!("{}{topic}-{topic_id}/", segments_root(&stores.slow_prefix));
    let mut parts = std::collections::BTreeSet::new();
    for m in stores.slow.list(&base).await? {
        if let Some(p) = m.key[base.len()..].split('/').next().and_then(|p| p.parse::<i32>().ok()) {
            parts.insert(p);
        }
    }
    for (_, h) in retained_headers(&stores.wal, &stores.wal_prefix).await? {
        parts.extend(h.entries.iter().filter(|e| e.topic_id == id).map(|e| e.partition));
    }
    Ok(parts.into_iter().collect())
}

/// Rebuilds `targets` into `opts.log_dir` (module docs), one partition after the other. Usage problems
/// (no log directory, a broker running on it, a partition directory that already holds segments without
/// `force`) are errors before anything is written; a partition that fails ends the run with
/// [`RebuildReport::error`] set, the partitions before it staying rebuilt.
pub async fn rebuild(
    stores: &Stores,
    targets: &[Target],
    opts: &RebuildOptions,
    progress: Arc<dyn Progress>,
) -> Result<RebuildReport> {
    let t0 = Instant::now();
    if !opts.log_dir.is_dir() {
        return Err(Error::config("--log-dir", format!("{} is not a directory", opts.log_dir.display())));
    }
    let meta = opts.log_dir.join(META_PROPERTIES);
    if !meta.is_file() {
        return Err(Error::config(
            "--log-dir",
            format!(
                "{} is missing: the broker would not start on this log directory; format it first \
                 (kafka-storage.sh format --ignore-formatted -t <cluster id> -c server.properties), then rebuild",
                meta.display()
            ),
        ));
    }
    // A dry run reads nothing of the log directory a running broker changes: it may run beside the broker.
    let _lock = if opts.dry_run { None } else { LogDirLock::acquire(&opts.log_dir, true)? };
    if !opts.dry_run {
        give_to(&opts.log_dir.join(LOCK_FILE), owner_for(&opts.log_dir, &opts.log_dir)?)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in targets {
        if !seen.insert((t.topic.clone(), t.partition)) {
            return Err(Error::config("--partition", format!("{}-{} is named twice", t.topic, t.partition)));
        }
        let dir = opts.log_dir.join(format!("{}-{}", t.topic, t.partition));
        if !opts.force && has_segments(&dir)? {
            return Err(Error::config(
                "--force",
                format!("{} already holds segment files; pass --force to replace it", dir.display()),
            ));
        }
    }
    let mut report = RebuildReport {
        log_dir: opts.log_dir.display().to_string(),
        dry_run: opts.dry_run,
        partitions: Vec::new(),
        error: None,
        clean_shutdown_marker_removed: false,
        checkpoint_entries_removed: 0,
        seconds: 0.0,
    };
    let mut fast: Option<FastRanges> = None;
    for t in targets {
        let mut attempt = 1;
        let r = loop {
            let r = match FastRanges::of_target(&mut fast, stores, targets, t).await {
                Ok(ranges) => rebuild_partition(stores, t, ranges, opts, progress.clone(), &mut report).await,
                Err(e) => Err(e),
            };
            match r {
                Err(e) if attempt < ATTEMPTS && e.is_not_found() => {
                    eprintln!("rebuild of {}-{} raced with a deletion ({e}); again", t.topic, t.partition);
                    attempt += 1;
                    fast = None;
                }
                r => break r,
            }
        };
        match r {
            Ok(p) => report.partitions.push(p),
            Err(e @ Error::Config { .. }) => return Err(e),
            Err(e) => {
                report.error = Some(format!("partition={}-{}: {e}", t.topic, t.partition));
                break;
            }
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

async fn rebuild_partition(
    stores: &Stores,
    t: &Target,
    ranges: Vec<RangeRef>,
    opts: &RebuildOptions,
    progress: Arc<dyn Progress>,
    run: &mut RebuildReport,
) -> Result<PartitionReport> {
    let t0 = Instant::now();
    let name = format!("{}-{}", t.topic, t.partition);
    let final_dir = opts.log_dir.join(&name);
    progress.phase(&name, "planning");
    let view = load_view(stores, t, ranges).await?;
    let (Some(tier_first), Some(tier_last)) = (view.first_offset(), view.last_offset()) else {
        return Err(Error::config(
            "--partition",
            format!("the tiers hold nothing of {name} (topic id {}): nothing to rebuild", t.topic_id),
        ));
    };
    let pieces = cut(chain(&view)?, &view, opts.start, opts.now_ms)?;
    check_start(&pieces, &view)?;
    let first = pieces[0].first_offset(&view);
    let segments = layout(&pieces, &view, opts.max_segment_bytes.max(1));
    let planned: u64 = pieces.iter().map(|p| p.bytes(&view)).sum();
    progress.planned(&name, planned);
    let snapshot_source = view
        .slow
        .iter()
        .filter_map(|s| s.manifest.as_ref())
        .find(|m| m.end_offset + 1 == first && m.index(IndexKind::ProducerSnapshot).is_some_and(|e| e.length > 0))
        .cloned();
    let mut report = PartitionReport {
        topic: t.topic.clone(),
        topic_id: t.topic_id.clone(),
        partition: t.partition,
        dir: final_dir.display().to_string(),
        first_offset: first,
        log_end_offset: tier_last + 1,
        tier_first_offset: tier_first,
        tier_last_offset: tier_last,
        segments: Vec::new(),
        batches: 0,
        slow_bytes: 0,
        fast_bytes: 0,
        producer_snapshot: if first > 0 { snapshot_source.as_ref().map(|_| first) } else { None },
        leader_epochs: Vec::new(),
        replaced: false,
        verified_batches: 0,
        seconds: 0.0,
    };
    if opts.dry_run {
        for s in &segments {
            let (base_offset, last_offset, bytes, source, indexes) = match s {
                OutSegment::Slow { manifest, from } => {
                    let whole = *from <= manifest.start_offset;
                    (
                        *from,
                        manifest.end_offset,
                        manifest.log.size,
                        "slow",
                        whole && manifest.index(IndexKind::Offset).is_some(),
                    )
                }
                OutSegment::Fast { first, end } => {
                    let b = &view.fast.batches[*first..*end];
                    (
                        b[0].info.base_offset,
                        b[b.len() - 1].info.last_offset,
                        b.iter().map(|x| x.bytes.len() as u64).sum(),
                        "fast",
                        false,
                    )
                }
            };
            report.segments.push(SegmentReport { base_offset, last_offset, bytes, source, indexes });
        }
        report.slow_bytes = report.segments.iter().filter(|s| s.source == "slow").map(|s| s.bytes).sum();
        report.fast_bytes = report.segments.iter().filter(|s| s.source == "fast").map(|s| s.bytes).sum();
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }

    // Write into a directory Kafka deletes at start-up until it is complete and checked.
    progress.phase(&name, "writing");
    let tmp = opts.log_dir.join(delete_dir_name(&t.topic, t.partition));
    fs::create_dir(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
    let scratch = Scratch { path: Some(tmp.clone()) };
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let fast: FastBatches = Arc::new(view.fast.batches.clone());
    for (i, s) in segments.iter().enumerate() {
        if let OutSegment::Slow { manifest, from } = s {
            let (store, manifest, from, dir) = (stores.slow.clone(), manifest.clone(), *from, tmp.clone());
            let (sem, progress, fast) = (sem.clone(), progress.clone(), fast.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(|e| Error::Internal(e.to_string()))?;
                Ok::<_, Error>((i, write_slow(store, manifest, from, dir, fast, progress).await?))
            });
        }
    }
    let mut written: Vec<Option<(SegmentReport, Vec<Written>)>> = vec![None; segments.len()];
    for (i, s) in segments.iter().enumerate() {
        if let OutSegment::Fast { first, end } = s {
            written[i] = Some(write_fast(&view, *first, *end, &tmp, progress.as_ref())?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (i, w) = done.map_err(|e| Error::Internal(format!("rebuild task failed: {e}")))??;
        written[i] = Some(w);
    }
    // Leader epochs: those starting below the restored data, then every change along it.
    let mut epochs = epochs_below(&view, first);
    let mut next = first;
    for (seg, batches) in written.iter().flatten() {
        report.batches += batches.len() as u64;
        match seg.source {
            "slow" => report.slow_bytes += seg.bytes,
            _ => report.fast_bytes += seg.bytes,
        }
        for &Written { base, last, epoch, .. } in batches {
            if base != next {
                return Err(Error::Internal(format!("rebuild of {name}: batch at {base} where {next} was due")));
            }
            next = last + 1;
            match epochs.last() {
                // As Kafka's recovery: a batch without a leader epoch changes nothing.
                _ if epoch < 0 => {}
                Some(&(e, _)) if epoch < e => {
                    return Err(Error::corrupt(
                        format!("partition={name}"),
                        format!("batch {base}..={last} has leader epoch {epoch} after epoch {e} began: leader epochs go backwards; not rebuilt"),
                    ))
                }
                Some(&(e, _)) if epoch == e => {}
                _ => epochs.push((epoch, base)),
            }
        }
    }
    let expected: Vec<Written> = written.iter().flatten().flat_map(|(_, b)| b.iter().copied()).collect();
    report.segments = written.into_iter().flatten().map(|(s, _)| s).collect();
    report.log_end_offset = next;
    report.leader_epochs = epochs;
    write_file(&tmp.join("leader-epoch-checkpoint"), epoch_checkpoint(&report.leader_epochs).as_bytes())?;
    write_file(&tmp.join("partition.metadata"), partition_metadata(&t.topic_id).as_bytes())?;
    if let (Some(at), Some(m)) = (report.producer_snapshot, &snapshot_source) {
        match read_index(&stores.slow, m, IndexKind::ProducerSnapshot).await? {
            Some(data) if !data.is_empty() => write_file(&segment_file(&tmp, at, "snapshot"), &data)?,
            // Nothing to write (Kafka would discard an empty snapshot file as corrupt).
            _ => report.producer_snapshot = None,
        }
    }
    fsync_dir(&tmp)?;

    // Read back from disk: the files must hold exactly the verified batches, nothing else.
    progress.phase(&name, "verifying");
    report.verified_batches = check_written(&tmp, &expected)?;

    // Into place: Kafka must recover the restored segments (recovery point 0, no clean-shutdown marker)
    // and take the log start offset from the leader.
    let marker = opts.log_dir.join(CLEAN_SHUTDOWN_FILE);
    match fs::remove_file(&marker) {
        Ok(()) => run.clean_shutdown_marker_removed = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(marker.display(), e)),
    }
    let log_dir_owner = owner_for(&opts.log_dir, &opts.log_dir)?;
    for f in OFFSET_CHECKPOINTS {
        run.checkpoint_entries_removed +=
            u64::from(edit_checkpoint(&opts.log_dir.join(f), &t.topic, t.partition, None)?);
        give_to(&opts.log_dir.join(f), log_dir_owner)?;
    }
    // The high watermark starts at the first restored offset (everything below it was copied to the slow
    // tier, so it was below the leader's high watermark), as Kafka's own catch-up from tiered storage
    // leaves it; the first fetch response brings the leader's.
    edit_checkpoint(&opts.log_dir.join(HIGH_WATERMARK_CHECKPOINT), &t.topic, t.partition, Some(first))?;
    give_to(&opts.log_dir.join(HIGH_WATERMARK_CHECKPOINT), log_dir_owner)?;
    // Owned like the partition directory it replaces (or the log directory), before it becomes visible.
    give_tree_to(&tmp, owner_for(&final_dir, &opts.log_dir)?)?;
    if !opts.force && has_segments(&final_dir)? {
        return Err(Error::config(
            "--force",
            format!("{} got segment files while rebuilding; pass --force to replace it", final_dir.display()),
        ));
    }
    report.replaced = swap_into_place(scratch.keep(), &final_dir, &opts.log_dir, t)?;
    fsync_dir(&opts.log_dir)?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Moves the written directory `tmp` to `target`. An existing `target` is exchanged with it atomically
/// (`renameat2(RENAME_EXCHANGE)`; two renames where the file system cannot) and then deleted. Returns
/// whether a directory was replaced.
fn swap_into_place(tmp: PathBuf, target: &Path, log_dir: &Path, t: &Target) -> Result<bool> {
    let tmp = Scratch { path: Some(tmp) };
    let from = tmp.path.clone().expect("set");
    let io = |e| Error::io(target.display(), e);
    if !target.exists() {
        fs::rename(&from, target).map_err(io)?;
        tmp.keep();
        return Ok(false);
    }
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::config("--log-dir", "path holds a NUL byte"))
    };
    let (a, b) = (c(&from)?, c(target)?);
    // SAFETY: two valid NUL-terminated paths.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)) {
            return Err(io(err));
        }
        let aside = log_dir.join(delete_dir_name(&t.topic, t.partition));
        fs::rename(target, &aside).map_err(io)?;
        fs::rename(&from, target).map_err(io)?;
        // `tmp` no longer exists; remove the old partition instead.
        drop(Scratch { path: Some(aside) });
        tmp.keep();
        return Ok(true);
    }
    // The old partition now sits under the temporary name: dropping `tmp` deletes it.
    drop(tmp);
    Ok(true)
}

/// `<topic>-<partition>` names (as Kafka names partition directories) parsed into (topic, partition).
pub fn parse_partition_names(names: &[String]) -> Result<Vec<(String, i32)>> {
    names
        .iter()
        .map(|n| {
            parse_dir_name(n.trim())
                .ok_or_else(|| Error::config("--partitions", format!("{n:?} is not <topic>-<partition>")))
        })
        .collect()
}

/// Kafka's broker defaults for local retention from `server.properties` entries: `log.local.retention.ms`
/// / `.bytes`, where `-2` (the default) means `log.retention.ms` (or `.minutes`, `.hours`, default 168 h)
/// / `log.retention.bytes` (default -1, unlimited).
pub fn broker_local_retention(props: &BTreeMap<String, String>) -> Result<LocalRetention> {
    let num = |k: &str| -> Result<Option<i64>> {
        props
            .get(k)
            .map(|v| v.trim().parse::<i64>().map_err(|_| Error::config(k, format!("value={v:?} is not a number"))))
            .transpose()
    };
    let retention_ms = match (num("log.retention.ms")?, num("log.retention.minutes")?, num("log.retention.hours")?) {
        (Some(ms), _, _) => ms,
        (None, Some(m), _) => m.saturating_mul(60_000),
        (None, None, Some(h)) => h.saturating_mul(3_600_000),
        (None, None, None) => 168 * 3_600_000,
    };
    let ms = match num("log.local.retention.ms")?.unwrap_or(-2) {
        -2 => retention_ms,
        v => v,
    };
    let bytes = match num("log.local.retention.bytes")?.unwrap_or(-2) {
        -2 => num("log.retention.bytes")?.unwrap_or(-1),
        v => v,
    };
    Ok(LocalRetention { ms, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_dir_names_parse_as_kafka_expects() {
        let n = delete_dir_name("orders", 3);
        assert!(n.starts_with("orders-3.") && n.ends_with("-delete"), "{n}");
        let unique = &n["orders-3.".len()..n.len() - "-delete".len()];
        assert_eq!(unique.len(), 32);
        assert!(unique.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(n, delete_dir_name("orders", 3));
        let long = "t".repeat(249);
        assert!(delete_dir_name(&long, 12).len() <= 255);
    }

    #[test]
    fn retention_defaults_follow_kafka() {
        let props = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(broker_local_retention(&props(&[])).unwrap(), LocalRetention { ms: 168 * 3_600_000, bytes: -1 });
        let p = props(&[("log.retention.hours", "2"), ("log.retention.bytes", "100")]);
        assert_eq!(broker_local_retention(&p).unwrap(), LocalRetention { ms: 7_200_000, bytes: 100 });
        let p = props(&[
            ("log.local.retention.ms", "5000"),
            ("log.local.retention.bytes", "-1"),
            ("log.retention.bytes", "9"),
        ]);
        assert_eq!(broker_local_retention(&p).unwrap(), LocalRetention { ms: 5000, bytes: -1 });
        assert!(broker_local_retention(&props(&[("log.retention.ms", "x")])).is_err());
    }

    #[test]
    fn offset_index_sanity() {
        let entry = |rel: i32, pos: i32| [rel.to_be_bytes(), pos.to_be_bytes()].concat();
        let good = [entry(3, 0), entry(9, 4100)].concat();
        assert!(index_sane(IndexKind::Offset, &good, 5000));
        assert!(!index_sane(IndexKind::Offset, &good, 4100));
        assert!(!index_sane(IndexKind::Offset, &[good.clone(), entry(0, 0)].concat(), 5000));
        assert!(!index_sane(IndexKind::Offset, &good[..7], 5000));
        assert!(index_sane(IndexKind::Offset, &[], 0));
        assert!(index_sane(IndexKind::Timestamp, &[0; 24], 1));
        assert!(!index_sane(IndexKind::Timestamp, &[0; 13], 1));
    }
}
