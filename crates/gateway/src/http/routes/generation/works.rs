//! Seed 003's works (`/api/v1/works*`): the user's works as `{list, total, page, pageSize}`
//! with camelCase items, one work, deleting one, and downloading its file. Status words are
//! seed 003's: processing (the task is queued or running, or its file is not stored yet),
//! completed, failed (failed or cancelled).

use axum::extract::{Path, State};
use axum::response::Response;
use purrify_api::TaskStatus;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::PageRequest;
use crate::domain::works::{Work, WorkFilter};
use crate::http::auth::CurrentUser;
use crate::http::envelope::{V1, V1Error};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiQuery;
use crate::http::routes::works::{file_url, parse_kind, stream_file, thumbnail_url};
use crate::http::views::iso;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(detail, delete)).routes(routes!(download))
}

/// Seed 003's word for a work's status.
fn status_word(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Queued | TaskStatus::Processing => "processing",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed | TaskStatus::Cancelled => "failed",
    }
}

/// The statuses behind one of seed 003's words.
fn statuses_of(word: &str) -> Option<Vec<TaskStatus>> {
    match word {
        "processing" => Some(vec![TaskStatus::Queued, TaskStatus::Processing]),
        "completed" => Some(vec![TaskStatus::Completed]),
        "failed" => Some(vec![TaskStatus::Failed, TaskStatus::Cancelled]),
        _ => None,
    }
}

/// A work in a list (seed 003's fields).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Work {
    pub id: String,
    /// image or video.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    /// A small JPEG (null until made).
    pub thumbnail: Option<String>,
    /// processing, completed or failed.
    pub status: &'static str,
    pub created_at: String,
    /// The file (null until completed).
    pub file_url: Option<String>,
}

impl From<&Work> for V1Work {
    fn from(w: &Work) -> Self {
        Self {
            id: w.id.clone(),
            kind: w.kind.as_str(),
            title: w.title.clone(),
            thumbnail: thumbnail_url(w),
            status: status_word(w.status),
            created_at: iso(w.created_at),
            file_url: file_url(w),
        }
    }
}

/// One work: the list fields and the file's details.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1WorkDetail {
    #[serde(flatten)]
    pub work: V1Work,
    pub task_id: String,
    /// Why it failed.
    pub error: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub file_size: Option<u64>,
    pub content_type: Option<String>,
    /// This endpoint's download (attachment).
    pub download_url: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1WorkList {
    pub list: Vec<V1Work>,
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, rename_all = "camelCase")]
#[into_params(rename_all = "camelCase")]
pub struct V1WorksQuery {
    /// image, video or all (default).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// all (default), processing, completed or failed.
    pub status: Option<String>,
    /// From 1.
    pub page: Option<u32>,
    /// Default 20, at most 100.
    pub page_size: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/works", tag = "generation", params(V1WorksQuery), security(("bearer" = [])),
    responses((status = 200, description = "The user's works, newest first", body = V1<V1WorkList>),
              (status = 401, body = V1Error), (status = 422, body = V1Error)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<V1WorksQuery>,
) -> ApiResult<V1<V1WorkList>> {
    let statuses = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty() && *s != "all") {
        None => Vec::new(),
        Some(s) => {
            statuses_of(s).ok_or_else(|| ApiError::field("status", format!("{s:?} is not one of all, processing, completed, failed")))?
        }
    };
    let filter = WorkFilter { user_id: Some(user.user_id), statuses, kind: parse_kind(q.kind.as_deref())?, ..WorkFilter::default() };
    let page = state.works.list(&filter, PageRequest::new(q.page, q.page_size)).await?;
    Ok(V1::ok(V1WorkList {
        list: page.items.iter().map(V1Work::from).collect(),
        total: page.total,
        page: page.page,
        page_size: page.page_size,
    }))
}

#[utoipa::path(get, path = "/api/v1/works/{id}", tag = "generation", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = V1<V1WorkDetail>), (status = 401, body = V1Error), (status = 404, body = V1Error)))]
pub async fn detail(State(state): State<AppState>, CurrentUser(user): CurrentUser, Path(id): Path<String>) -> ApiResult<V1<V1WorkDetail>> {
    let w = state.works.get(&user.user_id, &id).await?;
    Ok(V1::ok(V1WorkDetail {
        work: V1Work::from(&w),
        task_id: w.task_id.clone(),
        error: w.error_message.clone(),
        width: w.width,
        height: w.height,
        file_size: w.file_size,
        content_type: w.content_type.clone(),
        download_url: w.output_uri.as_ref().map(|_| format!("/api/v1/works/{}/download", w.id)),
        updated_at: iso(w.updated_at),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Deleted {
    pub id: String,
    pub deleted: bool,
}

#[utoipa::path(delete, path = "/api/v1/works/{id}", tag = "generation", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "Hidden at once; its files are deleted in the background", body = V1<V1Deleted>),
              (status = 401, body = V1Error), (status = 404, body = V1Error)))]
pub async fn delete(State(state): State<AppState>, CurrentUser(user): CurrentUser, Path(id): Path<String>) -> ApiResult<V1<V1Deleted>> {
    state.works.delete(&user.user_id, std::slice::from_ref(&id)).await?;
    Ok(V1::ok(V1Deleted { id, deleted: true }))
}

#[utoipa::path(get, path = "/api/v1/works/{id}/download", tag = "generation", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The file, as an attachment"), (status = 401, body = V1Error), (status = 404, body = V1Error),
              (status = 422, description = "Not completed: no file yet", body = V1Error)))]
pub async fn download(State(state): State<AppState>, CurrentUser(user): CurrentUser, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(stream_file(state.works.download(&user.user_id, &id).await?, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_seed_word_that_filters_back_to_it() {
        for s in [TaskStatus::Queued, TaskStatus::Processing, TaskStatus::Completed, TaskStatus::Failed, TaskStatus::Cancelled] {
            assert!(statuses_of(status_word(s)).unwrap().contains(&s), "{s:?}");
        }
        assert_eq!(statuses_of("queued"), None);
    }
}
