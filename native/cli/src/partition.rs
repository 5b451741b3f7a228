//! `fasttier partition show` and `fasttier partition verify`: one partition across the slow tier (copied
//! segments) and the fast tier (WAL ranges of every broker's stream, resolved by the leader-epoch rule,
//! see [`fasttier_core::wal::catalog`]).
//!
//! `partition show --json` prints one object:
//!
//! | field | meaning |
//! |---|---|
//! | `topic`, `topic_id`, `partition` | the partition |
//! | `slow.segments[]` | `segment_id`, `start_offset`, `end_offset` (null if incomplete), `bytes`, `complete`, `objects` (suffixes present), `key` (manifest), `leader_epochs` |
//! | `fast.ranges[]` | `broker_id`, `seq`, `key`, `leader_epoch`, `first_offset`, `last_offset`, `bytes`, `incarnation`, `created_unix_ms` |
//! | `fast.first_offset`, `fast.last_offset`, `fast.batches` | the resolved fast-tier data |
//! | `fast.gaps` | `[first, last]` offset ranges inside the fast tier's span no valid batch covers |
//! | `fast.overlaps`, `fast.duplicates`, `fast.discarded` | identical copies dropped; of those, copies within one stream; batches dropped by the leader-epoch rule |
//! | `fast.conflicts[]` | `reason`, `kept` and `other` (`broker_id`, `seq`, `key`, `base_offset`, `last_offset`, `leader_epoch`) |
//! | `coverage.first_offset`, `coverage.last_offset`, `coverage.intervals`, `coverage.gaps` | offsets held by the slow tier ∪ the resolved fast tier |
//!
//! `partition verify --json` prints one object, described at [`VerifyReport::to_json`].

use std::path::Path;
use std::sync::Arc;

use fasttier_core::error::{Error, Result};
use fasttier_core::slow::catalog::{slow_segments, topic_ids, SegmentBatches, SlowSegment};
use fasttier_core::store::ObjectStore;
use fasttier_core::wal::catalog::{
    assemble_with_epochs, parse_topic_id, partition_ranges, Assembled, BatchInfo, EpochStarts, RangeRef,
};
use serde_json::{json, Value};

use crate::local::{parse_dir_name, read_topic_id, LocalLog};
use crate::{ranges_text, utc};

/// Most mismatch and conflict descriptions a report keeps (all are counted).
pub const MAX_DETAILS: usize = 20;

/// The two tiers' stores and prefixes.
#[derive(Debug, Clone)]
pub struct Stores {
    pub slow: Arc<dyn ObjectStore>,
    pub slow_prefix: String,
    pub wal: Arc<dyn ObjectStore>,
    pub wal_prefix: String,
}

/// The topic id to use for `topic`: `given` (validated), else the only one the slow tier has directories
/// for. A configuration error (exit status 2) if there is none or several.
pub async fn resolve_topic_id(stores: &Stores, topic: &str, given: Option<&str>) -> Result<String> {
    if let Some(id) = given {
        parse_topic_id(id)
            .ok_or_else(|| Error::config("--topic-id", format!("value={id:?} is not a Kafka topic id")))?;
        return Ok(id.to_string());
    }
    match topic_ids(&stores.slow, &stores.slow_prefix, topic).await?.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::config(
            "--topic-id",
            format!("topic={topic} has no segment in the slow tier; pass its topic id (kafka-topics.sh --describe)"),
        )),
        many => Err(Error::config("--topic-id", format!("topic={topic} has several topic ids: {}", many.join(", ")))),
    }
}

/// Indexes of the items (sorted, non-overlapping `(first, last)` spans) with an offset in `first..=last`.
fn overlapping<T>(items: &[T], first: i64, last: i64, span: impl Fn(&T) -> (i64, i64)) -> std::ops::Range<usize> {
    let start = items.partition_point(|t| span(t).1 < first);
    let end = items.partition_point(|t| span(t).0 <= last);
    start..end.max(start)
}

