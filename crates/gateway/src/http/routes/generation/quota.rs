//! Seed 003's quotas as the user sees them: `GET /api/v1/user/quota`, the plan and each
//! counter's limit, use and reset time in the current UTC day or hour. The counting itself is
//! the API-call middleware's (`http::middleware::quota`) and, for generations, the
//! generation endpoints'.

use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::quotas::{Allowance, QuotaReport};
use crate::http::auth::CurrentUser;
use crate::http::envelope::{V1, V1Error};
use crate::http::error::ApiResult;
use crate::http::views::iso;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(quota))
}

/// One counter in its current window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Allowance {
    pub limit: i64,
    pub used: i64,
    pub remaining: i64,
    /// When the window ends and the count starts again (`2024-01-27T00:00:00Z`).
    pub reset_at: String,
}

impl From<Allowance> for V1Allowance {
    fn from(a: Allowance) -> Self {
        Self { limit: a.limit, used: a.used, remaining: a.remaining, reset_at: iso(a.reset_at) }
    }
}

/// The user's plan and quotas: image and video generations per UTC day, API calls per UTC
/// hour.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Quota {
    /// `free` or `vip`.
    pub plan: String,
    pub image: V1Allowance,
    pub video: V1Allowance,
    pub api: V1Allowance,
}

impl From<QuotaReport> for V1Quota {
    fn from(r: QuotaReport) -> Self {
        Self { plan: r.plan.as_str().into(), image: r.image.into(), video: r.video.into(), api: r.api.into() }
    }
}

/// Not itself counted as an API call, so a client that spent its hour can still see when
/// it resets.
#[utoipa::path(get, path = "/api/v1/user/quota", tag = "generation", security(("bearer" = [])),
    responses((status = 200, body = V1<V1Quota>), (status = 401, body = V1Error)))]
pub async fn quota(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<V1<V1Quota>> {
    Ok(V1::ok(state.quotas.report(&user).await?.into()))
}
