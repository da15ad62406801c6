//! A payment as WeChat describes it, in order queries and in TRANSACTION.SUCCESS
//! notifications (the same object).

use serde::{Deserialize, Serialize};

/// `trade_state` values.
pub mod trade_state {
    pub const SUCCESS: &str = "SUCCESS";
    pub const REFUND: &str = "REFUND";
    pub const NOTPAY: &str = "NOTPAY";
    pub const CLOSED: &str = "CLOSED";
    pub const REVOKED: &str = "REVOKED";
    pub const USERPAYING: &str = "USERPAYING";
    pub const PAYERROR: &str = "PAYERROR";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    /// WeChat's id; absent until paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    /// One of [`trade_state`].
    pub trade_state: String,
    #[serde(default)]
    pub trade_state_desc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// RFC 3339 with WeChat's `+08:00`; absent until paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
}

impl Transaction {
    pub fn is_paid(&self) -> bool {
        self.trade_state == trade_state::SUCCESS
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub openid: String,
}

/// The openid identifies a person: kept out of `Debug` (and so out of logs).
impl std::fmt::Debug for Payer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Payer { openid: <redacted> }")
    }
}

/// Amounts in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    /// The order's total.
    pub total: i64,
    /// What the payer paid (total minus WeChat-funded discounts); absent until paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default = "cny")]
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

pub(crate) fn cny() -> String {
    "CNY".into()
}
