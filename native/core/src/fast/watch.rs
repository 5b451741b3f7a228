//! The log watch: wakes the uploader when Kafka writes to the log of a partition it uploads.
//!
//! On Linux an inotify watch per partition directory reports every write to a `.log` file (Kafka appends
//! with `FileChannel.write`, which inotify sees) and every new file (a segment roll); each report wakes the
//! uploader through its `Notify`, whose permit survives until the uploader next waits. Elsewhere, or for a
//! directory that cannot be watched (the inotify limits), [`LogWatch::complete`] is false and the uploader
//! polls the logs instead (see `pace.rs`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;

/// Inotify events read at once.
#[cfg(target_os = "linux")]
const EVENT_BUFFER: usize = 16 * 1024;

/// The watches of one uploader.
pub(crate) struct LogWatch {
    #[cfg(target_os = "linux")]
    watches: Option<inotify::Watches>,
    #[cfg(target_os = "linux")]
    watched: HashMap<PathBuf, inotify::WatchDescriptor>,
    /// Directories that could not be watched (polled instead).
    unwatched: HashSet<PathBuf>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for LogWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWatch").field("unwatched", &self.unwatched.len()).finish_non_exhaustive()
    }
}

/// Whether an event names a file whose change means new data to look at.
#[cfg(target_os = "linux")]
fn relevant(mask: inotify::EventMask, name: Option<&std::ffi::OsStr>) -> bool {
    use inotify::EventMask;
    if mask.intersects(EventMask::Q_OVERFLOW | EventMask::CREATE | EventMask::MOVED_TO) {
        return true;
    }
    // a write to a segment file; not IN_IGNORED (a watch removed) nor other files (checkpoints, indexes)
    mask.contains(EventMask::MODIFY) && name.is_some_and(|n| Path::new(n).extension().is_some_and(|e| e == "log"))
}

impl LogWatch {
    /// Starts watching (nothing yet: [`LogWatch::sync`] adds the directories). Must run on a tokio runtime.
    pub(crate) fn start(wake: Arc<Notify>) -> LogWatch {
        #[cfg(target_os = "linux")]
        {
            match Self::start_inotify(wake) {
                Ok((watches, task)) => {
                    return LogWatch {
                        watches: Some(watches),
                        watched: HashMap::new(),
                        unwatched: HashSet::new(),
                        task: Some(task),
                    }
                }
                Err(e) => tracing::warn!(
                    "fast tier: cannot watch the logs (inotify: {e}); the uploader polls them every \
                     wal.upload.interval.ms instead"
                ),
            }
            LogWatch { watches: None, watched: HashMap::new(), unwatched: HashSet::new(), task: None }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = wake;
            LogWatch { unwatched: HashSet::new(), task: None }
        }
    }

    #[cfg(target_os = "linux")]
    fn start_inotify(wake: Arc<Notify>) -> std::io::Result<(inotify::Watches, tokio::task::JoinHandle<()>)> {
        use futures_util::StreamExt;
        let ino = inotify::Inotify::init()?;
        let mut stream = ino.into_event_stream(vec![0u8; EVENT_BUFFER])?;
        let watches = stream.watches();
        let task = tokio::spawn(async move {
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(ev) => {
                        if relevant(ev.mask, ev.name.as_deref()) {
                            wake.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::warn!("fast tier: the log watch failed ({e}); the uploader polls the logs");
                        wake.notify_one();
                        break;
                    }
                }
            }
        });
        Ok((watches, task))
    }

    /// Watches exactly `dirs` from now on. Returns true if a directory was added: the caller looks at the
    /// logs once more, since a write between its last look and the new watch reported nothing.
    pub(crate) fn sync(&mut self, dirs: &HashSet<PathBuf>) -> bool {
        self.unwatched.retain(|d| dirs.contains(d));
        #[cfg(target_os = "linux")]
        {
            let alive = self.task.as_ref().is_some_and(|t| !t.is_finished());
            let Some(watches) = self.watches.as_mut().filter(|_| alive) else {
                let before = self.unwatched.len();
                self.unwatched.extend(dirs.iter().cloned());
                return self.unwatched.len() != before;
            };
            let gone: Vec<PathBuf> = self.watched.keys().filter(|d| !dirs.contains(*d)).cloned().collect();
            for d in gone {
                if let Some(wd) = self.watched.remove(&d) {
                    // fails when the directory was deleted (the kernel dropped the watch): nothing to do
                    let _ = watches.remove(wd);
                }
            }
            let mut added = false;
            for d in dirs {
                if self.watched.contains_key(d) || self.unwatched.contains(d) {
                    continue;
                }
                use inotify::WatchMask;
                match watches.add(d, WatchMask::MODIFY | WatchMask::CREATE | WatchMask::MOVED_TO) {
                    Ok(wd) => {
                        self.watched.insert(d.clone(), wd);
                    }
                    Err(e) => {
                        tracing::warn!(
                            "fast tier: cannot watch dir={} ({e}); its partition is polled every \
                             wal.upload.interval.ms (raise fs.inotify.max_user_watches)",
                            d.display()
                        );
                        self.unwatched.insert(d.clone());
                    }
                }
                added = true;
            }
            added
        }
        #[cfg(not(target_os = "linux"))]
        {
            let before = self.unwatched.len();
            self.unwatched.extend(dirs.iter().cloned());
            self.unwatched.len() != before
        }
    }

    /// Whether every directory of the last [`LogWatch::sync`] is watched.
    pub(crate) fn complete(&self) -> bool {
        self.unwatched.is_empty() && self.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for LogWatch {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_to_a_watched_log_wakes_and_other_files_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("orders-0");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("00000000000000000000.log"), b"").unwrap();
        std::fs::write(dir.join("leader-epoch-checkpoint"), b"").unwrap();
        let wake = Arc::new(Notify::new());
        let mut w = LogWatch::start(wake.clone());
        assert!(w.sync(&HashSet::from([dir.clone()])), "a new directory asks for one more look");
        assert!(w.complete());
        assert!(!w.sync(&HashSet::from([dir.clone()])), "nothing new");

        // another file of the directory changes: no wake-up
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("leader-epoch-checkpoint"))
            .unwrap()
            .write_all(b"0\n")
            .unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), wake.notified()).await.is_err());

        let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("00000000000000000000.log")).unwrap();
        f.write_all(b"batch").unwrap();
        tokio::time::timeout(Duration::from_secs(5), wake.notified()).await.expect("a write to the log wakes");

        // no longer watched: no wake-up
        w.sync(&HashSet::new());
        f.write_all(b"more").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), wake.notified()).await.is_err());
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_watched_makes_the_watch_incomplete() {
        let wake = Arc::new(Notify::new());
        let mut w = LogWatch::start(wake);
        let missing = PathBuf::from("/nonexistent/fasttier/orders-0");
        assert!(w.sync(&HashSet::from([missing.clone()])));
        assert!(!w.complete(), "polled instead");
        w.sync(&HashSet::new());
        assert!(w.complete(), "the unwatchable directory is no longer wanted");
    }
}
