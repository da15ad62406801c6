//! Verification of what claims to come from WeChat: API responses and notifications carry
//! `Wechatpay-Timestamp`, `-Nonce`, `-Signature` and `-Serial`, the signature covering
//! `TIMESTAMP\nNONCE\nBODY\n`, made with the key `Wechatpay-Serial` names: a platform
//! certificate (hex serial) or the WeChat Pay public key (`PUB_KEY_ID_…`). Both kinds may be
//! configured at once, as WeChat's migration from certificates to the public key requires.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;

use crate::error::{Error, Result};
use crate::keys::PublicKey;
use crate::sign::response_message;

pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";

/// WeChat sends some notifications with deliberately wrong signatures that start with this,
/// to check that merchants verify; they must be refused.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// How far `Wechatpay-Timestamp` may be from now, either way (WeChat's guidance: 5 minutes).
pub const MAX_SKEW_SECS: i64 = 300;

/// Unix seconds now; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The four signature headers of one response or notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
}

impl SignedHeaders {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self> {
        let get = |name: &'static str| -> Result<String> {
            let v = headers.get(name).ok_or(Error::MissingHeader(name))?;
            Ok(v.to_str().map_err(|_| Error::MissingHeader(name))?.trim().to_owned())
        };
        Ok(Self {
            timestamp: get(HEADER_TIMESTAMP)?,
            nonce: get(HEADER_NONCE)?,
            signature: get(HEADER_SIGNATURE)?,
            serial: get(HEADER_SERIAL)?,
        })
    }
}

/// The keys WeChat signs with, by serial, and the clock timestamps are judged by.
#[derive(Clone)]
pub struct Verifier {
    keys: BTreeMap<String, PublicKey>,
    clock: Clock,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("serials", &self.keys.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// No keys yet (everything is refused as an unknown serial) and the system clock.
    pub fn new() -> Self {
        Self { keys: BTreeMap::new(), clock: Arc::new(|| chrono::Utc::now().timestamp()) }
    }

    /// Trusts a platform certificate (a `wechatpay_*.pem`), under its own serial. Returns
    /// the serial.
    pub fn add_platform_certificate_pem(&mut self, pem: &str) -> Result<String> {
        let (serial, key) = PublicKey::from_certificate_pem(pem)?;
        self.keys.insert(serial.clone(), key);
        Ok(serial)
    }

    /// Trusts the WeChat Pay public key with its id (`PUB_KEY_ID_…`, shown next to the key
    /// in the merchant platform).
    pub fn add_public_key(&mut self, id: &str, key: PublicKey) -> Result<()> {
        let id = id.trim();
        if id.is_empty() {
            return Err(Error::Config("the WeChat Pay public key needs its id (PUB_KEY_ID_…)".into()));
        }
        self.keys.insert(id.to_owned(), key);
        Ok(())
    }

    pub fn with_public_key(mut self, id: &str, key: PublicKey) -> Result<Self> {
        self.add_public_key(id, key)?;
        Ok(self)
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The serials and public key ids trusted.
    pub fn serials(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a response or notification: its headers and its body exactly as received.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<()> {
        self.verify_signed(&SignedHeaders::from_headers(headers)?, body)
    }

    /// Checks in order of cost: a SIGNTEST probe, the serial, the timestamp, then RSA.
    pub fn verify_signed(&self, h: &SignedHeaders, body: &[u8]) -> Result<()> {
        if h.signature.starts_with(SIGNTEST_PREFIX) {
            return Err(Error::BadSignature);
        }
        // Certificate serials are hex that may arrive in either case; public key ids are
        // matched as written.
        let key = self.keys.get(&h.serial).or_else(|| self.keys.get(&h.serial.to_ascii_uppercase()));
        let key = key.ok_or_else(|| Error::UnknownSerial(h.serial.chars().take(64).collect()))?;
        let timestamp: i64 = h.timestamp.parse().map_err(|_| Error::Malformed("Wechatpay-Timestamp is not a number".into()))?;
        let skew = (self.clock)().saturating_sub(timestamp);
        if skew.abs() > MAX_SKEW_SECS {
            return Err(Error::StaleTimestamp { timestamp, skew_secs: skew });
        }
        key.verify_base64(&response_message(&h.timestamp, &h.nonce, body), &h.signature)
    }
}

#[cfg(test)]
mod tests;
