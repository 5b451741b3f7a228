//! [`FaultyStore`]: wraps any [`ObjectStore`] and injects failures, latency and corruption on demand.
//!
//! Everything is deterministic and can be switched at run time while other tasks use the store:
//!
//! * [`FaultyStore::fail_next`] / [`FaultyStore::fail_always`] — fail the next `n` calls (or every call)
//!   of one operation or of all operations with a chosen [`FaultKind`], before the call reaches the inner
//!   store; [`FaultyStore::fail_next_after_apply`] fails *after* the inner store applied the call (the
//!   indeterminate case: a put that happened although the caller saw an error);
//! * [`FaultyStore::set_outage`] — every call fails with a transient error until switched off;
//! * [`FaultyStore::set_latency`] — a delay added to every call (of one operation or all);
//! * [`FaultyStore::corrupt_reads_containing`] / [`FaultyStore::corrupt_reads_matching`] — flip one byte
//!   of the data `get`/`get_range` return for matching keys;
//! * [`FaultyStore::calls`] — per-operation call counters (every call is counted, failed or not).
//!
//! Rules are checked in the order they were added; the first matching rule with calls left fires.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{CompletedPart, ObjectMeta, ObjectStore, PutOptions};
use crate::error::{Error, Result};

/// One operation of the [`ObjectStore`] trait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`ObjectStore::put`]
    Put,
    /// [`ObjectStore::get_range`]
    GetRange,
    /// [`ObjectStore::get`]
    Get,
    /// [`ObjectStore::head`]
    Head,
    /// [`ObjectStore::delete`]
    Delete,
    /// [`ObjectStore::list`]
    List,
    /// [`ObjectStore::create_multipart`]
    CreateMultipart,
    /// [`ObjectStore::put_part`]
    PutPart,
    /// [`ObjectStore::complete_multipart`]
    CompleteMultipart,
    /// [`ObjectStore::abort_multipart`]
    AbortMultipart,
}

impl Op {
    /// Every operation, in trait order.
    pub const ALL: [Op; 10] = [
        Op::Put,
        Op::GetRange,
        Op::Get,
        Op::Head,
        Op::Delete,
        Op::List,
        Op::CreateMultipart,
        Op::PutPart,
        Op::CompleteMultipart,
        Op::AbortMultipart,
    ];

    /// The name used in error messages (`op=…`), the trait method's name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::GetRange => "get_range",
            Op::Get => "get",
            Op::Head => "head",
            Op::Delete => "delete",
            Op::List => "list",
            Op::CreateMultipart => "create_multipart",
            Op::PutPart => "put_part",
            Op::CompleteMultipart => "complete_multipart",
            Op::AbortMultipart => "abort_multipart",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which calls a fault or a latency applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every operation.
    All,
    /// One operation.
    Op(Op),
}

impl Target {
    fn matches(self, op: Op) -> bool {
        match self {
            Target::All => true,
            Target::Op(o) => o == op,
        }
    }
}

impl From<Op> for Target {
    fn from(op: Op) -> Self {
        Target::Op(op)
    }
}

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// [`Error::Transient`] (retriable).
    Transient,
    /// [`Error::Store`] (fatal).
    Store,
    /// [`Error::NotFound`].
    NotFound,
}

impl FaultKind {
    fn error(self, op: Op, key: &str, detail: &str) -> Error {
        match self {
            FaultKind::Transient => {
                Error::Transient { op: op.name(), key: key.to_string(), detail: detail.to_string() }
            }
            FaultKind::Store => Error::Store { op: op.name(), key: key.to_string(), detail: detail.to_string() },
            FaultKind::NotFound => Error::NotFound { key: key.to_string() },
        }
    }
}

/// When an injected fault fires relative to the inner call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// The inner store never sees the call (a determinate failure).
    Before,
    /// The inner store applies the call, then the caller gets the error (an indeterminate failure).
    After,
}

#[derive(Debug, Clone)]
struct Rule {
    target: Target,
    /// Calls left to fail; `None` = every call until cleared.
    remaining: Option<u64>,
    kind: FaultKind,
    timing: Timing,
}

type KeyPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    outage: bool,
    latency: [Duration; Op::ALL.len()],
    corrupt: Option<KeyPredicate>,
}

/// A fault-injecting wrapper around any [`ObjectStore`]; see the [module docs](self).
///
/// With no faults configured it forwards every call unchanged (it passes the conformance suite).
pub struct FaultyStore<S: ObjectStore + ?Sized = dyn ObjectStore> {
    inner: Arc<S>,
    state: Mutex<State>,
    calls: [AtomicU64; Op::ALL.len()],
    injected: AtomicU64,
    corrupted: AtomicU64,
}

impl<S: ObjectStore> FaultyStore<S> {
    /// Wraps `inner`, with no faults.
    pub fn wrap(inner: S) -> Self {
        Self::new(Arc::new(inner))
    }
}

impl<S: ObjectStore + ?Sized> FaultyStore<S> {
    /// Wraps a shared store (e.g. an `Arc<MemoryStore>` the test keeps a handle to, or an
    /// `Arc<dyn ObjectStore>`), with no faults.
    pub fn new(inner: Arc<S>) -> Self {
        Self {
            inner,
            state: Mutex::new(State::default()),
            calls: Default::default(),
            injected: AtomicU64::new(0),
            corrupted: AtomicU64::new(0),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// Fails the next `n` calls matching `target` with `kind`, before they reach the inner store.
    pub fn fail_next(&self, target: impl Into<Target>, n: u64, kind: FaultKind) {
        self.add_rule(target.into(), Some(n), kind, Timing::Before);
    }

    /// Fails every call matching `target` with `kind` until [`FaultyStore::clear_faults`].
    pub fn fail_always(&self, target: impl Into<Target>, kind: FaultKind) {
        self.add_rule(target.into(), None, kind, Timing::Before);
    }

    /// Lets the next `n` calls matching `target` reach the inner store, then returns `kind` to the caller
    /// whatever the inner result was: the "it happened but the caller saw an error" case (e.g. a timeout
    /// after the server stored the object).
    pub fn fail_next_after_apply(&self, target: impl Into<Target>, n: u64, kind: FaultKind) {
        self.add_rule(target.into(), Some(n), kind, Timing::After);
    }

    /// Removes every fail rule (not the outage, latency or corruption settings).
    pub fn clear_faults(&self) {
        self.state().rules.clear();
    }

    /// While `on`, every call fails with [`Error::Transient`] without reaching the inner store.
    pub fn set_outage(&self, on: bool) {
        self.state().outage = on;
    }

    /// Whether the outage switch is on.
    pub fn is_outage(&self) -> bool {
        self.state().outage
    }

    /// Adds `latency` before every call matching `target` (replacing what was set for those operations;
    /// `Duration::ZERO` removes it). The delay uses `tokio::time`, so paused-time tests run instantly.
    pub fn set_latency(&self, target: impl Into<Target>, latency: Duration) {
        let target = target.into();
        let mut state = self.state();
        for op in Op::ALL {
            if target.matches(op) {
                state.latency[op.index()] = latency;
            }
        }
    }

    /// Flips one byte in the data `get` and `get_range` return for keys containing `needle`.
    pub fn corrupt_reads_containing(&self, needle: impl Into<String>) {
        let needle = needle.into();
        self.corrupt_reads_matching(move |key| key.contains(needle.as_str()));
    }

    /// Flips one byte (the middle one, XOR 0xFF) in the data `get` and `get_range` return for keys
    /// matching `predicate`. Empty results stay empty.
    pub fn corrupt_reads_matching(&self, predicate: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.state().corrupt = Some(Arc::new(predicate));
    }

    /// Stops corrupting reads.
    pub fn clear_corruption(&self) {
        self.state().corrupt = None;
    }

    /// Removes every fault, the outage, latencies and corruption (counters are kept).
    pub fn reset(&self) {
        *self.state() = State::default();
    }

    /// Calls of `op` so far (including failed ones).
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op.index()].load(Ordering::Relaxed)
    }

