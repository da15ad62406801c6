//! Reading tasks (seeds 001 and 002): `GET /api/tasks/{task_id}` (002's detail, a superset of
//! 001's status), `GET /api/tasks` (002's page), `GET /api/tasks/user/list` (001),
//! `GET /api/admin/tasks` (every user's) and `GET /api/tasks/stats/queue`. Status words are
//! 002's: pending, running, completed, failed, cancelled. Only owners and admins see a task.

use axum::extract::{Path, State};
use purrify_api::TaskStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::{PageRequest, Principal};
use crate::domain::tasks::manage::parse_status_word;
use crate::domain::tasks::{TaskDetail, TaskFilter, TaskRecord, TaskSort};
use crate::http::auth::{AdminUser, CurrentUser};
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::ApiQuery;
use crate::http::routes::tasks::{ResultInfo, download_url};
use crate::http::views::{self, PageView, decimal, iso};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(detail))
        .routes(routes!(list))
        .routes(routes!(user_list))
        .routes(routes!(admin_list))
        .routes(routes!(queue_stats))
}

/// A completed task's output: where to download it, and seed 000's result fields.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskResultView {
    pub download_url: String,
    #[serde(flatten)]
    pub info: ResultInfo,
}

/// Seed 002's task detail (also 001's `/api/tasks/{task_id}`, whose `task_id` it repeats).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    pub id: String,
    pub task_id: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub task_type: String,
    /// pending | running | completed | failed | cancelled
    pub status: &'static str,
    /// Percent, 0..100.
    pub progress: f64,
    pub priority: i32,
    /// The worker running (or that ran) it; shown to admins only (worker addresses are internal).
    pub gpu_server_id: Option<String>,
    /// The parameters it runs with, and its scene.
    #[schema(value_type = Object)]
    pub config: Value,
    pub result: Option<TaskResultView>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    /// Credits charged (0 until it succeeded).
    pub cost: f64,
    /// Seconds, as given at creation.
    pub estimated_duration: Option<i64>,
    pub scene_id: Option<String>,
    pub callback_url: Option<String>,
    /// The task this one retries.
    pub retry_of: Option<String>,
    pub user_id: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl TaskView {
    pub fn new(rec: &TaskRecord, status: TaskStatus, progress: f64, viewer: &Principal) -> Self {
        let t = &rec.task;
        let mut config = serde_json::to_value(t.params).unwrap_or(Value::Null);
        if let (Value::Object(map), Some(scene)) = (&mut config, &rec.meta.scene_id) {
            map.insert("scene_id".into(), Value::String(scene.clone()));
        }
        let completed = status == TaskStatus::Completed;
        let failure = t.failure();
        Self {
            id: t.id.clone(),
            task_id: t.id.clone(),
            title: rec.meta.title.clone(),
            description: rec.meta.description.clone(),
            task_type: rec.meta.kind.clone(),
            status: views::status_word(status),
            progress: (progress.clamp(0.0, 1.0) * 1000.0).round() / 10.0,
            priority: t.priority,
            gpu_server_id: t.worker.clone().filter(|_| viewer.is_admin()),
            config,
            result: t
                .result
                .as_ref()
                .filter(|_| completed)
                .map(|r| TaskResultView { download_url: download_url(&t.id), info: ResultInfo::from(r) }),
            error_message: failure
                .map(|f| f.message.to_string())
                .or_else(|| (status == TaskStatus::Cancelled).then(|| "the task was cancelled".into())),
            error_code: failure.map(|f| f.code.to_string()),
            cost: decimal(rec.cost),
            estimated_duration: rec.meta.estimated_seconds,
            scene_id: rec.meta.scene_id.clone(),
            callback_url: rec.meta.callback_url.clone(),
            retry_of: rec.meta.retry_of.clone(),
            user_id: t.user_id.clone(),
            started_at: t.started_at.map(iso),
            completed_at: t.finished_at.map(iso),
            created_at: iso(t.created_at),
            updated_at: iso(t.updated_at),
        }
    }

    pub fn of(d: &TaskDetail, viewer: &Principal) -> Self {
        Self::new(&d.record, d.status, d.progress, viewer)
    }

    fn listed(rec: &TaskRecord, viewer: &Principal) -> Self {
        Self::new(rec, rec.task.status, rec.task.progress, viewer)
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct ListQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// pending | running | completed | failed | cancelled (queued and processing too)
    pub status: Option<String>,
    /// The task kind: enhance.
    pub task_type: Option<String>,
    /// created_at (default) | updated_at | priority
    pub sort_by: Option<String>,
    /// desc (default) | asc
    pub sort_order: Option<String>,
    /// Admin list only: one user's tasks.
    pub user_id: Option<String>,
}

impl ListQuery {
    fn parts(&self, user_id: Option<String>) -> ApiResult<(TaskFilter, TaskSort, bool, PageRequest)> {
        let status = self.status.as_deref().filter(|s| !s.is_empty()).map(parse_status_word).transpose()?;
        let sort = match self.sort_by.as_deref().filter(|s| !s.is_empty()) {
            None => TaskSort::CreatedAt,
            Some(s) => {
                TaskSort::parse(s).ok_or_else(|| ApiError::field("sort_by", format!("{s:?} is not created_at, updated_at or priority")))?
            }
        };
        let ascending = match self.sort_order.as_deref().filter(|s| !s.is_empty()) {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(o) => return Err(ApiError::field("sort_order", format!("{o:?} is not asc or desc"))),
        };
        let kind = self.task_type.clone().filter(|k| !k.is_empty());
        Ok((TaskFilter { user_id, status, kind }, sort, ascending, PageRequest::new(self.page, self.page_size)))
    }
}

async fn page_of(state: &AppState, q: &ListQuery, user_id: Option<String>, viewer: &Principal) -> ApiResult<Envelope<PageView<TaskView>>> {
    let (filter, sort, ascending, page) = q.parts(user_id)?;
    let page = state.tasks.list(&filter, sort, ascending, page).await?;
    Ok(Envelope::ok("ok", PageView::of(page, |r| TaskView::listed(&r, viewer))))
}

#[utoipa::path(get, path = "/api/tasks/{task_id}", tag = "tasks", security(("bearer" = [])),
    params(("task_id" = String, Path)),
    responses((status = 200, body = Envelope<TaskView>), (status = 401, body = ErrorBody), (status = 404, description = "Missing, deleted, or someone else's", body = ErrorBody)))]
