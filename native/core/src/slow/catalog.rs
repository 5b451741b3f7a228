//! Reading one partition's slow tier back (catalog path: CLI, verification, tests).
//!
//! * [`slow_segments`] — the partition's copied segments (one LIST of its directory, one GET per
//!   manifest), complete or not;
//! * [`topic_ids`] — the topic ids a topic name has directories for;
//! * [`read_index`] — one of a complete segment's stored indexes, verified;
//! * [`SegmentBatches`] — a complete segment's record batches in order, read chunk by chunk with ranged
//!   GETs, each chunk checked against its CRC-32C in the manifest before a byte of it is used.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::format::batch::{frame, Frame, RecordBatch, DEFAULT_MAX_BATCH_BYTES};
use crate::format::crc32c;
use crate::format::keys::{parse_segment_file_name, partition_prefix, segments_root, SegmentRef};
use crate::format::manifest::{IndexKind, SegmentManifest};
use crate::store::ObjectStore;
use crate::wal::catalog::{run_bounded, READ_CONCURRENCY};

/// One copy attempt of a segment found in the partition's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowSegment {
    pub segment: SegmentRef,
    /// Key of the manifest (present only if the copy is complete).
    pub manifest_key: String,
    /// Suffixes of the objects present (`indexes`, `log`, `manifest`).
    pub objects: Vec<String>,
    /// The verified manifest; `None` for an incomplete copy (no manifest), which is never served.
    pub manifest: Option<Arc<SegmentManifest>>,
}

impl SlowSegment {
    /// The copy is complete (its manifest exists and verified).
    pub fn complete(&self) -> bool {
        self.manifest.is_some()
    }

    pub fn start_offset(&self) -> i64 {
        self.segment.start_offset
    }

    /// Last offset of the segment, from the manifest.
    pub fn end_offset(&self) -> Option<i64> {
        self.manifest.as_ref().map(|m| m.end_offset)
    }
}

/// The copied segments of `topic`/`topic_id`/`partition` under the slow tier's `slow_prefix`, sorted by
/// (start offset, segment id): one LIST of the partition's directory, then every manifest read and
/// verified (at most [`READ_CONCURRENCY`] GETs at a time). A manifest that fails verification, or describes
/// another segment, is [`Error::Corrupt`] naming its key; one deleted after the LIST makes its segment
/// incomplete.
pub async fn slow_segments(
    store: &Arc<dyn ObjectStore>,
    slow_prefix: &str,
    topic: &str,
    topic_id: &str,
    partition: i32,
) -> Result<Vec<SlowSegment>> {
    let dir = partition_prefix(slow_prefix, topic, topic_id, partition);
    let mut found: BTreeMap<(i64, String), Vec<String>> = BTreeMap::new();
    for m in store.list(&dir).await? {
        let Some(name) = m.key.strip_prefix(dir.as_str()) else { continue };
        let Some((start, segment_id, suffix)) = parse_segment_file_name(name) else { continue };
        found.entry((start, segment_id.to_string())).or_default().push(suffix.to_string());
    }
    let mut segments = Vec::with_capacity(found.len());
    for ((start, segment_id), mut objects) in found {
        objects.sort();
        let segment = SegmentRef::new(topic, topic_id, partition, start, &segment_id)?;
        let manifest_key = segment.manifest_key(slow_prefix);
        segments.push(SlowSegment { segment, manifest_key, objects, manifest: None });
    }
    let manifests = run_bounded(
        segments.iter().map(|s| {
            let (store, s) = (store.clone(), s.clone());
            async move {
                if !s.objects.iter().any(|o| o == "manifest") {
                    return Ok(None);
                }
                let data = match store.get(&s.manifest_key).await {
                    Ok(d) => d,
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(e),
                };
                let m = SegmentManifest::decode(&s.manifest_key, &data)?;
                let seg = &s.segment;
                if m.topic_id != seg.topic_id
                    || m.partition != seg.partition
                    || m.segment_id != seg.segment_id
                    || m.start_offset != seg.start_offset
                {
                    return Err(Error::corrupt(&s.manifest_key, "manifest describes another segment"));
                }
                Ok(Some(Arc::new(m)))
            }
        }),
        READ_CONCURRENCY,
    )
    .await?;
    for (s, m) in segments.iter_mut().zip(manifests) {
        s.manifest = m;
    }
    Ok(segments)
}

