//! The provider runner's side of the `tasks` table (rows with `runner = 'provider'`): its
//! queue, its restart recovery, a pending job's remote id, completion with the stored
//! files, measured durations for estimates, and the replay guard of signed callbacks. The
//! state changes are conditional updates naming the attempt (`job_id`) they expect, like the
//! engine's in [`crate::tasks`].

use purrify_api::{JobResult, TaskStatus};
use sqlx::Row;

use crate::tasks::{Task, task_columns, task_from_row};
use crate::time::now_ms;
use crate::{Db, StoreError};

impl Db {
    /// The provider runner's queued tasks, highest priority and oldest first.
    pub async fn queued_provider_tasks(&self, limit: u32) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE runner = 'provider' AND status = 'queued' ORDER BY priority DESC, created_at, id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The provider runner's tasks in progress (to resume after a restart).
    pub async fn processing_provider_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE runner = 'provider' AND status = 'processing' ORDER BY started_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The provider runner's queued or processing tasks whose deadline is at or before `now`.
    pub async fn provider_tasks_past_deadline(&self, now: i64, limit: u32) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE runner = 'provider' AND status IN ('queued', 'processing') AND deadline_at <= $1 \
             ORDER BY deadline_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Records which provider took the attempt `job_id` and its job id there (`None` while
    /// the provider has not accepted it yet).
    pub async fn set_provider_job(&self, id: &str, job_id: &str, served_by: &str, remote_id: Option<&str>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET served_by = $3, remote_id = $4, updated_at = $5 \
             WHERE id = $1 AND status = 'processing' AND job_id = $2",
        )
        .bind(id)
        .bind(job_id)
        .bind(served_by)
        .bind(remote_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a processing task whose row was not touched since `stale_before` from attempt
    /// `old_job` to `new_job` on `worker` (its runner died); `false` when it moved or was
    /// touched meanwhile.
    pub async fn take_over_provider_task(
        &self,
        id: &str,
        old_job: &str,
        new_job: &str,
        worker: &str,
        stale_before: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET job_id = $3, worker = $4, updated_at = $6 \
             WHERE id = $1 AND runner = 'provider' AND status = 'processing' AND job_id = $2 AND updated_at < $5",
        )
        .bind(id)
        .bind(old_job)
        .bind(new_job)
        .bind(worker)
        .bind(stale_before)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Processing (`job_id`) -> completed with `result` (the first file) and every stored
    /// file (`outputs`, JSON).
    pub async fn complete_provider_task(&self, id: &str, job_id: &str, result: &JobResult, outputs: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        complete_provider_task_in(&mut conn, id, job_id, result, outputs, now_ms()).await
    }

    /// How long (ms, start to finish) the last `limit` completed tasks of this kind took on
    /// this provider and model (on either runner), newest first.
    pub async fn provider_durations(&self, provider: &str, model: &str, kind: &str, limit: u32) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT finished_at - started_at AS ms FROM tasks \
             WHERE provider IS NOT NULL AND provider = $1 AND model = $2 AND kind = $3 \
               AND status = $4 AND started_at IS NOT NULL AND finished_at IS NOT NULL \
             ORDER BY finished_at DESC LIMIT $5",
        )
        .bind(provider)
        .bind(model)
        .bind(kind)
        .bind(TaskStatus::Completed.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<i64, _>("ms")?)).collect()
    }

    /// Records a callback signature; `false` when it was seen before (a replay).
    pub async fn note_signature(&self, signature: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("INSERT INTO webhook_replays (signature, seen_at) VALUES ($1, $2) ON CONFLICT (signature) DO NOTHING")
            .bind(signature)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets signatures seen before `cutoff` (their timestamps are refused by then).
    pub async fn purge_signatures(&self, cutoff: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM webhook_replays WHERE seen_at < $1").bind(cutoff).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

/// [`Db::complete_provider_task`] on `conn` (inside a caller's transaction: a postcard is
/// recorded with its task's completion).
pub(crate) async fn complete_provider_task_in(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    job_id: &str,
    result: &JobResult,
    outputs: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let result = serde_json::to_string(result).map_err(|e| StoreError::Invalid(format!("result: {e}")))?;
    let done = sqlx::query(
        "UPDATE tasks SET status = 'completed', progress = 1, result = $3, outputs = $4, \
         error_code = NULL, error_message = NULL, finished_at = $5, updated_at = $5 \
         WHERE id = $1 AND status = 'processing' AND job_id = $2",
    )
    .bind(id)
    .bind(job_id)
    .bind(&result)
    .bind(outputs)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
