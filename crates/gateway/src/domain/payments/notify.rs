//! WeChat Pay's notifications: verified against the exact bytes received (signature over
//! timestamp, nonce and body by the key `Wechatpay-Serial` names, within 5 minutes),
//! decrypted with the APIv3 key, checked against this merchant and the order, and applied
//! idempotently. WeChat repeats a notification until it is acknowledged (for up to a day),
//! so an already applied one is acknowledged again, and every refusal credits nothing.
//!
//! Logs name the notification's event type, the order numbers and why it was refused; never
//! the body, the decrypted resource, the payer or a key.

use std::time::Duration;

use http::HeaderMap;
use purrify_store::SettledRefund;
use purrify_wechatpay::refund::refund_status;
use purrify_wechatpay::{Event, parse_notification};

use super::{Applied, PaymentService, Refusal};

/// WeChat waits 5 s for an answer; answering later counts as a failure and it retries anyway.
/// Past this the handling is abandoned (rolled back) and a retry is asked for.
const BUDGET: Duration = Duration::from_millis(4500);

impl PaymentService {
    /// Handles one notification; `Ok` means acknowledge it (applied now or before, or an event
    /// this gateway does not act on).
    pub async fn handle_notification(&self, headers: &HeaderMap, body: &[u8]) -> Result<Applied, Refusal> {
        match tokio::time::timeout(BUDGET, self.handle(headers, body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Refusal::Internal("the notification took too long to apply".into())),
        }
    }

    async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> Result<Applied, Refusal> {
        let client = self.wechat.as_deref().ok_or_else(|| Refusal::Internal(super::NOT_CONFIGURED.into()))?;
        let merchant = client.merchant();
        let notification = parse_notification(client.verifier(), &merchant.api_v3_key, headers, body).map_err(|e| {
            tracing::warn!(error = e.category(), "WeChat Pay notification refused");
            if e.is_authentication() { Refusal::Unauthenticated(e.to_string()) } else { Refusal::Rejected(e.category().into()) }
        })?;
        let outcome = match &notification.event {
            Event::Transaction(t) => self.apply_transaction(t).await,
            Event::Refund(r) => {
                if r.mchid != merchant.mch_id {
                    return Err(Refusal::Rejected("the refund is for another merchant".into()));
                }
                let succeeded = r.refund_status == refund_status::SUCCESS;
                match self.db.settle_refund(&r.out_refund_no, succeeded).await {
                    Ok(SettledRefund::Refunded { taken, needed }) => {
                        if taken < needed {
                            tracing::warn!(out_refund_no = %r.out_refund_no, taken, needed, "refund settled: the user had spent part of the credits");
                        } else {
                            tracing::info!(out_refund_no = %r.out_refund_no, taken, "refund settled");
                        }
                        Ok(Applied::Now)
                    }
                    Ok(SettledRefund::Failed) => {
                        tracing::warn!(out_refund_no = %r.out_refund_no, status = %r.refund_status, "refund failed at WeChat; the order is paid again");
                        Ok(Applied::Now)
                    }
                    Ok(SettledRefund::AlreadySettled) => Ok(Applied::Before),
                    Ok(SettledRefund::Unknown) => Err(Refusal::Rejected("no such refund".into())),
                    Err(e) => Err(Refusal::Internal(e.to_string())),
                }
            }
            Event::Unsupported => {
                tracing::info!(event_type = %notification.event_type, "WeChat Pay notification acknowledged without action");
                Ok(Applied::Before)
            }
        };
        match &outcome {
            Err(Refusal::Rejected(why)) => tracing::warn!(event_type = %notification.event_type, why, "WeChat Pay notification rejected"),
            Err(Refusal::Internal(why)) => {
                tracing::error!(event_type = %notification.event_type, why, "WeChat Pay notification not applied")
            }
            _ => {}
        }
        outcome
    }
}
