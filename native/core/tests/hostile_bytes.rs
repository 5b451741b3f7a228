//! Arbitrary and mutated bytes through every parser that reads bytes from the network or a bucket: the
//! replication proxy's framing and message decoding, record batches, fast-tier (WAL) objects and heads, and
//! slow-tier manifests. Nothing may panic, and nothing may allocate more than a small multiple of the bytes
//! it was given: a counting allocator records the largest single allocation of the test's thread.
//!
//! A coverage-guided fuzzer (cargo-fuzz, libFuzzer) needs a nightly compiler and a C++ build of libFuzzer;
//! these are property tests with proptest on stable instead. CI runs a bounded number of cases; a longer run:
//!
//! ```sh
//! FASTTIER_FUZZ_CASES=200000 cargo test --release -p fasttier-core --test hostile_bytes
//! ```
//!
//! Every input that ever failed is kept below as a regression test (`regression_*`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};
use fasttier_core::catchup::bounded::{cap_api_versions, check_fetch_request, check_fetch_response, produce_acks};
use fasttier_core::catchup::wire::{decode_request, decode_response, FrameReader};
use fasttier_core::format::batch::testing::BatchSpec;
use fasttier_core::format::batch::{frame, Batches, RecordBatch};
use fasttier_core::format::manifest::SegmentManifest;
use fasttier_core::wal::format::{WalHead, WalHeader, WalObject, WalObjectBuilder, WalStamp};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;

/// The system allocator, remembering the largest allocation request of each thread.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size)
        }
    });
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and fails if any single allocation it made exceeds `limit` bytes.
fn bounded<T>(what: &str, input_len: usize, f: impl FnOnce() -> T) -> T {
    LARGEST.with(|l| l.set(0));
    let out = f();
    let largest = LARGEST.with(|l| l.get());
    // a decoded message may take a few times its wire size (structs, vectors); never more
    let limit = 64 * input_len + (128 << 10);
    assert!(largest <= limit, "{what}: an allocation of {largest} bytes from {input_len} input bytes (limit {limit})");
    out
}

fn cases() -> u32 {
    std::env::var("FASTTIER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Every frame `bytes` holds, read with `max`, until the end or an error.
fn read_frames(bytes: &[u8], max: usize) -> Vec<Bytes> {
    let rt = runtime();
    rt.block_on(async {
        let mut r = bytes;
        let mut fr = FrameReader::new(max);
        let mut out = Vec::new();
        while let Ok(Some(f)) = fr.next(&mut r, "fuzz").await {
            out.push(f);
        }
        out
    })
}

fn fetch_request(version: i16) -> Bytes {
    let mut req = FetchRequest::default();
    if version <= 14 {
        req.replica_id = BrokerId(2);
    } else {
        req.replica_state = ReplicaState::default().with_replica_id(BrokerId(2)).with_replica_epoch(1);
    }
    let req =
        req.with_max_wait_ms(500).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![FetchTopic::default()
            .with_topic_id(uuid::Uuid::from_u128(1))
            .with_partitions(vec![
                FetchPartition::default().with_partition(0).with_fetch_offset(5),
                FetchPartition::default().with_partition(1).with_fetch_offset(6),
            ])]);
    let mut b = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(1)
        .with_request_api_version(version)
        .with_correlation_id(9)
        .with_client_id(Some(StrBytes::from_static_str("replica-fetcher")))
        .encode(&mut b, 2)
        .unwrap();
    req.encode(&mut b, version).unwrap();
    b.freeze()
}

fn fetch_response(version: i16) -> Bytes {
    let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic_id(uuid::Uuid::from_u128(1))
        .with_partitions(vec![PartitionData::default()
            .with_partition_index(0)
            .with_records(Some(Bytes::from(BatchSpec::new(5, 2).values(&[b"a", b"b"]).build())))])]);
    let mut b = BytesMut::new();
    ResponseHeader::default().with_correlation_id(9).encode(&mut b, 1).unwrap();
    resp.encode(&mut b, version).unwrap();
    b.freeze()
}

/// `base` with `edits` applied: (position, byte) pairs; positions wrap around its length.
fn mutate(base: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    if v.is_empty() {
        return v;
    }
    for &(at, b) in edits {
        let n = v.len();
        v[at % n] = b;
    }
    v
}

