//! Creating tasks from uploaded files (seeds 001 and 002): `POST /api/tasks/create` (001: a
//! file id and a scene or parameters) and `POST /api/tasks` (002: title, description,
//! task_type, priority, config). The task runs on its own copy of the upload, so the task's
//! housekeeping never deletes the user's file. Answers with 002's detail.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::Principal;
use crate::domain::generation::{GenerateRequest, JobSpec};
use crate::domain::tasks::manage::{MIN_PRIORITY, check_callback_url, max_priority, task_kind};
use crate::domain::tasks::{NewUpload, TaskMeta, TaskOptions};
use crate::http::auth::CurrentUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::ApiJson;
use crate::http::middleware::RequestId;
use crate::http::routes::scenes::ParamsBody;
use crate::http::routes::task_list::TaskView;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_001)).routes(routes!(create_002))
}

/// Seed 001's task creation.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Create001 {
    /// An uploaded file's id (`/api/upload/*`).
    pub file_id: Option<String>,
    /// A scene whose parameters and price the task takes.
    pub scene_id: Option<String>,
    /// Explicit parameters (over the scene's, when both are given).
    pub params: ParamsBody,
    pub title: Option<String>,
    pub description: Option<String>,
    /// Users may lower their priority; only admins raise it (up to 10).
    pub priority: Option<i32>,
    /// POSTed (signed) when the task finishes; needs the server's callback key.
    pub callback_url: Option<String>,
}

/// Seed 002's `config`: the file and the parameters.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct TaskConfig {
    pub file_id: Option<String>,
    pub scene_id: Option<String>,
    #[serde(flatten)]
    pub params: ParamsBody,
}

/// Seed 002's task creation.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Create002 {
    pub title: Option<String>,
    pub description: Option<String>,
    /// enhance (the kinds served are listed when another is sent)
    pub task_type: Option<String>,
    pub priority: Option<i32>,
    /// Seconds, the client's estimate.
    pub estimated_duration: Option<i64>,
    pub config: TaskConfig,
    pub callback_url: Option<String>,
}

/// What both creation bodies come down to.
struct Spec {
    file_id: Option<String>,
    scene_id: Option<String>,
    params: ParamsBody,
    kind: String,
    title: Option<String>,
    description: Option<String>,
    priority: Option<i32>,
    estimated: Option<i64>,
    callback_url: Option<String>,
}

fn text(field: &'static str, v: Option<String>, max: usize, errors: &mut Vec<(&'static str, String)>) -> Option<String> {
    let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())?;
    if v.chars().count() > max {
        errors.push((field, format!("must be at most {max} characters")));
    }
    Some(v)
}

/// The priority `user` may have: requests above their role's ceiling are clamped to it.
fn priority_for(user: &Principal, asked: Option<i32>) -> i32 {
    asked.unwrap_or(0).clamp(MIN_PRIORITY, max_priority(user.role))
}

