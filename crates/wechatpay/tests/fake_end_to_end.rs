//! The client against testkit's fake WeChat Pay over real HTTP: order, pay, notification
//! (verified and decrypted by a small receiver that applies each payment once), query,
//! close, refund with its notification, and every forgery refused.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use purrify_testkit::eventually;
use purrify_testkit::wechatpay::{FakeConfig, FakeWeChatPay, Forgery, TEST_APPID, TEST_MCH_ID, test_api_v3_key, test_merchant};
use purrify_wechatpay::notify::{Event, failure_body, parse_notification};
use purrify_wechatpay::{Client, Error, MerchantKey, NewJsapiOrder, NewRefund, Verifier};

/// A merchant's notify endpoint reduced to what matters: verify, decrypt, check the payment
/// against the order it claims to pay, apply once.
#[derive(Default)]
struct Receiver {
    verifier: Mutex<Option<Verifier>>,
    /// out_trade_no -> total in fen, as the merchant's database would know them.
    orders: Mutex<HashMap<String, i64>>,
    /// Answer 500 to this many notifications first (WeChat must retry).
    fail_first: AtomicUsize,
    applied: Mutex<HashSet<String>>,
    events: Mutex<Vec<Event>>,
    refused: Mutex<Vec<String>>,
}

async fn notify(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    if r.fail_first.load(Ordering::SeqCst) > 0 {
        r.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, failure_body("busy"));
    }
    let verifier = r.verifier.lock().unwrap().clone().unwrap();
    let refuse = |status: StatusCode, why: String| {
        r.refused.lock().unwrap().push(why.clone());
        (status, failure_body(&why))
    };
    let n = match parse_notification(&verifier, &test_api_v3_key(), &headers, &body) {
        Ok(n) => n,
        Err(e) if e.is_authentication() => return refuse(StatusCode::UNAUTHORIZED, e.category().into()),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.category().into()),
    };
    let key = match &n.event {
        Event::Transaction(t) => {
            let known = r.orders.lock().unwrap().get(&t.out_trade_no).copied();
            let total = t.amount.as_ref().map(|a| a.total);
            if t.mchid != TEST_MCH_ID || t.appid != TEST_APPID {
                return refuse(StatusCode::BAD_REQUEST, "other_merchant".into());
            }
            match known {
                None => return refuse(StatusCode::BAD_REQUEST, "unknown_order".into()),
                Some(k) if Some(k) != total => return refuse(StatusCode::BAD_REQUEST, "wrong_amount".into()),
                Some(_) => format!("pay:{}", t.transaction_id.clone().unwrap()),
            }
        }
        Event::Refund(rf) => format!("refund:{}", rf.refund_id),
        Event::Unsupported => return (StatusCode::NO_CONTENT, String::new()),
    };
    if r.applied.lock().unwrap().insert(key) {
        r.events.lock().unwrap().push(n.event);
    }
    (StatusCode::NO_CONTENT, String::new())
}

async fn start_receiver(r: Arc<Receiver>) -> String {
    let app = axum::Router::new().route("/api/wechat/pay/notify/", axum::routing::post(notify)).with_state(r);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/wechat/pay/notify/")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(10)).build().unwrap()
}

fn order<'a>(no: &'a str, total_fen: i64) -> NewJsapiOrder<'a> {
    NewJsapiOrder {
        description: "Purrify 100 credits",
        out_trade_no: no,
        total_fen,
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        time_expire: None,
        attach: None,
    }
}

