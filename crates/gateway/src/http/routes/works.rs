//! Seed 001's works (`/api/works*`) and the admin list (`GET /api/admin/works`), in the
//! `{success, message, data, error_code}` envelope with seed 002's page shape; and the media
//! routes every surface links to (`/api/works/media/{key}/file|thumbnail`), which image tags
//! load without a token: the random key is the capability, and a deleted work's key answers
//! 404 at once.
//!
//! Status words are seed 002's (DESIGN section 10): pending, running, completed, failed,
//! cancelled. A work is `running` until its file is stored; only completed works have a
//! file and (once made) a thumbnail.

use axum::extract::{Path, State};
use axum::response::Response;
use purrify_api::TaskStatus;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::PageRequest;
use crate::domain::logs::parse_date;
use crate::domain::works::{MAX_BATCH_DELETE, Media, MediaStream, Work, WorkEdit, WorkFilter, WorkKind};
use crate::http::auth::{AdminUser, CurrentUser};
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::files::{self, Caching, Disposition, FileHead};
use crate::http::views::{PageView, iso, status_word};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(detail, update, delete))
        .routes(routes!(batch_delete))
        .routes(routes!(admin_list))
        .routes(routes!(media_file))
        .routes(routes!(media_thumbnail))
}

const STATUS_WORDS: [TaskStatus; 5] =
    [TaskStatus::Queued, TaskStatus::Processing, TaskStatus::Completed, TaskStatus::Failed, TaskStatus::Cancelled];

pub fn file_url(w: &Work) -> Option<String> {
    w.output_uri.as_ref().map(|_| format!("/api/works/media/{}/file", w.media_key))
}

pub fn thumbnail_url(w: &Work) -> Option<String> {
    w.thumbnail_uri.as_ref().map(|_| format!("/api/works/media/{}/thumbnail", w.media_key))
}

/// A work (seed 001).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkView {
    pub id: String,
    pub user_id: String,
    /// The task it came from.
    pub task_id: String,
    /// image or video.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    /// pending, running, completed, failed or cancelled.
    pub status: &'static str,
    /// Why it failed.
    pub error_message: Option<String>,
    /// The file (completed works), loadable without a token.
    pub file_url: Option<String>,
    /// A small JPEG, once made (loadable without a token).
    pub thumbnail_url: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Bytes.
    pub file_size: Option<u64>,
    pub content_type: Option<String>,
    pub is_favorite: bool,
    pub is_public: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Work> for WorkView {
    fn from(w: &Work) -> Self {
        Self {
            id: w.id.clone(),
            user_id: w.user_id.clone(),
            task_id: w.task_id.clone(),
            kind: w.kind.as_str(),
            title: w.title.clone(),
            status: status_word(w.status),
            error_message: w.error_message.clone(),
            file_url: file_url(w),
            thumbnail_url: thumbnail_url(w),
            width: w.width,
            height: w.height,
            file_size: w.file_size,
            content_type: w.content_type.clone(),
            is_favorite: w.is_favorite,
            is_public: w.is_public,
            created_at: iso(w.created_at),
            updated_at: iso(w.updated_at),
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct WorksQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// pending, running, completed, failed or cancelled.
    pub status: Option<String>,
    /// image or video (`all` or empty: both).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Created on or after: `YYYY-MM-DD` (UTC) or an RFC 3339 time.
    pub start_date: Option<String>,
    /// Created on or before (a day includes all of it).
    pub end_date: Option<String>,
    /// Part of the title, any case.
    pub keyword: Option<String>,
    pub is_favorite: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct AdminWorksQuery {
    /// One user's works only.
    pub user_id: Option<String>,
}

/// `kind` from a `type` parameter: image, video, or all/empty for both.
pub fn parse_kind(kind: Option<&str>) -> ApiResult<Option<WorkKind>> {
    match kind.map(str::trim).filter(|k| !k.is_empty() && *k != "all") {
        None => Ok(None),
        Some(k) => WorkKind::parse(k).map(Some).ok_or_else(|| ApiError::field("type", format!("{k:?} is not one of image, video, all"))),
    }
}

fn filter_of(q: &WorksQuery, user_id: Option<String>) -> ApiResult<WorkFilter> {
    let statuses = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty() && *s != "all") {
        None => Vec::new(),
        Some(s) => vec![
            STATUS_WORDS
                .into_iter()
                .find(|w| status_word(*w) == s)
                .ok_or_else(|| ApiError::field("status", format!("{s:?} is not one of pending, running, completed, failed, cancelled")))?,
        ],
    };
    let date =
        |field, v: &Option<String>, end| v.as_deref().filter(|s| !s.trim().is_empty()).map(|s| parse_date(field, s, end)).transpose();
    let created_from = date("start_date", &q.start_date, false)?;
    let created_before = date("end_date", &q.end_date, true)?;
    if let (Some(f), Some(b)) = (created_from, created_before)
        && f >= b
    {
        return Err(ApiError::field("end_date", "is before start_date"));
    }
    let keyword = q.keyword.as_deref().map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned);
    if keyword.as_ref().is_some_and(|k| k.chars().count() > 100) {
        return Err(ApiError::field("keyword", "at most 100 characters"));
    }
    Ok(WorkFilter {
        user_id,
        statuses,
        kind: parse_kind(q.kind.as_deref())?,
        created_from,
        created_before,
        keyword,
        favorite: q.is_favorite,
    })
}

async fn page_of(state: &AppState, filter: WorkFilter, q: &WorksQuery) -> ApiResult<PageView<WorkView>> {
    let page = state.works.list(&filter, PageRequest::new(q.page, q.page_size)).await?;
    Ok(PageView::of(page, |w| WorkView::from(&w)))
}

#[utoipa::path(get, path = "/api/works", tag = "works", params(WorksQuery), security(("bearer" = [])),
    responses((status = 200, description = "The user's works, newest first", body = Envelope<PageView<WorkView>>),
              (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<WorksQuery>,
) -> ApiResult<Envelope<PageView<WorkView>>> {
    let filter = filter_of(&q, Some(user.user_id))?;
    Ok(Envelope::ok("ok", page_of(&state, filter, &q).await?))
}

#[utoipa::path(get, path = "/api/works/{work_id}", tag = "works", security(("bearer" = [])), params(("work_id" = String, Path)),
    responses((status = 200, body = Envelope<WorkView>), (status = 401, body = ErrorBody), (status = 404, description = "No such work of this user", body = ErrorBody)))]
