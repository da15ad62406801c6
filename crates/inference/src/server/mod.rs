//! The inference worker's HTTP server (DESIGN section 4).
//!
//! It listens at once (so `/healthz` answers while models load), loads and warms the engine
//! in the background, and reports ready only after that. On shutdown it stops admitting and
//! lets running jobs finish within a grace period; when that runs out it cancels them (they
//! stop at the next tile or face and end as `cancelled`, which dispatchers retry elsewhere),
//! waits at most [`CANCEL_WAIT`] for them to say so, and returns. A tile already inside the
//! model cannot be interrupted: the binary shuts its runtime down with a timeout rather than
//! wait for it.

pub mod gpu;
pub mod host;
pub mod jobs;
pub mod metrics;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::pipeline::{Engine, EngineConfig};
use crate::protocol::{
    GpuInfo, JobEvent, JobRequest, JobState, JobStatus, ModelInfo, ReportedJobResult, TileAdaptation, WorkerErrorBody, WorkerInfo,
};
use crate::storage::Storage;
use jobs::{Jobs, JobsConfig, SubmitError};
use metrics::{Metrics, ModelLabels};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// After the grace period, how long cancelled jobs get to reach their next cancellation
/// point and report `cancelled` before the server stops anyway.
pub const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Where the engine comes from: loaded by the server (normal) or shared (tests, embedding).
pub enum EngineSource {
    Load(Box<EngineConfig>),
    Ready(Arc<Engine>),
}

pub struct WorkerConfig {
    pub addr: SocketAddr,
    pub storage: Arc<Storage>,
    pub jobs: JobsConfig,
    pub engine: EngineSource,
    /// How long running jobs may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
}

#[derive(Clone)]
struct AppState {
    jobs: Arc<Jobs>,
    metrics: Arc<Metrics>,
    gpu: Arc<gpu::GpuProbe>,
    host: Arc<host::HostProbe>,
}

/// A started worker.
pub struct Worker {
    pub addr: SocketAddr,
    pub jobs: Arc<Jobs>,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(WorkerErrorBody { error: code.to_string(), message: message.into() })).into_response()
}

/// Binds `config.addr` and serves until `shutdown` resolves (then drains) or the engine
/// fails to load (then returns the error: a worker without models is useless).
pub async fn start(config: WorkerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Worker> {
    let listener = TcpListener::bind(config.addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.addr))?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new());
    let jobs = Jobs::new(config.jobs, config.storage, metrics.clone());
    let state = AppState {
        jobs: jobs.clone(),
        metrics: metrics.clone(),
        gpu: Arc::new(gpu::GpuProbe::default()),
        host: Arc::new(host::HostProbe::default()),
    };

    let (load_failed_tx, load_failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    match config.engine {
        EngineSource::Ready(engine) => {
            record_models(&metrics, &engine);
            jobs.set_engine(engine);
        }
        EngineSource::Load(engine_config) => {
            let jobs = jobs.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let loaded = tokio::task::spawn_blocking(move || {
                    let engine = Engine::load(*engine_config)?;
                    engine.warm_up()?;
                    Ok::<_, crate::pipeline::EngineError>(engine)
                })
                .await;
                match loaded {
                    Ok(Ok(engine)) => {
                        record_models(&metrics, &engine);
                        tracing::info!(provider = engine.active_provider(), "models loaded and warmed up; ready");
                        jobs.set_engine(Arc::new(engine));
                    }
                    Ok(Err(e)) => {
                        let _ = load_failed_tx.send(anyhow::anyhow!("loading models failed: {e}"));
                    }
                    Err(e) => {
                        let _ = load_failed_tx.send(anyhow::anyhow!("loading models panicked: {e}"));
                    }
                }
            });
        }
    }

    let gc_jobs = jobs.clone();
    let gc = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            gc_jobs.collect_garbage();
        }
    });

    let app = router(state);
    let drain_jobs = jobs.clone();
    let grace = config.shutdown_grace;
    // TCP_NODELAY: with Nagle's algorithm a small response, or one event of a stream, waits
    // for the peer's delayed ACK (about 40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| drop(tcp.set_nodelay(true)));
    let handle = tokio::spawn(async move {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        let serve = tokio::spawn(async move { serve.await });
        let result = tokio::select! {
            () = shutdown => {
                tracing::info!(in_flight = drain_jobs.in_flight(), "shutting down: no new jobs, draining");
                drain_jobs.stop_accepting();
                if tokio::time::timeout(grace, drain_jobs.drained()).await.is_err() {
                    let cancelled = drain_jobs.cancel_all();
                    tracing::warn!(cancelled, "grace period over; cancelling unfinished jobs");
                    if tokio::time::timeout(CANCEL_WAIT, drain_jobs.drained()).await.is_err() {
                        tracing::warn!(in_flight = drain_jobs.in_flight(), "jobs still inside a model run; exiting without them");
                    }
                }
                Ok(())
            }
            Ok(e) = load_failed_rx => Err(e),
        };
        let _ = stop_tx.send(());
        gc.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
        result
    });
    Ok(Worker { addr, jobs, handle })
}

