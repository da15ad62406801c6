//! Task management (seeds 001 and 002, issue 12): creating a task with its kind, title, scene,
//! priority and callback; listing, reading, cancelling, retrying and deleting tasks; queue
//! statistics. The same in both backends: rows are the truth for reads, and every change goes
//! through the backend that drives tasks (the dispatcher, or the EnhanceTask CRs).
//!
//! - **Retry** makes a *new task* (a new id, `retry_of` naming the old one) with the same
//!   input (copied to the new task's own object), parameters, kind and priority. It is charged
//!   like any task: a new hold, captured when it succeeds, released when it fails. A task is
//!   retried once; a failed retry is retried in turn. In Kubernetes mode the new task is a new
//!   CR. The old task keeps its outcome.
//! - **Delete** hides a finished task from every list and detail; the row and its objects go
//!   with the retention housekeeping.
//! - **Owners and admins only**: anyone else reads a task as missing (404), so ids of other
//!   users' tasks cannot be probed.

use purrify_api::TaskStatus;
use purrify_store::{Guard, NewTask, Page, PageRequest, Runner, StoreError, Task, TaskFilter, TaskMeta, TaskRecord, TaskSort};

use super::kubernetes::KubeError;
use super::model::{self, NewUpload};
use super::standalone::CancelOutcome;
use super::{Backend, TaskService};
use crate::domain::accounts::{Principal, Role};
use crate::domain::{DomainError, DomainResult};

/// Every task kind (DESIGN section 13): `enhance` on the engine; the generation kinds, run
/// by providers (or, for image-to-image on the built-in provider, the engine); `workflow`,
/// seed 001's scene tasks handed to a webhook; `postcard`, seed 004's.
pub const TASK_KINDS: &[&str] = &["enhance", "text_to_image", "image_to_image", "text_to_video", "image_to_video", "workflow", "postcard"];

/// The kinds the task surfaces (seeds 001/002 create, scenes) make; the generation kinds
/// and postcards have their own endpoints.
pub const CREATABLE_KINDS: &[&str] = &["enhance", "workflow"];

/// Highest priority a role may ask for; higher requests are clamped to it (users cannot jump
/// the queue; admins may, within bounds).
pub fn max_priority(role: Role) -> i32 {
    match role {
        Role::Admin => 10,
        Role::User => 0,
    }
}

/// Lowest priority anyone may ask for.
pub const MIN_PRIORITY: i32 = -10;

/// Window and sample of the average wait in queue statistics.
const WAIT_WINDOW_MS: i64 = 3_600_000;
const WAIT_SAMPLE: u32 = 100;

/// A kind a task or scene may be created with, or a validation error listing them.
pub fn task_kind(kind: &str) -> DomainResult<&'static str> {
    CREATABLE_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .ok_or_else(|| DomainError::invalid("task_type", format!("unknown task type {kind:?}; served: {}", CREATABLE_KINDS.join(", "))))
}

/// Any task kind (list filters).
pub fn listed_kind(kind: &str) -> DomainResult<&'static str> {
    TASK_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .ok_or_else(|| DomainError::invalid("task_type", format!("unknown task type {kind:?}; served: {}", TASK_KINDS.join(", "))))
}

/// A status word of seeds 001/002 (`pending`, `running`) or the core's (`queued`, `processing`).
pub fn parse_status_word(word: &str) -> DomainResult<TaskStatus> {
    match word {
        "pending" | "queued" => Ok(TaskStatus::Queued),
        "running" | "processing" => Ok(TaskStatus::Processing),
        "completed" => Ok(TaskStatus::Completed),
        "failed" => Ok(TaskStatus::Failed),
        "cancelled" => Ok(TaskStatus::Cancelled),
        other => Err(DomainError::invalid("status", format!("{other:?} is not one of pending, running, completed, failed, cancelled"))),
    }
}

/// What a task is created with besides its upload.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    pub meta: TaskMeta,
    /// Already clamped to what the creator may ask for.
    pub priority: i32,
    /// A price other than the kind's, in hundredths (a scene's).
    pub price: Option<i64>,
}

/// A task as its detail shows it: the row, with live progress from the hub.
#[derive(Debug, Clone)]
pub struct TaskDetail {
    pub record: TaskRecord,
    /// 0..=1: live while running.
    pub progress: f64,
    pub status: TaskStatus,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// Cancelled now.
    Done,
    /// Asked of the operator (Kubernetes mode): the task ends cancelled when it acts.
    Requested,
    /// It had finished already; nothing changed.
    AlreadyFinished(TaskStatus),
}

