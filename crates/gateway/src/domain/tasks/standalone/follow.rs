//! One attempt, from submitting its job to recording how it ended. What the worker's answer
//! means is the shared attempt policy's decision; this module carries it out on the task row,
//! the fleet (breaker, busy back-off) and the live view.

use std::sync::Arc;
use std::time::Duration;

use purrify_api::{FailReason, TaskStatus, client_message};
use purrify_inference::client::policy::{self, Decision, Phase};
use purrify_inference::client::{cancel_job, spawn_cancel};
use purrify_inference::protocol::{JobEvent, JobRequest};
use purrify_store::{Db, Guard, Task};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::{Attempt, Inner, ProgressHub, StopReason, bump, deadline_instant, timeout_message};

/// How following a job ended.
#[derive(Debug)]
enum End {
    /// Stopped on request (cancel, timeout); `None`: the dispatcher is shutting down.
    Stopped(Option<StopReason>),
    TimedOut,
    /// The worker answered; the policy decided what it means.
    Worker(Decision),
}

impl Inner {
    pub(super) async fn follow(self: Arc<Self>, run: Attempt) {
        let stop = run.guard.control.stop.clone();
        let deadline = deadline_instant(run.task.deadline_at);
        let end = {
            let work = self.submit_and_wait(&run);
            tokio::select! {
                biased;
                () = stop.cancelled() => End::Stopped(run.guard.control.reason()),
                () = tokio::time::sleep_until(deadline) => End::TimedOut,
                decision = work => End::Worker(decision),
            }
        };
        self.settle(run, end).await;
    }

    async fn submit_and_wait(&self, run: &Attempt) -> Decision {
        let req = JobRequest {
            id: run.job_id.clone(),
            input_uri: run.task.input_uri.clone(),
            output_uri: run.task.output_uri.clone(),
            params: run.task.params,
        };
        // Re-attaching resubmits a job the worker accepted before: its failures are those of
        // an accepted job, not of a new submission.
        let submit_phase = if run.reattached { Phase::Wait } else { Phase::Submit };
        let accepted = match run.client.submit(&req).await {
            Ok(a) => a,
            Err(e) => return policy::on_error(submit_phase, e),
        };
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
        policy::decide(Phase::Wait, outcome)
    }

    async fn settle(self: &Arc<Self>, mut run: Attempt, end: End) {
        let id = run.task.id.clone();
        let job_id = run.job_id.clone();
        match end {
            End::Worker(Decision::Succeed(result)) => {
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
            End::Worker(Decision::Fail { reason, detail }) => {
                if let Some(lease) = run.lease.as_mut() {
                    lease.success();
                }
                let message = client_message(reason, &detail, run.attempt);
                if self.record_failure(&run.task, Guard::Job(&job_id), reason, message).await {
                    warn!(code = reason.code(), detail, "task failed");
                }
            }
            End::Worker(Decision::Retry { reason, detail, worker_fault }) => {
                if let Some(lease) = run.lease.as_mut() {
                    if worker_fault { lease.failure(&detail) } else { lease.success() }
                }
                if worker_fault {
                    // The worker may be alive behind a broken connection: stop the job there
                    // so the retry does not run twice at once.
                    spawn_cancel(run.client.clone(), job_id.clone(), self.config.cancel_timeout);
                }
                drop(run.lease.take());
                self.retry_or_fail(&run.task, &job_id, run.attempt, &run.worker, reason, &detail).await;
            }
            End::Worker(Decision::Elsewhere { detail, worker_fault, retry_after }) => {
                if let Some(lease) = run.lease.as_mut() {
                    match retry_after {
                        Some(wait) => lease.busy(wait),
                        None if worker_fault => lease.failure(&detail),
                        None => lease.success(),
                    }
                }
                drop(run.lease.take());
                if worker_fault {
                    self.remember_tried(&id, &run.worker);
                }
                // The worker never took the job: no attempt is counted.
                let requeued = self.db_write("requeue", || self.db.requeue_task(&id, &job_id, false)).await;
                if requeued == Some(true) {
                    debug!(retry_after_ms = retry_after.map(|d| d.as_millis() as u64), detail, "worker did not take the job; queued again");
                    bump(&self.metrics.busy_requeues);
                    self.publish(&run.task, TaskStatus::Queued, 0.0, None, None);
                    self.wake.notify_one();
                }
            }
            End::Stopped(Some(StopReason::Cancel)) => {
                cancel_job(&run.client, &job_id, self.config.cancel_timeout).await;
                let progress = self.current_progress(&run.task);
                if self.record_cancel(&run.task, Guard::Job(&job_id), progress).await {
                    info!("task cancelled; worker job stopped");
                }
            }
            End::Stopped(Some(StopReason::Timeout)) | End::TimedOut => {
                cancel_job(&run.client, &job_id, self.config.cancel_timeout).await;
                let message = timeout_message(&run.task, false);
                if self.record_failure(&run.task, Guard::Job(&job_id), FailReason::DeadlineExceeded, message).await {
                    warn!("task timed out; worker job cancelled");
                }
            }
            End::Stopped(None) => debug!("stopped following; the job stays on its worker for re-attachment"),
        }
        // The guard (dropped with `run`) frees the slot: look for more work.
        drop(run);
        self.wake.notify_one();
    }

    fn remember_tried(&self, task_id: &str, worker: &str) {
        let mut tried = self.lock_tried();
        let list = tried.entry(task_id.to_owned()).or_default();
        if !list.iter().any(|w| w == worker) {
            list.push(worker.to_owned());
        }
    }

    /// After a counted attempt failed: queue again (on another worker when there is one),
    /// or fail once `max_attempts` are used up.
    pub(super) async fn retry_or_fail(&self, task: &Task, job_id: &str, attempt: u32, worker: &str, reason: FailReason, detail: &str) {
        self.remember_tried(&task.id, worker);
        if !policy::retry_allowed(attempt, self.config.max_attempts) {
            let message = client_message(reason, detail, attempt);
            if self.record_failure(task, Guard::Job(job_id), reason, message).await {
                warn!(code = reason.code(), detail, attempts = attempt, "task failed; attempts exhausted");
            }
            return;
        }
        let requeued = self.db_write("requeue", || self.db.requeue_task(&task.id, job_id, true)).await;
        if requeued == Some(true) {
            warn!(code = reason.code(), detail, attempt, max_attempts = self.config.max_attempts, "attempt failed; task queued again");
            bump(&self.metrics.retries);
            self.publish(task, TaskStatus::Queued, 0.0, None, None);
            self.wake.notify_one();
        }
    }
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
