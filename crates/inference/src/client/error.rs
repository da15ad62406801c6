use std::error::Error as _;
use std::time::Duration;

/// Why a call to a worker did not produce the expected answer.
///
/// The variants are shaped around the dispatcher's decision, not around HTTP: retry later on
/// the same worker ([`Busy`](Self::Busy)), give up on the task ([`Rejected`](Self::Rejected)),
/// resubmit ([`NotFound`](Self::NotFound)), or try another worker
/// ([`Unavailable`](Self::Unavailable), [`Protocol`](Self::Protocol)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// 429: the worker is at capacity. It is healthy; do not count it against the breaker.
    #[error("worker is at capacity, retry after {}s", retry_after.as_secs())]
    Busy { retry_after: Duration },
    /// 4xx other than 404/429: the request itself is wrong, so another worker would refuse it
    /// too. `message` is the worker's message meant for the sender of the parameters.
    #[error("worker rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// 404 on a job URL: the worker does not know this job id (e.g. it restarted).
    #[error("job not found on the worker")]
    NotFound,
    /// Connect failure, timeout, dropped connection or 5xx: the worker is the problem.
    #[error("worker unavailable: {0}")]
    Unavailable(String),
    /// The worker answered something this client does not understand.
    #[error("unexpected worker response: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Busy { .. } => "busy",
            Self::Rejected { .. } => "rejected",
            Self::NotFound => "not_found",
            Self::Unavailable(_) => "unavailable",
            Self::Protocol(_) => "protocol",
        }
    }

    /// Whether the failure says something bad about the worker (feeds the circuit breaker).
    pub fn is_worker_failure(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Protocol(_))
    }

    /// Whether the same request may succeed on another worker.
    pub fn retry_elsewhere(&self) -> bool {
        matches!(self, Self::Busy { .. } | Self::Unavailable(_) | Self::Protocol(_))
    }

    /// Every reqwest failure is a transport failure here: JSON is decoded by this crate, and
    /// reqwest reports a body cut mid-stream as a "decode" error.
    pub(crate) fn from_reqwest(e: &reqwest::Error) -> Self {
        Self::Unavailable(error_chain(e))
    }
}

/// reqwest's top-level message ("error sending request for url") hides the useful cause.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// A worker endpoint or client configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid worker endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_bounded_and_decisions_follow_the_variant() {
        let cases = [
            (ClientError::Busy { retry_after: Duration::from_secs(1) }, "busy", false, true),
            (ClientError::Rejected { status: 422, message: "x".into() }, "rejected", false, false),
            (ClientError::NotFound, "not_found", false, false),
            (ClientError::Unavailable("x".into()), "unavailable", true, true),
            (ClientError::Protocol("x".into()), "protocol", true, true),
        ];
        for (e, cat, worker_failure, elsewhere) in cases {
            assert_eq!(e.category(), cat);
            assert_eq!(e.is_worker_failure(), worker_failure, "{e}");
            assert_eq!(e.retry_elsewhere(), elsewhere, "{e}");
        }
    }
}
