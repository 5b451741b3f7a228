//! Reading the fast tier back: which streams exist, which ranges of a partition they hold, and the
//! partition's data resolved across all streams.
//!
//! This is the catalog path (CLI, follower catch-up, tests): unlike [`super::WalReader`], which follows one
//! stream by computed key, it LISTs the WAL root once to find every broker's stream and reads the headers
//! of the retained objects (ranged GETs, at most [`READ_CONCURRENCY`] at a time).
//!
//! * [`list_streams`] — every broker's stream: head document, retained seqs, object count and bytes;
//! * [`stream_objects`] — one stream's objects with their headers;
//! * [`partition_ranges`] — every range of one partition in every retained object of every stream;
//! * [`assemble`] / [`assemble_with_epochs`] — the partition's record batches in offset order, resolved by
//!   Kafka's leader-epoch rule ([`EpochStarts`]), with gaps, identical overlaps, conflicts and the batches
//!   discarded by the rule (e.g. a zombie leader's).
//!
//! # Resolution
//!
//! Several leaders may have uploaded the same offsets: a new leader re-uploads its active segment from the
//! segment's base offset, and a zombie old leader may upload data the new leader has truncated. For a
//! leader epoch `e`, `start(e)` is the smallest first offset of any range with epoch `e` (plus any epoch
//! starts the caller knows, e.g. from slow-tier manifests). The valid epoch at offset `o` is
//! `max{e : start(e) <= o}`. A batch of epoch `e` is the partition's data only if `e` is the valid epoch at
//! each of its offsets, i.e. at its last offset (the valid epoch never decreases with the offset). Valid
//! batches at the same offsets must be byte-identical (replicas share batch boundaries); anything else is a
//! [`Conflict`], reported and never resolved silently. The rule only knows the epochs visible in the tiers:
//! a zombie's data past the last offset of the new leader's uploads looks valid until the new leader's
//! first batch of its epoch is uploaded (or the caller passes that epoch's start).
//!
//! Nothing unverified is returned: every range is read with [`read_partition`] (CRC-32C of the range) and
//! every batch's own CRC-32C is checked; a failure is an error naming the object key.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use tokio::task::JoinSet;

use super::format::{topic_id_string, TopicId, WalEntry, WalHead, WalHeader};
use super::stream::{read_header, read_partition};
use super::{head_key, object_key, parse_object_name, stream_prefix, wal_root};
use crate::error::{Error, Result};
use crate::format::batch::{Batches, Stop};
use crate::store::ObjectStore;

/// Most object-store requests the catalog functions have in flight at once.
pub const READ_CONCURRENCY: usize = 8;

/// Parses Kafka's textual topic id (`Uuid.toString()`: 22 characters of base64url without padding); only
/// the canonical form is accepted, so the id prints back as given.
pub fn parse_topic_id(s: &str) -> Option<TopicId> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?;
    let id: TopicId = bytes.try_into().ok()?;
    (topic_id_string(&id) == s).then_some(id)
}

/// Runs `jobs` with at most `limit` of them in flight and returns their results in job order; the first
/// error ends the run (the jobs still running are aborted).
pub(crate) async fn run_bounded<T, F>(jobs: impl IntoIterator<Item = F>, limit: usize) -> Result<Vec<T>>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut jobs = jobs.into_iter().enumerate();
    let mut results: Vec<Option<T>> = Vec::new();
    let mut running = JoinSet::new();
    loop {
        while running.len() < limit.max(1) {
            let Some((i, job)) = jobs.next() else { break };
            results.push(None);
            running.spawn(async move { (i, job.await) });
        }
        let Some(done) = running.join_next().await else { break };
        let (i, r) = done.map_err(|e| Error::Internal(format!("catalog read task failed: {e}")))?;
        results[i] = Some(r?);
    }
    results.into_iter().map(|r| r.ok_or_else(|| Error::Internal("catalog read task lost".into()))).collect()
}

/// One broker's stream as found by [`list_streams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub broker_id: i32,
    /// The head document, if there is a readable one.
    pub head: Option<WalHead>,
    /// Why a head that exists could not be used (corrupt, or another broker's).
    pub head_error: Option<String>,
    /// Lowest retained seq (listed, at or above the head's low-water mark).
    pub first_seq: Option<u64>,
    /// Highest retained seq.
    pub last_seq: Option<u64>,
    /// Retained objects.
    pub objects: u64,
    /// Total size of the retained objects.
    pub bytes: u64,
    /// Objects still listed below the low-water mark (being deleted).
    pub below_low_water: u64,
    /// Seqs missing between `first_seq` and `last_seq` (0 in a healthy stream: deletion removes a prefix).
    pub holes: u64,
}

/// A listed stream: its info and the retained seqs with their sizes.
struct Listed {
    info: StreamInfo,
    retained: Vec<(u64, u64)>,
}

/// The broker id of a stream directory name: canonical non-negative decimal.
fn parse_broker_dir(dir: &str) -> Option<i32> {
    let id: i32 = dir.parse().ok()?;
    (id >= 0 && id.to_string() == dir).then_some(id)
}

