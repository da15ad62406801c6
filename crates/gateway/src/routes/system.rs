//! Health, info and configuration (seed 000): `/api/v1/health`, `/api/v1/info`,
//! `/api/v1/config`, `POST /api/v1/config/backend`, `POST /api/v1/config/multi-backend`, plus
//! `/healthz` and `/readyz` for Kubernetes probes and `/metrics` for Prometheus.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/info", get(info))
        .route("/api/v1/config", get(config))
        .route("/api/v1/config/backend", post(set_backend))
        .route("/api/v1/config/multi-backend", post(set_multi_backend))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(crate::error::JSON_BODY_LIMIT))
}

pub const ENDPOINTS: &[&str] = &[
    "POST /api/v1/enhance",
    "GET /api/v1/status/{task_id}",
    "GET /api/v1/status/{task_id}/events",
    "GET /api/v1/download/{task_id}",
    "GET /api/v1/health",
    "GET /api/v1/info",
    "GET /api/v1/config",
    "POST /api/v1/config/backend",
    "POST /api/v1/config/multi-backend",
    "POST /webhook/register",
    "POST /webhook/unregister",
    "GET /webhook/servers",
    "GET /ws",
    "GET /api/v1/openapi.json",
    "GET /docs",
];

/// Admin endpoints need `Authorization: Bearer <admin token>`: none given is 401, a wrong one
/// 403, and without a configured token they are disabled (403).
fn require_admin(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = state.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(ErrorCode::AccessDenied, "admin API is disabled: the gateway has no admin token configured"));
    };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    match given {
        None => Err(ApiError::new(ErrorCode::InvalidCredentials, "admin token required: send Authorization: Bearer <token>")),
        Some(g) if bool::from(expected.as_bytes().ct_eq(g.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::new(ErrorCode::AccessDenied, "wrong admin token")),
    }
}

fn now_rfc3339() -> String {
    purrify_inference::client::format_rfc3339(std::time::SystemTime::now())
}

#[utoipa::path(get, path = "/api/v1/health", tag = "system",
    responses((status = 200, description = "`{status: healthy, backend_status, timestamp}`"),
              (status = 503, description = "`{status: unhealthy, ...}`: database down or no healthy worker")))]
pub async fn health(State(state): State<AppState>) -> Response {
    let db_ok = state.db_ping().await;
    let workers = state.workers().await;
    let healthy_workers = workers.iter().filter(|w| w.healthy).count();
    let healthy = db_ok && healthy_workers > 0;
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "backend_status": {
            "database": if db_ok { "connected" } else { "unreachable" },
            "healthy_servers": healthy_workers,
            "total_servers": workers.len(),
            "queue_depth": state.queue_depth().await.ok(),
        },
        "timestamp": now_rfc3339(),
    });
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// Ready to take traffic: the database answers. Workers may come and go; uploads queue.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.db_ping().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.refresh_gauges().await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode()).into_response()
}

async fn servers_summary(state: &AppState) -> Value {
    let workers = state.workers().await;
    let healthy = workers.iter().filter(|w| w.healthy).count();
    json!({
        "total_servers": workers.len(),
        "healthy_servers": healthy,
        "unhealthy_servers": workers.len() - healthy,
        "capacity": workers.iter().map(|w| w.capacity).sum::<u32>(),
        "in_flight": workers.iter().map(|w| w.in_flight).sum::<u32>(),
    })
}

#[utoipa::path(get, path = "/api/v1/info", tag = "system", responses((status = 200, description = "Name, version, endpoints, GPU servers, configuration")))]
pub async fn info(State(state): State<AppState>) -> Json<Value> {
    let c = &state.config;
    Json(json!({
        "name": "Purrify API Gateway",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "喵喵美颜 photo enhancement: face restoration and super-resolution",
        "endpoints": ENDPOINTS,
        "backend_servers": servers_summary(&state).await,
        "config_info": {
            "backend": match state.config.backend { crate::config::Backend::Standalone => "standalone", crate::config::Backend::Kubernetes => "kubernetes" },
            "max_file_size": c.max_upload_bytes,
            "timeout": c.task_deadline_seconds,
            "supported_formats": ["jpeg", "png", "webp", "avif"],
            "quality_levels": ["high", "medium", "fast"],
            "scales": [2, 4],
        },
    }))
}

