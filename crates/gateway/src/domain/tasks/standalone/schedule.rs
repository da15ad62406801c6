//! The dispatcher's loop: start-up (re-attach to what was running), dispatch rounds (queued
//! rows to free workers, in the database's fair order), and the tick (deadline scans, orphan
//! adoption, gauges).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use purrify_api::{FailReason, TaskStatus};
use purrify_inference::client::policy::job_id_for;
use purrify_inference::client::{Lease, cancel_job, spawn_cancel};
use purrify_store::{Guard, StoreError, Task, now_ms};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, debug, error, info, warn};

use super::{Attempt, Inner, StopReason, TaskView, bump, request_id_of, task_span, timeout_message};

impl Inner {
    pub(super) async fn run<F>(self: Arc<Self>, shutdown: F)
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
    pub(super) async fn start_up(self: &Arc<Self>, followers: &mut JoinSet<()>) {
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

    pub(super) async fn try_start_up(self: &Arc<Self>, followers: &mut JoinSet<()>) -> Result<(), StoreError> {
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
    pub(super) async fn dispatch_round(self: &Arc<Self>, followers: &mut JoinSet<()>) {
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
    pub(super) fn pick(&self, tried: &[String]) -> Option<Lease> {
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
    pub(super) async fn start(self: &Arc<Self>, task: Task, lease: Lease, followers: &mut JoinSet<()>) -> bool {
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
    pub(super) async fn adopt(self: &Arc<Self>, task: Task, followers: &mut JoinSet<()>) {
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
                    FailReason::WorkerUnavailable,
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

    pub(super) async fn on_tick(self: &Arc<Self>, followers: &mut JoinSet<()>) {
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

    pub(super) async fn adopt_orphans(self: &Arc<Self>, followers: &mut JoinSet<()>) {
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

    pub(super) async fn expire_past_deadline(self: &Arc<Self>) {
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
    pub(super) async fn still_processing(&self, task: &Task, job_id: &str) -> bool {
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

    pub(super) async fn expire_queued(&self, task: &Task) {
        let message = timeout_message(task, true);
        if self.record_failure(task, Guard::Queued, FailReason::DeadlineExceeded, message).await {
            warn!(task_id = %task.id, "task timed out in the queue");
        }
    }

    pub(super) async fn expire_orphan(&self, task: &Task, worker: &str, job_id: &str) {
        if let Some(client) = self.client_for(worker, task) {
            cancel_job(&client, job_id, self.config.cancel_timeout).await;
        }
        let message = timeout_message(task, false);
        if self.record_failure(task, Guard::Job(job_id), FailReason::DeadlineExceeded, message).await {
            warn!(task_id = %task.id, job_id, "task timed out; worker job cancelled");
        }
    }
}
