//! Local fakes of the outside AI services the gateway's provider adapters speak to, each
//! answering as the provider's public documentation describes: the same paths, auth
//! headers, request validation, answer shapes and error bodies. They serve on 127.0.0.1
//! (a free port) for as long as the fake value lives.
//!
//! What they share lives here: every request is recorded (method, path, headers, body) for
//! assertions; a [`Fault`] script decides what the next calls meet (a status with the
//! protocol's error body and an optional `Retry-After`, or a malformed answer), or the
//! service is down altogether (every call 503); [`Plan`]s walk asynchronous jobs through
//! queued and running states with progress to success or failure over a number of polls.
//! Paths under `/media/` are the fake's CDN: no key, no script, like the pre-signed URLs
//! real providers hand out.

// The handlers' helpers return the refusal itself as their error: an HTTP answer is what
// a fake has to give back, and its size does not matter here.
#![allow(clippy::result_large_err)]

pub mod n8n;
pub mod openai;
mod openai_video;
pub mod runway;
pub mod stability;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

/// The bound of the `wait_*` helpers; it only keeps a broken test from hanging.
const WAIT: Duration = Duration::from_secs(60);

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, when it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as (lossy) text, e.g. to look into a multipart body.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a scripted call meets instead of the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// This status with the protocol's error body, and `Retry-After` when given (seconds
    /// or an HTTP date, sent as is).
    Status { status: u16, retry_after: Option<String> },
    /// `200 OK` with a body that is not what the protocol answers (truncated JSON).
    Malformed,
}

impl Fault {
    pub fn status(status: u16) -> Self {
        Self::Status { status, retry_after: None }
    }

    /// 429 with `Retry-After: <secs>`.
    pub fn rate_limited(secs: u64) -> Self {
        Self::Status { status: 429, retry_after: Some(secs.to_string()) }
    }
}

/// How an asynchronous job goes: `queued_polls` polls in the queue, then `running_polls`
/// polls running with progress rising evenly, then the outcome from the next poll on.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub queued_polls: u32,
    pub running_polls: u32,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeed,
    /// Fails with this reason (the provider's `failure` / `error.message`).
    Fail(String),
}

impl Default for Plan {
    fn default() -> Self {
        Self { queued_polls: 1, running_polls: 2, outcome: Outcome::Succeed }
    }
}

/// Where a job stands at a poll.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    Queued,
    /// Progress in 0..1 (exclusive).
    Running(f64),
    Succeeded,
    Failed(String),
}

impl Plan {
    /// The state reported at the `poll`-th status request (1-based).
    pub(crate) fn phase(&self, poll: u32) -> Phase {
        if poll <= self.queued_polls {
            Phase::Queued
        } else if poll <= self.queued_polls + self.running_polls {
            let k = poll - self.queued_polls;
            Phase::Running(f64::from(k) / f64::from(self.running_polls + 1))
        } else {
            match &self.outcome {
                Outcome::Succeed => Phase::Succeeded,
                Outcome::Fail(why) => Phase::Failed(why.clone()),
            }
        }
    }
}

/// How a protocol answers errors and checks credentials.
pub(crate) struct Dialect {
    /// The protocol's error answer for a status and message.
    pub error: fn(StatusCode, &str) -> Response,
    /// `Err(answer)` when the request is not allowed in (key, signature, version header).
    pub authorize: fn(&Core, &axum::http::request::Parts, &[u8]) -> Result<(), Response>,
    /// Largest request body taken; bigger ones get the protocol's 413.
    pub body_limit: usize,
}

#[derive(Default)]
struct Script {
    faults: VecDeque<Fault>,
    down: bool,
}

/// The state every fake shares: its key, script, request log and events.
pub struct Core {
    pub(crate) key: String,
    dialect: Dialect,
    script: Mutex<Script>,
    log: Mutex<Vec<Recorded>>,
    disconnects: AtomicUsize,
    changed: Notify,
    pub(crate) addr: Mutex<Option<SocketAddr>>,
}

