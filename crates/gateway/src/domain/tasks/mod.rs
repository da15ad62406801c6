//! The task service: what every surface asks of the task core (create a task, read it, follow
//! it live, cancel it) and of the GPU fleet, whichever backend drives the tasks:
//!
//! - `standalone`: rows in the database and the in-process [`Dispatcher`];
//! - `kubernetes`: `EnhanceTask` custom resources the operator drives ([`KubeBackend`]).
//!
//! This module and `servers` are the only places that look at which backend runs; callers
//! never do.

mod gpu_view;
pub mod hub;
pub mod kubernetes;
pub mod manage;
pub mod model;
mod provider_queue;
pub mod runtime;
pub mod scenes;
mod servers;
pub mod standalone;

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use purrify_inference::client::Fleet;
use purrify_inference::storage::Storage;
use purrify_store::{Db, NewTask, Runner, StatusCounts};
use tokio::sync::{Mutex, watch};
use tokio::task::{AbortHandle, JoinHandle};

pub use gpu_view::{GpuReading, WorkerOrigin, WorkerTelemetry};
pub use hub::{HubConfig, ProgressHub, TaskView};
pub use kubernetes::KubeBackend;
pub use manage::{Cancelled, QueueStats, TASK_KINDS, TaskDetail, TaskOptions};
pub use model::{MAX_TASK_ID_LEN, NewUpload, PublicStatus, Routing, TaskFailure, TaskSnapshot, WorkerLine, valid_task_id};
pub use provider_queue::ProviderQueue;
pub use purrify_store::{Scene, TaskFilter, TaskMeta, TaskRecord, TaskSort};
pub use servers::{ServerLine, ServersOverview};
pub use standalone::{CancelOutcome, DispatchConfig, DispatchMetrics, DispatchStats, Dispatcher};

use crate::domain::DomainResult;
use crate::domain::credits::CreditService;
use crate::metrics::{Metrics, OutcomeLabels};

/// What the task service needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// Time from upload to result (seed 000: 5 minutes).
    pub deadline: Duration,
    pub max_attempts: u32,
    /// Worker health-probe interval (standalone).
    pub probe_interval: Duration,
    /// Accept GPU servers on loopback and link-local addresses (development only).
    pub allow_private_workers: bool,
}

/// Which backend drives tasks.
pub enum BackendChoice {
    Standalone,
    Kubernetes { namespace: String, operator_url: Option<String> },
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
    storage: Arc<Storage>,
    /// The in-process worker's URL, when one runs.
    embedded: Option<String>,
    fleet: Fleet,
    prober: AbortHandle,
    handles: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    settings: TaskSettings,
    /// Charges logged-in users' tasks.
    credits: CreditService,
    /// Admin settings of tasks (limits, timeout, maintenance), cached.
    runtime: runtime::RuntimeSettings,
    /// Tasks that outside providers run (the provider runner takes them from here).
    provider_queue: ProviderQueue,
}

/// Cheap to clone; clones share one service.
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

impl TaskService {
    /// Starts the backend (and, in standalone mode, probes the fleet before dispatching:
    /// tasks recorded on a worker the fleet does not know yet would be re-queued instead of
    /// re-attached after a restart). Everything stops when `stop` changes.
    #[expect(clippy::too_many_arguments, reason = "the service's collaborators, each built by the app")]
    pub async fn start(
        choice: BackendChoice,
        settings: TaskSettings,
        db: Db,
        storage: Arc<Storage>,
        fleet: Fleet,
        metrics: Arc<Metrics>,
        embedded: Option<String>,
        credits: CreditService,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let hub = ProgressHub::default();
        let backend = match choice {
            BackendChoice::Standalone => {
                let dispatch =
                    DispatchConfig { max_attempts: settings.max_attempts.max(1), deadline: settings.deadline, ..DispatchConfig::default() };
                Backend::Standalone(Dispatcher::new(db.clone(), fleet.clone(), Some(storage.clone()), hub.clone(), dispatch))
            }
            BackendChoice::Kubernetes { namespace, operator_url } => {
                Backend::Kubernetes(KubeBackend::connect(&namespace, db.clone(), hub.clone(), operator_url).await?)
            }
        };
        let prober = {
            let mut stop = stop.clone();
            fleet.spawn_prober(settings.probe_interval.max(Duration::from_secs(1)), async move {
                let _ = stop.changed().await;
            })
        };
        let runtime = runtime::RuntimeSettings::new(db.clone());
        let service = Self {
            inner: Arc::new(Inner {
                db,
                hub,
                backend,
                storage,
                embedded,
                fleet,
                prober: prober.abort_handle(),
                handles: Mutex::new(Vec::new()),
                metrics,
                settings,
                credits,
                runtime,
                provider_queue: ProviderQueue::default(),
            }),
        };
        let mut handles = vec![prober];
        match &service.inner.backend {
            Backend::Standalone(dispatcher) => {
                service.sync_fleet(true).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut stop = stop;
                handles.push(dispatcher.spawn(async move {
                    let _ = stop.changed().await;
                }));
            }
            Backend::Kubernetes(kube) => handles.extend(kube.spawn(stop)),
        }
        *service.inner.handles.lock().await = handles;
        service.spawn_outcome_metrics();
        Ok(service)
    }

