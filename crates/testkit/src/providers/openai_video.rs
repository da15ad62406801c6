//! The fake OpenAI's Sora videos API, as OpenAI's API reference describes it:
//!
//! - `POST /v1/videos`, multipart: `prompt` required, `model` (`sora-2` by default),
//!   `seconds` one of 4/8/12, `size` one of Sora's, optional `input_reference` image; answers
//!   the job `{id, object: "video", model, status: "queued", progress: 0, created_at, size,
//!   seconds}`;
//! - `GET /v1/videos/{id}`: the job, walked through `queued` and `in_progress` (progress
//!   0-100) to `completed` or `failed` (with `error: {code, message}`) by its [`Plan`];
//! - `GET /v1/videos/{id}/content`: the MP4 (`video/mp4`, key required) once completed;
//! - `DELETE /v1/videos/{id}`: `{id, object: "video.deleted", deleted: true}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::openai::{St, error};
use super::{Form, Phase, Plan, mp4_blob, unix_now};

const SECONDS: [&str; 3] = ["4", "8", "12"];
const SIZES: [&str; 4] = ["720x1280", "1280x720", "1024x1792", "1792x1024"];

/// A video job as the fake keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Video {
    model: String,
    size: String,
    seconds: String,
    created_at: i64,
    plan: Plan,
    polls: u32,
    deleted: bool,
}

pub(crate) fn routes() -> axum::Router<Arc<St>> {
    axum::Router::new()
        .route("/v1/videos", post(create))
        .route("/v1/videos/{id}", get(retrieve).delete(remove))
        .route("/v1/videos/{id}/content", get(content))
}

fn bad(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn missing(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("Video with id '{id}' not found."))
}

fn job(id: &str, v: &Video, phase: &Phase) -> Value {
    let (status, progress) = match phase {
        Phase::Queued => ("queued", 0.0),
        Phase::Running(p) => ("in_progress", (p * 100.0).round()),
        Phase::Succeeded => ("completed", 100.0),
        Phase::Failed(_) => ("failed", 0.0),
    };
    let mut out = json!({
        "id": id, "object": "video", "model": v.model, "status": status, "progress": progress as u64,
        "created_at": v.created_at, "size": v.size, "seconds": v.seconds,
    });
    match phase {
        Phase::Succeeded => out["completed_at"] = json!(unix_now()),
        Phase::Failed(why) => out["error"] = json!({ "code": "video_generation_failed", "message": why }),
        _ => {}
    }
    out
}

async fn create(State(st): State<Arc<St>>, req: Request) -> Response {
    let form = match Form::read(req).await {
        Ok(f) => f,
        Err(why) => return bad(&why),
    };
    if form.text("prompt").is_none_or(|p| p.trim().is_empty()) {
        return bad("Missing required parameter: 'prompt'.");
    }
    let model = form.text("model").unwrap_or("sora-2").to_owned();
    if !["sora-2", "sora-2-pro"].contains(&model.as_str()) {
        return bad(&format!("Invalid value: '{model}'. Supported values are: 'sora-2' and 'sora-2-pro'."));
    }
    let seconds = form.text("seconds").unwrap_or("4").to_owned();
    if !SECONDS.contains(&seconds.as_str()) {
        return bad(&format!("Invalid value: '{seconds}'. Supported values are: '4', '8', and '12'."));
    }
    let size = form.text("size").unwrap_or("720x1280").to_owned();
    if !SIZES.contains(&size.as_str()) {
        return bad(&format!("Invalid value: '{size}'. Supported values are: {}.", SIZES.join(", ")));
    }
    if let Some((ct, bytes)) = form.files.get("input_reference")
        && (!ct.starts_with("image/") || bytes.is_empty())
    {
        return bad(&format!("Invalid file 'input_reference': unsupported mimetype ('{ct}')."));
    }
    let plan = st.plans.lock().unwrap().pop_front().unwrap_or_default();
    let id = format!("video_{:024x}", st.next_id());
    let v = Video { model, size, seconds, created_at: unix_now(), plan, polls: 0, deleted: false };
    let body = job(&id, &v, &Phase::Queued);
    st.videos.lock().unwrap().insert(id, v);
    Json(body).into_response()
}

async fn retrieve(State(st): State<Arc<St>>, Path(id): Path<String>) -> Response {
    let mut videos = st.videos.lock().unwrap();
    let Some(v) = videos.get_mut(&id).filter(|v| !v.deleted) else { return missing(&id) };
    v.polls += 1;
    let phase = v.plan.phase(v.polls);
    Json(job(&id, v, &phase)).into_response()
}

async fn content(State(st): State<Arc<St>>, Path(id): Path<String>) -> Response {
    let videos = st.videos.lock().unwrap();
    let Some(v) = videos.get(&id).filter(|v| !v.deleted) else { return missing(&id) };
    if v.plan.phase(v.polls) != Phase::Succeeded {
        return bad(&format!("Video '{id}' is not ready: its content can be downloaded once it is completed."));
    }
    ([(header::CONTENT_TYPE, "video/mp4")], mp4_blob()).into_response()
}

async fn remove(State(st): State<Arc<St>>, Path(id): Path<String>) -> Response {
    let mut videos = st.videos.lock().unwrap();
    let Some(v) = videos.get_mut(&id).filter(|v| !v.deleted) else { return missing(&id) };
    v.deleted = true;
    Json(json!({ "id": id, "object": "video.deleted", "deleted": true })).into_response()
}
