//! A user's tasks, read from the `tasks` table by owner (the `tasks_user_created` index).

use sqlx::Row;

use crate::{Db, StoreError};

/// Totals of one user's tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserTaskStats {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Sum of the tasks' prices, in hundredths of a credit.
    pub total_cost: i64,
    /// Completed tasks at 4x: seed 003's `hdCount`.
    pub hd_completed: u64,
    /// Creation time of the newest task (unix ms).
    pub last_task_at: Option<i64>,
}

impl Db {
    /// The user's totals in one pass over their rows.
    pub async fn user_task_stats(&self, user_id: &str) -> Result<UserTaskStats, StoreError> {
        let row = sqlx::query(
            // SUM over BIGINT is NUMERIC on PostgreSQL, which `Any` cannot decode: cast back.
            // `params` is compact serde_json of EnhanceParams, so a 4x task reads `"scale":4`.
            "SELECT COUNT(*) AS total, \
                    COALESCE(SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0) AS completed, \
                    COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS failed, \
                    COALESCE(SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END), 0) AS cancelled, \
                    COALESCE(SUM(CASE WHEN status = 'completed' AND params LIKE '%\"scale\":4%' THEN 1 ELSE 0 END), 0) AS hd, \
                    CAST(COALESCE(SUM(cost), 0) AS BIGINT) AS total_cost, MAX(created_at) AS last_task_at \
             FROM tasks WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        let count = |name: &str| -> Result<u64, StoreError> { Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0)) };
        Ok(UserTaskStats {
            total: count("total")?,
            completed: count("completed")?,
            failed: count("failed")?,
            cancelled: count("cancelled")?,
            hd_completed: count("hd")?,
            total_cost: row.try_get("total_cost")?,
            last_task_at: row.try_get("last_task_at")?,
        })
    }
}
