//! Platform statistics for administrators: seed 002's `GET /api/admin/stats` and seed 001's
//! `GET /api/admin/stats/overview` (the same figures plus what a photo-app dashboard shows
//! for today). Money is stored in hundredths and shown as decimals.

use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::monitoring::{AdminStats, Monitoring};
use crate::http::auth::AdminUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::views::decimal;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stats)).routes(routes!(overview))
}

/// Seed 002's statistics, with the task statuses it leaves out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    pub total_users: u64,
    /// Users who logged in, or created a task, in the last 30 days.
    pub active_users: u64,
    pub total_tasks: u64,
    /// Waiting for a worker.
    pub pending_tasks: u64,
    /// Being processed.
    pub running_tasks: u64,
    pub completed_tasks: u64,
    pub failed_tasks: u64,
    pub cancelled_tasks: u64,
    /// GPU servers known to the gateway (see `/api/gpu/servers`).
    pub total_gpu_servers: usize,
    /// Of those, the ones passing health checks.
    pub online_gpu_servers: usize,
    /// Paid recharge orders net of successful refunds, in yuan.
    pub total_revenue: f64,
}

impl From<&AdminStats> for StatsView {
    fn from(s: &AdminStats) -> Self {
        let t = &s.tasks;
        Self {
            total_users: s.users.total,
            active_users: s.users.active,
            total_tasks: t.queued + t.processing + t.completed + t.failed + t.cancelled,
            pending_tasks: t.queued,
            running_tasks: t.processing,
            completed_tasks: t.completed,
            failed_tasks: t.failed,
            cancelled_tasks: t.cancelled,
            total_gpu_servers: s.gpu_servers,
            online_gpu_servers: s.gpu_servers_online,
            total_revenue: decimal(s.revenue.net()),
        }
    }
}

/// Seed 001's overview: seed 002's figures and today's (since 00:00 UTC).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverviewView {
    #[serde(flatten)]
    pub totals: StatsView,
    /// Accounts created today.
    pub new_users_today: u64,
    /// Tasks created today.
    pub tasks_today: u64,
    /// Tasks waiting for a worker now.
    pub queue_length: u64,
    /// Paid today net of refunds settled today, in yuan.
    pub revenue_today: f64,
    /// Successful refunds, in yuan (already subtracted from `total_revenue`).
    pub total_refunded: f64,
}

#[utoipa::path(get, path = "/api/admin/stats", tag = "admin", security(("bearer" = [])),
    description = "Platform statistics (administrators). `active_users`: users who logged in, or created a task, in the last 30 days. \
                   `total_revenue`: paid recharge orders net of successful refunds, in yuan. GPU servers as `/api/gpu/servers` lists them.",
    responses((status = 200, body = Envelope<StatsView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn stats(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<Envelope<StatsView>> {
    let s = Monitoring::new(&state.tasks).stats().await?;
    Ok(Envelope::ok("ok", StatsView::from(&s)))
}

#[utoipa::path(get, path = "/api/admin/stats/overview", tag = "admin", security(("bearer" = [])),
    description = "Seed 001's dashboard overview (administrators): the figures of `/api/admin/stats` and today's (UTC) new users, \
                   tasks and revenue, with the current queue length. `active_users`: logged in, or created a task, in the last 30 days.",
    responses((status = 200, body = Envelope<OverviewView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn overview(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<Envelope<OverviewView>> {
    let s = Monitoring::new(&state.tasks).stats().await?;
    Ok(Envelope::ok(
        "ok",
        OverviewView {
            totals: StatsView::from(&s),
            new_users_today: s.users.new,
            tasks_today: s.tasks_today,
            queue_length: s.queue_length,
            revenue_today: decimal(s.revenue.net_since()),
            total_refunded: decimal(s.revenue.refunded),
        },
    ))
}
