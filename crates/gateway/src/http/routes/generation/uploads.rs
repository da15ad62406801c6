//! Seed 003's uploads: `POST /api/v1/upload/image` (the file plus a JPEG thumbnail stored
//! next to it) and `POST /api/v1/upload/video` (MP4, MOV or WebM by magic bytes, complete by
//! box or element sizes). Same streaming, quota and ownership rules as seed 001's uploads
//! (`http::routes::uploads`), in seed 003's envelope.
//!
//! For videos only what the container states is reported: size and duration from an MP4/MOV
//! `moov` (`tkhd`, `mvhd`); nothing is decoded, so codec, frame rate and WebM dimensions are
//! not known here.

use axum::extract::{Request, State};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::uploads::UploadedFile;
use crate::domain::uploads::ingest::Accept;
use crate::http::auth::CurrentUser;
use crate::http::envelope::{V1, V1Error};
use crate::http::error::ApiResult;
use crate::http::routes::uploads::{body_limit, file_url, receive_multipart, thumbnail_url};

/// Mounted by `routes::all` (it needs the upload limit), in seed 003's error envelope.
pub fn router(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    let limit = usize::try_from(body_limit(max_upload_bytes, 1)).unwrap_or(usize::MAX);
    OpenApiRouter::new()
        .routes(routes!(image))
        .routes(routes!(video))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(crate::http::envelope::v1_errors))
}

/// An uploaded image.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Image {
    /// The file's id (for creating tasks from it).
    pub id: String,
    /// Capability URL of the file (unguessable; no token needed to read it).
    pub url: String,
    /// Capability URL of a JPEG at most 320 pixels on its longest side.
    pub thumbnail: String,
    pub width: u32,
    pub height: u32,
    /// Bytes.
    pub file_size: u64,
}

/// An uploaded video: what its container states, nothing decoded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Video {
    pub id: String,
    pub url: String,
    pub file_size: u64,
    /// `video/mp4`, `video/quicktime` or `video/webm`.
    pub mime_type: String,
    /// Displayed size of the first video track (MP4/MOV `tkhd`); null for WebM.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Milliseconds (MP4/MOV `mvhd`); null when not stated.
    pub duration_ms: Option<u64>,
}

async fn one(state: &AppState, owner: &str, req: Request, accept: Accept) -> ApiResult<UploadedFile> {
    let thumbnails = accept == Accept::Images;
    let mut files = receive_multipart(state, owner, req, "file", 1, accept, thumbnails).await?;
    Ok(files.remove(0))
}

#[utoipa::path(post, path = "/api/v1/upload/image", tag = "generation", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "`file`: a JPEG, PNG, WebP or AVIF image"),
    responses((status = 200, body = V1<V1Image>), (status = 401, body = V1Error),
        (status = 413, description = "Too large, or the storage quota is used up (`STORAGE_QUOTA_EXCEEDED`)", body = V1Error),
        (status = 415, body = V1Error), (status = 422, description = "No file, truncated or invalid image (`INVALID_IMAGE`)", body = V1Error)))]
pub async fn image(State(state): State<AppState>, CurrentUser(user): CurrentUser, req: Request) -> ApiResult<V1<V1Image>> {
    let f = one(&state, &user.user_id, req, Accept::Images).await?;
    Ok(V1::ok(V1Image {
        url: file_url(&f),
        thumbnail: thumbnail_url(&f).unwrap_or_default(),
        width: f.width.unwrap_or_default(),
        height: f.height.unwrap_or_default(),
        file_size: f.bytes,
        id: f.id,
    }))
}

#[utoipa::path(post, path = "/api/v1/upload/video", tag = "generation", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "`file`: an MP4, MOV or WebM video"),
    responses((status = 200, body = V1<V1Video>), (status = 401, body = V1Error), (status = 413, body = V1Error),
        (status = 415, description = "Not an MP4, MOV or WebM video", body = V1Error),
        (status = 422, description = "No file, or a truncated one (`INVALID_IMAGE`)", body = V1Error)))]
pub async fn video(State(state): State<AppState>, CurrentUser(user): CurrentUser, req: Request) -> ApiResult<V1<V1Video>> {
    let f = one(&state, &user.user_id, req, Accept::Videos).await?;
    Ok(V1::ok(V1Video {
        url: file_url(&f),
        file_size: f.bytes,
        mime_type: f.content_type.clone(),
        width: f.width,
        height: f.height,
        duration_ms: f.duration_ms,
        id: f.id,
    }))
}
