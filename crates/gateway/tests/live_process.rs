//! Live updates and client webhooks with the real gateway binary (issue 12), on SQLite and
//! PostgreSQL: two users on `/ws` (one by `?token=`, one by a first auth message) each receive
//! their own task's progress and completion and nothing of the other's; ping/pong; bad tokens,
//! a silent client and a revoked token are closed with their codes; a task's `callback_url`
//! receives a correctly signed POST, a failing callback server is retried until it answers
//! 2xx, and a host that resolves to a loopback address is refused when private addresses are
//! not allowed.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use purrify_store::testing::{Backend, TestDb};
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use purrify_testkit::{Proc, free_port};
use serde_json::{Value, json};
use sha2::Sha256;
use support::small_photo_png;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const JWT_SECRET: &str = "jwt-secret-5d1f0a9c7e3b2a4f6c8e0d2b4a6c8e0f";
const CALLBACK_SECRET: &str = "callback-secret-2b7e151628aed2a6abf71588";
const PASSWORD: &str = "live password 42";
/// Bound of every wait for an event; only a broken test reaches it.
const WAIT: Duration = Duration::from_secs(60);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Gw {
    proc: Proc,
    port: u16,
    base: String,
    http: reqwest::Client,
}

/// The gateway binary on `db`, without the in-process worker, with short live timings.
async fn start(dir: &Path, db: &TestDb, allow_private: bool, extra: &[(&str, &str)]) -> Gw {
    let port = free_port();
    let log = dir.join(format!("gateway-{port}.log"));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_purrify-gateway"));
    cmd.args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir", &dir.join(format!("data-{port}")).display().to_string()])
        .args(["--embedded-worker", "false"])
        .env("RUST_LOG", "info,purrify_gateway=debug")
        .env("DATABASE_URL", &db.url)
        .env("PURRIFY_JWT_KEY", format!("k1:{JWT_SECRET}"))
        .env("PURRIFY_ADMIN_TOKEN", "admin-token")
        .env("PURRIFY_ARGON2_MEMORY_KIB", "8192")
        .env("PURRIFY_ARGON2_ITERATIONS", "1")
        .env("PURRIFY_CALLBACK_SECRET", CALLBACK_SECRET)
        .env("PURRIFY_CALLBACK_RETRY_BASE_MS", "50")
        .env("PURRIFY_CALLBACK_MAX_ATTEMPTS", "5")
        .env("PURRIFY_WS_PING_INTERVAL_MS", "300")
        .env("PURRIFY_WS_AUTH_TIMEOUT_MS", "500")
        .env("PURRIFY_RATE_LIMIT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if allow_private {
        cmd.env("PURRIFY_ALLOW_PRIVATE_WORKERS", "true");
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let proc = Proc::adopt("gateway", cmd.spawn().expect("gateway starts"), log);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    purrify_testkit::gateway_client::wait_ready(&http, &format!("{base}/readyz"), &proc).await;
    Gw { proc, port, base, http }
}

impl Gw {
    async fn register(&self, email: &str) -> String {
        let r: Value = self
            .http
            .post(format!("{}/api/auth/register", self.base))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["data"]["access_token"].as_str().unwrap_or_else(|| panic!("registered: {r}")).to_owned()
    }

    async fn use_worker(&self, worker: &FakeWorker) {
        let r = self
            .http
            .post(format!("{}/api/v1/config/backend", self.base))
            .bearer_auth("admin-token")
            .json(&json!({"backend_url": worker.url}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    /// `POST /api/v1/enhance` as `token`'s user, with an optional `callback_url`: the task id.
    async fn upload(&self, token: &str, callback: Option<&str>) -> String {
        let mut form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(small_photo_png(32, 24)).file_name("a.png"))
            .text("quality_level", "fast");
        if let Some(url) = callback {
            form = form.text("callback_url", url.to_owned());
        }
        let r = self.http.post(format!("{}/api/v1/enhance", self.base)).bearer_auth(token).multipart(form).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        body["task_id"].as_str().unwrap().to_owned()
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON message (pings and pongs skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(f))) => panic!("closed: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// The close frame's code and reason, skipping whatever comes before it.
async fn close_of(ws: &mut Ws) -> (u16, String, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string(), before),
            Some(Ok(Message::Text(t))) => before.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(_)) => continue,
            other => panic!("ended without a close frame: {other:?}"),
        }
    }
}

/// Task messages until `until` holds for one; every task message must be about `own`.
async fn own_messages_until(ws: &mut Ws, own: &str, until: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let m = next_json(ws).await;
        let ty = m["type"].as_str().unwrap_or_default().to_owned();
        if ty.starts_with("task_") {
            assert_eq!(m["taskId"], own, "a connection sees only its user's tasks: {m}");
        }
        let done = until(&m);
        seen.push(m);
        if done {
            return seen;
        }
    }
}