    /// Calls of every operation so far.
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Errors injected so far (fail rules and outage).
    pub fn injected_faults(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Reads corrupted so far.
    pub fn corrupted_reads(&self) -> u64 {
        self.corrupted.load(Ordering::Relaxed)
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        for c in &self.calls {
            c.store(0, Ordering::Relaxed);
        }
        self.injected.store(0, Ordering::Relaxed);
        self.corrupted.store(0, Ordering::Relaxed);
    }

    fn add_rule(&self, target: Target, remaining: Option<u64>, kind: FaultKind, timing: Timing) {
        if remaining == Some(0) {
            return;
        }
        self.state().rules.push(Rule { target, remaining, kind, timing });
    }

    /// A poisoned lock only means a test panicked while holding it; the state is still usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts the call, sleeps the configured latency and returns the error of an outage or a `Before`
    /// rule, or the `After` fault to apply once the inner call returned.
    async fn enter(&self, op: Op, key: &str) -> Result<Option<FaultKind>> {
        self.calls[op.index()].fetch_add(1, Ordering::Relaxed);
        let latency = self.state().latency[op.index()];
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut state = self.state();
        if state.outage {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(FaultKind::Transient.error(op, key, "injected outage"));
        }
        let Some(i) = state.rules.iter().position(|r| r.target.matches(op)) else {
            return Ok(None);
        };
        let rule = &mut state.rules[i];
        let (kind, timing) = (rule.kind, rule.timing);
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                state.rules.remove(i);
            }
        }
        drop(state);
        self.injected.fetch_add(1, Ordering::Relaxed);
        match timing {
            Timing::Before => Err(kind.error(op, key, "injected fault")),
            Timing::After => Ok(Some(kind)),
        }
    }

    fn leave<T>(&self, op: Op, key: &str, after: Option<FaultKind>, result: Result<T>) -> Result<T> {
        match after {
            Some(kind) => Err(kind.error(op, key, "injected fault after the call was applied")),
            None => result,
        }
    }

    fn maybe_corrupt(&self, key: &str, data: Bytes) -> Bytes {
        let corrupt = self.state().corrupt.clone();
        match corrupt {
            Some(pred) if !data.is_empty() && pred(key) => {
                self.corrupted.fetch_add(1, Ordering::Relaxed);
                let mut buf = BytesMut::from(data.as_ref());
                let mid = buf.len() / 2;
                buf[mid] ^= 0xFF;
                buf.freeze()
            }
            _ => data,
        }
    }
}

impl<S: ObjectStore + ?Sized> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("rules", &state.rules)
            .field("outage", &state.outage)
            .field("latency", &state.latency)
            .field("corrupting_reads", &state.corrupt.is_some())
            .field("total_calls", &self.total_calls())
            .finish()
    }
}

#[async_trait]
impl<S: ObjectStore + ?Sized> ObjectStore for FaultyStore<S> {
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<()> {
        let after = self.enter(Op::Put, key).await?;
        let r = self.inner.put(key, body, opts).await;
        self.leave(Op::Put, key, after, r)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let after = self.enter(Op::GetRange, key).await?;
        let r = self.inner.get_range(key, range).await;
        self.leave(Op::GetRange, key, after, r).map(|data| self.maybe_corrupt(key, data))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let after = self.enter(Op::Get, key).await?;
        let r = self.inner.get(key).await;
        self.leave(Op::Get, key, after, r).map(|data| self.maybe_corrupt(key, data))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let after = self.enter(Op::Head, key).await?;
        let r = self.inner.head(key).await;
        self.leave(Op::Head, key, after, r)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let after = self.enter(Op::Delete, key).await?;
        let r = self.inner.delete(key).await;
        self.leave(Op::Delete, key, after, r)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let after = self.enter(Op::List, prefix).await?;
        let r = self.inner.list(prefix).await;
        self.leave(Op::List, prefix, after, r)
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        let after = self.enter(Op::CreateMultipart, key).await?;
        let r = self.inner.create_multipart(key).await;
        self.leave(Op::CreateMultipart, key, after, r)
    }

