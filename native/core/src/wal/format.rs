//! The WAL object byte format and the stream's head document (specified in `docs/formats.md`, section
//! "Fast tier (WAL)").
//!
//! * [`WalObjectBuilder`] collects partition ranges and builds the stored bytes for a [`WalStamp`]
//!   (deterministic: the same ranges, in any order, and the same stamp give the same bytes);
//! * [`WalHeader::parse_prefix`] parses and validates the header from a prefix of an object (a ranged read
//!   of [`HEADER_FETCH_BYTES`], then [`WalHeader::header_len_from_prefix`] says whether more is needed);
//! * [`WalObject::parse`] validates a whole object and [`WalObject::range`] returns one partition's bytes
//!   after checking their CRC-32C;
//! * [`WalHead`] is the small JSON head document of a stream.
//!
//! Parsing never panics on bad input and never allocates more than the caps allow ([`MAX_ENTRIES`],
//! [`MAX_OBJECT_BYTES`]); every rejection is [`Error::Corrupt`] naming the object key.

use std::cmp::Ordering;
use std::ops::Range;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::crc32c;

/// A Kafka topic id (`Uuid`): most-significant 8 bytes then least-significant 8 bytes, each big-endian.
pub type TopicId = [u8; 16];

/// First four bytes of every WAL object.
pub const MAGIC: [u8; 4] = *b"FTWL";
/// The object layout version this build writes (and the only one it reads so far).
pub const VERSION: u16 = 1;
/// Length of the fixed part of the header.
pub const FIXED_HEADER_LEN: usize = 64;
/// Length of one entry of the entry table.
pub const ENTRY_LEN: usize = 56;
/// Length of the header CRC that ends the header.
pub const HEADER_CRC_LEN: usize = 4;
/// Most entries an object may have (caps the header at about 3.5 MiB).
pub const MAX_ENTRIES: u32 = 65_536;
/// Largest object the builder produces and a reader accepts.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;
/// How many bytes a ranged header read fetches first; enough for 140 entries.
pub const HEADER_FETCH_BYTES: u64 = 8 * 1024;

/// Kafka's textual form of a topic id (`Uuid.toString()`: base64url without padding), for messages.
pub fn topic_id_string(id: &TopicId) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// Header length of an object with `entries` entries.
pub fn header_len_for(entries: usize) -> u64 {
    (FIXED_HEADER_LEN + ENTRY_LEN * entries + HEADER_CRC_LEN) as u64
}

/// Who wrote an object and where it sits in its stream: everything in the header that is not the entry
/// table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalStamp {
    /// The stream's broker.
    pub broker_id: i32,
    /// The writer incarnation that created the object.
    pub incarnation: u64,
    /// The object's sequence number in the stream.
    pub seq: u64,
    /// `header_crc` of object `seq - 1`; 0 for the first object of a stream.
    pub prev_header_crc: u32,
    /// When the writer built the object.
    pub created_unix_ms: i64,
}

/// One partition range of an object, as stored in the entry table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WalEntry {
    pub topic_id: TopicId,
    pub partition: i32,
    /// Leader epoch of every batch in the range.
    pub leader_epoch: i32,
    /// Offset of the first record in the range.
    pub first_offset: i64,
    /// Offset of the last record in the range.
    pub last_offset: i64,
    /// Where the range starts in the object (absolute).
    pub position: u64,
    /// Bytes of the range.
    pub length: u32,
    /// CRC-32C of the range's bytes.
    pub crc32c: u32,
}

impl WalEntry {
    /// The range's bytes within the object.
    pub fn byte_range(&self) -> Range<u64> {
        self.position..self.position + u64::from(self.length)
    }

    fn sort_key(&self) -> (TopicId, i32, i64) {
        (self.topic_id, self.partition, self.first_offset)
    }

    fn describe(&self) -> String {
        format!(
            "topic_id={} partition={} offsets={}..={} range={}..{}",
            topic_id_string(&self.topic_id),
            self.partition,
            self.first_offset,
            self.last_offset,
            self.position,
            self.position + u64::from(self.length)
        )
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.topic_id);
        out.put_i32_le(self.partition);
        out.put_i32_le(self.leader_epoch);
        out.put_i64_le(self.first_offset);
        out.put_i64_le(self.last_offset);
        out.put_u64_le(self.position);
        out.put_u32_le(self.length);
        out.put_u32_le(self.crc32c);
    }

    fn decode(b: &[u8; ENTRY_LEN]) -> WalEntry {
        let mut topic_id = [0u8; 16];
        topic_id.copy_from_slice(&b[0..16]);
        WalEntry {
            topic_id,
            partition: i32::from_le_bytes(arr(b, 16)),
            leader_epoch: i32::from_le_bytes(arr(b, 20)),
            first_offset: i64::from_le_bytes(arr(b, 24)),
            last_offset: i64::from_le_bytes(arr(b, 32)),
            position: u64::from_le_bytes(arr(b, 40)),
            length: u32::from_le_bytes(arr(b, 48)),
            crc32c: u32::from_le_bytes(arr(b, 52)),
        }
    }
}

