//! The Kubernetes backend (`--backend kubernetes`): an upload becomes an `EnhanceTask` custom
//! resource that the operator drives; the gateway only watches.
//!
//! - Status polls are served from the progress hub, fed by a watch on the namespace's
//!   EnhanceTasks (phases) and by the operator's progress stream (fine-grained progress, which
//!   is deliberately not written to etcd). No API call per poll.
//! - The task history stays in the gateway's database: the row is written at upload and the
//!   outcome mirrored when the CR finishes, so finished CRs can be deleted quickly (TTL)
//!   while `/status` and `/download` keep working.
//! - A task CR deleted before it finished (by hand, or while the gateway was not watching)
//!   ends as failed, or cancelled when the gateway had asked for that, instead of staying
//!   queued forever; finished CRs deleted by their TTL keep their outcome.
//! - `/webhook/register|unregister` edit `spec.external` of the default GpuPool.
//! - Worker health for `/api/v1/health`, `/api/v1/info` and `/metrics` comes from a watch-fed
//!   GpuPool cache, so those endpoints cost no API call either.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use purrify_api::{DEFAULT_POOL, EnhanceTask, ExternalEndpoint, FailReason, GpuPool, GpuPoolStatus, TaskStatus};
use purrify_store::{Db, Mirror, NewTask, StoreError};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::domain::tasks::hub::{ProgressHub, TaskView};

mod mirror;
pub mod resources;

pub use resources::{code_of, external_only_pool, task_resource, view_of, with_external, without_external};

