//! Per-client rate limiting: token buckets keyed by client address. Pure state with the time
//! passed in (tested without sleeping), plus a small sweep so idle clients cost no memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets: `rate` tokens per second, at most `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    pub fn disabled(&self) -> bool {
        self.rate <= 0.0
    }

    /// Takes one token for `client` at `now`; `Err(wait)` says when one will be available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.disabled() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(client).or_insert(Bucket { tokens: self.burst, last: now });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Drops buckets that have refilled completely (they behave exactly like absent ones).
    pub fn sweep(&self, now: Instant) -> usize {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let before = buckets.len();
        let full_after = self.burst / self.rate.max(f64::MIN_POSITIVE);
        buckets.retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < full_after);
        before - buckets.len()
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn burst_then_refill_at_rate() {
        let l = RateLimiter::new(2.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(ip(1), t0).is_ok());
        }
        let wait = l.check(ip(1), t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert!(l.check(ip(1), t0 + Duration::from_millis(499)).is_err());
        assert!(l.check(ip(1), t0 + Duration::from_millis(1000)).is_ok());
    }

    #[test]
    fn clients_are_independent() {
        let l = RateLimiter::new(1.0, 1.0);
        let t0 = Instant::now();
        assert!(l.check(ip(1), t0).is_ok());
        assert!(l.check(ip(1), t0).is_err());
        assert!(l.check(ip(2), t0).is_ok());
    }

    #[test]
    fn zero_rate_disables() {
        let l = RateLimiter::new(0.0, 1.0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(l.check(ip(1), t0).is_ok());
        }
        assert!(l.is_empty());
    }

    #[test]
    fn sweep_forgets_only_full_buckets() {
        let l = RateLimiter::new(10.0, 10.0);
        let t0 = Instant::now();
        l.check(ip(1), t0).unwrap();
        l.check(ip(2), t0 + Duration::from_millis(900)).unwrap();
        assert_eq!(l.sweep(t0 + Duration::from_millis(1500)), 1);
        assert_eq!(l.len(), 1);
    }
}
