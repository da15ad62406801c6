//! Task charges (DESIGN section 12): a task's price is held when it is accepted, then
//! captured when it succeeds or released when it fails, is cancelled or times out. The
//! `holds` row's state moves once, by a conditional update, in the same transaction as its
//! ledger entry, so a settlement that is retried (a crash, two replicas settling at once)
//! happens exactly once.

use sqlx::Row;

use crate::ledger::{Applied, EntryKind, NewEntry, account_scope, apply_entry_in};
use crate::time::now_ms;
use crate::{Db, StoreError};

/// What taking a hold did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Held; the balance is now this.
    Held {
        balance: i64,
    },
    /// A hold for this task exists already.
    Duplicate,
    Insufficient {
        balance: i64,
        price: i64,
    },
    NoUser,
}

/// How a hold ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Capture,
    Release,
}

/// A hold waiting for its task to finish, with what is known of the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenHold {
    pub task_id: String,
    pub user_id: String,
    pub amount: i64,
    pub created_at: i64,
    /// `None` when the task row does not exist (the task was never created, or deleted).
    pub task_status: Option<String>,
}

impl Db {
    /// Holds `price` of `user_id`'s balance for `task_id`.
    pub async fn hold(&self, task_id: &str, user_id: &str, price: i64) -> Result<HoldOutcome, StoreError> {
        if price <= 0 {
            return Err(StoreError::Invalid("a hold is for a positive price".into()));
        }
        let mut tx = self.begin_write(&account_scope(user_id)).await?;
        let entry = NewEntry {
            user_id: user_id.into(),
            delta: -price,
            kind: EntryKind::Hold,
            reference: task_id.into(),
            note: Some("task price held".into()),
            actor: None,
        };
        let outcome = match apply_entry_in(&mut tx, &entry).await? {
            Applied::Written(e) => {
                sqlx::query("INSERT INTO holds (task_id, user_id, amount, state, created_at) VALUES ($1, $2, $3, 'held', $4)")
                    .bind(task_id)
                    .bind(user_id)
                    .bind(price)
                    .bind(e.created_at)
                    .execute(&mut *tx)
                    .await?;
                HoldOutcome::Held { balance: e.balance_after }
            }
            Applied::Duplicate(_) => HoldOutcome::Duplicate,
            Applied::Insufficient { balance } => HoldOutcome::Insufficient { balance, price },
            Applied::NoUser => HoldOutcome::NoUser,
        };
        match outcome {
            HoldOutcome::Held { .. } => tx.commit().await?,
            _ => tx.rollback().await?,
        }
        Ok(outcome)
    }

    /// Settles the hold of `task_id` if it is still held. Returns whether this call did it.
    pub async fn settle(&self, task_id: &str, how: Settlement) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT user_id, amount FROM holds WHERE task_id = $1 AND state = 'held'")
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let user_id: String = row.try_get("user_id")?;
        let amount: i64 = row.try_get("amount")?;
        let mut tx = self.begin_write(&account_scope(&user_id)).await?;
        let (state, kind, delta) = match how {
            Settlement::Capture => ("captured", EntryKind::Capture, 0),
            Settlement::Release => ("released", EntryKind::Release, amount),
        };
        let moved = sqlx::query("UPDATE holds SET state = $2, settled_at = $3 WHERE task_id = $1 AND state = 'held'")
            .bind(task_id)
            .bind(state)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        // A capture moves no money (the hold already took it) but is recorded, so the ledger
        // says how every hold ended.
        let note = match how {
            Settlement::Capture => "task succeeded: charge captured",
            Settlement::Release => "task did not succeed: hold released",
        };
        let entry = NewEntry { user_id, delta, kind, reference: task_id.into(), note: Some(note.into()), actor: None };
        match apply_entry_in(&mut tx, &entry).await? {
            Applied::Written(_) => {
                if how == Settlement::Capture {
                    sqlx::query("UPDATE tasks SET cost = $2 WHERE id = $1").bind(task_id).bind(amount).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(true)
            }
            other => {
                tx.rollback().await?;
                Err(StoreError::Corrupt(format!("settling the hold of {task_id}: {other:?}")))
            }
        }
    }

    /// Holds still open whose task finished (or has no row and is older than `orphan_ms`),
    /// oldest first: what the settler must still do.
    pub async fn holds_to_settle(&self, orphan_ms: i64, limit: u32) -> Result<Vec<OpenHold>, StoreError> {
        let rows = sqlx::query(
            "SELECT h.task_id AS task_id, h.user_id AS user_id, h.amount AS amount, h.created_at AS created_at, t.status AS status \
             FROM holds h LEFT JOIN tasks t ON t.id = h.task_id \
             WHERE h.state = 'held' AND ((t.id IS NULL AND h.created_at < $1) OR t.status IN ('completed', 'failed', 'cancelled')) \
             ORDER BY h.created_at LIMIT $2",
        )
        .bind(now_ms() - orphan_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OpenHold {
                    task_id: r.try_get("task_id")?,
                    user_id: r.try_get("user_id")?,
                    amount: r.try_get("amount")?,
                    created_at: r.try_get("created_at")?,
                    task_status: r.try_get("status")?,
                })
            })
            .collect()
    }

    /// The state of a task's hold, if it has one.
    pub async fn hold_state(&self, task_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM holds WHERE task_id = $1").bind(task_id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("state")).transpose()?)
    }

    /// Hundredths held and captured for a user's tasks.
    pub async fn hold_totals(&self, user_id: &str) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN state = 'held' THEN amount ELSE 0 END), 0) AS BIGINT) AS held, \
                    CAST(COALESCE(SUM(CASE WHEN state = 'captured' THEN amount ELSE 0 END), 0) AS BIGINT) AS captured \
             FROM holds WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("held")?, row.try_get("captured")?))
    }
}