/// `N` bytes of `b` at `at`; callers index inside fixed-size arrays, so this cannot go out of bounds.
fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// Checks what the builder and the parser both require of a sorted entry list: valid coordinates,
/// strictly increasing sort keys, and within a partition increasing, non-overlapping offsets and
/// non-decreasing epochs. Returns a description of the first violation.
fn check_entry_order(entries: &[WalEntry]) -> std::result::Result<(), String> {
    for (i, e) in entries.iter().enumerate() {
        if e.partition < 0 || e.leader_epoch < 0 || e.first_offset < 0 || e.first_offset > e.last_offset {
            return Err(format!("entry={i} invalid coordinates leader_epoch={} {}", e.leader_epoch, e.describe()));
        }
        if e.length == 0 {
            return Err(format!("entry={i} has no bytes {}", e.describe()));
        }
        if i == 0 {
            continue;
        }
        let p = &entries[i - 1];
        match p.sort_key().cmp(&e.sort_key()) {
            Ordering::Less => {}
            _ => return Err(format!("entry={i} out of order after entry={} {}", i - 1, e.describe())),
        }
        if p.topic_id == e.topic_id && p.partition == e.partition {
            if p.last_offset >= e.first_offset {
                return Err(format!(
                    "entry={i} overlaps entry={} previous_last_offset={} {}",
                    i - 1,
                    p.last_offset,
                    e.describe()
                ));
            }
            if p.leader_epoch > e.leader_epoch {
                return Err(format!(
                    "entry={i} leader_epoch={} decreases from {} {}",
                    e.leader_epoch,
                    p.leader_epoch,
                    e.describe()
                ));
            }
        }
    }
    Ok(())
}

/// A parsed and validated WAL object header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalHeader {
    pub stamp: WalStamp,
    /// Length of the data section.
    pub data_len: u64,
    /// CRC-32C of the fixed part and the entry table (the next object's `prev_header_crc`).
    pub header_crc: u32,
    /// The entry table, sorted by (topic id, partition, first offset).
    pub entries: Vec<WalEntry>,
}

impl WalHeader {
    /// Reads the fixed part from the first [`FIXED_HEADER_LEN`] bytes of the object at `key` and returns the
    /// length of the whole header (fixed part, entry table, CRC). The fixed part is checked (magic, version,
    /// flags, entry cap, `header_len`), its CRC is not (that needs the whole header).
    pub fn header_len_from_prefix(key: &str, prefix: &[u8]) -> Result<u64> {
        let Some(fixed) = prefix.get(..FIXED_HEADER_LEN) else {
            return Err(Error::corrupt(
                key,
                format!("truncated wal object: size={} fixed_header={FIXED_HEADER_LEN}", prefix.len()),
            ));
        };
        if fixed[0..4] != MAGIC {
            return Err(Error::corrupt(key, format!("wal magic={:02x?} expected={MAGIC:02x?}", &fixed[0..4])));
        }
        let version = u16::from_le_bytes(arr(fixed, 4));
        if version != VERSION {
            return Err(Error::corrupt(key, format!("wal version={version} supported={VERSION}")));
        }
        let flags = u16::from_le_bytes(arr(fixed, 6));
        if flags != 0 {
            return Err(Error::corrupt(key, format!("wal flags={flags:#06x} unknown")));
        }
        let count = u32::from_le_bytes(arr(fixed, 12));
        if count > MAX_ENTRIES {
            return Err(Error::corrupt(key, format!("wal entry_count={count} above cap={MAX_ENTRIES}")));
        }
        let header_len = u64::from(u32::from_le_bytes(arr(fixed, 48)));
        let expected = header_len_for(count as usize);
        if header_len != expected {
            return Err(Error::corrupt(
                key,
                format!("wal header_len={header_len} expected={expected} for entry_count={count}"),
            ));
        }
        Ok(header_len)
    }

