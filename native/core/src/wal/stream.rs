//! The per-broker stream of WAL objects: [`WalWriter`] and [`WalReader`] over any [`ObjectStore`].
//!
//! Protocol (specified in `docs/formats.md`, "Fast tier (WAL)"):
//!
//! * objects are created with `If-None-Match: *` at consecutive seqs, so the stream never forks and no object
//!   is ever overwritten; a writer that meets an object of a **newer** incarnation is a zombie and is fenced
//!   for good ([`is_fenced_error`]); an object of an **older** incarnation is skipped; a byte-identical object
//!   is the writer's own earlier attempt whose outcome it did not see;
//! * deletion removes a prefix of the stream, in ascending order, after the head document announced the new
//!   low-water mark, and never the newest object — so the existing objects are always one contiguous run,
//!   whose ends are found with HEAD probes (galloping, then bisection) instead of listings;
//! * the head document is a hint; when it is missing, corrupt or points at a deleted object, one LIST of the
//!   broker's directory (sorted here, never trusted for order) recovers the run.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{error, info, warn};

use super::format::{BuiltObject, PartitionData, TopicId, WalHead, WalHeader, WalObject, WalObjectBuilder, WalStamp};
use super::format::{HEADER_FETCH_BYTES, MAX_OBJECT_BYTES};
use super::{head_key, object_key, parse_object_name, stream_prefix};
use crate::error::{Error, Result};
use crate::store::{ObjectStore, PutOptions};
use crate::unix_ms as now_unix_ms;

/// The `op` of the error a fenced writer returns.
const FENCED_OP: &str = "wal_fenced";

/// True if `e` says the writer was fenced by a newer incarnation (or one sharing its incarnation): the
/// uploader must stop for good; retrying cannot help.
pub fn is_fenced_error(e: &Error) -> bool {
    matches!(e, Error::Store { op, .. } if *op == FENCED_OP)
}

/// An incarnation derived from the clock: `unix_ms * 1024 + random(0..1024)` (below 2^53 until the year
/// 2250, so JSON tools print it exactly).
fn clock_incarnation() -> u64 {
    (now_unix_ms().max(0) as u64).saturating_mul(1024) + rand::random_range(0..1024u64)
}

/// Reads and validates the header of the WAL object at `key` with ranged GETs: the first
/// [`HEADER_FETCH_BYTES`], then the rest of the header if it is longer. The object's total size is not
/// checked here; a partition read past its end fails verification ([`read_partition`]).
pub async fn read_header(store: &dyn ObjectStore, key: &str) -> Result<WalHeader> {
    let first = store.get_range(key, 0..HEADER_FETCH_BYTES).await?;
    let header_len = WalHeader::header_len_from_prefix(key, &first)?;
    if first.len() as u64 >= header_len || (first.len() as u64) < HEADER_FETCH_BYTES {
        // Either all of the header is here, or the object ended early (parse reports it truncated).
        return WalHeader::parse_prefix(key, &first);
    }
    let rest = store.get_range(key, first.len() as u64..header_len).await?;
    let mut buf = Vec::with_capacity(first.len() + rest.len());
    buf.extend_from_slice(&first);
    buf.extend_from_slice(&rest);
    WalHeader::parse_prefix(key, &buf)
}

/// Reads one partition's bytes from the object at `key` (whose header is `header`) with one ranged GET, and
/// verifies them. `None` if the object holds none of the partition.
pub async fn read_partition(
    store: &dyn ObjectStore,
    key: &str,
    header: &WalHeader,
    topic_id: &TopicId,
    partition: i32,
) -> Result<Option<PartitionData>> {
    let Some(span) = header.partition_span(topic_id, partition) else {
        return Ok(None);
    };
    let bytes = store.get_range(key, span).await?;
    header.verify_partition(key, topic_id, partition, bytes)
}

/// The head document, or `None` if there is none. A corrupt head, or one of another broker, is reported as
/// a warning and treated as absent (it is only a hint; the objects are the truth).
async fn read_head(store: &dyn ObjectStore, key: &str, broker_id: i32) -> Result<Option<WalHead>> {
    let data = match store.get(key).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    match WalHead::decode(key, &data) {
        Ok(h) if h.broker_id == broker_id => Ok(Some(h)),
        Ok(h) => {
            warn!(key, head_broker_id = h.broker_id, broker_id, "wal head belongs to another broker; ignoring it");
            Ok(None)
        }
        Err(e) => {
            warn!(error = %e, "wal head unreadable; recovering the stream from its objects");
            Ok(None)
        }
    }
}

