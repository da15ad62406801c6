//! Every call the task controller makes to the Kubernetes API, so each write is guarded,
//! retried on transient errors and counted in `api_writes` in one place.
//!
//! Status writes are JSON patches on `/status` that begin with `test` operations: the claim
//! tests `metadata.resourceVersion` (two operators cannot both claim a task), every later
//! write tests the attempt's `jobId` and `Running` phase (a late write of a superseded attempt
//! changes nothing). JSON patch rather than a merge patch with a resourceVersion because a
//! running attempt must not conflict with unrelated metadata changes (labels, annotations),
//! only with another attempt.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use purrify_api::{EnhanceTask, EnhanceTaskStatus, TaskPhase};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::model::{TaskKey, resource_version};
use crate::context::FIELD_MANAGER;
use crate::metrics::Metrics;

const RESOURCE: &str = "enhancetasks";

/// What a write must still find for it to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The object unchanged since this resource version.
    Version(String),
    /// The task running this job id.
    Job(String),
}

impl Guard {
    fn tests(&self) -> Vec<Value> {
        match self {
            Self::Version(rv) => vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})],
            Self::Job(job) => vec![
                json!({"op": "test", "path": "/status/jobId", "value": job}),
                json!({"op": "test", "path": "/status/phase", "value": TaskPhase::Running.as_str()}),
            ],
        }
    }

    pub fn holds(&self, task: &EnhanceTask) -> bool {
        match self {
            Self::Version(rv) => resource_version(task) == Some(rv.as_str()),
            Self::Job(job) => {
                task.status.as_ref().is_some_and(|s| s.phase == TaskPhase::Running && s.job_id.as_deref() == Some(job.as_str()))
            }
        }
    }

    pub fn version_of(task: &EnhanceTask) -> Self {
        Self::Version(resource_version(task).unwrap_or_default().to_owned())
    }
}

/// Outcome of a guarded write.
#[derive(Debug)]
pub enum Written {
    Done(Arc<EnhanceTask>),
    /// The guard no longer holds; the task as it is now.
    Moved(Arc<EnhanceTask>),
    /// The task no longer exists.
    Gone,
}

pub struct Kube {
    client: Client,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    events: bool,
    /// Bounds concurrent writes: a relist that finds a thousand expired tasks must not open
    /// a thousand connections at once.
    permits: Semaphore,
}

fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

const TRIES: u32 = 3;

impl Kube {
    pub fn new(client: Client, metrics: Arc<Metrics>, reporter: Reporter, events: bool, max_writes: usize) -> Self {
        Self { client, metrics, reporter, events, permits: Semaphore::new(max_writes.max(1)) }
    }

    fn api(&self, namespace: &str) -> Api<EnhanceTask> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub async fn get(&self, key: &TaskKey) -> Result<Option<EnhanceTask>, kube::Error> {
        self.api(&key.namespace).get_opt(&key.name).await
    }

    /// Replaces the whole status, if `guard` holds.
    pub async fn write_status(&self, key: &TaskKey, guard: &Guard, status: &EnhanceTaskStatus) -> Result<Written, kube::Error> {
        let value = serde_json::to_value(status).expect("statuses serialise");
        self.patch(key, guard, vec![json!({"op": "add", "path": "/status", "value": value})]).await
    }

    /// The one coarse progress mark of an attempt.
    pub async fn write_progress(&self, key: &TaskKey, job_id: &str, progress: f32) -> Result<Written, kube::Error> {
        let guard = Guard::Job(job_id.to_owned());
        self.patch(key, &guard, vec![json!({"op": "replace", "path": "/status/progress", "value": progress})]).await
    }

    async fn patch(&self, key: &TaskKey, guard: &Guard, ops: Vec<Value>) -> Result<Written, kube::Error> {
        let mut all = guard.tests();
        all.extend(ops);
        // `json_patch::Patch` is inferred from the variant: kube does not re-export the crate.
        let patch: Patch<()> = Patch::Json(serde_json::from_value(Value::Array(all)).expect("well-formed JSON patch"));
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let api = self.api(&key.namespace);
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=TRIES {
            let result = {
                let _permit = self.permits.acquire().await.expect("never closed");
                self.metrics.write("patch_status", RESOURCE);
                api.patch_status(&key.name, &params, &patch).await
            };
            match result {
                Ok(obj) => return Ok(Written::Done(Arc::new(obj))),
                Err(e) if code(&e) == Some(404) => return Ok(Written::Gone),
                // A failed `test` is 422 (409 on some servers); so is a status the schema
                // refuses. Reading the object tells the two apart.
                Err(e) if matches!(code(&e), Some(409 | 422)) => {
                    return match self.get(key).await? {
                        None => Ok(Written::Gone),
                        Some(now) if guard.holds(&now) => Err(e),
                        Some(now) => Ok(Written::Moved(Arc::new(now))),
                    };
                }
                Err(e) if transient(&e) && attempt < TRIES => {
                    debug!(task = %key, error = %e, attempt, "status write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last try returns")
    }

    /// Deletes the task if it is still the object with `uid` (not a new one of the same
    /// name). `Ok(false)` when it was already gone.
    pub async fn delete(&self, key: &TaskKey, uid: &str) -> Result<bool, kube::Error> {
        let params =
            DeleteParams { preconditions: Some(Preconditions { uid: Some(uid.to_owned()), resource_version: None }), ..Default::default() };
        let api = self.api(&key.namespace);
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=TRIES {
            let result = {
                let _permit = self.permits.acquire().await.expect("never closed");
                self.metrics.write("delete", RESOURCE);
                api.delete(&key.name, &params).await
            };
            match result {
                Ok(_) => return Ok(true),
                // 409: the uid precondition failed, i.e. ours is gone and a namesake exists.
                Err(e) if matches!(code(&e), Some(404 | 409)) => return Ok(false),
                Err(e) if transient(&e) && attempt < TRIES => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last try returns")
    }

    /// Publishes a Kubernetes Event about `task`, in the background. Events are API writes
    /// too and are counted (`resource="events"`), but not in a task's write budget: they go
    /// to their own resource that nothing watches in the hot path (not to the EnhanceTask
    /// objects the operator and the gateway watch), the API server expires them, and
    /// `TaskConfig::events` turns them off for clusters where even that is too much.
    pub fn event(&self, task: &EnhanceTask, warning: bool, reason: &str, note: String) {
        if !self.events {
            return;
        }
        let reference = task.object_ref(&());
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Enhance".into(),
            secondary: None,
        };
        // A recorder per event: its de-duplication cache would otherwise hold every task's
        // events for six minutes, and no two tasks share an event anyway.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            metrics.write("create", "events");
            if let Err(e) = recorder.publish(&event, &reference).await {
                warn!(error = %e, "publishing an Event failed");
            }
        });
    }
}
