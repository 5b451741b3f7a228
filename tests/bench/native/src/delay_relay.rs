//! `fasttier-bench delay-relay`: a TCP relay in front of an object store that holds every HTTP request a
//! client sends for a time that depends on the request's method before passing it on; the answers flow
//! back untouched.
//!
//! Put in front of an object store, it adds a delay to the time to first byte of every request (a GET
//! reaches the store `delay` later) without limiting bandwidth: the benchmarks' model of a distant or
//! slower store, for processes that talk to it over real sockets (a broker), where `tc netem` is not
//! available. Profiles (tests/bench/zones.py): S3-Express-like, +5 ms on every request; S3-Standard-like,
//! +30 ms on PUT and POST (multipart create/complete), +15 ms on GET, HEAD and everything else.
//!
//! The request direction is a delay line: every byte of a request is passed on `delay(method)` after it
//! arrived, so the request's first byte reaches the store that much later and a body keeps its pace. To
//! know which request a byte belongs to, the relay follows HTTP/1.1 framing ([`Framer`]): a request line and
//! headers up to the empty line, then `Content-Length` bytes of body, or a `Transfer-Encoding: chunked`
//! body (chunk-size lines, data, trailers). The plugin's S3 client (aws-sdk-s3 with checksums "when
//! required") sends Content-Length bodies; its `aws-chunked` content encoding, when used, also comes with a
//! Content-Length. A byte stream that does not parse as HTTP/1.1 requests (or a head longer than
//! [`MAX_HEAD`]) is passed on with the method-independent delay from there on, never dropped or changed.
//!
//! Memory: the delay line holds at most `max_buffered` bytes per connection (a client that sends faster
//! than `max_buffered / delay` waits, so an upload is slowed rather than the relay's memory growing); the
//! framer keeps at most one request head ([`MAX_HEAD`]) or one chunk-size/trailer line ([`MAX_LINE`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes read from the client at a time.
const READ_BYTES: usize = 64 * 1024;
/// Buffer of the response copy.
const COPY_BYTES: usize = 256 * 1024;
/// Longest request head (request line and headers) the framer follows; longer: unframed from there on.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line of a chunked body.
pub const MAX_LINE: usize = 4096;
/// Longest method token; a longer first token is not HTTP.
const MAX_METHOD: usize = 16;

/// The delay of a request by its method; `default` for methods not listed (and for unframed bytes).
#[derive(Clone, Debug, Default)]
pub struct Delays {
    pub default: Duration,
    pub by_method: Vec<(String, Duration)>,
}

impl Delays {
    /// The same delay for every request.
    #[cfg(test)]
    pub fn uniform(delay: Duration) -> Self {
        Delays { default: delay, by_method: Vec::new() }
    }

    /// Parses "METHOD=MS" (e.g. "PUT=30").
    pub fn parse_method(spec: &str) -> Result<(String, Duration), String> {
        let (m, ms) = spec.split_once('=').ok_or_else(|| format!("expected METHOD=MS, got {spec:?}"))?;
        let m = m.trim().to_ascii_uppercase();
        if m.is_empty() || m.len() > MAX_METHOD || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("not an HTTP method: {m:?}"));
        }
        let ms: u64 = ms.trim().parse().map_err(|e| format!("{spec:?}: {e}"))?;
        Ok((m, Duration::from_millis(ms)))
    }

    pub fn of(&self, method: &[u8]) -> Duration {
        self.by_method.iter().find(|(m, _)| m.as_bytes() == method).map_or(self.default, |(_, d)| *d)
    }

    pub fn describe(&self) -> Value {
        let by: serde_json::Map<String, Value> =
            self.by_method.iter().map(|(m, d)| (m.clone(), json!(d.as_millis() as u64))).collect();
        json!({"default_ms": self.default.as_millis() as u64, "by_method_ms": by})
    }
}

/// Requests seen, by method, and connections whose bytes stopped parsing as HTTP/1.1.
#[derive(Default, Debug)]
pub struct Stats {
    pub put: AtomicU64,
    pub post: AtomicU64,
    pub get: AtomicU64,
    pub head: AtomicU64,
    pub delete: AtomicU64,
    pub other: AtomicU64,
    pub unframed: AtomicU64,
}

