//! Seed 003's hourly API-call quota: every request that carries a valid access token counts
//! one call for its user (one upsert, see `domain::quotas`), and a spent quota is answered
//! 429 `RATE_LIMIT_EXCEEDED` with `Retry-After` (seconds to the end of the UTC hour) before
//! the handler runs. Counted responses carry `X-RateLimit-Limit` and `X-RateLimit-Remaining`.
//!
//! The token is verified here as the extractors verify it (both hit the same in-memory caches,
//! so the second verification costs a hash-map lookup). A missing or invalid token is not
//! this layer's business: the request goes on and the route answers as it always does.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::domain::DomainError;
use crate::http::error::ApiError;

pub const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

/// Requests that are not API usage: probes and scrapes (a throttled probe restarts a healthy
/// pod), the documentation, the endpoints that hand out tokens (a user who spent the hour
/// must still be able to log in again), and the quota report itself, so a client can always
/// learn when its quota resets.
fn not_counted(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/health"
            | "/api/v1/health"
            | "/actuator/health"
            | "/docs"
            | "/api/v1/openapi.json"
            | "/api/auth/login"
            | "/api/auth/admin/login"
            | "/api/auth/wechat/login"
            | "/api/auth/register"
            | "/api/auth/refresh"
            | "/api/v1/auth/login"
            | "/api/v1/auth/register"
            | "/api/v1/auth/refresh"
            | "/api/v1/users/login"
            | "/api/v1/user/quota"
    ) || path.starts_with("/docs/")
}

/// The request's Bearer token, read as `http::auth` reads it.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn set_headers(resp: &mut Response, limit: i64, remaining: i64) {
    let h = resp.headers_mut();
    h.insert(LIMIT, HeaderValue::from(limit));
    h.insert(REMAINING, HeaderValue::from(remaining));
}

pub async fn api_calls(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if not_counted(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(token) = bearer(req.headers()) else {
        return next.run(req).await;
    };
    let Ok(user) = state.accounts.authenticate(token).await else {
        return next.run(req).await;
    };
    match state.quotas.check_api_call(&user).await {
        Ok(None) => next.run(req).await,
        Ok(Some(allowance)) => {
            let mut resp = next.run(req).await;
            set_headers(&mut resp, allowance.limit, allowance.remaining);
            resp
        }
        Err(e @ DomainError::RateLimited { .. }) => {
            let limit = state.quotas.api_limit(&user).await.unwrap_or_default();
            let mut resp = ApiError::from(e).into_response();
            set_headers(&mut resp, limit, 0);
            resp
        }
        Err(e) => {
            // The counter is a fairness limit, not a safeguard of money: when the database
            // cannot count, the request is served uncounted rather than refused.
            tracing::warn!(error = %e, "API call not counted: the quota counter failed");
            next.run(req).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_docs_and_token_endpoints_are_not_counted() {
        for p in [
            "/healthz",
            "/metrics",
            "/docs",
            "/docs/assets/swagger-ui.css",
            "/api/auth/refresh",
            "/api/v1/auth/login",
            "/api/v1/user/quota",
        ] {
            assert!(not_counted(p), "{p}");
        }
        for p in ["/api/users/me", "/api/v1/user/profile", "/api/v1/enhance", "/api/auth/me", "/docsx", "/api/v1/auth/loginx"] {
            assert!(!not_counted(p), "{p}");
        }
    }

    #[test]
    fn bearer_tokens_are_read_like_the_extractors_read_them() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
