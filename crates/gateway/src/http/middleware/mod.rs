//! Cross-cutting HTTP behaviour (seed 004): request ids, client identity, rate limiting,
//! request metrics; seed 003's hourly API-call quota (`quota`).

pub mod audit;
pub mod maintenance;
pub mod quota;
pub mod rate_limit;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::AppState;
use crate::config::Config;
use crate::http::error::{ApiError, ErrorCode};
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
    let id = req.headers().get(REQUEST_ID).and_then(acceptable_request_id).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// Who the client is, for rate limiting: the peer address, or, when the gateway is told to
/// trust its proxies, the `X-Forwarded-For` entry `hops` from the right. Each proxy appends
/// the address it received the request from, so entries further left are what the client
/// wrote itself and prove nothing; the first entry in particular is freely chosen.
pub fn client_ip(req: &Request, config: &Config) -> IpAddr {
    client_ip_of(req.extensions(), req.headers(), config)
}

/// [`client_ip`] from a request's parts (extractors).
pub fn client_ip_of(extensions: &axum::http::Extensions, headers: &HeaderMap, config: &Config) -> IpAddr {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    if !config.trust_forwarded_for {
        return peer;
    }
    forwarded_client(headers, config.trusted_proxy_hops).unwrap_or(peer)
}

/// The `X-Forwarded-For` entry appended by the outermost of `hops` trusted proxies (every
/// header line, in order, as one list). With fewer entries than hops, every entry was
/// appended by a trusted proxy and the leftmost is the furthest one known. `None` when
/// there is no header or that entry is not an address.
fn forwarded_client(headers: &HeaderMap, hops: u32) -> Option<IpAddr> {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let hops = usize::try_from(hops.max(1)).unwrap_or(usize::MAX);
    let entry = entries.get(entries.len().checked_sub(1)?.saturating_sub(hops - 1))?;
    parse_forwarded_addr(entry)
}

/// An address as proxies write it: `203.0.113.7`, `2001:db8::1`, `[2001:db8::1]:443` or
/// `203.0.113.7:443` (some proxies keep the port).
fn parse_forwarded_addr(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Probes and scrapes are never limited: a throttled liveness probe restarts a healthy pod.
/// Nor are WeChat Pay's notifications: they arrive in bursts from WeChat's few addresses, a
/// refused one is retried for a day, and each is verified by signature before any work.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/api/v1/health" | "/api/wechat/pay/notify/")
}

pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !exempt(req.uri().path()) {
        let ip = client_ip(&req, &state.config);
        if let Err(wait) = state.limiter.check(ip, Instant::now()) {
            return ApiError::new(ErrorCode::RateLimitExceeded, "too many requests from this client; slow down")
                .retry_after(wait.as_secs().max(1))
                .into_response();
        }
    }
    next.run(req).await
}

pub async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".to_string());
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

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_trusts_only_what_the_trusted_proxies_appended() {
        // The client wrote "6.6.6.6" itself; the one proxy appended the real peer.
        let h = xff(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(forwarded_client(&h, 1), ip("203.0.113.7"), "never the spoofable first entry");
        // Two trusted hops: the load balancer saw the client, the ingress saw the balancer.
        let h = xff(&["6.6.6.6, 203.0.113.7, 10.0.0.2"]);
        assert_eq!(forwarded_client(&h, 2), ip("203.0.113.7"));
        assert_eq!(forwarded_client(&h, 1), ip("10.0.0.2"));
        // Several header lines are one list, in order.
        let h = xff(&["6.6.6.6", "203.0.113.7"]);
        assert_eq!(forwarded_client(&h, 1), ip("203.0.113.7"));
        // Fewer entries than hops: all came from trusted proxies; the leftmost is the client.
        let h = xff(&["203.0.113.7"]);
        assert_eq!(forwarded_client(&h, 3), ip("203.0.113.7"));
        // Ports and brackets as some proxies write them.
        assert_eq!(forwarded_client(&xff(&["[2001:db8::7]:443"]), 1), ip("2001:db8::7"));
        assert_eq!(forwarded_client(&xff(&["1.2.3.4, 203.0.113.7:5555"]), 1), ip("203.0.113.7"));
        // Nothing usable: the caller falls back to the peer address.
        assert_eq!(forwarded_client(&HeaderMap::new(), 1), None);
        assert_eq!(forwarded_client(&xff(&["1.2.3.4, garbage"]), 1), None, "a bad trusted entry is not replaced by an untrusted one");
        assert_eq!(forwarded_client(&xff(&[" , "]), 1), None);
    }

    #[test]
    fn client_ip_ignores_forwarded_for_unless_trusted() {
        let mut config = Config::for_tests(std::env::temp_dir());
        let peer: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let req = || {
            let mut r = Request::builder().header("x-forwarded-for", "6.6.6.6, 203.0.113.7").body(axum::body::Body::empty()).unwrap();
            r.extensions_mut().insert(ConnectInfo(peer));
            r
        };
        assert_eq!(client_ip(&req(), &config), peer.ip());
        config.trust_forwarded_for = true;
        assert_eq!(client_ip(&req(), &config), "203.0.113.7".parse::<IpAddr>().unwrap());
        config.trusted_proxy_hops = 2;
        assert_eq!(client_ip(&req(), &config), "6.6.6.6".parse::<IpAddr>().unwrap(), "two proxies: the first entry is the balancer's view");
    }
}