/// Sorted, merged `[first, last]` intervals (adjacent ones joined).
pub(crate) fn merge(mut spans: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// What the tiers hold of one partition.
#[derive(Debug, Clone)]
pub struct TierView {
    pub topic: String,
    pub topic_id: String,
    pub partition: i32,
    /// Copied segments, complete or not, by start offset.
    pub slow: Vec<SlowSegment>,
    /// Every fast-tier range of the partition.
    pub ranges: Vec<RangeRef>,
    /// The fast tier resolved (from its lowest offset on), with the slow tier's leader epochs known.
    pub fast: Assembled,
    /// Offsets held by the complete slow segments ∪ the resolved fast tier, merged.
    pub coverage: Vec<(i64, i64)>,
}

impl TierView {
    /// Lists the slow tier's segments (manifests verified), reads every fast-tier range of the partition
    /// and resolves them (CRC-32C verified). Errors name the object that failed.
    pub async fn load(stores: &Stores, topic: &str, topic_id: &str, partition: i32) -> Result<TierView> {
        let id = parse_topic_id(topic_id)
            .ok_or_else(|| Error::config("--topic-id", format!("value={topic_id:?} is not a Kafka topic id")))?;
        // Fast tier first: cleanup deletes a WAL object only after the slow tier holds its data, so a slow
        // listing taken after the fast one sees every segment that replaced a fast object we missed.
        let ranges = partition_ranges(&stores.wal, &stores.wal_prefix, &id, partition).await?;
        let slow = slow_segments(&stores.slow, &stores.slow_prefix, topic, topic_id, partition).await?;
        let mut epochs = EpochStarts::new();
        for m in slow.iter().filter_map(|s| s.manifest.as_ref()) {
            for &(epoch, start) in &m.leader_epochs {
                epochs.insert(epoch, start);
            }
        }
        let from = ranges.iter().map(|r| r.entry.first_offset).min().unwrap_or(0);
        let fast = assemble_with_epochs(&stores.wal, &ranges, &epochs, from, i64::MAX).await?;
        let mut spans: Vec<(i64, i64)> =
            slow.iter().filter_map(|s| Some((s.start_offset(), s.end_offset()?))).collect();
        spans.extend(fast.batches.iter().map(|b| (b.info.base_offset, b.info.last_offset)));
        let coverage = merge(spans);
        Ok(TierView { topic: topic.into(), topic_id: topic_id.into(), partition, slow, ranges, fast, coverage })
    }

    /// The lowest offset either tier holds.
    pub fn first_offset(&self) -> Option<i64> {
        self.coverage.first().map(|c| c.0)
    }

    /// The highest offset uploaded to either tier.
    pub fn last_offset(&self) -> Option<i64> {
        self.coverage.last().map(|c| c.1)
    }

    /// Offset ranges between the first and the last tiered offset that neither tier holds.
    pub fn gaps(&self) -> Vec<(i64, i64)> {
        self.coverage.windows(2).map(|w| (w[0].1 + 1, w[1].0 - 1)).collect()
    }

    /// `partition show --json` (module docs).
    pub fn to_json(&self) -> Value {
        let segments: Vec<Value> = self
            .slow
            .iter()
            .map(|s| {
                let m = s.manifest.as_ref();
                json!({
                    "segment_id": s.segment.segment_id,
                    "start_offset": s.start_offset(),
                    "end_offset": s.end_offset(),
                    "bytes": m.map(|m| m.log.size),
                    "complete": s.complete(),
                    "objects": s.objects,
                    "key": s.manifest_key,
                    "leader_epochs": m.map(|m| m.leader_epochs.clone()),
                })
            })
            .collect();
        let ranges: Vec<Value> = self
            .ranges
            .iter()
            .map(|r| {
                json!({
                    "broker_id": r.broker_id,
                    "seq": r.seq,
                    "key": &*r.key,
                    "leader_epoch": r.entry.leader_epoch,
                    "first_offset": r.entry.first_offset,
                    "last_offset": r.entry.last_offset,
                    "bytes": r.entry.length,
                    "incarnation": r.incarnation,
                    "created_unix_ms": r.created_unix_ms,
                })
            })
            .collect();
        let f = &self.fast;
        json!({
            "topic": self.topic,
            "topic_id": self.topic_id,
            "partition": self.partition,
            "slow": { "segments": segments },
            "fast": {
                "ranges": ranges,
                "first_offset": f.first_offset(),
                "last_offset": f.last_offset(),
                "batches": f.batches.len(),
                "gaps": f.gaps,
                "overlaps": f.overlaps,
                "duplicates": f.duplicates_within_stream,
                "conflicts": f.conflicts.iter().map(|c| json!({
                    "reason": c.reason, "kept": batch_json(&c.kept), "other": batch_json(&c.other),
                })).collect::<Vec<_>>(),
                "discarded": f.discarded.len(),
            },
            "coverage": {
                "first_offset": self.first_offset(),
                "last_offset": self.last_offset(),
                "intervals": self.coverage,
                "gaps": self.gaps(),
            },
        })
    }

    /// `partition show` as text.
    pub fn render(&self) -> String {
        let mut out = vec![format!("partition {}-{} topic_id={}", self.topic, self.partition, self.topic_id)];
        let complete = self.slow.iter().filter(|s| s.complete()).count();
        out.push(format!("slow tier: {} segments ({complete} complete)", self.slow.len()));
        if !self.slow.is_empty() {
            out.push(format!("  {:>20} {:>20} {:>12}  segment-id / state", "start", "end", "bytes"));
        }
        for s in &self.slow {
            let (end, bytes, state) = match &s.manifest {
                Some(m) => (m.end_offset.to_string(), m.log.size.to_string(), String::new()),
                None => ("-".into(), "-".into(), format!(" INCOMPLETE (has {})", s.objects.join(","))),
            };
            out.push(format!("  {:>20} {end:>20} {bytes:>12}  {}{state}", s.start_offset(), s.segment.segment_id));
        }
        let brokers: std::collections::BTreeSet<i32> = self.ranges.iter().map(|r| r.broker_id).collect();
        out.push(format!("fast tier: {} ranges in {} streams", self.ranges.len(), brokers.len()));
        if !self.ranges.is_empty() {
            out.push(format!(
                "  {:>6} {:>20} {:>6} {:>20} {:>20} {:>10}  created",
                "broker", "seq", "epoch", "first", "last", "bytes"
            ));
        }
        for r in &self.ranges {
            out.push(format!(
                "  {:>6} {:>20} {:>6} {:>20} {:>20} {:>10}  {}",
                r.broker_id,
                r.seq,
                r.entry.leader_epoch,
                r.entry.first_offset,
                r.entry.last_offset,
                r.entry.length,
                utc(r.created_unix_ms)
            ));
        }
        let f = &self.fast;
        if let (Some(first), Some(last)) = (f.first_offset(), f.last_offset()) {
            out.push(format!(
                "fast tier resolved: {first}..={last} in {} batches; gaps: {}; identical overlaps {}, duplicates within a stream {}, conflicts {}, discarded by the leader-epoch rule {}",
                f.batches.len(),
                ranges_text(&f.gaps),
                f.overlaps,
                f.duplicates_within_stream,
                f.conflicts.len(),
                f.discarded.len()
            ));
        }
        for c in &f.conflicts {
            out.push(format!("  CONFLICT {}: {} vs {}", c.reason, batch_text(&c.kept), batch_text(&c.other)));
        }
        out.push(match (self.first_offset(), self.last_offset()) {
            (Some(a), Some(b)) => format!("coverage (slow ∪ fast): {a}..={b}; gaps: {}", ranges_text(&self.gaps())),
            _ => "coverage (slow ∪ fast): nothing".into(),
        });
        out.join("\n")
    }
}

fn batch_json(b: &BatchInfo) -> Value {
    json!({
        "broker_id": b.source.broker_id,
        "seq": b.source.seq,
        "key": &*b.source.key,
        "base_offset": b.base_offset,
        "last_offset": b.last_offset,
        "leader_epoch": b.leader_epoch,
    })
}

fn batch_text(b: &BatchInfo) -> String {
    format!("{}..={} epoch={} in {}", b.base_offset, b.last_offset, b.leader_epoch, b.source.key)
}

/// `partition show`: the view of `topic`/`partition` (topic id from `topic_id` or the slow tier).
pub async fn show(stores: &Stores, topic: &str, partition: i32, topic_id: Option<&str>) -> Result<TierView> {
    let topic_id = resolve_topic_id(stores, topic, topic_id).await?;
    TierView::load(stores, topic, &topic_id, partition).await
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub topic: String,
    pub topic_id: String,
    pub partition: i32,
    pub dir: String,
    /// Complete batches in the local log.
    pub local_batches: u64,
    pub local_log_start_offset: Option<i64>,
    /// The offset after the last complete local batch.
    pub local_log_end_offset: Option<i64>,
    /// What ended the active segment early (a batch being written), if anything.
    pub local_tail: Option<String>,
    /// The lowest offset either tier holds.
    pub tier_first_offset: Option<i64>,
    /// The highest offset uploaded to either tier.
    pub last_uploaded_offset: Option<i64>,
    /// Complete slow-tier segments.
    pub slow_segments: u64,
    /// Fast-tier ranges of the partition (all streams).
    pub fast_ranges: u64,
    /// Local batches at offsets the tiers hold: `matched + mismatched`.
    pub checked: u64,
    /// Local batches byte-identical to every tier copy of them.
    pub matched: u64,
    /// Local batches that differ from a tier copy (bytes or batch boundaries).
    pub mismatched: u64,
    /// Local batches beyond the last uploaded offset (not uploaded yet: fine).
    pub not_uploaded: u64,
    /// Local batches below the lowest tiered offset (never tiered or already expired from the tiers).
    pub below_tiers: u64,
    /// Local batches between the first and the last tiered offset that no tier holds (a gap).
    pub missing: u64,
    /// Offset ranges between the first and the last tiered offset that neither tier holds.
    pub tier_gaps: Vec<(i64, i64)>,
    /// Fast-tier batches uploaded more than once by the same stream.
    pub duplicates: u64,
    /// Identical copies of fast-tier batches in other streams, or in both tiers (expected, dropped).
    pub overlaps: u64,
    /// Valid copies of the same offsets that differ: between streams, or between the tiers.
    pub conflicts: u64,
    /// Fast-tier batches not valid by the leader-epoch rule (a zombie leader's, truncated data).
    pub discarded: u64,
    /// The first [`MAX_DETAILS`] mismatches and conflicts, described.
    pub details: Vec<String>,
}

impl VerifyReport {
    /// No mismatch, gap, conflict or duplicate.
    pub fn ok(&self) -> bool {
        self.mismatched == 0
            && self.missing == 0
            && self.tier_gaps.is_empty()
            && self.conflicts == 0
            && self.duplicates == 0
    }

    /// `partition verify --json`: one object with the fields `topic`, `topic_id`, `partition`, `dir`,
    /// `ok` (exit status 0), `local_batches`, `local_log_start_offset`, `local_log_end_offset` (the offset
    /// after the last complete local batch), `local_tail` (what ended the active segment early, e.g. a
    /// batch being written; null), `tier_first_offset`, `last_uploaded_offset`, `slow_segments`,
    /// `fast_ranges`, `batches_checked`, `batches_matched`, `batches_mismatched`, `local_not_uploaded`
    /// (local batches beyond the last uploaded offset: fine), `local_below_tiers`, `local_missing` (local
    /// batches inside the tiered range that no tier holds), `tier_gaps` (`[[first, last], …]`),
    /// `duplicates` (within one stream), `overlaps` (identical copies, fine), `conflicts`, `discarded`
    /// (by the leader-epoch rule), `details` (up to 20 descriptions of mismatches and conflicts). Offsets
    /// are null when there is nothing to take them from.
    pub fn to_json(&self) -> Value {
        json!({
            "topic": self.topic,
            "topic_id": self.topic_id,
            "partition": self.partition,
            "dir": self.dir,
            "ok": self.ok(),
            "local_batches": self.local_batches,
            "local_log_start_offset": self.local_log_start_offset,
            "local_log_end_offset": self.local_log_end_offset,
            "local_tail": self.local_tail,
            "tier_first_offset": self.tier_first_offset,
            "last_uploaded_offset": self.last_uploaded_offset,
            "slow_segments": self.slow_segments,
            "fast_ranges": self.fast_ranges,
            "batches_checked": self.checked,
            "batches_matched": self.matched,
            "batches_mismatched": self.mismatched,
            "local_not_uploaded": self.not_uploaded,
            "local_below_tiers": self.below_tiers,
            "local_missing": self.missing,
            "tier_gaps": self.tier_gaps,
            "duplicates": self.duplicates,
            "overlaps": self.overlaps,
            "conflicts": self.conflicts,
            "discarded": self.discarded,
            "details": self.details,
        })
    }

    /// `partition verify` as text.
    pub fn render(&self) -> String {
        let span = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => format!("{a}..={b}"),
            _ => "nothing".into(),
        };
        let mut out = vec![
            format!("partition {}-{} topic_id={} dir={}", self.topic, self.partition, self.topic_id, self.dir),
            format!(
                "local log: {} in {} batches{}",
                span(self.local_log_start_offset, self.local_log_end_offset.map(|e| e - 1)),
                self.local_batches,
                self.local_tail.as_ref().map_or(String::new(), |t| format!(" (active segment ends early: {t})"))
            ),
            format!(
                "tiers: {} ({} slow segments, {} fast ranges); gaps: {}",
                span(self.tier_first_offset, self.last_uploaded_offset),
                self.slow_segments,
                self.fast_ranges,
                ranges_text(&self.tier_gaps)
            ),
            format!(
                "batches checked {}: matched {}, MISMATCHED {}; missing in the tiers {}; not uploaded yet {}; below the tiers {}",
                self.checked, self.matched, self.mismatched, self.missing, self.not_uploaded, self.below_tiers
            ),
            format!(
                "duplicates within a stream {}, conflicts {}, identical overlaps {}, discarded by the leader-epoch rule {}",
                self.duplicates, self.conflicts, self.overlaps, self.discarded
            ),
        ];
        out.extend(self.details.iter().map(|d| format!("  {d}")));
        out.push(if self.ok() { "OK".into() } else { "FAILED".into() });
        out.join("\n")
    }
}

