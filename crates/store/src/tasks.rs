//! The `tasks` table: every enhancement task and its lifecycle (DESIGN section 3). Every
//! state change is one conditional `UPDATE` whose `WHERE` names the state it expects (and,
//! while processing, the attempt's job id) and reports whether it applied. Two dispatchers, a
//! restarted one and a late follower of an old attempt therefore cannot both move a task.

use std::str::FromStr;
use std::time::Duration;

use purrify_api::{EnhanceParams, FailReason, JobResult, TaskStatus};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::task_lists::TaskMeta;
use crate::time::{duration_ms, now_ms};
use crate::{Db, StoreError};

/// What the HTTP layer knows when it accepts an upload.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub id: String,
    pub input_uri: String,
    pub output_uri: String,
    pub content_type: String,
    pub input_bytes: u64,
    pub params: EnhanceParams,
    /// Higher runs first.
    pub priority: i32,
    /// The owning account; `None` for an anonymous upload.
    pub user_id: Option<String>,
    /// Fairness group; defaults to the owner. Tasks without either share a single group, so
    /// pass e.g. the client address for anonymous uploads: one anonymous burst then cannot
    /// starve everyone else.
    pub fair_group: Option<String>,
    /// The `X-Request-ID` of the upload, forwarded to the worker.
    pub request_id: Option<String>,
    /// Time allowed from acceptance to result. `None`: the dispatcher's default.
    pub deadline: Option<Duration>,
    /// Kind, title, scene, callback and the like (see [`TaskMeta`]).
    pub meta: TaskMeta,
    /// At most this many of the owner's tasks may be queued or processing: the insert
    /// counts them under the owner's write lock and refuses with
    /// [`StoreError::LimitReached`] when full, so two concurrent inserts cannot both take
    /// the last slot. `None`: no limit.
    pub max_active: Option<u32>,
}

impl NewTask {
    pub fn new(id: impl Into<String>, input_uri: impl Into<String>, output_uri: impl Into<String>, params: EnhanceParams) -> Self {
        Self {
            id: id.into(),
            input_uri: input_uri.into(),
            output_uri: output_uri.into(),
            content_type: "application/octet-stream".into(),
            input_bytes: 0,
            params,
            priority: 0,
            user_id: None,
            fair_group: None,
            request_id: None,
            deadline: None,
            meta: TaskMeta::default(),
            max_active: None,
        }
    }
}

/// One row of `tasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub status: TaskStatus,
    /// 0..=1, as last written (coarse while processing; see the hub for live progress).
    pub progress: f64,
    pub input_uri: String,
    pub output_uri: String,
    pub content_type: String,
    pub input_bytes: u64,
    pub params: EnhanceParams,
    pub priority: i32,
    pub user_id: Option<String>,
    /// Endpoint of the worker running the current attempt.
    pub worker: Option<String>,
    /// Job id of the current attempt on that worker: `{task_id}-{attempt}`.
    pub job_id: Option<String>,
    /// Attempts started (a 429 from a worker does not count).
    pub attempts: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub result: Option<JobResult>,
    pub request_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub deadline_at: i64,
}

/// A failed task's stored error: the public `error_code` and the client-safe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

impl Task {
    pub fn failure(&self) -> Option<Failure<'_>> {
        match (&self.error_code, self.status) {
            (Some(code), TaskStatus::Failed) => Some(Failure { code, message: self.error_message.as_deref().unwrap_or_default() }),
            _ => None,
        }
    }
}

/// Which rows a transition may move: the state the caller last saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard<'a> {
    /// Still queued.
    Queued,
    /// Processing under this job id (the attempt the caller is following).
    Job(&'a str),
}

/// A task's state as another system reports it (see [`Db::mirror_task`]).
#[derive(Debug, Clone, Copy)]
pub struct Mirror<'a> {
    pub id: &'a str,
    pub status: TaskStatus,
    pub progress: f64,
    pub worker: Option<&'a str>,
    pub job_id: Option<&'a str>,
    pub attempts: u32,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub result: Option<&'a JobResult>,
}

