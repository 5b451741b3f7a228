//! Kafka record batches (format v2, "magic 2"), parsed directly from bytes.
//!
//! Kafka's own record classes cannot be used: they moved to an internal package in Kafka 4.3, and the
//! native core has no JVM anyway. This module reads the fixed 61-byte batch header in place (no copies,
//! no allocation), verifies CRC-32C, and walks a buffer of concatenated batches (a segment file or a piece
//! of one). The records section is never decoded: fasttier moves batches byte-exact.
//!
//! Header layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! | offset | field | type |
//! |---:|---|---|
//! | 0 | base offset | i64 |
//! | 8 | length (bytes after this field: batch size = length + 12) | i32 |
//! | 12 | partition leader epoch | i32 |
//! | 16 | magic (= 2) | i8 |
//! | 17 | CRC-32C of bytes 21..end | u32 |
//! | 21 | attributes | i16 |
//! | 23 | last offset delta | i32 |
//! | 27 | base timestamp | i64 |
//! | 35 | max timestamp | i64 |
//! | 43 | producer id | i64 |
//! | 51 | producer epoch | i16 |
//! | 53 | base sequence | i32 |
//! | 57 | record count | i32 |
//! | 61 | records | |
//!
//! The partition leader epoch lies outside the CRC (Kafka rewrites it in place), so two batches that differ
//! only in their epoch have the same CRC.
//!
//! A buffer is walked with [`Batches`], which yields complete, verified batches and stops cleanly at the
//! first incomplete one (a batch still being written) or at zero fill (the unwritten tail of a preallocated
//! segment). Anything else that does not look like a batch is a [`BatchError`] naming its position.
//! [`testing`] builds valid batches for tests.

use std::fmt;

use super::crc32c;
use crate::error::Error;

/// Bytes before the batch `length` field ends: base offset (8) + length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header; also the size of the smallest valid batch (no records).
pub const HEADER_SIZE: usize = 61;
/// The smallest valid value of the `length` field.
pub const MIN_LENGTH: i32 = (HEADER_SIZE - LOG_OVERHEAD) as i32;
/// The only batch format this module reads.
pub const MAGIC_V2: i8 = 2;
/// Start of the bytes covered by the batch CRC (the attributes field).
pub const CRC_START: usize = 21;
/// Default upper bound on a single batch accepted by [`Batches`]: larger claims are reported as corrupt
/// rather than read (a torn or corrupt length must not make a reader allocate gigabytes).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 << 20;

/// Field positions inside the header.
pub mod field {
    pub const BASE_OFFSET: usize = 0;
    pub const LENGTH: usize = 8;
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORD_COUNT: usize = 57;
    pub const RECORDS: usize = 61;
}

fn be_i16(b: &[u8; HEADER_SIZE], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8; HEADER_SIZE], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8; HEADER_SIZE], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Reads a big-endian i64 at `at` of `buf`, if the buffer is long enough.
fn peek_i64(buf: &[u8], at: usize) -> Option<i64> {
    let bytes = buf.get(at..at + 8)?;
    let mut x = [0u8; 8];
    x.copy_from_slice(bytes);
    Some(i64::from_be_bytes(x))
}

