//! Dispatcher counters and gauges: plain atomics the HTTP layer exports however it likes.
//! Labels are bounded (status words, error codes); never task or user ids.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use purrify_api::FailReason;

#[derive(Debug, Default)]
pub struct DispatchMetrics {
    pub(crate) queued: AtomicU64,
    pub(crate) processing: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) dispatched: AtomicU64,
    pub(crate) reattached: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) busy_requeues: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) failed: [AtomicU64; FailReason::ALL.len()],
    pub(crate) db_errors: AtomicU64,
}

/// A consistent-enough copy of [`DispatchMetrics`] for exporters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DispatchStats {
    /// Gauge: tasks queued in the database (refreshed every tick).
    pub queued: u64,
    /// Gauge: tasks processing in the database (refreshed every tick).
    pub processing: u64,
    /// Gauge: jobs this dispatcher is following now.
    pub running: u64,
    /// Counter: attempts handed to a worker.
    pub dispatched: u64,
    /// Counter: jobs re-attached after a restart or a lost follower.
    pub reattached: u64,
    /// Counter: attempts that failed and were queued again (counted against the task).
    pub retries: u64,
    /// Counter: tasks queued again because a worker did not take the job: it answered 429
    /// or could not be reached (not counted as attempts; the metric name predates the latter).
    pub busy_requeues: u64,
    pub completed: u64,
    pub cancelled: u64,
    /// Counter per error code (every code present, zero included).
    pub failed: Vec<(&'static str, u64)>,
    /// Counter: database calls of the dispatcher that failed (and were retried or left to
    /// the next tick).
    pub db_errors: u64,
}

pub(crate) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl DispatchMetrics {
    pub(crate) fn failed(&self, code: FailReason) {
        bump(&self.failed[index(code)]);
    }

    pub fn failed_count(&self, code: FailReason) -> u64 {
        self.failed[index(code)].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> DispatchStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DispatchStats {
            queued: r(&self.queued),
            processing: r(&self.processing),
            running: r(&self.running),
            dispatched: r(&self.dispatched),
            reattached: r(&self.reattached),
            retries: r(&self.retries),
            busy_requeues: r(&self.busy_requeues),
            completed: r(&self.completed),
            cancelled: r(&self.cancelled),
            failed: FailReason::ALL.iter().map(|c| (c.code(), r(&self.failed[index(*c)]))).collect(),
            db_errors: r(&self.db_errors),
        }
    }
}

/// Slot of `reason` in the per-reason counters.
fn index(reason: FailReason) -> usize {
    FailReason::ALL.iter().position(|r| *r == reason).unwrap_or(0)
}