/// Per local batch: not compared yet, identical to every tier copy, or different from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    No,
    Matched,
    Mismatched,
}

/// Compares tier batches with the local log.
struct Checker<'a> {
    local: &'a LocalLog,
    seen: Vec<Seen>,
    report: VerifyReport,
}

impl Checker<'_> {
    fn detail(&mut self, d: String) {
        if self.report.details.len() < MAX_DETAILS {
            self.report.details.push(d);
        }
    }

    /// Compares one tier batch (`first..=last`, `bytes`, from `source`) with the local batches at its
    /// offsets.
    fn against_local(&mut self, first: i64, last: i64, bytes: &[u8], source: &str) -> Result<()> {
        let local = self.local;
        let r = overlapping(&local.batches, first, last, |b| (b.base_offset, b.last_offset));
        let exact = r.len() == 1 && {
            let b = local.batches[r.start];
            (b.base_offset, b.last_offset) == (first, last)
        };
        if exact {
            let i = r.start;
            if local.batches[i].size as usize == bytes.len() && local.read(i)? == bytes {
                if self.seen[i] == Seen::No {
                    self.seen[i] = Seen::Matched;
                }
            } else {
                self.seen[i] = Seen::Mismatched;
                self.detail(format!("MISMATCH {first}..={last}: {} differs from {source}", local.describe(i)));
            }
            return Ok(());
        }
        for i in r {
            self.seen[i] = Seen::Mismatched;
            let b = local.batches[i];
            self.detail(format!(
                "MISMATCH {}..={} at {}: {source} holds a batch {first}..={last} there",
                b.base_offset,
                b.last_offset,
                local.describe(i)
            ));
        }
        Ok(())
    }
}

