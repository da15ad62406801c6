//! Loading seed 000's certificate directory in platform-certificate mode (the public-key
//! mode is covered against the fake in `fake_end_to_end.rs`).

use std::collections::HashMap;
use std::path::Path;

use purrify_wechatpay::{Error, MerchantKey, Settings};

const KEY: &str = include_str!("fixtures/test_platform_key.pem");
const CERT: &str = include_str!("fixtures/test_platform_cert.pem");
const SERIAL: &str = "9F57F09EFDC096DE15EBE81A47057A7232F1B8E1";

fn settings(dir: &Path, extra: &[(&str, &str)]) -> Result<Settings, Error> {
    let mut env: HashMap<String, String> = [
        ("WECHAT_MCH_ID", "1900009191"),
        ("WECHAT_APPID", "wxd678efh567hg6787"),
        ("WECHAT_API_KEY", "PurrifyTestApiV3Key0123456789abc"),
        ("WECHAT_NOTIFY_URL", "https://example.com/api/wechat/pay/notify/"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert("WECHAT_CERT_DIR".into(), dir.display().to_string());
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    Ok(Settings::from_lookup(|k| env.get(k).cloned())?.expect("configured"))
}

#[test]
fn the_serial_comes_from_apiclient_cert_and_platform_certificates_are_trusted() {
    let dir = tempfile::tempdir().unwrap();
    // One key pair plays both parts here: the merchant's certificate and a platform one.
    std::fs::write(dir.path().join("apiclient_key.pem"), KEY).unwrap();
    std::fs::write(dir.path().join("apiclient_cert.pem"), CERT).unwrap();
    std::fs::write(dir.path().join(format!("wechatpay_{SERIAL}.pem")), CERT).unwrap();
    let loaded = settings(dir.path(), &[]).unwrap().load().unwrap();
    assert_eq!(loaded.merchant.serial_no, SERIAL);
    assert_eq!(loaded.merchant.base_url, "https://api.mch.weixin.qq.com");
    assert_eq!(loaded.verifier.serials().collect::<Vec<_>>(), [SERIAL]);
    let shown = format!("{loaded:?}");
    assert!(!shown.contains("PurrifyTestApiV3Key") && !shown.contains("PRIVATE"), "{shown}");
}

#[test]
fn a_certificate_of_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = MerchantKey::generate().unwrap().to_pkcs8_pem().unwrap();
    std::fs::write(dir.path().join("apiclient_key.pem"), other.as_str()).unwrap();
    std::fs::write(dir.path().join("apiclient_cert.pem"), CERT).unwrap();
    std::fs::write(dir.path().join("wechatpay_1.pem"), CERT).unwrap();
    let e = settings(dir.path(), &[]).unwrap().load().unwrap_err();
    assert!(e.to_string().contains("does not belong"), "{e}");
}

#[test]
fn something_to_verify_wechat_with_is_required() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("apiclient_key.pem"), KEY).unwrap();
    let e = settings(dir.path(), &[("WECHAT_CERT_SERIAL", SERIAL)]).unwrap().load().unwrap_err();
    assert!(e.to_string().contains("nothing to verify"), "{e}");
    let e = settings(dir.path(), &[("WECHAT_CERT_SERIAL", SERIAL), ("WECHAT_PAY_PUBLIC_KEY_PATH", "x.pem")]).unwrap().load().unwrap_err();
    assert!(e.to_string().contains("WECHAT_PAY_PUBLIC_KEY_ID"), "{e}");
    let e = settings(dir.path(), &[("WECHAT_CERT_SERIAL", SERIAL), ("WECHAT_API_KEY", "short")]).unwrap().load().unwrap_err();
    assert!(e.to_string().contains("32 bytes"), "{e}");
}