/// Reads a big-endian i32 at `at` of `buf`, if the buffer is long enough.
fn peek_i32(buf: &[u8], at: usize) -> Option<i32> {
    let bytes = buf.get(at..at + 4)?;
    Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Compression codec of a batch (attribute bits 0–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    /// A codec number this build does not know (5–7).
    Unknown(u8),
}

/// The batch attributes field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes(pub i16);

impl Attributes {
    /// Attribute bit 3: timestamps are log-append time (otherwise create time).
    pub const LOG_APPEND_TIME: i16 = 1 << 3;
    /// Attribute bit 4: the batch belongs to a transaction.
    pub const TRANSACTIONAL: i16 = 1 << 4;
    /// Attribute bit 5: a control batch (transaction marker).
    pub const CONTROL: i16 = 1 << 5;
    /// Attribute bit 6: the base timestamp holds a delete horizon (compacted topics).
    pub const DELETE_HORIZON: i16 = 1 << 6;

    /// The compression codec (bits 0–2).
    pub fn compression(self) -> Compression {
        match self.0 & 0x7 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            n => Compression::Unknown(n as u8),
        }
    }

    /// Timestamps are log-append time (bit 3).
    pub fn is_log_append_time(self) -> bool {
        self.0 & Self::LOG_APPEND_TIME != 0
    }

    /// The batch is part of a transaction (bit 4).
    pub fn is_transactional(self) -> bool {
        self.0 & Self::TRANSACTIONAL != 0
    }

    /// The batch is a control batch, e.g. a commit or abort marker (bit 5).
    pub fn is_control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }

    /// The base timestamp is a delete horizon (bit 6).
    pub fn has_delete_horizon(self) -> bool {
        self.0 & Self::DELETE_HORIZON != 0
    }
}

/// What is wrong with the bytes at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchErrorKind {
    /// The magic byte is not 2.
    BadMagic(i8),
    /// The length field is below [`MIN_LENGTH`] (and the bytes are not zero fill).
    BadLength(i32),
    /// The batch claims more bytes than the reader accepts.
    TooLarge { size: u64, max: usize },
    /// The stored CRC does not match the CRC-32C of bytes 21..end.
    CrcMismatch { stored: u32, computed: u32 },
}

/// Bytes that are not a valid v2 batch, at `position` (relative to whatever the caller said position 0 is,
/// usually the start of a segment file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub position: u64,
    /// The base offset field, when at least its 8 bytes were there.
    pub base_offset: Option<i64>,
    pub kind: BatchErrorKind,
}

