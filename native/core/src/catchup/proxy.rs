//! The zone-local endpoint: one listener per other broker, taking this broker's connections to it.
//!
//! The broker's JVM resolves each leader's advertised host name to the proxy's listen address for that
//! leader (`-Djdk.net.hosts.file`, see `docs/replication.md`). Every request on such a connection is
//! relayed to the real leader unchanged and in order, except:
//!
//! * replica fetches (Fetch v13+ from a follower), which a [`Session`] answers from the leader's fast-tier
//!   stream and the leader's offset answers;
//! * ApiVersions, whose answer is relayed with the Fetch version capped at what the proxy can decode;
//! * Produce with `acks=0`, which has no response.
//!
//! Responses go back in request order (Kafka clients rely on it), whoever produced them.
//!
//! Hardening (`docs/replication.md`, "Hardening"): only this broker's own connections are served
//! ([`super::caller`]); connections are capped per listener and in all, must send their first request within
//! the handshake time-out and are closed when idle; frames are capped and their buffers grow only as bytes
//! arrive; every message decoded is checked first ([`super::bounded`]); a replica fetch must carry this
//! broker's id; a leader's stream reader no connection uses is released after a while.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::protocol::Message;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::bounded::{cap_api_versions, produce_acks};
use super::fetch::{is_replica_fetch, Ctx, Route, Session};
use super::follow::{FollowSettings, LeaderStream, Tp};
use super::upstream::Upstream;
use super::wire::{decode_request, peek_request, write_frame, FrameReader, API_VERSIONS, FETCH};
use crate::config::{ProxyLimits, ReplicationConfig, WalConfig, PREFIX};
use crate::error::{Error, Result};
use crate::fast::{parse_topic_id, PartitionInfo};
use crate::metrics::{Metric, Metrics};
use crate::store::ObjectStore;
use crate::wal::format::topic_id_string;

/// Produce's API key.
const PRODUCE: i16 = super::bounded::PRODUCE;
/// Once a frame's first byte arrived, the whole frame must arrive within this (Kafka's
/// `request.timeout.ms` default).
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// The oldest Fetch version a session answers (topic ids).
const MIN_FAST_FETCH: i16 = 13;
/// Responses a connection may have outstanding before the proxy stops reading its requests.
const MAX_IN_FLIGHT: usize = 64;

/// One leader as the proxy knows it.
#[derive(Debug)]
struct Leader {
    route: Arc<Route>,
    store: Arc<dyn ObjectStore>,
    settings: FollowSettings,
    stream: Mutex<Option<Arc<LeaderStream>>>,
    listen: String,
    /// Connections this leader's listener serves now.
    conns: AtomicUsize,
    /// Since when no connection has used the stream (for its release).
    idle_since: Mutex<Option<Instant>>,
}

impl Leader {
    /// Stops following the leader's stream if no connection has used it for `after`; returns whether it
    /// was stopped now.
    fn release_if_idle(&self, after: Duration) -> bool {
        let mut s = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let mut idle = self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        match s.as_ref() {
            None => {
                *idle = None;
                false
            }
            // a session holds a reference: in use
            Some(st) if Arc::strong_count(st) > 1 => {
                *idle = None;
                false
            }
            Some(_) => match *idle {
                Some(since) if since.elapsed() >= after => {
                    *s = None;
                    *idle = None;
                    true
                }
                Some(_) => false,
                None => {
                    *idle = Some(Instant::now());
                    false
                }
            },
        }
    }

    /// The leader's stream follower, started on first use (by the first replica fetch).
    fn stream(&self, metrics: &Arc<Metrics>) -> Arc<LeaderStream> {
        let mut s = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        s.get_or_insert_with(|| {
            Arc::new(LeaderStream::start(
                self.store.clone(),
                self.route.broker_id,
                self.settings.clone(),
                metrics.clone(),
            ))
        })
        .clone()
    }
}

/// Replication through the fast tier: the proxy's listeners and everything they serve.
#[derive(Debug)]
pub struct FastReplication {
    ctx: Arc<Ctx>,
    leaders: Vec<Arc<Leader>>,
    listeners: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    /// The fast tier's settings (topic rules, prefix).
    wal: WalConfig,
}

