//! Seed 004's postcards, in the seed's plain JSON (errors in the shared error body):
//! `create` answers 202 with the task id, `status/{taskId}` says processing, failed (with
//! the reason) or completed (with the postcard), `{postcardId}` is one postcard and `me` the
//! caller's own, newest first. Other users' postcards and tasks read as missing (404).
//!
//! The picture is served by `media/{key}` without a token (image tags and cards load it): the
//! key is 256 random bits kept with the postcard, the capability, as works' media keys are.
//! `image_url` is absolute under `PURRIFY_PUBLIC_URL` when that is set, else a path.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::postcards::{self, DEFAULT_LIST, NewPostcard, Postcard, PostcardState};
use crate::http::auth::CurrentUser;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::files::{Caching, Disposition, FileHead, stream_file};
use crate::http::middleware::RequestId;
use crate::http::views::iso;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(status))
        .routes(routes!(mine))
        .routes(routes!(detail))
        .routes(routes!(picture))
}

/// Seed 004's create body; fields it does not name are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreatePostcard {
    /// e.g. 开心 (1 to 100 characters).
    #[serde(default)]
    pub mood: String,
    /// e.g. 赛博朋克 (1 to 100 characters).
    #[serde(default)]
    pub style: String,
    /// 1 to 100 characters.
    #[serde(default)]
    pub theme: String,
    /// Free-text wishes for the message and picture (at most 500 characters).
    #[serde(default)]
    pub extra: Option<String>,
    /// The id of an image the caller uploaded (`POST /api/v1/upload/image` or
    /// `/api/upload/single`): the postcard is made from that photo.
    #[serde(default, rename = "photoId", alias = "photo_id")]
    pub photo_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub task_id: String,
}

/// A postcard.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PostcardView {
    pub postcard_id: String,
    pub task_id: String,
    /// A self-contained HTML card (inline CSS, no script).
    pub frontend_code: String,
    /// Our URL of the picture (no token needed).
    pub image_url: String,
    /// The message on the card.
    pub text: String,
    pub mood: String,
    pub style: String,
    pub theme: String,
    pub extra: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A postcard in the caller's list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PostcardItem {
    pub postcard_id: String,
    pub task_id: String,
    pub image_url: String,
    pub text: String,
    pub mood: String,
    pub style: String,
    pub theme: String,
    pub created_at: String,
}

/// A postcard task's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusView {
    /// processing, failed or completed.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PostcardView>,
}

fn image_url(state: &AppState, p: &Postcard) -> String {
    postcards::image_url(state.config.providers.public_url.as_deref(), &p.media_key)
}

fn view(state: &AppState, p: Postcard) -> PostcardView {
    PostcardView {
        image_url: image_url(state, &p),
        created_at: iso(p.created_at),
        postcard_id: p.id,
        task_id: p.task_id,
        frontend_code: p.frontend_code,
        text: p.text,
        mood: p.mood,
        style: p.style,
        theme: p.theme,
        extra: p.extra,
    }
}

#[utoipa::path(post, path = "/api/v1/postcards/create", tag = "postcards", security(("bearer" = [])), request_body = CreatePostcard,
    responses((status = 202, description = "The postcard is being made; follow it with status/{task_id}", body = Accepted),
              (status = 401, body = ErrorBody),
              (status = 422, description = "A field is missing, too long, or photoId is not the caller's image", body = ErrorBody),
              (status = 429, description = "The daily image quota is used up, or too many tasks at once", body = ErrorBody),
              (status = 400, description = "The balance cannot pay the postcard's price", body = ErrorBody),
              (status = 503, description = "No image provider is available", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    CurrentUser(user): CurrentUser,
    ApiJson(b): ApiJson<CreatePostcard>,
) -> ApiResult<(StatusCode, axum::Json<Accepted>)> {
    let req = NewPostcard { mood: b.mood, style: b.style, theme: b.theme, extra: b.extra, photo_id: b.photo_id };
    let task_id = state.postcards.create(&user, req, &request_id.0).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Accepted { task_id })))
}

#[utoipa::path(get, path = "/api/v1/postcards/status/{taskId}", tag = "postcards", security(("bearer" = [])),
    params(("taskId" = String, Path, description = "From create")),
    responses((status = 200, body = StatusView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(task_id): Path<String>,
) -> ApiResult<axum::Json<StatusView>> {
    let out = match state.postcards.status(&user, &task_id).await? {
        PostcardState::Processing => StatusView { status: "processing", error: None, data: None },
        PostcardState::Failed(reason) => StatusView { status: "failed", error: Some(reason), data: None },
        PostcardState::Completed(p) => StatusView { status: "completed", error: None, data: Some(view(&state, *p)) },
    };
    Ok(axum::Json(out))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// 1 to 100; 50 when absent.
    pub limit: Option<u32>,
    /// The `postcard_id` of the last postcard seen: the next ones (older) follow.
    pub before: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/postcards/me", tag = "postcards", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, description = "The caller's postcards, newest first", body = Vec<PostcardItem>),
              (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn mine(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<axum::Json<Vec<PostcardItem>>> {
    let list = state.postcards.list(&user, q.before.as_deref(), q.limit.unwrap_or(DEFAULT_LIST)).await?;
    Ok(axum::Json(
        list.into_iter()
            .map(|p| PostcardItem {
                image_url: image_url(&state, &p),
                created_at: iso(p.created_at),
                postcard_id: p.id,
                task_id: p.task_id,
                text: p.text,
                mood: p.mood,
                style: p.style,
                theme: p.theme,
            })
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/postcards/{postcardId}", tag = "postcards", security(("bearer" = [])),
    params(("postcardId" = String, Path)),
    responses((status = 200, body = PostcardView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<PostcardView>> {
    let p = state.postcards.get(&user, &id).await?;
    Ok(axum::Json(view(&state, p)))
}

#[utoipa::path(get, path = "/api/v1/postcards/media/{key}", tag = "postcards",
    params(("key" = String, Path, description = "The postcard's media key, from its image_url")),
    responses((status = 200, description = "The picture"), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn picture(State(state): State<AppState>, Path(key): Path<String>) -> ApiResult<Response> {
    let pic = state.postcards.picture(&key).await?;
    let ext = pic.postcard.image_uri.rsplit('.').next().filter(|e| e.len() <= 4).unwrap_or("jpg");
    let head = FileHead {
        content_type: &pic.postcard.image_type,
        size: pic.size,
        file_name: &format!("postcard-{}.{ext}", pic.postcard.id),
        disposition: Disposition::Inline,
        caching: Caching::Private { max_age: 3600, immutable: true },
    };
    Ok(stream_file(head, pic.body))
}
