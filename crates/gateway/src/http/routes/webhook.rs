//! GPU servers register and unregister themselves (seed 000 `/webhook/*`). The shared secret
//! is accepted in the body, the `X-Webhook-Secret` header or (for the listing, as the seed
//! did) the query string. Which addresses may register is the domain's rule.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::tasks::ServersOverview;
use crate::http::auth::check_webhook_secret;
use crate::http::error::{ApiError, ApiResult, ErrorBody, JSON_BODY_LIMIT};
use crate::http::extract::{ApiJson, ApiQuery};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(unregister))
        .routes(routes!(servers))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ServerRequest {
    /// Public IP address of the GPU server.
    pub ip: String,
    /// Port of its inference worker (a number, or a string holding one).
    #[schema(value_type = u16)]
    pub port: Value,
    /// The shared secret (or send `X-Webhook-Secret`).
    #[serde(default)]
    pub secret: Option<String>,
}

fn parse_ip(body: &ServerRequest) -> ApiResult<IpAddr> {
    body.ip.trim().parse().map_err(|_| ApiError::field("ip", format!("{:?} is not an IP address", body.ip)))
}

fn parse_port(body: &ServerRequest) -> ApiResult<u16> {
    match &body.port {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .and_then(|p| u16::try_from(p).ok())
    .filter(|p| *p != 0)
    .ok_or_else(|| ApiError::field("port", "must be a number between 1 and 65535"))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegisterResponse {
    pub success: bool,
    pub message: String,
    pub server_id: String,
    pub ip: String,
    pub port: u16,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnregisterResponse {
    pub success: bool,
    pub message: String,
    pub server_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServersResponse {
    pub success: bool,
    pub data: ServersOverview,
}

#[utoipa::path(post, path = "/webhook/register", tag = "webhook", security(("webhook_secret" = [])), request_body = ServerRequest,
    responses((status = 200, body = RegisterResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, description = "No webhook secret configured", body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ServerRequest>,
) -> ApiResult<Json<RegisterResponse>> {
    check_webhook_secret(&state, &headers, body.secret.as_deref())?;
    let (ip, port) = (parse_ip(&body)?, parse_port(&body)?);
    let (server_id, added) = state.tasks.register_server(ip, port).await?;
    let message = if added { "GPU server registered" } else { "GPU server already registered" };
    tracing::info!(server_id = %server_id, %ip, port, added, "GPU server registered");
    Ok(Json(RegisterResponse { success: true, message: message.into(), server_id, ip: ip.to_string(), port }))
}

#[utoipa::path(post, path = "/webhook/unregister", tag = "webhook", security(("webhook_secret" = [])), request_body = ServerRequest,
    responses((status = 200, body = UnregisterResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn unregister(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ServerRequest>,
) -> ApiResult<Json<UnregisterResponse>> {
    check_webhook_secret(&state, &headers, body.secret.as_deref())?;
    let (ip, port) = (parse_ip(&body)?, parse_port(&body)?);
    match state.tasks.unregister_server(ip, port).await? {
        Some(server_id) => {
            tracing::info!(server_id = %server_id, %ip, port, "GPU server unregistered");
            Ok(Json(UnregisterResponse { success: true, message: "GPU server unregistered".into(), server_id }))
        }
        None => Err(ApiError::not_found(format!("no GPU server registered at {ip}:{port}"))),
    }
}

#[derive(Debug, Deserialize)]
pub struct SecretQuery {
    pub secret: Option<String>,
}

#[utoipa::path(get, path = "/webhook/servers", tag = "webhook", security(("webhook_secret" = [])),
    params(("secret" = Option<String>, Query, description = "The shared secret (or X-Webhook-Secret)")),
    responses((status = 200, body = ServersResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn servers(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<SecretQuery>,
) -> ApiResult<Json<ServersResponse>> {
    check_webhook_secret(&state, &headers, q.secret.as_deref())?;
    let data = state.tasks.servers_overview().await?;
    Ok(Json(ServersResponse { success: true, data }))
}
