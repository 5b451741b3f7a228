//! The log tailer: new complete record batches of one partition, read from a live broker's partition
//! directory (`<log.dir>/<topic>-<partition>/`) while the broker writes it.
//!
//! A [`PartitionTailer`] starts at an offset (where the object store's data ends) and each
//! [`PartitionTailer::poll`] returns the next contiguous run of complete, CRC-verified batches of one
//! segment file ([`TailChunk`]), or says that nothing is new ([`TailEvent::Idle`]), or reports an event the
//! uploader must act on. It is synchronous, does plain `pread`s on the segment files and never writes; run
//! it on a blocking thread.
//!
//! # What the broker does to the files, and what the tailer does about it
//!
//! * **Appends.** Kafka appends whole batches with `write()`. A reader may see a batch half written: the
//!   file ends inside it (it waits) or, in a preallocated file, its tail is still zeros (the CRC does not
//!   match yet: see "corruption" below).
//! * **Preallocation** (`log.preallocate`). The active segment is created at its full size, zero-filled.
//!   A zero batch prefix (base offset 0 and length 0) is the end of the data, not corruption. Because the
//!   size does not move, the idle check also compares the modification time.
//! * **Rolls.** Kafka trims the old segment to its valid size *before* it creates the new one
//!   (`LocalLog.roll`: `onBecomeInactiveSegment()` then `LogSegment.open`). The tailer moves to the next
//!   segment only when it has found no further complete batch in the current one, a newer segment exists,
//!   and a second look at the current file after seeing the newer one shows it unchanged: its data ends at
//!   our position (end of file or zero fill). A newer segment normally starts at the next offset, so the
//!   tailer looks for exactly that file name; a directory listing every
//!   [`TailerOptions::full_check_interval`] catches anything else.
//! * **Truncation** (leader change, follower catching up with a new leader: `LocalLog.truncateTo` deletes
//!   later segments and truncates the file; `truncateFullyAndStartAt` replaces the whole log). The tailer
//!   remembers fingerprints (position, offsets, leader epoch, CRC) of batches it delivered and the leader
//!   epochs of everything it delivered. It re-checks the last delivered batch after every read and
//!   whenever the file shrinks, is replaced or is gone; on a mismatch it finds the newest fingerprint that
//!   still holds and walks the batch headers from there, comparing leader epochs (Kafka's lineage rule: a
//!   batch with the same epoch at the same offset is the same batch), to the first offset whose data is
//!   gone or different, and reports [`TailEvent::Truncated`]. It never silently continues over changed data:
//!   a delivered batch that changed while keeping its leader epoch (which Kafka never does) is reported
//!   as corruption.
//! * **Deletion** (retention, `.deleted` renames, partition deletion). A segment that vanishes after it
//!   was consumed is of no concern. If data the tailer had not read yet is gone (it lagged behind local
//!   retention, or the log start moved past it) it reports [`TailEvent::Missing`]. A partition directory
//!   that is gone (deleted: renamed `-delete`; moved to another log dir) is [`TailEvent::PartitionGone`].
//! * **Corruption.** Bytes at our position that are not a valid batch (bad magic, impossible length, CRC
//!   mismatch, negative offset delta, an incomplete batch at the end of a rolled segment) may be a write in
//!   progress in a preallocated file, so they are reported as [`Error::Corrupt`] (file path, position,
//!   base offset, stored and computed CRC) only once the same bytes have stayed wrong for
//!   [`TailerOptions::corrupt_confirm_after`]; until then `poll` returns `Idle`. A bad batch header met in
//!   a rolled segment while locating the start or recovering from a truncation is reported at once.
//!
//! # Cost
//!
//! An idle poll is two `stat`s: the current segment (inode, size and modification time unchanged) and
//! the name the next segment would have (absent); one while the current segment is empty. The second is
//! needed because a roll leaves the old file's metadata untouched when it was not preallocated (Java's
//! `FileChannel.truncate` to the same size does nothing). About 2 µs on a small VM: 1,000 idle partitions
//! polled 5 times a second cost about 1% of a core. A poll with new data is one `stat`,
//! one `pread` of up to `max_bytes` (from an initial [`TailerOptions::initial_read_bytes`] growing to
//! `max_bytes`, so a preallocated file is not read to its end) plus two 61-byte `pread`s re-checking the
//! previous and the new last batch. Locating the start offset reads the offset index (a binary search of
//! 8-byte reads) and then batch headers from the indexed position; without an index it reads every batch
//! header of the segment from its start (about one `pread` per batch). Recovering from a truncation does
//! the same from the newest fingerprint that still holds. Memory is bounded by `max_bytes` per poll (one
//! batch larger than `max_bytes` is returned alone, up to [`TailerOptions::max_batch_bytes`]) plus a few
//! kilobytes of history.
//!
//! The checks rely on Kafka's rule that a batch with the same leader epoch at the same offset is the same
//! batch. Data truncated and written again identically between two polls (a follower re-fetching the same
//! leader's batches) is, correctly, not reported.

mod segments;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::batch::{BatchHeader, Batches, Stop, DEFAULT_MAX_BATCH_BYTES, HEADER_SIZE, LOG_OVERHEAD};
pub(crate) use segments::list_segments;
use segments::{index_position, log_path, read_full_at, read_header};

