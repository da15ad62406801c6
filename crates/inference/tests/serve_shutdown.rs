#![cfg(feature = "engine")]
//! `purrify-inference serve` as a pod runs it: SIGTERM with a job far longer than the grace
//! period must not keep the process alive until the job ends.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use purrify_inference::protocol::{EnhanceParams, JobRequest, JobStatus, OutputFormat, QualityLevel};

/// Kills the server if the test fails half-way, so no stray process keeps burning CPU.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn get_status(http: &reqwest::Client, base: &str, id: &str) -> JobStatus {
    http.get(format!("{base}/v1/jobs/{id}")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_long_job_exits_soon_after_the_grace_period() {
    require_models();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    // 2400x1600 in 64 px tiles on one thread: about 950 tiles, over a minute of model time.
    let src = photo("coffee.png");
    let big = image::imageops::resize(&src, 2400, 1600, image::imageops::FilterType::Triangle);
    std::fs::write(dir.path().join("in/big.png"), png_bytes(&big)).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_purrify-inference"))
        .args(["--log-format", "json", "serve", "--addr", "127.0.0.1:0", "--quality-levels", "medium"])
        .args(["--threads", "1", "--capacity", "1", "--shutdown-grace", "1"])
        .arg("--storage")
        .arg(format!("file://{}", dir.path().display()))
        .env("RUST_LOG", "info,ort=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no listen line: {log:#?}"));
        log.push(line.clone());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "inference worker listening" {
            break v["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..1200 {
        if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the worker never became ready");

    let job = JobRequest {
        id: "long".into(),
        input_uri: format!("file://{}/in/big.png", dir.path().display()),
        output_uri: format!("file://{}/out/long.jpg", dir.path().display()),
        params: EnhanceParams {
            tile_size: 64,
            quality_level: QualityLevel::Medium,
            scale: 2,
            face_enhance: false,
            output_format: OutputFormat::Jpeg,
        },
    };
    assert_eq!(http.post(format!("{base}/v1/jobs")).json(&job).send().await.unwrap().status(), 202);
    let mut running = false;
    for _ in 0..1200 {
        if get_status(&http, &base, "long").await.stage.as_deref() == Some("tiles") {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running, "the job never reached the tile stage");

    let term = Command::new("kill").arg("-TERM").arg(server.0.id().to_string()).status().unwrap();
    assert!(term.success());
    let signalled = Instant::now();
    let mut server = server;
    // Generous: grace (1 s) + the cancelled job's next tile + stopping the HTTP server; the
    // job itself would need over a minute.
    let bound = Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < bound, "still running {bound:?} after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = signalled.elapsed();
    eprintln!("exited {:.2} s after SIGTERM with {status}", took.as_secs_f64());
    assert!(status.success(), "a requested shutdown is a clean exit: {status}");
    log.extend(lines.try_iter());
    assert!(
        log.iter().any(|l| l.contains("grace period over; cancelling unfinished jobs")),
        "the job was cancelled, not waited for: {log:#?}"
    );
    assert!(!dir.path().join("out/long.jpg").exists(), "a cancelled job writes no output");
}