/// The gateway's field manager for server-side apply on GpuPools.
pub const FIELD_MANAGER: &str = "purrify-gateway";
const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const LABEL_POOL: &str = "purrify.io/pool";
/// Annotation the operator reads to cancel a task (the spec is immutable).
pub const CANCEL_ANNOTATION: &str = "purrify.io/cancel";
/// What a client reads about a task whose CR was deleted while it was still running.
pub const DELETED_MESSAGE: &str = "the task was deleted from the cluster before finishing";
/// The same, when the gateway only noticed after a restart or relist.
pub const MISSING_MESSAGE: &str = "the task was deleted from the cluster before the gateway saw it finish";
/// A queued row younger than this may belong to a create still in flight (its CR not yet
/// listable), in this gateway or another replica sharing the database: a relist leaves it
/// alone until the next one.
const CREATE_GRACE_MS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Db(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone)]
pub struct KubeBackend {
    client: kube::Client,
    namespace: String,
    tasks: Api<EnhanceTask>,
    pools: Api<GpuPool>,
    db: Db,
    hub: ProgressHub,
    operator_url: Option<String>,
    /// The namespace's GpuPools, kept by a watch (started by `spawn`).
    pool_cache: Store<GpuPool>,
    pool_writer: Arc<Mutex<Option<reflector::store::Writer<GpuPool>>>>,
    /// Tasks whose row is written but whose CR may not exist yet.
    creating: Arc<Mutex<HashSet<String>>>,
}
impl KubeBackend {
    /// Connects with KUBECONFIG (or the in-cluster service account).
    pub async fn connect(namespace: &str, db: Db, hub: ProgressHub, operator_url: Option<String>) -> anyhow::Result<Self> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API (KUBECONFIG or in-cluster config): {e}"))?;
        let tasks: Api<EnhanceTask> = Api::namespaced(client.clone(), namespace);
        // Fail at start, not at the first upload, when the CRDs are missing or RBAC denies.
        tasks
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map_err(|e| anyhow::anyhow!("cannot list EnhanceTasks in namespace {namespace} (CRDs applied? RBAC?): {e}"))?;
        Ok(Self::new(client, namespace, db, hub, operator_url))
    }

    /// A backend on an existing client (no API call until `spawn` or a request).
    pub fn new(client: kube::Client, namespace: &str, db: Db, hub: ProgressHub, operator_url: Option<String>) -> Self {
        let (pool_cache, writer) = reflector::store();
        Self {
            pools: Api::namespaced(client.clone(), namespace),
            tasks: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_string(),
            db,
            hub,
            operator_url,
            pool_cache,
            pool_writer: Arc::new(Mutex::new(Some(writer))),
            creating: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Starts the watch mirror, the GpuPool cache and the progress follower.
    pub fn spawn(&self, mut stop: tokio::sync::watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut handles = Vec::new();
        let this = self.clone();
        let mut stop1 = stop.clone();
        handles.push(tokio::spawn(async move {
            tokio::select! {
                () = this.mirror_loop() => {}
                _ = stop1.changed() => {}
            }
        }));
        let writer = self.pool_writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(writer) = writer {
            let pools = self.pools.clone();
            let mut stop2 = stop.clone();
            handles.push(tokio::spawn(async move {
                let stream = watcher::watcher(pools, watcher::Config::default()).default_backoff().reflect(writer);
                let mut stream = std::pin::pin!(stream);
                loop {
                    tokio::select! {
                        next = stream.next() => match next {
                            Some(Ok(_)) => {}
                            Some(Err(e)) => warn!(error = %e, "GpuPool watch error; retrying"),
                            None => break,
                        },
                        _ = stop2.changed() => break,
                    }
                }
            }));
        }
        if let Some(url) = self.operator_url.clone() {
            let this = self.clone();
            handles.push(tokio::spawn(async move {
                tokio::select! {
                    () = this.progress_loop(url) => {}
                    _ = stop.changed() => {}
                }
            }));
        }
        handles
    }
    /// Persists the task (database row, then the CR) before the caller answers 2xx.
    pub async fn create(&self, task: &NewTask, pool: &str, deadline: Duration) -> Result<(), KubeError> {
        // A relist between the row and the CR must not take the task for a deleted one.
        self.creating.lock().unwrap_or_else(PoisonError::into_inner).insert(task.id.clone());
        let created = self.create_inner(task, pool, deadline).await;
        self.creating.lock().unwrap_or_else(PoisonError::into_inner).remove(&task.id);
        created
    }

    async fn create_inner(&self, task: &NewTask, pool: &str, deadline: Duration) -> Result<(), KubeError> {
        let row = self.db.insert_task(task, deadline).await?;
        let cr = task_resource(task, pool, u32::try_from(deadline.as_secs()).unwrap_or(u32::MAX).max(1));
        if let Err(e) = self.tasks.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &cr).await {
            // Nothing half-written: without its CR the row would stay queued forever.
            let _ = self
                .db
                .mirror_task(&Mirror {
                    id: &task.id,
                    status: TaskStatus::Failed,
                    progress: 0.0,
                    worker: None,
                    job_id: None,
                    attempts: 0,
                    error_code: Some(FailReason::InternalError.code()),
                    error_message: Some("the task could not be handed to the cluster"),
                    result: None,
                })
                .await;
            return Err(e.into());
        }
        self.hub.publish(TaskView::from_task(&row));
        info!(task_id = %task.id, pool, "EnhanceTask created");
        Ok(())
    }

    /// Asks the operator to cancel (annotation; the spec is immutable).
    pub async fn cancel(&self, id: &str) -> Result<(), KubeError> {
        let patch = serde_json::json!({"metadata": {"annotations": {CANCEL_ANNOTATION: "true"}}});
        self.tasks.patch(id, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    pub async fn pool(&self, name: &str) -> Result<Option<GpuPool>, KubeError> {
        Ok(self.pools.get_opt(name).await?)
    }

    /// `name`'s status from the watch-fed cache: no API call. Waits (briefly) for the first
    /// list only, so the first health check after a start does not report an empty pool.
    pub async fn pool_status(&self, name: &str) -> Option<GpuPoolStatus> {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pool_cache.wait_until_ready()).await;
        self.pool_cache.get(&ObjectRef::new(name).within(&self.namespace)).and_then(|p| p.status.clone())
    }

    /// Adds (or renames) an external endpoint of `pool`, creating an external-only pool when
    /// there is none. Optimistic concurrency: re-read and retry on conflict. Returns whether
    /// anything changed.
    pub async fn add_external(&self, pool: &str, url: &str, name: &str) -> Result<bool, KubeError> {
        for _ in 0..5 {
            match self.pools.get_opt(pool).await? {
                None => {
                    let p = external_only_pool(pool, ExternalEndpoint { url: url.into(), name: Some(name.into()) });
                    match self.pools.create(&gateway_writes(), &p).await {
                        Ok(_) => return Ok(true),
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(mut p) => {
                    let Some(external) = with_external(&p.spec.external, url, name) else { return Ok(false) };
                    p.spec.external = external;
                    match self.pools.replace(pool, &gateway_writes(), &p).await {
                        Ok(_) => return Ok(true),
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(KubeError::Invalid(format!("GpuPool {pool} kept changing; try again")))
    }

    /// Removes an external endpoint of `pool`; the removed entry, or `None` when it was not
    /// there. The last one leaves the pool in place with `external: []`.
    pub async fn remove_external(&self, pool: &str, url: &str) -> Result<Option<ExternalEndpoint>, KubeError> {
        let norm = |u: &str| u.trim_end_matches('/').to_string();
        for _ in 0..5 {
            let Some(mut p) = self.pools.get_opt(pool).await? else { return Ok(None) };
            let Some(external) = without_external(&p.spec.external, url) else { return Ok(None) };
            let removed = p.spec.external.iter().find(|e| norm(&e.url) == norm(url)).cloned();
            p.spec.external = external;
            match self.pools.replace(pool, &gateway_writes(), &p).await {
                Ok(_) => return Ok(removed),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KubeError::Invalid(format!("GpuPool {pool} kept changing; try again")))
    }

    /// Unregisters the GPU server at `url` (`ip`, `port`): the pool first, then the row, so a
    /// failed cluster change leaves the registration in place for a retry instead of an
    /// endpoint nobody can remove through the webhook. Returns the server id, or `None` when
    /// neither knew it; an endpoint left in the pool without a row is removed too.
    pub async fn unregister(&self, pool: &str, ip: &str, port: u16, url: &str) -> Result<Option<String>, KubeError> {
        let removed = self.remove_external(pool, url).await?;
        let row = self.db.delete_gpu_server(ip, port).await?;
        Ok(row.or_else(|| removed.map(|e| e.name.unwrap_or(e.url))))
    }
}

/// Writes under the gateway's field manager, so `managedFields` say who edited a pool.
fn gateway_writes() -> PostParams {
    PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }
}
/// The pool uploads go to when none was chosen.
pub fn default_pool() -> &'static str {
    DEFAULT_POOL
}
