//! The HTTP side of the fake: one handler that checks the merchant's signature, routes by
//! method and path like WeChat's API, and signs the answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use purrify_wechatpay::jsapi::JsapiOrderRequest;
use purrify_wechatpay::refund::{Refund, RefundAmount, RefundRequest};
use purrify_wechatpay::sign::{self, Authorization};
use purrify_wechatpay::transaction::{Payer, Transaction, TransactionAmount};
use purrify_wechatpay::verify::{HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_SKEW_SECS};
use serde_json::{Value, json};

use super::delivery::{deliver_refund, now_beijing};
use super::{FakeOrder, FakeRefund, Shared};

pub(super) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

type Answer = (StatusCode, Option<Value>);

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    (status, Some(json!({ "code": code, "message": message })))
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    shared.state.lock().unwrap().requests += 1;
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let (status, value) = match check_signature(&shared, method.as_str(), path_and_query, &headers, &body) {
        Err(why) => {
            shared.state.lock().unwrap().rejected_signatures += 1;
            error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", why)
        }
        Ok(()) => route(&shared, &method, &uri, &body),
    };
    signed_response(&shared, status, value)
}

/// What WeChat checks of a merchant request, in its order.
fn check_signature(shared: &Shared, method: &str, path_and_query: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let value = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or("没有Authorization")?;
    let auth = Authorization::parse(value).map_err(|_| "Authorization格式错误")?;
    if auth.mchid != shared.cfg.mch_id {
        return Err("商户号与Authorization中的不一致");
    }
    if !auth.serial_no.eq_ignore_ascii_case(&shared.cfg.merchant_serial) {
        return Err("商户证书序列号有误");
    }
    let timestamp: i64 = auth.timestamp.parse().map_err(|_| "时间戳格式错误")?;
    if (chrono::Utc::now().timestamp() - timestamp).abs() > MAX_SKEW_SECS {
        return Err("请求已过期");
    }
    let message = sign::request_message(method, path_and_query, timestamp, &auth.nonce_str, body);
    shared.cfg.merchant_public_key.verify_base64(&message, &auth.signature).map_err(|_| "签名错误")
}

fn signed_response(shared: &Shared, status: StatusCode, value: Option<Value>) -> Response {
    let body = value.map(|v| v.to_string().into_bytes()).unwrap_or_default();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let nonce = sign::nonce();
    let signature = shared.key.sign_base64(&sign::response_message(&timestamp, &nonce, &body));
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, v: &str| {
        headers.insert(name, HeaderValue::from_str(v).unwrap());
    };
    set(HEADER_TIMESTAMP, &timestamp);
    set(HEADER_NONCE, &nonce);
    set(HEADER_SIGNATURE, &signature);
    set(HEADER_SERIAL, &shared.public_key_id);
    set("Request-ID", &format!("08F78BB5AF0610D302{:016X}", shared.next_id()));
    if !body.is_empty() {
        set("Content-Type", "application/json; charset=utf-8");
    }
    (status, headers, body).into_response()
}

fn route(shared: &Arc<Shared>, method: &Method, uri: &Uri, body: &[u8]) -> Answer {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let query_mchid = uri.query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("mchid=")));
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v3", "pay", "transactions", "jsapi"]) => create_order(shared, body),
        ("GET", ["v3", "pay", "transactions", "out-trade-no", no]) => {
            if query_mchid != Some(shared.cfg.mch_id.as_str()) {
                return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid与商户号不一致");
            }
            query_order(shared, no)
        }
        ("POST", ["v3", "pay", "transactions", "out-trade-no", no, "close"]) => close_order(shared, no, body),
        ("POST", ["v3", "refund", "domestic", "refunds"]) => create_refund(shared, body),
        ("GET", ["v3", "refund", "domestic", "refunds", no]) => match shared.state.lock().unwrap().refunds.get(*no) {
            Some(r) => (StatusCode::OK, Some(serde_json::to_value(refund_view(r)).unwrap())),
            None => error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"),
        },
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "请求的资源不存在"),
    }
}

