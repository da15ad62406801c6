//! The gateway application: state, router, middleware stack, and the standalone stack
//! (database, storage, fleet, dispatcher, optional in-process worker) with graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::middleware::{self, rate_limit::RateLimiter};
use crate::routes;
use purrify_inference::client::{Fleet, FleetConfig};
use purrify_inference::storage::{S3Options, Storage};

pub use crate::service::{NewUpload, PublicStatus, Routing, TaskSnapshot};

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub storage: Arc<Storage>,
    pub fleet: Fleet,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<RateLimiter>,
    pub upload_limiter: Arc<RateLimiter>,
    pub swagger_ui_dir: PathBuf,
    pub tasks: crate::service::TaskService,
    /// The worker health prober (its state is `/webhook/servers`' `health_check_running`).
    pub prober: AbortHandle,
    /// Cancelled when the gateway starts shutting down: long-lived responses (SSE streams,
    /// WebSocket sessions) end on it, or they would hold the shutdown open for ever.
    pub draining: CancellationToken,
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") || origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            middleware::REQUEST_ID,
            HeaderName::from_static("x-webhook-secret"),
        ])
        .expose_headers([middleware::REQUEST_ID, axum::http::header::RETRY_AFTER])
        .max_age(Duration::from_secs(3600))
}

/// The full router with its middleware. Outermost first: request id (so every log line and
/// every response has one), CORS, metrics, rate limit, then the routes.
pub fn router(state: AppState) -> Router {
    let max_upload = state.config.max_upload_bytes;
    Router::new()
        .merge(routes::enhance::router(max_upload))
        .merge(routes::tasks::router())
        .merge(routes::system::router())
        .merge(routes::webhook::router())
        .merge(routes::docs::router())
        .fallback(|| async { crate::error::ApiError::not_found("no such endpoint; see /docs") })
        // After every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::rate_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::record_metrics))
        .layer(cors(&state.config.cors_origins))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}

/// The assembled standalone stack, not yet serving HTTP (tests drive `router(state)` with
/// `oneshot`; `start` serves it).
pub struct Stack {
    pub state: AppState,
    /// The in-process worker's address, when one runs.
    pub embedded_worker: Option<SocketAddr>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
}

impl Stack {
    /// Stops the dispatcher, worker and background loops. Tasks are in the database, so
    /// stopping loses nothing: the next start resumes them.
    pub async fn shutdown(self, grace: Duration) {
        self.state.draining.cancel();
        let _ = self.stop_tx.send(true);
        if tokio::time::timeout(grace, self.state.tasks.stopped()).await.is_err() {
            tracing::warn!("dispatcher did not stop within the grace period");
        }
        for h in self.background {
            h.abort();
        }
    }
}

pub async fn build(config: Config) -> anyhow::Result<Stack> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", config.data_dir.display()))?;
    let s3 = S3Options { endpoint: config.s3_endpoint.clone(), region: config.s3_region.clone(), allow_http: config.s3_allow_http };
    let storage = Arc::new(Storage::new(&config.storage_root(), s3)?);
    let metrics = Arc::new(Metrics::new());
    let fleet = Fleet::new(FleetConfig::default()).map_err(|e| anyhow::anyhow!("fleet: {e}"))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // In Kubernetes mode the operator's workers do the work.
    let embedded_worker = match config.backend {
        crate::config::Backend::Standalone => start_embedded_worker(&config, &storage, stop_rx.clone()).await?,
        crate::config::Backend::Kubernetes => None,
    };
    let tasks = crate::service::TaskService::start(
        config.clone(),
        storage.clone(),
        fleet.clone(),
        metrics.clone(),
        embedded_worker.map(|a| format!("http://{a}")),
        stop_rx.clone(),
    )
    .await?;

    let prober = {
        let mut stop = stop_rx.clone();
        fleet.spawn_prober(Duration::from_secs(config.probe_interval_seconds.max(1)), async move {
            let _ = stop.changed().await;
        })
    };
    let state = AppState {
        prober: prober.abort_handle(),
        draining: CancellationToken::new(),
        storage,
        fleet: fleet.clone(),
        metrics,
        limiter: Arc::new(RateLimiter::new(config.rate_limit, config.rate_burst)),
        upload_limiter: Arc::new(RateLimiter::new(config.uploads_per_minute / 60.0, config.uploads_per_minute.max(1.0))),
        swagger_ui_dir: config.swagger_ui_dir.clone().unwrap_or_else(routes::docs::default_assets_dir),
        tasks,
        config: config.clone(),
    };

    let sweeper = {
        let state = state.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let now = std::time::Instant::now();
                        state.limiter.sweep(now);
                        state.upload_limiter.sweep(now);
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };
    Ok(Stack { state, embedded_worker, stop_tx, background: vec![sweeper, prober] })
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub state: AppState,
    pub handle: JoinHandle<anyhow::Result<()>>,
    /// The in-process worker's address, when one runs.
    pub embedded_worker: Option<SocketAddr>,
}