/// Checks that a header read from `key` is object `seq` of `broker_id`'s stream.
fn check_identity(key: &str, header: &WalHeader, broker_id: i32, seq: u64) -> Result<()> {
    if header.stamp.broker_id != broker_id || header.stamp.seq != seq {
        return Err(Error::corrupt(
            key,
            format!(
                "wal object claims broker_id={} seq={} but its key says broker_id={broker_id} seq={seq}",
                header.stamp.broker_id, header.stamp.seq
            ),
        ));
    }
    Ok(())
}

/// The contiguous run of existing objects, `first..next` (empty when equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: u64,
    next: u64,
}

/// HEAD-probing of one stream. Relies on the run of existing objects being contiguous (see module docs);
/// should that ever not hold (an operator deleting objects by hand), the results are still existing objects
/// next to missing ones, so the worst outcome is a leftover object, never a skipped or overwritten one.
struct Prober<'a> {
    store: &'a dyn ObjectStore,
    prefix: &'a str,
    broker_id: i32,
}

impl Prober<'_> {
    async fn exists(&self, seq: u64) -> Result<bool> {
        match self.store.head(&object_key(self.prefix, self.broker_id, seq)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `present` exists: the first missing seq above the run containing it.
    async fn end_of_run(&self, present: u64) -> Result<u64> {
        let (mut lo, mut step) = (present, 1u64);
        let mut hi = loop {
            let Some(probe) = lo.checked_add(step) else {
                return Err(Error::Internal(format!("wal seq overflow probing broker_id={}", self.broker_id)));
            };
            if self.exists(probe).await? {
                lo = probe;
                step = step.saturating_mul(2);
            } else {
                break probe;
            }
        };
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.exists(mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(hi)
    }

    /// `present` exists: the lowest seq of the run containing it.
    async fn start_of_run(&self, present: u64) -> Result<u64> {
        let (mut hi, mut step) = (present, 1u64);
        let lo = loop {
            if hi == 0 {
                return Ok(0);
            }
            let probe = hi.saturating_sub(step);
            if self.exists(probe).await? {
                hi = probe;
                step = step.saturating_mul(2);
            } else {
                break probe;
            }
        };
        self.lowest_present(lo, hi).await
    }

    /// `absent` is missing, `present` exists, `absent < present`: the lowest existing seq in between.
    async fn lowest_present(&self, mut absent: u64, mut present: u64) -> Result<u64> {
        while present - absent > 1 {
            let mid = absent + (present - absent) / 2;
            if self.exists(mid).await? {
                present = mid;
            } else {
                absent = mid;
            }
        }
        Ok(present)
    }

    /// Lowest and highest seq in a listing of the broker's directory (any order), if any.
    async fn list_bounds(&self) -> Result<Option<(u64, u64)>> {
        let dir = stream_prefix(self.prefix, self.broker_id);
        let seqs: Vec<u64> = self
            .store
            .list(&dir)
            .await?
            .iter()
            .filter_map(|m| m.key.strip_prefix(dir.as_str()).and_then(parse_object_name))
            .collect();
        Ok(seqs.iter().min().copied().zip(seqs.iter().max().copied()))
    }

    /// Finds the run of existing objects, starting from the head's hints.
    async fn locate(&self, head: Option<&WalHead>) -> Result<Run> {
        if let Some(h) = head {
            match h.next_seq.checked_sub(1) {
                None => {
                    if !self.exists(0).await? {
                        return Ok(Run { first: 0, next: 0 });
                    }
                    return Ok(Run { first: 0, next: self.end_of_run(0).await? });
                }
                Some(last) if self.exists(last).await? => {
                    let next = self.end_of_run(last).await?;
                    let low = h.low_water.min(last);
                    let first = if self.exists(low).await? {
                        self.start_of_run(low).await?
                    } else {
                        self.lowest_present(low, last).await?
                    };
                    return Ok(Run { first, next });
                }
                Some(last) => {
                    warn!(
                        broker_id = self.broker_id,
                        head_next_seq = h.next_seq,
                        "wal head points at a missing object seq={last}; listing the stream"
                    );
                }
            }
        }
        let Some((min, max)) = self.list_bounds().await? else {
            return Ok(Run { first: 0, next: 0 });
        };
        if !self.exists(max).await? {
            return Err(Error::Transient {
                op: "wal_locate",
                key: object_key(self.prefix, self.broker_id, max),
                detail: "listed object vanished while locating the stream; retry".into(),
            });
        }
        let next = self.end_of_run(max).await?;
        let first = if self.exists(min).await? { min } else { self.lowest_present(min, max).await? };
        Ok(Run { first, next })
    }
}

/// Options of [`WalWriter::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalWriterOptions {
    /// Use this incarnation (e.g. derived from the broker epoch) instead of one derived from the clock. It
    /// must be higher than every incarnation found in the stream, or `open` fails fenced.
    pub incarnation: Option<u64>,
    /// Conflicts with older incarnations' objects tolerated within one [`WalWriter::append`] before it gives
    /// up with a transient error (the pending object stays and the next call continues).
    pub max_conflicts_per_append: u32,
    /// How often [`WalWriter::append`] reads the head to learn whether a newer incarnation announced itself
    /// (one GET per interval). This fences a zombie even while it keeps winning the race for the next seq;
    /// `None` leaves fencing to conflicts and to [`WalWriter::update_head`].
    pub fence_check_interval: Option<Duration>,
}

impl Default for WalWriterOptions {
    fn default() -> Self {
        WalWriterOptions {
            incarnation: None,
            max_conflicts_per_append: 16,
            fence_check_interval: Some(Duration::from_secs(1)),
        }
    }
}

/// What [`WalWriter::append`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub key: String,
    /// Object size in bytes.
    pub size: u64,
    /// The stored header (entries with their positions and CRCs; feed it to a
    /// [`super::RetentionIndex`]).
    pub header: WalHeader,
    /// Seqs taken by older incarnations that this append had to skip.
    pub skipped: u64,
    /// True if the object was found already stored by an earlier attempt whose outcome was unknown.
    pub recovered: bool,
}

