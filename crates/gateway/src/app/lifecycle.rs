//! Building the stack, serving it, and stopping it within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use purrify_inference::client::{Fleet, FleetConfig};
use purrify_inference::storage::{S3Options, Storage};
use purrify_store::Db;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::embedded::start_embedded_worker;
use super::{AppState, router};
use crate::config::Config;
use crate::domain::assistant::{AssistantService, AssistantSettings};
use crate::domain::audit::AuditLog;
use crate::domain::callbacks::{CallbackService, CallbackSettings};
use crate::domain::credits::CreditService;
use crate::domain::live::{LiveHub, LiveSettings};
use crate::domain::logs::{LogService, LogSettings};
use crate::domain::quotas::{Limits, QuotaService, QuotaSettings};
use crate::domain::recharge::{RechargeService, RechargeSettings};
use crate::domain::square::{SquareService, SquareSettings};
use crate::domain::tasks::{BackendChoice, TaskService, TaskSettings};
use crate::domain::uploads::{UploadService, UploadSettings};
use crate::domain::works::{WorkService, WorkSettings};
use crate::http::middleware::rate_limit::RateLimiter;
use crate::metrics::Metrics;

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
        // The square's last plays, before the flusher is aborted with the other loops.
        let _ = tokio::time::timeout(grace, self.state.square.flush_now()).await;
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
    let s3 = S3Options {
        endpoint: config.s3_endpoint.clone(),
        region: config.s3_region.clone(),
        allow_http: config.s3_allow_http,
        ..S3Options::default()
    };
    let storage = Arc::new(Storage::new(&config.storage_root(), s3)?);
    let metrics = Arc::new(Metrics::new());
    let fleet = Fleet::new(FleetConfig::default()).map_err(|e| anyhow::anyhow!("fleet: {e}"))?;
    let url = config.database_url();
    let db = Db::connect(&url).await.map_err(|e| anyhow::anyhow!("database {}: {e}", redact(&url)))?;
    let accounts = super::accounts::start(&config, db.clone()).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (audit, audit_writer) = AuditLog::start(db.clone(), metrics.clone(), stop_rx.clone());
    let accounts = accounts.with_audit(audit.clone());
    // In Kubernetes mode the operator's workers do the work.
    let embedded_worker = match config.backend {
        crate::config::Backend::Standalone => start_embedded_worker(&config, &storage, stop_rx.clone()).await?,
        crate::config::Backend::Kubernetes => None,
    };
    let choice = match config.backend {
        crate::config::Backend::Standalone => BackendChoice::Standalone,
        crate::config::Backend::Kubernetes => {
            BackendChoice::Kubernetes { namespace: config.namespace.clone(), operator_url: config.operator_url.clone() }
        }
    };
    let settings = TaskSettings {
        deadline: Duration::from_secs(config.task_deadline_seconds),
        max_attempts: config.max_attempts,
        probe_interval: Duration::from_secs(config.probe_interval_seconds),
        allow_private_workers: config.allow_private_workers,
    };
    let embedded_url = embedded_worker.map(|a| format!("http://{a}"));
    let credits = CreditService::new(db.clone());
    let recharge = RechargeService::new(db.clone(), RechargeSettings::default());
    let payments = super::payments::service(&config, db.clone())?.with_audit(audit.clone());
    let q = &config.quotas;
    let quotas = QuotaService::new(
        db.clone(),
        QuotaSettings {
            free: Limits {
                images_per_day: q.free_images_per_day,
                videos_per_day: q.free_videos_per_day,
                api_calls_per_hour: q.free_api_calls_per_hour,
            },
            vip: Limits {
                images_per_day: q.vip_images_per_day,
                videos_per_day: q.vip_videos_per_day,
                api_calls_per_hour: q.vip_api_calls_per_hour,
            },
        },
    );
    let tasks =
        TaskService::start(choice, settings, db, storage.clone(), fleet, metrics.clone(), embedded_url, credits.clone(), stop_rx.clone())
            .await?;
    let settler = crate::domain::credits::spawn_settler(credits.clone(), tasks.watch_all(), stop_rx.clone());
    let image_limits = purrify_imaging::Limits { max_pixels: config.max_pixels, ..Default::default() };
    let works = WorkService::new(tasks.db().clone(), storage.clone(), WorkSettings { image_limits, ..WorkSettings::default() });
    let recorder = crate::domain::works::spawn_recorder(works.clone(), tasks.watch_all(), stop_rx.clone());
    let (providers, generation, runner) =
        super::generation::start(&config, &tasks, &quotas, &metrics, image_limits, stop_rx.clone()).await?;
    let assistant = AssistantService::new(tasks.db().clone(), Arc::new(providers.clone()), AssistantSettings::default());
    let square = SquareService::new(tasks.db().clone(), SquareSettings::default());
    let square_flusher = square.spawn_flusher(stop_rx.clone());
    let log_settings = LogSettings { retention: Duration::from_secs(config.log_retention_days * 86_400) };
    let (logs, log_loops) = LogService::start(tasks.db().clone(), metrics.clone(), log_settings, tasks.watch_all(), stop_rx.clone());
    let uploads = UploadService::new(
        tasks.db().clone(),
        storage.clone(),
        UploadSettings {
            quota_bytes: config.upload_quota_bytes,
            max_bytes: config.max_upload_bytes,
            limits: purrify_imaging::Limits { max_pixels: config.max_pixels, ..Default::default() },
            thumbnail_side: UploadSettings::THUMBNAIL_SIDE,
        },
    );
    let live = LiveHub::new(LiveSettings {
        ping_interval: Duration::from_millis(config.ws_ping_interval_ms),
        auth_timeout: Duration::from_millis(config.ws_auth_timeout_ms),
        ..LiveSettings::default()
    });
    let live_feed = live.spawn_feed(tasks.watch_all(), stop_rx.clone());
    let callbacks = match &config.callback_secret {
        Some(secret) => {
            let service = CallbackService::new(
                tasks.db().clone(),
                CallbackSettings {
                    secret: secret.clone().into_bytes(),
                    max_attempts: config.callback_max_attempts,
                    retry_base: Duration::from_millis(config.callback_retry_base_ms),
                    timeout: Duration::from_secs(config.callback_timeout_seconds),
                    allow_private: config.allow_private_workers,
                },
            )?;
            Some(service.spawn(tasks.watch_all(), stop_rx.clone()))
        }
        None => None,
    };

    let postcards = crate::domain::postcards::PostcardService::new(tasks.clone(), uploads.clone(), generation.clone());
    let state = AppState {
        draining: CancellationToken::new(),
        storage,
        metrics,
        limiter: Arc::new(RateLimiter::new(config.rate_limit, config.rate_burst)),
        upload_limiter: Arc::new(RateLimiter::new(config.uploads_per_minute / 60.0, config.uploads_per_minute.max(1.0))),
        swagger_ui_dir: config.swagger_ui_dir.clone().unwrap_or_else(crate::http::routes::docs::default_assets_dir),
        tasks,
        accounts,
        credits,
        recharge,
        payments,
        quotas,
        logs,
        audit,
        uploads,
        postcards,
        live,
        works,
        square,
        providers,
        assistant,
        generation,
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
                        state.accounts.housekeeping().await;
                        state.recharge.sweep();
                        state.quotas.housekeeping().await;
                        state.logs.housekeeping().await;
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let mut background = vec![sweeper, settler, live_feed, recorder, square_flusher, runner];
    background.extend(state.payments.spawn_reconciler(stop_rx.clone()));
    background.extend(callbacks);
    background.push(audit_writer);
    background.extend(log_loops);
    Ok(Stack { state, embedded_worker, stop_tx, background })
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

/// The URL with its password masked, for error messages and logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_masked() {
        assert_eq!(super::redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}
