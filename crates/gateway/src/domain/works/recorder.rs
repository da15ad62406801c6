//! Turns logged-in users' tasks into works: at once when a task's status changes on the
//! progress hub, and every [`SWEEP_EVERY`] from the database, which also covers what this
//! replica missed (a crash, a lagging broadcast, another replica's tasks), retries thumbnails
//! and runs the deletion sweeper. Recording is idempotent by task id, so the two paths and
//! several replicas may meet on one task.

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use purrify_api::TaskStatus;
use purrify_store::{NewWork, Task, Work, WorkFile, WorkKind, duration_ms, now_ms};
use tokio::sync::watch;

use super::{WorkService, backoff, extension};
use crate::domain::DomainResult;
use crate::domain::tasks::{PublicStatus, TaskSnapshot};

/// How often the database is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Tasks recorded per sweep and query (the next sweep takes the rest).
const BATCH: u32 = 100;
/// Statuses remembered per task, so progress events cost no database work; cleared when full.
const SEEN_CAPACITY: usize = 10_000;

/// Runs until `stop` changes. `tasks` is the hub's stream of task changes.
pub fn spawn_recorder(
    works: WorkService,
    tasks: impl Stream<Item = TaskSnapshot> + Send + 'static,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = Box::pin(tasks);
        let mut seen: HashMap<String, PublicStatus> = HashMap::new();
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut window = works.settings.start_catch_up;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    works.sweep_with(window).await;
                    window = works.settings.catch_up;
                }
                next = tasks.next() => {
                    let Some(t) = next else { break };
                    if t.owner.is_none() || seen.get(&t.id) == Some(&t.status) {
                        continue;
                    }
                    if seen.len() >= SEEN_CAPACITY {
                        seen.clear();
                    }
                    seen.insert(t.id.clone(), t.status);
                    if let Err(e) = works.record(&t.id).await {
                        tracing::warn!(task = %t.id, error = %e, "cannot record a task's work now; the sweep retries");
                    }
                }
            }
        }
    })
}

impl WorkService {
    /// One pass of everything periodic: tasks without a work, works behind their task,
    /// thumbnails due, objects to delete and rows to purge.
    pub async fn sweep(&self) {
        self.sweep_with(self.settings.catch_up).await;
    }

