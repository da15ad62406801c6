//! The spawned workers of the controller loop: a dispatch (submit, claim, follow, settle),
//! and the chores of tasks nobody follows (re-attach, cancel, expire, requeue, TTL delete).
//! Each owns its task through an [`OwnerGuard`] and reports back through it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::ResourceExt;
use purrify_api::{EnhanceTask, EnhanceTaskStatus, TaskPhase};
use purrify_inference::client::policy::Decision;
use purrify_inference::client::{Fleet, Lease, WorkerClient};
pub(super) use purrify_inference::client::{cancel_job, spawn_cancel};
use purrify_inference::protocol::{JobEvent, JobRequest};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::controller::{OwnerGuard, Shared};
use super::kubeio::{Guard, Written};
use super::model::{TaskKey, attempts_of, job_id_for, job_request};
use super::policy::{
    self, Action, Chore, End, FailReason, StopReason, claimable, client_message, deadline_message, decide, on_submit_error, retry_allowed,
};
use super::progress::Progress;
use crate::registry::PoolKey;

/// Carried to the worker as `X-Request-ID` when set, so one id follows a task from the
/// mini-program into the worker's logs; the task name otherwise.
pub const REQUEST_ID_ANNOTATION: &str = "purrify.io/request-id";

/// Wait after an API failure before touching the task again.
const API_BACKOFF: Duration = Duration::from_secs(1);

fn status_of(task: &EnhanceTask) -> EnhanceTaskStatus {
    task.status.clone().unwrap_or_default()
}

fn request_id(task: &EnhanceTask, key: &TaskKey) -> String {
    task.annotations().get(REQUEST_ID_ANNOTATION).cloned().unwrap_or_else(|| key.name.clone())
}

/// One attempt of one task on one worker, once its job was accepted.
struct Job {
    key: TaskKey,
    task: Arc<EnhanceTask>,
    attempt: u32,
    job_id: String,
    worker: String,
    client: WorkerClient,
    /// `None` when re-attached: the worker's reported in-flight count covers the job.
    lease: Option<Lease>,
}

/// A client for `worker` from the pool's fleet, or a standalone one: a worker removed from
/// the fleet may still run our job and should still hear a cancel.
pub(super) fn client_for(sh: &Shared, pool: &PoolKey, worker: &str) -> Option<WorkerClient> {
    sh.ctx.registry.fleet(pool).and_then(|f| f.client(worker)).or_else(|| {
        let config = sh.ctx.registry.fleet(pool).map(|f| f.config().client.clone()).unwrap_or_default();
        WorkerClient::with_config(worker, config).ok()
    })
}

/// Writes `status` under `guard`; hands whatever it learned to the loop. True when written.
async fn write(sh: &Shared, guard: &mut OwnerGuard, wguard: &Guard, status: &EnhanceTaskStatus) -> bool {
    match sh.kube.write_status(&guard.key, wguard, status).await {
        Ok(Written::Done(obj)) => {
            sh.observed(obj);
            true
        }
        Ok(Written::Moved(now)) => {
            debug!(phase = status.phase.as_str(), "task changed meanwhile; write skipped");
            sh.observed(now);
            false
        }
        Ok(Written::Gone) => false,
        Err(e) => {
            warn!(error = %e, phase = status.phase.as_str(), "status write failed; retrying later");
            guard.note.backoff = Some(API_BACKOFF);
            false
        }
    }
}

/// Records a final phase: status, metrics, progress view, Event.
async fn finish(sh: &Shared, guard: &mut OwnerGuard, task: &EnhanceTask, wguard: &Guard, status: EnhanceTaskStatus) -> bool {
    if !write(sh, guard, wguard, &status).await {
        return false;
    }
    guard.note.finished = true;
    sh.transition(status.phase);
    sh.hub.publish(Progress::new(&guard.key, status.phase, status.progress, None));
    match (status.phase, status.error.as_ref()) {
        (TaskPhase::Succeeded, _) => {
            info!(attempts = status.attempts, "task succeeded");
            sh.kube.event(task, false, "Succeeded", format!("enhanced in {} attempt(s)", status.attempts));
        }
        (phase, Some(err)) => {
            info!(phase = phase.as_str(), reason = %err.reason, "task finished");
            sh.kube.event(task, phase != TaskPhase::Cancelled, &err.reason, err.message.clone());
        }
        (phase, None) => info!(phase = phase.as_str(), "task finished"),
    }
    true
}

