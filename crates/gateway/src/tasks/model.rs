//! The task vocabulary shared by the repository, the hub and the dispatcher. Plain values.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use purrify_inference::protocol::{EnhanceParams, ErrorReason, JobResult};
use serde::{Deserialize, Serialize};

/// Wall-clock time as stored in the database: unix milliseconds. Integers keep the schema
/// portable (SQLite has no timestamp type) and compare cheaply in SQL.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The seed 000 status words, stored as-is in `tasks.status`.
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

/// Why a task failed: a bounded set, so it can label metrics and map onto the error
/// envelope's `error_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskErrorCode {
    /// The upload is not an image the engine can decode.
    BadInput,
    /// The image has more pixels than the engine accepts.
    ImageTooLarge,
    /// The enhancement parameters were refused by the worker.
    InvalidParams,
    /// Reading the input or writing the result kept failing.
    StorageError,
    /// Model execution kept failing.
    ProcessingFailed,
    /// Every attempt lost its worker (crash, network, restart).
    WorkerUnavailable,
    /// The task did not finish before its deadline.
    ProcessingTimeout,
    InternalError,
}

impl TaskErrorCode {
    pub const ALL: [TaskErrorCode; 8] = [
        Self::BadInput,
        Self::ImageTooLarge,
        Self::InvalidParams,
        Self::StorageError,
        Self::ProcessingFailed,
        Self::WorkerUnavailable,
        Self::ProcessingTimeout,
        Self::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadInput => "BAD_INPUT",
            Self::ImageTooLarge => "IMAGE_TOO_LARGE",
            Self::InvalidParams => "INVALID_PARAMS",
            Self::StorageError => "STORAGE_ERROR",
            Self::ProcessingFailed => "PROCESSING_FAILED",
            Self::WorkerUnavailable => "WORKER_UNAVAILABLE",
            Self::ProcessingTimeout => "PROCESSING_TIMEOUT",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// The code for a job error reported by a worker.
    pub fn from_reason(reason: ErrorReason) -> Self {
        match reason {
            ErrorReason::BadInput => Self::BadInput,
            ErrorReason::TooLarge => Self::ImageTooLarge,
            ErrorReason::InvalidParams => Self::InvalidParams,
            ErrorReason::Storage => Self::StorageError,
            ErrorReason::Inference => Self::ProcessingFailed,
            ErrorReason::Cancelled | ErrorReason::Internal => Self::InternalError,
        }
    }

    /// Whether the worker's own message may be shown to the client: only for refusals of
    /// the client's input, which are written for the sender. Other messages can name
    /// internal paths and hosts, so the client gets [`public_message`](Self::public_message).
    pub fn shows_worker_message(self) -> bool {
        matches!(self, Self::BadInput | Self::ImageTooLarge | Self::InvalidParams)
    }

    /// A client-safe message for codes whose details stay in the logs.
    pub fn public_message(self) -> &'static str {
        match self {
            Self::BadInput => "the file is not an image that can be processed",
            Self::ImageTooLarge => "the image has too many pixels",
            Self::InvalidParams => "the enhancement parameters were refused",
            Self::StorageError => "the image could not be read or the result could not be stored",
            Self::ProcessingFailed => "image processing failed",
            Self::WorkerUnavailable => "no GPU server could complete the task",
            Self::ProcessingTimeout => "processing did not finish in time",
            Self::InternalError => "internal error while processing the task",
        }
    }
}

impl fmt::Display for TaskErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed task's error as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub code: String,
    pub message: String,
}

/// What the HTTP layer knows when it accepts an upload.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub id: String,
    pub input_uri: String,
    pub output_uri: String,
    pub content_type: String,
    pub input_bytes: u64,
    pub params: EnhanceParams,
    /// Higher runs first.
    pub priority: i32,
    /// Fairness group. Tasks without one share a single group, so anonymous bursts cannot
    /// starve identified users; pass e.g. the client address for anonymous uploads.
    pub user_id: Option<String>,
    /// The `X-Request-ID` of the upload, forwarded to the worker.
    pub request_id: Option<String>,
    /// Time allowed from acceptance to result. `None`: the dispatcher's default.
    pub deadline: Option<Duration>,
}

