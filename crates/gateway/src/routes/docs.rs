//! OpenAPI 3 at `/api/v1/openapi.json` (generated from the handlers' annotations) and Swagger
//! UI at `/docs`. The Swagger UI assets come from the npm package `swagger-ui-dist`, fetched
//! into the cache by `make models` (`--swagger-ui-dir` points elsewhere); nothing is loaded
//! from a CDN.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::app::AppState;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(title = "Purrify API", description = "喵喵美颜 photo enhancement gateway (seed 000 contract)"),
    paths(
        super::enhance::enhance,
        super::tasks::status,
        super::tasks::events,
        super::tasks::download,
        super::system::health,
        super::system::info,
        super::system::config,
        super::system::set_backend,
        super::system::set_multi_backend,
        super::webhook::register,
        super::webhook::unregister,
        super::webhook::servers,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorCode, super::tasks::LiveMessage)),
    modifiers(&AdminToken),
    tags(
        (name = "enhance", description = "Uploads"),
        (name = "tasks", description = "Status, live progress and downloads"),
        (name = "system", description = "Health, info and configuration"),
        (name = "webhook", description = "GPU-server registration"),
    )
)]
pub struct ApiDoc;

struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin_token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/docs", get(index))
        .route("/docs/assets/{file}", get(asset))
}

pub fn default_assets_dir() -> PathBuf {
    purrify_inference::cache::cache_root().join("swagger-ui")
}

const INDEX: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Purrify API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: "/api/v1/openapi.json", dom_id: "#swagger-ui" });</script>
</body></html>"##;

async fn index(State(state): State<AppState>) -> Response {
    if state.swagger_ui_dir.join("swagger-ui-bundle.js").exists() {
        Html(INDEX).into_response()
    } else {
        // Where the gateway looked is the operator's business, not every visitor's.
        tracing::warn!(dir = %state.swagger_ui_dir.display(), "Swagger UI assets are not installed: run `make models` or pass --swagger-ui-dir");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(
                "<p>Swagger UI is not installed on this server. \
                 The OpenAPI document is at <a href=\"/api/v1/openapi.json\">/api/v1/openapi.json</a>.</p>",
            ),
        )
            .into_response()
    }
}

async fn asset(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let content_type = match file.as_str() {
        "swagger-ui-bundle.js" => "text/javascript; charset=utf-8",
        "swagger-ui.css" => "text/css; charset=utf-8",
        _ => return ApiError::not_found(format!("no documentation asset {file}")).into_response(),
    };
    match tokio::fs::read(state.swagger_ui_dir.join(&file)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=86400")], bytes).into_response(),
        Err(e) => {
            tracing::warn!(dir = %state.swagger_ui_dir.display(), file, error = %e, "Swagger UI asset unreadable");
            ApiError::not_found(format!("documentation asset {file} is not installed on this server")).into_response()
        }
    }
}