/// Decodes `frame` as a Fetch request and as a Fetch response (the proxy's two crate decodes), bounded.
fn decode_both(frame: &[u8], version: i16) {
    let f = Bytes::copy_from_slice(frame);
    bounded("fetch request", frame.len(), || {
        let _ = decode_request::<FetchRequest>(&f, "fuzz");
    });
    bounded("fetch response", frame.len(), || {
        let _ = decode_response::<FetchResponse>(&f, version, "fuzz");
    });
    bounded("produce acks", frame.len(), || produce_acks(frame));
    bounded("api versions", frame.len(), || cap_api_versions(&f, version.clamp(0, 4), 1, 17));
}

fn wal_object() -> Bytes {
    let mut b = WalObjectBuilder::new();
    let data =
        [BatchSpec::new(0, 2).epoch(3).values(&[b"x", b"y"]).build(), BatchSpec::new(2, 1).epoch(3).build()].concat();
    b.add([7; 16], 0, 3, 0, 2, Bytes::from(data)).unwrap();
    let stamp = WalStamp { broker_id: 1, incarnation: 2, seq: 3, prev_header_crc: 4, created_unix_ms: 5 };
    b.build(&stamp).unwrap().bytes
}

fn framed(magic: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{magic} {:08x} {}\n", crc32c::crc32c(body), body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

const MANIFEST_JSON: &str = r#"{"format":"fasttier-slow-segment","version":1,"topic":"t","topic_id":"AAAAAAAAAAAAAAAAAAAAAQ","partition":0,"segment_id":"AAAAAAAAAAAAAAAAAAAAAg","start_offset":0,"end_offset":99,"max_timestamp_ms":1,"broker_id":1,"leader_epochs":[[0,0],[3,50]],"log":{"key":"k.log","size":10,"chunk_bytes":4,"chunk_crc32c":[1,2,3]},"indexes":{"key":"k.indexes","size":8,"entries":[{"kind":"Offset","position":0,"length":8,"crc32c":5}]},"created_unix_ms":0,"writer":"test"}"#;

fn parse_wal(bytes: &[u8]) {
    bounded("wal object", bytes.len(), || {
        if let Ok(o) = WalObject::parse("k", Bytes::copy_from_slice(bytes)) {
            let _ = o.verify_data();
            for (t, p) in o.header().partitions().collect::<Vec<_>>() {
                let _ = o.range(&t, p);
            }
        }
        let _ = WalHeader::parse_prefix("k", bytes);
        let _ = WalHead::decode("h", bytes);
    });
}

fn parse_batches(bytes: &[u8]) {
    bounded("record batches", bytes.len(), || {
        for b in Batches::new(bytes, 0).take(10_000) {
            if b.is_err() {
                break;
            }
        }
        let _ = RecordBatch::parse(bytes, 0).map(|r| r.map(|b| b.verify_crc(0)));
        let _ = frame(bytes, 0, 1 << 20);
    });
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn framing_reserves_no_more_than_what_arrives(len in any::<i32>(), body in proptest::collection::vec(any::<u8>(), 0..512),
                                                   max in prop_oneof![Just(100usize << 20), 1usize..4096]) {
        let mut stream = len.to_be_bytes().to_vec();
        stream.extend_from_slice(&body);
        let frames = bounded("framing", stream.len(), || read_frames(&stream, max));
        for f in &frames {
            prop_assert!(f.len() <= max);
        }
    }

    #[test]
    fn arbitrary_frames_decode_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..600), version in 0i16..20) {
        decode_both(&bytes, version);
    }

    #[test]
    fn fetch_header_with_arbitrary_body_decodes_bounded(version in 12i16..=18, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut f = fetch_request(version)[..8].to_vec();
        f.put_i16(-1); // null client id
        f.put_u8(0); // no header tags
        f.extend_from_slice(&body);
        decode_both(&f, version);
    }

    #[test]
    fn mutated_fetch_messages_decode_bounded(version in 12i16..=18,
                                              edits in proptest::collection::vec((any::<usize>(), prop_oneof![Just(0xffu8), Just(0x7f), Just(0), any::<u8>()]), 1..6),
                                              cut in any::<usize>()) {
        for base in [fetch_request(version), fetch_response(version)] {
            let m = mutate(&base, &edits);
            decode_both(&m, version);
            decode_both(&m[..cut % (m.len() + 1)], version);
            let body = &m[m.len().min(8)..];
            bounded("check", body.len(), || {
                let _ = (check_fetch_request(body, version), check_fetch_response(body, version));
            });
        }
    }

    #[test]
    fn record_batches_parse_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                    edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6)) {
        parse_batches(&bytes);
        let valid = [BatchSpec::new(0, 3).values(&[&b"a"[..], &b"bb"[..], &b"ccc"[..]]).build(), BatchSpec::new(3, 1).build()].concat();
        parse_batches(&mutate(&valid, &edits));
    }

    #[test]
    fn wal_objects_and_heads_parse_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                           edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                                           cut in any::<usize>()) {
        parse_wal(&bytes);
        let valid = wal_object();
        let m = mutate(&valid, &edits);
        parse_wal(&m);
        parse_wal(&valid[..cut % (valid.len() + 1)]);
        let head = framed("FTWALHEAD1", &bytes);
        parse_wal(&head);
    }

    #[test]
    fn manifests_parse_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                               edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        bounded("manifest", bytes.len(), || SegmentManifest::decode("m", &bytes).ok());
        let m = mutate(MANIFEST_JSON.as_bytes(), &edits);
        let f = framed("FTMANIFEST1", &m);
        bounded("manifest", f.len(), || SegmentManifest::decode("m", &f).ok());
    }
}

