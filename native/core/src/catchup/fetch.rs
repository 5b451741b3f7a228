//! The proxy's answer to one follower's replica fetches from one leader (one [`Session`] per connection of
//! a replica fetcher thread). The rules are in `docs/replication.md`; in short:
//!
//! * Every partition of a fetch is in one of two modes. **Fast**: its record bytes come from the leader's
//!   fast-tier stream ([`LeaderStream`]); the leader only hears the follower's fetch offset in an *offset
//!   report* (a fetch of that partition with `partition_max_bytes = 0`) and answers with the high
//!   watermark, the log start offset, errors and diverging epochs, which are passed on unchanged. **Leader**:
//!   the partition is fetched from the leader like in stock Kafka (a long-polling *data fetch* carrying the
//!   follower's own parameters, on a connection of its own).
//! * A partition is Fast while the stream is healthy and holds it contiguously up to the fetch offset in
//!   the follower's current leader epoch; it falls back to Leader when the stream cannot be read, when the
//!   leader has had data at the fetch offset for longer than `max.lag.ms` that the fast tier still lacks,
//!   or when the fast tier's bytes differ from a batch the leader returned; after `retry.ms` it is tried
//!   again.
//! * Offsets are only ever reported as the follower sent them: the leader's view of the follower (and so
//!   the high watermark and acks=all) moves only with what the follower has appended.
//! * The follower is never given a fetch session (`session_id` 0), so every fetch it sends lists all its
//!   partitions; the proxy's own requests to the leader are sessionless too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, NodeEndpoint, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, RequestHeader};
use tokio::sync::oneshot;
use tracing::{info, warn};
use uuid::Uuid;

use super::follow::{Health, LeaderStream, Lookup, Tp};
use super::upstream::Upstream;
use super::wire::{decode_response, encode_request, encode_response, FETCH};
use crate::config::ReplicationConfig;
use crate::error::{Error, Result};
use crate::metrics::{Metric, Metrics};
use crate::unix_ms;
use crate::wal::format::topic_id_string;

/// Kafka error code NONE.
const NONE: i16 = 0;
/// How long the proxy waits for an offset report's answer (the leader answers at once: max_wait 0).
const REPORT_TIMEOUT: Duration = Duration::from_secs(15);
/// Added to a data fetch's own max wait before the proxy gives up on the leader.
const DATA_GRACE: Duration = Duration::from_secs(15);
/// Reports that do not refresh the leader's "caught up" time of the follower are sent for this long after
/// the last one that did; then they wait for data that does (well within `replica.lag.time.max.ms`).
const CAUGHT_UP_REFRESH: Duration = Duration::from_secs(3);
/// Answered reports that release offsets held back by the report rule are at most this frequent.
const UNSTICK_EVERY: Duration = Duration::from_millis(50);
/// A silent report's connection stays open this long (for the leader to read the request), then is reset.
const SILENT_HOLD: Duration = Duration::from_millis(100);
/// A silent report waits this long in the leader's fetch purgatory (far longer than [`SILENT_HOLD`], so the
/// leader never gets to answer it on a live connection).
const SILENT_WAIT_MS: i32 = 2_000;
/// A connection opened ahead for a silent report is used only this young (Kafka closes idle connections
/// after `connections.max.idle.ms`, 10 minutes by default).
const SPARE_MAX_AGE: Duration = Duration::from_secs(60);

/// A new connection to the leader's real inter-broker endpoint, with `no_delay`.
async fn dial(route: &Route, timeout: Duration) -> Result<tokio::net::TcpStream> {
    let addr = route.resolve().await?;
    let sock = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Network { op: "connect", peer: route.peer.clone(), detail: "timeout".into() })?
        .map_err(|e| super::wire::net("connect", &route.peer, e))?;
    let _ = sock.set_nodelay(true);
    Ok(sock)
}

/// The offset after the last of the whole batches in `records` (None if it holds no whole batch).
fn batches_end(records: &Bytes) -> Option<i64> {
    let mut at = 0usize;
    let mut end = None;
    while let Some(Ok(h)) = crate::format::batch::BatchHeader::parse(&records[at..], at as u64) {
        if at + h.batch_size() > records.len() {
            break;
        }
        end = Some(h.last_offset() + 1);
        at += h.batch_size();
    }
    end
}

/// What every session of the proxy shares.
#[derive(Debug)]
pub struct Ctx {
    pub cfg: ReplicationConfig,
    pub metrics: Arc<Metrics>,
    pub connect_timeout: Duration,
    /// Per `(leader, partition)`: where its bytes come from and what it cost, for the status output.
    pub status: Mutex<HashMap<(i32, Tp), PartStatus>>,
    /// Partitions followed here that the fast tier holds (remote storage enabled, selected by the topic
    /// rules), as Kafka reports them to the RLMM.
    pub followed: Mutex<HashSet<Tp>>,
}

/// One followed partition as the status output shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PartStatus {
    pub source: &'static str,
    pub fast_bytes: u64,
    pub leader_bytes: u64,
    pub fallbacks: u64,
    pub last_fallback: Option<&'static str>,
}

