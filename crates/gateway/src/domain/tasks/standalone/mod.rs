//! The standalone dispatcher: queued rows -> inference workers -> finished rows, with
//! nothing lost when a worker, the network or the gateway itself dies mid-task.
//!
//! One loop task owns every job follower (a `JoinSet`), so stopping or dropping the loop
//! stops them all. The database is the truth: a follower registers itself in memory before
//! it claims its row, every write is conditional on the attempt's job id, and a row that is
//! `processing` without a local follower is an orphan (restart, crashed follower, failed
//! write) that the loop re-attaches to: the same job id is resubmitted to the recorded
//! worker, which attaches to the running job or returns the finished result.
//!
//! One dispatcher per database: two gateways sharing a database would adopt each other's
//! jobs as orphans (harmlessly for the result, but each would follow them).
//!
//! What a worker's answer means is not decided here: the shared attempt policy
//! (`purrify_inference::client::policy`) decides it, as it does for the operator.
//!
//! Layout: this module holds the public handle and the shared state; `schedule` the loop
//! (dispatch rounds, re-attaching, deadline scans), `follow` one job from submit to its
//! recorded outcome, `cancel` cancellation, `housekeeping` the retention of finished tasks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use purrify_api::{FailReason, JobResult, TaskStatus};
use purrify_inference::client::{Fleet, Lease, WorkerClient};
use purrify_inference::storage::Storage;
use purrify_store::{Db, Guard, NewTask, StoreError, Task, now_ms};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::hub::{ProgressHub, TaskView};
use super::model::{MAX_TASK_ID_LEN, TaskFailure, valid_task_id};
use metrics::bump;
pub use metrics::{DispatchMetrics, DispatchStats};

mod cancel;
mod follow;
mod housekeeping;
mod metrics;
mod schedule;

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Attempts per task before it fails (a 429 is not an attempt).
    pub max_attempts: u32,
    /// Default time from acceptance to result (seed 000: "处理超时时间5分钟").
    pub deadline: Duration,
    /// Re-reads the queue this often even without a wake-up (workers turning healthy,
    /// busy back-offs ending).
    pub poll_interval: Duration,
    /// Deadline scan, orphan adoption, queue-depth gauges and hub eviction.
    pub tick_interval: Duration,
    /// Jobs followed at once.
    pub max_concurrent: usize,
    /// Queued rows read per query.
    pub batch_size: u32,
    /// Progress is written to the database when it moved by this much...
    pub progress_step: f32,
    /// ...or changed at all and this long passed since the last write.
    pub progress_interval: Duration,
    /// Bound on a `DELETE` of a worker job.
    pub cancel_timeout: Duration,
    /// Finished tasks (and, with storage, their input and output objects) are deleted this
    /// long after they finished. `None` keeps them.
    pub retention: Option<Duration>,
    pub housekeeping_interval: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            deadline: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            tick_interval: Duration::from_secs(1),
            max_concurrent: 256,
            batch_size: 64,
            progress_step: 0.1,
            progress_interval: Duration::from_secs(2),
            cancel_timeout: Duration::from_secs(5),
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            housekeeping_interval: Duration::from_secs(3600),
        }
    }
}

/// What [`Dispatcher::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The task is cancelled now (its worker job, if any, was asked to stop).
    Cancelled,
    /// The task had already finished in this state; nothing changed.
    AlreadyFinished(TaskStatus),
    NotFound,
}

/// Cheap to clone; clones share one dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancel,
    Timeout,
}

/// The handle of one followed job, shared by its follower and whoever wants it stopped.
struct RunControl {
    stop: CancellationToken,
    reason: Mutex<Option<StopReason>>,
    done: watch::Sender<bool>,
}

impl RunControl {
    fn request(&self, reason: StopReason) {
        self.reason.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(reason);
        self.stop.cancel();
    }

    /// `None` when the stop came from shutdown.
    fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Registration of a follower; unregisters (and signals `done`) when dropped, including
/// when the follower panics or is aborted.
struct RunGuard {
    inner: Arc<Inner>,
    task_id: String,
    control: Arc<RunControl>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        {
            let mut running = self.inner.lock_running();
            if running.get(&self.task_id).is_some_and(|c| Arc::ptr_eq(c, &self.control)) {
                running.remove(&self.task_id);
            }
            self.inner.metrics.running.store(running.len() as u64, Ordering::Relaxed);
        }
        self.control.done.send_replace(true);
    }
}