    /// Resolves when the dispatcher (or the Kubernetes watchers) and the prober stopped.
    pub async fn stopped(&self) {
        let handles = std::mem::take(&mut *self.inner.handles.lock().await);
        for h in handles {
            let _ = h.await;
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

    /// The database (tests and the app; handlers go through the service's methods).
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn hub(&self) -> &ProgressHub {
        &self.inner.hub
    }

    pub fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.inner.storage
    }

    /// The worker health prober (its state is `/webhook/servers`' `health_check_running`).
    pub fn prober(&self) -> &AbortHandle {
        &self.inner.prober
    }

    pub fn settings(&self) -> &TaskSettings {
        &self.inner.settings
    }

    /// `standalone` or `kubernetes`, for information pages.
    pub fn backend_name(&self) -> &'static str {
        match self.inner.backend {
            Backend::Standalone(_) => "standalone",
            Backend::Kubernetes(_) => "kubernetes",
        }
    }

    /// The in-process dispatcher, in standalone mode.
    pub fn dispatcher(&self) -> Option<&Dispatcher> {
        match &self.inner.backend {
            Backend::Standalone(d) => Some(d),
            Backend::Kubernetes(_) => None,
        }
    }

    /// Persists the task (committed before the caller answers 2xx) and hands it to the
    /// backend.
    pub async fn create_task(&self, upload: NewUpload) -> DomainResult<()> {
        self.create_task_with(upload, TaskOptions::default()).await.map(|_| ())
    }

    /// The admin settings of tasks (`/api/admin/config`, the maintenance switch).
    pub fn runtime(&self) -> &runtime::RuntimeSettings {
        &self.inner.runtime
    }

    /// The provider runner's side of the task core.
    pub fn provider_queue(&self) -> &ProviderQueue {
        &self.inner.provider_queue
    }

    async fn submit(&self, task: &NewTask) -> DomainResult<()> {
        if task.meta.generation.as_ref().is_some_and(|g| g.runner == Runner::Provider) {
            // Run by the provider runner in both modes: never a GPU worker's job or a CR.
            let row = self.inner.db.insert_task(task, self.inner.settings.deadline).await?;
            self.inner.hub.publish(TaskView::from_task(&row));
            tracing::info!(task_id = %row.id, kind = %task.meta.kind, "provider task queued");
            self.inner.provider_queue.notify();
            return Ok(());
        }
        match &self.inner.backend {
            Backend::Standalone(d) => {
                d.enqueue(task.clone()).await?;
            }
            Backend::Kubernetes(k) => {
                let pool = self.routing().await?.pool.unwrap_or_else(|| kubernetes::default_pool().into());
                k.create(task, &pool, task.deadline.unwrap_or(self.inner.settings.deadline)).await.map_err(manage::kube_create_error)?;
            }
        }
        Ok(())
    }

    /// The task's current state: from the hub (no database round trip) or, for tasks that
    /// left it, from the database.
    pub async fn task(&self, id: &str) -> DomainResult<Option<TaskSnapshot>> {
        if !valid_task_id(id) {
            return Ok(None);
        }
        if let Some(v) = self.inner.hub.get(id) {
            return Ok(Some(TaskSnapshot::from(v.as_ref())));
        }
        let v = self.inner.hub.get_or_load(&self.inner.db, id).await?;
        Ok(v.map(|v| TaskSnapshot::from(v.as_ref())))
    }

    /// Changes of one task, as they happen (`None` when it is not live any more).
    pub fn watch_task(&self, id: &str) -> Option<impl Stream<Item = TaskSnapshot> + Send + 'static> {
        let mut rx = self.inner.hub.subscribe(id)?;
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
        let mut rx = self.inner.hub.subscribe_all();
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

    /// Tasks waiting for a worker, now: counted in the database for the standalone backend
    /// (the gauge is only refreshed by scrapes); the Kubernetes backend's gauge otherwise.
    pub async fn queue_depth(&self) -> DomainResult<u64> {
        match self.inner.backend {
            Backend::Kubernetes(_) => Ok(u64::try_from(self.inner.metrics.queue_depth.get()).unwrap_or(0)),
            Backend::Standalone(_) => Ok(self.inner.db.count_active().await?.queued),
        }
    }

    /// Tasks per status over the whole table.
    pub async fn counts(&self) -> DomainResult<StatusCounts> {
        Ok(self.inner.db.count_by_status().await?)
    }

    pub async fn db_ping(&self) -> bool {
        self.inner.db.ping().await.is_ok()
    }

    /// Updates gauges that are cheaper to read on scrape than to maintain.
    pub async fn refresh_gauges(&self) {
        if let Ok(counts) = self.inner.db.count_active().await {
            self.inner.metrics.queue_depth.set(counts.queued as i64);
            self.inner.metrics.processing.set(counts.processing as i64);
        }
        let healthy = self.workers().await.iter().filter(|w| w.healthy).count();
        self.inner.metrics.healthy_workers.set(healthy as i64);
    }
}
