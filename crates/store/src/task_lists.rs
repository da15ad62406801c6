//! Reading the `tasks` table the way the task-management surfaces do (seeds 001 and 002):
//! a task with what its detail shows beyond its lifecycle (kind, title, scene, callback, cost),
//! filtered and sorted pages for a user or for admins, hiding a finished task, and the queue
//! statistics (depth, average wait, a user's position in dispatch order). The lifecycle
//! writes stay in [`crate::tasks`].

use purrify_api::TaskStatus;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::page::{Page, PageRequest};
use crate::tasks::{Task, task_columns, task_from_row};
use crate::time::now_ms;
use crate::{Db, StoreError};

/// The default task kind (DESIGN section 10: `enhance` runs on GPU workers).
pub const DEFAULT_KIND: &str = "enhance";

/// What a task carries besides its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMeta {
    pub kind: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub scene_id: Option<String>,
    /// Where the outcome is POSTed when the task finishes.
    pub callback_url: Option<String>,
    /// The failed or cancelled task this one runs again.
    pub retry_of: Option<String>,
    /// The client's estimate, in seconds (seed 002's `estimated_duration`).
    pub estimated_seconds: Option<i64>,
    /// A generation task's provider, model and request (`None`: an enhancement task).
    pub generation: Option<Generation>,
}

/// Who runs a task (see the `providers` migration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// The enhancement engine: the dispatcher or the EnhanceTask CRs.
    Engine,
    /// The gateway's provider runner, calling an outside service.
    Provider,
}

impl Runner {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Engine => "engine",
            Self::Provider => "provider",
        }
    }
}

/// What a generation task asks of which provider, and (read back) how it went there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub runner: Runner,
    pub provider: String,
    pub model: String,
    /// The request in the domain's terms, JSON.
    pub job: String,
    /// Set by the runner: the provider that served it (a fallback's id when the first was
    /// down), the provider's job id while pending, the stored files (JSON list).
    pub served_by: Option<String>,
    pub remote_id: Option<String>,
    pub outputs: Option<String>,
}

impl Default for TaskMeta {
    fn default() -> Self {
        Self {
            kind: DEFAULT_KIND.into(),
            title: None,
            description: None,
            scene_id: None,
            callback_url: None,
            retry_of: None,
            estimated_seconds: None,
            generation: None,
        }
    }
}

/// A task with everything its detail shows.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub task: Task,
    pub meta: TaskMeta,
    /// What it cost its owner, in hundredths (0 until its charge is captured).
    pub cost: i64,
    /// When its owner deleted it (hidden from lists and details).
    pub hidden_at: Option<i64>,
}

/// Which tasks a page lists. Hidden (deleted) tasks are never listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// One owner's tasks; `None`: everyone's (admins).
    pub user_id: Option<String>,
    pub status: Option<TaskStatus>,
    pub kind: Option<String>,
}

/// The order of a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskSort {
    #[default]
    CreatedAt,
    UpdatedAt,
    Priority,
}

impl TaskSort {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "created_at" => Some(Self::CreatedAt),
            "updated_at" => Some(Self::UpdatedAt),
            "priority" => Some(Self::Priority),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Priority => "priority",
        }
    }
}

/// Queue figures (seed 001's `/api/tasks/stats/queue`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueFigures {
    pub queued: u64,
    pub processing: u64,
    /// Mean time from creation to start of the tasks started in the window, in ms.
    pub average_wait_ms: Option<f64>,
    /// How many of those the mean is over.
    pub recently_started: u64,
}

macro_rules! record_columns {
    () => {
        concat!(
            task_columns!(),
            ", kind, title, description, scene_id, callback_url, retry_of, estimated_seconds, cost, hidden_at, \
             runner, provider, model, job, served_by, remote_id, outputs"
        )
    };
}

fn record_from_row(row: &AnyRow) -> Result<TaskRecord, StoreError> {
    Ok(TaskRecord {
        task: task_from_row(row)?,
        meta: TaskMeta {
            kind: row.try_get("kind")?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            scene_id: row.try_get("scene_id")?,
            callback_url: row.try_get("callback_url")?,
            retry_of: row.try_get("retry_of")?,
            estimated_seconds: row.try_get("estimated_seconds")?,
            generation: generation_from_row(row)?,
        },
        cost: row.try_get("cost")?,
        hidden_at: row.try_get("hidden_at")?,
    })
}

fn generation_from_row(row: &AnyRow) -> Result<Option<Generation>, StoreError> {
    let Some(provider) = row.try_get::<Option<String>, _>("provider")? else { return Ok(None) };
    let runner = match row.try_get::<String, _>("runner")?.as_str() {
        "engine" => Runner::Engine,
        "provider" => Runner::Provider,
        other => return Err(StoreError::Corrupt(format!("task runner {other:?}"))),
    };
    Ok(Some(Generation {
        runner,
        provider,
        model: row.try_get::<Option<String>, _>("model")?.unwrap_or_default(),
        job: row.try_get::<Option<String>, _>("job")?.unwrap_or_default(),
        served_by: row.try_get("served_by")?,
        remote_id: row.try_get("remote_id")?,
        outputs: row.try_get("outputs")?,
    }))
}