/// One attempt of one task on one worker.
struct Attempt {
    task: Task,
    job_id: String,
    attempt: u32,
    worker: String,
    client: WorkerClient,
    /// `None` when re-attached: the fleet learns about the job from the worker's reported
    /// in-flight count instead.
    lease: Option<Lease>,
    guard: RunGuard,
    reattached: bool,
}

/// The message of a task that ran out of time (`queued`: no worker had started it).
fn timeout_message(task: &Task, queued: bool) -> String {
    let secs = (task.deadline_at - task.created_at).max(0) / 1000;
    purrify_api::deadline_message(u64::try_from(secs).unwrap_or(0), !queued)
}

fn deadline_instant(deadline_at: i64) -> Instant {
    let left = u64::try_from(deadline_at.saturating_sub(now_ms())).unwrap_or(0);
    Instant::now() + Duration::from_millis(left)
}

struct Inner {
    db: Db,
    fleet: Fleet,
    storage: Option<Arc<Storage>>,
    hub: ProgressHub,
    config: DispatchConfig,
    metrics: Arc<DispatchMetrics>,
    wake: Notify,
    running: Mutex<HashMap<String, Arc<RunControl>>>,
    /// Workers each task already failed on, so its retry goes elsewhere. In memory only:
    /// after a restart a retry may land on the same worker, which is merely less ideal.
    tried: Mutex<HashMap<String, Vec<String>>>,
    shutdown: CancellationToken,
    started: AtomicBool,
}

impl Dispatcher {
    /// `storage` is used only by housekeeping, to delete the objects of purged tasks.
    /// Populate `fleet` (and probe it) before [`spawn`](Self::spawn): tasks recorded on a
    /// worker the fleet does not know are re-queued instead of re-attached.
    pub fn new(db: Db, fleet: Fleet, storage: Option<Arc<Storage>>, hub: ProgressHub, config: DispatchConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                fleet,
                storage,
                hub,
                config,
                metrics: Arc::new(DispatchMetrics::default()),
                wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
                tried: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                started: AtomicBool::new(false),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn hub(&self) -> &ProgressHub {
        &self.inner.hub
    }

    pub fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    pub fn config(&self) -> &DispatchConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> Arc<DispatchMetrics> {
        self.inner.metrics.clone()
    }

    pub fn stats(&self) -> DispatchStats {
        self.inner.metrics.snapshot()
    }

    /// Accepts a task: inserts it (durably: answer 2xx only after this returns), shows it
    /// in the hub and wakes the loop.
    pub async fn enqueue(&self, task: NewTask) -> Result<Task, StoreError> {
        if !valid_task_id(&task.id) {
            return Err(StoreError::Invalid(format!("task id must be 1-{MAX_TASK_ID_LEN} characters of [A-Za-z0-9._-]")));
        }
        let row = self.inner.db.insert_task(&task, self.inner.config.deadline).await?;
        self.inner.hub.publish(TaskView::from_task(&row));
        info!(task_id = %row.id, request_id = row.request_id.as_deref().unwrap_or("-"),
              priority = row.priority, "task queued");
        self.notify();
        Ok(row)
    }

    /// Something changed that may let queued tasks run (a worker added or back, a task
    /// inserted through the database directly): look now instead of at the next poll.
    pub fn notify(&self) {
        self.inner.wake.notify_one();
    }

    /// Cancels a task: a queued one at once; a processing one after asking its worker to
    /// stop the job (best effort: an unreachable worker does not keep the task alive).
    pub async fn cancel(&self, task_id: &str) -> Result<CancelOutcome, StoreError> {
        self.inner.cancel(task_id).await
    }

    /// Runs the loop until `shutdown` resolves: re-attaches to `processing` tasks, then
    /// dispatches. On shutdown followers stop following and their tasks stay `processing`
    /// for the next start to re-attach; jobs keep running on the workers. Aborting the
    /// handle stops everything at once, with the same effect.
    pub fn spawn<F>(&self, shutdown: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            warn!("dispatcher already started; ignoring the second start");
            return tokio::spawn(async {});
        }
        let inner = self.inner.clone();
        tokio::spawn(inner.run(shutdown).instrument(info_span!("dispatcher")))
    }

    /// Deletes finished tasks older than the retention, with their storage objects when a
    /// storage was given. Runs on its own every `housekeeping_interval`.
    pub async fn housekeep(&self) -> Result<u64, StoreError> {
        self.inner.housekeep().await
    }
}