fn create_order(shared: &Shared, body: &[u8]) -> Answer {
    let Ok(req) = serde_json::from_slice::<JsapiOrderRequest>(body) else {
        return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "输入源“/body”映射到字段失败");
    };
    if req.mchid != shared.cfg.mch_id {
        return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid与Authorization中的不一致");
    }
    if req.appid != shared.cfg.appid {
        return error(StatusCode::BAD_REQUEST, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配");
    }
    if req.amount.total <= 0 || req.amount.currency != "CNY" {
        return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "订单金额有误");
    }
    if req.payer.openid.is_empty() || req.notify_url.is_empty() || req.description.is_empty() {
        return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "缺少参数");
    }
    let id = shared.next_id();
    let mut state = shared.state.lock().unwrap();
    if let Some(existing) = state.orders.get(&req.out_trade_no) {
        // WeChat: the same order placed again gets the same prepay id; different content
        // under the same number is refused.
        return match existing.trade_state.as_str() {
            "SUCCESS" | "REFUND" => error(StatusCode::FORBIDDEN, "ORDERPAID", "该订单已支付"),
            "CLOSED" => error(StatusCode::BAD_REQUEST, "ORDERCLOSED", "该订单已关闭"),
            _ if existing.total == req.amount.total && existing.openid == req.payer.openid && existing.description == req.description => {
                (StatusCode::OK, Some(json!({ "prepay_id": existing.prepay_id })))
            }
            _ => error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "201 商户订单号重复"),
        };
    }
    let prepay_id = format!("wx{}{id:016x}", chrono::Utc::now().format("%d%H%M%S"));
    let order = FakeOrder {
        out_trade_no: req.out_trade_no.clone(),
        appid: req.appid,
        description: req.description,
        total: req.amount.total,
        openid: req.payer.openid,
        notify_url: req.notify_url,
        attach: req.attach,
        time_expire: req.time_expire,
        prepay_id: prepay_id.clone(),
        trade_state: "NOTPAY".into(),
        transaction_id: None,
        success_time: None,
        refunded: 0,
    };
    state.orders.insert(req.out_trade_no, order);
    (StatusCode::OK, Some(json!({ "prepay_id": prepay_id })))
}

