//! A local WeChat Pay API v3 for payment tests. It has its own generated platform key and
//! public-key id (WeChat's "public key mode", no certificates), checks every request's
//! merchant signature (401 `SIGN_ERROR` otherwise), signs every answer, creates prepay ids
//! for JSAPI orders, answers queries and closes, takes refunds, and delivers signed,
//! AEAD-encrypted notifications with WeChat's retry behaviour on a shortened schedule.
//!
//! The protocol pieces (signing, encryption) are `purrify-wechatpay`'s; their formats are
//! pinned separately by that crate's known-answer tests against openssl, so the fake and
//! the client cannot agree on a wrong format unnoticed.

mod delivery;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use purrify_wechatpay::{ApiV3Key, MerchantConfig, MerchantKey, PublicKey, Verifier};

pub use delivery::{Attempt, Delivery, Forgery};

pub const TEST_MCH_ID: &str = "1900009191";
pub const TEST_APPID: &str = "wxd678efh567hg6787";
/// The serial of the test merchant's (imaginary) `apiclient_cert.pem`.
pub const TEST_MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD56B9A0C1";
/// 32 bytes, as WeChat's APIv3 keys are.
pub const TEST_API_V3_KEY: &str = "PurrifyTestApiV3Key0123456789abc";

/// RSA 2048 generation takes a noticeable moment even optimised: one key per process.
fn cached_key(slot: &'static OnceLock<MerchantKey>) -> MerchantKey {
    slot.get_or_init(|| MerchantKey::generate().expect("generate an RSA key")).clone()
}

/// The test merchant's private key (the stand-in for `apiclient_key.pem`).
pub fn test_merchant_key() -> MerchantKey {
    static KEY: OnceLock<MerchantKey> = OnceLock::new();
    cached_key(&KEY)
}

/// The fakes' platform key, shared by all fakes of the process.
fn platform_key() -> MerchantKey {
    static KEY: OnceLock<MerchantKey> = OnceLock::new();
    cached_key(&KEY)
}

/// The test merchant as the code under test would configure it, pointed at `base_url`.
pub fn test_merchant(base_url: &str, notify_url: &str) -> MerchantConfig {
    MerchantConfig::new(TEST_MCH_ID, TEST_APPID, TEST_MERCHANT_SERIAL, test_merchant_key(), test_api_v3_key(), notify_url)
        .expect("the test merchant's configuration")
        .with_base_url(base_url)
}

pub fn test_api_v3_key() -> ApiV3Key {
    ApiV3Key::new(TEST_API_V3_KEY).expect("32 bytes")
}

/// Whom the fake serves, and how it retries notifications.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    pub mch_id: String,
    pub appid: String,
    /// The serial the merchant's requests must name in `serial_no`.
    pub merchant_serial: String,
    /// Checks the merchant's request signatures.
    pub merchant_public_key: PublicKey,
    pub api_v3_key: ApiV3Key,
    /// Waits between notification attempts; one more attempt than entries. WeChat's
    /// schedule is 15 s, 15 s, 30 s, 3 m, 10 m, 20 m, 30 m, 30 m, 30 m, 60 m, 3 h, 3 h, 3 h, 6 h,
    /// 6 h; tests want the same shape in milliseconds.
    pub retry_intervals: Vec<Duration>,
    /// How long one attempt waits for an answer (WeChat: 5 s) before counting it failed.
    pub attempt_timeout: Duration,
}