impl Inner {
    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunControl>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_tried(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.tried.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn running_control(&self, task_id: &str) -> Option<Arc<RunControl>> {
        self.lock_running().get(task_id).cloned()
    }

    fn running_count(&self) -> usize {
        self.lock_running().len()
    }

    /// Claims the in-memory slot of `task_id`; `None` if a follower already has it.
    fn register(self: &Arc<Self>, task_id: &str) -> Option<RunGuard> {
        let mut running = self.lock_running();
        if running.contains_key(task_id) {
            return None;
        }
        let control = Arc::new(RunControl { stop: self.shutdown.child_token(), reason: Mutex::new(None), done: watch::Sender::new(false) });
        running.insert(task_id.to_owned(), control.clone());
        self.metrics.running.store(running.len() as u64, Ordering::Relaxed);
        Some(RunGuard { inner: self.clone(), task_id: task_id.to_owned(), control })
    }

    fn publish(&self, task: &Task, status: TaskStatus, progress: f32, error: Option<TaskFailure>, result: Option<JobResult>) {
        let mut view = ProgressHub::progress_view(task, status, progress, None);
        view.error = error;
        view.result = result;
        self.hub.publish(view);
    }

    fn forget_tried(&self, task_id: &str) {
        self.lock_tried().remove(task_id);
    }

    /// A client for `endpoint`, from the fleet or ad hoc (a worker removed from the fleet may
    /// still run our job and should still hear a cancel).
    fn client_for(&self, endpoint: &str, task: &Task) -> Option<WorkerClient> {
        let client =
            self.fleet.client(endpoint).or_else(|| WorkerClient::with_config(endpoint, self.fleet.config().client.clone()).ok())?;
        Some(client.with_request_id(request_id_of(task)))
    }

    /// Retries a database write a few times: a follower that cannot record an outcome
    /// leaves its row `processing`, which a later tick re-attaches to, so giving up is safe.
    async fn db_write<T, F, Fut>(&self, what: &'static str, mut f: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=3 {
            match f().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    bump(&self.metrics.db_errors);
                    warn!(error = %e, what, attempt, "database write failed");
                    if attempt < 3 {
                        tokio::time::sleep(backoff).await;
                        backoff *= 4;
                    }
                }
            }
        }
        error!(what, "database write abandoned; the task is repaired on a later tick");
        None
    }

    /// Live progress from the hub, else the last one written.
    fn current_progress(&self, task: &Task) -> f32 {
        self.hub.get(&task.id).map_or(task.progress as f32, |v| v.progress)
    }

    fn publish_failure(&self, task: &Task, reason: FailReason, message: String) {
        let failure = TaskFailure { code: reason.code().to_owned(), message };
        self.publish(task, TaskStatus::Failed, self.current_progress(task), Some(failure), None);
    }

    /// The one way a task ends failed here: the guarded write, then the metric, the retry
    /// memory and the live view. True when this call failed the task (false: it had moved,
    /// or the write was abandoned and a later tick repairs it).
    async fn record_failure(&self, task: &Task, guard: Guard<'_>, reason: FailReason, message: String) -> bool {
        let failed = self.db_write("fail", || self.db.fail_task(&task.id, guard, reason, &message)).await;
        if failed != Some(true) {
            return false;
        }
        self.metrics.failed(reason);
        self.forget_tried(&task.id);
        self.publish_failure(task, reason, message);
        true
    }

    /// The one way a task ends cancelled here, as [`record_failure`](Self::record_failure).
    async fn record_cancel(&self, task: &Task, guard: Guard<'_>, progress: f32) -> bool {
        let cancelled = self.db_write("cancel", || self.db.cancel_task(&task.id, guard)).await;
        if cancelled != Some(true) {
            return false;
        }
        bump(&self.metrics.cancelled);
        self.forget_tried(&task.id);
        self.publish(task, TaskStatus::Cancelled, progress, None, None);
        true
    }
}

fn request_id_of(task: &Task) -> String {
    task.request_id.clone().unwrap_or_else(|| task.id.clone())
}

fn task_span(task: &Task, job_id: &str, attempt: u32, worker: &str) -> tracing::Span {
    info_span!(
        "task",
        task_id = %task.id,
        request_id = %task.request_id.as_deref().unwrap_or("-"),
        job_id = %job_id,
        attempt,
        worker = %worker,
    )
}
