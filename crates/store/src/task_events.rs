//! Each task's timeline (seed 002's `/api/logs/tasks/{id}`): queued, dispatched to which
//! worker, attempts, progress marks and the outcome. Every event has a key unique within its
//! task, and a second write of the same key is ignored: two gateway replicas that both see a
//! task change (Kubernetes mode, where every replica watches the custom resources) store it
//! once.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::system_logs::{INSERT_CHUNK, purge_before, values_placeholders};
use crate::{Db, StoreError};

/// One event of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    pub task_id: String,
    /// Unique within the task (`queued:0`, `dispatched:1`, `progress:1:50`, `completed`...).
    pub event_key: String,
    /// queued, dispatched, progress, completed, failed or cancelled.
    pub kind: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub attempt: i64,
    pub worker: Option<String>,
    /// 0..=1.
    pub progress: Option<f64>,
    pub error_code: Option<String>,
    pub message: Option<String>,
}

const COLUMNS: &str = "task_id, event_key, kind, created_at, attempt, worker, progress, error_code, message";

fn event_from_row(row: &AnyRow) -> Result<TaskEvent, StoreError> {
    Ok(TaskEvent {
        task_id: row.try_get("task_id")?,
        event_key: row.try_get("event_key")?,
        kind: row.try_get("kind")?,
        created_at: row.try_get("created_at")?,
        attempt: row.try_get("attempt")?,
        worker: row.try_get("worker")?,
        progress: row.try_get("progress")?,
        error_code: row.try_get("error_code")?,
        message: row.try_get("message")?,
    })
}

impl Db {
    /// Stores the events whose key their task does not have yet; returns how many were new.
    pub async fn insert_task_events(&self, events: &[TaskEvent]) -> Result<u64, StoreError> {
        let mut written = 0;
        for chunk in events.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO task_events ({COLUMNS}) VALUES {} ON CONFLICT (task_id, event_key) DO NOTHING",
                values_placeholders(chunk.len(), 9)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(&e.task_id)
                    .bind(&e.event_key)
                    .bind(&e.kind)
                    .bind(e.created_at)
                    .bind(e.attempt)
                    .bind(e.worker.as_deref())
                    .bind(e.progress)
                    .bind(e.error_code.as_deref())
                    .bind(e.message.as_deref());
            }
            written += q.execute(self.pool()).await?.rows_affected();
        }
        Ok(written)
    }

    /// A task's events in the order they happened (at most `limit`).
    pub async fn task_events(&self, task_id: &str, limit: u32) -> Result<Vec<TaskEvent>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM task_events WHERE task_id = $1 ORDER BY created_at, attempt, event_key LIMIT $2"
        )))
        .bind(task_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Deletes up to `limit` events older than `before` (unix ms); returns how many.
    pub async fn purge_task_events(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        purge_before(self, "task_events", "task_id, event_key", before, limit).await
    }
}
