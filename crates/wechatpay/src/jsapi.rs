//! JSAPI (mini program) payments: the prepay request, its answer, and the parameters of
//! `wx.requestPayment` that the mini program calls with.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::config::MerchantConfig;
use crate::error::{Error, Result};
use crate::sign::pay_sign_message;

pub const PATH: &str = "/v3/pay/transactions/jsapi";

/// What the caller decides about an order.
#[derive(Debug, Clone)]
pub struct NewJsapiOrder<'a> {
    /// Shown to the payer; WeChat allows 127 characters.
    pub description: &'a str,
    /// The merchant's order number, unique per merchant: 6 to 32 of `[0-9A-Za-z_-]`.
    pub out_trade_no: &'a str,
    /// In fen, positive.
    pub total_fen: i64,
    /// The payer's openid under the merchant's appid.
    pub openid: &'a str,
    /// When WeChat stops accepting payment for it.
    pub time_expire: Option<DateTime<FixedOffset>>,
    /// Echoed back in queries and notifications (128 characters).
    pub attach: Option<&'a str>,
}

/// The body of `POST /v3/pay/transactions/jsapi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsapiOrderRequest {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    pub amount: OrderAmount,
    pub payer: crate::transaction::Payer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAmount {
    pub total: i64,
    #[serde(default = "crate::transaction::cny")]
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayResponse {
    pub prepay_id: String,
}

/// Checks an `out_trade_no` or `out_refund_no`. The set is narrower than WeChat's (which
/// also allows `|` and `*`) so numbers can be put in URL paths without escaping, which the
/// signature would otherwise have to match byte for byte.
pub fn check_merchant_no(what: &str, no: &str) -> Result<()> {
    let ok = (6..=32).contains(&no.len()) && no.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(Error::InvalidRequest(format!("{what} must be 6 to 32 of [0-9A-Za-z_-]"))) }
}

impl MerchantConfig {
    /// The prepay request for `order`, validated as WeChat would.
    pub fn jsapi_order(&self, order: &NewJsapiOrder<'_>) -> Result<JsapiOrderRequest> {
        check_merchant_no("out_trade_no", order.out_trade_no)?;
        if order.total_fen <= 0 {
            return Err(Error::InvalidRequest("the amount must be at least 1 fen".into()));
        }
        if order.description.is_empty() || order.description.chars().count() > 127 {
            return Err(Error::InvalidRequest("the description must be 1 to 127 characters".into()));
        }
        if order.openid.is_empty() {
            return Err(Error::InvalidRequest("JSAPI payments need the payer's openid".into()));
        }
        if order.attach.is_some_and(|a| a.chars().count() > 128) {
            return Err(Error::InvalidRequest("attach is limited to 128 characters".into()));
        }
        Ok(JsapiOrderRequest {
            appid: self.appid.clone(),
            mchid: self.mch_id.clone(),
            description: order.description.into(),
            out_trade_no: order.out_trade_no.into(),
            // WeChat wants RFC 3339 to the second (`2018-06-08T10:34:56+08:00`).
            time_expire: order.time_expire.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)),
            attach: order.attach.map(Into::into),
            notify_url: self.notify_url.clone(),
            amount: OrderAmount { total: order.total_fen, currency: crate::transaction::cny() },
            payer: crate::transaction::Payer { openid: order.openid.into() },
        })
    }

    /// The parameters for `wx.requestPayment`, signed now with a fresh nonce.
    pub fn request_payment(&self, prepay_id: &str) -> RequestPayment {
        self.request_payment_at(prepay_id, chrono::Utc::now().timestamp(), &crate::sign::nonce())
    }

    pub fn request_payment_at(&self, prepay_id: &str, timestamp: i64, nonce: &str) -> RequestPayment {
        let time_stamp = timestamp.to_string();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = self.key.sign_base64(&pay_sign_message(&self.appid, &time_stamp, nonce, &package));
        RequestPayment { app_id: self.appid.clone(), time_stamp, nonce_str: nonce.into(), package, sign_type: "RSA".into(), pay_sign }
    }
}

/// `wx.requestPayment`'s object, serialised with the mini program's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPayment {
    #[serde(rename = "appId")]
    pub app_id: String,
    /// Unix seconds as a string, as the mini program API wants.
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    /// `prepay_id=…`.
    pub package: String,
    /// Always `RSA` in API v3.
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}
