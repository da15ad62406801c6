//! What handlers ask of the task core, in the public API's terms: create a task, read its
//! status, follow it live, manage GPU servers and routing settings. Handlers never touch the
//! database, hub or dispatcher directly; this keeps their code about HTTP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use purrify_inference::client::{Fleet, WorkerSpec};
use purrify_inference::protocol::{EnhanceParams, JobResult};
use purrify_inference::storage::Storage;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::app::AppState;
use crate::config::{Backend as BackendKind, Config};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kubernetes::KubeBackend;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::tasks::db::{Db, DbError};
use crate::tasks::dispatcher::{DispatchConfig, Dispatcher, valid_task_id};
use crate::tasks::hub::{ProgressHub, TaskView};
use crate::tasks::model::{NewTask, TaskStatus, settings};

/// The seed's four status words; a cancelled task reads as failed with reason "cancelled".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicStatus {
    Queued,
    Processing,
    Completed,
    Failed,
}

impl PublicStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// A task as the public API presents it.
#[derive(Debug, Clone)]
pub struct TaskSnapshot {
    pub id: String,
    pub status: PublicStatus,
    pub progress: f64,
    pub error: Option<String>,
    pub error_code: Option<String>,
    pub result: Option<JobResult>,
}

impl From<&TaskView> for TaskSnapshot {
    fn from(v: &TaskView) -> Self {
        let status = match v.status {
            TaskStatus::Queued => PublicStatus::Queued,
            TaskStatus::Processing => PublicStatus::Processing,
            TaskStatus::Completed => PublicStatus::Completed,
            TaskStatus::Failed | TaskStatus::Cancelled => PublicStatus::Failed,
        };
        let (error, error_code) = match (&v.error, v.status) {
            (Some(f), _) => (Some(f.message.clone()), Some(f.code.clone())),
            (None, TaskStatus::Cancelled) => (Some("the task was cancelled".into()), Some("CANCELLED".into())),
            (None, TaskStatus::Failed) => (Some("the task failed".into()), Some("INTERNAL_ERROR".into())),
            _ => (None, None),
        };
        Self {
            id: v.task_id.clone(),
            status,
            progress: if v.status == TaskStatus::Completed { 1.0 } else { f64::from(v.progress) },
            error,
            error_code,
            result: v.result.clone(),
        }
    }
}

/// One worker as status pages show it.
#[derive(Debug, Clone)]
pub struct WorkerLine {
    pub endpoint: String,
    pub healthy: bool,
    pub in_flight: u32,
    pub capacity: u32,
    pub circuit: Option<Value>,
    pub last_heartbeat: Option<String>,
    pub last_error: Option<String>,
    pub gpu: Option<Value>,
}

/// An accepted upload, ready to become a task.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub task_id: String,
    pub input_uri: String,
    pub content_type: String,
    pub bytes: u64,
    pub params: EnhanceParams,
    pub request_id: String,
    /// Fairness group: one client's burst must not starve others. Accounts (a later
    /// issue) will replace the client address with the user id.
    pub client: String,
}

/// Where jobs may go (`/api/v1/config`).
#[derive(Debug, Clone)]
pub struct Routing {
    /// Set by `POST /api/v1/config/backend`.
    pub backend_url: Option<String>,
    /// The in-process worker, when one runs.
    pub default_backend_url: Option<String>,
    pub multi_backend: bool,
    pub fallback_to_default: bool,
    /// Kubernetes mode: the GpuPool new tasks go to.
    pub pool: Option<String>,
}

/// Who drives tasks: the in-process dispatcher, or the operator through custom resources.
#[expect(clippy::large_enum_variant, reason = "one per process, inside an Arc: size is irrelevant")]
enum Backend {
    Standalone(Dispatcher),
    Kubernetes(KubeBackend),
}

struct Inner {
    db: Db,
    hub: ProgressHub,
    backend: Backend,
    embedded: Option<String>,
    fleet: Fleet,
    handles: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    deadline: Duration,
}

#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

fn db_error(e: DbError) -> ApiError {
    ApiError::internal(e)
}

/// The cluster refused or could not take a GpuPool change (logged; the client may retry).
fn cluster_refused(e: crate::kubernetes::KubeError) -> ApiError {
    if let crate::kubernetes::KubeError::Db(e) = e {
        return db_error(e);
    }
    tracing::error!(error = %e, "GpuPool change failed");
    ApiError::unavailable("the cluster did not accept the change; try again shortly")
}

