//! Signing and verification against an independent implementation (openssl fixtures) and
//! the refusals WeChat's integration checklist asks for.

use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::aead;
use crate::config::{ApiV3Key, MerchantConfig};
use crate::keys::MerchantKey;
use crate::notify::{Event, parse_notification};

const PLATFORM_KEY: &str = include_str!("../../tests/fixtures/test_platform_key.pem");
const PLATFORM_CERT: &str = include_str!("../../tests/fixtures/test_platform_cert.pem");
const OPENSSL_SIGNATURE: &str = include_str!("../../tests/fixtures/test_platform_signature.b64");
const CERT_SERIAL: &str = "9F57F09EFDC096DE15EBE81A47057A7232F1B8E1";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
const NOW: i64 = 1_554_209_980;

fn platform_key() -> MerchantKey {
    MerchantKey::from_pem(PLATFORM_KEY).unwrap()
}

/// A second key, standing for the WeChat Pay public key (and for a forger when used with
/// the certificate's serial). Generated once: RSA key generation is the slow part.
fn other_key() -> &'static MerchantKey {
    static KEY: OnceLock<MerchantKey> = OnceLock::new();
    KEY.get_or_init(|| MerchantKey::generate().unwrap())
}

/// Trusts the certificate and the public key at once, as during WeChat's migration.
fn verifier() -> Verifier {
    let mut v = Verifier::new().with_clock(Arc::new(|| NOW));
    assert_eq!(v.add_platform_certificate_pem(PLATFORM_CERT).unwrap(), CERT_SERIAL);
    v.add_public_key(PUB_KEY_ID, PublicKey::from_pem(&other_key().public_key().to_pem()).unwrap()).unwrap();
    v
}

fn signed(key: &MerchantKey, serial: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let nonce = crate::sign::nonce();
    let signature = key.sign_base64(&response_message(&timestamp.to_string(), &nonce, body));
    headers(serial, timestamp, &nonce, &signature)
}

fn headers(serial: &str, timestamp: i64, nonce: &str, signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HEADER_TIMESTAMP, HeaderValue::from_str(&timestamp.to_string()).unwrap());
    h.insert(HEADER_NONCE, HeaderValue::from_str(nonce).unwrap());
    h.insert(HEADER_SIGNATURE, HeaderValue::from_str(signature).unwrap());
    h.insert(HEADER_SERIAL, HeaderValue::from_str(serial).unwrap());
    h
}

