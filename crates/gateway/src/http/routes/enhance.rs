//! `POST /api/v1/enhance`: the upload. The file is streamed to storage as it arrives (never
//! held whole), its type is decided by magic bytes, its header is checked against the pixel
//! limit, and the task row is committed before the 202. Any refusal deletes what was written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::multipart::Field;
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::{Extension, Json};
use bytes::BytesMut;
use futures::StreamExt;
use purrify_api::{EnhanceParams, OutputFormat, QualityLevel};
use purrify_imaging::{Format, ImageError};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::tasks::NewUpload;
use crate::http::auth::MaybeUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::http::middleware::{RequestId, client_ip};

/// Bytes of the file kept in memory for the header check; the rest only streams through.
const HEADER_PREFIX: usize = 1 << 20;

pub fn router(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    // Multipart framing adds a little around the file; the file itself is counted exactly.
    let limit = usize::try_from(max_upload_bytes.saturating_add(64 * 1024)).unwrap_or(usize::MAX);
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

/// Form fields other than the file, as received.
#[derive(Default)]
struct Fields {
    tile_size: Option<String>,
    quality_level: Option<String>,
    scale: Option<String>,
    face_enhance: Option<String>,
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

/// Longest value of a form field other than the file: they are short words and numbers.
const TEXT_FIELD_LIMIT: usize = 64;

/// Reads a short text field chunk by chunk, refusing it as soon as it outgrows
/// [`TEXT_FIELD_LIMIT`]: a multi-megabyte `tile_size` costs neither memory nor the time to
/// receive it.
async fn text_field(mut field: Field<'_>, name: &str, limit: u64) -> Result<String, ApiError> {
    let mut value = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(c)) => {
                if value.len() + c.len() > TEXT_FIELD_LIMIT {
                    return Err(ApiError::field(name, format!("value is too long (at most {TEXT_FIELD_LIMIT} bytes)")));
                }
                value.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limit, Some(name))),
        }
    }
    String::from_utf8(value).map_err(|_| ApiError::field(name, "value is not UTF-8 text"))
}

/// Drops an unknown field's bytes as they arrive (the seed gateway ignored unknown fields;
/// ignoring them must not mean holding them).
async fn discard(mut field: Field<'_>, limit: u64) -> Result<(), ApiError> {
    loop {
        match field.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(e) => return Err(multipart_error(e, limit, None)),
        }
    }
}

/// What the stored file turned out to be.
struct Stored {
    uri: String,
    bytes: u64,
    format: Format,
}

fn unsupported(format: Option<Format>) -> ApiError {
    let what = match format {
        Some(f) => format!("{} images are not supported", f.name()),
        None => "the file is not a JPEG, PNG, WebP or AVIF image".to_string(),
    };
    ApiError::new(ErrorCode::UnsupportedMediaType, format!("{what}; upload a JPEG, PNG, WebP or AVIF image"))
}

fn too_large(limit: u64) -> ApiError {
    let size = if limit >= 1024 * 1024 { format!("{} MB", limit / (1024 * 1024)) } else { format!("{} KB", limit.div_ceil(1024)) };
    ApiError::new(ErrorCode::FileTooLarge, format!("the file is larger than the {size} limit"))
}

/// Streams the file field to storage: sniff the first bytes, then pass every chunk through
/// with a byte count that aborts the upload past the limit.
///
/// A failed write is told apart by where it failed: the client's stream (cut off, malformed,
/// too large: a 4xx naming the problem) or the storage (a retryable 503 that says nothing
/// about the storage; the cause is logged).
async fn store_file(state: &AppState, mut field: Field<'_>, task_id: &str) -> Result<Stored, ApiError> {
    let limit = state.config.max_upload_bytes;
    let mut prefix = BytesMut::new();
    let mut first_chunks = Vec::new();
    while prefix.len() < 32 {
        match field.chunk().await {
            Ok(Some(c)) => {
                prefix.extend_from_slice(&c);
                first_chunks.push(c);
            }
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limit, Some("file"))),
        }
    }
    if prefix.is_empty() {
        return Err(ApiError::field("file", "the file is empty"));
    }
    let format = match purrify_imaging::sniff(&prefix) {
        Some(f) if f.is_supported() => f,
        other => return Err(unsupported(other)),
    };
    let uri = state.storage.uri_for(&format!("uploads/{task_id}.{}", extension(format)));
    let count = Arc::new(AtomicU64::new(0));
    // The first HEADER_PREFIX bytes, captured as they stream past, for the header check.
    let header = Arc::new(std::sync::Mutex::new(BytesMut::new()));
    let (counted, kept) = (count.clone(), header.clone());
    // Why the client's side of the stream ended early, when it did.
    let client_fault: Arc<std::sync::Mutex<Option<ApiError>>> = Arc::default();
    let fault = client_fault.clone();
    let chunks = futures::stream::iter(first_chunks.into_iter().map(Ok)).chain(field).map(move |r| {
        let blame = |e: ApiError| {
            let message = e.message.clone();
            *fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            Err(std::io::Error::other(message))
        };
        let c = match r {
            Ok(c) => c,
            Err(e) => return blame(multipart_error(e, limit, Some("file"))),
        };
        let total = counted.fetch_add(c.len() as u64, Ordering::Relaxed) + c.len() as u64;
        if total > limit {
            return blame(too_large(limit));
        }
        let mut h = kept.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() < HEADER_PREFIX {
            let take = (HEADER_PREFIX - h.len()).min(c.len());
            h.extend_from_slice(&c[..take]);
        }
        Ok(c)
    });
    let result = state.storage.put_stream(&uri, Box::pin(chunks)).await;
    if let Err(e) = result {
        if let Err(d) = state.storage.delete(&uri).await {
            tracing::warn!(error = %d, "cannot delete a failed upload");
        }
        if let Some(client) = client_fault.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tracing::info!(error = %e, "upload cut short by the client");
            return Err(client);
        }
        tracing::error!(error = %e, "cannot store an upload");
        return Err(ApiError::unavailable("the upload could not be stored; try again shortly").retry_after(5));
    }
    let bytes = count.load(Ordering::Relaxed);
    let head = header.lock().unwrap_or_else(|p| p.into_inner()).clone().freeze();
    // A header that is complete (whole file in the prefix) and invalid is refused now; a
    // header cut off by the prefix is left to the worker, which fails the task with a reason.
    let limits = purrify_imaging::Limits { max_pixels: state.config.max_pixels, ..Default::default() };
    if let Err(e) = purrify_imaging::read_header(&head, &limits) {
        let definitive = (bytes as usize) <= head.len() || matches!(e, ImageError::TooLarge { .. } | ImageError::DimensionTooLarge { .. });
        if definitive {
            let _ = state.storage.delete(&uri).await;
            return Err(ApiError::new(ErrorCode::InvalidImage, e.to_string()));
        }
    }
    Ok(Stored { uri, bytes, format })
}