/// Builds the standalone stack and serves it until `shutdown` resolves; then in-flight
/// requests finish, live streams end, and the stack stops, all within the grace period
/// (`--shutdown-grace`): a request still running when it ends is cut off.
pub async fn start(config: Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<Gateway> {
    let listen = config.listen_addr();
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    // Bind first: a taken port should fail before models load.
    let listener = TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let stack = build(config).await?;
    let state = stack.state.clone();
    let embedded_worker = stack.embedded_worker;
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let draining = state.draining.clone();
    // TCP_NODELAY: with Nagle's algorithm a small response, or one event of a stream, waits
    // for the peer's delayed ACK (about 40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| drop(tcp.set_nodelay(true)));
    let handle = tokio::spawn(async move {
        let signalled_at = Arc::new(std::sync::OnceLock::new());
        let server = axum::serve(listener, app).with_graceful_shutdown({
            let (draining, signalled_at) = (draining.clone(), signalled_at.clone());
            async move {
                shutdown.await;
                let _ = signalled_at.set(tokio::time::Instant::now());
                tracing::info!(grace_seconds = grace.as_secs(), "shutting down: finishing in-flight requests, ending live streams");
                draining.cancel();
            }
        });
        let server = server.into_future();
        tokio::pin!(server);
        let served = tokio::select! {
            served = &mut server => Some(served),
            () = async {
                draining.cancelled().await;
                tokio::time::sleep(grace).await;
            } => None,
        };
        if served.is_none() {
            // Their connection tasks end with the runtime (`run` bounds that too).
            tracing::warn!("requests still running at the end of the grace period are cut off");
        }
        // What is left of the grace period is the stack's.
        let deadline = signalled_at.get().copied().unwrap_or_else(tokio::time::Instant::now) + grace;
        stack.shutdown(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
        tracing::info!("gateway stopped");
        served.unwrap_or(Ok(())).map_err(|e| anyhow::anyhow!("server error: {e}"))
    });
    tracing::info!(%addr, embedded_worker = ?embedded_worker, "gateway listening");
    Ok(Gateway { addr, state, handle, embedded_worker })
}

#[cfg(feature = "embedded-worker")]
async fn start_embedded_worker(
    config: &Config,
    storage: &Arc<Storage>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    use purrify_inference::pipeline::EngineConfig;
    use purrify_inference::protocol::QualityLevel;
    use purrify_inference::runtime::RuntimeConfig;
    use purrify_inference::server::{EngineSource, WorkerConfig, jobs::JobsConfig};

    if !config.embedded_worker {
        return Ok(None);
    }
    let quality_levels = config
        .quality_levels
        .iter()
        .map(|q| q.parse::<QualityLevel>().map_err(|e| anyhow::anyhow!("--quality-levels: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let engine = EngineConfig {
        runtime: RuntimeConfig { intra_threads: config.threads, ..Default::default() },
        quality_levels,
        face_model: config.face_model.clone(),
        limits: purrify_imaging::Limits { max_pixels: config.max_pixels, ..Default::default() },
        ..EngineConfig::default()
    };
    // The in-process worker is reached over loopback HTTP through the same fleet client as
    // remote workers: one dispatch path, one set of failure modes.
    let mut stop = stop;
    let worker = purrify_inference::server::start(
        WorkerConfig {
            addr: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0),
            storage: storage.clone(),
            jobs: JobsConfig {
                capacity: config.worker_capacity.max(1),
                parallel: 1,
                max_input_bytes: config.max_upload_bytes,
                retain: Duration::from_secs(3600),
            },
            engine: EngineSource::Load(Box::new(engine)),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_seconds),
        },
        async move {
            let _ = stop.changed().await;
        },
    )
    .await?;
    let addr = worker.addr;
    tokio::spawn(async move {
        match worker.handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "embedded worker stopped"),
            Err(e) => tracing::error!(error = %e, "embedded worker panicked"),
        }
    });
    Ok(Some(addr))
}

#[cfg(not(feature = "embedded-worker"))]
async fn start_embedded_worker(
    config: &Config,
    _storage: &Arc<Storage>,
    _stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    if config.embedded_worker {
        tracing::warn!("this build has no embedded worker (feature `embedded-worker`); register GPU servers by webhook");
    }
    Ok(None)
}