    /// Parses and validates the header from `prefix`, the first bytes of the object at `key` (at least
    /// [`WalHeader::header_len_from_prefix`] of them; more are ignored). Checks everything that the header
    /// alone can prove: fixed part, header CRC, reserved bytes, entry order and overlaps, and that the ranges
    /// tile the data section exactly. Data CRCs are checked when a range is read.
    pub fn parse_prefix(key: &str, prefix: &[u8]) -> Result<WalHeader> {
        let header_len = Self::header_len_from_prefix(key, prefix)?;
        let table_end = header_len as usize - HEADER_CRC_LEN;
        let Some(header) = prefix.get(..header_len as usize) else {
            return Err(Error::corrupt(
                key,
                format!("truncated wal object: size={} header_len={header_len}", prefix.len()),
            ));
        };
        let stored_crc = u32::from_le_bytes(arr(header, table_end));
        let actual_crc = crc32c(&header[..table_end]);
        if stored_crc != actual_crc {
            return Err(Error::corrupt(
                key,
                format!("wal header crc32c expected={stored_crc:08x} actual={actual_crc:08x}"),
            ));
        }
        let fixed = &header[..FIXED_HEADER_LEN];
        let reserved = u64::from_le_bytes(arr(fixed, 56));
        if reserved != 0 {
            return Err(Error::corrupt(key, format!("wal reserved={reserved:#x} not zero")));
        }
        let stamp = WalStamp {
            broker_id: i32::from_le_bytes(arr(fixed, 8)),
            incarnation: u64::from_le_bytes(arr(fixed, 16)),
            seq: u64::from_le_bytes(arr(fixed, 24)),
            created_unix_ms: i64::from_le_bytes(arr(fixed, 32)),
            prev_header_crc: u32::from_le_bytes(arr(fixed, 52)),
        };
        if stamp.broker_id < 0 {
            return Err(Error::corrupt(key, format!("wal broker_id={} negative", stamp.broker_id)));
        }
        let data_len = u64::from_le_bytes(arr(fixed, 40));
        if data_len > MAX_OBJECT_BYTES - header_len {
            return Err(Error::corrupt(key, format!("wal data_len={data_len} above cap={MAX_OBJECT_BYTES}")));
        }
        let entries: Vec<WalEntry> =
            header[FIXED_HEADER_LEN..table_end].chunks_exact(ENTRY_LEN).map(|c| WalEntry::decode(&arr(c, 0))).collect();
        check_entry_order(&entries).map_err(|d| Error::corrupt(key, format!("wal entry table: {d}")))?;
        let mut pos = header_len;
        for (i, e) in entries.iter().enumerate() {
            if e.position != pos {
                return Err(Error::corrupt(
                    key,
                    format!("wal entry={i} position expected={pos} (ranges must be adjacent) {}", e.describe()),
                ));
            }
            pos += u64::from(e.length);
        }
        if pos != header_len + data_len {
            return Err(Error::corrupt(
                key,
                format!("wal ranges end at={pos} but data section ends at={}", header_len + data_len),
            ));
        }
        Ok(WalHeader { stamp, data_len, header_crc: stored_crc, entries })
    }

    /// Length of the header (the data section starts here).
    pub fn header_len(&self) -> u64 {
        header_len_for(self.entries.len())
    }

    /// Size of the whole object.
    pub fn object_len(&self) -> u64 {
        self.header_len() + self.data_len
    }

    /// The entries of one partition (adjacent in the table; empty if the object has none).
    pub fn entries_of(&self, topic_id: &TopicId, partition: i32) -> &[WalEntry] {
        let start = self.entries.partition_point(|e| (e.topic_id, e.partition) < (*topic_id, partition));
        let len =
            self.entries[start..].iter().take_while(|e| e.topic_id == *topic_id && e.partition == partition).count();
        &self.entries[start..start + len]
    }

    /// The partition's contiguous byte range in the object, for one ranged GET.
    pub fn partition_span(&self, topic_id: &TopicId, partition: i32) -> Option<Range<u64>> {
        let entries = self.entries_of(topic_id, partition);
        let (first, last) = (entries.first()?, entries.last()?);
        Some(first.position..last.byte_range().end)
    }

    /// Every (topic id, partition) in the object, in table order.
    pub fn partitions(&self) -> impl Iterator<Item = (TopicId, i32)> + '_ {
        let mut last: Option<(TopicId, i32)> = None;
        self.entries.iter().filter_map(move |e| {
            let p = (e.topic_id, e.partition);
            (last.replace(p) != Some(p)).then_some(p)
        })
    }

    /// Verifies `span`, the bytes of [`WalHeader::partition_span`] read from the object at `key`, and
    /// returns the partition's data (`None` if the object holds no range of the partition). A short read or
    /// a CRC-32C mismatch is [`Error::Corrupt`] naming the key, the partition and the byte range.
    pub fn verify_partition(
        &self,
        key: &str,
        topic_id: &TopicId,
        partition: i32,
        span: Bytes,
    ) -> Result<Option<PartitionData>> {
        let entries = self.entries_of(topic_id, partition);
        let Some(range) = self.partition_span(topic_id, partition) else {
            return Ok(None);
        };
        let want = range.end - range.start;
        if span.len() as u64 != want {
            return Err(Error::corrupt(
                key,
                format!(
                    "wal range short topic_id={} partition={partition} range={}..{} expected_bytes={want} actual_bytes={}",
                    topic_id_string(topic_id),
                    range.start,
                    range.end,
                    span.len()
                ),
            ));
        }
        for e in entries {
            let at = (e.position - range.start) as usize;
            let actual = crc32c(&span[at..at + e.length as usize]);
            if actual != e.crc32c {
                return Err(Error::corrupt(
                    key,
                    format!("wal range crc32c expected={:08x} actual={actual:08x} {}", e.crc32c, e.describe()),
                ));
            }
        }
        Ok(Some(PartitionData { topic_id: *topic_id, partition, entries: entries.to_vec(), data: span }))
    }
}

/// One partition's verified bytes from one object: the partition's entries and their bytes, contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionData {
    pub topic_id: TopicId,
    pub partition: i32,
    /// The partition's entries (one per leader epoch), in offset order.
    pub entries: Vec<WalEntry>,
    /// The bytes of all `entries`, back to back (every entry's CRC-32C checked).
    pub data: Bytes,
}