/// After a counted attempt failed: back to the queue, or failed once attempts run out.
async fn retry_or_fail(sh: &Shared, guard: &mut OwnerGuard, task: &EnhanceTask, wguard: &Guard, reason: FailReason, detail: &str) {
    let prev = status_of(task);
    let attempt = prev.attempts;
    if retry_allowed(attempt, sh.config.max_attempts) {
        if write(sh, guard, wguard, &policy::requeued(&prev)).await {
            warn!(reason = reason.reason(), detail, attempt, "attempt failed; task queued again");
            sh.transition(TaskPhase::Queued);
            sh.hub.publish(Progress::new(&guard.key, TaskPhase::Queued, 0.0, None));
            sh.kube.event(task, true, "Retrying", format!("attempt {attempt} failed ({}); queued again", reason.reason()));
        }
    } else {
        warn!(reason = reason.reason(), detail, attempt, "attempt failed; no attempts left");
        let message = client_message(reason, detail, attempt);
        let mut status = policy::failed(&prev, reason, message, SystemTime::now());
        // As every other failure (and the standalone dispatcher): the progress the last
        // attempt reached, not the last coarse write.
        status.progress = sh.hub.get(&guard.key.namespace, &guard.key.name).map_or(prev.progress, |p| p.progress);
        finish(sh, guard, task, wguard, status).await;
    }
}

