//! Task status, download and live progress: `GET /api/v1/status/{task_id}`,
//! `GET /api/v1/download/{task_id}` and `GET /api/v1/status/{task_id}/events` (SSE); the
//! [`LiveMessage`] shapes they share with `/ws` (`routes::live`).
//!
//! Status polls are answered from the in-memory progress hub (the database only for tasks
//! that left it), so polling costs no database round trip.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use purrify_api::JobResult;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::Principal;
use crate::domain::tasks::{PublicStatus, TaskSnapshot};
use crate::http::auth::MaybeUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::http::files::{Caching, Disposition, FileHead, stream_file};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status)).routes(routes!(events)).routes(routes!(download))
}

/// Result metadata of a completed task.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultInfo {
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub faces: u32,
    /// `applied`, `disabled`, `not_configured` or `no_faces`.
    pub face_restoration: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusResponse {
    pub task_id: String,
    /// queued | processing | completed | failed
    pub status: String,
    /// 0..1
    pub progress: f64,
    /// Present when completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    /// Present when failed: what went wrong, for the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Present when failed: a stable code (e.g. INVALID_IMAGE, PROCESSING_TIMEOUT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultInfo>,
}

impl From<&JobResult> for ResultInfo {
    fn from(r: &JobResult) -> Self {
        Self { width: r.width, height: r.height, bytes: r.bytes, faces: r.faces, face_restoration: r.face_restoration.as_str().to_string() }
    }
}

pub fn download_url(task_id: &str) -> String {
    format!("/api/v1/download/{task_id}")
}

impl From<&TaskSnapshot> for StatusResponse {
    fn from(t: &TaskSnapshot) -> Self {
        let completed = t.status == PublicStatus::Completed;
        Self {
            task_id: t.id.clone(),
            status: t.status.as_str().to_string(),
            progress: t.progress,
            download_url: completed.then(|| download_url(&t.id)),
            error: t.error.clone(),
            error_code: t.error_code.clone(),
            result: t.result.as_ref().filter(|_| completed).map(ResultInfo::from),
        }
    }
}

fn unknown(task_id: &str) -> ApiError {
    ApiError::not_found(format!("no task {task_id}"))
}

/// The task if `viewer` may see it. Someone else's task is answered exactly like a missing
/// one, so ids of other users' tasks cannot be probed.
async fn visible_task(state: &AppState, task_id: &str, viewer: Option<&Principal>) -> ApiResult<TaskSnapshot> {
    match state.tasks.task(task_id).await? {
        Some(t) if t.visible_to(viewer) => Ok(t),
        _ => Err(unknown(task_id)),
    }
}

#[utoipa::path(get, path = "/api/v1/status/{task_id}", tag = "tasks", security((), ("bearer" = [])),
    params(("task_id" = String, Path, description = "Id returned by /api/v1/enhance")),
    responses((status = 200, body = StatusResponse), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    MaybeUser(viewer): MaybeUser,
    Path(task_id): Path<String>,
) -> ApiResult<Json<StatusResponse>> {
    let t = visible_task(&state, &task_id, viewer.as_ref()).await?;
    Ok(Json(StatusResponse::from(&t)))
}

#[utoipa::path(get, path = "/api/v1/download/{task_id}", tag = "tasks", security((), ("bearer" = [])),
    params(("task_id" = String, Path)),
    responses((status = 200, description = "The enhanced image (image/jpeg, attachment)", content_type = "image/jpeg"),
              (status = 404, body = ErrorBody), (status = 409, description = "Not finished, or failed", body = ErrorBody)))]
