//! The fast tier's uploader: the leader's active-segment data, continuously, to object storage.
//!
//! Kafka tells the plugin (through fasttier's delegating RemoteLogMetadataManager, see
//! `java-shim/.../FastTierRemoteLogMetadataManager.java`) which partitions this broker leads and where its
//! log directory is. [`FastTier`] keeps that membership ([`Membership`]); its uploader task ([`uploader`])
//! tails every led, selected partition's segment files ([`crate::tail`]), packs the new batches of all
//! partitions into one WAL object and appends it to the broker's stream ([`crate::wal::WalWriter`]) as soon
//! as the previous upload finished (a group commit, woken by writes to the logs: `watch.rs`, paced by
//! `wal.upload.interval.ms`: `pace.rs`). Each new object's position is published as the stream's tip
//! ([`FastTier::tip`]) for the followers' notification channel. It deletes objects once the slow tier
//! covers them ([`coverage`]). Formats and protocols: `docs/formats.md`, "Fast tier (WAL)".
//!
//! Entry points are called on Kafka's threads (the metadata thread for leadership changes), so they only
//! record the change and wake the uploader; they never wait for I/O.

pub mod coverage;
mod pace;
mod uploader;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::{watch as tokio_watch, Notify};

use crate::config::WalConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::ObjectStore;
use crate::wal::format::topic_id_string;
use crate::wal::TopicId;

pub use coverage::Coverage;

/// A partition as Kafka names it: topic, topic id (base64url, as `Uuid.toString()`), partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionInfo {
    pub topic: String,
    pub topic_id: String,
    pub partition: i32,
}

/// A partition with its topic id decoded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tp {
    pub topic_id: TopicId,
    pub partition: i32,
}

impl std::fmt::Display for Tp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "topic_id={} partition={}", topic_id_string(&self.topic_id), self.partition)
    }
}

/// Decodes Kafka's base64url (unpadded) topic id into its 16 bytes.
pub fn parse_topic_id(s: &str) -> Result<TopicId> {
    use base64::Engine as _;
    let bad = || Error::Internal(format!("topic_id={s:?} is not a base64url Kafka Uuid"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let id: TopicId = raw.try_into().map_err(|_| bad())?;
    if topic_id_string(&id) != s {
        return Err(bad());
    }
    Ok(id)
}

fn decode(parts: Vec<PartitionInfo>) -> Result<Vec<(Tp, String)>> {
    parts
        .into_iter()
        .map(|p| Ok((Tp { topic_id: parse_topic_id(&p.topic_id)?, partition: p.partition }, p.topic)))
        .collect()
}

/// What Kafka told us, as the uploader should see it.
#[derive(Debug, Default)]
pub struct Membership {
    /// Log directories to look for `<topic>-<partition>` in (from `wal.log.dirs`, else the RLMM's `log.dir`).
    pub log_dirs: Vec<PathBuf>,
    /// Partitions this broker leads that are in the fast tier (remote storage enabled, selected by the
    /// include/exclude rules), with their topic names.
    pub leaders: BTreeMap<Tp, String>,
    /// Partitions Kafka stopped (deleted or moved away) since the uploader last looked.
    pub stopped: BTreeSet<Tp>,
    /// Bumped on every change, so the uploader can tell it has seen the latest state.
    pub version: u64,
    /// Set by [`FastTier::close`].
    pub closed: bool,
}

/// Where this broker's stream stands after its latest upload: its writer's incarnation and the seq the next
/// object will get (every object below it exists or was cleaned up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTip {
    pub incarnation: u64,
    pub next_seq: u64,
}

/// Shared between the entry points and the uploader task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: WalConfig,
    pub(crate) broker_id: i32,
    pub(crate) membership: Mutex<Membership>,
    pub(crate) wake: Arc<Notify>,
    /// The stream's tip after each upload (`None` before the first).
    pub(crate) tip: tokio_watch::Sender<Option<StreamTip>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) coverage: Arc<Coverage>,
    pub(crate) status: Mutex<serde_json::Value>,
}

