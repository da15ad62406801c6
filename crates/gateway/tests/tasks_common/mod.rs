//! Shared support of the `tasks_*` tests: throwaway SQLite and PostgreSQL databases, and a
//! scriptable fake inference worker speaking the real worker protocol over real HTTP.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use purrify_gateway::tasks::{Db, DbKind};
use purrify_inference::client::{ClientConfig, Fleet, FleetConfig, WorkerSpec};
use purrify_inference::protocol::{
    ErrorReason, FaceRestoration, JobAccepted, JobError, JobRequest, JobResult, JobState,
    JobStatus, WorkerErrorBody, WorkerInfo,
};
use sqlx::{Connection, Executor};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

pub const PG_ENV: &str = "PURRIFY_TEST_POSTGRES_URL";

/// Runs one async scenario `fn name(TestDb)` against SQLite and against PostgreSQL, as
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::tasks_common::TestDb::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::tasks_common::TestDb::postgres().await).await;
            }
        }
    )*};
}

/// A database that exists for one test: a temp-file SQLite database, or a PostgreSQL
/// database created through the admin URL and dropped (forcibly) when this is dropped.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        // A directory that does not exist yet: connect must create it and the file.
        let path = dir.path().join("nested").join("gateway.db");
        let url = format!("sqlite://{}", path.display());
        let db = Db::connect(&url).await.expect("sqlite database opens");
        assert_eq!(db.kind(), DbKind::Sqlite);
        TestDb {
            db,
            url,
            _dir: Some(dir),
            pg: None,
        }
    }

    pub async fn postgres() -> TestDb {
        let admin = std::env::var(PG_ENV).unwrap_or_default();
        assert!(
            !admin.is_empty(),
            "{PG_ENV} is not set: run the tests with `make test`, or export \
             {PG_ENV}=\"$(tools/postgres/start.sh)\" (PostgreSQL variants never skip)"
        );
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at {PG_ENV} (run tools/postgres/start.sh): {e}")
            });
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("CREATE DATABASE (the role needs CREATEDB)");
        conn.close().await.ok();
        let url = with_database(&admin, &name);
        let db = Db::connect(&url).await.expect("postgres database opens");
        assert_eq!(db.kind(), DbKind::Postgres);
        TestDb {
            db,
            url,
            _dir: None,
            pg: Some((admin, name)),
        }
    }

    /// A second, independent connection pool on the same database (a restarted gateway).
    pub async fn reopen(&self) -> Db {
        Db::connect(&self.url).await.expect("database reopens")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee (and during panics): use a thread of its
        // own with a small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("PostgreSQL URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// Polls `check` until it returns `Some`. The bound only keeps a broken test from hanging;
/// nothing asserts on timing.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fleet with short client timeouts, so lost workers are noticed quickly.
pub fn test_fleet() -> Fleet {
    Fleet::new(FleetConfig {
        client: ClientConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            event_idle_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(50),
            max_poll_failures: 2,
        },
        probe_timeout: Duration::from_secs(2),
        ..FleetConfig::default()
    })
    .unwrap()
}

/// Adds and probes workers so they can be picked at once.
pub async fn add_workers(fleet: &Fleet, urls: &[&str]) {
    for url in urls {
        fleet.upsert(WorkerSpec::new(*url)).unwrap();
        assert_eq!(fleet.probe_worker(url).await, Some(true), "{url} is ready");
    }
}

pub fn result_for(req: &JobRequest) -> JobResult {
    JobResult {
        output_uri: req.output_uri.clone(),
        content_type: "image/jpeg".into(),
        width: 64,
        height: 48,
        bytes: 1234,
        faces: 0,
        face_restoration: FaceRestoration::Disabled,
        model: "fake".into(),
        elapsed_ms: 5,
    }
}

/// What the fake does with a job it has not seen before.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Progress 0.5, then done.
    Succeed,
    /// Progress 0.5, then done once [`FakeWorker::release`] lets it.
    Hold,
    /// Progress 0.5, then this error.
    Fail(ErrorReason, &'static str),
    /// Answer the submit with 429 (Retry-After: 0); the job is not created.
    Busy,
}

#[derive(Default)]
struct Log {
    submits: Vec<String>,
    started: Vec<String>,
    deletes: Vec<String>,
    request_ids: Vec<Option<String>>,
}

