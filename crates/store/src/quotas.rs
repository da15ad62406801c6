//! Quota counters (seed 003, DESIGN section 12): how many image and video generations a user
//! started today and how many API calls they made this hour, counted in the database so every
//! gateway replica sees the same numbers.
//!
//! Counting is one statement: an upsert that creates the window's row at 1, or adds 1 only
//! while the count is below the limit, and returns the new count. When the limit is reached
//! the conditional `DO UPDATE` applies to nothing and `RETURNING` yields no row. Both
//! databases make that check and the increment one step: SQLite runs every write under its
//! one write lock; PostgreSQL locks the conflicting row and evaluates the `WHERE` on its
//! latest committed version, so concurrent requests queue on the row and never count past
//! the limit. No transaction, no read-then-write, and one round trip per counted request.

use sqlx::Row;

use crate::time::now_ms;
use crate::{Db, StoreError};

/// The length of a counting window. Windows are aligned to UTC: an hour window starts on the
/// hour, a day window at midnight UTC, so every replica agrees on where a window begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Hour,
    Day,
}

impl Window {
    pub const fn millis(self) -> i64 {
        match self {
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    /// The suffix of the buckets counted in this window (`api:hour`, `image:day`).
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// The window a bucket is counted in, from its suffix.
    pub fn of_bucket(bucket: &str) -> Option<Self> {
        match bucket.rsplit_once(':')?.1 {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    /// The first millisecond of the window containing `now` (unix milliseconds).
    pub const fn start(self, now: i64) -> i64 {
        now - now.rem_euclid(self.millis())
    }

    /// The first millisecond after the window containing `now`: when its count resets.
    pub const fn end(self, now: i64) -> i64 {
        self.start(now) + self.millis()
    }
}

/// What a [`Db::consume_quota`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumed {
    /// Counted; `count` is the window's count including this one.
    Allowed { count: i64 },
    /// The limit was already reached; nothing was counted. `count` is the window's count.
    Exhausted { count: i64 },
}

impl Consumed {
    pub fn allowed(self) -> bool {
        matches!(self, Self::Allowed { .. })
    }

    pub fn count(self) -> i64 {
        match self {
            Self::Allowed { count } | Self::Exhausted { count } => count,
        }
    }
}

/// One bucket's count in its current window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUsage {
    pub bucket: String,
    pub window_start: i64,
    pub count: i64,
}

/// A user's VIP level and its expiry, which decide which limits apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipState {
    pub level: i64,
    /// Unix milliseconds; `None` never expires.
    pub expires_at: Option<i64>,
}

impl VipState {
    /// VIP at `now`: a level above 0 that has not expired.
    pub fn active_at(&self, now: i64) -> bool {
        self.level > 0 && self.expires_at.is_none_or(|e| e > now)
    }
}

impl Db {
    /// Counts one use of `bucket` in the window starting at `window_start`, unless the window
    /// already holds `limit` uses. One atomic statement (see the module's comment); a limit
    /// of 0 or less allows nothing and writes nothing.
    pub async fn consume_quota(&self, user_id: &str, bucket: &str, window_start: i64, limit: i64) -> Result<Consumed, StoreError> {
        if limit <= 0 {
            return Ok(Consumed::Exhausted { count: self.quota_count(user_id, bucket, window_start).await? });
        }
        let counted = sqlx::query(
            "INSERT INTO quota_counters (user_id, bucket, window_start, count) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (user_id, bucket, window_start) DO UPDATE SET count = quota_counters.count + 1 \
             WHERE quota_counters.count < $4 \
             RETURNING count",
        )
        .bind(user_id)
        .bind(bucket)
        .bind(window_start)
        .bind(limit)
        .fetch_optional(self.pool())
        .await?;
        match counted {
            Some(row) => Ok(Consumed::Allowed { count: row.try_get("count")? }),
            // Only the refused path pays a second round trip, to report the count.
            None => Ok(Consumed::Exhausted { count: self.quota_count(user_id, bucket, window_start).await? }),
        }
    }

