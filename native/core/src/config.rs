//! Typed, validated plugin configuration.
//!
//! Kafka hands the RemoteStorageManager every broker property that starts with `rsm.config.`, with that
//! prefix stripped, plus `broker.id`. [`Config::from_map`] checks every key it is given: unknown keys,
//! unparsable values and out-of-range values are errors whose message names the full property name the
//! operator wrote (`rsm.config.<key>`). The keys are listed, with defaults, in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::s3::S3Settings;

/// The prefix Kafka strips before handing the map to the plugin; used in error messages.
pub const PREFIX: &str = "rsm.config.";

const MIB: u64 = 1024 * 1024;

/// Where objects are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Amazon S3 or an S3-compatible server.
    S3,
    /// In-process memory; for tests only (data is lost when the broker stops).
    Memory,
}

/// The whole plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub backend: Backend,
    /// S3 connection settings (`rsm.config.s3.*`).
    pub s3: S3Settings,
    /// Key prefix for every object ("" or ends with '/').
    pub prefix: String,
    /// Size of a verified read unit: every chunk of a segment has its own CRC-32C.
    pub chunk_bytes: u64,
    /// Total bytes of verified chunks kept in memory, shared by all streams.
    pub cache_bytes: u64,
    /// Chunks fetched ahead of a reading stream.
    pub read_ahead_chunks: u32,
    /// Segments larger than this are uploaded with multipart uploads.
    pub multipart_threshold_bytes: u64,
    /// Multipart part size (a multiple of `chunk_bytes`, ≥ 5 MiB).
    pub part_bytes: u64,
    /// Parts uploaded in parallel per segment copy.
    pub upload_concurrency: usize,
    /// Worker threads of the shared runtime.
    pub worker_threads: usize,
    /// Blocking-pool threads of the shared runtime (file reads).
    pub max_blocking_threads: usize,
    /// `broker.id`, as given by Kafka (-1 if absent).
    pub broker_id: i32,
    /// Keys outside fasttier's namespaces that were ignored (logged as a warning at start-up).
    pub ignored_keys: Vec<String>,
}

