//! Per-worker circuit breaker. Pure: every method takes the current `Instant`, so tests
//! drive time by hand and the fleet can use an injected clock.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failure_threshold: u32,
    /// First open period; doubled after each failed half-open probe.
    pub cooldown: Duration,
    /// Upper bound for the growing open period.
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, cooldown: Duration::from_secs(5), max_cooldown: Duration::from_secs(60) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Proof that a request was admitted; handed back with its outcome. Deliberately neither
/// `Clone` nor `Copy`: the single half-open probe must be reported (or released) exactly once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the outcome with record_success/record_failure, or release the permit"]
pub struct Permit {
    probe: bool,
}

impl Permit {
    /// Whether this request is the half-open probe whose outcome decides the breaker.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// A permit for an outcome observed outside an admitted request (a health probe while
    /// closed, or a second outcome of the same lease). It never decides a half-open breaker.
    pub(crate) fn ordinary() -> Self {
        Self { probe: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
    consecutive_failures: u32,
    cooldown: Duration,
    trips: u64,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, inner: Inner::Closed, consecutive_failures: 0, cooldown: config.cooldown, trips: 0 }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state as seen at `now`: an open breaker whose cooldown has elapsed reads half-open
    /// even before anything asked to pass.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } if now >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether [`try_acquire`](Self::try_acquire) would succeed at `now`, without taking the
    /// probe slot (used to filter candidates before choosing one).
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.inner {
            Inner::Closed => true,
            Inner::Open { until } => now >= until,
            Inner::HalfOpen { probing } => !probing,
        }
    }

    /// Admits a request or refuses it. In half-open, exactly one request is admitted (the
    /// probe) until its outcome is recorded or its permit released.
    pub fn try_acquire(&mut self, now: Instant) -> Option<Permit> {
        match self.inner {
            Inner::Closed => Some(Permit { probe: false }),
            Inner::Open { until } if now >= until => {
                self.inner = Inner::HalfOpen { probing: true };
                Some(Permit { probe: true })
            }
            Inner::Open { .. } => None,
            Inner::HalfOpen { probing: false } => {
                self.inner = Inner::HalfOpen { probing: true };
                Some(Permit { probe: true })
            }
            Inner::HalfOpen { probing: true } => None,
        }
    }

    /// A successful outcome. Only the probe closes a half-open breaker: stragglers admitted
    /// before the breaker opened say nothing about the worker now.
    pub fn record_success(&mut self, permit: Permit) {
        match self.inner {
            Inner::Closed => self.consecutive_failures = 0,
            Inner::HalfOpen { .. } if permit.probe => {
                self.inner = Inner::Closed;
                self.consecutive_failures = 0;
                self.cooldown = self.config.cooldown;
            }
            Inner::HalfOpen { .. } | Inner::Open { .. } => {}
        }
    }