/// The fast tier of one engine. Created by the engine when `wal.enable` is set; its uploader task starts
/// when the first log directory is known (the RLMM's `configure`).
#[derive(Debug)]
pub struct FastTier {
    shared: Arc<Shared>,
    store: Arc<dyn ObjectStore>,
    slow_store: Arc<dyn ObjectStore>,
    slow_prefix: String,
    runtime: tokio::runtime::Handle,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FastTier {
    // The tier's collaborators, wired once by its one caller (the JNI start-up); a builder would add nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: WalConfig,
        broker_id: i32,
        store: Arc<dyn ObjectStore>,
        slow_store: Arc<dyn ObjectStore>,
        slow_prefix: String,
        metrics: Arc<Metrics>,
        coverage: Arc<Coverage>,
        runtime: tokio::runtime::Handle,
    ) -> FastTier {
        let log_dirs = cfg.log_dirs.iter().map(PathBuf::from).collect();
        let shared = Arc::new(Shared {
            cfg,
            broker_id,
            membership: Mutex::new(Membership { log_dirs, ..Membership::default() }),
            wake: Arc::new(Notify::new()),
            tip: tokio_watch::channel(None).0,
            metrics,
            coverage,
            status: Mutex::new(json!({"state": "waiting for the RLMM (log dir, leadership)"})),
        });
        FastTier { shared, store, slow_store, slow_prefix, runtime, task: Mutex::new(None) }
    }

    fn change(&self, f: impl FnOnce(&mut Membership)) {
        {
            let mut m = self.shared.membership.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut m);
            m.version += 1;
        }
        self.shared.wake.notify_one();
    }

    /// The RLMM's `log.dir` (ignored when `wal.log.dirs` is set); starts the uploader.
    pub fn set_log_dirs(&self, dirs: Vec<PathBuf>) {
        if self.shared.cfg.log_dirs.is_empty() {
            self.change(|m| m.log_dirs = dirs);
        }
        self.start();
    }

    /// Kafka's `onPartitionLeadershipChanges`: `leaders` are now led here, `followers` are not (any more).
    /// Only partitions with remote storage enabled are reported by Kafka; the include/exclude rules pick
    /// the fast-tier ones.
    pub fn leadership(&self, leaders: Vec<PartitionInfo>, followers: Vec<PartitionInfo>) -> Result<()> {
        let lead: Vec<(Tp, String)> =
            decode(leaders)?.into_iter().filter(|(_, topic)| self.shared.cfg.topic_selected(topic)).collect();
        let follow = decode(followers)?;
        self.change(|m| {
            for (tp, _) in follow {
                m.leaders.remove(&tp);
            }
            for (tp, topic) in lead {
                m.stopped.remove(&tp);
                m.leaders.insert(tp, topic);
            }
        });
        Ok(())
    }

    /// Kafka's `onStopPartitions`: the partitions are deleted or moved away from this broker.
    pub fn stop_partitions(&self, partitions: Vec<PartitionInfo>) -> Result<()> {
        let tps = decode(partitions)?;
        self.change(|m| {
            for (tp, _) in tps {
                m.leaders.remove(&tp);
                m.stopped.insert(tp);
            }
        });
        Ok(())
    }

    /// The stream's tip, updated after every upload: what followers are told (catchup/notify.rs).
    pub fn tip(&self) -> tokio_watch::Receiver<Option<StreamTip>> {
        self.shared.tip.subscribe()
    }

    /// A JSON snapshot of the uploader's state (stream position, partitions, lag), for logs and tests.
    pub fn status(&self) -> serde_json::Value {
        let mut v = self.shared.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let m = self.shared.membership.lock().unwrap_or_else(|p| p.into_inner());
        v["leaders"] = json!(m.leaders.len());
        v["log_dirs"] = json!(m.log_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>());
        v
    }

    fn start(&self) {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.is_some() {
            return;
        }
        let up = uploader::Uploader::new(
            self.shared.clone(),
            self.store.clone(),
            self.slow_store.clone(),
            self.slow_prefix.clone(),
        );
        *task = Some(self.runtime.spawn(up.run()));
    }

    /// Stops the uploader: it finishes (or abandons, after a bounded wait) the object in flight and exits.
    pub fn close(&self) {
        self.change(|m| m.closed = true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            // Bounded: the uploader checks `closed` between steps and its store calls have timeouts. Called on
            // Kafka's threads (never a runtime worker), so blocking here is allowed.
            let waited = self
                .runtime
                .block_on(async move { tokio::time::timeout(std::time::Duration::from_secs(15), task).await });
            if waited.is_err() {
                tracing::warn!("fast tier uploader did not stop within 15 s; abandoned");
            }
        }
    }
}

impl Drop for FastTier {
    fn drop(&mut self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