/// The leader a session talks to.
#[derive(Debug)]
pub struct Route {
    pub broker_id: i32,
    /// `host:port` of its real inter-broker endpoint.
    pub target: String,
    /// `broker=<id> addr=<host:port>`, for errors and logs.
    pub peer: String,
}

impl Route {
    pub async fn connect(&self, ctx: &Ctx) -> Result<Upstream> {
        Upstream::connect(self.resolve().await?, &self.peer, ctx.connect_timeout).await
    }

    /// The leader's address, resolved by the operating system (not the JVM's name table).
    async fn resolve(&self) -> Result<std::net::SocketAddr> {
        tokio::net::lookup_host(&self.target)
            .await
            .map_err(|e| super::wire::net("resolve", &self.peer, e))?
            .next()
            .ok_or_else(|| Error::Network { op: "resolve", peer: self.peer.clone(), detail: "no address".into() })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fast,
    Leader,
}

#[derive(Debug)]
struct Part {
    mode: Mode,
    /// The leader's latest answer for the partition, records stripped; high watermark, LSO and log
    /// start offset only ever grow.
    last: Option<PartitionData>,
    /// An error or diverging epoch from an offset report, to pass on with the next response.
    report_err: Option<PartitionData>,
    /// A data fetch's answer, to pass on with the next response.
    pending: Option<PartitionData>,
    /// The batch an offset report brought back (Kafka returns one for the first partition with data):
    /// `(fetch offset, records, offset after them)`, passed on if the fast tier cannot serve that offset.
    leader_batch: Option<(i64, Bytes, i64)>,
    /// The fetch offset last reported to the leader, and when (unix ms).
    reported: Option<i64>,
    reported_at: Option<i64>,
    /// When a report last refreshed the leader's "caught up" time of this partition (the report rule).
    last_good: Option<Instant>,
    /// The follower's leader epoch the leader last answered a report for without error or divergence:
    /// the follower's log is then the leader's up to that offset, and fast-tier batches of that epoch
    /// continue it.
    validated_epoch: Option<i32>,
    /// `(offset after the records served last, creation time of their object)`.
    served: Option<(i64, i64)>,
    /// Since when answered reports show the leader with data at the fetch offset that the fast tier lacks,
    /// and the offset after the data the leader was seen to hold. Cleared when the fast tier serves the
    /// partition, when it holds everything up to that offset (the leader's data reached it; the follower may
    /// have got it sooner, from the batch a report brought back), or when a report finds the leader with
    /// nothing more.
    leader_ahead: Option<(Instant, i64)>,
    cooldown_until: Option<Instant>,
}

impl Part {
    fn new() -> Part {
        Part {
            mode: Mode::Leader,
            last: None,
            report_err: None,
            pending: None,
            leader_batch: None,
            reported: None,
            reported_at: None,
            last_good: None,
            validated_epoch: None,
            served: None,
            leader_ahead: None,
            cooldown_until: None,
        }
    }

    /// Takes the leader's answer as the partition's latest state (monotonic offsets).
    fn absorb(&mut self, pd: &PartitionData) {
        let mut s = pd.clone();
        s.records = Some(Bytes::new());
        if let Some(prev) = &self.last {
            s.high_watermark = s.high_watermark.max(prev.high_watermark);
            s.last_stable_offset = s.last_stable_offset.max(prev.last_stable_offset);
            s.log_start_offset = s.log_start_offset.max(prev.log_start_offset);
        }
        s.error_code = NONE;
        s.diverging_epoch = Default::default();
        self.last = Some(s);
    }
}

/// One partition of the follower's fetch, in request order.
#[derive(Debug, Clone)]
struct Want {
    tp: Tp,
    topic: usize,
    fp: FetchPartition,
}

/// A data fetch on its way.
#[derive(Debug)]
struct Inflight {
    rx: oneshot::Receiver<Result<Bytes>>,
    /// The fetch offset sent per partition.
    offsets: HashMap<Tp, i64>,
    deadline: Instant,
}

/// The state of one follower connection.
#[derive(Debug)]
pub struct Session {
    ctx: Arc<Ctx>,
    route: Arc<Route>,
    stream: Arc<LeaderStream>,
    parts: HashMap<Tp, Part>,
    report_conn: Option<Arc<Upstream>>,
    data_conn: Option<Arc<Upstream>>,
    inflight: Option<Inflight>,
    /// When the leader last answered an offset report: (monotonic, unix ms).
    last_report: Option<(Instant, i64)>,
    /// A top-level error from the leader to pass on.
    top_error: i16,
    throttle_ms: i32,
    node_endpoints: Vec<NodeEndpoint>,
    rotate: usize,
    counted: (i64, i64),
    /// When the leader last answered an offset report.
    last_answered: Option<Instant>,
    /// When the last silent report was sent.
    silent: Option<Instant>,
    /// A connection to the leader opened ahead of the next silent report (no handshake on the acks=all
    /// path), and when it was opened.
    spare: Option<tokio::task::JoinHandle<Result<(tokio::net::TcpStream, Instant)>>>,
    /// Whether the response being built serves fast-tier records, and when the last such one was sent.
    served_fast: bool,
    answered_fast: Option<Instant>,
}

fn tp_of(topic_id: &Uuid, partition: i32) -> Tp {
    (*topic_id.as_bytes(), partition)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    No,
    /// A report the leader answers (high watermark, errors, diverging epochs).
    Answered,
    /// A report the leader never gets to answer: it only moves the follower's offset (acks=all, the ISR).
    Silent,
    /// Offsets held back by the report rule go to the leader in an answered report at this time, unless an
    /// object arrives before.
    At(Instant),
}

enum Wake {
    Data(std::result::Result<Result<Bytes>, oneshot::error::RecvError>),
    Other,
}

impl Session {
    pub fn new(ctx: Arc<Ctx>, route: Arc<Route>, stream: Arc<LeaderStream>) -> Session {
        Session {
            ctx,
            route,
            stream,
            parts: HashMap::new(),
            report_conn: None,
            data_conn: None,
            inflight: None,
            last_report: None,
            top_error: NONE,
            throttle_ms: 0,
            node_endpoints: Vec::new(),
            rotate: 0,
            counted: (0, 0),
            last_answered: None,
            silent: None,
            spare: None,
            served_fast: false,
            answered_fast: None,
        }
    }

