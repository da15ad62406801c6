//! Seed 001's uploads (`/api/upload/...`) and the multipart plumbing every upload route
//! shares with `/api/v1/enhance`: a file field is streamed through
//! [`crate::domain::uploads::ingest`] and its refusals are mapped onto the envelope here, once.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::DomainError;
use crate::domain::uploads::base64_text;
use crate::domain::uploads::ingest::{self, Accept, IngestError, Ingested, Rules};
use crate::domain::uploads::{Staged, UploadError, UploadedFile};
use crate::http::auth::CurrentUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::http::files::{Caching, Disposition, FileHead, stream_file};
use crate::http::middleware::client_ip;
use crate::http::views::iso;

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
pub(crate) fn ingest_error<E: Into<ApiError>>(e: IngestError<E>, field: &str) -> ApiError {
    match e {
        IngestError::Client(e) => e.into(),
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

// ---- Seed 001's routes --------------------------------------------------------------------

/// Most files in one `/api/upload/multiple` or `/api/upload/base64/batch` request.
pub const MAX_FILES: usize = 10;

/// Body limit of a request carrying `files` files of at most `max_upload_bytes` each, as
/// multipart or as base64 (4/3 of the bytes) with the framing around them.
pub(crate) fn body_limit(max_upload_bytes: u64, files: u64) -> u64 {
    max_upload_bytes.div_ceil(3).saturating_mul(4).saturating_add(MULTIPART_SLACK).saturating_mul(files)
}

fn layer_limit(limit: u64) -> DefaultBodyLimit {
    DefaultBodyLimit::max(usize::try_from(limit).unwrap_or(usize::MAX))
}

pub fn router(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    let one = OpenApiRouter::new().routes(routes!(single)).routes(routes!(base64_one)).layer(layer_limit(body_limit(max_upload_bytes, 1)));
    let many = OpenApiRouter::new()
        .routes(routes!(multiple))
        .routes(routes!(base64_batch))
        .layer(layer_limit(body_limit(max_upload_bytes, MAX_FILES as u64)));
    OpenApiRouter::new().merge(one).merge(many).routes(routes!(delete)).routes(routes!(file))
}

/// An uploaded file (seed 001).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadView {
    /// The file's id: what `POST /api/tasks/create` takes.
    pub file_id: String,
    /// The stored name, `<file_id>.<ext>`: what `DELETE /api/upload/{fileName}` takes.
    pub filename: String,
    /// The client's name for it, sanitised.
    pub original_name: String,
    /// Where it can be read; the URL is the capability (unguessable), no token needed.
    pub url: String,
    pub thumbnail_url: Option<String>,
    /// Bytes.
    pub size: u64,
    pub mimetype: String,
    /// `image` or `video`.
    pub kind: &'static str,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub created_at: String,
}

/// The capability URL of a file.
pub(crate) fn file_url(f: &UploadedFile) -> String {
    format!("/api/upload/files/{}", f.stored_name())
}

pub(crate) fn thumbnail_url(f: &UploadedFile) -> Option<String> {
    f.thumbnail_uri.as_ref().map(|_| format!("/api/upload/files/{}.thumb.jpg", f.id))
}

impl From<&UploadedFile> for UploadView {
    fn from(f: &UploadedFile) -> Self {
        UploadView {
            file_id: f.id.clone(),
            filename: f.stored_name(),
            original_name: f.file_name.clone(),
            url: file_url(f),
            thumbnail_url: thumbnail_url(f),
            size: f.bytes,
            mimetype: f.content_type.clone(),
            kind: f.kind.as_str(),
            width: f.width,
            height: f.height,
            created_at: iso(f.created_at),
        }
    }
}

/// A refused upload in the envelope; `field` names the form or JSON field for 422s.
pub(crate) fn upload_error<E: Into<ApiError>>(e: UploadError<E>, field: &str) -> ApiError {
    match e {
        UploadError::Ingest(e) => ingest_error(e, field),
        UploadError::Quota { used, quota } => ApiError::new(
            ErrorCode::StorageQuotaExceeded,
            format!("storage quota exceeded: {} of {} MB used; delete some uploads first", used / (1 << 20), quota / (1 << 20)),
        )
        .with_details(json!({ "used_bytes": used, "quota_bytes": quota })),
        UploadError::Domain(e) => e.into(),
    }
}

/// The per-client upload rate (`PURRIFY_UPLOADS_PER_MINUTE`) every upload route shares:
/// the client's address, or a 429 with Retry-After.
pub(crate) fn admit_upload(state: &AppState, req: &Request) -> ApiResult<IpAddr> {
    let ip = client_ip(req, &state.config);
    state.upload_limiter.check(ip, Instant::now()).map_err(|wait| {
        ApiError::new(ErrorCode::TaskLimitExceeded, "too many uploads from this client; try again later").retry_after(wait.as_secs().max(1))
    })?;
    Ok(ip)
}

/// Refuses a request whose declared length is over `limit` before reading any of it (the
/// router's body limit stops undeclared ones while they stream).
pub(crate) fn check_declared_length(req: &Request, limit: u64) -> ApiResult<()> {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    Ok(())
}

/// Receives the multipart file fields named `field` (also `field[]`) of `req`: at most
/// `max_files`, all-or-nothing. Other fields are dropped as they arrive.
pub(crate) async fn receive_multipart(
    state: &AppState,
    owner: &str,
    req: Request,
    field: &str,
    max_files: usize,
    accept: Accept,
    thumbnails: bool,
) -> ApiResult<Vec<UploadedFile>> {
    let max = state.config.max_upload_bytes;
    admit_upload(state, &req)?;
    check_declared_length(&req, body_limit(max, max_files as u64))?;
    let mut multipart = <Multipart as axum::extract::FromRequest<AppState>>::from_request(req, state)
        .await
        .map_err(|e| ApiError::field(field, format!("expected a multipart/form-data body: {}", e.body_text())))?;
    let mut staged: Vec<Staged> = Vec::new();
    let outcome: ApiResult<()> = async {
        loop {
            let part = match multipart.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(multipart_error(e, max, None)),
            };
            let name = part.name().unwrap_or("");
            if name != field && name.strip_suffix("[]") != Some(field) {
                discard(part, max).await?;
                continue;
            }
            if staged.len() == max_files {
                let what =
                    if max_files == 1 { "send exactly one file".to_string() } else { format!("at most {max_files} files per request") };
                return Err(ApiError::field(field, what));
            }
            let original = part.file_name().map(str::to_owned);
            let reserved = staged.iter().map(Staged::bytes).sum();
            let chunks = Box::pin(part.map(|r| r.map_err(|e| multipart_error(e, max, Some(field)))));
            let one = state.uploads.receive(owner, accept, original.as_deref(), thumbnails, reserved, chunks).await;
            staged.push(one.map_err(|e| upload_error(e, field))?);
        }
    }
    .await;
    if let Err(e) = outcome {
        state.uploads.discard(staged).await;
        return Err(e);
    }
    if staged.is_empty() {
        return Err(ApiError::field(field, format!("no file was uploaded; send it in a form field named `{field}`")));
    }
    state.uploads.commit(owner, staged).await.map_err(|e: UploadError<ApiError>| upload_error(e, field))
}