/// The allocation counter catches what bounded decoding prevents: the crate's own decoder, given a
/// 49-byte Fetch whose topics count is 100,000 (small enough not to abort), reserves megabytes.
#[test]
#[should_panic(expected = "an allocation of")]
fn the_counter_catches_the_crates_unchecked_reservation() {
    use kafka_protocol::protocol::Decodable;
    let mut body = vec![0u8; 4 + 4 + 4 + 1 + 4 + 4];
    body.extend_from_slice(&[0xa1, 0x8d, 0x06]); // varint 100,001: 100,000 topics
    body.resize(49 - 12, 0);
    bounded("unchecked", body.len(), || {
        let _ = FetchRequest::decode(&mut Bytes::from(body.clone()), 16);
    });
}

#[test]
fn the_seeds_are_valid() {
    for v in 12..=18 {
        let (_, r): (_, FetchRequest) = decode_request(&fetch_request(v), "t").unwrap();
        assert_eq!(r.topics[0].partitions.len(), 2);
        let (_, r): (_, FetchResponse) = decode_response(&fetch_response(v), v, "t").unwrap();
        assert_eq!(r.responses.len(), 1);
    }
    let o = WalObject::parse("k", wal_object()).unwrap();
    o.verify_data().unwrap();
    assert_eq!(Batches::new(&BatchSpec::new(0, 3).build(), 0).count(), 1);
}

/// The issue's inputs that aborted a broker's JVM: a 49-byte Fetch v16 whose topics count is 2^32-1, a
/// 34-byte Produce v7 with a huge count, a 256 MiB size prefix followed by 16 bytes.
#[test]
fn regression_issue_14_inputs() {
    let mut f = fetch_request(16)[..8].to_vec();
    f.put_i16(-1);
    f.put_u8(0);
    f.extend_from_slice(&[0u8; 4 + 4 + 4 + 1 + 4 + 4]);
    f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    f.resize(49, 0);
    let e = bounded("fetch", f.len(), || decode_request::<FetchRequest>(&Bytes::from(f.clone()), "t").unwrap_err());
    assert!(e.to_string().contains("refused"), "{e}");

    let mut p = vec![0, 0, 0, 7, 0, 0, 0, 1, 0xff, 0xff]; // Produce v7, correlation 1, null client id
    p.extend_from_slice(&[0xff, 0xff, 0, 0]); // null transactional id, acks 0
    p.extend_from_slice(&[0, 0, 0x75, 0x30]); // timeout
    p.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]); // topic_data count 2^31-1
    p.resize(34, 0);
    assert_eq!(bounded("produce", p.len(), || produce_acks(&p)), Some(0));

    let mut s = (256i32 << 20).to_be_bytes().to_vec();
    s.extend_from_slice(&[7; 16]);
    let frames = bounded("framing", s.len(), || read_frames(&s, 512 << 20));
    assert!(frames.is_empty());
}
