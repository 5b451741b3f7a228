//! Following one leader broker's fast-tier stream for the followers in this broker.
//!
//! A [`LeaderStream`] reads the leader's WAL objects in seq order as they appear (no listing; see
//! `docs/formats.md`, "Reader"): at once when the leader's notification channel announces one
//! ([`super::notify`]), else one GET per poll), verifies every range and every record batch (CRC-32C,
//! leader epoch, offsets) before it takes the cache's lock, and keeps the recent data per partition in
//! memory, bounded by bytes, as contiguous runs of [`Piece`]s. The fetch logic asks it for whole batches at a follower's fetch offset
//! ([`LeaderStream::lookup`]) and waits on [`LeaderStream::subscribe`] for new objects.
//!
//! Only the current leader's own stream is followed, and [`LeaderStream::lookup`] serves only batches of
//! the leader epoch the follower names: a batch stamped with epoch `e` can only have been appended by the
//! leader of epoch `e`, so data of a zombie or of an earlier term of the same broker is never served.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::notify::NotifyClient;
use crate::error::{Error, Result};
use crate::fast::StreamTip;
use crate::metrics::{Metric, Metrics};
use crate::store::ObjectStore;
use crate::unix_ms;
use crate::wal::catalog::{split_range, BatchSource};
use crate::wal::format::{TopicId, WalObject};
use crate::wal::{BehindPolicy, ReaderOptions, StartAt, WalReader};

/// A topic-partition by topic id.
pub type Tp = (TopicId, i32);

/// Consecutive batches of one partition and one leader epoch from one object.
#[derive(Debug, Clone)]
pub struct Piece {
    pub epoch: i32,
    /// Offset of the first record.
    pub first: i64,
    /// Offset of the last record.
    pub last: i64,
    /// The batches, byte-exact as in the leader's log.
    pub bytes: Bytes,
    /// `(base_offset, position in bytes)` of every batch.
    pub batches: Vec<(i64, usize)>,
    /// When the leader's uploader built the object (`created_unix_ms`).
    pub cut_ms: i64,
    pub seq: u64,
    /// When the object entered the cache.
    pub ingested: Instant,
}

impl Piece {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Drops the batches at or above `offset` (which must be a batch boundary); `false` if it is not one.
    fn cut_before(&mut self, offset: i64) -> bool {
        let Some(i) = self.batches.iter().position(|&(b, _)| b == offset) else { return false };
        let end = self.batches[i].1;
        self.batches.truncate(i);
        self.bytes = self.bytes.slice(..end);
        self.last = offset - 1;
        true
    }
}

/// What the fast tier has for a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Whole batches starting at the fetch offset: the records, the offset after them, the creation
    /// time of the object they came from and when it entered the cache.
    Serve { records: Bytes, next: i64, cut_ms: i64, ingested: Instant },
    /// The fast tier holds the partition contiguously up to the fetch offset: newer data will arrive.
    Wait,
    /// The fast tier cannot serve the fetch offset; the reason is one word for metrics and logs.
    Missing(&'static str),
}

/// How the stream follower is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Starting,
    Ok,
    /// Reading the stream failed; followers use the leader until it works again.
    Down(String),
}

