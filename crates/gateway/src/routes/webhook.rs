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
        .layer(axum::extract::DefaultBodyLimit::max(crate::error::JSON_BODY_LIMIT))
}

/// Cloud metadata services: AWS/GCP/Azure/OpenStack (169.254.169.254), Alibaba Cloud
/// (100.100.100.200), Azure's wire server (168.63.129.16), Oracle Cloud (192.0.0.192).
const METADATA_V4: [Ipv4Addr; 4] =
    [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(100, 100, 100, 200), Ipv4Addr::new(168, 63, 129, 16), Ipv4Addr::new(192, 0, 0, 192)];

/// AWS IMDS over IPv6.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// The IPv4 address an IPv6 address carries, for the forms that reach (or are translated to)
/// that IPv4 host: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::/96` (and the local-use `64:ff9b:1::/48`), and 6to4 `2002:aabb:ccdd::/48`.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low32 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    // `::` and `::1` are IPv6's own unspecified and loopback addresses, refused as such.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low32());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Some(low32());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// Why an address may not be registered, if it may not. An IPv6 address that carries an
/// IPv4 address is judged by that IPv4 address too: `::ffff:169.254.169.254` reaches the
/// metadata service as surely as the plain form.
pub fn refuse_address(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = embedded_ipv4(v6)
        && let Some(why) = refuse_address(IpAddr::V4(v4), allow_private)
    {
        return Some(why);
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Some("unspecified and multicast addresses cannot be GPU servers");
    }
    if let IpAddr::V4(v4) = ip {
        if v4 == Ipv4Addr::BROADCAST {
            return Some("the broadcast address cannot be a GPU server");
        }
        // 0.0.0.0/8 means "this host" to the kernel (0.0.0.0 connects to loopback).
        if v4.octets()[0] == 0 {
            return Some("addresses in 0.0.0.0/8 cannot be GPU servers");
        }
    }
    if allow_private {
        return None;
    }
    let metadata = match ip {
        IpAddr::V4(v4) => METADATA_V4.contains(&v4),
        IpAddr::V6(v6) => METADATA_V6.contains(&v6),
    };
    if metadata {
        return Some("cloud metadata addresses cannot be GPU servers");
    }
    let (loopback, link_local) = match ip {
        IpAddr::V4(v4) => (v4.is_loopback(), v4.is_link_local()),
        IpAddr::V6(v6) => (v6.is_loopback(), v6.is_unicast_link_local()),
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
    let given = headers.get("x-webhook-secret").and_then(|v| v.to_str().ok()).or(from_request).filter(|s| !s.is_empty());
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
    body.map(|Json(b)| b).map_err(ApiError::json)
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
pub async fn servers(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<SecretQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::field("secret", format!("unreadable query string: {}", e.body_text())))?;
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
        for bad in [
            "127.0.0.1",
            "127.8.8.8",
            "::1",
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "100.100.100.200",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "168.63.129.16",
            "192.0.0.192",
            "0.1.2.3",
        ] {
            assert!(refused(bad), "{bad} should be refused");
        }
        for good in ["203.0.113.7", "10.0.0.12", "192.168.1.20", "2001:db8::1", "192.0.0.193", "168.63.129.17"] {
            assert!(!refused(good), "{good} should be accepted");
        }
        assert!(refuse_address("127.0.0.1".parse().unwrap(), true).is_none(), "allowed for local testing");
        assert!(refuse_address("0.0.0.0".parse().unwrap(), true).is_some(), "never a real server");
    }

    #[test]
    fn ipv6_forms_carrying_a_refused_ipv4_address_are_refused() {
        for v4 in ["169.254.169.254", "127.0.0.1", "168.63.129.16", "192.0.0.192", "100.100.100.200", "169.254.7.7"] {
            let o: Vec<u16> = v4.parse::<Ipv4Addr>().unwrap().octets().iter().map(|&b| u16::from(b)).collect();
            let (hi, lo) = ((o[0] << 8) | o[1], (o[2] << 8) | o[3]);
            let forms = [
                format!("::ffff:{v4}"),
                format!("::{v4}"),
                format!("64:ff9b::{v4}"),
                format!("64:ff9b:1::{hi:x}:{lo:x}"),
                format!("2002:{hi:x}:{lo:x}::1"),
            ];
            for f in forms {
                assert!(refused(&f), "{f} carries {v4} and should be refused");
            }
        }
        // The same forms carrying an ordinary address are fine.
        for good in ["::ffff:203.0.113.7", "64:ff9b::203.0.113.7", "2002:cb00:7107::1", "::203.0.113.7"] {
            assert!(!refused(good), "{good} should be accepted");
        }
        // Never a server, whatever the flag: the mapped unspecified and broadcast addresses.
        assert!(refuse_address("::ffff:0.0.0.0".parse().unwrap(), true).is_some());
        assert!(refuse_address("::ffff:255.255.255.255".parse().unwrap(), true).is_some());
        assert!(refuse_address("::ffff:127.0.0.1".parse().unwrap(), true).is_none(), "loopback allowed for local testing");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cret", "s3cre"));
        assert!(!secret_matches("s3cret", "s3cret "));
        assert!(!secret_matches("s3cret", ""));
    }
}
