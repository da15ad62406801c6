//! A local Runway API as Runway's API reference describes it:
//!
//! - `POST /v1/image_to_video` `{model, promptImage, promptText?, ratio, duration}`:
//!   `promptImage` an HTTPS URL or a base64 `data:image/…` URI (under 5 MB);
//! - `POST /v1/text_to_video` `{model, promptText, ratio, duration}`;
//!   both answer `{id}`;
//! - `GET /v1/tasks/{id}`: `{id, status, createdAt}` with `status` `PENDING` (or `THROTTLED`),
//!   `RUNNING` with `progress` 0-1, `SUCCEEDED` with `output` (URLs of MP4s on the fake's
//!   `/media/`), `FAILED` with `failure` and `failureCode`, or `CANCELLED`, walked by the
//!   task's [`Plan`];
//! - `DELETE /v1/tasks/{id}`: 204 (cancels a running task, deletes a finished one).
//!
//! Every call needs `Authorization: Bearer <key>` (401) and `X-Runway-Version: 2024-11-06`
//! (400). Errors are `{"error": "..."}`, validation errors with `issues: [{path, message}]`.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Core, Dialect, FakeServer, Phase, Plan};

/// The API version the fake speaks.
pub const VERSION: &str = "2024-11-06";

const I2V_MODELS: [&str; 5] = ["gen4_turbo", "gen3a_turbo", "gen4.5", "veo3", "veo3.1"];
const T2V_MODELS: [&str; 4] = ["gen4.5", "veo3", "veo3.1", "veo3.1_fast"];
const RATIOS: [&str; 8] = ["1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672", "1920:1080", "1080:1920"];
/// Largest data URI taken.
const MAX_DATA_URI: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Task {
    plan: Plan,
    /// The plan's queued polls report `THROTTLED` rather than `PENDING`.
    throttled: bool,
    polls: u32,
    cancelled: bool,
    deleted: bool,
    created_at: String,
}

struct St {
    core: Arc<Core>,
    tasks: Mutex<HashMap<String, Task>>,
    plans: Mutex<VecDeque<(Plan, bool)>>,
    next: AtomicU64,
}

/// The fake; stopped when dropped. Derefs to [`FakeServer`] for the script and the log.
pub struct FakeRunway {
    server: FakeServer,
    st: Arc<St>,
}

impl Deref for FakeRunway {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeRunway {
    /// Serves on 127.0.0.1, accepting `key`.
    pub async fn start(key: &str) -> Self {
        let core = Core::new(key, Dialect { error, authorize, body_limit: 16 << 20 });
        let st = Arc::new(St { core: core.clone(), tasks: Mutex::default(), plans: Mutex::default(), next: AtomicU64::new(0) });
        let routes = axum::Router::new()
            .route("/v1/image_to_video", post(image_to_video))
            .route("/v1/text_to_video", post(text_to_video))
            .route("/v1/tasks/{id}", get(retrieve).delete(remove))
            .route("/media/{name}", get(super::media))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "Not found") })
            .with_state(st.clone());
        Self { server: FakeServer::start(core, routes).await, st }
    }

    /// What the adapter's base URL should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// How the next created tasks go, in order (after them: [`Plan::default`]). With
    /// `throttled`, the plan's queued polls report `THROTTLED` instead of `PENDING`.
    pub fn plan_task(&self, plan: Plan, throttled: bool) {
        self.st.plans.lock().unwrap().push_back((plan, throttled));
    }

    /// Whether the task was cancelled (or deleted) through `DELETE /v1/tasks/{id}`.
    pub fn cancelled(&self, id: &str) -> bool {
        self.st.tasks.lock().unwrap().get(id).is_some_and(|t| t.cancelled || t.deleted)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn invalid(path: &str, message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": "Validation of body failed", "issues": [{ "path": [path], "message": message }] })))
        .into_response()
}

fn authorize(core: &Core, parts: &axum::http::request::Parts, _: &[u8]) -> Result<(), Response> {
    if !core.bearer_ok(&parts.headers) {
        return Err(error(StatusCode::UNAUTHORIZED, "Incorrect API key or hostname for this API key."));
    }
    match parts.headers.get("x-runway-version").and_then(|v| v.to_str().ok()) {
        Some(VERSION) => Ok(()),
        Some(other) => Err(error(StatusCode::BAD_REQUEST, &format!("API version {other} is not supported."))),
        None => Err(error(StatusCode::BAD_REQUEST, "The X-Runway-Version header is required.")),
    }
}

/// The checks both creation endpoints make on `model`, `ratio`, `duration`, `promptText`.
fn common(body: &Value, models: &[&str], text_required: bool) -> Result<(), Response> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
    if !models.contains(&model) {
        return Err(invalid("model", &format!("Invalid enum value. Expected {}, received '{model}'", models.join(" | "))));
    }
    let ratio = body.get("ratio").and_then(Value::as_str).unwrap_or_default();
    if !RATIOS.contains(&ratio) {
        return Err(invalid("ratio", &format!("Invalid enum value. Expected {}, received '{ratio}'", RATIOS.join(" | "))));
    }
    if let Some(d) = body.get("duration")
        && !d.as_u64().is_some_and(|d| (2..=10).contains(&d))
    {
        return Err(invalid("duration", "Expected an integer between 2 and 10"));
    }
    match body.get("promptText") {
        None | Some(Value::Null) if text_required => Err(invalid("promptText", "Required")),
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(t)) if t.trim().is_empty() && text_required => {
            Err(invalid("promptText", "String must contain at least 1 character(s)"))
        }
        Some(Value::String(t)) if t.chars().count() > 1000 => Err(invalid("promptText", "String must contain at most 1000 character(s)")),
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(invalid("promptText", "Expected string")),
    }
}