fn extension(f: Format) -> &'static str {
    match f {
        Format::Jpeg => "jpg",
        Format::Png => "png",
        Format::Webp => "webp",
        Format::Avif => "avif",
        _ => "bin",
    }
}

/// A multipart read error: the body limit (413) or a malformed or cut-off body (422, naming
/// the field being read when it is one of ours).
fn multipart_error(e: axum::extract::multipart::MultipartError, limit: u64, field: Option<&str>) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(limit);
    }
    let message = format!("malformed multipart body: {}", e.body_text());
    match field {
        Some(f) => ApiError::field(f, message),
        None => ApiError::new(ErrorCode::ValidationError, message),
    }
}

#[utoipa::path(
    post, path = "/api/v1/enhance", tag = "enhance", security((), ("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "`file` (JPEG/PNG/WebP/AVIF, up to 100 MB), optional `tile_size` (default 400), `quality_level` (high|medium|fast, default high), `scale` (2|4, default 2), `face_enhance` (default true)"),
    responses(
        (status = 202, description = "Task queued; with a Bearer token it belongs to that user", body = EnhanceResponse),
        (status = 401, description = "An invalid token, or none where anonymous uploads are off", body = ErrorBody),
        (status = 413, description = "File too large", body = ErrorBody),
        (status = 415, description = "Not a supported image type", body = ErrorBody),
        (status = 422, description = "Missing file, bad parameter or invalid image header", body = ErrorBody),
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
    let ip = client_ip(&req, &state.config);
    if let Err(wait) = state.upload_limiter.check(ip, started) {
        return Err(ApiError::new(ErrorCode::TaskLimitExceeded, "too many uploads from this client; try again later")
            .retry_after(wait.as_secs().max(1)));
    }
    let limit = state.config.max_upload_bytes;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > limit.saturating_add(64 * 1024)
    {
        return Err(too_large(limit));
    }
    let mut multipart = <Multipart as axum::extract::FromRequest<AppState>>::from_request(req, state)
        .await
        .map_err(|e| ApiError::field("file", format!("expected a multipart/form-data body: {}", e.body_text())))?;

    let task_id = uuid::Uuid::new_v4().simple().to_string();
    let mut fields = Fields::default();
    let mut stored: Option<Stored> = None;
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
                    stored = Some(store_file(state, field, &task_id).await?);
                    continue;
                }
                "tile_size" => &mut fields.tile_size,
                "quality_level" => &mut fields.quality_level,
                "scale" => &mut fields.scale,
                "face_enhance" => &mut fields.face_enhance,
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
    let cleanup = |stored: &Option<Stored>| {
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
    let params = match parse_params(&fields) {
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
        content_type: file.format.mime_type().to_string(),
        bytes: file.bytes,
        params,
        request_id: request_id.0.clone(),
        owner,
        client: ip.to_string(),
    };
    if let Err(e) = state.tasks.create_task(upload).await.map_err(ApiError::from) {
        cleanup(&Some(file)).await;
        return Err(e);
    }
    state.metrics.upload_bytes.inc_by(file.bytes);
    tracing::info!(task_id = %task_id, bytes = file.bytes, format = ?file.format, elapsed_ms = started.elapsed().as_millis() as u64, "task queued");
    Ok((StatusCode::ACCEPTED, Json(EnhanceResponse { success: true, task_id, status: "queued".into(), message: "task queued".into() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(tile: Option<&str>, q: Option<&str>, scale: Option<&str>) -> Fields {
        Fields { tile_size: tile.map(Into::into), quality_level: q.map(Into::into), scale: scale.map(Into::into), face_enhance: None }
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
