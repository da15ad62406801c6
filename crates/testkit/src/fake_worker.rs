//! A fake inference worker speaking the worker protocol (DESIGN section 4) over real HTTP,
//! scripted per job, for the gateway's dispatcher tests, the operator's task controller tests
//! and the operator's dispatch bench. Real HTTP so the real client and fleet code is under
//! test; scripted so a test decides which job fails, waits or is refused. Where the protocol
//! leaves no choice (status codes, error codes, the order of states, `in_flight`), it answers
//! as `purrify-inference serve` does, so what passes here holds against the real worker.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use purrify_inference::client::{ClientConfig, Fleet, FleetConfig, WorkerSpec};
use purrify_inference::protocol::{
    ErrorReason, FaceRestoration, GpuInfo, HostInfo, JobAccepted, JobError, JobEvent, JobRequest, JobResult, JobState, JobStatus,
    WorkerErrorBody, WorkerInfo,
};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

/// How long a [`Behavior::Succeed`] or [`Behavior::Fail`] job stays at its 0.5 mark: long
/// enough for a follower to see the progress, short enough not to slow a suite down. Tests
/// that count status writes rely on it being far below their progress write delay.
pub const STEP: Duration = Duration::from_millis(20);

/// The bound of [`FakeWorker::wait_started`]; it only keeps a broken test from hanging.
const WAIT_STARTED: Duration = Duration::from_secs(60);

/// What the fake does with a job id it has not seen.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Done at once, no progress events (the bench).
    Instant,
    /// Progress 0.5, then done [`STEP`] later.
    Succeed,
    /// Progress 0.5, then done once [`FakeWorker::release`] lets it; a cancel ends the wait
    /// without using up a release.
    Hold,
    /// Progress 0.5, then this error [`STEP`] later.
    Fail(ErrorReason, &'static str),
    /// 429 `full` with `Retry-After: 0`; no job is created.
    Busy,
    /// 422 `invalid_request`: the request is refused; no job is created.
    Reject(&'static str),
}

type Rule = Arc<dyn Fn(&JobRequest) -> Option<Behavior> + Send + Sync>;

#[derive(Default)]
struct Log {
    submits: Vec<String>,
    started: Vec<(String, Instant)>,
    deletes: Vec<String>,
    request_ids: Vec<Option<String>>,
}

struct Fake {
    capacity: u32,
    default: Mutex<Behavior>,
    script: Mutex<VecDeque<Behavior>>,
    rule: Mutex<Option<Rule>>,
    jobs: Mutex<HashMap<String, watch::Sender<JobStatus>>>,
    log: Mutex<Log>,
    changed: Notify,
    gate: Semaphore,
    killed: AtomicBool,
    kill: watch::Sender<bool>,
    /// What `/v1/info` reports about the hardware (see [`FakeWorker::report`]).
    telemetry: Mutex<(Vec<GpuInfo>, Option<HostInfo>)>,
}

/// A running fake worker at `url`; killed when dropped.
pub struct FakeWorker {
    pub url: String,
    state: Arc<Fake>,
    server: JoinHandle<()>,
}

impl FakeWorker {
    /// Listens on a free loopback port; `default` is what jobs do unless scripted or ruled.
    pub async fn start(capacity: u32, default: Behavior) -> FakeWorker {
        let state = Arc::new(Fake {
            capacity,
            default: Mutex::new(default),
            script: Mutex::new(VecDeque::new()),
            rule: Mutex::new(None),
            jobs: Mutex::new(HashMap::new()),
            log: Mutex::new(Log::default()),
            changed: Notify::new(),
            gate: Semaphore::new(0),
            killed: AtomicBool::new(false),
            kill: watch::Sender::new(false),
            telemetry: Mutex::new((Vec::new(), None)),
        });
        let app = Router::new()
            .route("/v1/jobs", post(submit))
            .route("/v1/jobs/{id}", get(status).delete(cancel))
            .route("/v1/jobs/{id}/events", get(events))
            .route("/v1/info", get(info))
            .route("/healthz", get(alive))
            .route("/readyz", get(alive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Small SSE writes must not wait for delayed ACKs (Nagle): real workers do the same.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeWorker { url, state, server }
    }

    /// Behaviors of the next new jobs, in order, before the rule and the default.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.state.script.lock().unwrap().extend(behaviors);
    }

    /// Decides per request (e.g. by attempt suffix); `None` falls through to the default.
    pub fn rule(&self, f: impl Fn(&JobRequest) -> Option<Behavior> + Send + Sync + 'static) {
        *self.state.rule.lock().unwrap() = Some(Arc::new(f));
    }

    /// Hardware telemetry `/v1/info` reports from now on: these GPUs (the first also as
    /// `gpu`) and this host load. By default none, as a CPU worker without `/proc` would.
    pub fn report(&self, gpus: Vec<GpuInfo>, host: Option<HostInfo>) {
        *self.state.telemetry.lock().unwrap() = (gpus, host);
    }

    /// Lets `n` held jobs finish.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Every `POST /v1/jobs` id, in order, resubmissions and 429s included.
    pub fn submits(&self) -> Vec<String> {
        self.state.log.lock().unwrap().submits.clone()
    }

    /// Ids of the jobs actually created (run), in order.
    pub fn started(&self) -> Vec<String> {
        self.state.log.lock().unwrap().started.iter().map(|(id, _)| id.clone()).collect()
    }

    /// When each job was created, by id (the bench's accept latency).
    pub fn started_at(&self) -> Vec<(String, Instant)> {
        self.state.log.lock().unwrap().started.clone()
    }

    /// Every `DELETE /v1/jobs/{id}` id, in order.
    pub fn deletes(&self) -> Vec<String> {
        self.state.log.lock().unwrap().deletes.clone()
    }

    /// `X-Request-ID` of every submit.
    pub fn request_ids(&self) -> Vec<Option<String>> {
        self.state.log.lock().unwrap().request_ids.clone()
    }

    /// Waits until `n` jobs were created; panics after a minute.
    pub async fn wait_started(&self, n: usize) {
        let give_up = Instant::now() + WAIT_STARTED;
        loop {
            let notified = self.state.changed.notified();
            if self.started().len() >= n {
                return;
            }
            let left = give_up.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "worker {} never started {n} jobs", self.url);
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// Dies: stops listening, breaks open event streams mid-way (no terminal event, an
    /// unfinished body, as a dead process leaves them) and answers 503 on connections
    /// clients still pool.
    pub fn kill(&self) {
        self.state.killed.store(true, Ordering::SeqCst);
        self.state.kill.send_replace(true);
        self.server.abort();
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fleet config with short client timeouts, so a dead worker is noticed within a second or
/// two instead of the production minutes.
pub fn fleet_config() -> FleetConfig {
    FleetConfig {
        client: ClientConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            event_idle_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(50),
            max_poll_failures: 2,
        },
        probe_timeout: Duration::from_secs(2),
        ..FleetConfig::default()
    }
}

/// Adds and probes workers, so the next pick can choose them at once.
pub async fn add_workers(fleet: &Fleet, urls: &[&str]) {
    for url in urls {
        fleet.upsert(WorkerSpec::new(*url)).unwrap();
        assert_eq!(fleet.probe_worker(url).await, Some(true), "{url} is ready");
    }
}

/// The result every successful fake job reports.
pub fn result_for(req: &JobRequest) -> JobResult {
    JobResult {
        output_uri: req.output_uri.clone(),
        content_type: "image/jpeg".into(),
        width: 64,
        height: 48,
        bytes: 1234,
        faces: 1,
        face_restoration: FaceRestoration::Applied,
        model: "fake".into(),
        elapsed_ms: 5,
    }
}

fn dead() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "dead").into_response()
}

fn worker_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(WorkerErrorBody { error: code.into(), message: message.into() })).into_response()
}

