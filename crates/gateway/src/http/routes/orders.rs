//! Seed 001's packages and recharge orders (`/api/credits/packages`, `/recharge`, `/orders`)
//! and the admin's orders (`/api/admin/orders`, refunds). Prices are fen and shown in yuan,
//! credits hundredths shown as decimals; both are also given exactly (`*_fen`).

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::payments::{Checkout, Order, OrderStatus, Package, PageRequest, RefundRow, RequestPayment};
use crate::http::auth::{AdminUser, CurrentUser};
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::views::{PageView, decimal, iso};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(packages))
        .routes(routes!(recharge))
        .routes(routes!(own_orders))
        .routes(routes!(admin_orders))
        .routes(routes!(admin_refund))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PackageView {
    pub id: String,
    pub name: String,
    /// Yuan.
    pub price: f64,
    pub price_fen: i64,
    pub credits: f64,
    pub bonus: f64,
    /// Credits plus bonus: what paying it credits.
    pub total_credits: f64,
}

impl From<&Package> for PackageView {
    fn from(p: &Package) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            price: decimal(p.price_fen),
            price_fen: p.price_fen,
            credits: decimal(p.credits),
            bonus: decimal(p.bonus),
            total_credits: decimal(p.credits + p.bonus),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    /// The out_trade_no.
    pub order_id: String,
    pub out_trade_no: String,
    pub user_id: String,
    pub package_id: String,
    pub description: String,
    /// Yuan.
    pub amount: f64,
    pub amount_fen: i64,
    pub credits: f64,
    pub bonus: f64,
    /// pending, paid, closed, refunding or refunded.
    pub status: &'static str,
    /// WeChat's id, once paid.
    pub transaction_id: Option<String>,
    pub created_at: String,
    pub paid_at: Option<String>,
    pub expires_at: String,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        Self {
            order_id: o.out_trade_no.clone(),
            out_trade_no: o.out_trade_no.clone(),
            user_id: o.user_id.clone(),
            package_id: o.package_id.clone(),
            description: o.description.clone(),
            amount: decimal(o.amount_fen),
            amount_fen: o.amount_fen,
            credits: decimal(o.credits),
            bonus: decimal(o.bonus),
            status: o.status.as_str(),
            transaction_id: o.transaction_id.clone(),
            created_at: iso(o.created_at),
            paid_at: o.paid_at.map(iso),
            expires_at: iso(o.expires_at),
        }
    }
}

/// `wx.requestPayment`'s object, with the mini program's field names.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentParams {
    #[serde(rename = "appId")]
    pub app_id: String,
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    /// `prepay_id=…`.
    pub package: String,
    /// `RSA`.
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

impl From<RequestPayment> for PaymentParams {
    fn from(p: RequestPayment) -> Self {
        Self {
            app_id: p.app_id,
            time_stamp: p.time_stamp,
            nonce_str: p.nonce_str,
            package: p.package,
            sign_type: p.sign_type,
            pay_sign: p.pay_sign,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckoutView {
    pub order_id: String,
    pub out_trade_no: String,
    /// Yuan.
    pub amount: f64,
    pub amount_fen: i64,
    pub credits: f64,
    pub bonus: f64,
    pub expires_at: String,
    /// Pass to `wx.requestPayment`.
    pub payment: PaymentParams,
}

impl From<Checkout> for CheckoutView {
    fn from(c: Checkout) -> Self {
        let o = &c.order;
        Self {
            order_id: o.out_trade_no.clone(),
            out_trade_no: o.out_trade_no.clone(),
            amount: decimal(o.amount_fen),
            amount_fen: o.amount_fen,
            credits: decimal(o.credits),
            bonus: decimal(o.bonus),
            expires_at: iso(o.expires_at),
            payment: c.payment.into(),
        }
    }
}

#[utoipa::path(get, path = "/api/credits/packages", tag = "payments",
    responses((status = 200, body = Envelope<Vec<PackageView>>)))]
pub async fn packages(State(state): State<AppState>) -> ApiResult<Envelope<Vec<PackageView>>> {
    let list = state.payments.packages().await?;
    Ok(Envelope::ok("ok", list.iter().map(PackageView::from).collect()))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RechargeRequest {
    /// A package id from `/api/credits/packages`.
    #[serde(alias = "packageId")]
    pub package_id: String,
}

#[utoipa::path(post, path = "/api/credits/recharge", tag = "payments", request_body = RechargeRequest, security(("bearer" = [])),
    responses((status = 200, body = Envelope<CheckoutView>),
              (status = 422, description = "No such package, or the account has no WeChat login of the merchant's app", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 503, description = "WeChat Pay is not configured or did not take the order", body = ErrorBody)))]