/// A queued task with a reserved worker slot: submit (elsewhere on 429 or a dead worker,
/// without writing), claim with a resourceVersion guard, then follow.
///
/// Submit comes before the claim (DESIGN section 3: Running means "job accepted"): a
/// worker that refuses costs no write. If the claim then loses (another operator, a
/// cancellation), our job is cancelled; if we die between the two, the task is still
/// Queued with the same attempt count, so the next dispatch resubmits the same job id and
/// attaches to the job when it lands on the same worker.
pub(super) async fn dispatch(
    sh: Arc<Shared>,
    mut guard: OwnerGuard,
    task: Arc<EnhanceTask>,
    fleet: Fleet,
    lease: Lease,
    tried: Vec<String>,
    queued_since: SystemTime,
) {
    let Some(uid) = task.metadata.uid.clone() else { return };
    let prev_attempts = attempts_of(&task);
    let attempt = prev_attempts + 1;
    let job_id = job_id_for(&uid, attempt);
    let req = job_request(&task.spec, &job_id);
    let rid = request_id(&task, &guard.key);
    let mut lease = lease;
    let mut skip = tried;
    loop {
        let client = lease.client().with_request_id(rid.clone());
        let submitted = tokio::select! {
            biased;
            reason = guard.control.stopped() => {
                // The worker may have taken the job already. On shutdown it stays for the
                // next controller, which resubmits this same id.
                if reason != StopReason::Shutdown {
                    spawn_cancel(client, job_id, sh.config.cancel_timeout);
                }
                return;
            }
            r = client.submit(&req) => r,
        };
        lease.record(&submitted);
        match submitted {
            Ok(accepted) => {
                debug!(worker = lease.endpoint(), existing = accepted.existing, %job_id, "job accepted");
                break;
            }
            Err(e) => match on_submit_error(e) {
                Decision::Elsewhere { detail, .. } => {
                    debug!(worker = lease.endpoint(), error = %detail, "worker did not take the job; trying another");
                    skip.push(lease.endpoint().to_owned());
                    match fleet.pick_excluding(&skip) {
                        Some(next) => lease = next,
                        // Stays queued; no write, no attempt counted. Not straight back into
                        // the next round: workers answering 429 with `Retry-After: 0` would
                        // otherwise be asked again at once, forever.
                        None => {
                            guard.note.backoff = Some(sh.config.poll_interval);
                            return;
                        }
                    }
                }
                Decision::Fail { reason, detail } => {
                    warn!(worker = lease.endpoint(), %detail, "worker refused the job");
                    drop(lease);
                    let mut status = status_of(&task);
                    status.attempts = attempt;
                    let message = client_message(reason, &detail, 1);
                    let status = policy::failed(&status, reason, message, SystemTime::now());
                    finish(&sh, &mut guard, &task, &Guard::version_of(&task), status).await;
                    return;
                }
                // A counted attempt that never ran (the worker holds another job under this
                // id): the next attempt has a new id, preferably on another worker.
                Decision::Retry { reason, detail, .. } => {
                    warn!(worker = lease.endpoint(), %detail, "worker refused this job id");
                    guard.note.failed_on = Some(lease.endpoint().to_owned());
                    drop(lease);
                    let mut counted = (*task).clone();
                    counted.status.get_or_insert_with(Default::default).attempts = attempt;
                    retry_or_fail(&sh, &mut guard, &counted, &Guard::version_of(&task), reason, &detail).await;
                    return;
                }
                Decision::Succeed(_) => unreachable!("a failed submit carries no result"),
            },
        }
    }

    let accepted_at = SystemTime::now();
    if attempt == 1 {
        let latency = accepted_at.duration_since(queued_since).unwrap_or_default();
        sh.ctx.metrics.dispatch_latency.observe(latency.as_secs_f64());
    }
    let worker = lease.endpoint().to_owned();
    let client = lease.client().with_request_id(rid);
    let mut current = task;
    let mut claimed = None;
    for _ in 0..3 {
        let status = policy::running(&status_of(&current), &worker, &job_id, attempt, SystemTime::now());
        match sh.kube.write_status(&guard.key, &Guard::version_of(&current), &status).await {
            Ok(Written::Done(obj)) => {
                claimed = Some(obj);
                break;
            }
            Ok(Written::Moved(now)) => {
                sh.observed(now.clone());
                let s = status_of(&now);
                if claimable(s.phase, s.attempts, prev_attempts, super::model::cancel_requested(&now), super::model::is_deleting(&now)) {
                    current = now;
                    continue;
                }
                // Someone else claimed it with this very job on this worker: that is their job.
                if s.job_id.as_deref() == Some(job_id.as_str()) && s.worker.as_deref() == Some(worker.as_str()) {
                    return;
                }
                break;
            }
            Ok(Written::Gone) => break,
            Err(e) => {
                warn!(error = %e, "claiming the task failed");
                guard.note.backoff = Some(API_BACKOFF);
                break;
            }
        }
    }
    let Some(obj) = claimed else {
        debug!(%job_id, "task moved before it could be claimed; cancelling the job");
        cancel_job(&client, &job_id, sh.config.cancel_timeout).await;
        return;
    };
    sh.observed(obj.clone());
    sh.transition(TaskPhase::Running);
    sh.hub.publish(Progress::new(&guard.key, TaskPhase::Running, 0.0, None));
    sh.kube.event(&obj, false, "Started", format!("attempt {attempt} running on worker {}", lease.name()));
    info!(%worker, %job_id, attempt, "task running");
    let job = Job { key: guard.key.clone(), task: obj, attempt, job_id, worker, client, lease: Some(lease) };
    follow(sh, guard, job).await;
}

/// Follows an accepted job to its end (or to a stop) and settles the task.
async fn follow(sh: Arc<Shared>, guard: OwnerGuard, job: Job) {
    let deadline =
        super::model::created_at(&job.task).map(|c| super::model::deadline_after(c, &job.task.spec)).unwrap_or_else(SystemTime::now);
    let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
    let initial = job.task.status.as_ref().map_or(0.0, |s| s.progress);
    let (progress_tx, progress_rx) = watch::channel(initial);
    // Already marked (written before a restart): no second mark for this attempt.
    let marker = (initial < sh.config.progress_mark).then(|| {
        let fut = coarse_progress(sh.clone(), job.key.clone(), job.job_id.clone(), progress_rx);
        AbortOnDrop(tokio::spawn(fut.in_current_span()))
    });
    let end = {
        let hub = &sh.hub;
        let key = &job.key;
        let wait = job.client.wait(&job.job_id, |event| {
            if let JobEvent::Progress { progress, stage } = event {
                hub.publish(Progress::new(key, TaskPhase::Running, *progress, Some(stage.clone())));
                progress_tx.send_replace(*progress);
            }
        });
        tokio::select! {
            biased;
            reason = guard.control.stopped() => End::Stopped(reason),
            () = tokio::time::sleep_until(Instant::now() + left) => End::Stopped(StopReason::Deadline),
            r = wait => End::Worker(r),
        }
    };
    drop(marker);
    settle(sh, guard, job, end).await;
}