impl PartitionData {
    /// Each entry with its own bytes.
    pub fn slices(&self) -> impl Iterator<Item = (&WalEntry, Bytes)> + '_ {
        let base = self.entries.first().map_or(0, |e| e.position);
        self.entries.iter().map(move |e| {
            let at = (e.position - base) as usize;
            (e, self.data.slice(at..at + e.length as usize))
        })
    }

    /// Offset of the first record.
    pub fn first_offset(&self) -> Option<i64> {
        self.entries.first().map(|e| e.first_offset)
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> Option<i64> {
        self.entries.last().map(|e| e.last_offset)
    }
}

/// A whole WAL object, structurally validated (header CRC, entry table, exact size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    key: String,
    header: WalHeader,
    bytes: Bytes,
}

impl WalObject {
    /// Parses and validates the object `bytes` read from `key`. Partition data CRCs are checked by
    /// [`WalObject::range`] (or all at once by [`WalObject::verify_data`]).
    pub fn parse(key: &str, bytes: Bytes) -> Result<WalObject> {
        let header = WalHeader::parse_prefix(key, &bytes)?;
        if bytes.len() as u64 != header.object_len() {
            return Err(Error::corrupt(
                key,
                format!(
                    "wal object size={} expected={} (header_len={} data_len={})",
                    bytes.len(),
                    header.object_len(),
                    header.header_len(),
                    header.data_len
                ),
            ));
        }
        Ok(WalObject { key: key.to_string(), header, bytes })
    }

    /// The key the object was read from.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn header(&self) -> &WalHeader {
        &self.header
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn seq(&self) -> u64 {
        self.header.stamp.seq
    }

    /// The verified bytes of one partition; `None` if the object holds none of it.
    pub fn range(&self, topic_id: &TopicId, partition: i32) -> Result<Option<PartitionData>> {
        let Some(span) = self.header.partition_span(topic_id, partition) else {
            return Ok(None);
        };
        let span = self.bytes.slice(span.start as usize..span.end as usize);
        self.header.verify_partition(&self.key, topic_id, partition, span)
    }

    /// Checks the CRC-32C of every range.
    pub fn verify_data(&self) -> Result<()> {
        let parts: Vec<(TopicId, i32)> = self.header.partitions().collect();
        for (t, p) in parts {
            self.range(&t, p)?;
        }
        Ok(())
    }
}

/// One partition range handed to the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RangeInput {
    topic_id: TopicId,
    partition: i32,
    leader_epoch: i32,
    first_offset: i64,
    last_offset: i64,
    data: Bytes,
}

/// The built stored form of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltObject {
    pub bytes: Bytes,
    /// The header as stored (its `header_crc` is the next object's `prev_header_crc`).
    pub header: WalHeader,
}

/// Collects partition ranges for one WAL object (the *content*; the writer supplies the [`WalStamp`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalObjectBuilder {
    ranges: Vec<RangeInput>,
    data_len: u64,
}

impl WalObjectBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the bytes `data` of records `first_offset..=last_offset` of a partition, all in `leader_epoch`.
    /// Rejects invalid coordinates, empty data and anything beyond the caps; overlaps between ranges of
    /// one partition are found by [`WalObjectBuilder::build`].
    pub fn add(
        &mut self,
        topic_id: TopicId,
        partition: i32,
        leader_epoch: i32,
        first_offset: i64,
        last_offset: i64,
        data: Bytes,
    ) -> Result<()> {
        let what = || format!("topic_id={} partition={partition}", topic_id_string(&topic_id));
        if partition < 0 || leader_epoch < 0 || first_offset < 0 || first_offset > last_offset {
            return Err(Error::Internal(format!(
                "wal range invalid {} leader_epoch={leader_epoch} offsets={first_offset}..={last_offset}",
                what()
            )));
        }
        if data.is_empty() || data.len() as u64 > u64::from(u32::MAX) {
            return Err(Error::Internal(format!("wal range size={} not in 1..=u32::MAX {}", data.len(), what())));
        }
        if self.ranges.len() >= MAX_ENTRIES as usize {
            return Err(Error::Internal(format!("wal object full: entries={MAX_ENTRIES} {}", what())));
        }
        let object_len = header_len_for(self.ranges.len() + 1) + self.data_len + data.len() as u64;
        if object_len > MAX_OBJECT_BYTES {
            return Err(Error::Internal(format!(
                "wal object would be size={object_len} above cap={MAX_OBJECT_BYTES} {}",
                what()
            )));
        }
        self.data_len += data.len() as u64;
        self.ranges.push(RangeInput { topic_id, partition, leader_epoch, first_offset, last_offset, data });
        Ok(())
    }

    /// Number of ranges added.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Bytes of partition data added.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Size of the object [`WalObjectBuilder::build`] would produce.
    pub fn object_len(&self) -> u64 {
        header_len_for(self.ranges.len()) + self.data_len
    }

    /// Builds the stored bytes: ranges sorted by (topic id, partition, first offset), data back to back in
    /// that order, CRC-32C of every range and of the header. Fails if two ranges of a partition overlap or
    /// their epochs decrease with increasing offsets.
    pub fn build(&self, stamp: &WalStamp) -> Result<BuiltObject> {
        if stamp.broker_id < 0 {
            return Err(Error::Internal(format!("wal broker_id={} negative", stamp.broker_id)));
        }
        let mut order: Vec<&RangeInput> = self.ranges.iter().collect();
        order.sort_by_key(|r| (r.topic_id, r.partition, r.first_offset));
        let header_len = header_len_for(order.len());
        let mut pos = header_len;
        let entries: Vec<WalEntry> = order
            .iter()
            .map(|r| {
                let e = WalEntry {
                    topic_id: r.topic_id,
                    partition: r.partition,
                    leader_epoch: r.leader_epoch,
                    first_offset: r.first_offset,
                    last_offset: r.last_offset,
                    position: pos,
                    length: r.data.len() as u32,
                    crc32c: crc32c(&r.data),
                };
                pos += u64::from(e.length);
                e
            })
            .collect();
        check_entry_order(&entries).map_err(|d| Error::Internal(format!("wal ranges rejected: {d}")))?;

        let mut out = BytesMut::with_capacity((header_len + self.data_len) as usize);
        out.put_slice(&MAGIC);
        out.put_u16_le(VERSION);
        out.put_u16_le(0);
        out.put_i32_le(stamp.broker_id);
        out.put_u32_le(entries.len() as u32);
        out.put_u64_le(stamp.incarnation);
        out.put_u64_le(stamp.seq);
        out.put_i64_le(stamp.created_unix_ms);
        out.put_u64_le(self.data_len);
        out.put_u32_le(header_len as u32);
        out.put_u32_le(stamp.prev_header_crc);
        out.put_u64_le(0);
        for e in &entries {
            e.encode(&mut out);
        }
        let header_crc = crc32c(&out);
        out.put_u32_le(header_crc);
        for r in &order {
            out.put_slice(&r.data);
        }
        debug_assert_eq!(out.len() as u64, header_len + self.data_len);
        let header = WalHeader { stamp: *stamp, data_len: self.data_len, header_crc, entries };
        Ok(BuiltObject { bytes: out.freeze(), header })
    }
}