/// Queue figures with the caller's place.
#[derive(Debug, Clone, Copy)]
pub struct QueueStats {
    pub queued: u64,
    pub running: u64,
    pub average_wait_ms: Option<f64>,
    /// Queued tasks that dispatch before the caller's first queued one.
    pub position: Option<u64>,
    /// The caller's queued and running tasks.
    pub mine_active: u64,
}

/// Longest callback URL accepted.
pub const MAX_CALLBACK_URL: usize = crate::domain::outbound::MAX_URL;

/// Checks a task's `callback_url`: only when callbacks can be signed (`secret_set`), then the
/// outbound URL rules ([`crate::domain::outbound::check_url`]; `allow_private` lets loopback
/// through for local testing). Names are resolved and checked again when the callback is
/// sent.
pub fn check_callback_url(url: &str, secret_set: bool, allow_private: bool) -> DomainResult<String> {
    let field = "callback_url";
    if !secret_set {
        return Err(DomainError::invalid(field, "callbacks are not enabled on this server (no callback signing key is configured)"));
    }
    Ok(crate::domain::outbound::check_url(url, field, allow_private, "callback targets")?.to_string())
}

fn visible(rec: &TaskRecord, viewer: &Principal) -> bool {
    rec.hidden_at.is_none() && (viewer.is_admin() || rec.task.user_id.as_deref() == Some(viewer.user_id.as_str()))
}

fn not_found(id: &str) -> DomainError {
    DomainError::NotFound(format!("no task {id}"))
}

impl TaskService {
    /// Persists a task with its options (committed before the caller answers 2xx) and hands
    /// it to the backend. A logged-in owner's task is paid for before it exists (the hold is
    /// released if it cannot be created) and counts against `max_concurrent_tasks_per_user`,
    /// checked atomically with the insert. Returns the task id.
    pub async fn create_task_with(&self, upload: NewUpload, options: TaskOptions) -> DomainResult<String> {
        let settings = self.inner.runtime.snapshot().await?;
        let output_uri = self.inner.storage.uri_for(&format!("results/{}.jpg", upload.task_id));
        let mut task = NewTask::new(upload.task_id, upload.input_uri, output_uri, upload.params);
        task.content_type = upload.content_type;
        task.input_bytes = upload.bytes;
        task.request_id = Some(upload.request_id);
        task.fair_group = Some(upload.owner.clone().unwrap_or_else(|| format!("{}{}", model::ANONYMOUS_GROUP_PREFIX, upload.client)));
        task.user_id = upload.owner;
        task.deadline = Some(settings.default_task_timeout.unwrap_or(self.inner.settings.deadline));
        task.priority = options.priority;
        task.meta = options.meta;
        if task.user_id.is_some() && settings.max_concurrent_tasks_per_user > 0 {
            task.max_active = Some(settings.max_concurrent_tasks_per_user);
        }
        let held = match &task.user_id {
            Some(user) => match options.price {
                Some(price) => self.inner.credits.hold_price(user, &task.id, price).await?,
                None => self.inner.credits.hold_for_task(user, &task.id, &task.meta.kind).await?,
            }
            .is_some(),
            None => false,
        };
        let created = self.submit(&task).await.map_err(|e| match e {
            DomainError::Store(StoreError::LimitReached(_)) => DomainError::TaskLimit(format!(
                "you already have {} tasks queued or running, the most allowed at once; wait for one to finish",
                settings.max_concurrent_tasks_per_user
            )),
            DomainError::Store(StoreError::Duplicate(_)) if task.meta.retry_of.is_some() => {
                DomainError::Conflict(format!("task {} is already being retried", task.meta.retry_of.as_deref().unwrap_or_default()))
            }
            other => other,
        });
        if created.is_err()
            && held
            && let Err(e) = self.inner.credits.release(&task.id).await
        {
            tracing::warn!(task = %task.id, error = %e, "cannot release the hold of a task that was not created; the settler will");
        }
        created.map(|()| task.id)
    }

    /// A task as `viewer` may see it (owners and admins; deleted tasks read as missing).
    pub async fn detail(&self, id: &str, viewer: &Principal) -> DomainResult<TaskDetail> {
        let rec = self.record_for(id, viewer).await?;
        let live = self.inner.hub.get(id).filter(|v| v.status == rec.task.status || !rec.task.status.is_finished());
        let (status, progress) = match live {
            Some(v) if v.status == TaskStatus::Completed => (v.status, 1.0),
            Some(v) => (v.status, f64::from(v.progress)),
            None if rec.task.status == TaskStatus::Completed => (rec.task.status, 1.0),
            None => (rec.task.status, rec.task.progress),
        };
        Ok(TaskDetail { progress, status, record: rec })
    }

