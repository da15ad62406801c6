//! Seed 000's WeChat Pay gateway under `/api/wechat/`: create a JSAPI order for a package,
//! query one's own order, and the notification endpoint `WECHAT_NOTIFY_URL` points at.
//!
//! The notification is read as the exact bytes received (the signature covers them), needs
//! no login (WeChat signs it instead) and is exempt from the per-address rate limit (WeChat's
//! deliveries come from few addresses, in bursts). It is answered 204 once applied or
//! already applied, else `{"code": "FAIL", "message": …}`: 401 when it does not verify,
//! 400 when it cannot apply here, 500 when the gateway failed (WeChat retries).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::orders::{CheckoutView, OrderView, RechargeRequest};
use crate::app::AppState;
use crate::domain::payments::Refusal;
use crate::http::auth::CurrentUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::ApiJson;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(query)).routes(routes!(notify))
}

#[utoipa::path(post, path = "/api/wechat/pay/create", tag = "payments", request_body = RechargeRequest, security(("bearer" = [])),
    responses((status = 200, body = Envelope<CheckoutView>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<RechargeRequest>,
) -> ApiResult<Envelope<CheckoutView>> {
    let checkout = state.payments.checkout(&user.user_id, &body.package_id).await?;
    Ok(Envelope::ok("order created", checkout.into()))
}

/// One's own order; a pending one is first checked with WeChat.
#[utoipa::path(get, path = "/api/wechat/pay/query/{out_trade_no}", tag = "payments", params(("out_trade_no" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = Envelope<OrderView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn query(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(no): Path<String>,
) -> ApiResult<Envelope<OrderView>> {
    let order = state.payments.own_order(&user.user_id, &no).await?;
    Ok(Envelope::ok("ok", OrderView::from(&order)))
}

fn fail(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], purrify_wechatpay::notify::failure_body(message)).into_response()
}

#[utoipa::path(post, path = "/api/wechat/pay/notify/", tag = "payments",
    request_body(content = String, content_type = "application/json", description = "WeChat Pay's signed notification, with its Wechatpay-* headers"),
    responses((status = 204, description = "Applied, or applied before"),
              (status = 400, description = "`{\"code\":\"FAIL\"}`: not applicable (another merchant, unknown order, wrong amount)"),
              (status = 401, description = "`{\"code\":\"FAIL\"}`: the signature, serial, timestamp or ciphertext does not verify"),
              (status = 500, description = "`{\"code\":\"FAIL\"}`: not applied now; WeChat retries")))]
pub async fn notify(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match state.payments.handle_notification(&headers, &body).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(Refusal::Unauthenticated(_)) => fail(StatusCode::UNAUTHORIZED, "signature verification failed"),
        Err(Refusal::Rejected(why)) => fail(StatusCode::BAD_REQUEST, &why),
        // The cause is logged by the domain; WeChat only needs to retry.
        Err(Refusal::Internal(_)) => fail(StatusCode::INTERNAL_SERVER_ERROR, "not processed; retry later"),
    }
}