    /// A failed outcome. Returns true when this failure opened the breaker.
    pub fn record_failure(&mut self, permit: Permit, now: Instant) -> bool {
        match self.inner {
            Inner::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= self.config.failure_threshold.max(1) {
                    self.cooldown = self.config.cooldown;
                    self.open(now);
                    return true;
                }
                false
            }
            Inner::HalfOpen { .. } if permit.probe => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.cooldown = self.cooldown.saturating_mul(2).min(self.config.max_cooldown).max(self.config.cooldown);
                self.open(now);
                true
            }
            Inner::HalfOpen { .. } | Inner::Open { .. } => false,
        }
    }

    /// The request ended without an outcome worth judging (cancelled, handed over): frees the
    /// probe slot so the next request can probe instead of the breaker sticking half-open.
    pub fn release(&mut self, permit: Permit) {
        if permit.probe && self.inner == (Inner::HalfOpen { probing: true }) {
            self.inner = Inner::HalfOpen { probing: false };
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How many times the breaker opened (closed -> open or half-open -> open).
    pub fn trips(&self) -> u64 {
        self.trips
    }

    /// The open period used by the last (or next) trip.
    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// When an open breaker starts admitting a probe.
    pub fn open_until(&self) -> Option<Instant> {
        match self.inner {
            Inner::Open { until } => Some(until),
            _ => None,
        }
    }

    fn open(&mut self, now: Instant) {
        self.inner = Inner::Open { until: now + self.cooldown };
        self.trips += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn breaker(threshold: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig { failure_threshold: threshold, cooldown: 10 * S, max_cooldown: 35 * S })
    }

    fn fail(b: &mut CircuitBreaker, now: Instant) -> bool {
        let p = b.try_acquire(now).expect("admitted");
        b.record_failure(p, now)
    }

    fn open_at(t0: Instant) -> CircuitBreaker {
        let mut b = breaker(2);
        fail(&mut b, t0);
        assert!(fail(&mut b, t0));
        b
    }

    #[test]
    fn closed_stays_closed_below_threshold_and_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = breaker(3);
        assert!(!fail(&mut b, t0));
        assert!(!fail(&mut b, t0));
        assert_eq!(b.consecutive_failures(), 2);
        let p = b.try_acquire(t0).unwrap();
        assert!(!p.is_probe());
        b.record_success(p);
        assert_eq!(b.consecutive_failures(), 0);
        assert!(!fail(&mut b, t0));
        assert!(!fail(&mut b, t0));
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn closed_opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker(3);
        assert!(!fail(&mut b, t0));
        assert!(!fail(&mut b, t0));
        assert!(fail(&mut b, t0));
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.trips(), 1);
        assert_eq!(b.open_until(), Some(t0 + 10 * S));
    }

    #[test]
    fn open_refuses_until_cooldown_elapses() {
        let t0 = Instant::now();
        let mut b = open_at(t0);
        let before = t0 + 10 * S - Duration::from_millis(1);
        assert!(!b.would_admit(before));
        assert!(b.try_acquire(before).is_none());
        assert_eq!(b.state(before), BreakerState::Open);
        assert_eq!(b.state(t0 + 10 * S), BreakerState::HalfOpen);
        assert!(b.would_admit(t0 + 10 * S));
    }

    #[test]
    fn half_open_admits_exactly_one_probe() {
        let t0 = Instant::now();
        let mut b = open_at(t0);
        let t = t0 + 10 * S;
        let probe = b.try_acquire(t).unwrap();
        assert!(probe.is_probe());
        assert!(!b.would_admit(t));
        assert!(b.try_acquire(t).is_none());
        assert!(b.try_acquire(t + 100 * S).is_none(), "time alone does not free the probe slot");
        b.record_success(probe);
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn probe_success_closes_and_resets_cooldown() {
        let t0 = Instant::now();
        let mut b = open_at(t0);
        let t1 = t0 + 10 * S;
        assert!(fail(&mut b, t1), "failed probe reopens");
        assert_eq!(b.cooldown(), 20 * S);
        let t2 = t1 + 20 * S;
        let p = b.try_acquire(t2).unwrap();
        b.record_success(p);
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.cooldown(), 10 * S);
        // Next trip starts from the base cooldown again.
        fail(&mut b, t2);
        assert!(fail(&mut b, t2));
        assert_eq!(b.open_until(), Some(t2 + 10 * S));
    }

    #[test]
    fn probe_failure_reopens_with_growing_capped_cooldown() {
        let t0 = Instant::now();
        let mut b = open_at(t0);
        let mut t = t0 + 10 * S;
        for expected in [20 * S, 35 * S, 35 * S] {
            assert!(fail(&mut b, t));
            assert_eq!(b.state(t), BreakerState::Open);
            assert_eq!(b.open_until(), Some(t + expected));
            t += expected;
        }
        assert_eq!(b.trips(), 4);
    }

    #[test]
    fn released_probe_lets_the_next_request_probe() {
        let t0 = Instant::now();
        let mut b = open_at(t0);
        let t = t0 + 10 * S;
        let probe = b.try_acquire(t).unwrap();
        b.release(probe);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        let again = b.try_acquire(t).unwrap();
        assert!(again.is_probe());
        b.record_success(again);
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn stragglers_do_not_decide_open_or_half_open() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        let straggler_ok = b.try_acquire(t0).unwrap();
        let straggler_bad = b.try_acquire(t0).unwrap();
        assert!(fail(&mut b, t0));
        // Admitted before the trip: ignored while open.
        b.record_success(straggler_ok);
        assert!(!b.record_failure(straggler_bad, t0));
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.open_until(), Some(t0 + 10 * S), "a late failure does not extend the cooldown");

        let t = t0 + 10 * S;
        let probe = b.try_acquire(t).unwrap();
        b.record_success(Permit::ordinary());
        assert!(!b.record_failure(Permit::ordinary(), t));
        assert_eq!(b.state(t), BreakerState::HalfOpen, "only the probe decides");
        b.record_failure(probe, t);
        assert_eq!(b.state(t), BreakerState::Open);
    }

    #[test]
    fn releasing_an_ordinary_permit_changes_nothing() {
        let t0 = Instant::now();
        let mut b = open_at(t0);
        let t = t0 + 10 * S;
        let _probe = b.try_acquire(t).unwrap();
        b.release(Permit::ordinary());
        assert!(b.try_acquire(t).is_none());
    }

    #[test]
    fn threshold_zero_behaves_as_one() {
        let t0 = Instant::now();
        let mut b = breaker(0);
        assert!(fail(&mut b, t0));
    }
}