/// A stamped object whose create has not been confirmed yet.
struct Pending {
    content: WalObjectBuilder,
    created_unix_ms: i64,
    seq: u64,
    built: BuiltObject,
}

/// What a conflicting object at our seq turned out to be.
enum Conflict {
    /// Our own earlier attempt.
    Ours,
    /// Older incarnations' objects up to `free - 1`; continue at `free`.
    Older { free: u64, prev_header_crc: u32 },
}

/// The single writer of one broker's stream. See the [module docs](self) and `docs/formats.md`.
///
/// Contract for the uploader: call [`WalWriter::append`] with the content of the next object; if it fails
/// with anything but a fenced error, call it again with the **same content** (the writer refuses different
/// content until the unknown outcome is resolved). Call [`WalWriter::update_head`] now and then (e.g. every
/// second) and [`WalWriter::advance_low_water`] when the slow tier has caught up. After a fenced error
/// every call fails; the uploader must stop.
pub struct WalWriter {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    broker_id: i32,
    incarnation: u64,
    opts: WalWriterOptions,
    next_seq: u64,
    prev_header_crc: u32,
    low_water: u64,
    cleaned_below: u64,
    head_next_seq: u64,
    pending: Option<Pending>,
    fenced: Option<(String, String)>,
    last_fence_check: Instant,
}

impl fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalWriter")
            .field("prefix", &self.prefix)
            .field("broker_id", &self.broker_id)
            .field("incarnation", &self.incarnation)
            .field("next_seq", &self.next_seq)
            .field("low_water", &self.low_water)
            .field("cleaned_below", &self.cleaned_below)
            .field("pending_seq", &self.pending.as_ref().map(|p| p.seq))
            .field("fenced", &self.fenced.is_some())
            .finish()
    }
}

