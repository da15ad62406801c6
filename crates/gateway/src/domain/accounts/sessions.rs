//! Refresh tokens: 256 random bits, handed to the client once and stored only as their
//! SHA-256 digest, so a copy of the database cannot be replayed as sessions.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use purrify_store::NewRefreshToken;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix that makes a leaked token recognisable to secret scanners.
const PREFIX: &str = "prt_";

/// A freshly generated token's stored half.
pub struct RefreshToken {
    id: String,
    hash: String,
}

impl RefreshToken {
    /// The stored half and the token for the client.
    pub fn generate() -> (Self, String) {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = format!("{PREFIX}{}", B64.encode(raw));
        (Self { id: uuid::Uuid::new_v4().to_string(), hash: digest(&token) }, token)
    }

    pub fn stored(&self, user_id: &str, family_id: &str, expires_at: i64) -> NewRefreshToken {
        NewRefreshToken {
            id: self.id.clone(),
            user_id: user_id.into(),
            family_id: family_id.into(),
            token_hash: self.hash.clone(),
            expires_at,
        }
    }
}

/// Hex SHA-256 of a presented token. A plain hash suffices: the token has 256 bits of
/// entropy, so there is nothing to brute-force.
pub fn digest(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, ta) = RefreshToken::generate();
        let (_, tb) = RefreshToken::generate();
        assert_ne!(ta, tb);
        assert!(ta.starts_with(PREFIX) && ta.len() == PREFIX.len() + 43, "{ta}");
        assert_eq!(a.hash, digest(&ta));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.stored("u", "f", 1).token_hash.contains(&ta[PREFIX.len()..]));
    }
}