/// Tuning of a [`PartitionTailer`]; the defaults suit a broker.
#[derive(Debug, Clone)]
pub struct TailerOptions {
    /// How long bytes that are not a valid batch must stay unchanged at the read position before `poll`
    /// reports them as corrupt (a preallocated file shows a write in progress as a CRC mismatch). Zero
    /// reports at first sight. Default 2 s.
    pub corrupt_confirm_after: Duration,
    /// Interval of the full check: the cheap idle test is skipped, the directory is listed and the read
    /// position re-read. Catches rolls to an unexpected base offset and clock oddities. Default 10 s.
    pub full_check_interval: Duration,
    /// Modification times closer to "now" than this are not trusted by the idle test (a write in the same
    /// timestamp tick as our last look would go unseen). Default 50 ms.
    pub mtime_granularity: Duration,
    /// The largest batch accepted; a larger length field is treated as corruption. Default 64 MiB.
    pub max_batch_bytes: usize,
    /// First read size of a poll; reads grow up to `max_bytes` while complete batches keep coming.
    /// Default 64 KiB.
    pub initial_read_bytes: usize,
}

impl Default for TailerOptions {
    fn default() -> Self {
        TailerOptions {
            corrupt_confirm_after: Duration::from_secs(2),
            full_check_interval: Duration::from_secs(10),
            mtime_granularity: Duration::from_millis(50),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            initial_read_bytes: 64 << 10,
        }
    }
}

/// A run of batches with the same leader epoch inside a [`TailChunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRun {
    pub epoch: i32,
    /// Base offset of the run's first batch.
    pub start_offset: i64,
    /// Position of the run's first batch in [`TailChunk::bytes`].
    pub byte_offset: usize,
}

/// Contiguous complete batches from one segment file, byte-exact as on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailChunk {
    /// The batches, verified (length, magic, CRC-32C) and contiguous in offsets.
    pub bytes: Bytes,
    /// Base offset of the first batch. Equal to the offset the tailer was expecting, except for the first
    /// chunk of a tailer without history whose start offset lies inside a batch: then the whole batch is
    /// returned and this is below the start offset.
    pub first_offset: i64,
    /// Last offset of the last batch; the next chunk starts at `last_offset + 1`.
    pub last_offset: i64,
    /// Leader-epoch runs, in order; the first starts at byte 0.
    pub epochs: Vec<EpochRun>,
    /// Number of batches.
    pub batch_count: u32,
    /// Largest max-timestamp of the batches.
    pub max_timestamp: i64,
    /// Base offset of the segment the bytes come from.
    pub segment_base_offset: i64,
    /// Position of `bytes[0]` in that segment file.
    pub file_position: u64,
}

impl TailChunk {
    /// The offset after this chunk.
    pub fn next_offset(&self) -> i64 {
        self.last_offset + 1
    }
}

/// The outcome of one [`PartitionTailer::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailEvent {
    /// Nothing new (also while a batch is being written).
    Idle,
    /// New batches.
    Data(TailChunk),
    /// The log no longer holds, from `at_offset` on, the batches this tailer delivered (or, with
    /// [`PartitionTailer::with_history`], the stored data described there): a leader change truncated or
    /// rewrote it. Whatever was taken from the tailer at offsets `>= at_offset` must be discarded; the
    /// tailer continues at `at_offset` (the next chunk starts there, possibly after a `Missing`).
    Truncated { at_offset: i64 },
    /// Offsets `from_offset..to_offset` will not be delivered: they are not in the local log (deleted
    /// before the tailer read them, the log start moved past them, or the log skips them). The tailer
    /// continues at `to_offset`.
    Missing { from_offset: i64, to_offset: i64 },
    /// The partition directory is gone (partition deleted, or moved to another log dir). Final: every
    /// later poll returns this too.
    PartitionGone,
}

/// Where the next batch is read.
#[derive(Debug)]
struct Cursor {
    base: i64,
    path: PathBuf,
    file: File,
    /// (device, inode) of `file`: the path must still name it.
    id: (u64, u64),
    pos: u64,
}

/// What the idle test compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSig {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileSig {
    fn of(md: &fs::Metadata) -> Self {
        FileSig { dev: md.dev(), ino: md.ino(), len: md.len(), mtime: md.mtime(), mtime_nsec: md.mtime_nsec() }
    }

    /// The modification time is old enough that a later write cannot carry the same timestamp.
    fn settled(&self, granularity: Duration) -> bool {
        let Ok(secs) = u64::try_from(self.mtime) else { return false };
        let mtime = UNIX_EPOCH + Duration::new(secs, self.mtime_nsec.clamp(0, 999_999_999) as u32);
        SystemTime::now().duration_since(mtime).is_ok_and(|age| age >= granularity)
    }
}

/// State for the idle fast path: the current segment as last seen, and the next segment's file name
/// (none while the current segment is empty: its own base is the next offset).
#[derive(Debug)]
struct IdleState {
    sig: FileSig,
    next_path: Option<PathBuf>,
}