    fn stream(&self) -> &LeaderStream {
        &self.stream
    }

    /// Answers one replica fetch (`version` ≥ 13) with a response frame for `header.correlation_id`.
    pub async fn handle(&mut self, header: &RequestHeader, req: FetchRequest, version: i16) -> Result<Bytes> {
        let started = Instant::now();
        if let Some(t) = self.answered_fast.take() {
            // the follower appended what it was given and is back: the append leg of the round trip
            self.ctx.metrics.add(Metric::RoundtripAppendMs, started.duration_since(t).as_millis() as i64);
            self.ctx.metrics.inc(Metric::RoundtripAppendCount);
        }
        let deadline = started + Duration::from_millis(req.max_wait_ms.clamp(0, 30_000) as u64);
        let wants: Vec<Want> = req
            .topics
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.partitions.iter().map(move |p| Want { tp: tp_of(&t.topic_id, p.partition), topic: i, fp: p.clone() })
            })
            .collect();
        self.parts.retain(|tp, _| wants.iter().any(|w| &w.tp == tp));
        let mut changed = self.stream().subscribe();
        changed.borrow_and_update();
        let mut reported = false;
        loop {
            self.classify(&wants);
            let mut report_at = None;
            if !reported {
                match self.report_due(&wants) {
                    Due::No => {}
                    Due::At(at) => report_at = Some(at),
                    Due::Answered => {
                        self.report(header, &req, version, &wants).await?;
                        reported = true;
                        self.classify(&wants);
                    }
                    Due::Silent => match self.silent.map(|t| t + self.ctx.cfg.report_interval) {
                        Some(at) if at > Instant::now() => report_at = Some(at),
                        _ => {
                            self.silent_report(header, &req, version, &wants).await;
                            if let Some(s) = self.silent.filter(|s| *s >= started) {
                                self.ctx
                                    .metrics
                                    .add(Metric::RoundtripReportMs, s.duration_since(started).as_millis() as i64);
                                self.ctx.metrics.inc(Metric::RoundtripReportCount);
                            }
                            reported = true;
                        }
                    },
                }
            }
            self.start_data_fetch(header, &req, version, &wants).await?;
            let now = Instant::now();
            if self.ready(&wants, now >= deadline) {
                break;
            }
            if self.inflight.is_none() && now >= deadline + DATA_GRACE {
                return Err(Error::Internal(format!(
                    "fast replication: peer={} fetch cannot be answered (partitions without a leader answer)",
                    self.route.peer
                )));
            }
            let wake_at = match &self.inflight {
                // the leader answers a data fetch by its own max wait; do not answer before it when
                // partitions still lack any state
                Some(i) if now >= deadline => i.deadline,
                _ if now >= deadline => now + Duration::from_millis(50),
                _ => report_at.map_or(deadline, |at| at.min(deadline)),
            };
            let wake = {
                let data = async {
                    match self.inflight.as_mut() {
                        Some(i) => Wake::Data((&mut i.rx).await),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    w = data => w,
                    _ = changed.changed() => Wake::Other,
                    _ = tokio::time::sleep_until(wake_at.into()) => Wake::Other,
                }
            };
            if let Wake::Data(r) = wake {
                self.finish_data_fetch(r, version)?;
            } else if self.inflight.as_ref().is_some_and(|i| Instant::now() > i.deadline) {
                return Err(Error::Network {
                    op: "fetch",
                    peer: self.route.peer.clone(),
                    detail: "no answer to a data fetch".into(),
                });
            }
        }
        self.ctx.metrics.inc(Metric::ReplFetches);
        let resp = self.respond(&req, &wants);
        if tracing::enabled!(tracing::Level::TRACE) {
            let parts: Vec<String> = wants
                .iter()
                .map(|w| {
                    let n: usize = resp.responses[w.topic]
                        .partitions
                        .iter()
                        .filter(|pd| pd.partition_index == w.tp.1)
                        .map(|pd| pd.records.as_ref().map_or(0, |r| r.len()))
                        .sum();
                    let mode =
                        if self.parts.get(&w.tp).is_some_and(|p| p.mode == Mode::Fast) { "fast" } else { "leader" };
                    format!("{}:{mode}@{}+{n}", w.tp.1, w.fp.fetch_offset)
                })
                .collect();
            tracing::trace!(
                leader = self.route.broker_id,
                took_ms = started.elapsed().as_millis() as u64,
                reported,
                "fast replication: answered {}",
                parts.join(" ")
            );
        }
        self.update_gauges();
        let frame = encode_response(header.correlation_id, version, &resp, &self.route.peer);
        if self.served_fast {
            self.answered_fast = Some(Instant::now());
        }
        frame
    }

