//! Queue-driven replica count. Pure: the caller supplies the time and carries the one piece of
//! memory (since when the queue has wanted fewer replicas) from one reconcile to the next.
//!
//! Up immediately, down only after the queue has stayed low for `scaleDownDelaySeconds`:
//! GPU workers take minutes to load and warm up their models, so giving one back on a
//! momentary lull would cost more than keeping it.

use std::time::{Duration, Instant};

/// What the scaler works from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleInput {
    pub min: i32,
    pub max: i32,
    /// At least 1 (validated).
    pub target_queue_per_replica: u32,
    pub scale_down_delay: Duration,
    /// Tasks waiting in the pool.
    pub queue: u32,
    /// Replicas the Deployment has now; `None` before it exists.
    pub current: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDecision {
    /// Replicas to run.
    pub replicas: i32,
    /// Replicas the queue asks for, before the bounds.
    pub wanted: i32,
    /// The queue wants more than `max`.
    pub limited: bool,
    /// Carry into the next decision.
    pub low_since: Option<Instant>,
}

pub fn decide(input: ScaleInput, low_since: Option<Instant>, now: Instant) -> ScaleDecision {
    let target = input.target_queue_per_replica.max(1);
    let wanted = i32::try_from(input.queue.div_ceil(target)).unwrap_or(i32::MAX);
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
        ScaleInput { min: 1, max: 4, target_queue_per_replica: 4, scale_down_delay: Duration::from_secs(300), queue, current }
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
