//! Recharge orders paid through WeChat Pay API v3 (seeds 000 and 001, DESIGN section 12).
//! A logged-in WeChat user picks a package; an order with a fresh `out_trade_no` is stored
//! pending, placed with WeChat (JSAPI prepay) and answered with the signed
//! `wx.requestPayment` parameters. The payment is applied when WeChat says so, in a verified
//! notification ([`notify`]) or in an order query (the reconciler, [`reconcile`], and a
//! user's own query): exactly once, by the store's conditional status change and the
//! ledger's (kind, ref) key. Admin refunds go through WeChat and settle on its report.
//!
//! Without a merchant configured every operation that needs WeChat is `Unavailable`
//! ("WeChat Pay is not configured"); packages and orders can still be read.

pub mod notify;
pub mod reconcile;

use std::sync::Arc;
use std::time::Duration;

use purrify_store::{BeginRefund, Db, MarkPaid, NewOrder, StoreError};
pub use purrify_store::{Order, OrderStatus, Package, Page, PageRequest, RefundRow};
pub use purrify_wechatpay::RequestPayment;
use purrify_wechatpay::{Client, NewJsapiOrder, NewRefund, Transaction};
use rand::{Rng, TryRngCore};

use crate::domain::audit::{Action, AuditLog, actions};
use crate::domain::{DomainError, DomainResult};

const NOT_CONFIGURED: &str = "WeChat Pay is not configured";
const NO_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Timing of orders and of the reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentSettings {
    /// How long an order can be paid (WeChat's `time_expire`).
    pub order_ttl: Duration,
    /// Orders (and refunds) still unsettled this long after creation are queried.
    pub reconcile_after: Duration,
    /// Between reconciler rounds.
    pub reconcile_interval: Duration,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            order_ttl: Duration::from_secs(1800),
            reconcile_after: Duration::from_secs(120),
            reconcile_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Clone)]
pub struct PaymentService {
    db: Db,
    /// The merchant's client (it holds the merchant's keys and the verifier of WeChat's).
    wechat: Option<Arc<Client>>,
    settings: PaymentSettings,
    /// Where paid orders and refunds are recorded (seed 002's user actions).
    audit: Option<AuditLog>,
}

/// An order placed with WeChat and the parameters the mini program pays it with.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub order: Order,
    pub payment: RequestPayment,
}