impl Core {
    pub(crate) fn new(key: &str, dialect: Dialect) -> Arc<Self> {
        Arc::new(Self {
            key: key.into(),
            dialect,
            script: Mutex::default(),
            log: Mutex::default(),
            disconnects: AtomicUsize::new(0),
            changed: Notify::new(),
            addr: Mutex::new(None),
        })
    }

    pub(crate) fn error(&self, status: StatusCode, message: &str) -> Response {
        (self.dialect.error)(status, message)
    }

    /// `http://127.0.0.1:port`
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.addr.lock().unwrap().expect("the fake is serving"))
    }

    /// Whether `headers` carry `Authorization: Bearer <key>`.
    pub(crate) fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|k| k.trim() == self.key)
    }

    /// An answer stream ended before its end (the client went away): counted and signalled.
    pub(crate) fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn next_fault(&self) -> Option<Fault> {
        let mut s = self.script.lock().unwrap();
        if s.down {
            return Some(Fault::status(503));
        }
        s.faults.pop_front()
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let waiting = async {
            loop {
                let changed = self.changed.notified();
                if done(self) {
                    return;
                }
                changed.await;
            }
        };
        if tokio::time::timeout(WAIT, waiting).await.is_err() {
            panic!("gave up after {WAIT:?} waiting for {what}");
        }
    }
}

/// Records the request, applies the script, checks credentials, then lets the route answer.
async fn gate(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    // Read past the limit (within reason) so the client finishes sending and reads the
    // 413, as a real service's front end does, instead of meeting a reset connection.
    let Ok(bytes) = axum::body::to_bytes(body, core.dialect.body_limit.saturating_mul(4)).await else {
        return core.error(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
    };
    if bytes.len() > core.dialect.body_limit {
        return core.error(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
    }
    let media = parts.uri.path().starts_with("/media/");
    core.log.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: bytes.clone(),
    });
    core.changed.notify_waiters();
    if !media {
        if let Some(fault) = core.next_fault() {
            return fault_answer(&core, &fault);
        }
        if let Err(refused) = (core.dialect.authorize)(&core, &parts, &bytes) {
            return refused;
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

fn fault_answer(core: &Core, fault: &Fault) -> Response {
    match fault {
        Fault::Status { status, retry_after } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = match status.as_u16() {
                429 => "Rate limit reached for requests. Please try again later.",
                500 => "The server had an error while processing your request.",
                502 => "Bad gateway.",
                503 => "The service is temporarily unavailable.",
                _ => status.canonical_reason().unwrap_or("error"),
            };
            let mut resp = core.error(status, message);
            if let Some(ra) = retry_after.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                resp.headers_mut().insert(header::RETRY_AFTER, ra);
            }
            resp
        }
        Fault::Malformed => ([(header::CONTENT_TYPE, "application/json")], "{\"object\": \"chat.completion\", \"choi").into_response(),
    }
}

/// A fake serving `routes` behind the [`gate`]; stopped when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    core: Arc<Core>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeServer {
    pub(crate) async fn start(core: Arc<Core>, routes: axum::Router) -> Self {
        let app = routes.layer(axum::middleware::from_fn_with_state(core.clone(), gate)).layer(axum::extract::DefaultBodyLimit::disable());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a fake provider");
        let addr = listener.local_addr().unwrap();
        *core.addr.lock().unwrap() = Some(addr);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, core, server }
    }

    /// The key (or shared secret) the fake accepts.
    pub fn key(&self) -> &str {
        &self.core.key
    }

    /// The next `n` calls meet `fault` (after any already scripted).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut s = self.core.script.lock().unwrap();
        s.faults.extend(std::iter::repeat_n(fault, n));
    }

    /// While down, every call is answered 503 (no `Retry-After`).
    pub fn set_down(&self, down: bool) {
        self.core.script.lock().unwrap().down = down;
    }

    /// Every request received so far, in order (media downloads included).
    pub fn requests(&self) -> Vec<Recorded> {
        self.core.log.lock().unwrap().clone()
    }

    /// Requests received for paths ending with `suffix`.
    pub fn requests_to(&self, suffix: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path.ends_with(suffix)).collect()
    }

    pub fn request_count(&self) -> usize {
        self.core.log.lock().unwrap().len()
    }

    /// Answer streams the client abandoned before their end.
    pub fn disconnects(&self) -> usize {
        self.core.disconnects.load(Ordering::SeqCst)
    }

    /// Waits until `n` answer streams were abandoned by their client.
    pub async fn wait_disconnects(&self, n: usize) {
        self.core.wait_until(&format!("{n} client disconnects"), |c| c.disconnects.load(Ordering::SeqCst) >= n).await;
    }

    /// Waits until `n` requests were received.
    pub async fn wait_requests(&self, n: usize) {
        self.core.wait_until(&format!("{n} requests"), |c| c.log.lock().unwrap().len() >= n).await;
    }
}

