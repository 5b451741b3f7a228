//! The uploader task: tail → combine → append, plus head updates and cleanup.
//!
//! One task per engine, on the shared runtime; the file reads of a poll round run on one blocking thread.
//! Each round polls every led partition's tailer (round-robin, bounded by what the next object may still
//! take), keeps the new batches as *pending ranges*, and uploads them as one WAL object when the pacer says
//! so (`pace.rs`: as soon as the previous upload finished, uploads at least `wal.upload.interval.ms`
//! apart); between rounds it sleeps until the log watch (`watch.rs`) reports a write.
//!
//! Memory is bounded by one object: while an upload fails, nothing more is read from the logs (the
//! partitions fall behind and are read again from disk when the store is back); the failed object is
//! retried with the same content, as the writer's contract requires.
//!
//! Where a partition's upload starts when this broker becomes its leader: after what this broker's own
//! stream already holds of it, if that reaches into the active segment (a restart, or leadership coming
//! back); otherwise at the active segment's base offset. Everything below the active segment is in rolled
//! segments, which Kafka copies to the slow tier. A new leader therefore re-uploads the part of its active
//! segment the previous leader had uploaded: those ranges are byte-identical below the new leader epoch's
//! start offset, and readers resolve overlaps by Kafka's leader-epoch rule (`docs/formats.md`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::task::JoinHandle;

use super::coverage::slow_end_offset;
use super::pace::{Next, Pacer};
use super::watch::LogWatch;
use super::{Shared, StreamTip, Tp};
use crate::error::{Error, Result};
use crate::format::batch::{BatchHeader, HEADER_SIZE};
use crate::metrics::{Metric, WAL_LAG_BUCKETS};
use crate::store::ObjectStore;
use crate::tail::{list_segments, PartitionTailer, TailChunk, TailEvent};
use crate::unix_ms as now_ms;
use crate::wal::{
    delete_objects, is_fenced_error, read_header, RetentionIndex, WalHeader, WalObjectBuilder, WalWriter,
    WalWriterOptions,
};

/// Window of the per-second gauges.
const RATE_WINDOW: Duration = Duration::from_secs(30);
/// Largest read per tailer poll.
const POLL_BYTES: usize = 1 << 20;
/// Lag samples kept for the percentile gauges.
const LAG_WINDOW: usize = 4096;
/// Headers read concurrently when loading the retained objects at start.
const LOAD_CONCURRENCY: usize = 16;
/// Epoch runs remembered per partition of this broker's own stream.
const MAX_RUNS: usize = 16;
/// The status JSON is rebuilt at most this often while uploads follow each other.
const STATUS_EVERY: Duration = Duration::from_millis(200);

/// What this broker's stream holds of a partition (its newest part).
#[derive(Debug, Clone, Default)]
struct Uploaded {
    last_offset: i64,
    /// (leader epoch, first offset) runs in offset order.
    runs: Vec<(i32, i64)>,
}

impl Uploaded {
    fn add(&mut self, epoch: i32, first: i64, last: i64) {
        if !self.runs.is_empty() && first <= self.last_offset {
            // Re-uploaded after a truncation: what was stored from `first` on is superseded.
            self.runs.retain(|&(_, s)| s < first);
        }
        if self.runs.last().is_none_or(|&(e, _)| e != epoch) {
            self.runs.push((epoch, first));
        }
        if self.runs.len() > MAX_RUNS {
            self.runs.remove(0);
        }
        self.last_offset = last;
    }
}

/// A led partition being tailed.
#[derive(Debug)]
struct Part {
    topic: String,
    /// When the tailer was last polled (unix ms); `None` before its first poll.
    last_poll_ms: Option<i64>,
    tailer: Option<PartitionTailer>,
    /// Why the tailer could not be made or failed last; retried at `retry_at`.
    problem: Option<String>,
    retry_at: Instant,
}

/// New log data waiting for an upload.
#[derive(Debug, Clone)]
struct Range {
    tp: Tp,
    epoch: i32,
    first: i64,
    last: i64,
    data: Bytes,
    /// Estimated append times (unix ms) of the batches, for the lag histogram: each batch's max timestamp
    /// clamped to the window in which it must have been appended (after the partition's previous poll,
    /// not after this one), so a client clock off or an old CreateTime cannot distort the figure much.
    timestamps: Vec<i64>,
    seen: Instant,
}