    async fn record_for(&self, id: &str, viewer: &Principal) -> DomainResult<TaskRecord> {
        if !model::valid_task_id(id) {
            return Err(not_found(id));
        }
        match self.inner.db.task_record(id).await? {
            Some(rec) if visible(&rec, viewer) => Ok(rec),
            _ => Err(not_found(id)),
        }
    }

    /// A page of tasks: `filter.user_id` names whose (admins may pass `None` for everyone's).
    pub async fn list(&self, filter: &TaskFilter, sort: TaskSort, ascending: bool, page: PageRequest) -> DomainResult<Page<TaskRecord>> {
        if let Some(kind) = &filter.kind {
            listed_kind(kind)?;
        }
        Ok(self.inner.db.task_page(filter, sort, ascending, page).await?)
    }

    /// Cancels a queued or running task, through the backend that drives it.
    pub async fn cancel(&self, id: &str, viewer: &Principal) -> DomainResult<Cancelled> {
        let rec = self.record_for(id, viewer).await?;
        if rec.task.status.is_finished() {
            return Ok(Cancelled::AlreadyFinished(rec.task.status));
        }
        if rec.meta.generation.as_ref().is_some_and(|g| g.runner == Runner::Provider) {
            return self.cancel_provider_task(&rec.task).await;
        }
        match &self.inner.backend {
            Backend::Standalone(d) => match d.cancel(id).await? {
                CancelOutcome::Cancelled => Ok(Cancelled::Done),
                CancelOutcome::AlreadyFinished(s) => Ok(Cancelled::AlreadyFinished(s)),
                CancelOutcome::NotFound => Err(not_found(id)),
            },
            Backend::Kubernetes(k) => match k.cancel(id).await {
                Ok(()) => Ok(Cancelled::Requested),
                // The CR is gone: the mirror ends the row (failed, or cancelled if asked).
                Err(KubeError::Api(kube::Error::Api(e))) if e.code == 404 => {
                    let now = self.inner.db.get_task(id).await?.map(|t| t.status);
                    Ok(now.filter(|s| s.is_finished()).map_or(Cancelled::Requested, Cancelled::AlreadyFinished))
                }
                Err(e) => {
                    tracing::error!(task = %id, error = %e, "cannot annotate the EnhanceTask for cancellation");
                    Err(DomainError::Unavailable("the cluster did not accept the cancellation; try again shortly".into()))
                }
            },
        }
    }

    /// Runs a failed or cancelled task again as a new task (see the module documentation).
    /// Returns the new task's id.
    pub async fn retry(&self, id: &str, viewer: &Principal, request_id: &str) -> DomainResult<String> {
        let rec = self.record_for(id, viewer).await?;
        if !matches!(rec.task.status, TaskStatus::Failed | TaskStatus::Cancelled) {
            return Err(DomainError::Conflict(format!(
                "only failed or cancelled tasks can be retried; task {id} is {}",
                rec.task.status.as_str()
            )));
        }
        if let Some(again) = self.inner.db.retry_of(id).await? {
            return Err(DomainError::Conflict(format!("task {id} was already retried as {again}; retry that one if it failed")));
        }
        let new_id = uuid::Uuid::new_v4().simple().to_string();
        let input_uri = self.copy_input(&rec.task.input_uri, &new_id).await?;
        let price = match &rec.meta.scene_id {
            Some(scene) => self.inner.db.scene(scene).await?.and_then(|s| s.price),
            None => None,
        };
        let upload = NewUpload {
            task_id: new_id,
            input_uri: input_uri.clone(),
            content_type: rec.task.content_type.clone(),
            bytes: rec.task.input_bytes,
            params: rec.task.params,
            request_id: request_id.to_string(),
            owner: rec.task.user_id.clone(),
            client: String::new(),
        };
        let meta = TaskMeta { retry_of: Some(id.to_string()), ..rec.meta.clone() };
        let created = self.create_task_with(upload, TaskOptions { meta, priority: rec.task.priority, price }).await;
        if created.is_err()
            && let Err(e) = self.inner.storage.delete(&input_uri).await
        {
            tracing::warn!(uri = %input_uri, error = %e, "cannot delete the input copy of a retry that was not created");
        }
        created
    }

    /// Copies an object to `uploads/{task_id}.{ext}`: a task's own input, which housekeeping
    /// may delete with the task without touching the original.
    pub async fn copy_input(&self, from: &str, task_id: &str) -> DomainResult<String> {
        let ext =
            from.rsplit_once('.').map(|(_, e)| e).filter(|e| e.len() <= 5 && e.bytes().all(|b| b.is_ascii_alphanumeric())).unwrap_or("bin");
        let to = self.inner.storage.uri_for(&format!("uploads/{task_id}.{ext}"));
        let storage = &self.inner.storage;
        let copied = match storage.get_stream(from).await {
            Ok((_, stream)) => storage.put_stream(&to, stream).await,
            Err(e) => Err(e),
        };
        match copied {
            Ok(_) => Ok(to),
            Err(purrify_inference::storage::StorageError::NotFound { .. }) => {
                Err(DomainError::Conflict("the task's input image is no longer stored; upload it again".into()))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot copy a task input");
                let _ = storage.delete(&to).await;
                Err(DomainError::Unavailable("the image could not be copied for the new task; try again shortly".into()))
            }
        }
    }

