//! One TCP connection from the proxy to a leader broker, shared by concurrent requests: every request gets
//! a fresh correlation id, a reader task routes each response to whoever sent the request, and the
//! response is handed back with the caller's own correlation id restored.
//!
//! Requests are written in the order [`Upstream::send`] is called, and Kafka answers in that order, so a
//! caller that sends a pipeline of requests from one task gets its responses in order too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::wire::{
    read_frame, response_correlation_id, with_correlation_id, write_frame, REQUEST_CORRELATION_AT,
    RESPONSE_CORRELATION_AT,
};
use crate::error::{Error, Result};

type Reply = oneshot::Sender<Result<Bytes>>;

/// Requests waiting for their response: upstream correlation id → (caller's id, reply).
type Pending = Arc<Mutex<HashMap<i32, (i32, Reply)>>>;

#[derive(Debug)]
pub struct Upstream {
    peer: String,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicI32,
    dead: Arc<AtomicBool>,
    reader: JoinHandle<()>,
}

impl Upstream {
    /// Connects to `addr` (named `peer` in errors and logs).
    pub async fn connect(addr: SocketAddr, peer: &str, timeout: Duration) -> Result<Upstream> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Network {
                op: "connect",
                peer: peer.to_string(),
                detail: format!("timeout={timeout:?}"),
            })?
            .map_err(|e| super::wire::net("connect", peer, e))?;
        stream.set_nodelay(true).map_err(|e| super::wire::net("connect", peer, e))?;
        let (mut rd, wr) = stream.into_split();
        let pending: Pending = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        let (p, d, name) = (pending.clone(), dead.clone(), peer.to_string());
        let reader = tokio::spawn(async move {
            let why = loop {
                match read_frame(&mut rd, &name).await {
                    Ok(Some(frame)) => {
                        let id = match response_correlation_id(&frame, &name) {
                            Ok(id) => id,
                            Err(e) => break e,
                        };
                        let waiting = p.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                        match waiting {
                            Some((orig, reply)) => {
                                let _ = reply.send(Ok(with_correlation_id(&frame, RESPONSE_CORRELATION_AT, orig)));
                            }
                            // A caller that timed out and went away: its late answer is dropped.
                            None => tracing::debug!(peer = %name, correlation_id = id, "response nobody waits for"),
                        }
                    }
                    Ok(None) => {
                        break Error::Network { op: "read", peer: name.clone(), detail: "connection closed".into() }
                    }
                    Err(e) => break e,
                }
            };
            d.store(true, Ordering::SeqCst);
            let drained: Vec<_> = p.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
            for (_, (_, reply)) in drained {
                let _ = reply.send(Err(Error::Network { op: "read", peer: name.clone(), detail: why.to_string() }));
            }
        });
        Ok(Upstream {
            peer: peer.to_string(),
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_id: AtomicI32::new(1),
            dead,
            reader,
        })
    }

    /// Whether the connection has failed or was closed by the broker.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Writes the request frame `frame` (any correlation id) and returns where its response will arrive,
    /// carrying `frame`'s own correlation id again.
    pub async fn send(&self, frame: &Bytes) -> Result<oneshot::Receiver<Result<Bytes>>> {
        if self.is_dead() {
            return Err(Error::Network { op: "write", peer: self.peer.clone(), detail: "connection is closed".into() });
        }
        let orig = super::wire::peek_request(frame, &self.peer)?.correlation_id;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (orig, tx));
        let out = with_correlation_id(frame, REQUEST_CORRELATION_AT, id);
        let mut w = self.writer.lock().await;
        if let Err(e) = write_frame(&mut *w, &out, &self.peer).await {
            self.dead.store(true, Ordering::SeqCst);
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            return Err(e);
        }
        Ok(rx)
    }

    /// [`Upstream::send`] and wait (at most `timeout`) for the response.
    pub async fn call(&self, frame: &Bytes, timeout: Duration) -> Result<Bytes> {
        let rx = self.send(frame).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                Err(Error::Network { op: "read", peer: self.peer.clone(), detail: "connection closed".into() })
            }
            Err(_) => {
                // The connection may be wedged; callers open a new one (a late answer is dropped).
                self.dead.store(true, Ordering::SeqCst);
                Err(Error::Network {
                    op: "read",
                    peer: self.peer.clone(),
                    detail: format!("no response within {timeout:?}"),
                })
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{encode_request, frame_with_len, peek_request, FETCH};
    use super::*;
    use kafka_protocol::messages::FetchRequest;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A fake broker that answers every request with its own frame reversed in order of arrival, after
    /// echoing the correlation id.
    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (mut rd, mut wr) = s.into_split();
            while let Ok(Some(f)) = read_frame(&mut rd, "srv").await {
                let id = peek_request(&f, "srv").unwrap().correlation_id;
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(b"ok");
                wr.write_all(&frame_with_len(&body)).await.unwrap();
            }
        });
        (addr, h)
    }

    #[tokio::test]
    async fn responses_come_back_with_the_callers_correlation_ids() {
        let (addr, _srv) = echo_server().await;
        let up = Upstream::connect(addr, "broker=1", Duration::from_secs(2)).await.unwrap();
        let req = |id| encode_request(FETCH, 17, id, None, &FetchRequest::default(), "t").unwrap();
        let (a, b) = (req(1000), req(1000));
        let ra = up.send(&a).await.unwrap();
        let rb = up.send(&b).await.unwrap();
        for r in [ra, rb] {
            let f = r.await.unwrap().unwrap();
            assert_eq!(response_correlation_id(&f, "t").unwrap(), 1000);
            assert_eq!(&f[4..], b"ok");
        }
        let f = up.call(&req(-7), Duration::from_secs(2)).await.unwrap();
        assert_eq!(response_correlation_id(&f, "t").unwrap(), -7);
    }

    #[tokio::test]
    async fn a_closed_broker_fails_waiting_and_later_requests() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (mut rd, _wr) = s.into_split();
            let _ = read_frame(&mut rd, "srv").await; // read one request, then close without answering
        });
        let up = Upstream::connect(addr, "broker=2", Duration::from_secs(2)).await.unwrap();
        let req = encode_request(FETCH, 17, 5, None, &FetchRequest::default(), "t").unwrap();
        let e = up.call(&req, Duration::from_secs(5)).await.unwrap_err();
        assert!(e.to_string().contains("peer=broker=2"), "{e}");
        srv.await.unwrap();
        assert!(up.is_dead());
        assert!(up.send(&req).await.is_err());
        let refused = Upstream::connect("127.0.0.1:1".parse().unwrap(), "broker=3", Duration::from_secs(2)).await;
        assert!(matches!(refused, Err(Error::Network { op: "connect", .. })));
    }
}