/// The head of `broker_id`'s stream: `(head, problem)`. Missing is `(None, None)`; an undecodable head or
/// one of another broker is `(None, Some(problem))`; store failures are errors.
async fn load_head(store: &dyn ObjectStore, prefix: &str, broker_id: i32) -> Result<(Option<WalHead>, Option<String>)> {
    let key = head_key(prefix, broker_id);
    let data = match store.get(&key).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok((None, None)),
        Err(e) => return Err(e),
    };
    Ok(match WalHead::decode(&key, &data) {
        Ok(h) if h.broker_id == broker_id => (Some(h), None),
        Ok(h) => (None, Some(format!("key={key} belongs to broker_id={}", h.broker_id))),
        Err(e) => (None, Some(e.to_string())),
    })
}

/// LISTs the streams under `prefix` (all, or only `only`'s) and reads their heads.
async fn scan(store: &Arc<dyn ObjectStore>, prefix: &str, only: Option<i32>) -> Result<Vec<Listed>> {
    let root = wal_root(prefix);
    let list_prefix = only.map_or_else(|| root.clone(), |b| stream_prefix(prefix, b));
    let mut found: BTreeMap<i32, BTreeMap<u64, u64>> = BTreeMap::new();
    for m in store.list(&list_prefix).await? {
        let Some((dir, name)) = m.key.strip_prefix(root.as_str()).and_then(|rest| rest.split_once('/')) else {
            continue;
        };
        let Some(broker_id) = parse_broker_dir(dir) else { continue };
        let objects = found.entry(broker_id).or_default();
        if let Some(seq) = parse_object_name(name) {
            objects.insert(seq, m.size);
        }
    }
    let heads = run_bounded(
        found.keys().map(|&b| {
            let (store, prefix) = (store.clone(), prefix.to_string());
            async move { load_head(store.as_ref(), &prefix, b).await }
        }),
        READ_CONCURRENCY,
    )
    .await?;
    Ok(found
        .into_iter()
        .zip(heads)
        .map(|((broker_id, objects), (head, head_error))| {
            let low = head.as_ref().map_or(0, |h| h.low_water);
            let retained: Vec<(u64, u64)> = objects.range(low..).map(|(&s, &z)| (s, z)).collect();
            let (first_seq, last_seq) = (retained.first().map(|r| r.0), retained.last().map(|r| r.0));
            let span = first_seq.zip(last_seq).map_or(0, |(f, l)| l - f + 1);
            let info = StreamInfo {
                broker_id,
                head,
                head_error,
                first_seq,
                last_seq,
                objects: retained.len() as u64,
                bytes: retained.iter().map(|r| r.1).sum(),
                below_low_water: objects.range(..low).count() as u64,
                holes: span - retained.len() as u64,
            };
            Listed { info, retained }
        })
        .collect())
}

/// Every broker's stream under the fast tier's `prefix` (one LIST of the WAL root, one GET per head), in
/// broker order. Objects below a head's low-water mark are being deleted and do not count as retained.
pub async fn list_streams(store: &Arc<dyn ObjectStore>, prefix: &str) -> Result<Vec<StreamInfo>> {
    Ok(scan(store, prefix, None).await?.into_iter().map(|l| l.info).collect())
}

/// One object of a stream, as listed by [`stream_objects`].
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub seq: u64,
    pub key: String,
    /// Size from the listing.
    pub size: u64,
    /// The validated header, unless it could not be read.
    pub header: Option<Arc<WalHeader>>,
    /// Why the header could not be read (corrupt object, store failure).
    pub error: Option<String>,
}

/// `broker_id`'s stream and its retained objects in seq order, with their headers (ranged GETs, bounded
/// concurrency). An object deleted between the LIST and the read is left out; a header that fails
/// validation is reported in [`ObjectInfo::error`]. `None` if the stream has no objects and no head.
pub async fn stream_objects(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    broker_id: i32,
) -> Result<Option<(StreamInfo, Vec<ObjectInfo>)>> {
    let Some(listed) = scan(store, prefix, Some(broker_id)).await?.into_iter().next() else {
        return Ok(None);
    };
    let reads = run_bounded(
        listed.retained.iter().map(|&(seq, size)| {
            let (store, key) = (store.clone(), object_key(prefix, broker_id, seq));
            async move {
                let res = read_header(store.as_ref(), &key).await.and_then(|h| {
                    check_identity(&key, &h, broker_id, seq)?;
                    Ok(h)
                });
                Ok(match res {
                    Ok(h) => Some(ObjectInfo { seq, key, size, header: Some(Arc::new(h)), error: None }),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => Some(ObjectInfo { seq, key, size, header: None, error: Some(e.to_string()) }),
                })
            }
        }),
        READ_CONCURRENCY,
    )
    .await?;
    Ok(Some((listed.info, reads.into_iter().flatten().collect())))
}

/// Checks that the header read from `key` is object `seq` of `broker_id`'s stream.
fn check_identity(key: &str, h: &WalHeader, broker_id: i32, seq: u64) -> Result<()> {
    if h.stamp.broker_id == broker_id && h.stamp.seq == seq {
        return Ok(());
    }
    Err(Error::corrupt(
        key,
        format!(
            "wal object claims broker_id={} seq={} but its key says {broker_id}/{seq}",
            h.stamp.broker_id, h.stamp.seq
        ),
    ))
}