pub async fn detail(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(work_id): Path<String>,
) -> ApiResult<Envelope<WorkView>> {
    let w = state.works.get(&user.user_id, &work_id).await?;
    Ok(Envelope::ok("ok", WorkView::from(&w)))
}

/// Fields to change; absent ones stay.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WorkUpdate {
    /// 1 to 100 characters.
    pub title: Option<String>,
    pub is_favorite: Option<bool>,
    /// true shares the work on the square (completed works only; seed 003's
    /// `POST /api/v1/square`), false withdraws it.
    pub is_public: Option<bool>,
}

#[utoipa::path(put, path = "/api/works/{work_id}", tag = "works", security(("bearer" = [])), params(("work_id" = String, Path)),
    request_body = WorkUpdate,
    responses((status = 200, body = Envelope<WorkView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(work_id): Path<String>,
    ApiJson(body): ApiJson<WorkUpdate>,
) -> ApiResult<Envelope<WorkView>> {
    let edit = WorkEdit { title: body.title, is_favorite: body.is_favorite, is_public: body.is_public };
    let w = state.works.update(&user.user_id, &work_id, edit).await?;
    Ok(Envelope::ok("work updated", WorkView::from(&w)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    /// How many works were deleted.
    pub deleted: usize,
}

#[utoipa::path(delete, path = "/api/works/{work_id}", tag = "works", security(("bearer" = [])), params(("work_id" = String, Path)),
    responses((status = 200, description = "Hidden at once; its files are deleted in the background", body = Envelope<Deleted>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(work_id): Path<String>,
) -> ApiResult<Envelope<Deleted>> {
    let deleted = state.works.delete(&user.user_id, &[work_id]).await?;
    Ok(Envelope::ok("work deleted", Deleted { deleted }))
}

/// Works to delete, all or none.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct BatchDelete {
    /// 1 to 100 ids (`ids` is accepted too).
    #[serde(alias = "ids")]
    pub work_ids: Vec<String>,
}

#[utoipa::path(post, path = "/api/works/batch/delete", tag = "works", security(("bearer" = [])), request_body = BatchDelete,
    responses((status = 200, description = "Every listed work is deleted (duplicates count once)", body = Envelope<Deleted>),
              (status = 401, body = ErrorBody),
              (status = 404, description = "One of them is not the user's: nothing was deleted", body = ErrorBody),
              (status = 422, description = "No ids, or more than 100", body = ErrorBody)))]
pub async fn batch_delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<BatchDelete>,
) -> ApiResult<Envelope<Deleted>> {
    if body.work_ids.is_empty() || body.work_ids.len() > MAX_BATCH_DELETE {
        return Err(ApiError::field("work_ids", format!("1 to {MAX_BATCH_DELETE} work ids")));
    }
    let deleted = state.works.delete(&user.user_id, &body.work_ids).await?;
    Ok(Envelope::ok(format!("{deleted} works deleted"), Deleted { deleted }))
}

#[utoipa::path(get, path = "/api/admin/works", tag = "admin", params(AdminWorksQuery, WorksQuery), security(("bearer" = [])),
    responses((status = 200, description = "Every user's works, newest first", body = Envelope<PageView<WorkView>>),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn admin_list(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(who): ApiQuery<AdminWorksQuery>,
    ApiQuery(q): ApiQuery<WorksQuery>,
) -> ApiResult<Envelope<PageView<WorkView>>> {
    let user = who.user_id.as_deref().map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned);
    let filter = filter_of(&q, user)?;
    Ok(Envelope::ok("ok", page_of(&state, filter, &q).await?))
}

#[utoipa::path(get, path = "/api/works/media/{key}/file", tag = "works", params(("key" = String, Path, description = "The work's media key, from its file_url")),
    responses((status = 200, description = "The work's file"), (status = 404, body = ErrorBody)))]
pub async fn media_file(State(state): State<AppState>, Path(key): Path<String>) -> ApiResult<Response> {
    Ok(stream_file(state.works.media(&key, Media::File).await?, false))
}

#[utoipa::path(get, path = "/api/works/media/{key}/thumbnail", tag = "works", params(("key" = String, Path, description = "The work's media key, from its thumbnail_url")),
    responses((status = 200, description = "A small JPEG", content_type = "image/jpeg"), (status = 404, body = ErrorBody)))]
pub async fn media_thumbnail(State(state): State<AppState>, Path(key): Path<String>) -> ApiResult<Response> {
    Ok(stream_file(state.works.media(&key, Media::Thumbnail).await?, false))
}

/// Streams a work's object, inline or as an attachment. Media URLs are capabilities: the
/// user's own cache may keep them for an hour, shared caches never.
pub fn stream_file(m: MediaStream, attachment: bool) -> Response {
    let disposition = if attachment { Disposition::Attachment } else { Disposition::Inline };
    let head = FileHead {
        content_type: &m.content_type,
        size: m.size,
        file_name: &m.file_name,
        disposition,
        caching: Caching::Private { max_age: 3600, immutable: false },
    };
    files::stream_file(head, m.body)
}