impl BatchError {
    /// The crate error for this, with `key` naming the file or object (`Error::Corrupt`).
    pub fn into_error(self, key: impl Into<String>) -> Error {
        Error::corrupt(key, self.to_string())
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record batch position={}", self.position)?;
        if let Some(o) = self.base_offset {
            write!(f, " base_offset={o}")?;
        }
        match &self.kind {
            BatchErrorKind::BadMagic(m) => write!(f, " magic={m} expected={MAGIC_V2}"),
            BatchErrorKind::BadLength(l) => write!(f, " length={l} below minimum={MIN_LENGTH}"),
            BatchErrorKind::TooLarge { size, max } => write!(f, " size={size} above max_batch_bytes={max}"),
            BatchErrorKind::CrcMismatch { stored, computed } => {
                write!(f, " crc32c stored={stored:08x} computed={computed:08x}")
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// The raw batch size (`length + 12`) announced by the first 12 bytes of `buf`; `None` with fewer than 12
/// bytes or a negative length. The value is not validated otherwise (see [`frame`]).
pub fn batch_size(buf: &[u8]) -> Option<u64> {
    let length = peek_i32(buf, field::LENGTH)?;
    u64::try_from(length).ok().map(|l| l + LOG_OVERHEAD as u64)
}

/// What the bytes at the start of a buffer hold, judged from the header alone (the CRC is not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A batch of `size` bytes starts here and all of it is in the buffer.
    Complete { size: usize },
    /// The buffer ends before the batch (or its 12-byte prefix) does: at least `needed` bytes are required.
    Incomplete { needed: usize },
    /// Zero fill (base offset 0 and length 0): the end of the written data, e.g. in a preallocated segment.
    ZeroFill,
}

/// Classifies the bytes at the start of `buf`. `position` is used in errors only; `max_batch_bytes` bounds
/// the size a batch may claim.
pub fn frame(buf: &[u8], position: u64, max_batch_bytes: usize) -> Result<Frame, BatchError> {
    let (Some(base_offset), Some(length)) = (peek_i64(buf, field::BASE_OFFSET), peek_i32(buf, field::LENGTH)) else {
        return Ok(Frame::Incomplete { needed: LOG_OVERHEAD });
    };
    if base_offset == 0 && length == 0 {
        return Ok(Frame::ZeroFill);
    }
    let err = |kind| BatchError { position, base_offset: Some(base_offset), kind };
    if length < MIN_LENGTH {
        return Err(err(BatchErrorKind::BadLength(length)));
    }
    if let Some(&magic) = buf.get(field::MAGIC) {
        if magic as i8 != MAGIC_V2 {
            return Err(err(BatchErrorKind::BadMagic(magic as i8)));
        }
    }
    let size = length as u64 + LOG_OVERHEAD as u64;
    if size > max_batch_bytes as u64 {
        return Err(err(BatchErrorKind::TooLarge { size, max: max_batch_bytes }));
    }
    let size = size as usize;
    if buf.len() < size {
        return Ok(Frame::Incomplete { needed: size });
    }
    Ok(Frame::Complete { size })
}

/// A view of a 61-byte v2 batch header. Accessors read the fields in place.
#[derive(Clone, Copy)]
pub struct BatchHeader<'a> {
    b: &'a [u8; HEADER_SIZE],
}

impl<'a> BatchHeader<'a> {
    /// Views the first [`HEADER_SIZE`] bytes of `buf` as a header after checking magic and length;
    /// `position` is used in errors only. Returns `None` if `buf` is shorter than a header.
    pub fn parse(buf: &'a [u8], position: u64) -> Option<Result<Self, BatchError>> {
        let b: &[u8; HEADER_SIZE] = buf.get(..HEADER_SIZE)?.try_into().ok()?;
        let h = BatchHeader { b };
        let err = |kind| Some(Err(BatchError { position, base_offset: Some(h.base_offset()), kind }));
        if h.magic() != MAGIC_V2 {
            return err(BatchErrorKind::BadMagic(h.magic()));
        }
        if h.length() < MIN_LENGTH {
            return err(BatchErrorKind::BadLength(h.length()));
        }
        Some(Ok(h))
    }

    /// The raw 61 header bytes.
    pub fn bytes(&self) -> &'a [u8; HEADER_SIZE] {
        self.b
    }
    pub fn base_offset(&self) -> i64 {
        be_i64(self.b, field::BASE_OFFSET)
    }
    /// The length field: bytes after it (see [`BatchHeader::batch_size`]).
    pub fn length(&self) -> i32 {
        be_i32(self.b, field::LENGTH)
    }
    /// Total size of the batch in bytes (`length + 12`).
    pub fn batch_size(&self) -> usize {
        self.length().max(0) as usize + LOG_OVERHEAD
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.b, field::PARTITION_LEADER_EPOCH)
    }
    pub fn magic(&self) -> i8 {
        self.b[field::MAGIC] as i8
    }
    /// The stored CRC-32C.
    pub fn crc(&self) -> u32 {
        be_i32(self.b, field::CRC) as u32
    }
    pub fn attributes(&self) -> Attributes {
        Attributes(be_i16(self.b, field::ATTRIBUTES))
    }
    pub fn compression(&self) -> Compression {
        self.attributes().compression()
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes().is_transactional()
    }
    pub fn is_control(&self) -> bool {
        self.attributes().is_control()
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.b, field::LAST_OFFSET_DELTA)
    }
    /// `base_offset + last_offset_delta` (saturating, so corrupt values cannot overflow).
    pub fn last_offset(&self) -> i64 {
        self.base_offset().saturating_add(self.last_offset_delta() as i64)
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.b, field::BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.b, field::MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.b, field::PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.b, field::PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.b, field::BASE_SEQUENCE)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(self.b, field::RECORD_COUNT)
    }
}

impl fmt::Debug for BatchHeader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchHeader")
            .field("base_offset", &self.base_offset())
            .field("length", &self.length())
            .field("partition_leader_epoch", &self.partition_leader_epoch())
            .field("magic", &self.magic())
            .field("crc", &format_args!("{:08x}", self.crc()))
            .field("attributes", &self.attributes())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("base_timestamp", &self.base_timestamp())
            .field("max_timestamp", &self.max_timestamp())
            .field("producer_id", &self.producer_id())
            .field("producer_epoch", &self.producer_epoch())
            .field("base_sequence", &self.base_sequence())
            .field("record_count", &self.record_count())
            .finish()
    }
}

