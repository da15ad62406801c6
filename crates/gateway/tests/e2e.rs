//! End to end with real processes: the gateway binary, inference worker binaries, real models,
//! real photos over real HTTP. Processes are killed with SIGKILL to show nothing is lost.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use purrify_testkit::gateway_client::{completed, register, status, upload, wait_for, wait_ready, worker_in_flight};
use purrify_testkit::{Proc, free_port, workspace_bin};
use serde_json::{Value, json};
use support::*;

struct Cluster {
    dir: tempfile::TempDir,
    http: reqwest::Client,
    /// The gateway's database: SQLite in its data directory unless this is set.
    database_url: Option<String>,
}

impl Cluster {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), http: reqwest::Client::new(), database_url: None }
    }

    fn with_database(url: &str) -> Self {
        Self { database_url: Some(url.to_string()), ..Self::new() }
    }

    fn storage(&self) -> String {
        format!("file://{}", self.dir.path().join("storage").display())
    }

    fn gateway(&self, port: u16, embedded_worker: bool) -> Proc {
        Proc::spawn(
            "gateway",
            Path::new(env!("CARGO_BIN_EXE_purrify-gateway")),
            &self.gateway_args(port, embedded_worker),
            &[],
            self.dir.path(),
        )
    }

    /// A gateway whose pid the test knows (to signal it); the Proc still cleans it up.
    fn gateway_with_pid(&self, port: u16, extra: &[&str]) -> (Proc, u32) {
        let mut args = self.gateway_args(port, false);
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = self.dir.path().join("gateway.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_purrify-gateway"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("gateway starts");
        let pid = child.id();
        (Proc::adopt("gateway", child, log), pid)
    }

    fn gateway_args(&self, port: u16, embedded_worker: bool) -> Vec<String> {
        let mut args = vec![
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            self.dir.path().join("gw").display().to_string(),
            "--storage".into(),
            self.storage(),
            "--webhook-secret".into(),
            "e2e-secret".into(),
            "--allow-private-workers".into(),
            "--embedded-worker".into(),
            embedded_worker.to_string(),
            "--quality-levels".into(),
            "fast".into(),
            "--probe-interval-seconds".into(),
            "1".into(),
            "--rate-limit".into(),
            "0".into(),
        ];
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".into(), url.clone()]);
        }
        args
    }

    fn worker(&self, name: &str, port: u16) -> Proc {
        let bin = workspace_bin("purrify-inference");
        let args = vec![
            "serve".into(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--storage".into(),
            self.storage(),
            "--quality-levels".into(),
            "fast".into(),
            "--threads".into(),
            "1".into(),
        ];
        Proc::spawn(name, &bin, &args, &[], self.dir.path())
    }

    async fn metric(&self, port: u16, needle: &str) -> f64 {
        let text = self.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines().find(|l| l.starts_with(needle)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    }
}

/// A photo large enough, cut in small tiles, that a kill lands mid-job.
fn slow_photo() -> Vec<u8> {
    let img = image::load_from_memory(&photo_bytes("solvay_conference_1927.jpg")).unwrap().to_rgb8();
    let crop = image::imageops::crop_imm(&img, 1000, 600, 640, 480).to_image();
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(crop).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn processing_started(s: &Value) -> bool {
    s["status"] == "processing" && s["progress"].as_f64().unwrap_or(0.0) > 0.05
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_gateway_enhances_a_real_photo_with_live_progress() {
    let c = Cluster::new();
    let port = free_port();
    let gw = c.gateway(port, true);
    wait_ready(&c.http, &format!("http://127.0.0.1:{port}/readyz"), &gw).await;
    let base = format!("http://127.0.0.1:{port}");

    let photo = small_photo_png(120, 90);
    let id = upload(&c.http, port, photo, 32).await;

    // Live progress over WebSocket (seed 001/003 message shapes) and SSE at the same time.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(json!({"type": "subscribe", "taskId": id}).to_string().into())).await.unwrap();
    let sse = c.http.get(format!("{base}/api/v1/status/{id}/events")).send().await.unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let sse_body = tokio::time::timeout(Duration::from_secs(120), sse.text()).await.expect("SSE ends at completion").unwrap();
    let sse_events: Vec<&str> = sse_body.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(sse_events.last(), Some(&"task_complete"), "{sse_body}");

    let mut ws_types = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            let ty = v["type"].as_str().unwrap().to_string();
            if ty.starts_with("task_") {
                assert_eq!(v["taskId"], id);
            }
            let done = ty == "task_complete";
            ws_types.push(ty);
            if done {
                break;
            }
        }
    }
    assert!(ws_types.contains(&"subscribed".to_string()), "{ws_types:?}");
    assert_eq!(ws_types.last().map(String::as_str), Some("task_complete"), "{ws_types:?}");

    let s = status(&c.http, port, &id).await;
    assert_eq!(s["status"], "completed");
    assert_eq!(s["progress"], 1.0);
    assert_eq!(s["download_url"], format!("/api/v1/download/{id}"));
    let d = c.http.get(format!("{base}{}", s["download_url"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(d.status(), 200);
    assert_eq!(d.headers()["content-type"], "image/jpeg");
    assert_eq!(d.headers()["content-disposition"], format!("attachment; filename=\"purrify-{id}.jpg\"").as_str());
    // A task retried under its id gets a new result: private caches revalidate, shared never keep it.
    assert_eq!(d.headers()["cache-control"], "private, no-cache");
    let img = image::load_from_memory(&d.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (240, 180));

    let h: Value = c.http.get(format!("{base}/api/v1/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_is_replaced_and_the_task_completes() {
    let c = Cluster::new();
    let (gp, w1p, w2p) = (free_port(), free_port(), free_port());
    let gw = c.gateway(gp, false);
    let mut w1 = c.worker("worker-1", w1p);
    let mut w2 = c.worker("worker-2", w2p);
    wait_ready(&c.http, &format!("http://127.0.0.1:{gp}/readyz"), &gw).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{w1p}/readyz"), &w1).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{w2p}/readyz"), &w2).await;
    register(&c.http, gp, w1p, "e2e-secret").await;
    register(&c.http, gp, w2p, "e2e-secret").await;

    let id = upload(&c.http, gp, slow_photo(), 32).await;
    wait_for(&c.http, gp, &id, "processing", processing_started, &[&gw, &w1, &w2]).await;
    let (victim, survivor) = if worker_in_flight(&c.http, w1p).await > 0 { (&mut w1, w2p) } else { (&mut w2, w1p) };
    victim.kill();

    let s = wait_for(&c.http, gp, &id, "completed", completed, &[&gw, &w1, &w2]).await;
    assert_eq!(s["status"], "completed");
    let succeeded = c.metric(survivor, r#"purrify_worker_jobs_total{outcome="succeeded""#).await;
    assert_eq!(succeeded, 1.0, "the surviving worker ran the retry");
}

mod a_gateway_killed_mid_task_reattaches_after_restart_without_rerunning {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::gateway_killed_mid_task_reattaches(super::Cluster::new()).await;
    }

    /// The same scenario on PostgreSQL: a throwaway database, dropped at the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let db = crate::support::TestDb::postgres().await;
        let id = super::gateway_killed_mid_task_reattaches(super::Cluster::with_database(&db.url)).await;
        let row = db.db.get_task(&id).await.unwrap().expect("the gateways kept the task in this database");
        assert_eq!(row.status.as_str(), "completed");
    }
}

/// Returns the task's id.
async fn gateway_killed_mid_task_reattaches(c: Cluster) -> String {
    let (gp, wp) = (free_port(), free_port());
    let mut gw = c.gateway(gp, false);
    let w = c.worker("worker", wp);
    wait_ready(&c.http, &format!("http://127.0.0.1:{gp}/readyz"), &gw).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{wp}/readyz"), &w).await;
    register(&c.http, gp, wp, "e2e-secret").await;

    let id = upload(&c.http, gp, slow_photo(), 32).await;
    wait_for(&c.http, gp, &id, "processing", processing_started, &[&gw, &w]).await;
    gw.kill();

    // Same data directory, same database: the registered worker and the running task are
    // remembered; the job is still running on the worker.
    let gw = c.gateway(gp, false);
    wait_ready(&c.http, &format!("http://127.0.0.1:{gp}/readyz"), &gw).await;
    let s = wait_for(&c.http, gp, &id, "completed", completed, &[&gw, &w]).await;
    assert_eq!(s["status"], "completed");
    let succeeded = c.metric(wp, r#"purrify_worker_jobs_total{outcome="succeeded""#).await;
    assert_eq!(succeeded, 1.0, "re-attached to the running job instead of running it again");
    let d = c.http.get(format!("http://127.0.0.1:{gp}/api/v1/download/{id}")).send().await.unwrap();
    assert_eq!(d.status(), 200);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_tasks_survive_a_restart_and_run_when_a_worker_appears() {
    let c = Cluster::new();
    let (gp, wp) = (free_port(), free_port());
    let mut gw = c.gateway(gp, false);
    wait_ready(&c.http, &format!("http://127.0.0.1:{gp}/readyz"), &gw).await;
    let id = upload(&c.http, gp, small_photo_png(64, 64), 400).await;
    assert_eq!(status(&c.http, gp, &id).await["status"], "queued");
    gw.kill();

    let gw = c.gateway(gp, false);
    let w = c.worker("worker", wp);
    wait_ready(&c.http, &format!("http://127.0.0.1:{gp}/readyz"), &gw).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{wp}/readyz"), &w).await;
    assert_eq!(status(&c.http, gp, &id).await["status"], "queued", "still queued after the restart");
    register(&c.http, gp, wp, "e2e-secret").await;
    let s = wait_for(&c.http, gp, &id, "completed", completed, &[&gw, &w]).await;
    assert_eq!(s["status"], "completed");
}

/// Whether process `pid` has exited (gone, or a zombie its parent has not reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) == Some("Z"),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_live_streams_and_stops_within_the_grace_period() {
    use tokio::io::AsyncWriteExt;
    let c = Cluster::new();
    let port = free_port();
    let grace = Duration::from_secs(6);
    let (gw, pid) = c.gateway_with_pid(port, &["--shutdown-grace-seconds", "6"]);
    wait_ready(&c.http, &format!("http://127.0.0.1:{port}/readyz"), &gw).await;
    let base = format!("http://127.0.0.1:{port}");
    // No worker: the task stays queued, so its live streams would never end by themselves.
    let id = upload(&c.http, port, small_photo_png(64, 64), 400).await;

    let mut sse = c.http.get(format!("{base}/api/v1/status/{id}/events")).send().await.unwrap();
    let first = String::from_utf8_lossy(&sse.chunk().await.unwrap().expect("first event")).to_string();
    assert!(first.contains("task_progress"), "{first}");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(json!({"type": "subscribe", "taskId": id}).to_string().into())).await.unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if m.to_text().is_ok_and(|t| t.contains("subscribed")) {
            break;
        }
    }
    // And an upload whose client stalls mid-file: a request in flight that never finishes.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let photo = small_photo_png(64, 64);
    let part = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n";
    let head = format!(
        "POST /api/v1/enhance HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n{part}",
        part.len() + 1_000_000
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&photo[..photo.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());

    // The live streams end at the signal, while the stalled upload still holds the process.
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        let mut rest = Vec::new();
        while let Ok(Some(c)) = sse.chunk().await {
            rest.extend_from_slice(&c);
        }
        rest
    })
    .await
    .unwrap_or_else(|_| panic!("the SSE stream outlived the shutdown signal:\n{}", gw.log()));
    assert!(!String::from_utf8_lossy(&rest).contains("task_complete"), "the task did not finish; the stream was ended");
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the WebSocket outlived the shutdown signal:\n{}", gw.log()));
    assert_eq!(close, Some(1001), "closed as going away");
    assert!(!exited(pid), "streams ended by the shutdown, not by the process dying");

    // The stalled upload is cut off when the grace period ends; nothing holds the exit longer.
    let bound = grace + Duration::from_secs(20);
    while !exited(pid) {
        assert!(signalled.elapsed() < bound, "the gateway did not exit within {bound:?} of SIGTERM:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.log().contains("gateway stopped"), "a clean stop, not a crash:\n{}", gw.log());
    drop(stalled);
}
