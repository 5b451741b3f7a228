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
    /// The fast tier (`rsm.config.wal.*`).
    pub wal: WalConfig,
    /// Replication through the fast tier (`rsm.config.replication.fast.*`).
    pub replication: ReplicationConfig,
}

/// A broker's inter-broker endpoint as the proxy reaches it (`id@host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// Settings of replication through the fast tier: a proxy in this broker takes its replica fetcher's
/// connections to the other brokers and serves record bytes from their fast-tier streams
/// (`docs/replication.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replication.fast.enable`.
    pub enabled: bool,
    /// What the proxy accepts from whom, and for how long (`docs/replication.md`, "Hardening").
    pub limits: ProxyLimits,
    /// The real inter-broker endpoints of the brokers (this broker's own entry is skipped).
    pub brokers: Vec<BrokerEndpoint>,
    /// Listen address pattern; `{id}` is replaced by the leader's broker id (the port is the leader's).
    pub bind: String,
    /// A partition whose leader has data the fast tier still lacks after this long is fetched from the
    /// leader.
    pub max_lag: Duration,
    /// How long a partition stays with the leader after a fallback before the fast tier is tried again.
    pub retry: Duration,
    /// How often a leader's stream is polled for its next object.
    pub poll: Duration,
    /// Memory for fast-tier data kept for followers, shared by the leaders followed (an equal share each, at
    /// least [`MIN_CACHE_PER_LEADER`]).
    pub cache_bytes: u64,
    /// Objects before a stream's tail read when following starts.
    pub lookback_objects: u64,
    /// Clock margin of the report rule (a report must carry data cut after the previous report).
    pub report_margin: Duration,
    /// Longest time between two answered reports (high watermark, errors, diverging epochs).
    pub keepalive: Duration,
    /// Shortest time between two silent offset reports on one follower connection (0: none).
    pub report_interval: Duration,
    /// Port of every broker's new-object notification listener (on its host in `brokers`); 0 = none.
    pub notify_port: u16,
}

/// The proxy's limits on its callers (`docs/replication.md`, "Hardening").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyLimits {
    /// `replication.fast.auth`: which callers are served.
    pub auth: crate::catchup::caller::CallerCheck,
    /// `replication.fast.max.connections.per.leader`: connections one leader's listener serves at a time.
    pub max_connections_per_leader: usize,
    /// `replication.fast.max.connections`: connections all listeners serve at a time.
    pub max_connections: usize,
    /// `replication.fast.handshake.timeout.ms`: a connection's first request must arrive within this.
    pub handshake_timeout: Duration,
    /// `replication.fast.idle.timeout.ms`: a connection with no request and no answer outstanding for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// `replication.fast.max.frame.bytes`: the largest request frame relayed.
    pub max_frame: usize,
    /// `replication.fast.release.ms`: a leader's stream reader (and its status) no follower connection
    /// used for this long is stopped; the next replica fetch starts it again.
    pub release_after: Duration,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        ProxyLimits {
            auth: crate::catchup::caller::CallerCheck::Process,
            max_connections_per_leader: 64,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(540),
            max_frame: 100 * MIB as usize,
            release_after: Duration::from_secs(60),
        }
    }
}

/// The default listen address pattern: the leader's id spread over the last three octets of 127.0.0.0/8
/// (`127.0.100.<id>` for ids up to 255).
pub const DEFAULT_BIND: &str = "127.{id.octets}";
/// `{id.octets}` of id 0 (as a 24-bit number): 0.100.0.
const OCTETS_BASE: u32 = 100 << 8;
/// How many ids `{id.octets}` tells apart: 0.100.0 up to 255.255.254 (127.255.255.255 is the broadcast
/// address of 127.0.0.0/8).
pub const OCTETS_SPAN: u32 = 0xff_ff_ff - OCTETS_BASE;

/// `{id.octets}`: `id` as three octets `a.b.c`, 0.100.0 + id (wrapping after [`OCTETS_SPAN`] ids).
pub fn id_octets(id: i32) -> String {
    let n = OCTETS_BASE + (id.unsigned_abs() % OCTETS_SPAN);
    format!("{}.{}.{}", n >> 16, (n >> 8) & 0xff, n & 0xff)
}

