//! The new-object notification channel: a leader tells the followers of its fast-tier stream that a new
//! object exists the moment its upload completed, so they read it at once instead of polling the bucket.
//!
//! Every broker with `replication.fast.notify.port` set listens on that port, on its own host from
//! `replication.fast.brokers`. A follower's [`LeaderStream`](super::follow::LeaderStream) connects to its
//! leader's listener, sends a [`HELLO_LEN`]-byte hello and then only reads: one [`TIP_LEN`]-byte message
//! per upload (the stream's incarnation and next seq), and the same message every [`HEARTBEAT`] while
//! nothing is uploaded, so a dead connection is noticed. Format: `docs/formats.md`, "Notification channel".
//!
//! The channel carries no record data and no credentials. A follower uses a message only as a hint to look
//! for the next object now: everything it serves is read from the bucket and verified as before, so a lost,
//! late or forged message costs at most a GET or a poll interval, never a wrong byte. The listener reads
//! nothing but the fixed-size hello (with a time-out), caps its connections and drops a follower that does
//! not take its messages.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::PREFIX;
use crate::error::{Error, Result};
use crate::fast::StreamTip;
use crate::metrics::{Metric, Metrics};

/// `FTN1`: a follower's hello.
const HELLO_MAGIC: [u8; 4] = *b"FTN1";
/// `FTT1`: a tip message.
const TIP_MAGIC: [u8; 4] = *b"FTT1";
/// Hello: magic, follower broker id (i32 BE).
pub const HELLO_LEN: usize = 8;
/// Tip: magic, leader broker id (i32 BE), incarnation (u64 BE), next seq (u64 BE).
pub const TIP_LEN: usize = 24;
/// A tip is repeated this often while nothing is uploaded.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A follower that heard nothing for this long reconnects.
pub const SILENCE: Duration = Duration::from_secs(15);
/// Time for a new connection to send its hello, and for a follower to take a message.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Followers connected at once (each follower broker holds one connection per leader it follows).
pub const MAX_CONNECTIONS: usize = 1024;

fn encode_tip(leader: i32, tip: Option<StreamTip>) -> [u8; TIP_LEN] {
    let mut m = [0u8; TIP_LEN];
    m[..4].copy_from_slice(&TIP_MAGIC);
    m[4..8].copy_from_slice(&leader.to_be_bytes());
    if let Some(t) = tip {
        m[8..16].copy_from_slice(&t.incarnation.to_be_bytes());
        m[16..24].copy_from_slice(&t.next_seq.to_be_bytes());
    }
    m
}

/// Decodes a tip message from `leader`: `Ok(None)` for "no upload yet".
pub fn decode_tip(m: &[u8; TIP_LEN], leader: i32) -> Result<Option<StreamTip>> {
    let bad = |detail: String| Error::Protocol { peer: format!("notify leader={leader}"), detail };
    if m[..4] != TIP_MAGIC {
        return Err(bad(format!("magic={:?} is not a tip", &m[..4])));
    }
    let from = i32::from_be_bytes(m[4..8].try_into().expect("4 bytes"));
    if from != leader {
        return Err(bad(format!("message of broker={from}")));
    }
    let incarnation = u64::from_be_bytes(m[8..16].try_into().expect("8 bytes"));
    let next_seq = u64::from_be_bytes(m[16..24].try_into().expect("8 bytes"));
    Ok((incarnation != 0 || next_seq != 0).then_some(StreamTip { incarnation, next_seq }))
}

/// The leader's side: the listener and one task per connected follower. Dropping it stops them all.
#[derive(Debug)]
pub struct NotifyServer {
    accept: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl NotifyServer {
    /// Listens on `addr` and tells every connected follower `tip` as it changes. Must run on a tokio runtime.
    pub async fn start(
        addr: &str,
        broker_id: i32,
        tip: watch::Receiver<Option<StreamTip>>,
        metrics: Arc<Metrics>,
    ) -> Result<NotifyServer> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            Error::config(
                format!("{PREFIX}replication.fast.notify.port"),
                format!("cannot listen on addr={addr} for new-object notifications: {e}"),
            )
        })?;
        info!(listen = %addr, "fast replication: notification listener for followers");
        let (stop, _) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, broker_id, tip, metrics, stop.subscribe()));
        Ok(NotifyServer { accept, stop })
    }
}

