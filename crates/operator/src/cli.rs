//! `purrify-operator run`: connects to the cluster (KUBECONFIG or in-cluster), serves
//! `/metrics`, `/healthz`, `/readyz` and the task progress stream, waits to become leader, then
//! runs the GpuPool and EnhanceTask controllers until SIGTERM (exit 0, Lease released) or
//! until leadership is lost (exit non-zero, so Kubernetes restarts the pod as a standby).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::{Args, Parser, Subcommand};
use futures::FutureExt;
use purrify_inference::client::FleetConfig;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::context::Context;
use crate::leader::{self, LeaderConfig, LeaderElector};
use crate::metrics::Metrics;
use crate::pool::{self, PoolConfig, builder::WorkerDefaults};
use crate::registry::Registry;
use crate::task::{self, ProgressHub, TaskConfig};

#[derive(Parser, Debug)]
#[command(name = "purrify-operator", version, about = "Purrify's Kubernetes operator: GpuPool and EnhanceTask controllers")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, env = "PURRIFY_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

pub use purrify_process::LogFormat;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controllers (leader-elected) and the metrics/health/progress HTTP server.
    Run(RunArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch GpuPools and EnhanceTasks in this namespace only; all namespaces when unset.
    #[arg(long, env = "PURRIFY_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease; default: the operator's own (POD_NAMESPACE,
    /// the service account's, or the kubeconfig context's).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    #[arg(long, env = "PURRIFY_LEASE_NAME", default_value = leader::DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// A standby takes over at most this long after the leader stops renewing.
    #[arg(long, env = "PURRIFY_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Leader identity prefix; default: POD_NAME or the host name. A random suffix is added.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// `/metrics`, `/healthz`, `/readyz` (200 only on the leader) and the progress stream.
    #[arg(long, env = "PURRIFY_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// How often pool workers are probed (`/readyz` + `/v1/info`).
    #[arg(long, env = "PURRIFY_PROBE_INTERVAL_SECONDS", default_value_t = 10)]
    pub probe_interval_seconds: u64,
    /// How often a healthy worker's telemetry (in-flight, GPU numbers, heartbeat) is refreshed
    /// in GpuPool status. Health changes are written at once.
    #[arg(long, env = "PURRIFY_STATUS_REFRESH_SECONDS", default_value_t = 60)]
    pub status_refresh_seconds: u64,
    /// ConfigMap whose keys become worker environment (PURRIFY_STORAGE, PURRIFY_S3_ENDPOINT,
    /// ...); empty for none.
    #[arg(long, env = "PURRIFY_WORKER_CONFIG_MAP", default_value = "purrify-worker")]
    pub worker_config_map: String,
    /// Secret whose keys become worker environment (AWS_ACCESS_KEY_ID, ...); empty for none.
    #[arg(long, env = "PURRIFY_WORKER_SECRET", default_value = "purrify-worker")]
    pub worker_secret: String,
    /// Jobs of one task before it fails.
    #[arg(long, env = "PURRIFY_TASK_MAX_ATTEMPTS", default_value_t = 3)]
    pub task_max_attempts: u32,
    /// Seconds finished tasks without `ttlSecondsAfterFinished` are kept.
    #[arg(long, env = "PURRIFY_TASK_DEFAULT_TTL_SECONDS", default_value_t = 3600)]
    pub task_default_ttl_seconds: u64,
}

/// Entry point of the binary.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    purrify_process::init_tracing(cli.log_format, "info,kube=warn,hyper=warn");
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Run(args) => rt.block_on(run_operator(args, purrify_process::shutdown_signal())),
    }
}

/// Runs the operator until `shutdown` completes (`Ok`) or leadership is lost (`Err`).
pub async fn run_operator(args: RunArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("cannot build a Kubernetes client (KUBECONFIG or in-cluster config)")?;
    run_with_client(args, client, shutdown).await
}