/// The listen address `bind` (a `replication.fast.bind` pattern) gives `leader`.
pub fn listen_addr_for(bind: &str, leader: &BrokerEndpoint) -> String {
    let host = bind.replace("{id.octets}", &id_octets(leader.id)).replace("{id}", &leader.id.to_string());
    if host.contains(':') {
        format!("[{host}]:{}", leader.port)
    } else {
        format!("{host}:{}", leader.port)
    }
}

/// The least memory for fast-tier data the proxy keeps per leader, whatever `replication.fast.cache.bytes`.
pub const MIN_CACHE_PER_LEADER: u64 = 8 * MIB;

impl ReplicationConfig {
    /// Each followed leader's share of `cache_bytes` when `leaders` are followed.
    pub fn cache_per_leader(&self, leaders: usize) -> u64 {
        (self.cache_bytes / leaders.max(1) as u64).max(MIN_CACHE_PER_LEADER)
    }

    /// Where the proxy for `leader` listens.
    pub fn listen_addr(&self, leader: &BrokerEndpoint) -> String {
        listen_addr_for(&self.bind, leader)
    }
}

/// Settings of the fast tier: the continuous upload of led partitions' active-segment data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// `wal.enable`: upload active-segment data (needs fasttier's RemoteLogMetadataManager, which tells the
    /// plugin which partitions this broker leads and where its log directory is).
    pub enabled: bool,
    /// Where WAL objects go: `wal.bucket`/`wal.region`/`wal.endpoint` over the slow tier's `s3.*`.
    pub s3: S3Settings,
    /// Key prefix of WAL objects ("" or ends with '/'); defaults to the slow tier's prefix.
    pub prefix: String,
    /// Shortest time between the starts of two uploads (the cost knob); data is uploaded as soon as it is
    /// found and the previous upload finished.
    pub upload_interval: Duration,
    /// An object is uploaded as soon as this much new data is buffered.
    pub max_object_bytes: u64,
    /// Topic patterns (`*` wildcard) in the fast tier; empty = every topic with remote storage enabled.
    pub include_topics: Vec<String>,
    /// Topic patterns excluded from the fast tier (applied after `include_topics`).
    pub exclude_topics: Vec<String>,
    /// WAL objects stay at least this long after creation, even once the slow tier covers them.
    pub safety_horizon: Duration,
    /// How often the uploader looks for WAL objects that may be deleted.
    pub cleanup_interval: Duration,
    /// How often the stream's head document is rewritten.
    pub head_interval: Duration,
    /// Log directories to find partition directories in; empty = the `log.dir` Kafka gives the RLMM.
    pub log_dirs: Vec<String>,
}

