//! Maintenance mode (`maintenance_mode` in `/api/admin/config`): while it is on, every write
//! (POST, PUT, PATCH, DELETE) by anyone but an administrator answers 503 SERVER_UNAVAILABLE
//! with a clear message. Reads, logins (so admins can get a token), admin requests, and the
//! machine-to-machine writes that must not be lost (GPU-server webhooks and WeChat Pay
//! notifications, each authenticated by its own secret or signature) keep working. The
//! switch is read through the task settings' short cache, not a query per request.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::http::auth::bearer;
use crate::http::error::ApiError;

/// Writes that stay open during maintenance: logins and token refreshes of every surface (so
/// admins can get a token), and seed 000's admin-token configuration.
const OPEN_PATHS: &[&str] = &[
    "/api/auth/login",
    "/api/auth/admin/login",
    "/api/auth/wechat/login",
    "/api/auth/refresh",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/users/login",
    "/api/v1/config/backend",
    "/api/v1/config/multi-backend",
];

/// ...and by prefix: GPU servers (webhook secret), payment notifications (WeChat Pay
/// retries them, but a paid order must be credited) and workflows reporting their tasks.
const OPEN_PREFIXES: &[&str] = &["/webhook/", "/api/wechat/pay/notify", "/api/callback/"];

/// What a refused write reads.
pub const MESSAGE: &str = "the service is under maintenance: changes are paused for now (reading still works); try again later";

fn is_write(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

pub async fn maintenance(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !is_write(req.method()) || OPEN_PATHS.contains(&path) || OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return next.run(req).await;
    }
    let on = match state.tasks.runtime().snapshot().await {
        Ok(s) => s.maintenance_mode,
        Err(e) => {
            // Failing open: the write's own handler meets the same database problem and
            // answers for it.
            tracing::warn!(error = %e, "cannot read maintenance_mode; treating it as off");
            false
        }
    };
    if !on {
        return next.run(req).await;
    }
    let admin = match bearer(req.headers()) {
        Some(token) => state.accounts.authenticate(token).await.is_ok_and(|p| p.is_admin()),
        None => false,
    };
    if admin {
        return next.run(req).await;
    }
    ApiError::unavailable(MESSAGE).retry_after(60).into_response()
}