impl Drop for NotifyServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker_id: i32,
    tip: watch::Receiver<Option<StreamTip>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connected = Arc::new(AtomicI64::new(0));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // out of file descriptors and the like: do not spin
                warn!(error = %e, "fast replication: notification listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "fast replication: notification listener full; connection refused");
            continue;
        };
        let (tip, metrics, connected, stop) = (tip.clone(), metrics.clone(), connected.clone(), stop.clone());
        tokio::spawn(async move {
            metrics.set(Metric::ReplNotifyConnections, connected.fetch_add(1, Ordering::Relaxed) + 1);
            if let Err(e) = serve_follower(sock, broker_id, tip, stop).await {
                debug!(%peer, error = %e, "fast replication: notification connection ended");
            }
            metrics.set(Metric::ReplNotifyConnections, connected.fetch_sub(1, Ordering::Relaxed) - 1);
            drop(slot);
        });
    }
}

async fn serve_follower(
    mut sock: TcpStream,
    broker_id: i32,
    mut tip: watch::Receiver<Option<StreamTip>>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let io = |e: std::io::Error| Error::Network { op: "notify", peer: peer.clone(), detail: e.to_string() };
    let _ = sock.set_nodelay(true);
    let mut hello = [0u8; HELLO_LEN];
    tokio::time::timeout(IO_TIMEOUT, sock.read_exact(&mut hello))
        .await
        .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(io)?;
    if hello[..4] != HELLO_MAGIC {
        return Err(Error::Protocol { peer: peer.clone(), detail: "not a notification hello".into() });
    }
    loop {
        let msg = encode_tip(broker_id, *tip.borrow_and_update());
        tokio::time::timeout(IO_TIMEOUT, sock.write_all(&msg))
            .await
            .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
            .map_err(io)?;
        tokio::select! {
            changed = tip.changed() => if changed.is_err() { return Ok(()) },
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = stop.changed() => return Ok(()),
            // the follower never sends after its hello: readable means it closed (or misbehaves)
            _ = sock.readable() => {
                let mut b = [0u8; 1];
                match sock.try_read(&mut b) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
    }
}

/// The follower's side for one leader: keeps a connection to the leader's listener and publishes the newest
/// tip heard (`None` while disconnected). Dropping it stops the task.
#[derive(Debug)]
pub struct NotifyClient {
    task: JoinHandle<()>,
}

impl NotifyClient {
    /// Connects to `addr` (the leader's host and `replication.fast.notify.port`) and keeps reconnecting.
    pub fn start(
        addr: String,
        leader: i32,
        self_id: i32,
        heard: watch::Sender<Option<StreamTip>>,
        metrics: Arc<Metrics>,
    ) -> NotifyClient {
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            let mut logged = false;
            loop {
                let r = listen(&addr, leader, self_id, &heard, &metrics).await;
                heard.send_replace(None);
                match r {
                    Ok(()) => backoff = Duration::from_millis(200),
                    Err(e) => {
                        if !logged {
                            warn!(leader, addr = %addr, error = %e, "fast replication: no notification channel to the leader; polling its stream");
                            logged = true;
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        });
        NotifyClient { task }
    }
}

impl Drop for NotifyClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(
    addr: &str,
    leader: i32,
    self_id: i32,
    heard: &watch::Sender<Option<StreamTip>>,
    metrics: &Metrics,
) -> Result<()> {
    let io = |op: &'static str| {
        move |e: std::io::Error| Error::Network {
            op,
            peer: format!("notify leader={leader} addr={addr}"),
            detail: e.to_string(),
        }
    };
    let mut sock = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io("connect")(std::io::ErrorKind::TimedOut.into()))?
        .map_err(io("connect"))?;
    let _ = sock.set_nodelay(true);
    let mut hello = [0u8; HELLO_LEN];
    hello[..4].copy_from_slice(&HELLO_MAGIC);
    hello[4..].copy_from_slice(&self_id.to_be_bytes());
    sock.write_all(&hello).await.map_err(io("write"))?;
    let mut first = true;
    loop {
        let mut m = [0u8; TIP_LEN];
        match tokio::time::timeout(SILENCE, sock.read_exact(&mut m)).await {
            Err(_) => return Err(io("read")(std::io::ErrorKind::TimedOut.into())),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r.map_err(io("read"))?,
        };
        let tip = decode_tip(&m, leader)?;
        if first {
            info!(leader, addr = %addr, "fast replication: notification channel to the leader up");
            first = false;
        }
        if tip.is_some() && heard.borrow().as_ref() != tip.as_ref() {
            metrics.inc(Metric::ReplNotifications);
        }
        // a heartbeat repeats the tip: the stream is not woken for what it already heard
        heard.send_if_modified(|h| {
            let changed = *h != tip;
            *h = tip;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tips_round_trip_and_foreign_or_garbage_messages_are_refused() {
        let t = StreamTip { incarnation: 7, next_seq: 42 };
        assert_eq!(decode_tip(&encode_tip(3, Some(t)), 3).unwrap(), Some(t));
        assert_eq!(decode_tip(&encode_tip(3, None), 3).unwrap(), None);
        assert!(decode_tip(&encode_tip(4, Some(t)), 3).unwrap_err().to_string().contains("broker=4"));
        assert!(decode_tip(&[0xAB; TIP_LEN], 3).is_err());
    }

    #[tokio::test]
    async fn followers_hear_every_upload_at_once_and_again_after_a_reconnect() {
        let (tx, rx) = watch::channel(None);
        let metrics = Arc::new(Metrics::default());
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap().to_string();
        drop(probe);
        let server = NotifyServer::start(&addr, 1, rx, metrics.clone()).await.unwrap();
        let (heard_tx, mut heard) = watch::channel(None);
        let _client = NotifyClient::start(addr.clone(), 1, 2, heard_tx, metrics.clone());
        let wait = |heard: &mut watch::Receiver<Option<StreamTip>>, want: Option<StreamTip>| {
            let mut heard = heard.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), heard.wait_for(|h| *h == want)).await.unwrap().unwrap();
            }
        };
        for seq in 1..=3 {
            let t = Some(StreamTip { incarnation: 9, next_seq: seq });
            tx.send_replace(t);
            wait(&mut heard, t).await;
        }
        assert!(metrics.get(Metric::ReplNotifications) >= 3);
        assert_eq!(metrics.get(Metric::ReplNotifyConnections), 1);
        // the leader restarts: the follower reconnects and hears the current tip first
        drop(server);
        wait(&mut heard, None).await;
        let (tx2, rx2) = watch::channel(Some(StreamTip { incarnation: 10, next_seq: 1 }));
        let _server = NotifyServer::start(&addr, 1, rx2, metrics.clone()).await.unwrap();
        wait(&mut heard, Some(StreamTip { incarnation: 10, next_seq: 1 })).await;
        drop(tx2);
    }

    #[tokio::test]
    async fn the_listener_refuses_garbage_and_silent_peers_within_its_timeout() {
        let (_tx, rx) = watch::channel(Some(StreamTip { incarnation: 1, next_seq: 5 }));
        let metrics = Arc::new(Metrics::default());
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap().to_string();
        drop(probe);
        let _server = NotifyServer::start(&addr, 1, rx, metrics.clone()).await.unwrap();
        // garbage hello: closed without a message
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "nothing is sent to a peer that is not a follower");
        // a peer that says nothing is dropped after the hello time-out
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let n = tokio::time::timeout(IO_TIMEOUT + Duration::from_secs(2), s.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0);
    }
}