pub async fn detail(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(task_id): Path<String>,
) -> ApiResult<Envelope<TaskView>> {
    let d = state.tasks.detail(&task_id, &user).await?;
    Ok(Envelope::ok("ok", TaskView::of(&d, &user)))
}

#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, description = "The caller's tasks", body = Envelope<PageView<TaskView>>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Envelope<PageView<TaskView>>> {
    page_of(&state, &q, Some(user.user_id.clone()), &user).await
}

#[utoipa::path(get, path = "/api/tasks/user/list", tag = "tasks", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, description = "The caller's tasks (seed 001)", body = Envelope<PageView<TaskView>>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn user_list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Envelope<PageView<TaskView>>> {
    page_of(&state, &q, Some(user.user_id.clone()), &user).await
}

#[utoipa::path(get, path = "/api/admin/tasks", tag = "admin", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, description = "Every user's tasks, or one user's with user_id", body = Envelope<PageView<TaskView>>),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn admin_list(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Envelope<PageView<TaskView>>> {
    let user = q.user_id.clone().filter(|u| !u.is_empty());
    page_of(&state, &q, user, &admin).await
}

/// Seed 001's queue statistics.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueStatsView {
    /// Tasks waiting for a worker.
    pub queue_length: u64,
    pub waiting: u64,
    pub running: u64,
    /// Mean seconds from submission to start of the tasks started in the last hour (last 100).
    pub average_wait_seconds: Option<f64>,
    /// Queued tasks that will start before the caller's first queued one (null: none queued).
    pub position: Option<u64>,
    /// The caller's queued and running tasks.
    pub my_active_tasks: u64,
}

#[utoipa::path(get, path = "/api/tasks/stats/queue", tag = "tasks", security(("bearer" = [])),
    responses((status = 200, body = Envelope<QueueStatsView>), (status = 401, body = ErrorBody)))]
pub async fn queue_stats(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Envelope<QueueStatsView>> {
    let s = state.tasks.queue_stats(&user).await?;
    Ok(Envelope::ok(
        "ok",
        QueueStatsView {
            queue_length: s.queued,
            waiting: s.queued,
            running: s.running,
            average_wait_seconds: s.average_wait_ms.map(|ms| (ms / 100.0).round() / 10.0),
            position: s.position,
            my_active_tasks: s.mine_active,
        },
    ))
}
