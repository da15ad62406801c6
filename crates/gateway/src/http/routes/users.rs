//! The logged-in user's own account (seed 002, `/api/users/*`): profile, password, and
//! totals from the task table.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::ProfileEdit;
use crate::http::auth::{ClientAddr, CurrentUser};
use crate::http::envelope::Envelope;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::ApiJson;
use crate::http::views::{UserView, decimal, iso};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_me, update_me)).routes(routes!(change_password)).routes(routes!(stats))
}

/// The account with its task count (seed 002).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeView {
    #[serde(flatten)]
    pub user: UserView,
    pub total_tasks: u64,
}

#[utoipa::path(get, path = "/api/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Envelope<MeView>), (status = 401, body = ErrorBody)))]
pub async fn get_me(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Envelope<MeView>> {
    let account = state.accounts.account(&user.user_id).await?;
    let stats = state.accounts.task_stats(&user.user_id).await?;
    Ok(Envelope::ok("ok", MeView { user: UserView::from(&account), total_tasks: stats.total }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct UpdateMe {
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub avatar_url: Option<String>,
}

#[utoipa::path(put, path = "/api/users/me", tag = "users", request_body = UpdateMe, security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserView>),
              (status = 422, description = "Invalid or taken fields", body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn update_me(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<UpdateMe>,
) -> ApiResult<Envelope<UserView>> {
    let edit = ProfileEdit { username: body.username, full_name: body.full_name, avatar_url: body.avatar_url };
    let account = state.accounts.update_profile(&user.user_id, edit).await?;
    Ok(Envelope::ok("profile updated", UserView::from(&account)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PasswordChanged {
    /// Every session was signed out, this one included: log in again.
    pub sessions_revoked: bool,
}

/// Changes the password; every access and refresh token of the account stops working.
#[utoipa::path(post, path = "/api/users/change-password", tag = "users", request_body = ChangePassword, security(("bearer" = [])),
    responses((status = 200, body = Envelope<PasswordChanged>),
              (status = 422, description = "Wrong current password, or a weak new one", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<ChangePassword>,
) -> ApiResult<Envelope<PasswordChanged>> {
    state.accounts.change_password(&user.user_id, &body.current_password, &body.new_password, &addr).await?;
    Ok(Envelope::ok("password changed; log in again", PasswordChanged { sessions_revoked: true }))
}

/// Seed 002's user statistics.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserStats {
    pub total_tasks: u64,
    pub completed_tasks: u64,
    pub failed_tasks: u64,
    pub cancelled_tasks: u64,
    /// Credits spent on tasks, as a decimal.
    pub total_cost: f64,
    pub current_balance: f64,
    pub last_task_date: Option<String>,
}

#[utoipa::path(get, path = "/api/users/stats", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserStats>), (status = 401, body = ErrorBody)))]
pub async fn stats(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Envelope<UserStats>> {
    let s = state.accounts.task_stats(&user.user_id).await?;
    let account = state.accounts.account(&user.user_id).await?;
    Ok(Envelope::ok(
        "ok",
        UserStats {
            total_tasks: s.total,
            completed_tasks: s.completed,
            failed_tasks: s.failed,
            cancelled_tasks: s.cancelled,
            total_cost: decimal(s.total_cost),
            current_balance: decimal(account.balance),
            last_task_date: s.last_task_at.map(iso),
        },
    ))
}
