//! WeChat Pay API v3 for a merchant, written on RustCrypto: request signing
//! (SHA256withRSA, the `WECHATPAY2-SHA256-RSA2048` Authorization header), verification of
//! responses and notifications (platform certificates and/or the WeChat Pay public key,
//! timestamps within 5 minutes, SIGNTEST probes refused), AEAD_AES_256_GCM decryption with
//! the APIv3 key, JSAPI orders with `wx.requestPayment` parameters, order queries, closes
//! and refunds.
//!
//! Everything but [`client`] is pure and synchronous; the client (feature `client`, on by
//! default) is reqwest. HTTPS to WeChat needs the `tls` feature or a reqwest with TLS
//! elsewhere in the build.

pub mod aead;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod error;
pub mod jsapi;
pub mod keys;
pub mod load;
pub mod notify;
pub mod refund;
pub mod sign;
pub mod transaction;
pub mod verify;

pub use aead::EncryptedResource;
#[cfg(feature = "client")]
pub use client::Client;
pub use config::{ApiV3Key, DEFAULT_BASE_URL, MerchantConfig};
pub use error::{Error, Result};
pub use jsapi::{NewJsapiOrder, RequestPayment};
pub use keys::{MerchantKey, PublicKey};
pub use load::{Loaded, Settings};
pub use notify::{Event, Notification, parse_notification};
pub use refund::{NewRefund, Refund, RefundNotification};
pub use transaction::Transaction;
pub use verify::{Clock, Verifier};
