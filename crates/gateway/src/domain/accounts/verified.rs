//! Access tokens already verified, so a client polling with the same token pays for the
//! signature check and the JSON parsing once, not per request. Entries are keyed by the
//! token's signature and hold the whole token, compared in full on every hit, so a forged
//! payload carrying a copied signature never matches; each entry lives until its token
//! expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::jwt::Claims;

const MAX_ENTRIES: usize = 50_000;

/// Signature -> (the whole token, its claims).
type Entries = HashMap<Box<str>, (Box<str>, Arc<Claims>)>;

#[derive(Default)]
pub struct VerifiedTokens {
    map: Mutex<Entries>,
}

fn signature(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(_, s)| s)
}

impl VerifiedTokens {
    /// The claims of `token` if it was verified before and has not expired at `now` (unix s).
    pub fn get(&self, token: &str, now: i64) -> Option<Arc<Claims>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (full, claims) = map.get(signature(token))?;
        (**full == *token && claims.exp > now).then(|| claims.clone())
    }

    pub fn put(&self, token: &str, claims: Arc<Claims>, now: i64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, c)| c.exp > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(signature(token).into(), (token.into(), claims));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Arc<Claims> {
        Arc::new(Claims { sub: "u".into(), role: "user".into(), ver: 0, iat: 0, exp, iss: "purrify".into() })
    }

    #[test]
    fn hits_need_the_whole_token_and_an_unexpired_one() {
        let v = VerifiedTokens::default();
        v.put("h.p.sig", claims(100), 10);
        assert!(v.get("h.p.sig", 50).is_some());
        assert!(v.get("h.forged.sig", 50).is_none(), "same signature, other payload");
        assert!(v.get("h.p.sig", 100).is_none(), "expired");
    }
}