impl WalConfig {
    /// True if `topic` is in the fast tier by the include/exclude rules (remote storage must be enabled
    /// on it too; Kafka only reports such partitions).
    pub fn topic_selected(&self, topic: &str) -> bool {
        let inc = self.include_topics.is_empty() || self.include_topics.iter().any(|p| glob_match(p, topic));
        inc && !self.exclude_topics.iter().any(|p| glob_match(p, topic))
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
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
    KeyDoc { key: "read.ahead.chunks", default: "4", doc: "chunks prefetched ahead of a reading consumer; 0..8" },
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
        key: "wal.enable",
        default: "true",
        doc: "fast tier: upload led partitions' active-segment data (needs fasttier's RLMM)",
    },
    KeyDoc {
        key: "wal.bucket",
        default: "(s3.bucket)",
        doc: "bucket for fast-tier (WAL) objects, e.g. an S3 Express directory bucket",
    },
    KeyDoc { key: "wal.region", default: "(s3.region)", doc: "region of the fast-tier bucket" },
    KeyDoc { key: "wal.endpoint", default: "(s3.endpoint)", doc: "endpoint of the fast-tier bucket" },
    KeyDoc { key: "wal.prefix", default: "(prefix)", doc: "key prefix of fast-tier objects" },
    KeyDoc {
        key: "wal.upload.interval.ms",
        default: "20",
        doc: "shortest time between the starts of two uploads: the cost knob (at most 1000/interval PUTs per second per broker; data is uploaded as soon as it is found and the previous upload finished); 0..60000",
    },
    KeyDoc {
        key: "wal.max.object.bytes",
        default: "8388608",
        doc: "upload early once this much is buffered; 64 KiB..256 MiB",
    },
    KeyDoc {
        key: "wal.include.topics",
        default: "(all)",
        doc: "comma-separated topic patterns (`*` wildcard) in the fast tier",
    },
    KeyDoc {
        key: "wal.exclude.topics",
        default: "(none)",
        doc: "comma-separated topic patterns kept out of the fast tier",
    },
    KeyDoc {
        key: "wal.safety.horizon.ms",
        default: "60000",
        doc: "minimum age of a WAL object before cleanup may delete it",
    },
    KeyDoc {
        key: "wal.cleanup.interval.ms",
        default: "10000",
        doc: "how often covered WAL objects are looked for and deleted",
    },
    KeyDoc { key: "wal.head.interval.ms", default: "1000", doc: "how often the stream's head document is rewritten" },
    KeyDoc {
        key: "wal.log.dirs",
        default: "(log.dir)",
        doc: "comma-separated log directories holding partition directories",
    },
    KeyDoc {
        key: "replication.fast.enable",
        default: "false",
        doc: "replicate through the fast tier: a proxy takes this broker's replica fetches (docs/replication.md)",
    },
    KeyDoc {
        key: "replication.fast.brokers",
        default: "(required)",
        doc: "the brokers' real inter-broker endpoints, id@host:port comma-separated",
    },
    KeyDoc {
        key: "replication.fast.bind",
        default: "127.{id.octets}",
        doc: "proxy listen address per leader ({id.octets} = 0.100.0 + broker id as three octets, {id} = the id; the port is the leader's)",
    },
    KeyDoc {
        key: "replication.fast.auth",
        default: "process",
        doc: "who the proxy serves: process = only this broker's own connections (checked at accept), none = anyone (tests)",
    },
    KeyDoc {
        key: "replication.fast.max.connections.per.leader",
        default: "64",
        doc: "connections one leader's proxy listener serves at a time; more are closed at accept; 1..100000",
    },
    KeyDoc {
        key: "replication.fast.max.connections",
        default: "256",
        doc: "connections all proxy listeners serve at a time; 1..1000000",
    },
    KeyDoc {
        key: "replication.fast.handshake.timeout.ms",
        default: "10000",
        doc: "a proxy connection's first request must arrive within this; 100..600000",
    },
    KeyDoc {
        key: "replication.fast.idle.timeout.ms",
        default: "540000",
        doc: "a proxy connection with no request and no answer outstanding this long is closed; 1000..86400000",
    },
    KeyDoc {
        key: "replication.fast.max.frame.bytes",
        default: "104857600",
        doc: "largest request the proxy relays (Kafka's socket.request.max.bytes default); 65536..2097152000",
    },
    KeyDoc {
        key: "replication.fast.release.ms",
        default: "60000",
        doc: "a leader's stream reader and status no follower connection used this long are released; 100..86400000",
    },
    KeyDoc {
        key: "replication.fast.max.lag.ms",
        default: "3000",
        doc: "fetch from the leader when the fast tier lacks its data this long; 100..600000",
    },
    KeyDoc {
        key: "replication.fast.retry.ms",
        default: "10000",
        doc: "after a fallback, stay with the leader this long before trying the fast tier again",
    },
    KeyDoc {
        key: "replication.fast.poll.ms",
        default: "50",
        doc: "how often a leader's stream is polled for its next object while no notification channel to it is up; 5..10000",
    },
    KeyDoc {
        key: "replication.fast.notify.port",
        default: "0",
        doc: "port of the new-object notification listener, the same on every broker, on its host from replication.fast.brokers (0 = none: followers poll); 0..65535",
    },
    KeyDoc {
        key: "replication.fast.cache.bytes",
        default: "134217728",
        doc: "fast-tier data kept for followers, shared by the leaders followed (≥ 8 MiB each); 1 MiB..64 GiB",
    },
    KeyDoc {
        key: "replication.fast.lookback.objects",
        default: "16",
        doc: "objects before a stream's tail read when following starts; 0..10000",
    },
    KeyDoc {
        key: "replication.fast.report.margin.ms",
        default: "50",
        doc: "clock margin of the offset reports to the leader; 0..10000",
    },
    KeyDoc {
        key: "replication.fast.keepalive.ms",
        default: "5000",
        doc: "longest time between answered offset reports (high watermark, errors); 100..60000",
    },
    KeyDoc {
        key: "replication.fast.report.interval.ms",
        default: "0",
        doc: "shortest time between silent offset reports per follower connection (0 = as soon as the follower's offset moved: acks=all latency vs connections to the leader); 0..60000",
    },
    KeyDoc {
        key: "native.library.path",
        default: "(unset)",
        doc: "read by the Java shim: explicit path of libfasttier_jni.so",
    },
    KeyDoc {
        key: "kafka.version.allow.newer",
        default: "false",
        doc: "read by the Java shim: run on a Kafka newer than the supported 4.1-4.4 with a warning instead of refusing to start",
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

fn list(r: &Reader, key: &str) -> Vec<String> {
    r.raw(key)
        .map_or_else(Vec::new, |v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
}

fn normalise_prefix(key: &str, mut prefix: String) -> Result<String> {
    if prefix.starts_with('/') || prefix.contains("//") || prefix.chars().any(|c| c.is_control()) {
        return Err(Error::config(
            full(key),
            format!("value={prefix:?} must not start with '/', contain '//' or control characters"),
        ));
    }
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(prefix)
}

fn check_bucket(key: &str, bucket: &str) -> Result<()> {
    // S3 bucket naming rules (3-63 chars, lowercase letters, digits, dots, hyphens; directory buckets add
    // "--x-s3"), checked loosely so a typo is caught here and not as an opaque 400 later.
    let ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::config(full(key), format!("value={bucket:?} is not a valid bucket name (3-63 of a-z 0-9 . -)")))
    }
}

fn check_endpoint(key: &str, endpoint: &Option<String>) -> Result<()> {
    match endpoint {
        Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() <= "https://".len() => {
            Err(Error::config(full(key), format!("value={e:?} must be an http:// or https:// URL")))
        }
        _ => Ok(()),
    }
}

fn wal_config(r: &Reader, slow: &S3Settings, slow_prefix: &str) -> Result<WalConfig> {
    let mut s3 = slow.clone();
    if let Some(b) = r.string("wal.bucket") {
        check_bucket("wal.bucket", &b)?;
        s3.bucket = b;
    }
    if let Some(region) = r.string("wal.region") {
        s3.region = region;
    }
    let endpoint = r.string("wal.endpoint");
    check_endpoint("wal.endpoint", &endpoint)?;
    if endpoint.is_some() {
        s3.endpoint = endpoint;
    }
    let prefix = match r.string("wal.prefix") {
        Some(p) => normalise_prefix("wal.prefix", p)?,
        None => slow_prefix.to_string(),
    };
    let max_object_bytes = r.u64("wal.max.object.bytes", 8 * MIB, 64 * 1024, 256 * MIB)?;
    let upload_interval = Duration::from_millis(r.u64("wal.upload.interval.ms", 20, 0, 60_000)?);
    Ok(WalConfig {
        enabled: r.bool("wal.enable", true)?,
        s3,
        prefix,
        upload_interval,
        max_object_bytes,
        include_topics: list(r, "wal.include.topics"),
        exclude_topics: list(r, "wal.exclude.topics"),
        safety_horizon: Duration::from_millis(r.u64("wal.safety.horizon.ms", 60_000, 0, 7 * 86_400_000)?),
        cleanup_interval: r.ms("wal.cleanup.interval.ms", 10_000)?,
        head_interval: r.ms("wal.head.interval.ms", 1_000)?,
        log_dirs: list(r, "wal.log.dirs"),
    })
}

fn parse_endpoint(key: &str, s: &str) -> Result<BrokerEndpoint> {
    let bad = |why: &str| Error::config(full(key), format!("value={s:?} {why} (expected id@host:port)"));
    let (id, rest) = s.split_once('@').ok_or_else(|| bad("has no '@'"))?;
    let id: i32 = id.trim().parse().map_err(|_| bad("has no numeric broker id"))?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    let port: u16 = port.trim().parse().map_err(|_| bad("has no valid port"))?;
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    if id < 0 || host.is_empty() || port == 0 {
        return Err(bad("has a negative id, an empty host or port 0"));
    }
    Ok(BrokerEndpoint { id, host: host.to_string(), port })
}

fn replication_config(r: &Reader) -> Result<ReplicationConfig> {
    let enabled = r.bool("replication.fast.enable", false)?;
    let mut brokers = Vec::new();
    for item in list(r, "replication.fast.brokers") {
        let b = parse_endpoint("replication.fast.brokers", &item)?;
        if brokers.iter().any(|x: &BrokerEndpoint| x.id == b.id) {
            return Err(Error::config(full("replication.fast.brokers"), format!("broker id={} is listed twice", b.id)));
        }
        brokers.push(b);
    }
    if enabled && brokers.is_empty() {
        return Err(Error::config(
            full("replication.fast.brokers"),
            format!("is required when {} is true (id@host:port of every broker)", full("replication.fast.enable")),
        ));
    }
    let bind = r.string("replication.fast.bind").unwrap_or_else(|| DEFAULT_BIND.to_string());
    if brokers.len() > 1 && !bind.contains("{id}") && !bind.contains("{id.octets}") {
        return Err(Error::config(
            full("replication.fast.bind"),
            format!("value={bind:?} must contain {{id}} or {{id.octets}} (one listen address per leader)"),
        ));
    }
    let mut seen: Vec<(String, i32)> = Vec::new();
    for b in &brokers {
        let addr = listen_addr_for(&bind, b);
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::config(
                full("replication.fast.bind"),
                format!(
                    "value={bind:?} gives broker id={} the address {addr:?}, not an IP address (use {{id.octets}})",
                    b.id
                ),
            ));
        }
        if let Some((_, other)) = seen.iter().find(|(a, _)| *a == addr) {
            return Err(Error::config(
                full("replication.fast.bind"),
                format!("value={bind:?} gives broker ids {other} and {} the same listen address {addr}", b.id),
            ));
        }
        seen.push((addr, b.id));
    }
    let limits = proxy_limits(r)?;
    Ok(ReplicationConfig {
        enabled,
        limits,
        brokers,
        bind,
        max_lag: Duration::from_millis(r.u64("replication.fast.max.lag.ms", 3_000, 100, 600_000)?),
        retry: r.ms("replication.fast.retry.ms", 10_000)?,
        poll: Duration::from_millis(r.u64("replication.fast.poll.ms", 50, 5, 10_000)?),
        cache_bytes: r.u64("replication.fast.cache.bytes", 128 * MIB, MIB, 64 * 1024 * MIB)?,
        lookback_objects: r.u64("replication.fast.lookback.objects", 16, 0, 10_000)?,
        report_margin: Duration::from_millis(r.u64("replication.fast.report.margin.ms", 50, 0, 10_000)?),
        keepalive: Duration::from_millis(r.u64("replication.fast.keepalive.ms", 5_000, 100, 60_000)?),
        report_interval: Duration::from_millis(r.u64("replication.fast.report.interval.ms", 0, 0, 60_000)?),
        notify_port: r.u64("replication.fast.notify.port", 0, 0, 65_535)? as u16,
    })
}

