//! Seed 003's generation (`/api/v1/generate/*`): text-to-image and text-to-video take JSON,
//! image-to-image and image-to-video a multipart form with the picture in `image` (or
//! `imageId`, a file uploaded before). Each answers `{taskId, status, estimatedTime}` once the
//! task is committed; the estimate is the median of the provider's and model's measured
//! durations (the seed's 30 s / 120 s until there are some). The task endpoints answer the
//! seed's result shapes; result files are served to their owner by
//! `/api/v1/generate/task/{taskId}/files/{n}` (provider URLs never reach clients).

use std::collections::HashMap;

use axum::Extension;
use axum::extract::Multipart;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use purrify_api::TaskStatus;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::Principal;
use crate::domain::generation::outputs::StoredFile;
use crate::domain::generation::{Created, GenerateRequest, ImageSpec, JobSpec, VideoSpec};
use crate::domain::tasks::TaskDetail;
use crate::domain::uploads::ingest::Accept;
use crate::http::auth::CurrentUser;
use crate::http::envelope::{V1, V1Error};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiJson;
use crate::http::files::{Caching, Disposition, FileHead, stream_file};
use crate::http::middleware::RequestId;
use crate::http::routes::uploads::{admit_upload, body_limit, check_declared_length, discard, multipart_error, store_field, text_field};

/// Mounted with the upload body limit (two of the routes take a picture).
pub fn router(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    let limit = usize::try_from(body_limit(max_upload_bytes, 1)).unwrap_or(usize::MAX);
    OpenApiRouter::new()
        .routes(routes!(text_to_image))
        .routes(routes!(image_to_image))
        .routes(routes!(text_to_video))
        .routes(routes!(image_to_video))
        .routes(routes!(image_task))
        .routes(routes!(video_task))
        .routes(routes!(task_file))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(crate::http::envelope::v1_errors))
}

/// The answer to a generation request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub task_id: String,
    /// processing
    pub status: &'static str,
    /// Seconds.
    pub estimated_time: u64,
    /// The provider and model it went to.
    pub provider: String,
    pub model: String,
}

impl From<Created> for Started {
    fn from(c: Created) -> Self {
        Self { task_id: c.task_id, status: "processing", estimated_time: c.estimated_seconds, provider: c.provider, model: c.model }
    }
}

/// Seed 003's text-to-image body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TextToImage {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub num_images: Option<u32>,
    pub style: Option<String>,
    pub seed: Option<u64>,
    /// A provider id instead of the configured one.
    pub provider: Option<String>,
    pub model: Option<String>,
}

/// Seed 003's text-to-video body; `model` names the video provider (sora, veo, runway or a
/// custom one), as the seed has it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TextToVideo {
    pub prompt: String,
    pub model: Option<String>,
    pub duration: Option<u32>,
    pub resolution: Option<String>,
    pub fps: Option<u32>,
    pub style: Option<String>,
}

fn new_request(spec: JobSpec, request_id: &RequestId, title: &str) -> GenerateRequest {
    GenerateRequest {
        spec,
        input: None,
        provider: None,
        model: None,
        task_id: uuid::Uuid::new_v4().simple().to_string(),
        request_id: request_id.0.clone(),
        title: Some(title.chars().take(60).collect()),
        scene_id: None,
        price: None,
    }
}

#[utoipa::path(post, path = "/api/v1/generate/text-to-image", tag = "generation", security(("bearer" = [])), request_body = TextToImage,
    responses((status = 200, body = V1<Started>), (status = 400, body = V1Error), (status = 401, body = V1Error),
              (status = 429, description = "Daily image quota used up", body = V1Error), (status = 503, description = "No image provider available", body = V1Error)))]