impl FastReplication {
    /// Binds one listener per broker other than `self_id` and starts serving. Must run on a tokio runtime.
    pub async fn start(
        cfg: ReplicationConfig,
        self_id: i32,
        store: Arc<dyn ObjectStore>,
        wal: &WalConfig,
        metrics: Arc<Metrics>,
        connect_timeout: Duration,
    ) -> Result<FastReplication> {
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            metrics,
            connect_timeout,
            status: Mutex::new(HashMap::new()),
            followed: Mutex::new(HashSet::new()),
        });
        let (shutdown, _) = watch::channel(false);
        let settings = FollowSettings {
            prefix: wal.prefix.clone(),
            poll: cfg.poll,
            cache_bytes: cfg.cache_per_leader(cfg.brokers.iter().filter(|b| b.id != self_id).count()),
            lookback_objects: cfg.lookback_objects,
            notify: None,
            self_id,
        };
        let gate = Arc::new(Gate {
            limits: cfg.limits.clone(),
            self_id,
            total: AtomicUsize::new(0),
            last_warn_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            born: Instant::now(),
        });
        let mut leaders = Vec::new();
        let mut listeners = Vec::new();
        for b in cfg.brokers.iter().filter(|b| b.id != self_id) {
            let listen = cfg.listen_addr(b);
            let listener = TcpListener::bind(&listen).await.map_err(|e| {
                Error::config(
                    format!("{PREFIX}replication.fast.bind"),
                    format!("cannot listen on addr={listen} for broker id={}: {e}", b.id),
                )
            })?;
            let target = format!("{}:{}", b.host, b.port);
            let leader = Arc::new(Leader {
                route: Arc::new(Route { broker_id: b.id, peer: format!("broker={} addr={target}", b.id), target }),
                store: store.clone(),
                settings: FollowSettings {
                    notify: (cfg.notify_port != 0).then(|| format!("{}:{}", b.host, cfg.notify_port)),
                    ..settings.clone()
                },
                stream: Mutex::new(None),
                listen: listen.clone(),
                conns: AtomicUsize::new(0),
                idle_since: Mutex::new(None),
            });
            info!(listen = %listen, leader = %leader.route.peer, "fast replication: proxy listening");
            listeners.push(tokio::spawn(accept_loop(
                listener,
                leader.clone(),
                ctx.clone(),
                gate.clone(),
                shutdown.subscribe(),
            )));
            leaders.push(leader);
        }
        listeners.push(tokio::spawn(log_summaries(ctx.clone(), leaders.clone(), shutdown.subscribe())));
        listeners.push(tokio::spawn(release_idle(
            ctx.clone(),
            leaders.clone(),
            cfg.limits.release_after,
            shutdown.subscribe(),
        )));
        Ok(FastReplication { ctx, leaders, listeners, shutdown, wal: wal.clone() })
    }

    /// Kafka's `onPartitionLeadershipChanges` (remote-storage partitions only): `followers` are followed
    /// here now. Those the fast tier's topic rules select are expected in their leaders' streams: their
    /// followers wait for the fast tier rather than fetch from the leader while it has nothing of them yet.
    pub fn leadership(&self, leaders: &[PartitionInfo], followers: &[PartitionInfo]) -> Result<()> {
        let led = decode_tps(leaders)?;
        self.forget(&led);
        let mut f = self.ctx.followed.lock().unwrap_or_else(|e| e.into_inner());
        for tp in &led {
            f.remove(tp);
        }
        for p in followers.iter().filter(|p| self.wal.topic_selected(&p.topic)) {
            f.insert((parse_topic_id(&p.topic_id)?, p.partition));
        }
        Ok(())
    }

    /// Kafka's `onStopPartitions`.
    pub fn stop_partitions(&self, partitions: &[PartitionInfo]) -> Result<()> {
        let stopped = decode_tps(partitions)?;
        self.forget(&stopped);
        let mut f = self.ctx.followed.lock().unwrap_or_else(|e| e.into_inner());
        for tp in &stopped {
            f.remove(tp);
        }
        Ok(())
    }

    /// Drops the status of partitions no longer followed here (led here now, deleted or moved away), so it
    /// does not grow with every partition ever followed.
    fn forget(&self, tps: &[Tp]) {
        let mut st = self.ctx.status.lock().unwrap_or_else(|e| e.into_inner());
        st.retain(|(_, tp), _| !tps.contains(tp));
    }

    /// Stops listening, closes every connection and stops following the leaders' streams.
    pub fn close(&self) {
        let _ = self.shutdown.send(true);
        for l in &self.listeners {
            l.abort();
        }
        for leader in &self.leaders {
            leader.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// One row per followed partition, `leader|topic_id|partition|source|fast_bytes|leader_bytes|fallbacks`
    /// (for per-partition metrics; `source` is `fast` or `leader`).
    pub fn partition_rows(&self) -> Vec<String> {
        let st = self.ctx.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<String> = st
            .iter()
            .map(|((leader, (t, p)), s)| {
                format!(
                    "{leader}|{}|{p}|{}|{}|{}|{}",
                    topic_id_string(t),
                    s.source,
                    s.fast_bytes,
                    s.leader_bytes,
                    s.fallbacks
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// Listeners, leader streams and per-partition sources, as JSON.
    pub fn status(&self) -> serde_json::Value {
        let leaders: Vec<_> = self
            .leaders
            .iter()
            .map(|l| {
                let s = l.stream.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let stream = s.map(|s| {
                    let (objects, bytes, parts, next_seq) = s.stats();
                    json!({"health": format!("{:?}", s.health()), "objects_read": objects, "bytes_held": bytes,
                           "partitions_held": parts, "next_seq": next_seq})
                });
                json!({"broker_id": l.route.broker_id, "target": l.route.target, "listen": l.listen, "stream": stream})
            })
            .collect();
        let parts: Vec<_> = self
            .ctx
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((leader, (t, p)), s)| {
                json!({"leader": leader, "topic_id": topic_id_string(t), "partition": p, "source": s.source,
                       "fast_bytes": s.fast_bytes, "leader_bytes": s.leader_bytes, "fallbacks": s.fallbacks,
                       "last_fallback": s.last_fallback})
            })
            .collect();
        json!({"enabled": true, "leaders": leaders, "partitions": parts})
    }
}

impl Drop for FastReplication {
    fn drop(&mut self) {
        self.close();
    }
}

fn decode_tps(parts: &[PartitionInfo]) -> Result<Vec<Tp>> {
    parts.iter().map(|p| Ok((parse_topic_id(&p.topic_id)?, p.partition))).collect()
}

/// How often the proxy logs what it does (partitions per source, fallbacks), at INFO.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

async fn log_summaries(ctx: Arc<Ctx>, leaders: Vec<Arc<Leader>>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SUMMARY_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        for l in &leaders {
            let stream = l.stream.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(stream) = stream else { continue };
            let (fast, leader, fast_bytes, leader_bytes, fallbacks) = {
                let st = ctx.status.lock().unwrap_or_else(|e| e.into_inner());
                st.iter().filter(|((id, _), _)| *id == l.route.broker_id).fold((0, 0, 0, 0, 0), |a, (_, s)| {
                    let fast = usize::from(s.source == "fast");
                    (a.0 + fast, a.1 + 1 - fast, a.2 + s.fast_bytes, a.3 + s.leader_bytes, a.4 + s.fallbacks)
                })
            };
            info!(
                leader = %l.route.peer,
                stream = ?stream.health(),
                partitions_fast = fast,
                partitions_leader = leader,
                fast_bytes,
                leader_bytes,
                fallbacks,
                "fast replication: summary"
            );
        }
    }
}

/// Stops following the streams of leaders no connection has used for `after`, and drops their partitions'
/// status (the per-partition metrics): the leader is no longer followed from here. The next replica fetch
/// for it starts following again.
async fn release_idle(ctx: Arc<Ctx>, leaders: Vec<Arc<Leader>>, after: Duration, mut shutdown: watch::Receiver<bool>) {
    let every = (after / 2).clamp(Duration::from_millis(20), Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        for l in &leaders {
            if l.release_if_idle(after) {
                let id = l.route.broker_id;
                ctx.status.lock().unwrap_or_else(|e| e.into_inner()).retain(|(leader, _), _| *leader != id);
                info!(leader = %l.route.peer, idle = ?after, "fast replication: no longer followed, stream reader released");
            }
        }
    }
}

/// The proxy's admission state, shared by its listeners.
#[derive(Debug)]
struct Gate {
    limits: ProxyLimits,
    /// This broker's id: the only replica id served.
    self_id: i32,
    /// Connections served now, all listeners.
    total: AtomicUsize,
    last_warn_ms: AtomicU64,
    suppressed: AtomicU64,
    born: Instant,
}

/// A connection's place under the caps; given back when dropped.
struct Slot {
    gate: Arc<Gate>,
    leader: Arc<Leader>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.total.fetch_sub(1, Ordering::SeqCst);
        self.leader.conns.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate {
    /// A slot for one more connection to `leader`, if the caps allow it.
    fn admit(self: &Arc<Gate>, leader: &Arc<Leader>) -> Option<Slot> {
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        let mine = leader.conns.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = Slot { gate: self.clone(), leader: leader.clone() };
        (total <= self.limits.max_connections && mine <= self.limits.max_connections_per_leader).then_some(slot)
    }

    /// At most one warning a second for refused connections (a flood must not flood the broker log); the
    /// line says how many were not logged since the previous one.
    fn warn(&self, log: impl FnOnce(u64)) {
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 1000)
            && self.last_warn_ms.compare_exchange(last, now.max(1), Ordering::SeqCst, Ordering::Relaxed).is_ok()
        {
            log(self.suppressed.swap(0, Ordering::SeqCst));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    leader: Arc<Leader>,
    ctx: Arc<Ctx>,
    gate: Arc<Gate>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((sock, from)) => {
                let Some(slot) = gate.admit(&leader) else {
                    ctx.metrics.inc(Metric::ReplRejected);
                    let (per, all) = (gate.limits.max_connections_per_leader, gate.limits.max_connections);
                    gate.warn(|suppressed| {
                        warn!(peer = %from, listen = %leader.listen, max_per_leader = per, max = all, suppressed,
                              "fast replication: connection refused: too many connections")
                    });
                    continue; // dropped: closed
                };
                let (leader, ctx, gate, shutdown) = (leader.clone(), ctx.clone(), gate.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(why) = admitted_caller(&sock, from, gate.limits.auth).await {
                        ctx.metrics.inc(Metric::ReplRefused);
                        gate.warn(|suppressed| {
                            warn!(peer = %from, listen = %leader.listen, reason = %why, suppressed,
                                  "fast replication: connection refused: not this broker")
                        });
                        return;
                    }
                    let _ = sock.set_nodelay(true);
                    debug!(%from, leader = %leader.route.peer, "fast replication: connection");
                    ctx.metrics.add(Metric::ReplConnections, 1);
                    if let Err(e) = serve(sock, &leader, &ctx, &gate, shutdown).await {
                        if matches!(e, Error::Protocol { .. }) {
                            ctx.metrics.inc(Metric::ReplRejected);
                        }
                        // the follower sees a closed connection, as when a leader goes away, and reconnects
                        info!(leader = %leader.route.peer, error = %e, "fast replication: connection closed");
                    }
                    ctx.metrics.add(Metric::ReplConnections, -1);
                    drop(slot);
                });
            }
            Err(e) => {
                warn!(error = %e, "fast replication: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether the caller of an accepted connection may be served (the check reads `/proc`: off the runtime).
async fn admitted_caller(
    sock: &TcpStream,
    from: SocketAddr,
    check: super::caller::CallerCheck,
) -> std::result::Result<(), String> {
    let local = sock.local_addr().map_err(|e| format!("local address: {e}"))?;
    tokio::task::spawn_blocking(move || check.check(from, local))
        .await
        .unwrap_or_else(|e| Err(format!("check failed: {e}")))
}

type Answer = oneshot::Receiver<Result<Bytes>>;

/// The replica id of a replica fetch (in `replica_state` from v15).
fn replica_id(req: &FetchRequest, version: i16) -> i32 {
    if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    }
}

/// A time-out of the handshake or of a frame: the caller broke the protocol's pace (counted as rejected).
fn timed_out(what: &str, after: Duration) -> Error {
    Error::Protocol { peer: "follower".into(), detail: format!("{what} within {after:?}") }
}

/// Serves one connection of this broker to `leader`.
async fn serve(
    sock: TcpStream,
    leader: &Arc<Leader>,
    ctx: &Arc<Ctx>,
    gate: &Gate,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let peer = leader.route.peer.clone();
    let limits = &gate.limits;
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Answer>(MAX_IN_FLIGHT);
    // answers queued and not yet written, and when a request or an answer last went through
    let in_flight = Arc::new(AtomicUsize::new(0));
    let last_activity = Arc::new(Mutex::new(Instant::now()));
    let touch = |at: &Mutex<Instant>| *at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    let wpeer = peer.clone();
    let (w_in_flight, w_activity) = (in_flight.clone(), last_activity.clone());
    let mut writer: JoinHandle<Result<()>> = tokio::spawn(async move {
        while let Some(answer) = rx.recv().await {
            let frame = answer.await.map_err(|_| Error::Internal(format!("peer={wpeer} answer dropped")))??;
            write_frame(&mut wr, &frame, "follower").await?;
            w_in_flight.fetch_sub(1, Ordering::SeqCst);
            touch(&w_activity);
        }
        Ok(())
    });
    let mut upstream: Option<Arc<Upstream>> = None;
    let session: Arc<tokio::sync::Mutex<Option<Session>>> = Arc::default();
    let mut tasks = Vec::new();
    let mut reader = FrameReader::new(limits.max_frame);
    let accepted = Instant::now();
    let mut first = true;
    let result = loop {
        // the first request must arrive whole within the handshake time-out; later frames within
        // FRAME_TIMEOUT of their first byte; between frames, the idle time-out
        let deadline = match reader.started() {
            _ if first => accepted + limits.handshake_timeout,
            Some(at) => at + FRAME_TIMEOUT,
            None => *last_activity.lock().unwrap_or_else(|e| e.into_inner()) + limits.idle_timeout,
        };
        let frame = tokio::select! {
            f = reader.next(&mut rd, "follower") => f,
            _ = tokio::time::sleep_until(deadline) => {
                if first {
                    break Err(timed_out("no whole first request", limits.handshake_timeout));
                }
                if reader.started().is_some() {
                    break Err(timed_out("a request frame did not arrive whole", FRAME_TIMEOUT));
                }
                if in_flight.load(Ordering::SeqCst) > 0 {
                    touch(&last_activity); // answers outstanding (held fetches): not idle
                    continue;
                }
                if Instant::now() < *last_activity.lock().unwrap_or_else(|e| e.into_inner()) + limits.idle_timeout {
                    continue; // an answer went out meanwhile
                }
                break Err(Error::Network {
                    op: "read",
                    peer: "follower".into(),
                    detail: format!("idle: no request within {:?}", limits.idle_timeout),
                });
            }
            _ = shutdown.changed() => break Ok(()),
            w = &mut writer => break match w {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::Internal(format!("peer={peer} response writer: {e}"))),
            },
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        first = false;
        touch(&last_activity);
        let p = match peek_request(&frame, "follower") {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        if p.api_key == FETCH && p.api_version >= MIN_FAST_FETCH && p.api_version <= FetchRequest::VERSIONS.max {
            // a Fetch the proxy cannot decode safely is refused, as Kafka refuses a malformed request
            let (h, req) = match decode_request::<FetchRequest>(&frame, &peer) {
                Ok(d) => d,
                Err(e) => break Err(e),
            };
            if is_replica_fetch(&req, p.api_version) {
                let id = replica_id(&req, p.api_version);
                if id != gate.self_id {
                    break Err(Error::Protocol {
                        peer: "follower".into(),
                        detail: format!("replica fetch from replica id={id}, this broker is id={}", gate.self_id),
                    });
                }
                let (otx, orx) = oneshot::channel();
                in_flight.fetch_add(1, Ordering::SeqCst);
                if tx.send(orx).await.is_err() {
                    break Ok(());
                }
                let (session, ctx2, leader2) = (session.clone(), ctx.clone(), leader.clone());
                tasks.push(tokio::spawn(async move {
                    let mut g = session.lock().await;
                    let s = g.get_or_insert_with(|| {
                        Session::new(ctx2.clone(), leader2.route.clone(), leader2.stream(&ctx2.metrics))
                    });
                    let _ = otx.send(s.handle(&h, req, p.api_version).await);
                }));
                tasks.retain(|t| !t.is_finished());
                continue;
            }
        }
        let up = match upstream.as_ref().filter(|u| !u.is_dead()) {
            Some(u) => u.clone(),
            None => match leader.route.connect(ctx).await {
                Ok(u) => upstream.insert(Arc::new(u)).clone(),
                Err(e) => break Err(e),
            },
        };
        let rx_up = match up.send(&frame).await {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        if p.api_key == PRODUCE && produce_acks(&frame) == Some(0) {
            continue; // acks=0: no response
        }
        let (otx, orx) = oneshot::channel();
        in_flight.fetch_add(1, Ordering::SeqCst);
        if tx.send(orx).await.is_err() {
            break Ok(());
        }
        let apiv = (p.api_key == API_VERSIONS).then_some(p.api_version);
        let peer2 = peer.clone();
        tasks.push(tokio::spawn(async move {
            let answer = match rx_up.await {
                Ok(Ok(f)) => Ok(match apiv {
                    // Fetch's highest version capped at what the proxy decodes (an error answer, or one
                    // that cannot be read, is passed on unchanged)
                    Some(v) => cap_api_versions(&f, v, FETCH, FetchRequest::VERSIONS.max).unwrap_or(f),
                    None => f,
                }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(Error::Network { op: "read", peer: peer2, detail: "connection closed".into() }),
            };
            let _ = otx.send(answer);
        }));
        tasks.retain(|t| !t.is_finished());
    };
    drop(tx);
    for t in tasks {
        t.abort();
    }
    writer.abort();
    result
}

#[cfg(test)]
#[path = "hardening_tests.rs"]
mod hardening_tests;
