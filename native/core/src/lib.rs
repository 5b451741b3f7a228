//! fasttier core: everything the native library does, independent of JNI.
//!
//! Layout mirrors the architecture:
//! * [`error`] — the one internal error enum and its Java classification;
//! * [`config`] — typed, validated plugin configuration (`rsm.config.*`);
//! * [`store`] — the narrow object-store trait and its memory, fault-injecting and S3 implementations;
//! * [`format`] — object keys, segment manifests, CRC-32C framing, record-batch parsing;
//! * [`upload`] — bounded-memory uploads of local files (multipart);
//! * [`read`] — verified chunk reads, the chunk cache and lazy segment streams;
//! * [`slow`] — the slow tier (KIP-405): copy, fetch, fetch index, delete;
//! * [`tail`] — reading new complete record batches of a live partition directory (fast tier input);
//! * [`wal`] — the fast tier's combined WAL objects and per-broker object stream;
//! * [`catchup`] — follower catch-up: replication through the fast tier (the zone-local fetch proxy);
//! * [`runtime`] — the shared, bounded tokio runtime;
//! * [`metrics`] — counters exported to the broker's metrics.

pub mod catchup;
pub mod config;
pub mod engine;
pub mod error;
pub mod fast;
pub mod format;
pub mod metrics;
pub mod read;
pub mod runtime;
pub mod slow;
pub mod store;
pub mod tail;
pub mod upload;
pub mod wal;

/// The wall clock in unix milliseconds (0 if it is before 1970): object stamps, lag and round-trip timings.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
