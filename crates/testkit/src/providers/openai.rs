//! A local OpenAI-compatible API as OpenAI's API reference describes it, served under
//! `/v1` like `https://api.openai.com/v1`:
//!
//! - `POST /v1/chat/completions`: `model` and a non-empty `messages` list required; with
//!   `stream: true` the answer is `text/event-stream`, one `data: {chat.completion.chunk}` per
//!   token (`choices[0].delta.content`), a final chunk with `finish_reason: "stop"`, then
//!   `data: [DONE]`; scripted answers can instead end with an error event, break the
//!   connection, or hang (sending only keep-alive comments) until the client goes away;
//! - `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart with an
//!   `image` file): `prompt` required, `n` 1-10 (1 for `dall-e-3`), a supported `size`,
//!   `response_format` `b64_json` or `url` (refused for `gpt-image-*`, which always answers
//!   base64); pictures are small real PNGs;
//! - the Sora videos API (see `openai_video.rs`).
//!
//! Every call needs `Authorization: Bearer <key>` (401 `invalid_api_key` otherwise); errors
//! are `{"error": {"message", "type", "param", "code"}}`.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use super::openai_video::{self, Video};
use super::{Core, Dialect, FakeServer, Form, Plan, StreamGuard, unix_now};

/// Sizes the image endpoints take.
const SIZES: [&str; 8] = ["256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536", "auto"];

/// How a scripted chat answer ends after its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEnd {
    /// The final chunk and `data: [DONE]`.
    Done,
    /// `data: {"error": {"message": …, "type": "server_error"}}`, then the stream closes.
    Error(String),
    /// The connection is cut mid-stream (no `[DONE]`).
    Break,
    /// Nothing more but keep-alive comments until the client goes away.
    Hang,
}

/// A scripted chat answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReply {
    pub tokens: Vec<String>,
    pub end: ChatEnd,
}

impl ChatReply {
    pub fn new(tokens: &[&str], end: ChatEnd) -> Self {
        Self { tokens: tokens.iter().map(|t| (*t).to_owned()).collect(), end }
    }
}

impl Default for ChatReply {
    fn default() -> Self {
        Self::new(&["Hello", ",", " world", "!"], ChatEnd::Done)
    }
}

pub(crate) struct St {
    pub core: Arc<Core>,
    chats: Mutex<VecDeque<ChatReply>>,
    pub videos: Mutex<HashMap<String, Video>>,
    pub plans: Mutex<VecDeque<Plan>>,
    images_as_url: Mutex<bool>,
    next: AtomicU64,
}

impl St {
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The fake; stopped when dropped. Derefs to [`FakeServer`] for the script and the log.
pub struct FakeOpenAi {
    server: FakeServer,
    st: Arc<St>,
}

impl Deref for FakeOpenAi {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeOpenAi {
    /// Serves on 127.0.0.1, accepting `key`.
    pub async fn start(key: &str) -> Self {
        let core = Core::new(key, Dialect { error, authorize, body_limit: 50 << 20 });
        let st = Arc::new(St {
            core: core.clone(),
            chats: Mutex::default(),
            videos: Mutex::default(),
            plans: Mutex::default(),
            images_as_url: Mutex::new(false),
            next: AtomicU64::new(0),
        });
        let routes = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/images/generations", post(generations))
            .route("/v1/images/edits", post(edits))
            .merge(openai_video::routes())
            .route("/media/{name}", get(super::media))
            .fallback(not_found)
            .with_state(st.clone());
        Self { server: FakeServer::start(core, routes).await, st }
    }

    /// What the adapter's base URL should be (`…/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr)
    }

    /// The next chat answers, in order (after them: "Hello, world!").
    pub fn script_chat(&self, reply: ChatReply) {
        self.st.chats.lock().unwrap().push_back(reply);
    }

    /// How the next created videos go, in order (after them: [`Plan::default`]).
    pub fn plan_video(&self, plan: Plan) {
        self.st.plans.lock().unwrap().push_back(plan);
    }