/// Identity of a delivered batch, to check later that the log still holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    segment: i64,
    position: u64,
    size: u64,
    base_offset: i64,
    last_offset: i64,
    epoch: i32,
    crc: u32,
}

impl Fingerprint {
    fn matches(&self, h: &BatchHeader<'_>) -> bool {
        h.base_offset() == self.base_offset
            && h.batch_size() as u64 == self.size
            && h.last_offset() == self.last_offset
            && h.partition_leader_epoch() == self.epoch
            && h.crc() == self.crc
    }
}

const MAX_RECENT: usize = 16;
const MAX_SEGMENT_STARTS: usize = 16;
const MAX_RUNS: usize = 256;

/// What the tailer knows about the data before `next_offset`.
#[derive(Debug)]
struct History {
    /// Leader-epoch runs `(epoch, start offset)` covering `[anchor, end)`, ascending; empty if nothing is
    /// known (then `anchor == end`).
    runs: VecDeque<(i32, i64)>,
    anchor: i64,
    end: i64,
    /// Last batch of each recent chunk.
    recent: VecDeque<Fingerprint>,
    /// First delivered batch of each recent segment.
    segment_starts: VecDeque<Fingerprint>,
}

impl History {
    fn new(start: i64) -> Self {
        History {
            runs: VecDeque::new(),
            anchor: start,
            end: start,
            recent: VecDeque::new(),
            segment_starts: VecDeque::new(),
        }
    }

    /// Epoch of the delivered data at `offset`, if known.
    fn epoch_at(&self, offset: i64) -> Option<i32> {
        if offset < self.anchor || offset >= self.end {
            return None;
        }
        let i = self.runs.partition_point(|&(_, start)| start <= offset);
        i.checked_sub(1).map(|i| self.runs[i].0)
    }

    fn push_run(&mut self, epoch: i32, start: i64, end: i64) {
        if self.runs.is_empty() {
            self.anchor = start;
        }
        if self.runs.back().is_none_or(|&(e, _)| e != epoch) {
            self.runs.push_back((epoch, start));
            if self.runs.len() > MAX_RUNS {
                self.runs.pop_front();
                if let Some(&(_, s)) = self.runs.front() {
                    self.anchor = s;
                }
            }
        }
        self.end = end;
    }

    fn record_chunk(&mut self, first: Fingerprint, last: Fingerprint) {
        if self.segment_starts.back().is_none_or(|f| f.segment != first.segment) {
            self.segment_starts.push_back(first);
            if self.segment_starts.len() > MAX_SEGMENT_STARTS {
                self.segment_starts.pop_front();
            }
        }
        self.recent.push_back(last);
        if self.recent.len() > MAX_RECENT {
            self.recent.pop_front();
        }
    }

    /// Forgets everything at offsets `>= at`.
    fn truncate(&mut self, at: i64) {
        while self.runs.back().is_some_and(|&(_, s)| s >= at) {
            self.runs.pop_back();
        }
        if self.runs.is_empty() || at < self.anchor {
            self.runs.clear();
            self.anchor = at;
        }
        self.end = at;
        self.recent.retain(|f| f.last_offset < at);
        self.segment_starts.retain(|f| f.last_offset < at);
    }

    /// The data continues at `offset` (after a gap) with nothing known in between.
    fn skip_to(&mut self, offset: i64) {
        if self.runs.is_empty() {
            self.anchor = offset;
        }
        self.end = offset;
    }

    /// Fingerprints, newest first.
    fn fingerprints(&self) -> Vec<Fingerprint> {
        let mut all: Vec<Fingerprint> = self.recent.iter().chain(self.segment_starts.iter()).copied().collect();
        all.sort_by_key(|f| std::cmp::Reverse(f.last_offset));
        all.dedup();
        all
    }
}

/// A batch accepted into the chunk being built.
#[derive(Debug, Clone, Copy)]
struct Meta {
    at: usize,
    fp: Fingerprint,
    max_timestamp: i64,
}

/// Outcome of reading at the cursor.
enum Read {
    Chunk(TailChunk),
    /// The data ends at the cursor (end of file or zero fill).
    End,
    /// An incomplete batch starts at the cursor and the file ends inside it.
    Incomplete {
        needed: usize,
        available: u64,
    },
    /// Not a valid batch at the cursor (maybe a write in progress): the detail for the error.
    Invalid(String),
    /// The log changed under us.
    Resync,
}

/// Why the batch loop of a read ended.
enum Halt {
    /// The walk over the buffer ended (see [`Stop`]).
    Stop(Option<Stop>),
    /// Not a valid batch (the error's text).
    Invalid(String),
    /// A batch whose offsets do not continue the previous ones.
    Discontinuous,
}

/// Where a header walk stopped (see [`PartitionTailer::walk`]).
#[derive(Debug)]
enum WalkEnd {
    /// The batch at (`seg`, `pos`) with base offset `base` is the first that reaches the target offset.
    Reached { seg: usize, pos: u64, base: i64 },
    /// The log differs from what was delivered from `offset` on; reading resumes at (`seg`, `pos`), where
    /// the batch with base offset `resume` starts (if any).
    Diverged { seg: usize, pos: u64, offset: i64, resume: Option<i64> },
    /// The log's data ends at (`seg`, `pos`), at log end offset `end`.
    End { seg: usize, pos: u64, end: i64 },
    /// A segment disappeared during the walk; try again.
    Vanished,
}

