//! Counters and gauges of the native library, exported to the broker's metrics by the Java shim.
//!
//! The list is defined once here ([`Metric::ALL`]); the shim registers one Kafka metric per entry, in
//! order, using [`Metric::descriptor`].

use std::sync::atomic::{AtomicI64, Ordering};

macro_rules! metrics {
    ($($variant:ident => ($name:literal, $kind:literal, $doc:literal)),* $(,)?) => {
        /// One exported metric.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Metric { $($variant),* }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$variant),*];

            /// `name|counter-or-gauge|description`.
            pub fn descriptor(self) -> &'static str {
                match self { $(Metric::$variant => concat!($name, "|", $kind, "|", $doc)),* }
            }
        }
    };
}

metrics! {
    CopySegments => ("copy-segments-total", "counter", "Segments copied to the slow tier"),
    CopyBytes => ("copy-bytes-total", "counter", "Bytes uploaded by segment copies (segment and indexes)"),
    CopyErrors => ("copy-errors-total", "counter", "Segment copies that failed (Kafka retries them)"),
    CopyCancelled => ("copy-cancelled-total", "counter", "Segment copies cancelled (leadership change, shutdown)"),
    FetchStreams => ("fetch-streams-total", "counter", "Remote segment streams opened for consumer fetches"),
    FetchBytes => ("fetch-bytes-total", "counter", "Verified segment bytes handed to the broker"),
    FetchErrors => ("fetch-errors-total", "counter", "Remote reads that failed"),
    OpenStreams => ("open-streams", "gauge", "Remote segment streams currently open"),
    IndexFetches => ("index-fetches-total", "counter", "Index fetches served"),
    DeleteSegments => ("delete-segments-total", "counter", "Segment deletions"),
    DeleteErrors => ("delete-errors-total", "counter", "Segment deletions that failed"),
    CorruptObjects => ("corrupt-objects-total", "counter", "Objects or chunks that failed CRC-32C verification"),
    CacheHits => ("cache-hits-total", "counter", "Chunk reads served from the chunk cache"),
    CacheMisses => ("cache-misses-total", "counter", "Chunk reads that went to object storage"),
    CacheBytes => ("cache-bytes", "gauge", "Bytes held by the chunk cache"),
    StoreGets => ("store-get-requests-total", "counter", "GET requests sent to object storage"),
    StorePuts => ("store-put-requests-total", "counter", "PUT requests (including multipart parts) sent to object storage"),
    StoreDeletes => ("store-delete-requests-total", "counter", "DELETE requests sent to object storage"),
    StoreGetBytes => ("store-get-bytes-total", "counter", "Bytes received from object storage"),
    WalObjects => ("wal-objects-total", "counter", "Fast tier: WAL objects made durable"),
    WalBytes => ("wal-bytes-total", "counter", "Fast tier: bytes of WAL objects made durable"),
    WalRecordBytes => ("wal-record-bytes-total", "counter", "Fast tier: log bytes (record batches) uploaded"),
    WalPutRequests => ("wal-put-requests-total", "counter", "Fast tier: WAL object create attempts"),
    WalErrors => ("wal-errors-total", "counter", "Fast tier: failed uploads, head writes, cleanups and log reads"),
    WalDeletedObjects => ("wal-deleted-objects-total", "counter", "Fast tier: WAL objects deleted by cleanup"),
    WalRetainedObjects => ("wal-retained-objects", "gauge", "Fast tier: this broker's WAL objects in the bucket"),
    WalRetainedBytes => ("wal-retained-bytes", "gauge", "Fast tier: bytes of this broker's WAL objects in the bucket"),
    WalBytesRate => ("wal-bytes-per-sec", "gauge", "Fast tier: bytes of WAL objects made durable per second (last 30 s)"),
    WalObjectsRate => ("wal-objects-per-sec", "gauge", "Fast tier: WAL objects made durable per second (last 30 s)"),
    WalPutRate => ("wal-put-requests-per-sec", "gauge", "Fast tier: WAL object create attempts per second (last 30 s)"),
    WalPartitions => ("wal-partitions", "gauge", "Fast tier: partitions being tailed and uploaded"),
    WalBehindMs => ("wal-behind-ms", "gauge", "Fast tier: age of the oldest data read from the log and not yet durable (0 = none)"),
    WalLagP50Ms => ("wal-upload-lag-p50-ms", "gauge", "Fast tier: upload lag (batch appended to the log → object durable), median of recent batches"),
    WalLagP99Ms => ("wal-upload-lag-p99-ms", "gauge", "Fast tier: upload lag, 99th percentile of recent batches"),
    WalLagMaxMs => ("wal-upload-lag-max-ms", "gauge", "Fast tier: upload lag, maximum of recent batches"),
    WalLagCount => ("wal-upload-lag-count", "counter", "Fast tier: upload lag histogram: batches measured"),
    WalLagSumMs => ("wal-upload-lag-sum-ms", "counter", "Fast tier: upload lag histogram: sum of lags"),
    WalLagLe100 => ("wal-upload-lag-le-100ms", "counter", "Fast tier: upload lag histogram: batches durable within 100 ms"),
    WalLagLe250 => ("wal-upload-lag-le-250ms", "counter", "Fast tier: upload lag histogram: within 250 ms"),
    WalLagLe500 => ("wal-upload-lag-le-500ms", "counter", "Fast tier: upload lag histogram: within 500 ms"),
    WalLagLe1000 => ("wal-upload-lag-le-1000ms", "counter", "Fast tier: upload lag histogram: within 1 s"),
    WalLagLe2500 => ("wal-upload-lag-le-2500ms", "counter", "Fast tier: upload lag histogram: within 2.5 s"),
    WalLagLe5000 => ("wal-upload-lag-le-5000ms", "counter", "Fast tier: upload lag histogram: within 5 s"),
    WalLagLe10000 => ("wal-upload-lag-le-10000ms", "counter", "Fast tier: upload lag histogram: within 10 s"),
    ReplConnections => ("replication-connections", "gauge", "Fast replication: replica-fetcher connections taken by the proxy"),
    ReplPartitionsFast => ("replication-partitions-fast", "gauge", "Fast replication: followed partitions whose record bytes come from the fast tier"),
    ReplPartitionsLeader => ("replication-partitions-leader", "gauge", "Fast replication: followed partitions fetched from the leader (not in the fast tier, behind it, or fallen back)"),
    ReplFetches => ("replication-fetches-total", "counter", "Fast replication: replica fetches answered by the proxy"),
    ReplFastBytes => ("replication-fast-bytes-total", "counter", "Fast replication: record bytes served to followers from the fast tier (cross-zone bytes saved)"),
    ReplLeaderBytes => ("replication-leader-bytes-total", "counter", "Fast replication: record bytes from leaders passed to followers (partitions not served by the fast tier, and report answers' batches the fast tier lacked)"),
    ReplReports => ("replication-reports-total", "counter", "Fast replication: answered offset reports to leaders (high watermark, errors, diverging epochs)"),
    ReplSilentReports => ("replication-silent-reports-total", "counter", "Fast replication: silent offset reports to leaders (the follower's offsets only; never answered)"),
    ReplReportBytes => ("replication-report-bytes-total", "counter", "Fast replication: record bytes leaders returned to offset reports (Kafka returns one batch for the first partition with data; passed on when the fast tier lacks it)"),
    ReplFallbackLag => ("replication-fallbacks-lag-total", "counter", "Fast replication: partitions sent to the leader because the fast tier lagged beyond max.lag.ms"),
    ReplFallbackStore => ("replication-fallbacks-store-total", "counter", "Fast replication: partitions sent to the leader because the leader's stream could not be read"),
    ReplFallbackMismatch => ("replication-fallbacks-mismatch-total", "counter", "Fast replication: partitions sent to the leader because fast-tier bytes differed from the leader's"),
    ReplStreamObjects => ("replication-stream-objects-total", "counter", "Fast replication: leaders' fast-tier objects read"),
    ReplStreamBytes => ("replication-stream-bytes-total", "counter", "Fast replication: bytes of leaders' fast-tier objects read"),
    ReplStreamErrors => ("replication-stream-errors-total", "counter", "Fast replication: failed reads of leaders' fast-tier streams"),
    ReplRefused => ("replication-connections-refused-total", "counter", "Fast replication: proxy connections refused because they do not come from this broker"),
    ReplRejected => ("replication-connections-rejected-total", "counter", "Fast replication: proxy connections refused or closed for a limit: connection caps, time-outs, oversized or malformed requests, a replica fetch with another broker's id"),
    ReplNotifications => ("replication-notifications-total", "counter", "Fast replication: new-object notifications received from leaders"),
    ReplNotifyConnections => ("replication-notify-connections", "gauge", "Fast replication: followers connected to this broker's notification listener"),
    RoundtripUploadWaitMs => ("roundtrip-upload-wait-ms-total", "counter", "acks=all round trip, leader: ms from a batch's append (its timestamp, clamped to the log poll) to the start of its upload, summed over batches"),
    RoundtripUploadWaitCount => ("roundtrip-upload-wait-count", "counter", "acks=all round trip, leader: batches counted in roundtrip-upload-wait-ms-total"),
    RoundtripUploadPutMs => ("roundtrip-upload-put-ms-total", "counter", "acks=all round trip, leader: ms of fast-tier uploads (PUT and the stream's bookkeeping), summed"),
    RoundtripUploadPutCount => ("roundtrip-upload-put-count", "counter", "acks=all round trip, leader: uploads counted in roundtrip-upload-put-ms-total"),
    RoundtripLearnMs => ("roundtrip-learn-ms-total", "counter", "acks=all round trip, follower: ms from an object's creation (upload start) at the leader to the follower knowing it exists (PUT + notification or poll), summed"),
    RoundtripLearnCount => ("roundtrip-learn-count", "counter", "acks=all round trip, follower: objects counted in roundtrip-learn-ms-total"),
    RoundtripGetMs => ("roundtrip-get-ms-total", "counter", "acks=all round trip, follower: ms of reading and verifying a leader's object (GET + CRC-32C), summed"),
    RoundtripGetCount => ("roundtrip-get-count", "counter", "acks=all round trip, follower: objects counted in roundtrip-get-ms-total"),
    RoundtripServeMs => ("roundtrip-serve-ms-total", "counter", "acks=all round trip, follower: ms from an object in the cache to a held replica fetch answered with its data, summed"),
    RoundtripServeCount => ("roundtrip-serve-count", "counter", "acks=all round trip, follower: answers counted in roundtrip-serve-ms-total"),
    RoundtripAppendMs => ("roundtrip-append-ms-total", "counter", "acks=all round trip, follower: ms from an answer with fast-tier data to the follower's next fetch (its append), summed"),
    RoundtripAppendCount => ("roundtrip-append-count", "counter", "acks=all round trip, follower: fetches counted in roundtrip-append-ms-total"),
    RoundtripReportMs => ("roundtrip-report-ms-total", "counter", "acks=all round trip, follower: ms from a fetch with new offsets to their report written to the leader, summed"),
    RoundtripReportCount => ("roundtrip-report-count", "counter", "acks=all round trip, follower: reports counted in roundtrip-report-ms-total"),
}