#[utoipa::path(get, path = "/api/v1/config", tag = "system", responses((status = 200, description = "Backend URLs, limits and the multi-backend configuration")))]
pub async fn config(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let routing = state.routing().await?;
    Ok(Json(json!({
        "backend_url": routing.backend_url.clone().or_else(|| routing.default_backend_url.clone()),
        "default_backend_url": routing.default_backend_url,
        "timeout": state.config.task_deadline_seconds,
        "max_file_size": state.config.max_upload_bytes,
        "endpoints": ENDPOINTS,
        "multi_backend": { "enabled": routing.multi_backend, "fallback_to_default": routing.fallback_to_default },
        "pool": routing.pool,
        "backend_servers": servers_summary(&state).await,
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BackendRequest {
    /// Standalone mode: the URL of an inference worker, e.g. `http://10.0.0.5:8000`.
    /// Kubernetes mode: the name of the GpuPool new tasks go to (or send `pool`).
    #[serde(default)]
    pub backend_url: Option<String>,
    /// Kubernetes mode: the GpuPool new tasks go to.
    #[serde(default)]
    pub pool: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/config/backend", tag = "system", request_body = BackendRequest,
    security(("admin_token" = [])),
    responses((status = 200, description = "`{message, new_backend_url, timestamp}`"), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn set_backend(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<BackendRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&state, &headers)?;
    let Json(body) = body.map_err(ApiError::json)?;
    if state.tasks.kubernetes().is_some() {
        let Some(pool) = body.pool.or(body.backend_url) else {
            return Err(ApiError::field("pool", "name the GpuPool new tasks go to"));
        };
        let pool = state.set_pool(pool.trim()).await?;
        return Ok(Json(
            json!({ "message": "new tasks go to this GpuPool", "new_backend_url": pool, "pool": pool, "timestamp": now_rfc3339() }),
        ));
    }
    let Some(raw) = body.backend_url else {
        return Err(ApiError::field("backend_url", "required: the URL of an inference worker"));
    };
    let url = url::Url::parse(raw.trim()).map_err(|e| ApiError::field("backend_url", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ApiError::field("backend_url", "must be an http:// or https:// URL with a host"));
    }
    let normalized = state.set_backend_url(url.as_str()).await?;
    Ok(Json(json!({ "message": "default backend updated", "new_backend_url": normalized, "timestamp": now_rfc3339() })))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct MultiBackendRequest {
    /// Dispatch to webhook-registered GPU servers.
    pub enabled: bool,
    /// When no registered server is available, use the default backend.
    #[serde(default = "default_true")]
    pub fallback_to_default: bool,
}

fn default_true() -> bool {
    true
}

#[utoipa::path(post, path = "/api/v1/config/multi-backend", tag = "system", request_body = MultiBackendRequest,
    security(("admin_token" = [])),
    responses((status = 200, description = "`{message, details, config, timestamp}`"), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn set_multi_backend(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<MultiBackendRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&state, &headers)?;
    let Json(body) = body.map_err(ApiError::json)?;
    let before = state.routing().await?;
    state.set_multi_backend(body.enabled, body.fallback_to_default).await?;
    let after = state.routing().await?;
    Ok(Json(json!({
        "message": "multi-backend configuration updated",
        "details": {
            "enabled": { "before": before.multi_backend, "after": after.multi_backend },
            "fallback_to_default": { "before": before.fallback_to_default, "after": after.fallback_to_default },
        },
        "config": { "enabled": after.multi_backend, "fallback_to_default": after.fallback_to_default, "backend_servers": servers_summary(&state).await },
        "timestamp": now_rfc3339(),
    })))
}
