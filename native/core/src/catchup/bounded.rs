//! Bounded decoding: a pass over a message's bytes, before the `kafka-protocol` crate decodes it, that
//! proves every array it will allocate for is really there.
//!
//! The crate's array decoder reserves `count × size_of::<T>()` from the count alone, before reading any
//! element: a 49-byte Fetch whose topics count is 2^32-1 asks for hundreds of gigabytes, and an allocation
//! failure aborts the process (the broker's JVM). The walkers here follow exactly the path the crate's
//! decoder takes for the messages the proxy decodes (Fetch requests and responses, v12..=18 — the flexible
//! versions; the proxy answers v13+), checking every count against the bytes left and walking every element,
//! so a message that passes holds at least `count` whole elements for every array: what the crate then
//! allocates is a small multiple of the frame's length. Strings and byte fields are safe in the crate (it
//! checks their length against the bytes left), as are unknown tagged fields.
//!
//! The other places the proxy reads a message need no crate decoding at all: [`produce_acks`] reads
//! Produce's `acks` without touching its records, and [`cap_api_versions`] patches ApiVersions' Fetch entry
//! in place.
//!
//! Known tagged fields are walked whatever the version (the crate either decodes them the same way or
//! fails on a tag not valid for the version); unknown ones are skipped by their size, as the crate does.

use bytes::{Bytes, BytesMut};

/// Why a message was refused (goes into [`crate::error::Error::Protocol`]'s detail).
pub type Refusal = String;

/// The lowest and highest Fetch versions a walker exists for.
pub const FETCH_VERSIONS: (i16, i16) = (12, 18);