const HEAD_MAGIC: &str = "FTWALHEAD1";

/// The stream's head document: an advisory pointer to the stream's ends (see `docs/formats.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalHead {
    /// Always [`WalHead::FORMAT`].
    pub format: String,
    pub version: u32,
    pub broker_id: i32,
    /// Incarnation of the writer that wrote the head.
    pub incarnation: u64,
    /// Every seq below it has been written.
    pub next_seq: u64,
    /// Every seq below it is (or is about to be) deleted.
    pub low_water: u64,
    pub updated_unix_ms: i64,
}

impl WalHead {
    pub const FORMAT: &'static str = "fasttier-wal-head";
    pub const VERSION: u32 = 1;

    /// Serialises into the framed stored form `FTWALHEAD1 <crc32c:08x> <len>\n<json>`.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut out = format!("{HEAD_MAGIC} {:08x} {}\n", crc32c(&body), body.len()).into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Parses and checks the framed form read from `key` (frame, CRC, JSON, format, version, and
    /// `low_water <= next_seq`).
    pub fn decode(key: &str, data: &[u8]) -> Result<WalHead> {
        let nl = data
            .iter()
            .take(64)
            .position(|&b| b == b'\n')
            .ok_or_else(|| Error::corrupt(key, "wal head has no header line"))?;
        let line = std::str::from_utf8(&data[..nl]).map_err(|_| Error::corrupt(key, "wal head line is not UTF-8"))?;
        let mut parts = line.split(' ');
        let (magic, crc, len) = (parts.next(), parts.next(), parts.next());
        if magic != Some(HEAD_MAGIC) || parts.next().is_some() {
            return Err(Error::corrupt(key, format!("wal head line={line:?} expected magic={HEAD_MAGIC}")));
        }
        let crc = crc
            .filter(|c| c.len() == 8)
            .and_then(|c| u32::from_str_radix(c, 16).ok())
            .ok_or_else(|| Error::corrupt(key, "wal head line has no CRC"))?;
        let len: usize =
            len.and_then(|l| l.parse().ok()).ok_or_else(|| Error::corrupt(key, "wal head line has no length"))?;
        let body = &data[nl + 1..];
        if body.len() != len {
            return Err(Error::corrupt(key, format!("wal head length expected={len} actual={}", body.len())));
        }
        let actual = crc32c(body);
        if actual != crc {
            return Err(Error::corrupt(key, format!("wal head crc32c expected={crc:08x} actual={actual:08x}")));
        }
        let head: WalHead =
            serde_json::from_slice(body).map_err(|e| Error::corrupt(key, format!("wal head JSON: {e}")))?;
        if head.format != Self::FORMAT || head.version != Self::VERSION {
            return Err(Error::corrupt(
                key,
                format!("wal head format={:?} version={} unknown", head.format, head.version),
            ));
        }
        if head.low_water > head.next_seq {
            return Err(Error::corrupt(
                key,
                format!("wal head low_water={} above next_seq={}", head.low_water, head.next_seq),
            ));
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "p/fasttier/v1/wal/1/00000000000000000007.wal";

    fn tid(n: u8) -> TopicId {
        let mut t = [0u8; 16];
        t[0] = n;
        t[15] = n.wrapping_mul(7);
        t
    }

    fn stamp() -> WalStamp {
        WalStamp { broker_id: 1, incarnation: 42, seq: 7, prev_header_crc: 0xdead_beef, created_unix_ms: 1_700_000 }
    }

    fn data(tag: u8, len: usize) -> Bytes {
        Bytes::from((0..len).map(|i| tag.wrapping_add(i as u8)).collect::<Vec<_>>())
    }

    /// Three partitions of two topics, one partition with two epochs, added out of order.
    fn sample() -> WalObjectBuilder {
        let mut b = WalObjectBuilder::new();
        b.add(tid(2), 0, 5, 100, 109, data(1, 300)).unwrap();
        b.add(tid(1), 3, 4, 10, 19, data(2, 200)).unwrap();
        b.add(tid(1), 3, 5, 20, 20, data(3, 50)).unwrap();
        b.add(tid(1), 0, 4, 0, 0, data(4, 1)).unwrap();
        b
    }

    #[test]
    fn round_trip_sorted_and_contiguous() {
        let built = sample().build(&stamp()).unwrap();
        let obj = WalObject::parse(KEY, built.bytes.clone()).unwrap();
        let h = obj.header();
        assert_eq!(h.stamp, stamp());
        assert_eq!(*h, built.header);
        assert_eq!(h.entries.len(), 4);
        assert_eq!(h.header_len(), 64 + 4 * 56 + 4);
        assert_eq!(h.object_len(), built.bytes.len() as u64);
        let order: Vec<(u8, i32, i64)> =
            h.entries.iter().map(|e| (e.topic_id[0], e.partition, e.first_offset)).collect();
        assert_eq!(order, vec![(1, 0, 0), (1, 3, 10), (1, 3, 20), (2, 0, 100)]);
        assert_eq!(h.partitions().count(), 3);
        obj.verify_data().unwrap();

        let p = obj.range(&tid(1), 3).unwrap().unwrap();
        assert_eq!(p.entries.len(), 2);
        assert_eq!((p.first_offset(), p.last_offset()), (Some(10), Some(20)));
        assert_eq!(p.data.len(), 250);
        let slices: Vec<Bytes> = p.slices().map(|(_, b)| b).collect();
        assert_eq!(slices, vec![data(2, 200), data(3, 50)]);
        assert_eq!(obj.range(&tid(2), 0).unwrap().unwrap().data, data(1, 300));
        assert!(obj.range(&tid(2), 1).unwrap().is_none());
        assert!(obj.range(&tid(3), 0).unwrap().is_none());
        assert_eq!(h.partition_span(&tid(1), 3), Some(h.entries[1].position..h.entries[2].byte_range().end));
    }

    #[test]
    fn build_is_deterministic_whatever_the_add_order() {
        let a = sample().build(&stamp()).unwrap();
        let mut b = WalObjectBuilder::new();
        b.add(tid(1), 0, 4, 0, 0, data(4, 1)).unwrap();
        b.add(tid(1), 3, 5, 20, 20, data(3, 50)).unwrap();
        b.add(tid(2), 0, 5, 100, 109, data(1, 300)).unwrap();
        b.add(tid(1), 3, 4, 10, 19, data(2, 200)).unwrap();
        assert_eq!(a, b.build(&stamp()).unwrap());
        let other = WalStamp { seq: 8, ..stamp() };
        assert_ne!(a.bytes, sample().build(&other).unwrap().bytes);
    }

    #[test]
    fn empty_object_round_trips() {
        let built = WalObjectBuilder::new().build(&stamp()).unwrap();
        assert_eq!(built.bytes.len(), 68);
        let obj = WalObject::parse(KEY, built.bytes).unwrap();
        assert!(obj.header().entries.is_empty());
        assert!(obj.range(&tid(1), 0).unwrap().is_none());
    }

    #[test]
    fn builder_rejects_bad_ranges() {
        let mut b = WalObjectBuilder::new();
        assert!(b.add(tid(1), -1, 0, 0, 0, data(0, 1)).is_err());
        assert!(b.add(tid(1), 0, -1, 0, 0, data(0, 1)).is_err());
        assert!(b.add(tid(1), 0, 0, -1, 0, data(0, 1)).is_err());
        assert!(b.add(tid(1), 0, 0, 5, 4, data(0, 1)).is_err());
        assert!(b.add(tid(1), 0, 0, 0, 0, Bytes::new()).is_err());
        assert!(b.is_empty());
        // Overlapping offsets of one partition.
        b.add(tid(1), 0, 0, 0, 10, data(0, 1)).unwrap();
        b.add(tid(1), 0, 0, 10, 12, data(0, 1)).unwrap();
        let e = b.build(&stamp()).unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
        // Same first offset twice.
        let mut b = WalObjectBuilder::new();
        b.add(tid(1), 0, 0, 0, 0, data(0, 1)).unwrap();
        b.add(tid(1), 0, 0, 0, 0, data(0, 1)).unwrap();
        assert!(b.build(&stamp()).is_err());
        // Epoch going down while offsets go up.
        let mut b = WalObjectBuilder::new();
        b.add(tid(1), 0, 5, 0, 0, data(0, 1)).unwrap();
        b.add(tid(1), 0, 4, 1, 1, data(0, 1)).unwrap();
        assert!(b.build(&stamp()).unwrap_err().to_string().contains("decreases"));
        assert!(WalObjectBuilder::new().build(&WalStamp { broker_id: -1, ..stamp() }).is_err());
    }

    /// Flipping any single byte of the header, or of any range, is detected and names the key.
    #[test]
    fn corruption_anywhere_is_detected() {
        let built = sample().build(&stamp()).unwrap();
        let header_len = WalObject::parse(KEY, built.bytes.clone()).unwrap().header().header_len() as usize;
        for i in 0..built.bytes.len() {
            let mut b = built.bytes.to_vec();
            b[i] ^= 0x5A;
            let res = WalObject::parse(KEY, Bytes::from(b)).and_then(|o| o.verify_data());
            let err = match res {
                Err(e) => e,
                Ok(()) => panic!("flip at byte {i} went unnoticed"),
            };
            assert!(matches!(err, Error::Corrupt { .. }), "byte {i}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("key={KEY}")), "byte {i}: {msg}");
            if i >= header_len {
                // A data flip names the partition and the byte range.
                assert!(msg.contains("partition=") && msg.contains("range="), "byte {i}: {msg}");
            }
        }
    }

    #[test]
    fn truncated_and_extended_objects_are_rejected() {
        let built = sample().build(&stamp()).unwrap();
        for len in 0..built.bytes.len() {
            let err = WalObject::parse(KEY, built.bytes.slice(..len)).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }) && err.to_string().contains(KEY), "len {len}: {err}");
        }
        let mut longer = built.bytes.to_vec();
        longer.push(0);
        assert!(WalObject::parse(KEY, Bytes::from(longer)).unwrap_err().to_string().contains("size="));
    }