#[tokio::test]
async fn order_pay_notify_query_refund_against_the_fake() {
    let fake = FakeWeChatPay::start_for_test_merchant().await;
    let receiver = Arc::new(Receiver::default());
    *receiver.verifier.lock().unwrap() = Some(fake.verifier());
    let notify_url = start_receiver(receiver.clone()).await;
    let merchant = test_merchant(&fake.base_url(), &notify_url);
    let client = Client::with_http(merchant.clone(), fake.verifier(), http());

    // Order and the mini program's payment parameters.
    let prepay_id = client.create_jsapi_order(&order("R20260101000001", 600)).await.unwrap();
    assert_eq!(client.create_jsapi_order(&order("R20260101000001", 600)).await.unwrap(), prepay_id, "placing it again is the same order");
    receiver.orders.lock().unwrap().insert("R20260101000001".into(), 600);
    let params = merchant.request_payment(&prepay_id);
    assert_eq!(params.package, format!("prepay_id={prepay_id}"));
    let signed = format!("{}\n{}\n{}\n{}\n", params.app_id, params.time_stamp, params.nonce_str, params.package);
    merchant.key.public_key().verify_base64(signed.as_bytes(), &params.pay_sign).unwrap();
    assert_eq!(client.query_by_out_trade_no("R20260101000001").await.unwrap().trade_state, "NOTPAY");

    // Payment: the receiver is busy twice, WeChat retries, the payment is applied once.
    receiver.fail_first.store(2, Ordering::SeqCst);
    let delivery = fake.pay("R20260101000001").await;
    assert!(delivery.acknowledged(), "{delivery:?}");
    assert_eq!(delivery.attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [Some(500), Some(500), Some(204)]);
    let paid = client.query_by_out_trade_no("R20260101000001").await.unwrap();
    assert!(paid.is_paid());
    let events = receiver.events.lock().unwrap().clone();
    let [Event::Transaction(t)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!((t.out_trade_no.as_str(), t.amount.as_ref().unwrap().total), ("R20260101000001", 600));
    assert_eq!(t.transaction_id, paid.transaction_id);
    assert_eq!(t.payer.as_ref().unwrap().openid, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");

    // Duplicates at once: all acknowledged, applied once.
    let attempts = fake.notify_concurrently("R20260101000001", 50).await;
    assert!(attempts.iter().all(|a| a.status == Some(204)), "{attempts:?}");
    assert_eq!(receiver.events.lock().unwrap().len(), 1);

    // Every forgery is refused, nothing more applied.
    for (forgery, why) in [
        (Forgery::ForgedSignature, "bad_signature"),
        (Forgery::WrongSerial, "unknown_serial"),
        (Forgery::StaleTimestamp, "stale_timestamp"),
        (Forgery::TamperedCiphertext, "decrypt"),
        (Forgery::SignTestProbe, "bad_signature"),
        (Forgery::OtherMerchant, "other_merchant"),
        (Forgery::OtherAppid, "other_merchant"),
        (Forgery::WrongAmount(1), "wrong_amount"),
        (Forgery::UnknownOrder, "unknown_order"),
    ] {
        let a = fake.send_forgery("R20260101000001", forgery.clone()).await;
        assert!(matches!(a.status, Some(400 | 401)), "{forgery:?}: {a:?}");
        assert_eq!(receiver.refused.lock().unwrap().last().map(String::as_str), Some(why), "{forgery:?}");
    }
    assert_eq!(receiver.events.lock().unwrap().len(), 1);

    // Close: an unpaid order closes, a paid one does not.
    client.create_jsapi_order(&order("R20260101000002", 100)).await.unwrap();
    client.close_order("R20260101000002").await.unwrap();
    assert_eq!(client.query_by_out_trade_no("R20260101000002").await.unwrap().trade_state, "CLOSED");
    let e = client.close_order("R20260101000001").await.unwrap_err();
    assert_eq!(e.api_code(), Some("ORDERPAID"), "{e}");
    let e = client.query_by_out_trade_no("R20269999999999").await.unwrap_err();
    assert!(matches!(&e, Error::Api { status: 404, code, .. } if code == "ORDER_NOT_EXIST"), "{e}");

    // Refund: PROCESSING, then REFUND.SUCCESS arrives and the query agrees.
    let refund = NewRefund {
        out_trade_no: "R20260101000001",
        out_refund_no: "F20260101000001",
        reason: Some("admin refund"),
        refund_fen: 600,
        total_fen: 600,
        notify_url: None,
    };
    let created = client.refund(&refund).await.unwrap();
    assert_eq!((created.status.as_str(), created.amount.refund), ("PROCESSING", 600));
    assert_eq!(client.refund(&refund).await.unwrap().refund_id, created.refund_id, "the same out_refund_no is the same refund");
    let settled = eventually(10, "the REFUND.SUCCESS notification", || {
        let events = receiver.events.lock().unwrap().clone();
        async move {
            events.into_iter().find_map(|e| match e {
                Event::Refund(r) => Some(r),
                _ => None,
            })
        }
    })
    .await;
    assert_eq!(
        (settled.refund_status.as_str(), settled.out_refund_no.as_str(), settled.amount.refund),
        ("SUCCESS", "F20260101000001", 600)
    );
    assert_eq!(client.query_refund("F20260101000001").await.unwrap().status, "SUCCESS");
    let over = NewRefund { out_refund_no: "F20260101000002", refund_fen: 1, ..refund };
    assert_eq!(client.refund(&over).await.unwrap_err().api_code(), Some("NOT_ENOUGH"));
    assert_eq!(client.query_by_out_trade_no("R20260101000001").await.unwrap().trade_state, "REFUND");
    assert_eq!(fake.rejected_signatures(), 0);
}

#[tokio::test]
async fn signatures_are_checked_both_ways() {
    let fake = FakeWeChatPay::start_for_test_merchant().await;
    let merchant = test_merchant(&fake.base_url(), "http://127.0.0.1:9/notify");

    // A request signed with a key WeChat does not have for this merchant: 401 SIGN_ERROR.
    let mut impostor = merchant.clone();
    impostor.key = MerchantKey::generate().unwrap();
    let e = Client::with_http(impostor, fake.verifier(), http()).query_by_out_trade_no("R20260101000009").await.unwrap_err();
    assert!(matches!(&e, Error::Api { status: 401, code, .. } if code == "SIGN_ERROR"), "{e}");
    assert_eq!(fake.rejected_signatures(), 1);

    // Answers from a server the client does not trust are refused, errors included.
    let stranger = MerchantKey::generate().unwrap().public_key();
    let wrong_key = Verifier::new().with_public_key(fake.public_key_id(), stranger.clone()).unwrap();
    let e = Client::with_http(merchant.clone(), wrong_key, http()).query_by_out_trade_no("R20260101000009").await.unwrap_err();
    assert!(matches!(e, Error::BadSignature), "{e}");
    let other_id = Verifier::new().with_public_key("PUB_KEY_ID_0114000000000000000000000001", stranger).unwrap();
    let e = Client::with_http(merchant, other_id, http()).query_by_out_trade_no("R20260101000009").await.unwrap_err();
    assert!(matches!(e, Error::UnknownSerial(_)), "{e}");
}

#[tokio::test]
async fn seed_000_configuration_files_load_and_work() {
    let fake = FakeWeChatPay::start_for_test_merchant().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<&str, String> = fake.write_test_merchant_files(&dir.path().join("certificates")).into_iter().collect();
    env.insert("WECHAT_NOTIFY_URL", "https://example.com/api/wechat/pay/notify/".into());
    let settings = purrify_wechatpay::Settings::from_lookup(|k| env.get(k).cloned()).unwrap().expect("configured");
    assert!(!format!("{settings:?}").contains(purrify_testkit::wechatpay::TEST_API_V3_KEY));
    let loaded = settings.load().unwrap();
    assert_eq!(loaded.verifier.serials().collect::<Vec<_>>(), [fake.public_key_id()]);
    let client = Client::with_http(loaded.merchant, loaded.verifier, http());
    client.create_jsapi_order(&order("R20260101000003", 1)).await.unwrap();
    assert_eq!(client.query_by_out_trade_no("R20260101000003").await.unwrap().trade_state, "NOTPAY");

    // Without WECHAT_MCH_ID payments are simply off; with it, the rest is required.
    assert!(purrify_wechatpay::Settings::from_lookup(|_| None).unwrap().is_none());
    let partial = purrify_wechatpay::Settings::from_lookup(|k| (k == "WECHAT_MCH_ID").then(|| "1".into()));
    assert!(matches!(partial, Err(Error::Config(_))));
}

#[tokio::test]
async fn an_answer_slower_than_the_attempt_timeout_is_retried() {
    let mut cfg = FakeConfig::for_merchant(&test_merchant("http://unused", "http://unused/notify"));
    cfg.attempt_timeout = std::time::Duration::from_millis(300);
    let fake = FakeWeChatPay::start(cfg).await;
    let slow_once = Arc::new(AtomicUsize::new(1));
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(|State(slow): State<Arc<AtomicUsize>>| async move {
            if slow.fetch_sub(1, Ordering::SeqCst) == 1 {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.with_state(slow_once)).await.unwrap() });
    let merchant = test_merchant(&fake.base_url(), &format!("http://{addr}/notify"));
    let client = Client::with_http(merchant, fake.verifier(), http());
    client.create_jsapi_order(&order("R20260101000004", 100)).await.unwrap();
    let delivery = fake.pay("R20260101000004").await;
    assert_eq!(delivery.attempts.len(), 2, "{delivery:?}");
    assert_eq!(delivery.attempts[0].error.as_deref(), Some("timed out"));
    assert_eq!(delivery.attempts[1].status, Some(200));
    assert_eq!(fake.deliveries().len(), 1);
}
