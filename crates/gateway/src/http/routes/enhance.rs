//! `POST /api/v1/enhance`: the upload. The file is streamed to storage as it arrives (never
//! held whole), its type is decided by magic bytes, its header is checked against the pixel
//! limit, a file cut short is refused by its container's completeness (all in
//! [`crate::domain::uploads::ingest`]), and the task row is committed before the 202. Any
//! refusal deletes what was written.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use purrify_api::{EnhanceParams, OutputFormat, QualityLevel};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::tasks::manage::check_callback_url;
use crate::domain::tasks::{NewUpload, TaskMeta, TaskOptions};
use crate::domain::uploads::ingest::{Accept, Ingested};
use crate::http::auth::MaybeUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::http::middleware::RequestId;
use crate::http::routes::uploads::{
    MULTIPART_SLACK, admit_upload, check_declared_length, discard, multipart_error, store_field, text_field,
};

pub fn router(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    let limit = usize::try_from(max_upload_bytes.saturating_add(MULTIPART_SLACK)).unwrap_or(usize::MAX);
    OpenApiRouter::new().routes(routes!(enhance)).layer(DefaultBodyLimit::max(limit))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnhanceResponse {
    pub success: bool,
    /// Id to poll `GET /api/v1/status/{task_id}` with.
    pub task_id: String,
    /// Always `queued` here.
    pub status: String,
    pub message: String,
}

/// The optional `callback_url` field, checked (see [`check_callback_url`]).
fn callback_url(state: &AppState, f: &Fields) -> Result<Option<String>, ApiError> {
    match f.callback_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(None),
        Some(u) => Ok(Some(check_callback_url(u, state.config.callback_secret.is_some(), state.tasks.settings().allow_private_workers)?)),
    }
}

/// Form fields other than the file, as received.
#[derive(Default)]
struct Fields {
    tile_size: Option<String>,
    quality_level: Option<String>,
    scale: Option<String>,
    face_enhance: Option<String>,
    /// Seed 001/002's task callback, POSTed (signed) when the task finishes.
    callback_url: Option<String>,
}

fn parse_params(f: &Fields) -> Result<EnhanceParams, ApiError> {
    let mut p = EnhanceParams::default();
    if let Some(v) = f.tile_size.as_deref().filter(|v| !v.is_empty()) {
        p.tile_size = v.trim().parse().map_err(|_| ApiError::field("tile_size", format!("{v:?} is not a whole number")))?;
    }
    if let Some(v) = f.quality_level.as_deref().filter(|v| !v.is_empty()) {
        p.quality_level = v.trim().parse::<QualityLevel>().map_err(|e| ApiError::field("quality_level", e))?;
    }
    if let Some(v) = f.scale.as_deref().filter(|v| !v.is_empty()) {
        p.scale = v.trim().parse().map_err(|_| ApiError::field("scale", format!("{v:?} is not 2 or 4")))?;
    }
    if let Some(v) = f.face_enhance.as_deref().filter(|v| !v.is_empty()) {
        p.face_enhance = match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(ApiError::field("face_enhance", format!("{v:?} is not true or false"))),
        };
    }
    // The seed contract returns JPEG.
    p.output_format = OutputFormat::Jpeg;
    if let Err(msg) = p.validate() {
        let field = if msg.starts_with("scale") { "scale" } else { "tile_size" };
        return Err(ApiError::field(field, msg));
    }
    Ok(p)
}

#[utoipa::path(
    post, path = "/api/v1/enhance", tag = "enhance", security((), ("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "`file` (JPEG/PNG/WebP/AVIF, up to 100 MB), optional `tile_size` (default 400), `quality_level` (high|medium|fast, default high), `scale` (2|4, default 2), `face_enhance` (default true)"),
    responses(
        (status = 202, description = "Task queued; with a Bearer token it belongs to that user", body = EnhanceResponse),
        (status = 401, description = "An invalid token, or none where anonymous uploads are off", body = ErrorBody),
        (status = 413, description = "File too large", body = ErrorBody),
        (status = 415, description = "Not a supported image type", body = ErrorBody),
        (status = 422, description = "Missing file, bad parameter, invalid image header or truncated file (`INVALID_IMAGE`)", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "The upload could not be stored; retry (see Retry-After)", body = ErrorBody),
    )
)]
pub async fn enhance(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    MaybeUser(user): MaybeUser,
    req: Request,
) -> ApiResult<(StatusCode, Json<EnhanceResponse>)> {
    let outcome = match user {
        None if !state.config.allow_anonymous_uploads => {
            Err(ApiError::new(ErrorCode::InvalidCredentials, "login required to upload: send Authorization: Bearer <access token>"))
        }
        user => accept(&state, request_id, user.map(|u| u.user_id), req).await,
    };
    // Every way an upload can fail to become a task counts, by its error code.
    if let Err(e) = &outcome {
        state.metrics.upload_rejected(e.code);
    }
    outcome
}