async fn two_users_receive_only_their_own_tasks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let worker = FakeWorker::start(4, Behavior::Hold).await;
    let gw = start(dir.path(), &db, true, &[]).await;
    gw.use_worker(&worker).await;
    let (alice, bob) = (gw.register("alice@example.com").await, gw.register("bob@example.com").await);

    // Alice by seed 003's query token, Bob by seed 001's first message.
    let (mut wa, _) = tokio_tungstenite::connect_async(format!("{}?token={alice}", gw.ws_url())).await.unwrap();
    let (mut wb, _) = tokio_tungstenite::connect_async(gw.ws_url()).await.unwrap();
    send(&mut wb, json!({"type": "auth", "token": bob})).await;
    assert_eq!(next_json(&mut wb).await["type"], "auth_ok");
    send(&mut wa, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut wa).await, json!({"type": "pong"}));

    // No subscription: the tasks of each user arrive on their connection alone.
    let (ta, tb) = (gw.upload(&alice, None).await, gw.upload(&bob, None).await);
    worker.wait_started(2).await;
    let halfway = |m: &Value| m["type"] == "task_progress" && m["progress"] == 50;
    let a = own_messages_until(&mut wa, &ta, halfway).await;
    let b = own_messages_until(&mut wb, &tb, halfway).await;
    assert_eq!(a.last().unwrap()["status"], "processing", "{a:?}");
    assert_eq!(b.last().unwrap()["status"], "processing", "{b:?}");
    worker.release(2);
    let complete = |m: &Value| m["type"] == "task_complete";
    let a = own_messages_until(&mut wa, &ta, complete).await;
    let b = own_messages_until(&mut wb, &tb, complete).await;
    assert_eq!(a.last().unwrap()["result"]["status"], "completed", "{a:?}");
    assert_eq!(b.last().unwrap()["result"]["download_url"], format!("/api/v1/download/{tb}"), "{b:?}");

    // A failed task arrives as task_failed; the other user still hears nothing of it.
    worker.script([Behavior::Fail(purrify_inference::protocol::ErrorReason::BadInput, "not an image")]);
    let tf = gw.upload(&alice, None).await;
    let failed = own_messages_until(&mut wa, &tf, |m| m["type"] == "task_failed").await;
    assert!(failed.last().unwrap()["error"].as_str().is_some_and(|e| !e.is_empty()), "{failed:?}");
    send(&mut wb, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut wb).await, json!({"type": "pong"}), "nothing of alice's task reached bob's connection");
    drop(gw.proc);
}