/// Checks the hash chain and incarnation order between consecutive objects of one stream (`prev` is seq
/// `h.seq - 1`).
fn check_link(key: &str, prev: &WalHeader, h: &WalHeader) -> Result<()> {
    if h.stamp.prev_header_crc != prev.header_crc {
        return Err(Error::corrupt(
            key,
            format!(
                "wal chain broken: prev_header_crc={:08x} but seq={} has header_crc={:08x}",
                h.stamp.prev_header_crc, prev.stamp.seq, prev.header_crc
            ),
        ));
    }
    if h.stamp.incarnation < prev.stamp.incarnation {
        return Err(Error::corrupt(
            key,
            format!(
                "wal incarnation={} below incarnation={} of seq={}",
                h.stamp.incarnation, prev.stamp.incarnation, prev.stamp.seq
            ),
        ));
    }
    Ok(())
}

/// One range of a partition in one WAL object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRef {
    pub broker_id: i32,
    pub seq: u64,
    /// The object's key.
    pub key: Arc<str>,
    /// The range's entry (epoch, offsets, position, length, CRC-32C).
    pub entry: WalEntry,
    /// Incarnation of the writer that created the object.
    pub incarnation: u64,
    /// When the writer built the object.
    pub created_unix_ms: i64,
    /// The object's whole validated header (needed to read the range back).
    pub header: Arc<WalHeader>,
}

impl RangeRef {
    /// Range `entry` of the object `key` whose header is `header`.
    pub fn new(key: &Arc<str>, header: &Arc<WalHeader>, entry: &WalEntry) -> RangeRef {
        RangeRef {
            broker_id: header.stamp.broker_id,
            seq: header.stamp.seq,
            key: key.clone(),
            entry: *entry,
            incarnation: header.stamp.incarnation,
            created_unix_ms: header.stamp.created_unix_ms,
            header: header.clone(),
        }
    }
}

/// Sorts ranges as readers expect them: by (first offset, broker id, seq).
pub fn sort_ranges(ranges: &mut [RangeRef]) {
    ranges.sort_by_key(|r| (r.entry.first_offset, r.broker_id, r.seq));
}

/// The validated header of every retained object of every stream under the fast tier's `prefix`, with its
/// key, in stream and seq order. Reads the header of every retained object (ranged GETs, at most
/// [`READ_CONCURRENCY`] at a time) and checks each object's identity and, between consecutive objects of a
/// stream, the hash chain and incarnation order; a violation is [`Error::Corrupt`] naming the key. Objects
/// deleted after the LIST are skipped.
pub async fn retained_headers(store: &Arc<dyn ObjectStore>, prefix: &str) -> Result<Vec<(Arc<str>, Arc<WalHeader>)>> {
    let streams = scan(store, prefix, None).await?;
    let wanted: Vec<(i32, u64)> =
        streams.iter().flat_map(|l| l.retained.iter().map(move |&(seq, _)| (l.info.broker_id, seq))).collect();
    let headers = run_bounded(
        wanted.iter().map(|&(broker_id, seq)| {
            let (store, key) = (store.clone(), object_key(prefix, broker_id, seq));
            async move {
                match read_header(store.as_ref(), &key).await {
                    Ok(h) => {
                        check_identity(&key, &h, broker_id, seq)?;
                        Ok(Some((key, Arc::new(h))))
                    }
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }),
        READ_CONCURRENCY,
    )
    .await?;
    let mut out: Vec<(Arc<str>, Arc<WalHeader>)> = Vec::with_capacity(headers.len());
    let mut prev: Option<Arc<WalHeader>> = None;
    for read in headers {
        let Some((key, h)) = read else {
            prev = None;
            continue;
        };
        if let Some(p) = prev.filter(|p| p.stamp.broker_id == h.stamp.broker_id && p.stamp.seq + 1 == h.stamp.seq) {
            check_link(&key, &p, &h)?;
        }
        prev = Some(h.clone());
        out.push((Arc::from(key.as_str()), h));
    }
    Ok(out)
}

/// Every range of `topic_id`/`partition` in the retained objects of every stream under the fast tier's
/// `prefix` ([`retained_headers`], which checks them), sorted by [`sort_ranges`].
pub async fn partition_ranges(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    topic_id: &TopicId,
    partition: i32,
) -> Result<Vec<RangeRef>> {
    let mut out = Vec::new();
    for (key, h) in retained_headers(store, prefix).await? {
        for e in h.entries.iter().filter(|e| e.topic_id == *topic_id && e.partition == partition) {
            out.push(RangeRef::new(&key, &h, e));
        }
    }
    sort_ranges(&mut out);
    Ok(out)
}

/// Leader epochs and where each starts: the input of the leader-epoch rule (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochStarts {
    starts: BTreeMap<i32, i64>,
}

impl EpochStarts {
    pub fn new() -> Self {
        Self::default()
    }

    /// `start(e)` of every epoch from the ranges' entries.
    pub fn from_ranges(ranges: &[RangeRef]) -> Self {
        let mut s = Self::new();
        for r in ranges {
            s.insert(r.entry.leader_epoch, r.entry.first_offset);
        }
        s
    }

    /// Records that `epoch` starts at or before `start_offset` (the smallest start is kept).
    pub fn insert(&mut self, epoch: i32, start_offset: i64) {
        let s = self.starts.entry(epoch).or_insert(start_offset);
        *s = (*s).min(start_offset);
    }

    /// The valid epoch at `offset`: the highest epoch starting at or before it.
    pub fn valid_epoch_at(&self, offset: i64) -> Option<i32> {
        self.starts.iter().rev().find(|(_, &start)| start <= offset).map(|(&e, _)| e)
    }

    /// (epoch, start offset) pairs, ascending by epoch.
    pub fn iter(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.starts.iter().map(|(&e, &s)| (e, s))
    }
}

/// Where a batch was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSource {
    pub broker_id: i32,
    pub seq: u64,
    pub key: Arc<str>,
    pub incarnation: u64,
}

