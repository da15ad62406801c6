//! Seed 003's `POST /api/v1/user/recharge`: buy compute power with a package through WeChat
//! Pay, in the `{code, message, data, timestamp}` envelope with camelCase fields.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::auth::CurrentUser;
use crate::http::envelope::{V1, V1Error};
use crate::http::error::ApiResult;
use crate::http::extract::ApiJson;
use crate::http::routes::orders::PaymentParams;
use crate::http::views::{decimal, iso};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(recharge))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct V1Recharge {
    /// A package id from `/api/credits/packages`.
    #[serde(alias = "package_id")]
    pub package_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Checkout {
    pub order_id: String,
    pub out_trade_no: String,
    /// Yuan.
    pub amount: f64,
    /// Compute power credited when paid (credits plus bonus).
    pub compute_power: f64,
    pub expires_at: String,
    /// Pass to `wx.requestPayment`.
    pub payment: PaymentParams,
}

#[utoipa::path(post, path = "/api/v1/user/recharge", tag = "generation", request_body = V1Recharge, security(("bearer" = [])),
    responses((status = 200, body = V1<V1Checkout>), (status = 401, body = V1Error), (status = 422, body = V1Error), (status = 503, body = V1Error)))]
pub async fn recharge(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<V1Recharge>,
) -> ApiResult<V1<V1Checkout>> {
    let c = state.payments.checkout(&user.user_id, &body.package_id).await?;
    let o = &c.order;
    Ok(V1::ok(V1Checkout {
        order_id: o.out_trade_no.clone(),
        out_trade_no: o.out_trade_no.clone(),
        amount: decimal(o.amount_fen),
        compute_power: decimal(o.total_credits()),
        expires_at: iso(o.expires_at),
        payment: c.payment.into(),
    }))
}
