//! Health, info and configuration (seed 000): `/api/v1/health`, `/api/v1/info`,
//! `/api/v1/config`, `POST /api/v1/config/backend`, `POST /api/v1/config/multi-backend`; seed
//! 001's `/health` (the same report in its envelope); `/healthz` and `/readyz` for Kubernetes
//! probes and `/metrics` for Prometheus.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::tasks::WorkerLine;
use crate::http::auth::AdminToken;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiResult, ErrorBody, JSON_BODY_LIMIT};
use crate::http::extract::ApiJson;
use crate::http::openapi;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(health_v001))
        .routes(routes!(info))
        .routes(routes!(config))
        .routes(routes!(set_backend))
        .routes(routes!(set_multi_backend))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(actuator_health))
        .routes(routes!(metrics))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
}

fn now_rfc3339() -> String {
    purrify_inference::client::format_rfc3339(std::time::SystemTime::now())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackendStatus {
    /// `connected` or `unreachable`.
    pub database: &'static str,
    pub healthy_servers: usize,
    pub total_servers: usize,
    /// Tasks waiting for a worker (absent when it cannot be read).
    pub queue_depth: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthResponse {
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    pub backend_status: BackendStatus,
    /// RFC 3339.
    pub timestamp: String,
}

#[utoipa::path(get, path = "/api/v1/health", tag = "system",
    responses((status = 200, description = "Healthy: the database answers and a worker is up", body = HealthResponse),
              (status = 503, description = "Unhealthy: database down or no healthy worker", body = HealthResponse)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let (healthy, body) = health_report(&state).await;
    (if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// Seed 001's health check: the report of `/api/v1/health` in the 001 envelope (`success`
/// false and 503 when unhealthy).
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, description = "Healthy: the database answers and a worker is up", body = Envelope<HealthResponse>),
              (status = 503, description = "Unhealthy: database down or no healthy worker", body = Envelope<HealthResponse>)))]
pub async fn health_v001(State(state): State<AppState>) -> (StatusCode, Envelope<HealthResponse>) {
    let (healthy, body) = health_report(&state).await;
    let envelope = Envelope { success: healthy, message: body.status.to_owned(), data: body, error_code: None };
    (if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, envelope)
}

/// Healthy: the database answers and a worker is up.
async fn health_report(state: &AppState) -> (bool, HealthResponse) {
    let db_ok = state.tasks.db_ping().await;
    let workers = state.tasks.workers().await;
    let healthy_workers = workers.iter().filter(|w| w.healthy).count();
    let healthy = db_ok && healthy_workers > 0;
    let body = HealthResponse {
        status: if healthy { "healthy" } else { "unhealthy" },
        backend_status: BackendStatus {
            database: if db_ok { "connected" } else { "unreachable" },
            healthy_servers: healthy_workers,
            total_servers: workers.len(),
            queue_depth: state.tasks.queue_depth().await.ok(),
        },
        timestamp: now_rfc3339(),
    };
    (healthy, body)
}

/// One component of seed 004's health report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Component {
    /// UP or DOWN.
    pub status: &'static str,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// Seed 004's gateway health (`/actuator/health`, the Spring Boot shape its probes expect):
/// UP while the database answers. Workers and providers are reported but do not make the
/// gateway DOWN: tasks queue while workers come back, and providers have fallbacks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActuatorHealth {
    pub status: &'static str,
    pub components: std::collections::BTreeMap<&'static str, Component>,
}

#[utoipa::path(get, path = "/actuator/health", tag = "system",
    responses((status = 200, description = "UP: the database answers", body = ActuatorHealth),
              (status = 503, description = "DOWN: the database does not answer", body = ActuatorHealth)))]
pub async fn actuator_health(State(state): State<AppState>) -> (StatusCode, Json<ActuatorHealth>) {
    let up = |ok: bool| if ok { "UP" } else { "DOWN" };
    let db_ok = state.tasks.db_ping().await;
    let workers = state.tasks.workers().await;
    let healthy_workers = workers.iter().filter(|w| w.healthy).count();
    let mut components = std::collections::BTreeMap::new();
    components.insert("db", Component { status: up(db_ok), details: serde_json::json!({}) });
    components.insert(
        "workers",
        Component { status: up(healthy_workers > 0), details: serde_json::json!({"healthy": healthy_workers, "total": workers.len()}) },
    );
    if let Ok(providers) = state.providers.list().await {
        let open: Vec<&str> =
            providers.iter().filter(|(_, c)| *c != crate::domain::providers::BreakerState::Closed).map(|(p, _)| p.id.as_str()).collect();
        let usable = providers.iter().filter(|(p, _)| p.usable()).count();
        components.insert(
            "providers",
            Component { status: up(open.is_empty()), details: serde_json::json!({"usable": usable, "circuitsOpen": open}) },
        );
    }
    let status = if db_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(ActuatorHealth { status: up(db_ok), components }))
}

#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "The process is alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready to take traffic: the database answers. Workers may come and go; uploads queue.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, description = "Ready", body = String, content_type = "text/plain"),
              (status = 503, description = "The database does not answer", body = String, content_type = "text/plain")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.tasks.db_ping().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", body = String, content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.tasks.refresh_gauges().await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode()).into_response()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServersSummary {
    pub total_servers: usize,
    pub healthy_servers: usize,
    pub unhealthy_servers: usize,
    /// Jobs the workers run at once, together.
    pub capacity: u32,
    pub in_flight: u32,
}