fn parse(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|_| error(StatusCode::BAD_REQUEST, "The request body is not valid JSON."))
}

fn create(st: &St) -> Response {
    let (plan, throttled) = st.plans.lock().unwrap().pop_front().unwrap_or_else(|| (Plan::default(), false));
    let n = st.next.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("{:08x}-6c24-4c16-946b-{:012x}", n, n.wrapping_mul(0x9E37_79B9));
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    st.tasks.lock().unwrap().insert(id.clone(), Task { plan, throttled, polls: 0, cancelled: false, deleted: false, created_at });
    Json(json!({ "id": id })).into_response()
}

async fn image_to_video(State(st): State<Arc<St>>, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = common(&body, &I2V_MODELS, false) {
        return r;
    }
    let image = body.get("promptImage").and_then(Value::as_str).unwrap_or_default();
    if let Some(rest) = image.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else { return invalid("promptImage", "Invalid data URI") };
        if !meta.starts_with("image/") || !meta.ends_with(";base64") {
            return invalid("promptImage", "Data URIs must be base64-encoded images");
        }
        if image.len() > MAX_DATA_URI {
            return invalid("promptImage", "Data URIs must be under 5MB");
        }
        if base64::engine::general_purpose::STANDARD.decode(data).is_err() {
            return invalid("promptImage", "Invalid base64 data");
        }
    } else if !image.starts_with("https://") {
        return invalid("promptImage", "Must be an HTTPS URL or a data URI");
    }
    create(&st)
}

async fn text_to_video(State(st): State<Arc<St>>, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = common(&body, &T2V_MODELS, true) {
        return r;
    }
    create(&st)
}

async fn retrieve(State(st): State<Arc<St>>, Path(id): Path<String>) -> Response {
    let mut tasks = st.tasks.lock().unwrap();
    let Some(t) = tasks.get_mut(&id).filter(|t| !t.deleted) else { return error(StatusCode::NOT_FOUND, "Task not found") };
    let mut out = json!({ "id": id, "createdAt": t.created_at });
    if t.cancelled {
        out["status"] = json!("CANCELLED");
        return Json(out).into_response();
    }
    t.polls += 1;
    match t.plan.phase(t.polls) {
        Phase::Queued => out["status"] = json!(if t.throttled { "THROTTLED" } else { "PENDING" }),
        Phase::Running(p) => {
            out["status"] = json!("RUNNING");
            out["progress"] = json!((p * 100.0).round() / 100.0);
        }
        Phase::Succeeded => {
            out["status"] = json!("SUCCEEDED");
            out["output"] = json!([format!("{}/media/{id}.mp4", st.core.origin())]);
        }
        Phase::Failed(why) => {
            out["status"] = json!("FAILED");
            out["failure"] = json!(why);
            out["failureCode"] = json!("INTERNAL.BAD_OUTPUT.CODE01");
        }
    }
    Json(out).into_response()
}

async fn remove(State(st): State<Arc<St>>, Path(id): Path<String>) -> Response {
    let mut tasks = st.tasks.lock().unwrap();
    let Some(t) = tasks.get_mut(&id).filter(|t| !t.deleted) else { return error(StatusCode::NOT_FOUND, "Task not found") };
    let finished = matches!(t.plan.phase(t.polls), Phase::Succeeded | Phase::Failed(_));
    if finished || t.cancelled {
        t.deleted = true;
    } else {
        t.cancelled = true;
    }
    (StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response()
}