/// A complete batch: exactly `header.batch_size()` bytes.
#[derive(Clone, Copy)]
pub struct RecordBatch<'a> {
    header: BatchHeader<'a>,
    bytes: &'a [u8],
}

impl<'a> RecordBatch<'a> {
    /// Views the batch at the start of `buf` (which may hold more after it). Checks magic, length and that
    /// the whole batch is present, not the CRC ([`RecordBatch::verify_crc`]). `None` if `buf` is too short.
    pub fn parse(buf: &'a [u8], position: u64) -> Option<Result<Self, BatchError>> {
        let header = match BatchHeader::parse(buf, position)? {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        let bytes = buf.get(..header.batch_size())?;
        Some(Ok(RecordBatch { header, bytes }))
    }

    pub fn header(&self) -> BatchHeader<'a> {
        self.header
    }
    /// All bytes of the batch, header included, exactly as stored.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// The records section (opaque: possibly compressed).
    pub fn records(&self) -> &'a [u8] {
        &self.bytes[field::RECORDS..]
    }
    /// CRC-32C of bytes 21..end.
    pub fn computed_crc(&self) -> u32 {
        crc32c(&self.bytes[CRC_START..])
    }
    /// Checks the stored CRC against the bytes; `position` is used in the error only.
    pub fn verify_crc(&self, position: u64) -> Result<(), BatchError> {
        let (stored, computed) = (self.header.crc(), self.computed_crc());
        if stored == computed {
            return Ok(());
        }
        Err(BatchError {
            position,
            base_offset: Some(self.header.base_offset()),
            kind: BatchErrorKind::CrcMismatch { stored, computed },
        })
    }
}

impl fmt::Debug for RecordBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.header.fmt(f)
    }
}

/// Why a [`Batches`] walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every byte was consumed.
    End,
    /// An incomplete batch starts at `position` (absolute); `needed` bytes from there are required.
    Incomplete { position: u64, needed: usize },
    /// Zero fill starts at `position`: no more data.
    ZeroFill { position: u64 },
    /// Corrupt bytes at `position` (the error was yielded by the iterator).
    Corrupt { position: u64 },
}

/// Iterator over the complete batches at the start of a buffer.
///
/// Yields each batch after checking magic, length and (unless disabled) CRC. It ends at the end of the
/// buffer, at an incomplete batch, at zero fill, or after yielding one error; [`Batches::consumed`] then
/// says how many bytes the yielded batches cover and [`Batches::stop`] why it ended.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    base_position: u64,
    max_batch_bytes: usize,
    verify_crc: bool,
    stop: Option<Stop>,
}

impl<'a> Batches<'a> {
    /// Walks `buf`, whose first byte is at `base_position` (used in positions and errors).
    pub fn new(buf: &'a [u8], base_position: u64) -> Self {
        Batches { buf, pos: 0, base_position, max_batch_bytes: DEFAULT_MAX_BATCH_BYTES, verify_crc: true, stop: None }
    }

    /// Accept batches of up to `max` bytes (default [`DEFAULT_MAX_BATCH_BYTES`]).
    pub fn max_batch_bytes(mut self, max: usize) -> Self {
        self.max_batch_bytes = max;
        self
    }

    /// Skip CRC verification (headers are still checked).
    pub fn without_crc(mut self) -> Self {
        self.verify_crc = false;
        self
    }