impl FakeConfig {
    /// For the merchant `merchant` (its ids, serial, public key and APIv3 key).
    pub fn for_merchant(merchant: &MerchantConfig) -> Self {
        Self {
            mch_id: merchant.mch_id.clone(),
            appid: merchant.appid.clone(),
            merchant_serial: merchant.serial_no.clone(),
            merchant_public_key: merchant.key.public_key(),
            api_v3_key: merchant.api_v3_key.clone(),
            retry_intervals: [20, 40, 80, 160, 320].map(Duration::from_millis).to_vec(),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// An order as the fake keeps it.
#[derive(Clone, Debug)]
pub struct FakeOrder {
    pub out_trade_no: String,
    pub appid: String,
    pub description: String,
    pub total: i64,
    pub openid: String,
    pub notify_url: String,
    pub attach: Option<String>,
    pub time_expire: Option<String>,
    pub prepay_id: String,
    /// `NOTPAY`, `SUCCESS`, `CLOSED` or `REFUND`.
    pub trade_state: String,
    pub transaction_id: Option<String>,
    pub success_time: Option<String>,
    /// Fen refunded or being refunded.
    pub refunded: i64,
}

/// A refund as the fake keeps it.
#[derive(Clone, Debug)]
pub struct FakeRefund {
    pub out_refund_no: String,
    pub refund_id: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub total: i64,
    pub refund: i64,
    /// `PROCESSING` until settled, then the configured outcome.
    pub status: String,
    pub notify_url: String,
    pub create_time: String,
    pub success_time: Option<String>,
}

#[derive(Default)]
struct State {
    orders: HashMap<String, FakeOrder>,
    refunds: HashMap<String, FakeRefund>,
    requests: usize,
    rejected_signatures: usize,
    deliveries: Vec<(String, Delivery)>,
    next_id: u64,
}

struct Shared {
    cfg: FakeConfig,
    key: MerchantKey,
    public_key_id: String,
    http: reqwest::Client,
    state: Mutex<State>,
    /// What refunds settle as: `SUCCESS` (default), `ABNORMAL` or `CLOSED`.
    refund_outcome: Mutex<&'static str>,
}

impl Shared {
    fn next_id(&self) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        s.next_id
    }
}

/// The fake; stopped when dropped.
pub struct FakeWeChatPay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWeChatPay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeWeChatPay {
    /// Serves on 127.0.0.1 on a free port.
    pub async fn start(cfg: FakeConfig) -> Self {
        // Deliveries go to loopback receivers: never through a proxy from the environment.
        let http = reqwest::Client::builder().no_proxy().timeout(cfg.attempt_timeout).build().expect("the fake's HTTP client");
        let public_key_id = format!("PUB_KEY_ID_0114{:0<24}", cfg.mch_id.chars().filter(char::is_ascii_digit).take(24).collect::<String>());
        let shared = Arc::new(Shared {
            cfg,
            key: platform_key(),
            public_key_id,
            http,
            state: Mutex::default(),
            refund_outcome: Mutex::new("SUCCESS"),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake WeChat Pay");
        let addr = listener.local_addr().unwrap();
        let app = server::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, server }
    }

    /// A fake for [`test_merchant`].
    pub async fn start_for_test_merchant() -> Self {
        Self::start(FakeConfig::for_merchant(&test_merchant("http://unused", "http://unused/notify"))).await
    }

    /// What the merchant's base URL should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The WeChat Pay public key id (`PUB_KEY_ID_0114…`) answers and notifications name.
    pub fn public_key_id(&self) -> &str {
        &self.shared.public_key_id
    }

    pub fn public_key(&self) -> PublicKey {
        self.shared.key.public_key()
    }

    /// `pub_key.pem` as the merchant platform would offer it for download.
    pub fn public_key_pem(&self) -> String {
        self.public_key().to_pem()
    }

    /// A verifier trusting this fake (public key mode).
    pub fn verifier(&self) -> Verifier {
        Verifier::new().with_public_key(self.public_key_id(), self.public_key()).expect("a public key id")
    }

    /// Writes the test merchant's `apiclient_key.pem` and this fake's `pub_key.pem` into
    /// `dir`, and returns the environment a process under test needs to use them
    /// (everything but `WECHAT_NOTIFY_URL`, which is the process's own address).
    pub fn write_test_merchant_files(&self, dir: &Path) -> Vec<(&'static str, String)> {
        use purrify_wechatpay::load::*;
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("apiclient_key.pem"), test_merchant_key().to_pkcs8_pem().unwrap().as_str()).unwrap();
        std::fs::write(dir.join("pub_key.pem"), self.public_key_pem()).unwrap();
        vec![
            (ENV_MCH_ID, TEST_MCH_ID.into()),
            (ENV_APPID, TEST_APPID.into()),
            (ENV_API_KEY, TEST_API_V3_KEY.into()),
            (ENV_BASE_URL, self.base_url()),
            (ENV_CERT_DIR, dir.display().to_string()),
            (ENV_CERT_SERIAL, TEST_MERCHANT_SERIAL.into()),
            (ENV_PUBLIC_KEY_ID, self.public_key_id().into()),
        ]
    }

    pub fn order(&self, out_trade_no: &str) -> Option<FakeOrder> {
        self.shared.state.lock().unwrap().orders.get(out_trade_no).cloned()
    }

    pub fn orders(&self) -> Vec<FakeOrder> {
        self.shared.state.lock().unwrap().orders.values().cloned().collect()
    }

    pub fn refund(&self, out_refund_no: &str) -> Option<FakeRefund> {
        self.shared.state.lock().unwrap().refunds.get(out_refund_no).cloned()
    }

    /// Requests received, whether or not their signature held.
    pub fn requests(&self) -> usize {
        self.shared.state.lock().unwrap().requests
    }

    /// Requests refused with 401 `SIGN_ERROR`.
    pub fn rejected_signatures(&self) -> usize {
        self.shared.state.lock().unwrap().rejected_signatures
    }

    /// Finished notification deliveries, `(event_type, delivery)`, in completion order.
    pub fn deliveries(&self) -> Vec<(String, Delivery)> {
        self.shared.state.lock().unwrap().deliveries.clone()
    }

    /// How later refunds settle: `SUCCESS`, `ABNORMAL` or `CLOSED`.
    pub fn set_refund_outcome(&self, status: &'static str) {
        assert!(["SUCCESS", "ABNORMAL", "CLOSED"].contains(&status), "a REFUND.* outcome");
        *self.shared.refund_outcome.lock().unwrap() = status;
    }

    /// The payer pays: the order becomes `SUCCESS` and its TRANSACTION.SUCCESS notification
    /// is delivered with retries; returns when it was acknowledged or retries ran out.
    /// Panics on an unknown or closed order (a broken test).
    pub async fn pay(&self, out_trade_no: &str) -> Delivery {
        self.pay_in_background(out_trade_no).await.expect("the delivery task")
    }

    /// [`Self::pay`] without waiting.
    pub fn pay_in_background(&self, out_trade_no: &str) -> tokio::task::JoinHandle<Delivery> {
        let order = delivery::mark_paid(&self.shared, out_trade_no);
        let shared = self.shared.clone();
        tokio::spawn(async move { delivery::deliver_transaction(&shared, &order).await })
    }

    /// Sends the paid order's notification `n` times at once, one attempt each (WeChat's
    /// retries overlapping a slow answer, at scale). Pays the order first if needed.
    pub async fn notify_concurrently(&self, out_trade_no: &str, n: usize) -> Vec<Attempt> {
        let order = delivery::mark_paid(&self.shared, out_trade_no);
        delivery::notify_concurrently(&self.shared, &order, n).await
    }

    /// One attempt of a notification that must be refused, built from the order as if it
    /// were paid; the fake's own state does not change.
    pub async fn send_forgery(&self, out_trade_no: &str, forgery: Forgery) -> Attempt {
        let order = self.order(out_trade_no).unwrap_or_else(|| panic!("no order {out_trade_no}"));
        delivery::send_forgery(&self.shared, &order, forgery).await
    }
}
