//! The signatures of API v3: what is signed, how the `Authorization` header carries it,
//! and `paySign` for `wx.requestPayment`. Message builders are pure so their format is
//! pinned by known-answer tests.

use crate::error::{Error, Result};
use crate::keys::MerchantKey;

/// The `Authorization` scheme of merchant requests.
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// What a merchant request's signature covers:
/// `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n` (the body is empty for GET).
pub fn request_message(method: &str, path_and_query: &str, timestamp: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// What WeChat's signature over a response or notification covers:
/// `TIMESTAMP\nNONCE\nBODY\n`, with the timestamp exactly as the header carried it.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// What `paySign` covers: `appId\ntimeStamp\nnonceStr\nprepay_id=…\n`.
pub fn pay_sign_message(appid: &str, timestamp: &str, nonce: &str, package: &str) -> Vec<u8> {
    format!("{appid}\n{timestamp}\n{nonce}\n{package}\n").into_bytes()
}

/// A 32-character nonce from the OS RNG over `[0-9A-Z]`, the alphabet WeChat's own SDKs use.
pub fn nonce() -> String {
    const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = [0u8; 32];
    // The OS RNG failing is not recoverable, and a predictable nonce is not acceptable.
    getrandom::fill(&mut bytes).expect("the OS random number generator");
    // 256 % 36 = 4: values 252..=255 would bias the first four characters, so fold them
    // with a second byte draw rather than taking the modulus blindly.
    bytes
        .iter()
        .map(|&b| {
            let mut v = b;
            while v >= 252 {
                let mut one = [0u8; 1];
                getrandom::fill(&mut one).expect("the OS random number generator");
                v = one[0];
            }
            ALPHABET[(v % 36) as usize] as char
        })
        .collect()
}

/// A request as its signature sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    /// The path with its query string, exactly as sent (`/v3/…?mchid=…`).
    pub path_and_query: &'a str,
    pub body: &'a [u8],
    /// Unix seconds.
    pub timestamp: i64,
    pub nonce: &'a str,
}

/// The parts of a merchant `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: String,
    pub serial_no: String,
}

impl Authorization {
    /// Signs a request as merchant `mchid` with the key whose certificate serial is
    /// `serial_no`.
    pub fn sign(key: &MerchantKey, mchid: &str, serial_no: &str, request: &RequestToSign<'_>) -> Self {
        let r = request;
        let signature = key.sign_base64(&request_message(r.method, r.path_and_query, r.timestamp, r.nonce, r.body));
        Self { mchid: mchid.into(), nonce_str: r.nonce.into(), signature, timestamp: r.timestamp.to_string(), serial_no: serial_no.into() }
    }

    /// The header value: `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`.
    pub fn header_value(&self) -> String {
        format!(
            r#"{SCHEME} mchid="{}",nonce_str="{}",signature="{}",timestamp="{}",serial_no="{}""#,
            self.mchid, self.nonce_str, self.signature, self.timestamp, self.serial_no
        )
    }

    /// Parses a header value (the receiving side: the test fake). Parameters may come in any
    /// order; each must be present once.
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |why: &str| Error::Malformed(format!("Authorization: {why}"));
        let rest =
            value.strip_prefix(SCHEME).and_then(|r| r.strip_prefix(' ')).ok_or_else(|| bad("not the WECHATPAY2-SHA256-RSA2048 scheme"))?;
        let (mut mchid, mut nonce_str, mut signature, mut timestamp, mut serial_no) = (None, None, None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or_else(|| bad("a parameter without '='"))?;
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or_else(|| bad("an unquoted value"))?.to_owned();
            let slot = match k {
                "mchid" => &mut mchid,
                "nonce_str" => &mut nonce_str,
                "signature" => &mut signature,
                "timestamp" => &mut timestamp,
                "serial_no" => &mut serial_no,
                _ => return Err(bad("an unknown parameter")),
            };
            if slot.replace(v).is_some() {
                return Err(bad("a repeated parameter"));
            }
        }
        let need = |v: Option<String>, name: &str| v.ok_or_else(|| bad(&format!("no {name}")));
        Ok(Self {
            mchid: need(mchid, "mchid")?,
            nonce_str: need(nonce_str, "nonce_str")?,
            signature: need(signature, "signature")?,
            timestamp: need(timestamp, "timestamp")?,
            serial_no: need(serial_no, "serial_no")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_message_is_wechats_format() {
        // The example of WeChat's signing guide.
        let m = request_message(
            "POST",
            "/v3/pay/transactions/jsapi",
            1554208460,
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            br#"{"appid":"wxd678efh567hg6787"}"#,
        );
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "POST\n/v3/pay/transactions/jsapi\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{\"appid\":\"wxd678efh567hg6787\"}\n"
        );
        let get = request_message("GET", "/v3/certificates?a=1", 1, "N", b"");
        assert_eq!(get, b"GET\n/v3/certificates?a=1\n1\nN\n\n");
    }

    #[test]
    fn response_and_pay_sign_messages() {
        assert_eq!(
            response_message("1554209980", "c5ac7061fccab6bf3e254dcf98995b8c", b"{}"),
            b"1554209980\nc5ac7061fccab6bf3e254dcf98995b8c\n{}\n"
        );
        assert_eq!(
            pay_sign_message(
                "wx8888888888888888",
                "1414561699",
                "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                "prepay_id=wx201410272009395522657a690389285100"
            ),
            b"wx8888888888888888\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=wx201410272009395522657a690389285100\n"
        );
    }

    #[test]
    fn authorization_header_round_trips() {
        let a = Authorization {
            mchid: "1900009191".into(),
            nonce_str: "593BEC0C930BF1AFEB40B4A08C8FB242".into(),
            signature: "uOVRnA4qG/MNnYzdQxJanN+zU+lTgIcnU9BxGw5dKjK+VdEUz2FeIoC+D5sB/LN+nGzX3hfZg6r5wT1pl2ZobmIc6p0ldN7J6yDgUzbX8Uk3sD4a4eZVPTBvqNDoUqcYMlZ9uuDdCvNv4TM3c1WzsXUrExwVkI1XO5jCNbgDJ25nkT/c1gIFvqoogl7MdSFGc4W4xZsqCItnqbypR3RuGIlR9h9vlRsy7zJR9PBI83X8alLDIfR1ukt1P7tMnmogZ0cuDY8cZsd8ZlCgLadmvej58SLsIkVxFJ8XmUgx9FPBJ3pmF8bP8ya2g==".into(),
            timestamp: "1554208460".into(),
            serial_no: "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C".into(),
        };
        let v = a.header_value();
        assert!(v.starts_with(r#"WECHATPAY2-SHA256-RSA2048 mchid="1900009191",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",signature=""#));
        assert!(v.ends_with(r#"",timestamp="1554208460",serial_no="1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C""#));
        assert_eq!(Authorization::parse(&v).unwrap(), a);
        assert!(Authorization::parse("Bearer x").is_err());
        assert!(Authorization::parse(r#"WECHATPAY2-SHA256-RSA2048 mchid="1",mchid="2""#).is_err());
    }

    #[test]
    fn nonces_are_32_upper_alphanumerics_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