/// A batch's coordinates and source (no bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The batch's `partitionLeaderEpoch` (equal to its range's epoch).
    pub leader_epoch: i32,
    /// Size of the batch in bytes.
    pub size: u32,
    pub source: BatchSource,
}

/// A verified batch of the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBatch {
    pub info: BatchInfo,
    /// The batch, byte-exact as the leader's log holds it.
    pub bytes: Bytes,
}

/// Two valid batches at overlapping offsets that are not byte-identical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The batch in [`Assembled::batches`].
    pub kept: BatchInfo,
    /// The batch that disagrees with it.
    pub other: BatchInfo,
    /// `different bytes` (same offsets) or `different batch boundaries`.
    pub reason: &'static str,
}

/// A batch dropped by the leader-epoch rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    pub batch: BatchInfo,
    /// The valid epoch at the batch's last offset.
    pub valid_epoch: i32,
}

/// A partition's data resolved across streams ([`assemble`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assembled {
    /// Valid batches in offset order, without overlaps.
    pub batches: Vec<ResolvedBatch>,
    /// Inclusive offset ranges from `from_offset` up to the last valid batch that no valid batch covers.
    pub gaps: Vec<(i64, i64)>,
    /// Valid batches dropped because an identical copy is in `batches` (another stream's re-upload).
    pub overlaps: u64,
    /// Of `overlaps`, those whose copy came from the same stream (an offset uploaded twice by one broker).
    pub duplicates_within_stream: u64,
    /// Valid batches that disagree with `batches`: the data is ambiguous there; do not use it.
    pub conflicts: Vec<Conflict>,
    /// Batches that are not the partition's data by the leader-epoch rule (e.g. a zombie leader's).
    pub discarded: Vec<Discarded>,
}

impl Assembled {
    /// Base offset of the first batch.
    pub fn first_offset(&self) -> Option<i64> {
        self.batches.first().map(|b| b.info.base_offset)
    }

    /// Last offset of the last batch.
    pub fn last_offset(&self) -> Option<i64> {
        self.batches.last().map(|b| b.info.last_offset)
    }

    /// No gaps and no conflicts: `batches` is the partition's data, complete from `from_offset`.
    pub fn is_clean(&self) -> bool {
        self.gaps.is_empty() && self.conflicts.is_empty()
    }
}

/// A batch read from a range, before resolution.
struct Candidate {
    info: BatchInfo,
    bytes: Bytes,
}

/// Reads the valid batches of the partition between `from_offset` and `to_offset` (inclusive; batches
/// overlapping the bounds are returned whole) from `ranges`, resolved by the leader-epoch rule with the
/// epoch starts of `ranges`. Pass **all** ranges of the partition ([`partition_ranges`]), not only those in
/// the offset window: ranges outside it still say where epochs start.
pub async fn assemble(
    store: &Arc<dyn ObjectStore>,
    ranges: &[RangeRef],
    from_offset: i64,
    to_offset: i64,
) -> Result<Assembled> {
    assemble_with_epochs(store, ranges, &EpochStarts::new(), from_offset, to_offset).await
}

/// [`assemble`] with epoch starts known from elsewhere (e.g. the slow tier's manifests or Kafka's leader
/// epoch cache) added to those of `ranges`.
///
/// Each object is read once (one ranged GET of the partition's bytes, CRC-32C checked by
/// [`read_partition`]), at most [`READ_CONCURRENCY`] at a time; every batch's CRC-32C is checked, and its
/// epoch and offsets must match its range. Any failure is an error naming the object key (a deleted object
/// is [`Error::NotFound`]); nothing unverified is returned.
pub async fn assemble_with_epochs(
    store: &Arc<dyn ObjectStore>,
    ranges: &[RangeRef],
    known_epochs: &EpochStarts,
    from_offset: i64,
    to_offset: i64,
) -> Result<Assembled> {
    let Some(first) = ranges.first() else {
        return Ok(Assembled::default());
    };
    let (topic_id, partition) = (first.entry.topic_id, first.entry.partition);
    if let Some(r) = ranges.iter().find(|r| r.entry.topic_id != topic_id || r.entry.partition != partition) {
        return Err(Error::Internal(format!(
            "assemble: ranges of topic_id={} partition={} and topic_id={} partition={} mixed",
            topic_id_string(&topic_id),
            partition,
            topic_id_string(&r.entry.topic_id),
            r.entry.partition
        )));
    }
    let mut epochs = EpochStarts::from_ranges(ranges);
    for (e, s) in known_epochs.iter() {
        epochs.insert(e, s);
    }
    // The objects to read, each with the first offsets of its wanted entries.
    let mut objects: BTreeMap<Arc<str>, (&RangeRef, HashSet<i64>)> = BTreeMap::new();
    for r in ranges.iter().filter(|r| r.entry.last_offset >= from_offset && r.entry.first_offset <= to_offset) {
        objects.entry(r.key.clone()).or_insert_with(|| (r, HashSet::new())).1.insert(r.entry.first_offset);
    }
    let reads = run_bounded(
        objects.values().map(|(r, _)| {
            let (store, r) = (store.clone(), (*r).clone());
            async move {
                match read_partition(store.as_ref(), &r.key, &r.header, &topic_id, partition).await? {
                    Some(data) => Ok(data),
                    None => Err(Error::Internal(format!("assemble: key={} header lists no range", r.key))),
                }
            }
        }),
        READ_CONCURRENCY,
    )
    .await?;
    let mut candidates = Vec::new();
    for ((key, (r, wanted)), data) in objects.iter().zip(reads) {
        let source = BatchSource { broker_id: r.broker_id, seq: r.seq, key: key.clone(), incarnation: r.incarnation };
        for (entry, bytes) in data.slices().filter(|(e, _)| wanted.contains(&e.first_offset)) {
            range_batches(entry, bytes, &source, &mut candidates)?;
        }
    }
    Ok(resolve(candidates, &epochs, from_offset, to_offset))
}

