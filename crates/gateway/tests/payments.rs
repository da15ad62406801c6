//! Recharge orders paid through WeChat Pay v3, end to end on SQLite and PostgreSQL: a real
//! listening gateway, a local fake WeChat Pay (its own platform key, checking the merchant's
//! signatures, delivering signed encrypted notifications with retries to the gateway's notify
//! URL) and a fake `jscode2session` for the payer's WeChat login. Money is checked in the
//! ledger: every event once, nothing credited on any refusal.

mod support;

use std::time::Duration;

use purrify_gateway::app::Gateway;
use purrify_gateway::config::Config;
use purrify_store::{EntryKind, OrderStatus, PageRequest};
use purrify_testkit::wechat::FakeWeChat;
use purrify_testkit::wechatpay::{FakeWeChatPay, Forgery, TEST_APPID, test_merchant_key};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::client::api;
use support::*;

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "root password 1";

struct Env {
    gw: Gateway,
    pay: FakeWeChatPay,
    wx: FakeWeChat,
    http: reqwest::Client,
    base: String,
    _dir: tempfile::TempDir,
    _pg: Option<TestDb>,
}

/// A gateway on `backend` with the test merchant pointed at a fresh fake WeChat Pay, whose
/// notifications go to the gateway (or to `notify_url` when given: a dead one loses them all).
async fn start(backend: Backend, notify_url: Option<String>, tweak: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDb::postgres().await),
    };
    let pay = FakeWeChatPay::start_for_test_merchant().await;
    let wx = FakeWeChat::start(TEST_APPID, "wx-test-secret").await;
    let port = purrify_testkit::free_port();
    let mut vars = pay.write_test_merchant_files(&dir.path().join("certificates"));
    let notify = notify_url.unwrap_or_else(|| format!("http://127.0.0.1:{port}/api/wechat/pay/notify/"));
    vars.push(("WECHAT_NOTIFY_URL", notify));
    let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());

    let mut c = config(dir.path(), pg.as_ref().map(|p| p.url.clone()));
    c.addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    c.payments.wechat_pay = purrify_wechatpay::Settings::from_lookup(lookup).unwrap();
    // Long enough that only the tests that want the loop see it run.
    c.payments.reconcile_interval_seconds = 3600;
    c.wechat_appid = Some(TEST_APPID.into());
    c.wechat_secret = Some("wx-test-secret".into());
    c.wechat_api_base = wx.base_url();
    c.bootstrap_admin_email = Some(ADMIN_EMAIL.into());
    c.bootstrap_admin_password = Some(ADMIN_PASSWORD.into());
    tweak(&mut c);
    let gw = purrify_gateway::app::start(c, std::future::pending()).await.expect("the gateway starts");
    let base = format!("http://{}", gw.addr);
    Env { gw, pay, wx, http: reqwest::Client::builder().no_proxy().build().unwrap(), base, _dir: dir, _pg: pg }
}

