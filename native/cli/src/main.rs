//! `fasttier` — inspect and verify what the plugin stored, using the broker's own configuration.
//!
//! Every command reads the `rsm.config.*` properties from a broker properties file (`--broker-config`),
//! so the tool sees exactly the buckets and prefixes the broker uses (the fast tier's from `wal.*`).
//! Exit status: 0 fine, 1 a problem was found (e.g. a corrupt object, a mismatch), 2 bad usage or
//! configuration. The `wal`, `partition` and `rebuild` commands live in the `fasttier_cli` library
//! (`lib.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use fasttier_cli::partition::{self, Stores};
use fasttier_cli::rebuild::{self, Progress, Quiet, RebuildOptions, StartAt, Target};
use fasttier_cli::wal_cmd;
use fasttier_core::config::{Config, PREFIX};
use fasttier_core::engine::{open_store, open_wal_store};
use fasttier_core::error::{Error, Result};
use fasttier_core::format::keys::{parse_segment_file_name, segments_root};
use fasttier_core::format::manifest::SegmentManifest;
use fasttier_core::format::{chunk_crcs, crc32c};
use fasttier_core::store::ObjectStore;

#[derive(Parser)]
#[command(name = "fasttier", version, about = "Inspect and verify fasttier's objects in the bucket")]
struct Cli {
    /// Broker properties file holding the plugin's rsm.config.* settings.
    #[arg(long, short = 'c', global = true)]
    broker_config: Option<PathBuf>,
    /// Extra or overriding plugin settings, KEY=VALUE without the rsm.config. prefix (repeatable).
    #[arg(long = "set", global = true)]
    set: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validates the plugin configuration and checks the bucket is reachable.
    Check,
    /// Lists copied segments (complete ones with their offsets; incomplete copies are flagged).
    Segments {
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only this partition.
        #[arg(long)]
        partition: Option<i32>,
        /// Print one JSON object per segment instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Downloads every segment (filtered) and checks every chunk and index against its CRC-32C.
    Verify {
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        partition: Option<i32>,
    },
    /// The fast tier's per-broker WAL streams.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// One partition across the slow and the fast tier.
    Partition {
        #[command(subcommand)]
        command: PartitionCommand,
    },
    /// Writes partitions of a stopped broker back into its log directory from the slow and the fast tier
    /// (Kafka's on-disk format, checked byte for byte), so that it fetches only newer data from the leader.
    Rebuild {
        /// The broker's log directory (default: the only entry of log.dirs in --broker-config).
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// The topic to rebuild.
        #[arg(long)]
        topic: Option<String>,
        /// Partitions of --topic (comma-separated or repeated; default: every partition the tiers hold).
        #[arg(long, value_delimiter = ',', requires = "topic")]
        partition: Vec<i32>,
        /// Topic-partitions as Kafka names their directories, e.g. orders-0,payments-3 (comma-separated or
        /// repeated).
        #[arg(long, value_delimiter = ',')]
        partitions: Vec<String>,
        /// Topic id (base64url) of --topic; needed when the slow tier has no segment of the topic.
        #[arg(long, requires = "topic")]
        topic_id: Option<String>,
        /// Restore from the slow segment holding this offset (or the start of the fast-tier data holding it)
        /// instead of by local retention.
        #[arg(long, conflicts_with_all = ["local_retention_ms", "local_retention_bytes"])]
        from_offset: Option<i64>,
        /// The topic's local.retention.ms (-1: unlimited); default the broker's log.local.retention.ms.
        #[arg(long, allow_hyphen_values = true)]
        local_retention_ms: Option<i64>,
        /// The topic's local.retention.bytes (-1: unlimited); default the broker's log.local.retention.bytes.
        #[arg(long, allow_hyphen_values = true)]
        local_retention_bytes: Option<i64>,
        /// Replace partition directories that already hold segment files.
        #[arg(long)]
        force: bool,
        /// Only show what would be restored.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Lists every broker's stream (retained seqs, objects, bytes, head), or one broker's objects.
    List {
        /// Only this broker's stream, object by object.
        #[arg(long)]
        broker: Option<i32>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PartitionCommand {
    /// What the slow tier (segments) and the fast tier (ranges per broker, seq, epoch) hold of a
    /// partition, and the resolved coverage.
    Show {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        /// Topic id (base64url); needed when the slow tier has no segment of the topic yet.
        #[arg(long)]
        topic_id: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Checks a broker's local partition directory byte for byte against the tiers; exit status 1 on
    /// any mismatch, gap, conflict or duplicate.
    Verify {
        /// The partition directory, `<log.dir>/<topic>-<partition>`.
        #[arg(long)]
        dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Every `key=value` (or `key: value`) of a properties file.
fn load_properties(path: &PathBuf) -> std::result::Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((k, v)) = line.split_once(['=', ':']) else { continue };
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(map)
}

/// A progress bar (on stderr) fed by the rebuild.
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn planned(&self, partition: &str, bytes: u64) {
        self.0.inc_length(bytes);
        self.0.set_message(partition.to_string());
    }

    fn wrote(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn phase(&self, partition: &str, phase: &str) {
        self.0.set_message(format!("{partition}: {phase}"));
    }
}

fn progress_bar() -> Bar {
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Bar(bar)
}

/// The partitions `rebuild` names: `--topic` with `--partition` (or every partition the tiers hold of
/// it), and `--partitions`; topic ids from `--topic-id` or the slow tier.
async fn rebuild_targets(
    stores: &Stores,
    topic: Option<&str>,
    partition: &[i32],
    partitions: &[String],
    topic_id: Option<&str>,
) -> Result<Vec<Target>> {
    let mut named = rebuild::parse_partition_names(partitions)?;
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    if let Some(t) = topic {
        let id = partition::resolve_topic_id(stores, t, topic_id).await?;
        let parts =
            if partition.is_empty() { rebuild::tiered_partitions(stores, t, &id).await? } else { partition.to_vec() };
        if parts.is_empty() {
            return Err(Error::config("--topic", format!("the tiers hold no partition of topic={t} (id {id})")));
        }
        named.extend(parts.into_iter().map(|p| (t.to_string(), p)));
        ids.insert(t.to_string(), id);
    }
    if named.is_empty() {
        return Err(Error::config("--topic", "name what to rebuild: --topic (with --partition) or --partitions"));
    }
    let mut targets = Vec::new();
    for (t, p) in named {
        if !ids.contains_key(&t) {
            let id = partition::resolve_topic_id(stores, &t, None).await?;
            ids.insert(t.clone(), id);
        }
        targets.push(Target { topic_id: ids[&t].clone(), topic: t, partition: p });
    }
    Ok(targets)
}

/// One segment directory entry found by listing.
#[derive(Default)]
struct Found {
    suffixes: BTreeSet<String>,
    manifest_key: String,
}

async fn find_segments(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    topic: Option<&str>,
    partition: Option<i32>,
) -> Result<BTreeMap<(String, i32, i64, String), Found>> {
    let root = segments_root(prefix);
    let list_prefix = match topic {
        Some(t) => format!("{root}{t}-"),
        None => root.clone(),
    };
    let mut found: BTreeMap<(String, i32, i64, String), Found> = BTreeMap::new();
    for obj in store.list(&list_prefix).await? {
        let rest = &obj.key[root.len()..];
        let mut parts = rest.splitn(3, '/');
        let (Some(dir), Some(p), Some(name)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let Ok(p) = p.parse::<i32>() else { continue };
        if partition.is_some_and(|want| want != p) {
            continue;
        }
        // dir is <topic>-<topicId>; topic ids are 22 base64url chars.
        if let Some(t) = topic {
            if dir.len() != t.len() + 23 {
                continue;
            }
        }
        let Some((offset, segment_id, suffix)) = parse_segment_file_name(name) else { continue };
        let entry = found.entry((dir.to_string(), p, offset, segment_id.to_string())).or_default();
        entry.suffixes.insert(suffix.to_string());
        if suffix == "manifest" {
            entry.manifest_key = obj.key.clone();
        }
    }
    Ok(found)
}

async fn run(cli: Cli) -> std::result::Result<bool, Error> {
    let props = match &cli.broker_config {
        Some(p) => load_properties(p).map_err(|e| Error::config("--broker-config", e))?,
        None => BTreeMap::new(),
    };
    let mut map: BTreeMap<String, String> =
        props.iter().filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?.to_string(), v.clone()))).collect();
    for kv in &cli.set {
        let (k, v) =
            kv.split_once('=').ok_or_else(|| Error::config("--set", format!("value={kv:?} is not KEY=VALUE")))?;
        map.insert(k.trim_start_matches(PREFIX).to_string(), v.to_string());
    }
    let config = Config::from_map(&map)?;
    let store = open_store(&config).await?;
    let stores = || async {
        let wal = open_wal_store(&config, &store).await?;
        Ok::<_, Error>(Stores {
            slow: store.clone(),
            slow_prefix: config.prefix.clone(),
            wal,
            wal_prefix: config.wal.prefix.clone(),
        })
    };
    match cli.command {
        Command::Check => {
            println!("configuration valid; bucket={} reachable (prefix={:?})", config.s3.bucket, config.prefix);
            Ok(true)
        }
        Command::Segments { topic, partition, json } => {
            let found = find_segments(&store, &config.prefix, topic.as_deref(), partition).await?;
            if !json {
                println!(
                    "{:<40} {:>5} {:>20} {:>20} {:>12}  segment-id / state",
                    "topic-dir", "part", "start", "end", "bytes"
                );
            }
            for ((dir, p, start, id), f) in &found {
                if !f.suffixes.contains("manifest") {
                    let state = format!("INCOMPLETE (has {:?})", f.suffixes);
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"dir": dir, "partition": p, "start_offset": start, "segment_id": id, "state": state})
                        );
                    } else {
                        println!("{dir:<40} {p:>5} {start:>20} {:>20} {:>12}  {id} {state}", "-", "-");
                    }
                    continue;
                }
                let raw = store.get(&f.manifest_key).await?;
                let m = SegmentManifest::decode(&f.manifest_key, &raw)?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"dir": dir, "partition": p, "start_offset": start, "end_offset": m.end_offset,
                        "segment_id": id, "bytes": m.log.size, "max_timestamp_ms": m.max_timestamp_ms, "leader_epochs": m.leader_epochs, "state": "COMPLETE"})
                    );
                } else {
                    println!("{dir:<40} {p:>5} {start:>20} {:>20} {:>12}  {id}", m.end_offset, m.log.size);
                }
            }
            Ok(true)
        }
        Command::Verify { topic, partition } => {
            let found = find_segments(&store, &config.prefix, topic.as_deref(), partition).await?;
            let (mut ok, mut bad) = (0usize, 0usize);
            for f in found.values().filter(|f| f.suffixes.contains("manifest")) {
                match verify_one(&store, &f.manifest_key).await {
                    Ok(bytes) => {
                        ok += 1;
                        println!("ok       {} ({bytes} bytes)", f.manifest_key);
                    }
                    Err(e) => {
                        bad += 1;
                        println!("CORRUPT  {e}");
                    }
                }
            }
            println!("{ok} segments verified, {bad} corrupt");
            Ok(bad == 0)
        }
        Command::Wal { command: WalCommand::List { broker, json } } => {
            let s = stores().await?;
            println!("{}", wal_cmd::list(&s.wal, &s.wal_prefix, broker, json).await?);
            Ok(true)
        }
        Command::Partition { command: PartitionCommand::Show { topic, partition, topic_id, json } } => {
            let view = partition::show(&stores().await?, &topic, partition, topic_id.as_deref()).await?;
            println!("{}", if json { view.to_json().to_string() } else { view.render() });
            Ok(true)
        }
        Command::Rebuild {
            log_dir,
            topic,
            partition,
            partitions,
            topic_id,
            from_offset,
            local_retention_ms,
            local_retention_bytes,
            force,
            dry_run,
            json,
        } => {
            let log_dir = match log_dir {
                Some(d) => d,
                None => {
                    let dirs = props.get("log.dirs").or_else(|| props.get("log.dir"));
                    let dirs: Vec<&str> = dirs.map_or(Vec::new(), |d| d.split(',').map(str::trim).collect());
                    match dirs.as_slice() {
                        [one] if !one.is_empty() => PathBuf::from(one),
                        _ => {
                            return Err(Error::config(
                                "--log-dir",
                                "name the log directory (log.dirs has not exactly one)",
                            ))
                        }
                    }
                }
            };
            let start = match from_offset {
                Some(x) => StartAt::Offset(x),
                None => {
                    let mut r = rebuild::broker_local_retention(&props)?;
                    for (flag, given, field) in [
                        ("--local-retention-ms", local_retention_ms, &mut r.ms),
                        ("--local-retention-bytes", local_retention_bytes, &mut r.bytes),
                    ] {
                        if let Some(v) = given {
                            if v < -1 {
                                return Err(Error::config(flag, format!("value={v}: -1 (unlimited) or more")));
                            }
                            *field = v;
                        }
                    }
                    StartAt::Retention(r)
                }
            };
            let mut opts = RebuildOptions::new(log_dir, start);
            opts.force = force;
            opts.dry_run = dry_run;
            if let Some(v) = props.get("log.segment.bytes") {
                opts.max_segment_bytes = v
                    .parse()
                    .map_err(|_| Error::config("log.segment.bytes", format!("value={v:?} is not a number")))?;
            }
            let s = stores().await?;
            let targets = rebuild_targets(&s, topic.as_deref(), &partition, &partitions, topic_id.as_deref()).await?;
            let bar = (!json && std::io::stderr().is_terminal()).then(progress_bar);
            let progress: Arc<dyn Progress> = match &bar {
                Some(b) => Arc::new(Bar(b.0.clone())),
                None => Arc::new(Quiet),
            };
            let result = rebuild::rebuild(&s, &targets, &opts, progress).await;
            if let Some(b) = &bar {
                b.0.finish_and_clear();
            }
            match result {
                Ok(r) => {
                    if json {
                        println!("{}", r.to_json());
                    } else {
                        if bar.is_some() {
                            for p in &r.partitions {
                                println!(
                                    "{}: {}..={} in {} segments, {} bytes, leader epochs {:?}{} -> {}",
                                    p.name(),
                                    p.first_offset,
                                    p.log_end_offset - 1,
                                    p.segments.len(),
                                    p.bytes(),
                                    p.leader_epochs,
                                    p.producer_snapshot
                                        .map_or(String::new(), |o| format!(", producer snapshot at {o}")),
                                    p.dir
                                );
                            }
                        }
                        println!("{}", r.summary());
                    }
                    Ok(r.ok())
                }
                Err(e) if json && !matches!(e, Error::Config { .. }) => {
                    println!("{}", serde_json::json!({ "ok": false, "error": e.to_string() }));
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        }
        Command::Partition { command: PartitionCommand::Verify { dir, json } } => {
            match partition::verify(&stores().await?, &dir).await {
                Ok(report) => {
                    println!("{}", if json { report.to_json().to_string() } else { report.render() });
                    Ok(report.ok())
                }
                // With --json a failure that is not a usage error is still one JSON object.
                Err(e) if json && !matches!(e, Error::Config { .. }) => {
                    println!("{}", serde_json::json!({ "ok": false, "error": e.to_string() }));
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        }
    }
}

async fn verify_one(store: &Arc<dyn ObjectStore>, manifest_key: &str) -> Result<u64> {
    let m = SegmentManifest::decode(manifest_key, &store.get(manifest_key).await?)?;
    let log = store.get(&m.log.key).await?;
    if log.len() as u64 != m.log.size {
        return Err(Error::corrupt(&m.log.key, format!("size expected={} actual={}", m.log.size, log.len())));
    }
    for (i, (actual, expected)) in
        chunk_crcs(&log, m.log.chunk_bytes as usize).iter().zip(&m.log.chunk_crc32c).enumerate()
    {
        if actual != expected {
            return Err(Error::corrupt(
                &m.log.key,
                format!("chunk={i} crc32c expected={expected:08x} actual={actual:08x}"),
            ));
        }
    }
    let idx = store.get(&m.indexes.key).await?;
    for e in &m.indexes.entries {
        let end = (e.position + e.length) as usize;
        let actual = idx.get(e.position as usize..end).map(crc32c);
        if actual != Some(e.crc32c) {
            return Err(Error::corrupt(&m.indexes.key, format!("index={:?} crc32c mismatch", e.kind)));
        }
    }
    Ok(m.log.size)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fasttier: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fasttier: {e}");
            ExitCode::from(if matches!(e, Error::Config { .. }) { 2 } else { 1 })
        }
    }
}