impl Db {
    /// A task with its detail, hidden or not (callers decide what a hidden task reads as).
    pub async fn task_record(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let row =
            sqlx::query(concat!("SELECT ", record_columns!(), " FROM tasks WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// One page of tasks, `sort` then id in the same direction (a stable order for paging).
    /// Only the filters given reach the SQL, so each query has the plan of its index
    /// (`tasks_user_status_updated`, `tasks_user_updated`, `tasks_status_updated`,
    /// `tasks_updated`, `tasks_created`).
    pub async fn task_page(
        &self,
        filter: &TaskFilter,
        sort: TaskSort,
        ascending: bool,
        page: PageRequest,
    ) -> Result<Page<TaskRecord>, StoreError> {
        let mut clauses = vec!["hidden_at IS NULL".to_string()];
        let mut binds: Vec<String> = Vec::new();
        if let Some(user) = &filter.user_id {
            binds.push(user.clone());
            clauses.push(format!("user_id = ${}", binds.len()));
        }
        if let Some(status) = filter.status {
            binds.push(status.as_str().to_string());
            clauses.push(format!("status = ${}", binds.len()));
        }
        if let Some(kind) = &filter.kind {
            binds.push(kind.clone());
            clauses.push(format!("kind = ${}", binds.len()));
        }
        let where_sql = clauses.join(" AND ");
        let count_sql = format!("SELECT COUNT(*) AS n FROM tasks WHERE {where_sql}");
        let mut count = sqlx::query(sqlx::AssertSqlSafe(count_sql));
        for b in &binds {
            count = count.bind(b.clone());
        }
        let total: i64 = count.fetch_one(&self.pool).await?.try_get("n")?;
        let dir = if ascending { "ASC" } else { "DESC" };
        let list_sql = format!(
            "SELECT {} FROM tasks WHERE {where_sql} ORDER BY {col} {dir}, id {dir} LIMIT ${} OFFSET ${}",
            record_columns!(),
            binds.len() + 1,
            binds.len() + 2,
            col = sort.column(),
        );
        let mut list = sqlx::query(sqlx::AssertSqlSafe(list_sql));
        for b in &binds {
            list = list.bind(b.clone());
        }
        let rows = list.bind(page.limit()).bind(page.offset()).fetch_all(&self.pool).await?;
        let items = rows.iter().map(record_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::new(items, u64::try_from(total).unwrap_or(0), page))
    }

    /// Hides a finished task from its owner's lists (seed 002's `DELETE /api/tasks/{id}`).
    /// `false`: it is not finished, already hidden, or missing.
    pub async fn hide_task(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET hidden_at = $2 \
             WHERE id = $1 AND hidden_at IS NULL AND status IN ('completed', 'failed', 'cancelled')",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The task that retries `id`, if one was made.
    pub async fn retry_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT id FROM tasks WHERE retry_of = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Queued and processing tasks of one user.
    pub async fn active_task_count(&self, user_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE user_id = $1 AND status IN ('queued', 'processing')")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How many queued tasks dispatch before `user_id`'s first queued one, in the
    /// dispatcher's order ([`Db::queued_tasks`]: priority high first, then fair tag, then
    /// age, then id). `None` when the user has nothing queued.
    pub async fn queue_position(&self, user_id: &str) -> Result<Option<u64>, StoreError> {
        let first = sqlx::query(
            "SELECT priority, fair_tag, created_at, id FROM tasks WHERE user_id = $1 AND status = 'queued' \
             ORDER BY priority DESC, fair_tag, created_at, id LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(first) = first else { return Ok(None) };
        let (priority, tag, created, id): (i64, i64, i64, String) =
            (first.try_get("priority")?, first.try_get("fair_tag")?, first.try_get("created_at")?, first.try_get("id")?);
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM tasks WHERE status = 'queued' AND (priority > $1 OR (priority = $1 AND \
             (fair_tag < $2 OR (fair_tag = $2 AND (created_at < $3 OR (created_at = $3 AND id < $4))))))",
        )
        .bind(priority)
        .bind(tag)
        .bind(created)
        .bind(id)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(Some(u64::try_from(n).unwrap_or(0)))
    }

    /// Queue depth, running count, and the mean wait of the last `recent` tasks started
    /// within `window_ms`.
    pub async fn queue_figures(&self, window_ms: i64, recent: u32) -> Result<QueueFigures, StoreError> {
        let counts = self.count_active().await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(AVG(started_at - created_at) AS DOUBLE PRECISION) AS wait FROM \
             (SELECT started_at, created_at FROM tasks WHERE started_at >= $1 ORDER BY started_at DESC LIMIT $2) r",
        )
        .bind(now_ms().saturating_sub(window_ms))
        .bind(i64::from(recent))
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(QueueFigures {
            queued: counts.queued,
            processing: counts.processing,
            average_wait_ms: row.try_get("wait")?,
            recently_started: u64::try_from(n).unwrap_or(0),
        })
    }
}