/// Splits the verified bytes of one range (`entry` of the object `source`) into its batches, each checked
/// like [`assemble`] checks them (CRC-32C, leader epoch, offsets inside the entry and increasing, the
/// range ending on a batch boundary); errors are `Corrupt` naming the object key.
pub fn split_range(entry: &WalEntry, data: Bytes, source: &BatchSource) -> Result<Vec<ResolvedBatch>> {
    let mut out = Vec::new();
    range_batches(entry, data, source, &mut out)?;
    Ok(out.into_iter().map(|c| ResolvedBatch { info: c.info, bytes: c.bytes }).collect())
}

/// Splits a verified range into its batches (CRC-32C checked), checking them against the entry.
fn range_batches(entry: &WalEntry, data: Bytes, source: &BatchSource, out: &mut Vec<Candidate>) -> Result<()> {
    let key = &*source.key;
    let bad = |detail: String| {
        Error::corrupt(
            key,
            format!(
                "wal range topic_id={} partition={} offsets={}..={}: {detail}",
                topic_id_string(&entry.topic_id),
                entry.partition,
                entry.first_offset,
                entry.last_offset
            ),
        )
    };
    let mut batches = Batches::new(&data, entry.position);
    let (mut at, mut next_offset) = (0usize, entry.first_offset);
    for batch in batches.by_ref() {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let h = batch.header();
        let (base, last, size) = (h.base_offset(), h.last_offset(), h.batch_size());
        if h.partition_leader_epoch() != entry.leader_epoch {
            return Err(bad(format!("batch base_offset={base} leader_epoch={}", h.partition_leader_epoch())));
        }
        if base < next_offset || last < base || last > entry.last_offset {
            return Err(bad(format!("batch offsets={base}..={last} outside the range or out of order")));
        }
        next_offset = last.saturating_add(1);
        out.push(Candidate {
            info: BatchInfo {
                base_offset: base,
                last_offset: last,
                leader_epoch: entry.leader_epoch,
                size: size as u32,
                source: source.clone(),
            },
            bytes: data.slice(at..at + size),
        });
        at += size;
    }
    match batches.stop() {
        Some(Stop::End) if at > 0 => Ok(()),
        Some(Stop::End) => Err(bad("no record batch".into())),
        stop => Err(bad(format!("range does not end on a record batch boundary: {stop:?}"))),
    }
}