/// The outcome of polling one partition.
enum Polled {
    /// New batches, and the window (unix ms) in which they were appended: after the previous poll (if any),
    /// before this one.
    Chunk(Tp, TailChunk, (Option<i64>, i64)),
    Truncated(Tp, i64),
    Missing(Tp, i64, i64),
    Gone(Tp),
    Problem(Tp, String),
}

pub(crate) struct Uploader {
    shared: Arc<Shared>,
    store: Arc<dyn ObjectStore>,
    slow_store: Arc<dyn ObjectStore>,
    slow_prefix: String,
    writer: Option<WalWriter>,
    retention: RetentionIndex,
    /// (seq, size) of retained objects, oldest first.
    retained: VecDeque<(u64, u64)>,
    uploaded: HashMap<Tp, Uploaded>,
    topics: HashMap<Tp, String>,
    parts: BTreeMap<Tp, Part>,
    /// Round-robin start of the next poll round.
    rr: Option<Tp>,
    pending: Vec<Range>,
    pending_bytes: usize,
    /// The object whose append failed with an unknown outcome; retried with the same content.
    in_flight: Option<(WalObjectBuilder, Vec<Range>)>,
    stopped: HashSet<Tp>,
    seen_version: u64,
    lag: VecDeque<i64>,
    next_head: Instant,
    next_cleanup: Instant,
    last_coverage_check: HashMap<Tp, Instant>,
    backoff: Duration,
    last_error: Option<String>,
    fenced: bool,
    /// (when, objects, bytes, put attempts) samples for the per-second gauges, oldest first.
    rate_samples: VecDeque<(Instant, i64, i64, i64)>,
    /// When the status was last published.
    status_at: Option<Instant>,
    /// The deletion of objects below the low-water mark, off the append path: the task returns the seq
    /// below which everything was deleted, and the first error.
    deleter: Option<JoinHandle<(u64, Option<Error>)>>,
}

/// Deletes of covered objects in flight at once (a cleanup round must not hold up the next PUT).
const DELETE_CONCURRENCY: usize = 8;

impl Uploader {
    pub(crate) fn new(
        shared: Arc<Shared>,
        store: Arc<dyn ObjectStore>,
        slow_store: Arc<dyn ObjectStore>,
        slow_prefix: String,
    ) -> Uploader {
        let now = Instant::now();
        Uploader {
            shared,
            store,
            slow_store,
            slow_prefix,
            writer: None,
            retention: RetentionIndex::new(),
            retained: VecDeque::new(),
            uploaded: HashMap::new(),
            topics: HashMap::new(),
            parts: BTreeMap::new(),
            rr: None,
            pending: Vec::new(),
            pending_bytes: 0,
            in_flight: None,
            stopped: HashSet::new(),
            seen_version: u64::MAX,
            lag: VecDeque::new(),
            next_head: now,
            next_cleanup: now,
            last_coverage_check: HashMap::new(),
            backoff: Duration::ZERO,
            last_error: None,
            fenced: false,
            rate_samples: VecDeque::new(),
            status_at: None,
            deleter: None,
        }
    }

    fn closed(&self) -> bool {
        self.shared.membership.lock().unwrap_or_else(|p| p.into_inner()).closed
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    fn error(&mut self, what: &str, e: &Error) {
        self.metrics().inc(Metric::WalErrors);
        let msg = format!("fast tier: {what} failed: {e}");
        tracing::warn!("{msg}");
        self.last_error = Some(msg);
    }

    /// Sleeps up to `d`, waking early on a membership change or close.
    async fn pause(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        let _ = tokio::time::timeout(d, self.shared.wake.notified()).await;
    }

    fn grow_backoff(&mut self) -> Duration {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(10));
        self.backoff
    }