pub async fn download(State(state): State<AppState>, MaybeUser(viewer): MaybeUser, Path(task_id): Path<String>) -> ApiResult<Response> {
    let t = visible_task(&state, &task_id, viewer.as_ref()).await?;
    match t.status {
        PublicStatus::Completed => {}
        PublicStatus::Failed => {
            return Err(ApiError::new(
                ErrorCode::TaskNotFinished,
                format!("task {task_id} failed ({}); there is nothing to download", t.error.as_deref().unwrap_or("unknown error")),
            ));
        }
        PublicStatus::Queued | PublicStatus::Processing => {
            return Err(ApiError::new(ErrorCode::TaskNotFinished, format!("task {task_id} is {}; poll its status", t.status.as_str()))
                .retry_after(2));
        }
    }
    let uri = t.result.as_ref().map(|r| r.output_uri.clone()).ok_or_else(|| ApiError::internal("completed task without result"))?;
    let (size, stream) = state.storage.get_stream(&uri).await.map_err(|e| {
        if matches!(e, purrify_inference::storage::StorageError::NotFound { .. }) {
            ApiError::not_found(format!("the result of task {task_id} is no longer stored"))
        } else {
            ApiError::internal(e)
        }
    })?;
    // A task retried under its id gets a new result: the browser asks again each time.
    let name = format!("purrify-{task_id}.jpg");
    let head =
        FileHead { content_type: "image/jpeg", size, file_name: &name, disposition: Disposition::Attachment, caching: Caching::Revalidate };
    Ok(stream_file(head, stream))
}

/// Live messages, shaped as seeds 001/003 send them over WebSocket (also the SSE payloads).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveMessage {
    TaskProgress {
        #[serde(rename = "taskId")]
        task_id: String,
        /// Percent, 0..100.
        progress: u8,
        status: String,
    },
    TaskComplete {
        #[serde(rename = "taskId")]
        task_id: String,
        result: serde_json::Value,
    },
    TaskFailed {
        #[serde(rename = "taskId")]
        task_id: String,
        error: String,
    },
}

impl LiveMessage {
    pub fn from_snapshot(t: &TaskSnapshot) -> Self {
        match t.status {
            PublicStatus::Completed => {
                Self::TaskComplete { task_id: t.id.clone(), result: serde_json::to_value(StatusResponse::from(t)).unwrap_or_default() }
            }
            PublicStatus::Failed => Self::TaskFailed { task_id: t.id.clone(), error: t.error.clone().unwrap_or_else(|| "failed".into()) },
            PublicStatus::Queued | PublicStatus::Processing => Self::TaskProgress {
                task_id: t.id.clone(),
                progress: (t.progress.clamp(0.0, 1.0) * 100.0).round() as u8,
                status: t.status.as_str().to_string(),
            },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::TaskProgress { .. } => "task_progress",
            Self::TaskComplete { .. } => "task_complete",
            Self::TaskFailed { .. } => "task_failed",
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, Self::TaskProgress { .. })
    }
}

#[utoipa::path(get, path = "/api/v1/status/{task_id}/events", tag = "tasks", security((), ("bearer" = [])),
    params(("task_id" = String, Path)),
    responses((status = 200, description = "text/event-stream of task_progress, then task_complete or task_failed", body = LiveMessage),
              (status = 404, body = ErrorBody)))]
pub async fn events(State(state): State<AppState>, MaybeUser(viewer): MaybeUser, Path(task_id): Path<String>) -> ApiResult<Response> {
    let first = visible_task(&state, &task_id, viewer.as_ref()).await?;
    let updates = state.tasks.watch_task(&task_id);
    let draining = state.draining.clone();
    let stream = async_stream::stream! {
        let mut last = LiveMessage::from_snapshot(&first);
        yield Ok::<_, Infallible>(sse_event(&last));
        if last.is_final() {
            return;
        }
        let Some(updates) = updates else { return };
        let mut updates = Box::pin(updates);
        while let Some(t) = updates.next().await {
            let msg = LiveMessage::from_snapshot(&t);
            if msg == last {
                continue;
            }
            yield Ok(sse_event(&msg));
            if msg.is_final() {
                break;
            }
            last = msg;
        }
    }
    // A stream of an unfinished task would hold a shutdown open for ever: end it (the
    // client's EventSource reconnects, to another replica or to this one restarted).
    .take_until(draining.cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

fn sse_event(m: &LiveMessage) -> Event {
    Event::default().event(m.name()).json_data(m).unwrap_or_else(|_| Event::default().comment("encode error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_messages_have_the_seed_shapes() {
        let m = LiveMessage::TaskProgress { task_id: "t1".into(), progress: 50, status: "processing".into() };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type": "task_progress", "taskId": "t1", "progress": 50, "status": "processing"})
        );
        let f = LiveMessage::TaskFailed { task_id: "t1".into(), error: "bad".into() };
        assert_eq!(serde_json::to_value(&f).unwrap(), serde_json::json!({"type": "task_failed", "taskId": "t1", "error": "bad"}));
        assert!(f.is_final() && !m.is_final());
    }
}
