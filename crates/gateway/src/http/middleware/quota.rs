//! Seed 003's hourly API-call quota: every request to seed 003's surface that carries a valid
//! access token counts one call for its user (one upsert, see `domain::quotas`), and a spent quota is answered
//! 429 `RATE_LIMIT_EXCEEDED` with `Retry-After` (seconds to the end of the UTC hour) before
//! the handler runs. Counted responses carry `X-RateLimit-Limit` and `X-RateLimit-Remaining`.
//!
//! The token is verified here as the extractors verify it (both hit the same in-memory caches,
//! so the second verification costs a hash-map lookup). A missing or invalid token is not
//! this layer's business: the request goes on and the route answers as it always does.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::domain::DomainError;
use crate::http::error::ApiError;

pub const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

/// The requests seed 003's limits count: its own surface (the generation app, `/api/v1/user/*`,
/// `generate`, `works`, `square`, `assistant`, `upload`, provider configuration), whose
/// "限流说明" they are. Seed 000's enhancement polls, the other surfaces, probes and the token
/// endpoints are not API usage in that sense; counting every authenticated status poll would
/// also put a database write on the hottest read path. The quota report is not counted, so a
/// client can always learn when its quota resets.
fn counted(path: &str) -> bool {
    const SURFACE: &[&str] = &[
        "/api/v1/user/",
        "/api/v1/generate/",
        "/api/v1/works",
        "/api/v1/square/",
        "/api/v1/assistant/",
        "/api/v1/upload/",
        "/api/v1/config/providers",
        "/api/v1/config/current",
    ];
    SURFACE.iter().any(|p| path.starts_with(p)) && path != "/api/v1/user/quota"
}

fn set_headers(resp: &mut Response, limit: i64, remaining: i64) {
    let h = resp.headers_mut();
    h.insert(LIMIT, HeaderValue::from(limit));
    h.insert(REMAINING, HeaderValue::from(remaining));
}

pub async fn api_calls(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !counted(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(token) = crate::http::auth::bearer(req.headers()) else {
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
    fn only_seed_003s_surface_is_counted() {
        for p in [
            "/api/v1/user/profile",
            "/api/v1/user/compute-power",
            "/api/v1/generate/text-to-image",
            "/api/v1/works/1",
            "/api/v1/config/providers",
        ] {
            assert!(counted(p), "{p}");
        }
        for p in [
            "/healthz",
            "/metrics",
            "/docs/assets/swagger-ui.css",
            "/api/v1/auth/login",
            "/api/v1/user/quota",
            "/api/v1/status/abc",
            "/api/v1/enhance",
            "/api/v1/config",
            "/api/v1/config/backend",
            "/api/users/me",
            "/api/auth/me",
        ] {
            assert!(!counted(p), "{p}");
        }
    }
}
