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

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use purrify_inference::client::{ClientError, Fleet, JobOutcome, Lease, WorkerClient};
use purrify_inference::protocol::{ErrorReason, JobError, JobEvent, JobRequest, JobResult};
use purrify_inference::storage::Storage;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::db::{Db, DbError, Guard};
use super::hub::{ProgressHub, TaskView};
use super::metrics::{DispatchMetrics, DispatchStats, bump};
use super::model::{NewTask, Task, TaskErrorCode, TaskFailure, TaskStatus, job_id_for, now_ms};

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

/// Longest task id: the worker accepts job ids of up to 128 characters and the attempt
/// suffix needs a few.
pub const MAX_TASK_ID_LEN: usize = 100;

/// Whether `id` can name a task (and, suffixed, a worker job): `[A-Za-z0-9._-]`, 1 to
/// [`MAX_TASK_ID_LEN`] characters.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_TASK_ID_LEN && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Submit,
    Wait,
}

/// How following a job ended.
#[derive(Debug)]
enum End {
    Stopped(Option<StopReason>),
    TimedOut,
    Worker(Result<JobOutcome, (Phase, ClientError)>),
}

/// What to do about an ended attempt. Pure, so the policy is unit-tested without workers.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Complete(JobResult),
    /// Fail now. `worker_message` is shown only for codes whose messages are for clients.
    Fail {
        code: TaskErrorCode,
        detail: String,
    },
    /// Counted attempt failed; another may succeed. `worker_fault` feeds the breaker.
    Retry {
        code: TaskErrorCode,
        detail: String,
        worker_fault: bool,
    },
    /// 429: the worker did nothing; queue again without counting an attempt.
    Busy(Duration),
    Cancel,
    Timeout,
    /// Shutdown: leave the row `processing` for the next start to re-attach.
    Leave,
}

fn decide(end: End) -> Action {
    match end {
        End::Stopped(Some(StopReason::Cancel)) => Action::Cancel,
        End::Stopped(Some(StopReason::Timeout)) | End::TimedOut => Action::Timeout,
        End::Stopped(None) => Action::Leave,
        End::Worker(Ok(JobOutcome::Succeeded(result))) => Action::Complete(result),
        End::Worker(Ok(JobOutcome::Failed(JobError { reason, message }))) => {
            let code = TaskErrorCode::from_reason(reason);
            if reason.retryable() {
                Action::Retry {
                    code,
                    detail: message,
                    // Storage is shared by every worker: not this worker's fault.
                    worker_fault: reason != ErrorReason::Storage,
                }
            } else {
                Action::Fail { code, detail: message }
            }
        }
        // Not asked by us (our stops end as `Stopped`): e.g. the worker drained for shutdown.
        End::Worker(Ok(JobOutcome::Cancelled)) => {
            Action::Retry { code: TaskErrorCode::WorkerUnavailable, detail: "the worker cancelled the job".into(), worker_fault: true }
        }
        End::Worker(Err((_, ClientError::Busy { retry_after }))) => Action::Busy(retry_after),
        // 409: the worker holds a different job under this id; a new attempt gets a new id.
        End::Worker(Err((Phase::Submit, ClientError::Rejected { status: 409, message }))) => {
            Action::Retry { code: TaskErrorCode::InternalError, detail: message, worker_fault: false }
        }
        // The request itself was refused: no other worker would take it either.
        End::Worker(Err((Phase::Submit, ClientError::Rejected { message, .. }))) => {
            Action::Fail { code: TaskErrorCode::InvalidParams, detail: message }
        }
        End::Worker(Err((_, e))) => Action::Retry { code: TaskErrorCode::WorkerUnavailable, detail: e.to_string(), worker_fault: true },
    }
}

/// The client-safe message of a failure.
fn failure_message(code: TaskErrorCode, detail: &str, attempts: Option<u32>) -> String {
    if code.shows_worker_message() && !detail.is_empty() {
        return detail.to_owned();
    }
    match (code, attempts) {
        (TaskErrorCode::WorkerUnavailable, Some(n)) => {
            format!("no GPU server could complete the task in {n} attempts")
        }
        (_, Some(n)) if n > 1 => format!("{} ({n} attempts)", code.public_message()),
        _ => code.public_message().to_owned(),
    }
}

