//! Admin statistics over the core tables (`users`, `tasks`, `orders`, `refunds`): a few
//! aggregate queries for seeds 001/002's dashboards. Tasks per status are
//! [`Db::count_by_status`](crate::Db::count_by_status); everything else is here.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Db, StoreError};

/// Accounts, counted in one pass over `users`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserCounts {
    pub total: u64,
    /// Logged in, or created a task, at or after the `active_since` time asked for.
    pub active: u64,
    /// Created at or after the `new_since` time asked for.
    pub new: u64,
}

/// Money taken through WeChat Pay orders, in fen (hundredths of a yuan).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revenue {
    /// Every order ever paid (including those refunded since).
    pub paid: i64,
    /// Refunds WeChat reported successful.
    pub refunded: i64,
    /// Paid at or after the `since` time asked for.
    pub paid_since: i64,
    /// Refunds settled successfully at or after `since`.
    pub refunded_since: i64,
}

impl Revenue {
    /// Paid minus refunded.
    pub fn net(&self) -> i64 {
        self.paid - self.refunded
    }

    /// Net of the period since `since`.
    pub fn net_since(&self) -> i64 {
        self.paid_since - self.refunded_since
    }
}

fn count(row: &AnyRow, name: &str) -> Result<u64, StoreError> {
    Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
}

impl Db {
    /// Accounts in total, active since `active_since` (a login, or a task created, at or
    /// after it; unix ms) and created since `new_since`. One scan of `users`; the task check
    /// uses the `tasks_user_created` index.
    pub async fn user_counts(&self, active_since: i64, new_since: i64) -> Result<UserCounts, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, \
                    COALESCE(SUM(CASE WHEN u.last_login_at >= $1 \
                                        OR EXISTS (SELECT 1 FROM tasks t WHERE t.user_id = u.id AND t.created_at >= $1) \
                                      THEN 1 ELSE 0 END), 0) AS active, \
                    COALESCE(SUM(CASE WHEN u.created_at >= $2 THEN 1 ELSE 0 END), 0) AS new_users \
             FROM users u",
        )
        .bind(active_since)
        .bind(new_since)
        .fetch_one(&self.pool)
        .await?;
        Ok(UserCounts { total: count(&row, "total")?, active: count(&row, "active")?, new: count(&row, "new_users")? })
    }

    /// Tasks created at or after `since` (unix ms), whatever their status.
    pub async fn tasks_created_since(&self, since: i64) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE created_at >= $1").bind(since).fetch_one(&self.pool).await?;
        count(&row, "n")
    }

    /// Order revenue: everything paid, successful refunds, and both since `since` (unix ms).
    pub async fn revenue(&self, since: i64) -> Result<Revenue, StoreError> {
        // SUM over BIGINT is NUMERIC on PostgreSQL, which `Any` cannot decode: cast back.
        let row = sqlx::query(
            "SELECT \
               (SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM orders WHERE paid_at IS NOT NULL) AS paid, \
               (SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM orders WHERE paid_at >= $1) AS paid_since, \
               (SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM refunds WHERE status = 'success') AS refunded, \
               (SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM refunds \
                  WHERE status = 'success' AND settled_at >= $1) AS refunded_since",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(Revenue {
            paid: row.try_get("paid")?,
            refunded: row.try_get("refunded")?,
            paid_since: row.try_get("paid_since")?,
            refunded_since: row.try_get("refunded_since")?,
        })
    }
}
