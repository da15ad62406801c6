//! What the controller reads out of an `EnhanceTask`, and the mapping of its spec onto the
//! worker protocol. Pure: no I/O, no clock.

use std::fmt;
use std::time::{Duration, SystemTime};

use kube::ResourceExt;
use purrify_api::{EnhanceTask, EnhanceTaskSpec, TaskPhase};
use purrify_inference::protocol::{EnhanceParams, JobRequest};

use crate::registry::PoolKey;

/// Set to `"true"` to cancel a task. An annotation because the spec is immutable (CEL rule)
/// and the status belongs to the operator.
pub const CANCEL_ANNOTATION: &str = "purrify.io/cancel";

/// A task, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    pub namespace: String,
    pub name: String,
}

impl TaskKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// `None` for objects without a name or namespace, which a namespaced kind never has.
    pub fn of(task: &EnhanceTask) -> Option<Self> {
        Some(Self::new(task.metadata.namespace.clone()?, task.metadata.name.clone()?))
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Job id of an attempt. The uid (not the name) makes a re-created task with the same name
/// a different job on the worker, whose jobs are idempotent by id.
/// The job id of attempt `attempt` of the task with this uid (the shared rule).
pub use purrify_inference::client::policy::job_id_for;

pub fn job_request(spec: &EnhanceTaskSpec, job_id: &str) -> JobRequest {
    JobRequest {
        id: job_id.to_owned(),
        input_uri: spec.input.uri.clone(),
        output_uri: spec.output.uri.clone(),
        params: EnhanceParams::from(spec.params),
    }
}

/// A task without status has just been created: it is waiting.
pub fn phase_of(task: &EnhanceTask) -> TaskPhase {
    task.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

pub fn attempts_of(task: &EnhanceTask) -> u32 {
    task.status.as_ref().map_or(0, |s| s.attempts)
}

pub fn cancel_requested(task: &EnhanceTask) -> bool {
    task.annotations().get(CANCEL_ANNOTATION).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

pub fn is_deleting(task: &EnhanceTask) -> bool {
    task.metadata.deletion_timestamp.is_some()
}

pub fn created_at(task: &EnhanceTask) -> Option<SystemTime> {
    task.metadata.creation_timestamp.as_ref().map(|t| SystemTime::from(t.0))
}

pub fn deadline_after(created: SystemTime, spec: &EnhanceTaskSpec) -> SystemTime {
    created + Duration::from_secs(u64::from(spec.deadline_seconds))
}

pub fn ttl_of(spec: &EnhanceTaskSpec, default: Duration) -> Duration {
    spec.ttl_seconds_after_finished.map_or(default, |s| Duration::from_secs(u64::from(s)))
}

/// Fairness key. Tasks without an owner share one anonymous user, so unattributed bursts
/// are throttled together rather than each counting as a new user.
pub fn user_of(task: &EnhanceTask) -> String {
    task.spec.owner.as_ref().map(|o| o.user_id.clone()).unwrap_or_default()
}

pub fn pool_of(task: &EnhanceTask) -> PoolKey {
    PoolKey::new(task.metadata.namespace.clone().unwrap_or_default(), task.spec.pool.clone())
}

pub fn resource_version(task: &EnhanceTask) -> Option<&str> {
    task.metadata.resource_version.as_deref()
}

/// Whether `candidate` is older than `current` (same object). Resource versions are opaque
/// by contract but etcd revisions in practice; when either does not parse, the candidate is
/// taken as newer, which at worst replays a stale view until the next watch event.
pub fn is_older(candidate: &EnhanceTask, current: &EnhanceTask) -> bool {
    if candidate.metadata.uid != current.metadata.uid {
        return false;
    }
    let num = |t: &EnhanceTask| resource_version(t).and_then(|v| v.parse::<u64>().ok());
    matches!((num(candidate), num(current)), (Some(a), Some(b)) if a < b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use purrify_api::{OutputFormat, QualityLevel, TaskInput, TaskOutput, TaskParams};

    pub(crate) fn spec() -> EnhanceTaskSpec {
        EnhanceTaskSpec {
            pool: "default".into(),
            input: TaskInput { uri: "file:///in.jpg".into(), content_type: None, bytes: None },
            output: TaskOutput { uri: "file:///out.jpg".into() },
            params: TaskParams::default(),
            priority: 0,
            deadline_seconds: 300,
            ttl_seconds_after_finished: None,
            owner: None,
        }
    }

    #[test]
    fn job_requests_carry_the_spec() {
        let mut s = spec();
        s.params.quality_level = purrify_api::QualityLevel::Fast;
        s.params.output_format = purrify_api::OutputFormat::Png;
        s.params.scale = 4;
        s.params.tile_size = 0;
        let r = job_request(&s, &job_id_for("u-1", 2));
        assert_eq!(r.id, "u-1-2");
        assert_eq!(r.input_uri, "file:///in.jpg");
        assert_eq!(r.output_uri, "file:///out.jpg");
        assert_eq!(r.params.quality_level, QualityLevel::Fast);
        assert_eq!(r.params.output_format, OutputFormat::Png);
        assert_eq!((r.params.scale, r.params.tile_size), (4, 0));
        assert!(r.params.validate().is_ok());
    }

    #[test]
    fn cancel_annotation_and_versions() {
        let mut t = EnhanceTask::new("a", spec());
        assert!(!cancel_requested(&t));
        t.annotations_mut().insert(CANCEL_ANNOTATION.into(), "True".into());
        assert!(cancel_requested(&t));
        t.annotations_mut().insert(CANCEL_ANNOTATION.into(), "no".into());
        assert!(!cancel_requested(&t));

        let mut old = t.clone();
        old.metadata.resource_version = Some("9".into());
        t.metadata.resource_version = Some("10".into());
        assert!(is_older(&old, &t), "numeric, not lexicographic");
        assert!(!is_older(&t, &old));
        old.metadata.uid = Some("other".into());
        assert!(!is_older(&old, &t), "another object is never older");
        assert_eq!(ttl_of(&spec(), Duration::from_secs(7)), Duration::from_secs(7));
        assert_eq!(phase_of(&t), TaskPhase::Queued);
    }
}