    /// Decides every partition's mode (see the module docs).
    fn classify(&mut self, wants: &[Want]) {
        let health = self.stream().health();
        let stalled = self.stream().since_last_object().is_none_or(|d| d > self.ctx.cfg.max_lag);
        let now = Instant::now();
        let followed: Vec<bool> = {
            let f = self.ctx.followed.lock().unwrap_or_else(|e| e.into_inner());
            wants.iter().map(|w| f.contains(&w.tp)).collect()
        };
        for (w, expected) in wants.iter().zip(followed) {
            let in_flight = self.inflight.as_ref().is_some_and(|i| i.offsets.contains_key(&w.tp));
            let look = self.stream.lookup(&w.tp, w.fp.current_leader_epoch, w.fp.fetch_offset, usize::MAX);
            let held_last = self.stream.held(&w.tp).map(|h| h.1);
            let part = self.parts.entry(w.tp).or_insert_with(Part::new);
            if part.leader_ahead.is_some_and(|(_, end)| held_last.is_some_and(|last| last >= end - 1)) {
                part.leader_ahead = None; // what the leader had then has reached the fast tier since
            }
            if in_flight || part.pending.is_some() {
                part.mode = Mode::Leader;
                continue;
            }
            let before = part.mode;
            let mut reason = None;
            let next = if let Health::Down(_) = &health {
                reason = Some(("store", Metric::ReplFallbackStore));
                Mode::Leader
            } else if part.cooldown_until.is_some_and(|t| now < t) {
                Mode::Leader
            } else {
                // the fast tier should get there: wait for it, unless the leader has had data there for
                // longer than max.lag.ms (or the stream has delivered nothing for that long)
                let waiting = |part: &mut Part, reason: &mut Option<(&'static str, Metric)>| match part.leader_ahead {
                    Some((t, _))
                        if now.duration_since(t) > self.ctx.cfg.max_lag
                            || (stalled && now.duration_since(t) > self.ctx.cfg.max_lag / 2) =>
                    {
                        *reason = Some(("lag", Metric::ReplFallbackLag));
                        Mode::Leader
                    }
                    _ => Mode::Fast,
                };
                match look {
                    Lookup::Serve { .. } => {
                        part.leader_ahead = None;
                        Mode::Fast
                    }
                    Lookup::Wait => waiting(part, &mut reason),
                    // in the fast tier by Kafka's and the topic rules' word, nothing of it read yet
                    Lookup::Missing("absent") if expected => waiting(part, &mut reason),
                    Lookup::Missing(_) => Mode::Leader,
                }
            };
            if before == Mode::Fast && next == Mode::Leader {
                if let Some((why, metric)) = reason {
                    part.cooldown_until = Some(now + self.ctx.cfg.retry);
                    let ahead_ms =
                        part.leader_ahead.take().map_or(-1, |(t, _)| now.duration_since(t).as_millis() as i64);
                    self.ctx.metrics.inc(metric);
                    let held = self.stream.held(&w.tp);
                    let (_, _, _, next_seq) = self.stream.stats();
                    info!(
                        leader = self.route.broker_id,
                        topic_id = %topic_id_string(&w.tp.0),
                        partition = w.tp.1,
                        fetch_offset = w.fp.fetch_offset,
                        reason = why,
                        leader_ahead_ms = ahead_ms,
                        stream_first = held.map_or(-1, |h| h.0),
                        stream_last = held.map_or(-1, |h| h.1),
                        stream_pieces = held.map_or(0, |h| h.2),
                        stream_next_seq = next_seq,
                        last_object_ms = self.stream.since_last_object().map_or(-1, |d| d.as_millis() as i64),
                        "fast replication: partition falls back to the leader"
                    );
                    let mut st = self.ctx.status.lock().unwrap_or_else(|e| e.into_inner());
                    let s = st.entry((self.route.broker_id, w.tp)).or_default();
                    s.fallbacks += 1;
                    s.last_fallback = Some(why);
                }
            }
            if before != Mode::Fast && next == Mode::Fast {
                part.reported = None; // the leader must hear the offset from this connection first
                if part.cooldown_until.take().is_some() {
                    info!(
                        leader = self.route.broker_id,
                        topic_id = %topic_id_string(&w.tp.0),
                        partition = w.tp.1,
                        fetch_offset = w.fp.fetch_offset,
                        "fast replication: partition back on the fast tier"
                    );
                }
            }
            part.mode = next;
        }
    }

