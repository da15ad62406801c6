//! GPU servers register and unregister themselves (seed 000 `/webhook/*`). The shared secret
//! comes from configuration only, is compared in constant time, and is accepted in the body,
//! the `X-Webhook-Secret` header or (for the listing, as the seed did) the query string.
//!
//! A registration makes the gateway call the given address, so addresses that reach the
//! gateway's own host or cloud metadata services are refused unless explicitly allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhook/register", post(register))
        .route("/webhook/unregister", post(unregister))
        .route("/webhook/servers", get(servers))
}

/// Why an address may not be registered, if it may not.
pub fn refuse_address(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    if ip.is_unspecified() || ip.is_multicast() {
        return Some("unspecified and multicast addresses cannot be GPU servers");
    }
    if let IpAddr::V4(v4) = ip
        && v4 == Ipv4Addr::BROADCAST
    {
        return Some("the broadcast address cannot be a GPU server");
    }
    if allow_private {
        return None;
    }
    let metadata = match ip {
        // AWS/GCP/Azure/OpenStack metadata, Alibaba Cloud metadata.
        IpAddr::V4(v4) => v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == Ipv4Addr::new(100, 100, 100, 200),
        // AWS IMDS over IPv6.
        IpAddr::V6(v6) => v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    };
    if metadata {
        return Some("cloud metadata addresses cannot be GPU servers");
    }
    let (loopback, link_local) = match ip {
        IpAddr::V4(v4) => (v4.is_loopback(), v4.is_link_local()),
        IpAddr::V6(v6) => {
            let mapped = v6.to_ipv4_mapped();
            (
                v6.is_loopback() || mapped.is_some_and(|m| m.is_loopback()),
                v6.is_unicast_link_local() || mapped.is_some_and(|m| m.is_link_local()),
            )
        }
    };
    if loopback {
        return Some("loopback addresses are refused (start the gateway with --allow-private-workers for local testing)");
    }
    if link_local {
        return Some("link-local addresses are refused");
    }
    None
}

/// Constant-time comparison; a length mismatch returns early, which reveals only the length.
fn secret_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

fn check_secret(state: &AppState, headers: &HeaderMap, from_request: Option<&str>) -> ApiResult<()> {
    let Some(expected) = state.config.webhook_secret.as_deref().filter(|s| !s.is_empty()) else {
        return Err(ApiError::unavailable("GPU-server registration is disabled: the gateway has no webhook secret configured"));
    };
    let given = headers
        .get("x-webhook-secret")
        .and_then(|v| v.to_str().ok())
        .or(from_request)
        .filter(|s| !s.is_empty());
    match given {
        None => Err(ApiError::new(ErrorCode::InvalidCredentials, "missing webhook secret (field `secret` or header X-Webhook-Secret)")),
        Some(g) if secret_matches(expected, g) => Ok(()),
        Some(_) => Err(ApiError::new(ErrorCode::AccessDenied, "wrong webhook secret")),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ServerRequest {
    /// Public IP address of the GPU server.
    pub ip: String,
    /// Port of its inference worker.
    pub port: serde_json::Value,
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

fn json_body(body: Result<Json<ServerRequest>, axum::extract::rejection::JsonRejection>) -> ApiResult<ServerRequest> {
    body.map(|Json(b)| b).map_err(|e| ApiError::new(ErrorCode::ValidationError, format!("invalid JSON body: {}", e.body_text())))
}

#[utoipa::path(post, path = "/webhook/register", tag = "webhook", request_body = ServerRequest,
    responses((status = 200, body = RegisterResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody),
              (status = 503, description = "No webhook secret configured", body = crate::error::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ServerRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<RegisterResponse>> {
    let body = json_body(body)?;
    check_secret(&state, &headers, body.secret.as_deref())?;
    let (ip, port) = (parse_ip(&body)?, parse_port(&body)?);
    if let Some(why) = refuse_address(ip, state.config.allow_private_workers) {
        return Err(ApiError::field("ip", why));
    }
    let (server_id, added) = state.register_server(ip, port).await?;
    let message = if added { "GPU server registered" } else { "GPU server already registered" };
    tracing::info!(server_id = %server_id, %ip, port, added, "GPU server registered");
    Ok(Json(RegisterResponse { success: true, message: message.into(), server_id, ip: ip.to_string(), port }))
}

#[utoipa::path(post, path = "/webhook/unregister", tag = "webhook", request_body = ServerRequest,
    responses((status = 200, body = UnregisterResponse), (status = 404, body = crate::error::ErrorBody)))]
pub async fn unregister(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ServerRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<UnregisterResponse>> {
    let body = json_body(body)?;
    check_secret(&state, &headers, body.secret.as_deref())?;
    // No address policy here: unregistering must work for any address that is registered.
    let (ip, port) = (parse_ip(&body)?, parse_port(&body)?);
    match state.unregister_server(ip, port).await? {
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

#[utoipa::path(get, path = "/webhook/servers", tag = "webhook",
    params(("secret" = Option<String>, Query, description = "The shared secret (or X-Webhook-Secret)")),
    responses((status = 200, description = "`{success, data: {total_servers, healthy_servers, unhealthy_servers, health_check_running, servers}}`")))]
pub async fn servers(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<SecretQuery>) -> ApiResult<Json<Value>> {
    check_secret(&state, &headers, q.secret.as_deref())?;
    let data = state.servers_overview().await?;
    Ok(Json(serde_json::json!({ "success": true, "data": data })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refuse_address(s.parse().unwrap(), false).is_some()
    }

    #[test]
    fn address_policy() {
        for bad in ["127.0.0.1", "127.8.8.8", "::1", "169.254.169.254", "169.254.1.1", "fe80::1", "0.0.0.0", "::", "224.0.0.1",
            "255.255.255.255", "100.100.100.200", "fd00:ec2::254", "::ffff:127.0.0.1"]
        {
            assert!(refused(bad), "{bad} should be refused");
        }
        for good in ["203.0.113.7", "10.0.0.12", "192.168.1.20", "2001:db8::1"] {
            assert!(!refused(good), "{good} should be accepted");
        }
        assert!(refuse_address("127.0.0.1".parse().unwrap(), true).is_none(), "allowed for local testing");
        assert!(refuse_address("0.0.0.0".parse().unwrap(), true).is_some(), "never a real server");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cret", "s3cre"));
        assert!(!secret_matches("s3cret", "s3cret "));
        assert!(!secret_matches("s3cret", ""));
    }
}
