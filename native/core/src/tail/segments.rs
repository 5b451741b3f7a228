//! Segment files of a Kafka partition directory: names, listing, positioned reads and the offset index.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::batch::{BatchHeader, HEADER_SIZE};

/// `<20-digit zero-padded base offset>.log`.
pub(crate) fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// Path of the segment with `base_offset` in `dir`.
pub(crate) fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(log_file_name(base_offset))
}

/// The base offset of a live segment file name (`00000000000000000123.log`); `None` for anything else,
/// including `.log.deleted`, `.log.cleaned` and `.log.swap`.
pub(crate) fn parse_log_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Base offsets of the live segments in `dir`, ascending. `NotFound` if the directory is gone.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_log_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the number of bytes read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The 61 header bytes at `position`, or `None` if the file ends before them.
pub(crate) fn read_header(file: &File, position: u64) -> io::Result<Option<[u8; HEADER_SIZE]>> {
    let mut h = [0u8; HEADER_SIZE];
    Ok((read_full_at(file, &mut h, position)? == HEADER_SIZE).then_some(h))
}

/// A file position in the segment `base_offset` from which a forward scan reaches the batch holding
/// `target`, found with the segment's offset index (`<base>.index`: 8-byte entries of relative offset and
/// position, the position being the start of a batch whose last offset is the entry's offset). Returns 0
/// when there is no usable index. The index is only a hint: the batch header at the returned position is
/// checked (valid header, base offset ≤ `target`), and an active segment's preallocated zero tail or a
/// torn entry can at worst make the scan start earlier.
pub(crate) fn index_position(dir: &Path, base_offset: i64, target: i64, log: &File) -> u64 {
    lookup(dir, base_offset, target, log).unwrap_or(0)
}

fn lookup(dir: &Path, base_offset: i64, target: i64, log: &File) -> Option<u64> {
    let relative = i32::try_from(target.checked_sub(base_offset)?).ok()?;
    if relative <= 0 {
        return None;
    }
    let index = File::open(dir.join(format!("{base_offset:020}.index"))).ok()?;
    let entries = index.metadata().ok()?.len() / 8;
    let entry = |k: u64| -> Option<(i32, u32)> {
        let mut e = [0u8; 8];
        (read_full_at(&index, &mut e, k * 8).ok()? == 8)
            .then(|| (i32::from_be_bytes([e[0], e[1], e[2], e[3]]), u32::from_be_bytes([e[4], e[5], e[6], e[7]])))
    };
    // Entries are strictly increasing in offset, then (preallocated tail) all zero; entry 0 may legitimately
    // be (0, 0). The predicate "written and offset <= relative" holds for a prefix of the slots.
    let holds = |k: u64| -> Option<bool> {
        let (off, pos) = entry(k)?;
        Some((k == 0 || (off, pos) != (0, 0)) && off <= relative)
    };
    let (mut lo, mut hi) = (0u64, entries);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if holds(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    // `lo` slots satisfy the predicate; the last of them is the best start.
    let (_, position) = entry(lo.checked_sub(1)?)?;
    let position = u64::from(position);
    let header = read_header(log, position).ok()??;
    match BatchHeader::parse(&header, position)? {
        Ok(h) if h.base_offset() <= target && h.base_offset() >= base_offset => Some(position),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(log_file_name(123), "00000000000000000123.log");
        assert_eq!(parse_log_file_name("00000000000000000123.log"), Some(123));
        assert_eq!(parse_log_file_name("00000000000000000123.log.deleted"), None);
        assert_eq!(parse_log_file_name("00000000000000000123.log.swap"), None);
        assert_eq!(parse_log_file_name("00000000000000000123.index"), None);
        assert_eq!(parse_log_file_name("0000000000000000123.log"), None);
        assert_eq!(parse_log_file_name("0000000000000000012x.log"), None);
        assert_eq!(parse_log_file_name("99999999999999999999.log"), None); // beyond i64
    }
}