#[utoipa::path(post, path = "/api/upload/single", tag = "uploads", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "`file`: a JPEG, PNG, WebP or AVIF image, up to the upload limit"),
    responses((status = 200, body = Envelope<UploadView>), (status = 401, body = ErrorBody),
        (status = 413, description = "File too large, or the storage quota is used up (`STORAGE_QUOTA_EXCEEDED`)", body = ErrorBody),
        (status = 415, description = "Not a supported image type", body = ErrorBody),
        (status = 422, description = "No file, truncated or invalid image (`INVALID_IMAGE`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody)))]
pub async fn single(State(state): State<AppState>, CurrentUser(user): CurrentUser, req: Request) -> ApiResult<Envelope<UploadView>> {
    let files = receive_multipart(&state, &user.user_id, req, "file", 1, Accept::Images, false).await?;
    Ok(Envelope::ok("file uploaded", UploadView::from(&files[0])))
}

#[utoipa::path(post, path = "/api/upload/multiple", tag = "uploads", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "`files` (repeated, at most 10): images; all are stored or none"),
    responses((status = 200, body = Envelope<Vec<UploadView>>), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, description = "No file, too many files, or a bad one", body = ErrorBody)))]
pub async fn multiple(State(state): State<AppState>, CurrentUser(user): CurrentUser, req: Request) -> ApiResult<Envelope<Vec<UploadView>>> {
    let files = receive_multipart(&state, &user.user_id, req, "files", MAX_FILES, Accept::Images, false).await?;
    Ok(Envelope::ok(format!("{} files uploaded", files.len()), files.iter().map(UploadView::from).collect()))
}

/// One base64 image: `image` or `data` holds a data URL (`data:image/png;base64,...`) or bare
/// base64.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Base64Image<'a> {
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub image: Option<Cow<'a, str>>,
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub data: Option<Cow<'a, str>>,
    pub filename: Option<String>,
}

/// `{"images": [...]}`: objects like `/api/upload/base64`'s body, or bare strings.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Base64Batch<'a> {
    #[serde(borrow)]
    #[schema(value_type = Vec<Object>)]
    pub images: Vec<Base64Item<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Base64Item<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    #[serde(borrow)]
    Object(Base64Image<'a>),
}

/// Reads a JSON body of at most `files` base64 files (413 past the limit).
async fn json_bytes(state: &AppState, req: Request, files: u64) -> ApiResult<Bytes> {
    let limit = body_limit(state.config.max_upload_bytes, files);
    admit_upload(state, &req)?;
    check_declared_length(&req, limit)?;
    <Bytes as axum::extract::FromRequest<AppState>>::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return too_large(limit);
        }
        ApiError::new(ErrorCode::ValidationError, format!("cannot read the request body: {}", e.body_text()))
    })
}