    /// Hand-made headers with a valid CRC but invalid content.
    #[test]
    fn structurally_invalid_headers_are_rejected() {
        let built = sample().build(&stamp()).unwrap();
        let header_len = 64 + 4 * 56;
        let reseal = |mutate: &dyn Fn(&mut Vec<u8>)| {
            let mut b = built.bytes.to_vec();
            mutate(&mut b);
            let crc = crc32c(&b[..header_len]);
            b[header_len..header_len + 4].copy_from_slice(&crc.to_le_bytes());
            WalObject::parse(KEY, Bytes::from(b)).unwrap_err().to_string()
        };
        // Entries 0 and 1 swapped: out of order.
        let e = reseal(&|b| {
            let (e0, e1) = (b[64..120].to_vec(), b[120..176].to_vec());
            b[64..120].copy_from_slice(&e1);
            b[120..176].copy_from_slice(&e0);
        });
        assert!(e.contains("out of order") || e.contains("position"), "{e}");
        // Position of entry 1 moved by one.
        let e = reseal(&|b| {
            let p = u64::from_le_bytes(b[120 + 40..120 + 48].try_into().unwrap()) + 1;
            b[120 + 40..120 + 48].copy_from_slice(&p.to_le_bytes());
        });
        assert!(e.contains("position expected"), "{e}");
        // first > last.
        let e = reseal(&|b| b[64 + 24..64 + 32].copy_from_slice(&5i64.to_le_bytes()));
        assert!(e.contains("invalid coordinates"), "{e}");
        // data_len lies.
        let e = reseal(&|b| b[40..48].copy_from_slice(&1u64.to_le_bytes()));
        assert!(e.contains("data section"), "{e}");
        // Reserved bytes set.
        let e = reseal(&|b| b[60] = 1);
        assert!(e.contains("reserved"), "{e}");
        // Entry count above the cap (caught before anything is allocated).
        let mut b = built.bytes.to_vec();
        b[12..16].copy_from_slice(&(MAX_ENTRIES + 1).to_le_bytes());
        assert!(WalObject::parse(KEY, Bytes::from(b)).unwrap_err().to_string().contains("cap"));
        // Unknown version.
        let mut b = built.bytes.to_vec();
        b[4] = 2;
        assert!(WalObject::parse(KEY, Bytes::from(b)).unwrap_err().to_string().contains("version=2"));
    }

