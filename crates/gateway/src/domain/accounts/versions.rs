//! The token-version check without a database read per request: each user's version, active
//! flag and role are cached for at most [`STALENESS`]. This replica applies its own changes
//! (password change, deactivation, role change) to the cache at once, so there they take
//! effect immediately; another replica sees them within [`STALENESS`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use purrify_store::TokenState;

/// How stale a cached token state may be.
pub const STALENESS: Duration = Duration::from_secs(5);
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct VersionCache {
    map: Mutex<HashMap<String, (TokenState, Instant)>>,
}

impl VersionCache {
    pub fn get(&self, user: &str, now: Instant) -> Option<TokenState> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(user).filter(|(_, at)| now.saturating_duration_since(*at) < STALENESS).map(|(s, _)| *s)
    }

    pub fn put(&self, user: &str, state: TokenState, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(user) {
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < STALENESS);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(user.to_owned(), (state, now));
    }

    pub fn forget(&self, user: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use purrify_store::Role;

    #[test]
    fn entries_expire_after_the_staleness_bound() {
        let c = VersionCache::default();
        let s = TokenState { token_version: 2, active: true, role: Role::User };
        let t0 = Instant::now();
        c.put("u", s, t0);
        assert_eq!(c.get("u", t0 + Duration::from_secs(1)), Some(s));
        assert_eq!(c.get("u", t0 + STALENESS), None);
        c.put("u", s, t0);
        c.forget("u");
        assert_eq!(c.get("u", t0), None);
    }
}
