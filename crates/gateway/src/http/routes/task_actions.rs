//! Changing tasks (seeds 001 and 002): `POST /api/tasks/{task_id}/cancel`,
//! `POST /api/tasks/{task_id}/retry` and `DELETE /api/tasks/{task_id}`. Every answer that
//! shows a task is 002's detail. Only owners and admins reach a task (others read 404).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::tasks::Cancelled;
use crate::http::auth::CurrentUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::middleware::RequestId;
use crate::http::routes::task_list::TaskView;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(cancel)).routes(routes!(retry)).routes(routes!(delete))
}

/// What a cancel did, with the task as it is now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelView {
    /// cancelled | cancel_requested (Kubernetes: the operator stops it) | already_finished
    pub outcome: &'static str,
    pub task: TaskView,
}

#[utoipa::path(post, path = "/api/tasks/{task_id}/cancel", tag = "tasks", security(("bearer" = [])), params(("task_id" = String, Path)),
    responses((status = 200, body = Envelope<CancelView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(task_id): Path<String>,
) -> ApiResult<Envelope<CancelView>> {
    let (outcome, message) = match state.tasks.cancel(&task_id, &user).await? {
        Cancelled::Done => ("cancelled", "task cancelled"),
        Cancelled::Requested => ("cancel_requested", "cancellation requested"),
        Cancelled::AlreadyFinished(_) => ("already_finished", "the task had already finished"),
    };
    let d = state.tasks.detail(&task_id, &user).await?;
    Ok(Envelope::ok(message, CancelView { outcome, task: TaskView::of(&d, &user) }))
}

#[utoipa::path(post, path = "/api/tasks/{task_id}/retry", tag = "tasks", security(("bearer" = [])), params(("task_id" = String, Path)),
    responses((status = 201, description = "The new task that runs it again (retry_of names the old one)", body = Envelope<TaskView>),
              (status = 400, description = "Insufficient balance", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, description = "Not failed or cancelled, or already retried", body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    CurrentUser(user): CurrentUser,
    Path(task_id): Path<String>,
) -> ApiResult<(StatusCode, Envelope<TaskView>)> {
    let id = state.tasks.retry(&task_id, &user, &request_id.0).await?;
    let d = state.tasks.detail(&id, &user).await?;
    Ok((StatusCode::CREATED, Envelope::ok("task queued again", TaskView::of(&d, &user))))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedView {
    pub id: String,
    pub deleted: bool,
}

#[utoipa::path(delete, path = "/api/tasks/{task_id}", tag = "tasks", security(("bearer" = [])), params(("task_id" = String, Path)),
    responses((status = 200, body = Envelope<DeletedView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, description = "Not finished yet", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(task_id): Path<String>,
) -> ApiResult<Envelope<DeletedView>> {
    state.tasks.delete(&task_id, &user).await?;
    Ok(Envelope::ok("task deleted", DeletedView { id: task_id, deleted: true }))
}
