//! WeChat Pay with the real gateway binary configured by seed 000's environment variables and
//! certificate directory, debug logs captured: a WeChat login recharges, the fake WeChat Pay
//! pays (a signed, encrypted notification), a forgery is refused, and the logs hold no APIv3
//! key, no key material, and nothing of the decrypted payment (payer openid, bank type).

mod support;

use purrify_testkit::wechat::FakeWeChat;
use purrify_testkit::wechatpay::{FakeWeChatPay, Forgery, TEST_API_V3_KEY, TEST_APPID, test_merchant_key};
use purrify_testkit::{Proc, free_port};
use serde_json::{Value, json};

const PAYER: &str = "oPayerOpenid_3Kd9x7QmZ2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recharge_is_paid_through_the_binary_and_no_secret_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let pay = FakeWeChatPay::start_for_test_merchant().await;
    let wx = FakeWeChat::start(TEST_APPID, "wx-process-secret-81f2").await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("gateway.log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_purrify-gateway"));
    cmd.args(["--addr", &format!("127.0.0.1:{port}"), "--embedded-worker", "false", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "debug")
        .env("WECHAT_SECRET", "wx-process-secret-81f2")
        .env("WECHAT_API_BASE", wx.base_url())
        .env("WECHAT_NOTIFY_URL", format!("{base}/api/wechat/pay/notify/"))
        .envs(pay.write_test_merchant_files(&dir.path().join("certificates")))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let proc = Proc::adopt("gateway", cmd.spawn().expect("gateway starts"), log);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    purrify_testkit::gateway_client::wait_ready(&http, &format!("{base}/readyz"), &proc).await;

    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut req = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, login) = post("/api/auth/wechat/login", None, json!({"code": wx.code_for(PAYER, None)})).await;
    assert_eq!(status, 200, "{login}\n{}", proc.log());
    let token = login["data"]["access_token"].as_str().unwrap().to_owned();
    let (status, order) = post("/api/credits/recharge", Some(&token), json!({"package_id": "basic"})).await;
    assert_eq!(status, 200, "{order}\n{}", proc.log());
    let no = order["data"]["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!(pay.send_forgery(&no, Forgery::TamperedCiphertext).await.status, Some(401));
    assert!(pay.pay(&no).await.acknowledged(), "{}", proc.log());
    let balance: Value = http.get(format!("{base}/api/credits/balance")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(balance["data"]["balance"].as_f64(), Some(60.0));

    let log = proc.log();
    assert!(log.contains("WeChat Pay configured") && log.contains("order paid and credited"), "debug logs were captured:\n{log}");
    assert!(!log.contains(TEST_API_V3_KEY), "the APIv3 key reached the log");
    let pem = test_merchant_key().to_pkcs8_pem().unwrap().as_str().to_owned();
    let key_line = pem.lines().nth(3).unwrap();
    assert!(!log.contains("PRIVATE KEY") && !log.contains(key_line), "the merchant key reached the log");
    assert!(!log.contains(PAYER), "the payer's openid (decrypted payload) reached the log");
    for decrypted in ["支付成功", "bank_type", "OTHERS", "payer_total"] {
        assert!(!log.contains(decrypted), "the decrypted payment reached the log: {decrypted}");
    }
    let ciphertext_marker = "\"ciphertext\"";
    assert!(!log.contains(ciphertext_marker), "a notification body reached the log");
}