async fn refusals_timeouts_heartbeats_and_revocation(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), &db, true, &[]).await;
    let alice = gw.register("alice@example.com").await;

    // A bad query token is refused before the upgrade, with a 401 in the error envelope.
    match tokio_tungstenite::connect_async(format!("{}?token=garbage", gw.ws_url())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    // A bad first auth message: auth_failed, then closed.
    let (mut ws, _) = tokio_tungstenite::connect_async(gw.ws_url()).await.unwrap();
    send(&mut ws, json!({"type": "auth", "token": "garbage"})).await;
    let (code, _, before) = close_of(&mut ws).await;
    assert_eq!((code, before[0]["type"].as_str()), (4001, Some("auth_failed")), "{before:?}");
    // No auth at all within the timeout: closed, saying why.
    let (mut ws, _) = tokio_tungstenite::connect_async(gw.ws_url()).await.unwrap();
    let (code, reason, _) = close_of(&mut ws).await;
    assert_eq!(code, 4001);
    assert!(reason.contains("authentication timeout"), "{reason}");

    // A client that answers the server's pings stays connected across several of them.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?token={alice}", gw.ws_url())).await.unwrap();
    let mut pings = 0;
    while pings < 3 {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("pings arrive") {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong"}), "still open after {pings} heartbeats");

    // A client that stopped answering is closed with 4002: a raw socket that never reads
    // answers no ping.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let hello = format!(
        "GET /ws?token={alice} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw.write_all(hello.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, raw.read_to_end(&mut bytes)).await.expect("the server hangs up").unwrap();
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(bytes.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&bytes[..head_end]));
    let frames = &bytes[head_end..];
    let close = frames.windows(4).position(|w| w[0] == 0x88 && w[2..4] == 4002u16.to_be_bytes());
    assert!(close.is_some(), "a close frame with 4002 after the pings: {frames:?}");
    assert_eq!(frames[0], 0x89, "a ping came first");

    // A revoked token (logout on all devices) closes the connection at the next heartbeat.
    let bob = gw.register("bob@example.com").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?token={bob}", gw.ws_url())).await.unwrap();
    let r =
        gw.http.post(format!("{}/api/auth/logout", gw.base)).bearer_auth(&bob).json(&json!({"all_devices": true})).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (code, _, before) = close_of(&mut ws).await;
    assert_eq!(code, 4001);
    assert_eq!(before.last().map(|m| m["type"].clone()), Some(json!("auth_expired")), "{before:?}");
}

/// What the local callback server received: path, headers, body.
type Received = Arc<Mutex<Vec<(String, HeaderMap, Vec<u8>)>>>;

/// A callback receiver: `/ok/*` answers 200; `/flaky/*` answers 500 twice, then 204.
async fn callback_server() -> (u16, Received) {
    let got: Received = Arc::default();
    async fn hook(
        State(got): State<Received>,
        UrlPath((kind, rest)): UrlPath<(String, String)>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let mut g = got.lock().unwrap();
        let path = format!("/{kind}/{rest}");
        let earlier = g.iter().filter(|(p, _, _)| *p == path).count();
        g.push((path, headers, body.to_vec()));
        match (kind.as_str(), earlier) {
            ("flaky", 0 | 1) => StatusCode::INTERNAL_SERVER_ERROR,
            ("flaky", _) => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        }
    }
    let app = axum::Router::new().route("/{kind}/{rest}", axum::routing::post(hook)).with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, got)
}

fn posts_to(got: &Received, path: &str) -> Vec<(HeaderMap, Vec<u8>)> {
    got.lock().unwrap().iter().filter(|(p, _, _)| p == path).map(|(_, h, b)| (h.clone(), b.clone())).collect()
}

/// Checks the signature headers of a callback POST; its JSON body.
fn verified(headers: &HeaderMap, body: &[u8]) -> Value {
    let ts = headers["x-purrify-timestamp"].to_str().unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(CALLBACK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(headers["x-purrify-signature"].to_str().unwrap(), format!("sha256={want}"));
    assert_eq!(headers["content-type"], "application/json");
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["timestamp"].as_i64().unwrap().to_string(), ts, "the body's timestamp is the signed one");
    v
}