fn not_found() -> Response {
    worker_error(StatusCode::NOT_FOUND, "not_found", "no such job")
}

async fn alive(State(s): State<Arc<Fake>>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    "ok".into_response()
}

async fn info(State(s): State<Arc<Fake>>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    let in_flight = s.jobs.lock().unwrap().values().filter(|j| !j.borrow().state.is_terminal()).count() as u32;
    let (gpus, host) = s.telemetry.lock().unwrap().clone();
    Json(WorkerInfo {
        version: "fake".into(),
        models: vec![],
        execution_provider: if gpus.is_empty() { "cpu" } else { "cuda" }.into(),
        requested_execution_provider: if gpus.is_empty() { "cpu" } else { "cuda" }.into(),
        gpu: gpus.first().cloned(),
        gpus,
        host,
        capacity: s.capacity,
        in_flight,
        ready: true,
    })
    .into_response()
}

async fn submit(State(s): State<Arc<Fake>>, headers: HeaderMap, Json(req): Json<JobRequest>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    {
        let mut log = s.log.lock().unwrap();
        log.submits.push(req.id.clone());
        log.request_ids.push(headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned));
    }
    s.changed.notify_waiters();
    if let Some(job) = s.jobs.lock().unwrap().get(&req.id) {
        let state = job.borrow().state;
        return (StatusCode::ACCEPTED, Json(JobAccepted { id: req.id, state, existing: true })).into_response();
    }
    let scripted = s.script.lock().unwrap().pop_front();
    let ruled = || s.rule.lock().unwrap().clone().and_then(|r| r(&req));
    let behavior = scripted.or_else(ruled).unwrap_or_else(|| s.default.lock().unwrap().clone());
    match behavior {
        Behavior::Busy => {
            let mut r = worker_error(StatusCode::TOO_MANY_REQUESTS, "full", "worker is at capacity");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
            return r;
        }
        Behavior::Reject(message) => return worker_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message),
        _ => {}
    }
    let initial =
        JobStatus { id: req.id.clone(), state: JobState::Queued, progress: 0.0, stage: Some("queued".into()), result: None, error: None };
    let tx = watch::Sender::new(initial);
    s.jobs.lock().unwrap().insert(req.id.clone(), tx.clone());
    s.log.lock().unwrap().started.push((req.id.clone(), Instant::now()));
    s.changed.notify_waiters();
    let id = req.id.clone();
    tokio::spawn(run_job(s.clone(), tx, req, behavior));
    (StatusCode::ACCEPTED, Json(JobAccepted { id, state: JobState::Queued, existing: false })).into_response()
}

