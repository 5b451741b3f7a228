//! Kafka wire framing for the replication proxy: size-prefixed frames, the few header fields the proxy
//! looks at without decoding a whole message, and encoding of the messages it writes itself.
//!
//! Message bodies are encoded and decoded by the `kafka-protocol` crate; only the framing (a big-endian
//! `i32` length before every request and response) and two fixed header positions are handled here:
//! every request header starts with `api_key i16, api_version i16, correlation_id i32`, and every response
//! header starts with `correlation_id i32`, whatever the header version.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchRequest, FetchResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// API key of Fetch.
pub const FETCH: i16 = 1;
/// API key of ApiVersions.
pub const API_VERSIONS: i16 = super::bounded::API_VERSIONS;
/// The largest frame accepted by default: Kafka's `socket.request.max.bytes` default (a leader refuses
/// larger requests anyway; fetch responses are bounded by `replica.fetch.response.max.bytes` and
/// `fetch.max.bytes`, far below it). `replication.fast.max.frame.bytes` sets the proxy's own limit.
pub const MAX_FRAME: usize = 100 << 20;
/// A frame's buffer starts at most this large and then doubles as its bytes arrive, never beyond the
/// frame's length: a size prefix promising more than is sent costs no more than what was sent.
const FIRST_CHUNK: usize = 64 << 10;

/// Reads one frame (without its length prefix), at most [`MAX_FRAME`] bytes. `None` at a clean end of
/// stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, peer: &str) -> Result<Option<Bytes>> {
    FrameReader::new(MAX_FRAME).next(r, peer).await
}

/// Reads frames of at most `max` bytes. [`FrameReader::next`] is cancel-safe (a partly read frame stays in
/// the reader), so a caller can race it against time-outs.
#[derive(Debug)]
pub struct FrameReader {
    max: usize,
    len: [u8; 4],
    got: usize,
    want: usize,
    buf: Vec<u8>,
    started: Option<tokio::time::Instant>,
}

impl FrameReader {
    pub fn new(max: usize) -> FrameReader {
        FrameReader { max, len: [0; 4], got: 0, want: 0, buf: Vec::new(), started: None }
    }

    /// When the frame being read started arriving (`None` between frames).
    pub fn started(&self) -> Option<tokio::time::Instant> {
        self.started
    }

    /// The next frame; `None` at a clean end of stream between frames.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R, peer: &str) -> Result<Option<Bytes>> {
        loop {
            if self.got < 4 {
                let n = r.read(&mut self.len[self.got..]).await.map_err(|e| net("read", peer, e))?;
                if n == 0 {
                    if self.got == 0 {
                        return Ok(None);
                    }
                    return Err(eof(peer, "eof inside a frame length"));
                }
                if self.got == 0 {
                    self.started = Some(tokio::time::Instant::now());
                }
                self.got += n;
                if self.got == 4 {
                    let len = i32::from_be_bytes(self.len);
                    if len < 0 || len as usize > self.max {
                        return Err(proto(peer, format!("frame length={len} out of range (max={})", self.max)));
                    }
                    self.want = len as usize;
                    self.buf = Vec::with_capacity(self.want.min(FIRST_CHUNK));
                }
                continue;
            }
            let have = self.buf.len();
            if have == self.want {
                self.got = 0;
                self.started = None;
                return Ok(Some(Bytes::from(std::mem::take(&mut self.buf))));
            }
            if self.buf.capacity() == have {
                self.buf.reserve_exact((self.want - have).min(have.max(FIRST_CHUNK)));
            }
            let room = (self.buf.capacity() - have).min(self.want - have);
            let n = r.read_buf(&mut (&mut self.buf).limit(room)).await.map_err(|e| net("read", peer, e))?;
            if n == 0 {
                return Err(eof(peer, "eof inside a frame"));
            }
        }
    }
}

fn eof(peer: &str, detail: &str) -> Error {
    Error::Network { op: "read", peer: peer.to_string(), detail: detail.into() }
}