fn proxy_limits(r: &Reader) -> Result<ProxyLimits> {
    use crate::catchup::caller::CallerCheck;
    let auth = match r.string("replication.fast.auth").as_deref().map(str::trim) {
        None | Some("process") => CallerCheck::Process,
        Some("none") => CallerCheck::None,
        Some(other) => {
            return Err(Error::config(
                full("replication.fast.auth"),
                format!("value={other:?} must be process or none"),
            ))
        }
    };
    let ms = |key: &str, default: u64, min: u64, max: u64| r.u64(key, default, min, max).map(Duration::from_millis);
    Ok(ProxyLimits {
        auth,
        max_connections_per_leader: r.u64("replication.fast.max.connections.per.leader", 64, 1, 100_000)? as usize,
        max_connections: r.u64("replication.fast.max.connections", 256, 1, 1_000_000)? as usize,
        handshake_timeout: ms("replication.fast.handshake.timeout.ms", 10_000, 100, 600_000)?,
        idle_timeout: ms("replication.fast.idle.timeout.ms", 540_000, 1_000, 86_400_000)?,
        max_frame: r.u64("replication.fast.max.frame.bytes", 100 * MIB, 64 * 1024, 2_000 * MIB)? as usize,
        release_after: ms("replication.fast.release.ms", 60_000, 100, 86_400_000)?,
    })
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
            check_bucket("s3.bucket", &bucket)?;
        }
        let endpoint = r.string("s3.endpoint");
        check_endpoint("s3.endpoint", &endpoint)?;
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

        let prefix = normalise_prefix("prefix", r.string("prefix").unwrap_or_default())?;

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
        let wal = wal_config(&r, &s3, &prefix)?;
        let replication = replication_config(&r)?;
        Ok(Config {
            backend,
            s3,
            prefix,
            chunk_bytes,
            cache_bytes,
            read_ahead_chunks: r.u64("read.ahead.chunks", 4, 0, 8)? as u32,
            multipart_threshold_bytes: r.u64("multipart.threshold.bytes", 16 * MIB, 5 * MIB, 5 * 1024 * MIB)?,
            part_bytes,
            upload_concurrency: r.u64("upload.concurrency", 4, 1, 32)? as usize,
            worker_threads: r.u64("runtime.worker.threads", 4, 1, 64)? as usize,
            max_blocking_threads: r.u64("runtime.max.blocking.threads", 8, 1, 256)? as usize,
            broker_id,
            ignored_keys,
            wal,
            replication,
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
    fn wal_settings_default_to_the_slow_tier_and_validate() {
        let c =
            Config::from_pairs(&[("s3.bucket", "slow"), ("prefix", "c1"), ("s3.endpoint", "http://h:9000")]).unwrap();
        assert!(c.wal.enabled);
        assert_eq!(c.wal.s3.bucket, "slow");
        assert_eq!(c.wal.s3.endpoint.as_deref(), Some("http://h:9000"));
        assert_eq!(c.wal.prefix, "c1/");
        assert_eq!(c.wal.upload_interval, Duration::from_millis(20));
        let c = Config::from_pairs(&[
            ("s3.bucket", "slow"),
            ("wal.bucket", "fast--use1-az4--x-s3"),
            ("wal.prefix", "w"),
            ("wal.include.topics", "orders*, pay"),
            ("wal.exclude.topics", "*-tmp"),
        ])
        .unwrap();
        assert_eq!(c.wal.s3.bucket, "fast--use1-az4--x-s3");
        assert_eq!(c.wal.prefix, "w/");
        assert!(c.wal.topic_selected("orders-eu"));
        assert!(c.wal.topic_selected("pay"));
        assert!(!c.wal.topic_selected("payments"));
        assert!(!c.wal.topic_selected("orders-tmp"));
        assert!(err(&[("s3.bucket", "b12"), ("wal.bucket", "X")]).contains("key=rsm.config.wal.bucket"));
        assert!(err(&[("s3.bucket", "b12"), ("wal.endpoint", "h:1")]).contains("key=rsm.config.wal.endpoint"));
        assert!(err(&[("s3.bucket", "b12"), ("wal.upload.interval.ms", "60001")]).contains("wal.upload.interval.ms"));
        assert!(err(&[("s3.bucket", "b12"), ("wal.uplaod.interval.ms", "5")]).contains("is not a fasttier setting"));
        assert!(err(&[("s3.bucket", "b12"), ("wal.max.object.bytes", "1")]).contains("wal.max.object.bytes"));
    }

    #[test]
    fn replication_settings_validate_and_name_the_key() {
        let c = Config::from_pairs(&[("s3.bucket", "b12")]).unwrap();
        assert!(!c.replication.enabled);
        let c = Config::from_pairs(&[
            ("s3.bucket", "b12"),
            ("replication.fast.enable", "true"),
            ("replication.fast.brokers", "0@10.0.0.1:9093, 1@kafka-1.internal:9093,2@[::1]:19093"),
        ])
        .unwrap();
        assert!(c.replication.enabled);
        assert_eq!(c.replication.brokers[1], BrokerEndpoint { id: 1, host: "kafka-1.internal".into(), port: 9093 });
        assert_eq!(c.replication.brokers[2].host, "::1");
        assert_eq!(c.replication.listen_addr(&c.replication.brokers[1]), "127.0.100.1:9093");
        assert_eq!(c.replication.limits, ProxyLimits::default());
        // broker ids of any size: the default spreads the id over the last three octets
        let big = |id: i32| BrokerEndpoint { id, host: "h".into(), port: 9 };
        assert_eq!(c.replication.listen_addr(&big(256)), "127.0.101.0:9");
        assert_eq!(c.replication.listen_addr(&big(70_000)), "127.1.117.112:9");
        assert_eq!(c.replication.listen_addr(&big(OCTETS_SPAN as i32 - 1)), "127.255.255.254:9");
        assert_eq!(c.replication.listen_addr(&big(i32::MAX)), format!("127.{}:9", id_octets(i32::MAX)));
        let e = err(&[("s3.bucket", "b12"), ("replication.fast.brokers", "0@h:1,16751615@g:1")]);
        assert!(e.contains("broker ids 0 and 16751615 the same listen address 127.0.100.0:1"), "{e}");
        let e = err(&[
            ("s3.bucket", "b12"),
            ("replication.fast.brokers", "1@h:1,300@g:2"),
            ("replication.fast.bind", "127.0.100.{id}"),
        ]);
        assert!(e.contains("broker id=300") && e.contains("not an IP address"), "{e}");
        let c = Config::from_pairs(&[
            ("s3.bucket", "b12"),
            ("replication.fast.brokers", "1@h:1,300@g:2"),
            ("replication.fast.bind", "10.{id.octets}"),
            ("replication.fast.auth", "none"),
            ("replication.fast.idle.timeout.ms", "5000"),
        ])
        .unwrap();
        assert_eq!(c.replication.listen_addr(&c.replication.brokers[1]), "10.0.101.44:2");
        assert_eq!(c.replication.limits.auth, crate::catchup::caller::CallerCheck::None);
        assert_eq!(c.replication.limits.idle_timeout, Duration::from_secs(5));
        assert!(err(&[("s3.bucket", "b12"), ("replication.fast.auth", "tls")])
            .contains("key=rsm.config.replication.fast.auth"));
        let e = err(&[("s3.bucket", "b12"), ("replication.fast.enable", "true")]);
        assert!(e.contains("key=rsm.config.replication.fast.brokers is required"), "{e}");
        let e = err(&[("s3.bucket", "b12"), ("replication.fast.brokers", "1@h")]);
        assert!(e.contains("key=rsm.config.replication.fast.brokers value=\"1@h\" has no port"), "{e}");
        assert!(err(&[("s3.bucket", "b12"), ("replication.fast.brokers", "x@h:1")]).contains("numeric broker id"));
        assert!(err(&[("s3.bucket", "b12"), ("replication.fast.brokers", "1@h:1,1@g:2")]).contains("listed twice"));
        let e = err(&[
            ("s3.bucket", "b12"),
            ("replication.fast.brokers", "1@h:1,2@g:2"),
            ("replication.fast.bind", "127.0.0.5"),
        ]);
        assert!(e.contains("key=rsm.config.replication.fast.bind"), "{e}");
        assert!(
            err(&[("s3.bucket", "b12"), ("replication.fast.max.lag.ms", "1")]).contains("replication.fast.max.lag.ms")
        );
        assert!(
            err(&[("s3.bucket", "b12"), ("replication.fast.enabled", "true")]).contains("is not a fasttier setting")
        );
    }

    #[test]
    fn glob() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a*c*", "acx"));
        assert!(!glob_match("a*c", "abcd"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn part_size_is_rounded_to_chunks() {
        let c =
            Config::from_pairs(&[("s3.bucket", "b12"), ("chunk.bytes", "3145728"), ("upload.part.bytes", "5242880")])
                .unwrap();
        assert_eq!(c.part_bytes, 6 * MIB);
    }
}
