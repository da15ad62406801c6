//! A fake inference worker speaking the worker protocol (DESIGN section 4) over real HTTP,
//! scripted per job. Shared by the task controller tests and the dispatch bench
//! (`examples/dispatch_bench.rs` includes this file by path).

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use purrify_inference::protocol::{
    ErrorReason, FaceRestoration, JobAccepted, JobError, JobEvent, JobRequest, JobResult, JobState, JobStatus,
    WorkerErrorBody, WorkerInfo,
};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

/// What the fake does with a job id it has not seen.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Done at once, no progress events (the bench).
    Instant,
    /// Progress 0.5, then done.
    Succeed,
    /// Progress 0.5, then done once [`FakeWorker::release`] lets it.
    Hold,
    /// Progress 0.5, then this error.
    Fail(ErrorReason, &'static str),
    /// 429 with `Retry-After: 0`; no job is created.
    Busy,
    /// 422: the request is refused.
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
}

pub struct FakeWorker {
    pub url: String,
    state: Arc<Fake>,
    server: JoinHandle<()>,
}

impl FakeWorker {
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

    /// Lets `n` held jobs finish.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Every `POST /v1/jobs` id, resubmissions and 429s included.
    pub fn submits(&self) -> Vec<String> {
        self.state.log.lock().unwrap().submits.clone()
    }

    /// Ids of the jobs actually created (run).
    pub fn started(&self) -> Vec<String> {
        self.state.log.lock().unwrap().started.iter().map(|(id, _)| id.clone()).collect()
    }

    /// When each job was created, by id.
    pub fn started_at(&self) -> Vec<(String, Instant)> {
        self.state.log.lock().unwrap().started.clone()
    }

    pub fn deletes(&self) -> Vec<String> {
        self.state.log.lock().unwrap().deletes.clone()
    }

    pub fn request_ids(&self) -> Vec<Option<String>> {
        self.state.log.lock().unwrap().request_ids.clone()
    }

    pub async fn wait_started(&self, n: usize) {
        let give_up = Instant::now() + Duration::from_secs(60);
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

    /// Dies: stops listening, ends open event streams, answers 503 on pooled connections.
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
    let in_flight =
        s.jobs.lock().unwrap().values().filter(|j| !j.borrow().state.is_terminal()).count() as u32;
    Json(WorkerInfo {
        version: "fake".into(),
        models: vec![],
        execution_provider: "cpu".into(),
        requested_execution_provider: "cpu".into(),
        gpu: None,
        capacity: s.capacity,
        in_flight,
        ready: true,
    })
    .into_response()
}

fn status_of(id: &str, state: JobState, progress: f32) -> JobStatus {
    JobStatus { id: id.to_owned(), state, progress, stage: Some("tiles".into()), result: None, error: None }
}

async fn submit(State(s): State<Arc<Fake>>, headers: axum::http::HeaderMap, Json(req): Json<JobRequest>) -> Response {
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
            let mut r = worker_error(StatusCode::TOO_MANY_REQUESTS, "busy", "worker is full");
            r.headers_mut().insert(header::RETRY_AFTER, "0".parse().unwrap());
            return r;
        }
        Behavior::Reject(message) => return worker_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_params", message),
        _ => {}
    }
    let (tx, _) = watch::channel(status_of(&req.id, JobState::Queued, 0.0));
    s.jobs.lock().unwrap().insert(req.id.clone(), tx.clone());
    s.log.lock().unwrap().started.push((req.id.clone(), Instant::now()));
    s.changed.notify_waiters();
    let fake = s.clone();
    let id = req.id.clone();
    let job_req = req.clone();
    tokio::spawn(async move {
        let req = job_req;
        let done = |tx: &watch::Sender<JobStatus>| {
            tx.send_if_modified(|st| {
                if st.state.is_terminal() {
                    return false;
                }
                st.state = JobState::Succeeded;
                st.progress = 1.0;
                st.stage = Some("done".into());
                st.result = Some(result_for(&req));
                true
            });
        };
        let half = |tx: &watch::Sender<JobStatus>| {
            tx.send_if_modified(|st| {
                if st.state.is_terminal() {
                    return false;
                }
                st.state = JobState::Running;
                st.progress = 0.5;
                true
            });
        };
        match behavior {
            Behavior::Instant => done(&tx),
            Behavior::Succeed => {
                half(&tx);
                tokio::time::sleep(Duration::from_millis(20)).await;
                done(&tx);
            }
            Behavior::Hold => {
                half(&tx);
                if let Ok(p) = fake.gate.acquire().await {
                    p.forget();
                }
                done(&tx);
            }
            Behavior::Fail(reason, message) => {
                half(&tx);
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send_if_modified(|st| {
                    if st.state.is_terminal() {
                        return false;
                    }
                    st.state = JobState::Failed;
                    st.error = Some(JobError { reason, message: message.into() });
                    true
                });
            }
            Behavior::Busy | Behavior::Reject(_) => {}
        }
    });
    (StatusCode::ACCEPTED, Json(JobAccepted { id, state: JobState::Queued, existing: false })).into_response()
}

async fn status(State(s): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    match s.jobs.lock().unwrap().get(&id) {
        Some(job) => Json(job.borrow().clone()).into_response(),
        None => worker_error(StatusCode::NOT_FOUND, "not_found", "no such job"),
    }
}

async fn cancel(State(s): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    s.log.lock().unwrap().deletes.push(id.clone());
    s.changed.notify_waiters();
    let Some(job) = s.jobs.lock().unwrap().get(&id).cloned() else {
        return worker_error(StatusCode::NOT_FOUND, "not_found", "no such job");
    };
    job.send_if_modified(|st| {
        if st.state.is_terminal() {
            return false;
        }
        st.state = JobState::Cancelled;
        st.error = Some(JobError { reason: ErrorReason::Cancelled, message: "cancelled".into() });
        true
    });
    StatusCode::NO_CONTENT.into_response()
}

fn event_of(st: &JobStatus) -> JobEvent {
    match st.state {
        JobState::Succeeded => JobEvent::Done { result: st.result.clone().expect("succeeded jobs have a result") },
        JobState::Failed | JobState::Cancelled => JobEvent::Error {
            error: st.error.clone().unwrap_or(JobError { reason: ErrorReason::Internal, message: "failed".into() }),
        },
        _ => JobEvent::Progress { progress: st.progress, stage: st.stage.clone().unwrap_or_default() },
    }
}

async fn events(State(s): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    let Some(job) = s.jobs.lock().unwrap().get(&id).cloned() else {
        return worker_error(StatusCode::NOT_FOUND, "not_found", "no such job");
    };
    let mut rx = job.subscribe();
    let mut kill = s.kill.subscribe();
    let stream = async_stream::stream! {
        loop {
            let st = rx.borrow_and_update().clone();
            let ev = event_of(&st);
            yield Ok::<_, Infallible>(Event::default().event(ev.sse_name()).json_data(&ev).unwrap());
            if st.state.is_terminal() {
                break;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                // A dying worker drops its streams without a terminal event.
                _ = kill.wait_for(|k| *k) => break,
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