async fn accept(
    state: &AppState,
    request_id: RequestId,
    owner: Option<String>,
    req: Request,
) -> ApiResult<(StatusCode, Json<EnhanceResponse>)> {
    let started = Instant::now();
    let ip = admit_upload(state, &req)?;
    let limit = state.config.max_upload_bytes;
    check_declared_length(&req, limit.saturating_add(MULTIPART_SLACK))?;
    let mut multipart = <Multipart as axum::extract::FromRequest<AppState>>::from_request(req, state)
        .await
        .map_err(|e| ApiError::field("file", format!("expected a multipart/form-data body: {}", e.body_text())))?;

    let task_id = uuid::Uuid::new_v4().simple().to_string();
    let mut fields = Fields::default();
    let mut stored: Option<Ingested> = None;
    let outcome: Result<(), ApiError> = async {
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(multipart_error(e, limit, None)),
            };
            let name = field.name().unwrap_or("").to_string();
            let slot = match name.as_str() {
                "file" => {
                    if stored.is_some() {
                        return Err(ApiError::field("file", "send exactly one file"));
                    }
                    stored = Some(store_field(state, field, &format!("uploads/{task_id}"), Accept::Images).await?);
                    continue;
                }
                "tile_size" => &mut fields.tile_size,
                "quality_level" => &mut fields.quality_level,
                "scale" => &mut fields.scale,
                "face_enhance" => &mut fields.face_enhance,
                "callback_url" => &mut fields.callback_url,
                // Unknown fields are ignored, as the seed gateway did.
                _ => {
                    discard(field, limit).await?;
                    continue;
                }
            };
            *slot = Some(text_field(field, &name, limit).await?);
        }
        Ok(())
    }
    .await;
    let cleanup = |stored: &Option<Ingested>| {
        let uri = stored.as_ref().map(|s| s.uri.clone());
        let storage = state.storage.clone();
        async move {
            if let Some(uri) = uri {
                let _ = storage.delete(&uri).await;
            }
        }
    };
    if let Err(e) = outcome {
        cleanup(&stored).await;
        return Err(e);
    }
    let checked = parse_params(&fields).and_then(|p| Ok((p, callback_url(state, &fields)?)));
    let (params, callback_url) = match checked {
        Ok(p) => p,
        Err(e) => {
            cleanup(&stored).await;
            return Err(e);
        }
    };
    let Some(file) = stored else {
        return Err(ApiError::field("file", "no file was uploaded; send the image in a form field named `file`"));
    };
    let upload = NewUpload {
        task_id: task_id.clone(),
        input_uri: file.uri.clone(),
        content_type: file.media.mime_type().to_string(),
        bytes: file.bytes,
        params,
        request_id: request_id.0.clone(),
        owner,
        client: ip.to_string(),
    };
    let options = TaskOptions { meta: TaskMeta { callback_url, ..TaskMeta::default() }, ..TaskOptions::default() };
    if let Err(e) = state.tasks.create_task_with(upload, options).await.map_err(ApiError::from) {
        cleanup(&Some(file)).await;
        return Err(e);
    }
    state.metrics.upload_bytes.inc_by(file.bytes);
    tracing::info!(task_id = %task_id, bytes = file.bytes, media = ?file.media, elapsed_ms = started.elapsed().as_millis() as u64, "task queued");
    Ok((StatusCode::ACCEPTED, Json(EnhanceResponse { success: true, task_id, status: "queued".into(), message: "task queued".into() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(tile: Option<&str>, q: Option<&str>, scale: Option<&str>) -> Fields {
        Fields {
            tile_size: tile.map(Into::into),
            quality_level: q.map(Into::into),
            scale: scale.map(Into::into),
            face_enhance: None,
            callback_url: None,
        }
    }

    #[test]
    fn defaults_follow_the_seed() {
        let p = parse_params(&Fields::default()).unwrap();
        assert_eq!((p.tile_size, p.quality_level, p.scale), (400, QualityLevel::High, 2));
    }

    #[test]
    fn bad_fields_are_named() {
        for (f, field) in [
            (fields(Some("abc"), None, None), "tile_size"),
            (fields(Some("5"), None, None), "tile_size"),
            (fields(None, Some("ultra"), None), "quality_level"),
            (fields(None, None, Some("3")), "scale"),
        ] {
            let e = parse_params(&f).unwrap_err();
            assert!(e.details["field_errors"][field].is_array(), "{field}: {:?}", e.details);
        }
    }
}
