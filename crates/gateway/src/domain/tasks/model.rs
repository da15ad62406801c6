//! What the task core says to its callers, in the public API's terms: the four seed status
//! words, a task snapshot, an accepted upload, routing settings and worker lines. Plain values.

use purrify_api::{EnhanceParams, JobResult, TaskStatus};
use serde::{Deserialize, Serialize};

use super::hub::TaskView;

/// A failed task's error as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub code: String,
    pub message: String,
}

/// Longest task id: the worker accepts job ids of up to 128 characters and the attempt
/// suffix needs a few.
pub const MAX_TASK_ID_LEN: usize = 100;

/// Whether `id` can name a task (and, suffixed, a worker job): `[A-Za-z0-9._-]`, 1 to
/// [`MAX_TASK_ID_LEN`] characters.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_TASK_ID_LEN && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The seed's four status words; a cancelled task reads as failed with reason "cancelled".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicStatus {
    Queued,
    Processing,
    Completed,
    Failed,
}

impl PublicStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// A task as the public API presents it.
#[derive(Debug, Clone)]
pub struct TaskSnapshot {
    pub id: String,
    /// The owning account; `None` for an anonymous upload (its id is its capability).
    pub owner: Option<String>,
    pub status: PublicStatus,
    pub progress: f64,
    pub error: Option<String>,
    pub error_code: Option<String>,
    pub result: Option<JobResult>,
}

impl From<&TaskView> for TaskSnapshot {
    fn from(v: &TaskView) -> Self {
        let status = match v.status {
            TaskStatus::Queued => PublicStatus::Queued,
            TaskStatus::Processing => PublicStatus::Processing,
            TaskStatus::Completed => PublicStatus::Completed,
            TaskStatus::Failed | TaskStatus::Cancelled => PublicStatus::Failed,
        };
        let (error, error_code) = match (&v.error, v.status) {
            (Some(f), _) => (Some(f.message.clone()), Some(f.code.clone())),
            (None, TaskStatus::Cancelled) => (Some("the task was cancelled".into()), Some("CANCELLED".into())),
            (None, TaskStatus::Failed) => (Some("the task failed".into()), Some("INTERNAL_ERROR".into())),
            _ => (None, None),
        };
        Self {
            id: v.task_id.clone(),
            owner: v.user_id.clone(),
            status,
            progress: if v.status == TaskStatus::Completed { 1.0 } else { f64::from(v.progress) },
            error,
            error_code,
            result: v.result.clone(),
        }
    }
}

/// An accepted upload, ready to become a task.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub task_id: String,
    pub input_uri: String,
    pub content_type: String,
    pub bytes: u64,
    pub params: EnhanceParams,
    pub request_id: String,
    /// The logged-in uploader, who alone (with admins) sees the task.
    pub owner: Option<String>,
    /// The client address: the fairness group of anonymous uploads, so one client's burst
    /// does not starve the others.
    pub client: String,
}

/// Fairness group of an anonymous upload (also the `EnhanceTask` owner, for the operator's
/// fair queuing); never an account id, which are UUIDs.
pub const ANONYMOUS_GROUP_PREFIX: &str = "anon:";

/// The account behind a task owner as stored on an `EnhanceTask` (anonymous groups are none).
pub fn account_owner(owner: &str) -> Option<String> {
    (!owner.starts_with(ANONYMOUS_GROUP_PREFIX) && !owner.is_empty()).then(|| owner.to_owned())
}

impl TaskSnapshot {
    /// Whether the task may be shown to `viewer`: anonymous tasks to anyone holding the id,
    /// owned ones to their owner and to admins.
    pub fn visible_to(&self, viewer: Option<&crate::domain::accounts::Principal>) -> bool {
        match (&self.owner, viewer) {
            (None, _) => true,
            (Some(owner), Some(v)) => *owner == v.user_id || v.is_admin(),
            (Some(_), None) => false,
        }
    }
}

/// Where jobs may go (`/api/v1/config`).
#[derive(Debug, Clone)]
pub struct Routing {
    /// Set by `POST /api/v1/config/backend`.
    pub backend_url: Option<String>,
    /// The in-process worker, when one runs.
    pub default_backend_url: Option<String>,
    pub multi_backend: bool,
    pub fallback_to_default: bool,
    /// Kubernetes mode: the GpuPool new tasks go to.
    pub pool: Option<String>,
}

/// One worker as status pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerLine {
    pub endpoint: String,
    pub healthy: bool,
    pub in_flight: u32,
    pub capacity: u32,
    pub circuit: Option<serde_json::Value>,
    pub last_heartbeat: Option<String>,
    pub last_error: Option<String>,
    pub gpu: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_fit_worker_job_ids() {
        assert!(valid_task_id("0f8e6c1a-9a53-4b6e-9a4e-1c1d2e3f4a5b"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id("a/b"));
        assert!(!valid_task_id(&"x".repeat(MAX_TASK_ID_LEN + 1)));
        assert!(purrify_inference::client::policy::job_id_for(&"x".repeat(MAX_TASK_ID_LEN), u32::MAX).len() <= 128);
    }
}
