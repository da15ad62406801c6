//! The one attempt policy (DESIGN section 3): what a worker's answer means for the task,
//! decided once for the gateway's standalone dispatcher and the operator alike, so the same
//! answer gives the same outcome, reason and message in both modes. Pure: the callers own
//! the I/O (writing the outcome, requeueing, feeding the breaker).
//!
//! An *attempt* is a job a worker accepted. Answers before acceptance ([`Phase::Submit`]) that
//! say only "not this worker, not now" cost no attempt ([`Decision::Elsewhere`]); a job that
//! was accepted and then lost, failed or vanished costs one ([`Decision::Retry`]), until
//! `max_attempts` are used up.

use std::time::Duration;

use purrify_api::FailReason;

use super::{ClientError, JobOutcome};
use crate::protocol::{ErrorReason, JobError, JobResult};

/// When the answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Submitting a new job: the worker has not accepted it.
    Submit,
    /// Following an accepted job (or re-attaching to one after a restart).
    Wait,
}

/// What to do about one answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Succeed(JobResult),
    /// Fail now: no other worker would do better.
    Fail {
        reason: FailReason,
        detail: String,
    },
    /// The attempt failed; another may succeed (on another worker when there is one).
    /// `worker_fault` feeds the worker's circuit breaker and means the job may still be
    /// running there (cancel it so the retry does not run alongside).
    Retry {
        reason: FailReason,
        detail: String,
        worker_fault: bool,
    },
    /// The worker did not take the job: try another one (or this one after `retry_after`),
    /// counting no attempt. `worker_fault` as for `Retry`.
    Elsewhere {
        detail: String,
        worker_fault: bool,
        retry_after: Option<Duration>,
    },
}

/// The failure reason of a worker's job error.
pub fn reason_of(reason: ErrorReason) -> FailReason {
    match reason {
        ErrorReason::BadInput => FailReason::BadInput,
        ErrorReason::TooLarge => FailReason::TooLarge,
        ErrorReason::InvalidParams => FailReason::InvalidParams,
        ErrorReason::Storage => FailReason::StorageError,
        ErrorReason::Inference => FailReason::InferenceFailed,
        ErrorReason::Internal => FailReason::InternalError,
        // Not asked by us (our own stops never reach the policy): the worker gave up the job.
        ErrorReason::Cancelled => FailReason::WorkerUnavailable,
    }
}

const WORKER_CANCELLED: &str = "the worker cancelled the job";

/// How a followed job ended.
pub fn on_outcome(outcome: JobOutcome) -> Decision {
    match outcome {
        JobOutcome::Succeeded(result) => Decision::Succeed(result),
        // E.g. the worker drained for its own shutdown.
        JobOutcome::Cancelled | JobOutcome::Failed(JobError { reason: ErrorReason::Cancelled, .. }) => {
            Decision::Retry { reason: FailReason::WorkerUnavailable, detail: WORKER_CANCELLED.into(), worker_fault: true }
        }
        JobOutcome::Failed(JobError { reason, message }) if reason.retryable() => {
            // Storage is shared by every worker: not this worker's fault.
            Decision::Retry { reason: reason_of(reason), detail: message, worker_fault: reason != ErrorReason::Storage }
        }
        JobOutcome::Failed(JobError { reason, message }) => Decision::Fail { reason: reason_of(reason), detail: message },
    }
}

/// A call that failed.
pub fn on_error(phase: Phase, e: ClientError) -> Decision {
    match (phase, e) {
        // Full: healthy, but not now.
        (Phase::Submit, ClientError::Busy { retry_after }) => {
            Decision::Elsewhere { detail: "the worker is at capacity".into(), worker_fault: false, retry_after: Some(retry_after) }
        }
        // 409: the worker holds a different job under this id. The next attempt has a new id.
        (Phase::Submit, ClientError::Rejected { status: 409, message }) => {
            Decision::Retry { reason: FailReason::InternalError, detail: message, worker_fault: false }
        }
        // The request itself is refused: every worker would refuse it.
        (Phase::Submit, ClientError::Rejected { message, .. }) => Decision::Fail { reason: FailReason::InvalidParams, detail: message },
        // Unreachable, broken or a 404 on a POST: the job never started there.
        (Phase::Submit, e) => Decision::Elsewhere { detail: e.to_string(), worker_fault: true, retry_after: None },
        // An accepted job was lost: the worker restarted (404), died or went away.
        (Phase::Wait, e) => Decision::Retry {
            reason: FailReason::WorkerUnavailable,
            worker_fault: !matches!(e, ClientError::Rejected { .. }),
            detail: e.to_string(),
        },
    }
}