/// Tasks per status, from one `GROUP BY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub queued: u64,
    pub processing: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl StatusCounts {
    pub fn get(&self, status: TaskStatus) -> u64 {
        match status {
            TaskStatus::Queued => self.queued,
            TaskStatus::Processing => self.processing,
            TaskStatus::Completed => self.completed,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
        }
    }

    fn slot(&mut self, status: TaskStatus) -> &mut u64 {
        match status {
            TaskStatus::Queued => &mut self.queued,
            TaskStatus::Processing => &mut self.processing,
            TaskStatus::Completed => &mut self.completed,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
        }
    }
}

/// A finished task's storage objects, for housekeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedObjects {
    pub id: String,
    pub input_uri: String,
    pub output_uri: String,
    /// A generation task's further files (the `uri`s of its `outputs` list besides the
    /// first, which is `output_uri`).
    pub extra_uris: Vec<String>,
}

/// The `uri` of every file in a task's `outputs` list other than `output_uri`.
fn extra_uris(outputs: Option<&str>, output_uri: &str) -> Vec<String> {
    let Some(list) = outputs.and_then(|o| serde_json::from_str::<Vec<serde_json::Value>>(o).ok()) else { return Vec::new() };
    list.iter().filter_map(|f| f.get("uri")?.as_str()).filter(|u| *u != output_uri).map(str::to_owned).collect()
}

macro_rules! task_columns {
    () => {
        "id, status, progress, input_uri, output_uri, content_type, input_bytes, params, \
         priority, user_id, worker, job_id, attempts, error_code, error_message, result, \
         request_id, created_at, updated_at, started_at, finished_at, deadline_at"
    };
}
pub(crate) use task_columns;

impl Db {
    /// Inserts a queued task. Returns once committed: on PostgreSQL and on SQLite (WAL,
    /// `synchronous=FULL`) the row survives a crash from then on, so the HTTP layer may
    /// answer 2xx.
    pub async fn insert_task(&self, task: &NewTask, deadline: Duration) -> Result<Task, StoreError> {
        self.insert_task_at(task, deadline, now_ms()).await
    }

