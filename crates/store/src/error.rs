//! The store's one error type, with a bounded category for metrics and logs.

use sqlx::migrate::MigrateError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL (expected sqlite:... or postgres://...)")]
    UnsupportedUrl,
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] MigrateError),
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error("stored row is not valid: {0}")]
    Corrupt(String),
    /// A conditional insert found its limit reached (e.g. a user's concurrent tasks).
    #[error("limit reached: {0}")]
    LimitReached(String),
}

impl StoreError {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnsupportedUrl => "url",
            Self::Connect(_) => "connect",
            Self::Migrate(_) => "migrate",
            Self::Duplicate(_) => "duplicate",
            Self::Invalid(_) => "invalid",
            Self::Query(_) => "query",
            Self::Corrupt(_) => "corrupt",
            Self::LimitReached(_) => "limit",
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Query(e)
    }
}