/// `partition verify --dir <log.dir>/<topic>-<partition>`: checks a broker's local log against the tiers.
///
/// Topic and partition come from the directory name, the topic id from its `partition.metadata`. Every
/// complete local batch is read (a batch being written at the end of the active segment is tolerated);
/// every resolved fast-tier batch, and every batch of the complete slow segments that overlap the local
/// log or the fast tier, is compared byte for byte with the local batch at its offsets (the slow-tier
/// batches also with the fast tier's). The tiers must hold every offset from their lowest to their
/// highest (`tier_gaps`). Local batches below the local log start exist only in the tiers (deleted
/// locally), those above the last uploaded offset are not uploaded yet; neither is a problem.
///
/// The broker and the plugin keep working while this runs: a WAL object cleaned up, a slow segment
/// expired or a local segment deleted between listing and reading makes one attempt fail with not-found
/// or an I/O error; the whole check is then repeated (up to [`VERIFY_ATTEMPTS`] times).
pub async fn verify(stores: &Stores, dir: &Path) -> Result<VerifyReport> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let (topic, partition) = parse_dir_name(name).ok_or_else(|| {
        Error::config("--dir", format!("dir={} is not a partition directory <topic>-<partition>", dir.display()))
    })?;
    verify_as(stores, dir, &topic, partition).await
}

