//! The lifecycle decisions of DESIGN section 3, as pure functions: what an ended attempt
//! means, the status each transition writes, and which chore a task needs when nobody here
//! is working on it. Unit-tested without workers or an API server.

use std::time::{Duration, SystemTime};

use purrify_api::{EnhanceTaskStatus, TaskError, TaskPhase, TaskResult};
pub use purrify_api::{FailReason, client_message};
use purrify_inference::client::policy::{self as attempt_policy, Decision, Phase};
use purrify_inference::client::{ClientError, JobOutcome, format_rfc3339};
use purrify_inference::protocol::JobResult;

use super::index::Entry;

/// The message of a task that ran out of time (the shared wording).
pub fn deadline_message(deadline_seconds: u32, started: bool) -> String {
    purrify_api::deadline_message(u64::from(deadline_seconds), started)
}

/// Why a follower was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `purrify.io/cancel: "true"`.
    Cancel,
    /// The task object is gone.
    Deleted,
    Deadline,
    /// The controller is stopping (shutdown or lost leadership).
    Shutdown,
}

/// How following an accepted job ended.
#[derive(Debug)]
pub enum End {
    Stopped(StopReason),
    Worker(Result<JobOutcome, ClientError>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The worker answered; the shared attempt policy decided.
    Decided(Decision),
    /// Stop the job, then record the cancellation.
    Cancel,
    /// Stop the job; there is no object left to write to.
    Forget,
    /// Stop the job, then fail with `DeadlineExceeded`.
    Deadline,
    /// Stop following only: the job runs on and the next controller re-attaches.
    Leave,
}

pub fn decide(end: End) -> Action {
    match end {
        End::Stopped(StopReason::Cancel) => Action::Cancel,
        End::Stopped(StopReason::Deleted) => Action::Forget,
        End::Stopped(StopReason::Deadline) => Action::Deadline,
        End::Stopped(StopReason::Shutdown) => Action::Leave,
        End::Worker(answer) => Action::Decided(attempt_policy::decide(Phase::Wait, answer)),
    }
}

/// What a submit error means before any job was accepted (the shared policy's answer).
pub fn on_submit_error(e: ClientError) -> Decision {
    attempt_policy::on_error(Phase::Submit, e)
}

/// Whether a failed attempt gets another one.
pub use attempt_policy::retry_allowed;

// ---- statuses ----

pub fn running(prev: &EnhanceTaskStatus, worker: &str, job_id: &str, attempt: u32, now: SystemTime) -> EnhanceTaskStatus {
    EnhanceTaskStatus {
        phase: TaskPhase::Running,
        progress: 0.0,
        worker: Some(worker.to_owned()),
        job_id: Some(job_id.to_owned()),
        attempts: attempt,
        // The first attempt's start: how long the task has been in the works.
        start_time: prev.start_time.clone().or_else(|| Some(format_rfc3339(now))),
        completion_time: None,
        result: None,
        error: None,
        conditions: prev.conditions.clone(),
    }
}

pub fn succeeded(prev: &EnhanceTaskStatus, result: &JobResult, now: SystemTime) -> EnhanceTaskStatus {
    EnhanceTaskStatus {
        phase: TaskPhase::Succeeded,
        progress: 1.0,
        completion_time: Some(format_rfc3339(now)),
        result: Some(TaskResult::from_job(result)),
        error: None,
        ..prev.clone()
    }
}

pub fn failed(prev: &EnhanceTaskStatus, reason: FailReason, message: String, now: SystemTime) -> EnhanceTaskStatus {
    finished(prev, TaskPhase::Failed, reason, message, now)
}

pub fn cancelled(prev: &EnhanceTaskStatus, now: SystemTime) -> EnhanceTaskStatus {
    finished(prev, TaskPhase::Cancelled, FailReason::Cancelled, client_message(FailReason::Cancelled, "", 1), now)
}

fn finished(prev: &EnhanceTaskStatus, phase: TaskPhase, reason: FailReason, message: String, now: SystemTime) -> EnhanceTaskStatus {
    EnhanceTaskStatus {
        phase,
        completion_time: Some(format_rfc3339(now)),
        result: None,
        error: Some(TaskError { reason: reason.reason().to_owned(), message }),
        ..prev.clone()
    }
}

/// Back to the queue after a failed attempt. Attempts and the first start time stay; the
/// worker and job go, so a later restart does not re-attach to the failed job.
pub fn requeued(prev: &EnhanceTaskStatus) -> EnhanceTaskStatus {
    EnhanceTaskStatus {
        phase: TaskPhase::Queued,
        progress: 0.0,
        worker: None,
        job_id: None,
        completion_time: None,
        result: None,
        error: None,
        ..prev.clone()
    }
}

/// Whether a freshly read task can still be claimed for attempt `attempts + 1`.
pub fn claimable(phase: TaskPhase, attempts: u32, expected_attempts: u32, cancel: bool, deleting: bool) -> bool {
    phase == TaskPhase::Queued && attempts == expected_attempts && !cancel && !deleting
}

// ---- chores ----

/// Work a task needs when no follower here owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chore {
    /// Queued with the cancel annotation: record the cancellation.
    CancelQueued,
    /// Queued past its deadline.
    ExpireQueued,
    /// Running without a follower here (restart, crashed follower): re-attach.
    Adopt { worker: String, job_id: String },
    /// Running, cancel requested (or being deleted): stop the job, record it.
    CancelOrphan { worker: String, job_id: String },
    /// Running past its deadline without a follower.
    ExpireOrphan { worker: String, job_id: String },
    /// Running on a worker nobody knows any more (or without a recorded job): retry.
    RequeueOrphan { worker: Option<String>, job_id: Option<String> },
    /// Finished and past its TTL.
    Delete,
}