pub async fn text_to_image(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    CurrentUser(user): CurrentUser,
    ApiJson(b): ApiJson<TextToImage>,
) -> ApiResult<V1<Started>> {
    let spec = JobSpec::TextToImage(ImageSpec {
        prompt: b.prompt.clone(),
        negative_prompt: b.negative_prompt,
        width: b.width.unwrap_or(1024),
        height: b.height.unwrap_or(1024),
        count: b.num_images.unwrap_or(1),
        style: b.style,
        seed: b.seed,
        strength: 0.8,
    });
    let req = GenerateRequest { provider: b.provider, model: b.model, ..new_request(spec, &request_id, &b.prompt) };
    Ok(V1::ok(state.generation.create(&user, req).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/generate/text-to-video", tag = "generation", security(("bearer" = [])), request_body = TextToVideo,
    responses((status = 200, body = V1<Started>), (status = 400, body = V1Error), (status = 401, body = V1Error),
              (status = 429, description = "Daily video quota used up", body = V1Error), (status = 503, description = "No video provider available", body = V1Error)))]
pub async fn text_to_video(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    CurrentUser(user): CurrentUser,
    ApiJson(b): ApiJson<TextToVideo>,
) -> ApiResult<V1<Started>> {
    let spec = JobSpec::TextToVideo(VideoSpec {
        prompt: b.prompt.clone(),
        duration: b.duration.unwrap_or(5),
        resolution: b.resolution.unwrap_or_else(|| "720p".into()),
        fps: b.fps.unwrap_or(24),
        style: b.style,
    });
    let req = GenerateRequest { provider: b.model, ..new_request(spec, &request_id, &b.prompt) };
    Ok(V1::ok(state.generation.create(&user, req).await?.into()))
}

/// A generation form: its text fields and the stored picture.
struct Form {
    fields: HashMap<String, String>,
    /// (uri, content type, bytes)
    input: Option<(String, String, u64)>,
}

fn number<T: std::str::FromStr>(form: &Form, field: &'static str) -> ApiResult<Option<T>> {
    match form.fields.get(field).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::field(field, format!("{v:?} is not a number"))),
    }
}

/// Reads a multipart form: text fields (bounded) and the picture in `image`, stored as the
/// task's input; or `imageId`, one of the user's uploads, copied for the task.
async fn receive_form(state: &AppState, user: &Principal, req: Request, task_id: &str) -> ApiResult<Form> {
    admit_upload(state, &req)?;
    let limit = state.config.max_upload_bytes;
    check_declared_length(&req, body_limit(limit, 1))?;
    let mut multipart = <Multipart as axum::extract::FromRequest<AppState>>::from_request(req, state)
        .await
        .map_err(|e| ApiError::field("image", format!("expected a multipart/form-data body: {}", e.body_text())))?;
    let mut form = Form { fields: HashMap::new(), input: None };
    let outcome: ApiResult<()> = async {
        while let Some(field) = multipart.next_field().await.map_err(|e| multipart_error(e, limit, None))? {
            let name = field.name().unwrap_or("").to_string();
            match name.as_str() {
                "image" => {
                    if form.input.is_some() {
                        return Err(ApiError::field("image", "send exactly one picture"));
                    }
                    let f = store_field(state, field, &format!("inputs/{task_id}"), Accept::Images).await?;
                    form.input = Some((f.uri, f.media.mime_type().to_string(), f.bytes));
                }
                "prompt" | "strength" | "width" | "height" | "numImages" | "model" | "duration" | "resolution" | "fps" | "style"
                | "provider" | "imageId" => {
                    let v = text_field(field, &name, 16 * 1024).await?;
                    form.fields.insert(name, v);
                }
                _ => discard(field, limit).await?,
            }
        }
        Ok(())
    }
    .await;
    if outcome.is_ok()
        && form.input.is_none()
        && let Some(id) = form.fields.get("imageId").filter(|s| !s.is_empty())
    {
        let copy = state.uploads.copy_for_task(&user.user_id, id, &format!("inputs/{task_id}")).await?;
        match copy {
            Some(f) if f.kind.as_str() == "image" => form.input = Some((f.uri, f.content_type, f.bytes)),
            Some(f) => {
                let _ = state.storage.delete(&f.uri).await;
                return Err(ApiError::field("imageId", format!("file {id} is not an image")));
            }
            None => return Err(ApiError::field("imageId", format!("no uploaded file {id} of yours"))),
        }
    }
    if let Err(e) = outcome {
        if let Some((uri, ..)) = &form.input {
            let _ = state.storage.delete(uri).await;
        }
        return Err(e);
    }
    if form.input.is_none() {
        return Err(ApiError::field("image", "send the picture in a form field named `image` (or the id of an upload as `imageId`)"));
    }
    Ok(form)
}

/// Creates the task of a form, deleting the stored picture when it is refused.
async fn create_from_form(
    state: &AppState,
    user: &Principal,
    form: &Form,
    req: Result<GenerateRequest, ApiError>,
) -> ApiResult<V1<Started>> {
    let created = match req {
        Ok(req) => state.generation.create(user, req).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match created {
        Ok(c) => Ok(V1::ok(c.into())),
        Err(e) => {
            if let Some((uri, ..)) = &form.input {
                let _ = state.storage.delete(uri).await;
            }
            Err(e)
        }
    }
}

#[utoipa::path(post, path = "/api/v1/generate/image-to-image", tag = "generation", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "prompt, image (file) or imageId, strength (0-1, default 0.8), width, height, numImages, provider, model"),
    responses((status = 200, body = V1<Started>), (status = 400, body = V1Error), (status = 401, body = V1Error), (status = 413, body = V1Error),
              (status = 422, description = "Not an image, or a truncated one", body = V1Error), (status = 429, body = V1Error), (status = 503, body = V1Error)))]
