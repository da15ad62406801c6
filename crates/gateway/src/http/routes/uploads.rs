//! Seed 001's uploads (`/api/upload/...`) and the multipart plumbing every upload route
//! shares with `/api/v1/enhance`: a file field is streamed through
//! [`crate::domain::uploads::ingest`] and its refusals are mapped onto the envelope here, once.

use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;
use futures::StreamExt;

use crate::app::AppState;
use crate::domain::uploads::ingest::{self, Accept, IngestError, Ingested, Rules};
use crate::http::error::{ApiError, ErrorCode};

/// Multipart framing around a file; the file itself is counted exactly.
pub(crate) const MULTIPART_SLACK: u64 = 64 * 1024;

pub(crate) fn too_large(limit: u64) -> ApiError {
    let size = if limit >= 1024 * 1024 { format!("{} MB", limit / (1024 * 1024)) } else { format!("{} KB", limit.div_ceil(1024)) };
    ApiError::new(ErrorCode::FileTooLarge, format!("the file is larger than the {size} limit"))
}

/// A multipart read error: the body limit (413) or a malformed or cut-off body (422, naming
/// the field being read when it is one of ours).
pub(crate) fn multipart_error(e: MultipartError, limit: u64, field: Option<&str>) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(limit);
    }
    let message = format!("malformed multipart body: {}", e.body_text());
    match field {
        Some(f) => ApiError::field(f, message),
        None => ApiError::new(ErrorCode::ValidationError, message),
    }
}

/// Longest value of a form field other than a file: they are short words and numbers.
const TEXT_FIELD_LIMIT: usize = 256;

/// Reads a short text field chunk by chunk, refusing it as soon as it outgrows
/// [`TEXT_FIELD_LIMIT`]: a multi-megabyte value costs neither memory nor the time to receive it.
pub(crate) async fn text_field(mut field: Field<'_>, name: &str, limit: u64) -> Result<String, ApiError> {
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

/// Drops an unknown field's bytes as they arrive (ignoring a field must not mean holding it).
pub(crate) async fn discard(mut field: Field<'_>, limit: u64) -> Result<(), ApiError> {
    loop {
        match field.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(e) => return Err(multipart_error(e, limit, None)),
        }
    }
}

/// A refused ingestion in the envelope. `field` names the form field for 422s.
pub(crate) fn ingest_error(e: IngestError<ApiError>, field: &str) -> ApiError {
    match e {
        IngestError::Client(e) => e,
        IngestError::Empty => ApiError::field(field, "the file is empty"),
        IngestError::TooLarge { limit } => too_large(limit),
        IngestError::Unsupported { accept: Accept::Images, format } => {
            let what = match format {
                Some(f) => format!("{} images are not supported", f.name()),
                None => "the file is not a JPEG, PNG, WebP or AVIF image".to_string(),
            };
            ApiError::new(ErrorCode::UnsupportedMediaType, format!("{what}; upload a JPEG, PNG, WebP or AVIF image"))
        }
        IngestError::Unsupported { accept: Accept::Videos, .. } => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "the file is not an MP4, MOV or WebM video; upload one of those")
        }
        IngestError::Invalid(e) => ApiError::new(ErrorCode::InvalidImage, e.to_string()),
        IngestError::Storage => ApiError::unavailable("the upload could not be stored; try again shortly").retry_after(5),
    }
}

/// The rules of the gateway's configuration for `accept`.
pub(crate) fn rules(state: &AppState, accept: Accept) -> Rules {
    Rules {
        accept,
        max_bytes: state.config.max_upload_bytes,
        limits: purrify_imaging::Limits { max_pixels: state.config.max_pixels, ..Default::default() },
    }
}

/// Streams one multipart file field into storage at `key_stem` (+ extension) under the
/// upload rules; on refusal nothing is stored.
pub(crate) async fn store_field(state: &AppState, field: Field<'_>, key_stem: &str, accept: Accept) -> Result<Ingested, ApiError> {
    let limit = state.config.max_upload_bytes;
    let name = field.name().unwrap_or("file").to_string();
    let chunks = Box::pin(field.map(|r| r.map_err(|e| multipart_error(e, limit, Some(&name)))));
    ingest::ingest(&state.storage, key_stem, rules(state, accept), chunks).await.map_err(|e| ingest_error(e, &name))
}
