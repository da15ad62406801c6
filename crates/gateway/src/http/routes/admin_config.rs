//! Seed 001's admin configuration (`/api/admin/config`): the settings an admin changes at
//! run time. Today: task prices (`price_enhance`, credits per task).

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::credits::{PRICED_KINDS, hundredths};
use crate::http::auth::AdminUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::ApiJson;
use crate::http::views::decimal;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_config)).routes(routes!(put_config))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigItem {
    pub key: String,
    #[schema(value_type = Object)]
    pub value: Value,
    pub description: &'static str,
}

#[utoipa::path(get, path = "/api/admin/config", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Envelope<Vec<ConfigItem>>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_config(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<Envelope<Vec<ConfigItem>>> {
    let mut items = Vec::new();
    for kind in PRICED_KINDS {
        let price = state.credits.price(kind).await?;
        items.push(ConfigItem {
            key: format!("price_{kind}"),
            value: decimal(price).into(),
            description: "credits charged per task (0: free)",
        });
    }
    Ok(Envelope::ok("ok", items))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ConfigValue {
    #[schema(value_type = Object)]
    pub value: Value,
}

#[utoipa::path(put, path = "/api/admin/config/{config_key}", tag = "admin", request_body = ConfigValue, security(("bearer" = [])),
    params(("config_key" = String, Path, description = "price_enhance")),
    responses((status = 200, body = Envelope<ConfigItem>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn put_config(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<ConfigValue>,
) -> ApiResult<Envelope<ConfigItem>> {
    let Some(kind) = key.strip_prefix("price_").filter(|k| PRICED_KINDS.contains(k)) else {
        return Err(ApiError::not_found(format!("no setting {key}")));
    };
    let text = match &body.value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(ApiError::field("value", "must be a number of credits like 1.50")),
    };
    let price = hundredths(&text).map_err(|m| ApiError::field("value", m))?;
    state.credits.set_price(kind, price).await?;
    tracing::info!(admin = %admin.user_id, key = %key, price, "task price changed");
    Ok(Envelope::ok("setting updated", ConfigItem { key, value: decimal(price).into(), description: "credits charged per task (0: free)" }))
}