async fn create(state: &AppState, user: &Principal, spec: Spec, request_id: &str) -> ApiResult<(StatusCode, Envelope<TaskView>)> {
    let mut errors = Vec::new();
    let title = text("title", spec.title, 200, &mut errors);
    let description = text("description", spec.description, 2000, &mut errors);
    if let Some(e) = spec.estimated
        && !(0..=86_400 * 7).contains(&e)
    {
        errors.push(("estimated_duration", "must be between 0 and 604800 seconds".into()));
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(&errors));
    }
    let kind = task_kind(&spec.kind)?;
    let callback_url = match spec.callback_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(u) => Some(check_callback_url(u, state.config.callback_secret.is_some(), state.tasks.settings().allow_private_workers)?),
    };
    let scene = match spec.scene_id.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(id) => Some(state.tasks.scene(id, false).await.map_err(|_| ApiError::field("scene_id", format!("no active scene {id}")))?),
    };
    // A scene makes tasks of its own kind (seed 001 sends no task type; a workflow scene's
    // tasks go to the workflow).
    let kind = match &scene {
        Some(s) if kind == "enhance" => task_kind(&s.kind)?,
        _ => kind,
    };
    if scene.is_none() && spec.params.is_empty() && spec.file_id.is_none() {
        return Err(ApiError::field("file_id", "send the id of an uploaded image (file_id), and a scene_id or parameters"));
    }
    let params = spec.params.apply(scene.as_ref().map(|s| s.params).unwrap_or_default())?;
    let file_id =
        spec.file_id.filter(|f| !f.is_empty()).ok_or_else(|| ApiError::field("file_id", "the id of an uploaded image is required"))?;
    let file = state
        .uploads
        .resolve(&user.user_id, &file_id)
        .await?
        .ok_or_else(|| ApiError::field("file_id", format!("no uploaded file {file_id} of yours")))?;
    if file.kind.as_str() != "image" {
        return Err(ApiError::field("file_id", format!("file {file_id} is a {}; enhance tasks take images", file.kind.as_str())));
    }
    let task_id = uuid::Uuid::new_v4().simple().to_string();
    // The task works on its own copy: its housekeeping never deletes the user's upload.
    let input_uri = state.tasks.copy_input(&file.uri, &task_id).await?;
    if kind == "workflow" {
        // Seed 001's scene tasks handed to a workflow (n8n) and finished by its callback.
        let workflow = scene.as_ref().map_or_else(|| "default".to_string(), |s| s.id.clone());
        let req = GenerateRequest {
            spec: JobSpec::Workflow { workflow, params: serde_json::to_value(params).unwrap_or_default() },
            input: Some((input_uri.clone(), file.content_type.clone(), file.bytes)),
            provider: None,
            model: None,
            task_id,
            request_id: request_id.to_string(),
            title: title.or_else(|| scene.as_ref().map(|s| s.name.clone())),
            scene_id: scene.as_ref().map(|s| s.id.clone()),
            price: scene.as_ref().and_then(|s| s.price),
        };
        let id = match state.generation.create(user, req).await {
            Ok(c) => c.task_id,
            Err(e) => {
                let _ = state.storage.delete(&input_uri).await;
                return Err(e.into());
            }
        };
        let d = state.tasks.detail(&id, user).await?;
        return Ok((StatusCode::CREATED, Envelope::ok("task created", TaskView::of(&d, user))));
    }
    let upload = NewUpload {
        task_id,
        input_uri: input_uri.clone(),
        content_type: file.content_type.clone(),
        bytes: file.bytes,
        params,
        request_id: request_id.to_string(),
        owner: Some(user.user_id.clone()),
        client: String::new(),
    };
    let meta = TaskMeta {
        kind: kind.to_string(),
        title: title.or_else(|| scene.as_ref().map(|s| s.name.clone())),
        description,
        scene_id: scene.as_ref().map(|s| s.id.clone()),
        callback_url,
        retry_of: None,
        estimated_seconds: spec.estimated,
        generation: None,
    };
    let options = TaskOptions { meta, priority: priority_for(user, spec.priority), price: scene.as_ref().and_then(|s| s.price) };
    let id = match state.tasks.create_task_with(upload, options).await {
        Ok(id) => id,
        Err(e) => {
            let _ = state.storage.delete(&input_uri).await;
            return Err(e.into());
        }
    };
    let d = state.tasks.detail(&id, user).await?;
    Ok((StatusCode::CREATED, Envelope::ok("task created", TaskView::of(&d, user))))
}

#[utoipa::path(post, path = "/api/tasks/create", tag = "tasks", request_body = Create001, security(("bearer" = [])),
    responses((status = 201, body = Envelope<TaskView>), (status = 400, description = "Insufficient balance", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, description = "TASK_LIMIT_EXCEEDED: too many tasks queued or running", body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn create_001(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<Create001>,
) -> ApiResult<(StatusCode, Envelope<TaskView>)> {
    let spec = Spec {
        file_id: body.file_id,
        scene_id: body.scene_id,
        params: body.params,
        kind: "enhance".into(),
        title: body.title,
        description: body.description,
        priority: body.priority,
        estimated: None,
        callback_url: body.callback_url,
    };
    create(&state, &user, spec, &request_id.0).await
}

#[utoipa::path(post, path = "/api/tasks", tag = "tasks", request_body = Create002, security(("bearer" = [])),
    responses((status = 201, body = Envelope<TaskView>), (status = 400, description = "Insufficient balance", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 422, description = "Bad field, or an unknown task_type (the message lists those served)", body = ErrorBody),
              (status = 429, description = "TASK_LIMIT_EXCEEDED", body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_002(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<Create002>,
) -> ApiResult<(StatusCode, Envelope<TaskView>)> {
    let spec = Spec {
        file_id: body.config.file_id,
        scene_id: body.config.scene_id,
        params: body.config.params,
        kind: body.task_type.unwrap_or_else(|| "enhance".into()),
        title: body.title,
        description: body.description,
        priority: body.priority,
        estimated: body.estimated_duration,
        callback_url: body.callback_url,
    };
    create(&state, &user, spec, &request_id.0).await
}
