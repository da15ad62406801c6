//! Cross-cutting HTTP behaviour (seed 004): request ids, client identity, rate limiting,
//! request metrics.

pub mod rate_limit;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{RequestLabels, RouteLabels};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the caller's `X-Request-ID` when it is sane, else a new UUID. It is
/// returned on the response, logged on every line of the request, and forwarded to workers.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| s.to_string())
}

pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// Who the client is, for rate limiting: the peer address, or the first `X-Forwarded-For`
/// hop when the gateway is configured to trust its proxy.
pub fn client_ip(req: &Request, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Probes and scrapes are never limited: a throttled liveness probe restarts a healthy pod.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/api/v1/health")
}

pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !exempt(req.uri().path()) {
        let ip = client_ip(&req, state.config.trust_forwarded_for);
        if let Err(wait) = state.limiter.check(ip, Instant::now()) {
            return ApiError::new(ErrorCode::RateLimitExceeded, "too many requests from this client; slow down")
                .retry_after(wait.as_secs().max(1))
                .into_response();
        }
    }
    next.run(req).await
}

pub async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.request_duration.get_or_create(&RouteLabels { route: route.clone() }).observe(started.elapsed().as_secs_f64());
    m.requests.get_or_create(&RequestLabels { route, method, status: resp.status().as_u16() }).inc();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_printable_ascii() {
        assert_eq!(acceptable_request_id(&HeaderValue::from_static("abc-123")), Some("abc-123".into()));
        assert_eq!(acceptable_request_id(&HeaderValue::from_static("")), None);
        assert_eq!(acceptable_request_id(&HeaderValue::from_static("has space")), None);
        let long = "x".repeat(129);
        assert_eq!(acceptable_request_id(&HeaderValue::from_str(&long).unwrap()), None);
    }
}