/// Counts an answer stream abandoned before its end when dropped unfinished.
pub(crate) struct StreamGuard {
    core: Arc<Core>,
    pub finished: bool,
}

impl StreamGuard {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core, finished: false }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.core.disconnected();
        }
    }
}

/// A small real picture: `width`x`height` pixels of a gradient tinted by `tint`, encoded
/// as `format` (PNG, JPEG or WebP).
pub fn picture(width: u32, height: u32, tint: u8, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width.max(1), height.max(1), |x, y| image::Rgb([(x * 16) as u8, (y * 16) as u8, tint]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode a picture");
    out.into_inner()
}

/// A small PNG.
pub fn png(width: u32, height: u32, tint: u8) -> Vec<u8> {
    picture(width, height, tint, image::ImageFormat::Png)
}

/// A few bytes that start like an MP4 file (an `ftyp` box, then an empty `mdat`): what the
/// fakes serve as a finished video.
pub fn mp4_blob() -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&[0, 0, 0, 0x18]);
    b.extend_from_slice(b"ftypmp42");
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(b"mp42isom");
    b.extend_from_slice(&[0, 0, 0, 0x08]);
    b.extend_from_slice(b"mdat");
    Bytes::from(b)
}

/// `GET /media/{name}`: the fake's CDN (`.mp4` as `video/mp4`, `.png` as `image/png`).
pub(crate) async fn media(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    if name.ends_with(".mp4") {
        ([(header::CONTENT_TYPE, "video/mp4")], mp4_blob()).into_response()
    } else if name.ends_with(".png") {
        ([(header::CONTENT_TYPE, "image/png")], png(4, 4, name.len() as u8)).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// The unix time in seconds.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A multipart body's fields: text values, and files as (content type, bytes).
#[derive(Debug, Default)]
pub(crate) struct Form {
    pub texts: std::collections::HashMap<String, String>,
    pub files: std::collections::HashMap<String, (String, Bytes)>,
}

impl Form {
    /// Reads a `multipart/form-data` request; anything else is refused with a reason.
    pub(crate) async fn read(req: Request) -> Result<Self, String> {
        use axum::extract::FromRequest;
        let mut mp =
            axum::extract::Multipart::from_request(req, &()).await.map_err(|_| "the body must be multipart/form-data".to_owned())?;
        let mut form = Self::default();
        while let Some(field) = mp.next_field().await.map_err(|e| format!("malformed multipart body: {e}"))? {
            let name = field.name().unwrap_or_default().to_owned();
            if field.file_name().is_some() {
                let ct = field.content_type().unwrap_or("application/octet-stream").to_owned();
                let bytes = field.bytes().await.map_err(|e| format!("malformed multipart body: {e}"))?;
                form.files.insert(name, (ct, bytes));
            } else {
                let text = field.text().await.map_err(|e| format!("malformed multipart body: {e}"))?;
                form.texts.insert(name, text);
            }
        }
        Ok(form)
    }

    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.texts.get(name).map(String::as_str)
    }
}