#[derive(Debug, Default)]
struct State {
    parts: HashMap<Tp, VecDeque<Piece>>,
    /// Retained objects in seq order: (seq, bytes, partitions) for eviction.
    objects: VecDeque<(u64, u64, Vec<Tp>)>,
    bytes: u64,
    health: Option<Health>,
    last_object: Option<Instant>,
    objects_read: u64,
    next_seq: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

/// Settings of a [`LeaderStream`].
#[derive(Debug, Clone)]
pub struct FollowSettings {
    pub prefix: String,
    /// How often the next object is looked for while none is there.
    pub poll: Duration,
    /// Memory for retained data (the oldest objects' data is dropped first).
    pub cache_bytes: u64,
    /// Objects before the stream's tail read at start (so a follower a little behind finds its data).
    pub lookback_objects: u64,
    /// The leader's notification listener (`host:port`), if `replication.fast.notify.port` is set.
    pub notify: Option<String>,
    /// This broker's id (said in the notification hello).
    pub self_id: i32,
}

/// While the notification channel is up, the stream is still looked at this often (a safety net: a
/// message can only be lost with its connection, and the channel repeats the tip on reconnect).
pub const NOTIFIED_POLL: Duration = Duration::from_secs(5);

/// The follower of one leader broker's stream. Dropping it stops the reading task.
#[derive(Debug)]
pub struct LeaderStream {
    pub broker_id: i32,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    _notify: Option<NotifyClient>,
}

impl LeaderStream {
    /// Starts following `broker_id`'s stream on the current tokio runtime.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        broker_id: i32,
        settings: FollowSettings,
        metrics: Arc<Metrics>,
    ) -> LeaderStream {
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), changed });
        let (heard_tx, heard) = watch::channel(None);
        let notify = settings
            .notify
            .clone()
            .map(|addr| NotifyClient::start(addr, broker_id, settings.self_id, heard_tx, metrics.clone()));
        let task = tokio::spawn(run(store, broker_id, settings, metrics, shared.clone(), heard));
        LeaderStream { broker_id, shared, task, _notify: notify }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes whenever an object was added or the health changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    pub fn health(&self) -> Health {
        self.state().health.clone().unwrap_or(Health::Starting)
    }

    /// Time since the last object was read (None before the first).
    pub fn since_last_object(&self) -> Option<Duration> {
        self.state().last_object.map(|t| t.elapsed())
    }

    /// Whole batches of `tp` with leader epoch `epoch` from offset `from`, at most `max_bytes` of them (at
    /// least one batch), all from one object.
    pub fn lookup(&self, tp: &Tp, epoch: i32, from: i64, max_bytes: usize) -> Lookup {
        let st = self.state();
        lookup_in(st.parts.get(tp), epoch, from, max_bytes)
    }

    /// The offsets the stream holds for `tp` (first, last) and the number of pieces they are in.
    pub fn held(&self, tp: &Tp) -> Option<(i64, i64, usize)> {
        let st = self.state();
        let run = st.parts.get(tp).filter(|r| !r.is_empty())?;
        Some((run[0].first, run[run.len() - 1].last, run.len()))
    }

    /// For status output: `(objects read, bytes held, partitions held, next seq)`.
    pub fn stats(&self) -> (u64, u64, usize, u64) {
        let st = self.state();
        (st.objects_read, st.bytes, st.parts.len(), st.next_seq)
    }
}

impl Drop for LeaderStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lookup_in(pieces: Option<&VecDeque<Piece>>, epoch: i32, from: i64, max_bytes: usize) -> Lookup {
    let Some(pieces) = pieces.filter(|p| !p.is_empty()) else { return Lookup::Missing("absent") };
    let (lo, hi) = (pieces[0].first, pieces[pieces.len() - 1].last);
    if from < lo {
        return Lookup::Missing("behind");
    }
    if from > hi {
        return Lookup::Wait;
    }
    let i = pieces.partition_point(|p| p.last < from);
    let p = &pieces[i];
    if p.epoch != epoch {
        return Lookup::Missing("epoch");
    }
    let Ok(k) = p.batches.binary_search_by_key(&from, |&(b, _)| b) else { return Lookup::Missing("boundary") };
    let start = p.batches[k].1;
    let end_of = |j: usize| if j < p.batches.len() { p.batches[j].1 } else { p.bytes.len() };
    // batches k..j are served: always batch k, then every next one while the total fits
    let mut j = k + 1;
    while j < p.batches.len() && end_of(j + 1) - start <= max_bytes {
        j += 1;
    }
    let (end, next) = (end_of(j), if j < p.batches.len() { p.batches[j].0 } else { p.last + 1 });
    Lookup::Serve { records: p.bytes.slice(start..end), next, cut_ms: p.cut_ms, ingested: p.ingested }
}

/// Adds `piece` to a partition's run: it continues the run, rewrites its tail (the leader's stream
/// re-uploads from an earlier offset after a truncation), or starts a new run after a gap.
fn append_piece(run: &mut VecDeque<Piece>, piece: Piece) {
    if let Some(back) = run.back() {
        if piece.first > back.last + 1 {
            run.clear();
        } else if piece.first <= back.last {
            while run.back().is_some_and(|b| b.first >= piece.first) {
                run.pop_back();
            }
            if let Some(b) = run.back_mut() {
                if b.last >= piece.first && !b.cut_before(piece.first) {
                    run.clear();
                }
            }
        }
    }
    run.push_back(piece);
}

/// An object's pieces, verified and ready for the cache.
struct Verified {
    seq: u64,
    tps: Vec<Tp>,
    pieces: Vec<(Tp, Piece)>,
}