pub async fn recharge(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<RechargeRequest>,
) -> ApiResult<Envelope<CheckoutView>> {
    let checkout = state.payments.checkout(&user.user_id, &body.package_id).await?;
    Ok(Envelope::ok("order created", checkout.into()))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct OrdersQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// pending, paid, closed, refunding or refunded.
    pub status: Option<String>,
}

fn status_filter(q: &OrdersQuery) -> ApiResult<Option<OrderStatus>> {
    match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => OrderStatus::parse(s).map(Some).ok_or_else(|| ApiError::field("status", format!("{s:?} is not an order status"))),
    }
}

#[utoipa::path(get, path = "/api/credits/orders", tag = "payments", params(OrdersQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<PageView<OrderView>>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn own_orders(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<OrdersQuery>,
) -> ApiResult<Envelope<PageView<OrderView>>> {
    let page = state.payments.orders(Some(&user.user_id), status_filter(&q)?, PageRequest::new(q.page, q.page_size)).await?;
    Ok(Envelope::ok("ok", PageView::of(page, |o| OrderView::from(&o))))
}

#[utoipa::path(get, path = "/api/admin/orders", tag = "admin", params(OrdersQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<PageView<OrderView>>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn admin_orders(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<OrdersQuery>,
) -> ApiResult<Envelope<PageView<OrderView>>> {
    let page = state.payments.orders(None, status_filter(&q)?, PageRequest::new(q.page, q.page_size)).await?;
    Ok(Envelope::ok("ok", PageView::of(page, |o| OrderView::from(&o))))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RefundRequest {
    /// Shown to the payer (80 characters).
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefundView {
    pub out_refund_no: String,
    pub out_trade_no: String,
    /// Yuan.
    pub amount: f64,
    /// processing until WeChat reports it, then success or failed.
    pub status: String,
    /// Credits taken back once it succeeded.
    pub credits_taken: Option<f64>,
    pub created_at: String,
    pub settled_at: Option<String>,
}

impl From<RefundRow> for RefundView {
    fn from(r: RefundRow) -> Self {
        Self {
            out_refund_no: r.out_refund_no,
            out_trade_no: r.out_trade_no,
            amount: decimal(r.amount_fen),
            status: r.status,
            credits_taken: r.credits_taken.map(decimal),
            created_at: iso(r.created_at),
            settled_at: r.settled_at.map(iso),
        }
    }
}

/// A full refund through WeChat Pay. The credits are taken back when WeChat reports it done;
/// refused (400 INSUFFICIENT_BALANCE) when the user no longer has them.
#[utoipa::path(post, path = "/api/admin/orders/{out_trade_no}/refund", tag = "admin", request_body = RefundRequest, security(("bearer" = [])),
    params(("out_trade_no" = String, Path)),
    responses((status = 200, body = Envelope<RefundView>),
              (status = 400, description = "The user's balance no longer covers the order's credits", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, description = "Not a paid order, or WeChat refused", body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn admin_refund(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(out_trade_no): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Envelope<RefundView>> {
    // The body is optional: an empty one asks for a refund without a reason.
    let request: RefundRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RefundRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::field("body", format!("invalid JSON: {e}")))?
    };
    let reason = request.reason;
    let refund = state.payments.refund(&admin.user_id, &out_trade_no, reason.as_deref()).await?;
    Ok(Envelope::ok("refund requested", refund.into()))
}