/// Writes one frame (adds the length prefix).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8], peer: &str) -> Result<()> {
    w.write_all(&(frame.len() as i32).to_be_bytes()).await.map_err(|e| net("write", peer, e))?;
    w.write_all(frame).await.map_err(|e| net("write", peer, e))?;
    Ok(())
}

pub fn net(op: &'static str, peer: &str, e: std::io::Error) -> Error {
    Error::Network { op, peer: peer.to_string(), detail: e.to_string() }
}

fn proto(peer: &str, detail: impl Into<String>) -> Error {
    Error::Protocol { peer: peer.to_string(), detail: detail.into() }
}

/// The fixed part of a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// The first header fields of a request frame.
pub fn peek_request(frame: &[u8], peer: &str) -> Result<Peek> {
    if frame.len() < 8 {
        return Err(proto(peer, format!("request frame of {} bytes is shorter than a header", frame.len())));
    }
    let mut b = &frame[..8];
    Ok(Peek { api_key: b.get_i16(), api_version: b.get_i16(), correlation_id: b.get_i32() })
}

/// The correlation id of a response frame.
pub fn response_correlation_id(frame: &[u8], peer: &str) -> Result<i32> {
    if frame.len() < 4 {
        return Err(proto(peer, "response frame shorter than its correlation id"));
    }
    Ok((&frame[..4]).get_i32())
}

/// A copy of `frame` with the correlation id (bytes 4..8 of a request, 0..4 of a response) replaced.
pub fn with_correlation_id(frame: &Bytes, at: usize, id: i32) -> Bytes {
    let mut out = BytesMut::from(&frame[..]);
    out[at..at + 4].copy_from_slice(&id.to_be_bytes());
    out.freeze()
}

/// Position of the correlation id in a request frame.
pub const REQUEST_CORRELATION_AT: usize = 4;
/// Position of the correlation id in a response frame.
pub const RESPONSE_CORRELATION_AT: usize = 0;

/// Request header version of `api_key` at `version`.
fn request_header_version(api_key: i16, version: i16, peer: &str) -> Result<i16> {
    let key = ApiKey::try_from(api_key).map_err(|_| proto(peer, format!("unknown api_key={api_key}")))?;
    Ok(key.request_header_version(version))
}

/// A message the proxy decodes with `kafka-protocol`: its bytes are checked first so that decoding allocates
/// no more than they hold (see [`super::bounded`]).
pub trait Bounded: Decodable {
    fn check(body: &[u8], version: i16) -> std::result::Result<(), String>;
}

impl Bounded for FetchRequest {
    fn check(body: &[u8], version: i16) -> std::result::Result<(), String> {
        super::bounded::check_fetch_request(body, version)
    }
}

impl Bounded for ApiVersionsResponse {
    fn check(body: &[u8], version: i16) -> std::result::Result<(), String> {
        super::bounded::check_api_versions_response(body, version)
    }
}

impl Bounded for FetchResponse {
    fn check(body: &[u8], version: i16) -> std::result::Result<(), String> {
        super::bounded::check_fetch_response(body, version)
    }
}

/// Decodes a request frame into its header and body `T`.
pub fn decode_request<T: Bounded>(frame: &Bytes, peer: &str) -> Result<(RequestHeader, T)> {
    let p = peek_request(frame, peer)?;
    let hv = request_header_version(p.api_key, p.api_version, peer)?;
    let mut buf = frame.clone();
    let header = RequestHeader::decode(&mut buf, hv)
        .map_err(|e| proto(peer, format!("api_key={} version={} header: {e}", p.api_key, p.api_version)))?;
    T::check(&buf, p.api_version)
        .map_err(|e| proto(peer, format!("api_key={} version={} refused: {e}", p.api_key, p.api_version)))?;
    let body = T::decode(&mut buf, p.api_version)
        .map_err(|e| proto(peer, format!("api_key={} version={} body: {e}", p.api_key, p.api_version)))?;
    Ok((header, body))
}