/// Splits an object into its partitions' pieces, verifying every range and batch (no lock held).
fn verify(obj: &WalObject) -> Result<Verified> {
    let h = obj.header();
    let source = BatchSource {
        broker_id: h.stamp.broker_id,
        seq: h.stamp.seq,
        key: obj.key().into(),
        incarnation: h.stamp.incarnation,
    };
    let mut pieces = Vec::new();
    let tps: Vec<Tp> = h.partitions().collect();
    for (t, p) in &tps {
        let Some(data) = obj.range(t, *p)? else { continue };
        for (entry, bytes) in data.slices() {
            let batches = split_range(entry, bytes.clone(), &source)?;
            let index = batches
                .iter()
                .scan(0usize, |pos, b| {
                    let at = *pos;
                    *pos += b.bytes.len();
                    Some((b.info.base_offset, at))
                })
                .collect();
            pieces.push((
                (*t, *p),
                Piece {
                    epoch: entry.leader_epoch,
                    first: entry.first_offset,
                    last: entry.last_offset,
                    bytes,
                    batches: index,
                    cut_ms: h.stamp.created_unix_ms,
                    seq: h.stamp.seq,
                    ingested: Instant::now(), // set again when it enters the cache
                },
            ));
        }
    }
    Ok(Verified { seq: h.stamp.seq, tps, pieces })
}