    /// Bytes covered by the batches yielded so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Why the walk ended (`None` while it has not).
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// Absolute position of the next unread byte.
    pub fn next_position(&self) -> u64 {
        self.base_position + self.pos as u64
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<RecordBatch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stop.is_some() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let position = self.next_position();
        if rest.is_empty() {
            self.stop = Some(Stop::End);
            return None;
        }
        let size = match frame(rest, position, self.max_batch_bytes) {
            Ok(Frame::Complete { size }) => size,
            Ok(Frame::Incomplete { needed }) => {
                self.stop = Some(Stop::Incomplete { position, needed });
                return None;
            }
            Ok(Frame::ZeroFill) => {
                self.stop = Some(Stop::ZeroFill { position });
                return None;
            }
            Err(e) => {
                self.stop = Some(Stop::Corrupt { position });
                return Some(Err(e));
            }
        };
        let batch = match RecordBatch::parse(&rest[..size], position) {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                self.stop = Some(Stop::Corrupt { position });
                return Some(Err(e));
            }
            // Unreachable: frame() checked size >= HEADER_SIZE and that all of it is present.
            None => {
                self.stop = Some(Stop::Incomplete { position, needed: size });
                return None;
            }
        };
        if self.verify_crc {
            if let Err(e) = batch.verify_crc(position) {
                self.stop = Some(Stop::Corrupt { position });
                return Some(Err(e));
            }
        }
        self.pos += size;
        Some(Ok(batch))
    }
}

/// Builders of valid v2 batches for tests (here and in other modules and crates). Not used in production.
pub mod testing {
    use super::{crc32c, field, CRC_START, HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2};

    /// Describes one batch to encode; [`BatchSpec::build`] writes it with a correct length and CRC.
    #[derive(Debug, Clone)]
    pub struct BatchSpec {
        pub base_offset: i64,
        pub partition_leader_epoch: i32,
        pub attributes: i16,
        /// Number of records the header announces (`last_offset_delta = record_count - 1`).
        pub record_count: i32,
        pub base_timestamp: i64,
        pub max_timestamp: i64,
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
        /// The records section, stored as given.
        pub records: Vec<u8>,
    }

    impl BatchSpec {
        /// A non-transactional, uncompressed batch of `record_count` records at `base_offset`, leader epoch 0,
        /// with an opaque records section of `record_count` bytes.
        pub fn new(base_offset: i64, record_count: i32) -> Self {
            BatchSpec {
                base_offset,
                partition_leader_epoch: 0,
                attributes: 0,
                record_count,
                base_timestamp: 1_700_000_000_000,
                max_timestamp: 1_700_000_000_000,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                records: (0..record_count.max(0)).map(|i| i as u8).collect(),
            }
        }

        pub fn epoch(mut self, epoch: i32) -> Self {
            self.partition_leader_epoch = epoch;
            self
        }

        pub fn attributes(mut self, attributes: i16) -> Self {
            self.attributes = attributes;
            self
        }

        pub fn timestamps(mut self, base: i64, max: i64) -> Self {
            self.base_timestamp = base;
            self.max_timestamp = max;
            self
        }

        pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
            self.producer_id = id;
            self.producer_epoch = epoch;
            self.base_sequence = base_sequence;
            self
        }

        /// Opaque records section (the header's record count is left as it is).
        pub fn records(mut self, records: impl Into<Vec<u8>>) -> Self {
            self.records = records.into();
            self
        }

        /// Real, uncompressed Kafka records with these values (no keys, no headers, timestamp delta 0);
        /// also sets the record count. Kafka itself can read such batches.
        pub fn values<V: AsRef<[u8]>>(mut self, values: &[V]) -> Self {
            self.record_count = values.len() as i32;
            self.records = encode_records(values);
            self
        }

