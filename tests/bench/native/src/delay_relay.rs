//! `fasttier-bench delay-relay`: a TCP relay that holds every byte a client sends for a fixed time before
//! passing it on; the answers flow back untouched.
//!
//! Put in front of an object store, it adds the same delay to the time to first byte of every request
//! (a GET reaches the store `delay` later) without limiting bandwidth: the benchmarks' model of a distant
//! store, for processes that talk to it over real sockets (a broker), where `tc netem` is not available.
//! The response direction is a plain copy; the request direction is a delay line whose content is capped
//! at `max_buffered` bytes (a client that sends faster than `max_buffered / delay` waits, so an upload
//! is slowed rather than the relay's memory growing).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes read from the client at a time.
const READ_BYTES: usize = 64 * 1024;
/// Buffer of the response copy.
const COPY_BYTES: usize = 256 * 1024;

/// What a relay needs to know.
#[derive(Clone, Copy, Debug)]
pub struct RelaySpec {
    pub target: SocketAddr,
    pub delay: Duration,
    pub max_buffered: usize,
}

/// Accepts connections on `listener` forever, relaying each to `spec.target`.
pub async fn serve(listener: TcpListener, spec: RelaySpec) -> std::io::Result<()> {
    loop {
        let (client, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = relay(client, spec).await {
                eprintln!("delay-relay: connection from {peer} to {}: {e}", spec.target);
            }
        });
    }
}

/// Relays one connection until both directions have ended.
async fn relay(client: TcpStream, spec: RelaySpec) -> std::io::Result<()> {
    let upstream = TcpStream::connect(spec.target).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (client_r, client_w) = client.into_split();
    let (up_r, up_w) = upstream.into_split();
    let requests = delay_line(client_r, up_w, spec.delay, spec.max_buffered);
    let responses = copy_back(up_r, client_w);
    let (a, b) = tokio::join!(requests, responses);
    a.and(b)
}

/// Copies the store's answers to the client as they come.
async fn copy_back(from: OwnedReadHalf, mut to: OwnedWriteHalf) -> std::io::Result<()> {
    let mut from = BufReader::with_capacity(COPY_BYTES, from);
    let copied = tokio::io::copy_buf(&mut from, &mut to).await;
    let _ = to.shutdown().await;
    copied.map(|_| ())
}

/// Passes what `from` sends to `to`, each byte `delay` after it arrived; at most `max_buffered` bytes
/// are held at a time (a channel of that many reads of at most `READ_BYTES`). The end of the client's data
/// (its FIN) is passed on with the same delay.
async fn delay_line(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    max_buffered: usize,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Bytes>)>((max_buffered / READ_BYTES).max(1));
    let reader = async move {
        loop {
            let mut buf = BytesMut::with_capacity(READ_BYTES);
            let n = from.read_buf(&mut buf).await?;
            let item = (Instant::now() + delay, (n > 0).then(|| buf.freeze()));
            if tx.send(item).await.is_err() || n == 0 {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let writer = async move {
        while let Some((due, item)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match item {
                Some(bytes) => to.write_all(&bytes).await?,
                None => break,
            }
        }
        let _ = to.shutdown().await;
        Ok::<(), std::io::Error>(())
    };
    let (a, b) = tokio::join!(reader, writer);
    a.and(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers every line with the same line, upper-cased.
    async fn upper_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        let up: Vec<u8> = buf[..n].iter().map(u8::to_ascii_uppercase).collect();
                        if s.write_all(&up).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn start_relay(target: SocketAddr, delay: Duration, max_buffered: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(l, RelaySpec { target, delay, max_buffered }));
        addr
    }

    #[tokio::test]
    async fn every_request_arrives_late_and_intact() {
        let server = upper_server().await;
        let relay = start_relay(server, Duration::from_millis(80), 1 << 20).await;
        let mut c = TcpStream::connect(relay).await.unwrap();
        for round in 0..3 {
            let msg = format!("request {round}\n");
            let t0 = std::time::Instant::now();
            c.write_all(msg.as_bytes()).await.unwrap();
            let mut got = vec![0u8; msg.len()];
            c.read_exact(&mut got).await.unwrap();
            let waited = t0.elapsed();
            assert_eq!(got, msg.to_uppercase().into_bytes(), "round {round}");
            assert!(waited >= Duration::from_millis(80), "round {round}: answered after {waited:?}, before the delay");
        }
    }

    #[tokio::test]
    async fn a_large_body_passes_byte_exact_through_a_small_buffer() {
        // 4 MiB through a delay line that may hold only 256 KiB: the sender is held back, nothing is lost.
        let server = upper_server().await;
        let relay = start_relay(server, Duration::from_millis(5), 256 * 1024).await;
        let c = TcpStream::connect(relay).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let body: Vec<u8> = (0..4 << 20).map(|i: u32| b"abcdefghijklmnopqrstuvwxyz"[(i % 26) as usize]).collect();
        let expect: Vec<u8> = body.iter().map(u8::to_ascii_uppercase).collect();
        let send = tokio::spawn(async move {
            w.write_all(&body).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        send.await.unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes changed on the way");
    }
}