async fn eventually<T>(what: &str, gw: &Gw, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} never happened:\n{}", gw.proc.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn callbacks_are_signed_retried_and_refused_for_private_hosts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let (port, got) = callback_server().await;
    let worker = FakeWorker::start(4, Behavior::Succeed).await;
    let gw = start(dir.path(), &db, true, &[]).await;
    gw.use_worker(&worker).await;
    let alice = gw.register("alice@example.com").await;

    // Delivered at the first attempt, signed.
    let id = gw.upload(&alice, Some(&format!("http://127.0.0.1:{port}/ok/one?client=7"))).await;
    let (headers, body) = eventually("the callback", &gw, || posts_to(&got, "/ok/one").pop()).await;
    let v = verified(&headers, &body);
    assert_eq!(
        (v["event"].as_str(), v["task_id"].as_str(), v["status"].as_str()),
        (Some("task.completed"), Some(id.as_str()), Some("completed"))
    );
    assert_eq!(v["result"]["download_url"], format!("/api/v1/download/{id}"));
    assert!(v["result"]["width"].as_u64().unwrap() > 0, "{v}");
    let row = wait_settled(&db, &id, &gw).await;
    assert_eq!((row.attempts, row.last_status, row.given_up_at), (1, Some(200), None));

    // A failed task's callback, from a server that fails twice: retried, then delivered.
    worker.script([Behavior::Fail(purrify_inference::protocol::ErrorReason::BadInput, "not an image")]);
    let id = gw.upload(&alice, Some(&format!("http://127.0.0.1:{port}/flaky/two"))).await;
    let posts = eventually("three attempts", &gw, || Some(posts_to(&got, "/flaky/two")).filter(|p| p.len() >= 3)).await;
    for (h, b) in &posts {
        let v = verified(h, b);
        assert_eq!((v["event"].as_str(), v["task_id"].as_str()), (Some("task.failed"), Some(id.as_str())));
        assert_eq!(v["error"]["code"], "BAD_INPUT", "{v}");
    }
    let row = wait_settled(&db, &id, &gw).await;
    assert_eq!((row.attempts, row.last_status, row.delivered_at.is_some()), (3, Some(204), true));
    assert_eq!(posts_to(&got, "/flaky/two").len(), 3, "nothing after the 2xx");

    // Without private addresses allowed, a host resolving to loopback is never contacted.
    // (Its own database: a gateway on the first one would deliver it, as replicas share work.)
    let strict_db = TestDb::new(backend).await;
    let strict = start(dir.path(), &strict_db, false, &[("PURRIFY_TASK_DEADLINE_SECONDS", "1")]).await;
    let carol = strict.register("carol@example.com").await;
    let id = strict.upload(&carol, Some(&format!("http://localhost:{port}/ok/private"))).await;
    let row = wait_settled(&strict_db, &id, &strict).await;
    assert!(row.given_up_at.is_some() && row.delivered_at.is_none(), "{row:?}");
    assert_eq!(row.attempts, 1, "refused addresses are not retried");
    assert!(row.last_error.as_deref().is_some_and(|e| e.contains("refused")), "{row:?}");
    assert!(posts_to(&got, "/ok/private").is_empty(), "the callback server was never contacted");
}

/// The task's delivery once delivered or given up.
async fn wait_settled(db: &TestDb, task_id: &str, gw: &Gw) -> purrify_store::CallbackDelivery {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(d) = db.db.callback_delivery(task_id).await.unwrap()
            && d.is_settled()
        {
            return d;
        }
        assert!(tokio::time::Instant::now() < deadline, "the callback of {task_id} never settled:\n{}", gw.proc.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(purrify_store::testing::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(purrify_store::testing::Backend::Postgres).await;
            }
        }
    )*};
}

on_both!(
    two_users_receive_only_their_own_tasks,
    refusals_timeouts_heartbeats_and_revocation,
    callbacks_are_signed_retried_and_refused_for_private_hosts
);
