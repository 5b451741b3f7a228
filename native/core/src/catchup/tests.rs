//! The proxy against a fake leader: a small Kafka broker that keeps one in-memory log per partition,
//! answers replica fetches with Kafka's rules (leader epoch check, the one-batch minimum of Fetch v3+,
//! partition and response byte limits, a high watermark from the follower's fetch offsets), and records
//! every fetch offset it hears and every record byte it sends. The leader's fast-tier stream is written
//! with the real WAL writer into an in-memory (optionally fault-injecting) store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::protocol::StrBytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use super::wire::{
    decode_request, decode_response, encode_request, encode_response, peek_request, read_frame, write_frame,
    API_VERSIONS, FETCH,
};
use super::FastReplication;
use crate::config::{BrokerEndpoint, Config, ReplicationConfig, WalConfig};
use crate::format::batch::testing::batch;
use crate::metrics::{Metric, Metrics};
use crate::store::faulty::FaultyStore;
use crate::store::memory::MemoryStore;
use crate::store::ObjectStore;
use crate::wal::format::WalObjectBuilder;
use crate::wal::{WalWriter, WalWriterOptions};

const TOPIC: Uuid = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
const LEADER: i32 = 7;
const FOLLOWER: i32 = 8;
const VERSION: i16 = 17;
const PREFIX: &str = "w/";
const FENCED_LEADER_EPOCH: i16 = 74;

/// One batch per offset, with a payload that names the offset and a tag (so two logs can differ).
fn log_batch(offset: i64, epoch: i32, tag: u8) -> Bytes {
    let mut payload = vec![tag; 300];
    payload[..8].copy_from_slice(&offset.to_be_bytes());
    Bytes::from(batch(offset, epoch, 1, &payload))
}

#[derive(Default)]
struct LeaderState {
    epoch: i32,
    /// Per partition: batches by offset (one record each).
    log: HashMap<i32, Vec<Bytes>>,
    /// Every fetch offset a replica fetch carried, per partition, in order.
    heard: HashMap<i32, Vec<i64>>,
    /// Record bytes sent in answers to replica fetches.
    sent_bytes: u64,
    fetches: u64,
    api_versions: u64,
}

struct FakeLeader {
    addr: SocketAddr,
    state: Arc<Mutex<LeaderState>>,
}

impl FakeLeader {
    async fn start(epoch: i32) -> FakeLeader {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(Mutex::new(LeaderState { epoch, ..Default::default() }));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(serve_leader(s, st.clone()));
            }
        });
        FakeLeader { addr, state }
    }

    fn append(&self, partition: i32, n: i64, tag: u8) -> Vec<Bytes> {
        let mut st = self.state.lock().unwrap();
        let epoch = st.epoch;
        let log = st.log.entry(partition).or_default();
        let start = log.len() as i64;
        let new: Vec<Bytes> = (start..start + n).map(|o| log_batch(o, epoch, tag)).collect();
        log.extend(new.iter().cloned());
        new
    }

    fn log_bytes(&self, partition: i32) -> Vec<u8> {
        self.state.lock().unwrap().log.get(&partition).map_or_else(Vec::new, |l| l.concat())
    }

    fn heard(&self, partition: i32) -> Vec<i64> {
        self.state.lock().unwrap().heard.get(&partition).cloned().unwrap_or_default()
    }
}