impl WalWriter {
    /// Opens `broker_id`'s stream under `prefix` for writing: finds its end (head hint, HEAD probes, LIST
    /// only if the head is missing or stale), reads the last object's header for the hash chain, picks an
    /// incarnation above every one seen, and announces it in the head.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        broker_id: i32,
        opts: WalWriterOptions,
    ) -> Result<WalWriter> {
        if broker_id < 0 {
            return Err(Error::Internal(format!("wal broker_id={broker_id} negative")));
        }
        let hk = head_key(prefix, broker_id);
        let head = read_head(store.as_ref(), &hk, broker_id).await?;
        let run = Prober { store: store.as_ref(), prefix, broker_id }.locate(head.as_ref()).await?;
        let (mut prev_header_crc, mut tail_incarnation) = (0, 0);
        if run.next > run.first {
            let key = object_key(prefix, broker_id, run.next - 1);
            let h = read_header(store.as_ref(), &key).await?;
            check_identity(&key, &h, broker_id, run.next - 1)?;
            (prev_header_crc, tail_incarnation) = (h.header_crc, h.stamp.incarnation);
        }
        let head_next = head.as_ref().map_or(0, |h| h.next_seq);
        let next_seq = run.next.max(head_next);
        if next_seq > run.next {
            warn!(
                broker_id,
                head_next_seq = head_next,
                objects_end = run.next,
                "wal objects the head says were written are missing; continuing after them (hash chain restarts)"
            );
            prev_header_crc = 0;
        }
        let seen = head.as_ref().map_or(0, |h| h.incarnation).max(tail_incarnation);
        let incarnation = match opts.incarnation {
            Some(i) if i > seen => i,
            Some(i) => {
                return Err(Error::Store {
                    op: FENCED_OP,
                    key: hk,
                    detail: format!(
                        "requested incarnation={i} is not above incarnation={seen} already in the stream broker_id={broker_id}"
                    ),
                })
            }
            None => clock_incarnation().max(seen + 1),
        };
        // Nothing below the run exists; with no run at all, nothing below `next_seq` does.
        let (low_water, cleaned_below) = if run.next > run.first {
            (head.as_ref().map_or(run.first, |h| h.low_water).clamp(run.first, run.next - 1), run.first)
        } else {
            (next_seq, next_seq)
        };
        let mut writer = WalWriter {
            store,
            prefix: prefix.to_string(),
            broker_id,
            incarnation,
            opts,
            next_seq,
            prev_header_crc,
            low_water,
            cleaned_below,
            head_next_seq: head_next,
            pending: None,
            fenced: None,
            last_fence_check: Instant::now(),
        };
        writer.write_head(low_water).await?;
        info!(
            broker_id,
            incarnation,
            next_seq,
            low_water,
            first_object = run.first,
            "wal writer opened key={}",
            writer.key(next_seq)
        );
        Ok(writer)
    }

    pub fn broker_id(&self) -> i32 {
        self.broker_id
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The seq the next append will try first.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seqs below this are logically deleted.
    pub fn low_water(&self) -> u64 {
        self.low_water
    }

    /// Seqs below this are known deleted (the rest up to the low-water mark is cleaned up by the next
    /// [`WalWriter::advance_low_water`]).
    pub fn cleaned_below(&self) -> u64 {
        self.cleaned_below
    }

    /// Objects appended since the head was last written.
    pub fn head_lag(&self) -> u64 {
        self.next_seq.saturating_sub(self.head_next_seq)
    }

    /// True while an append's outcome is unknown (the next append must carry the same content).
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.is_some()
    }

    /// The key of object `seq` of this stream.
    pub fn key(&self, seq: u64) -> String {
        object_key(&self.prefix, self.broker_id, seq)
    }

    fn prober(&self) -> Prober<'_> {
        Prober { store: self.store.as_ref(), prefix: &self.prefix, broker_id: self.broker_id }
    }

    fn check_not_fenced(&self) -> Result<()> {
        match &self.fenced {
            Some((key, detail)) => Err(Error::Store { op: FENCED_OP, key: key.clone(), detail: detail.clone() }),
            None => Ok(()),
        }
    }

    /// Fences this writer for good and returns the error.
    fn fence(&mut self, key: &str, detail: String) -> Error {
        error!(broker_id = self.broker_id, incarnation = self.incarnation, key, "wal writer fenced: {detail}");
        self.fenced = Some((key.to_string(), detail));
        self.pending = None;
        match self.check_not_fenced() {
            Err(e) => e,
            Ok(()) => Error::Internal("wal fence not recorded".into()),
        }
    }

    /// Fences if `other` (an incarnation found at `key`) is not older than ours.
    fn judge(&mut self, key: &str, other: u64) -> Result<()> {
        if other > self.incarnation {
            return Err(self.fence(
                key,
                format!(
                    "a newer writer incarnation={other} owns the stream; this writer broker_id={} incarnation={} is a zombie and stops",
                    self.broker_id, self.incarnation
                ),
            ));
        }
        if other == self.incarnation {
            return Err(self.fence(
                key,
                format!(
                    "another writer uses the same incarnation={other} broker_id={} (two writers for one broker?)",
                    self.broker_id
                ),
            ));
        }
        Ok(())
    }

    /// Fences if the head was written by a newer incarnation.
    async fn check_head_fence(&mut self) -> Result<()> {
        let hk = head_key(&self.prefix, self.broker_id);
        let head = read_head(self.store.as_ref(), &hk, self.broker_id).await?;
        self.last_fence_check = Instant::now();
        if let Some(h) = head {
            if h.incarnation > self.incarnation {
                return self.judge(&hk, h.incarnation);
            }
        }
        Ok(())
    }

    fn stamp(&self, content: WalObjectBuilder, created_unix_ms: i64, seq: u64, prev: u32) -> Result<Pending> {
        let stamp = WalStamp {
            broker_id: self.broker_id,
            incarnation: self.incarnation,
            seq,
            prev_header_crc: prev,
            created_unix_ms,
        };
        let built = content.build(&stamp)?;
        Ok(Pending { content, created_unix_ms, seq, built })
    }

    /// Appends one object holding `content` at the next seq, with the conflict protocol of the module docs.
    /// On an error other than fenced, the stamped object stays pending: call again with the same content.
    pub async fn append(&mut self, content: &WalObjectBuilder) -> Result<Appended> {
        self.check_not_fenced()?;
        if content.object_len() > MAX_OBJECT_BYTES {
            return Err(Error::Internal(format!("wal object size={} above cap", content.object_len())));
        }
        match &self.pending {
            Some(p) if p.content != *content => {
                return Err(Error::Internal(format!(
                    "wal append key={} has an earlier attempt with an unknown outcome; append must be retried with the same content",
                    self.key(p.seq)
                )));
            }
            Some(_) => {}
            None => {
                self.pending = Some(self.stamp(content.clone(), now_unix_ms(), self.next_seq, self.prev_header_crc)?)
            }
        }
        if self.opts.fence_check_interval.is_some_and(|i| self.last_fence_check.elapsed() >= i) {
            self.check_head_fence().await?;
        }
        let (mut skipped, mut conflicts) = (0u64, 0u32);
        loop {
            let Some(p) = &self.pending else {
                return Err(Error::Internal("wal append lost its pending object".into()));
            };
            let (seq, body) = (p.seq, p.built.bytes.clone());
            let key = self.key(seq);
            match self.store.put(&key, body, PutOptions { if_none_match: true }).await {
                Ok(()) => return self.commit(skipped, false),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.resolve_conflict(seq).await? {
                Conflict::Ours => return self.commit(skipped, true),
                Conflict::Older { free, prev_header_crc } => {
                    warn!(
                        broker_id = self.broker_id,
                        incarnation = self.incarnation,
                        "wal seqs {seq}..{free} were taken by an older incarnation; continuing at key={}",
                        self.key(free)
                    );
                    skipped += free - seq;
                    conflicts += 1;
                    let Some(p) = self.pending.take() else {
                        return Err(Error::Internal("wal append lost its pending object".into()));
                    };
                    self.pending = Some(self.stamp(p.content, p.created_unix_ms, free, prev_header_crc)?);
                    self.next_seq = free;
                    self.prev_header_crc = prev_header_crc;
                    if conflicts >= self.opts.max_conflicts_per_append {
                        return Err(Error::Transient {
                            op: "wal_append",
                            key: self.key(free),
                            detail: format!("{conflicts} conflicts with older incarnations in one append; retry"),
                        });
                    }
                }
            }
        }
    }

    fn commit(&mut self, skipped: u64, recovered: bool) -> Result<Appended> {
        let Some(p) = self.pending.take() else {
            return Err(Error::Internal("wal commit without a pending object".into()));
        };
        self.next_seq = p.seq + 1;
        self.prev_header_crc = p.built.header.header_crc;
        if recovered {
            info!(broker_id = self.broker_id, "wal append found its own earlier attempt key={}", self.key(p.seq));
        }
        Ok(Appended {
            seq: p.seq,
            key: self.key(p.seq),
            size: p.built.bytes.len() as u64,
            header: p.built.header,
            skipped,
            recovered,
        })
    }

    /// Our conditional create of `seq` found an object there: decide whose it is. An object of our
    /// pending object's size is read whole and compared byte for byte; any other only by its header.
    async fn resolve_conflict(&mut self, seq: u64) -> Result<Conflict> {
        let key = self.key(seq);
        let pending_len = self.pending.as_ref().map_or(0, |p| p.built.bytes.len() as u64);
        let header = match self.store.head(&key).await {
            Ok(meta) if meta.size == pending_len => match self.store.get(&key).await {
                Ok(existing) => {
                    if self.pending.as_ref().is_some_and(|p| p.built.bytes == existing) {
                        return Ok(Conflict::Ours);
                    }
                    WalHeader::parse_prefix(&key, &existing)
                }
                Err(e) => Err(e),
            },
            Ok(_) => read_header(self.store.as_ref(), &key).await,
            Err(e) => Err(e),
        };
        let header = match header {
            Ok(h) => h,
            Err(e) if e.is_not_found() => {
                self.check_head_fence().await?;
                return Err(Error::Transient {
                    op: "wal_append",
                    key,
                    detail: "conditional create reported an existing object that a read cannot find; retry".into(),
                });
            }
            Err(e) => return Err(e),
        };
        check_identity(&key, &header, self.broker_id, seq)?;
        self.judge(&key, header.stamp.incarnation)?;
        let free = self.prober().end_of_run(seq).await?;
        let prev_header_crc = if free == seq + 1 {
            header.header_crc
        } else {
            let last_key = self.key(free - 1);
            let last = read_header(self.store.as_ref(), &last_key).await?;
            check_identity(&last_key, &last, self.broker_id, free - 1)?;
            self.judge(&last_key, last.stamp.incarnation)?;
            last.header_crc
        };
        Ok(Conflict::Older { free, prev_header_crc })
    }

    /// Writes the head (plain PUT) with this writer's position, after checking that no newer incarnation
    /// wrote it (fenced otherwise).
    pub async fn update_head(&mut self) -> Result<()> {
        self.write_head(self.low_water).await
    }

    async fn write_head(&mut self, low_water: u64) -> Result<()> {
        self.check_not_fenced()?;
        self.check_head_fence().await?;
        let head = WalHead {
            format: WalHead::FORMAT.to_string(),
            version: WalHead::VERSION,
            broker_id: self.broker_id,
            incarnation: self.incarnation,
            next_seq: self.next_seq,
            low_water: low_water.min(self.next_seq),
            updated_unix_ms: now_unix_ms(),
        };
        let hk = head_key(&self.prefix, self.broker_id);
        self.store.put(&hk, Bytes::from(head.encode()), PutOptions::default()).await?;
        self.head_next_seq = head.next_seq;
        Ok(())
    }

    /// Moves the low-water mark up to `seq` (clamped so the newest object is kept): the head announces the new
    /// mark; nothing is deleted (see [`WalWriter::uncleaned`] and [`WalWriter::cleaned`] for deleting the
    /// objects below it off the append path).
    pub async fn raise_low_water(&mut self, seq: u64) -> Result<()> {
        self.check_not_fenced()?;
        let Some(newest) = self.next_seq.checked_sub(1) else {
            return Ok(());
        };
        let target = seq.min(newest);
        if target > self.low_water {
            self.write_head(target).await?;
            self.low_water = target;
        }
        Ok(())
    }

    /// The seqs below the low-water mark not known to be deleted yet, with their keys.
    pub fn uncleaned(&self) -> Vec<(u64, String)> {
        (self.cleaned_below..self.low_water).map(|seq| (seq, self.key(seq))).collect()
    }

    /// Every object below `below` (at most the low-water mark) was deleted.
    pub fn cleaned(&mut self, below: u64) {
        self.cleaned_below = self.cleaned_below.max(below.min(self.low_water));
    }

    /// Moves the low-water mark up to `seq` (clamped so the newest object is kept) and deletes the objects
    /// below it: first the head announces the new mark, then the objects are deleted in ascending order, one
    /// at a time ([`delete_objects`]); a failed delete stops the round (the next call resumes). Returns the
    /// objects deleted.
    pub async fn advance_low_water(&mut self, seq: u64) -> Result<u64> {
        self.raise_low_water(seq).await?;
        let before = self.cleaned_below;
        let (below, err) = delete_objects(self.store.clone(), self.uncleaned(), 1).await;
        self.cleaned(below);
        match err {
            Some(e) => Err(e),
            None => Ok(self.cleaned_below - before),
        }
    }
}