struct FakeState {
    capacity: u32,
    script: Mutex<VecDeque<Behavior>>,
    default: Mutex<Behavior>,
    jobs: Mutex<HashMap<String, watch::Sender<JobStatus>>>,
    log: Mutex<Log>,
    changed: Notify,
    gate: Semaphore,
    killed: AtomicBool,
    kill: tokio_util::sync::CancellationToken,
}

/// A worker speaking the protocol of DESIGN section 4, scripted per job.
pub struct FakeWorker {
    pub url: String,
    state: Arc<FakeState>,
    server: JoinHandle<()>,
}

impl FakeWorker {
    pub async fn start(capacity: u32, default: Behavior) -> FakeWorker {
        let state = Arc::new(FakeState {
            capacity,
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            jobs: Mutex::new(HashMap::new()),
            log: Mutex::new(Log::default()),
            changed: Notify::new(),
            gate: Semaphore::new(0),
            killed: AtomicBool::new(false),
            kill: tokio_util::sync::CancellationToken::new(),
        });
        let app = Router::new()
            .route("/v1/jobs", post(submit))
            .route("/v1/jobs/{id}", get(status).delete(cancel))
            .route("/v1/jobs/{id}/events", get(events))
            .route("/v1/info", get(info))
            .route("/healthz", get(healthz))
            .route("/readyz", get(healthz))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeWorker { url, state, server }
    }

    /// Behaviors for the next new jobs, in order; then the default.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.state.script.lock().unwrap().extend(behaviors);
    }

    /// Lets `n` held jobs finish.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Every `POST /v1/jobs` id, in order (including resubmissions and 429s).
    pub fn submits(&self) -> Vec<String> {
        self.state.log.lock().unwrap().submits.clone()
    }

    /// Ids of the jobs actually created (run), in order.
    pub fn started(&self) -> Vec<String> {
        self.state.log.lock().unwrap().started.clone()
    }

    pub fn deletes(&self) -> Vec<String> {
        self.state.log.lock().unwrap().deletes.clone()
    }

    /// `X-Request-ID` of every submit.
    pub fn request_ids(&self) -> Vec<Option<String>> {
        self.state.log.lock().unwrap().request_ids.clone()
    }

    pub async fn wait_started(&self, n: usize) {
        loop {
            let notified = self.state.changed.notified();
            if self.started().len() >= n {
                return;
            }
            tokio::time::timeout(Duration::from_secs(90), notified)
                .await
                .unwrap_or_else(|_| panic!("worker {} never started {n} jobs", self.url));
        }
    }

    /// Dies: stops listening, breaks open event streams and answers nothing useful on
    /// connections still pooled by clients.
    pub fn kill(&self) {
        self.state.killed.store(true, Ordering::SeqCst);
        self.state.kill.cancel();
        self.server.abort();
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn dead() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "dead").into_response()
}

fn worker_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(WorkerErrorBody {
            error: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

async fn healthz(State(s): State<Arc<FakeState>>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    "ok".into_response()
}

async fn info(State(s): State<Arc<FakeState>>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    Json(WorkerInfo {
        version: "fake".into(),
        models: vec![],
        execution_provider: "cpu".into(),
        requested_execution_provider: "cpu".into(),
        gpu: None,
        capacity: s.capacity,
        in_flight: 0,
        ready: true,
    })
    .into_response()
}

async fn submit(
    State(s): State<Arc<FakeState>>,
    headers: axum::http::HeaderMap,
    Json(req): Json<JobRequest>,
) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    {
        let mut log = s.log.lock().unwrap();
        log.submits.push(req.id.clone());
        log.request_ids.push(
            headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
    }
    s.changed.notify_waiters();
    if let Some(job) = s.jobs.lock().unwrap().get(&req.id) {
        let state = job.borrow().state;
        return (
            StatusCode::ACCEPTED,
            Json(JobAccepted {
                id: req.id,
                state,
                existing: true,
            }),
        )
            .into_response();
    }
    let behavior = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| s.default.lock().unwrap().clone());
    if matches!(behavior, Behavior::Busy) {
        let mut r = worker_error(
            StatusCode::TOO_MANY_REQUESTS,
            "full",
            "worker is at capacity",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        return r;
    }
    let initial = JobStatus {
        id: req.id.clone(),
        state: JobState::Running,
        progress: 0.0,
        stage: Some("decode".into()),
        result: None,
        error: None,
    };
    let tx = watch::Sender::new(initial);
    s.jobs.lock().unwrap().insert(req.id.clone(), tx.clone());
    s.log.lock().unwrap().started.push(req.id.clone());
    s.changed.notify_waiters();
    let state = s.clone();
    let id = req.id.clone();
    tokio::spawn(async move { run_job(state, tx, req, behavior).await });
    (
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            id,
            state: JobState::Running,
            existing: false,
        }),
    )
        .into_response()
}