    /// Answer images with `url` whatever `response_format` asked (as some compatible
    /// services do).
    pub fn answer_images_as_url(&self, on: bool) {
        *self.st.images_as_url.lock().unwrap() = on;
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        429 => ("requests", json!("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", Value::Null),
        _ => ("server_error", Value::Null),
    };
    (status, Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": code } }))).into_response()
}

fn bad(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn authorize(core: &Core, parts: &axum::http::request::Parts, _: &[u8]) -> Result<(), Response> {
    if core.bearer_ok(&parts.headers) {
        return Ok(());
    }
    let message = match parts.headers.get(header::AUTHORIZATION) {
        None => "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).".to_owned(),
        Some(v) => {
            let given = v.to_str().unwrap_or_default().trim_start_matches("Bearer ").to_owned();
            let shown: String = given.chars().take(3).collect();
            format!("Incorrect API key provided: {shown}****. You can find your API key at https://platform.openai.com/account/api-keys.")
        }
    };
    Err(error(StatusCode::UNAUTHORIZED, &message))
}

async fn not_found(req: Request) -> Response {
    error(StatusCode::NOT_FOUND, &format!("Invalid URL ({} {})", req.method(), req.uri().path()))
}

fn chunk(id: &str, model: &str, delta: Value, finish: Option<&str>) -> Bytes {
    let v = json!({
        "id": id, "object": "chat.completion.chunk", "created": unix_now(), "model": model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    });
    Bytes::from(format!("data: {v}\n\n"))
}

async fn chat(State(st): State<Arc<St>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
        );
    };
    let model = req.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    if model.is_empty() {
        return bad("you must provide a model parameter");
    }
    let Some(messages) = req.get("messages").and_then(Value::as_array) else {
        return bad("Missing required parameter: 'messages'.");
    };
    if messages.is_empty() {
        return bad("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.");
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
            return bad(&format!("Invalid value for 'messages[{i}].role'."));
        }
        if !m.get("content").is_some_and(|c| c.is_string() || c.is_array()) {
            return bad(&format!("Missing required parameter: 'messages[{i}].content'."));
        }
    }
    let reply = st.chats.lock().unwrap().pop_front().unwrap_or_default();
    let id = format!("chatcmpl-{}", st.next_id());
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        let text: String = reply.tokens.concat();
        return Json(json!({
            "id": id, "object": "chat.completion", "created": unix_now(), "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
        }))
        .into_response();
    }
    let core = st.core.clone();
    let stream = async_stream::stream! {
        let mut guard = StreamGuard::new(core);
        yield Ok::<_, std::io::Error>(Bytes::from_static(b": keep-alive\n\n"));
        yield Ok(chunk(&id, &model, json!({ "role": "assistant", "content": "" }), None));
        for t in &reply.tokens {
            yield Ok(chunk(&id, &model, json!({ "content": t }), None));
        }
        match &reply.end {
            ChatEnd::Done => {
                yield Ok(chunk(&id, &model, json!({}), Some("stop")));
                guard.finished = true;
                yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            ChatEnd::Error(message) => {
                let e = json!({ "error": { "message": message, "type": "server_error", "param": null, "code": null } });
                guard.finished = true;
                yield Ok(Bytes::from(format!("data: {e}\n\n")));
            }
            ChatEnd::Break => {
                guard.finished = true;
                // Let the server flush what was sent so far: the break comes after it.
                tokio::task::yield_now().await;
                yield Err(std::io::Error::other("the fake breaks the stream"));
            }
            ChatEnd::Hang => loop {
                // Keep-alives make a closed connection show at the next write.
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                yield Ok(Bytes::from_static(b": keep-alive\n\n"));
            },
        }
    };
    ([(header::CONTENT_TYPE, "text/event-stream; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(stream))
        .into_response()
}

/// The checks both image endpoints make, and their answer.
fn images(st: &St, model: Option<&str>, prompt: Option<&str>, n: Option<u64>, size: Option<&str>, format: Option<&str>) -> Response {
    let model = model.unwrap_or("dall-e-2");
    if prompt.is_none_or(|p| p.trim().is_empty()) {
        return bad("Missing required parameter: 'prompt'.");
    }
    let n = n.unwrap_or(1);
    if !(1..=10).contains(&n) {
        return bad(&format!("Invalid 'n': {n} is out of range; expected 1 to 10."));
    }
    if model == "dall-e-3" && n != 1 {
        return bad("You must provide n=1 for this model.");
    }
    if let Some(s) = size
        && !SIZES.contains(&s)
    {
        return bad(&format!("Invalid value: '{s}'. Supported values are: {}.", SIZES.join(", ")));
    }
    let gpt_image = model.starts_with("gpt-image");
    if gpt_image && format.is_some() {
        return bad("Unknown parameter: 'response_format'.");
    }
    let as_url = match format {
        None => !gpt_image,
        Some("url") => true,
        Some("b64_json") => false,
        Some(other) => return bad(&format!("Invalid value: '{other}'. Supported values are: 'url' and 'b64_json'.")),
    } || *st.images_as_url.lock().unwrap();
    let data: Vec<Value> = (0..n)
        .map(|i| {
            let k = st.next_id();
            if as_url {
                json!({ "url": format!("{}/media/img-{k}.png", st.core.origin()) })
            } else {
                json!({ "b64_json": base64::engine::general_purpose::STANDARD.encode(super::png(8, 8, (k + i) as u8)) })
            }
        })
        .collect();
    Json(json!({ "created": unix_now(), "data": data })).into_response()
}

async fn generations(State(st): State<Arc<St>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("We could not parse the JSON body of your request.");
    };
    let s = |k: &str| req.get(k).and_then(Value::as_str);
    if req.get("n").is_some_and(|n| n.as_u64().is_none()) {
        return bad("Invalid type for 'n': expected an integer.");
    }
    images(&st, s("model"), s("prompt"), req.get("n").and_then(Value::as_u64), s("size"), s("response_format"))
}

async fn edits(State(st): State<Arc<St>>, req: Request) -> Response {
    let form = match Form::read(req).await {
        Ok(f) => f,
        Err(why) => return bad(&why),
    };
    let Some((ct, bytes)) = form.files.get("image").or_else(|| form.files.get("image[]")) else {
        return bad("Missing required parameter: 'image'.");
    };
    if !["image/png", "image/jpeg", "image/webp"].contains(&ct.as_str()) || bytes.is_empty() {
        return bad(&format!(
            "Invalid file 'image': unsupported mimetype ('{ct}'). Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'."
        ));
    }
    let n = match form.text("n").map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return bad("Invalid type for 'n': expected an integer."),
    };
    images(&st, form.text("model"), form.text("prompt"), n, form.text("size"), form.text("response_format"))
}