/// Deletes `objects` (ascending seqs with their keys, as [`WalWriter::uncleaned`] lists them), `concurrency`
/// at a time. Returns the seq below which every listed object is gone, for [`WalWriter::cleaned`], and the
/// error that stopped the round: nothing from the first failed seq on counts as deleted (the next round
/// resumes there; deleting a missing object succeeds).
pub async fn delete_objects(
    store: Arc<dyn ObjectStore>,
    objects: Vec<(u64, String)>,
    concurrency: usize,
) -> (u64, Option<Error>) {
    let mut below = objects.first().map_or(0, |o| o.0);
    for chunk in objects.chunks(concurrency.max(1)) {
        let mut set = tokio::task::JoinSet::new();
        for (seq, key) in chunk.iter().cloned() {
            let store = store.clone();
            set.spawn(async move { (seq, store.delete(&key).await) });
        }
        let mut failed: Option<(u64, Error)> = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok((seq, Err(e))) if failed.as_ref().is_none_or(|f| seq < f.0) => failed = Some((seq, e)),
                Ok(_) => {}
                Err(e) => return (below, Some(Error::Internal(format!("wal delete task: {e}")))),
            }
        }
        if let Some((seq, e)) = failed {
            return (seq, Some(e));
        }
        below = chunk.last().map_or(below, |c| c.0 + 1);
    }
    (below, None)
}