/// A suspected corruption at the cursor, reported once it persists.
#[derive(Debug)]
struct Suspect {
    segment: i64,
    position: u64,
    detail: String,
    since: Instant,
}

/// Tails the segment files of one partition. See the [module documentation](self).
#[derive(Debug)]
pub struct PartitionTailer {
    dir: PathBuf,
    opts: TailerOptions,
    next_offset: i64,
    cursor: Option<Cursor>,
    needs_resync: bool,
    /// The first chunk may start inside a batch (start offset not on a batch boundary, nothing known).
    overlap_ok: bool,
    idle: Option<IdleState>,
    next_full_check: Instant,
    suspect: Option<Suspect>,
    pending: Option<TailEvent>,
    history: History,
    gone: bool,
    /// Polls that took the slow path (for tests and diagnostics).
    slow_polls: u64,
}

impl PartitionTailer {
    /// A tailer for the partition directory `dir` whose first chunk starts at `start_offset` (the offset
    /// after the data the object store already holds). Nothing is read before the first `poll`.
    pub fn new(dir: PathBuf, start_offset: i64) -> Self {
        PartitionTailer {
            dir,
            opts: TailerOptions::default(),
            next_offset: start_offset,
            cursor: None,
            needs_resync: true,
            overlap_ok: false,
            idle: None,
            next_full_check: Instant::now(),
            suspect: None,
            pending: None,
            history: History::new(start_offset),
            gone: false,
            slow_polls: 0,
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, opts: TailerOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Declares the leader epochs of the data already stored below the start offset, as `(epoch, start
    /// offset)` pairs in ascending offset order (the format of Kafka's `leader-epoch-checkpoint`). The first
    /// poll then checks the local log against them: if it diverges (the store holds data of a leader
    /// whose uncommitted tail this log does not have), it reports [`TailEvent::Truncated`] at the first
    /// offset that differs. Give only the recent part (e.g. what the fast tier holds): the check reads the
    /// batch headers from the first given offset on.
    pub fn with_history(mut self, epochs: &[(i32, i64)]) -> Self {
        let start = self.next_offset;
        let mut h = History::new(start);
        for (i, &(epoch, from)) in epochs.iter().enumerate() {
            if from >= start || h.runs.back().is_some_and(|&(_, s)| s >= from) {
                break;
            }
            let to = epochs.get(i + 1).map_or(start, |&(_, next)| next.min(start));
            h.push_run(epoch, from, to.max(from));
        }
        h.end = start;
        self.history = h;
        self
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset the next chunk is expected to start at.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The current segment's base offset and the read position in it, once located.
    pub fn position(&self) -> Option<(i64, u64)> {
        self.cursor.as_ref().map(|c| (c.base, c.pos))
    }

    /// How many polls did more than the cheap idle test (a diagnostic: on an idle partition this stays
    /// flat, apart from one poll per [`TailerOptions::full_check_interval`]).
    pub fn slow_polls(&self) -> u64 {
        self.slow_polls
    }

    /// Returns the next batches (at most `max_bytes`, but always at least one batch when one is complete),
    /// `Idle`, or an event. Errors: I/O failures (`Error::Io`, with the path) and confirmed corruption
    /// (`Error::Corrupt`); the tailer's position is unchanged by an error, so polling again is safe.
    pub fn poll(&mut self, max_bytes: usize) -> Result<TailEvent> {
        if self.gone {
            return Ok(TailEvent::PartitionGone);
        }
        if let Some(ev) = self.pending.take() {
            return Ok(ev);
        }
        let now = Instant::now();
        if let (Some(idle), Some(cursor), None, false) = (&self.idle, &self.cursor, &self.suspect, self.needs_resync) {
            if now < self.next_full_check {
                match fs::metadata(&cursor.path) {
                    Ok(md) if FileSig::of(&md) == idle.sig => match &idle.next_path {
                        None => return Ok(TailEvent::Idle),
                        Some(next) => match fs::metadata(next) {
                            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TailEvent::Idle),
                            Err(e) => return Err(Error::io(next.display(), e)),
                            Ok(_) => {}
                        },
                    },
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(cursor.path.display(), e)),
                }
            }
        }
        self.idle = None;
        let full = now >= self.next_full_check;
        if full {
            self.next_full_check = now + self.opts.full_check_interval;
        }
        self.poll_slow(max_bytes.max(1), full)
    }

    fn poll_slow(&mut self, max_bytes: usize, full: bool) -> Result<TailEvent> {
        self.slow_polls += 1;
        let mut resyncs = 0;
        // Each pass either returns or moves on (resync, next segment, changed file): a few are plenty.
        for _ in 0..8 {
            if self.needs_resync || self.cursor.is_none() {
                if resyncs == 2 {
                    break;
                }
                resyncs += 1;
                match self.resync()? {
                    Some(ev) => return Ok(ev),
                    None => continue,
                }
            }
            let Some(cursor) = &self.cursor else { continue };
            let path = cursor.path.clone();
            let sig = match fs::metadata(&path) {
                Ok(md) => FileSig::of(&md),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.needs_resync = true;
                    continue;
                }
                Err(e) => return Err(Error::io(path.display(), e)),
            };
            if (sig.dev, sig.ino) != cursor.id || sig.len < cursor.pos {
                self.needs_resync = true;
                continue;
            }
            match self.read(sig.len, max_bytes)? {
                Read::Chunk(chunk) => {
                    self.suspect = None;
                    return Ok(TailEvent::Data(chunk));
                }
                Read::Resync => self.needs_resync = true,
                Read::Invalid(detail) => return self.suspect(detail),
                // The file changed but holds nothing new: make sure it was not rewritten below us.
                Read::End | Read::Incomplete { .. } if !self.last_delivered_holds()? => self.needs_resync = true,
                Read::Incomplete { needed, available } => {
                    if self.successor(false)?.is_some() {
                        return self.suspect(format!(
                            "incomplete record batch at the end of a rolled segment: batch_size={needed} \
                             available={available}"
                        ));
                    }
                    self.suspect = None;
                    self.record_idle(sig);
                    return Ok(TailEvent::Idle);
                }
                Read::End => {
                    self.suspect = None;
                    let Some(next_base) = self.successor(full)? else {
                        self.record_idle(sig);
                        return Ok(TailEvent::Idle);
                    };
                    // Kafka trims a segment before it creates the next one: look again now.
                    match fs::metadata(&path) {
                        Ok(md) if FileSig::of(&md) == sig => {}
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            self.needs_resync = true;
                            continue;
                        }
                        Err(e) => return Err(Error::io(path.display(), e)),
                    }
                    if next_base < self.next_offset || !self.open_cursor(next_base, 0)? {
                        self.needs_resync = true;
                        continue;
                    }
                    if next_base > self.next_offset {
                        let ev = TailEvent::Missing { from_offset: self.next_offset, to_offset: next_base };
                        self.history.skip_to(next_base);
                        self.next_offset = next_base;
                        return Ok(ev);
                    }
                }
            }
        }
        Ok(TailEvent::Idle)
    }