/// Upper bounds (ms) of the upload-lag histogram buckets, with their (cumulative) counters.
pub const WAL_LAG_BUCKETS: &[(i64, Metric)] = &[
    (100, Metric::WalLagLe100),
    (250, Metric::WalLagLe250),
    (500, Metric::WalLagLe500),
    (1_000, Metric::WalLagLe1000),
    (2_500, Metric::WalLagLe2500),
    (5_000, Metric::WalLagLe5000),
    (10_000, Metric::WalLagLe10000),
];

/// The live values.
#[derive(Debug)]
pub struct Metrics {
    values: Vec<AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { values: Metric::ALL.iter().map(|_| AtomicI64::new(0)).collect() }
    }
}

impl Metrics {
    pub fn add(&self, m: Metric, v: i64) {
        self.values[m as usize].fetch_add(v, Ordering::Relaxed);
    }

    pub fn inc(&self, m: Metric) {
        self.add(m, 1);
    }

    pub fn set(&self, m: Metric, v: i64) {
        self.values[m as usize].store(v, Ordering::Relaxed);
    }

    pub fn get(&self, m: Metric) -> i64 {
        self.values[m as usize].load(Ordering::Relaxed)
    }

    /// All values, in [`Metric::ALL`] order.
    pub fn snapshot(&self) -> Vec<i64> {
        self.values.iter().map(|v| v.load(Ordering::Relaxed)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_unique_and_ordered() {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.descriptor().split('|').next().unwrap()).collect();
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len());
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
            assert_eq!(m.descriptor().split('|').count(), 3);
        }
        let metrics = Metrics::default();
        metrics.add(Metric::FetchBytes, 5);
        assert_eq!(metrics.snapshot()[Metric::FetchBytes as usize], 5);
    }
}
