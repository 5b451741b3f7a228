//! Handle registries: Java holds plain `long` ids, never raw pointers. A stale, closed or forged id is
//! an error (an exception in Java), never a use-after-free in the broker's process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fasttier_core::engine::{CopyOp, Engine};
use fasttier_core::error::Error;
use fasttier_core::read::SegmentStream;

/// An open stream and the engine it reads through.
pub struct StreamEntry {
    pub engine_id: i64,
    pub engine: Arc<Engine>,
    pub stream: Mutex<SegmentStream>,
}

/// A running copy and the engine it runs on.
pub struct OpEntry {
    pub engine_id: i64,
    pub engine: Arc<Engine>,
    pub op: Mutex<Option<CopyOp>>,
}

#[derive(Default)]
struct Tables {
    engines: HashMap<i64, Arc<Engine>>,
    streams: HashMap<i64, Arc<StreamEntry>>,
    ops: HashMap<i64, Arc<OpEntry>>,
}

static TABLES: Mutex<Option<Tables>> = Mutex::new(None);
static NEXT_ID: AtomicI64 = AtomicI64::new(1);

fn tables() -> MutexGuard<'static, Option<Tables>> {
    TABLES.lock().unwrap_or_else(|p| p.into_inner())
}

fn with<T>(f: impl FnOnce(&mut Tables) -> T) -> T {
    let mut g = tables();
    f(g.get_or_insert_with(Tables::default))
}

fn next_id() -> i64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn stale(kind: &str, id: i64) -> Error {
    Error::Internal(format!("{kind} handle={id} is closed or unknown"))
}

pub fn add_engine(engine: Engine) -> i64 {
    let id = next_id();
    with(|t| t.engines.insert(id, Arc::new(engine)));
    id
}

pub fn engine(id: i64) -> Result<Arc<Engine>, Error> {
    with(|t| t.engines.get(&id).cloned()).ok_or_else(|| stale("engine", id))
}

/// Removes the engine and everything opened through it; returns the copies still running so the caller
/// can cancel them outside the table lock.
pub fn remove_engine(id: i64) -> (Option<Arc<Engine>>, Vec<Arc<OpEntry>>) {
    with(|t| {
        let engine = t.engines.remove(&id);
        t.streams.retain(|_, s| s.engine_id != id);
        let ops: Vec<i64> = t.ops.iter().filter(|(_, o)| o.engine_id == id).map(|(k, _)| *k).collect();
        let ops = ops.into_iter().filter_map(|k| t.ops.remove(&k)).collect();
        (engine, ops)
    })
}

pub fn add_stream(engine_id: i64, engine: Arc<Engine>, stream: SegmentStream) -> i64 {
    let id = next_id();
    with(|t| t.streams.insert(id, Arc::new(StreamEntry { engine_id, engine, stream: Mutex::new(stream) })));
    id
}

pub fn stream(id: i64) -> Result<Arc<StreamEntry>, Error> {
    with(|t| t.streams.get(&id).cloned()).ok_or_else(|| stale("stream", id))
}

pub fn remove_stream(id: i64) -> Option<Arc<StreamEntry>> {
    with(|t| t.streams.remove(&id))
}

pub fn add_op(engine_id: i64, engine: Arc<Engine>, op: CopyOp) -> i64 {
    let id = next_id();
    with(|t| t.ops.insert(id, Arc::new(OpEntry { engine_id, engine, op: Mutex::new(Some(op)) })));
    id
}

pub fn op(id: i64) -> Result<Arc<OpEntry>, Error> {
    with(|t| t.ops.get(&id).cloned()).ok_or_else(|| stale("operation", id))
}

pub fn remove_op(id: i64) -> Option<Arc<OpEntry>> {
    with(|t| t.ops.remove(&id))
}