/// The chore `e` needs at `now`, if any. `worker_known` says whether the pool's fleet knows
/// an endpoint; `grace_over` whether the fleets had time to fill after start.
pub fn plan(e: &Entry, now: SystemTime, default_ttl: Duration, worker_known: impl Fn(&str) -> bool, grace_over: bool) -> Option<Chore> {
    if e.delete_sent {
        return None;
    }
    let status = e.task.status.as_ref();
    match e.phase {
        TaskPhase::Queued => {
            if e.deleting {
                None
            } else if e.cancel_requested {
                Some(Chore::CancelQueued)
            } else if e.deadline <= now {
                Some(Chore::ExpireQueued)
            } else {
                None
            }
        }
        TaskPhase::Running => {
            let worker = status.and_then(|s| s.worker.clone()).filter(|w| !w.is_empty());
            let job_id = status.and_then(|s| s.job_id.clone()).filter(|j| !j.is_empty());
            let (Some(worker), Some(job_id)) = (worker, job_id) else {
                let (worker, job_id) = (status.and_then(|s| s.worker.clone()), status.and_then(|s| s.job_id.clone()));
                return if e.cancel_requested || e.deleting {
                    Some(Chore::CancelQueued)
                } else {
                    Some(Chore::RequeueOrphan { worker, job_id })
                };
            };
            if e.cancel_requested || e.deleting {
                Some(Chore::CancelOrphan { worker, job_id })
            } else if e.deadline <= now {
                Some(Chore::ExpireOrphan { worker, job_id })
            } else if worker_known(&worker) {
                Some(Chore::Adopt { worker, job_id })
            } else if grace_over {
                Some(Chore::RequeueOrphan { worker: Some(worker), job_id: Some(job_id) })
            } else {
                None
            }
        }
        TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Cancelled => {
            let ttl = super::model::ttl_of(&e.task.spec, default_ttl);
            let finished = e.finished_at.unwrap_or(e.created);
            (!e.deleting && finished + ttl <= now).then_some(Chore::Delete)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::index::{Index, tests::task};
    use crate::task::model::{CANCEL_ANNOTATION, TaskKey};
    use kube::ResourceExt;
    use std::sync::Arc;

    use purrify_api::FaceRestoration;
    use purrify_inference::protocol::{ErrorReason, JobError};

    fn result() -> JobResult {
        JobResult {
            output_uri: "file:///o.jpg".into(),
            content_type: "image/jpeg".into(),
            width: 8,
            height: 6,
            bytes: 100,
            faces: 1,
            face_restoration: FaceRestoration::Applied,
            model: "m".into(),
            elapsed_ms: 3,
        }
    }

    fn failed_with(reason: ErrorReason) -> Action {
        decide(End::Worker(Ok(JobOutcome::Failed(JobError { reason, message: "worker says".into() }))))
    }

    fn fail(reason: FailReason) -> Action {
        Action::Decided(Decision::Fail { reason, detail: "worker says".into() })
    }

    #[test]
    fn input_errors_fail_at_once_others_retry() {
        for (r, want) in [
            (ErrorReason::BadInput, FailReason::BadInput),
            (ErrorReason::TooLarge, FailReason::TooLarge),
            (ErrorReason::InvalidParams, FailReason::InvalidParams),
        ] {
            assert_eq!(failed_with(r), fail(want));
        }
        assert_eq!(
            failed_with(ErrorReason::Storage),
            Action::Decided(Decision::Retry { reason: FailReason::StorageError, detail: "worker says".into(), worker_fault: false })
        );
        assert!(matches!(
            failed_with(ErrorReason::Inference),
            Action::Decided(Decision::Retry { reason: FailReason::InferenceFailed, worker_fault: true, .. })
        ));
        for e in [ClientError::NotFound, ClientError::Unavailable("gone".into()), ClientError::Protocol("?".into())] {
            assert!(matches!(
                decide(End::Worker(Err(e))),
                Action::Decided(Decision::Retry { reason: FailReason::WorkerUnavailable, worker_fault: true, .. })
            ));
        }
        assert!(matches!(decide(End::Worker(Ok(JobOutcome::Cancelled))), Action::Decided(Decision::Retry { .. })));
        assert_eq!(decide(End::Worker(Ok(JobOutcome::Succeeded(result())))), Action::Decided(Decision::Succeed(result())));
        assert_eq!(decide(End::Stopped(StopReason::Cancel)), Action::Cancel);
        assert_eq!(decide(End::Stopped(StopReason::Deleted)), Action::Forget);
        assert_eq!(decide(End::Stopped(StopReason::Deadline)), Action::Deadline);
        assert_eq!(decide(End::Stopped(StopReason::Shutdown)), Action::Leave);
        assert!(retry_allowed(2, 3) && !retry_allowed(3, 3));
    }

    #[test]
    fn submit_errors_busy_goes_elsewhere_refusal_fails() {
        let busy = ClientError::Busy { retry_after: Duration::from_secs(1) };
        assert!(matches!(on_submit_error(busy), Decision::Elsewhere { worker_fault: false, .. }));
        assert!(matches!(on_submit_error(ClientError::Unavailable("x".into())), Decision::Elsewhere { worker_fault: true, .. }));
        assert_eq!(
            on_submit_error(ClientError::Rejected { status: 422, message: "tile_size".into() }),
            Decision::Fail { reason: FailReason::InvalidParams, detail: "tile_size".into() }
        );
    }

    #[test]
    fn messages_hide_internal_details() {
        assert_eq!(client_message(FailReason::BadInput, "not a JPEG", 1), "not a JPEG");
        let m = client_message(FailReason::StorageError, "s3://secret/key: 500", 3);
        assert!(!m.contains("secret") && m.contains("3 attempts"), "{m}");
        let m = client_message(FailReason::WorkerUnavailable, "10.0.0.3 refused", 1);
        assert!(!m.contains("10.0.0.3"), "{m}");
    }

    #[test]
    fn status_transitions_keep_what_later_steps_need() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let q = EnhanceTaskStatus::default();
        let r1 = running(&q, "http://w1:1", "uid-1", 1, t0);
        assert_eq!((r1.phase, r1.attempts, r1.job_id.as_deref()), (TaskPhase::Running, 1, Some("uid-1")));
        assert_eq!(r1.start_time.as_deref(), Some("2023-11-14T22:13:20.000Z"));

        let back = requeued(&r1);
        assert_eq!((back.phase, back.attempts, back.worker.clone(), back.job_id.clone()), (TaskPhase::Queued, 1, None, None));
        assert_eq!(back.start_time, r1.start_time, "the first start is kept");

        let r2 = running(&back, "http://w2:1", "uid-2", 2, t0 + Duration::from_secs(5));
        assert_eq!(r2.start_time, r1.start_time);

        let ok = succeeded(&r2, &result(), t0 + Duration::from_secs(9));
        assert_eq!(ok.phase, TaskPhase::Succeeded);
        assert_eq!(ok.progress, 1.0);
        assert_eq!(ok.result.as_ref().map(|r| (r.uri.as_str(), r.width, r.faces)), Some(("file:///o.jpg", 8, 1)));
        let r = ok.result.as_ref().unwrap();
        assert_eq!((r.content_type.as_deref(), r.face_restoration), (Some("image/jpeg"), Some(FaceRestoration::Applied)));
        // What the worker says, not a guess from the face count.
        let plain = JobResult { content_type: "image/webp".into(), faces: 0, face_restoration: FaceRestoration::NotConfigured, ..result() };
        let r = succeeded(&r2, &plain, t0).result.unwrap();
        assert_eq!((r.content_type.as_deref(), r.face_restoration), (Some("image/webp"), Some(FaceRestoration::NotConfigured)));
        assert_eq!((ok.worker.as_deref(), ok.attempts), (Some("http://w2:1"), 2), "who ran it stays visible");
        assert!(ok.completion_time.is_some() && ok.error.is_none());

        let bad = failed(&r2, FailReason::DeadlineExceeded, deadline_message(300, true), t0);
        assert_eq!(bad.error.as_ref().map(|e| e.reason.as_str()), Some("DeadlineExceeded"));
        let c = cancelled(&q, t0);
        assert_eq!((c.phase, c.error.unwrap().reason.as_str()), (TaskPhase::Cancelled, "Cancelled"));

        assert!(claimable(TaskPhase::Queued, 1, 1, false, false));
        assert!(!claimable(TaskPhase::Queued, 2, 1, false, false), "another attempt started meanwhile");
        assert!(!claimable(TaskPhase::Running, 1, 1, false, false));
        assert!(!claimable(TaskPhase::Queued, 1, 1, true, false));
    }

    #[test]
    fn chores_follow_phase_deadline_worker_and_ttl() {
        let mut ix = Index::new();
        let key = TaskKey::new("ns", "t");
        let base = task("t", "u", 0, 0);
        let created = crate::task::model::created_at(&base).unwrap();
        let ttl = Duration::from_secs(60);
        let at = |s: u64| created + Duration::from_secs(s);
        let known = |_: &str| true;
        let unknown = |_: &str| false;

        ix.apply(Arc::new(base.clone()), None);
        let e = ix.get(&key).unwrap();
        assert_eq!(plan(e, at(10), ttl, known, true), None, "queued tasks are the scheduler's");
        assert_eq!(plan(e, at(300), ttl, known, true), Some(Chore::ExpireQueued));

        let mut c = base.clone();
        c.annotations_mut().insert(CANCEL_ANNOTATION.into(), "true".into());
        ix.apply(Arc::new(c), None);
        assert_eq!(plan(ix.get(&key).unwrap(), at(10), ttl, known, true), Some(Chore::CancelQueued));

        let mut r = base.clone();
        r.status = Some(running(&Default::default(), "http://w:1", "uid-t-1", 1, at(1)));
        ix.apply(Arc::new(r.clone()), None);
        let e = ix.get(&key).unwrap();
        let adopt = Chore::Adopt { worker: "http://w:1".into(), job_id: "uid-t-1".into() };
        assert_eq!(plan(e, at(10), ttl, known, false), Some(adopt));
        assert_eq!(plan(e, at(10), ttl, unknown, false), None, "wait for the fleet to learn its workers");
        assert_eq!(
            plan(e, at(10), ttl, unknown, true),
            Some(Chore::RequeueOrphan { worker: Some("http://w:1".into()), job_id: Some("uid-t-1".into()) })
        );
        assert!(matches!(plan(e, at(301), ttl, known, true), Some(Chore::ExpireOrphan { .. })));
        r.annotations_mut().insert(CANCEL_ANNOTATION.into(), "true".into());
        ix.apply(Arc::new(r.clone()), None);
        assert!(matches!(plan(ix.get(&key).unwrap(), at(10), ttl, known, true), Some(Chore::CancelOrphan { .. })));

        let mut done = base.clone();
        done.status = Some(succeeded(&running(&Default::default(), "w", "j", 1, at(1)), &result(), at(20)));
        ix.apply(Arc::new(done.clone()), None);
        let e = ix.get(&key).unwrap();
        assert_eq!(plan(e, at(79), ttl, known, true), None);
        assert_eq!(plan(e, at(80), ttl, known, true), Some(Chore::Delete));
        done.spec.ttl_seconds_after_finished = Some(0);
        ix.apply(Arc::new(done.clone()), None);
        assert_eq!(plan(ix.get(&key).unwrap(), at(20), ttl, known, true), Some(Chore::Delete), "ttl 0 deletes at once");
        ix.mark_deleted(&key);
        ix.apply(Arc::new(done), None);
        assert_eq!(plan(ix.get(&key).unwrap(), at(20), ttl, known, true), None, "deleted once, even when the watch replays it");
    }
}