    #[test]
    fn header_from_a_prefix_then_ranged_partition_read() {
        let built = sample().build(&stamp()).unwrap();
        let header_len = WalHeader::header_len_from_prefix(KEY, &built.bytes[..64]).unwrap();
        assert_eq!(header_len, 64 + 4 * 56 + 4);
        assert!(WalHeader::parse_prefix(KEY, &built.bytes[..header_len as usize - 1]).is_err());
        let h = WalHeader::parse_prefix(KEY, &built.bytes[..header_len as usize]).unwrap();
        assert_eq!(h, *WalObject::parse(KEY, built.bytes.clone()).unwrap().header());
        let span = h.partition_span(&tid(1), 3).unwrap();
        let got = built.bytes.slice(span.start as usize..span.end as usize);
        let p = h.verify_partition(KEY, &tid(1), 3, got.clone()).unwrap().unwrap();
        assert_eq!(p.data.len(), 250);
        // A short ranged read and a corrupted one are errors naming key, partition and range.
        let e = h.verify_partition(KEY, &tid(1), 3, got.slice(..249)).unwrap_err().to_string();
        assert!(e.contains(KEY) && e.contains("partition=3") && e.contains("range="), "{e}");
        let mut bad = got.to_vec();
        bad[230] ^= 1;
        let e = h.verify_partition(KEY, &tid(1), 3, Bytes::from(bad)).unwrap_err().to_string();
        assert!(e.contains(KEY) && e.contains("partition=3") && e.contains("crc32c"), "{e}");
        assert!(h.verify_partition(KEY, &tid(9), 3, Bytes::new()).unwrap().is_none());
    }