/// Moves a job along its script; a cancel (a terminal state set by `DELETE`) stops it.
async fn run_job(s: Arc<Fake>, tx: watch::Sender<JobStatus>, req: JobRequest, behavior: Behavior) {
    // Every step leaves a finished (e.g. cancelled) job as it is.
    let step = |f: &dyn Fn(&mut JobStatus)| {
        tx.send_if_modified(|st| {
            if st.state.is_terminal() {
                return false;
            }
            f(st);
            true
        });
    };
    let done = |st: &mut JobStatus| {
        st.state = JobState::Succeeded;
        st.progress = 1.0;
        st.stage = Some("done".into());
        st.result = Some(result_for(&req));
    };
    if !matches!(behavior, Behavior::Instant) {
        step(&|st| {
            st.state = JobState::Running;
            st.progress = 0.5;
            st.stage = Some("tiles".into());
        });
    }
    match behavior {
        Behavior::Instant => step(&done),
        Behavior::Succeed => {
            tokio::time::sleep(STEP).await;
            step(&done);
        }
        Behavior::Hold => {
            let mut finished = tx.subscribe();
            tokio::select! {
                permit = s.gate.acquire() => if let Ok(p) = permit { p.forget() },
                _ = async { let _ = finished.wait_for(|st| st.state.is_terminal()).await; } => return,
            }
            step(&done);
        }
        Behavior::Fail(reason, message) => {
            tokio::time::sleep(STEP).await;
            step(&|st| {
                st.state = JobState::Failed;
                st.error = Some(JobError { reason, message: message.into() });
            });
        }
        Behavior::Busy | Behavior::Reject(_) => {}
    }
}

async fn status(State(s): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    match s.jobs.lock().unwrap().get(&id) {
        Some(job) => Json(job.borrow().clone()).into_response(),
        None => not_found(),
    }
}

async fn cancel(State(s): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    s.log.lock().unwrap().deletes.push(id.clone());
    s.changed.notify_waiters();
    let Some(job) = s.jobs.lock().unwrap().get(&id).cloned() else {
        return not_found();
    };
    job.send_if_modified(|st| {
        if st.state.is_terminal() {
            return false;
        }
        st.state = JobState::Cancelled;
        st.error = Some(JobError { reason: ErrorReason::Cancelled, message: "cancelled".into() });
        true
    });
    // As the real worker: 202 with the job's status.
    (StatusCode::ACCEPTED, Json(job.borrow().clone())).into_response()
}

/// The event a status corresponds to, as the real worker maps it.
fn event_for(st: &JobStatus) -> JobEvent {
    match (st.state, &st.result, &st.error) {
        (JobState::Succeeded, Some(result), _) => JobEvent::Done { result: result.clone() },
        (JobState::Failed | JobState::Cancelled, _, Some(error)) => JobEvent::Error { error: error.clone() },
        _ => JobEvent::Progress { progress: st.progress, stage: st.stage.clone().unwrap_or_else(|| st.state.as_str().into()) },
    }
}

async fn events(State(s): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    let Some(job) = s.jobs.lock().unwrap().get(&id).cloned() else {
        return not_found();
    };
    let mut rx = job.subscribe();
    let mut kill = s.kill.subscribe();
    // The current state first, then each change until a terminal one.
    let stream = async_stream::stream! {
        loop {
            let (ev, terminal) = {
                let st = rx.borrow_and_update();
                (event_for(&st), st.state.is_terminal())
            };
            yield Ok::<_, std::io::Error>(Event::default().event(ev.sse_name()).json_data(&ev).unwrap());
            if terminal {
                break;
            }
            let killed = tokio::select! {
                changed = rx.changed() => if changed.is_err() { break } else { false },
                _ = async { let _ = kill.wait_for(|k| *k).await; } => true,
            };
            if killed {
                // A dying worker breaks its streams: an error aborts the body unfinished.
                yield Err(std::io::Error::other("killed"));
                break;
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