    /// Deletes (hides) a finished task.
    pub async fn delete(&self, id: &str, viewer: &Principal) -> DomainResult<()> {
        let rec = self.record_for(id, viewer).await?;
        if !rec.task.status.is_finished() {
            return Err(DomainError::Conflict(format!(
                "task {id} is {}; only finished tasks can be deleted (cancel it first)",
                rec.task.status.as_str()
            )));
        }
        if !self.inner.db.hide_task(id).await? {
            return Err(not_found(id));
        }
        self.inner.hub.remove(id);
        Ok(())
    }

    /// Queue depth, running tasks, the recent average wait and `viewer`'s position.
    pub async fn queue_stats(&self, viewer: &Principal) -> DomainResult<QueueStats> {
        let db = &self.inner.db;
        let figures = db.queue_figures(WAIT_WINDOW_MS, WAIT_SAMPLE).await?;
        Ok(QueueStats {
            queued: figures.queued,
            running: figures.processing,
            average_wait_ms: figures.average_wait_ms,
            position: db.queue_position(&viewer.user_id).await?,
            mine_active: db.active_task_count(&viewer.user_id).await?,
        })
    }
}

/// The error of a Kubernetes create, for the caller: database refusals as they are (a task
/// limit, a duplicate), the cluster's as a retryable 503.
pub(super) fn kube_create_error(e: KubeError) -> DomainError {
    if let KubeError::Db(e) = e {
        return DomainError::Store(e);
    }
    tracing::error!(error = %e, "cannot create the EnhanceTask");
    DomainError::Unavailable("the cluster did not accept the task; try again shortly".into())
}

impl TaskService {
    /// Cancels a provider task: a queued one at once; a running one through the replica that
    /// runs it (which also asks the provider to stop); one this replica does not run (another
    /// replica's, or one waiting for a workflow's callback) by a conditional update naming
    /// its attempt, so a late result cannot complete it afterwards.
    async fn cancel_provider_task(&self, task: &Task) -> DomainResult<Cancelled> {
        let done = match task.status {
            TaskStatus::Queued => self.inner.db.cancel_task(&task.id, Guard::Queued).await?,
            _ if self.inner.provider_queue.cancel(&task.id) => return Ok(Cancelled::Requested),
            _ => match task.job_id.as_deref() {
                Some(job) => self.inner.db.cancel_task(&task.id, Guard::Job(job)).await?,
                None => false,
            },
        };
        let now = self.inner.db.get_task(&task.id).await?.ok_or_else(|| not_found(&task.id))?;
        self.inner.hub.publish(super::TaskView::from_task(&now));
        if done { Ok(Cancelled::Done) } else { Ok(Cancelled::AlreadyFinished(now.status)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_follow_the_webhook_policy() {
        assert_eq!(check_callback_url("https://example.com/hook", true, false).unwrap(), "https://example.com/hook");
        assert!(check_callback_url("https://example.com/hook", false, false).is_err(), "no signing key");
        for bad in [
            "ftp://example.com/x",
            "not a url",
            "http://169.254.169.254/latest",
            "http://127.0.0.1:9/x",
            "http://[::1]/x",
            "http://user:pw@example.com/x",
            "http://0.0.0.0/x",
        ] {
            assert!(check_callback_url(bad, true, false).is_err(), "{bad}");
        }
        assert!(check_callback_url("http://127.0.0.1:9/x", true, true).is_ok(), "development allows loopback");
        assert!(check_callback_url("http://169.254.169.254/x", true, true).is_err(), "never metadata");
    }

    #[test]
    fn kinds_and_words() {
        assert_eq!(task_kind("enhance").unwrap(), "enhance");
        let Err(DomainError::Invalid { field, message }) = task_kind("video_analysis") else { panic!() };
        assert_eq!(field, "task_type");
        assert!(message.contains("served: enhance"), "{message}");
        assert_eq!(parse_status_word("pending").unwrap(), TaskStatus::Queued);
        assert_eq!(parse_status_word("running").unwrap(), TaskStatus::Processing);
        assert!(parse_status_word("done").is_err());
        assert_eq!((max_priority(Role::User), max_priority(Role::Admin)), (0, 10));
    }
}
