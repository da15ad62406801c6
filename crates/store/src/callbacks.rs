//! The `callback_deliveries` table: the signed POST a finished task with a `callback_url`
//! owes its client. A delivery is created once per task (the primary key), claimed attempt by
//! attempt with a conditional `UPDATE`, and ends delivered or given up.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Db, StoreError};

/// Task statuses that end a task (the ones a callback reports).
const FINISHED: &str = "('completed', 'failed', 'cancelled')";

/// One task's callback delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackDelivery {
    pub task_id: String,
    pub url: String,
    /// Attempts claimed so far.
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    pub given_up_at: Option<i64>,
    pub created_at: i64,
}

impl CallbackDelivery {
    /// Delivered or given up: nothing more will be sent.
    pub fn is_settled(&self) -> bool {
        self.delivered_at.is_some() || self.given_up_at.is_some()
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer with this status.
    Delivered { status: u16 },
    /// Anything else: the status if there was an answer, and what went wrong. `retry_at`
    /// `None` gives the delivery up.
    Failed { status: Option<u16>, error: String, retry_at: Option<i64> },
}

const COLUMNS: &str = "task_id, url, attempts, next_attempt_at, last_status, last_error, delivered_at, given_up_at, created_at";

impl Db {
    /// Creates the delivery of task `task_id` if it finished with a `callback_url` and has none
    /// yet; whether one was created.
    pub async fn enqueue_callback(&self, task_id: &str, now: i64) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO callback_deliveries (task_id, url, attempts, next_attempt_at, created_at) \
             SELECT id, callback_url, 0, $2, $2 FROM tasks \
             WHERE id = $1 AND callback_url IS NOT NULL AND status IN {FINISHED} \
             ON CONFLICT (task_id) DO NOTHING"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(task_id).bind(now).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Creates the deliveries of tasks that finished since `since` with a `callback_url` and
    /// have none yet (at most `limit`); how many were created. The sweep that catches ends
    /// this gateway did not see (another replica's, or ones before a restart).
    pub async fn enqueue_finished_callbacks(&self, since: i64, now: i64, limit: u32) -> Result<u64, StoreError> {
        let sql = format!(
            "INSERT INTO callback_deliveries (task_id, url, attempts, next_attempt_at, created_at) \
             SELECT t.id, t.callback_url, 0, $2, $2 FROM tasks t \
             WHERE t.callback_url IS NOT NULL AND t.finished_at >= $1 AND t.status IN {FINISHED} \
             AND NOT EXISTS (SELECT 1 FROM callback_deliveries d WHERE d.task_id = t.id) \
             ORDER BY t.finished_at LIMIT $3 \
             ON CONFLICT (task_id) DO NOTHING"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since).bind(now).bind(i64::from(limit)).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    /// Deliveries due at `now`, soonest first (at most `limit`). Claim one before sending it.
    pub async fn due_callbacks(&self, now: i64, limit: u32) -> Result<Vec<CallbackDelivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM callback_deliveries \
             WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, task_id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    pub async fn callback_delivery(&self, task_id: &str) -> Result<Option<CallbackDelivery>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM callback_deliveries WHERE task_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(task_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    /// Claims the next attempt of `d` as read: counts it and moves the due time to
    /// `lease_until`, only if the delivery is still due at `now` with the attempts `d` saw.
    /// Whether this caller got it (of two gateways claiming the same read, one does).
    pub async fn claim_callback(&self, d: &CallbackDelivery, now: i64, lease_until: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE callback_deliveries SET attempts = attempts + 1, next_attempt_at = $4 \
             WHERE task_id = $1 AND attempts = $2 AND next_attempt_at <= $3 \
             AND delivered_at IS NULL AND given_up_at IS NULL",
        )
        .bind(&d.task_id)
        .bind(i64::from(d.attempts))
        .bind(now)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records how claimed attempt number `attempt` ended; ignored (false) if the delivery
    /// moved on meanwhile (settled, or a later attempt claimed after the lease ran out).
    pub async fn record_callback_attempt(
        &self,
        task_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Result<bool, StoreError> {
        let q = match outcome {
            AttemptOutcome::Delivered { status } => sqlx::query(
                "UPDATE callback_deliveries SET delivered_at = $3, last_status = $4, last_error = NULL \
                 WHERE task_id = $1 AND attempts = $2 AND delivered_at IS NULL AND given_up_at IS NULL",
            )
            .bind(task_id)
            .bind(i64::from(attempt))
            .bind(now)
            .bind(i64::from(*status)),
            AttemptOutcome::Failed { status, error, retry_at: Some(at) } => sqlx::query(
                "UPDATE callback_deliveries SET last_status = $4, last_error = $5, next_attempt_at = $3 \
                 WHERE task_id = $1 AND attempts = $2 AND delivered_at IS NULL AND given_up_at IS NULL",
            )
            .bind(task_id)
            .bind(i64::from(attempt))
            .bind(*at)
            .bind(status.map(i64::from))
            .bind(error.clone()),
            AttemptOutcome::Failed { status, error, retry_at: None } => sqlx::query(
                "UPDATE callback_deliveries SET last_status = $4, last_error = $5, given_up_at = $3 \
                 WHERE task_id = $1 AND attempts = $2 AND delivered_at IS NULL AND given_up_at IS NULL",
            )
            .bind(task_id)
            .bind(i64::from(attempt))
            .bind(now)
            .bind(status.map(i64::from))
            .bind(error.clone()),
        };
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }
}

fn delivery_from_row(row: &AnyRow) -> Result<CallbackDelivery, StoreError> {
    let attempts: i64 = row.try_get("attempts")?;
    let last_status: Option<i64> = row.try_get("last_status")?;
    Ok(CallbackDelivery {
        task_id: row.try_get("task_id")?,
        url: row.try_get("url")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status: last_status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
        delivered_at: row.try_get("delivered_at")?,
        given_up_at: row.try_get("given_up_at")?,
        created_at: row.try_get("created_at")?,
    })
}
