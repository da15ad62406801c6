//! Load-driven replica count. Pure: the caller supplies the time and carries the one piece of
//! memory (since when the load has wanted fewer replicas) from one reconcile to the next.
//!
//! The load is the pool's queued *and* running tasks: a replica busy with jobs is needed as
//! much as one about to get them, and counting only the queue would scale the pool to its
//! minimum while its pods are still working (the jobs on removed pods would then be retried).
//!
//! Up immediately, down only after the load has stayed low for `scaleDownDelaySeconds`:
//! GPU workers take minutes to load and warm up their models, so giving one back on a
//! momentary lull would cost more than keeping it.

use std::time::{Duration, Instant};

use purrify_api::{EnhanceTask, TaskPhase};

/// A pool's unfinished tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolLoad {
    /// Waiting for a worker. A task without status has not been seen by the task controller
    /// yet, and is waiting all the same.
    pub queued: u32,
    /// Attempts in flight on a worker.
    pub running: u32,
}

impl PoolLoad {
    /// Counts the tasks of pool `pool` in `namespace`; tasks being deleted are not counted.
    pub fn of<'a>(tasks: impl IntoIterator<Item = &'a EnhanceTask>, namespace: &str, pool: &str) -> Self {
        let mut load = Self::default();
        for t in tasks {
            if t.metadata.namespace.as_deref() != Some(namespace) || t.spec.pool != pool || t.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match t.status.as_ref().map_or(TaskPhase::Queued, |s| s.phase) {
                TaskPhase::Queued => load.queued = load.queued.saturating_add(1),
                TaskPhase::Running => load.running = load.running.saturating_add(1),
                TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Cancelled => {}
            }
        }
        load
    }

    /// Tasks that need a worker now or hold one.
    pub fn total(self) -> u32 {
        self.queued.saturating_add(self.running)
    }
}

/// What the scaler works from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleInput {
    pub min: i32,
    pub max: i32,
    /// At least 1 (validated).
    pub target_queue_per_replica: u32,
    pub scale_down_delay: Duration,
    /// The pool's queued and running tasks.
    pub load: PoolLoad,
    /// Replicas the Deployment has now; `None` before it exists.
    pub current: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDecision {
    /// Replicas to run.
    pub replicas: i32,
    /// Replicas the load asks for, before the bounds.
    pub wanted: i32,
    /// The load wants more than `max`.
    pub limited: bool,
    /// Carry into the next decision.
    pub low_since: Option<Instant>,
}

