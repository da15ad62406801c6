//! One module per area, each a `router()` of documented handlers. [`all`] is the one list the
//! router and the OpenAPI document are both built from, so a route cannot exist undocumented.

pub mod admin_config;
pub mod admin_stats;
pub mod admin_users;
pub mod auth;
pub mod credits;
pub mod docs;
pub mod enhance;
pub mod generation;
pub mod gpu;
pub mod live;
pub mod logs;
pub mod orders;
pub mod postcards;
pub mod recharge;
pub mod scenes;
pub mod system;
pub mod task_actions;
pub mod task_create;
pub mod task_list;
pub mod tasks;
pub mod uploads;
pub mod users;
pub mod webhook;
pub mod wechat_pay;
pub mod workflow_callbacks;
pub mod works;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// Every route of the gateway with its OpenAPI operation.
pub fn all(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(super::openapi::ApiDoc::openapi())
        .merge(enhance::router(max_upload_bytes))
        .merge(uploads::router(max_upload_bytes))
        .merge(generation::uploads::router(max_upload_bytes))
        .merge(tasks::router())
        .merge(live::router())
        .merge(system::router())
        .merge(webhook::router())
        .merge(workflow_callbacks::router())
        .merge(generation::generate::router(max_upload_bytes))
        .merge(auth::router())
        .merge(users::router())
        .merge(admin_users::router())
        .merge(credits::router())
        .merge(admin_config::router())
        .merge(task_list::router())
        .merge(task_actions::router())
        .merge(task_create::router())
        .merge(scenes::router())
        .merge(admin_stats::router())
        .merge(gpu::router())
        .merge(recharge::router())
        .merge(orders::router())
        .merge(wechat_pay::router())
        .merge(works::router())
        .merge(generation::router())
        .merge(postcards::router())
        .merge(logs::router())
        .merge(docs::router())
}