/// A read position in a message, every read checked against the bytes left.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur { b, at: 0 }
    }

    fn left(&self) -> usize {
        self.b.len() - self.at
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<(), Refusal> {
        if n > self.left() {
            return Err(format!("{what}: {n} bytes wanted at offset={}, {} left", self.at, self.left()));
        }
        self.at += n;
        Ok(())
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Refusal> {
        let from = self.at;
        self.skip(n, what)?;
        Ok(&self.b[from..from + n])
    }

    fn i16(&mut self, what: &str) -> Result<i16, Refusal> {
        let s = self.take(2, what)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, Refusal> {
        let s = self.take(4, what)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// An unsigned varint, decoded exactly as the crate does (at most 5 bytes, high bits dropped).
    fn uvarint(&mut self, what: &str) -> Result<u32, Refusal> {
        let mut value = 0u32;
        for i in 0..5 {
            let b = self.take(1, what)?[0] as u32;
            value |= (b & 0x7f).wrapping_shl(i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// A compact (nullable) string or bytes field: length + 1 as a varint, then the bytes.
    fn compact_bytes(&mut self, what: &str) -> Result<(), Refusal> {
        let n = self.uvarint(what)?;
        if n > 0 {
            self.skip((n - 1) as usize, what)?;
        }
        Ok(())
    }

    /// A compact array's element count (`None` for a null array), checked against the bytes left: every
    /// element takes at least `min_elem` bytes.
    fn compact_count(&mut self, min_elem: usize, what: &str) -> Result<Option<usize>, Refusal> {
        let n = self.uvarint(what)?;
        if n == 0 {
            return Ok(None);
        }
        let count = (n - 1) as usize;
        if count.saturating_mul(min_elem.max(1)) > self.left() {
            return Err(format!("{what}: count={count} does not fit in the {} bytes left", self.left()));
        }
        Ok(Some(count))
    }

    /// A struct's tagged fields: `known(tag, cur)` walks a known tag's value and returns true; others are
    /// skipped by their size.
    fn tagged(
        &mut self,
        what: &str,
        mut known: impl FnMut(u32, &mut Cur<'a>) -> Result<bool, Refusal>,
    ) -> Result<(), Refusal> {
        let n = self.uvarint(what)?;
        // every tagged field takes at least two bytes (tag and size)
        if (n as usize).saturating_mul(2) > self.left() {
            return Err(format!("{what}: {n} tagged fields do not fit in the {} bytes left", self.left()));
        }
        for _ in 0..n {
            let tag = self.uvarint(what)?;
            let size = self.uvarint(what)?;
            if !known(tag, self)? {
                self.skip(size as usize, what)?;
            }
        }
        Ok(())
    }

    /// A struct whose only tagged fields are unknown ones.
    fn plain_tags(&mut self, what: &str) -> Result<(), Refusal> {
        self.tagged(what, |_, _| Ok(false))
    }

    fn compact_array(
        &mut self,
        min_elem: usize,
        what: &str,
        mut elem: impl FnMut(&mut Cur<'a>) -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        if let Some(count) = self.compact_count(min_elem, what)? {
            for _ in 0..count {
                elem(self)?;
            }
        }
        Ok(())
    }
}

fn flexible_fetch(version: i16) -> Result<(), Refusal> {
    if !(FETCH_VERSIONS.0..=FETCH_VERSIONS.1).contains(&version) {
        return Err(format!("fetch version={version} is not decoded by the proxy"));
    }
    Ok(())
}

/// Checks the body of a Fetch request (after its header) at `version` before it is decoded.
pub fn check_fetch_request(body: &[u8], version: i16) -> Result<(), Refusal> {
    flexible_fetch(version)?;
    let c = &mut Cur::new(body);
    // replica_id (v<=14), max_wait_ms, min_bytes, max_bytes, isolation_level, session_id, session_epoch
    c.skip(if version <= 14 { 4 } else { 0 } + 4 + 4 + 4 + 1 + 4 + 4, "fetch")?;
    // topics: topic (v12) or topic_id (v13+), partitions, tags
    let topic_min = if version >= 13 { 16 } else { 1 } + 1 + 1;
    c.compact_array(topic_min, "fetch topics", |c| {
        if version >= 13 {
            c.skip(16, "topic id")?;
        } else {
            c.compact_bytes("topic name")?;
        }
        // partition, current_leader_epoch, fetch_offset, last_fetched_epoch, log_start_offset,
        // partition_max_bytes, tags
        c.compact_array(4 + 4 + 8 + 4 + 8 + 4 + 1, "fetch partitions", |c| {
            c.skip(4 + 4 + 8 + 4 + 8 + 4, "fetch partition")?;
            c.tagged("fetch partition tags", |tag, c| match tag {
                0 => c.skip(16, "replica_directory_id").map(|_| true),
                1 => c.skip(8, "high_watermark").map(|_| true),
                _ => Ok(false),
            })
        })?;
        c.plain_tags("fetch topic tags")
    })?;
    // forgotten_topics_data: topic (v12) or topic_id, partitions (i32 each), tags
    c.compact_array(topic_min, "forgotten topics", |c| {
        if version >= 13 {
            c.skip(16, "forgotten topic id")?;
        } else {
            c.compact_bytes("forgotten topic name")?;
        }
        if let Some(n) = c.compact_count(4, "forgotten partitions")? {
            c.skip(n * 4, "forgotten partitions")?;
        }
        c.plain_tags("forgotten topic tags")
    })?;
    c.compact_bytes("rack_id")?;
    c.tagged("fetch tags", |tag, c| match tag {
        0 => c.compact_bytes("cluster_id").map(|_| true),
        // replica_state: replica_id, replica_epoch, tags
        1 => {
            c.skip(4 + 8, "replica_state")?;
            c.plain_tags("replica_state tags").map(|_| true)
        }
        _ => Ok(false),
    })
}

/// Checks the body of a Fetch response (after its header) at `version` before it is decoded.
pub fn check_fetch_response(body: &[u8], version: i16) -> Result<(), Refusal> {
    flexible_fetch(version)?;
    let c = &mut Cur::new(body);
    // throttle_time_ms, error_code, session_id
    c.skip(4 + 2 + 4, "fetch response")?;
    let topic_min = if version >= 13 { 16 } else { 1 } + 1 + 1;
    c.compact_array(topic_min, "response topics", |c| {
        if version >= 13 {
            c.skip(16, "topic id")?;
        } else {
            c.compact_bytes("topic name")?;
        }
        // partition_index, error_code, high_watermark, last_stable_offset, log_start_offset,
        // aborted_transactions, preferred_read_replica, records, tags
        c.compact_array(4 + 2 + 8 + 8 + 8 + 1 + 4 + 1 + 1, "response partitions", |c| {
            c.skip(4 + 2 + 8 + 8 + 8, "partition data")?;
            c.compact_array(8 + 8 + 1, "aborted transactions", |c| {
                c.skip(8 + 8, "aborted transaction")?;
                c.plain_tags("aborted transaction tags")
            })?;
            c.skip(4, "preferred_read_replica")?;
            c.compact_bytes("records")?;
            c.tagged("partition data tags", |tag, c| {
                let fixed = match tag {
                    0 => 4 + 8, // diverging_epoch: epoch, end_offset
                    1 => 4 + 4, // current_leader: leader_id, leader_epoch
                    2 => 8 + 4, // snapshot_id: end_offset, epoch
                    _ => return Ok(false),
                };
                c.skip(fixed, "partition data tagged struct")?;
                c.plain_tags("partition data tagged struct tags").map(|_| true)
            })
        })?;
        c.plain_tags("response topic tags")
    })?;
    c.tagged("fetch response tags", |tag, c| match tag {
        // node_endpoints: node_id, host, port, rack, tags
        0 => c
            .compact_array(4 + 1 + 4 + 1 + 1, "node endpoints", |c| {
                c.skip(4, "node id")?;
                c.compact_bytes("host")?;
                c.skip(4, "port")?;
                c.compact_bytes("rack")?;
                c.plain_tags("node endpoint tags")
            })
            .map(|_| true),
        _ => Ok(false),
    })
}

/// Checks the body of an ApiVersions response (after its header) at `version` before it is decoded.
pub fn check_api_versions_response(body: &[u8], version: i16) -> Result<(), Refusal> {
    if !(0..=4).contains(&version) {
        return Err(format!("api versions version={version} is not decoded by the proxy"));
    }
    let c = &mut Cur::new(body);
    c.skip(2, "error_code")?;
    if version >= 3 {
        c.compact_array(2 + 2 + 2 + 1, "api_keys", |c| {
            c.skip(6, "api key")?;
            c.plain_tags("api key tags")
        })?;
    } else {
        let n = c.i32("api_keys")?;
        if n < 0 || (n as usize).saturating_mul(6) > c.left() {
            return Err(format!("api_keys: count={n} does not fit in the {} bytes left", c.left()));
        }
        c.skip(n as usize * 6, "api keys")?;
    }
    if version >= 1 {
        c.skip(4, "throttle_time_ms")?;
    }
    if version >= 3 {
        // features: name, two i16 levels, tags
        let feature = |c: &mut Cur<'_>| -> Result<(), Refusal> {
            c.compact_bytes("feature name")?;
            c.skip(4, "feature levels")?;
            c.plain_tags("feature tags")
        };
        c.tagged("api versions tags", |tag, c| match tag {
            0 | 2 => c.compact_array(1 + 4 + 1, "features", feature).map(|_| true),
            1 => c.skip(8, "finalized_features_epoch").map(|_| true),
            3 => c.skip(1, "zk_migration_ready").map(|_| true),
            _ => Ok(false),
        })?;
    }
    Ok(())
}

/// The Produce API key.
pub const PRODUCE: i16 = 0;

/// The `acks` of a Produce request frame (header included), read without decoding its records. `None`
/// when the frame is too short or malformed (the leader will answer it with an error or close).
pub fn produce_acks(frame: &[u8]) -> Option<i16> {
    let c = &mut Cur::new(frame);
    let api_key = c.i16("api_key").ok()?;
    let version = c.i16("api_version").ok()?;
    if api_key != PRODUCE {
        return None;
    }
    c.skip(4, "correlation_id").ok()?;
    // client_id: a nullable string with an i16 length in every request header version
    let n = c.i16("client_id").ok()?;
    if n > 0 {
        c.skip(n as usize, "client_id").ok()?;
    }
    if version >= 9 {
        c.plain_tags("request header tags").ok()?;
        c.compact_bytes("transactional_id").ok()?;
    } else if version >= 3 {
        let n = c.i16("transactional_id").ok()?;
        if n > 0 {
            c.skip(n as usize, "transactional_id").ok()?;
        }
    }
    c.i16("acks").ok()
}

/// The API key of ApiVersions.
pub const API_VERSIONS: i16 = 18;
/// Kafka's error code UNSUPPORTED_VERSION (an ApiVersions answer is then in v0's layout).
const NONE: i16 = 0;

/// An ApiVersions response frame (header included) answered at `version`, with `api_key`'s highest
/// version capped at `max`, patched in place. `None` when it needs no change, is an error answer or cannot
/// be read (then it is relayed unchanged).
pub fn cap_api_versions(frame: &Bytes, version: i16, api_key: i16, max: i16) -> Option<Bytes> {
    let c = &mut Cur::new(frame);
    // ApiVersions responses always have header v0: the correlation id only
    c.skip(4, "correlation_id").ok()?;
    if c.i16("error_code").ok()? != NONE {
        return None;
    }
    let flexible = version >= 3;
    let count = if flexible {
        c.compact_count(7, "api_keys").ok()??
    } else {
        let n = c.i32("api_keys").ok()?;
        if n < 0 || (n as usize).saturating_mul(6) > c.left() {
            return None;
        }
        n as usize
    };
    let mut patch = None;
    for _ in 0..count {
        let key = c.i16("api_key").ok()?;
        c.skip(2, "min_version").ok()?;
        let at = c.at;
        let max_version = c.i16("max_version").ok()?;
        if key == api_key && max_version > max {
            patch = Some(at);
        }
        if flexible {
            c.plain_tags("api_key tags").ok()?;
        }
    }
    let at = patch?;
    let mut out = BytesMut::from(&frame[..]);
    out[at..at + 2].copy_from_slice(&max.to_be_bytes());
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic, ReplicaState};
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
    };
    use kafka_protocol::messages::{
        ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, ProduceRequest, ProducerId, RequestHeader,
        ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use uuid::Uuid;

    fn enc<T: Encodable>(m: &T, v: i16) -> Vec<u8> {
        let mut b = BytesMut::new();
        m.encode(&mut b, v).unwrap();
        b.to_vec()
    }

    fn full_request(version: i16) -> FetchRequest {
        let mut r = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_rack_id(StrBytes::from_static_str("zone-a"))
            .with_cluster_id(Some(StrBytes::from_static_str("c1")))
            .with_topics(vec![
                FetchTopic::default().with_topic_id(Uuid::from_u128(7)).with_partitions(vec![
                    FetchPartition::default().with_partition(1).with_fetch_offset(9),
                    FetchPartition::default().with_partition(2),
                ]),
                FetchTopic::default().with_topic_id(Uuid::from_u128(8)),
            ])
            .with_forgotten_topics_data(vec![ForgottenTopic::default()
                .with_topic_id(Uuid::from_u128(9))
                .with_partitions(vec![1, 2, 3])]);
        if version == 12 {
            for t in &mut r.topics {
                t.topic_id = Uuid::nil();
            }
            r.forgotten_topics_data[0].topic_id = Uuid::nil();
            r.topics[0].topic = TopicName(StrBytes::from_static_str("t"));
            r.topics[1].topic = TopicName(StrBytes::from_static_str("u"));
            r.forgotten_topics_data[0].topic = TopicName(StrBytes::from_static_str("f"));
        }
        if version >= 15 {
            r.replica_state = ReplicaState::default().with_replica_id(BrokerId(3)).with_replica_epoch(4);
        } else {
            r.replica_id = BrokerId(3);
        }
        if version >= 17 {
            r.topics[0].partitions[0].replica_directory_id = Uuid::from_u128(5);
        }
        if version >= 18 {
            r.topics[0].partitions[1].high_watermark = 77;
        }
        r.unknown_tagged_fields.insert(9, Bytes::from_static(b"xyz"));
        r
    }

    fn full_response(version: i16) -> FetchResponse {
        let mut pd = PartitionData::default()
            .with_partition_index(3)
            .with_high_watermark(10)
            .with_aborted_transactions(Some(vec![AbortedTransaction::default().with_producer_id(ProducerId(1))]))
            .with_records(Some(Bytes::from_static(b"0123456789")))
            .with_diverging_epoch(EpochEndOffset::default().with_epoch(2).with_end_offset(5))
            .with_current_leader(LeaderIdAndEpoch::default().with_leader_id(BrokerId(1)).with_leader_epoch(4));
        pd.snapshot_id.end_offset = 3;
        pd.snapshot_id.epoch = 1;
        let mut t = FetchableTopicResponse::default().with_partitions(vec![pd, PartitionData::default()]);
        if version >= 13 {
            t.topic_id = Uuid::from_u128(3);
        } else {
            t.topic = TopicName(StrBytes::from_static_str("t"));
        }
        let mut r = FetchResponse::default().with_session_id(0).with_responses(vec![t]);
        if version >= 16 {
            r.node_endpoints = vec![NodeEndpoint::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("h"))
                .with_port(9092)
                .with_rack(Some(StrBytes::from_static_str("r")))];
        }
        r
    }

    #[test]
    fn real_fetch_messages_pass_and_every_truncation_is_refused_or_decodes_the_same_way() {
        for v in FETCH_VERSIONS.0..=FETCH_VERSIONS.1 {
            let req = enc(&full_request(v), v);
            check_fetch_request(&req, v).unwrap_or_else(|e| panic!("v{v}: {e}"));
            assert_eq!(FetchRequest::decode(&mut Bytes::from(req.clone()), v).unwrap(), full_request(v));
            let resp = enc(&full_response(v), v);
            check_fetch_response(&resp, v).unwrap_or_else(|e| panic!("v{v}: {e}"));
            for cut in 0..req.len() {
                // a prefix the walker accepts must also be a prefix the crate decodes without reading further
                if check_fetch_request(&req[..cut], v).is_ok() {
                    assert!(
                        FetchRequest::decode(&mut Bytes::copy_from_slice(&req[..cut]), v).is_ok(),
                        "v{v} cut={cut}"
                    );
                }
            }
            for cut in 0..resp.len() {
                if check_fetch_response(&resp[..cut], v).is_ok() {
                    assert!(FetchResponse::decode(&mut Bytes::copy_from_slice(&resp[..cut]), v).is_ok());
                }
            }
        }
        assert!(check_fetch_request(&enc(&full_request(12), 12), 11).is_err());
    }

    /// The issue's 49-byte Fetch v16: topics count 2^32-1 (varint 0xffffffff = count 2^32-2).
    #[test]
    fn a_huge_topics_count_is_refused_before_any_allocation() {
        let mut body = vec![0u8; 4 + 4 + 4 + 1 + 4 + 4];
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        body.resize(49 - 12, 0);
        let e = check_fetch_request(&body, 16).unwrap_err();
        assert!(e.contains("count=4294967294"), "{e}");
        // the same for a partitions count inside a real topic, and for a response's responses count
        let mut body = vec![0u8; 4 + 4 + 4 + 1 + 4 + 4];
        body.push(2); // one topic
        body.extend_from_slice(&[1; 16]);
        body.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x07]);
        assert!(check_fetch_request(&body, 16).unwrap_err().contains("fetch partitions"));
        let mut resp = vec![0u8; 10];
        resp.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(check_fetch_response(&resp, 16).is_err());
    }

    fn produce_frame(version: i16, acks: i16, txn: Option<&'static str>) -> Vec<u8> {
        let hv = if version >= 9 { 2 } else { 1 };
        let mut b = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(PRODUCE)
            .with_request_api_version(version)
            .with_correlation_id(5)
            .with_client_id(Some(StrBytes::from_static_str("producer-1")))
            .encode(&mut b, hv)
            .unwrap();
        let body = ProduceRequest::default().with_acks(acks).with_timeout_ms(1000).with_transactional_id(
            txn.map(|t| kafka_protocol::messages::TransactionalId(StrBytes::from_static_str(t))),
        );
        body.encode(&mut b, version).unwrap();
        b.to_vec()
    }

    #[test]
    fn produce_acks_are_read_without_decoding_records() {
        for v in 3..=13 {
            for (acks, txn) in [(0, None), (-1, Some("tx")), (1, None)] {
                assert_eq!(produce_acks(&produce_frame(v, acks, txn)), Some(acks), "v{v}");
            }
        }
        // the issue's 34-byte Produce v7 with a huge topic_data count: acks are still read, nothing allocated
        let mut f = produce_frame(7, 0, None);
        f.truncate(f.len() - 4);
        f.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(produce_acks(&f), Some(0));
        assert_eq!(produce_acks(&f[..9]), None);
        assert_eq!(produce_acks(b""), None);
    }

    fn api_versions(version: i16, fetch_max: i16) -> Bytes {
        let mut b = BytesMut::new();
        ResponseHeader::default().with_correlation_id(11).encode(&mut b, 0).unwrap();
        let keys = [(0, 3, 12), (1, 4, fetch_max), (18, 0, 4)]
            .map(|(k, lo, hi)| ApiVersion::default().with_api_key(k).with_min_version(lo).with_max_version(hi));
        ApiVersionsResponse::default().with_api_keys(keys.to_vec()).encode(&mut b, version).unwrap();
        b.freeze()
    }

    #[test]
    fn api_versions_fetch_max_is_capped_in_place() {
        for v in 0..=4 {
            let full = api_versions(v, 20);
            check_api_versions_response(&full[4..], v).unwrap_or_else(|e| panic!("v{v}: {e}"));
            for cut in 4..full.len() {
                if check_api_versions_response(&full[4..cut], v).is_ok() {
                    assert!(ApiVersionsResponse::decode(&mut full.slice(4..cut), v).is_ok(), "v{v} cut={cut}");
                }
            }
            let capped = cap_api_versions(&full, v, 1, 18).expect("patched");
            let mut body = capped.slice(4..);
            let r = ApiVersionsResponse::decode(&mut body, v).unwrap();
            let maxes: Vec<_> = r.api_keys.iter().map(|k| (k.api_key, k.max_version)).collect();
            assert_eq!(maxes, vec![(0, 12), (1, 18), (18, 4)], "v{v}");
            assert!(cap_api_versions(&api_versions(v, 17), v, 1, 18).is_none(), "nothing to cap");
        }
        let mut huge = api_versions(3, 20).to_vec();
        huge[6] = 0xff; // the api_keys count as a runaway varint
        huge[7] = 0xff;
        assert!(check_api_versions_response(&huge[4..], 3).is_err());
        assert!(cap_api_versions(&Bytes::from(huge), 3, 1, 18).is_none());
        assert!(cap_api_versions(&Bytes::from_static(b"\0\0\0\x01\0\x23"), 3, 1, 18).is_none());
    }
}