pub fn decide(input: ScaleInput, low_since: Option<Instant>, now: Instant) -> ScaleDecision {
    let target = input.target_queue_per_replica.max(1);
    let wanted = i32::try_from(input.load.total().div_ceil(target)).unwrap_or(i32::MAX);
    let (min, max) = (input.min.max(0), input.max.max(input.min.max(0)));
    let bounded = wanted.clamp(min, max);
    let limited = wanted > max;
    // Bounds that moved apply at once: an admin lowering max or raising min means it now.
    let current = input.current.map_or(bounded, |c| c.clamp(min, max));
    if bounded >= current {
        return ScaleDecision { replicas: bounded, wanted, limited, low_since: None };
    }
    let since = low_since.unwrap_or(now);
    if now.saturating_duration_since(since) >= input.scale_down_delay {
        ScaleDecision { replicas: bounded, wanted, limited, low_since: None }
    } else {
        ScaleDecision { replicas: current, wanted, limited, low_since: Some(since) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(queue: u32, current: Option<i32>) -> ScaleInput {
        let load = PoolLoad { queued: queue, running: 0 };
        ScaleInput { min: 1, max: 4, target_queue_per_replica: 4, scale_down_delay: Duration::from_secs(300), load, current }
    }

    #[test]
    fn running_tasks_keep_their_replicas() {
        let t0 = Instant::now();
        // Twelve jobs in flight, nothing queued: the three replicas running them stay, even
        // after the scale-down delay.
        let busy = ScaleInput { load: PoolLoad { queued: 0, running: 12 }, ..input(0, Some(3)) };
        let d = decide(busy, Some(t0), t0 + Duration::from_secs(600));
        assert_eq!((d.replicas, d.wanted, d.low_since), (3, 3, None));
        // Queued and running add up.
        let mixed = ScaleInput { load: PoolLoad { queued: 5, running: 8 }, ..input(0, Some(1)) };
        assert_eq!(decide(mixed, None, t0).replicas, 4);
        // Once they finish, the pool shrinks after the delay as before.
        let idle = decide(input(0, Some(3)), None, t0);
        assert_eq!((idle.replicas, idle.low_since), (3, Some(t0)));
        assert_eq!(decide(input(0, Some(3)), idle.low_since, t0 + Duration::from_secs(300)).replicas, 1);
    }

    #[test]
    fn load_counts_queued_and_running_tasks_of_the_pool_only() {
        use purrify_api::{EnhanceTaskSpec, EnhanceTaskStatus, TaskInput, TaskOutput, TaskParams};
        let task = |name: &str, ns: &str, pool: &str, phase: Option<TaskPhase>| {
            let mut t = EnhanceTask::new(
                name,
                EnhanceTaskSpec {
                    pool: pool.into(),
                    input: TaskInput { uri: "file:///i.jpg".into(), content_type: None, bytes: None },
                    output: TaskOutput { uri: "file:///o.jpg".into() },
                    params: TaskParams::default(),
                    priority: 0,
                    deadline_seconds: 300,
                    ttl_seconds_after_finished: None,
                    owner: None,
                },
            );
            t.metadata.namespace = Some(ns.into());
            t.status = phase.map(|phase| EnhanceTaskStatus { phase, ..EnhanceTaskStatus::default() });
            t
        };
        let mut deleting = task("gone", "ns", "p", Some(TaskPhase::Running));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let tasks = [
            task("new", "ns", "p", None),
            task("q", "ns", "p", Some(TaskPhase::Queued)),
            task("r1", "ns", "p", Some(TaskPhase::Running)),
            task("r2", "ns", "p", Some(TaskPhase::Running)),
            task("done", "ns", "p", Some(TaskPhase::Succeeded)),
            task("failed", "ns", "p", Some(TaskPhase::Failed)),
            task("other-pool", "ns", "q", Some(TaskPhase::Running)),
            task("other-ns", "ns2", "p", None),
            deleting,
        ];
        let load = PoolLoad::of(&tasks, "ns", "p");
        assert_eq!(load, PoolLoad { queued: 2, running: 2 });
        assert_eq!(load.total(), 4);
    }

    #[test]
    fn scales_up_at_once_and_caps_at_max() {
        let now = Instant::now();
        let d = decide(input(9, Some(1)), None, now);
        assert_eq!((d.replicas, d.wanted, d.limited), (3, 3, false));
        let d = decide(input(100, Some(1)), None, now);
        assert_eq!((d.replicas, d.wanted, d.limited), (4, 25, true));
        let d = decide(input(0, None), None, now);
        assert_eq!(d.replicas, 1, "min holds with an empty queue");
    }

    #[test]
    fn scales_down_only_after_the_delay() {
        let t0 = Instant::now();
        let d = decide(input(0, Some(4)), None, t0);
        assert_eq!((d.replicas, d.low_since), (4, Some(t0)));
        let d = decide(input(0, Some(4)), d.low_since, t0 + Duration::from_secs(299));
        assert_eq!((d.replicas, d.low_since), (4, Some(t0)));
        let d = decide(input(4, Some(4)), d.low_since, t0 + Duration::from_secs(300));
        assert_eq!((d.replicas, d.low_since), (1, None), "queue 4 wants 1 replica");
    }

    #[test]
    fn a_busy_moment_resets_the_delay() {
        let t0 = Instant::now();
        let d = decide(input(0, Some(3)), None, t0);
        let d = decide(input(12, Some(3)), d.low_since, t0 + Duration::from_secs(200));
        assert_eq!((d.replicas, d.low_since), (3, None));
        let d = decide(input(0, Some(3)), d.low_since, t0 + Duration::from_secs(400));
        assert_eq!((d.replicas, d.low_since), (3, Some(t0 + Duration::from_secs(400))));
    }

    #[test]
    fn moved_bounds_apply_without_delay() {
        let now = Instant::now();
        let d = decide(ScaleInput { max: 2, ..input(0, Some(4)) }, None, now);
        assert_eq!(d.replicas, 2);
        let d = decide(ScaleInput { min: 3, ..input(0, Some(1)) }, None, now);
        assert_eq!(d.replicas, 3);
        let d = decide(ScaleInput { min: 0, max: 0, ..input(50, Some(1)) }, None, now);
        assert_eq!((d.replicas, d.limited), (0, true));
    }

    #[test]
    fn zero_delay_scales_down_immediately() {
        let now = Instant::now();
        let d = decide(ScaleInput { scale_down_delay: Duration::ZERO, ..input(0, Some(4)) }, None, now);
        assert_eq!(d.replicas, 1);
    }
}
