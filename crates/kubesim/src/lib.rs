//! `purrify-kubesim`: an in-memory Kubernetes API server for tests and local runs.
//!
//! No kube-apiserver can be installed on the project's machines, so this crate serves
//! the subset of the Kubernetes API that Purrify and kube-rs (`Api`, `watcher`,
//! `reflector`, `Controller`) use, over plain HTTP on loopback, without auth.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubesim::Error> {
//! let (addr, handle) = kubesim::Server::start("127.0.0.1:0".parse().unwrap()).await?;
//! kubesim::write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"), addr)?;
//! // ... point kube::Client at http://{addr} ...
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # What is served
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//!   `/apis/{group}/{version}`, and aggregated discovery (apidiscovery.k8s.io/v2) when
//!   asked for by `Accept`.
//! - Built-in kinds ([`builtin`]): core/v1 Namespaces, Pods, Services, Events,
//!   ConfigMaps, Secrets, ServiceAccounts; apps/v1 Deployments; batch/v1 Jobs;
//!   autoscaling/v2 HorizontalPodAutoscalers; policy/v1 PodDisruptionBudgets;
//!   networking.k8s.io/v1 Ingresses, NetworkPolicies; rbac.authorization.k8s.io/v1 Roles,
//!   ClusterRoles, RoleBindings, ClusterRoleBindings; coordination.k8s.io/v1 Leases;
//!   events.k8s.io/v1 Events (stored apart from core Events); apiextensions.k8s.io/v1
//!   CustomResourceDefinitions. Built-ins are stored as given (unknown fields reported by
//!   [`fieldcheck`], not dropped) with a few defaults: namespace phase and name label,
//!   pod phase `Pending`, deployment `replicas: 1`, service `type` and a cluster IP,
//!   secret `type: Opaque`. Their protobuf bodies (kubectl's typed clients send nothing
//!   else) are decoded by [`builtin::proto`].
//! - `/openapi/v3` and `/openapi/v2` ([`openapi`]), `fieldValidation` ([`fieldcheck`]) and
//!   Table output for `kubectl get` ([`table`]).
//! - Custom resources from CRDs: served versions, scope, names, status subresource,
//!   `openAPIV3Schema` defaulting, pruning and validation, and CEL rules (see [`cel`]
//!   for the subset; a CRD with a rule outside it is rejected with a 422).
//! - list/get/watch with resourceVersion semantics, label and field selectors,
//!   pagination; create/update/patch (merge, JSON, strategic for built-ins, apply)/
//!   delete/deletecollection; status subresource; generation; no-op writes; finalizers;
//!   owner-reference GC (Background, Foreground, Orphan); `dryRun=All`;
//!   metadata-only (`PartialObjectMetadata`) responses; JSON or YAML bodies;
//!   `GET /metrics`.
//!
//! # Not implemented
//! Authentication and authorization, admission webhooks, protobuf responses (except
//! `/openapi/v2`), CRD conversion
//! webhooks (versions differ only in `apiVersion`, like the `None` strategy), the
//! `scale` and other subresources, controllers (Deployments never get pods, pods
//! never run), GC of dependents whose owner never existed, validation ratcheting,
//! and `x-kubernetes-validations` functions outside the [`cel`] subset.

pub mod builtin;
pub mod cel;
pub mod crd;
pub mod error;
pub mod fieldcheck;
pub mod fieldmanager;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod presentation;
pub mod resource;
pub mod schema;
pub mod selector;
pub mod store;
pub mod table;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::task::JoinHandle;

pub use error::{ApiError, Error};
pub use http::ServerConfig;

use http::Shared;

pub struct Server;