        /// The encoded batch.
        pub fn build(&self) -> Vec<u8> {
            let size = HEADER_SIZE + self.records.len();
            let mut b = Vec::with_capacity(size);
            b.extend_from_slice(&self.base_offset.to_be_bytes());
            b.extend_from_slice(&((size - LOG_OVERHEAD) as i32).to_be_bytes());
            b.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
            b.push(MAGIC_V2 as u8);
            b.extend_from_slice(&[0; 4]); // CRC, below
            b.extend_from_slice(&self.attributes.to_be_bytes());
            b.extend_from_slice(&(self.record_count - 1).max(0).to_be_bytes());
            b.extend_from_slice(&self.base_timestamp.to_be_bytes());
            b.extend_from_slice(&self.max_timestamp.to_be_bytes());
            b.extend_from_slice(&self.producer_id.to_be_bytes());
            b.extend_from_slice(&self.producer_epoch.to_be_bytes());
            b.extend_from_slice(&self.base_sequence.to_be_bytes());
            b.extend_from_slice(&self.record_count.to_be_bytes());
            debug_assert_eq!(b.len(), field::RECORDS);
            b.extend_from_slice(&self.records);
            let crc = crc32c(&b[CRC_START..]);
            b[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
            b
        }
    }

    /// Shorthand: an encoded batch at `base_offset` with `epoch`, `record_count` records and `records` as
    /// its (opaque) records section.
    pub fn batch(base_offset: i64, epoch: i32, record_count: i32, records: &[u8]) -> Vec<u8> {
        BatchSpec::new(base_offset, record_count).epoch(epoch).records(records).build()
    }

