//! HTTP only: the error envelope, extractors whose rejections are the envelope, auth, the
//! OpenAPI document, middleware, and one routes module per area. Handlers call the domain's
//! services; nothing here reaches the database.

pub mod auth;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod files;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod views;

pub use error::{ApiError, ApiResult, ErrorBody, ErrorCode};
