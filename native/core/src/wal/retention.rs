//! [`RetentionIndex`]: how far a stream's low-water mark may advance.
//!
//! An object may be deleted once every partition range in it is covered by the slow tier (or its
//! topic/partition is gone) and it is older than the safety horizon; the low-water mark is the first seq
//! that may not be deleted, and the newest object is always kept. The index remembers, per retained object,
//! its creation time and the highest offset it holds per partition — memory proportional to what the fast
//! tier retains (the same bound as the objects' own entry tables), nothing per request.

use std::collections::VecDeque;
use std::ops::Range;

use super::format::{TopicId, WalHeader};
use super::object_key;
use super::stream::read_header;
use crate::error::{Error, Result};
use crate::store::ObjectStore;

/// One retained object, reduced to what retention needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Retained {
    seq: u64,
    created_unix_ms: i64,
    /// (topic id, partition, highest last offset in the object), sorted.
    partitions: Vec<(TopicId, i32, i64)>,
}

/// The retained objects of one stream, oldest first. Feed it every appended object's header
/// ([`super::Appended::header`]) and, at start-up, the headers already in the bucket ([`RetentionIndex::load`]).
#[derive(Debug, Default, Clone)]
pub struct RetentionIndex {
    objects: VecDeque<Retained>,
}

impl RetentionIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an object; objects must come in ascending seq order (an out-of-order or repeated seq is an
    /// internal error and is not recorded).
    pub fn record(&mut self, header: &WalHeader) -> Result<()> {
        let seq = header.stamp.seq;
        if let Some(last) = self.objects.back() {
            if seq <= last.seq {
                return Err(Error::Internal(format!("wal retention: seq={seq} recorded after seq={}", last.seq)));
            }
        }
        let mut partitions: Vec<(TopicId, i32, i64)> = Vec::new();
        for e in &header.entries {
            match partitions.last_mut() {
                // Entries of one partition are adjacent and in offset order.
                Some(last) if last.0 == e.topic_id && last.1 == e.partition => last.2 = last.2.max(e.last_offset),
                _ => partitions.push((e.topic_id, e.partition, e.last_offset)),
            }
        }
        self.objects.push_back(Retained { seq, created_unix_ms: header.stamp.created_unix_ms, partitions });
        Ok(())
    }

    /// Number of objects recorded and not forgotten.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Seq of the oldest recorded object.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.objects.front().map(|o| o.seq)
    }

    /// The low-water mark the stream may advance to: the seq of the oldest object that must be kept. Walks
    /// from the oldest object while it was created at least `safety_horizon_ms` before `now_ms` and
    /// `covered(topic_id, partition, last_offset)` holds for every partition in it (the predicate says the
    /// slow tier holds the partition up to `last_offset`, or the partition no longer exists). The newest
    /// recorded object is always kept. `None` if nothing is recorded.
    pub fn low_water(
        &self,
        now_ms: i64,
        safety_horizon_ms: i64,
        mut covered: impl FnMut(&TopicId, i32, i64) -> bool,
    ) -> Option<u64> {
        let newest = self.objects.back()?.seq;
        for o in &self.objects {
            let old_enough = now_ms.saturating_sub(o.created_unix_ms) >= safety_horizon_ms;
            if o.seq == newest || !old_enough || !o.partitions.iter().all(|(t, p, last)| covered(t, *p, *last)) {
                return Some(o.seq);
            }
        }
        Some(newest)
    }

    /// Forgets the objects below `seq` (after the writer advanced its low-water mark to `seq`).
    pub fn forget_below(&mut self, seq: u64) {
        while self.objects.front().is_some_and(|o| o.seq < seq) {
            self.objects.pop_front();
        }
    }

    /// Records the objects `seqs` of `broker_id`'s stream under `prefix` from their headers (ranged GETs, in
    /// order), e.g. `writer.low_water()..writer.next_seq()` at start-up. Objects deleted meanwhile are
    /// skipped; a corrupt header is an error naming its key.
    pub async fn load(
        &mut self,
        store: &dyn ObjectStore,
        prefix: &str,
        broker_id: i32,
        seqs: Range<u64>,
    ) -> Result<()> {
        for seq in seqs {
            if self.objects.back().is_some_and(|o| o.seq >= seq) {
                continue;
            }
            match read_header(store, &object_key(prefix, broker_id, seq)).await {
                Ok(h) => self.record(&h)?,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::format::{WalObjectBuilder, WalStamp};
    use bytes::Bytes;

    fn header(seq: u64, created: i64, ranges: &[(u8, i32, i64, i64)]) -> WalHeader {
        let mut b = WalObjectBuilder::new();
        for &(t, p, first, last) in ranges {
            let mut id = [0u8; 16];
            id[0] = t;
            b.add(id, p, 0, first, last, Bytes::from_static(b"x")).unwrap();
        }
        let stamp = WalStamp { broker_id: 1, incarnation: 1, seq, prev_header_crc: 0, created_unix_ms: created };
        b.build(&stamp).unwrap().header
    }

    #[test]
    fn low_water_needs_coverage_and_age_and_keeps_the_newest() {
        let mut idx = RetentionIndex::new();
        assert_eq!(idx.low_water(0, 0, |_, _, _| true), None);
        idx.record(&header(5, 1_000, &[(1, 0, 0, 9), (1, 0, 10, 19), (2, 3, 0, 4)])).unwrap();
        idx.record(&header(6, 2_000, &[(1, 0, 20, 29)])).unwrap();
        idx.record(&header(7, 3_000, &[(2, 3, 5, 9)])).unwrap();
        assert!(idx.record(&header(7, 3_000, &[])).is_err());
        // Slow tier: topic 1 partition 0 up to offset 25, topic 2 partition 3 up to 100.
        let covered = |t: &TopicId, p: i32, last: i64| match (t[0], p) {
            (1, 0) => last <= 25,
            (2, 3) => last <= 100,
            _ => false,
        };
        // Object 5 holds topic 1 p0 up to 19 (covered) and topic 2 p3 up to 4: deletable; 6 is not covered.
        assert_eq!(idx.low_water(10_000, 500, covered), Some(6));
        // Within the safety horizon nothing goes.
        assert_eq!(idx.low_water(10_000, 9_500, covered), Some(5));
        // Everything covered: the newest is still kept.
        assert_eq!(idx.low_water(10_000, 0, |_, _, _| true), Some(7));
        idx.forget_below(6);
        assert_eq!((idx.len(), idx.oldest_seq()), (2, Some(6)));
        idx.forget_below(100);
        assert!(idx.is_empty());
    }
}