impl TaskService {
    pub async fn start(
        config: Arc<Config>,
        storage: Arc<Storage>,
        fleet: Fleet,
        metrics: Arc<Metrics>,
        embedded: Option<String>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let url = config.database_url();
        let db = Db::connect(&url).await.map_err(|e| anyhow::anyhow!("database {}: {e}", redact(&url)))?;
        let hub = ProgressHub::default();
        let deadline = Duration::from_secs(config.task_deadline_seconds);
        let backend = match config.backend {
            BackendKind::Standalone => {
                let dispatch = DispatchConfig { max_attempts: config.max_attempts.max(1), deadline, ..DispatchConfig::default() };
                Backend::Standalone(Dispatcher::new(db.clone(), fleet.clone(), Some(storage), hub.clone(), dispatch))
            }
            BackendKind::Kubernetes => {
                Backend::Kubernetes(KubeBackend::connect(&config.namespace, db.clone(), hub.clone(), config.operator_url.clone()).await?)
            }
        };
        let service =
            Self { inner: Arc::new(Inner { db, hub, backend, embedded, fleet, handles: Mutex::new(Vec::new()), metrics, deadline }) };
        let handles = match &service.inner.backend {
            Backend::Standalone(dispatcher) => {
                // Probe before dispatching: tasks recorded on a worker the fleet does not know
                // yet would be re-queued instead of re-attached after a restart.
                service.sync_fleet(true).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
                let mut stop = stop;
                vec![dispatcher.spawn(async move {
                    let _ = stop.changed().await;
                })]
            }
            Backend::Kubernetes(kube) => kube.spawn(stop),
        };
        *service.inner.handles.lock().await = handles;
        service.spawn_outcome_metrics();
        Ok(service)
    }

    /// Resolves when the dispatcher (or the Kubernetes watchers) stopped.
    pub async fn stopped(&self) {
        let handles = std::mem::take(&mut *self.inner.handles.lock().await);
        for h in handles {
            let _ = h.await;
        }
    }

    /// The Kubernetes backend, in Kubernetes mode.
    pub fn kubernetes(&self) -> Option<&KubeBackend> {
        match &self.inner.backend {
            Backend::Kubernetes(k) => Some(k),
            Backend::Standalone(_) => None,
        }
    }

