//! The segment manifest: a small JSON document, framed with its own CRC-32C.
//!
//! Stored bytes: `FTMANIFEST1 <crc32c of body, 8 lowercase hex digits> <body length>\n<body>`, where
//! body is the JSON serialisation of [`SegmentManifest`]. A reader rejects a manifest whose frame, CRC or
//! JSON does not check out, naming the object key.

use serde::{Deserialize, Serialize};

use super::{crc32c, FORMAT_VERSION};
use crate::error::{Error, Result};

const MAGIC: &str = "FTMANIFEST1";

/// Which of a segment's indexes an entry holds. Names match Kafka's `IndexType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IndexKind {
    Offset,
    Timestamp,
    ProducerSnapshot,
    Transaction,
    LeaderEpoch,
}

impl IndexKind {
    /// From the JNI index number (declaration order of Kafka's `IndexType`).
    pub fn from_code(code: i32) -> Option<IndexKind> {
        Some(match code {
            0 => IndexKind::Offset,
            1 => IndexKind::Timestamp,
            2 => IndexKind::ProducerSnapshot,
            3 => IndexKind::Transaction,
            4 => IndexKind::LeaderEpoch,
            _ => return None,
        })
    }
}

/// The segment bytes object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogObject {
    pub key: String,
    pub size: u64,
    pub chunk_bytes: u64,
    /// CRC-32C of each `chunk_bytes` piece of the object, in order.
    pub chunk_crc32c: Vec<u32>,
}

/// One index inside the indexes object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub kind: IndexKind,
    pub position: u64,
    pub length: u64,
    pub crc32c: u32,
}

/// The indexes object: the segment's indexes, concatenated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexesObject {
    pub key: String,
    pub size: u64,
    pub entries: Vec<IndexEntry>,
}

/// Everything a reader needs to serve a segment, and to verify what it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentManifest {
    pub format: String,
    pub version: u32,
    pub topic: String,
    pub topic_id: String,
    pub partition: i32,
    pub segment_id: String,
    pub start_offset: i64,
    pub end_offset: i64,
    pub max_timestamp_ms: i64,
    pub broker_id: i32,
    /// (leader epoch, start offset) pairs of the segment, ascending.
    pub leader_epochs: Vec<(i32, i64)>,
    pub log: LogObject,
    pub indexes: IndexesObject,
    pub created_unix_ms: u64,
    pub writer: String,
}

impl SegmentManifest {
    pub const FORMAT: &'static str = "fasttier-slow-segment";

    /// Serialises into the framed stored form.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("manifest serialises");
        let mut out = format!("{MAGIC} {:08x} {}\n", crc32c(&body), body.len()).into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Parses and verifies the framed stored form read from `key`.
    pub fn decode(key: &str, data: &[u8]) -> Result<SegmentManifest> {
        let nl = data
            .iter()
            .position(|&b| b == b'\n')
            .filter(|&p| p < 64)
            .ok_or_else(|| Error::corrupt(key, "manifest has no header line"))?;
        let header =
            std::str::from_utf8(&data[..nl]).map_err(|_| Error::corrupt(key, "manifest header is not UTF-8"))?;
        let mut parts = header.split(' ');
        let (magic, crc, len) = (parts.next(), parts.next(), parts.next());
        if magic != Some(MAGIC) {
            return Err(Error::corrupt(key, format!("manifest magic={magic:?} expected={MAGIC}")));
        }
        let crc = crc
            .and_then(|c| u32::from_str_radix(c, 16).ok())
            .ok_or_else(|| Error::corrupt(key, "manifest header has no CRC"))?;
        let len: usize =
            len.and_then(|l| l.parse().ok()).ok_or_else(|| Error::corrupt(key, "manifest header has no length"))?;
        let body = &data[nl + 1..];
        if body.len() != len {
            return Err(Error::corrupt(key, format!("manifest length expected={len} actual={}", body.len())));
        }
        let actual = crc32c(body);
        if actual != crc {
            return Err(Error::corrupt(key, format!("manifest crc32c expected={crc:08x} actual={actual:08x}")));
        }
        let m: SegmentManifest =
            serde_json::from_slice(body).map_err(|e| Error::corrupt(key, format!("manifest JSON: {e}")))?;
        if m.format != Self::FORMAT || m.version == 0 || m.version > FORMAT_VERSION {
            return Err(Error::corrupt(
                key,
                format!(
                    "manifest format={} version={} not readable by this build (reads {} v1..v{FORMAT_VERSION})",
                    m.format,
                    m.version,
                    Self::FORMAT
                ),
            ));
        }
        let expected_chunks = m.log.size.div_ceil(m.log.chunk_bytes.max(1));
        if m.log.chunk_bytes == 0 || m.log.chunk_crc32c.len() as u64 != expected_chunks {
            return Err(Error::corrupt(key, "manifest chunk table does not match the log size"));
        }
        if m.indexes.entries.iter().any(|e| e.position.checked_add(e.length).is_none_or(|end| end > m.indexes.size)) {
            return Err(Error::corrupt(key, "manifest index entry lies outside the indexes object"));
        }
        Ok(m)
    }

    pub fn index(&self, kind: IndexKind) -> Option<&IndexEntry> {
        self.indexes.entries.iter().find(|e| e.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> SegmentManifest {
        SegmentManifest {
            format: SegmentManifest::FORMAT.into(),
            version: FORMAT_VERSION,
            topic: "t".into(),
            topic_id: "AAAAAAAAAAAAAAAAAAAAAQ".into(),
            partition: 0,
            segment_id: "AAAAAAAAAAAAAAAAAAAAAg".into(),
            start_offset: 0,
            end_offset: 99,
            max_timestamp_ms: 1,
            broker_id: 1,
            leader_epochs: vec![(0, 0), (3, 50)],
            log: LogObject { key: "k.log".into(), size: 10, chunk_bytes: 4, chunk_crc32c: vec![1, 2, 3] },
            indexes: IndexesObject {
                key: "k.indexes".into(),
                size: 8,
                entries: vec![IndexEntry { kind: IndexKind::Offset, position: 0, length: 8, crc32c: 5 }],
            },
            created_unix_ms: 0,
            writer: "test".into(),
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(SegmentManifest::decode("k", &bytes).unwrap(), m);
        for i in [0usize, 15, bytes.len() - 3] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            let e = SegmentManifest::decode("k.manifest", &bad).unwrap_err().to_string();
            assert!(e.contains("key=k.manifest"), "{e}");
        }
        assert!(SegmentManifest::decode("k", &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn rejects_inconsistent_tables() {
        let mut m = sample();
        m.log.chunk_crc32c.pop();
        assert!(SegmentManifest::decode("k", &m.encode()).is_err());
        let mut m = sample();
        m.indexes.entries[0].length = 9;
        assert!(SegmentManifest::decode("k", &m.encode()).is_err());
    }
}
