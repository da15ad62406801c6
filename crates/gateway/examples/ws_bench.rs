//! `/ws` at scale (issue 12): N idle authenticated WebSocket connections against a release
//! gateway, its resident memory per connection, and the push latency of a task change to one
//! user among them, next to the same latency with no other connection open.
//!
//! The gateway runs as its own process (the binary given with `--binary`, default
//! `target/release/purrify-gateway`) on SQLite with a fake worker; the idle connections belong
//! to `--users` users (each authenticated by a first auth message and acknowledged, so every
//! session is running), the measured one to a user of its own. Latency: the fake worker holds
//! each task at 50 %; the clock starts when it is released and stops when `task_complete`
//! reaches the user's connection (worker -> dispatcher -> database -> hub -> per-user index ->
//! WebSocket).
//!
//! `cargo run --release -p purrify-gateway --example ws_bench -- [--binary PATH] [--connections N] [--users U] [--rounds R]`

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use purrify_testkit::{Proc, free_port};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Args {
    binary: String,
    connections: usize,
    users: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args { binary: "target/release/purrify-gateway".into(), connections: 10_000, users: 1_000, rounds: 50 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--binary" => a.binary = value,
            "--connections" => a.connections = value.parse().expect("--connections N"),
            "--users" => a.users = value.parse().expect("--users U"),
            "--rounds" => a.rounds = value.parse().expect("--rounds R"),
            other => panic!("unknown flag {other}"),
        }
    }
    a.users = a.users.clamp(1, a.connections.max(1));
    a
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn register(http: &reqwest::Client, base: &str, email: &str) -> String {
    let r: Value = http
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": email, "password": "bench password 42"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["data"]["access_token"].as_str().unwrap_or_else(|| panic!("register {email}: {r}")).to_owned()
}

/// A connection authenticated by a first auth message, once the server acknowledged it.
async fn connect(url: &str, token: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(json!({"type": "auth", "token": token}).to_string().into())).await.unwrap();
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            assert!(t.contains("auth_ok"), "{t}");
            return ws;
        }
    }
}

/// Keeps an idle connection alive (reading answers the server's pings) and counts what it
/// receives: an idle connection of another user must receive nothing.
fn idle(mut ws: Ws, received: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Text(_)) {
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
}

/// One latency round: a task of `token`'s user held at 50 %, released; the time until its
/// task_complete arrives on `ws`.
async fn round(http: &reqwest::Client, base: &str, token: &str, ws: &mut Ws, worker: &FakeWorker, started: usize) -> Duration {
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(png()).file_name("a.png"))
        .text("quality_level", "fast");
    let r: Value =
        http.post(format!("{base}/api/v1/enhance")).bearer_auth(token).multipart(form).send().await.unwrap().json().await.unwrap();
    let id = r["task_id"].as_str().unwrap_or_else(|| panic!("upload: {r}")).to_owned();
    worker.wait_started(started).await;
    // Wait until the 50 % mark arrived, so that only the completion is timed.
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["taskId"] == id && v["progress"] == 50 {
            break;
        }
    }
    let t0 = Instant::now();
    worker.release(1);
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["taskId"] == id && v["type"] == "task_complete" {
            return t0.elapsed();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("gateway.log");
    let child = std::process::Command::new(&a.binary)
        .args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir", &dir.path().join("data").display().to_string()])
        .args(["--embedded-worker", "false"])
        .env("RUST_LOG", "warn")
        .env("PURRIFY_ADMIN_TOKEN", "admin-token")
        .env("PURRIFY_ALLOW_PRIVATE_WORKERS", "true")
        .env("PURRIFY_RATE_LIMIT", "0")
        .env("PURRIFY_UPLOADS_PER_MINUTE", "1000000")
        .env("PURRIFY_ARGON2_MEMORY_KIB", "1024")
        .env("PURRIFY_ARGON2_ITERATIONS", "1")
        .env("PURRIFY_LOGINS_PER_MINUTE_PER_ADDRESS", "0")
        .env("PURRIFY_QUOTA_FREE_API_CALLS_PER_HOUR", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} (build it with cargo build --release -p purrify-gateway): {e}", a.binary));
    let pid = child.id();
    let proc = Proc::adopt("gateway", child, log);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    purrify_testkit::gateway_client::wait_ready(&http, &format!("{base}/readyz"), &proc).await;
    let worker = FakeWorker::start(4, Behavior::Hold).await;
    let r = http
        .post(format!("{base}/api/v1/config/backend"))
        .bearer_auth("admin-token")
        .json(&json!({"backend_url": worker.url}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    let url = format!("ws://127.0.0.1:{port}/ws");
    let target = register(&http, &base, "target@example.com").await;
    let mut ws = connect(&url, &target).await;
    let mut started = 0;
    let mut rounds = async |label: &str, ws: &mut Ws| {
        let mut times = Vec::new();
        for _ in 0..a.rounds {
            started += 1;
            times.push(round(&http, &base, &target, ws, &worker, started).await);
        }
        times.sort();
        println!(
            "push latency ({label}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} tasks",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
            times.len()
        );
    };
    rounds("1 connection open", &mut ws).await;

    // The idle crowd: users registered in parallel, then their connections.
    let t = Instant::now();
    let tokens: Vec<String> = futures::stream::iter(0..a.users)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            async move { register(&http, &base, &format!("idle{i}@example.com")).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    println!("registered {} users in {:.1} s", tokens.len(), t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = Instant::now();
    let conns: Vec<Ws> = futures::stream::iter(0..a.connections)
        .map(|i| {
            let (url, token) = (url.clone(), tokens[i % tokens.len()].clone());
            async move { connect(&url, &token).await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let n = conns.len();
    for c in conns {
        idle(c, received.clone());
    }
    println!("opened {n} authenticated connections of {} users in {:.1} s", tokens.len(), t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    println!(
        "gateway RSS: {:.1} MiB before, {:.1} MiB with {n} idle connections: {:.2} KiB per connection",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / n as f64
    );
    rounds("with the idle connections open", &mut ws).await;
    let stray = received.load(std::sync::atomic::Ordering::Relaxed);
    println!("messages received by the {n} idle connections during the rounds: {stray}");
    assert_eq!(stray, 0, "another user's task reached idle connections");
    drop(proc);
}
