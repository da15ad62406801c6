//! Notifications: verify the signature, decrypt the resource, type the payload. Answer
//! WeChat within 5 s with 200/204 once applied; anything else makes it retry (for up to a
//! day), so applying must be idempotent on the caller's side.

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::aead::{EncryptedResource, decrypt};
use crate::config::ApiV3Key;
use crate::error::{Error, Result};
use crate::refund::RefundNotification;
use crate::transaction::Transaction;
use crate::verify::Verifier;

pub const TRANSACTION_SUCCESS: &str = "TRANSACTION.SUCCESS";
pub const REFUND_SUCCESS: &str = "REFUND.SUCCESS";
pub const REFUND_ABNORMAL: &str = "REFUND.ABNORMAL";
pub const REFUND_CLOSED: &str = "REFUND.CLOSED";

/// The body WeChat posts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationEnvelope {
    pub id: String,
    pub create_time: String,
    pub event_type: String,
    #[serde(default)]
    pub resource_type: String,
    pub resource: EncryptedResource,
    #[serde(default)]
    pub summary: String,
}

/// A verified, decrypted notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// WeChat's notification id; retries of one event repeat it.
    pub id: String,
    pub create_time: String,
    pub event_type: String,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// TRANSACTION.SUCCESS.
    Transaction(Transaction),
    /// REFUND.SUCCESS, REFUND.ABNORMAL or REFUND.CLOSED (see `refund_status`).
    Refund(RefundNotification),
    /// An event type this crate does not know: verified but not decrypted, for the caller
    /// to acknowledge or ignore.
    Unsupported,
}

/// Verifies `body` against `headers` with `verifier`, then decrypts and types it. The body
/// must be the exact bytes received.
pub fn parse_notification(verifier: &Verifier, key: &ApiV3Key, headers: &HeaderMap, body: &[u8]) -> Result<Notification> {
    verifier.verify(headers, body)?;
    open_notification(key, body)
}

/// Decrypts and types an already verified notification body.
pub fn open_notification(key: &ApiV3Key, body: &[u8]) -> Result<Notification> {
    let envelope: NotificationEnvelope = serde_json::from_slice(body).map_err(|e| Error::Malformed(format!("notification: {e}")))?;
    // serde's messages quote offending input; for decrypted payloads that would leak
    // payer data into logs, so only the error's category is kept.
    let typed = |what: &str, e: serde_json::Error| {
        Error::Malformed(format!("{what} resource: {:?} at line {} column {}", e.classify(), e.line(), e.column()))
    };
    let event = match envelope.event_type.as_str() {
        TRANSACTION_SUCCESS => {
            let plain = decrypt(key, &envelope.resource)?;
            Event::Transaction(serde_json::from_slice(&plain).map_err(|e| typed("transaction", e))?)
        }
        REFUND_SUCCESS | REFUND_ABNORMAL | REFUND_CLOSED => {
            let plain = decrypt(key, &envelope.resource)?;
            Event::Refund(serde_json::from_slice(&plain).map_err(|e| typed("refund", e))?)
        }
        _ => Event::Unsupported,
    };
    Ok(Notification { id: envelope.id, create_time: envelope.create_time, event_type: envelope.event_type, event })
}

/// The body to answer a notification with when it is refused (WeChat logs it and retries).
pub fn failure_body(message: &str) -> String {
    serde_json::json!({ "code": "FAIL", "message": message }).to_string()
}