    /// Whether the leader must hear the FAST partitions' offsets now, and how.
    fn report_due(&self, wants: &[Want]) -> Due {
        let fast: Vec<(&Want, &Part)> = wants
            .iter()
            .filter_map(|w| self.parts.get(&w.tp).filter(|p| p.mode == Mode::Fast).map(|p| (w, p)))
            .collect();
        if fast.is_empty() {
            return Due::No;
        }
        let answered_due = self.last_answered.is_none_or(|t| t.elapsed() >= self.ctx.cfg.keepalive)
            || fast.iter().any(|(w, p)| {
                p.reported.is_none()
                    || p.validated_epoch != Some(w.fp.current_leader_epoch)
                    || p.reported.is_some_and(|r| w.fp.fetch_offset < r) // the follower truncated
            });
        if answered_due {
            return Due::Answered;
        }
        if !self.silent_set(wants).is_empty() {
            return Due::Silent;
        }
        // Offsets moved, but the report rule holds them back, while the follower has all that the fast tier
        // holds: an acks=all producer may be waiting for exactly these offsets, so no newer data will come
        // to refresh the leader's "caught up" time. Ask the leader (at most every UNSTICK_EVERY; the handler
        // wakes for it): its answer carries no records for a follower that has everything (and Kafka then
        // counts it caught up), else one batch.
        let held_back = fast.iter().any(|(w, p)| {
            p.reported != Some(w.fp.fetch_offset)
                && matches!(self.stream.lookup(&w.tp, w.fp.current_leader_epoch, w.fp.fetch_offset, 1), Lookup::Wait)
        });
        if !held_back {
            return Due::No;
        }
        match self.last_answered.map(|t| t + UNSTICK_EVERY) {
            Some(at) if at > Instant::now() => Due::At(at),
            _ => Due::Answered,
        }
    }

    /// The report rule (docs/replication.md, "Offset reports and the ISR"): Kafka counts a follower as
    /// caught up on a partition when its fetch offset reaches the leader's log end offset as of the
    /// follower's previous fetch of that partition. A report refreshes that for a partition whose new data
    /// was cut (by the leader's uploader) after the partition's previous report.
    fn refreshes_caught_up(&self, w: &Want, p: &Part) -> bool {
        let margin = self.ctx.cfg.report_margin.as_millis() as i64;
        match p.reported_at {
            None => true,
            Some(at) => p.served.is_some_and(|(next, cut)| next == w.fp.fetch_offset && cut >= at + margin),
        }
    }