/// Stores base64 images of `owner`, all or none.
async fn receive_base64(state: &AppState, owner: &str, images: &[(&str, Option<&str>)]) -> ApiResult<Vec<UploadedFile>> {
    let mut staged = Vec::new();
    for &(text, name) in images {
        let reserved = staged.iter().map(Staged::bytes).sum();
        let one = match base64_text::payload(text, "image") {
            Ok(b64) => state.uploads.receive(owner, Accept::Images, name, false, reserved, base64_text::decode_chunks(b64, "image")).await,
            Err(e) => Err(UploadError::Domain(e)),
        };
        match one {
            Ok(s) => staged.push(s),
            Err(e) => {
                state.uploads.discard(staged).await;
                return Err(upload_error(e, "image"));
            }
        }
    }
    state.uploads.commit(owner, staged).await.map_err(|e: UploadError<DomainError>| upload_error(e, "image"))
}

fn image_text<'b>(item: &'b Base64Image<'_>) -> ApiResult<(&'b str, Option<&'b str>)> {
    let text = item.image.as_deref().or(item.data.as_deref()).filter(|t| !t.trim().is_empty());
    let text = text.ok_or_else(|| ApiError::field("image", "send the image as base64 or a data URL in `image` (or `data`)"))?;
    Ok((text, item.filename.as_deref()))
}

fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::new(ErrorCode::ValidationError, format!("invalid JSON body: {e}")))
}

#[utoipa::path(post, path = "/api/upload/base64", tag = "uploads", security(("bearer" = [])),
    request_body(content = Base64Image, description = "`image` (or `data`): `data:image/png;base64,...` or bare base64; optional `filename`"),
    responses((status = 200, body = Envelope<UploadView>), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, description = "Bad JSON, bad base64, truncated or invalid image", body = ErrorBody)))]
pub async fn base64_one(State(state): State<AppState>, CurrentUser(user): CurrentUser, req: Request) -> ApiResult<Envelope<UploadView>> {
    let bytes = json_bytes(&state, req, 1).await?;
    let body: Base64Image = parse_json(&bytes)?;
    let files = receive_base64(&state, &user.user_id, &[image_text(&body)?]).await?;
    Ok(Envelope::ok("file uploaded", UploadView::from(&files[0])))
}

#[utoipa::path(post, path = "/api/upload/base64/batch", tag = "uploads", security(("bearer" = [])),
    request_body(content = Base64Batch, description = "`images`: at most 10 items, each a string or `{image|data, filename?}`; all are stored or none"),
    responses((status = 200, body = Envelope<Vec<UploadView>>), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn base64_batch(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    req: Request,
) -> ApiResult<Envelope<Vec<UploadView>>> {
    let bytes = json_bytes(&state, req, MAX_FILES as u64).await?;
    let body: Base64Batch = parse_json(&bytes)?;
    if body.images.is_empty() || body.images.len() > MAX_FILES {
        return Err(ApiError::field("images", format!("send 1 to {MAX_FILES} images")));
    }
    let images = body
        .images
        .iter()
        .map(|i| match i {
            Base64Item::Text(t) => Ok((t.as_ref(), None)),
            Base64Item::Object(o) => image_text(o),
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let files = receive_base64(&state, &user.user_id, &images).await?;
    Ok(Envelope::ok(format!("{} files uploaded", files.len()), files.iter().map(UploadView::from).collect()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedUpload {
    pub filename: String,
    pub deleted: bool,
}

#[utoipa::path(delete, path = "/api/upload/{fileName}", tag = "uploads", security(("bearer" = [])),
    params(("fileName" = String, Path, description = "The stored name (`<file_id>.<ext>`) or the file id")),
    responses((status = 200, body = Envelope<DeletedUpload>), (status = 401, body = ErrorBody),
        (status = 404, description = "No such file of this user", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(file_name): Path<String>,
) -> ApiResult<Envelope<DeletedUpload>> {
    if !state.uploads.delete(&user.user_id, &file_name).await? {
        return Err(ApiError::not_found(format!("no uploaded file {file_name:?}")));
    }
    Ok(Envelope::ok("file deleted", DeletedUpload { filename: file_name, deleted: true }))
}

#[utoipa::path(get, path = "/api/upload/files/{key}", tag = "uploads",
    params(("key" = String, Path, description = "`<file_id>.<ext>` or `<file_id>.thumb.jpg`, from an upload's `url` or `thumbnail`")),
    responses((status = 200, description = "The file (streamed)"), (status = 404, body = ErrorBody)))]
pub async fn file(State(state): State<AppState>, Path(key): Path<String>) -> ApiResult<Response> {
    let Some((content_type, size, body)) = state.uploads.open(&key).await? else {
        return Err(ApiError::not_found("no such file"));
    };
    // The URL is the capability: private caches only; the content never changes.
    let caching = Caching::Private { max_age: 86_400, immutable: true };
    Ok(stream_file(FileHead { content_type: &content_type, size, file_name: &key, disposition: Disposition::Inline, caching }, body))
}
