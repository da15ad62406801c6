//! Refunds: `POST /v3/refund/domestic/refunds`, its query, and REFUND.* notifications.

use serde::{Deserialize, Serialize};

use crate::config::MerchantConfig;
use crate::error::{Error, Result};
use crate::jsapi::check_merchant_no;

pub const PATH: &str = "/v3/refund/domestic/refunds";

/// `status` / `refund_status` values.
pub mod refund_status {
    pub const SUCCESS: &str = "SUCCESS";
    pub const CLOSED: &str = "CLOSED";
    pub const PROCESSING: &str = "PROCESSING";
    pub const ABNORMAL: &str = "ABNORMAL";
}

/// What the caller decides about a refund.
#[derive(Debug, Clone)]
pub struct NewRefund<'a> {
    pub out_trade_no: &'a str,
    /// Unique per merchant; repeating it repeats the same refund, not a second one.
    pub out_refund_no: &'a str,
    /// Shown to the payer (80 characters).
    pub reason: Option<&'a str>,
    /// In fen: what to give back, at most what is left of `total_fen`.
    pub refund_fen: i64,
    /// The original order's total in fen.
    pub total_fen: i64,
    /// Where REFUND.* notifications go; the merchant's notify URL when `None`.
    pub notify_url: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub out_trade_no: String,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    pub amount: RefundRequestAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequestAmount {
    pub refund: i64,
    pub total: i64,
    pub currency: String,
}

impl MerchantConfig {
    pub fn refund_request(&self, r: &NewRefund<'_>) -> Result<RefundRequest> {
        check_merchant_no("out_trade_no", r.out_trade_no)?;
        check_merchant_no("out_refund_no", r.out_refund_no)?;
        if r.refund_fen <= 0 || r.refund_fen > r.total_fen {
            return Err(Error::InvalidRequest("the refund must be 1 fen to the order's total".into()));
        }
        if r.reason.is_some_and(|s| s.chars().count() > 80) {
            return Err(Error::InvalidRequest("the reason is limited to 80 characters".into()));
        }
        Ok(RefundRequest {
            out_trade_no: r.out_trade_no.into(),
            out_refund_no: r.out_refund_no.into(),
            reason: r.reason.map(Into::into),
            notify_url: Some(r.notify_url.unwrap_or(&self.notify_url).into()),
            amount: RefundRequestAmount { refund: r.refund_fen, total: r.total_fen, currency: crate::transaction::cny() },
        })
    }
}

/// A refund as the API returns it (creation and query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub user_received_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default)]
    pub create_time: String,
    /// One of [`refund_status`].
    pub status: String,
    pub amount: RefundAmount,
}

/// Amounts in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(default)]
    pub payer_total: i64,
    #[serde(default)]
    pub payer_refund: i64,
    #[serde(default = "crate::transaction::cny")]
    pub currency: String,
}

/// The decrypted resource of REFUND.SUCCESS, REFUND.ABNORMAL and REFUND.CLOSED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotification {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    /// One of [`refund_status`] (never `PROCESSING` here).
    pub refund_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default)]
    pub user_received_account: String,
    pub amount: RefundAmount,
}
