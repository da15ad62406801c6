//! The merchant's identity and secrets. Loading them from files and the environment is in
//! [`crate::load`]; this is the in-memory form, whose `Debug` never shows a secret.

use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::keys::MerchantKey;
use crate::sign::{Authorization, RequestToSign};

/// WeChat's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";

/// The APIv3 key: 32 bytes set in the merchant platform, the AES-256-GCM key of
/// notification and certificate payloads.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiV3Key([u8; 32]);

impl ApiV3Key {
    /// WeChat's APIv3 keys are 32 ASCII characters, used as the raw AES key bytes.
    pub fn new(key: &str) -> Result<Self> {
        let bytes: [u8; 32] =
            key.as_bytes().try_into().map_err(|_| Error::Config(format!("the APIv3 key must be 32 bytes, it has {}", key.len())))?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for ApiV3Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiV3Key(<redacted>)")
    }
}

/// A merchant as API v3 knows it. `Debug` shows identifiers (merchant number, app id,
/// certificate serial, URLs) but never the private key or the APIv3 key.
#[derive(Clone, Debug)]
pub struct MerchantConfig {
    /// `mchid`, the merchant number.
    pub mch_id: String,
    /// The mini program's (or official account's) `appid` payments are made in.
    pub appid: String,
    /// Serial of the merchant API certificate (`apiclient_cert.pem`) whose key signs.
    pub serial_no: String,
    pub key: MerchantKey,
    pub api_v3_key: ApiV3Key,
    /// Without a trailing slash.
    pub base_url: String,
    /// Where WeChat sends payment (and, by default, refund) notifications.
    pub notify_url: String,
}

impl MerchantConfig {
    /// From the private key's PEM (`apiclient_key.pem`) and the other settings, with
    /// WeChat's production base URL.
    pub fn from_pem(mch_id: &str, appid: &str, serial_no: &str, private_key_pem: &str, api_v3_key: &str, notify_url: &str) -> Result<Self> {
        Self::new(mch_id, appid, serial_no, MerchantKey::from_pem(private_key_pem)?, ApiV3Key::new(api_v3_key)?, notify_url)
    }

    pub fn new(mch_id: &str, appid: &str, serial_no: &str, key: MerchantKey, api_v3_key: ApiV3Key, notify_url: &str) -> Result<Self> {
        for (name, v) in [("mch_id", mch_id), ("appid", appid), ("serial_no", serial_no), ("notify_url", notify_url)] {
            if v.trim().is_empty() {
                return Err(Error::Config(format!("{name} is empty")));
            }
        }
        if !(notify_url.starts_with("https://") || notify_url.starts_with("http://")) {
            return Err(Error::Config("notify_url must be an http(s) URL".into()));
        }
        Ok(Self {
            mch_id: mch_id.into(),
            appid: appid.into(),
            // Certificate serials are hex; WeChat compares them upper-case.
            serial_no: serial_no.trim().to_ascii_uppercase(),
            key,
            api_v3_key,
            base_url: DEFAULT_BASE_URL.into(),
            notify_url: notify_url.into(),
        })
    }

    /// Points the client elsewhere (a test fake, or WeChat's disaster-recovery domain
    /// `https://api2.mch.weixin.qq.com`).
    pub fn with_base_url(mut self, base_url: &str) -> Self {
        self.base_url = base_url.trim_end_matches('/').to_owned();
        self
    }

    /// The `Authorization` header for a request signed now with a fresh nonce.
    pub fn authorization(&self, method: &str, path_and_query: &str, body: &[u8]) -> String {
        let nonce = crate::sign::nonce();
        let request = RequestToSign { method, path_and_query, body, timestamp: chrono::Utc::now().timestamp(), nonce: &nonce };
        Authorization::sign(&self.key, &self.mch_id, &self.serial_no, &request).header_value()
    }
}
