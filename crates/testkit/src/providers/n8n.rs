//! A local n8n workflow behind a signed webhook (seed 001's scene tasks), as the gateway's
//! webhook protocol defines it (`domain/providers/adapters/webhook.rs`):
//!
//! - `POST /webhook/purrify` with JSON `{taskId, workflow, params, inputUrl, callbacks:
//!   {complete, failed}}`, signed with `X-Purrify-Timestamp: <unix seconds>` and
//!   `X-Purrify-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. A
//!   missing or wrong signature, or a timestamp more than 5 minutes off, is answered 401
//!   `{"code": 401, "message": "Authorization data is wrong!"}` (n8n's header-auth refusal);
//!   an accepted task `200 {"message": "Workflow was started"}` (n8n's immediate answer).
//! - On the test's command the workflow reports back, signed the same way, to the URL it
//!   was given: [`FakeN8n::complete`] POSTs `{"taskId", "outputUrl"}` to `callbacks.complete`,
//!   [`FakeN8n::fail`] POSTs `{"taskId", "error"}` to `callbacks.failed`.
//!
//! The signature is computed here independently of the gateway's code, so the two cannot
//! agree on a wrong scheme unnoticed.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Core, Dialect, FakeServer, unix_now};

pub const TIMESTAMP_HEADER: &str = "X-Purrify-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Purrify-Signature";
/// How far a request's timestamp may be from the fake's clock.
const TOLERANCE_SECS: i64 = 300;

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A task as the workflow received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub task_id: String,
    pub workflow: String,
    pub params: Value,
    pub input_url: Option<String>,
    pub complete_url: String,
    pub failed_url: String,
}

struct St {
    tasks: Mutex<HashMap<String, Received>>,
    http: reqwest::Client,
}

/// The fake; stopped when dropped. Derefs to [`FakeServer`] for the script and the log.
pub struct FakeN8n {
    server: FakeServer,
    st: Arc<St>,
}

impl Deref for FakeN8n {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeN8n {
    /// Serves on 127.0.0.1; `secret` signs and checks both directions.
    pub async fn start(secret: &str) -> Self {
        let core = Core::new(secret, Dialect { error, authorize, body_limit: 16 << 20 });
        // Callbacks go to loopback receivers: never through a proxy from the environment.
        let http = reqwest::Client::builder().no_proxy().build().expect("the fake's HTTP client");
        let st = Arc::new(St { tasks: Mutex::default(), http });
        let routes = axum::Router::new()
            .route("/webhook/purrify", post(webhook))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "The requested webhook is not registered.") })
            .with_state(st.clone());
        Self { server: FakeServer::start(core, routes).await, st }
    }

    /// The webhook's URL (the provider's base URL).
    pub fn base_url(&self) -> String {
        format!("http://{}/webhook/purrify", self.server.addr)
    }

    /// The task received under `task_id`, if any.
    pub fn received(&self, task_id: &str) -> Option<Received> {
        self.st.tasks.lock().unwrap().get(task_id).cloned()
    }

    /// Reports the task done: a signed `{"taskId", "outputUrl"}` to its complete URL.
    /// Returns the receiver's status.
    pub async fn complete(&self, task_id: &str, output_url: &str) -> u16 {
        let task = self.received(task_id).unwrap_or_else(|| panic!("the fake n8n never received task {task_id}"));
        self.call(&task.complete_url, &json!({ "taskId": task_id, "outputUrl": output_url })).await
    }

    /// Reports the task failed: a signed `{"taskId", "error"}` to its failed URL. Returns
    /// the receiver's status.
    pub async fn fail(&self, task_id: &str, reason: &str) -> u16 {
        let task = self.received(task_id).unwrap_or_else(|| panic!("the fake n8n never received task {task_id}"));
        self.call(&task.failed_url, &json!({ "taskId": task_id, "error": reason })).await
    }

    async fn call(&self, url: &str, body: &Value) -> u16 {
        let body = serde_json::to_vec(body).unwrap();
        let ts = unix_now();
        let resp = self
            .st
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(self.server.key(), ts, &body))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("the fake n8n could not call back: {e}"));
        resp.status().as_u16()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "code": status.as_u16(), "message": message }))).into_response()
}

fn authorize(core: &Core, parts: &axum::http::request::Parts, body: &[u8]) -> Result<(), Response> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let refused = || error(StatusCode::UNAUTHORIZED, "Authorization data is wrong!");
    let ts: i64 = header(TIMESTAMP_HEADER).and_then(|t| t.parse().ok()).ok_or_else(refused)?;
    if (unix_now() - ts).abs() > TOLERANCE_SECS {
        return Err(refused());
    }
    let given = header(SIGNATURE_HEADER).ok_or_else(refused)?;
    if given != sign(&core.key, ts, body) {
        return Err(refused());
    }
    Ok(())
}

async fn webhook(State(st): State<Arc<St>>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "The body is not valid JSON.");
    };
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let (Some(task_id), Some(complete_url), Some(failed_url)) = (s("/taskId"), s("/callbacks/complete"), s("/callbacks/failed")) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "taskId and callbacks.complete / callbacks.failed are required.");
    };
    let task = Received {
        task_id: task_id.clone(),
        workflow: s("/workflow").unwrap_or_default(),
        params: v.get("params").cloned().unwrap_or(Value::Null),
        input_url: s("/inputUrl"),
        complete_url,
        failed_url,
    };
    st.tasks.lock().unwrap().insert(task_id, task);
    Json(json!({ "message": "Workflow was started" })).into_response()
}