    /// Remembers the current segment's metadata for the idle fast path, if its timestamp can be trusted.
    fn record_idle(&mut self, sig: FileSig) {
        let empty = self.cursor.as_ref().is_none_or(|c| self.next_offset <= c.base);
        self.idle = sig
            .settled(self.opts.mtime_granularity)
            .then(|| IdleState { sig, next_path: (!empty).then(|| log_path(&self.dir, self.next_offset)) });
    }

    /// Handles bytes at the cursor that are not a valid batch: `Idle` until they have stayed the same for
    /// the confirmation period, then a corruption error.
    fn suspect(&mut self, detail: String) -> Result<TailEvent> {
        let Some(cursor) = &self.cursor else { return Ok(TailEvent::Idle) };
        let (segment, position, path) = (cursor.base, cursor.pos, cursor.path.clone());
        self.suspect_at(segment, position, &path, detail)
    }

    /// As [`Self::suspect`], for a position in segment `segment` (file `path`).
    fn suspect_at(&mut self, segment: i64, position: u64, path: &Path, detail: String) -> Result<TailEvent> {
        let now = Instant::now();
        let since = match &self.suspect {
            Some(s) if s.segment == segment && s.position == position && s.detail == detail => s.since,
            _ => now,
        };
        self.suspect = Some(Suspect { segment, position, detail: detail.clone(), since });
        if now.duration_since(since) >= self.opts.corrupt_confirm_after {
            return Err(Error::corrupt(
                path.display().to_string(),
                format!("{detail} segment={segment} expected_offset={}", self.next_offset),
            ));
        }
        Ok(TailEvent::Idle)
    }

    /// Base offset of a segment after the current one: the file the next offset would roll to, or (on a
    /// full check) any later segment in a listing.
    fn successor(&self, full: bool) -> Result<Option<i64>> {
        let Some(cursor) = &self.cursor else { return Ok(None) };
        // (In an empty segment the next offset is the segment's own base.)
        if self.next_offset > cursor.base {
            let predicted = log_path(&self.dir, self.next_offset);
            match fs::metadata(&predicted) {
                Ok(_) => return Ok(Some(self.next_offset)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(predicted.display(), e)),
            }
        }
        if !full {
            return Ok(None);
        }
        match list_segments(&self.dir) {
            Ok(bases) => Ok(bases.into_iter().find(|&b| b > cursor.base)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(self.dir.display(), e)),
        }
    }

    /// Opens segment `base` at `pos` as the cursor; `false` if the file is gone.
    fn open_cursor(&mut self, base: i64, pos: u64) -> Result<bool> {
        let path = log_path(&self.dir, base);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let md = file.metadata().map_err(|e| Error::io(path.display(), e))?;
        self.cursor = Some(Cursor { base, path, file, id: (md.dev(), md.ino()), pos });
        self.idle = None;
        self.suspect = None;
        Ok(true)
    }