    /// As [`insert_task`](Self::insert_task) with an explicit creation time (imports, tests
    /// that need a known age order).
    pub async fn insert_task_at(&self, task: &NewTask, deadline: Duration, now: i64) -> Result<Task, StoreError> {
        let params = serde_json::to_string(&task.params).map_err(|e| StoreError::Invalid(format!("params: {e}")))?;
        let input_bytes = i64::try_from(task.input_bytes).map_err(|_| StoreError::Invalid("input_bytes out of range".into()))?;
        let deadline_at = now.saturating_add(duration_ms(task.deadline.unwrap_or(deadline)));
        // The fair tag is computed in the same statement (see the migration): the virtual
        // time of this priority is its smallest queued tag, or its largest tag when nothing
        // is queued, so an idle group cannot bank credit and a busy one cannot jump ahead.
        let meta = &task.meta;
        let limited = match (task.max_active, task.user_id.as_deref()) {
            (Some(limit), Some(user)) => Some((i64::from(limit), user)),
            _ => None,
        };
        // With a limit, the count and the insert run under the owner's write lock (the
        // advisory lock of their account on PostgreSQL, the database lock on SQLite).
        let mut tx = match limited {
            Some((_, user)) => Some(self.begin_write(&crate::ledger::account_scope(user)).await?),
            None => None,
        };
        let query = sqlx::query(
            "INSERT INTO tasks (id, status, progress, input_uri, output_uri, content_type, \
             input_bytes, params, priority, user_id, fair_group, fair_tag, attempts, request_id, \
             created_at, updated_at, deadline_at, kind, title, description, scene_id, callback_url, \
             retry_of, estimated_seconds, runner, provider, model, job) \
             SELECT $1, 'queued', 0, $2, $3, $4, $5, $6, $7, $8, $12, \
                    CASE WHEN v.vt > v.ut THEN v.vt ELSE v.ut END, 0, $9, $10, $10, $11, \
                    $13, $14, $15, $16, $17, $18, $19, $21, $22, $23, $24 \
             FROM (SELECT \
                 COALESCE((SELECT MIN(fair_tag) FROM tasks WHERE status = 'queued' AND priority = $7), \
                          (SELECT MAX(fair_tag) FROM tasks WHERE priority = $7), 0) AS vt, \
                 COALESCE((SELECT MAX(fair_tag) FROM tasks \
                           WHERE fair_group = $12 AND priority = $7), -1) + 1 AS ut) AS v \
             WHERE $20 < 0 OR (SELECT COUNT(*) FROM tasks \
                               WHERE user_id = $8 AND status IN ('queued', 'processing')) < $20",
        )
        .bind(&task.id)
        .bind(&task.input_uri)
        .bind(&task.output_uri)
        .bind(&task.content_type)
        .bind(input_bytes)
        .bind(&params)
        .bind(i64::from(task.priority))
        .bind(task.user_id.as_deref())
        .bind(task.request_id.as_deref())
        .bind(now)
        .bind(deadline_at)
        .bind(task.fair_group.as_deref().or(task.user_id.as_deref()).unwrap_or(""))
        .bind(&meta.kind)
        .bind(meta.title.as_deref())
        .bind(meta.description.as_deref())
        .bind(meta.scene_id.as_deref())
        .bind(meta.callback_url.as_deref())
        .bind(meta.retry_of.as_deref())
        .bind(meta.estimated_seconds)
        .bind(limited.map_or(-1, |(limit, _)| limit))
        .bind(meta.generation.as_ref().map_or(crate::task_lists::Runner::Engine, |g| g.runner).as_str())
        .bind(meta.generation.as_ref().map(|g| g.provider.as_str()))
        .bind(meta.generation.as_ref().map(|g| g.model.as_str()))
        .bind(meta.generation.as_ref().map(|g| g.job.as_str()));
        let inserted = match tx.as_mut() {
            Some(tx) => query.execute(&mut **tx).await,
            None => query.execute(&self.pool).await,
        };
        match inserted {
            Ok(done) if done.rows_affected() == 0 => {
                if let Some(tx) = tx {
                    tx.rollback().await?;
                }
                return Err(StoreError::LimitReached(format!("{} tasks already queued or running", task.max_active.unwrap_or(0))));
            }
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Duplicate(format!("task {}", task.id)));
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        Ok(Task {
            id: task.id.clone(),
            status: TaskStatus::Queued,
            progress: 0.0,
            input_uri: task.input_uri.clone(),
            output_uri: task.output_uri.clone(),
            content_type: task.content_type.clone(),
            input_bytes: task.input_bytes,
            params: task.params,
            priority: task.priority,
            user_id: task.user_id.clone(),
            worker: None,
            job_id: None,
            attempts: 0,
            error_code: None,
            error_message: None,
            result: None,
            request_id: task.request_id.clone(),
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            deadline_at,
        })
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// The engine's queued tasks (not the provider runner's) in dispatch order: priority
    /// (highest first), then fair tag, then age.
    /// Within a priority this interleaves users: each group's tasks carry consecutive tags
    /// from where the queue stood when they arrived, so one user's burst waits behind other
    /// users' tasks instead of in front of them, while a retried task keeps its place.
    pub async fn queued_tasks(&self, limit: u32) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE status = 'queued' AND runner = 'engine' \
             ORDER BY priority DESC, fair_tag, created_at, id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The engine's tasks being processed (to re-attach to after a restart), oldest attempt
    /// first.
    pub async fn processing_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE status = 'processing' AND runner = 'engine' ORDER BY started_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The engine's queued or processing tasks whose deadline is at or before `now`.
    pub async fn tasks_past_deadline(&self, now: i64, limit: u32) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE status IN ('queued', 'processing') AND deadline_at <= $1 AND runner = 'engine' \
             ORDER BY deadline_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Queued -> processing on `worker` as attempt `attempts_seen + 1` under `job_id`, only
    /// if the task is still queued with `attempts_seen` attempts. `false`: someone else
    /// moved it first.
    pub async fn claim_task(&self, id: &str, attempts_seen: u32, worker: &str, job_id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE tasks SET status = 'processing', worker = $2, job_id = $3, \
             attempts = attempts + 1, progress = 0, started_at = COALESCE(started_at, $4), \
             updated_at = $4 \
             WHERE id = $1 AND status = 'queued' AND attempts = $5",
        )
        .bind(id)
        .bind(worker)
        .bind(job_id)
        .bind(now)
        .bind(i64::from(attempts_seen))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Processing (`job_id`) -> completed with `result`.
    pub async fn complete_task(&self, id: &str, job_id: &str, result: &JobResult) -> Result<bool, StoreError> {
        let result = serde_json::to_string(result).map_err(|e| StoreError::Invalid(format!("result: {e}")))?;
        let done = sqlx::query(
            "UPDATE tasks SET status = 'completed', progress = 1, result = $3, \
             error_code = NULL, error_message = NULL, finished_at = $4, updated_at = $4 \
             WHERE id = $1 AND status = 'processing' AND job_id = $2",
        )
        .bind(id)
        .bind(job_id)
        .bind(&result)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Processing (`job_id`) -> queued for another attempt. `count_attempt: false` gives the
    /// attempt back (the worker refused with 429, so nothing was tried).
    pub async fn requeue_task(&self, id: &str, job_id: &str, count_attempt: bool) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET status = 'queued', worker = NULL, job_id = NULL, progress = 0, \
             attempts = attempts - $3, updated_at = $4 \
             WHERE id = $1 AND status = 'processing' AND job_id = $2",
        )
        .bind(id)
        .bind(job_id)
        .bind(if count_attempt { 0_i64 } else { 1_i64 })
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queued or processing (per `guard`) -> failed with a client-safe message.
    pub async fn fail_task(&self, id: &str, guard: Guard<'_>, code: FailReason, message: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = match guard {
            Guard::Queued => {
                sqlx::query(
                    "UPDATE tasks SET status = 'failed', error_code = $2, error_message = $3, \
                     finished_at = $4, updated_at = $4 WHERE id = $1 AND status = 'queued'",
                )
                .bind(id)
                .bind(code.code())
                .bind(message)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            Guard::Job(job_id) => {
                sqlx::query(
                    "UPDATE tasks SET status = 'failed', error_code = $2, error_message = $3, \
                     finished_at = $4, updated_at = $4 \
                     WHERE id = $1 AND status = 'processing' AND job_id = $5",
                )
                .bind(id)
                .bind(code.code())
                .bind(message)
                .bind(now)
                .bind(job_id)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Queued or processing (per `guard`) -> cancelled.
    pub async fn cancel_task(&self, id: &str, guard: Guard<'_>) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = match guard {
            Guard::Queued => {
                sqlx::query(
                    "UPDATE tasks SET status = 'cancelled', finished_at = $2, updated_at = $2 \
                     WHERE id = $1 AND status = 'queued'",
                )
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            Guard::Job(job_id) => {
                sqlx::query(
                    "UPDATE tasks SET status = 'cancelled', finished_at = $2, updated_at = $2 \
                     WHERE id = $1 AND status = 'processing' AND job_id = $3",
                )
                .bind(id)
                .bind(now)
                .bind(job_id)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Coarse progress of the attempt `job_id` (the hub has the fine-grained one).
    pub async fn update_progress(&self, id: &str, job_id: &str, progress: f64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET progress = $3, updated_at = $4 \
             WHERE id = $1 AND status = 'processing' AND job_id = $2",
        )
        .bind(id)
        .bind(job_id)
        .bind(progress.clamp(0.0, 1.0))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Tasks per status over the whole table (admin statistics; a scan on big tables).
    pub async fn count_by_status(&self) -> Result<StatusCounts, StoreError> {
        self.counts("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status").await
    }

    /// Queued and processing counts only (queue depth metric): index-only, cheap.
    pub async fn count_active(&self) -> Result<StatusCounts, StoreError> {
        self.counts(
            "SELECT status, COUNT(*) AS n FROM tasks \
             WHERE status IN ('queued', 'processing') GROUP BY status",
        )
        .await
    }

    async fn counts(&self, sql: &'static str) -> Result<StatusCounts, StoreError> {
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        let mut counts = StatusCounts::default();
        for row in &rows {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            let status = TaskStatus::from_str(&status).map_err(StoreError::Corrupt)?;
            *counts.slot(status) = u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }

    /// Deletes finished tasks that finished more than `age` ago. Returns how many.
    pub async fn delete_finished_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let cutoff = now_ms().saturating_sub(duration_ms(age));
        let done = sqlx::query(
            "DELETE FROM tasks WHERE status IN ('completed', 'failed', 'cancelled') \
             AND finished_at < $1",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Oldest finished tasks that finished before `cutoff` (unix ms), with their objects, for
    /// housekeeping that also deletes from storage.
    pub async fn finished_before(&self, cutoff: i64, limit: u32) -> Result<Vec<FinishedObjects>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, input_uri, output_uri, outputs FROM tasks \
             WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < $1 \
             ORDER BY finished_at, id LIMIT $2",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let output_uri: String = r.try_get("output_uri")?;
                let outputs: Option<String> = r.try_get("outputs")?;
                Ok(FinishedObjects {
                    id: r.try_get("id")?,
                    input_uri: r.try_get("input_uri")?,
                    extra_uris: extra_uris(outputs.as_deref(), &output_uri),
                    output_uri,
                })
            })
            .collect()
    }

    /// Records the state another system decided (Kubernetes mode: the operator drives tasks
    /// and the gateway keeps their history). A finished row is never changed again, so a
    /// late or replayed watch event cannot undo an outcome.
    pub async fn mirror_task(&self, m: &Mirror<'_>) -> Result<bool, StoreError> {
        let result = match m.result {
            Some(r) => Some(serde_json::to_string(r).map_err(|e| StoreError::Invalid(format!("result: {e}")))?),
            None => None,
        };
        let now = now_ms();
        let finished = m.status.is_finished().then_some(now);
        let done = sqlx::query(
            "UPDATE tasks SET status = $2, progress = $3, worker = $4, job_id = $5, attempts = $6, \
             error_code = $7, error_message = $8, result = $9, \
             started_at = CASE WHEN $2 = 'processing' THEN COALESCE(started_at, $10) ELSE started_at END, \
             finished_at = COALESCE($11, finished_at), updated_at = $10 \
             WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
        )
        .bind(m.id)
        .bind(m.status.as_str())
        .bind(m.progress)
        .bind(m.worker)
        .bind(m.job_id)
        .bind(i64::from(m.attempts))
        .bind(m.error_code)
        .bind(m.error_message)
        .bind(result.as_deref())
        .bind(now)
        .bind(finished)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes one task if it is finished.
    pub async fn delete_finished_task(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tasks WHERE id = $1 AND status IN ('completed', 'failed', 'cancelled')")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn corrupt(id: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("task {id}: {what}"))
}

pub(crate) fn task_from_row(row: &AnyRow) -> Result<Task, StoreError> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let status = TaskStatus::from_str(&status).map_err(|e| corrupt(&id, e))?;
    let params: String = row.try_get("params")?;
    let params: EnhanceParams = serde_json::from_str(&params).map_err(|e| corrupt(&id, format!("params: {e}")))?;
    let result: Option<String> = row.try_get("result")?;
    let result = result.map(|r| serde_json::from_str::<JobResult>(&r)).transpose().map_err(|e| corrupt(&id, format!("result: {e}")))?;
    let input_bytes: i64 = row.try_get("input_bytes")?;
    let priority: i64 = row.try_get("priority")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Task {
        status,
        progress: row.try_get("progress")?,
        input_uri: row.try_get("input_uri")?,
        output_uri: row.try_get("output_uri")?,
        content_type: row.try_get("content_type")?,
        input_bytes: u64::try_from(input_bytes).map_err(|e| corrupt(&id, e))?,
        params,
        priority: i32::try_from(priority).map_err(|e| corrupt(&id, e))?,
        user_id: row.try_get("user_id")?,
        worker: row.try_get("worker")?,
        job_id: row.try_get("job_id")?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt(&id, e))?,
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
        result,
        request_id: row.try_get("request_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        deadline_at: row.try_get("deadline_at")?,
        id,
    })
}
