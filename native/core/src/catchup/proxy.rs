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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiVersionsResponse, FetchRequest, ProduceRequest};
use kafka_protocol::protocol::Message;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::fetch::{is_replica_fetch, Ctx, Route, Session};
use super::follow::{FollowSettings, LeaderStream, Tp};
use super::upstream::Upstream;
use super::wire::{
    decode_request, decode_response, encode_response, peek_request, read_frame, write_frame, API_VERSIONS, FETCH,
};
use crate::config::{ReplicationConfig, WalConfig, PREFIX};
use crate::error::{Error, Result};
use crate::fast::{parse_topic_id, PartitionInfo};
use crate::metrics::{Metric, Metrics};
use crate::store::ObjectStore;
use crate::wal::format::topic_id_string;

/// Produce's API key.
const PRODUCE: i16 = 0;
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
}

impl Leader {
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
        };
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
                settings: settings.clone(),
                stream: Mutex::new(None),
                listen: listen.clone(),
            });
            info!(listen = %listen, leader = %leader.route.peer, "fast replication: proxy listening");
            listeners.push(tokio::spawn(accept_loop(listener, leader.clone(), ctx.clone(), shutdown.subscribe())));
            leaders.push(leader);
        }
        listeners.push(tokio::spawn(log_summaries(ctx.clone(), leaders.clone(), shutdown.subscribe())));
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

async fn accept_loop(listener: TcpListener, leader: Arc<Leader>, ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((sock, from)) => {
                let _ = sock.set_nodelay(true);
                debug!(%from, leader = %leader.route.peer, "fast replication: connection");
                let (leader, ctx, shutdown) = (leader.clone(), ctx.clone(), shutdown.clone());
                tokio::spawn(async move {
                    ctx.metrics.add(Metric::ReplConnections, 1);
                    if let Err(e) = serve(sock, &leader, &ctx, shutdown).await {
                        // the follower sees a closed connection, as when a leader goes away, and reconnects
                        info!(leader = %leader.route.peer, error = %e, "fast replication: connection closed");
                    }
                    ctx.metrics.add(Metric::ReplConnections, -1);
                });
            }
            Err(e) => {
                warn!(error = %e, "fast replication: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

type Answer = oneshot::Receiver<Result<Bytes>>;

/// Serves one connection of this broker to `leader`.
async fn serve(
    sock: TcpStream,
    leader: &Arc<Leader>,
    ctx: &Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let peer = leader.route.peer.clone();
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Answer>(MAX_IN_FLIGHT);
    let wpeer = peer.clone();
    let mut writer: JoinHandle<Result<()>> = tokio::spawn(async move {
        while let Some(answer) = rx.recv().await {
            let frame = answer.await.map_err(|_| Error::Internal(format!("peer={wpeer} answer dropped")))??;
            write_frame(&mut wr, &frame, "follower").await?;
        }
        Ok(())
    });
    let mut upstream: Option<Arc<Upstream>> = None;
    let session: Arc<tokio::sync::Mutex<Option<Session>>> = Arc::default();
    let mut tasks = Vec::new();
    let result = loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, "follower") => f,
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
        let p = match peek_request(&frame, "follower") {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        if p.api_key == FETCH && p.api_version >= MIN_FAST_FETCH && p.api_version <= FetchRequest::VERSIONS.max {
            if let Ok((h, req)) = decode_request::<FetchRequest>(&frame, &peer) {
                if is_replica_fetch(&req, p.api_version) {
                    let (otx, orx) = oneshot::channel();
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
        if p.api_key == PRODUCE && no_response(&frame, &peer) {
            continue;
        }
        let (otx, orx) = oneshot::channel();
        if tx.send(orx).await.is_err() {
            break Ok(());
        }
        let apiv = (p.api_key == API_VERSIONS).then_some(p.api_version);
        let peer2 = peer.clone();
        tasks.push(tokio::spawn(async move {
            let answer = match rx_up.await {
                Ok(Ok(f)) => Ok(match apiv {
                    Some(v) => cap_fetch_version(f, v, &peer2),
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

/// Whether a Produce request expects no response (`acks=0`).
fn no_response(frame: &Bytes, peer: &str) -> bool {
    decode_request::<ProduceRequest>(frame, peer).is_ok_and(|(_, r)| r.acks == 0)
}

/// The ApiVersions answer with Fetch's max version capped at what the proxy decodes (unchanged if it
/// cannot be decoded, e.g. an error answer in an older version).
fn cap_fetch_version(frame: Bytes, version: i16, peer: &str) -> Bytes {
    let Ok((id, mut resp)) = decode_response::<ApiVersionsResponse>(&frame, version, peer) else { return frame };
    let max = FetchRequest::VERSIONS.max;
    let mut changed = false;
    for k in resp.api_keys.iter_mut().filter(|k| k.api_key == FETCH && k.max_version > max) {
        k.max_version = max;
        changed = true;
    }
    if !changed {
        return frame;
    }
    encode_response(id, version, &resp, peer).unwrap_or(frame)
}