    /// Kafka v2 records (uncompressed): per record a varint length, attributes 0, timestamp delta 0, offset
    /// delta `i`, null key, the value, no headers.
    pub fn encode_records<V: AsRef<[u8]>>(values: &[V]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let v = v.as_ref();
            let mut body = vec![0u8]; // attributes
            put_varint(&mut body, 0); // timestamp delta
            put_varint(&mut body, i as i64); // offset delta
            put_varint(&mut body, -1); // key length: null
            put_varint(&mut body, v.len() as i64);
            body.extend_from_slice(v);
            put_varint(&mut body, 0); // header count
            put_varint(&mut out, body.len() as i64);
            out.extend_from_slice(&body);
        }
        out
    }

    /// Zig-zag varint, as Kafka's `ByteUtils.writeVarlong`.
    fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{batch, BatchSpec};
    use super::*;

    fn stream(specs: &[BatchSpec]) -> Vec<u8> {
        specs.iter().flat_map(|s| s.build()).collect()
    }

    #[test]
    fn header_fields_round_trip() {
        let b = BatchSpec::new(1234, 3)
            .epoch(7)
            .attributes(Attributes::TRANSACTIONAL | 4)
            .timestamps(11, 22)
            .producer(99, 5, 17)
            .records(b"hello".to_vec())
            .build();
        assert_eq!(b.len(), HEADER_SIZE + 5);
        assert_eq!(batch_size(&b), Some(b.len() as u64));
        let rb = RecordBatch::parse(&b, 0).unwrap().unwrap();
        let h = rb.header();
        assert_eq!(h.base_offset(), 1234);
        assert_eq!(h.length() as usize, b.len() - 12);
        assert_eq!(h.batch_size(), b.len());
        assert_eq!(h.partition_leader_epoch(), 7);
        assert_eq!(h.magic(), 2);
        assert_eq!(h.last_offset_delta(), 2);
        assert_eq!(h.last_offset(), 1236);
        assert_eq!(h.base_timestamp(), 11);
        assert_eq!(h.max_timestamp(), 22);
        assert_eq!(h.producer_id(), 99);
        assert_eq!(h.producer_epoch(), 5);
        assert_eq!(h.base_sequence(), 17);
        assert_eq!(h.record_count(), 3);
        assert_eq!(h.compression(), Compression::Zstd);
        assert!(h.is_transactional());
        assert!(!h.is_control());
        assert!(!h.attributes().is_log_append_time());
        assert_eq!(rb.records(), b"hello");
        assert_eq!(h.crc(), crc32c(&b[21..]));
        rb.verify_crc(0).unwrap();
        let control = BatchSpec::new(0, 1).attributes(Attributes::CONTROL | Attributes::TRANSACTIONAL).build();
        let h = RecordBatch::parse(&control, 0).unwrap().unwrap().header();
        assert!(h.is_control() && h.is_transactional());
        assert!(format!("{h:?}").contains("base_offset: 0"));
    }

    #[test]
    fn epoch_is_outside_the_crc() {
        let mut b = batch(10, 1, 2, b"ab");
        b[field::PARTITION_LEADER_EPOCH + 3] = 9;
        let rb = RecordBatch::parse(&b, 0).unwrap().unwrap();
        assert_eq!(rb.header().partition_leader_epoch(), 9);
        rb.verify_crc(0).unwrap();
        // Every byte from 21 on is covered.
        for i in CRC_START..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            let rb = RecordBatch::parse(&c, 0).unwrap();
            // Flipping the length/magic region is outside this loop; records/attributes flips keep parsing.
            let rb = match rb {
                Ok(rb) => rb,
                Err(_) => continue,
            };
            assert!(rb.verify_crc(0).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn real_records_encoding_matches_kafka_layout() {
        // One record with value "v": length=8 (zigzag 16), attrs 0, ts delta 0, offset delta 0,
        // key length -1 (zigzag 1), value length 1 (zigzag 2), 'v', header count 0.
        let recs = testing::encode_records(&[b"v"]);
        assert_eq!(recs, vec![14, 0, 0, 0, 1, 2, b'v', 0]);
        let b = BatchSpec::new(5, 0).epoch(7).values(&[b"v".as_slice(), b"w"]).build();
        let h = RecordBatch::parse(&b, 0).unwrap().unwrap().header();
        assert_eq!((h.record_count(), h.last_offset()), (2, 6));
        // Byte-identical to what kafka-clients 4.1.2 produces for
        // MemoryRecords.withRecords(MAGIC_VALUE_V2, 5L, Compression.NONE, CREATE_TIME, -1L, (short) -1, -1, 7,
        //     false, new SimpleRecord(1_700_000_000_000L, null, "v"), new SimpleRecord(same, null, "w")).
        let kafka = "0000000000000005000000410000000702497a433d0000000000010000018bcfe568000000018bcfe56800ff\
                     ffffffffffffffffffffffffff000000020e000000010276000e00000201027700";
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hex, kafka);
    }

    #[test]
    fn iterator_stops_at_incomplete_tail() {
        let s = stream(&[BatchSpec::new(0, 2), BatchSpec::new(2, 3).records(vec![1; 100]), BatchSpec::new(5, 1)]);
        let sizes = [HEADER_SIZE + 2, HEADER_SIZE + 100, HEADER_SIZE + 1];
        for cut in 0..=s.len() {
            let mut it = Batches::new(&s[..cut], 1000);
            let got: Vec<_> = it.by_ref().map(|r| r.unwrap().header().base_offset()).collect();
            let mut expect_bytes = 0;
            let mut expect = vec![];
            for (i, sz) in sizes.iter().enumerate() {
                if expect_bytes + sz > cut {
                    break;
                }
                expect_bytes += sz;
                expect.push([0, 2, 5][i]);
            }
            assert_eq!(got, expect, "cut={cut}");
            assert_eq!(it.consumed(), expect_bytes);
            let stop = it.stop().unwrap();
            if cut == expect_bytes {
                assert_eq!(stop, Stop::End);
            } else {
                assert!(matches!(stop, Stop::Incomplete { position, .. } if position == 1000 + expect_bytes as u64));
            }
        }
    }

    #[test]
    fn zero_fill_ends_the_data() {
        let mut s = stream(&[BatchSpec::new(0, 1), BatchSpec::new(1, 1)]);
        let data = s.len();
        s.resize(data + 4096, 0);
        let mut it = Batches::new(&s, 0);
        assert_eq!(it.by_ref().count(), 2);
        assert_eq!(it.consumed(), data);
        assert_eq!(it.stop(), Some(Stop::ZeroFill { position: data as u64 }));
        // Fewer than 12 zero bytes: not yet decidable, reported as incomplete.
        let mut it = Batches::new(&s[..data + 5], 0);
        assert_eq!(it.by_ref().count(), 2);
        assert!(matches!(it.stop(), Some(Stop::Incomplete { .. })));
        assert_eq!(frame(&[0; 64], 0, 1 << 20), Ok(Frame::ZeroFill));
    }

    #[test]
    fn corruption_is_reported_with_position() {
        let good = stream(&[BatchSpec::new(0, 1), BatchSpec::new(1, 1)]);
        let second = HEADER_SIZE + 1;

        // CRC mismatch in the second batch.
        let mut s = good.clone();
        *s.last_mut().unwrap() ^= 1;
        let mut it = Batches::new(&s, 500);
        assert!(it.next().unwrap().is_ok());
        let e = it.next().unwrap().unwrap_err();
        assert_eq!(e.position, 500 + second as u64);
        assert_eq!(e.base_offset, Some(1));
        assert!(matches!(e.kind, BatchErrorKind::CrcMismatch { .. }));
        assert!(it.next().is_none());
        assert_eq!(it.consumed(), second);
        assert_eq!(it.stop(), Some(Stop::Corrupt { position: 500 + second as u64 }));
        let msg = e.clone().into_error("00000000000000000000.log").to_string();
        assert!(msg.contains("key=00000000000000000000.log"), "{msg}");
        assert!(msg.contains(&format!("position={}", 500 + second)), "{msg}");
        assert!(msg.contains("base_offset=1 crc32c stored="), "{msg}");
        // Without CRC checks the same bytes pass.
        assert_eq!(Batches::new(&s, 0).without_crc().filter(|r| r.is_ok()).count(), 2);

        // Bad magic.
        let mut s = good.clone();
        s[second + field::MAGIC] = 1;
        let e = Batches::new(&s, 0).nth(1).unwrap().unwrap_err();
        assert_eq!((e.position, e.kind.clone()), (second as u64, BatchErrorKind::BadMagic(1)));
        assert!(e.to_string().contains("magic=1 expected=2"));

        // Length below the minimum header.
        let mut s = good.clone();
        s[second + field::LENGTH..second + field::LENGTH + 4].copy_from_slice(&10i32.to_be_bytes());
        let e = Batches::new(&s, 0).nth(1).unwrap().unwrap_err();
        assert_eq!(e.kind, BatchErrorKind::BadLength(10));
        let mut s = good.clone();
        s[field::LENGTH..field::LENGTH + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(batch_size(&s), None);
        assert_eq!(Batches::new(&s, 0).next().unwrap().unwrap_err().kind, BatchErrorKind::BadLength(-5));

        // Claimed size above the bound.
        let mut s = good.clone();
        s[field::LENGTH..field::LENGTH + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        let e = Batches::new(&s, 0).next().unwrap().unwrap_err();
        assert!(matches!(e.kind, BatchErrorKind::TooLarge { .. }));
        let e = Batches::new(&good, 0).max_batch_bytes(HEADER_SIZE).next().unwrap().unwrap_err();
        assert!(matches!(e.kind, BatchErrorKind::TooLarge { size: 62, max: 61 }));
    }

    #[test]
    fn short_and_hostile_inputs_do_not_panic() {
        for len in 0..80 {
            let buf = vec![0xffu8; len];
            let _ = Batches::new(&buf, 0).count();
            let _ = BatchHeader::parse(&buf, 0);
            let _ = RecordBatch::parse(&buf, 0);
            let _ = frame(&buf, 0, usize::MAX);
        }
        assert!(BatchHeader::parse(&[0u8; 60], 0).is_none());
        let b = batch(0, 0, 1, b"x");
        assert!(RecordBatch::parse(&b[..b.len() - 1], 0).is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut it = Batches::new(&buf, 7);
            let n = it.by_ref().count();
            proptest::prop_assert!(it.consumed() <= buf.len());
            proptest::prop_assert!(n <= buf.len() / HEADER_SIZE + 1);
        }
    }
}