    /// Reads complete batches at the cursor; `size` is the file size just observed.
    fn read(&mut self, size: u64, max_bytes: usize) -> Result<Read> {
        let Some(cursor) = &self.cursor else { return Ok(Read::Resync) };
        let pos = cursor.pos;
        let available = size.saturating_sub(pos);
        if available == 0 {
            return Ok(Read::End);
        }
        let limit = available.min(max_bytes as u64) as usize;
        let mut want =
            limit.min(self.opts.initial_read_bytes.max(HEADER_SIZE)).max(available.min(HEADER_SIZE as u64) as usize);
        let mut buf: Vec<u8> = Vec::new();
        let mut metas: Vec<Meta> = Vec::new();
        let mut consumed = 0usize;
        let mut expected = self.next_offset;
        let io_err = |e| Error::io(format!("{} position={pos}", cursor.path.display()), e);
        let halt = loop {
            let have = buf.len();
            buf.resize(want, 0);
            let got = read_full_at(&cursor.file, &mut buf[have..], pos + have as u64).map_err(io_err)?;
            buf.truncate(have + got);
            let eof = have + got < want;

            let mut it =
                Batches::new(&buf[consumed..], pos + consumed as u64).max_batch_bytes(self.opts.max_batch_bytes);
            let mut halt = None;
            for item in it.by_ref() {
                let b = match item {
                    Ok(b) => b,
                    Err(e) => {
                        halt = Some(Halt::Invalid(e.to_string()));
                        break;
                    }
                };
                let h = b.header();
                let fits = if metas.is_empty() && self.overlap_ok {
                    h.base_offset() <= expected && expected <= h.last_offset()
                } else {
                    h.base_offset() == expected
                };
                if h.last_offset_delta() < 0 {
                    let e = format!(
                        "record batch position={} base_offset={} last_offset_delta={} is negative",
                        pos + consumed as u64,
                        h.base_offset(),
                        h.last_offset_delta()
                    );
                    halt = Some(Halt::Invalid(e));
                    break;
                }
                if !fits {
                    halt = Some(Halt::Discontinuous);
                    break;
                }
                let at = consumed;
                consumed += b.bytes().len();
                expected = h.last_offset() + 1;
                metas.push(Meta {
                    at,
                    fp: Fingerprint {
                        segment: cursor.base,
                        position: pos + at as u64,
                        size: b.bytes().len() as u64,
                        base_offset: h.base_offset(),
                        last_offset: h.last_offset(),
                        epoch: h.partition_leader_epoch(),
                        crc: h.crc(),
                    },
                    max_timestamp: h.max_timestamp(),
                });
            }
            if let Some(halt) = halt {
                break halt;
            }
            let stop = it.stop();
            let grow_to = match stop {
                Some(Stop::End) if !eof && buf.len() < limit => Some(limit.min(buf.len().saturating_mul(2))),
                Some(Stop::Incomplete { needed, .. }) if !eof => {
                    let total = consumed + needed;
                    if total as u64 > available {
                        None
                    } else if total <= limit {
                        Some(total.max(limit.min(buf.len().saturating_mul(2))))
                    } else if metas.is_empty() {
                        Some(total) // one batch larger than max_bytes
                    } else {
                        None
                    }
                }
                _ => None,
            };
            match grow_to {
                Some(n) if n > buf.len() => want = n,
                _ => break Halt::Stop(stop),
            }
        };

        if metas.is_empty() {
            return Ok(match halt {
                Halt::Discontinuous => Read::Resync,
                // Garbage at our position after a truncation is not corruption.
                Halt::Invalid(_) if !self.last_delivered_holds()? => Read::Resync,
                Halt::Invalid(detail) => Read::Invalid(detail),
                Halt::Stop(Some(Stop::Incomplete { needed, .. })) => Read::Incomplete { needed, available },
                Halt::Stop(_) => Read::End,
            });
        }

        // Re-check, after the read, the previously delivered batch and the new last one: a truncation
        // racing with the read shows up in one of them.
        let last = metas[metas.len() - 1].fp;
        if !self.last_delivered_holds()? || !fingerprint_holds(&cursor.file, &last).map_err(io_err)? {
            return Ok(Read::Resync);
        }
        buf.truncate(consumed);
        let mut epochs: Vec<EpochRun> = Vec::new();
        for m in &metas {
            if epochs.last().is_none_or(|r| r.epoch != m.fp.epoch) {
                epochs.push(EpochRun { epoch: m.fp.epoch, start_offset: m.fp.base_offset, byte_offset: m.at });
            }
        }
        let chunk = TailChunk {
            bytes: Bytes::from(buf),
            first_offset: metas[0].fp.base_offset,
            last_offset: last.last_offset,
            epochs,
            batch_count: metas.len() as u32,
            max_timestamp: metas.iter().map(|m| m.max_timestamp).max().unwrap_or(-1),
            segment_base_offset: cursor.base,
            file_position: pos,
        };
        for m in &metas {
            self.history.push_run(m.fp.epoch, m.fp.base_offset.max(self.next_offset), m.fp.last_offset + 1);
        }
        self.history.record_chunk(metas[0].fp, last);
        if let Some(c) = &mut self.cursor {
            c.pos += consumed as u64;
        }
        self.next_offset = chunk.next_offset();
        self.overlap_ok = false;
        Ok(Read::Chunk(chunk))
    }

