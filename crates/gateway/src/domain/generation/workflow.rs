//! Seed 001's workflow callbacks: `POST /api/callback/task-complete` and `/task-failed`,
//! called by the workflow (n8n) a workflow task was handed to. Each call is signed with the
//! workflow provider's key (`X-Purrify-Timestamp`, `X-Purrify-Signature`, the scheme of
//! [`crate::domain::providers::adapters::webhook`]):
//!
//! - **authentic**: the signature is checked in constant time with the key of the provider
//!   that took the task; an unknown task answers as a bad signature, so ids cannot be probed;
//! - **fresh**: a timestamp more than five minutes from now is refused;
//! - **once**: a signature is accepted once (`webhook_replays`), so a captured call cannot be
//!   replayed within the window either;
//! - **idempotent**: a workflow that reports again (a new signature) about a task that has
//!   already ended changes nothing and is told the task's status.

use purrify_api::{FailReason, TaskStatus};
use purrify_store::{Guard, now_ms};
use serde::Deserialize;

use super::GenerationService;
use super::outputs::{self, OutputError};
use crate::domain::providers::adapter::Output;
use crate::domain::providers::adapters::webhook::{DEFAULT_TOLERANCE, verify};
use crate::domain::providers::{Kind, Protocol};
use crate::domain::tasks::TaskView;
use crate::domain::{DomainError, DomainResult};

/// Which callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Failed,
}

/// A callback's body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackBody {
    pub task_id: String,
    #[serde(default)]
    pub output_url: Option<String>,
    #[serde(default)]
    pub result_urls: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The signature headers as received.
#[derive(Debug, Clone, Default)]
pub struct Signed<'a> {
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// Longest failure reason kept.
const MAX_ERROR: usize = 500;

fn unauthorized() -> DomainError {
    DomainError::Unauthorized("the callback's signature does not verify".into())
}

impl GenerationService {
    /// Applies a workflow's callback; returns the task's status afterwards.
    pub async fn workflow_callback(&self, outcome: Outcome, signed: Signed<'_>, body: &[u8]) -> DomainResult<TaskStatus> {
        let cb: CallbackBody = serde_json::from_slice(body)
            .map_err(|e| DomainError::invalid("body", format!("expected {{taskId, outputUrl | error}}: {e}")))?;
        let db = self.tasks.db();
        let rec = match db.task_record(&cb.task_id).await? {
            Some(r) => r,
            None => return Err(unauthorized()),
        };
        let Some(g) = rec.meta.generation.as_ref() else { return Err(unauthorized()) };
        // The provider that took the task; while the runner has not recorded it yet (a
        // workflow can call back before our POST to it has returned), any webhook provider
        // of the task's chain.
        let candidates = match g.served_by.as_deref() {
            Some(p) => vec![self.providers.provider(p).await.map_err(|_| unauthorized())?],
            None => self.providers.chain(Kind::Workflow, Some(&g.provider)).await?,
        };
        let now = now_ms() / 1000;
        let mut verified = false;
        for provider in candidates.iter().filter(|p| p.protocol == Protocol::Webhook) {
            let Some(key) = self.providers.endpoint(provider, &g.model)?.api_key else { continue };
            match verify(key.expose().as_bytes(), signed.timestamp, body, signed.signature, now, DEFAULT_TOLERANCE) {
                Ok(()) => {
                    verified = true;
                    break;
                }
                Err(why) => tracing::warn!(task = %cb.task_id, provider = %provider.id, why, "workflow callback refused"),
            }
        }
        if !verified {
            return Err(unauthorized());
        }
        if !db.note_signature(signed.signature.trim(), now_ms()).await? {
            return Err(DomainError::Conflict("this callback was already received (a replay)".into()));
        }
        let task = &rec.task;
        if task.status.is_finished() {
            return Ok(task.status);
        }
        let Some(job_id) = task.job_id.as_deref().filter(|_| task.status == TaskStatus::Processing) else {
            return Err(DomainError::Conflict("the task has not been handed to the workflow yet".into()));
        };
        match outcome {
            Outcome::Failed => {
                let why: String = cb.error.as_deref().unwrap_or("the workflow failed").chars().take(MAX_ERROR).collect();
                db.fail_task(&task.id, Guard::Job(job_id), FailReason::InferenceFailed, &why).await?;
            }
            Outcome::Complete => {
                let urls: Vec<Output> = cb.output_url.iter().chain(cb.result_urls.iter()).cloned().map(Output::Url).collect();
                if urls.is_empty() {
                    return Err(DomainError::invalid("outputUrl", "a completed workflow names its result (outputUrl or resultUrls)"));
                }
                match outputs::store(self.tasks.storage(), &self.http, &task.id, &task.output_uri, urls, self.copy).await {
                    Ok(files) => {
                        let elapsed = u64::try_from(now_ms() - task.started_at.unwrap_or(task.created_at)).unwrap_or(0);
                        let result = outputs::job_result(&files[0], g.model.clone(), elapsed);
                        let list = serde_json::to_string(&files).unwrap_or_else(|_| "[]".into());
                        if !db.complete_provider_task(&task.id, job_id, &result, &list).await? {
                            for f in &files {
                                let _ = self.tasks.storage().delete(&f.uri).await;
                            }
                        }
                    }
                    Err(OutputError::Bad(m)) => {
                        db.fail_task(&task.id, Guard::Job(job_id), FailReason::InferenceFailed, &m).await?;
                    }
                    Err(OutputError::Storage(m)) => return Err(DomainError::Unavailable(format!("the result cannot be stored now: {m}"))),
                }
            }
        }
        let now_task = db.get_task(&task.id).await?.ok_or_else(|| DomainError::NotFound(format!("no task {}", task.id)))?;
        self.tasks.hub().publish(TaskView::from_task(&now_task));
        Ok(now_task.status)
    }
}