/// The resolution (module docs) of candidate batches: keeps valid batches intersecting
/// `[from_offset, to_offset]`, drops identical copies, reports conflicts, gaps and discarded batches.
fn resolve(mut candidates: Vec<Candidate>, epochs: &EpochStarts, from_offset: i64, to_offset: i64) -> Assembled {
    candidates.retain(|c| c.info.last_offset >= from_offset && c.info.base_offset <= to_offset);
    candidates.sort_by_key(|c| (c.info.base_offset, c.info.last_offset, c.info.source.broker_id, c.info.source.seq));
    let mut out = Assembled::default();
    let mut cursor = from_offset;
    for c in candidates {
        let valid = epochs.valid_epoch_at(c.info.last_offset).unwrap_or(-1);
        if valid != c.info.leader_epoch {
            out.discarded.push(Discarded { batch: c.info, valid_epoch: valid });
            continue;
        }
        if let Some(kept) = out.batches.last().filter(|k| c.info.base_offset <= k.info.last_offset) {
            let same_offsets =
                c.info.base_offset == kept.info.base_offset && c.info.last_offset == kept.info.last_offset;
            if same_offsets && c.bytes == kept.bytes {
                out.overlaps += 1;
                if c.info.source.broker_id == kept.info.source.broker_id {
                    out.duplicates_within_stream += 1;
                }
            } else {
                let reason = if same_offsets { "different bytes" } else { "different batch boundaries" };
                out.conflicts.push(Conflict { kept: kept.info.clone(), other: c.info, reason });
            }
            continue;
        }
        if c.info.base_offset > cursor {
            out.gaps.push((cursor, c.info.base_offset - 1));
        }
        cursor = cursor.max(c.info.last_offset.saturating_add(1));
        out.batches.push(ResolvedBatch { info: c.info, bytes: c.bytes });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::testing::batch;
    use crate::store::memory::MemoryStore;
    use crate::wal::format::WalObjectBuilder;
    use crate::wal::{WalWriter, WalWriterOptions};

    const PREFIX: &str = "w/";

    fn tid(n: u8) -> TopicId {
        let mut t = [0u8; 16];
        t[0] = n;
        t[15] = 0x5a;
        t
    }

    /// Batches `first..=last`, one record each, with `epoch` and a payload tag (different tags make
    /// different bytes at the same offsets).
    fn batches(first: i64, last: i64, epoch: i32, tag: u8) -> Vec<u8> {
        (first..=last).flat_map(|o| batch(o, epoch, 1, &[tag, o as u8])).collect()
    }

    /// One range: (topic, partition, epoch, first, last, tag).
    type Range = (u8, i32, i32, i64, i64, u8);

    fn content(ranges: &[Range]) -> WalObjectBuilder {
        let mut b = WalObjectBuilder::new();
        for &(t, p, epoch, first, last, tag) in ranges {
            b.add(tid(t), p, epoch, first, last, batches(first, last, epoch, tag).into()).unwrap();
        }
        b
    }

    fn stores() -> (Arc<MemoryStore>, Arc<dyn ObjectStore>) {
        let m = Arc::new(MemoryStore::new());
        (m.clone(), m)
    }

    async fn writer(store: &Arc<dyn ObjectStore>, broker: i32) -> WalWriter {
        WalWriter::open(store.clone(), PREFIX, broker, WalWriterOptions::default()).await.unwrap()
    }

    /// Appends one object per element of `objects` to `broker`'s stream.
    async fn stream(store: &Arc<dyn ObjectStore>, broker: i32, objects: &[&[Range]]) -> WalWriter {
        let mut w = writer(store, broker).await;
        for o in objects {
            w.append(&content(o)).await.unwrap();
        }
        w
    }

    fn offsets(a: &Assembled) -> Vec<(i64, i32, i32)> {
        a.batches.iter().map(|b| (b.info.base_offset, b.info.leader_epoch, b.info.source.broker_id)).collect()
    }

    async fn resolved(store: &Arc<dyn ObjectStore>, from: i64, to: i64) -> Assembled {
        let ranges = partition_ranges(store, PREFIX, &tid(1), 0).await.unwrap();
        assemble(store, &ranges, from, to).await.unwrap()
    }

    #[test]
    fn topic_ids_parse() {
        assert_eq!(parse_topic_id("AAAAAAAAAAAAAAAAAAAAAQ").map(|t| t[15]), Some(1));
        let t = tid(9);
        assert_eq!(parse_topic_id(&topic_id_string(&t)), Some(t));
        assert_eq!(parse_topic_id("AAAAAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(parse_topic_id("AAAAAAAAAAAAAAAAAAAA/Q"), None);
        assert_eq!(parse_topic_id("AAAAAAAAAAAAAAAAAAAAAR"), None); // non-zero padding bits
    }

    #[test]
    fn epoch_rule() {
        let mut e = EpochStarts::new();
        assert_eq!(e.valid_epoch_at(0), None);
        e.insert(1, 0);
        e.insert(3, 50);
        e.insert(3, 40);
        e.insert(2, 60); // seen only late: epoch 3 started before it, so epoch 2 is never valid
        assert_eq!(e.valid_epoch_at(39), Some(1));
        assert_eq!(e.valid_epoch_at(40), Some(3));
        assert_eq!(e.valid_epoch_at(1000), Some(3));
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![(1, 0), (2, 60), (3, 40)]);
    }

    #[tokio::test]
    async fn streams_and_objects_are_listed() {
        let (mem, store) = stores();
        assert!(list_streams(&store, PREFIX).await.unwrap().is_empty());
        let mut w = stream(&store, 2, &[&[(1, 0, 0, 0, 4, 0)], &[(1, 0, 0, 5, 9, 0), (2, 3, 0, 0, 0, 0)]]).await;
        w.update_head().await.unwrap();
        stream(&store, 10, &[&[(1, 0, 0, 0, 1, 0)]]).await;
        // A leftover below the low-water mark, a stray key and a foreign directory are not retained objects.
        w.append(&content(&[(1, 0, 0, 10, 10, 0)])).await.unwrap();
        w.advance_low_water(1).await.unwrap();
        mem.put(&object_key(PREFIX, 2, 0), Bytes::from_static(b"x"), Default::default()).await.unwrap();
        mem.put(&format!("{}02/x", wal_root(PREFIX)), Bytes::from_static(b"x"), Default::default()).await.unwrap();
        let s = list_streams(&store, PREFIX).await.unwrap();
        assert_eq!(s.iter().map(|s| s.broker_id).collect::<Vec<_>>(), vec![2, 10]);
        assert_eq!(
            (s[0].first_seq, s[0].last_seq, s[0].objects, s[0].below_low_water, s[0].holes),
            (Some(1), Some(2), 2, 1, 0)
        );
        assert_eq!(s[0].head.as_ref().map(|h| (h.low_water, h.next_seq)), Some((1, 3)));
        let size1 = store.head(&object_key(PREFIX, 2, 1)).await.unwrap().size;
        let size2 = store.head(&object_key(PREFIX, 2, 2)).await.unwrap().size;
        assert_eq!(s[0].bytes, size1 + size2);
        assert_eq!((s[1].objects, s[1].first_seq), (1, Some(0)));

        let (info, objs) = stream_objects(&store, PREFIX, 2).await.unwrap().unwrap();
        assert_eq!(info, s[0]);
        assert_eq!(objs.iter().map(|o| o.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(objs[0].header.as_ref().unwrap().entries.len(), 2);
        assert!(stream_objects(&store, PREFIX, 3).await.unwrap().is_none());
        // A corrupt header is reported per object.
        let key = object_key(PREFIX, 2, 2);
        let mut raw = store.get(&key).await.unwrap().to_vec();
        raw[70] ^= 1;
        mem.overwrite_raw(&key, Bytes::from(raw));
        let (_, objs) = stream_objects(&store, PREFIX, 2).await.unwrap().unwrap();
        assert!(objs[1].header.is_none() && objs[1].error.as_deref().unwrap().contains(&key));
    }

    /// Broker 1 leads epoch 0 and uploads 0..=19; broker 2 takes over at epoch 1 from offset 20 and
    /// re-uploads its active segment from its base offset 10; broker 1, now a zombie, keeps uploading
    /// epoch-0 data at 20..=24 that broker 2 never had.
    #[tokio::test]
    async fn epoch_change_with_overlaps_and_zombie_data() {
        let (_, store) = stores();
        stream(
            &store,
            1,
            &[&[(1, 0, 0, 0, 9, 0), (2, 0, 0, 0, 3, 0)], &[(1, 0, 0, 10, 19, 0)], &[(1, 0, 0, 20, 24, 9)]],
        )
        .await;
        stream(&store, 2, &[&[(1, 0, 0, 10, 19, 0), (1, 0, 1, 20, 29, 1)], &[(1, 0, 1, 30, 31, 1)]]).await;
        let ranges = partition_ranges(&store, PREFIX, &tid(1), 0).await.unwrap();
        let got: Vec<(i64, i64, i32, i32, u64)> = ranges
            .iter()
            .map(|r| (r.entry.first_offset, r.entry.last_offset, r.entry.leader_epoch, r.broker_id, r.seq))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 9, 0, 1, 0),
                (10, 19, 0, 1, 1),
                (10, 19, 0, 2, 0),
                (20, 24, 0, 1, 2),
                (20, 29, 1, 2, 0),
                (30, 31, 1, 2, 1)
            ]
        );
        assert_eq!(&*ranges[2].key, object_key(PREFIX, 2, 0));
        assert!(ranges.iter().all(|r| r.incarnation > 0 && r.created_unix_ms > 0));

        let a = assemble(&store, &ranges, 0, i64::MAX).await.unwrap();
        assert!(a.is_clean(), "{a:?}");
        let want: Vec<(i64, i32, i32)> = (0..32).map(|o| (o, i32::from(o >= 20), if o < 20 { 1 } else { 2 })).collect();
        assert_eq!(offsets(&a), want);
        assert_eq!(a.batches[25].bytes, batch(25, 1, 1, &[1, 25]));
        assert_eq!((a.overlaps, a.duplicates_within_stream), (10, 0));
        // The zombie's five batches, each with the valid epoch 1.
        assert_eq!(a.discarded.len(), 5);
        assert!(a.discarded.iter().all(|d| d.batch.source.broker_id == 1 && d.valid_epoch == 1));
        assert_eq!((a.first_offset(), a.last_offset()), (Some(0), Some(31)));

        // A window: batches overlapping it, epoch starts still from every range.
        let a = assemble(&store, &ranges, 22, 23).await.unwrap();
        assert_eq!(offsets(&a), vec![(22, 1, 2), (23, 1, 2)]);
        assert_eq!(a.discarded.len(), 2);
        let only_zombie: Vec<RangeRef> = ranges.iter().filter(|r| r.broker_id == 1).cloned().collect();
        let mut known = EpochStarts::new();
        known.insert(1, 20);
        let a = assemble_with_epochs(&store, &only_zombie, &known, 15, 30).await.unwrap();
        assert_eq!(offsets(&a).len(), 5);
        assert_eq!(a.discarded.len(), 5);
        // Without knowing epoch 1, the zombie's data looks valid: the rule can only use visible epochs.
        assert_eq!(offsets(&assemble(&store, &only_zombie, 15, 30).await.unwrap()).len(), 10);
    }

    #[tokio::test]
    async fn gaps_are_reported() {
        let (_, store) = stores();
        stream(&store, 1, &[&[(1, 0, 0, 5, 9, 0)], &[(1, 0, 0, 15, 19, 0)]]).await;
        stream(&store, 2, &[&[(1, 0, 2, 25, 26, 0)]]).await;
        let a = resolved(&store, 0, 100).await;
        assert_eq!(a.gaps, vec![(0, 4), (10, 14), (20, 24)]);
        assert_eq!(a.batches.len(), 12);
        assert!(!a.is_clean());
        let a = resolved(&store, 5, 19).await;
        assert_eq!(a.gaps, vec![(10, 14)]);
        assert_eq!(a.last_offset(), Some(19));
        assert!(resolved(&store, 27, 100).await.batches.is_empty());
        assert!(assemble(&store, &[], 0, 10).await.unwrap().batches.is_empty());
    }

    #[tokio::test]
    async fn duplicates_within_one_stream_and_conflicts_are_reported() {
        let (_, store) = stores();
        // Broker 1 uploads 0..=4 twice; broker 2 has different bytes at 3..=4 (same epoch) and a batch
        // spanning 5..=6 where broker 1 has two batches.
        stream(&store, 1, &[&[(1, 0, 0, 0, 4, 0)], &[(1, 0, 0, 0, 6, 0)]]).await;
        let mut w = writer(&store, 2).await;
        let mut b = WalObjectBuilder::new();
        let mut data = batches(3, 4, 0, 7);
        data.extend(crate::format::batch::testing::batch(5, 0, 2, &[0, 0]));
        b.add(tid(1), 0, 0, 3, 6, data.into()).unwrap();
        w.append(&b).await.unwrap();
        let a = resolved(&store, 0, i64::MAX).await;
        assert_eq!(offsets(&a), (0..7).map(|o| (o, 0, 1)).collect::<Vec<_>>());
        assert_eq!((a.overlaps, a.duplicates_within_stream), (5, 5));
        let c: Vec<(i64, i64, i32, &str)> = a
            .conflicts
            .iter()
            .map(|c| (c.other.base_offset, c.other.last_offset, c.other.source.broker_id, c.reason))
            .collect();
        assert_eq!(
            c,
            vec![(3, 3, 2, "different bytes"), (4, 4, 2, "different bytes"), (5, 6, 2, "different batch boundaries")]
        );
        assert!(a.conflicts.iter().all(|c| c.kept.source.broker_id == 1));
        assert!(a.gaps.is_empty() && !a.is_clean());
    }

    #[tokio::test]
    async fn corrupt_ranges_are_errors_naming_the_key() {
        let (mem, store) = stores();
        stream(&store, 1, &[&[(1, 0, 0, 0, 9, 0), (1, 1, 0, 0, 9, 0)], &[(1, 0, 0, 10, 19, 0)]]).await;
        let ranges = partition_ranges(&store, PREFIX, &tid(1), 0).await.unwrap();
        let key = object_key(PREFIX, 1, 1);
        let mut raw = store.get(&key).await.unwrap().to_vec();
        let n = raw.len();
        raw[n - 3] ^= 0x10;
        mem.overwrite_raw(&key, Bytes::from(raw));
        let e = assemble(&store, &ranges, 0, i64::MAX).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains(&key), "{e}");
        // Outside the damaged object nothing fails.
        assert_eq!(assemble(&store, &ranges, 0, 9).await.unwrap().batches.len(), 10);
        // A deleted object is not found, naming its key.
        mem.delete(&key).await.unwrap();
        let e = assemble(&store, &ranges, 0, i64::MAX).await.unwrap_err();
        assert!(e.is_not_found() && e.to_string().contains(&key), "{e}");

        // A range whose bytes pass the range CRC but are not batches of that range (a writer bug).
        let (_, store) = stores();
        let mut w = writer(&store, 3).await;
        for (epoch, data) in [(1, batches(0, 1, 0, 0)), (0, b"not a batch at all, but long enough to frame".repeat(3))]
        {
            let mut b = WalObjectBuilder::new();
            b.add(tid(1), 0, epoch, 0, 1, data.into()).unwrap();
            w.append(&b).await.unwrap();
        }
        let ranges = partition_ranges(&store, PREFIX, &tid(1), 0).await.unwrap();
        let e = assemble(&store, &ranges[..1], 0, 9).await.unwrap_err().to_string();
        assert!(e.contains(&object_key(PREFIX, 3, 0)) && e.contains("leader_epoch=0"), "{e}");
        let e = assemble(&store, &ranges[1..], 0, 9).await.unwrap_err().to_string();
        assert!(e.contains(&object_key(PREFIX, 3, 1)), "{e}");
    }

    #[tokio::test]
    async fn broken_chain_and_misplaced_objects_are_corrupt() {
        let (mem, store) = stores();
        stream(&store, 1, &[&[(1, 0, 0, 0, 0, 0)], &[(1, 0, 0, 1, 1, 0)]]).await;
        // Object 1 replaced by a different, well-formed object at the same seq: the chain breaks.
        let other = content(&[(1, 0, 0, 1, 1, 5)])
            .build(&crate::wal::WalStamp {
                broker_id: 1,
                incarnation: u64::MAX,
                seq: 1,
                prev_header_crc: 7,
                created_unix_ms: 0,
            })
            .unwrap();
        mem.overwrite_raw(&object_key(PREFIX, 1, 1), other.bytes.clone());
        let e = partition_ranges(&store, PREFIX, &tid(1), 0).await.unwrap_err().to_string();
        assert!(e.contains("chain broken") && e.contains(&object_key(PREFIX, 1, 1)), "{e}");
        // The same object under another broker's key claims the wrong identity.
        let (mem, store) = stores();
        mem.overwrite_raw(&object_key(PREFIX, 4, 1), other.bytes);
        let e = partition_ranges(&store, PREFIX, &tid(1), 0).await.unwrap_err().to_string();
        assert!(e.contains("claims broker_id=1"), "{e}");
    }
}
