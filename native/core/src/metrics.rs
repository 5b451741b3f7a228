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
}

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
