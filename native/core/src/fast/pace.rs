//! When the uploader starts its next upload: a group commit, as a pure state machine (time passed in).
//!
//! Data is uploaded as soon as it is found and the previous upload has finished, but two uploads never start
//! closer together than `wal.upload.interval.ms` (the cost knob: at most `1000 / interval` PUTs per second
//! per broker). While nothing is waiting, the uploader sleeps until the log watch reports a write to a led
//! partition's log, or until a safety poll is due (the only wake-up when no watch is possible).
//!
//! Nothing is lost between a look at the logs and the wait that follows it: the watch's wake-ups are
//! permits (`tokio::sync::Notify`), so a write that lands while a PUT is in flight wakes the next wait at
//! once, and the uploader always looks at the logs again right after an upload.

use std::time::{Duration, Instant};

/// What the uploader does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Upload what is pending now.
    Upload,
    /// Data is pending, but the previous upload started less than the interval ago: wait until then (the
    /// data found meanwhile goes into the same object).
    Hold(Instant),
    /// Nothing pending: sleep until a wake-up (a write to a watched log, a membership change) or this time.
    Idle(Instant),
}

/// The group-commit pacing of one uploader.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    /// Shortest time between the starts of two uploads.
    interval: Duration,
    /// Longest sleep without looking at the logs while the log watch covers every led partition.
    safety_poll: Duration,
    last_start: Option<Instant>,
}

/// How often the logs are looked at while idle with every led partition watched.
pub(crate) const SAFETY_POLL: Duration = Duration::from_millis(500);
/// How often the logs are looked at when some partition cannot be watched (no inotify, watch limit).
pub(crate) const UNWATCHED_POLL: Duration = Duration::from_millis(20);

impl Pacer {
    pub(crate) fn new(interval: Duration) -> Pacer {
        Pacer { interval, safety_poll: SAFETY_POLL, last_start: None }
    }

    /// The next step at `now`: `pending` is whether found data waits for an upload, `watched` whether the
    /// log watch covers every led partition (else the logs are polled every [`UNWATCHED_POLL`] or interval).
    pub(crate) fn next(&self, now: Instant, pending: bool, watched: bool) -> Next {
        if pending {
            match self.last_start.map(|t| t + self.interval) {
                Some(at) if at > now => Next::Hold(at),
                _ => Next::Upload,
            }
        } else if watched {
            Next::Idle(now + self.safety_poll)
        } else {
            Next::Idle(now + self.interval.max(UNWATCHED_POLL))
        }
    }

    /// An upload started at `now`.
    pub(crate) fn started(&mut self, now: Instant) {
        self.last_start = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn data_found_when_idle_is_uploaded_at_once() {
        let p = Pacer::new(25 * MS);
        let t0 = Instant::now();
        assert_eq!(p.next(t0, true, true), Next::Upload, "first upload: no interval to wait for");
        let mut p = p;
        p.started(t0);
        // long after the previous upload: at once, no timer in the way
        assert_eq!(p.next(t0 + 500 * MS, true, true), Next::Upload);
    }

    #[test]
    fn back_to_back_uploads_are_spaced_by_the_interval() {
        let mut p = Pacer::new(25 * MS);
        let t0 = Instant::now();
        p.started(t0);
        // data found during / right after the PUT: held until the interval has passed since its start
        assert_eq!(p.next(t0 + 7 * MS, true, true), Next::Hold(t0 + 25 * MS));
        assert_eq!(p.next(t0 + 25 * MS, true, true), Next::Upload);
        // an interval of 0: back to back, limited only by the PUT itself
        let mut p = Pacer::new(Duration::ZERO);
        p.started(t0);
        assert_eq!(p.next(t0, true, true), Next::Upload);
    }

    #[test]
    fn idle_sleeps_long_when_watched_and_polls_when_not() {
        let p = Pacer::new(25 * MS);
        let t0 = Instant::now();
        assert_eq!(p.next(t0, false, true), Next::Idle(t0 + SAFETY_POLL));
        assert_eq!(p.next(t0, false, false), Next::Idle(t0 + 25 * MS));
        let p = Pacer::new(Duration::ZERO);
        assert_eq!(p.next(t0, false, false), Next::Idle(t0 + UNWATCHED_POLL), "never a busy loop");
    }

    proptest! {
        /// Over any sequence of (time step, data found) events, following the pacer's answers: uploads
        /// start at least the interval apart (the cost knob), data never waits longer than the interval
        /// after it was found (no lost wake-up), and an idle uploader never wakes more often than its poll.
        #[test]
        fn the_cost_knob_is_honoured_and_nothing_waits_past_the_interval(
            interval_ms in 0u64..100,
            events in proptest::collection::vec((0u64..60, any::<bool>()), 1..200),
        ) {
            let interval = MS * interval_ms as u32;
            let mut p = Pacer::new(interval);
            let t0 = Instant::now();
            let mut now = t0;
            let mut starts: Vec<Instant> = Vec::new();
            let mut pending_since: Option<Instant> = None;
            for (step, found) in events {
                now += MS * step as u32;
                if found && pending_since.is_none() {
                    pending_since = Some(now);
                }
                // the uploader acts on the pacer's answer until it is idle
                loop {
                    match p.next(now, pending_since.is_some(), true) {
                        Next::Upload => {
                            if let Some(last) = starts.last() {
                                prop_assert!(now.duration_since(*last) >= interval);
                            }
                            let since = pending_since.take().unwrap();
                            prop_assert!(now.duration_since(since) <= interval);
                            starts.push(now);
                            p.started(now);
                        }
                        Next::Hold(at) => {
                            prop_assert!(at > now && at.duration_since(now) <= interval);
                            now = at;
                        }
                        Next::Idle(at) => {
                            prop_assert!(at.duration_since(now) >= SAFETY_POLL.min(UNWATCHED_POLL));
                            break;
                        }
                    }
                }
            }
        }
    }
}
