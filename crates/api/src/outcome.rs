//! How a task ends, in words every mode shares: the seed 000 status words stored in the
//! database, the bounded failure reasons, and the client-safe messages. The standalone
//! dispatcher and the operator both write these, so the same worker answer reads the same in
//! either mode (DESIGN section 3).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The seed 000 status words (plus `cancelled`), as stored in `tasks.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [Self::Queued, Self::Processing, Self::Completed, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Terminal states never change again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown task status {s:?}"))
    }
}

/// Why a task did not succeed: a bounded set, so it can label metrics. Each has two
/// spellings: the `EnhanceTask` status word (`status.error.reason`, CamelCase as Kubernetes
/// reasons are) and the public API's `error_code` (SCREAMING_SNAKE as seed 002's codes are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The upload is not an image the engine can decode.
    BadInput,
    /// The image has more pixels than the engine accepts.
    TooLarge,
    /// The enhancement parameters were refused by the worker.
    InvalidParams,
    /// Reading the input or writing the result kept failing.
    StorageError,
    /// Model execution kept failing.
    InferenceFailed,
    /// Every attempt lost its worker (crash, network, restart).
    WorkerUnavailable,
    /// The task did not finish before its deadline.
    DeadlineExceeded,
    /// Someone asked for the task to stop.
    Cancelled,
    /// The worker failed in a way it could not name.
    InternalError,
}

impl FailReason {
    pub const ALL: [FailReason; 9] = [
        Self::BadInput,
        Self::TooLarge,
        Self::InvalidParams,
        Self::StorageError,
        Self::InferenceFailed,
        Self::WorkerUnavailable,
        Self::DeadlineExceeded,
        Self::Cancelled,
        Self::InternalError,
    ];

    /// The `EnhanceTask` `status.error.reason` word.
    pub fn reason(self) -> &'static str {
        match self {
            Self::BadInput => "BadInput",
            Self::TooLarge => "TooLarge",
            Self::InvalidParams => "InvalidParams",
            Self::StorageError => "StorageError",
            Self::InferenceFailed => "InferenceFailed",
            Self::WorkerUnavailable => "WorkerUnavailable",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::Cancelled => "Cancelled",
            Self::InternalError => "InternalError",
        }
    }

    /// The public API's `error_code` (also stored in `tasks.error_code`).
    pub fn code(self) -> &'static str {
        match self {
            Self::BadInput => "BAD_INPUT",
            Self::TooLarge => "IMAGE_TOO_LARGE",
            Self::InvalidParams => "INVALID_PARAMS",
            Self::StorageError => "STORAGE_ERROR",
            Self::InferenceFailed => "PROCESSING_FAILED",
            Self::WorkerUnavailable => "WORKER_UNAVAILABLE",
            Self::DeadlineExceeded => "PROCESSING_TIMEOUT",
            Self::Cancelled => "CANCELLED",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }

    pub fn from_reason(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.reason() == word)
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Whether the worker's own message may be shown to the client: only for refusals of
    /// the client's input, which are written for the sender. Other messages can name storage
    /// paths and worker addresses, so they stay in logs and Events.
    pub fn shows_detail(self) -> bool {
        matches!(self, Self::BadInput | Self::TooLarge | Self::InvalidParams)
    }

    /// A client-safe message for reasons whose details stay in the logs.
    pub fn public_message(self) -> &'static str {
        match self {
            Self::BadInput => "the file is not an image that can be processed",
            Self::TooLarge => "the image has too many pixels",
            Self::InvalidParams => "the enhancement parameters were refused",
            Self::StorageError => "the image could not be read or the result could not be stored",
            Self::InferenceFailed => "image processing failed",
            Self::WorkerUnavailable => "no GPU server could complete the task",
            Self::DeadlineExceeded => "processing did not finish in time",
            Self::Cancelled => "the task was cancelled",
            Self::InternalError => "internal error while processing the task",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The message a failed task shows its owner, after `attempts` attempts: the worker's own
/// `detail` for input refusals, a fixed sentence otherwise.
pub fn client_message(reason: FailReason, detail: &str, attempts: u32) -> String {
    if reason.shows_detail() && !detail.is_empty() {
        return detail.to_owned();
    }
    match reason {
        FailReason::WorkerUnavailable if attempts > 1 => format!("no GPU server could complete the task in {attempts} attempts"),
        _ if attempts > 1 => format!("{} ({attempts} attempts)", reason.public_message()),
        _ => reason.public_message().to_owned(),
    }
}

/// The message of a task that ran out of time: `started` when a worker had it.
pub fn deadline_message(deadline_seconds: u64, started: bool) -> String {
    if started {
        format!("processing did not finish within the {deadline_seconds} s deadline")
    } else {
        format!("no GPU server was free to start the task within its {deadline_seconds} s deadline")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_only_three_are_final() {
        for st in TaskStatus::ALL {
            assert_eq!(st.as_str().parse::<TaskStatus>().unwrap(), st);
        }
        let finished: Vec<_> = TaskStatus::ALL.into_iter().filter(|s| s.is_finished()).collect();
        assert_eq!(finished, [TaskStatus::Completed, TaskStatus::Failed, TaskStatus::Cancelled]);
        assert!("running".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn both_spellings_round_trip_and_are_distinct() {
        for r in FailReason::ALL {
            assert_eq!(FailReason::from_reason(r.reason()), Some(r));
            assert_eq!(FailReason::from_code(r.code()), Some(r));
            assert!(!r.public_message().is_empty());
        }
        let codes: std::collections::HashSet<_> = FailReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), FailReason::ALL.len());
    }

    #[test]
    fn messages_hide_internal_details() {
        assert_eq!(client_message(FailReason::BadInput, "cannot decode: not a JPEG", 1), "cannot decode: not a JPEG");
        let m = client_message(FailReason::StorageError, "s3://bucket/secret: 500", 3);
        assert!(!m.contains("secret") && m.contains("3 attempts"), "{m}");
        let m = client_message(FailReason::WorkerUnavailable, "10.0.0.3 refused", 3);
        assert_eq!(m, "no GPU server could complete the task in 3 attempts");
        assert_eq!(client_message(FailReason::InternalError, "panic at /srv/x.rs", 1), "internal error while processing the task");
        assert!(deadline_message(2, false).contains("free") && deadline_message(2, true).contains("2 s"));
    }
}
