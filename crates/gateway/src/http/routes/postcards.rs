//! Seed 004's surface (the postcard mini-program): plain JSON as the seed writes it. Its
//! login is the same WeChat code exchange as seed 001's.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::auth::ClientAddr;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::ApiJson;

mod cards;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login)).merge(cards::router())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CodeLogin {
    /// The code of `wx.login()`.
    pub code: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CodeLoginResponse {
    /// The access token (JWT).
    pub token: String,
    pub is_new_user: bool,
    pub refresh_token: String,
    pub expires_in: u64,
}

#[utoipa::path(post, path = "/api/v1/users/login", tag = "postcards", request_body = CodeLogin,
    responses((status = 200, body = CodeLoginResponse),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<CodeLogin>,
) -> ApiResult<axum::Json<CodeLoginResponse>> {
    let s = state.accounts.login_wechat(&body.code, &addr).await?;
    Ok(axum::Json(CodeLoginResponse {
        token: s.access_token,
        is_new_user: s.is_new_user,
        refresh_token: s.refresh_token,
        expires_in: s.expires_in,
    }))
}