/// Description of one accepted key, for docs and error messages.
pub struct KeyDoc {
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every key the plugin accepts (without the `rsm.config.` prefix).
pub const KEYS: &[KeyDoc] = &[
    KeyDoc { key: "storage.backend", default: "s3", doc: "s3, or memory (tests only: nothing survives a restart)" },
    KeyDoc { key: "s3.bucket", default: "(required)", doc: "bucket for the slow tier" },
    KeyDoc { key: "s3.region", default: "us-east-1", doc: "AWS region of the bucket" },
    KeyDoc {
        key: "s3.endpoint",
        default: "(AWS)",
        doc: "endpoint URL of an S3-compatible server, http:// or https://",
    },
    KeyDoc {
        key: "s3.path.style",
        default: "false",
        doc: "path-style addressing (most S3-compatible servers need true)",
    },
    KeyDoc {
        key: "s3.access.key.id",
        default: "(default chain)",
        doc: "static access key id; set together with s3.secret.access.key",
    },
    KeyDoc { key: "s3.secret.access.key", default: "(default chain)", doc: "static secret key" },
    KeyDoc { key: "s3.session.token", default: "(none)", doc: "session token for temporary static credentials" },
    KeyDoc { key: "s3.connect.timeout.ms", default: "3000", doc: "TCP/TLS connect timeout" },
    KeyDoc { key: "s3.read.timeout.ms", default: "30000", doc: "timeout waiting for response bytes" },
    KeyDoc { key: "s3.attempt.timeout.ms", default: "60000", doc: "timeout of one HTTP attempt" },
    KeyDoc { key: "s3.operation.timeout.ms", default: "180000", doc: "timeout of one operation including retries" },
    KeyDoc { key: "s3.max.attempts", default: "5", doc: "attempts per request (1 = no retry)" },
    KeyDoc {
        key: "s3.initial.backoff.ms",
        default: "100",
        doc: "first retry backoff; grows exponentially with jitter",
    },
    KeyDoc { key: "prefix", default: "(empty)", doc: "key prefix for every object, e.g. the cluster name" },
    KeyDoc {
        key: "chunk.bytes",
        default: "4194304",
        doc: "verified read unit (each chunk has a CRC-32C); 64 KiB..64 MiB",
    },
    KeyDoc {
        key: "cache.bytes",
        default: "134217728",
        doc: "memory for verified chunks shared by all reads; ≥ 2 chunks",
    },
    KeyDoc { key: "read.ahead.chunks", default: "1", doc: "chunks prefetched ahead of a reading consumer; 0..8" },
    KeyDoc {
        key: "multipart.threshold.bytes",
        default: "16777216",
        doc: "segments above this size use multipart uploads",
    },
    KeyDoc {
        key: "upload.part.bytes",
        default: "8388608",
        doc: "multipart part size (rounded up to a multiple of chunk.bytes); ≥ 5 MiB",
    },
    KeyDoc { key: "upload.concurrency", default: "4", doc: "parts in flight per segment copy; 1..32" },
    KeyDoc {
        key: "runtime.worker.threads",
        default: "4",
        doc: "native async worker threads (shared by the broker's plugin instances); 1..64",
    },
    KeyDoc { key: "runtime.max.blocking.threads", default: "8", doc: "native threads for blocking file reads; 1..256" },
    KeyDoc {
        key: "native.library.path",
        default: "(unset)",
        doc: "read by the Java shim: explicit path of libfasttier_jni.so",
    },
];

/// Keys Kafka adds itself (4.1 adds `broker.id`, 4.4 also `node.id`); accepted silently.
const KAFKA_KEYS: &[&str] = &["broker.id", "node.id", "cluster.id"];

/// True if `key` lies in a namespace fasttier owns (the first dotted word of one of its keys). An unknown
/// key there is almost certainly a typo and is rejected; unknown keys elsewhere may come from a newer
/// Kafka and are only reported in [`Config::ignored_keys`].
fn in_fasttier_namespace(key: &str) -> bool {
    let first = key.split('.').next().unwrap_or(key);
    KEYS.iter().any(|k| k.key.split('.').next() == Some(first))
}

struct Reader<'a> {
    map: &'a BTreeMap<String, String>,
}

impl Reader<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    fn string(&self, key: &str) -> Option<String> {
        self.raw(key).map(str::to_string)
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(Error::config(full(key), format!("value={v:?} is not a boolean (true or false)"))),
        }
    }

    fn u64(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64> {
        let v = match self.raw(key) {
            None => return Ok(default),
            Some(v) => v,
        };
        let n: u64 =
            v.parse().map_err(|_| Error::config(full(key), format!("value={v:?} is not a non-negative integer")))?;
        if n < min || n > max {
            return Err(Error::config(full(key), format!("value={n} is out of range {min}..={max}")));
        }
        Ok(n)
    }

    fn ms(&self, key: &str, default: u64) -> Result<Duration> {
        Ok(Duration::from_millis(self.u64(key, default, 1, 3_600_000)?))
    }
}

fn full(key: &str) -> String {
    format!("{PREFIX}{key}")
}

