//! The success envelopes of the product surfaces (DESIGN section 10), and the rewrite that
//! gives seed 003's routes their own error shape. Errors are produced once, as seed 002's
//! envelope (`ApiError`); a surface with another shape converts them on the way out, so no
//! handler knows which surface it serves when it fails.
//!
//! - 001 and 002: `{"success": true, "message": "...", "data": ..., "error_code": null}`
//! - 003: `{"code": 200, "message": "success", "data": ..., "timestamp": <ms>}`, errors
//!   `{"code": <status>, "message": "...", "error": "<ERROR_CODE>", "details": {...}, "timestamp": <ms>}`

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// Seeds 001/002's success envelope.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    pub message: String,
    pub data: T,
    /// Always null on success.
    #[schema(value_type = Option<String>)]
    pub error_code: Option<()>,
}

impl<T> Envelope<T> {
    pub fn ok(message: impl Into<String>, data: T) -> Self {
        Self { success: true, message: message.into(), data, error_code: None }
    }
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// Seed 003's success envelope; `code` mirrors the HTTP status (200 or 201).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct V1<T> {
    pub code: u16,
    pub message: String,
    pub data: T,
    /// Unix milliseconds.
    pub timestamp: i64,
}

impl<T> V1<T> {
    pub fn ok(data: T) -> Self {
        Self::with_status(StatusCode::OK, data)
    }

    pub fn created(data: T) -> Self {
        Self::with_status(StatusCode::CREATED, data)
    }

    fn with_status(status: StatusCode, data: T) -> Self {
        Self { code: status.as_u16(), message: "success".into(), data, timestamp: now_ms() }
    }
}

impl<T: Serialize> IntoResponse for V1<T> {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::OK);
        (status, Json(self)).into_response()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Seed 003's error shape, documented for the OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct V1Error {
    pub code: u16,
    pub message: String,
    /// The error code of the catalogue (`VALIDATION_ERROR`, ...).
    pub error: String,
    #[schema(value_type = Object)]
    pub details: Value,
    pub timestamp: i64,
}

/// Largest error body rewritten; ours are a few hundred bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Middleware for seed 003's routes: error responses in seed 002's envelope become seed
/// 003's. Headers (Retry-After, X-Request-ID) are kept.
pub async fn v1_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let rewritten =
        serde_json::from_slice::<Value>(&bytes).ok().filter(|v| v.get("success") == Some(&Value::Bool(false))).map(|v| V1Error {
            code: status.as_u16(),
            message: v["message"].as_str().unwrap_or_default().to_owned(),
            error: v["error_code"].as_str().unwrap_or_default().to_owned(),
            details: v.get("details").cloned().unwrap_or(Value::Object(Default::default())),
            timestamp: now_ms(),
        });
    match rewritten {
        Some(e) => {
            let body = serde_json::to_vec(&e).unwrap_or_default();
            parts.headers.insert(header::CONTENT_LENGTH, body.len().into());
            Response::from_parts(parts, Body::from(body))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}