/// Where a [`WalReader`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained object (at or above the low-water mark).
    Oldest,
    /// The first object not yet written (only new data).
    Tail,
    /// A given seq (e.g. where the reader stopped before); nothing is probed.
    Seq(u64),
}

/// What [`WalReader`] does when the object it waits for was deleted (it fell behind the retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BehindPolicy {
    /// Return [`Error::NotFound`] naming the key, and stay there (the caller switches to the slow tier or to
    /// replication, or reopens the reader).
    #[default]
    Error,
    /// Jump to the oldest retained object, count the skipped objects ([`WalReader::skipped_objects`]) and
    /// restart the hash-chain check there.
    SkipToOldest,
}

/// Options of [`WalReader::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    pub behind: BehindPolicy,
    /// How long a head document read on a miss is trusted for "not yet written" before it is read again
    /// (a head that proves deletion is trusted for good).
    pub head_recheck: Duration,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions { behind: BehindPolicy::Error, head_recheck: Duration::from_secs(1) }
    }
}

/// The object a reader read last, for the hash-chain check.
#[derive(Debug, Clone, Copy)]
struct Link {
    seq: u64,
    header_crc: u32,
    incarnation: u64,
}

enum Missing {
    NotYet,
    Deleted { low_water: u64 },
}