    /// Gives back one use counted in a window (a generation refused after it was counted:
    /// a refused request costs nothing). Never below zero.
    pub async fn return_quota(&self, user_id: &str, bucket: &str, window_start: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE quota_counters SET count = count - 1 \
             WHERE user_id = $1 AND bucket = $2 AND window_start = $3 AND count > 0",
        )
        .bind(user_id)
        .bind(bucket)
        .bind(window_start)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One bucket's count in one window (0 when nothing was counted there).
    pub async fn quota_count(&self, user_id: &str, bucket: &str, window_start: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT count FROM quota_counters WHERE user_id = $1 AND bucket = $2 AND window_start = $3")
            .bind(user_id)
            .bind(bucket)
            .bind(window_start)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => r.try_get("count")?,
            None => 0,
        })
    }

    /// The user's counts in the windows current at `now`, one per bucket that has one; a
    /// bucket without a row has counted nothing yet. Buckets whose name has no window suffix
    /// are not reported.
    pub async fn quota_usage(&self, user_id: &str, now: i64) -> Result<Vec<QuotaUsage>, StoreError> {
        // Every current window starts at or after today's midnight: the primary key's
        // `user_id` prefix and this bound keep the scan to today's rows of one user.
        let rows =
            sqlx::query("SELECT bucket, window_start, count FROM quota_counters WHERE user_id = $1 AND window_start >= $2 ORDER BY bucket")
                .bind(user_id)
                .bind(Window::Day.start(now))
                .fetch_all(self.pool())
                .await?;
        let mut out = Vec::new();
        for row in rows {
            let usage =
                QuotaUsage { bucket: row.try_get("bucket")?, window_start: row.try_get("window_start")?, count: row.try_get("count")? };
            if Window::of_bucket(&usage.bucket).is_some_and(|w| w.start(now) == usage.window_start) {
                out.push(usage);
            }
        }
        Ok(out)
    }

    /// Deletes the rows of windows that started before `before` (unix milliseconds); returns
    /// how many. A window that is over is never counted again, so this loses nothing.
    pub async fn purge_quota_windows(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM quota_counters WHERE window_start < $1").bind(before).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    /// The user's VIP level and expiry; `None` for no such user.
    pub async fn vip_state(&self, user_id: &str) -> Result<Option<VipState>, StoreError> {
        let row =
            sqlx::query("SELECT vip_level, vip_expires_at FROM users WHERE id = $1").bind(user_id).fetch_optional(self.pool()).await?;
        row.map(|r| Ok(VipState { level: r.try_get("vip_level")?, expires_at: r.try_get("vip_expires_at")? })).transpose()
    }

    /// Sets the user's VIP level and expiry (level 0: not VIP); false for no such user.
    pub async fn set_vip(&self, user_id: &str, vip: VipState) -> Result<bool, StoreError> {
        if vip.level < 0 {
            return Err(StoreError::Invalid("a VIP level is 0 or more".into()));
        }
        let done = sqlx::query("UPDATE users SET vip_level = $2, vip_expires_at = $3, updated_at = $4 WHERE id = $1")
            .bind(user_id)
            .bind(vip.level)
            .bind(vip.expires_at)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_utc_hours_and_days() {
        // 2024-01-26T13:45:10.500Z
        let t = 1_706_276_710_500;
        assert_eq!(Window::Hour.start(t), 1_706_274_000_000, "13:00:00Z");
        assert_eq!(Window::Hour.end(t), 1_706_277_600_000, "14:00:00Z");
        assert_eq!(Window::Day.start(t), 1_706_227_200_000, "00:00:00Z");
        assert_eq!(Window::Day.end(t), 1_706_313_600_000, "the next midnight");
        // A window's first millisecond is its own start; its end belongs to the next window.
        assert_eq!(Window::Hour.start(1_706_274_000_000), 1_706_274_000_000);
        assert_eq!(Window::Hour.start(Window::Hour.end(t)), Window::Hour.end(t));
    }

    #[test]
    fn buckets_name_their_window() {
        assert_eq!(Window::of_bucket("api:hour"), Some(Window::Hour));
        assert_eq!(Window::of_bucket("image:day"), Some(Window::Day));
        assert_eq!(Window::of_bucket("image"), None);
        assert_eq!(Window::of_bucket("image:week"), None);
    }

    #[test]
    fn vip_needs_a_level_and_no_past_expiry() {
        let at = 1_000;
        assert!(!VipState { level: 0, expires_at: None }.active_at(at));
        assert!(VipState { level: 1, expires_at: None }.active_at(at));
        assert!(VipState { level: 2, expires_at: Some(1_001) }.active_at(at));
        assert!(!VipState { level: 2, expires_at: Some(1_000) }.active_at(at), "expired at that very millisecond");
    }
}
