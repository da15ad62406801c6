//! Seed 003's surface (the generation app, under `/api/v1`): camelCase fields in the
//! `{code, message, data, timestamp}` envelope, errors rewritten to its shape by
//! [`crate::http::envelope::v1_errors`].

mod accounts;
mod assistant;
pub mod generate;
mod providers;
mod quota;
mod recharge;
mod square;
pub mod uploads;
mod works;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(accounts::router())
        .merge(assistant::router())
        .merge(quota::router())
        .merge(recharge::router())
        .merge(square::router())
        .merge(works::router())
        .merge(providers::router())
        .layer(axum::middleware::from_fn(crate::http::envelope::v1_errors))
}