impl State {
    /// Adds a verified object to the cache, evicting the oldest objects beyond `cache_bytes`.
    fn ingest(&mut self, v: Verified, cache_bytes: u64) {
        let Verified { seq, tps, pieces } = v;
        let size: u64 = pieces.iter().map(|(_, p)| p.size()).sum();
        let now = Instant::now();
        for (tp, mut piece) in pieces {
            piece.ingested = now;
            append_piece(self.parts.entry(tp).or_default(), piece);
        }
        self.objects.push_back((seq, size, tps));
        self.bytes += size;
        while self.bytes > cache_bytes && self.objects.len() > 1 {
            let Some((seq, size, tps)) = self.objects.pop_front() else { break };
            self.bytes -= size;
            for tp in tps {
                if let Some(run) = self.parts.get_mut(&tp) {
                    while run.front().is_some_and(|p| p.seq <= seq) {
                        run.pop_front();
                    }
                    if run.is_empty() {
                        self.parts.remove(&tp);
                    }
                }
            }
        }
        self.objects_read += 1;
        self.last_object = Some(Instant::now());
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

async fn run(
    store: Arc<dyn ObjectStore>,
    broker_id: i32,
    s: FollowSettings,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    mut heard: watch::Receiver<Option<StreamTip>>,
) {
    let set_health = |h: Health| {
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.health.as_ref() != Some(&h) {
            match &h {
                Health::Down(why) => {
                    warn!(broker_id, reason = %why, "fast replication: leader stream unavailable, followers fetch from the leader")
                }
                Health::Ok => info!(broker_id, "fast replication: following the leader's fast-tier stream"),
                Health::Starting => {}
            }
            st.health = Some(h);
            drop(st);
            shared.changed.send_modify(|v| *v += 1);
        }
    };
    let opts = ReaderOptions { behind: BehindPolicy::SkipToOldest, ..ReaderOptions::default() };
    let mut reader: Option<WalReader> = None;
    let mut backoff = s.poll.max(Duration::from_millis(100));
    // when the newest tip was heard (unix ms), and the seq it announced
    let mut announced: Option<(u64, i64)> = None;
    // when the stream was last looked at (a GET of the next object)
    let mut last_look: Option<Instant> = None;
    loop {
        let r = match reader.as_mut() {
            Some(r) => r,
            None => {
                let opened = async {
                    let tail =
                        WalReader::open(store.clone(), &s.prefix, broker_id, StartAt::Tail, opts.clone()).await?;
                    let start = tail.position().saturating_sub(s.lookback_objects);
                    WalReader::open(store.clone(), &s.prefix, broker_id, StartAt::Seq(start), opts.clone()).await
                }
                .await;
                match opened {
                    Ok(r) => reader.insert(r),
                    Err(e) => {
                        metrics.inc(Metric::ReplStreamErrors);
                        set_health(Health::Down(e.to_string()));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        // with the channel up, a tip that does not announce the next object means it is not there yet:
        // no GET for it (it would find nothing) until the leader's word or the safety poll
        let known_absent = heard.borrow().is_some_and(|t| t.next_seq <= r.position())
            && last_look.is_some_and(|t| t.elapsed() < NOTIFIED_POLL);
        let looked = if known_absent {
            Ok(None)
        } else {
            last_look = Some(Instant::now());
            r.next().await
        };
        let get_start = last_look.unwrap_or_else(Instant::now);
        let get_start_ms = unix_ms() - get_start.elapsed().as_millis() as i64;
        match looked {
            Ok(Some(obj)) => {
                let seq = obj.seq();
                // the object was known from the tip heard before this GET started, or from the GET itself
                let learnt_ms =
                    announced.filter(|&(next, at)| seq < next && at <= get_start_ms).map_or(get_start_ms, |a| a.1);
                metrics.add(Metric::RoundtripLearnMs, (learnt_ms - obj.header().stamp.created_unix_ms).max(0));
                metrics.inc(Metric::RoundtripLearnCount);
                let verified = verify(&obj);
                metrics.add(Metric::RoundtripGetMs, get_start.elapsed().as_millis() as i64);
                metrics.inc(Metric::RoundtripGetCount);
                let ingested = verified.map(|v| {
                    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.next_seq = seq + 1;
                    st.ingest(v, s.cache_bytes);
                });
                match ingested {
                    Ok(()) => {
                        metrics.inc(Metric::ReplStreamObjects);
                        metrics.add(Metric::ReplStreamBytes, obj.bytes().len() as i64);
                        backoff = s.poll.max(Duration::from_millis(100));
                        set_health(Health::Ok);
                        shared.changed.send_modify(|v| *v += 1);
                    }
                    Err(e) => {
                        // A corrupt object is skipped (the reader moved past it): the partitions it held
                        // have a gap in the cache and their followers use the leader across it.
                        shared.state.lock().unwrap_or_else(|e| e.into_inner()).next_seq = seq + 1;
                        metrics.inc(Metric::ReplStreamErrors);
                        metrics.inc(Metric::CorruptObjects);
                        warn!(broker_id, error = %e, "fast replication: object skipped");
                    }
                }
            }
            Ok(None) => {
                if shared.state.lock().unwrap_or_else(|e| e.into_inner()).health.is_none() {
                    set_health(Health::Ok);
                }
                // wait for the leader's word that the object is there, or poll
                let want = r.position();
                let current = *heard.borrow_and_update();
                let wait = if current.is_some() { NOTIFIED_POLL } else { s.poll };
                // a tip that announced `want` although it is not there yet (stale, or not from the leader)
                // is not trusted twice: only a new message, or the poll, starts the next GET
                let stale = current.is_some_and(|t| t.next_seq > want);
                let heard_ref = &mut heard;
                let told = async move {
                    if stale {
                        heard_ref.changed().await.map(|_| *heard_ref.borrow_and_update())
                    } else {
                        heard_ref.wait_for(|t| t.is_some_and(|t| t.next_seq > want)).await.map(|t| *t)
                    }
                };
                match tokio::time::timeout(wait, told).await {
                    Ok(Ok(t)) => announced = t.map(|t| (t.next_seq, unix_ms())),
                    Ok(Err(_)) => tokio::time::sleep(s.poll).await, // no notification channel
                    Err(_) => {}                                    // poll
                }
            }
            Err(e) => {
                metrics.inc(Metric::ReplStreamErrors);
                if matches!(e, Error::Corrupt { .. }) {
                    metrics.inc(Metric::CorruptObjects);
                }
                set_health(Health::Down(e.to_string()));
                if matches!(e, Error::Corrupt { .. } | Error::NotFound { .. }) {
                    reader = None; // start again from the tail
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::testing::batch;

    fn piece(first: i64, last: i64, epoch: i32, seq: u64) -> Piece {
        let mut bytes = Vec::new();
        let mut batches = Vec::new();
        for o in first..=last {
            batches.push((o, bytes.len()));
            bytes.extend(batch(o, epoch, 1, &[o as u8; 20]));
        }
        Piece {
            epoch,
            first,
            last,
            bytes: bytes.into(),
            batches,
            cut_ms: seq as i64 * 100,
            seq,
            ingested: Instant::now(),
        }
    }

    fn serve(l: Lookup) -> (usize, i64, i64) {
        match l {
            Lookup::Serve { records, next, cut_ms, .. } => (records.len(), next, cut_ms),
            other => panic!("expected Serve, got {other:?}"),
        }
    }

    #[test]
    fn lookup_serves_whole_batches_of_the_epoch_from_the_offset() {
        let mut run = VecDeque::new();
        append_piece(&mut run, piece(10, 14, 3, 1));
        append_piece(&mut run, piece(15, 19, 4, 2));
        let one = piece(10, 10, 3, 0).bytes.len();
        assert_eq!(serve(lookup_in(Some(&run), 3, 10, usize::MAX)), (5 * one, 15, 100));
        assert_eq!(serve(lookup_in(Some(&run), 3, 12, 2 * one)), (2 * one, 14, 100));
        assert_eq!(serve(lookup_in(Some(&run), 3, 12, 1)), (one, 13, 100), "at least one batch");
        assert_eq!(serve(lookup_in(Some(&run), 4, 15, usize::MAX)), (5 * one, 20, 200));
        assert_eq!(lookup_in(Some(&run), 4, 12, usize::MAX), Lookup::Missing("epoch"));
        assert_eq!(lookup_in(Some(&run), 3, 9, usize::MAX), Lookup::Missing("behind"));
        assert_eq!(lookup_in(Some(&run), 4, 20, usize::MAX), Lookup::Wait);
        assert_eq!(lookup_in(Some(&run), 4, 25, usize::MAX), Lookup::Wait);
        assert_eq!(lookup_in(None, 4, 25, usize::MAX), Lookup::Missing("absent"));
    }

    #[tokio::test]
    async fn with_the_channel_up_the_follower_gets_each_announced_object_once_and_nothing_else() {
        use crate::catchup::notify::NotifyServer;
        use crate::store::faulty::{FaultyStore, Op};
        use crate::store::memory::MemoryStore;
        use crate::wal::format::WalObjectBuilder;
        use crate::wal::{WalWriter, WalWriterOptions};

        let store = Arc::new(FaultyStore::wrap(MemoryStore::new()));
        let dyn_store: Arc<dyn ObjectStore> = store.clone();
        let metrics = Arc::new(Metrics::default());
        let mut writer = WalWriter::open(dyn_store.clone(), "p", 1, WalWriterOptions::default()).await.unwrap();
        let (tip_tx, tip_rx) = watch::channel(None);
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap().to_string();
        drop(probe);
        let _server = NotifyServer::start(&addr, 1, tip_rx, metrics.clone()).await.unwrap();
        let settings = FollowSettings {
            prefix: "p".into(),
            poll: Duration::from_millis(5),
            cache_bytes: 1 << 20,
            lookback_objects: 0,
            notify: Some(addr),
            self_id: 2,
        };
        let stream = LeaderStream::start(dyn_store.clone(), 1, settings, metrics.clone());
        let mut changed = stream.subscribe();
        let deadline = Duration::from_secs(10);
        tokio::time::timeout(deadline, async {
            while stream.health() != Health::Ok || metrics.get(Metric::ReplNotifyConnections) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the follower starts and connects");
        let tp = ([7u8; 16], 0);
        let gets_before = store.calls(Op::Get);
        let objects = 20i64;
        for o in 0..objects {
            let mut b = WalObjectBuilder::new();
            b.add(tp.0, tp.1, 1, o, o, batch(o, 1, 1, &[o as u8; 20]).into()).unwrap();
            writer.append(&b).await.unwrap();
            tip_tx.send_replace(Some(StreamTip { incarnation: writer.incarnation(), next_seq: writer.next_seq() }));
            tokio::time::timeout(deadline, async {
                while stream.held(&tp).is_none_or(|h| h.1 < o) {
                    let _ = changed.changed().await;
                }
            })
            .await
            .expect("the announced object is read");
            // between uploads the follower has heard the newest tip: it asks for nothing
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let gets = store.calls(Op::Get) - gets_before;
        assert!(
            gets <= objects as u64 + 2,
            "one GET per announced object, no GET for objects not announced: {gets} GETs for {objects} objects"
        );
    }

    #[test]
    fn runs_continue_rewind_and_restart_after_gaps() {
        let mut run = VecDeque::new();
        append_piece(&mut run, piece(0, 9, 1, 1));
        append_piece(&mut run, piece(10, 19, 1, 2));
        // the leader re-uploads from 15 with a new epoch (its log was truncated there)
        append_piece(&mut run, piece(15, 22, 2, 3));
        assert_eq!(
            run.iter().map(|p| (p.first, p.last, p.epoch)).collect::<Vec<_>>(),
            vec![(0, 9, 1), (10, 14, 1), (15, 22, 2)]
        );
        assert_eq!(serve(lookup_in(Some(&run), 1, 10, usize::MAX)).1, 15);
        // a gap starts a new run
        append_piece(&mut run, piece(30, 31, 2, 4));
        assert_eq!(run.len(), 1);
        assert_eq!(lookup_in(Some(&run), 2, 20, usize::MAX), Lookup::Missing("behind"));
    }
}