/// The topic ids `topic` has directories for under the slow tier's `slow_prefix` (one per incarnation of
/// the topic name), sorted. Lists every object of the topic.
pub async fn topic_ids(store: &Arc<dyn ObjectStore>, slow_prefix: &str, topic: &str) -> Result<Vec<String>> {
    let base = format!("{}{topic}-", segments_root(slow_prefix));
    let mut ids: Vec<String> = store
        .list(&base)
        .await?
        .iter()
        .filter_map(|m| m.key.strip_prefix(base.as_str())?.split_once('/').map(|(id, _)| id.to_string()))
        // Another topic whose name starts with `<topic>-` has a longer directory name.
        .filter(|id| id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The `kind` index of a complete segment, or `None` if the segment has none: one ranged GET of the
/// `.indexes` object, checked for its length and its CRC-32C from the manifest. A mismatch is
/// [`Error::Corrupt`] naming the `.indexes` key.
pub async fn read_index(
    store: &Arc<dyn ObjectStore>,
    manifest: &SegmentManifest,
    kind: IndexKind,
) -> Result<Option<Bytes>> {
    let Some(entry) = manifest.index(kind) else { return Ok(None) };
    if entry.length == 0 {
        return Ok(Some(Bytes::new()));
    }
    let key = &manifest.indexes.key;
    let data = store.get_range(key, entry.position..entry.position + entry.length).await?;
    let actual = crc32c(&data);
    if data.len() as u64 != entry.length || actual != entry.crc32c {
        return Err(Error::corrupt(
            key,
            format!(
                "index={kind:?} range={}..{} len={} crc32c expected={:08x} actual={actual:08x}",
                entry.position,
                entry.position + entry.length,
                data.len(),
                entry.crc32c
            ),
        ));
    }
    Ok(Some(data))
}

/// One record batch of a copied segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowBatch {
    /// Position of the batch in the segment.
    pub position: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub leader_epoch: i32,
    /// The batch, byte-exact.
    pub bytes: Bytes,
}

/// Reads a complete segment's batches in order, one verified chunk at a time: each chunk is one ranged GET
/// of the `.log` object checked for its length and its CRC-32C from the manifest, and every batch's own
/// CRC-32C is checked too. Memory: one chunk plus one batch. A failure is [`Error::Corrupt`] naming the
/// `.log` key (chunk, or batch position).
#[derive(Debug)]
pub struct SegmentBatches {
    store: Arc<dyn ObjectStore>,
    manifest: Arc<SegmentManifest>,
    next_chunk: u64,
    /// Verified bytes not yet returned, starting at `position`.
    buf: BytesMut,
    position: u64,
}

impl SegmentBatches {
    pub fn new(store: Arc<dyn ObjectStore>, manifest: Arc<SegmentManifest>) -> Self {
        SegmentBatches { store, manifest, next_chunk: 0, buf: BytesMut::new(), position: 0 }
    }

    /// The next batch; `None` after the last.
    pub async fn next_batch(&mut self) -> Result<Option<SlowBatch>> {
        let key = self.manifest.log.key.clone();
        loop {
            match frame(&self.buf, self.position, DEFAULT_MAX_BATCH_BYTES) {
                Ok(Frame::Complete { size }) => {
                    let bytes = self.buf.split_to(size).freeze();
                    let position = self.position;
                    self.position += size as u64;
                    let batch = match RecordBatch::parse(&bytes, position) {
                        Some(Ok(b)) => b,
                        Some(Err(e)) => return Err(e.into_error(key)),
                        None => return Err(Error::corrupt(key, format!("short record batch at position={position}"))),
                    };
                    batch.verify_crc(position).map_err(|e| e.into_error(key.as_str()))?;
                    let h = batch.header();
                    let (base_offset, last_offset, leader_epoch) =
                        (h.base_offset(), h.last_offset(), h.partition_leader_epoch());
                    return Ok(Some(SlowBatch { position, base_offset, last_offset, leader_epoch, bytes }));
                }
                Ok(Frame::ZeroFill) => {
                    return Err(Error::corrupt(
                        key,
                        format!("zero fill at position={} in a copied segment", self.position),
                    ))
                }
                Ok(Frame::Incomplete { .. }) => {}
                Err(e) => return Err(e.into_error(key)),
            }
            let chunks = self.manifest.log.chunk_crc32c.len() as u64;
            if self.next_chunk >= chunks {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Error::corrupt(
                    key,
                    format!(
                        "segment ends inside a record batch at position={} size={}",
                        self.position, self.manifest.log.size
                    ),
                ));
            }
            let chunk = self.chunk(self.next_chunk).await?;
            self.buf.extend_from_slice(&chunk);
            self.next_chunk += 1;
        }
    }

    /// Chunk `i` of the `.log` object, verified.
    async fn chunk(&self, i: u64) -> Result<Bytes> {
        let log = &self.manifest.log;
        let start = i * log.chunk_bytes;
        let end = (start + log.chunk_bytes).min(log.size);
        let data = self.store.get_range(&log.key, start..end).await?;
        let actual = crc32c(&data);
        let expected = log.chunk_crc32c.get(i as usize).copied();
        if data.len() as u64 != end - start || Some(actual) != expected {
            return Err(Error::corrupt(
                &log.key,
                format!(
                    "chunk={i} range={start}..{end} len={} crc32c expected={:08x} actual={actual:08x}",
                    data.len(),
                    expected.unwrap_or(0)
                ),
            ));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::testing::batch;
    use crate::format::manifest::{IndexesObject, LogObject};
    use crate::store::memory::MemoryStore;
    use crate::store::PutOptions;

    const TOPIC_ID: &str = "AAAAAAAAAAAAAAAAAAAAAQ";

    /// Stores a segment of batches `start..=end` (one record each, `big` bytes per record for some) with a
    /// manifest, as the slow tier would; `chunk` is the chunk size.
    async fn put_segment(store: &Arc<dyn ObjectStore>, start: i64, end: i64, id: &str, chunk: u64) -> Vec<u8> {
        let log: Vec<u8> = (start..=end).flat_map(|o| batch(o, 3, 1, &vec![o as u8; (o % 7) as usize * 40])).collect();
        let seg = SegmentRef::new("orders", TOPIC_ID, 2, start, id).unwrap();
        store.put(&seg.log_key("p/"), Bytes::from(log.clone()), PutOptions::default()).await.unwrap();
        let m = SegmentManifest {
            format: SegmentManifest::FORMAT.into(),
            version: 1,
            topic: "orders".into(),
            topic_id: TOPIC_ID.into(),
            partition: 2,
            segment_id: id.into(),
            start_offset: start,
            end_offset: end,
            max_timestamp_ms: 0,
            broker_id: 1,
            leader_epochs: vec![(3, start)],
            log: LogObject {
                key: seg.log_key("p/"),
                size: log.len() as u64,
                chunk_bytes: chunk,
                chunk_crc32c: crate::format::chunk_crcs(&log, chunk as usize),
            },
            indexes: IndexesObject { key: seg.indexes_key("p/"), size: 0, entries: vec![] },
            created_unix_ms: 0,
            writer: "test".into(),
        };
        store.put(&seg.manifest_key("p/"), Bytes::from(m.encode()), PutOptions::default()).await.unwrap();
        log
    }

    async fn read_all(store: &Arc<dyn ObjectStore>, s: &SlowSegment) -> Result<Vec<SlowBatch>> {
        let mut r = SegmentBatches::new(store.clone(), s.manifest.clone().unwrap());
        let mut out = Vec::new();
        while let Some(b) = r.next_batch().await? {
            out.push(b);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn segments_are_listed_and_read_back_verified() {
        let mem = Arc::new(MemoryStore::new());
        let store: Arc<dyn ObjectStore> = mem.clone();
        let log = put_segment(&store, 100, 149, "AAAAAAAAAAAAAAAAAAAAAg", 100).await;
        put_segment(&store, 0, 99, "AAAAAAAAAAAAAAAAAAAAAw", 4096).await;
        // An incomplete copy (no manifest), another partition and another topic with a longer name.
        let partial = SegmentRef::new("orders", TOPIC_ID, 2, 150, "AAAAAAAAAAAAAAAAAAAABA").unwrap();
        store.put(&partial.log_key("p/"), Bytes::from_static(b"x"), PutOptions::default()).await.unwrap();
        let other = SegmentRef::new("orders", TOPIC_ID, 3, 0, "AAAAAAAAAAAAAAAAAAAABA").unwrap();
        store.put(&other.log_key("p/"), Bytes::from_static(b"x"), PutOptions::default()).await.unwrap();
        let longer = SegmentRef::new("orders-x", "BAAAAAAAAAAAAAAAAAAAAQ", 2, 0, "AAAAAAAAAAAAAAAAAAAABA").unwrap();
        store.put(&longer.log_key("p/"), Bytes::from_static(b"x"), PutOptions::default()).await.unwrap();

        assert_eq!(topic_ids(&store, "p/", "orders").await.unwrap(), vec![TOPIC_ID.to_string()]);
        let segs = slow_segments(&store, "p/", "orders", TOPIC_ID, 2).await.unwrap();
        let got: Vec<(i64, Option<i64>, bool, usize)> =
            segs.iter().map(|s| (s.start_offset(), s.end_offset(), s.complete(), s.objects.len())).collect();
        assert_eq!(got, vec![(0, Some(99), true, 2), (100, Some(149), true, 2), (150, None, false, 1)]);
        assert_eq!(segs[1].manifest_key, segs[1].segment.manifest_key("p/"));

        // Chunks of 100 bytes cut through batches; the batches come back whole and in order.
        let batches = read_all(&store, &segs[1]).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.base_offset).collect::<Vec<_>>(), (100..150).collect::<Vec<_>>());
        assert_eq!(batches.iter().flat_map(|b| b.bytes.to_vec()).collect::<Vec<u8>>(), log);
        assert!(batches.iter().all(|b| b.leader_epoch == 3 && b.last_offset == b.base_offset));
        assert_eq!(batches[1].position, batches[0].bytes.len() as u64);

        // A corrupted byte fails its chunk, naming the key; nothing of that chunk is returned.
        let key = segs[1].manifest.as_ref().unwrap().log.key.clone();
        let mut raw = log.clone();
        raw[1234] ^= 1;
        mem.overwrite_raw(&key, Bytes::from(raw));
        let e = read_all(&store, &segs[1]).await.unwrap_err().to_string();
        assert!(e.contains(&key) && e.contains("chunk=12"), "{e}");
        // A truncated object too.
        mem.overwrite_raw(&key, Bytes::from(log[..log.len() - 5].to_vec()));
        let e = read_all(&store, &segs[1]).await.unwrap_err().to_string();
        assert!(e.contains(&key), "{e}");

        // A manifest of another segment stored under this one's key is corrupt.
        let m0 = store.get(&segs[0].manifest_key).await.unwrap();
        mem.overwrite_raw(&segs[1].manifest_key, m0);
        let e = slow_segments(&store, "p/", "orders", TOPIC_ID, 2).await.unwrap_err().to_string();
        assert!(e.contains(&segs[1].manifest_key) && e.contains("another segment"), "{e}");
    }
}
