//! Native log records for the broker's log.
//!
//! Rust never calls into the JVM to log: a tracing layer formats each event into a bounded queue, and
//! the Java shim's `fasttier-native-log` thread drains it through SLF4J. When the queue is full, new
//! records are dropped and counted; the count is reported as one WARN record on the next drain.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

const CAPACITY: usize = 10_000;

static QUEUE: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static DROPPED: AtomicU64 = AtomicU64::new(0);
static INIT: Once = Once::new();

struct QueueLayer;

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for QueueLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        let meta = event.metadata();
        push(format!("{}|{}|{}", meta.level(), meta.target(), v.0));
    }
}

fn push(record: String) {
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    if q.len() >= CAPACITY {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    } else {
        q.push_back(record);
    }
}

/// Installs the queue as the process's tracing subscriber (once). fasttier's own targets log at INFO
/// and above (`FASTTIER_LOG_LEVEL` overrides), everything else (the AWS SDK) at WARN and above.
pub fn init() {
    INIT.call_once(|| {
        let level =
            std::env::var("FASTTIER_LOG_LEVEL").ok().and_then(|l| l.parse::<Level>().ok()).unwrap_or(Level::INFO);
        let filter = Targets::new()
            .with_default(Level::WARN)
            .with_target("fasttier_core", level)
            .with_target("fasttier_jni", level);
        let subscriber = tracing_subscriber::registry().with(QueueLayer.with_filter(filter));
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Takes up to `max` records.
pub fn drain(max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        out.push(format!("WARN|fasttier_jni::logs|{dropped} native log records dropped (log queue full)"));
    }
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    while out.len() < max {
        match q.pop_front() {
            Some(r) => out.push(r),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_queued_bounded_and_drained() {
        init();
        tracing::warn!(key = "a/b", "copy failed");
        let got = drain(100);
        assert!(got.iter().any(|r| r.starts_with("WARN|") && r.contains("copy failed key=a/b")), "{got:?}");
        for i in 0..CAPACITY + 5 {
            push(format!("INFO|t|{i}"));
        }
        let first = drain(1);
        assert!(first[0].contains("5 native log records dropped"), "{first:?}");
        let mut n = 0;
        loop {
            let batch = drain(1000);
            if batch.is_empty() {
                break;
            }
            n += batch.len();
        }
        assert_eq!(n, CAPACITY);
    }
}