async fn run_job(
    s: Arc<FakeState>,
    tx: watch::Sender<JobStatus>,
    req: JobRequest,
    behavior: Behavior,
) {
    let is_cancelled = |tx: &watch::Sender<JobStatus>| tx.borrow().state == JobState::Cancelled;
    tokio::time::sleep(Duration::from_millis(10)).await;
    if is_cancelled(&tx) {
        return;
    }
    tx.send_modify(|st| {
        st.progress = 0.5;
        st.stage = Some("tiles".into());
    });
    if matches!(behavior, Behavior::Hold) {
        let mut cancelled = tx.subscribe();
        tokio::select! {
            permit = s.gate.acquire() => permit.unwrap().forget(),
            _ = cancelled.wait_for(|st| st.state == JobState::Cancelled) => return,
        }
    }
    if is_cancelled(&tx) {
        return;
    }
    tx.send_modify(|st| match &behavior {
        Behavior::Fail(reason, message) => {
            st.state = JobState::Failed;
            st.error = Some(JobError {
                reason: *reason,
                message: (*message).into(),
            });
        }
        _ => {
            st.state = JobState::Succeeded;
            st.progress = 1.0;
            st.stage = Some("done".into());
            st.result = Some(result_for(&req));
        }
    });
}

async fn status(State(s): State<Arc<FakeState>>, Path(id): Path<String>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    match s.jobs.lock().unwrap().get(&id) {
        Some(tx) => Json(tx.borrow().clone()).into_response(),
        None => worker_error(StatusCode::NOT_FOUND, "not_found", "no such job"),
    }
}

async fn cancel(State(s): State<Arc<FakeState>>, Path(id): Path<String>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    s.log.lock().unwrap().deletes.push(id.clone());
    s.changed.notify_waiters();
    let job = s.jobs.lock().unwrap().get(&id).cloned();
    match job {
        Some(tx) => {
            tx.send_if_modified(|st| {
                if matches!(st.state, JobState::Queued | JobState::Running) {
                    st.state = JobState::Cancelled;
                    st.error = Some(JobError {
                        reason: ErrorReason::Cancelled,
                        message: "job cancelled".into(),
                    });
                    true
                } else {
                    false
                }
            });
            (StatusCode::ACCEPTED, Json(tx.borrow().clone())).into_response()
        }
        None => worker_error(StatusCode::NOT_FOUND, "not_found", "no such job"),
    }
}

async fn events(State(s): State<Arc<FakeState>>, Path(id): Path<String>) -> Response {
    if s.killed.load(Ordering::SeqCst) {
        return dead();
    }
    let Some(tx) = s.jobs.lock().unwrap().get(&id).cloned() else {
        return worker_error(StatusCode::NOT_FOUND, "not_found", "no such job");
    };
    let rx = tx.subscribe();
    let kill = s.kill.clone();
    // Current state first, then each change; a kill breaks the stream mid-way like a dead
    // process would.
    let stream = futures::stream::unfold(
        (rx, kill, true, false),
        |(mut rx, kill, first, ended)| async move {
            if ended {
                return None;
            }
            if !first {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return None; },
                    () = kill.cancelled() => {
                        return Some((Err(std::io::Error::other("killed")), (rx, kill, false, true)));
                    }
                }
            }
            let st = rx.borrow_and_update().clone();
            let ev = purrify_inference::server::event_for(&st);
            let terminal = st.state.is_terminal();
            let event = Event::default()
                .event(ev.sse_name())
                .json_data(&ev)
                .unwrap();
            Some((Ok::<_, std::io::Error>(event), (rx, kill, false, terminal)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
