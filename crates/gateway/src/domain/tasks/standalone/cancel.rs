//! Cancelling a task: a queued one at once; a processing one after its follower (or, without
//! one here, this call) asked the worker to stop the job.

use std::sync::Arc;
use std::time::Duration;

use purrify_api::TaskStatus;
use purrify_inference::client::cancel_job;
use purrify_store::{Guard, StoreError};
use tracing::{info, warn};

use super::{CancelOutcome, Inner, StopReason, TaskView};

impl Inner {
    pub(super) async fn cancel(self: &Arc<Self>, task_id: &str) -> Result<CancelOutcome, StoreError> {
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
                    if self.record_cancel(&task, Guard::Queued, 0.0).await {
                        info!(task_id, "queued task cancelled");
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
                    if self.record_cancel(&task, Guard::Job(job_id), task.progress as f32).await {
                        info!(task_id, job_id, "processing task cancelled");
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
}
