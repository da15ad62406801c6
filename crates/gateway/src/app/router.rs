//! The router: every area's routes, the fallbacks, and the middleware stack.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;
use crate::http::{self, middleware};

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") || origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            middleware::REQUEST_ID,
            HeaderName::from_static("x-webhook-secret"),
        ])
        .expose_headers([middleware::REQUEST_ID, axum::http::header::RETRY_AFTER, middleware::quota::LIMIT, middleware::quota::REMAINING])
        .max_age(Duration::from_secs(3600))
}

/// The full router with its middleware. Outermost first: request id (so every log line and
/// every response has one), CORS, metrics, rate limit by address, the API-call quota (after
/// the address limit, so a flood from one address never reaches the database), then the routes.
pub fn router(state: AppState) -> Router {
    let (routes, _document) = http::routes::all(state.config.max_upload_bytes).split_for_parts();
    Router::new()
        .merge(routes)
        .fallback(|| async { http::ApiError::not_found("no such endpoint; see /docs") })
        // After every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(http::error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::audit::record))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::quota::api_calls))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::maintenance::maintenance))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::rate_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::record_metrics))
        .layer(cors(&state.config.cors_origins))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}
