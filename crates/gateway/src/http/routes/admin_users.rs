//! Account administration (seeds 001 and 002, `/api/admin/users`): the list with filters and
//! paging, and role, active and balance edits (a balance edit is an `adjust` ledger entry).

use axum::Extension;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::{AccountChange, AccountFilter, PageRequest, Role};
use crate::domain::credits::hundredths;
use crate::http::auth::AdminUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::middleware::RequestId;
use crate::http::views::{PageView, UserView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_users)).routes(routes!(update_user))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct UserQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// `user` or `admin`.
    pub role: Option<String>,
    pub is_active: Option<bool>,
    /// Part of the email or username.
    pub search: Option<String>,
}

fn role(v: &str) -> Result<Role, ApiError> {
    Role::parse(v).ok_or_else(|| ApiError::field("role", format!("{v:?} is not user or admin")))
}

#[utoipa::path(get, path = "/api/admin/users", tag = "admin", params(UserQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<PageView<UserView>>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> ApiResult<Envelope<PageView<UserView>>> {
    let filter = AccountFilter {
        role: q.role.as_deref().filter(|r| !r.is_empty()).map(role).transpose()?,
        active: q.is_active,
        search: q.search.filter(|s| !s.trim().is_empty()).map(|s| s.trim().chars().take(100).collect()),
    };
    let page = state.accounts.list(&filter, PageRequest::new(q.page, q.page_size)).await?;
    Ok(Envelope::ok("ok", PageView::of(page, |a| UserView::from(&a))))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct UpdateUser {
    pub role: Option<String>,
    pub is_active: Option<bool>,
    /// The new balance (credits, two decimals): written as one `adjust` ledger entry that
    /// names the admin.
    #[schema(value_type = Option<f64>)]
    pub balance: Option<Value>,
}

#[utoipa::path(put, path = "/api/admin/users/{user_id}", tag = "admin", request_body = UpdateUser, security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = Envelope<UserView>),
              (status = 404, body = ErrorBody),
              (status = 422, description = "Bad role or balance, or demoting the last admin", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Extension(request_id): Extension<RequestId>,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> ApiResult<Envelope<UserView>> {
    let role = body.role.as_deref().map(role).transpose()?;
    // The absolute balance the admin asks for becomes one `adjust` ledger entry naming the
    // admin; the request id makes a retried request a no-op.
    let target = match &body.balance {
        None => None,
        Some(Value::Number(n)) => Some(hundredths(&n.to_string()).map_err(|m| ApiError::field("balance", m))?),
        Some(Value::String(s)) => Some(hundredths(s).map_err(|m| ApiError::field("balance", m))?),
        Some(_) => return Err(ApiError::field("balance", "must be a number like 200.00")),
    };
    if let Some(target) = target {
        state.credits.set_balance(&admin.user_id, &user_id, target, &format!("adjust:{}", request_id.0)).await?;
    }
    let change = AccountChange { role, active: body.is_active };
    let account = state.accounts.admin_update(&admin, &user_id, change).await?;
    Ok(Envelope::ok("user updated", UserView::from(&account)))
}
