//! The fast tier's write-ahead log: per-broker streams of combined WAL objects.
//!
//! Every broker uploads the new active-segment data of all its fast-tier partitions as one object per
//! upload interval; the objects of one broker form an ordered, gap-free stream that readers follow by
//! computed key, without listing. The layout and the protocols are specified in `docs/formats.md`
//! ("Fast tier (WAL)"):
//!
//! * [`format`] — the object byte layout ([`WalObjectBuilder`], [`WalObject`], [`WalHeader`]) and the
//!   stream's head document ([`WalHead`]);
//! * [`stream`] — [`WalWriter`] (conditional appends, fencing of zombie writers, indeterminate-PUT
//!   recovery, low-water cleanup) and [`WalReader`] (finding the start, following the stream);
//! * [`retention`] — [`RetentionIndex`], which computes how far the low-water mark may advance;
//! * [`catalog`] — reading it back across streams: [`list_streams`], [`partition_ranges`] and
//!   [`assemble`] (a partition's batches resolved by the leader-epoch rule).
//!
//! Key layout:
//!
//! ```text
//! <prefix>fasttier/v1/wal/<brokerId>/<seq:020>.wal
//! <prefix>fasttier/v1/wal/<brokerId>/head
//! ```
//! where `<prefix>` is the fast tier's own prefix (empty or ending in `/`).

pub mod catalog;
pub mod format;
pub mod retention;
pub mod stream;

pub use catalog::{
    assemble, assemble_with_epochs, list_streams, partition_ranges, stream_objects, Assembled, EpochStarts, RangeRef,
    StreamInfo,
};
pub use format::{PartitionData, TopicId, WalEntry, WalHead, WalHeader, WalObject, WalObjectBuilder, WalStamp};
pub use retention::RetentionIndex;
pub use stream::{
    delete_objects, is_fenced_error, read_header, read_partition, Appended, BehindPolicy, ReaderOptions, StartAt,
    WalReader, WalWriter, WalWriterOptions,
};

/// Prefix holding every broker's stream.
pub fn wal_root(prefix: &str) -> String {
    format!("{prefix}fasttier/v1/wal/")
}

/// Prefix holding one broker's stream (objects and head).
pub fn stream_prefix(prefix: &str, broker_id: i32) -> String {
    format!("{}{broker_id}/", wal_root(prefix))
}

/// Key of object `seq` of `broker_id`'s stream.
pub fn object_key(prefix: &str, broker_id: i32, seq: u64) -> String {
    format!("{}{seq:020}.wal", stream_prefix(prefix, broker_id))
}

/// Key of the head document of `broker_id`'s stream.
pub fn head_key(prefix: &str, broker_id: i32) -> String {
    format!("{}head", stream_prefix(prefix, broker_id))
}

/// The seq of an object key's last path component (`<seq:020>.wal`), if it is one.
pub fn parse_object_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod stream_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        assert_eq!(object_key("prod/", 3, 42), "prod/fasttier/v1/wal/3/00000000000000000042.wal");
        assert_eq!(object_key("", 0, u64::MAX), "fasttier/v1/wal/0/18446744073709551615.wal");
        assert_eq!(head_key("prod/", 3), "prod/fasttier/v1/wal/3/head");
        assert_eq!(stream_prefix("", 12), "fasttier/v1/wal/12/");
        assert_eq!(parse_object_name("00000000000000000042.wal"), Some(42));
        assert_eq!(parse_object_name("18446744073709551615.wal"), Some(u64::MAX));
        assert_eq!(parse_object_name("99999999999999999999.wal"), None);
        assert_eq!(parse_object_name("head"), None);
        assert_eq!(parse_object_name("42.wal"), None);
        assert_eq!(parse_object_name("0000000000000000004a.wal"), None);
        assert_eq!(parse_object_name("+0000000000000000042.wal"), None);
    }
}
