//! Who may call what. `PURRIFY_ADMIN_TOKEN` guards the seed-000 configuration endpoints (a
//! service credential, DESIGN section 11); the webhook secret guards GPU-server registration.
//! Secrets come from configuration only and are compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::error::{ApiError, ApiResult, ErrorCode};
use crate::app::AppState;

/// Constant-time comparison; a length mismatch returns early, which reveals only the length.
pub fn secret_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Proof that the request carries `Authorization: Bearer <admin token>`: none given is 401, a
/// wrong one 403, and without a configured token the admin endpoints are disabled (403).
#[derive(Debug, Clone, Copy)]
pub struct AdminToken;

impl FromRequestParts<AppState> for AdminToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(expected) = state.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(ApiError::new(ErrorCode::AccessDenied, "admin API is disabled: the gateway has no admin token configured"));
        };
        let given =
            parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        match given {
            None => Err(ApiError::new(ErrorCode::InvalidCredentials, "admin token required: send Authorization: Bearer <token>")),
            Some(g) if secret_matches(expected, g) => Ok(AdminToken),
            Some(_) => Err(ApiError::new(ErrorCode::AccessDenied, "wrong admin token")),
        }
    }
}

/// Checks the webhook secret, taken from `X-Webhook-Secret` or else from the request itself
/// (the body's `secret` field, or the query string as the seed's listing did).
pub fn check_webhook_secret(state: &AppState, headers: &HeaderMap, from_request: Option<&str>) -> ApiResult<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cret", "s3cre"));
        assert!(!secret_matches("s3cret", "s3cret "));
        assert!(!secret_matches("s3cret", ""));
    }
}