    fn spawn_outcome_metrics(&self) {
        // The standalone dispatcher counts outcomes exactly; the progress broadcast below
        // drops messages for slow readers, so it is only the fallback without a dispatcher.
        if let Backend::Standalone(dispatcher) = &self.inner.backend {
            self.inner.metrics.attach_dispatch(dispatcher.metrics());
            return;
        }
        let mut rx = self.inner.hub.subscribe_all();
        let metrics = self.inner.metrics.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(v) if v.is_finished() => {
                        let code = v.error.as_ref().map(|f| f.code.clone()).unwrap_or_else(|| "none".into());
                        metrics.tasks.get_or_create(&OutcomeLabels { outcome: v.status.as_str(), code }).inc();
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn hub(&self) -> &ProgressHub {
        &self.inner.hub
    }

    /// The in-process dispatcher, in standalone mode.
    pub fn dispatcher(&self) -> Option<&Dispatcher> {
        match &self.inner.backend {
            Backend::Standalone(d) => Some(d),
            Backend::Kubernetes(_) => None,
        }
    }

    async fn routing(&self) -> ApiResult<Routing> {
        let db = &self.inner.db;
        Ok(Routing {
            backend_url: db.get_setting(settings::BACKEND_URL).await.map_err(db_error)?,
            default_backend_url: self.inner.embedded.clone(),
            multi_backend: db.get_bool_setting(settings::MULTI_BACKEND_ENABLED).await.map_err(db_error)?.unwrap_or(true),
            fallback_to_default: db.get_bool_setting(settings::FALLBACK_TO_DEFAULT).await.map_err(db_error)?.unwrap_or(true),
            pool: match &self.inner.backend {
                Backend::Kubernetes(_) => Some(
                    db.get_setting(settings::POOL).await.map_err(db_error)?.unwrap_or_else(|| crate::kubernetes::default_pool().into()),
                ),
                Backend::Standalone(_) => None,
            },
        })
    }

    /// Makes the fleet match the routing settings: the default backend (the configured URL,
    /// else the in-process worker), plus registered GPU servers in multi-backend mode; with
    /// `fallback_to_default` off and servers registered, only the servers.
    async fn sync_fleet(&self, wait_for_probes: bool) -> ApiResult<()> {
        let Backend::Standalone(dispatcher) = &self.inner.backend else {
            // In Kubernetes mode the operator owns the workers.
            return Ok(());
        };
        let routing = self.routing().await?;
        let servers = self.inner.db.list_gpu_servers().await.map_err(db_error)?;
        let default = routing.backend_url.clone().or(routing.default_backend_url.clone());
        let mut specs = Vec::new();
        if routing.multi_backend {
            specs.extend(servers.iter().map(|s| WorkerSpec::new(s.url.clone()).with_name(s.id.clone())));
        }
        let use_default = !routing.multi_backend || routing.fallback_to_default || specs.is_empty();
        if let Some(d) = default.clone().filter(|_| use_default) {
            specs.push(WorkerSpec::new(d).with_name("default"));
        }
        let before: std::collections::HashSet<String> = self.inner.fleet.endpoints().into_iter().collect();
        self.inner.fleet.sync(specs).map_err(|e| fleet_sync_error(e, default.as_deref()))?;
        // New workers take no jobs until probed; probe now instead of at the next round.
        let fresh: Vec<String> = self.inner.fleet.endpoints().into_iter().filter(|e| !before.contains(e)).collect();
        let fleet = self.inner.fleet.clone();
        let probes = async move {
            futures::future::join_all(fresh.iter().map(|e| fleet.probe_worker(e))).await;
        };
        if wait_for_probes {
            probes.await;
        } else {
            tokio::spawn(probes);
        }
        dispatcher.notify();
        Ok(())
    }
}

/// A fleet the settings cannot make, blamed on the field that holds the bad endpoint: the
/// default backend's `backend_url`, else a registered server's `ip` (and port).
fn fleet_sync_error(e: purrify_inference::client::ConfigError, default: Option<&str>) -> ApiError {
    use purrify_inference::client::ConfigError;
    match &e {
        ConfigError::Endpoint { endpoint, .. } if Some(endpoint.as_str()) == default => ApiError::field("backend_url", e.to_string()),
        ConfigError::Endpoint { .. } => ApiError::field("ip", e.to_string()),
        ConfigError::Http(_) => ApiError::internal(e),
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl AppState {
    /// Persists the task (committed before the caller answers 2xx) and wakes the dispatcher.
    pub async fn create_task(&self, upload: NewUpload) -> ApiResult<()> {
        let output_uri = self.storage.uri_for(&format!("results/{}.jpg", upload.task_id));
        let mut task = NewTask::new(upload.task_id, upload.input_uri, output_uri, upload.params);
        task.content_type = upload.content_type;
        task.input_bytes = upload.bytes;
        task.request_id = Some(upload.request_id);
        task.user_id = Some(upload.client);
        task.deadline = Some(self.tasks.inner.deadline);
        match &self.tasks.inner.backend {
            Backend::Standalone(d) => {
                d.enqueue(task).await.map_err(db_error)?;
            }
            Backend::Kubernetes(k) => {
                let pool = self.routing().await?.pool.unwrap_or_else(|| crate::kubernetes::default_pool().into());
                k.create(&task, &pool, self.tasks.inner.deadline).await.map_err(|e| {
                    tracing::error!(error = %e, "cannot create the EnhanceTask");
                    ApiError::unavailable("the cluster did not accept the task; try again shortly")
                })?;
            }
        }
        Ok(())
    }

    /// The task's current state: from the hub (no database round trip) or, for tasks that
    /// left it, from the database.
    pub async fn task(&self, id: &str) -> ApiResult<Option<TaskSnapshot>> {
        if !valid_task_id(id) {
            return Ok(None);
        }
        if let Some(v) = self.tasks.hub().get(id) {
            return Ok(Some(TaskSnapshot::from(v.as_ref())));
        }
        let v = self.tasks.hub().get_or_load(self.tasks.db(), id).await.map_err(db_error)?;
        Ok(v.map(|v| TaskSnapshot::from(v.as_ref())))
    }

    /// Changes of one task, as they happen (`None` when it is not live any more).
    pub fn watch_task(&self, id: &str) -> Option<impl Stream<Item = TaskSnapshot> + Send + 'static> {
        let mut rx = self.tasks.hub().subscribe(id)?;
        Some(async_stream::stream! {
            loop {
                let snap = TaskSnapshot::from(rx.borrow_and_update().as_ref());
                yield snap;
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
    }

    /// Changes of every task (WebSocket sessions filter by subscription). A slow reader skips
    /// what it missed rather than slowing the dispatcher.
    pub fn watch_all(&self) -> impl Stream<Item = TaskSnapshot> + Send + 'static {
        let mut rx = self.tasks.hub().subscribe_all();
        async_stream::stream! {
            loop {
                match rx.recv().await {
                    Ok(v) => yield TaskSnapshot::from(v.as_ref()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }

    /// Registers (idempotently) a GPU server; returns its id and whether it is new.
    pub async fn register_server(&self, ip: IpAddr, port: u16) -> ApiResult<(String, bool)> {
        let url = match ip {
            IpAddr::V4(v4) => format!("http://{v4}:{port}"),
            IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
        };
        let server = self.tasks.db().upsert_gpu_server(&ip.to_string(), port, &url).await.map_err(|e| match e {
            DbError::Duplicate(m) => ApiError::new(ErrorCode::ValidationError, m),
            other => db_error(other),
        })?;
        match self.tasks.kubernetes() {
            Some(k) => {
                let pool = crate::kubernetes::default_pool();
                k.add_external(pool, &url, &server.id).await.map_err(cluster_refused)?;
            }
            None => self.tasks.sync_fleet(false).await?,
        }
        Ok((server.id.clone(), server.registered_at == server.last_seen))
    }

    pub async fn unregister_server(&self, ip: IpAddr, port: u16) -> ApiResult<Option<String>> {
        if let Some(k) = self.tasks.kubernetes() {
            // The pool before the row: a failed cluster change must leave something to retry.
            let url = match ip {
                IpAddr::V4(v4) => format!("http://{v4}:{port}"),
                IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
            };
            return k.unregister(crate::kubernetes::default_pool(), &ip.to_string(), port, &url).await.map_err(cluster_refused);
        }
        let removed = self.tasks.db().delete_gpu_server(&ip.to_string(), port).await.map_err(db_error)?;
        if removed.is_some() {
            self.tasks.sync_fleet(false).await?;
        }
        Ok(removed)
    }

    /// Every worker tasks can go to, with its health: the fleet in standalone mode, in
    /// Kubernetes mode the status (kept by the operator) of the GpuPool uploads are routed
    /// to, read from the watch-fed cache.
    pub async fn workers(&self) -> Vec<WorkerLine> {
        match self.tasks.kubernetes() {
            None => self
                .fleet
                .snapshot()
                .workers
                .into_iter()
                .map(|w| WorkerLine {
                    endpoint: w.endpoint,
                    healthy: w.healthy,
                    in_flight: w.in_flight,
                    capacity: w.capacity,
                    circuit: serde_json::to_value(w.breaker).ok(),
                    last_heartbeat: w.last_heartbeat.map(purrify_inference::client::format_rfc3339),
                    last_error: w.last_error,
                    gpu: w.gpu.and_then(|g| serde_json::to_value(g).ok()),
                })
                .collect(),
            Some(k) => k
                .pool_status(&self.routing().await.ok().and_then(|r| r.pool).unwrap_or_else(|| crate::kubernetes::default_pool().into()))
                .await
                .map(|st| {
                    st.workers
                        .into_iter()
                        .map(|w| WorkerLine {
                            endpoint: w.endpoint,
                            healthy: w.healthy,
                            in_flight: w.in_flight,
                            capacity: 0,
                            circuit: None,
                            last_heartbeat: w.last_heartbeat,
                            last_error: None,
                            gpu: w.gpu.and_then(|g| serde_json::to_value(g).ok()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The seed's `/webhook/servers` data.
    pub async fn servers_overview(&self) -> ApiResult<Value> {
        let registered = self.tasks.db().list_gpu_servers().await.map_err(db_error)?;
        let workers = self.workers().await;
        let norm = |u: &str| u.trim_end_matches('/').to_string();
        let servers: Vec<Value> = registered
            .iter()
            .map(|s| {
                let live = workers.iter().find(|w| norm(&w.endpoint) == norm(&s.url));
                json!({
                    "server_id": s.id,
                    "ip": s.ip,
                    "port": s.port,
                    "url": s.url,
                    "healthy": live.map(|w| w.healthy).unwrap_or(false),
                    "in_flight": live.map(|w| w.in_flight).unwrap_or(0),
                    "capacity": live.map(|w| w.capacity).unwrap_or(0),
                    "circuit": live.and_then(|w| w.circuit.clone()),
                    "last_heartbeat": live.and_then(|w| w.last_heartbeat.clone()),
                    "last_error": live.and_then(|w| w.last_error.clone()),
                    "gpu": live.and_then(|w| w.gpu.clone()),
                    "registered_at": s.registered_at,
                })
            })
            .collect();
        let healthy = servers.iter().filter(|s| s["healthy"] == true).count();
        Ok(json!({
            "total_servers": servers.len(),
            "healthy_servers": healthy,
            "unhealthy_servers": servers.len() - healthy,
            "health_check_running": self.health_checks_running().await,
            "servers": servers,
        }))
    }

    /// Whether worker health is being checked: by the gateway's own prober in standalone mode;
    /// in Kubernetes mode by the operator, which publishes the results in the GpuPool status.
    pub async fn health_checks_running(&self) -> bool {
        match self.tasks.kubernetes() {
            None => !self.prober.is_finished(),
            Some(k) => {
                let pool = self.routing().await.ok().and_then(|r| r.pool).unwrap_or_else(|| crate::kubernetes::default_pool().into());
                k.pool_status(&pool).await.is_some()
            }
        }
    }

    /// Tasks waiting for a worker, now: counted in the database for the standalone backend
    /// (the gauge is only refreshed by scrapes); the Kubernetes backend's gauge otherwise.
    pub async fn queue_depth(&self) -> ApiResult<u64> {
        if self.tasks.dispatcher().is_none() {
            return Ok(u64::try_from(self.metrics.queue_depth.get()).unwrap_or(0));
        }
        let counts = self.tasks.db().count_active().await.map_err(db_error)?;
        Ok(counts.get(TaskStatus::Queued))
    }

    pub async fn routing(&self) -> ApiResult<Routing> {
        self.tasks.routing().await
    }

    /// Kubernetes mode: choose the GpuPool new tasks go to. It must exist.
    pub async fn set_pool(&self, pool: &str) -> ApiResult<String> {
        let Some(k) = self.tasks.kubernetes() else {
            return Err(ApiError::field("pool", "pools exist only in Kubernetes mode; set backend_url instead"));
        };
        let valid = !pool.is_empty()
            && pool.len() <= 253
            && pool.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(ApiError::field("pool", format!("{pool:?} is not a valid GpuPool name")));
        }
        if k.pool(pool).await.map_err(ApiError::internal)?.is_none() {
            return Err(ApiError::field("pool", format!("there is no GpuPool {pool} in namespace {}", k.namespace())));
        }
        self.tasks.db().set_setting(settings::POOL, pool).await.map_err(db_error)?;
        Ok(pool.to_string())
    }

    pub async fn set_backend_url(&self, url: &str) -> ApiResult<String> {
        let normalized = purrify_inference::client::normalize_endpoint(url).map_err(|e| ApiError::field("backend_url", e.to_string()))?;
        self.tasks.db().set_setting(settings::BACKEND_URL, &normalized).await.map_err(db_error)?;
        self.tasks.sync_fleet(false).await?;
        Ok(normalized)
    }

    pub async fn set_multi_backend(&self, enabled: bool, fallback_to_default: bool) -> ApiResult<()> {
        let db = self.tasks.db();
        db.set_bool_setting(settings::MULTI_BACKEND_ENABLED, enabled).await.map_err(db_error)?;
        db.set_bool_setting(settings::FALLBACK_TO_DEFAULT, fallback_to_default).await.map_err(db_error)?;
        self.tasks.sync_fleet(false).await
    }

    pub async fn db_ping(&self) -> bool {
        self.tasks.db().ping().await.is_ok()
    }

    /// Updates gauges that are cheaper to read on scrape than to maintain.
    pub async fn refresh_gauges(&self) {
        if let Ok(counts) = self.tasks.db().count_active().await {
            self.metrics.queue_depth.set(counts.get(TaskStatus::Queued) as i64);
            self.metrics.processing.set(counts.get(TaskStatus::Processing) as i64);
        }
        let healthy = self.workers().await.iter().filter(|w| w.healthy).count();
        self.metrics.healthy_workers.set(healthy as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use purrify_inference::client::ConfigError;

    #[test]
    fn fleet_sync_errors_name_the_field_holding_the_bad_endpoint() {
        let bad = |endpoint: &str| ConfigError::Endpoint { endpoint: endpoint.into(), reason: "no".into() };
        let fields = |e: ApiError| e.details["field_errors"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        let default = Some("http://default:8000");
        assert_eq!(fields(fleet_sync_error(bad("http://default:8000"), default)), Some(vec!["backend_url".to_string()]));
        assert_eq!(fields(fleet_sync_error(bad("http://203.0.113.9:8000"), default)), Some(vec!["ip".to_string()]));
        assert_eq!(fields(fleet_sync_error(bad("http://203.0.113.9:8000"), None)), Some(vec!["ip".to_string()]));
        let internal = fleet_sync_error(ConfigError::Http("tls".into()), default);
        assert_eq!(internal.code, ErrorCode::InternalError);
        assert!(!internal.message.contains("tls"), "internal causes are not echoed");
    }
}