/// [`run_operator`] with a given client (tests point it at kubesim).
pub async fn run_with_client(
    args: RunArgs,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let lease_namespace = args.lease_namespace.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| client.default_namespace().to_owned());
    let metrics = Arc::new(Metrics::new());
    let probe_interval = Duration::from_secs(args.probe_interval_seconds.max(1));
    let registry = Arc::new(Registry::new(FleetConfig {
        // A probe must end well before the next round starts.
        probe_timeout: (probe_interval / 2).clamp(Duration::from_millis(500), Duration::from_secs(5)),
        ..FleetConfig::default()
    }));
    let ctx = Arc::new(Context {
        client: client.clone(),
        registry,
        metrics: metrics.clone(),
        namespace: args.namespace.clone().filter(|s| !s.is_empty()),
    });

    let identity = match &args.identity {
        Some(prefix) if !prefix.is_empty() => {
            let generated = leader::default_identity();
            let suffix = generated.rsplit('-').next().unwrap_or_default();
            format!("{prefix}-{suffix}")
        }
        _ => leader::default_identity(),
    };
    let hub = ProgressHub::new();
    let (leading_tx, leading) = watch::channel(false);

    let listener =
        tokio::net::TcpListener::bind(args.metrics_addr).await.with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    info!(addr = %args.metrics_addr, "serving /metrics, /healthz, /readyz and task progress");
    let app = http_router(metrics.clone(), leading.clone(), hub.clone());
    // TCP_NODELAY: with Nagle's algorithm a small response, or one event of a stream, waits
    // for the peer's delayed ACK (about 40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| drop(tcp.set_nodelay(true)));
    let server = tokio::spawn({
        let stop = shutdown.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(stop).await }
    });

    let config =
        LeaderConfig::new(lease_namespace, args.lease_name.clone(), identity.clone(), Duration::from_secs(args.lease_duration_seconds));
    let elector = LeaderElector::new(client, config.clone(), metrics.clone());
    let leadership = tokio::select! {
        l = elector.acquire() => l,
        () = shutdown.clone() => {
            info!("stopped before becoming leader");
            let _ = server.await;
            return Ok(());
        }
    };
    let _ = leading_tx.send(true);

    // Both controllers stop on SIGTERM, on lost leadership, or when the other one ends: a
    // leader running half the operator would hold the Lease and do only half the work.
    let lost = leadership.lost().shared();
    let (ended_tx, ended) = watch::channel(false);
    let stop = {
        let (s, l, mut ended) = (shutdown.clone(), lost.clone(), ended);
        async move {
            tokio::select! {
                () = s => {},
                () = l => {},
                _ = async { let _ = ended.wait_for(|e| *e).await; } => {},
            }
        }
        .shared()
    };
    let pool_config = PoolConfig {
        probe_interval,
        telemetry_refresh: Duration::from_secs(args.status_refresh_seconds.max(1)),
        worker_defaults: WorkerDefaults {
            env_config_map: Some(args.worker_config_map.clone()).filter(|s| !s.is_empty()),
            env_secret: Some(args.worker_secret.clone()).filter(|s| !s.is_empty()),
        },
        instance: Some(identity.clone()),
        ..PoolConfig::default()
    };
    let task_config = TaskConfig {
        max_attempts: args.task_max_attempts.max(1),
        default_ttl: Duration::from_secs(args.task_default_ttl_seconds),
        instance: Some(identity.clone()),
        ..TaskConfig::default()
    };
    let controllers = async {
        let (pools, tasks) = tokio::join!(
            async {
                let r = pool::run(ctx.clone(), pool_config, stop.clone()).await;
                ended_tx.send_replace(true);
                r
            },
            async {
                let r = task::run_with(ctx.clone(), task_config, hub.clone(), stop.clone()).await;
                ended_tx.send_replace(true);
                r
            },
        );
        pools.context("GpuPool controller")?;
        tasks.context("EnhanceTask controller")
    };
    tokio::pin!(controllers);
    let result = tokio::select! {
        r = &mut controllers => r,
        () = lost.clone() => {
            // Another replica may take over once the lease expires: give the controllers
            // what is left of it to stop, then go regardless.
            let grace = config.lease_duration.saturating_sub(config.renew_deadline);
            if tokio::time::timeout(grace, &mut controllers).await.is_err() {
                warn!("controllers did not stop in time after losing leadership");
            }
            Err(anyhow::anyhow!("lost leadership of lease {}/{}", config.namespace, config.name))
        }
    };
    let _ = leading_tx.send(false);
    let result = if leadership.is_leader() {
        leadership.release().await;
        result
    } else {
        // The controllers may have ended on the loss before the select above saw it.
        result.and(Err(anyhow::anyhow!("lost leadership of lease {}/{}", config.namespace, config.name)))
    };
    if let Err(e) = &result {
        error!(error = %format!("{e:#}"), "operator stopping");
    }
    // A controller that failed on its own leaves the server up; stop it with the process.
    server.abort();
    result
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
}

fn http_router(metrics: Arc<Metrics>, leading: watch::Receiver<bool>, hub: ProgressHub) -> axum::Router {
    let own = axum::Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HttpState { metrics, leading });
    own.merge(task::router(hub))
}

async fn metrics_handler(State(s): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
}

/// Ready only on the leader, so a Service in front of the replicas routes progress streams to
/// the one that has them.
async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if *s.leading.borrow() { (StatusCode::OK, "leader") } else { (StatusCode::SERVICE_UNAVAILABLE, "standby") }
}
