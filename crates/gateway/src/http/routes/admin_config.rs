//! Seeds 001/002's admin configuration (`/api/admin/config`): typed settings an admin changes
//! at run time. `max_concurrent_tasks_per_user` (0: no limit; enforced at every submission
//! with 429 TASK_LIMIT_EXCEEDED), `default_task_timeout` (seconds; the deadline of new tasks),
//! `maintenance_mode` (non-admin writes answer 503), `price_<kind>` (credits per task) and
//! `packages` (the recharge packages). `PUT /api/admin/config` sets several keys at once, all
//! or none; `PUT /api/admin/config/{config_key}` one.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::DomainError;
use crate::domain::tasks::runtime::ConfigChange;
use crate::http::auth::AdminUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::ApiJson;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_config, put_many)).routes(routes!(put_config))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigItem {
    pub key: String,
    #[schema(value_type = Object)]
    pub value: Value,
    pub description: &'static str,
}

async fn items(state: &AppState) -> ApiResult<Vec<ConfigItem>> {
    let all = state.tasks.runtime().items(state.tasks.settings().deadline).await?;
    Ok(all.into_iter().map(|(key, value, description)| ConfigItem { key, value, description }).collect())
}

#[utoipa::path(get, path = "/api/admin/config", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Envelope<Vec<ConfigItem>>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_config(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<Envelope<Vec<ConfigItem>>> {
    Ok(Envelope::ok("ok", items(&state).await?))
}

async fn apply(state: &AppState, admin: &str, changes: Vec<ConfigChange>) -> ApiResult<Vec<ConfigItem>> {
    state.tasks.runtime().apply(&changes).await?;
    let keys: Vec<String> = changes.iter().map(ConfigChange::key).collect();
    tracing::info!(admin = %admin, keys = ?keys, "configuration changed");
    Ok(items(state).await?.into_iter().filter(|i| keys.contains(&i.key)).collect())
}

#[utoipa::path(put, path = "/api/admin/config", tag = "admin", security(("bearer" = [])),
    request_body(content = Object, description = "Keys and values, e.g. {\"max_concurrent_tasks_per_user\": 5, \"default_task_timeout\": 3600, \"maintenance_mode\": false}; all are applied or none"),
    responses((status = 200, description = "The keys as now set", body = Envelope<Vec<ConfigItem>>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, description = "Unknown keys or bad values, each named; nothing changed", body = ErrorBody)))]
pub async fn put_many(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(body): ApiJson<serde_json::Map<String, Value>>,
) -> ApiResult<Envelope<Vec<ConfigItem>>> {
    if body.is_empty() {
        return Err(ApiError::field("config", "send at least one key"));
    }
    let mut changes = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    for (key, value) in &body {
        match ConfigChange::parse(key, value) {
            Ok(c) => changes.push(c),
            Err(DomainError::NotFound(m)) => errors.push((key.clone(), m)),
            Err(DomainError::Invalid { message, .. }) => errors.push((key.clone(), message)),
            Err(e) => return Err(e.into()),
        }
    }
    if !errors.is_empty() {
        let mut map = serde_json::Map::new();
        for (k, m) in &errors {
            map.insert(k.clone(), Value::Array(vec![Value::String(m.clone())]));
        }
        let names: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        return Err(ApiError::new(
            crate::http::error::ErrorCode::ValidationError,
            format!("nothing changed; invalid: {}", names.join(", ")),
        )
        .with_details(serde_json::json!({ "field_errors": map })));
    }
    Ok(Envelope::ok("settings updated", apply(&state, &admin.user_id, changes).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ConfigValue {
    #[schema(value_type = Object)]
    pub value: Value,
}

#[utoipa::path(put, path = "/api/admin/config/{config_key}", tag = "admin", request_body = ConfigValue, security(("bearer" = [])),
    params(("config_key" = String, Path, description = "max_concurrent_tasks_per_user, default_task_timeout, maintenance_mode, price_enhance or packages")),
    responses((status = 200, body = Envelope<ConfigItem>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn put_config(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<ConfigValue>,
) -> ApiResult<Envelope<ConfigItem>> {
    // An unknown key is a 404, a bad value a 422 naming it.
    let c = ConfigChange::parse(&key, &body.value)?;
    let item =
        apply(&state, &admin.user_id, vec![c]).await?.pop().ok_or_else(|| ApiError::internal(format!("setting {key} not listed")))?;
    Ok(Envelope::ok("setting updated", item))
}