/// Encodes a request frame (without length prefix).
pub fn encode_request<T: Encodable>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    client_id: Option<StrBytes>,
    body: &T,
    peer: &str,
) -> Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id);
    let hv = request_header_version(api_key, version, peer)?;
    let mut buf = BytesMut::new();
    header.encode(&mut buf, hv).map_err(|e| proto(peer, format!("encode request header: {e}")))?;
    body.encode(&mut buf, version)
        .map_err(|e| proto(peer, format!("encode api_key={api_key} version={version}: {e}")))?;
    Ok(buf.freeze())
}

/// Decodes a response frame of a request `T` sent at `version`.
pub fn decode_response<T: Bounded + HeaderVersion>(frame: &Bytes, version: i16, peer: &str) -> Result<(i32, T)> {
    let mut buf = frame.clone();
    let header = ResponseHeader::decode(&mut buf, T::header_version(version))
        .map_err(|e| proto(peer, format!("response header: {e}")))?;
    T::check(&buf, version).map_err(|e| proto(peer, format!("response version={version} refused: {e}")))?;
    let body = T::decode(&mut buf, version).map_err(|e| proto(peer, format!("response version={version}: {e}")))?;
    Ok((header.correlation_id, body))
}

/// Encodes a response frame (without length prefix).
pub fn encode_response<T: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &T,
    peer: &str,
) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, T::header_version(version))
        .map_err(|e| proto(peer, format!("encode response header: {e}")))?;
    body.encode(&mut buf, version).map_err(|e| proto(peer, format!("encode response version={version}: {e}")))?;
    Ok(buf.freeze())
}

/// `frame` with its length prefix (tests and callers that build streams by hand).
pub fn frame_with_len(frame: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(frame.len() + 4);
    b.put_i32(frame.len() as i32);
    b.put_slice(frame);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    #[tokio::test]
    async fn frames_round_trip_and_reject_bad_lengths() {
        let data = frame_with_len(b"hello");
        let mut r = &data[..];
        assert_eq!(read_frame(&mut r, "p").await.unwrap().unwrap(), Bytes::from_static(b"hello"));
        assert!(read_frame(&mut r, "p").await.unwrap().is_none());
        let bad = (-5i32).to_be_bytes();
        let e = read_frame(&mut &bad[..], "peer=x").await.unwrap_err();
        assert!(e.to_string().contains("frame length=-5"), "{e}");
        let short = [0u8, 0, 0, 9, 1, 2];
        assert!(matches!(read_frame(&mut &short[..], "p").await, Err(Error::Network { .. })));
        let mut out = Vec::new();
        write_frame(&mut out, b"abc", "p").await.unwrap();
        assert_eq!(out, frame_with_len(b"abc").to_vec());
    }

    #[test]
    fn requests_and_responses_round_trip_with_correlation_ids() {
        let body = FetchRequest::default().with_max_wait_ms(500).with_min_bytes(1);
        let frame = encode_request(FETCH, 17, 42, Some(StrBytes::from_static_str("f")), &body, "p").unwrap();
        let p = peek_request(&frame, "p").unwrap();
        assert_eq!((p.api_key, p.api_version, p.correlation_id), (FETCH, 17, 42));
        let moved = with_correlation_id(&frame, REQUEST_CORRELATION_AT, 7);
        let (h, back): (_, FetchRequest) = decode_request(&moved, "p").unwrap();
        assert_eq!(h.correlation_id, 7);
        assert_eq!(back, body);
        let resp = FetchResponse::default().with_session_id(0);
        let rf = encode_response(9, 17, &resp, "p").unwrap();
        assert_eq!(response_correlation_id(&rf, "p").unwrap(), 9);
        let (c, r2): (_, FetchResponse) = decode_response(&rf, 17, "p").unwrap();
        assert_eq!((c, r2), (9, resp));
        let av = encode_request(API_VERSIONS, 3, 1, None, &ApiVersionsRequest::default(), "p").unwrap();
        assert!(peek_request(&av[..3], "p").is_err());
    }
}