impl Stats {
    fn count(&self, method: &[u8]) {
        let c = match method {
            b"PUT" => &self.put,
            b"POST" => &self.post,
            b"GET" => &self.get,
            b"HEAD" => &self.head,
            b"DELETE" => &self.delete,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({"requests": {"PUT": g(&self.put), "POST": g(&self.post), "GET": g(&self.get), "HEAD": g(&self.head),
                            "DELETE": g(&self.delete), "other": g(&self.other)},
               "unframed_connections": g(&self.unframed)})
    }
}

/// What a relay needs to know.
#[derive(Clone, Debug)]
pub struct RelaySpec {
    pub target: SocketAddr,
    pub delays: Arc<Delays>,
    pub max_buffered: usize,
    pub stats: Arc<Stats>,
}

/// Accepts connections on `listener` forever, relaying each to `spec.target`.
pub async fn serve(listener: TcpListener, spec: RelaySpec) -> std::io::Result<()> {
    loop {
        let (client, peer) = listener.accept().await?;
        let spec = spec.clone();
        tokio::spawn(async move {
            let target = spec.target;
            if let Err(e) = relay(client, spec).await {
                eprintln!("delay-relay: connection from {peer} to {target}: {e}");
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
    let framer = Framer::new(spec.delays.clone(), spec.stats.clone());
    let requests = delay_line(client_r, up_w, framer, spec.max_buffered);
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

/// Passes what `from` sends to `to`, each byte the delay of its request after it arrived; at most
/// `max_buffered` bytes are held at a time (a channel of that many pieces of at most `READ_BYTES`: the
/// framer only splits reads, never joins them). The end of the client's data (its FIN) is passed on with
/// the delay of the last request.
async fn delay_line(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut framer: Framer,
    max_buffered: usize,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Bytes>)>((max_buffered / READ_BYTES).max(1));
    let reader = async move {
        let mut pieces = Vec::new();
        loop {
            let mut buf = BytesMut::with_capacity(READ_BYTES);
            let n = from.read_buf(&mut buf).await?;
            let now = Instant::now();
            if n == 0 {
                let _ = tx.send((now + framer.current_delay(), None)).await;
                return Ok::<(), std::io::Error>(());
            }
            framer.feed(buf.freeze(), now, &mut pieces);
            for (due, bytes) in pieces.drain(..) {
                if tx.send((due, Some(bytes))).await.is_err() {
                    return Ok(());
                }
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

/// Where the framer is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The next byte starts a request.
    Start,
    /// In a request head (request line, headers).
    Head,
    /// In a Content-Length body: bytes left.
    Body(u64),
    /// In a chunked body, at a chunk-size line.
    ChunkSize,
    /// In a chunk's data: bytes left (then its CRLF).
    ChunkData(u64),
    /// After a chunk's data: CRLF bytes left.
    ChunkEnd(u8),
    /// In the trailer section of a chunked body (ends with an empty line).
    Trailer,
    /// Not HTTP/1.1 as far as the framer can tell: every byte from here with the current delay.
    Unframed,
}

/// Follows HTTP/1.1 request framing in a client's byte stream and stamps every byte with its due time
/// (arrival + the delay of the request it belongs to). Pure: no I/O, time given by the caller.
pub struct Framer {
    delays: Arc<Delays>,
    stats: Arc<Stats>,
    at: At,
    /// The current request head (or chunk-size/trailer line) so far, at most MAX_HEAD bytes.
    line: Vec<u8>,
    /// The current request's delay once its method is known.
    delay: Option<Duration>,
    /// Bytes of the current request that arrived before its method was known (at most MAX_METHOD + 1).
    pending: Vec<(Instant, Bytes)>,
}

impl Framer {
    pub fn new(delays: Arc<Delays>, stats: Arc<Stats>) -> Self {
        Framer { delays, stats, at: At::Start, line: Vec::new(), delay: None, pending: Vec::new() }
    }

    fn current_delay(&self) -> Duration {
        self.delay.unwrap_or(self.delays.default)
    }

    /// Splits `data` (arrived at `now`) into pieces with their due times, appended to `out` in order.
    pub fn feed(&mut self, data: Bytes, now: Instant, out: &mut Vec<(Instant, Bytes)>) {
        let mut start = 0; // first byte of `data` not yet handed out
        let mut i = 0;
        while i < data.len() {
            match self.at {
                At::Start => {
                    self.at = At::Head;
                    self.line.clear();
                    self.delay = None;
                }
                At::Head => {
                    let b = data[i];
                    i += 1;
                    self.line.push(b);
                    if self.delay.is_none() && (b == b' ' || self.line.len() > MAX_METHOD) {
                        let method = &self.line[..self.line.len() - usize::from(b == b' ')];
                        if b != b' ' || method.is_empty() || !method.iter().all(u8::is_ascii_uppercase) {
                            self.unframe(out);
                            continue;
                        }
                        let d = self.delays.of(method);
                        self.stats.count(method);
                        self.delay = Some(d);
                        out.extend(self.pending.drain(..).map(|(t, bytes)| (t + d, bytes)));
                    }
                    if b == b'\n' && self.line.ends_with(b"\r\n\r\n") {
                        match body_of(&self.line) {
                            Some(0) => self.at = At::Start,
                            Some(n) if n == u64::MAX => self.at = At::ChunkSize,
                            Some(n) => self.at = At::Body(n),
                            None => self.unframe(out),
                        }
                        self.line.clear();
                        if self.at == At::Start {
                            self.emit(&data, &mut start, i, now, out);
                        }
                    } else if self.line.len() >= MAX_HEAD {
                        self.unframe(out);
                    }
                }
                At::Body(left) => {
                    let n = left.min((data.len() - i) as u64);
                    i += n as usize;
                    if n == left {
                        self.at = At::Start;
                        self.emit(&data, &mut start, i, now, out);
                    } else {
                        self.at = At::Body(left - n);
                    }
                }
                At::ChunkSize | At::Trailer => {
                    let b = data[i];
                    i += 1;
                    self.line.push(b);
                    if b == b'\n' {
                        let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        if self.at == At::Trailer {
                            if line.is_empty() {
                                self.at = At::Start;
                                self.line.clear();
                                self.emit(&data, &mut start, i, now, out);
                            }
                        } else {
                            match chunk_size(line) {
                                Some(0) => self.at = At::Trailer,
                                Some(n) => self.at = At::ChunkData(n),
                                None => self.unframe(out),
                            }
                        }
                        self.line.clear();
                    } else if self.line.len() >= MAX_LINE {
                        self.unframe(out);
                    }
                }
                At::ChunkData(left) => {
                    let n = left.min((data.len() - i) as u64);
                    i += n as usize;
                    self.at = if n == left { At::ChunkEnd(2) } else { At::ChunkData(left - n) };
                }
                At::ChunkEnd(left) => {
                    let want = if left == 2 { b'\r' } else { b'\n' };
                    if data[i] != want {
                        self.unframe(out);
                        continue;
                    }
                    i += 1;
                    self.at = if left == 2 { At::ChunkEnd(1) } else { At::ChunkSize };
                }
                At::Unframed => i = data.len(),
            }
        }
        self.emit(&data, &mut start, data.len(), now, out);
    }

    /// Hands out data[*start..end] (arrived at `now`) as part of the current request; held back while
    /// the request's method is unknown.
    fn emit(&mut self, data: &Bytes, start: &mut usize, end: usize, now: Instant, out: &mut Vec<(Instant, Bytes)>) {
        if end > *start {
            let piece = data.slice(*start..end);
            match self.delay {
                Some(d) => out.push((now + d, piece)),
                None => self.pending.push((now, piece)),
            }
        }
        *start = end;
    }

    /// Framing lost: the rest of the connection goes with the current request's delay (or the default).
    fn unframe(&mut self, out: &mut Vec<(Instant, Bytes)>) {
        let d = self.current_delay();
        self.delay = Some(d);
        self.at = At::Unframed;
        self.line = Vec::new();
        self.stats.unframed.fetch_add(1, Ordering::Relaxed);
        // bytes held while the method was unknown go out first, in order (emit() follows with the rest)
        out.extend(self.pending.drain(..).map(|(t, b)| (t + d, b)));
    }
}

/// The body of a complete request head: Some(0) none, Some(u64::MAX) chunked, Some(n) Content-Length n,
/// None when the head does not parse.
fn body_of(head: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let (_method, _target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.parse().ok()?;
            if n == u64::MAX || length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // a request's transfer coding must end with chunked (RFC 9112 6.3); it wins over Content-Length
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return None;
            }
            chunked = true;
        }
    }
    Some(if chunked { u64::MAX } else { length.unwrap_or(0) })
}

/// The size of a chunk-size line ("1a3f;ext=1"), None if it is not one.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|&b| b == b';' || b == b' ' || b == b'\t').unwrap_or(line.len());
    let hex = std::str::from_utf8(&line[..end]).ok()?;
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// S3-Standard-like delays (ms): PUT and POST 30, everything else 15.
    fn standard() -> Arc<Delays> {
        Arc::new(Delays { default: 15 * MS, by_method: vec![("PUT".into(), 30 * MS), ("POST".into(), 30 * MS)] })
    }

    fn framer(delays: Arc<Delays>) -> (Framer, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        (Framer::new(delays, stats.clone()), stats)
    }

    /// A stream of requests: (bytes, the delay each of its bytes must get).
    fn requests() -> Vec<(Vec<u8>, Duration)> {
        let mut body = vec![0u8; 70_000];
        for (i, b) in body.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8; // binary noise, CRLFs and spaces included: only Content-Length frames it
        }
        let mut put = b"PUT /b/k HTTP/1.1\r\nHost: s3\r\ncontent-length: 70000\r\nx-amz-date: 1\r\n\r\n".to_vec();
        put.extend_from_slice(&body);
        let get = b"GET /b/k?x=1 HTTP/1.1\r\nHost: s3\r\nRange: bytes=0-9\r\n\r\n".to_vec();
        let chunked = b"POST /b/k?uploads HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                        5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n"
            .to_vec();
        let aws_chunked = b"PUT /b/part HTTP/1.1\r\nContent-Encoding: aws-chunked\r\n\
                            x-amz-decoded-content-length: 3\r\nContent-Length: 44\r\n\r\n\
                            3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
            .to_vec();
        assert_eq!(aws_chunked.len() - aws_chunked.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4, 44);
        let head = b"HEAD /b/k HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec();
        let delete = b"DELETE /b/k HTTP/1.1\r\n\r\n".to_vec();
        vec![
            (get.clone(), 15 * MS),
            (put, 30 * MS),
            (chunked, 30 * MS),
            (aws_chunked, 30 * MS),
            (head, 15 * MS),
            (get, 15 * MS),
            (delete, 15 * MS),
        ]
    }

    /// Feeds `stream` cut at `cuts`, read k arriving at base + k ms; checks that the pieces are the stream,
    /// in order, and that every byte is due at its read's arrival + `delay_of(byte index)`.
    fn check_split(stream: &[u8], cuts: &[usize], delay_of: &dyn Fn(usize) -> Duration) -> Arc<Stats> {
        let (mut f, stats) = framer(standard());
        let base = Instant::now();
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()));
        bounds.push(stream.len());
        bounds.dedup();
        let mut arrival_of = vec![base; stream.len()];
        let mut out = Vec::new();
        for (k, w) in bounds.windows(2).enumerate() {
            let now = base + (k as u32) * MS;
            arrival_of[w[0]..w[1]].iter_mut().for_each(|t| *t = now);
            f.feed(Bytes::copy_from_slice(&stream[w[0]..w[1]]), now, &mut out);
        }
        let mut at = 0;
        for (due, piece) in &out {
            assert!(!piece.is_empty(), "empty piece at byte {at}");
            assert_eq!(&piece[..], &stream[at..at + piece.len()], "bytes changed or reordered at byte {at}");
            for (j, arrival) in arrival_of.iter().enumerate().skip(at).take(piece.len()) {
                assert_eq!(*due, *arrival + delay_of(j), "byte {j} (piece at {at}, {} bytes)", piece.len());
            }
            at += piece.len();
        }
        assert_eq!(at, stream.len(), "bytes held back at the end");
        stats
    }

    fn stream_of(reqs: &[(Vec<u8>, Duration)]) -> (Vec<u8>, Vec<Duration>) {
        let mut s = Vec::new();
        let mut d = Vec::new();
        for (bytes, delay) in reqs {
            s.extend_from_slice(bytes);
            d.extend(std::iter::repeat_n(*delay, bytes.len()));
        }
        (s, d)
    }

    #[test]
    fn each_request_gets_the_delay_of_its_method_in_one_read() {
        let reqs = requests();
        let (s, d) = stream_of(&reqs);
        let stats = check_split(&s, &[], &|j| d[j]);
        assert_eq!(
            stats.snapshot(),
            json!({"requests": {"PUT": 2, "POST": 1, "GET": 2, "HEAD": 1, "DELETE": 1, "other": 0},
                   "unframed_connections": 0})
        );
    }

    #[test]
    fn any_split_into_reads_keeps_bytes_and_delays() {
        let (s, d) = stream_of(&requests());
        // byte by byte through the heads (the method arrives in pieces: held until known)
        let stats = check_split(&s, &(1..s.len().min(400)).collect::<Vec<_>>(), &|j| d[j]);
        assert_eq!(stats.unframed.load(Ordering::Relaxed), 0);
        // pseudo-random cuts
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let mut cuts = Vec::new();
            let mut at = 0usize;
            while at < s.len() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let step = if round % 2 == 0 { (x >> 33) % 23 + 1 } else { (x >> 33) % 9000 + 1 };
                at += step as usize;
                cuts.push(at);
            }
            let stats = check_split(&s, &cuts, &|j| d[j]);
            assert_eq!(stats.unframed.load(Ordering::Relaxed), 0, "round {round}");
        }
    }