    pub(crate) async fn run(mut self) {
        tracing::info!(
            "fast tier uploader starting: broker_id={} bucket={} prefix={:?} interval_ms={}",
            self.shared.broker_id,
            self.shared.cfg.s3.bucket,
            self.shared.cfg.prefix,
            self.shared.cfg.upload_interval.as_millis()
        );
        let mut pacer = Pacer::new(self.shared.cfg.upload_interval);
        let mut watch = LogWatch::start(self.shared.wake.clone());
        while !self.closed() && !self.fenced {
            if self.writer.is_none() {
                if let Err(e) = self.open().await {
                    self.error(&format!("opening the stream broker_id={}", self.shared.broker_id), &e);
                    if is_fenced_error(&e) {
                        self.fenced = true;
                        break;
                    }
                    let d = self.grow_backoff();
                    self.publish_status("opening");
                    self.pause(d).await;
                    continue;
                }
            }
            self.sync_membership();
            if self.in_flight.is_some() {
                // an upload failed: nothing more is read from the logs until it went through
                let now = Instant::now();
                pacer.started(now);
                if !self.retry_in_flight(now).await {
                    let d = self.grow_backoff();
                    self.publish_status("retrying");
                    self.pause(d).await;
                    continue;
                }
            }
            self.poll_round().await;
            let look_again = watch.sync(&self.tailed_dirs());
            let now = Instant::now();
            match pacer.next(now, !self.pending.is_empty(), watch.complete()) {
                Next::Upload => {
                    // a group commit: everything found goes into one object, and the logs are looked at
                    // again right after it (what was written during the PUT goes next)
                    pacer.started(now);
                    if !self.flush(now).await {
                        let d = self.grow_backoff();
                        self.publish_status("retrying");
                        self.pause(d).await;
                        continue;
                    }
                    self.housekeeping().await;
                    self.publish_status_every("running", STATUS_EVERY);
                }
                Next::Hold(until) => {
                    // the previous upload started less than wal.upload.interval.ms ago
                    tokio::time::sleep_until(until.into()).await;
                }
                Next::Idle(until) => {
                    if look_again {
                        continue;
                    }
                    self.housekeeping().await;
                    self.publish_status("running");
                    let until = until.min(self.next_head).min(self.next_cleanup).max(Instant::now());
                    self.pause(until.saturating_duration_since(Instant::now())).await;
                }
            }
        }
        if !self.fenced && self.writer.is_some() && self.in_flight.is_none() && !self.pending.is_empty() {
            // Best effort on close: what was read is uploaded (the store calls have their own timeouts).
            let _ = self.flush(Instant::now()).await;
        }
        if let Some(w) = self.writer.as_mut() {
            if !self.fenced {
                let _ = w.update_head().await;
            }
        }
        if let Some(h) = self.deleter.take() {
            // objects left below the low-water mark are found and deleted by the next writer's cleanup
            h.abort();
        }
        self.publish_status(if self.fenced { "fenced" } else { "closed" });
        tracing::info!("fast tier uploader stopped: broker_id={}", self.shared.broker_id);
    }