    async fn sweep_with(&self, window: Duration) {
        let since = now_ms().saturating_sub(duration_ms(window));
        let missing = self.db.tasks_without_work(since, BATCH).await;
        let behind = self.db.works_behind_tasks(BATCH).await;
        for ids in [missing, behind] {
            match ids {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = self.record(&id).await {
                            tracing::warn!(task = %id, error = %e, "cannot record a task's work");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list tasks to record as works"),
            }
        }
        match self.db.thumbnails_due(now_ms(), BATCH).await {
            Ok(due) => {
                for w in due {
                    self.retry_thumbnail(&w).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list thumbnails due"),
        }
        self.sweep_deletions().await;
    }

    /// Brings the work of task `task_id` up to date: created if missing (for a logged-in
    /// user's task), its status moved along, and, once the task completed, its file copied
    /// and its thumbnail made.
    pub async fn record(&self, task_id: &str) -> DomainResult<()> {
        let Some(record) = self.db.task_record(task_id).await? else { return Ok(()) };
        let task = record.task;
        let Some(user_id) = task.user_id.clone() else { return Ok(()) };
        let error = task
            .failure()
            .map(|f| f.message.to_owned())
            .or_else(|| (task.status == TaskStatus::Cancelled).then(|| "the task was cancelled".to_owned()));
        // Until its file is stored a completed task's work is processing.
        let status = if task.status == TaskStatus::Completed { TaskStatus::Processing } else { task.status };
        let new = NewWork {
            id: uuid::Uuid::new_v4().to_string(),
            user_id,
            task_id: task.id.clone(),
            kind: work_kind(&record.meta.kind),
            title: title_of(record.meta.title.as_deref(), task.created_at),
            status,
            error_message: error.clone(),
            media_key: media_key(),
            created_at: task.created_at,
        };
        if self.db.insert_work(&new).await? {
            tracing::debug!(task = %task.id, "work recorded");
        }
        if task.status != TaskStatus::Completed {
            self.db.set_work_status(&task.id, status, error.as_deref()).await?;
            return Ok(());
        }
        // A deleted or already completed work keeps what it has.
        match self.db.work_of_task(&task.id).await? {
            Some(work) if work.status != TaskStatus::Completed => self.adopt(&work, &task).await,
            _ => Ok(()),
        }
    }

    /// Copies a completed task's output into the work, completes it, and makes its thumbnail.
    async fn adopt(&self, work: &Work, task: &Task) -> DomainResult<()> {
        let Some(result) = &task.result else {
            self.db.set_work_status(&task.id, TaskStatus::Failed, Some("the task completed without a result")).await?;
            return Ok(());
        };
        let bytes = match self.storage.get(&result.output_uri, self.settings.max_file_bytes).await {
            Ok(b) => b,
            Err(e) if e.is_client_error() => {
                tracing::warn!(task = %task.id, error = %e, "a completed task's output cannot be kept");
                self.db.set_work_status(&task.id, TaskStatus::Failed, Some("the result is no longer stored")).await?;
                return Ok(());
            }
            Err(e) => return Err(crate::domain::DomainError::Unavailable(format!("reading the task's output: {e}"))),
        };
        let content_type = result.content_type.clone();
        let uri = self.storage.uri_for(&format!("works/{}/output.{}", work.id, extension(&content_type)));
        self.storage
            .put(&uri, bytes.clone())
            .await
            .map_err(|e| crate::domain::DomainError::Unavailable(format!("storing the work's file: {e}")))?;
        let file = WorkFile { uri: uri.clone(), content_type, width: result.width, height: result.height, size: bytes.len() as u64 };
        if !self.db.complete_work(&work.id, &file).await? {
            // Completed by another replica (the same key, the same bytes), or deleted meanwhile:
            // then the copy just stored is nobody's.
            if self.db.work(&work.id).await?.is_none() {
                self.deletions.queue(&uri, Some(&work.id)).await?;
            }
            return Ok(());
        }
        tracing::info!(work = %work.id, task = %task.id, "work completed");
        if let Err(e) = self.make_thumbnail(&work.id, bytes).await {
            tracing::warn!(work = %work.id, error = %e, "thumbnail not made; the sweep retries");
            self.thumbnail_failed(&work.id, 0).await;
        }
        Ok(())
    }

    async fn retry_thumbnail(&self, work: &Work) {
        let Some(uri) = &work.output_uri else { return };
        let made = match self.storage.get(uri, self.settings.max_file_bytes).await {
            Ok(bytes) => self.make_thumbnail(&work.id, bytes).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = made {
            tracing::warn!(work = %work.id, attempts = work.thumb_attempts + 1, error = %e, "thumbnail not made");
            self.thumbnail_failed(&work.id, work.thumb_attempts).await;
        }
    }

    async fn thumbnail_failed(&self, work_id: &str, attempts_before: u32) {
        let attempts = attempts_before + 1;
        let retry_at = (attempts < self.settings.thumbnail_attempts).then(|| now_ms().saturating_add(duration_ms(backoff(attempts))));
        if let Err(e) = self.db.thumbnail_failed(work_id, retry_at).await {
            tracing::warn!(work = %work_id, error = %e, "cannot record a failed thumbnail attempt");
        }
    }

    /// Makes and stores the thumbnail of `work_id` from its file's bytes.
    async fn make_thumbnail(&self, work_id: &str, bytes: bytes::Bytes) -> Result<(), String> {
        let (limits, side) = (self.settings.image_limits, self.settings.thumbnail_side);
        let span = tracing::Span::current();
        let thumb = tokio::task::spawn_blocking(move || span.in_scope(|| purrify_imaging::thumbnail(&bytes, &limits, side)))
            .await
            .map_err(|e| format!("thumbnail task: {e}"))?
            .map_err(|e| e.to_string())?;
        let uri = self.storage.uri_for(&format!("works/{work_id}/thumbnail.{}", purrify_imaging::Thumbnail::EXTENSION));
        self.storage.put(&uri, thumb.jpeg.into()).await.map_err(|e| e.to_string())?;
        match self.db.set_work_thumbnail(work_id, &uri).await {
            Ok(true) => Ok(()),
            // Deleted meanwhile (a work that has one keeps it: the same key was rewritten).
            Ok(false) => match self.db.work(work_id).await {
                Ok(Some(_)) => Ok(()),
                _ => self.deletions.queue(&uri, Some(work_id)).await.map_err(|e| e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A new work's title: its task's (seed 002's tasks have one), else the day and minute the
/// task was created (UTC). Users rename it.
fn title_of(task_title: Option<&str>, created_at: i64) -> String {
    match task_title.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t.chars().filter(|c| !c.is_control()).take(super::MAX_TITLE_CHARS).collect(),
        None => {
            let at = chrono::DateTime::from_timestamp_millis(created_at).unwrap_or_default();
            format!("Photo {}", at.format("%Y-%m-%d %H:%M"))
        }
    }
}

/// What a task kind makes: the video generation kinds make videos, everything else images.
fn work_kind(task_kind: &str) -> WorkKind {
    if task_kind.contains("video") { WorkKind::Video } else { WorkKind::Image }
}

/// 244 random bits (two v4 UUIDs), hex: the capability in a work's media URLs.
fn media_key() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_keys() {
        assert_eq!(title_of(None, 1_700_000_000_000), "Photo 2023-11-14 22:13");
        assert_eq!(title_of(Some("  "), 1_700_000_000_000), "Photo 2023-11-14 22:13");
        assert_eq!(title_of(Some(" Grandma\n1962 "), 0), "Grandma1962");
        assert_eq!(title_of(Some(&"x".repeat(500)), 0).len(), 100);
        assert_eq!((work_kind("enhance"), work_kind("text-to-video")), (WorkKind::Image, WorkKind::Video));
        let (a, b) = (media_key(), media_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
