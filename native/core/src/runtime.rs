//! The shared, bounded tokio runtime and cooperative cancellation.
//!
//! One runtime serves every engine in the process (a broker opens one RSM; tests may open several). Its
//! worker and blocking-pool sizes are fixed by the first engine's configuration; threads are named
//! `fasttier-rt-N` / `fasttier-blocking-N` so they are recognisable in a broker thread dump. When the last
//! engine releases it, the runtime shuts down and its threads exit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// How long the runtime's shutdown waits for blocking-pool threads.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Where the live runtime is remembered; a lease keeps it alive, the slot only points at it.
struct Slot(Mutex<Weak<RuntimeLease>>);

static SHARED: Slot = Slot(Mutex::new(Weak::new()));

/// A reference to the shared runtime; the runtime lives while any lease does.
#[derive(Debug)]
pub struct RuntimeLease {
    runtime: Option<Runtime>,
}

impl RuntimeLease {
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("runtime present until drop").handle()
    }
}

impl Drop for RuntimeLease {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Never blocks a tokio worker: leases are dropped from Java threads (engine close). Async tasks are
            // dropped at once; only blocking-pool work (file reads) can hold this up, and only this long:
            // part of the bound on close() (docs/operations.md).
            rt.shutdown_timeout(SHUTDOWN_WAIT);
        }
    }
}

/// Returns the shared runtime, creating it with these sizes if no engine holds it.
pub fn shared(worker_threads: usize, max_blocking_threads: usize) -> Result<Arc<RuntimeLease>> {
    SHARED.get(worker_threads, max_blocking_threads)
}

impl Slot {
    fn get(&self, worker_threads: usize, max_blocking_threads: usize) -> Result<Arc<RuntimeLease>> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lease) = guard.upgrade() {
            return Ok(lease);
        }
        let worker_id = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .max_blocking_threads(max_blocking_threads)
            .thread_name_fn(move || format!("fasttier-rt-{}", worker_id.fetch_add(1, Ordering::Relaxed)))
            .thread_keep_alive(Duration::from_secs(10))
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the native runtime: {e}")))?;
        let lease = Arc::new(RuntimeLease { runtime: Some(runtime) });
        *guard = Arc::downgrade(&lease);
        Ok(lease)
    }
}

/// A cancellation flag that async work can await.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    inner: Arc<(AtomicBool, Notify)>,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation; wakes every waiter.
    pub fn cancel(&self) {
        self.inner.0.store(true, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst)
    }

    /// Completes once [`Cancel::cancel`] has been called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `fut` unless cancelled first; cancellation yields `Error::Cancelled`.
    pub async fn run<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            biased;
            _ = self.cancelled() => Err(Error::Cancelled { op, key: key.to_string() }),
            r = fut => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_is_shared_and_released() {
        // A slot of its own: other tests use the process-wide one concurrently.
        let slot = Slot(Mutex::new(Weak::new()));
        let a = slot.get(1, 1).unwrap();
        let b = slot.get(2, 2).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let v = a.handle().block_on(async { 41 + 1 });
        assert_eq!(v, 42);
        drop(a);
        drop(b);
        assert!(slot.0.lock().unwrap().upgrade().is_none());
        let c = slot.get(1, 1).unwrap();
        assert_eq!(c.handle().block_on(async { 7 }), 7);
    }

    #[tokio::test]
    async fn cancel_interrupts_pending_work() {
        let c = Cancel::new();
        let c2 = c.clone();
        let t = tokio::spawn(async move { c2.run("copy", "k", std::future::pending::<Result<()>>()).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        c.cancel();
        let e = t.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::Cancelled { .. }));
    }
}