    async fn open(&mut self) -> Result<()> {
        let cfg = &self.shared.cfg;
        let broker_id = self.shared.broker_id;
        if broker_id < 0 {
            return Err(Error::config("broker.id", "the fast tier needs the broker id Kafka passes to the plugin"));
        }
        let writer = WalWriter::open(self.store.clone(), &cfg.prefix, broker_id, WalWriterOptions::default()).await?;
        // What the stream already holds: headers of the retained objects.
        let seqs: Vec<u64> = (writer.low_water()..writer.next_seq()).collect();
        let mut retention = RetentionIndex::new();
        let mut retained = VecDeque::new();
        let mut uploaded: HashMap<Tp, Uploaded> = HashMap::new();
        for batch in seqs.chunks(LOAD_CONCURRENCY) {
            let mut set = tokio::task::JoinSet::new();
            for &seq in batch {
                let key = writer.key(seq);
                let store = self.store.clone();
                set.spawn(async move { (seq, read_header(store.as_ref(), &key).await) });
            }
            let mut results = Vec::with_capacity(batch.len());
            while let Some(r) = set.join_next().await {
                results.push(r.map_err(|e| Error::Internal(format!("wal header load task: {e}")))?);
            }
            results.sort_by_key(|r| r.0);
            for (seq, r) in results {
                match r {
                    Ok(h) => {
                        retention.record(&h)?;
                        retained.push_back((seq, h.object_len()));
                        note_uploaded(&mut uploaded, &h);
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        tracing::info!(
            "fast tier stream opened: broker_id={broker_id} incarnation={} next_seq={} low_water={} retained={} partitions={}",
            writer.incarnation(),
            writer.next_seq(),
            writer.low_water(),
            retained.len(),
            uploaded.len()
        );
        self.retention = retention;
        self.retained = retained;
        self.uploaded = uploaded;
        self.writer = Some(writer);
        self.backoff = Duration::ZERO;
        self.update_size_metrics();
        Ok(())
    }

    /// Applies what Kafka reported since the last round: new leaders get a part, lost ones are dropped.
    fn sync_membership(&mut self) {
        let (leaders, stopped, version) = {
            let m = self.shared.membership.lock().unwrap_or_else(|p| p.into_inner());
            if m.version == self.seen_version {
                return;
            }
            (m.leaders.clone(), m.stopped.clone(), m.version)
        };
        self.seen_version = version;
        self.parts.retain(|tp, _| leaders.contains_key(tp));
        for (tp, topic) in leaders {
            self.topics.insert(tp.clone(), topic.clone());
            self.parts.entry(tp).or_insert_with(|| Part {
                topic,
                last_poll_ms: None,
                tailer: None,
                problem: None,
                retry_at: Instant::now(),
            });
        }
        self.stopped.extend(stopped);
        self.metrics().set(Metric::WalPartitions, self.parts.len() as i64);
    }

    /// Polls the tailers on a blocking thread and takes in what they found.
    async fn poll_round(&mut self) {
        let budget = (self.shared.cfg.max_object_bytes as usize).saturating_sub(self.pending_bytes);
        if budget == 0 || self.parts.is_empty() {
            return;
        }
        let log_dirs = self.shared.membership.lock().unwrap_or_else(|p| p.into_inner()).log_dirs.clone();
        let mut parts = std::mem::take(&mut self.parts);
        let starts: HashMap<Tp, Uploaded> =
            parts.keys().filter_map(|tp| self.uploaded.get(tp).map(|u| (tp.clone(), u.clone()))).collect();
        let rr = self.rr.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let out = poll_all(&mut parts, &log_dirs, &starts, rr, budget);
            (parts, out)
        })
        .await;
        let (parts, (polled, next_rr)) = match joined {
            Ok(v) => v,
            Err(e) => {
                // The tailers are lost with the panicked thread; they are made again next round.
                tracing::error!("fast tier poll round panicked: {e}");
                return;
            }
        };
        self.parts = parts;
        self.rr = next_rr;
        let now = Instant::now();
        for p in polled {
            match p {
                Polled::Chunk(tp, chunk, window) => self.take_chunk(tp, chunk, window, now),
                Polled::Truncated(tp, at) => {
                    tracing::info!("fast tier: log truncated {tp} at_offset={at}; pending data from there dropped");
                    self.drop_pending_from(&tp, at);
                }
                Polled::Missing(tp, from, to) => tracing::warn!(
                    "fast tier: {tp} offsets {from}..{to} left the local log before they were uploaded; \
                     the slow tier holds them once their segments are copied"
                ),
                Polled::Gone(tp) => {
                    tracing::info!("fast tier: partition directory gone {tp}");
                    self.parts.remove(&tp);
                    self.stopped.insert(tp);
                }
                Polled::Problem(tp, msg) => {
                    self.metrics().inc(Metric::WalErrors);
                    tracing::warn!("fast tier: {tp}: {msg}");
                    self.last_error = Some(format!("{tp}: {msg}"));
                }
            }
        }
        self.metrics().set(Metric::WalPartitions, self.parts.len() as i64);
    }

    fn take_chunk(&mut self, tp: Tp, chunk: TailChunk, (after, before): (Option<i64>, i64), seen: Instant) {
        let bytes = chunk.bytes;
        for (i, run) in chunk.epochs.iter().enumerate() {
            let (end_byte, last) = match chunk.epochs.get(i + 1) {
                Some(next) => (next.byte_offset, next.start_offset - 1),
                None => (bytes.len(), chunk.last_offset),
            };
            let data = bytes.slice(run.byte_offset..end_byte);
            let timestamps =
                batch_timestamps(&data).into_iter().map(|ts| ts.min(before).max(after.unwrap_or(i64::MIN))).collect();
            self.pending_bytes += data.len();
            self.pending.push(Range {
                tp: tp.clone(),
                epoch: run.epoch,
                first: run.start_offset,
                last,
                data,
                timestamps,
                seen,
            });
        }
    }

    /// Drops pending data of `tp` at offsets `>= at` (cutting a range at a batch boundary).
    fn drop_pending_from(&mut self, tp: &Tp, at: i64) {
        let mut kept = Vec::with_capacity(self.pending.len());
        for mut r in std::mem::take(&mut self.pending) {
            if &r.tp != tp || r.last < at {
                kept.push(r);
                continue;
            }
            if r.first >= at {
                self.pending_bytes -= r.data.len();
                continue;
            }
            // Keep the batches below `at`.
            let (mut pos, mut last) = (0usize, r.first);
            let mut n = 0;
            while pos + HEADER_SIZE <= r.data.len() {
                let Some(Ok(h)) = BatchHeader::parse(&r.data[pos..], pos as u64) else { break };
                if h.base_offset() >= at {
                    break;
                }
                last = h.last_offset();
                pos += h.batch_size();
                n += 1;
            }
            self.pending_bytes -= r.data.len() - pos;
            if pos > 0 {
                r.data = r.data.slice(..pos);
                r.last = last;
                r.timestamps.truncate(n);
                kept.push(r);
            }
        }
        self.pending = kept;
    }

    /// Uploads the pending ranges as one object (the pacer let it start at `started`). False if the append
    /// failed (it is kept in flight).
    async fn flush(&mut self, started: Instant) -> bool {
        let mut ranges = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        ranges.sort_by(|a, b| (&a.tp, a.first).cmp(&(&b.tp, b.first)));
        let ranges = merge_adjacent(ranges);
        let mut builder = WalObjectBuilder::new();
        for r in &ranges {
            if let Err(e) = builder.add(r.tp.topic_id, r.tp.partition, r.epoch, r.first, r.last, r.data.clone()) {
                // Cannot happen for data the tailer verified; never upload a partial object silently.
                self.error("building a WAL object", &e);
                return true;
            }
        }
        self.in_flight = Some((builder, ranges));
        self.retry_in_flight(started).await
    }

    async fn retry_in_flight(&mut self, started: Instant) -> bool {
        let Some((builder, ranges)) = self.in_flight.take() else { return true };
        let started_ms = now_ms() - started.elapsed().as_millis() as i64;
        let Some(writer) = self.writer.as_mut() else {
            self.in_flight = Some((builder, ranges));
            return false;
        };
        self.shared.metrics.inc(Metric::WalPutRequests);
        match writer.append(&builder).await {
            Ok(app) => {
                self.backoff = Duration::ZERO;
                let m = &self.shared.metrics;
                m.add(Metric::RoundtripUploadPutMs, started.elapsed().as_millis() as i64);
                m.inc(Metric::RoundtripUploadPutCount);
                for &ts in ranges.iter().flat_map(|r| &r.timestamps) {
                    m.add(Metric::RoundtripUploadWaitMs, (started_ms - ts).max(0));
                    m.inc(Metric::RoundtripUploadWaitCount);
                }
                // followers waiting for this stream learn of the object now (catchup/notify.rs)
                let tip = StreamTip { incarnation: writer.incarnation(), next_seq: writer.next_seq() };
                self.shared.tip.send_replace(Some(tip));
                self.after_append(&app.header, app.size, &ranges);
                true
            }
            Err(e) => {
                let key = writer.key(writer.next_seq());
                self.error(&format!("uploading key={key}"), &e);
                if is_fenced_error(&e) {
                    tracing::error!(
                        "fast tier: broker_id={} was fenced by a newer writer of its stream; uploads stop",
                        self.shared.broker_id
                    );
                    self.fenced = true;
                    return false;
                }
                self.in_flight = Some((builder, ranges));
                false
            }
        }
    }

    fn after_append(&mut self, header: &WalHeader, size: u64, ranges: &[Range]) {
        let m = self.shared.metrics.clone();
        m.inc(Metric::WalObjects);
        m.add(Metric::WalBytes, size as i64);
        if let Err(e) = self.retention.record(header) {
            tracing::error!("fast tier retention index: {e}");
        }
        self.retained.push_back((header.stamp.seq, size));
        note_uploaded(&mut self.uploaded, header);
        let now = now_ms();
        for r in ranges {
            m.add(Metric::WalRecordBytes, r.data.len() as i64);
            for &ts in &r.timestamps {
                let lag = (now - ts).max(0);
                m.inc(Metric::WalLagCount);
                m.add(Metric::WalLagSumMs, lag);
                for &(bound, metric) in WAL_LAG_BUCKETS {
                    if lag <= bound {
                        m.inc(metric);
                    }
                }
                if self.lag.len() == LAG_WINDOW {
                    self.lag.pop_front();
                }
                self.lag.push_back(lag);
            }
        }
        let mut sorted: Vec<i64> = self.lag.iter().copied().collect();
        sorted.sort_unstable();
        if let Some(&max) = sorted.last() {
            let pct = |p: f64| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize];
            m.set(Metric::WalLagP50Ms, pct(0.50));
            m.set(Metric::WalLagP99Ms, pct(0.99));
            m.set(Metric::WalLagMaxMs, max);
        }
        self.update_size_metrics();
    }

    fn update_size_metrics(&self) {
        self.metrics().set(Metric::WalRetainedObjects, self.retained.len() as i64);
        self.metrics().set(Metric::WalRetainedBytes, self.retained.iter().map(|r| r.1 as i64).sum());
    }

    /// Head updates and cleanup, when due.
    async fn housekeeping(&mut self) {
        self.reap_deleter().await;
        let now = Instant::now();
        if now >= self.next_head {
            self.next_head = now + self.shared.cfg.head_interval;
            if let Some(w) = self.writer.as_mut() {
                if w.head_lag() > 0 || w.has_pending() {
                    if let Err(e) = w.update_head().await {
                        if is_fenced_error(&e) {
                            self.fenced = true;
                        }
                        self.error("writing the stream head", &e);
                    }
                }
            }
        }
        if now >= self.next_cleanup && self.in_flight.is_none() {
            self.next_cleanup = now + self.shared.cfg.cleanup_interval;
            if let Err(e) = self.cleanup().await {
                if is_fenced_error(&e) {
                    self.fenced = true;
                }
                self.error("cleaning up the fast tier", &e);
            }
        }
    }

    /// Deletes the objects every partition range of which the slow tier covers (or whose partition is
    /// gone), older than the safety horizon.
    async fn cleanup(&mut self) -> Result<()> {
        let horizon = self.shared.cfg.safety_horizon.as_millis() as i64;
        let now = now_ms();
        // Partitions blocking the oldest objects: learn their slow-tier coverage (a LIST each, at most once
        // per cleanup interval per partition).
        let mut need: Vec<Tp> = Vec::new();
        self.retention.low_water(now, horizon, |t, p, last| {
            let tp = Tp { topic_id: *t, partition: p };
            let ok = self.shared.coverage.end_offset(&tp).is_some_and(|e| e >= last) || self.is_gone(&tp);
            if !ok && !need.contains(&tp) {
                need.push(tp);
            }
            ok
        });
        for tp in need {
            let Some(topic) = self.topics.get(&tp).cloned() else { continue };
            let due = self.last_coverage_check.get(&tp).is_none_or(|t| t.elapsed() >= self.shared.cfg.cleanup_interval);
            if !due {
                continue;
            }
            self.last_coverage_check.insert(tp.clone(), Instant::now());
            if let Some(end) = slow_end_offset(self.slow_store.as_ref(), &self.slow_prefix, &topic, &tp).await? {
                self.shared.coverage.record(tp, end);
            }
        }
        let coverage = self.shared.coverage.clone();
        let low = self.retention.low_water(now, horizon, |t, p, last| {
            let tp = Tp { topic_id: *t, partition: p };
            coverage.end_offset(&tp).is_some_and(|e| e >= last) || self.is_gone(&tp)
        });
        let Some(low) = low else { return Ok(()) };
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        if low <= writer.low_water() && writer.cleaned_below() >= writer.low_water() {
            return Ok(());
        }
        writer.raise_low_water(low).await?;
        self.retention.forget_below(writer.low_water());
        if self.deleter.is_none() {
            let objects = writer.uncleaned();
            if !objects.is_empty() {
                self.deleter = Some(tokio::spawn(delete_objects(self.store.clone(), objects, DELETE_CONCURRENCY)));
            }
        }
        Ok(())
    }

    /// Takes in the finished deletion round, if any: what it deleted leaves the size figures.
    async fn reap_deleter(&mut self) {
        if !self.deleter.as_ref().is_some_and(|h| h.is_finished()) {
            return;
        }
        let Some(h) = self.deleter.take() else { return };
        // a finished task: this does not wait
        let (below, err) = match h.await {
            Ok(r) => r,
            Err(e) => (0, Some(Error::Internal(format!("wal delete task: {e}")))),
        };
        let Some(writer) = self.writer.as_mut() else { return };
        let before = writer.cleaned_below();
        writer.cleaned(below);
        let deleted = writer.cleaned_below().saturating_sub(before);
        let below = writer.cleaned_below();
        while self.retained.front().is_some_and(|r| r.0 < below) {
            self.retained.pop_front();
        }
        if deleted > 0 {
            self.shared.metrics.add(Metric::WalDeletedObjects, deleted as i64);
            tracing::debug!("fast tier cleanup: deleted={deleted} low_water={}", writer.low_water());
        }
        self.update_size_metrics();
        if let Some(e) = err {
            self.error("deleting covered fast-tier objects", &e);
            // the next round resumes at the first object not deleted
            self.next_cleanup = self.next_cleanup.min(Instant::now() + self.shared.cfg.cleanup_interval / 2);
        }
    }

    /// A partition is gone when Kafka stopped it here and its directory is in none of the log dirs.
    fn is_gone(&self, tp: &Tp) -> bool {
        if !self.stopped.contains(tp) {
            return false;
        }
        let Some(topic) = self.topics.get(tp) else { return false };
        let dirs = self.shared.membership.lock().unwrap_or_else(|p| p.into_inner()).log_dirs.clone();
        !dirs.iter().any(|d| d.join(format!("{topic}-{}", tp.partition)).is_dir())
    }

    /// Per-second gauges over the last [`RATE_WINDOW`], from the counters.
    fn update_rates(&mut self) {
        let m = self.shared.metrics.clone();
        let now = Instant::now();
        let cur = (now, m.get(Metric::WalObjects), m.get(Metric::WalBytes), m.get(Metric::WalPutRequests));
        if self.rate_samples.back().is_none_or(|s| now.duration_since(s.0) >= Duration::from_millis(500)) {
            self.rate_samples.push_back(cur);
        }
        while self.rate_samples.len() > 2 && now.duration_since(self.rate_samples[1].0) >= RATE_WINDOW {
            self.rate_samples.pop_front();
        }
        let Some(&(t0, o0, b0, p0)) = self.rate_samples.front() else { return };
        let secs = now.duration_since(t0).as_secs_f64();
        if secs >= 1.0 {
            let per_sec = |d: i64| (d as f64 / secs).round() as i64;
            m.set(Metric::WalObjectsRate, per_sec(cur.1 - o0));
            m.set(Metric::WalBytesRate, per_sec(cur.2 - b0));
            m.set(Metric::WalPutRate, per_sec(cur.3 - p0));
        }
    }

    /// [`Uploader::publish_status`], at most once per `every` (it walks every partition).
    fn publish_status_every(&mut self, state: &str, every: Duration) {
        let now = Instant::now();
        if self.status_at.is_none_or(|t| now.duration_since(t) >= every) {
            self.publish_status(state);
        }
    }

    /// The directories of the partitions being tailed (for the log watch).
    fn tailed_dirs(&self) -> HashSet<PathBuf> {
        self.parts.values().filter_map(|p| p.tailer.as_ref().map(|t| t.dir().to_path_buf())).collect()
    }

    fn publish_status(&mut self, state: &str) {
        self.status_at = Some(Instant::now());
        self.update_rates();
        let oldest = self.in_flight.as_ref().and_then(|(_, r)| r.iter().map(|r| r.seen).min());
        let oldest = oldest.or_else(|| self.pending.iter().map(|r| r.seen).min());
        self.metrics().set(Metric::WalBehindMs, oldest.map_or(0, |t| t.elapsed().as_millis() as i64));
        let w = self.writer.as_ref();
        let problems: Vec<String> = self
            .parts
            .iter()
            .filter_map(|(tp, p)| p.problem.as_ref().map(|m| format!("{} {tp}: {m}", p.topic)))
            .take(10)
            .collect();
        let v = json!({
            "state": state,
            "broker_id": self.shared.broker_id,
            "incarnation": w.map(|w| w.incarnation()),
            "next_seq": w.map(|w| w.next_seq()),
            "low_water": w.map(|w| w.low_water()),
            "partitions": self.parts.len(),
            "pending_bytes": self.pending_bytes,
            "in_flight": self.in_flight.is_some(),
            "retained_objects": self.retained.len(),
            "retained_bytes": self.retained.iter().map(|r| r.1).sum::<u64>(),
            "uploaded": self.uploaded.iter().map(|(tp, u)| {
                (format!("{}-{}", crate::wal::format::topic_id_string(&tp.topic_id), tp.partition), u.last_offset)
            }).collect::<BTreeMap<String, i64>>(),
            "problems": problems,
            "last_error": self.last_error,
        });
        *self.shared.status.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }
}

/// Records what an object holds per partition.
fn note_uploaded(uploaded: &mut HashMap<Tp, Uploaded>, header: &WalHeader) {
    for e in &header.entries {
        uploaded.entry(Tp { topic_id: e.topic_id, partition: e.partition }).or_default().add(
            e.leader_epoch,
            e.first_offset,
            e.last_offset,
        );
    }
}

/// Joins ranges of the same partition and epoch that continue each other (several polls of one interval).
fn merge_adjacent(ranges: Vec<Range>) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if let Some(prev) = out.last_mut() {
            if prev.tp == r.tp && prev.epoch == r.epoch && prev.last + 1 == r.first {
                let mut joined = Vec::with_capacity(prev.data.len() + r.data.len());
                joined.extend_from_slice(&prev.data);
                joined.extend_from_slice(&r.data);
                prev.data = Bytes::from(joined);
                prev.last = r.last;
                prev.timestamps.extend(r.timestamps);
                prev.seen = prev.seen.min(r.seen);
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// The max timestamps of the (verified) batches in `data`.
fn batch_timestamps(data: &[u8]) -> Vec<i64> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER_SIZE <= data.len() {
        let Some(Ok(h)) = BatchHeader::parse(&data[pos..], pos as u64) else { break };
        out.push(h.max_timestamp());
        pos += h.batch_size();
    }
    out
}

/// Finds `<log dir>/<topic>-<partition>`.
fn find_dir(log_dirs: &[PathBuf], topic: &str, partition: i32) -> Option<PathBuf> {
    log_dirs.iter().map(|d| d.join(format!("{topic}-{partition}"))).find(|p| p.is_dir())
}

/// Where a new tailer of `dir` starts, and the epochs of what is already stored below that.
fn start_point(dir: &Path, stored: Option<&Uploaded>) -> Result<(i64, Vec<(i32, i64)>)> {
    let bases = list_segments(dir).map_err(|e| Error::io(format!("listing dir={}", dir.display()), e))?;
    let Some(&active) = bases.iter().max() else {
        return Err(Error::Transient {
            op: "wal_tail",
            key: dir.display().to_string(),
            detail: "no segment files yet".into(),
        });
    };
    match stored {
        Some(u) if u.last_offset + 1 >= active => Ok((u.last_offset + 1, u.runs.clone())),
        _ => Ok((active, Vec::new())),
    }
}

/// One poll round over every part, round-robin from `rr`, within `budget` bytes. Returns what was found
/// and where the next round should start.
fn poll_all(
    parts: &mut BTreeMap<Tp, Part>,
    log_dirs: &[PathBuf],
    stored: &HashMap<Tp, Uploaded>,
    rr: Option<Tp>,
    mut budget: usize,
) -> (Vec<Polled>, Option<Tp>) {
    let mut out = Vec::new();
    let order: Vec<Tp> = match &rr {
        Some(start) => {
            parts.range(start.clone()..).chain(parts.range(..start.clone())).map(|(k, _)| k.clone()).collect()
        }
        None => parts.keys().cloned().collect(),
    };
    let mut next_rr = None;
    let now = Instant::now();
    for tp in order {
        if budget == 0 {
            next_rr = Some(tp);
            break;
        }
        let part = parts.get_mut(&tp).expect("listed");
        if part.tailer.is_none() {
            if now < part.retry_at {
                continue;
            }
            let made = find_dir(log_dirs, &part.topic, tp.partition)
                .ok_or_else(|| format!("no directory {}-{} in log dirs {:?}", part.topic, tp.partition, log_dirs))
                .and_then(|dir| {
                    let (start, runs) = start_point(&dir, stored.get(&tp)).map_err(|e| e.to_string())?;
                    tracing::info!("fast tier: tailing {} {tp} dir={} from offset={start}", part.topic, dir.display());
                    Ok(PartitionTailer::new(dir, start).with_history(&runs))
                });
            match made {
                Ok(t) => {
                    part.tailer = Some(t);
                    part.problem = None;
                }
                Err(msg) => {
                    part.retry_at = now + Duration::from_secs(1);
                    if part.problem.as_deref() != Some(msg.as_str()) {
                        out.push(Polled::Problem(tp.clone(), msg.clone()));
                    }
                    part.problem = Some(msg);
                    continue;
                }
            }
        }
        let tailer = part.tailer.as_mut().expect("made above");
        let window = (part.last_poll_ms, now_ms());
        part.last_poll_ms = Some(window.1);
        loop {
            if budget == 0 {
                break;
            }
            match tailer.poll(budget.min(POLL_BYTES)) {
                Ok(TailEvent::Idle) => {
                    part.problem = None;
                    break;
                }
                Ok(TailEvent::Data(chunk)) => {
                    part.problem = None;
                    budget = budget.saturating_sub(chunk.bytes.len());
                    out.push(Polled::Chunk(tp.clone(), chunk, window));
                }
                Ok(TailEvent::Truncated { at_offset }) => out.push(Polled::Truncated(tp.clone(), at_offset)),
                Ok(TailEvent::Missing { from_offset, to_offset }) => {
                    out.push(Polled::Missing(tp.clone(), from_offset, to_offset))
                }
                Ok(TailEvent::PartitionGone) => {
                    out.push(Polled::Gone(tp.clone()));
                    break;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if part.problem.as_deref() != Some(msg.as_str()) {
                        out.push(Polled::Problem(tp.clone(), msg.clone()));
                    }
                    part.problem = Some(msg);
                    break;
                }
            }
        }
    }
    (out, next_rr)
}