/// A merchant number: `prefix` and 24 characters of 62 from the OS RNG (143 bits), within
/// WeChat's 32 characters of `[0-9A-Za-z]`.
pub fn merchant_no(prefix: char) -> String {
    let mut rng = rand::rngs::OsRng.unwrap_err();
    let mut out = String::with_capacity(25);
    out.push(prefix);
    for _ in 0..24 {
        out.push(char::from(NO_ALPHABET[rng.random_range(0..NO_ALPHABET.len())]));
    }
    out
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PaymentService {
    /// `client`: the merchant's, or `None` when WeChat Pay is not configured.
    pub fn new(db: Db, client: Option<Client>, settings: PaymentSettings) -> Self {
        Self { db, wechat: client.map(Arc::new), settings, audit: None }
    }

    /// Records paid orders and refunds in `audit`.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    fn audit(&self, action: Action) {
        if let Some(a) = &self.audit {
            a.record(action);
        }
    }

    pub fn configured(&self) -> bool {
        self.wechat.is_some()
    }

    pub fn settings(&self) -> PaymentSettings {
        self.settings
    }

    fn client(&self) -> DomainResult<&Client> {
        self.wechat.as_deref().ok_or_else(|| DomainError::Unavailable(NOT_CONFIGURED.into()))
    }

    /// Packages on sale.
    pub async fn packages(&self) -> DomainResult<Vec<Package>> {
        Ok(self.db.packages(true).await?)
    }

    /// Creates an order of `package_id` for `user_id` and places it with WeChat.
    pub async fn checkout(&self, user_id: &str, package_id: &str) -> DomainResult<Checkout> {
        let client = self.client()?;
        let package = match self.db.package(package_id.trim()).await? {
            Some(p) if p.active => p,
            _ => return Err(DomainError::invalid("package_id", format!("no package {package_id:?} on sale"))),
        };
        let user = self.db.user(user_id).await?.ok_or_else(|| DomainError::Unauthorized("the account no longer exists".into()))?;
        // JSAPI payments are made by an openid of the merchant's app: only a WeChat login of
        // that mini program has one.
        let merchant = client.merchant();
        let openid = match &user.wechat {
            Some(w) if w.appid == merchant.appid => w.openid.clone(),
            Some(_) => return Err(DomainError::invalid("user", "the WeChat login is for another app than the merchant's")),
            None => return Err(DomainError::invalid("user", "paying with WeChat Pay needs a WeChat login (POST /api/auth/wechat/login)")),
        };
        let expires_at = now_ms() + ms(self.settings.order_ttl);
        let order = loop {
            let new = NewOrder { out_trade_no: merchant_no('P'), user_id: user_id.into(), package: package.clone(), expires_at };
            match self.db.create_order(&new).await {
                // 143 random bits: a collision is a broken RNG, but never a reused number.
                Err(StoreError::Duplicate(_)) => continue,
                other => break other?,
            }
        };
        let beijing = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8");
        let time_expire = chrono::DateTime::from_timestamp_millis(expires_at).map(|t| t.with_timezone(&beijing));
        let description = format!("喵喵美颜 {}", package.name);
        let request = NewJsapiOrder {
            description: &description,
            out_trade_no: &order.out_trade_no,
            total_fen: order.amount_fen,
            openid: &openid,
            time_expire,
            attach: None,
        };
        let prepay_id = match client.create_jsapi_order(&request).await {
            Ok(id) => id,
            Err(e) => {
                // WeChat refused it: it can never be paid. Not reached or no answer: it might
                // exist there, so it stays pending for the reconciler to query and close.
                if matches!(e, purrify_wechatpay::Error::Api { .. } | purrify_wechatpay::Error::InvalidRequest(_)) {
                    self.db.close_order(&order.out_trade_no).await?;
                }
                tracing::warn!(out_trade_no = %order.out_trade_no, error = %e, "WeChat Pay prepay failed");
                return Err(DomainError::Unavailable(format!("WeChat Pay could not take the order: {}", e.category())));
            }
        };
        self.db.set_order_prepay_id(&order.out_trade_no, &prepay_id).await?;
        tracing::info!(out_trade_no = %order.out_trade_no, package = %package.id, amount_fen = order.amount_fen, "order placed");
        let payment = merchant.request_payment(&prepay_id);
        Ok(Checkout { order: Order { prepay_id: Some(prepay_id), ..order }, payment })
    }

    /// A user's own order; a pending one is first brought up to date with WeChat, so the
    /// mini program sees it paid as soon as `wx.requestPayment` returns.
    pub async fn own_order(&self, user_id: &str, out_trade_no: &str) -> DomainResult<Order> {
        let not_found = || DomainError::NotFound(format!("no order {out_trade_no}"));
        let order = self.db.order(out_trade_no).await?.filter(|o| o.user_id == user_id).ok_or_else(not_found)?;
        if order.status != OrderStatus::Pending || !self.configured() {
            return Ok(order);
        }
        if let Err(e) = self.sync_order(&order, false).await {
            tracing::info!(out_trade_no, error = %e, "order query failed; answering with the stored state");
        }
        self.db.order(out_trade_no).await?.ok_or_else(not_found)
    }

    /// Orders newest first, of one user or of everyone, optionally of one status.
    pub async fn orders(&self, user_id: Option<&str>, status: Option<OrderStatus>, page: PageRequest) -> DomainResult<Page<Order>> {
        Ok(self.db.orders(user_id, status, page).await?)
    }

    /// Checks a transaction WeChat reported (notification or query) against this merchant
    /// and applies it. Errors say why it was refused; nothing was credited then.
    pub(crate) async fn apply_transaction(&self, t: &Transaction) -> Result<Applied, Refusal> {
        let merchant = self.client().map_err(|_| Refusal::Internal(NOT_CONFIGURED.into()))?.merchant();
        if t.mchid != merchant.mch_id {
            return Err(Refusal::Rejected("the payment is for another merchant".into()));
        }
        if t.appid != merchant.appid {
            return Err(Refusal::Rejected("the payment is for another app id".into()));
        }
        if !t.is_paid() {
            return Err(Refusal::Rejected(format!("trade_state is {}", t.trade_state)));
        }
        let amount = t.amount.as_ref().ok_or_else(|| Refusal::Rejected("no amount".into()))?;
        if amount.currency != "CNY" {
            return Err(Refusal::Rejected("the currency is not CNY".into()));
        }
        let transaction_id = t.transaction_id.as_deref().ok_or_else(|| Refusal::Rejected("no transaction_id".into()))?;
        match self.db.mark_order_paid(&t.out_trade_no, transaction_id, amount.total).await {
            Ok(MarkPaid::Applied(entry)) => {
                tracing::info!(out_trade_no = %t.out_trade_no, credited = entry.delta, "order paid and credited");
                self.audit(Action {
                    user_id: Some(entry.user_id.clone()),
                    action: actions::ORDER_PAID,
                    target_id: Some(t.out_trade_no.clone()),
                    detail: serde_json::json!({ "amount_fen": amount.total, "credits": entry.delta, "transaction_id": transaction_id }),
                    ..Action::default()
                });
                Ok(Applied::Now)
            }
            Ok(MarkPaid::AlreadyApplied) => Ok(Applied::Before),
            Ok(MarkPaid::Unknown) => Err(Refusal::Rejected("no such order".into())),
            Ok(MarkPaid::AmountMismatch { expected }) => {
                tracing::error!(out_trade_no = %t.out_trade_no, paid = amount.total, expected, "WeChat Pay reports another amount than the order's");
                Err(Refusal::Rejected("the amount is not the order's".into()))
            }
            Err(e) => Err(Refusal::Internal(e.to_string())),
        }
    }

    /// An admin's full refund of a paid order. Refused when the user's balance no longer
    /// covers the order's credits (see `purrify_store::refunds`).
    pub async fn refund(&self, actor: &str, out_trade_no: &str, reason: Option<&str>) -> DomainResult<RefundRow> {
        let client = self.client()?;
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if reason.is_some_and(|r| r.chars().count() > 80) {
            return Err(DomainError::invalid("reason", "at most 80 characters"));
        }
        let out_refund_no = merchant_no('R');
        let (order, row) = match self.db.begin_refund(out_trade_no, &out_refund_no, actor, reason).await? {
            BeginRefund::Started { order, refund } => (order, refund),
            BeginRefund::Unknown => return Err(DomainError::NotFound(format!("no order {out_trade_no}"))),
            BeginRefund::NotRefundable(s) => {
                return Err(DomainError::Conflict(format!("only paid orders can be refunded; this one is {}", s.as_str())));
            }
            BeginRefund::BalanceTooLow { balance, needed } => return Err(DomainError::InsufficientBalance { balance, price: needed }),
        };
        let request = NewRefund {
            out_trade_no,
            out_refund_no: &out_refund_no,
            reason,
            refund_fen: order.amount_fen,
            total_fen: order.amount_fen,
            notify_url: None,
        };
        match client.refund(&request).await {
            Ok(r) if r.status == purrify_wechatpay::refund::refund_status::SUCCESS => {
                self.db.settle_refund(&out_refund_no, true).await?;
            }
            Ok(_) => {}
            Err(e @ (purrify_wechatpay::Error::Api { .. } | purrify_wechatpay::Error::InvalidRequest(_))) => {
                self.db.settle_refund(&out_refund_no, false).await?;
                tracing::warn!(out_trade_no, error = %e, "WeChat Pay refused the refund");
                return Err(DomainError::Conflict(format!("WeChat Pay refused the refund: {}", e.api_code().unwrap_or(e.category()))));
            }
            Err(e) => {
                // It may have reached WeChat: the refund stays processing for the reconciler.
                tracing::warn!(out_trade_no, error = %e, "WeChat Pay refund request failed");
                return Err(DomainError::Unavailable("WeChat Pay did not answer; the refund will be checked with WeChat".into()));
            }
        }
        tracing::info!(out_trade_no, out_refund_no = %out_refund_no, actor, "refund requested");
        self.audit(Action {
            user_id: Some(order.user_id.clone()),
            action: actions::REFUND,
            target_id: Some(out_trade_no.to_owned()),
            detail: serde_json::json!({ "actor": actor, "amount_fen": order.amount_fen, "out_refund_no": out_refund_no, "reason": reason }),
            ..Action::default()
        });
        Ok(self.db.refund(&out_refund_no).await?.unwrap_or(*row))
    }
}

/// How a transaction was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Now,
    Before,
}

/// Why a report from WeChat was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Did not come from WeChat: bad signature, unknown serial, stale, undecryptable.
    Unauthenticated(String),
    /// From WeChat (or well formed) but not applicable here.
    Rejected(String),
    /// Ours: the database, or no merchant.
    Internal(String),
}