    /// The FAST partitions a silent report carries: those whose offset moved, if the report refreshes their
    /// "caught up" time or one did within [`CAUGHT_UP_REFRESH`]; the others wait for data that does.
    fn silent_set<'w>(&self, wants: &'w [Want]) -> Vec<&'w Want> {
        wants
            .iter()
            .filter(|w| {
                self.parts.get(&w.tp).is_some_and(|p| {
                    p.mode == Mode::Fast
                        && p.reported != Some(w.fp.fetch_offset)
                        && (self.refreshes_caught_up(w, p)
                            || p.last_good.is_some_and(|t| t.elapsed() < CAUGHT_UP_REFRESH))
                })
            })
            .collect()
    }

    /// Records that `w`'s offset was reported now.
    fn mark_reported(&mut self, w: &Want) {
        let good = self.parts.get(&w.tp).is_some_and(|p| self.refreshes_caught_up(w, p));
        if let Some(p) = self.parts.get_mut(&w.tp) {
            p.reported = Some(w.fp.fetch_offset);
            p.reported_at = Some(unix_ms());
            if good {
                p.last_good = Some(Instant::now());
            }
        }
    }

    async fn conn(&mut self, report: bool) -> Result<Arc<Upstream>> {
        let slot = if report { &self.report_conn } else { &self.data_conn };
        if let Some(c) = slot.as_ref().filter(|c| !c.is_dead()) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.route.connect(&self.ctx).await?);
        if report {
            self.report_conn = Some(c.clone());
        } else {
            self.data_conn = Some(c.clone());
        }
        Ok(c)
    }

    /// A sessionless fetch like `req`, of `partitions` (with their own max bytes or `max_bytes_override`).
    fn request_like(
        req: &FetchRequest,
        partitions: &[&Want],
        max_wait: i32,
        min_bytes: i32,
        max_bytes_override: Option<i32>,
    ) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for w in partitions {
            let src = &req.topics[w.topic];
            let mut fp = w.fp.clone();
            if let Some(m) = max_bytes_override {
                fp.partition_max_bytes = m;
            }
            match topics.last_mut().filter(|t| t.topic_id == src.topic_id && t.topic == src.topic) {
                Some(t) => t.partitions.push(fp),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(src.topic.clone())
                        .with_topic_id(src.topic_id)
                        .with_partitions(vec![fp]),
                ),
            }
        }
        let mut out = req.clone();
        out.max_wait_ms = max_wait;
        out.min_bytes = min_bytes;
        out.session_id = 0;
        out.session_epoch = -1;
        out.topics = topics;
        out.forgotten_topics_data = Vec::new();
        out
    }

    async fn report(&mut self, header: &RequestHeader, req: &FetchRequest, version: i16, wants: &[Want]) -> Result<()> {
        let mut fast: Vec<&Want> =
            wants.iter().filter(|w| self.parts.get(&w.tp).is_some_and(|p| p.mode == Mode::Fast)).collect();
        // the leader returns one batch for the first partition that has data: rotate who is first, so that
        // every partition's "leader has data the fast tier lacks" signal comes through
        if !fast.is_empty() {
            let k = self.rotate % fast.len();
            fast.rotate_left(k);
            self.rotate = self.rotate.wrapping_add(1);
        }
        for w in &fast {
            self.mark_reported(w);
        }
        let body = Self::request_like(req, &fast, 0, 0, Some(0));
        let frame =
            encode_request(FETCH, version, header.correlation_id, header.client_id.clone(), &body, &self.route.peer)?;
        let conn = self.conn(true).await?;
        let answer = conn.call(&frame, REPORT_TIMEOUT).await?;
        let (_, resp): (_, FetchResponse) = decode_response(&answer, version, &self.route.peer)?;
        self.ctx.metrics.inc(Metric::ReplReports);
        self.last_report = Some((Instant::now(), unix_ms()));
        self.last_answered = Some(Instant::now());
        self.absorb_top(&resp);
        let sent: HashMap<Tp, i64> = fast.iter().map(|w| (w.tp, w.fp.fetch_offset)).collect();
        // Kafka returns records for the first partition (in request order) with data beyond its offset only:
        // the partitions answered before it had none, so the follower holds the leader's whole log of them
        // and Kafka counts it caught up now
        let mut before_records = true;
        for t in &resp.responses {
            for pd in &t.partitions {
                let tp = tp_of(&t.topic_id, pd.partition_index);
                let Some(&offset) = sent.get(&tp) else { continue };
                let caught_up = before_records && pd.records.as_ref().is_none_or(|r| r.is_empty());
                before_records &= caught_up;
                let epoch = fast.iter().find(|w| w.tp == tp).map_or(-1, |w| w.fp.current_leader_epoch);
                let records = pd.records.clone().unwrap_or_default();
                self.ctx.metrics.add(Metric::ReplReportBytes, records.len() as i64);
                let look =
                    if records.is_empty() { None } else { Some(self.stream.lookup(&tp, epoch, offset, records.len())) };
                let Some(part) = self.parts.get_mut(&tp) else { continue };
                if pd.error_code != NONE || pd.diverging_epoch.epoch >= 0 {
                    let mut e = pd.clone();
                    e.records = Some(Bytes::new());
                    part.report_err = Some(e);
                    part.validated_epoch = None;
                    continue;
                }
                part.validated_epoch = Some(epoch);
                part.absorb(pd);
                if caught_up {
                    part.last_good = Some(Instant::now());
                }
                match look {
                    None => part.leader_ahead = None, // the leader has nothing beyond the offset
                    Some(Lookup::Serve { records: ours, .. }) => {
                        // the leader's first batch at the offset and the fast tier's must be the same bytes
                        let n = ours.len().min(records.len());
                        if ours[..n] != records[..n] {
                            warn!(
                                leader = self.route.broker_id,
                                topic_id = %topic_id_string(&tp.0),
                                partition = tp.1,
                                fetch_offset = offset,
                                "fast replication: fast-tier bytes differ from the leader's log; using the leader"
                            );
                            self.ctx.metrics.inc(Metric::ReplFallbackMismatch);
                            part.mode = Mode::Leader;
                            part.cooldown_until = Some(Instant::now() + self.ctx.cfg.retry);
                            let mut st = self.ctx.status.lock().unwrap_or_else(|e| e.into_inner());
                            let s = st.entry((self.route.broker_id, tp)).or_default();
                            s.fallbacks += 1;
                            s.last_fallback = Some("mismatch");
                        }
                        part.leader_ahead = None;
                    }
                    Some(_) => {
                        let end = batches_end(&records);
                        let seen = end.unwrap_or(offset + 1);
                        part.leader_ahead = Some(match part.leader_ahead {
                            Some((since, was)) => (since, was.max(seen)),
                            None => (Instant::now(), seen),
                        });
                        if let Some(next) = end {
                            part.leader_batch = Some((offset, records, next));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reports the FAST partitions' fetch offsets on a connection of its own that is reset before the
    /// leader answers: the leader records the offsets as it reads the fetch (and may advance the high
    /// watermark), then parks it (`min_bytes` can never be met); its answer, which would carry one record
    /// batch, is never sent. Failures only delay the offset until the next report.
    async fn silent_report(&mut self, header: &RequestHeader, req: &FetchRequest, version: i16, wants: &[Want]) {
        let fast = self.silent_set(wants);
        if fast.is_empty() {
            return;
        }
        let body = Self::request_like(req, &fast, SILENT_WAIT_MS, i32::MAX, Some(0));
        let spare = self.take_spare().await;
        let sent = async {
            let frame = encode_request(
                FETCH,
                version,
                header.correlation_id,
                header.client_id.clone(),
                &body,
                &self.route.peer,
            )?;
            let mut sock = match spare {
                Some(sock) => sock,
                None => dial(&self.route, self.ctx.connect_timeout).await?,
            };
            super::wire::write_frame(&mut sock, &frame, &self.route.peer).await?;
            Ok::<_, Error>(sock)
        }
        .await;
        if self.spare.is_none() {
            let (route, timeout) = (self.route.clone(), self.ctx.connect_timeout);
            self.spare = Some(tokio::spawn(async move { Ok((dial(&route, timeout).await?, Instant::now())) }));
        }
        self.last_report = Some((Instant::now(), unix_ms()));
        self.silent = Some(Instant::now());
        match sent {
            Ok(sock) => {
                self.ctx.metrics.inc(Metric::ReplSilentReports);
                for w in &fast {
                    self.mark_reported(w);
                }
                tokio::spawn(async move {
                    tokio::time::sleep(SILENT_HOLD).await;
                    // reset, not closed: the leader's eventual answer must not be sent (a zero linger
                    // does not block on drop, which is what tokio's deprecation is about)
                    #[allow(deprecated)]
                    let _ = sock.set_linger(Some(Duration::ZERO));
                    drop(sock);
                });
            }
            Err(e) => tracing::debug!(leader = %self.route.peer, error = %e, "fast replication: silent report failed"),
        }
    }

    /// The connection opened ahead for this report, if it is ready, young and still open.
    async fn take_spare(&mut self) -> Option<tokio::net::TcpStream> {
        let h = self.spare.take_if(|h| h.is_finished())?;
        match h.await {
            Ok(Ok((sock, opened))) if opened.elapsed() < SPARE_MAX_AGE => {
                // the leader never sends on it: readable means it was closed (e.g. connections.max.idle.ms)
                let mut b = [0u8; 1];
                match sock.try_read(&mut b) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(sock),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn absorb_top(&mut self, resp: &FetchResponse) {
        self.throttle_ms = self.throttle_ms.max(resp.throttle_time_ms);
        if resp.error_code != NONE {
            self.top_error = resp.error_code;
        }
        for n in &resp.node_endpoints {
            if !self.node_endpoints.iter().any(|x| x.node_id == n.node_id) {
                self.node_endpoints.push(n.clone());
            }
        }
    }

    async fn start_data_fetch(
        &mut self,
        header: &RequestHeader,
        req: &FetchRequest,
        version: i16,
        wants: &[Want],
    ) -> Result<()> {
        if self.inflight.is_some() {
            return Ok(());
        }
        let leader: Vec<&Want> = wants
            .iter()
            .filter(|w| self.parts.get(&w.tp).is_some_and(|p| p.mode == Mode::Leader && p.pending.is_none()))
            .collect();
        if leader.is_empty() {
            return Ok(());
        }
        let body = Self::request_like(req, &leader, req.max_wait_ms, req.min_bytes, None);
        let frame =
            encode_request(FETCH, version, header.correlation_id, header.client_id.clone(), &body, &self.route.peer)?;
        let conn = self.conn(false).await?;
        let rx = conn.send(&frame).await?;
        let wait = Duration::from_millis(req.max_wait_ms.clamp(0, 30_000) as u64);
        self.inflight = Some(Inflight {
            rx,
            offsets: leader.iter().map(|w| (w.tp, w.fp.fetch_offset)).collect(),
            deadline: Instant::now() + wait + DATA_GRACE,
        });
        Ok(())
    }

    fn finish_data_fetch(
        &mut self,
        r: std::result::Result<Result<Bytes>, oneshot::error::RecvError>,
        version: i16,
    ) -> Result<()> {
        let Some(inf) = self.inflight.take() else { return Ok(()) };
        let frame = r.map_err(|_| Error::Network {
            op: "fetch",
            peer: self.route.peer.clone(),
            detail: "connection closed".into(),
        })??;
        let (_, resp): (_, FetchResponse) = decode_response(&frame, version, &self.route.peer)?;
        self.absorb_top(&resp);
        for t in &resp.responses {
            for pd in &t.partitions {
                let tp = tp_of(&t.topic_id, pd.partition_index);
                if !inf.offsets.contains_key(&tp) {
                    continue;
                }
                if let Some(part) = self.parts.get_mut(&tp) {
                    let n = pd.records.as_ref().map_or(0, |r| r.len());
                    self.ctx.metrics.add(Metric::ReplLeaderBytes, n as i64);
                    if pd.error_code == NONE && pd.diverging_epoch.epoch < 0 {
                        part.absorb(pd);
                    }
                    part.reported = Some(inf.offsets[&tp]);
                    part.pending = Some(pd.clone());
                }
            }
        }
        Ok(())
    }

    /// Whether the follower can be answered now.
    fn ready(&self, wants: &[Want], timed_out: bool) -> bool {
        if self.top_error != NONE {
            return true;
        }
        let mut something = false;
        for w in wants {
            let Some(p) = self.parts.get(&w.tp) else { return false };
            if p.last.is_none() && p.pending.is_none() && p.report_err.is_none() {
                return false; // nothing to answer for it yet
            }
            let valid = p.validated_epoch == Some(w.fp.current_leader_epoch);
            something |= p
                .pending
                .as_ref()
                .is_some_and(|pd| pd.records.as_ref().is_some_and(|r| !r.is_empty()) || pd.error_code != NONE)
                || p.report_err.is_some()
                || (p.mode == Mode::Fast && p.leader_batch.as_ref().is_some_and(|b| b.0 == w.fp.fetch_offset))
                || (p.mode == Mode::Fast
                    && valid
                    && matches!(
                        self.stream.lookup(&w.tp, w.fp.current_leader_epoch, w.fp.fetch_offset, 1),
                        Lookup::Serve { .. }
                    ));
        }
        something
            || timed_out
            || self.inflight.is_none()
                && wants.iter().any(|w| self.parts.get(&w.tp).is_some_and(|p| p.pending.is_some()))
    }

    fn respond(&mut self, req: &FetchRequest, wants: &[Want]) -> FetchResponse {
        self.served_fast = false;
        let mut resp = FetchResponse::default()
            .with_throttle_time_ms(std::mem::take(&mut self.throttle_ms))
            .with_session_id(0)
            .with_node_endpoints(std::mem::take(&mut self.node_endpoints));
        if self.top_error != NONE {
            resp.error_code = std::mem::replace(&mut self.top_error, NONE);
            return resp;
        }
        let mut budget = req.max_bytes.max(0) as usize;
        let mut any_records = false;
        let mut topics: Vec<FetchableTopicResponse> = req
            .topics
            .iter()
            .map(|t| FetchableTopicResponse::default().with_topic(t.topic.clone()).with_topic_id(t.topic_id))
            .collect();
        for w in wants {
            let Some(part) = self.parts.get_mut(&w.tp) else { continue };
            let mut source = if part.mode == Mode::Fast { "fast" } else { "leader" };
            let pd = if let Some(e) = part.report_err.take() {
                e
            } else if let Some(p) = part.pending.take() {
                source = "leader";
                p
            } else {
                let mut pd = part.last.clone().unwrap_or_default();
                pd.records = Some(Bytes::new());
                if part.mode == Mode::Fast && part.validated_epoch == Some(w.fp.current_leader_epoch) {
                    let cap = if any_records {
                        budget.min(w.fp.partition_max_bytes.max(0) as usize)
                    } else {
                        w.fp.partition_max_bytes.max(1) as usize
                    };
                    if cap > 0 {
                        let lb = part.leader_batch.take().filter(|b| b.0 == w.fp.fetch_offset);
                        if let Lookup::Serve { records, next, cut_ms, ingested } =
                            self.stream.lookup(&w.tp, w.fp.current_leader_epoch, w.fp.fetch_offset, cap)
                        {
                            self.ctx.metrics.add(Metric::ReplFastBytes, records.len() as i64);
                            self.ctx.metrics.add(Metric::RoundtripServeMs, ingested.elapsed().as_millis() as i64);
                            self.ctx.metrics.inc(Metric::RoundtripServeCount);
                            self.served_fast = true;
                            part.served = Some((next, cut_ms));
                            let mut st = self.ctx.status.lock().unwrap_or_else(|e| e.into_inner());
                            st.entry((self.route.broker_id, w.tp)).or_default().fast_bytes += records.len() as u64;
                            pd.records = Some(records);
                        } else if let Some((_, records, next)) = lb {
                            // the leader's own batch from the report: it crossed anyway
                            self.ctx.metrics.add(Metric::ReplLeaderBytes, records.len() as i64);
                            part.served = Some((next, i64::MIN));
                            source = "leader";
                            pd.records = Some(records);
                        }
                    }
                }
                pd
            };
            let mut pd = pd;
            pd.partition_index = w.tp.1;
            if let Some(last) = &part.last {
                if pd.error_code == NONE {
                    pd.high_watermark = pd.high_watermark.max(last.high_watermark);
                    pd.log_start_offset = pd.log_start_offset.max(last.log_start_offset);
                    pd.last_stable_offset = pd.last_stable_offset.max(last.last_stable_offset);
                }
            }
            let n = pd.records.as_ref().map_or(0, |r| r.len());
            if n > 0 {
                any_records = true;
                budget = budget.saturating_sub(n);
            }
            {
                let mut st = self.ctx.status.lock().unwrap_or_else(|e| e.into_inner());
                let s = st.entry((self.route.broker_id, w.tp)).or_default();
                s.source = source;
                if source == "leader" {
                    s.leader_bytes += n as u64;
                }
            }
            topics[w.topic].partitions.push(pd);
        }
        resp.responses = topics;
        resp
    }

    fn update_gauges(&mut self) {
        let fast = self.parts.values().filter(|p| p.mode == Mode::Fast).count() as i64;
        let leader = self.parts.len() as i64 - fast;
        self.ctx.metrics.add(Metric::ReplPartitionsFast, fast - self.counted.0);
        self.ctx.metrics.add(Metric::ReplPartitionsLeader, leader - self.counted.1);
        self.counted = (fast, leader);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ctx.metrics.add(Metric::ReplPartitionsFast, -self.counted.0);
        self.ctx.metrics.add(Metric::ReplPartitionsLeader, -self.counted.1);
    }
}

/// Whether a decoded fetch is a replica fetch (from a follower broker).
pub fn is_replica_fetch(req: &FetchRequest, version: i16) -> bool {
    if version >= 15 {
        req.replica_state.replica_id.0 >= 0
    } else {
        req.replica_id.0 >= 0
    }
}