fn query_order(shared: &Shared, no: &str) -> Answer {
    let state = shared.state.lock().unwrap();
    let Some(o) = state.orders.get(no) else { return error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在") };
    let paid = o.transaction_id.is_some();
    let desc = match o.trade_state.as_str() {
        "SUCCESS" => "支付成功",
        "REFUND" => "转入退款",
        "CLOSED" => "已关闭",
        _ => "订单未支付",
    };
    let t = Transaction {
        appid: o.appid.clone(),
        mchid: shared.cfg.mch_id.clone(),
        out_trade_no: o.out_trade_no.clone(),
        transaction_id: o.transaction_id.clone(),
        trade_type: paid.then(|| "JSAPI".into()),
        trade_state: o.trade_state.clone(),
        trade_state_desc: desc.into(),
        bank_type: paid.then(|| "OTHERS".into()),
        attach: o.attach.clone(),
        success_time: o.success_time.clone(),
        payer: Some(Payer { openid: o.openid.clone() }),
        amount: Some(TransactionAmount {
            total: o.total,
            payer_total: paid.then_some(o.total),
            currency: "CNY".into(),
            payer_currency: Some("CNY".into()),
        }),
    };
    (StatusCode::OK, Some(serde_json::to_value(t).unwrap()))
}

fn close_order(shared: &Shared, no: &str, body: &[u8]) -> Answer {
    let mchid = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["mchid"].as_str().map(str::to_owned));
    if mchid.as_deref() != Some(shared.cfg.mch_id.as_str()) {
        return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid有误");
    }
    let mut state = shared.state.lock().unwrap();
    let Some(o) = state.orders.get_mut(no) else { return error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在") };
    match o.trade_state.as_str() {
        "SUCCESS" | "REFUND" => error(StatusCode::BAD_REQUEST, "ORDERPAID", "订单已支付"),
        _ => {
            o.trade_state = "CLOSED".into();
            (StatusCode::NO_CONTENT, None)
        }
    }
}

pub(super) fn refund_amount(r: &FakeRefund) -> RefundAmount {
    RefundAmount { total: r.total, refund: r.refund, payer_total: r.total, payer_refund: r.refund, currency: "CNY".into() }
}

fn refund_view(r: &FakeRefund) -> Refund {
    Refund {
        refund_id: r.refund_id.clone(),
        out_refund_no: r.out_refund_no.clone(),
        transaction_id: r.transaction_id.clone(),
        out_trade_no: r.out_trade_no.clone(),
        channel: "ORIGINAL".into(),
        user_received_account: "支付用户零钱".into(),
        success_time: r.success_time.clone(),
        create_time: r.create_time.clone(),
        status: r.status.clone(),
        amount: refund_amount(r),
    }
}

fn create_refund(shared: &Arc<Shared>, body: &[u8]) -> Answer {
    let Ok(req) = serde_json::from_slice::<RefundRequest>(body) else {
        return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "输入源“/body”映射到字段失败");
    };
    let id = shared.next_id();
    let mut state = shared.state.lock().unwrap();
    if let Some(existing) = state.refunds.get(&req.out_refund_no) {
        // The same out_refund_no is the same refund, never a second one.
        return (StatusCode::OK, Some(serde_json::to_value(refund_view(existing)).unwrap()));
    }
    let Some(order) = state.orders.get_mut(&req.out_trade_no) else {
        return error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在");
    };
    let Some(transaction_id) = order.transaction_id.clone() else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "订单未支付");
    };
    if req.amount.total != order.total || req.amount.currency != "CNY" {
        return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "订单金额与原订单不一致");
    }
    if req.amount.refund <= 0 || order.refunded + req.amount.refund > order.total {
        return error(StatusCode::FORBIDDEN, "NOT_ENOUGH", "可退金额不足");
    }
    order.refunded += req.amount.refund;
    let refund = FakeRefund {
        out_refund_no: req.out_refund_no.clone(),
        refund_id: format!("50000{id:024}"),
        out_trade_no: req.out_trade_no,
        transaction_id,
        total: order.total,
        refund: req.amount.refund,
        status: "PROCESSING".into(),
        notify_url: req.notify_url.unwrap_or_else(|| order.notify_url.clone()),
        create_time: now_beijing(),
        success_time: None,
    };
    let answer = (StatusCode::OK, Some(serde_json::to_value(refund_view(&refund)).unwrap()));
    state.refunds.insert(req.out_refund_no.clone(), refund);
    drop(state);
    // WeChat settles refunds asynchronously and reports them with a REFUND.* notification.
    let shared = shared.clone();
    tokio::spawn(async move {
        let settled = settle_refund(&shared, &req.out_refund_no);
        deliver_refund(&shared, &settled).await;
    });
    answer
}

fn settle_refund(shared: &Shared, out_refund_no: &str) -> FakeRefund {
    let outcome = *shared.refund_outcome.lock().unwrap();
    let mut state = shared.state.lock().unwrap();
    let state = &mut *state;
    let r = state.refunds.get_mut(out_refund_no).expect("the refund just created");
    r.status = outcome.into();
    let order = state.orders.get_mut(&r.out_trade_no).expect("the refund's order");
    if outcome == "SUCCESS" {
        r.success_time = Some(now_beijing());
        order.trade_state = "REFUND".into();
    } else {
        // A refund that did not happen gives the amount back to what can be refunded.
        order.refunded -= r.refund;
    }
    r.clone()
}
