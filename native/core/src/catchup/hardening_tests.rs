//! The proxy against callers that are not its broker, or do not behave like one (`docs/replication.md`,
//! "Hardening"): connection caps, time-outs, oversized frames, foreign processes, another broker's
//! replica id, and the release of readers of leaders no longer followed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::super::wire::{encode_request, frame_with_len, FETCH};
use super::FastReplication;
use crate::config::Config;
use crate::metrics::{Metric, Metrics};
use crate::store::memory::MemoryStore;
use crate::store::ObjectStore;

const SELF: i32 = 1;
const LEADER: i32 = 7;

/// A proxy for leader 7 in broker 1, with `extra` settings; returns it, its metrics and the address of its
/// listener. The leader is at `leader_port` (None: a port nobody listens on).
async fn proxy(extra: &[(&str, &str)], leader_port: Option<u16>) -> (FastReplication, Arc<Metrics>, SocketAddr) {
    let port =
        leader_port.unwrap_or_else(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let brokers = format!("{SELF}@127.0.0.1:1,{LEADER}@127.0.0.1:{port}");
    let mut pairs = vec![
        ("storage.backend", "memory"),
        ("wal.prefix", "w/"),
        ("replication.fast.enable", "true"),
        ("replication.fast.brokers", brokers.as_str()),
        ("replication.fast.bind", "127.0.98.{id}"),
    ];
    pairs.extend_from_slice(extra);
    let cfg = Config::from_pairs(&pairs).unwrap();
    let addr: SocketAddr = cfg.replication.listen_addr(&cfg.replication.brokers[1]).parse().unwrap();
    let metrics = Arc::new(Metrics::default());
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let p = FastReplication::start(cfg.replication, SELF, store, &cfg.wal, metrics.clone(), Duration::from_secs(1))
        .await
        .unwrap();
    (p, metrics, addr)
}

/// Reads until the proxy closes the connection; returns what arrived and how long it took (None: still
/// open after `within`).
async fn until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Option<Duration>) {
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(t + within, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(t.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, None),
        }
    }
}

fn replica_fetch(replica_id: i32) -> Bytes {
    let req = FetchRequest::default()
        .with_replica_state(ReplicaState::default().with_replica_id(BrokerId(replica_id)).with_replica_epoch(1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(uuid::Uuid::from_u128(5))
            .with_partitions(vec![FetchPartition::default().with_partition(0).with_current_leader_epoch(1)])]);
    frame_with_len(&encode_request(FETCH, 16, 3, None, &req, "t").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_silent_ones_closed_at_the_handshake_time_out() {
    let (p, metrics, addr) = proxy(
        &[("replication.fast.max.connections.per.leader", "2"), ("replication.fast.handshake.timeout.ms", "300")],
        None,
    )
    .await;
    let connected = Instant::now();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = until_closed(&mut c, Duration::from_millis(200)).await;
    assert!(closed.is_some(), "a third connection over the cap of 2 is closed at once");
    assert_eq!(metrics.get(Metric::ReplRejected), 1);
    // a 64 MiB size prefix (under the 100 MiB cap) followed by 16 bytes: 64 KiB reserved for it, closed at
    // the handshake time-out
    a.write_all(&(64i32 << 20).to_be_bytes()).await.unwrap();
    a.write_all(&[7; 16]).await.unwrap();
    for s in [&mut a, &mut b] {
        let (got, closed) = until_closed(s, Duration::from_secs(3)).await;
        assert!(got.is_empty());
        closed.expect("closed at the handshake time-out");
        let after = connected.elapsed();
        assert!(after >= Duration::from_millis(250) && after < Duration::from_secs(2), "{after:?}");
    }
    assert_eq!(metrics.get(Metric::ReplRejected), 3);
    // the slots are free again
    let mut d = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = until_closed(&mut d, Duration::from_millis(100)).await;
    assert!(closed.is_none(), "a connection under the cap is served");
    // a frame longer than the cap is refused at its length prefix
    d.write_all(&(200i32 << 20).to_be_bytes()).await.unwrap();
    let (_, closed) = until_closed(&mut d, Duration::from_millis(500)).await;
    assert!(closed.is_some());
    p.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_fetch_with_another_brokers_id_or_a_huge_count_closes_the_connection() {
    let (p, metrics, addr) = proxy(&[], None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&replica_fetch(2)).await.unwrap();
    let (got, closed) = until_closed(&mut s, Duration::from_secs(2)).await;
    assert!(got.is_empty() && closed.is_some(), "nothing served to a replica id that is not this broker's");
    // the Fetch v16 with a topics count of 2^32-1
    let mut f = replica_fetch(SELF).to_vec();
    f.truncate(4 + 8 + 2 + 1 + 4 + 4 + 4 + 1 + 4 + 4);
    f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let len = (f.len() - 4) as i32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&f).await.unwrap();
    let (got, closed) = until_closed(&mut s, Duration::from_secs(2)).await;
    assert!(got.is_empty() && closed.is_some());
    assert_eq!(metrics.get(Metric::ReplRejected), 2);
    p.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_from_another_process_is_refused_before_anything_is_read() {
    let (p, metrics, addr) = proxy(&[], None).await;
    // another process connects and sends a replica fetch claiming this broker's id
    let fetch: String = replica_fetch(SELF).iter().map(|b| format!("\\x{b:02x}")).collect();
    let script =
        format!("exec 3<>/dev/tcp/{}/{}; printf '{fetch}' >&3; timeout 2 cat <&3 | wc -c", addr.ip(), addr.port());
    let out = tokio::process::Command::new("bash").arg("-c").arg(&script).output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "nothing is answered to another process");
    assert_eq!(metrics.get(Metric::ReplRefused), 1);
    assert_eq!(metrics.get(Metric::ReplFetches), 0);
    // this process is served
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = until_closed(&mut s, Duration::from_millis(300)).await;
    assert!(closed.is_none());
    assert_eq!(metrics.get(Metric::ReplRefused), 1);
    p.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_of_a_leader_no_longer_followed_is_released_and_restarted_on_demand() {
    // a leader that takes connections and never answers: the replica fetch's offset report waits
    let leader = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let leader_port = leader.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = leader.accept().await {
            conns.push(c);
        }
    });
    let (p, _metrics, addr) = proxy(&[("replication.fast.release.ms", "300")], Some(leader_port)).await;
    let stream_of = |p: &FastReplication| p.status()["leaders"][0]["stream"].clone();
    assert!(stream_of(&p).is_null());
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&replica_fetch(SELF)).await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while stream_of(&p).is_null() {
        assert!(Instant::now() < until, "the replica fetch starts following the leader's stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // in use: kept
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!stream_of(&p).is_null(), "a stream a connection uses is kept");
    drop(s);
    let until = Instant::now() + Duration::from_secs(5);
    while !stream_of(&p).is_null() {
        assert!(Instant::now() < until, "the stream of a leader no connection uses is released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(p.partition_rows().is_empty(), "{:?}", p.partition_rows());
    // and started again by the next replica fetch
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&replica_fetch(SELF)).await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while stream_of(&p).is_null() {
        assert!(Instant::now() < until, "restarted on demand");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.close();
    held.abort();
}