impl ServersSummary {
    fn of(workers: &[WorkerLine]) -> Self {
        let healthy = workers.iter().filter(|w| w.healthy).count();
        Self {
            total_servers: workers.len(),
            healthy_servers: healthy,
            unhealthy_servers: workers.len() - healthy,
            capacity: workers.iter().map(|w| w.capacity).sum(),
            in_flight: workers.iter().map(|w| w.in_flight).sum(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigInfo {
    /// `standalone` or `kubernetes`.
    pub backend: &'static str,
    pub max_file_size: u64,
    /// Seconds from upload to result.
    pub timeout: u64,
    pub supported_formats: Vec<&'static str>,
    pub quality_levels: Vec<&'static str>,
    pub scales: Vec<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InfoResponse {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    /// `METHOD /path` of every endpoint, from the OpenAPI document.
    pub endpoints: Vec<String>,
    pub backend_servers: ServersSummary,
    pub config_info: ConfigInfo,
}

#[utoipa::path(get, path = "/api/v1/info", tag = "system", responses((status = 200, body = InfoResponse)))]
pub async fn info(State(state): State<AppState>) -> Json<InfoResponse> {
    let c = &state.config;
    Json(InfoResponse {
        name: "Purrify API Gateway",
        version: env!("CARGO_PKG_VERSION"),
        description: "喵喵美颜 photo enhancement: face restoration and super-resolution",
        endpoints: openapi::endpoints(),
        backend_servers: ServersSummary::of(&state.tasks.workers().await),
        config_info: ConfigInfo {
            backend: state.tasks.backend_name(),
            max_file_size: c.max_upload_bytes,
            timeout: c.task_deadline_seconds,
            supported_formats: vec!["jpeg", "png", "webp", "avif"],
            quality_levels: purrify_api::QualityLevel::ALL.iter().map(|q| q.as_str()).collect(),
            scales: vec![2, 4],
        },
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MultiBackend {
    pub enabled: bool,
    pub fallback_to_default: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigResponse {
    /// The default backend: the configured URL, else the in-process worker.
    pub backend_url: Option<String>,
    /// The in-process worker, when one runs.
    pub default_backend_url: Option<String>,
    pub timeout: u64,
    pub max_file_size: u64,
    pub endpoints: Vec<String>,
    pub multi_backend: MultiBackend,
    /// Kubernetes mode: the GpuPool new tasks go to.
    pub pool: Option<String>,
    pub backend_servers: ServersSummary,
}

#[utoipa::path(get, path = "/api/v1/config", tag = "system", responses((status = 200, body = ConfigResponse)))]
pub async fn config(State(state): State<AppState>) -> ApiResult<Json<ConfigResponse>> {
    let routing = state.tasks.routing().await?;
    Ok(Json(ConfigResponse {
        backend_url: routing.backend_url.clone().or_else(|| routing.default_backend_url.clone()),
        default_backend_url: routing.default_backend_url,
        timeout: state.config.task_deadline_seconds,
        max_file_size: state.config.max_upload_bytes,
        endpoints: openapi::endpoints(),
        multi_backend: MultiBackend { enabled: routing.multi_backend, fallback_to_default: routing.fallback_to_default },
        pool: routing.pool,
        backend_servers: ServersSummary::of(&state.tasks.workers().await),
    }))
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackendResponse {
    pub message: &'static str,
    /// What is set now: the normalised worker URL, or the pool name.
    pub new_backend_url: String,
    /// Kubernetes mode: the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub timestamp: String,
}

#[utoipa::path(post, path = "/api/v1/config/backend", tag = "system", request_body = BackendRequest,
    security(("admin_token" = [])),
    responses((status = 200, body = BackendResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_backend(
    _admin: AdminToken,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BackendRequest>,
) -> ApiResult<Json<BackendResponse>> {
    let set = state.tasks.set_backend(body.backend_url, body.pool).await?;
    let response = if state.tasks.routes_by_pool() {
        BackendResponse { message: "new tasks go to this GpuPool", new_backend_url: set.clone(), pool: Some(set), timestamp: now_rfc3339() }
    } else {
        BackendResponse { message: "default backend updated", new_backend_url: set, pool: None, timestamp: now_rfc3339() }
    };
    Ok(Json(response))
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BeforeAfter {
    pub before: bool,
    pub after: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MultiBackendChanges {
    pub enabled: BeforeAfter,
    pub fallback_to_default: BeforeAfter,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MultiBackendConfig {
    pub enabled: bool,
    pub fallback_to_default: bool,
    pub backend_servers: ServersSummary,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MultiBackendResponse {
    pub message: &'static str,
    pub details: MultiBackendChanges,
    pub config: MultiBackendConfig,
    pub timestamp: String,
}

#[utoipa::path(post, path = "/api/v1/config/multi-backend", tag = "system", request_body = MultiBackendRequest,
    security(("admin_token" = [])),
    responses((status = 200, body = MultiBackendResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set_multi_backend(
    _admin: AdminToken,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MultiBackendRequest>,
) -> ApiResult<Json<MultiBackendResponse>> {
    let before = state.tasks.routing().await?;
    state.tasks.set_multi_backend(body.enabled, body.fallback_to_default).await?;
    let after = state.tasks.routing().await?;
    Ok(Json(MultiBackendResponse {
        message: "multi-backend configuration updated",
        details: MultiBackendChanges {
            enabled: BeforeAfter { before: before.multi_backend, after: after.multi_backend },
            fallback_to_default: BeforeAfter { before: before.fallback_to_default, after: after.fallback_to_default },
        },
        config: MultiBackendConfig {
            enabled: after.multi_backend,
            fallback_to_default: after.fallback_to_default,
            backend_servers: ServersSummary::of(&state.tasks.workers().await),
        },
        timestamp: now_rfc3339(),
    }))
}
