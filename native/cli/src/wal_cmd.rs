//! `fasttier wal list [--broker N] [--json]`: the fast tier's streams, or one broker's objects.
//!
//! JSON (one object):
//!
//! * without `--broker`: `{"streams": [{"broker_id", "objects", "bytes", "first_seq", "last_seq",
//!   "below_low_water", "holes", "head": {"incarnation", "next_seq", "low_water", "updated_unix_ms"} | null,
//!   "head_error"}]}`;
//! * with `--broker N`: `{"broker_id", "stream": {…as above…}, "objects": [{"seq", "key", "size",
//!   "created_unix_ms", "incarnation", "entries", "partitions", "error"}]}` (`stream` is null and `objects`
//!   empty if the broker has no stream).

use std::sync::Arc;

use fasttier_core::error::Result;
use fasttier_core::store::ObjectStore;
use fasttier_core::wal::catalog::{list_streams, stream_objects, ObjectInfo, StreamInfo};
use serde_json::{json, Value};

use crate::utc;

fn stream_json(s: &StreamInfo) -> Value {
    json!({
        "broker_id": s.broker_id,
        "objects": s.objects,
        "bytes": s.bytes,
        "first_seq": s.first_seq,
        "last_seq": s.last_seq,
        "below_low_water": s.below_low_water,
        "holes": s.holes,
        "head": s.head.as_ref().map(|h| json!({
            "incarnation": h.incarnation,
            "next_seq": h.next_seq,
            "low_water": h.low_water,
            "updated_unix_ms": h.updated_unix_ms,
        })),
        "head_error": s.head_error,
    })
}

fn object_json(o: &ObjectInfo) -> Value {
    let h = o.header.as_deref();
    json!({
        "seq": o.seq,
        "key": o.key,
        "size": o.size,
        "created_unix_ms": h.map(|h| h.stamp.created_unix_ms),
        "incarnation": h.map(|h| h.stamp.incarnation),
        "entries": h.map(|h| h.entries.len()),
        "partitions": h.map(|h| h.partitions().count()),
        "error": o.error,
    })
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn stream_line(s: &StreamInfo) -> String {
    let head = match (&s.head, &s.head_error) {
        (Some(h), _) => format!("incarnation={} next_seq={} low_water={}", h.incarnation, h.next_seq, h.low_water),
        (None, Some(e)) => format!("UNREADABLE HEAD: {e}"),
        (None, None) => "no head".into(),
    };
    let mut line = format!(
        "{:>8} {:>10} {:>10} {:>8} {:>14}  {head}",
        s.broker_id,
        opt(s.first_seq),
        opt(s.last_seq),
        s.objects,
        s.bytes
    );
    if s.below_low_water > 0 {
        line.push_str(&format!(" ({} below low water, being deleted)", s.below_low_water));
    }
    if s.holes > 0 {
        line.push_str(&format!(" ({} MISSING seqs inside the run)", s.holes));
    }
    line
}

const STREAM_HEADER: &str = "  broker  first_seq   last_seq  objects          bytes  head";

/// The output of `wal list` (text or JSON) for the fast tier's `store` and `prefix`.
pub async fn list(store: &Arc<dyn ObjectStore>, prefix: &str, broker: Option<i32>, as_json: bool) -> Result<String> {
    let Some(broker_id) = broker else {
        let streams = list_streams(store, prefix).await?;
        if as_json {
            return Ok(json!({ "streams": streams.iter().map(stream_json).collect::<Vec<_>>() }).to_string());
        }
        let mut out = vec![STREAM_HEADER.to_string()];
        out.extend(streams.iter().map(stream_line));
        out.push(format!("{} streams under {prefix}fasttier/v1/wal/", streams.len()));
        return Ok(out.join("\n"));
    };
    let found = stream_objects(store, prefix, broker_id).await?;
    if as_json {
        let (stream, objects) = match &found {
            Some((s, objs)) => (stream_json(s), objs.iter().map(object_json).collect::<Vec<_>>()),
            None => (Value::Null, Vec::new()),
        };
        return Ok(json!({ "broker_id": broker_id, "stream": stream, "objects": objects }).to_string());
    }
    let Some((stream, objects)) = found else {
        return Ok(format!("broker {broker_id} has no stream under {prefix}fasttier/v1/wal/"));
    };
    let mut out = vec![STREAM_HEADER.to_string(), stream_line(&stream), String::new()];
    out.push(format!(
        "{:>20} {:>12} {:<24} {:>18} {:>7} {:>10}",
        "seq", "size", "created", "incarnation", "entries", "partitions"
    ));
    for o in &objects {
        out.push(match (&o.header, &o.error) {
            (Some(h), _) => format!(
                "{:>20} {:>12} {:<24} {:>18} {:>7} {:>10}",
                o.seq,
                o.size,
                utc(h.stamp.created_unix_ms),
                h.stamp.incarnation,
                h.entries.len(),
                h.partitions().count()
            ),
            (None, e) => format!("{:>20} {:>12} UNREADABLE {}", o.seq, o.size, e.as_deref().unwrap_or("")),
        });
    }
    Ok(out.join("\n"))
}