fn timeout_message(task: &Task, queued: bool) -> String {
    let secs = (task.deadline_at - task.created_at).max(0) / 1000;
    if queued {
        format!("no GPU server was free to start the task within its {secs} s deadline")
    } else {
        format!("processing did not finish within the {secs} s deadline")
    }
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
    pub async fn enqueue(&self, task: NewTask) -> Result<Task, DbError> {
        if !valid_task_id(&task.id) {
            return Err(DbError::Invalid(format!("task id must be 1-{MAX_TASK_ID_LEN} characters of [A-Za-z0-9._-]")));
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
    pub async fn cancel(&self, task_id: &str) -> Result<CancelOutcome, DbError> {
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
    pub async fn housekeep(&self) -> Result<u64, DbError> {
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
        Fut: Future<Output = Result<T, DbError>>,
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

    // ---- the loop ----

    async fn run<F>(self: Arc<Self>, shutdown: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut followers: JoinSet<()> = JoinSet::new();
        tokio::pin!(shutdown);
        info!(max_attempts = self.config.max_attempts, deadline_s = self.config.deadline.as_secs(), "dispatcher starting");
        tokio::select! {
            biased;
            () = &mut shutdown => {
                self.shutdown.cancel();
                return;
            }
            () = self.start_up(&mut followers) => {}
        }
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(self.config.tick_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let hk_every = self.config.housekeeping_interval.max(Duration::from_secs(1));
        let mut housekeeping = tokio::time::interval_at(Instant::now() + hk_every, hk_every);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut hk: Option<JoinHandle<()>> = None;
        loop {
            self.dispatch_round(&mut followers).await;
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = followers.join_next() => {
                    if let Err(e) = joined
                        && e.is_panic()
                    {
                        // Its guard unregistered it; the next tick re-attaches to its job.
                        error!(error = %e, "job follower panicked");
                    }
                }
                () = self.wake.notified() => {}
                _ = poll.tick() => {}
                _ = tick.tick() => self.on_tick(&mut followers).await,
                _ = housekeeping.tick() => {
                    // Beside the loop: deleting many objects from S3 must not pause dispatch.
                    if hk.as_ref().is_none_or(JoinHandle::is_finished) {
                        let this = self.clone();
                        hk = Some(tokio::spawn(
                            async move {
                                if let Err(e) = this.housekeep().await {
                                    warn!(error = %e, "housekeeping failed");
                                }
                            }
                            .in_current_span(),
                        ));
                    }
                }
            }
        }
        info!(following = followers.len(), "dispatcher stopping; running jobs stay on their workers");
        self.shutdown.cancel();
        if let Some(hk) = hk {
            hk.abort();
        }
        while followers.join_next().await.is_some() {}
    }

    /// Loads active tasks into the hub and re-attaches to every `processing` one.
    async fn start_up(self: &Arc<Self>, followers: &mut JoinSet<()>) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.try_start_up(followers).await {
                Ok(()) => return,
                Err(e) => {
                    bump(&self.metrics.db_errors);
                    error!(error = %e, "dispatcher start-up failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn try_start_up(self: &Arc<Self>, followers: &mut JoinSet<()>) -> Result<(), DbError> {
        let queued = self.db.queued_tasks(100_000).await?;
        for task in &queued {
            self.hub.fill(TaskView::from_task(task));
        }
        let processing = self.db.processing_tasks().await?;
        info!(queued = queued.len(), processing = processing.len(), "resuming tasks");
        for task in processing {
            self.hub.fill(TaskView::from_task(&task));
            self.adopt(task, followers).await;
        }
        Ok(())
    }

    /// Starts as many queued tasks as workers and `max_concurrent` allow.
    async fn dispatch_round(self: &Arc<Self>, followers: &mut JoinSet<()>) {
        loop {
            if self.running_count() >= self.config.max_concurrent {
                return;
            }
            let tasks = match self.db.queued_tasks(self.config.batch_size).await {
                Ok(t) => t,
                Err(e) => {
                    bump(&self.metrics.db_errors);
                    warn!(error = %e, "reading the queue failed");
                    return;
                }
            };
            let full_batch = tasks.len() as u64 >= u64::from(self.config.batch_size);
            let mut started = 0;
            let mut out_of_workers = false;
            for task in tasks {
                if self.running_count() >= self.config.max_concurrent {
                    return;
                }
                if task.deadline_at <= now_ms() {
                    self.expire_queued(&task).await;
                    continue;
                }
                let tried = self.lock_tried().get(&task.id).cloned().unwrap_or_default();
                let Some(lease) = self.pick(&tried) else {
                    if tried.is_empty() {
                        out_of_workers = true;
                        break;
                    }
                    // Waits for a worker it has not failed on; others may still fit.
                    continue;
                };
                if self.start(task, lease, followers).await {
                    started += 1;
                }
            }
            if out_of_workers || started == 0 || !full_batch {
                return;
            }
        }
    }

    /// A worker for a task that already failed on `tried`: an untried one if any is
    /// healthy (waiting for it if it is full), else any (one worker must be retried on).
    fn pick(&self, tried: &[String]) -> Option<Lease> {
        if let Some(lease) = self.fleet.pick_excluding(tried) {
            return Some(lease);
        }
        if tried.is_empty() {
            return None;
        }
        let snapshot = self.fleet.snapshot();
        let untried_healthy = snapshot.workers.iter().any(|w| w.healthy && !tried.contains(&w.endpoint));
        if untried_healthy { None } else { self.fleet.pick() }
    }

    /// Claims `task` for `lease`'s worker and spawns its follower.
    async fn start(self: &Arc<Self>, task: Task, lease: Lease, followers: &mut JoinSet<()>) -> bool {
        let Some(guard) = self.register(&task.id) else {
            return false;
        };
        let attempt = task.attempts + 1;
        let job_id = job_id_for(&task.id, attempt);
        let worker = lease.endpoint().to_owned();
        match self.db.claim_task(&task.id, task.attempts, &worker, &job_id).await {
            Ok(true) => {}
            Ok(false) => {
                debug!(task_id = %task.id, "task moved before it could be claimed");
                return false;
            }
            Err(e) => {
                bump(&self.metrics.db_errors);
                warn!(task_id = %task.id, error = %e, "claiming a task failed");
                return false;
            }
        }
        bump(&self.metrics.dispatched);
        let mut task = task;
        task.status = TaskStatus::Processing;
        task.attempts = attempt;
        task.worker = Some(worker.clone());
        task.job_id = Some(job_id.clone());
        self.publish(&task, TaskStatus::Processing, 0.0, None, None);
        let client = lease.client().with_request_id(request_id_of(&task));
        let span = task_span(&task, &job_id, attempt, &worker);
        let run = Attempt { task, job_id, attempt, worker, client, lease: Some(lease), guard, reattached: false };
        followers.spawn(self.clone().follow(run).instrument(span));
        true
    }

    /// Follows a `processing` task that has no follower here (restart, crashed follower,
    /// failed write): resubmits its job id to the recorded worker, which attaches to the
    /// job or returns its result.
    async fn adopt(self: &Arc<Self>, task: Task, followers: &mut JoinSet<()>) {
        let (Some(worker), Some(job_id)) = (task.worker.clone(), task.job_id.clone()) else {
            error!(task_id = %task.id, "processing task without worker or job id");
            return;
        };
        let Some(guard) = self.register(&task.id) else {
            return;
        };
        if !self.still_processing(&task, &job_id).await {
            return;
        }
        let span = task_span(&task, &job_id, task.attempts, &worker);
        if task.deadline_at <= now_ms() {
            self.expire_orphan(&task, &worker, &job_id).instrument(span).await;
            drop(guard);
            return;
        }
        let Some(client) = self.fleet.client(&worker) else {
            async {
                warn!("the task's worker is not in the fleet; queueing the task again");
                if let Some(client) = self.client_for(&worker, &task) {
                    spawn_cancel(client, job_id.clone(), self.config.cancel_timeout);
                }
                self.retry_or_fail(
                    &task,
                    &job_id,
                    task.attempts,
                    &worker,
                    TaskErrorCode::WorkerUnavailable,
                    "worker unknown when re-attaching",
                )
                .await;
            }
            .instrument(span)
            .await;
            drop(guard);
            return;
        };
        span.in_scope(|| info!("re-attaching to the job on its worker"));
        bump(&self.metrics.reattached);
        let client = client.with_request_id(request_id_of(&task));
        let run = Attempt { attempt: task.attempts, task, job_id, worker, client, lease: None, guard, reattached: true };
        followers.spawn(self.clone().follow(run).instrument(span));
    }

    async fn on_tick(self: &Arc<Self>, followers: &mut JoinSet<()>) {
        self.hub.evict_expired();
        match self.db.count_active().await {
            Ok(c) => {
                self.metrics.queued.store(c.queued, Ordering::Relaxed);
                self.metrics.processing.store(c.processing, Ordering::Relaxed);
            }
            Err(e) => {
                bump(&self.metrics.db_errors);
                warn!(error = %e, "counting tasks failed");
                return;
            }
        }
        self.expire_past_deadline().await;
        self.adopt_orphans(followers).await;
    }

    async fn adopt_orphans(self: &Arc<Self>, followers: &mut JoinSet<()>) {
        let processing = match self.db.processing_tasks().await {
            Ok(p) => p,
            Err(e) => {
                bump(&self.metrics.db_errors);
                warn!(error = %e, "listing processing tasks failed");
                return;
            }
        };
        for task in processing {
            if self.running_control(&task.id).is_none() {
                self.adopt(task, followers).await;
            }
        }
    }

    async fn expire_past_deadline(self: &Arc<Self>) {
        let due = match self.db.tasks_past_deadline(now_ms(), 256).await {
            Ok(d) => d,
            Err(e) => {
                bump(&self.metrics.db_errors);
                warn!(error = %e, "deadline scan failed");
                return;
            }
        };
        for task in due {
            if let Some(control) = self.running_control(&task.id) {
                control.request(StopReason::Timeout);
                continue;
            }
            match (task.status, task.worker.clone(), task.job_id.clone()) {
                (TaskStatus::Queued, _, _) => self.expire_queued(&task).await,
                (TaskStatus::Processing, Some(worker), Some(job_id)) => {
                    // Registering keeps the orphan scan away while this settles it.
                    if let Some(guard) = self.register(&task.id) {
                        if self.still_processing(&task, &job_id).await {
                            self.expire_orphan(&task, &worker, &job_id).await;
                        }
                        drop(guard);
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether `task`, read by a scan, is still `processing` with `job_id`. Called after
    /// registering: a follower may have settled the task and let go between the scan's read
    /// and the registration, and acting on the stale row would cancel or re-follow a job
    /// that is already over.
    async fn still_processing(&self, task: &Task, job_id: &str) -> bool {
        match self.db.get_task(&task.id).await {
            Ok(Some(now)) => now.status == TaskStatus::Processing && now.job_id.as_deref() == Some(job_id),
            Ok(None) => false,
            Err(e) => {
                bump(&self.metrics.db_errors);
                warn!(task_id = %task.id, error = %e, "re-reading a task failed");
                false
            }
        }
    }

    async fn expire_queued(&self, task: &Task) {
        let message = timeout_message(task, true);
        let code = TaskErrorCode::ProcessingTimeout;
        let failed = self.db_write("fail", || self.db.fail_task(&task.id, Guard::Queued, code, &message)).await;
        if failed == Some(true) {
            warn!(task_id = %task.id, "task timed out in the queue");
            self.metrics.failed(code);
            self.forget_tried(&task.id);
            self.publish_failure(task, code, message);
        }
    }

    async fn expire_orphan(&self, task: &Task, worker: &str, job_id: &str) {
        if let Some(client) = self.client_for(worker, task) {
            cancel_job(&client, job_id, self.config.cancel_timeout).await;
        }
        let message = timeout_message(task, false);
        let code = TaskErrorCode::ProcessingTimeout;
        let failed = self.db_write("fail", || self.db.fail_task(&task.id, Guard::Job(job_id), code, &message)).await;
        if failed == Some(true) {
            warn!(task_id = %task.id, job_id, "task timed out; worker job cancelled");
            self.metrics.failed(code);
            self.forget_tried(&task.id);
            self.publish_failure(task, code, message);
        }
    }

    /// Live progress from the hub, else the last one written.
    fn current_progress(&self, task: &Task) -> f32 {
        self.hub.get(&task.id).map_or(task.progress as f32, |v| v.progress)
    }

    fn publish_failure(&self, task: &Task, code: TaskErrorCode, message: String) {
        self.publish(
            task,
            TaskStatus::Failed,
            self.current_progress(task),
            Some(TaskFailure { code: code.as_str().to_owned(), message }),
            None,
        );
    }

    // ---- one job ----

    async fn follow(self: Arc<Self>, run: Attempt) {
        let stop = run.guard.control.stop.clone();
        let deadline = deadline_instant(run.task.deadline_at);
        let end = {
            let work = self.submit_and_wait(&run);
            tokio::select! {
                biased;
                () = stop.cancelled() => End::Stopped(run.guard.control.reason()),
                () = tokio::time::sleep_until(deadline) => End::TimedOut,
                r = work => End::Worker(r),
            }
        };
        self.settle(run, end).await;
    }

    async fn submit_and_wait(&self, run: &Attempt) -> Result<JobOutcome, (Phase, ClientError)> {
        let req = JobRequest {
            id: run.job_id.clone(),
            input_uri: run.task.input_uri.clone(),
            output_uri: run.task.output_uri.clone(),
            params: run.task.params,
        };
        let accepted = run.client.submit(&req).await.map_err(|e| (Phase::Submit, e))?;
        debug!(existing = accepted.existing, state = accepted.state.as_str(), reattached = run.reattached, "job accepted");
        let (progress_tx, progress_rx) = watch::channel(run.task.progress as f32);
        spawn_progress_writer(
            self.db.clone(),
            run.task.id.clone(),
            run.job_id.clone(),
            progress_rx,
            self.config.progress_step,
            self.config.progress_interval,
        );
        let hub = &self.hub;
        let task = &run.task;
        let outcome = run
            .client
            .wait(&req.id, |event| {
                if let JobEvent::Progress { progress, stage } = event {
                    hub.publish(ProgressHub::progress_view(task, TaskStatus::Processing, *progress, Some(stage.clone())));
                    progress_tx.send_replace(*progress);
                }
            })
            .await;
        outcome.map_err(|e| (Phase::Wait, e))
    }

    async fn settle(self: &Arc<Self>, mut run: Attempt, end: End) {
        let id = run.task.id.clone();
        let job_id = run.job_id.clone();
        match decide(end) {
            Action::Complete(result) => {
                if let Some(lease) = run.lease.as_mut() {
                    lease.success();
                }
                let done = self.db_write("complete", || self.db.complete_task(&id, &job_id, &result)).await;
                if done == Some(true) {
                    info!(
                        elapsed_ms = result.elapsed_ms,
                        width = result.width,
                        height = result.height,
                        faces = result.faces,
                        "task completed"
                    );
                    bump(&self.metrics.completed);
                    self.forget_tried(&id);
                    self.publish(&run.task, TaskStatus::Completed, 1.0, None, Some(result));
                } else if done == Some(false) {
                    debug!("result arrived after the task left this attempt");
                }
            }
            Action::Fail { code, detail } => {
                if let Some(lease) = run.lease.as_mut() {
                    lease.success();
                }
                self.fail(&run, code, &detail, None).await;
            }
            Action::Retry { code, detail, worker_fault } => {
                if let Some(lease) = run.lease.as_mut() {
                    if worker_fault {
                        lease.failure(&detail);
                    } else {
                        lease.success();
                    }
                }
                if worker_fault {
                    // The worker may be alive behind a broken connection: stop the job there
                    // so the retry does not run twice at once.
                    spawn_cancel(run.client.clone(), job_id.clone(), self.config.cancel_timeout);
                }
                drop(run.lease.take());
                self.retry_or_fail(&run.task, &job_id, run.attempt, &run.worker, code, &detail).await;
            }
            Action::Busy(retry_after) => {
                if let Some(lease) = run.lease.as_mut() {
                    lease.busy(retry_after);
                }
                drop(run.lease.take());
                let requeued = self.db_write("requeue", || self.db.requeue_task(&id, &job_id, false)).await;
                if requeued == Some(true) {
                    debug!(retry_after_ms = retry_after.as_millis() as u64, "worker busy; task queued again without counting an attempt");
                    bump(&self.metrics.busy_requeues);
                    self.publish(&run.task, TaskStatus::Queued, 0.0, None, None);
                    self.wake.notify_one();
                }
            }
            Action::Cancel => {
                cancel_job(&run.client, &job_id, self.config.cancel_timeout).await;
                let cancelled = self.db_write("cancel", || self.db.cancel_task(&id, Guard::Job(&job_id))).await;
                if cancelled == Some(true) {
                    info!("task cancelled; worker job stopped");
                    bump(&self.metrics.cancelled);
                    self.forget_tried(&id);
                    let progress = self.current_progress(&run.task);
                    self.publish(&run.task, TaskStatus::Cancelled, progress, None, None);
                }
            }
            Action::Timeout => {
                cancel_job(&run.client, &job_id, self.config.cancel_timeout).await;
                let message = timeout_message(&run.task, false);
                let code = TaskErrorCode::ProcessingTimeout;
                let failed = self.db_write("fail", || self.db.fail_task(&id, Guard::Job(&job_id), code, &message)).await;
                if failed == Some(true) {
                    warn!("task timed out; worker job cancelled");
                    self.metrics.failed(code);
                    self.forget_tried(&id);
                    self.publish_failure(&run.task, code, message);
                }
            }
            Action::Leave => {
                debug!("stopped following; the job stays on its worker for re-attachment");
            }
        }
        // The guard (dropped with `run`) frees the slot: look for more work.
        drop(run);
        self.wake.notify_one();
    }

    async fn fail(&self, run: &Attempt, code: TaskErrorCode, detail: &str, attempts: Option<u32>) {
        let message = failure_message(code, detail, attempts);
        let failed = self.db_write("fail", || self.db.fail_task(&run.task.id, Guard::Job(&run.job_id), code, &message)).await;
        if failed == Some(true) {
            warn!(code = code.as_str(), detail, "task failed");
            self.metrics.failed(code);
            self.forget_tried(&run.task.id);
            self.publish_failure(&run.task, code, message);
        }
    }

    /// After a counted attempt failed: queue again (on another worker when there is one),
    /// or fail once `max_attempts` are used up.
    async fn retry_or_fail(&self, task: &Task, job_id: &str, attempt: u32, worker: &str, code: TaskErrorCode, detail: &str) {
        {
            let mut tried = self.lock_tried();
            let list = tried.entry(task.id.clone()).or_default();
            if !list.iter().any(|w| w == worker) {
                list.push(worker.to_owned());
            }
        }
        if attempt >= self.config.max_attempts {
            let message = failure_message(code, detail, Some(attempt));
            let failed = self.db_write("fail", || self.db.fail_task(&task.id, Guard::Job(job_id), code, &message)).await;
            if failed == Some(true) {
                warn!(code = code.as_str(), detail, attempts = attempt, "task failed; attempts exhausted");
                self.metrics.failed(code);
                self.forget_tried(&task.id);
                self.publish_failure(task, code, message);
            }
            return;
        }
        let requeued = self.db_write("requeue", || self.db.requeue_task(&task.id, job_id, true)).await;
        if requeued == Some(true) {
            warn!(code = code.as_str(), detail, attempt, max_attempts = self.config.max_attempts, "attempt failed; task queued again");
            bump(&self.metrics.retries);
            self.publish(task, TaskStatus::Queued, 0.0, None, None);
            self.wake.notify_one();
        }
    }

    // ---- cancel ----

    async fn cancel(self: &Arc<Self>, task_id: &str) -> Result<CancelOutcome, DbError> {
        // Each pass either settles the task or observes it move (claimed, re-queued,
        // finished) and looks again.
        for _ in 0..5 {
            if let Some(control) = self.running_control(task_id) {
                control.request(StopReason::Cancel);
                let mut done = control.done.subscribe();
                let bound = self.config.cancel_timeout * 2 + Duration::from_secs(1);
                if tokio::time::timeout(bound, done.wait_for(|d| *d)).await.is_err() {
                    warn!(task_id, "cancelled follower did not finish in time");
                }
            }
            let Some(task) = self.db.get_task(task_id).await? else {
                return Ok(CancelOutcome::NotFound);
            };
            match task.status {
                TaskStatus::Cancelled => {
                    self.publish(&task, TaskStatus::Cancelled, task.progress as f32, None, None);
                    return Ok(CancelOutcome::Cancelled);
                }
                s if s.is_finished() => {
                    self.hub.fill(TaskView::from_task(&task));
                    return Ok(CancelOutcome::AlreadyFinished(s));
                }
                TaskStatus::Queued => {
                    if self.db.cancel_task(task_id, Guard::Queued).await? {
                        info!(task_id, "queued task cancelled");
                        bump(&self.metrics.cancelled);
                        self.forget_tried(task_id);
                        self.publish(&task, TaskStatus::Cancelled, 0.0, None, None);
                        return Ok(CancelOutcome::Cancelled);
                    }
                }
                _ => {
                    // Processing without a follower here: stop it at its worker ourselves,
                    // registered so that the orphan scan does not re-attach meanwhile.
                    let Some(_guard) = self.register(task_id) else {
                        continue;
                    };
                    let (Some(worker), Some(job_id)) = (task.worker.as_deref(), task.job_id.as_deref()) else {
                        continue;
                    };
                    if let Some(client) = self.client_for(worker, &task) {
                        cancel_job(&client, job_id, self.config.cancel_timeout).await;
                    }
                    if self.db.cancel_task(task_id, Guard::Job(job_id)).await? {
                        info!(task_id, job_id, "processing task cancelled");
                        bump(&self.metrics.cancelled);
                        self.forget_tried(task_id);
                        self.publish(&task, TaskStatus::Cancelled, task.progress as f32, None, None);
                        return Ok(CancelOutcome::Cancelled);
                    }
                }
            }
        }
        // Still moving after several passes: report what it is now.
        match self.db.get_task(task_id).await? {
            None => Ok(CancelOutcome::NotFound),
            Some(t) if t.status == TaskStatus::Cancelled => Ok(CancelOutcome::Cancelled),
            Some(t) => Ok(CancelOutcome::AlreadyFinished(t.status)),
        }
    }

    // ---- housekeeping ----

    async fn housekeep(&self) -> Result<u64, DbError> {
        let Some(retention) = self.config.retention else {
            return Ok(0);
        };
        let Some(storage) = self.storage.as_ref() else {
            let n = self.db.delete_finished_older_than(retention).await?;
            if n > 0 {
                info!(deleted = n, "housekeeping removed finished tasks");
            }
            return Ok(n);
        };
        let cutoff = now_ms().saturating_sub(super::model::duration_ms(retention));
        let mut deleted = 0;
        loop {
            let batch = self.db.finished_before(cutoff, 500).await?;
            let mut stuck = false;
            for objects in &batch {
                let mut objects_gone = true;
                for uri in [&objects.input_uri, &objects.output_uri] {
                    match storage.delete(uri).await {
                        Ok(()) => {}
                        // A foreign or malformed URI is nothing we could delete anyway.
                        Err(e) if e.is_client_error() => debug!(uri, error = %e, "object skipped"),
                        Err(e) => {
                            warn!(uri, error = %e, "deleting a task object failed; row kept");
                            objects_gone = false;
                        }
                    }
                }
                if !objects_gone {
                    stuck = true;
                    continue;
                }
                if self.db.delete_finished_task(&objects.id).await? {
                    self.hub.remove(&objects.id);
                    deleted += 1;
                }
            }
            if stuck || batch.len() < 500 {
                break;
            }
        }
        if deleted > 0 {
            info!(deleted, "housekeeping removed finished tasks and their objects");
        }
        Ok(deleted)
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

/// `DELETE`s a worker job, bounded; failures are logged (the job ends on its own, and its
/// result is ignored since the row no longer expects it).
async fn cancel_job(client: &WorkerClient, job_id: &str, bound: Duration) {
    match tokio::time::timeout(bound, client.cancel(job_id)).await {
        Ok(Ok(())) | Ok(Err(ClientError::NotFound)) => {}
        Ok(Err(e)) => debug!(job_id, error = %e, "cancelling the worker job failed"),
        Err(_) => debug!(job_id, "cancelling the worker job timed out"),
    }
}

fn spawn_cancel(client: WorkerClient, job_id: String, bound: Duration) {
    tokio::spawn(async move { cancel_job(&client, &job_id, bound).await }.in_current_span());
}

/// Writes coarse progress: when it moved by `step`, or changed and `interval` passed. Ends
/// when the sender is dropped. Writes are conditional on the job id, so one that lands
/// after the attempt ended changes nothing.
fn spawn_progress_writer(db: Db, task_id: String, job_id: String, mut rx: watch::Receiver<f32>, step: f32, interval: Duration) {
    let mut written = *rx.borrow();
    tokio::spawn(
        async move {
            let mut written_at = Instant::now();
            while rx.changed().await.is_ok() {
                let p = *rx.borrow_and_update();
                let moved = (p - written).abs();
                if moved >= step || (moved > 0.0 && written_at.elapsed() >= interval) {
                    if let Err(e) = db.update_progress(&task_id, &job_id, f64::from(p)).await {
                        debug!(error = %e, "progress write failed");
                    }
                    written = p;
                    written_at = Instant::now();
                }
            }
        }
        .in_current_span(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use purrify_inference::protocol::FaceRestoration;

    fn result() -> JobResult {
        JobResult {
            output_uri: "file:///o.jpg".into(),
            content_type: "image/jpeg".into(),
            width: 2,
            height: 2,
            bytes: 10,
            faces: 0,
            face_restoration: FaceRestoration::Disabled,
            model: "m".into(),
            elapsed_ms: 1,
        }
    }

    fn job_error(reason: ErrorReason) -> End {
        End::Worker(Ok(JobOutcome::Failed(JobError { reason, message: "worker says".into() })))
    }

    #[test]
    fn input_errors_fail_at_once_and_others_retry() {
        for reason in [ErrorReason::BadInput, ErrorReason::TooLarge, ErrorReason::InvalidParams] {
            assert!(matches!(decide(job_error(reason)), Action::Fail { .. }), "{reason:?}");
        }
        assert_eq!(
            decide(job_error(ErrorReason::Storage)),
            Action::Retry { code: TaskErrorCode::StorageError, detail: "worker says".into(), worker_fault: false }
        );
        assert!(matches!(
            decide(job_error(ErrorReason::Inference)),
            Action::Retry { code: TaskErrorCode::ProcessingFailed, worker_fault: true, .. }
        ));
    }

    #[test]
    fn lost_workers_retry_busy_does_not_count_and_stops_follow_their_reason() {
        for e in [ClientError::NotFound, ClientError::Unavailable("x".into()), ClientError::Protocol("x".into())] {
            for phase in [Phase::Submit, Phase::Wait] {
                assert!(matches!(
                    decide(End::Worker(Err((phase, e.clone())))),
                    Action::Retry { code: TaskErrorCode::WorkerUnavailable, worker_fault: true, .. }
                ));
            }
        }
        let busy = ClientError::Busy { retry_after: Duration::from_secs(2) };
        assert_eq!(decide(End::Worker(Err((Phase::Submit, busy)))), Action::Busy(Duration::from_secs(2)));
        let refused = ClientError::Rejected { status: 422, message: "bad id".into() };
        assert_eq!(
            decide(End::Worker(Err((Phase::Submit, refused)))),
            Action::Fail { code: TaskErrorCode::InvalidParams, detail: "bad id".into() }
        );
        assert_eq!(decide(End::Stopped(Some(StopReason::Cancel))), Action::Cancel);
        assert_eq!(decide(End::Stopped(Some(StopReason::Timeout))), Action::Timeout);
        assert_eq!(decide(End::TimedOut), Action::Timeout);
        assert_eq!(decide(End::Stopped(None)), Action::Leave);
        assert_eq!(decide(End::Worker(Ok(JobOutcome::Succeeded(result())))), Action::Complete(result()));
    }

    #[test]
    fn client_messages_hide_internal_details() {
        assert_eq!(failure_message(TaskErrorCode::BadInput, "cannot decode: not a JPEG", None), "cannot decode: not a JPEG");
        let m = failure_message(TaskErrorCode::StorageError, "s3://bucket/secret: 500", Some(3));
        assert!(!m.contains("secret"), "{m}");
        assert!(m.contains("3 attempts"), "{m}");
        let m = failure_message(TaskErrorCode::WorkerUnavailable, "10.0.0.3 refused", Some(3));
        assert!(!m.contains("10.0.0.3"), "{m}");
    }

    #[test]
    fn task_ids_fit_worker_job_ids() {
        assert!(valid_task_id("0f8e6c1a-9a53-4b6e-9a4e-1c1d2e3f4a5b"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id("a/b"));
        assert!(!valid_task_id(&"x".repeat(MAX_TASK_ID_LEN + 1)));
        assert!(job_id_for(&"x".repeat(MAX_TASK_ID_LEN), u32::MAX).len() <= 128);
    }
}
