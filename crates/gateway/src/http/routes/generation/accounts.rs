//! Seed 003's accounts: `/api/v1/auth/register` (201 with `{user, token}`), `/api/v1/auth/login`,
//! `/api/v1/auth/refresh`, and `/api/v1/user/profile`.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::{Account, Registration, Session};
use crate::http::auth::{ClientAddr, CurrentUser};
use crate::http::envelope::{V1, V1Error};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiJson;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(profile))
        .routes(routes!(compute_power))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1User {
    pub id: String,
    pub username: Option<String>,
    pub email: Option<String>,
}

/// Seed 003's `{user, token}`, with the refresh token beside it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Session {
    pub user: V1User,
    /// The access token (JWT).
    pub token: String,
    pub refresh_token: String,
    /// Seconds the token is valid.
    pub expires_in: u64,
}

impl From<Session> for V1Session {
    fn from(s: Session) -> Self {
        Self {
            user: V1User { id: s.account.id, username: s.account.username, email: s.account.email },
            token: s.access_token,
            refresh_token: s.refresh_token,
            expires_in: s.expires_in,
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct V1Register {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "generation", request_body = V1Register,
    responses((status = 201, body = V1<V1Session>), (status = 422, body = V1Error), (status = 429, body = V1Error)))]
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<V1Register>,
) -> ApiResult<V1<V1Session>> {
    let r = Registration { email: body.email, username: body.username, password: body.password, full_name: None };
    Ok(V1::created(state.accounts.register(r, &addr).await?.into()))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct V1Login {
    pub email: String,
    pub password: String,
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "generation", request_body = V1Login,
    responses((status = 200, body = V1<V1Session>), (status = 401, body = V1Error), (status = 403, body = V1Error), (status = 429, body = V1Error)))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<V1Login>,
) -> ApiResult<V1<V1Session>> {
    Ok(V1::ok(state.accounts.login(&body.email, &body.password, &addr, false).await?.into()))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct V1Refresh {
    pub refresh_token: String,
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "generation", request_body = V1Refresh,
    responses((status = 200, body = V1<V1Session>), (status = 401, body = V1Error)))]
pub async fn refresh(State(state): State<AppState>, ApiJson(body): ApiJson<V1Refresh>) -> ApiResult<V1<V1Session>> {
    if body.refresh_token.is_empty() {
        return Err(ApiError::field("refreshToken", "is required"));
    }
    Ok(V1::ok(state.accounts.refresh(&body.refresh_token).await?.into()))
}

/// Seed 003's profile. `computePower` is the credit balance in whole credits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub id: String,
    pub username: Option<String>,
    pub avatar: Option<String>,
    pub compute_power: i64,
    pub vip_level: i64,
    /// Tasks of this user that completed.
    pub total_generated: u64,
}

impl Profile {
    fn of(a: Account, completed: u64) -> Self {
        Self {
            id: a.id,
            username: a.username,
            avatar: a.avatar_url,
            compute_power: a.balance / 100,
            vip_level: a.vip_level,
            total_generated: completed,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/user/profile", tag = "generation", security(("bearer" = [])),
    responses((status = 200, body = V1<Profile>), (status = 401, body = V1Error)))]
pub async fn profile(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<V1<Profile>> {
    let account = state.accounts.account(&user.user_id).await?;
    let stats = state.accounts.task_stats(&user.user_id).await?;
    Ok(V1::ok(Profile::of(account, stats.completed)))
}

/// Seed 003's compute power, in whole credits from the ledger: `total = used + remaining`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputePower {
    pub total: i64,
    /// Spent on finished tasks and held by running ones.
    pub used: i64,
    /// The balance.
    pub remaining: i64,
    /// Granted (sign-up gifts, compensation).
    pub gifted: i64,
    /// Completed 4x (HD) enhancements.
    pub hd_count: u64,
}

#[utoipa::path(get, path = "/api/v1/user/compute-power", tag = "generation", security(("bearer" = [])),
    responses((status = 200, body = V1<ComputePower>), (status = 401, body = V1Error)))]
pub async fn compute_power(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<V1<ComputePower>> {
    let b = state.credits.balance(&user.user_id).await?;
    let totals = state.credits.totals(&user.user_id).await?;
    let stats = state.accounts.task_stats(&user.user_id).await?;
    let (remaining, used) = (b.balance / 100, (b.spent + b.held) / 100);
    Ok(V1::ok(ComputePower {
        total: remaining + used,
        used,
        remaining,
        gifted: totals.of(crate::domain::credits::LedgerKind::Grant) / 100,
        hd_count: stats.hd_completed,
    }))
}