/// The single coarse progress write: once progress reaches the mark and the job is still
/// running a little later. Guarded by job id and phase, so a late one changes nothing.
async fn coarse_progress(sh: Arc<Shared>, key: TaskKey, job_id: String, mut rx: watch::Receiver<f32>) {
    let mark = sh.config.progress_mark;
    loop {
        if *rx.borrow_and_update() >= mark {
            break;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
    tokio::time::sleep(sh.config.progress_write_delay).await;
    let p = *rx.borrow();
    if p >= 0.999 {
        return;
    }
    let coarse = (p * 100.0).round() / 100.0;
    match sh.kube.write_progress(&key, &job_id, coarse).await {
        Ok(Written::Done(obj)) => sh.observed(obj),
        Ok(_) => {}
        Err(e) => debug!(error = %e, "progress write failed"),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn settle(sh: Arc<Shared>, mut guard: OwnerGuard, mut job: Job, end: End) {
    let now = SystemTime::now();
    let prev = status_of(&job.task);
    let wguard = Guard::Job(job.job_id.clone());
    let live = sh.hub.get(&job.key.namespace, &job.key.name).map_or(prev.progress, |p| p.progress);
    let action = decide(end);
    // The worker is done with the job (or we are): free its slot before the writes.
    match (&action, job.lease.as_mut()) {
        (Action::Decided(Decision::Retry { worker_fault: true, detail, .. }), Some(lease)) => lease.failure(detail),
        (Action::Leave, _) | (_, None) => {}
        (_, Some(lease)) => lease.success(),
    }
    drop(job.lease.take());
    match action {
        Action::Decided(Decision::Succeed(result)) => {
            finish(&sh, &mut guard, &job.task, &wguard, policy::succeeded(&prev, &result, now)).await;
        }
        Action::Decided(Decision::Fail { reason, detail }) => {
            let message = client_message(reason, &detail, job.attempt);
            let mut status = policy::failed(&prev, reason, message, now);
            status.progress = live;
            finish(&sh, &mut guard, &job.task, &wguard, status).await;
        }
        // `Elsewhere` does not follow an accepted job; were it to, retrying is the safe reading.
        Action::Decided(Decision::Retry { reason, detail, worker_fault }) => {
            if worker_fault {
                // The worker may be alive behind a broken connection: stop the job there so
                // the retry does not run alongside it.
                spawn_cancel(job.client.clone(), job.job_id.clone(), sh.config.cancel_timeout);
            }
            guard.note.failed_on = Some(job.worker.clone());
            retry_or_fail(&sh, &mut guard, &job.task, &wguard, reason, &detail).await;
        }
        Action::Decided(Decision::Elsewhere { detail, .. }) => {
            guard.note.failed_on = Some(job.worker.clone());
            retry_or_fail(&sh, &mut guard, &job.task, &wguard, FailReason::WorkerUnavailable, &detail).await;
        }
        Action::Cancel => {
            cancel_job(&job.client, &job.job_id, sh.config.cancel_timeout).await;
            let mut status = policy::cancelled(&prev, now);
            status.progress = live;
            finish(&sh, &mut guard, &job.task, &wguard, status).await;
        }
        Action::Forget => {
            info!(job_id = %job.job_id, "task deleted; job cancelled");
            cancel_job(&job.client, &job.job_id, sh.config.cancel_timeout).await;
            sh.hub.remove(&job.key);
        }
        Action::Deadline => {
            cancel_job(&job.client, &job.job_id, sh.config.cancel_timeout).await;
            let message = deadline_message(job.task.spec.deadline_seconds, true);
            let mut status = policy::failed(&prev, FailReason::DeadlineExceeded, message, now);
            status.progress = live;
            finish(&sh, &mut guard, &job.task, &wguard, status).await;
        }
        Action::Leave => debug!(job_id = %job.job_id, "stopped following; the job stays for re-attachment"),
    }
}

/// Work on a task nobody here follows.
pub(super) async fn chore(sh: Arc<Shared>, mut guard: OwnerGuard, task: Arc<EnhanceTask>, pool: PoolKey, chore: Chore) {
    let prev = status_of(&task);
    let now = SystemTime::now();
    match chore {
        Chore::CancelQueued => {
            info!("cancelling queued task");
            finish(&sh, &mut guard, &task, &Guard::version_of(&task), policy::cancelled(&prev, now)).await;
        }
        Chore::ExpireQueued => {
            let message = deadline_message(task.spec.deadline_seconds, false);
            let status = policy::failed(&prev, FailReason::DeadlineExceeded, message, now);
            finish(&sh, &mut guard, &task, &Guard::version_of(&task), status).await;
        }
        Chore::Adopt { worker, job_id } => adopt(sh, guard, task, pool, worker, job_id).await,
        Chore::CancelOrphan { worker, job_id } => {
            if let Some(client) = client_for(&sh, &pool, &worker) {
                cancel_job(&client, &job_id, sh.config.cancel_timeout).await;
            }
            finish(&sh, &mut guard, &task, &Guard::Job(job_id), policy::cancelled(&prev, now)).await;
        }
        Chore::ExpireOrphan { worker, job_id } => {
            if let Some(client) = client_for(&sh, &pool, &worker) {
                cancel_job(&client, &job_id, sh.config.cancel_timeout).await;
            }
            let message = deadline_message(task.spec.deadline_seconds, true);
            let status = policy::failed(&prev, FailReason::DeadlineExceeded, message, now);
            finish(&sh, &mut guard, &task, &Guard::Job(job_id), status).await;
        }
        Chore::RequeueOrphan { worker, job_id } => {
            warn!(worker = worker.as_deref().unwrap_or("-"), "the task's worker is unknown; retrying the task");
            if let (Some(w), Some(j)) = (&worker, &job_id)
                && let Some(client) = client_for(&sh, &pool, w)
            {
                spawn_cancel(client, j.clone(), sh.config.cancel_timeout);
            }
            guard.note.failed_on = worker;
            let wguard = match job_id {
                Some(j) => Guard::Job(j),
                None => Guard::version_of(&task),
            };
            retry_or_fail(&sh, &mut guard, &task, &wguard, FailReason::WorkerUnavailable, "worker unknown after restart").await;
        }
        Chore::Delete => {
            let uid = task.metadata.uid.clone().unwrap_or_default();
            match sh.kube.delete(&guard.key, &uid).await {
                Ok(_) => {
                    debug!("finished task deleted after its TTL");
                    guard.note.deleted = true;
                }
                Err(e) => {
                    warn!(error = %e, "deleting a finished task failed");
                    guard.note.backoff = Some(API_BACKOFF);
                }
            }
        }
    }
}

/// Re-attaches to a running task's job after a restart: the same job id resubmitted to the
/// recorded worker attaches to the job (or returns its result) instead of running it again.
async fn adopt(sh: Arc<Shared>, guard: OwnerGuard, task: Arc<EnhanceTask>, pool: PoolKey, worker: String, job_id: String) {
    let Some(client) = sh.ctx.registry.fleet(&pool).and_then(|f| f.client(&worker)) else { return };
    let client = client.with_request_id(request_id(&task, &guard.key));
    let req: JobRequest = job_request(&task.spec, &job_id);
    let job = Job { key: guard.key.clone(), attempt: attempts_of(&task), task, job_id, worker, client, lease: None };
    let submitted = tokio::select! {
        biased;
        reason = guard.control.stopped() => Err(reason),
        r = job.client.submit(&req) => Ok(r),
    };
    match submitted {
        Err(reason) => settle(sh, guard, job, End::Stopped(reason)).await,
        Ok(Ok(accepted)) => {
            info!(job_id = %job.job_id, worker = %job.worker, existing = accepted.existing, "re-attached to the running job");
            follow(sh, guard, job).await;
        }
        Ok(Err(e)) => {
            warn!(job_id = %job.job_id, error = %e, "re-attaching failed");
            settle(sh, guard, job, End::Worker(Err(e))).await;
        }
    }
}
