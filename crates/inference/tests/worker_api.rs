#![cfg(feature = "engine")]
//! The worker's HTTP API over real HTTP on loopback, with the real fast models.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use purrify_inference::pipeline::EngineConfig;
use purrify_inference::protocol::{
    EnhanceParams, ErrorReason, JobAccepted, JobRequest, JobState, JobStatus, OutputFormat, QualityLevel, WorkerInfo,
};
use purrify_inference::server::jobs::{Jobs, JobsConfig, SubmitError};
use purrify_inference::server::metrics::Metrics;
use purrify_inference::server::{EngineSource, Worker, WorkerConfig};
use purrify_inference::storage::{S3Options, Storage};
use serde_json::json;

struct Harness {
    worker: Worker,
    storage: Arc<Storage>,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start(jobs: JobsConfig, engine: EngineSource) -> Harness {
    start_with_grace(jobs, engine, Duration::from_secs(30)).await
}

async fn start_with_grace(jobs: JobsConfig, engine: EngineSource, shutdown_grace: Duration) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::new(&format!("file://{}", dir.path().display()), S3Options::default()).unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let worker = purrify_inference::server::start(
        WorkerConfig { addr: "127.0.0.1:0".parse().unwrap(), storage: storage.clone(), jobs, engine, shutdown_grace },
        async move {
            let _ = rx.await;
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", worker.addr);
    Harness { worker, storage, base, http: reqwest::Client::new(), _dir: dir, stop: Some(tx) }
}

async fn ready_worker(capacity: usize) -> Harness {
    start(JobsConfig { capacity, parallel: 1, ..Default::default() }, EngineSource::Ready(fast_engine())).await
}

impl Harness {
    async fn put_input(&self, name: &str, bytes: Vec<u8>) -> String {
        let uri = self.storage.uri_for(&format!("in/{name}"));
        self.storage.put(&uri, bytes.into()).await.unwrap();
        uri
    }

    fn job(&self, id: &str, input_uri: &str, params: EnhanceParams) -> JobRequest {
        JobRequest { id: id.into(), input_uri: input_uri.into(), output_uri: self.storage.uri_for(&format!("out/{id}.jpg")), params }
    }

    async fn submit(&self, job: &JobRequest) -> reqwest::Response {
        self.http.post(format!("{}/v1/jobs", self.base)).json(job).send().await.unwrap()
    }

    async fn status(&self, id: &str) -> JobStatus {
        self.http.get(format!("{}/v1/jobs/{id}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    async fn wait_terminal(&self, id: &str) -> JobStatus {
        for _ in 0..600 {
            let st = self.status(id).await;
            if st.state.is_terminal() {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} did not finish");
    }
}

fn fast(tile: u32) -> EnhanceParams {
    EnhanceParams { tile_size: tile, quality_level: QualityLevel::Fast, scale: 2, face_enhance: true, output_format: OutputFormat::Jpeg }
}

fn small_photo() -> Vec<u8> {
    png_bytes(&crop(&photo("astronaut.png"), 150, 50, 64, 48))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_with_events_result_info_and_metrics() {
    let h = ready_worker(2).await;
    let input = h.put_input("a.png", small_photo()).await;
    let job = h.job("job-1", &input, fast(32));
    let resp = h.http.post(format!("{}/v1/jobs", h.base)).header("x-request-id", "req-123").json(&job).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-request-id"], "req-123", "request id is propagated");
    let accepted: JobAccepted = resp.json().await.unwrap();
    assert!(!accepted.existing);

    // The event stream starts with the current state and ends after the terminal event.
    let body = h.http.get(format!("{}/v1/jobs/job-1/events", h.base)).send().await.unwrap().text().await.unwrap();
    let events: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(events.last(), Some(&"done"), "stream: {body}");
    assert!(events[..events.len() - 1].iter().all(|e| *e == "progress"), "{events:?}");
    let done_data = body.lines().rev().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let done: serde_json::Value = serde_json::from_str(done_data).unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["result"]["width"], 128);

    let st = h.status("job-1").await;
    assert_eq!(st.state, JobState::Succeeded);
    assert_eq!(st.progress, 1.0);
    let result = st.result.unwrap();
    assert_eq!((result.width, result.height), (128, 96));
    assert_eq!(result.content_type, "image/jpeg");
    let out = h.storage.get(&result.output_uri, u64::MAX).await.unwrap();
    assert_eq!(out.len() as u64, result.bytes);
    assert_eq!(image::load_from_memory(&out).unwrap().to_rgb8().dimensions(), (128, 96));

    let info: WorkerInfo = h.http.get(format!("{}/v1/info", h.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(info.capacity, 2);
    assert_eq!(info.in_flight, 0);
    assert!(info.ready);
    // The default provider, OpenVINO, with the build `make models` fetched.
    assert_eq!(info.execution_provider, "openvino");
    assert_eq!(info.requested_execution_provider, "openvino");
    assert!(info.models.iter().any(|m| m.name == "realesr-animevideov3-x2"));
    // A CPU provider reports no GPU, and the host's load as /proc gives it.
    assert!(info.gpu.is_none() && info.gpus.is_empty(), "{info:?}");
    let host = info.host.as_ref().expect("a Linux worker reports its host load");
    assert!((0.0..=100.0).contains(&host.cpu_usage) && host.memory_used > 0 && host.memory_used <= host.memory_total, "{host:?}");

    let metrics = h.http.get(format!("{}/metrics", h.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"purrify_worker_jobs_total{outcome="succeeded",reason="none"} 1"#), "{metrics}");
    assert!(metrics.contains("purrify_worker_tile_duration_seconds_count 4"), "2 x 2 tiles: {metrics}");
    // One sample per tile, each the model's time on that tile: together they fit inside the
    // job, and inside its own elapsed time (which starts after the input download).
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}: {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let tiles_sum = value("purrify_worker_tile_duration_seconds_sum ");
    let job_sum = value("purrify_worker_job_duration_seconds_sum ");
    assert!(tiles_sum > 0.0 && tiles_sum <= job_sum, "tiles {tiles_sum} s, job {job_sum} s");
    assert!(tiles_sum <= result.elapsed_ms as f64 / 1000.0 + 0.001, "tiles {tiles_sum} s, job {} ms", result.elapsed_ms);
    assert!(metrics.contains("purrify_worker_model_load_seconds{"));
    assert!(metrics.contains("purrify_worker_jobs_in_flight 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_attaches_and_a_different_job_under_the_same_id_conflicts() {
    let h = ready_worker(2).await;
    let input = h.put_input("a.png", small_photo()).await;
    let job = h.job("same", &input, fast(400));
    assert_eq!(h.submit(&job).await.status(), 202);
    let again = h.submit(&job).await;
    assert_eq!(again.status(), 202);
    assert!(again.json::<JobAccepted>().await.unwrap().existing);
    let mut other = job.clone();
    other.params.scale = 4;
    assert_eq!(h.submit(&other).await.status(), 409);
    assert_eq!(h.wait_terminal("same").await.state, JobState::Succeeded);
    // Still idempotent once finished: a dispatcher re-attaching after a restart finds the result.
    let late = h.submit(&job).await.json::<JobAccepted>().await.unwrap();
    assert!(late.existing);
    assert_eq!(late.state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_answers_429_with_retry_after() {
    let h = ready_worker(1).await;
    let big = h.put_input("big.png", png_bytes(&crop(&photo("coffee.png"), 0, 0, 256, 256))).await;
    assert_eq!(h.submit(&h.job("long", &big, fast(32))).await.status(), 202);
    let resp = h.submit(&h.job("second", &big, fast(32))).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "full");
    h.http.delete(format!("{}/v1/jobs/long", h.base)).send().await.unwrap();
    h.wait_terminal("long").await;
    assert_eq!(h.submit(&h.job("second", &big, fast(400))).await.status(), 202, "capacity is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_job() {
    let h = ready_worker(2).await;
    let big = h.put_input("big.png", png_bytes(&crop(&photo("coffee.png"), 0, 0, 320, 256))).await;
    assert_eq!(h.submit(&h.job("c", &big, fast(32))).await.status(), 202);
    for _ in 0..400 {
        if h.status("c").await.progress > 0.2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = h.http.delete(format!("{}/v1/jobs/c", h.base)).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let st = h.wait_terminal("c").await;
    assert_eq!(st.state, JobState::Cancelled);
    assert_eq!(st.error.unwrap().reason, ErrorReason::Cancelled);
    assert!(st.progress < 1.0);
    assert!(h.storage.get(&h.storage.uri_for("out/c.jpg"), u64::MAX).await.is_err(), "no output for a cancelled job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_worker_keeps_serving() {
    let h = ready_worker(4).await;
    let post = |body: String| h.http.post(format!("{}/v1/jobs", h.base)).header("content-type", "application/json").body(body).send();
    assert_eq!(post("{not json".into()).await.unwrap().status(), 422);
    assert_eq!(post(json!({"id": "x"}).to_string()).await.unwrap().status(), 422, "missing uris");
    let bad_scale = json!({"id": "x", "input_uri": "file:///a", "output_uri": "file:///b", "params": {"scale": 3}});
    let resp = post(bad_scale.to_string()).await.unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("scale must be 2 or 4"));
    let bad_id = json!({"id": "../etc", "input_uri": "file:///a", "output_uri": "file:///b"});
    assert_eq!(post(bad_id.to_string()).await.unwrap().status(), 422);
    let bad_uri = json!({"id": "u", "input_uri": "http://evil/a", "output_uri": "file:///b"});
    assert_eq!(post(bad_uri.to_string()).await.unwrap().status(), 422);

    for path in ["/v1/jobs/nope", "/v1/jobs/nope/events"] {
        assert_eq!(h.http.get(format!("{}{path}", h.base)).send().await.unwrap().status(), 404);
    }
    assert_eq!(h.http.delete(format!("{}/v1/jobs/nope", h.base)).send().await.unwrap().status(), 404);

    // Jobs whose input is bad fail with a reason and are not worth retrying.
    let text = h.put_input("text.jpg", b"not an image".to_vec()).await;
    let cases = [
        ("text", text.clone(), ErrorReason::BadInput),
        ("missing", h.storage.uri_for("in/missing.png"), ErrorReason::BadInput),
        ("outside", "file:///etc/hostname".to_string(), ErrorReason::BadInput),
    ];
    for (id, uri, reason) in &cases {
        assert_eq!(h.submit(&h.job(id, uri, fast(400))).await.status(), 202);
        let st = h.wait_terminal(id).await;
        assert_eq!(st.state, JobState::Failed, "{id}");
        let err = st.error.unwrap();
        assert_eq!(err.reason, *reason, "{id}: {}", err.message);
        assert!(!err.reason.retryable());
    }
    let good = h.put_input("ok.png", small_photo()).await;
    assert_eq!(h.submit(&h.job("after", &good, fast(400))).await.status(), 202);
    assert_eq!(h.wait_terminal("after").await.state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_models_and_a_failed_load_ends_the_worker() {
    require_models();
    // The x4plus model (67 MB, ~1,100 nodes) takes far longer to load and warm up than two
    // loopback requests take; the small fast model could be ready before the first probe.
    let config = EngineConfig { quality_levels: vec![QualityLevel::High], ..EngineConfig::default() };
    let h = start(JobsConfig::default(), EngineSource::Load(Box::new(config))).await;
    assert_eq!(h.http.get(format!("{}/healthz", h.base)).send().await.unwrap().status(), 200);
    let first = h.http.get(format!("{}/readyz", h.base)).send().await.unwrap().status();
    assert_eq!(first, 503, "not ready before the models are loaded and warmed up");
    let mut ready = false;
    for _ in 0..600 {
        if h.http.get(format!("{}/readyz", h.base)).send().await.unwrap().status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready);

    let broken = EngineConfig { models_dir: "/nonexistent".into(), ..EngineConfig::default() };
    let h = start(JobsConfig::default(), EngineSource::Load(Box::new(broken))).await;
    let err = tokio::time::timeout(Duration::from_secs(30), h.worker.handle).await.unwrap().unwrap().unwrap_err();
    assert!(err.to_string().contains("make models"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_jobs_and_drains_running_ones() {
    let mut h = ready_worker(2).await;
    let input = h.put_input("a.png", png_bytes(&crop(&photo("coffee.png"), 0, 0, 160, 128))).await;
    assert_eq!(h.submit(&h.job("draining", &input, fast(32))).await.status(), 202);
    h.stop.take().unwrap().send(()).unwrap();
    // Give the shutdown signal a moment to flip admission off.
    let mut refused = false;
    for i in 0..100 {
        let resp = h.submit(&h.job(&format!("late-{i}"), &input, fast(400))).await;
        if resp.status() == 503 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "new jobs are refused during shutdown");
    assert!(!h.status("draining").await.state.is_terminal(), "still running while draining");
    let Harness { worker, storage, .. } = h;
    worker.handle.await.unwrap().unwrap();
    assert!(storage.get(&storage.uri_for("out/draining.jpg"), u64::MAX).await.is_ok(), "the running job finished");
}

/// Admission is one step under the job table's lock: with many submissions racing for the
/// slots, exactly `capacity` are accepted, never more.
#[test]
fn concurrent_submissions_never_exceed_capacity() {
    const CAPACITY: usize = 3;
    const THREADS: usize = 12;
    const ROUNDS: usize = 300;
    let engine = fast_engine();
    // Never driven: accepted jobs are spawned but never run, so they stay in flight and a
    // slot taken stays taken for the whole round.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::new(&format!("file://{}", dir.path().display()), S3Options::default()).unwrap());
    let input = storage.uri_for("in/never-read.png");
    for round in 0..ROUNDS {
        let jobs = Jobs::new(JobsConfig { capacity: CAPACITY, ..Default::default() }, storage.clone(), Arc::new(Metrics::new()));
        jobs.set_engine(engine.clone());
        let start = Barrier::new(THREADS);
        let (accepted, full) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (rt, jobs, start, accepted, full, storage, input) = (&rt, &jobs, &start, &accepted, &full, &storage, &input);
                s.spawn(move || {
                    let _rt = rt.enter();
                    let id = format!("r{round}-t{t}");
                    let req = JobRequest {
                        output_uri: storage.uri_for(&format!("out/{id}.jpg")),
                        id,
                        input_uri: input.clone(),
                        params: EnhanceParams::default(),
                    };
                    start.wait();
                    match jobs.submit(req, None) {
                        Ok(_) => accepted.fetch_add(1, Ordering::Relaxed),
                        Err(SubmitError::Full { .. }) => full.fetch_add(1, Ordering::Relaxed),
                        Err(e) => panic!("unexpected refusal: {e}"),
                    };
                });
            }
        });
        let accepted = accepted.load(Ordering::Relaxed);
        assert_eq!(accepted, CAPACITY, "round {round}: {accepted} accepted with capacity {CAPACITY}");
        assert_eq!(full.load(Ordering::Relaxed), THREADS - CAPACITY);
        assert_eq!(jobs.in_flight(), CAPACITY);
    }
}

/// When the grace period runs out, unfinished jobs are cancelled (they stop at the next
/// tile), end as `cancelled` with a reason a dispatcher can act on, and the worker stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_running_jobs_are_cancelled() {
    let mut h = start_with_grace(
        JobsConfig { capacity: 2, parallel: 1, ..Default::default() },
        EngineSource::Ready(fast_engine()),
        Duration::from_millis(300),
    )
    .await;
    // About 250 tiles of 32 px: far longer than the grace period.
    let input = h.put_input("long.png", png_bytes(&photo("coffee.png"))).await;
    assert_eq!(h.submit(&h.job("long", &input, fast(32))).await.status(), 202);
    for _ in 0..600 {
        if h.status("long").await.stage.as_deref() == Some("tiles") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.status("long").await.stage.as_deref(), Some("tiles"), "the job should be running tiles");
    // Submitted only now, so it waits for the one run slot behind `long` (submitted together,
    // either could take the slot first, and on a loaded machine the other then finished
    // before the shutdown).
    assert_eq!(h.submit(&h.job("queued", &input, fast(32))).await.status(), 202);
    let stopped = Instant::now();
    h.stop.take().unwrap().send(()).unwrap();
    let Harness { worker, storage, .. } = h;
    tokio::time::timeout(Duration::from_secs(60), worker.handle)
        .await
        .expect("the worker stops after grace + cancellation, not after the job")
        .unwrap()
        .unwrap();
    eprintln!("worker stopped {:.2} s after the shutdown signal", stopped.elapsed().as_secs_f64());
    for id in ["long", "queued"] {
        let st = worker.jobs.status(id).unwrap();
        assert_eq!(st.state, JobState::Cancelled, "{id}: {st:?}");
        assert!(st.progress < 1.0, "{id}");
        let err = st.error.unwrap();
        assert_eq!(err.reason, ErrorReason::Cancelled);
        assert!(err.message.contains("shut down"), "{id}: {}", err.message);
        assert!(storage.get(&storage.uri_for(&format!("out/{id}.jpg")), u64::MAX).await.is_err(), "{id}: no output");
    }
    assert_eq!(worker.jobs.in_flight(), 0);
}
