//! The merchant's HTTP client for API v3. Every request is signed; every answer, errors
//! included when they carry WeChat's signature headers, is verified before it is believed.
//! Logs carry the method, the path's kind, the status and WeChat's error code: never a body,
//! a key or a signature's input.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::MerchantConfig;
use crate::error::{Error, Result};
use crate::jsapi::{self, NewJsapiOrder, PrepayResponse, check_merchant_no};
use crate::refund::{self, NewRefund, Refund};
use crate::transaction::Transaction;
use crate::verify::{HEADER_SIGNATURE, Verifier};

/// WeChat answers within a few seconds or not at all; callers (a request handler, the
/// reconciler) must not hang on it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    merchant: Arc<MerchantConfig>,
    verifier: Arc<Verifier>,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

impl Client {
    /// A client with [`DEFAULT_TIMEOUT`]. `verifier` must trust the platform certificates
    /// and/or public key WeChat signs this merchant's answers with.
    pub fn new(merchant: MerchantConfig, verifier: Verifier) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("purrify-wechatpay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self::with_http(merchant, verifier, http))
    }

    /// With a caller-built HTTP client (its own timeouts, proxy or TLS roots).
    pub fn with_http(merchant: MerchantConfig, verifier: Verifier, http: reqwest::Client) -> Self {
        if verifier.is_empty() {
            tracing::warn!("WeChat Pay: no platform certificate or public key configured, every answer will be refused");
        }
        Self { http, merchant: Arc::new(merchant), verifier: Arc::new(verifier) }
    }

    pub fn merchant(&self) -> &MerchantConfig {
        &self.merchant
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Places a JSAPI order; returns its `prepay_id` (valid two hours). Placing the same
    /// `out_trade_no` again with the same content returns the same id.
    pub async fn create_jsapi_order(&self, order: &NewJsapiOrder<'_>) -> Result<String> {
        let body = self.merchant.jsapi_order(order)?;
        let r: PrepayResponse = self.call("POST", jsapi::PATH.into(), "jsapi", Some(&body)).await?;
        Ok(r.prepay_id)
    }

    /// `GET /v3/pay/transactions/out-trade-no/{no}?mchid=…`. An unknown order is
    /// `Error::Api` with code `ORDER_NOT_EXIST`.
    pub async fn query_by_out_trade_no(&self, out_trade_no: &str) -> Result<Transaction> {
        check_merchant_no("out_trade_no", out_trade_no)?;
        // mch_id comes from configuration; WeChat's are digits, so it needs no escaping.
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}", self.merchant.mch_id);
        self.call::<(), _>("GET", path, "query", None).await
    }

    /// Closes an unpaid order, so a late payment cannot arrive for it (WeChat answers 204).
    pub async fn close_order(&self, out_trade_no: &str) -> Result<()> {
        check_merchant_no("out_trade_no", out_trade_no)?;
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let body = serde_json::json!({ "mchid": self.merchant.mch_id });
        self.call::<_, Empty>("POST", path, "close", Some(&body)).await.map(|_| ())
    }

    /// Requests a refund; it is usually `PROCESSING` and settles with a REFUND.* notification.
    pub async fn refund(&self, refund: &NewRefund<'_>) -> Result<Refund> {
        let body = self.merchant.refund_request(refund)?;
        self.call("POST", refund::PATH.into(), "refund", Some(&body)).await
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
    pub async fn query_refund(&self, out_refund_no: &str) -> Result<Refund> {
        check_merchant_no("out_refund_no", out_refund_no)?;
        self.call::<(), _>("GET", format!("{}/{out_refund_no}", refund::PATH), "query_refund", None).await
    }

    /// Signs and sends one request, verifies the answer and decodes it. `what` names the
    /// operation in logs instead of the path, which holds order numbers.
    async fn call<B: Serialize, T: DeserializeOwned>(&self, method: &str, path: String, what: &'static str, body: Option<&B>) -> Result<T> {
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| Error::InvalidRequest(format!("encode: {e}")))?,
            None => Vec::new(),
        };
        let authorization = self.merchant.authorization(method, &path, &body);
        let url = format!("{}{path}", self.merchant.base_url);
        let m = http::Method::from_bytes(method.as_bytes()).map_err(|_| Error::InvalidRequest("method".into()))?;
        let mut req =
            self.http.request(m, url).header(http::header::AUTHORIZATION, authorization).header(http::header::ACCEPT, "application/json");
        if method != "GET" {
            req = req.header(http::header::CONTENT_TYPE, "application/json").body(body);
        }
        let resp = req.send().await.map_err(|e| {
            tracing::warn!(operation = what, timeout = e.is_timeout(), "WeChat Pay request failed");
            Error::Transport(if e.is_timeout() { "timed out".into() } else { e.without_url().to_string() })
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| Error::Transport(e.without_url().to_string()))?;
        // An error answer without WeChat's headers comes from a proxy or load balancer in
        // front of it; it is reported as what it is, and nothing is concluded from it.
        let signed = headers.contains_key(HEADER_SIGNATURE);
        if (status.is_success() || signed)
            && let Err(e) = self.verifier.verify(&headers, &bytes)
        {
            tracing::warn!(operation = what, status = status.as_u16(), error = e.category(), "WeChat Pay answer refused");
            return Err(e);
        }
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => (e.code, e.message),
                Err(_) => ("HTTP_ERROR".to_owned(), status.canonical_reason().unwrap_or("").to_owned()),
            };
            tracing::info!(operation = what, status = status.as_u16(), code, verified = signed, "WeChat Pay error answer");
            return Err(Error::Api { status: status.as_u16(), code, message });
        }
        tracing::debug!(operation = what, status = status.as_u16(), "WeChat Pay answer verified");
        decode(status, &bytes)
    }
}

/// Close answers 204 with no body.
#[derive(serde::Deserialize)]
struct Empty {}

fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T> {
    let bytes: &[u8] = if status == StatusCode::NO_CONTENT || bytes.is_empty() { b"{}" } else { bytes };
    // serde's message can quote the body (payer data): keep only where it failed.
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Malformed(format!("answer: {:?} at line {} column {}", e.classify(), e.line(), e.column())))
}
