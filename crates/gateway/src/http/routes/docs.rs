//! OpenAPI 3 at `/api/v1/openapi.json` (the document `http::openapi` builds) and Swagger
//! UI at `/docs`. The Swagger UI assets come from the npm package `swagger-ui-dist`, fetched
//! into the cache by `make models` (`--swagger-ui-dir` points elsewhere); nothing is loaded
//! from a CDN.

use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::openapi;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json)).routes(routes!(index)).routes(routes!(asset))
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "docs", responses((status = 200, description = "This OpenAPI 3 document", body = Object)))]
pub async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(openapi::document())
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

#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "Swagger UI", body = String, content_type = "text/html"),
              (status = 503, description = "Swagger UI assets are not installed", body = String, content_type = "text/html")))]
pub async fn index(State(state): State<AppState>) -> Response {
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

#[utoipa::path(get, path = "/docs/assets/{file}", tag = "docs",
    params(("file" = String, Path, description = "swagger-ui-bundle.js or swagger-ui.css")),
    responses((status = 200, description = "A Swagger UI asset", body = String), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn asset(State(state): State<AppState>, Path(file): Path<String>) -> Response {
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