impl NewTask {
    pub fn new(id: impl Into<String>, input_uri: impl Into<String>, output_uri: impl Into<String>, params: EnhanceParams) -> Self {
        Self {
            id: id.into(),
            input_uri: input_uri.into(),
            output_uri: output_uri.into(),
            content_type: "application/octet-stream".into(),
            input_bytes: 0,
            params,
            priority: 0,
            user_id: None,
            request_id: None,
            deadline: None,
        }
    }
}

/// One row of `tasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub status: TaskStatus,
    /// 0..=1, as last written (coarse while processing; see the hub for live progress).
    pub progress: f64,
    pub input_uri: String,
    pub output_uri: String,
    pub content_type: String,
    pub input_bytes: u64,
    pub params: EnhanceParams,
    pub priority: i32,
    pub user_id: Option<String>,
    /// Endpoint of the worker running the current attempt.
    pub worker: Option<String>,
    /// Job id of the current attempt on that worker: `{task_id}-{attempt}`.
    pub job_id: Option<String>,
    /// Attempts started (a 429 from a worker does not count).
    pub attempts: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub result: Option<JobResult>,
    pub request_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub deadline_at: i64,
}

impl Task {
    pub fn failure(&self) -> Option<TaskFailure> {
        match (&self.error_code, self.status) {
            (Some(code), TaskStatus::Failed) => {
                Some(TaskFailure { code: code.clone(), message: self.error_message.clone().unwrap_or_default() })
            }
            _ => None,
        }
    }
}

/// The job id of attempt `attempt` (1-based) of a task. A new id per attempt means a retry on
/// the same worker starts a fresh job instead of attaching to the failed one.
pub fn job_id_for(task_id: &str, attempt: u32) -> String {
    format!("{task_id}-{attempt}")
}

/// A GPU server registered through the seed 000 webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuServer {
    /// Assigned by us on first registration (`gpu-` + 8 hex digits), stable across
    /// re-registrations of the same ip and port.
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub url: String,
    pub registered_at: i64,
    pub last_seen: i64,
}

/// Keys of the `settings` table behind `/api/v1/config/*`.
pub mod settings {
    /// Default backend URL set through `POST /api/v1/config/backend`.
    pub const BACKEND_URL: &str = "backend_url";
    /// `"true"`/`"false"`: multi-GPU mode (`POST /api/v1/config/multi-backend`).
    pub const MULTI_BACKEND_ENABLED: &str = "multi_backend_enabled";
    /// `"true"`/`"false"`: fall back to the default backend when no registered server is up.
    pub const FALLBACK_TO_DEFAULT: &str = "fallback_to_default";
    /// Kubernetes mode: the GpuPool new tasks go to (`POST /api/v1/config/backend`).
    pub const POOL: &str = "pool";
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
    fn only_input_refusals_show_the_worker_message() {
        for code in TaskErrorCode::ALL {
            assert_eq!(TaskErrorCode::ALL[code.index()], code);
            assert!(!code.public_message().is_empty());
        }
        assert!(TaskErrorCode::from_reason(ErrorReason::BadInput).shows_worker_message());
        assert!(TaskErrorCode::from_reason(ErrorReason::TooLarge).shows_worker_message());
        assert!(!TaskErrorCode::from_reason(ErrorReason::Storage).shows_worker_message());
        assert!(!TaskErrorCode::ProcessingTimeout.shows_worker_message());
    }

    #[test]
    fn job_ids_differ_per_attempt() {
        assert_eq!(job_id_for("abc", 1), "abc-1");
        assert_ne!(job_id_for("abc", 1), job_id_for("abc", 2));
    }
}