impl Env {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A WeChat login of `openid`: (access token, user id).
    async fn wechat_user(&self, openid: &str) -> (String, String) {
        let (s, b) = self.call("POST", "/api/auth/wechat/login", None, Some(json!({"code": self.wx.code_for(openid, None)}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        (b["data"]["access_token"].as_str().unwrap().into(), b["data"]["user"]["id"].as_str().unwrap().into())
    }

    async fn admin(&self) -> String {
        let (s, b) = self.call("POST", "/api/auth/login", None, Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["data"]["access_token"].as_str().unwrap().into()
    }

    /// Buys `package` and returns the out_trade_no.
    async fn recharge(&self, token: &str, package: &str) -> String {
        let (s, b) = self.call("POST", "/api/credits/recharge", Some(token), Some(json!({"package_id": package}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["data"]["out_trade_no"].as_str().unwrap().into()
    }

    async fn balance(&self, user_id: &str) -> i64 {
        self.gw.state.credits.balance(user_id).await.unwrap().balance
    }

    async fn entries(&self, user_id: &str, kind: EntryKind) -> Vec<purrify_store::Entry> {
        self.gw.state.credits.records(user_id, Some(kind), PageRequest::default()).await.unwrap().items
    }

    async fn status(&self, no: &str) -> OrderStatus {
        let page = self.gw.state.payments.orders(None, None, PageRequest::new(None, Some(100))).await.unwrap();
        page.items.into_iter().find(|o| o.out_trade_no == no).expect("the order").status
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

on_both!(
    recharges_are_credited_once_and_refunds_take_them_back,
    forged_and_foreign_notifications_credit_nothing,
    the_reconciler_applies_lost_payments_and_closes_expired_orders
);

async fn recharges_are_credited_once_and_refunds_take_them_back(backend: Backend) {
    // A strict per-address limit: WeChat's burst of notifications must not be throttled.
    let env = start(backend, None, |c| {
        c.rate_limit = 1.0;
        c.rate_burst = 60.0;
    })
    .await;
    let (token, user_id) = env.wechat_user("openid-alice").await;
    let (s, packages) = env.call("GET", "/api/credits/packages", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        packages["data"][1],
        json!({"id": "standard", "name": "300 credits + 30 bonus", "price": 30.0, "price_fen": 3000, "credits": 300.0, "bonus": 30.0, "total_credits": 330.0})
    );

    let (s, b) = env.call("POST", "/api/credits/recharge", Some(&token), Some(json!({"package_id": "standard"}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let d = &b["data"];
    let no = d["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!((d["amount"].as_f64(), d["credits"].as_f64(), d["bonus"].as_f64()), (Some(30.0), Some(300.0), Some(30.0)));
    assert!(no.starts_with('P') && no.len() == 25, "{no}");
    let p = &d["payment"];
    let fake_order = env.pay.order(&no).expect("placed with WeChat");
    assert_eq!((fake_order.total, fake_order.openid.as_str()), (3000, "openid-alice"), "the payer is the WeChat login");
    assert_eq!((p["appId"].as_str(), p["signType"].as_str()), (Some(TEST_APPID), Some("RSA")));
    assert_eq!(p["package"], format!("prepay_id={}", fake_order.prepay_id));
    let message = purrify_wechatpay::sign::pay_sign_message(
        TEST_APPID,
        p["timeStamp"].as_str().unwrap(),
        p["nonceStr"].as_str().unwrap(),
        p["package"].as_str().unwrap(),
    );
    test_merchant_key().public_key().verify_base64(&message, p["paySign"].as_str().unwrap()).expect("paySign is the merchant's signature");
    assert_eq!(env.balance(&user_id).await, 0, "nothing before payment");

    let delivery = env.pay.pay(&no).await;
    assert!(delivery.acknowledged(), "{delivery:?}");
    assert_eq!(delivery.attempts[0].status, Some(204), "acknowledged at the first attempt");
    assert_eq!(env.balance(&user_id).await, 33000);
    let attempts = env.pay.notify_concurrently(&no, 200).await;
    assert!(attempts.iter().all(|a| a.status == Some(204)), "{:?}", attempts.iter().find(|a| a.status != Some(204)));
    assert_eq!(env.balance(&user_id).await, 33000, "200 duplicates credited nothing more");
    let recharges = env.entries(&user_id, EntryKind::Recharge).await;
    assert_eq!((recharges.len(), recharges[0].delta, recharges[0].reference.as_str()), (1, 33000, no.as_str()));

    let (_, q) = env.call("GET", &format!("/api/wechat/pay/query/{no}"), Some(&token), None).await;
    assert_eq!((q["data"]["status"].as_str(), q["data"]["transaction_id"].as_str()), (Some("paid"), fake_order_tx(&env, &no).as_deref()));
    let (_, mine) = env.call("GET", "/api/credits/orders", Some(&token), None).await;
    assert_eq!((mine["data"]["total"].as_u64(), mine["data"]["items"][0]["status"].as_str()), (Some(1), Some("paid")));
    let (other, _) = env.wechat_user("openid-bob").await;
    let (s, _) = env.call("GET", &format!("/api/wechat/pay/query/{no}"), Some(&other), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "someone else's order does not exist for them");

    // Seed 000's and seed 003's ways to order the same thing.
    let (s, b) = env.call("POST", "/api/wechat/pay/create", Some(&token), Some(json!({"package_id": "basic"}))).await;
    assert_eq!((s, b["data"]["amount_fen"].as_i64()), (StatusCode::OK, Some(600)), "{b}");
    let (s, b) = env.call("POST", "/api/v1/user/recharge", Some(&token), Some(json!({"packageId": "premium"}))).await;
    assert_eq!((s, b["code"].as_u64(), b["data"]["computePower"].as_f64()), (StatusCode::OK, Some(200), Some(1100.0)), "{b}");
    assert_eq!(b["data"]["payment"]["signType"], "RSA");

    // Admins list and refund; the credits go when WeChat reports the refund.
    let admin = env.admin().await;
    let (s, _) = env.call("GET", "/api/admin/orders", Some(&token), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, list) = env.call("GET", "/api/admin/orders?status=paid", Some(&admin), None).await;
    assert_eq!((list["data"]["total"].as_u64(), list["data"]["items"][0]["user_id"].as_str()), (Some(1), Some(user_id.as_str())));
    let (s, r) = env.call("POST", &format!("/api/admin/orders/{no}/refund"), Some(&admin), Some(json!({"reason": "test"}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let out_refund_no = r["data"]["out_refund_no"].as_str().unwrap().to_owned();
    wait_until("the refund to settle", || async { env.status(&no).await == OrderStatus::Refunded }).await;
    assert_eq!(env.balance(&user_id).await, 0);
    let refunds = env.entries(&user_id, EntryKind::Refund).await;
    assert_eq!((refunds.len(), refunds[0].delta, refunds[0].reference.as_str()), (1, -33000, out_refund_no.as_str()));
    assert_eq!(env.pay.refund(&out_refund_no).unwrap().refund, 3000);
    let (s, _) = env.call("POST", &format!("/api/admin/orders/{no}/refund"), Some(&admin), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a refunded order is not refunded twice");

    // Credits already spent: the refund is refused before WeChat is asked.
    let second = env.recharge(&token, "basic").await;
    assert!(env.pay.pay(&second).await.acknowledged());
    env.gw.state.credits.set_balance("admin", &user_id, 1000, "spent-in-test").await.unwrap();
    let (s, b) = env.call("POST", &format!("/api/admin/orders/{second}/refund"), Some(&admin), None).await;
    assert_eq!((s, b["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INSUFFICIENT_BALANCE")), "{b}");
    assert_eq!(env.status(&second).await, OrderStatus::Paid);

    // Seed 002's user actions on the buyer's record: each payment once (201 notifications of
    // the first), the one refund WeChat took.
    env.gw.state.audit.flush().await;
    let (_, acts) = env.call("GET", &format!("/api/logs/user-actions?user_id={user_id}&page_size=100"), Some(&admin), None).await;
    let of = |action: &str| -> Vec<Value> {
        acts["data"]["items"].as_array().unwrap().iter().filter(|a| a["action"] == action).cloned().collect()
    };
    let paid = of("order_paid");
    assert_eq!(paid.iter().map(|a| a["target_id"].as_str().unwrap()).collect::<Vec<_>>(), [second.as_str(), no.as_str()], "{acts}");
    assert_eq!((&paid[1]["details"]["amount_fen"], &paid[1]["details"]["credits"]), (&json!(3000), &json!(33000)));
    let refunds = of("refund");
    assert_eq!((refunds.len(), &refunds[0]["target_id"], &refunds[0]["details"]["out_refund_no"]), (1, &json!(no), &json!(out_refund_no)));
}

fn fake_order_tx(env: &Env, no: &str) -> Option<String> {
    env.pay.order(no).and_then(|o| o.transaction_id)
}

async fn forged_and_foreign_notifications_credit_nothing(backend: Backend) {
    let env = start(backend, None, |_| {}).await;
    let (token, user_id) = env.wechat_user("openid-carol").await;
    let no = env.recharge(&token, "basic").await;
    let cases = [
        (Forgery::ForgedSignature, 401),
        (Forgery::WrongSerial, 401),
        (Forgery::StaleTimestamp, 401),
        (Forgery::TamperedCiphertext, 401),
        (Forgery::SignTestProbe, 401),
        (Forgery::OtherMerchant, 400),
        (Forgery::OtherAppid, 400),
        (Forgery::WrongAmount(1), 400),
        (Forgery::UnknownOrder, 400),
    ];
    for (forgery, status) in cases {
        let what = format!("{forgery:?}");
        let a = env.pay.send_forgery(&no, forgery).await;
        assert_eq!(a.status, Some(status), "{what}: {a:?}");
    }
    assert_eq!(env.balance(&user_id).await, 0, "nothing credited");
    assert!(env.entries(&user_id, EntryKind::Recharge).await.is_empty());
    assert_eq!(env.status(&no).await, OrderStatus::Pending);
    let (s, b) = env.call("POST", "/api/wechat/pay/notify/", None, Some(json!({"id": "x"}))).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("FAIL")), "unsigned");

    // Only a WeChat login of the merchant's app can pay; a package must exist.
    let (s, b) =
        env.call("POST", "/api/auth/register", None, Some(json!({"email": "e@example.com", "password": "correct horse 42"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let email_user = b["data"]["access_token"].as_str().unwrap().to_owned();
    let (s, b) = env.call("POST", "/api/credits/recharge", Some(&email_user), Some(json!({"package_id": "basic"}))).await;
    assert_eq!((s, b["error_code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("VALIDATION_ERROR")), "{b}");
    let (s, _) = env.call("POST", "/api/credits/recharge", Some(&token), Some(json!({"package_id": "nope"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = env.call("POST", "/api/credits/recharge", None, Some(json!({"package_id": "basic"}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Without a merchant: packages are readable, ordering and notifications are not.
    let plain = api(backend).await;
    assert_eq!(plain.get("/api/credits/packages").await.status, axum::http::StatusCode::OK);
    let r = plain.post_json("/api/wechat/pay/notify/", json!({}), &[]).await;
    assert_eq!((r.status, r.body["code"].as_str()), (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Some("FAIL")));
}

async fn the_reconciler_applies_lost_payments_and_closes_expired_orders(backend: Backend) {
    // Every notification is lost: the notify URL is a port nobody listens on.
    let dead = format!("http://127.0.0.1:{}/api/wechat/pay/notify/", purrify_testkit::free_port());
    let env = start(backend, Some(dead), |c| {
        c.payments.reconcile_after_seconds = 0;
        c.payments.reconcile_interval_seconds = 1;
        c.payments.order_ttl_seconds = 3;
    })
    .await;
    let (token, user_id) = env.wechat_user("openid-dave").await;
    let paid = env.recharge(&token, "standard").await;
    let unpaid = env.recharge(&token, "basic").await;
    let delivery = env.pay.pay(&paid).await;
    assert!(!delivery.acknowledged() && delivery.attempts.len() > 1, "every retry was lost: {delivery:?}");
    wait_until("the reconciler to apply the paid order", || async { env.status(&paid).await == OrderStatus::Paid }).await;
    assert_eq!(env.balance(&user_id).await, 33000);
    wait_until("the reconciler to close the expired order", || async { env.status(&unpaid).await == OrderStatus::Closed }).await;
    assert_eq!(env.pay.order(&unpaid).unwrap().trade_state, "CLOSED", "closed at WeChat first");
    // Another round, and a late duplicate of the lost notification: nothing more.
    let round = env.gw.state.payments.reconcile_once().await.unwrap();
    assert_eq!((round.applied, round.closed), (0, 0));
    assert_eq!(env.balance(&user_id).await, 33000);
    assert_eq!(env.entries(&user_id, EntryKind::Recharge).await.len(), 1);
}