/// Skips (policy [`BehindPolicy::SkipToOldest`]) one read may make before it returns `None` for now.
const MAX_SKIPS_PER_READ: usize = 8;

/// Follows one broker's stream in seq order, without listing. See the [module docs](self).
pub struct WalReader {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    broker_id: i32,
    opts: ReaderOptions,
    next_seq: u64,
    prev: Option<Link>,
    head: Option<(WalHead, Instant)>,
    skipped: u64,
}

impl fmt::Debug for WalReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalReader")
            .field("prefix", &self.prefix)
            .field("broker_id", &self.broker_id)
            .field("next_seq", &self.next_seq)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl WalReader {
    /// Opens `broker_id`'s stream under `prefix` for reading from `start`.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        broker_id: i32,
        start: StartAt,
        opts: ReaderOptions,
    ) -> Result<WalReader> {
        let mut reader = WalReader {
            store,
            prefix: prefix.to_string(),
            broker_id,
            opts,
            next_seq: 0,
            prev: None,
            head: None,
            skipped: 0,
        };
        reader.next_seq = match start {
            StartAt::Seq(s) => s,
            StartAt::Oldest => reader.oldest().await?,
            StartAt::Tail => {
                let (head, run) = reader.locate().await?;
                run.next.max(head.map_or(0, |h| h.next_seq))
            }
        };
        Ok(reader)
    }

    /// The seq the next read fetches.
    pub fn position(&self) -> u64 {
        self.next_seq
    }

    /// Objects jumped over because they were deleted before this reader got to them.
    pub fn skipped_objects(&self) -> u64 {
        self.skipped
    }

    /// The key of object `seq` of this stream.
    pub fn key(&self, seq: u64) -> String {
        object_key(&self.prefix, self.broker_id, seq)
    }

    async fn locate(&mut self) -> Result<(Option<WalHead>, Run)> {
        let head = read_head(self.store.as_ref(), &head_key(&self.prefix, self.broker_id), self.broker_id).await?;
        let prober = Prober { store: self.store.as_ref(), prefix: &self.prefix, broker_id: self.broker_id };
        let run = prober.locate(head.as_ref()).await?;
        self.head = head.clone().map(|h| (h, Instant::now()));
        Ok((head, run))
    }

    /// The oldest retained seq (or the tail if nothing is retained).
    async fn oldest(&mut self) -> Result<u64> {
        let (head, run) = self.locate().await?;
        let next = run.next.max(head.as_ref().map_or(0, |h| h.next_seq));
        let low = head.as_ref().map_or(0, |h| h.low_water);
        Ok(run.first.max(low).min(next))
    }

    /// The next object, whole and structurally validated (partition CRCs are checked by
    /// [`WalObject::range`]); `None` if it is not written yet.
    pub async fn next(&mut self) -> Result<Option<WalObject>> {
        for _ in 0..MAX_SKIPS_PER_READ {
            let seq = self.next_seq;
            let key = self.key(seq);
            match self.store.get(&key).await {
                Ok(bytes) => {
                    let obj = WalObject::parse(&key, bytes)?;
                    self.accept(&key, seq, obj.header())?;
                    return Ok(Some(obj));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            if !self.on_missing(seq).await? {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// The next object's key and header only (ranged GETs), for readers that then fetch single partitions
    /// with [`WalReader::read_partition`]; `None` if it is not written yet.
    pub async fn next_header(&mut self) -> Result<Option<(String, WalHeader)>> {
        for _ in 0..MAX_SKIPS_PER_READ {
            let seq = self.next_seq;
            let key = self.key(seq);
            match read_header(self.store.as_ref(), &key).await {
                Ok(header) => {
                    self.accept(&key, seq, &header)?;
                    return Ok(Some((key, header)));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            if !self.on_missing(seq).await? {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// One partition's verified bytes from the object at `key` with header `header` (one ranged GET).
    pub async fn read_partition(
        &self,
        key: &str,
        header: &WalHeader,
        topic_id: &TopicId,
        partition: i32,
    ) -> Result<Option<PartitionData>> {
        read_partition(self.store.as_ref(), key, header, topic_id, partition).await
    }

    /// Checks identity and the chain against the previous object, then moves past `seq`.
    fn accept(&mut self, key: &str, seq: u64, header: &WalHeader) -> Result<()> {
        check_identity(key, header, self.broker_id, seq)?;
        if let Some(p) = self.prev.filter(|p| p.seq.checked_add(1) == Some(seq)) {
            if header.stamp.prev_header_crc != p.header_crc {
                return Err(Error::corrupt(
                    key,
                    format!(
                        "wal chain broken: prev_header_crc={:08x} but seq={} has header_crc={:08x} (stream forked or rewritten)",
                        header.stamp.prev_header_crc, p.seq, p.header_crc
                    ),
                ));
            }
            if header.stamp.incarnation < p.incarnation {
                return Err(Error::corrupt(
                    key,
                    format!(
                        "wal incarnation={} below incarnation={} of seq={} (stream forked)",
                        header.stamp.incarnation, p.incarnation, p.seq
                    ),
                ));
            }
        }
        self.prev = Some(Link { seq, header_crc: header.header_crc, incarnation: header.stamp.incarnation });
        self.next_seq = seq + 1;
        Ok(())
    }

    /// `seq` was not found: returns `false` if it is not written yet, `true` if the reader moved on (skip
    /// policy), or the not-found error (error policy).
    async fn on_missing(&mut self, seq: u64) -> Result<bool> {
        match self.classify_missing(seq).await? {
            Missing::NotYet => Ok(false),
            Missing::Deleted { low_water } => {
                let key = self.key(seq);
                match self.opts.behind {
                    BehindPolicy::Error => {
                        warn!(key, low_water, "wal reader fell behind: the object was deleted");
                        Err(Error::NotFound { key })
                    }
                    BehindPolicy::SkipToOldest => {
                        let target = self.oldest().await?.max(low_water).max(seq + 1);
                        warn!(key, low_water, "wal reader fell behind: skipping to seq={target}");
                        self.skipped += target - seq;
                        self.prev = None;
                        self.next_seq = target;
                        Ok(true)
                    }
                }
            }
        }
    }

    async fn classify_missing(&mut self, seq: u64) -> Result<Missing> {
        let decide = |h: &WalHead| {
            if h.low_water > seq || h.next_seq > seq {
                Missing::Deleted { low_water: h.low_water }
            } else {
                Missing::NotYet
            }
        };
        if let Some((h, at)) = &self.head {
            if let Missing::Deleted { low_water } = decide(h) {
                return Ok(Missing::Deleted { low_water });
            }
            if at.elapsed() < self.opts.head_recheck {
                return Ok(Missing::NotYet);
            }
        }
        let hk = head_key(&self.prefix, self.broker_id);
        let head = read_head(self.store.as_ref(), &hk, self.broker_id).await?;
        let verdict = head.as_ref().map_or(Missing::NotYet, decide);
        self.head = head.map(|h| (h, Instant::now()));
        Ok(verdict)
    }
}