pub async fn image_to_image(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    CurrentUser(user): CurrentUser,
    req: Request,
) -> ApiResult<V1<Started>> {
    let task_id = uuid::Uuid::new_v4().simple().to_string();
    let form = receive_form(&state, &user, req, &task_id).await?;
    let built = (|| {
        let prompt = form.fields.get("prompt").cloned().unwrap_or_default();
        let spec = JobSpec::ImageToImage(ImageSpec {
            prompt: prompt.clone(),
            negative_prompt: None,
            width: number(&form, "width")?.unwrap_or(1024),
            height: number(&form, "height")?.unwrap_or(1024),
            count: number(&form, "numImages")?.unwrap_or(1),
            style: form.fields.get("style").cloned(),
            seed: None,
            strength: number(&form, "strength")?.unwrap_or(0.8),
        });
        Ok(GenerateRequest {
            task_id: task_id.clone(),
            input: form.input.clone(),
            provider: form.fields.get("provider").cloned().filter(|p| !p.is_empty()),
            model: form.fields.get("model").cloned().filter(|m| !m.is_empty()),
            ..new_request(spec, &request_id, &prompt)
        })
    })();
    create_from_form(&state, &user, &form, built).await
}

#[utoipa::path(post, path = "/api/v1/generate/image-to-video", tag = "generation", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "prompt, image (file) or imageId, model (the video provider: sora, veo, runway), duration, resolution, fps"),
    responses((status = 200, body = V1<Started>), (status = 400, body = V1Error), (status = 401, body = V1Error), (status = 413, body = V1Error),
              (status = 422, body = V1Error), (status = 429, body = V1Error), (status = 503, body = V1Error)))]
pub async fn image_to_video(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    CurrentUser(user): CurrentUser,
    req: Request,
) -> ApiResult<V1<Started>> {
    let task_id = uuid::Uuid::new_v4().simple().to_string();
    let form = receive_form(&state, &user, req, &task_id).await?;
    let built = (|| {
        let prompt = form.fields.get("prompt").cloned().unwrap_or_default();
        let spec = JobSpec::ImageToVideo(VideoSpec {
            prompt: prompt.clone(),
            duration: number(&form, "duration")?.unwrap_or(5),
            resolution: form.fields.get("resolution").cloned().unwrap_or_else(|| "720p".into()),
            fps: number(&form, "fps")?.unwrap_or(24),
            style: form.fields.get("style").cloned(),
        });
        Ok(GenerateRequest {
            task_id: task_id.clone(),
            input: form.input.clone(),
            provider: form.fields.get("model").cloned().filter(|p| !p.is_empty()),
            ..new_request(spec, &request_id, &prompt)
        })
    })();
    create_from_form(&state, &user, &form, built).await
}

/// Seed 003's word for a generation's status.
fn word(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Queued | TaskStatus::Processing => "processing",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}

/// One image of a result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultImage {
    pub url: String,
    /// The work's thumbnail, once made (first image only).
    pub thumbnail: Option<String>,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImageResult {
    pub images: Vec<ResultImage>,
}

/// Seed 003's image task.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTask {
    pub task_id: String,
    pub status: &'static str,
    /// 0..=100
    pub progress: u32,
    pub result: Option<ImageResult>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultVideo {
    pub url: String,
    pub thumbnail: Option<String>,
    /// Seconds, as asked.
    pub duration: u32,
    pub resolution: String,
    pub file_size: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VideoResult {
    pub video: ResultVideo,
}

/// Seed 003's video task.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VideoTask {
    pub task_id: String,
    pub status: &'static str,
    pub progress: u32,
    pub result: Option<VideoResult>,
    pub error: Option<String>,
}

/// A generation task of the caller, with its stored files and request.
async fn generation_task(
    state: &AppState,
    user: &Principal,
    id: &str,
) -> ApiResult<(TaskDetail, Vec<StoredFile>, Option<JobSpec>, Option<String>)> {
    let d = state.tasks.detail(id, user).await?;
    let Some(g) = d.record.meta.generation.as_ref() else {
        return Err(ApiError::not_found(format!("no generation task {id}")));
    };
    let files: Vec<StoredFile> = g.outputs.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or_else(|| {
        // Image-to-image on the built-in provider ends like any engine task: one file.
        d.record.task.result.as_ref().map_or_else(Vec::new, |r| {
            vec![StoredFile {
                uri: r.output_uri.clone(),
                content_type: r.content_type.clone(),
                width: r.width,
                height: r.height,
                bytes: r.bytes,
            }]
        })
    });
    let spec = serde_json::from_str(&g.job).ok();
    let thumbnail = match state.works.of_task(&user.user_id, id).await {
        Ok(Some(w)) => crate::http::routes::works::thumbnail_url(&w),
        _ => None,
    };
    Ok((d, files, spec, thumbnail))
}

