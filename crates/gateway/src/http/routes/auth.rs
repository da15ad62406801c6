//! Logins and tokens for seeds 001 and 002 (`/api/auth/*`): WeChat mini-program login,
//! email registration and login, the admin login, refresh with rotation, logout, and "who
//! am I". Answers are in the `{success, message, data, error_code}` envelope.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::Registration;
use crate::http::auth::{ClientAddr, CurrentUser};
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::ApiJson;
use crate::http::views::{SessionView, UserView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(wechat_login))
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(admin_login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WeChatLogin {
    /// The code of `wx.login()`.
    pub code: String,
}

/// The mini-program's login: the code is exchanged with WeChat once; the first login creates
/// the account (`is_new_user`).
#[utoipa::path(post, path = "/api/auth/wechat/login", tag = "auth", request_body = WeChatLogin,
    responses((status = 200, body = Envelope<SessionView>),
              (status = 401, description = "Invalid, expired or used code", body = ErrorBody),
              (status = 403, description = "WeChat flags the user as high-risk, or the account is deactivated", body = ErrorBody),
              (status = 429, description = "Too many attempts (here or at WeChat)", body = ErrorBody),
              (status = 503, description = "WeChat busy or not configured", body = ErrorBody)))]
pub async fn wechat_login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<WeChatLogin>,
) -> ApiResult<Envelope<SessionView>> {
    let session = state.accounts.login_wechat(&body.code, &addr).await?;
    Ok(Envelope::ok("login successful", session.into()))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RegisterRequest {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub full_name: Option<String>,
}

/// Seed 002's registration; the new account is logged in.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = Envelope<SessionView>),
              (status = 422, description = "Missing, invalid, weak or taken fields (`details.field_errors`)", body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Envelope<SessionView>)> {
    let r = Registration { email: body.email, username: body.username, password: body.password, full_name: body.full_name };
    let session = state.accounts.register(r, &addr).await?;
    Ok((StatusCode::CREATED, Envelope::ok("registered", session.into())))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// Email and password (seed 002). A wrong email and a wrong password get the same answer.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Envelope<SessionView>),
              (status = 401, description = "Wrong email or password", body = ErrorBody),
              (status = 403, description = "Deactivated account", body = ErrorBody),
              (status = 429, description = "Too many attempts for this address or account", body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Envelope<SessionView>> {
    let session = state.accounts.login(&body.email, &body.password, &addr, false).await?;
    Ok(Envelope::ok("login successful", session.into()))
}

/// The admin console's login (seed 001): as `/api/auth/login`, for admins only.
#[utoipa::path(post, path = "/api/auth/admin/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Envelope<SessionView>),
              (status = 401, body = ErrorBody),
              (status = 403, description = "Not an administrator, or deactivated", body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn admin_login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Envelope<SessionView>> {
    let session = state.accounts.login(&body.email, &body.password, &addr, true).await?;
    Ok(Envelope::ok("login successful", session.into()))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A new token pair for a refresh token, which is used up: presenting it again revokes every
/// token of that login.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = Envelope<SessionView>),
              (status = 401, description = "Invalid, expired, revoked or replayed refresh token", body = ErrorBody)))]
pub async fn refresh(State(state): State<AppState>, ApiJson(body): ApiJson<RefreshRequest>) -> ApiResult<Envelope<SessionView>> {
    if body.refresh_token.is_empty() {
        return Err(ApiError::field("refresh_token", "is required"));
    }
    let session = state.accounts.refresh(&body.refresh_token).await?;
    Ok(Envelope::ok("token refreshed", session.into()))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LogoutRequest {
    /// This session's refresh token: it and every token rotated from it stop working.
    pub refresh_token: Option<String>,
    /// Also end every other session and every access token of the account, at once.
    pub all_devices: bool,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LoggedOut {
    pub all_devices: bool,
}

#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", request_body = LogoutRequest, security(("bearer" = [])),
    responses((status = 200, body = Envelope<LoggedOut>), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<LogoutRequest>,
) -> ApiResult<Envelope<LoggedOut>> {
    state.accounts.logout(&user, body.refresh_token.as_deref(), body.all_devices).await?;
    Ok(Envelope::ok("logged out", LoggedOut { all_devices: body.all_devices }))
}

/// The logged-in account (seed 001).
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserView>), (status = 401, body = ErrorBody)))]
pub async fn me(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Envelope<UserView>> {
    let account = state.accounts.account(&user.user_id).await?;
    Ok(Envelope::ok("ok", UserView::from(&account)))
}
