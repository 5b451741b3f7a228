//! A broker's local partition directory (`<log.dir>/<topic>-<partition>/`), read without the broker:
//! its name, its `partition.metadata`, and the record batches of its segment files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fasttier_core::error::{Error, Result};
use fasttier_core::format::batch::{Batches, Stop};

/// Bytes read from a segment file at a time (grown for a larger batch).
const READ_WINDOW: usize = 8 << 20;

/// Topic and partition from a partition directory's name, `<topic>-<partition>`. Kafka's renamed
/// directories (`…-delete`, `…-future`, `…-stray`) do not parse.
pub fn parse_dir_name(name: &str) -> Option<(String, i32)> {
    let (topic, p) = name.rsplit_once('-')?;
    let partition: i32 = p.parse().ok()?;
    (partition >= 0 && partition.to_string() == p && !topic.is_empty()).then(|| (topic.to_string(), partition))
}

/// The topic id (base64url, as `Uuid.toString()`) from the directory's `partition.metadata` (lines
/// `version: 0` and `topic_id: <id>`).
pub fn read_topic_id(dir: &Path) -> Result<String> {
    let path = dir.join("partition.metadata");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(path.display(), e))?;
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "topic_id")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::corrupt(path.display().to_string(), "no topic_id line"))
}

/// One complete batch of the local log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalBatch {
    /// Index into [`LocalLog::segments`].
    pub segment: usize,
    /// Position in the segment file.
    pub position: u64,
    pub size: u32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub leader_epoch: i32,
}

/// The batches of a partition directory's segment files, in offset order.
#[derive(Debug)]
pub struct LocalLog {
    pub dir: PathBuf,
    /// (base offset, path) of every live `.log` segment, ascending.
    pub segments: Vec<(i64, PathBuf)>,
    files: Vec<File>,
    /// Every complete batch (CRC-32C checked).
    pub batches: Vec<LocalBatch>,
    /// What ended the active (last) segment's data early, if anything did: a batch still being written
    /// (incomplete, zero fill of a preallocated file, or a CRC that does not match yet).
    pub tail: Option<String>,
}

impl LocalLog {
    /// Reads the batch headers of every segment (`<20 digits>.log`) of `dir`, in offset order. A batch
    /// that is incomplete or invalid ends the active segment's data (it may be half written); anywhere
    /// else it is an error naming the file and position, as are batches whose offsets go backwards.
    pub fn open(dir: &Path) -> Result<LocalLog> {
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir.display(), e))? {
            let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
            let name = entry.file_name();
            let Some(digits) = name.to_str().and_then(|n| n.strip_suffix(".log")) else { continue };
            if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(base) = digits.parse::<i64>() {
                    segments.push((base, entry.path()));
                }
            }
        }
        segments.sort();
        let mut log = LocalLog { dir: dir.to_path_buf(), segments, files: Vec::new(), batches: Vec::new(), tail: None };
        for i in 0..log.segments.len() {
            let path = log.segments[i].1.clone();
            let file = File::open(&path).map_err(|e| Error::io(path.display(), e))?;
            let active = i + 1 == log.segments.len();
            log.tail = log.scan(i, &path, &file, active)?.map(|why| format!("{}: {why}", path.display()));
            log.files.push(file);
        }
        Ok(log)
    }

    /// Appends the batches of segment `index`; returns what ended an active segment early.
    fn scan(&mut self, index: usize, path: &Path, file: &File, active: bool) -> Result<Option<String>> {
        let len = file.metadata().map_err(|e| Error::io(path.display(), e))?.len();
        let (mut pos, mut window) = (0u64, READ_WINDOW);
        let mut buf = Vec::new();
        loop {
            let n = (len - pos).min(window as u64) as usize;
            if n == 0 {
                return Ok(None);
            }
            buf.resize(n, 0);
            file.read_exact_at(&mut buf, pos).map_err(|e| Error::io(path.display(), e))?;
            let mut it = Batches::new(&buf, pos);
            let (mut bad, mut at) = (None, pos);
            for b in it.by_ref() {
                let b = match b {
                    Ok(b) => b,
                    Err(e) => {
                        bad = Some(e.to_string());
                        break;
                    }
                };
                let h = b.header();
                if let Some(prev) = self.batches.last().filter(|p| h.base_offset() <= p.last_offset) {
                    return Err(Error::corrupt(
                        path.display().to_string(),
                        format!(
                            "batch base_offset={} at position={at} after last_offset={}",
                            h.base_offset(),
                            prev.last_offset
                        ),
                    ));
                }
                self.batches.push(LocalBatch {
                    segment: index,
                    position: at,
                    size: b.bytes().len() as u32,
                    base_offset: h.base_offset(),
                    last_offset: h.last_offset(),
                    leader_epoch: h.partition_leader_epoch(),
                });
                at += b.bytes().len() as u64;
            }
            let consumed = it.consumed() as u64;
            let ended = match (it.stop(), bad) {
                (Some(Stop::End), _) => None,
                // Cut by the window, and the file holds the rest: read on from the batch.
                (Some(Stop::Incomplete { needed, .. }), _) if pos + consumed + needed as u64 <= len => None,
                (Some(Stop::Incomplete { position, .. }), _) => {
                    Some(format!("incomplete batch at position={position}"))
                }
                (Some(Stop::ZeroFill { position }), _) => Some(format!("zero fill from position={position}")),
                (_, Some(e)) => Some(e),
                (stop, None) => Some(format!("{stop:?}")),
            };
            if let Some(why) = ended {
                if active {
                    return Ok(Some(why));
                }
                return Err(Error::corrupt(path.display().to_string(), format!("rolled segment: {why}")));
            }
            if let Some(Stop::Incomplete { needed, .. }) = it.stop() {
                window = window.max(needed);
            }
            pos += consumed;
        }
    }

    /// Base offset of the first batch.
    pub fn start_offset(&self) -> Option<i64> {
        self.batches.first().map(|b| b.base_offset)
    }

    /// The offset after the last complete batch (Kafka's log end offset, as far as it is written).
    pub fn end_offset(&self) -> Option<i64> {
        self.batches.last().map(|b| b.last_offset + 1)
    }

    /// The bytes of batch `i`, as the file holds them now.
    pub fn read(&self, i: usize) -> Result<Vec<u8>> {
        let b = self.batches[i];
        let mut buf = vec![0u8; b.size as usize];
        let path = &self.segments[b.segment].1;
        self.files[b.segment].read_exact_at(&mut buf, b.position).map_err(|e| Error::io(path.display(), e))?;
        Ok(buf)
    }

    /// `file:position` of batch `i`, for messages.
    pub fn describe(&self, i: usize) -> String {
        let b = self.batches[i];
        format!("{}:{}", self.segments[b.segment].1.display(), b.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names() {
        assert_eq!(parse_dir_name("orders-3"), Some(("orders".into(), 3)));
        assert_eq!(parse_dir_name("my-topic-12"), Some(("my-topic".into(), 12)));
        assert_eq!(parse_dir_name("orders-3.abc-delete"), None);
        assert_eq!(parse_dir_name("orders-3.abc-future"), None);
        assert_eq!(parse_dir_name("orders-03"), None);
        assert_eq!(parse_dir_name("-3"), None);
        assert_eq!(parse_dir_name("orders"), None);
    }
}