/// Seed 003's progress, 0..=100.
fn percent(d: &TaskDetail) -> u32 {
    (d.progress * 100.0).round().clamp(0.0, 100.0) as u32
}

/// Why it failed, once it has.
fn failure(d: &TaskDetail) -> Option<String> {
    d.record.task.error_message.clone().filter(|_| d.status.is_finished() && d.status != TaskStatus::Completed)
}

fn file_url(task_id: &str, n: usize) -> String {
    format!("/api/v1/generate/task/{task_id}/files/{n}")
}

#[utoipa::path(get, path = "/api/v1/generate/task/{taskId}", tag = "generation", security(("bearer" = [])), params(("taskId" = String, Path)),
    responses((status = 200, body = V1<ImageTask>), (status = 401, body = V1Error), (status = 404, body = V1Error)))]
pub async fn image_task(State(state): State<AppState>, CurrentUser(user): CurrentUser, Path(id): Path<String>) -> ApiResult<V1<ImageTask>> {
    let (d, files, _, thumbnail) = generation_task(&state, &user, &id).await?;
    let done = d.status == TaskStatus::Completed;
    let result = done.then(|| ImageResult {
        images: files
            .iter()
            .enumerate()
            .map(|(i, f)| ResultImage {
                url: file_url(&id, i),
                thumbnail: if i == 0 { thumbnail.clone() } else { None },
                width: f.width,
                height: f.height,
            })
            .collect(),
    });
    Ok(V1::ok(ImageTask { task_id: id, status: word(d.status), progress: percent(&d), result, error: failure(&d) }))
}

#[utoipa::path(get, path = "/api/v1/generate/video-task/{taskId}", tag = "generation", security(("bearer" = [])), params(("taskId" = String, Path)),
    responses((status = 200, body = V1<VideoTask>), (status = 401, body = V1Error), (status = 404, body = V1Error)))]
pub async fn video_task(State(state): State<AppState>, CurrentUser(user): CurrentUser, Path(id): Path<String>) -> ApiResult<V1<VideoTask>> {
    let (d, files, spec, thumbnail) = generation_task(&state, &user, &id).await?;
    let done = d.status == TaskStatus::Completed;
    let (duration, resolution) = match spec {
        Some(JobSpec::TextToVideo(v) | JobSpec::ImageToVideo(v)) => (v.duration, v.resolution),
        _ => (0, String::new()),
    };
    let result = files
        .first()
        .filter(|_| done)
        .map(|f| VideoResult { video: ResultVideo { url: file_url(&id, 0), thumbnail, duration, resolution, file_size: f.bytes } });
    Ok(V1::ok(VideoTask { task_id: id, status: word(d.status), progress: percent(&d), result, error: failure(&d) }))
}

#[utoipa::path(get, path = "/api/v1/generate/task/{taskId}/files/{n}", tag = "generation", security(("bearer" = [])),
    params(("taskId" = String, Path), ("n" = usize, Path, description = "0 for the first file")),
    responses((status = 200, description = "The file"), (status = 401, body = V1Error), (status = 404, body = V1Error)))]
pub async fn task_file(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path((id, n)): Path<(String, usize)>,
) -> ApiResult<Response> {
    let (d, files, ..) = generation_task(&state, &user, &id).await?;
    let f = files
        .get(n)
        .filter(|_| d.status == TaskStatus::Completed)
        .ok_or_else(|| ApiError::not_found(format!("task {id} has no file {n}")))?;
    let (size, stream) =
        state.storage.get_stream(&f.uri).await.map_err(|e| ApiError::unavailable(format!("the file cannot be read now: {e}")))?;
    let ext = f.uri.rsplit('.').next().filter(|e| e.len() <= 4).unwrap_or("bin");
    let head = FileHead {
        content_type: &f.content_type,
        size,
        file_name: &format!("{id}-{}.{ext}", n + 1),
        disposition: Disposition::Inline,
        caching: Caching::Private { max_age: 3600, immutable: true },
    };
    Ok(stream_file(head, stream))
}
