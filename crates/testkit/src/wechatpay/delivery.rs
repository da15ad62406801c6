//! Notifications the way WeChat sends them: the resource encrypted with the APIv3 key, the
//! body signed with the platform key (`TIMESTAMP\nNONCE\nBODY\n`), POSTed to the order's
//! notify URL; anything but a 2xx answer within the attempt timeout is retried.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use purrify_wechatpay::transaction::{Payer, Transaction, TransactionAmount};
use purrify_wechatpay::verify::{HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE, HEADER_TIMESTAMP, SIGNTEST_PREFIX};
use purrify_wechatpay::{RefundNotification, aead, sign};

use super::{FakeOrder, FakeRefund, Shared};

/// One POST of a notification.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The receiver's status, `None` when it did not answer in time or at all.
    pub status: Option<u16>,
    /// Why there was no status.
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl Attempt {
    /// WeChat takes 200 or 204 (any 2xx here) as "received".
    pub fn acknowledged(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// All attempts of one notification.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub notification_id: String,
    pub attempts: Vec<Attempt>,
}

impl Delivery {
    pub fn acknowledged(&self) -> bool {
        self.attempts.last().is_some_and(Attempt::acknowledged)
    }
}

/// Notifications that must be refused. Each is otherwise well formed.
#[derive(Clone, Debug)]
pub enum Forgery {
    /// A genuine signature with one byte changed.
    ForgedSignature,
    /// Signed by the platform key but naming a key id the merchant does not have.
    WrongSerial,
    /// Correctly signed ten minutes ago.
    StaleTimestamp,
    /// A ciphertext the APIv3 key did not produce, correctly signed.
    TamperedCiphertext,
    /// WeChat's `WECHATPAY/SIGNTEST/` probe.
    SignTestProbe,
    /// A genuine notification of another merchant's payment.
    OtherMerchant,
    /// A genuine notification for another app id.
    OtherAppid,
    /// A genuine notification whose amount differs from the order's.
    WrongAmount(i64),
    /// A genuine notification for an order number never created.
    UnknownOrder,
}

const FORGER_SERIAL: &str = "PUB_KEY_ID_0114999999999999999999999999";

pub(super) fn now_beijing() -> String {
    let tz = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    chrono::Utc::now().with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Marks the order paid (once) and returns it.
pub(super) fn mark_paid(shared: &Shared, out_trade_no: &str) -> FakeOrder {
    let id = shared.next_id();
    let mut state = shared.state.lock().unwrap();
    let order = state.orders.get_mut(out_trade_no).unwrap_or_else(|| panic!("the fake has no order {out_trade_no}"));
    match order.trade_state.as_str() {
        "NOTPAY" => {
            order.trade_state = "SUCCESS".into();
            order.transaction_id = Some(format!("42000{id:023}"));
            order.success_time = Some(now_beijing());
        }
        "SUCCESS" | "REFUND" => {}
        other => panic!("order {out_trade_no} is {other}, it cannot be paid"),
    }
    order.clone()
}

/// The order as TRANSACTION.SUCCESS describes it.
fn paid_transaction(shared: &Shared, order: &FakeOrder) -> Transaction {
    Transaction {
        appid: order.appid.clone(),
        mchid: shared.cfg.mch_id.clone(),
        out_trade_no: order.out_trade_no.clone(),
        transaction_id: Some(order.transaction_id.clone().unwrap_or_else(|| format!("42000{:023}", shared.next_id()))),
        trade_type: Some("JSAPI".into()),
        trade_state: "SUCCESS".into(),
        trade_state_desc: "支付成功".into(),
        bank_type: Some("OTHERS".into()),
        attach: order.attach.clone(),
        success_time: Some(order.success_time.clone().unwrap_or_else(now_beijing)),
        payer: Some(Payer { openid: order.openid.clone() }),
        amount: Some(TransactionAmount {
            total: order.total,
            payer_total: Some(order.total),
            currency: "CNY".into(),
            payer_currency: Some("CNY".into()),
        }),
    }
}

/// The body WeChat posts: a fresh notification id, the payload encrypted.
fn envelope(shared: &Shared, event_type: &str, original_type: &str, summary: &str, payload: &impl serde::Serialize) -> (String, Vec<u8>) {
    let id = format!("EV-{:020}", shared.next_id());
    let plain = serde_json::to_vec(payload).unwrap();
    let resource = aead::encrypt(&shared.cfg.api_v3_key, original_type, original_type, &plain);
    let body = serde_json::json!({
        "id": id, "create_time": now_beijing(), "resource_type": "encrypt-resource",
        "event_type": event_type, "summary": summary, "resource": resource,
    });
    (id, serde_json::to_vec(&body).unwrap())
}

struct Signing {
    serial: String,
    timestamp: i64,
    signature: Option<String>,
    corrupt: bool,
}

impl Signing {
    fn genuine(shared: &Shared) -> Self {
        Self { serial: shared.public_key_id.clone(), timestamp: chrono::Utc::now().timestamp(), signature: None, corrupt: false }
    }
}

async fn post(shared: &Shared, url: &str, body: &[u8], signing: &Signing) -> Attempt {
    let nonce = sign::nonce();
    let mut signature = signing
        .signature
        .clone()
        .unwrap_or_else(|| shared.key.sign_base64(&sign::response_message(&signing.timestamp.to_string(), &nonce, body)));
    if signing.corrupt {
        let mut raw = B64.decode(&signature).unwrap();
        raw[17] ^= 0x5a;
        signature = B64.encode(raw);
    }
    let started = std::time::Instant::now();
    let sent = shared
        .http
        .post(url)
        .header("Content-Type", "application/json")
        // What WeChat's notifier sends.
        .header("User-Agent", "Mozilla/4.0")
        .header(HEADER_TIMESTAMP, signing.timestamp.to_string())
        .header(HEADER_NONCE, nonce)
        .header(HEADER_SIGNATURE, signature)
        .header(HEADER_SERIAL, signing.serial.as_str())
        .body(body.to_vec())
        .send()
        .await;
    let elapsed = started.elapsed();
    match sent {
        Ok(r) => Attempt { status: Some(r.status().as_u16()), error: None, elapsed },
        Err(e) => Attempt { status: None, error: Some(if e.is_timeout() { "timed out".into() } else { e.to_string() }), elapsed },
    }
}

/// Attempts until acknowledged or out of retries, freshly signed each time (same body,
/// same notification id), then records the delivery.
async fn deliver(shared: &Shared, url: &str, event_type: &str, id: String, body: &[u8]) -> Delivery {
    let mut attempts = Vec::new();
    for attempt in 0..=shared.cfg.retry_intervals.len() {
        let a = post(shared, url, body, &Signing::genuine(shared)).await;
        let done = a.acknowledged();
        attempts.push(a);
        if done {
            break;
        }
        if let Some(wait) = shared.cfg.retry_intervals.get(attempt) {
            tokio::time::sleep(*wait).await;
        }
    }
    let delivery = Delivery { notification_id: id, attempts };
    shared.state.lock().unwrap().deliveries.push((event_type.to_owned(), delivery.clone()));
    delivery
}

pub(super) async fn deliver_transaction(shared: &Shared, order: &FakeOrder) -> Delivery {
    let (id, body) = envelope(shared, "TRANSACTION.SUCCESS", "transaction", "支付成功", &paid_transaction(shared, order));
    deliver(shared, &order.notify_url, "TRANSACTION.SUCCESS", id, &body).await
}

pub(super) async fn deliver_refund(shared: &Shared, refund: &FakeRefund) -> Delivery {
    let payload = RefundNotification {
        mchid: shared.cfg.mch_id.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        transaction_id: refund.transaction_id.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        refund_id: refund.refund_id.clone(),
        refund_status: refund.status.clone(),
        success_time: refund.success_time.clone(),
        user_received_account: "支付用户零钱".into(),
        amount: super::server::refund_amount(refund),
    };
    let event_type = format!("REFUND.{}", refund.status);
    let summary = if refund.status == "SUCCESS" { "退款成功" } else { "退款异常" };
    let (id, body) = envelope(shared, &event_type, "refund", summary, &payload);
    deliver(shared, &refund.notify_url, &event_type, id, &body).await
}

pub(super) async fn notify_concurrently(shared: &Arc<Shared>, order: &FakeOrder, n: usize) -> Vec<Attempt> {
    let (_, body) = envelope(shared, "TRANSACTION.SUCCESS", "transaction", "支付成功", &paid_transaction(shared, order));
    let body = Arc::new(body);
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (shared, body, url) = (shared.clone(), body.clone(), order.notify_url.clone());
        sends.spawn(async move { post(&shared, &url, &body, &Signing::genuine(&shared)).await });
    }
    sends.join_all().await
}

pub(super) async fn send_forgery(shared: &Shared, order: &FakeOrder, forgery: Forgery) -> Attempt {
    let mut tx = paid_transaction(shared, order);
    let mut signing = Signing::genuine(shared);
    match &forgery {
        Forgery::ForgedSignature => signing.corrupt = true,
        Forgery::WrongSerial => signing.serial = FORGER_SERIAL.into(),
        Forgery::StaleTimestamp => signing.timestamp -= 600,
        Forgery::SignTestProbe => signing.signature = Some(format!("{SIGNTEST_PREFIX}{}", B64.encode(sign::nonce()))),
        Forgery::OtherMerchant => tx.mchid = "1900000109".into(),
        Forgery::OtherAppid => tx.appid = "wx0000000000000000".into(),
        Forgery::WrongAmount(total) => {
            tx.amount = Some(TransactionAmount { total: *total, payer_total: Some(*total), ..tx.amount.take().unwrap() })
        }
        Forgery::UnknownOrder => tx.out_trade_no = format!("NOSUCH{}", shared.next_id()),
        Forgery::TamperedCiphertext => {}
    }
    let (_, mut body) = envelope(shared, "TRANSACTION.SUCCESS", "transaction", "支付成功", &tx);
    if let Forgery::TamperedCiphertext = forgery {
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut raw = B64.decode(v["resource"]["ciphertext"].as_str().unwrap()).unwrap();
        raw[0] ^= 1;
        v["resource"]["ciphertext"] = B64.encode(raw).into();
        body = serde_json::to_vec(&v).unwrap();
    }
    post(shared, &order.notify_url, &body, &signing).await
}