/// [`verify`] of a directory whose name does not say the partition (e.g. one being written by `fasttier
/// rebuild`): `topic` and `partition` are given.
pub async fn verify_as(stores: &Stores, dir: &Path, topic: &str, partition: i32) -> Result<VerifyReport> {
    let mut attempt = 1;
    loop {
        match verify_once(stores, dir, topic, partition).await {
            Err(e) if attempt < VERIFY_ATTEMPTS && (e.is_not_found() || matches!(e, Error::Io { .. })) => {
                eprintln!("verify attempt {attempt} raced with a deletion ({e}); again");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            r => return r,
        }
    }
}

/// Attempts of [`verify`] when things are deleted underneath it.
pub const VERIFY_ATTEMPTS: u32 = 5;

async fn verify_once(stores: &Stores, dir: &Path, topic: &str, partition: i32) -> Result<VerifyReport> {
    let topic_id = read_topic_id(dir)?;
    let local = LocalLog::open(dir)?;
    let view = TierView::load(stores, topic, &topic_id, partition).await?;
    let f = &view.fast;
    let report = VerifyReport {
        topic: topic.to_string(),
        topic_id,
        partition,
        dir: dir.display().to_string(),
        local_batches: local.batches.len() as u64,
        local_log_start_offset: local.start_offset(),
        local_log_end_offset: local.end_offset(),
        local_tail: local.tail.clone(),
        tier_first_offset: view.first_offset(),
        last_uploaded_offset: view.last_offset(),
        slow_segments: view.slow.iter().filter(|s| s.complete()).count() as u64,
        fast_ranges: view.ranges.len() as u64,
        tier_gaps: view.gaps(),
        duplicates: f.duplicates_within_stream,
        overlaps: f.overlaps,
        conflicts: f.conflicts.len() as u64,
        discarded: f.discarded.len() as u64,
        ..VerifyReport::default()
    };
    let mut c = Checker { local: &local, seen: vec![Seen::No; local.batches.len()], report };
    for conflict in &f.conflicts {
        c.detail(format!(
            "CONFLICT {}: {} vs {}",
            conflict.reason,
            batch_text(&conflict.kept),
            batch_text(&conflict.other)
        ));
    }
    for b in &f.batches {
        c.against_local(b.info.base_offset, b.info.last_offset, &b.bytes, &format!("wal {}", b.info.source.key))?;
    }
    let wanted = |first: i64, last: i64| {
        let local_hit = local.start_offset().zip(local.end_offset()).is_some_and(|(a, e)| first < e && last >= a);
        let fast_hit = f.first_offset().zip(f.last_offset()).is_some_and(|(a, b)| first <= b && last >= a);
        local_hit || fast_hit
    };
    for s in &view.slow {
        let Some(m) = s.manifest.as_ref().filter(|m| wanted(m.start_offset, m.end_offset)) else { continue };
        let mut reader = SegmentBatches::new(stores.slow.clone(), m.clone());
        while let Some(b) = reader.next_batch().await? {
            let source = format!("slow {}:{}", m.log.key, b.position);
            c.against_local(b.base_offset, b.last_offset, &b.bytes, &source)?;
            let r = overlapping(&f.batches, b.base_offset, b.last_offset, |x| (x.info.base_offset, x.info.last_offset));
            if r.is_empty() {
                continue;
            }
            let same = r.len() == 1 && {
                let x = &f.batches[r.start];
                (x.info.base_offset, x.info.last_offset) == (b.base_offset, b.last_offset) && x.bytes == b.bytes
            };
            if same {
                c.report.overlaps += 1;
            } else {
                c.report.conflicts += 1;
                let x = &f.batches[r.start].info;
                c.detail(format!(
                    "CONFLICT tiers: {}..={} in {source} vs {}",
                    b.base_offset,
                    b.last_offset,
                    batch_text(x)
                ));
            }
        }
    }
    let Checker { seen, mut report, .. } = c;
    let (first, last) = (view.first_offset(), view.last_offset());
    for (i, b) in local.batches.iter().enumerate() {
        let covered = !overlapping(&view.coverage, b.base_offset, b.last_offset, |&c| c).is_empty();
        match seen[i] {
            Seen::Matched => report.matched += 1,
            Seen::Mismatched => report.mismatched += 1,
            Seen::No if covered => {
                report.mismatched += 1;
                if report.details.len() < MAX_DETAILS {
                    report.details.push(format!(
                        "MISMATCH {}..={} at {}: the tiers hold these offsets, in no batch with these boundaries",
                        b.base_offset,
                        b.last_offset,
                        local.describe(i)
                    ));
                }
            }
            Seen::No if last.is_none_or(|l| b.base_offset > l) => report.not_uploaded += 1,
            Seen::No if first.is_some_and(|f| b.last_offset < f) => report.below_tiers += 1,
            Seen::No => report.missing += 1,
        }
    }
    report.checked = report.matched + report.mismatched;
    Ok(report)
}