    #[test]
    fn head_round_trip_and_rejections() {
        let head = WalHead {
            format: WalHead::FORMAT.into(),
            version: 1,
            broker_id: 3,
            incarnation: 1_777_000_000_000 * 1024 + 5,
            next_seq: 10,
            low_water: 4,
            updated_unix_ms: 5,
        };
        let enc = head.encode();
        assert!(enc.starts_with(b"FTWALHEAD1 "));
        assert_eq!(WalHead::decode("h", &enc).unwrap(), head);
        for i in 0..enc.len() {
            let mut b = enc.clone();
            b[i] ^= 0x21;
            if let Ok(h) = WalHead::decode("h", &b) {
                panic!("flip at {i} accepted: {h:?}");
            }
        }
        assert!(WalHead::decode("h", &enc[..enc.len() - 1]).unwrap_err().to_string().contains("key=h"));
        assert!(WalHead::decode("h", b"").is_err());
        let bad = WalHead { low_water: 11, ..head };
        assert!(WalHead::decode("h", &bad.encode()).unwrap_err().to_string().contains("low_water"));
    }

    fn arb_ranges() -> impl Strategy<Value = Vec<(u8, i32, i32, i64, u16, Vec<u8>)>> {
        // (topic, partition, epoch, first offset, records-1, bytes); offsets are made disjoint below.
        prop::collection::vec(
            (0u8..4, 0i32..3, 0i32..3, 0i64..1_000_000, 0u16..50, prop::collection::vec(any::<u8>(), 1..200)),
            0..40,
        )
    }

    proptest! {
        #[test]
        fn random_ranges_round_trip_byte_exactly(ranges in arb_ranges(), seq in any::<u64>(), inc in any::<u64>()) {
            // Make ranges of one partition disjoint with non-decreasing epochs by spacing offsets per index.
            let mut b = WalObjectBuilder::new();
            let mut want = std::collections::BTreeMap::<(TopicId, i32), Vec<(i64, i64, i32, Vec<u8>)>>::new();
            for (i, (t, p, _epoch, _first, n, bytes)) in ranges.iter().enumerate() {
                let first = i as i64 * 100;
                let last = first + i64::from(*n);
                let epoch = i as i32; // increases with offsets
                b.add(tid(*t), *p, epoch, first, last, Bytes::from(bytes.clone())).unwrap();
                want.entry((tid(*t), *p)).or_default().push((first, last, epoch, bytes.clone()));
            }
            let st = WalStamp { broker_id: 9, incarnation: inc, seq, prev_header_crc: 1, created_unix_ms: -1 };
            let built = b.build(&st).unwrap();
            prop_assert_eq!(built.bytes.len() as u64, b.object_len());
            let obj = WalObject::parse(KEY, built.bytes.clone()).unwrap();
            prop_assert_eq!(obj.header().stamp, st);
            obj.verify_data().unwrap();
            for ((t, p), list) in &want {
                let got = obj.range(t, *p).unwrap().unwrap();
                let got: Vec<(i64, i64, i32, Vec<u8>)> = got
                    .slices()
                    .map(|(e, d)| (e.first_offset, e.last_offset, e.leader_epoch, d.to_vec()))
                    .collect();
                prop_assert_eq!(&got, list);
            }
            prop_assert_eq!(obj.header().partitions().count(), want.len());
            // Header-only parse of the prefix agrees.
            let hl = WalHeader::header_len_from_prefix(KEY, &built.bytes).unwrap() as usize;
            prop_assert_eq!(&WalHeader::parse_prefix(KEY, &built.bytes[..hl]).unwrap(), obj.header());
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = WalObject::parse(KEY, Bytes::from(bytes.clone()));
            let _ = WalHead::decode(KEY, &bytes);
            let mut framed = built_prefix();
            framed.extend_from_slice(&bytes);
            let _ = WalObject::parse(KEY, Bytes::from(framed));
        }
    }

    /// A valid fixed header prefix, so random tails exercise the entry-table paths.
    fn built_prefix() -> Vec<u8> {
        sample().build(&stamp()).unwrap().bytes[..64].to_vec()
    }
}
