//! What the slow tier holds of each partition: the highest end offset of a copied segment.
//!
//! Fed by this broker's own segment copies (in process, free) and, for partitions another broker copies
//! now (leadership moved), by listing the partition's slow-tier directory ([`slow_end_offset`]); the fast
//! tier's cleanup deletes a WAL object only when every partition range in it is covered.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{parse_topic_id, Tp};
use crate::error::Result;
use crate::format::keys::{parse_segment_file_name, partition_prefix};
use crate::format::manifest::SegmentManifest;
use crate::store::ObjectStore;

/// Highest slow-tier end offset known per partition. Only ever grows (a deleted segment lies below the
/// log start, which is below anything the fast tier still needs).
#[derive(Debug, Default)]
pub struct Coverage {
    ends: Mutex<HashMap<Tp, i64>>,
}

impl Coverage {
    /// Records that the slow tier holds `tp` up to `end_offset`.
    pub fn record(&self, tp: Tp, end_offset: i64) {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let e = ends.entry(tp).or_insert(end_offset);
        *e = (*e).max(end_offset);
    }

    /// Records a completed copy.
    pub fn record_manifest(&self, m: &SegmentManifest) {
        if let Ok(topic_id) = parse_topic_id(&m.topic_id) {
            self.record(Tp { topic_id, partition: m.partition }, m.end_offset);
        }
    }

    /// The highest end offset known for `tp`.
    pub fn end_offset(&self, tp: &Tp) -> Option<i64> {
        self.ends.lock().unwrap_or_else(|p| p.into_inner()).get(tp).copied()
    }

    /// Forgets `tp` (its topic is gone).
    pub fn forget(&self, tp: &Tp) {
        self.ends.lock().unwrap_or_else(|p| p.into_inner()).remove(tp);
    }
}

/// Lists `topic`/`tp`'s slow-tier directory and returns the end offset of its highest complete segment (a
/// segment is complete once its manifest exists: the manifest is written last). `None` if there is none.
pub async fn slow_end_offset(store: &dyn ObjectStore, prefix: &str, topic: &str, tp: &Tp) -> Result<Option<i64>> {
    let id = crate::wal::format::topic_id_string(&tp.topic_id);
    let dir = partition_prefix(prefix, topic, &id, tp.partition);
    let mut manifests: Vec<(i64, String)> = store
        .list(&dir)
        .await?
        .into_iter()
        .filter_map(|o| {
            let name = o.key.rsplit('/').next()?.to_string();
            let (start, _, suffix) = parse_segment_file_name(&name)?;
            (suffix == "manifest").then_some((start, o.key))
        })
        .collect();
    manifests.sort();
    // The highest start offset has the highest end offset; read manifests from the top until one parses
    // (a corrupt one is skipped here: it is reported where it is read for serving).
    while let Some((_, key)) = manifests.pop() {
        match store.get(&key).await {
            Ok(bytes) => {
                if let Ok(m) = SegmentManifest::decode(&key, &bytes) {
                    return Ok(Some(m.end_offset));
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