#[test]
fn signing_matches_openssl_and_the_certificate_verifies_it() {
    let message = response_message("1554209980", "c5ac7061fccab6bf3e254dcf98995b8c", br#"{"data":"ok"}"#);
    assert_eq!(platform_key().sign_base64(&message), OPENSSL_SIGNATURE.trim());
    let (serial, key) = PublicKey::from_certificate_pem(PLATFORM_CERT).unwrap();
    assert_eq!(serial, CERT_SERIAL);
    key.verify_base64(&message, OPENSSL_SIGNATURE).unwrap();
    let h = headers(CERT_SERIAL, NOW, "c5ac7061fccab6bf3e254dcf98995b8c", OPENSSL_SIGNATURE.trim());
    verifier().verify(&h, br#"{"data":"ok"}"#).unwrap();
}

#[test]
fn both_the_certificate_and_the_public_key_verify() {
    let body = br#"{"prepay_id":"wx1"}"#;
    let v = verifier();
    v.verify(&signed(&platform_key(), CERT_SERIAL, NOW, body), body).unwrap();
    // Serials are hex; lower case is the same certificate.
    v.verify(&signed(&platform_key(), &CERT_SERIAL.to_lowercase(), NOW, body), body).unwrap();
    v.verify(&signed(other_key(), PUB_KEY_ID, NOW - 299, body), body).unwrap();
    v.verify(&signed(other_key(), PUB_KEY_ID, NOW + 299, body), body).unwrap();
    assert_eq!(v.serials().collect::<Vec<_>>(), [CERT_SERIAL, PUB_KEY_ID]);
}

#[test]
fn forged_signature_is_refused() {
    let body = b"{}";
    // The right serial, the wrong key.
    let forged = signed(other_key(), CERT_SERIAL, NOW, body);
    assert!(matches!(verifier().verify(&forged, body), Err(Error::BadSignature)));
    // A genuine signature over other content.
    let genuine = signed(&platform_key(), CERT_SERIAL, NOW, body);
    assert!(matches!(verifier().verify(&genuine, br#"{"amount":1}"#), Err(Error::BadSignature)));
    let garbage = headers(CERT_SERIAL, NOW, "n", "not base64!");
    assert!(matches!(verifier().verify(&garbage, body), Err(Error::BadSignature)));
}

#[test]
fn unknown_serial_is_refused() {
    let body = b"{}";
    let h = signed(&platform_key(), "5157F09EFDC096DE15EBE81A47057A7232F1B8E1", NOW, body);
    assert!(matches!(verifier().verify(&h, body), Err(Error::UnknownSerial(_))));
    let h = signed(other_key(), "PUB_KEY_ID_0114999999999999999999999999", NOW, body);
    assert!(matches!(verifier().verify(&h, body), Err(Error::UnknownSerial(_))));
}

#[test]
fn stale_timestamps_are_refused_either_way() {
    let body = b"{}";
    for t in [NOW - 301, NOW + 301, 0] {
        let h = signed(&platform_key(), CERT_SERIAL, t, body);
        let e = verifier().verify(&h, body).unwrap_err();
        assert!(matches!(e, Error::StaleTimestamp { .. }), "{t}: {e}");
        assert_eq!(e.category(), "stale_timestamp");
    }
}

#[test]
fn signtest_probes_are_refused() {
    // What WeChat sends to check that merchants verify: a signature that starts with
    // WECHATPAY/SIGNTEST/, on a notification that is otherwise well formed.
    let h = headers(CERT_SERIAL, NOW, "n", "WECHATPAY/SIGNTEST/M3pwNYWDJYzNuxJVQxW6Gk0gRbeqdlhslEYn3ABfTyQ=");
    assert!(matches!(verifier().verify(&h, b"{}"), Err(Error::BadSignature)));
}

#[test]
fn missing_headers_are_refused() {
    let mut h = signed(&platform_key(), CERT_SERIAL, NOW, b"{}");
    h.remove(HEADER_NONCE);
    assert!(matches!(verifier().verify(&h, b"{}"), Err(Error::MissingHeader(HEADER_NONCE))));
}

fn notification(key: &ApiV3Key, plaintext: &[u8]) -> Vec<u8> {
    let resource = aead::encrypt(key, "transaction", "transaction", plaintext);
    serde_json::to_vec(&serde_json::json!({
        "id": "EV-2018022511223320873", "create_time": "2015-05-20T13:29:35+08:00",
        "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
        "resource": resource,
    }))
    .unwrap()
}

const TRANSACTION: &str = r#"{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"R20240101abc","transaction_id":"1217752501201407033233368018","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"CMC","success_time":"2018-06-08T10:34:56+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;

#[test]
fn a_notification_verifies_decrypts_and_types() {
    let key = ApiV3Key::new("0123456789abcdefghijklmnopqrstuv").unwrap();
    let body = notification(&key, TRANSACTION.as_bytes());
    let n = parse_notification(&verifier(), &key, &signed(&platform_key(), CERT_SERIAL, NOW, &body), &body).unwrap();
    assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
    let Event::Transaction(t) = n.event else { panic!("{:?}", n.event) };
    assert!(t.is_paid());
    assert_eq!((t.out_trade_no.as_str(), t.mchid.as_str(), t.appid.as_str()), ("R20240101abc", "1230000109", "wxd678efh567hg6787"));
    assert_eq!(t.transaction_id.as_deref(), Some("1217752501201407033233368018"));
    let amount = t.amount.unwrap();
    assert_eq!((amount.total, amount.payer_total, amount.currency.as_str()), (100, Some(100), "CNY"));
    assert_eq!(t.payer.as_ref().unwrap().openid, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert!(!format!("{:?}", t.payer).contains("oUpF8"), "the openid stays out of Debug");
    assert_eq!(t.success_time.as_deref(), Some("2018-06-08T10:34:56+08:00"));
}

#[test]
fn a_tampered_ciphertext_is_refused_even_when_signed() {
    // A signature is only as good as the key that made it: a notification re-signed by a
    // trusted key but carrying a ciphertext the APIv3 key did not produce must not open.
    let key = ApiV3Key::new("0123456789abcdefghijklmnopqrstuv").unwrap();
    let mut envelope: serde_json::Value = serde_json::from_slice(&notification(&key, TRANSACTION.as_bytes())).unwrap();
    let ct = envelope["resource"]["ciphertext"].as_str().unwrap().to_owned();
    let flipped = if ct.starts_with('A') { ct.replacen('A', "B", 1) } else { format!("A{}", &ct[1..]) };
    envelope["resource"]["ciphertext"] = flipped.into();
    let body = serde_json::to_vec(&envelope).unwrap();
    let e = parse_notification(&verifier(), &key, &signed(&platform_key(), CERT_SERIAL, NOW, &body), &body).unwrap_err();
    assert!(matches!(e, Error::Decrypt), "{e}");
    assert!(e.is_authentication());
}

#[test]
fn pay_sign_covers_appid_timestamp_nonce_and_package() {
    let merchant = MerchantConfig::new(
        "1230000109",
        "wxd678efh567hg6787",
        "1dde55ad98ed71d6edd4a4a16996de7b47773a8c",
        platform_key(),
        ApiV3Key::new("0123456789abcdefghijklmnopqrstuv").unwrap(),
        "https://example.com/api/wechat/pay/notify/",
    )
    .unwrap();
    assert_eq!(merchant.serial_no, "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C");
    let p = merchant.request_payment_at("wx201410272009395522657a690389285100", 1414561699, "5K8264ILTKCH16CQ2502SI8ZNMTM67VS");
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["appId"], "wxd678efh567hg6787");
    assert_eq!(json["timeStamp"], "1414561699");
    assert_eq!(json["nonceStr"], "5K8264ILTKCH16CQ2502SI8ZNMTM67VS");
    assert_eq!(json["package"], "prepay_id=wx201410272009395522657a690389285100");
    assert_eq!(json["signType"], "RSA");
    let expected = "wxd678efh567hg6787\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=wx201410272009395522657a690389285100\n";
    let (_, public) = PublicKey::from_certificate_pem(PLATFORM_CERT).unwrap();
    public.verify_base64(expected.as_bytes(), &p.pay_sign).unwrap();
    assert!(format!("{merchant:?}").contains("<redacted>"));
    assert!(!format!("{merchant:?}").contains("0123456789abcdef"));
}

#[test]
fn request_authorization_verifies_with_the_merchant_public_key() {
    let key = platform_key();
    let body = br#"{"mchid":"1230000109"}"#;
    let request = crate::sign::RequestToSign {
        method: "POST",
        path_and_query: "/v3/pay/transactions/out-trade-no/R1/close",
        body,
        timestamp: NOW,
        nonce: "N1",
    };
    let auth = crate::sign::Authorization::sign(&key, "1230000109", CERT_SERIAL, &request);
    let parsed = crate::sign::Authorization::parse(&auth.header_value()).unwrap();
    let message = crate::sign::request_message("POST", "/v3/pay/transactions/out-trade-no/R1/close", NOW, "N1", body);
    key.public_key().verify_base64(&message, &parsed.signature).unwrap();
    assert!(key.public_key().verify_base64(&crate::sign::request_message("GET", "/", NOW, "N1", body), &parsed.signature).is_err());
}