/// A running server. Dropping it stops the server too; `shutdown` waits for the stop.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and serves until the handle stops it.
    pub async fn start(addr: SocketAddr) -> Result<(SocketAddr, ServerHandle), Error> {
        Self::start_with(ServerConfig { addr, ..ServerConfig::default() }).await
    }

    pub async fn start_with(config: ServerConfig) -> Result<(SocketAddr, ServerHandle), Error> {
        let listener =
            tokio::net::TcpListener::bind(config.addr).await.map_err(|source| Error::Bind { addr: config.addr.to_string(), source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr: config.addr.to_string(), source })?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            store: store::Store::new(config.watch_history),
            metrics: metrics::Metrics::default(),
            config,
            addr,
            shutdown: shutdown_rx.clone(),
        });
        let app = http::router(shared.clone());
        let mut stop = shutdown_rx;
        // TCP_NODELAY: with Nagle's algorithm a small response, or one event of a stream, waits
        // for the peer's delayed ACK (about 40 ms).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| drop(tcp.set_nodelay(true)));
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .map_err(Error::Serve)
        });
        tracing::info!(%addr, "kubesim serving");
        Ok((addr, ServerHandle { addr, shared, shutdown, task: Some(task) }))
    }
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the cluster server URL for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests served for `verb` (get, list, watch, create, update, patch, apply,
    /// delete, deletecollection) on `resource` (`pods`, `enhancetasks/status`).
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        self.shared.metrics.count(verb, resource)
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let rv = self.shared.store.lock().resource_version();
        self.shared.metrics.render(rv)
    }

    /// The latest resource version handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().resource_version()
    }

    /// Drops the watch history and ends every open watch with a 410 Gone error
    /// event, as an apiserver restart after compaction would: clients must relist.
    pub fn expire_watches(&self) {
        self.shared.store.expire_watches();
    }

    /// Stops accepting requests, ends open watches and waits for the server to stop.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        match self.task.take() {
            Some(t) => t.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// The kubeconfig for a server at `addr`: one cluster, context and user named `kubesim`.
pub fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kubesim\n  cluster:\n    server: http://{addr}\n\
         contexts:\n\
         - name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n    namespace: default\n\
         current-context: kubesim\n\
         users:\n\
         - name: kubesim\n  user: {{}}\n\
         preferences: {{}}\n"
    )
}

pub fn write_kubeconfig(path: &Path, addr: SocketAddr) -> Result<(), Error> {
    let err = |source| Error::Kubeconfig { path: path.display().to_string(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Write then rename so a reader polling for the file never sees half of it.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, kubeconfig_yaml(addr)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[derive(Debug, Parser)]
#[command(name = "purrify-kubesim", version, about = "In-memory Kubernetes API server for tests and local runs")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Kubernetes API over plain HTTP (no auth).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "KUBESIM_ADDR", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Write a kubeconfig pointing at the server here.
    #[arg(long, env = "KUBESIM_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch events kept for resuming watches; older versions get 410 Gone.
    #[arg(long, env = "KUBESIM_WATCH_HISTORY", default_value_t = 10_000)]
    pub watch_history: usize,
    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, env = "KUBESIM_BOOKMARK_INTERVAL_SECONDS", default_value_t = 30.0)]
    pub bookmark_interval_seconds: f64,
    /// Allow a non-loopback address. The server has no authentication at all.
    #[arg(long, env = "KUBESIM_INSECURE_ALLOW_REMOTE", default_value_t = false)]
    pub insecure_allow_remote: bool,
}

/// The binary's entry point: parses the command line and serves until SIGTERM/SIGINT.
pub async fn run() -> Result<(), Error> {
    let cli = Cli::parse();
    purrify_process::init_tracing(purrify_process::LogFormat::Text, "info");
    match cli.command {
        Command::Serve(args) => serve(args).await,
    }
}

pub async fn serve(args: ServeArgs) -> Result<(), Error> {
    if !args.addr.ip().is_loopback() && !args.insecure_allow_remote {
        return Err(Error::Bind {
            addr: args.addr.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "refusing a non-loopback address: kubesim has no authentication (pass --insecure-allow-remote to override)",
            ),
        });
    }
    let config = ServerConfig {
        addr: args.addr,
        watch_history: args.watch_history,
        bookmark_interval: Duration::from_secs_f64(args.bookmark_interval_seconds.max(0.05)),
    };
    let (addr, handle) = Server::start_with(config).await?;
    if let Some(path) = &args.kubeconfig {
        write_kubeconfig(path, addr)?;
        tracing::info!(path = %path.display(), "kubeconfig written");
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // Tests read this line to find the port.
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    purrify_process::shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await
}