impl Config {
    /// Parses and validates the map Kafka passes to `configure()`.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Config> {
        let mut ignored_keys = Vec::new();
        for key in map.keys() {
            if KEYS.iter().any(|k| k.key == key) || KAFKA_KEYS.contains(&key.as_str()) {
                continue;
            }
            if in_fasttier_namespace(key) {
                return Err(Error::config(
                    full(key),
                    "is not a fasttier setting (see docs/configuration.md for the accepted keys)".to_string(),
                ));
            }
            ignored_keys.push(full(key));
        }
        let r = Reader { map };
        let backend = match r.raw("storage.backend").unwrap_or("s3") {
            "s3" => Backend::S3,
            "memory" => Backend::Memory,
            other => {
                return Err(Error::config(full("storage.backend"), format!("value={other:?} must be s3 or memory")))
            }
        };
        let bucket = r.string("s3.bucket").unwrap_or_default();
        if backend == Backend::S3 {
            if bucket.is_empty() {
                return Err(Error::config(full("s3.bucket"), "is required (the bucket that holds tiered segments)"));
            }
            // S3 bucket naming rules (3-63 chars, lowercase letters, digits, dots, hyphens; directory buckets add
            // "--x-s3"), checked loosely so a typo is caught here and not as an opaque 400 later.
            let ok = (3..=63).contains(&bucket.len())
                && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
            if !ok {
                return Err(Error::config(
                    full("s3.bucket"),
                    format!("value={bucket:?} is not a valid bucket name (3-63 of a-z 0-9 . -)"),
                ));
            }
        }
        let endpoint = r.string("s3.endpoint");
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() <= "https://".len() {
                return Err(Error::config(
                    full("s3.endpoint"),
                    format!("value={e:?} must be an http:// or https:// URL"),
                ));
            }
        }
        let access_key_id = r.string("s3.access.key.id");
        let secret_access_key = r.string("s3.secret.access.key");
        match (&access_key_id, &secret_access_key) {
            (Some(_), None) => {
                return Err(Error::config(
                    full("s3.secret.access.key"),
                    format!("is required when {} is set", full("s3.access.key.id")),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    full("s3.access.key.id"),
                    format!("is required when {} is set", full("s3.secret.access.key")),
                ))
            }
            _ => {}
        }
        let s3 = S3Settings {
            bucket,
            region: r.string("s3.region").unwrap_or_else(|| "us-east-1".to_string()),
            endpoint,
            force_path_style: r.bool("s3.path.style", false)?,
            access_key_id,
            secret_access_key,
            session_token: r.string("s3.session.token"),
            connect_timeout: r.ms("s3.connect.timeout.ms", 3_000)?,
            read_timeout: r.ms("s3.read.timeout.ms", 30_000)?,
            attempt_timeout: r.ms("s3.attempt.timeout.ms", 60_000)?,
            operation_timeout: r.ms("s3.operation.timeout.ms", 180_000)?,
            max_attempts: r.u64("s3.max.attempts", 5, 1, 20)? as u32,
            initial_backoff: r.ms("s3.initial.backoff.ms", 100)?,
        };

        let mut prefix = r.string("prefix").unwrap_or_default();
        if prefix.starts_with('/') || prefix.contains("//") || prefix.chars().any(|c| c.is_control()) {
            return Err(Error::config(
                full("prefix"),
                format!("value={prefix:?} must not start with '/', contain '//' or control characters"),
            ));
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }

        let chunk_bytes = r.u64("chunk.bytes", 4 * MIB, 64 * 1024, 64 * MIB)?;
        let cache_bytes = r.u64("cache.bytes", 128 * MIB, 0, 64 * 1024 * MIB)?;
        if cache_bytes < 2 * chunk_bytes {
            return Err(Error::config(
                full("cache.bytes"),
                format!("value={cache_bytes} must be at least 2 x {}={chunk_bytes}", full("chunk.bytes")),
            ));
        }
        let part = r.u64("upload.part.bytes", 8 * MIB, 5 * MIB, 512 * MIB)?;
        let part_bytes = part.div_ceil(chunk_bytes) * chunk_bytes;
        let broker_id = map.get("broker.id").and_then(|v| v.trim().parse::<i32>().ok()).unwrap_or(-1);
        Ok(Config {
            backend,
            s3,
            prefix,
            chunk_bytes,
            cache_bytes,
            read_ahead_chunks: r.u64("read.ahead.chunks", 1, 0, 8)? as u32,
            multipart_threshold_bytes: r.u64("multipart.threshold.bytes", 16 * MIB, 5 * MIB, 5 * 1024 * MIB)?,
            part_bytes,
            upload_concurrency: r.u64("upload.concurrency", 4, 1, 32)? as usize,
            worker_threads: r.u64("runtime.worker.threads", 4, 1, 64)? as usize,
            max_blocking_threads: r.u64("runtime.max.blocking.threads", 8, 1, 256)? as usize,
            broker_id,
            ignored_keys,
        })
    }

    /// Convenience for tests: parse from `(key, value)` pairs.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Config> {
        let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_map(&map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(pairs: &[(&str, &str)]) -> String {
        Config::from_pairs(pairs).unwrap_err().to_string()
    }

    #[test]
    fn defaults_with_bucket() {
        let c = Config::from_pairs(&[("s3.bucket", "tiered"), ("broker.id", "3")]).unwrap();
        assert_eq!(c.backend, Backend::S3);
        assert_eq!(c.s3.region, "us-east-1");
        assert_eq!(c.chunk_bytes, 4 * MIB);
        assert_eq!(c.part_bytes, 8 * MIB);
        assert_eq!(c.broker_id, 3);
        assert_eq!(c.prefix, "");
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err(&[]).contains("key=rsm.config.s3.bucket is required"), "{}", err(&[]));
        assert!(err(&[("s3.bucket", "Bad_Bucket")]).contains("key=rsm.config.s3.bucket"));
        assert!(
            err(&[("s3.bucket", "b12"), ("chunk.bytes", "abc")]).contains("key=rsm.config.chunk.bytes value=\"abc\"")
        );
        assert!(err(&[("s3.bucket", "b12"), ("chunk.bytes", "10")]).contains("out of range"));
        assert!(err(&[("s3.bucket", "b12"), ("s3.bukket", "x")])
            .contains("key=rsm.config.s3.bukket is not a fasttier setting"));
        assert!(err(&[("s3.bucket", "b12"), ("chunk.size", "1")]).contains("key=rsm.config.chunk.size is not"));
        let c = Config::from_pairs(&[("s3.bucket", "b12"), ("node.id", "1"), ("future.kafka.key", "x")]).unwrap();
        assert_eq!(c.ignored_keys, vec!["rsm.config.future.kafka.key".to_string()]);
        assert!(err(&[("s3.bucket", "b12"), ("s3.access.key.id", "x")]).contains("key=rsm.config.s3.secret.access.key"));
        assert!(err(&[("s3.bucket", "b12"), ("s3.endpoint", "localhost:9000")]).contains("key=rsm.config.s3.endpoint"));
        assert!(err(&[("s3.bucket", "b12"), ("s3.path.style", "yes")]).contains("not a boolean"));
        assert!(err(&[("storage.backend", "disk")]).contains("key=rsm.config.storage.backend"));
        assert!(err(&[("s3.bucket", "b12"), ("cache.bytes", "1000")]).contains("key=rsm.config.cache.bytes"));
    }

    #[test]
    fn memory_backend_needs_no_bucket_and_prefix_is_normalised() {
        let c = Config::from_pairs(&[("storage.backend", "memory"), ("prefix", "cluster-a")]).unwrap();
        assert_eq!(c.backend, Backend::Memory);
        assert_eq!(c.prefix, "cluster-a/");
        assert!(err(&[("storage.backend", "memory"), ("prefix", "/abs")]).contains("key=rsm.config.prefix"));
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../../docs/configuration.md");
        for k in KEYS {
            let row = format!("| `rsm.config.{}` | {} |", k.key, k.default);
            assert!(doc.contains(&row), "docs/configuration.md lacks {row}");
        }
    }

    #[test]
    fn part_size_is_rounded_to_chunks() {
        let c =
            Config::from_pairs(&[("s3.bucket", "b12"), ("chunk.bytes", "3145728"), ("upload.part.bytes", "5242880")])
                .unwrap();
        assert_eq!(c.part_bytes, 6 * MIB);
    }
}