    #[test]
    fn bytes_that_are_not_http_pass_with_the_default_delay() {
        for junk in [&b"request 0\n"[..], b"abcdefghijklmnopqrstuvwxyz", b"\x16\x03\x01\x02\x00 tls", b" GET"] {
            let stats = check_split(junk, &[3], &|_| 15 * MS);
            assert_eq!(stats.unframed.load(Ordering::Relaxed), 1, "{junk:?}");
        }
        // a request whose framing breaks: what came before keeps its delay, the rest goes with the last one
        let mut s = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        let first = s.len();
        s.extend_from_slice(b"PUT /k HTTP/1.1\r\nContent-Length: nope\r\n\r\nbody");
        let stats = check_split(&s, &[5, first + 2], &|j| if j < first { 15 * MS } else { 30 * MS });
        assert_eq!(stats.unframed.load(Ordering::Relaxed), 1);
        let mut s = b"POST /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        s.extend_from_slice(b"zz\r\nrest of the connection");
        check_split(&s, &[], &|_| 30 * MS);
    }

    #[test]
    fn a_head_or_chunk_line_longer_than_the_limits_is_unframed_with_bounded_memory() {
        let mut s = b"GET /".to_vec();
        s.extend(std::iter::repeat_n(b'a', 3 * MAX_HEAD));
        let (mut f, stats) = framer(standard());
        let mut out = Vec::new();
        for c in s.chunks(1000) {
            f.feed(Bytes::copy_from_slice(c), Instant::now(), &mut out);
            assert!(f.line.len() <= MAX_HEAD, "head buffer grew to {}", f.line.len());
        }
        assert_eq!(out.iter().map(|(_, b)| b.len()).sum::<usize>(), s.len());
        assert_eq!(stats.unframed.load(Ordering::Relaxed), 1);
        let mut s = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        s.extend(std::iter::repeat_n(b'1', 2 * MAX_LINE));
        let stats = check_split(&s, &[100, 2000], &|_| 30 * MS);
        assert_eq!(stats.unframed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn parses_heads_and_chunk_sizes() {
        assert_eq!(body_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Some(0));
        assert_eq!(body_of(b"PUT / HTTP/1.1\r\nCONTENT-LENGTH:  12 \r\n\r\n"), Some(12));
        assert_eq!(body_of(b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), None);
        assert_eq!(
            body_of(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\ntransfer-encoding: Chunked\r\n\r\n"),
            Some(u64::MAX)
        );
        assert_eq!(body_of(b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), None);
        assert_eq!(body_of(b"PUT / SPDY/3\r\n\r\n"), None);
        assert_eq!(chunk_size(b"ff"), Some(255));
        assert_eq!(chunk_size(b"10;chunk-signature=abc"), Some(16));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"xyz"), None);
        assert_eq!(chunk_size(b"1234567890abcdef0"), None);
        assert_eq!(Delays::parse_method("put=30"), Ok(("PUT".to_string(), 30 * MS)));
        assert!(Delays::parse_method("PUT").is_err());
        assert!(Delays::parse_method("P-T=3").is_err());
    }

    /// A server that answers every read with the same bytes, upper-cased.
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

    async fn start_relay_with(target: SocketAddr, delays: Delays, max_buffered: usize) -> (SocketAddr, Arc<Stats>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let spec = RelaySpec { target, delays: Arc::new(delays), max_buffered, stats: stats.clone() };
        tokio::spawn(serve(l, spec));
        (addr, stats)
    }

    async fn start_relay(target: SocketAddr, delay: Duration, max_buffered: usize) -> SocketAddr {
        start_relay_with(target, Delays::uniform(delay), max_buffered).await.0
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
    async fn http_requests_are_held_by_method_on_one_connection() {
        let server = upper_server().await;
        let delays = Delays { default: 20 * MS, by_method: vec![("PUT".into(), 400 * MS)] };
        let (relay, stats) = start_relay_with(server, delays, 1 << 20).await;
        let mut c = TcpStream::connect(relay).await.unwrap();
        let put = b"PUT /b/k HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        let get = b"GET /b/k HTTP/1.1\r\nHost: s3\r\n\r\n".to_vec();
        let mut waited = Vec::new();
        for req in [&put, &get, &put, &get] {
            let t0 = std::time::Instant::now();
            c.write_all(req).await.unwrap();
            let mut got = vec![0u8; req.len()];
            c.read_exact(&mut got).await.unwrap();
            waited.push(t0.elapsed());
            assert_eq!(got, req.to_ascii_uppercase());
        }
        for (i, w) in waited.iter().enumerate() {
            let (min, max) = if i % 2 == 0 { (400 * MS, Duration::MAX) } else { (20 * MS, 400 * MS) };
            assert!(*w >= min && *w < max, "request {i} answered after {w:?}, want [{min:?}, {max:?})");
        }
        assert_eq!(stats.put.load(Ordering::Relaxed), 2);
        assert_eq!(stats.get.load(Ordering::Relaxed), 2);
        assert_eq!(stats.unframed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_large_body_passes_byte_exact_through_a_small_buffer() {
        // 4 MiB through a delay line that may hold only 256 KiB: the sender is held back, nothing is lost.
        let server = upper_server().await;
        let relay = start_relay(server, Duration::from_millis(5), 256 * 1024).await;
        let body: Vec<u8> = (0..4 << 20).map(|i: u32| b"abcdefghijklmnopqrstuvwxyz"[(i % 26) as usize]).collect();
        send_and_check(relay, body).await;
    }

    /// Sends `bytes` through the relay to upper_server, then FIN, and checks that they all come back upper-cased.
    async fn send_and_check(relay: SocketAddr, bytes: Vec<u8>) {
        let c = TcpStream::connect(relay).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let expect = bytes.to_ascii_uppercase();
        let send = tokio::spawn(async move {
            w.write_all(&bytes).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        send.await.unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes changed on the way");
    }

    #[tokio::test]
    async fn a_large_http_upload_passes_byte_exact_through_a_small_buffer() {
        // an 8 MiB PUT (Content-Length) and a chunked POST behind it, through a 256 KiB delay line
        let server = upper_server().await;
        let delays = Delays { default: 2 * MS, by_method: vec![("PUT".into(), 5 * MS)] };
        let (relay, stats) = start_relay_with(server, delays, 256 * 1024).await;
        let mut req = format!("PUT /b/k HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 8 << 20).into_bytes();
        req.extend((0..8u32 << 20).map(|i| b"abcdefghijklmnopqrstuvwxyz"[(i % 26) as usize]));
        req.extend_from_slice(b"POST /b/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n");
        send_and_check(relay, req).await;
        assert_eq!((stats.put.load(Ordering::Relaxed), stats.post.load(Ordering::Relaxed)), (1, 1));
        assert_eq!(stats.unframed.load(Ordering::Relaxed), 0);
    }
}
