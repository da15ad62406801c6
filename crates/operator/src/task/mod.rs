//! The EnhanceTask controller (DESIGN section 3): queued tasks go, by priority, fair share per
//! user and age, to the least-loaded healthy worker of their pool; the controller follows the
//! job's event stream, retries elsewhere, enforces deadlines, honours cancellation, deletes
//! finished tasks after their TTL, and re-attaches to running jobs after a restart.
//!
//! Shape (pure index, thin I/O):
//! - [`index`]: the watch-fed view of every task and the per-pool fair queues. Pure.
//! - [`policy`]: what an ended attempt means, the status of each transition, which chore an
//!   unowned task needs. Pure.
//! - `controller`: one loop owns the index; it feeds it watch events and the objects our
//!   writes return, and spawns a follower per dispatched task and a short chore per
//!   housekeeping action. Each task is owned by at most one of them at a time.
//! - `kubeio`: the API calls: guarded status patches, deletes, Events, all counted.
//! - [`progress`]: live progress in memory, served over HTTP to the gateway.
//!
//! Write budget per task (DESIGN section 2): create (by the gateway), Running, at most one
//! coarse progress mark, the finished status, and the TTL delete: five. A retry adds two
//! (back to Queued, Running again); a 429 adds none.
//!
//! No finalizer: DESIGN section 9 keeps finalizers for external cleanup, and the only
//! external state is the worker's job. Deleting a task while its job runs stops the job from
//! the watch's delete event; if the operator is down at that moment the job runs to its end
//! and its result is ignored, which costs GPU time but loses nothing. A finalizer would
//! cost two more writes on every task to save that rare case.

mod attempt;
pub mod index;
mod kubeio;
pub mod model;
pub mod policy;
pub mod progress;

mod controller;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use attempt::REQUEST_ID_ANNOTATION;
pub use model::{CANCEL_ANNOTATION, TaskKey};
pub use progress::{Progress, ProgressHub};

use crate::context::Context;

/// `(apiGroup, resource, verbs)` this controller uses; `deploy/operator-rbac.yaml` must grant
/// exactly these (a test checks). Keep in step with `controller` (the watch-fed index: list,
/// watch) and `kubeio` (a re-read after a conflicting write, guarded status patches, TTL
/// deletes, Events).
pub const PERMISSIONS: &[(&str, &str, &[&str])] = &[
    ("purrify.io", "enhancetasks", &["get", "list", "watch", "delete"]),
    ("purrify.io", "enhancetasks/status", &["patch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// Tuning of the task controller. The defaults suit production.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Attempts per task before it fails (a 429 is not an attempt).
    pub max_attempts: u32,
    /// TTL of finished tasks that set no `ttlSecondsAfterFinished`.
    pub default_ttl: Duration,
    /// Deadlines, TTLs and orphaned running tasks are checked this often.
    pub tick_interval: Duration,
    /// Pools whose workers were all busy are looked at again this often (worker health
    /// changes come from the GpuPool controller, which does not wake this one).
    pub poll_interval: Duration,
    /// The one coarse progress write of an attempt happens once progress reaches this...
    pub progress_mark: f32,
    /// ...and the job is still running this much later (fast jobs skip the write).
    pub progress_write_delay: Duration,
    /// Bound on a `DELETE` of a worker job.
    pub cancel_timeout: Duration,
    /// After start, how long a running task whose worker the pool's fleet does not know
    /// yet waits for it (the GpuPool controller fills the fleets) before being retried.
    pub reattach_grace: Duration,
    /// Publish Kubernetes Events on Running, Succeeded, Failed, retries and cancellation.
    pub events: bool,
    /// Concurrent API writes.
    pub max_concurrent_writes: usize,
    /// On stop, how long in-flight writes may take before they are abandoned.
    pub shutdown_grace: Duration,
    /// Reporting instance of Events (the pod name).
    pub instance: Option<String>,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            default_ttl: Duration::from_secs(3600),
            tick_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            progress_mark: 0.5,
            progress_write_delay: Duration::from_secs(1),
            cancel_timeout: Duration::from_secs(5),
            reattach_grace: Duration::from_secs(30),
            events: true,
            max_concurrent_writes: 32,
            shutdown_grace: Duration::from_secs(10),
            instance: std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()),
        }
    }
}

/// Runs the controller with the default configuration, publishing progress to
/// [`ProgressHub::global`], until `shutdown` completes (shutdown or lost leadership). Jobs
/// keep running on their workers; the next leader re-attaches to them.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    run_with(ctx, TaskConfig::default(), ProgressHub::global(), shutdown).await
}

/// [`run`] with explicit configuration and progress hub.
pub async fn run_with(
    ctx: Arc<Context>,
    config: TaskConfig,
    hub: ProgressHub,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    controller::run(ctx, config, hub, shutdown).await
}

/// `GET /v1/tasks/{namespace}/{name}/progress` and `GET /v1/progress` (SSE) over `hub`;
/// mount it on the operator's HTTP server with `router(ProgressHub::global())`.
pub fn router(hub: ProgressHub) -> axum::Router {
    progress::router(hub)
}