async fn serve_leader(s: TcpStream, st: Arc<Mutex<LeaderState>>) {
    let (mut rd, mut wr) = s.into_split();
    while let Ok(Some(frame)) = read_frame(&mut rd, "fake").await {
        let p = peek_request(&frame, "fake").unwrap();
        let answer = match p.api_key {
            API_VERSIONS => {
                st.lock().unwrap().api_versions += 1;
                let resp = ApiVersionsResponse::default().with_api_keys(vec![
                    ApiVersion::default().with_api_key(FETCH).with_min_version(4).with_max_version(99),
                    ApiVersion::default().with_api_key(API_VERSIONS).with_min_version(0).with_max_version(3),
                ]);
                encode_response(p.correlation_id, p.api_version, &resp, "fake").unwrap()
            }
            FETCH => {
                let (_, req): (_, FetchRequest) = decode_request(&frame, "fake").unwrap();
                // Kafka reads (recording a follower's offsets) first, then parks a fetch whose min_bytes is
                // not met until max_wait; a short nap stands in for the wait of ordinary fetches
                let resp = answer_fetch(&st, &req);
                let got: usize = resp
                    .responses
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
                    .sum();
                if req.max_wait_ms > 0 && (got as i64) < i64::from(req.min_bytes) {
                    let wait = if req.min_bytes == i32::MAX { req.max_wait_ms } else { req.max_wait_ms.min(100) };
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                let frame = encode_response(p.correlation_id, p.api_version, &resp, "fake").unwrap();
                if write_frame(&mut wr, &frame, "fake").await.is_err() || wr.flush().await.is_err() {
                    return;
                }
                st.lock().unwrap().sent_bytes += got as u64;
                continue;
            }
            other => panic!("fake leader: unexpected api_key={other}"),
        };
        if write_frame(&mut wr, &answer, "fake").await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

fn answer_fetch(st: &Arc<Mutex<LeaderState>>, req: &FetchRequest) -> FetchResponse {
    let mut g = st.lock().unwrap();
    g.fetches += 1;
    let mut limit = req.max_bytes.max(0) as usize;
    let mut min_one = true;
    let mut topics = Vec::new();
    for t in &req.topics {
        let mut parts = Vec::new();
        for fp in &t.partitions {
            let mut pd = PartitionData::default().with_partition_index(fp.partition);
            if fp.current_leader_epoch != g.epoch {
                pd.error_code = FENCED_LEADER_EPOCH;
                parts.push(pd);
                continue;
            }
            g.heard.entry(fp.partition).or_default().push(fp.fetch_offset);
            let log = g.log.get(&fp.partition).cloned().unwrap_or_default();
            let leo = log.len() as i64;
            let cap = (fp.partition_max_bytes.max(0) as usize).min(limit);
            let mut out = Vec::new();
            for b in log.iter().skip(fp.fetch_offset.max(0) as usize) {
                if out.len() + b.len() > cap && !(min_one && out.is_empty()) {
                    break;
                }
                out.extend_from_slice(b);
            }
            if !out.is_empty() {
                min_one = false;
                limit = limit.saturating_sub(out.len());
            }
            pd.high_watermark = fp.fetch_offset.min(leo);
            pd.last_stable_offset = pd.high_watermark;
            pd.log_start_offset = 0;
            pd.records = Some(Bytes::from(out));
            parts.push(pd);
        }
        topics.push(FetchableTopicResponse::default().with_topic_id(t.topic_id).with_partitions(parts));
    }
    FetchResponse::default().with_responses(topics)
}

/// The leader's fast tier: a WAL stream in `store` that the test appends batches to.
struct LeaderStream {
    writer: WalWriter,
}

impl LeaderStream {
    async fn open(store: Arc<dyn ObjectStore>) -> LeaderStream {
        LeaderStream { writer: WalWriter::open(store, PREFIX, LEADER, WalWriterOptions::default()).await.unwrap() }
    }

    async fn upload(&mut self, partition: i32, first: i64, epoch: i32, batches: &[Bytes]) {
        let mut b = WalObjectBuilder::new();
        let data: Vec<u8> = batches.concat();
        b.add(*TOPIC.as_bytes(), partition, epoch, first, first + batches.len() as i64 - 1, data.into()).unwrap();
        self.writer.append(&b).await.unwrap();
    }
}

fn wal_config() -> WalConfig {
    Config::from_pairs(&[("storage.backend", "memory"), ("wal.prefix", PREFIX)]).unwrap().wal
}

fn config(leader: SocketAddr, max_lag_ms: u64) -> ReplicationConfig {
    ReplicationConfig {
        enabled: true,
        limits: crate::config::ProxyLimits::default(),
        brokers: vec![
            BrokerEndpoint { id: LEADER, host: "127.0.0.1".into(), port: leader.port() },
            BrokerEndpoint { id: FOLLOWER, host: "127.0.0.1".into(), port: 1 },
        ],
        bind: "127.0.99.{id}".into(),
        max_lag: Duration::from_millis(max_lag_ms),
        retry: Duration::from_millis(400),
        poll: Duration::from_millis(10),
        cache_bytes: 64 << 20,
        lookback_objects: 16,
        report_margin: Duration::from_millis(0),
        keepalive: Duration::from_millis(300),
        report_interval: Duration::from_millis(50),
        notify_port: 0,
    }
}

/// A follower replica: fetches `partition` through the proxy and keeps what it got.
struct Follower {
    conn: TcpStream,
    epoch: i32,
    log: Vec<u8>,
    offset: i64,
    corr: i32,
}

impl Follower {
    async fn connect(proxy: SocketAddr, epoch: i32) -> Follower {
        Follower { conn: TcpStream::connect(proxy).await.unwrap(), epoch, log: Vec::new(), offset: 0, corr: 0 }
    }

    async fn call(&mut self, api_key: i16, version: i16, frame_body: Bytes) -> Bytes {
        let _ = (api_key, version);
        write_frame(&mut self.conn, &frame_body, "follower").await.unwrap();
        read_frame(&mut self.conn, "proxy").await.unwrap().expect("an answer")
    }

    /// One replica fetch; appends what came back. Returns the partition's answer.
    async fn fetch(&mut self, partition: i32) -> PartitionData {
        self.corr += 1;
        let req = FetchRequest::default()
            .with_replica_state(ReplicaState::default().with_replica_id(BrokerId(FOLLOWER)).with_replica_epoch(3))
            .with_max_wait_ms(200)
            .with_min_bytes(1)
            .with_max_bytes(10 << 20)
            .with_session_id(0)
            .with_session_epoch(0)
            .with_topics(vec![FetchTopic::default().with_topic_id(TOPIC).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(self.epoch)
                    .with_fetch_offset(self.offset)
                    .with_last_fetched_epoch(-1)
                    .with_partition_max_bytes(64 * 1024),
            ])]);
        let frame =
            encode_request(FETCH, VERSION, self.corr, Some(StrBytes::from_static_str("replica-fetcher")), &req, "t")
                .unwrap();
        let answer = self.call(FETCH, VERSION, frame).await;
        let (corr, resp): (_, FetchResponse) = decode_response(&answer, VERSION, "t").unwrap();
        assert_eq!(corr, self.corr);
        assert_eq!(resp.session_id, 0, "the proxy never opens a fetch session");
        assert_eq!(resp.responses.len(), 1);
        let pd = resp.responses[0].partitions[0].clone();
        if let Some(r) = pd.records.as_ref().filter(|r| !r.is_empty()) {
            assert_eq!(pd.error_code, 0);
            self.log.extend_from_slice(r);
            self.offset += (r.len() / log_batch(0, 0, 0).len()) as i64;
        }
        pd
    }

    async fn fetch_until(&mut self, partition: i32, end: i64, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.offset < end {
            assert!(Instant::now() < until, "follower stuck at offset={} (want {end})", self.offset);
            self.fetch(partition).await;
        }
    }
}

async fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Bed {
    leader: FakeLeader,
    store: Arc<FaultyStore<MemoryStore>>,
    stream: LeaderStream,
    proxy: FastReplication,
    metrics: Arc<Metrics>,
    proxy_addr: SocketAddr,
}

impl Bed {
    /// A follower (epoch 5) that got the leader's first 10 batches from the fast tier.
    async fn caught_up_follower(&mut self) -> Follower {
        let mut f = Follower::connect(self.proxy_addr, 5).await;
        f.fetch(0).await; // starts following the leader's stream
        let first = self.leader.append(0, 10, 1);
        self.stream.upload(0, 0, 5, &first).await;
        wait_for(|| self.metrics.get(Metric::ReplStreamObjects) == 1, "the proxy to read the object").await;
        f.fetch_until(0, 10, Duration::from_secs(10)).await;
        assert_eq!(self.metrics.get(Metric::ReplFastBytes) as usize, f.log.len());
        f
    }
}

async fn bed(epoch: i32, max_lag_ms: u64) -> Bed {
    bed_with(epoch, max_lag_ms, 300).await
}

async fn bed_with(epoch: i32, max_lag_ms: u64, keepalive_ms: u64) -> Bed {
    let leader = FakeLeader::start(epoch).await;
    let store = Arc::new(FaultyStore::wrap(MemoryStore::new()));
    let dyn_store: Arc<dyn ObjectStore> = store.clone();
    let stream = LeaderStream::open(dyn_store.clone()).await;
    let metrics = Arc::new(Metrics::default());
    let mut cfg = config(leader.addr, max_lag_ms);
    cfg.keepalive = Duration::from_millis(keepalive_ms);
    let proxy_addr: SocketAddr = cfg.listen_addr(&cfg.brokers[0]).parse().unwrap();
    let proxy =
        FastReplication::start(cfg, FOLLOWER, dyn_store, &wal_config(), metrics.clone(), Duration::from_secs(2))
            .await
            .unwrap();
    Bed { leader, store, stream, proxy, metrics, proxy_addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_the_leaders_bytes_from_the_fast_tier_and_the_leader_hears_their_offsets() {
    let mut b = bed(5, 10_000).await;
    let mut f = Follower::connect(b.proxy_addr, 5).await;
    f.fetch(0).await; // starts following the leader's stream
    for round in 0..20 {
        let batches = b.leader.append(0, 10, 1);
        b.stream.upload(0, round * 10, 5, &batches).await;
    }
    wait_for(|| b.metrics.get(Metric::ReplStreamObjects) == 20, "the proxy to read 20 objects").await;
    f.fetch_until(0, 200, Duration::from_secs(20)).await;
    assert_eq!(f.log, b.leader.log_bytes(0), "the follower holds exactly the leader's log");
    // live: the leader appends and uploads while the follower fetches
    for round in 20..40 {
        let batches = b.leader.append(0, 10, 1);
        b.stream.upload(0, round * 10, 5, &batches).await;
        f.fetch_until(0, (round + 1) * 10, Duration::from_secs(10)).await;
    }
    assert_eq!(f.log, b.leader.log_bytes(0), "the follower holds exactly the leader's log");
    // the leader learns the follower's position (acks=all, the high watermark) from offset reports
    let heard = b.leader.heard(0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    f.fetch(0).await;
    assert_eq!(b.leader.heard(0).last(), Some(&400), "{heard:?}");
    // record bytes that crossed from the leader: at most one batch per answered report; silent reports
    // carry the follower's progress and are never answered
    tokio::time::sleep(Duration::from_millis(2500)).await; // past the silent reports' wait in the leader
    let sent = b.leader.state.lock().unwrap().sent_bytes;
    let one = log_batch(0, 5, 1).len() as u64;
    let reports = b.metrics.get(Metric::ReplReports) as u64;
    let silent = b.metrics.get(Metric::ReplSilentReports) as u64;
    assert!(sent <= reports * one, "sent={sent} reports={reports} silent={silent}");
    assert!(silent >= 1, "no silent report");
    assert!(sent < b.leader.log_bytes(0).len() as u64 / 5, "{sent}");
    let (fast, from_leader) = (b.metrics.get(Metric::ReplFastBytes), b.metrics.get(Metric::ReplLeaderBytes));
    assert_eq!((fast + from_leader) as usize, f.log.len());
    assert!(from_leader <= sent as i64 && fast as usize > f.log.len() * 3 / 4, "fast={fast} leader={from_leader}");
    assert_eq!(b.metrics.get(Metric::ReplFallbackLag) + b.metrics.get(Metric::ReplFallbackStore), 0);
    b.proxy.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_missing_from_the_fast_tier_comes_from_the_leader_after_max_lag() {
    let mut b = bed(5, 300).await;
    let mut f = b.caught_up_follower().await;
    // the leader appends; its uploader never ships it (stalled)
    b.leader.append(0, 30, 2);
    let t = Instant::now();
    f.fetch_until(0, 40, Duration::from_secs(20)).await;
    assert!(t.elapsed() >= Duration::from_millis(250), "fell back before max.lag.ms: {:?}", t.elapsed());
    assert_eq!(f.log, b.leader.log_bytes(0));
    assert!(b.metrics.get(Metric::ReplFallbackLag) >= 1);
    assert!(b.metrics.get(Metric::ReplLeaderBytes) > 0);
    b.proxy.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_batch_the_fast_tier_then_receives_is_not_lag() {
    // The leader's data reached the follower first in the batch an offset report brought back, and the
    // fast tier a moment later; the leader then has nothing more. That is not lag: no fallback, however
    // long the next answered report is away.
    let mut b = bed_with(5, 300, 2_000).await;
    let mut f = b.caught_up_follower().await;
    let batch = b.leader.append(0, 1, 3);
    tokio::time::sleep(Duration::from_millis(2_100)).await; // the next fetch carries an answered report
    f.fetch_until(0, 11, Duration::from_secs(5)).await;
    assert!(b.metrics.get(Metric::ReplLeaderBytes) > 0, "the batch came with the report");
    b.stream.upload(0, 10, 5, &batch).await;
    wait_for(|| b.metrics.get(Metric::ReplStreamObjects) == 2, "the proxy to read the object").await;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1_200) {
        f.fetch(0).await;
    }
    assert_eq!(f.offset, 11);
    assert_eq!(b.metrics.get(Metric::ReplFallbackLag), 0, "an idle, caught-up partition fell back on lag");
    assert_eq!(f.log, b.leader.log_bytes(0));
    b.proxy.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_store_sends_followers_to_the_leader_after_max_lag() {
    // The store accepts connections but answers nothing (a hung endpoint, a paused server): no error comes
    // back for far longer than max.lag.ms, and the leader keeps appending what its uploader cannot ship.
    let mut b = bed_with(5, 1_000, 500).await;
    let mut f = b.caught_up_follower().await;
    b.store.set_latency(crate::store::faulty::Op::Get, Duration::from_secs(120));
    b.store.set_latency(crate::store::faulty::Op::Head, Duration::from_secs(120));
    b.leader.append(0, 20, 2);
    let t = Instant::now();
    f.fetch_until(0, 30, Duration::from_secs(10)).await;
    assert!(t.elapsed() < Duration::from_secs(5), "fell back only after {:?} (max.lag.ms 1000)", t.elapsed());
    assert_eq!(f.log, b.leader.log_bytes(0));
    assert!(b.metrics.get(Metric::ReplFallbackLag) >= 1);
    b.proxy.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_fast_tier_sends_followers_to_the_leader_and_back() {
    let mut b = bed(5, 10_000).await;
    let mut f = b.caught_up_follower().await;
    b.store.set_outage(true);
    b.leader.append(0, 20, 2);
    f.fetch_until(0, 30, Duration::from_secs(20)).await;
    assert!(b.metrics.get(Metric::ReplFallbackStore) >= 1);
    assert!(b.metrics.get(Metric::ReplStreamErrors) >= 1);
    let leader_bytes = b.metrics.get(Metric::ReplLeaderBytes);
    assert!(leader_bytes > 0);
    // the store comes back: new data flows from the fast tier again
    b.store.set_outage(false);
    let more = b.leader.append(0, 20, 3);
    // the uploader resumes where the stream ends (it re-uploads what it could not ship)
    let all: Vec<Bytes> = b.leader.state.lock().unwrap().log[&0][10..].to_vec();
    b.stream.upload(0, 10, 5, &all).await;
    let _ = more;
    let fast_before = b.metrics.get(Metric::ReplFastBytes);
    tokio::time::sleep(Duration::from_millis(700)).await; // past retry.ms
    f.fetch_until(0, 50, Duration::from_secs(20)).await;
    assert_eq!(f.log, b.leader.log_bytes(0));
    assert!(b.metrics.get(Metric::ReplFastBytes) > fast_before, "the fast path resumed");
    b.proxy.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_epochs_and_different_bytes_are_never_served_from_the_fast_tier() {
    let mut b = bed(6, 10_000).await;
    let mut f = Follower::connect(b.proxy_addr, 6).await;
    f.fetch(0).await; // starts following the leader's stream
                      // a zombie-like range: the same offsets uploaded with the previous epoch and other bytes
    let zombie: Vec<Bytes> = (0..10).map(|o| log_batch(o, 5, 9)).collect();
    b.stream.upload(0, 0, 5, &zombie).await;
    b.leader.append(0, 10, 1);
    f.fetch_until(0, 10, Duration::from_secs(10)).await;
    assert_eq!(f.log, b.leader.log_bytes(0), "epoch-5 bytes served to an epoch-6 follower");
    // same epoch, different bytes (a bug or a forged object): detected against the leader's batch
    let forged: Vec<Bytes> = (10..20).map(|o| log_batch(o, 6, 8)).collect();
    b.stream.upload(0, 10, 6, &forged).await;
    b.leader.append(0, 10, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.fetch_until(0, 20, Duration::from_secs(10)).await;
    assert_eq!(f.log, b.leader.log_bytes(0), "forged fast-tier bytes reached the follower");
    assert!(b.metrics.get(Metric::ReplFallbackMismatch) >= 1);
    // a follower with a stale leader epoch gets the leader's error, not data
    let mut stale = Follower::connect(b.proxy_addr, 4).await;
    let pd = stale.fetch(0).await;
    assert_eq!(pd.error_code, FENCED_LEADER_EPOCH);
    assert!(stale.log.is_empty());
    b.proxy.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_are_relayed_and_the_fetch_version_is_capped() {
    let b = bed(5, 10_000).await;
    let mut f = Follower::connect(b.proxy_addr, 5).await;
    let req = encode_request(API_VERSIONS, 3, 77, None, &ApiVersionsRequest::default(), "t").unwrap();
    let answer = f.call(API_VERSIONS, 3, req).await;
    let (corr, resp): (_, ApiVersionsResponse) = decode_response(&answer, 3, "t").unwrap();
    assert_eq!(corr, 77);
    let fetch = resp.api_keys.iter().find(|k| k.api_key == FETCH).unwrap();
    assert_eq!(fetch.max_version, <FetchRequest as kafka_protocol::protocol::Message>::VERSIONS.max);
    assert_eq!(b.leader.state.lock().unwrap().api_versions, 1);
    // a consumer's fetch (replica id -1) is relayed as is
    let consumer = FetchRequest::default()
        .with_replica_state(ReplicaState::default().with_replica_id(BrokerId(-1)))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default().with_topic_id(TOPIC).with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_current_leader_epoch(5)
            .with_partition_max_bytes(1 << 20)])]);
    b.leader.append(0, 3, 1);
    let frame = encode_request(FETCH, VERSION, 78, None, &consumer, "t").unwrap();
    let answer = f.call(FETCH, VERSION, frame).await;
    let (corr, resp): (_, FetchResponse) = decode_response(&answer, VERSION, "t").unwrap();
    assert_eq!(corr, 78);
    assert_eq!(resp.responses[0].partitions[0].records.as_ref().unwrap().as_ref(), &b.leader.log_bytes(0)[..]);
    assert_eq!(b.metrics.get(Metric::ReplFetches), 0, "a consumer fetch is not a replica fetch");
    b.proxy.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_listen_address_is_a_config_error_naming_the_key() {
    let leader = FakeLeader::start(1).await;
    let cfg = config(leader.addr, 1000);
    let taken = TcpListener::bind(cfg.listen_addr(&cfg.brokers[0])).await.unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let e = FastReplication::start(cfg, FOLLOWER, store, &wal_config(), Arc::default(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("key=rsm.config.replication.fast.bind"), "{e}");
    assert!(e.to_string().contains("broker id=7"), "{e}");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_kafka_says_are_in_the_fast_tier_wait_for_it_and_their_status_is_dropped_when_stopped() {
    let mut b = bed(5, 10_000).await;
    let info = crate::fast::PartitionInfo {
        topic: "orders".into(),
        topic_id: crate::wal::format::topic_id_string(TOPIC.as_bytes()),
        partition: 1,
    };
    b.proxy.leadership(&[], std::slice::from_ref(&info)).unwrap();
    let mut f = Follower::connect(b.proxy_addr, 5).await;
    f.fetch(1).await; // nothing anywhere yet; starts following the leader's stream
                      // the leader has data the fast tier gets a moment later, while the follower's fetch waits
    let batches = b.leader.append(1, 5, 1);
    let upload = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        b.stream.upload(1, 0, 5, &batches).await;
    };
    let ((), _) = tokio::join!(upload, f.fetch(1));
    f.fetch_until(1, 5, Duration::from_secs(10)).await;
    assert_eq!(f.log, b.leader.log_bytes(1));
    // a partition of the fast tier is not fetched from the leader while its stream has nothing of it yet
    assert_eq!(b.metrics.get(Metric::ReplLeaderBytes), 0);
    assert_eq!(b.metrics.get(Metric::ReplFastBytes) as usize, f.log.len());
    assert_eq!(b.proxy.partition_rows().len(), 1, "{:?}", b.proxy.partition_rows());
    assert!(b.proxy.partition_rows()[0].starts_with("7|"), "{:?}", b.proxy.partition_rows());
    b.proxy.stop_partitions(std::slice::from_ref(&info)).unwrap();
    assert!(b.proxy.partition_rows().is_empty());
    b.proxy.close();
}
