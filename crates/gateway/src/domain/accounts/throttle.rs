//! Login rate limits: a token bucket per client address and one per account (email or WeChat
//! code owner), both spent before any password is hashed, so a flood costs the server
//! neither CPU nor memory and a slow guessing campaign spread over many addresses still
//! meets the per-account limit. Kept per gateway replica; with N replicas an attacker gets
//! at most N times the rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::{DomainError, DomainResult};

/// Attempts per minute and the burst allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_minute: f64,
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Keyed token buckets; a rate of 0 per minute disables them.
pub struct Buckets {
    rate: Rate,
    map: Mutex<HashMap<String, Bucket>>,
}

/// Keys kept at most; past it, full buckets are dropped first (they carry no state).
const MAX_KEYS: usize = 100_000;

impl Buckets {
    pub fn new(rate: Rate) -> Self {
        Self { rate, map: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate.per_minute <= 0.0 {
            return Ok(());
        }
        let per_second = self.rate.per_minute / 60.0;
        let burst = self.rate.burst.max(1.0);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst);
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
        }
    }

    /// Drops buckets that have refilled completely.
    pub fn sweep(&self, now: Instant) {
        let per_second = self.rate.per_minute / 60.0;
        let burst = self.rate.burst.max(1.0);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst);
    }
}

/// The two login limits.
pub struct LoginThrottle {
    by_address: Buckets,
    by_account: Buckets,
}

impl LoginThrottle {
    pub fn new(per_address: Rate, per_account: Rate) -> Self {
        Self { by_address: Buckets::new(per_address), by_account: Buckets::new(per_account) }
    }

    /// Spends one attempt of the address and, when known, of the account.
    pub fn check(&self, address: &str, account: Option<&str>) -> DomainResult<()> {
        let now = Instant::now();
        let wait = self.by_address.take(address, now).err().or_else(|| account.and_then(|a| self.by_account.take(a, now).err()));
        match wait {
            None => Ok(()),
            Some(wait) => Err(DomainError::RateLimited {
                message: "too many login attempts; wait before trying again".into(),
                retry_after: wait.as_secs().max(1),
            }),
        }
    }

    pub fn sweep(&self) {
        let now = Instant::now();
        self.by_address.sweep(now);
        self.by_account.sweep(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_their_rate() {
        let b = Buckets::new(Rate { per_minute: 6.0, burst: 2.0 });
        let t0 = Instant::now();
        assert!(b.take("a", t0).is_ok());
        assert!(b.take("a", t0).is_ok());
        let wait = b.take("a", t0).unwrap_err();
        assert!((9.0..=10.0).contains(&wait.as_secs_f64()), "{wait:?}");
        assert!(b.take("b", t0).is_ok(), "keys are independent");
        assert!(b.take("a", t0 + Duration::from_secs(10)).is_ok());
        b.sweep(t0 + Duration::from_secs(3600));
        assert!(b.map.lock().unwrap().is_empty());
    }

    #[test]
    fn the_account_limit_holds_across_addresses() {
        let t = LoginThrottle::new(Rate { per_minute: 60.0, burst: 10.0 }, Rate { per_minute: 1.0, burst: 3.0 });
        for i in 0..3 {
            t.check(&format!("10.0.0.{i}"), Some("alice@example.com")).unwrap();
        }
        let e = t.check("10.0.0.9", Some("alice@example.com")).unwrap_err();
        assert!(matches!(e, DomainError::RateLimited { retry_after, .. } if retry_after >= 1));
        t.check("10.0.0.9", Some("bob@example.com")).unwrap();
    }
}
