//! Object keys. Layout (see `docs/formats.md`):
//!
//! ```text
//! <prefix>fasttier/v1/segments/<topic>-<topicId>/<partition>/<startOffset:020>-<segmentId>.<suffix>
//! ```
//! with suffix `log` (segment bytes), `indexes` (the segment's indexes, concatenated) and `manifest`
//! (JSON description with CRC-32C of every stored range; written last, so its presence marks a complete
//! copy). Topic names are Kafka-legal (`[a-zA-Z0-9._-]`), ids are Kafka `Uuid`s in base64url; both are
//! validated so a key can never escape its directory.

use crate::error::{Error, Result};

/// Identifies one copied segment (one copy attempt: Kafka gives each attempt a fresh segment id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentRef {
    pub topic: String,
    /// Kafka topic id, base64url as printed by `Uuid.toString()`.
    pub topic_id: String,
    pub partition: i32,
    pub start_offset: i64,
    /// Kafka `RemoteLogSegmentId.id()`, base64url.
    pub segment_id: String,
}

fn valid_topic(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn valid_uuid(s: &str) -> bool {
    (16..=24).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

impl SegmentRef {
    /// Validates the coordinates Kafka passed.
    pub fn new(topic: &str, topic_id: &str, partition: i32, start_offset: i64, segment_id: &str) -> Result<Self> {
        if !valid_topic(topic) {
            return Err(Error::Internal(format!("invalid topic name topic={topic:?}")));
        }
        if !valid_uuid(topic_id) {
            return Err(Error::Internal(format!("invalid topic id topic={topic} topic_id={topic_id:?}")));
        }
        if !valid_uuid(segment_id) {
            return Err(Error::Internal(format!("invalid segment id topic={topic} segment_id={segment_id:?}")));
        }
        if partition < 0 || start_offset < 0 {
            return Err(Error::Internal(format!(
                "invalid coordinates topic={topic} partition={partition} start_offset={start_offset}"
            )));
        }
        Ok(SegmentRef {
            topic: topic.to_string(),
            topic_id: topic_id.to_string(),
            partition,
            start_offset,
            segment_id: segment_id.to_string(),
        })
    }

    /// Directory of the partition: `<prefix>fasttier/v1/segments/<topic>-<topicId>/<partition>/`.
    pub fn partition_prefix(&self, prefix: &str) -> String {
        partition_prefix(prefix, &self.topic, &self.topic_id, self.partition)
    }

    fn base(&self, prefix: &str) -> String {
        format!("{}{:020}-{}", self.partition_prefix(prefix), self.start_offset, self.segment_id)
    }

    pub fn log_key(&self, prefix: &str) -> String {
        format!("{}.log", self.base(prefix))
    }

    pub fn indexes_key(&self, prefix: &str) -> String {
        format!("{}.indexes", self.base(prefix))
    }

    pub fn manifest_key(&self, prefix: &str) -> String {
        format!("{}.manifest", self.base(prefix))
    }

    /// All keys of the segment, manifest first (the deletion order).
    pub fn all_keys(&self, prefix: &str) -> [String; 3] {
        [self.manifest_key(prefix), self.log_key(prefix), self.indexes_key(prefix)]
    }
}

/// Prefix holding every slow-tier object of the cluster (under the configured prefix).
pub fn segments_root(prefix: &str) -> String {
    format!("{prefix}fasttier/v1/segments/")
}

/// Prefix holding every segment of one partition.
pub fn partition_prefix(prefix: &str, topic: &str, topic_id: &str, partition: i32) -> String {
    format!("{}{topic}-{topic_id}/{partition}/", segments_root(prefix))
}

/// Parses `<startOffset:020>-<segmentId>.<suffix>` (the last path component) back into its parts.
pub fn parse_segment_file_name(name: &str) -> Option<(i64, &str, &str)> {
    let (stem, suffix) = name.rsplit_once('.')?;
    if stem.len() < 22 || stem.as_bytes()[20] != b'-' {
        return None;
    }
    let offset = stem[..20].parse().ok()?;
    Some((offset, &stem[21..], suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        let s = SegmentRef::new("orders.v2", "AAAAAAAAAAAAAAAAAAAAAQ", 7, 1234, "b-_9AAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(
            s.log_key("prod/"),
            "prod/fasttier/v1/segments/orders.v2-AAAAAAAAAAAAAAAAAAAAAQ/7/00000000000000001234-b-_9AAAAAAAAAAAAAAAAAA.log"
        );
        assert!(s.manifest_key("").starts_with("fasttier/v1/segments/"));
        let name = s.indexes_key("").rsplit('/').next().unwrap().to_string();
        assert_eq!(parse_segment_file_name(&name), Some((1234, "b-_9AAAAAAAAAAAAAAAAAA", "indexes")));
    }

    #[test]
    fn rejects_escaping_names() {
        assert!(SegmentRef::new("../x", "AAAAAAAAAAAAAAAAAAAAAQ", 0, 0, "AAAAAAAAAAAAAAAAAAAAAQ").is_err());
        assert!(SegmentRef::new("t", "AAAA/AAAAAAAAAAAAAAAAQ", 0, 0, "AAAAAAAAAAAAAAAAAAAAAQ").is_err());
        assert!(SegmentRef::new("t", "AAAAAAAAAAAAAAAAAAAAAQ", -1, 0, "AAAAAAAAAAAAAAAAAAAAAQ").is_err());
    }
}
