//! Who may call what. Users prove themselves with an access token (`CurrentUser`,
//! `MaybeUser`, `AdminUser`); `PURRIFY_ADMIN_TOKEN` guards the seed-000 configuration endpoints (a
//! service credential, DESIGN section 11); the webhook secret guards GPU-server registration.
//! Secrets come from configuration only and are compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::error::{ApiError, ApiResult, ErrorCode};
use crate::app::AppState;
use crate::domain::accounts::Principal;

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

    #[test]
    fn bearer_tokens_are_read_in_any_case_and_trimmed() {
        use axum::http::HeaderValue;
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

/// The Bearer token of a request, if it sent one (the scheme in any case, the token trimmed).
/// The extractors below and the quota middleware read tokens only through this.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A logged-in user: `Authorization: Bearer <access token>`, verified. Missing or invalid
/// is 401 INVALID_CREDENTIALS; a deactivated account 403.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Principal);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidCredentials, "login required: send Authorization: Bearer <access token>"))?;
        Ok(Self(state.accounts.authenticate(token).await?))
    }
}

/// A logged-in user when the request carries a token; `None` without one. A token that is
/// sent but invalid is refused rather than ignored: the client believes it is logged in.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match bearer(&parts.headers) {
            None => Ok(Self(None)),
            Some(token) => Ok(Self(Some(state.accounts.authenticate(token).await?))),
        }
    }
}

/// A logged-in admin; other users get 403 ACCESS_DENIED.
#[derive(Debug, Clone)]
pub struct AdminUser(pub Principal);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let CurrentUser(p) = CurrentUser::from_request_parts(parts, state).await?;
        if !p.is_admin() {
            return Err(ApiError::new(ErrorCode::AccessDenied, "administrators only"));
        }
        Ok(Self(p))
    }
}

/// The client's address as the rate limits see it (see `middleware::client_ip`).
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(super::middleware::client_ip_of(&parts.extensions, &parts.headers, &state.config).to_string()))
    }
}