/// [`on_outcome`] or [`on_error`] of a call's result.
pub fn decide(phase: Phase, answer: Result<JobOutcome, ClientError>) -> Decision {
    match answer {
        Ok(outcome) => on_outcome(outcome),
        Err(e) => on_error(phase, e),
    }
}

/// Whether a failed attempt (1-based) gets another one.
pub fn retry_allowed(attempt: u32, max_attempts: u32) -> bool {
    attempt < max_attempts
}

/// The job id of attempt `attempt` (1-based) of the task `base` names. A new id per attempt
/// means a retry on the same worker starts a fresh job instead of attaching to the failed one.
pub fn job_id_for(base: &str, attempt: u32) -> String {
    format!("{base}-{attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use purrify_api::FaceRestoration;

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

    fn failed(reason: ErrorReason) -> Decision {
        on_outcome(JobOutcome::Failed(JobError { reason, message: "worker says".into() }))
    }

    fn fail(reason: FailReason) -> Decision {
        Decision::Fail { reason, detail: "worker says".into() }
    }

    fn retry(reason: FailReason, worker_fault: bool) -> Decision {
        Decision::Retry { reason, detail: "worker says".into(), worker_fault }
    }

    #[test]
    fn job_errors_table() {
        let table = [
            (ErrorReason::BadInput, fail(FailReason::BadInput)),
            (ErrorReason::TooLarge, fail(FailReason::TooLarge)),
            (ErrorReason::InvalidParams, fail(FailReason::InvalidParams)),
            (ErrorReason::Storage, retry(FailReason::StorageError, false)),
            (ErrorReason::Inference, retry(FailReason::InferenceFailed, true)),
            (ErrorReason::Internal, retry(FailReason::InternalError, true)),
        ];
        for (reason, want) in table {
            assert_eq!(failed(reason), want, "{reason:?}");
        }
        let gave_up = Decision::Retry { reason: FailReason::WorkerUnavailable, detail: WORKER_CANCELLED.into(), worker_fault: true };
        assert_eq!(failed(ErrorReason::Cancelled), gave_up);
        assert_eq!(on_outcome(JobOutcome::Cancelled), gave_up);
        assert_eq!(on_outcome(JobOutcome::Succeeded(result())), Decision::Succeed(result()));
    }

    #[test]
    fn call_errors_table() {
        let busy = ClientError::Busy { retry_after: Duration::from_secs(2) };
        assert!(matches!(
            on_error(Phase::Submit, busy),
            Decision::Elsewhere { worker_fault: false, retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        for e in [ClientError::Unavailable("refused".into()), ClientError::Protocol("?".into()), ClientError::NotFound] {
            assert!(
                matches!(on_error(Phase::Submit, e.clone()), Decision::Elsewhere { worker_fault: true, retry_after: None, .. }),
                "{e:?}"
            );
            assert!(
                matches!(
                    on_error(Phase::Wait, e.clone()),
                    Decision::Retry { reason: FailReason::WorkerUnavailable, worker_fault: true, .. }
                ),
                "{e:?}"
            );
        }
        let clash = ClientError::Rejected { status: 409, message: "another job has this id".into() };
        assert_eq!(
            on_error(Phase::Submit, clash),
            Decision::Retry { reason: FailReason::InternalError, detail: "another job has this id".into(), worker_fault: false }
        );
        let refused = ClientError::Rejected { status: 422, message: "tile_size".into() };
        assert_eq!(
            on_error(Phase::Submit, refused.clone()),
            Decision::Fail { reason: FailReason::InvalidParams, detail: "tile_size".into() }
        );
        assert!(matches!(on_error(Phase::Wait, refused), Decision::Retry { worker_fault: false, .. }));
        assert_eq!(decide(Phase::Wait, Ok(JobOutcome::Succeeded(result()))), Decision::Succeed(result()));
    }

    #[test]
    fn attempts_and_job_ids() {
        assert!(retry_allowed(2, 3) && !retry_allowed(3, 3));
        assert_eq!(job_id_for("abc", 1), "abc-1");
        assert_ne!(job_id_for("abc", 1), job_id_for("abc", 2));
    }
}
