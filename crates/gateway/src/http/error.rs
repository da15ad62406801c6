//! The one error envelope of the public API (seed 002):
//! `{"success": false, "message": ..., "error_code": ..., "details": {...}}`.
//!
//! Internal errors are logged with their cause and answered with a generic message: clients
//! never see database or storage internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::domain::DomainError;

/// Error codes: the seed 002 catalogue plus the few the upload contract needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidCredentials,
    AccessDenied,
    ResourceNotFound,
    MethodNotAllowed,
    ValidationError,
    FileTooLarge,
    /// A non-upload body (JSON) over its limit.
    RequestTooLarge,
    UnsupportedMediaType,
    InvalidImage,
    /// The user's uploaded files fill their storage quota.
    StorageQuotaExceeded,
    TaskNotFinished,
    TaskLimitExceeded,
    /// Seed 002: the balance cannot pay (400).
    InsufficientBalance,
    RateLimitExceeded,
    ServerUnavailable,
    InternalError,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::AccessDenied => StatusCode::FORBIDDEN,
            Self::ResourceNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ValidationError | Self::InvalidImage => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InsufficientBalance => StatusCode::BAD_REQUEST,
            Self::FileTooLarge | Self::RequestTooLarge | Self::StorageQuotaExceeded => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TaskNotFinished => StatusCode::CONFLICT,
            Self::TaskLimitExceeded | Self::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::AccessDenied => "ACCESS_DENIED",
            Self::ResourceNotFound => "RESOURCE_NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::FileTooLarge => "FILE_TOO_LARGE",
            Self::RequestTooLarge => "REQUEST_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::InvalidImage => "INVALID_IMAGE",
            Self::StorageQuotaExceeded => "STORAGE_QUOTA_EXCEEDED",
            Self::TaskNotFinished => "TASK_NOT_FINISHED",
            Self::TaskLimitExceeded => "TASK_LIMIT_EXCEEDED",
            Self::InsufficientBalance => "INSUFFICIENT_BALANCE",
            Self::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            Self::ServerUnavailable => "SERVER_UNAVAILABLE",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// The envelope as sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always false.
    pub success: bool,
    pub message: String,
    pub error_code: ErrorCode,
    /// Structured context, e.g. `{"field_errors": {"scale": ["must be 2 or 4"]}}`.
    #[schema(value_type = Object)]
    pub details: Value,
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Value::Object(Default::default()), retry_after: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A 422 naming the offending field, in seed 002's `field_errors` shape.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(ErrorCode::ValidationError, format!("{field}: {message}"))
            .with_details(serde_json::json!({ "field_errors": { field: [message] } }))
    }

    /// A 422 naming every offending field at once.
    pub fn fields(fields: &[(&'static str, String)]) -> Self {
        let mut map = serde_json::Map::new();
        for (field, message) in fields {
            let entry = map.entry(*field).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                list.push(Value::String(message.clone()));
            }
        }
        let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
        Self::new(ErrorCode::ValidationError, format!("request validation failed: {}", names.join(", ")))
            .with_details(serde_json::json!({ "field_errors": map }))
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, what)
    }

    /// Logs `cause` and answers with a message that reveals nothing internal.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::InternalError, "internal error; the request id identifies it in the logs")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServerUnavailable, message)
    }

    /// A JSON body the `Json` extractor refused: over the body limit is 413, anything else
    /// (malformed, wrong shape, wrong content type) a 422 saying what was wrong.
    pub fn json(rejection: axum::extract::rejection::JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(ErrorCode::RequestTooLarge, format!("the request body is larger than the {JSON_BODY_LIMIT} byte limit"));
        }
        Self::new(ErrorCode::ValidationError, format!("invalid JSON body: {}", rejection.body_text()))
    }
}

/// Largest JSON request body. The JSON endpoints take a handful of short fields; the
/// framework's 2 MB default would only let a client make the gateway buffer more.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// The answer for a path that exists without the request's method (axum keeps the `Allow`
/// header it computed).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not supported on {}", uri.path()))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = ErrorBody { success: false, message: self.message, error_code: self.code, details: self.details };
        let mut resp = (status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The domain's errors in the envelope: bad fields name the field, conflicts are validation
/// errors, and anything internal is logged (with its cause) and answered generically.
impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { field, message } => Self::field(field, message),
            DomainError::Fields(fields) => Self::fields(&fields),
            DomainError::InsufficientBalance { balance, price } => Self::new(
                ErrorCode::InsufficientBalance,
                format!(
                    "insufficient balance: {} credits available, {} needed",
                    crate::http::views::decimal(balance),
                    crate::http::views::decimal(price)
                ),
            )
            .with_details(
                serde_json::json!({ "balance": crate::http::views::decimal(balance), "price": crate::http::views::decimal(price) }),
            ),
            DomainError::Unauthorized(m) => Self::new(ErrorCode::InvalidCredentials, m),
            DomainError::Forbidden(m) => Self::new(ErrorCode::AccessDenied, m),
            DomainError::RateLimited { message, retry_after } => Self::new(ErrorCode::RateLimitExceeded, message).retry_after(retry_after),
            DomainError::TaskLimit(m) => Self::new(ErrorCode::TaskLimitExceeded, m),
            DomainError::Conflict(m) => Self::new(ErrorCode::ValidationError, m),
            DomainError::NotFound(m) => Self::not_found(m),
            DomainError::Unavailable(m) => Self::unavailable(m),
            e @ (DomainError::Store(_) | DomainError::Internal(_)) => Self::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_the_catalogue_spells_them() {
        for code in [ErrorCode::ValidationError, ErrorCode::ResourceNotFound, ErrorCode::TaskLimitExceeded, ErrorCode::MethodNotAllowed] {
            assert_eq!(serde_json::to_value(code).unwrap(), Value::String(code.as_str().into()));
        }
    }

    #[test]
    fn field_errors_follow_seed_002() {
        let e = ApiError::field("scale", "must be 2 or 4");
        assert_eq!(e.code.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.details["field_errors"]["scale"][0], "must be 2 or 4");
    }
}

#[cfg(test)]
mod domain_tests {
    use super::*;

    #[test]
    fn domain_errors_map_onto_the_envelope() {
        let e = ApiError::from(DomainError::invalid("ip", "loopback addresses are refused"));
        assert_eq!(
            (e.code, e.details["field_errors"]["ip"][0].as_str()),
            (ErrorCode::ValidationError, Some("loopback addresses are refused"))
        );
        assert_eq!(ApiError::from(DomainError::NotFound("no task x".into())).code, ErrorCode::ResourceNotFound);
        assert_eq!(ApiError::from(DomainError::Unavailable("later".into())).code, ErrorCode::ServerUnavailable);
        let internal = ApiError::from(DomainError::Internal("db at 10.0.0.3 down".into()));
        assert_eq!(internal.code, ErrorCode::InternalError);
        assert!(!internal.message.contains("10.0.0.3"), "internal causes are not echoed");
    }
}
