//! The domain's one error type. It says what went wrong in the caller's terms (a bad field,
//! a missing thing, a service that cannot take the request now); the HTTP layer maps it onto
//! the envelope, and internal causes are logged there, never echoed.

use purrify_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// A value the caller sent is not acceptable; `field` names it.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// Several fields at once, each with its problem (seed 002's `field_errors`).
    #[error("invalid fields")]
    Fields(Vec<(&'static str, String)>),
    /// No valid credentials: a wrong password, an invalid or expired token or login code.
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials are valid but not enough (deactivated account, not an admin, someone
    /// else's task).
    #[error("{0}")]
    Forbidden(String),
    /// Too many attempts; `retry_after` is in seconds.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// The user has as many tasks queued or running as the configured limit allows.
    #[error("{0}")]
    TaskLimit(String),
    /// The balance cannot pay the price (hundredths).
    #[error("insufficient balance: {balance} available, {price} needed")]
    InsufficientBalance { balance: i64, price: i64 },
    /// The request conflicts with what exists (e.g. a GPU server URL registered under another
    /// address).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// A dependency (cluster, storage) cannot take the request now; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else; the message is for logs only.
    #[error("{0}")]
    Internal(String),
}

impl DomainError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }

    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Invalid { .. } | Self::Fields(_) => "invalid",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::TaskLimit(_) => "task_limit",
            Self::InsufficientBalance { .. } => "insufficient_balance",
            Self::Conflict(_) => "conflict",
            Self::NotFound(_) => "not_found",
            Self::Unavailable(_) => "unavailable",
            Self::Store(e) => e.category(),
            Self::Internal(_) => "internal",
        }
    }
}

pub type DomainResult<T> = Result<T, DomainError>;