fn record_models(metrics: &Metrics, engine: &Engine) {
    for m in engine.models() {
        metrics.model_load_seconds.get_or_create(&ModelLabels { model: m.name, provider: m.provider }).set(m.load_time.as_secs_f64());
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/jobs", post(submit))
        .route("/v1/jobs/{id}", get(status).delete(cancel))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/info", get(info))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let rid = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = rid)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn submit(State(s): State<AppState>, headers: HeaderMap, body: Result<Json<JobRequest>, JsonRejection>) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", e.body_text()),
    };
    let request_id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_string);
    match s.jobs.submit(req, request_id) {
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(SubmitError::Full { capacity, retry_after }) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "full", format!("worker is at capacity ({capacity} jobs)"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            r
        }
        Err(e @ SubmitError::Conflict(_)) => error(StatusCode::CONFLICT, "conflict", e.to_string()),
        Err(e @ SubmitError::Invalid(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", e.to_string()),
        Err(e @ (SubmitError::NotReady | SubmitError::ShuttingDown)) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string());
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(5u32));
            r
        }
    }
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", format!("no job {id}"))
}

/// `value` (a status or an event) as sent: a `result` in it becomes a [`ReportedJobResult`]
/// with the job's tile report. `JobStatus` and `JobEvent` keep a plain `JobResult` because
/// other crates build them field by field; readers of those types ignore the extra key.
pub fn with_tile_report<T: serde::Serialize>(value: &T, adaptation: Option<TileAdaptation>) -> serde_json::Value {
    let mut v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    if let (Some(a), Some(slot)) = (adaptation, v.get_mut("result").filter(|r| r.is_object()))
        && let Ok(result) = serde_json::from_value(slot.take())
    {
        *slot = serde_json::to_value(ReportedJobResult { result, tile_adaptation: Some(a) }).unwrap_or(serde_json::Value::Null);
    }
    v
}

async fn status(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.jobs.status(&id) {
        Some(st) => Json(with_tile_report(&st, s.jobs.tile_adaptation(&id))).into_response(),
        None => not_found(&id),
    }
}

async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.jobs.cancel(&id) {
        Some(st) => (StatusCode::ACCEPTED, Json(with_tile_report(&st, s.jobs.tile_adaptation(&id)))).into_response(),
        None => not_found(&id),
    }
}

/// The event a status corresponds to; terminal statuses end the stream.
pub fn event_for(st: &JobStatus) -> JobEvent {
    match (st.state, &st.result, &st.error) {
        (JobState::Succeeded, Some(result), _) => JobEvent::Done { result: result.clone() },
        (JobState::Failed | JobState::Cancelled, _, Some(error)) => JobEvent::Error { error: error.clone() },
        _ => JobEvent::Progress { progress: st.progress, stage: st.stage.clone().unwrap_or_else(|| st.state.as_str().into()) },
    }
}

fn sse_event(ev: &JobEvent, adaptation: Option<TileAdaptation>) -> Event {
    Event::default()
        .event(ev.sse_name())
        .json_data(with_tile_report(ev, adaptation))
        .unwrap_or_else(|_| Event::default().comment("encode error"))
}

async fn events(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(mut rx) = s.jobs.subscribe(&id) else {
        return not_found(&id);
    };
    let jobs = s.jobs.clone();
    // The current state first, then every change until a terminal state; the watch channel
    // coalesces bursts, so a slow reader gets the latest progress, not a backlog.
    let stream = async_stream::stream! {
        loop {
            let (ev, terminal) = {
                let st = rx.borrow_and_update();
                (event_for(&st), st.state.is_terminal())
            };
            let adaptation = if terminal { jobs.tile_adaptation(&id) } else { None };
            yield Ok::<_, Infallible>(sse_event(&ev, adaptation));
            if terminal || rx.changed().await.is_err() {
                break;
            }
        }
    };
    sse(stream).into_response()
}

fn sse<S: Stream<Item = Result<Event, Infallible>> + Send + 'static>(stream: S) -> impl IntoResponse {
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.jobs.ready() {
        (StatusCode::OK, "ready").into_response()
    } else if s.jobs.engine().is_some() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading models").into_response()
    }
}

async fn info(State(s): State<AppState>) -> Json<WorkerInfo> {
    let engine = s.jobs.engine();
    let models = engine
        .map(|e| {
            e.models()
                .into_iter()
                .map(|m| ModelInfo { name: m.name, kind: m.kind.to_string(), path: m.path.display().to_string() })
                .collect()
        })
        .unwrap_or_default();
    let (active, requested) = match engine {
        Some(e) => (e.active_provider().to_string(), e.config().runtime.provider.as_str().to_string()),
        None => ("loading".to_string(), String::new()),
    };
    let gpus: Vec<GpuInfo> = if active == "cuda" || active == "tensorrt" { s.gpu.read().await } else { Vec::new() };
    Json(WorkerInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        models,
        execution_provider: active,
        requested_execution_provider: requested,
        gpu: gpus.first().cloned(),
        gpus,
        host: s.host.read().await,
        capacity: s.jobs.capacity() as u32,
        in_flight: s.jobs.in_flight() as u32,
        ready: s.jobs.ready(),
    })
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode()).into_response()
}

/// A job whose tiles adapt, end to end through the HTTP API and the metrics.
#[cfg(test)]
#[path = "tile_report_tests.rs"]
mod tile_report_tests;
