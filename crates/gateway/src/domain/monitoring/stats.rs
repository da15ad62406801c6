//! Platform statistics for the admin dashboards: one set of queries serves seed 002's
//! `/api/admin/stats` and seed 001's `/api/admin/stats/overview`.

use purrify_store::{Revenue, StatusCounts, UserCounts, now_ms};

use super::Monitoring;
use crate::domain::{DomainError, DomainResult};

/// A user counts as active when they logged in, or created a task, within this many days.
pub const ACTIVE_DAYS: i64 = 30;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Everything both dashboards show. Money in fen (hundredths of a yuan).
#[derive(Debug, Clone)]
pub struct AdminStats {
    /// `active`: see [`ACTIVE_DAYS`]; `new`: created since 00:00 UTC today.
    pub users: UserCounts,
    pub tasks: StatusCounts,
    /// Tasks created since 00:00 UTC today.
    pub tasks_today: u64,
    /// Tasks waiting for a worker now.
    pub queue_length: u64,
    pub gpu_servers: usize,
    pub gpu_servers_online: usize,
    /// `*_since`: since 00:00 UTC today.
    pub revenue: Revenue,
}

/// Start of the UTC day containing `now_ms`.
fn day_start(now_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(DAY_MS)
}

impl Monitoring<'_> {
    pub async fn stats(&self) -> DomainResult<AdminStats> {
        let db = self.tasks.db();
        let now = now_ms();
        let today = day_start(now);
        let (users, tasks, tasks_today, revenue, queue_length, servers) = tokio::try_join!(
            async { Ok::<_, DomainError>(db.user_counts(now - ACTIVE_DAYS * DAY_MS, today).await?) },
            self.tasks.counts(),
            async { Ok::<_, DomainError>(db.tasks_created_since(today).await?) },
            async { Ok::<_, DomainError>(db.revenue(today).await?) },
            self.tasks.queue_depth(),
            self.servers(),
        )?;
        Ok(AdminStats {
            users,
            tasks,
            tasks_today,
            queue_length,
            gpu_servers: servers.len(),
            gpu_servers_online: servers.iter().filter(|s| s.online()).count(),
            revenue,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_start_at_midnight_utc() {
        // 2024-01-15T10:45:00Z
        assert_eq!(day_start(1_705_315_500_000), 1_705_276_800_000);
        assert_eq!(day_start(1_705_276_800_000), 1_705_276_800_000);
    }
}