    /// Whether the last delivered batch, if it is in the current segment, is still there unchanged.
    fn last_delivered_holds(&self) -> Result<bool> {
        let (Some(cursor), Some(fp)) = (&self.cursor, self.history.recent.back()) else { return Ok(true) };
        if fp.segment != cursor.base || fp.last_offset + 1 != self.next_offset {
            return Ok(true);
        }
        fingerprint_holds(&cursor.file, fp).map_err(|e| Error::io(cursor.path.display(), e))
    }

    /// Finds where the log and what the tailer knows part (or confirms they agree), repositions the
    /// cursor, and returns the event to report (`None`: positioned silently, read on).
    fn resync(&mut self) -> Result<Option<TailEvent>> {
        self.idle = None;
        self.needs_resync = true;
        let segs = match list_segments(&self.dir) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!("partition directory gone: dir={}", self.dir.display());
                self.gone = true;
                self.cursor = None;
                return Ok(Some(TailEvent::PartitionGone));
            }
            Err(e) => return Err(Error::io(self.dir.display(), e)),
        };
        if segs.is_empty() {
            return Ok(Some(TailEvent::Idle)); // between deleting and creating segments: look again later
        }
        let (seg, pos, expected) = self.walk_start(&segs)?;
        let target = self.next_offset;
        let walked = self.walk(&segs, seg, pos, expected)?;
        let agrees = matches!(walked, WalkEnd::Reached { base, .. } if base <= target)
            || matches!(walked, WalkEnd::End { end, .. } if end == target);
        if agrees {
            if let Some((fp, path)) = self.changed_last_delivered(&segs)? {
                let detail = format!(
                    "delivered record batch changed without a leader-epoch change: position={} base_offset={} \
                     epoch={} crc32c={:08x}",
                    fp.position, fp.base_offset, fp.epoch, fp.crc
                );
                // Possibly a truncation racing with this check: an error only if it persists.
                return self.suspect_at(fp.segment, fp.position, &path, detail).map(Some);
            }
        }
        let (seg, pos, event) = match walked {
            WalkEnd::Vanished => return Ok(Some(TailEvent::Idle)),
            WalkEnd::Reached { seg, pos, base } if base == target => (seg, pos, None),
            WalkEnd::Reached { seg, pos, base } if base > target => {
                self.history.skip_to(base);
                self.next_offset = base;
                (seg, pos, Some(TailEvent::Missing { from_offset: target, to_offset: base }))
            }
            WalkEnd::Reached { seg, pos, .. } => {
                // The batch holding the start offset begins before it; nothing is known: deliver it whole.
                self.overlap_ok = true;
                (seg, pos, None)
            }
            WalkEnd::Diverged { seg, pos, offset, resume } => {
                self.history.truncate(offset);
                self.next_offset = offset;
                if let Some(b) = resume.filter(|&b| b > offset) {
                    self.pending = Some(TailEvent::Missing { from_offset: offset, to_offset: b });
                    self.history.skip_to(b);
                    self.next_offset = b;
                }
                (seg, pos, Some(TailEvent::Truncated { at_offset: offset }))
            }
            WalkEnd::End { seg, pos, end } => {
                let event = match end.cmp(&target) {
                    std::cmp::Ordering::Equal => None,
                    std::cmp::Ordering::Less => {
                        self.history.truncate(end);
                        Some(TailEvent::Truncated { at_offset: end })
                    }
                    std::cmp::Ordering::Greater => {
                        self.history.skip_to(end);
                        Some(TailEvent::Missing { from_offset: target, to_offset: end })
                    }
                };
                self.next_offset = end;
                (seg, pos, event)
            }
        };
        if !self.open_cursor(segs[seg], pos)? {
            return Ok(Some(TailEvent::Idle));
        }
        self.needs_resync = false;
        if let Some(ev) = &event {
            tracing::info!("log tailer: dir={} event={ev:?}", self.dir.display());
        }
        Ok(event)
    }

    /// After a walk found the log in agreement with the delivered epochs, the last delivered batch (if its
    /// segment is still there) must be unchanged too; returns it and its path if it changed. A change that
    /// keeps the leader epoch is not something Kafka does (a new leader has a new epoch): it is corruption.
    fn changed_last_delivered(&self, segs: &[i64]) -> Result<Option<(Fingerprint, PathBuf)>> {
        let Some(fp) = self.history.recent.back().filter(|f| f.last_offset + 1 == self.next_offset) else {
            return Ok(None);
        };
        if segs.binary_search(&fp.segment).is_err() {
            return Ok(None);
        }
        let path = log_path(&self.dir, fp.segment);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let holds = fingerprint_holds(&file, fp).map_err(|e| Error::io(path.display(), e))?;
        Ok((!holds).then_some((*fp, path)))
    }

    /// Where to start checking the log: just after the newest delivered batch that is still there, or
    /// (no fingerprint holds) at the oldest offset whose epoch is known, via the offset index.
    fn walk_start(&self, segs: &[i64]) -> Result<(usize, u64, Option<i64>)> {
        for fp in self.history.fingerprints() {
            let Ok(seg) = segs.binary_search(&fp.segment) else { continue };
            if fp.last_offset >= self.next_offset {
                continue;
            }
            let path = log_path(&self.dir, fp.segment);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path.display(), e)),
            };
            if fingerprint_holds(&file, &fp).map_err(|e| Error::io(path.display(), e))? {
                return Ok((seg, fp.position + fp.size, Some(fp.last_offset + 1)));
            }
        }
        let anchor = self.history.anchor.min(self.next_offset);
        let seg = segs.partition_point(|&b| b <= anchor).saturating_sub(1);
        let mut pos = 0;
        if segs[seg] <= anchor {
            let path = log_path(&self.dir, segs[seg]);
            if let Ok(file) = File::open(&path) {
                pos = index_position(&self.dir, segs[seg], anchor, &file);
            }
        }
        Ok((seg, pos, None))
    }

    /// Walks batch headers from (`seg`, `pos`) across the following segments, comparing the leader epoch
    /// of each batch below the target offset with the epochs delivered, until the first batch reaching the
    /// target, a divergence, or the end of the data.
    fn walk(&self, segs: &[i64], mut seg: usize, mut pos: u64, mut expected: Option<i64>) -> Result<WalkEnd> {
        let target = self.next_offset;
        let has_history = !self.history.runs.is_empty();
        loop {
            let path = log_path(&self.dir, segs[seg]);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(WalkEnd::Vanished),
                Err(e) => return Err(Error::io(path.display(), e)),
            };
            let io_err = |e| Error::io(path.display(), e);
            let size = file.metadata().map_err(io_err)?.len();
            if pos == 0 {
                if let Some(e) = expected.filter(|&e| segs[seg] > e) {
                    // The segment starts after the offset we expected next.
                    if e < target {
                        return Ok(WalkEnd::Diverged { seg, pos, offset: e, resume: Some(segs[seg]) });
                    }
                    expected = Some(segs[seg]);
                }
            }
            let rolled = seg + 1 < segs.len();
            loop {
                let mut bytes = [0u8; HEADER_SIZE];
                let n = read_full_at(&file, &mut bytes, pos).map_err(io_err)?;
                if bytes[..n.min(LOG_OVERHEAD)].iter().all(|&b| b == 0) {
                    break; // end of file or zero fill
                }
                let parsed = if n == HEADER_SIZE { BatchHeader::parse(&bytes, pos) } else { None };
                let h = match parsed {
                    Some(Ok(h))
                        if pos + h.batch_size() as u64 <= size && h.batch_size() <= self.opts.max_batch_bytes =>
                    {
                        h
                    }
                    // The active segment may end in a batch being written.
                    _ if !rolled => break,
                    // A rolled segment's data ends exactly at its end: anything else is corruption.
                    Some(Err(e)) => return Err(e.into_error(path.display().to_string())),
                    Some(Ok(h)) => {
                        return Err(Error::corrupt(
                            path.display().to_string(),
                            format!(
                                "record batch position={pos} base_offset={} batch_size={} beyond the end of a rolled \
                                 segment: file_size={size}",
                                h.base_offset(),
                                h.batch_size()
                            ),
                        ))
                    }
                    None => {
                        return Err(Error::corrupt(
                            path.display().to_string(),
                            format!("record batch position={pos}: {n} bytes at the end of a rolled segment"),
                        ))
                    }
                };
                let batch_size = h.batch_size() as u64;
                let (base, last, epoch) = (h.base_offset(), h.last_offset(), h.partition_leader_epoch());
                if let Some(e) = expected.filter(|&e| e != base) {
                    if e < target || base < e {
                        return Ok(WalkEnd::Diverged { seg, pos, offset: base.min(e), resume: Some(base) });
                    }
                    return Ok(WalkEnd::Reached { seg, pos, base });
                }
                let known = if last >= self.history.anchor {
                    self.history.epoch_at(base.max(self.history.anchor))
                } else {
                    None
                };
                if known.is_some_and(|k| k != epoch) || (last >= target && base < target && has_history) {
                    return Ok(WalkEnd::Diverged { seg, pos, offset: base, resume: Some(base) });
                }
                if last >= target {
                    return Ok(WalkEnd::Reached { seg, pos, base });
                }
                expected = Some(last + 1);
                pos += batch_size;
            }
            if expected.is_none() && pos > 0 {
                // The indexed position holds no batch (any more): scan this segment from its start.
                pos = 0;
                continue;
            }
            if seg + 1 < segs.len() {
                seg += 1;
                pos = 0;
                continue;
            }
            let end = expected.unwrap_or(segs[seg]);
            return Ok(WalkEnd::End { seg, pos, end });
        }
    }
}

/// Whether the batch header at the fingerprint's position still matches it.
fn fingerprint_holds(file: &File, fp: &Fingerprint) -> io::Result<bool> {
    let Some(bytes) = read_header(file, fp.position)? else { return Ok(false) };
    Ok(matches!(BatchHeader::parse(&bytes, fp.position), Some(Ok(h)) if fp.matches(&h)))
}
