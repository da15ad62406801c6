//! Passwords: argon2id hashing off the async threads, bounded in parallel, and the checks a
//! new password must pass.
//!
//! Parameters: m = 19 MiB, t = 2, p = 1, OWASP's first recommendation for argon2id. One hash
//! costs ~19 MiB and a few tens of milliseconds of one core, so at most
//! [`Passwords::new`]'s `parallel` hashes run at once: a login flood then queues behind the
//! semaphore instead of exhausting memory, and the rate limits turn it away before it gets
//! here.

use std::sync::Arc;

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Params, PasswordVerifier, Version};
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::domain::{DomainError, DomainResult};

/// Longest password accepted (bytes): long enough for any passphrase, short enough that a
/// megabyte "password" is refused before it is hashed.
pub const MAX_PASSWORD_BYTES: usize = 256;
pub const MIN_PASSWORD_CHARS: usize = 8;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        Self { memory_kib: Params::DEFAULT_M_COST, iterations: Params::DEFAULT_T_COST }
    }
}

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password: an unknown account is "verified" against it, so it costs
    /// the same time as a wrong password.
    decoy: Arc<str>,
}

impl Passwords {
    pub fn new(cost: HashCost, parallel: usize) -> DomainResult<Self> {
        let params =
            Params::new(cost.memory_kib, cost.iterations, 1, None).map_err(|e| DomainError::Internal(format!("argon2 parameters: {e}")))?;
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let decoy = hash_blocking(&params, &random)?;
        Ok(Self { params, permits: Arc::new(Semaphore::new(parallel.max(1))), decoy: decoy.into() })
    }

    /// The PHC string of `password`.
    pub async fn hash(&self, password: &str) -> DomainResult<String> {
        let _permit = self.permits.acquire().await.map_err(|_| DomainError::Unavailable("shutting down".into()))?;
        let params = self.params.clone();
        let password = password.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || hash_blocking(&params, &password))
            .await
            .map_err(|e| DomainError::Internal(format!("hashing task: {e}")))?
    }

    /// Whether `password` matches `phc`; `None` verifies against the decoy and is always
    /// false, in the same time.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> DomainResult<bool> {
        let _permit = self.permits.acquire().await.map_err(|_| DomainError::Unavailable("shutting down".into()))?;
        let known = phc.is_some();
        let phc = phc.map_or_else(|| self.decoy.to_string(), str::to_owned);
        let password = password.as_bytes().to_vec();
        let ok = tokio::task::spawn_blocking(move || Argon2::default().verify_password(&password, phc.as_str()).is_ok())
            .await
            .map_err(|e| DomainError::Internal(format!("verification task: {e}")))?;
        Ok(ok && known)
    }
}

fn hash_blocking(params: &Params, password: &[u8]) -> DomainResult<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_with_salt(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| DomainError::Internal(format!("argon2: {e}")))
}

/// Why a new password is refused, or `None`. `identities` are the account's email and
/// username: a password equal to either is refused.
pub fn weakness(password: &str, identities: &[&str]) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Some(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Some(format!("must be at most {MAX_PASSWORD_BYTES} bytes"));
    }
    if !password.chars().any(char::is_alphabetic) || !password.chars().any(|c| c.is_ascii_digit()) {
        return Some("must contain a letter and a digit".into());
    }
    let lower = password.to_lowercase();
    if identities.iter().any(|i| !i.is_empty() && lower == i.to_lowercase()) {
        return Some("must not be your email or username".into());
    }
    if COMMON.contains(&lower.as_str()) {
        return Some("is one of the most common passwords".into());
    }
    None
}

/// Passwords at the top of every leaked-password list that would pass the rules above.
const COMMON: &[&str] = &["password1", "password12", "qwerty123", "1q2w3e4r", "abc12345", "iloveyou1", "qwertyuiop1", "a1b2c3d4"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_named() {
        assert!(weakness("short1", &[]).unwrap().contains("at least 8"));
        assert!(weakness("onlyletters", &[]).unwrap().contains("letter and a digit"));
        assert!(weakness("12345678", &[]).unwrap().contains("letter and a digit"));
        assert!(weakness("Password1", &[]).unwrap().contains("common"));
        assert!(weakness("alice2024", &["a@b.c", "Alice2024"]).unwrap().contains("username"));
        assert!(weakness(&"a1".repeat(200), &[]).unwrap().contains("at most"));
        assert_eq!(weakness("correct horse 42", &[]), None);
        assert_eq!(weakness("password123", &[]), None, "seed 002's own example stays usable");
    }

    #[tokio::test]
    async fn hashes_verify_and_the_decoy_never_does() {
        let p = Passwords::new(HashCost { memory_kib: 1024, iterations: 1 }, 2).unwrap();
        let h = p.hash("correct horse 42").await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{h}");
        assert!(p.verify("correct horse 42", Some(&h)).await.unwrap());
        assert!(!p.verify("correct horse 43", Some(&h)).await.unwrap());
        assert!(!p.verify("correct horse 42", None).await.unwrap());
        assert_ne!(p.hash("correct horse 42").await.unwrap(), h, "salted");
    }
}