    async fn put_part(&self, key: &str, upload_id: &str, part_number: i32, body: Bytes) -> Result<CompletedPart> {
        let after = self.enter(Op::PutPart, key).await?;
        let r = self.inner.put_part(key, upload_id, part_number, body).await;
        self.leave(Op::PutPart, key, after, r)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        opts: PutOptions,
    ) -> Result<()> {
        let after = self.enter(Op::CompleteMultipart, key).await?;
        let r = self.inner.complete_multipart(key, upload_id, parts, opts).await;
        self.leave(Op::CompleteMultipart, key, after, r)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let after = self.enter(Op::AbortMultipart, key).await?;
        let r = self.inner.abort_multipart(key, upload_id).await;
        self.leave(Op::AbortMultipart, key, after, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;
    use crate::store::memory::MemoryStore;

    const PLAIN: PutOptions = PutOptions { if_none_match: false };

    fn store() -> (Arc<MemoryStore>, FaultyStore<MemoryStore>) {
        let mem = Arc::new(MemoryStore::new());
        (mem.clone(), FaultyStore::new(mem))
    }

    #[tokio::test]
    async fn passes_conformance_without_faults() {
        let (mem, faulty) = store();
        crate::store::conformance::run_all(&faulty, "conformance/").await;
        assert_eq!(mem.pending_uploads(), 0);
        assert_eq!(faulty.injected_faults(), 0);
        assert_eq!(faulty.corrupted_reads(), 0);
        assert!(faulty.calls(Op::Put) > 1100, "the suite puts more than 1100 objects");
        for op in Op::ALL {
            assert!(faulty.calls(op) > 0, "the suite calls {op}");
        }
    }

    #[tokio::test]
    async fn passes_conformance_as_dyn_object_store() {
        let inner: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let faulty: FaultyStore = FaultyStore::new(inner);
        let as_dyn: &dyn ObjectStore = &faulty;
        crate::store::conformance::run_all(as_dyn, "dyn/").await;
    }

    #[tokio::test]
    #[should_panic(expected = "returned different bytes")]
    async fn conformance_detects_corrupt_reads() {
        let (_, faulty) = store();
        faulty.corrupt_reads_containing("");
        crate::store::conformance::run_all(&faulty, "c/").await;
    }

    /// A store with a pagination bug: listings stop after 1000 keys.
    #[derive(Debug, Default)]
    struct FirstPageOnly(MemoryStore);

    #[async_trait]
    impl ObjectStore for FirstPageOnly {
        async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<()> {
            self.0.put(key, body, opts).await
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
            self.0.get_range(key, range).await
        }
        async fn get(&self, key: &str) -> Result<Bytes> {
            self.0.get(key).await
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta> {
            self.0.head(key).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.0.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            let mut all = self.0.list(prefix).await?;
            all.truncate(1000);
            Ok(all)
        }
        async fn create_multipart(&self, key: &str) -> Result<String> {
            self.0.create_multipart(key).await
        }
        async fn put_part(&self, key: &str, id: &str, n: i32, body: Bytes) -> Result<CompletedPart> {
            self.0.put_part(key, id, n, body).await
        }
        async fn complete_multipart(
            &self,
            key: &str,
            id: &str,
            parts: Vec<CompletedPart>,
            o: PutOptions,
        ) -> Result<()> {
            self.0.complete_multipart(key, id, parts, o).await
        }
        async fn abort_multipart(&self, key: &str, id: &str) -> Result<()> {
            self.0.abort_multipart(key, id).await
        }
    }

    #[tokio::test]
    #[should_panic(expected = "list of 1100 objects")]
    async fn conformance_detects_missing_pagination() {
        let store = FaultyStore::wrap(FirstPageOnly::default());
        crate::store::conformance::list_paginates(&store, "c/").await;
    }

    #[tokio::test]
    async fn fail_next_n_of_one_op() {
        let (_, s) = store();
        s.put("k", Bytes::from_static(b"v"), PLAIN).await.unwrap();
        s.fail_next(Op::Get, 2, FaultKind::Transient);
        for _ in 0..2 {
            let e = s.get("k").await.unwrap_err();
            assert!(matches!(&e, Error::Transient { op: "get", key, .. } if key == "k"), "{e}");
            assert_eq!(e.class(), ErrorClass::Retriable);
            // Other operations are unaffected.
            assert_eq!(s.head("k").await.unwrap().size, 1);
        }
        assert_eq!(s.get("k").await.unwrap(), Bytes::from_static(b"v"));
        assert_eq!(s.calls(Op::Get), 3);
        assert_eq!(s.calls(Op::Head), 2);
        assert_eq!(s.injected_faults(), 2);
    }

    #[tokio::test]
    async fn fail_next_of_all_ops_with_each_kind() {
        let (_, s) = store();
        s.put("k", Bytes::from_static(b"v"), PLAIN).await.unwrap();
        s.fail_next(Target::All, 1, FaultKind::Store);
        let e = s.head("k").await.unwrap_err();
        assert!(matches!(e, Error::Store { op: "head", .. }), "{e}");
        assert_eq!(e.class(), ErrorClass::Fatal);
        s.fail_next(Target::All, 1, FaultKind::NotFound);
        let e = s.list("").await.unwrap_err();
        assert!(matches!(&e, Error::NotFound { key } if key.is_empty()), "{e}");
        assert_eq!(s.list("").await.unwrap().len(), 1);
        // n = 0 is a no-op.
        s.fail_next(Target::All, 0, FaultKind::Store);
        s.head("k").await.unwrap();
    }

    #[tokio::test]
    async fn fail_always_until_cleared() {
        let (mem, s) = store();
        s.fail_always(Op::Put, FaultKind::Store);
        for i in 0..5 {
            assert!(s.put(&format!("k{i}"), Bytes::new(), PLAIN).await.is_err());
        }
        // A failed-before put never reached the inner store.
        assert!(mem.list("").await.unwrap().is_empty());
        s.delete("k0").await.unwrap();
        s.clear_faults();
        s.put("k0", Bytes::new(), PLAIN).await.unwrap();
        assert_eq!(s.calls(Op::Put), 6);
        assert_eq!(s.injected_faults(), 5);
    }

    #[tokio::test]
    async fn rules_fire_in_order() {
        let (_, s) = store();
        s.fail_next(Op::Head, 1, FaultKind::NotFound);
        s.fail_next(Target::All, 1, FaultKind::Transient);
        assert!(s.head("a").await.unwrap_err().is_not_found());
        assert!(matches!(s.head("a").await.unwrap_err(), Error::Transient { .. }));
        // Both rules are used up; the memory store answers.
        assert!(s.head("a").await.unwrap_err().is_not_found());
        assert_eq!(s.injected_faults(), 2);
    }

    #[tokio::test]
    async fn fail_after_apply_is_indeterminate() {
        let (mem, s) = store();
        s.fail_next_after_apply(Op::Put, 1, FaultKind::Transient);
        let e = s.put("k", Bytes::from_static(b"data"), PLAIN).await.unwrap_err();
        assert!(matches!(e, Error::Transient { op: "put", .. }), "{e}");
        // ... but the object is there.
        assert_eq!(mem.get("k").await.unwrap(), Bytes::from_static(b"data"));
        // A retried conditional create now reports AlreadyExists: callers must handle that.
        let e = s.put("k", Bytes::from_static(b"data"), PutOptions { if_none_match: true }).await.unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    }

    #[tokio::test]
    async fn outage_switch() {
        let (_, s) = store();
        s.put("k", Bytes::from_static(b"v"), PLAIN).await.unwrap();
        s.set_outage(true);
        assert!(s.is_outage());
        for e in [
            s.get("k").await.unwrap_err(),
            s.head("k").await.unwrap_err(),
            s.delete("k").await.unwrap_err(),
            s.list("").await.map(|_| ()).unwrap_err(),
            s.create_multipart("m").await.map(|_| ()).unwrap_err(),
        ] {
            assert_eq!(e.class(), ErrorClass::Retriable, "{e}");
        }
        s.set_outage(false);
        assert_eq!(s.get("k").await.unwrap(), Bytes::from_static(b"v"));
        assert_eq!(s.injected_faults(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_per_op_and_all() {
        let (_, s) = store();
        s.set_latency(Op::Head, Duration::from_millis(250));
        let t = tokio::time::Instant::now();
        let _ = s.head("k").await;
        assert_eq!(t.elapsed(), Duration::from_millis(250));
        let t = tokio::time::Instant::now();
        let _ = s.get("k").await;
        assert_eq!(t.elapsed(), Duration::ZERO);
        s.set_latency(Target::All, Duration::from_secs(2));
        let t = tokio::time::Instant::now();
        let _ = s.get("k").await;
        let _ = s.list("").await;
        assert_eq!(t.elapsed(), Duration::from_secs(4));
        s.set_latency(Target::All, Duration::ZERO);
        let t = tokio::time::Instant::now();
        let _ = s.head("k").await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn corrupt_reads_of_matching_keys() {
        let (_, s) = store();
        let data = Bytes::from((0u8..100).collect::<Vec<_>>());
        s.put("seg/1.log", data.clone(), PLAIN).await.unwrap();
        s.put("seg/1.index", data.clone(), PLAIN).await.unwrap();
        s.put("seg/empty.log", Bytes::new(), PLAIN).await.unwrap();
        s.corrupt_reads_containing(".log");

        let got = s.get("seg/1.log").await.unwrap();
        assert_eq!(got.len(), data.len());
        let diffs: Vec<usize> = (0..got.len()).filter(|&i| got[i] != data[i]).collect();
        assert_eq!(diffs, vec![50]);
        let got = s.get_range("seg/1.log", 10..20).await.unwrap();
        assert_ne!(got, data.slice(10..20));
        assert_eq!(got[5], data[15] ^ 0xFF);
        assert_eq!(s.get("seg/1.index").await.unwrap(), data);
        assert!(s.get("seg/empty.log").await.unwrap().is_empty());
        assert_eq!(s.corrupted_reads(), 2);
        // The stored object is intact; only reads are corrupted.
        s.clear_corruption();
        assert_eq!(s.get("seg/1.log").await.unwrap(), data);

        s.corrupt_reads_matching(|k| k.ends_with(".index"));
        assert_ne!(s.get("seg/1.index").await.unwrap(), data);
        assert_eq!(s.get("seg/1.log").await.unwrap(), data);
    }

    #[tokio::test]
    async fn multipart_faults_and_counters() {
        let (mem, s) = store();
        let id = s.create_multipart("mp").await.unwrap();
        s.fail_next(Op::PutPart, 1, FaultKind::Transient);
        assert!(s.put_part("mp", &id, 1, Bytes::from_static(b"a")).await.is_err());
        let p = s.put_part("mp", &id, 1, Bytes::from_static(b"a")).await.unwrap();
        s.fail_next(Op::CompleteMultipart, 1, FaultKind::Store);
        assert!(s.complete_multipart("mp", &id, vec![p.clone()], PLAIN).await.is_err());
        s.complete_multipart("mp", &id, vec![p], PLAIN).await.unwrap();
        assert_eq!(mem.pending_uploads(), 0);
        assert_eq!(s.calls(Op::PutPart), 2);
        assert_eq!(s.calls(Op::CompleteMultipart), 2);
        assert_eq!(s.total_calls(), 5);
        s.reset_counters();
        assert_eq!(s.total_calls(), 0);
        assert_eq!(s.injected_faults(), 0);
    }

    #[tokio::test]
    async fn reset_clears_everything() {
        let (_, s) = store();
        s.fail_always(Target::All, FaultKind::Store);
        s.set_outage(true);
        s.corrupt_reads_containing("");
        s.set_latency(Target::All, Duration::from_millis(1));
        s.reset();
        s.put("k", Bytes::from_static(b"xyz"), PLAIN).await.unwrap();
        assert_eq!(s.get("k").await.unwrap(), Bytes::from_static(b"xyz"));
        assert!(format!("{s:?}").contains("FaultyStore"));
    }
}
