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

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use purrify_api::{
    DEFAULT_POOL, EnhanceTask, EnhanceTaskSpec, ExternalEndpoint, GpuPool, GpuPoolSpec, GpuPoolStatus, OutputFormat, QualityLevel,
    TaskInput, TaskOutput, TaskParams, TaskPhase,
};
use purrify_inference::protocol::{FaceRestoration, JobResult};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::tasks::db::{Db, DbError, Mirror};
use crate::tasks::hub::{ProgressHub, TaskView};
use crate::tasks::model::{NewTask, TaskFailure, TaskStatus, now_ms};

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
    Db(#[from] DbError),
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

/// Seed status of a CR phase.
pub fn status_of(phase: TaskPhase) -> TaskStatus {
    match phase {
        TaskPhase::Queued => TaskStatus::Queued,
        TaskPhase::Running => TaskStatus::Processing,
        TaskPhase::Succeeded => TaskStatus::Completed,
        TaskPhase::Failed => TaskStatus::Failed,
        TaskPhase::Cancelled => TaskStatus::Cancelled,
    }
}

/// The gateway's bounded task error codes for the operator's reasons.
pub fn code_of(reason: &str) -> &'static str {
    match reason {
        "BadInput" => "BAD_INPUT",
        "TooLarge" => "IMAGE_TOO_LARGE",
        "InvalidParams" => "INVALID_PARAMS",
        "StorageError" => "STORAGE_ERROR",
        "InferenceFailed" => "PROCESSING_FAILED",
        "WorkerUnavailable" => "WORKER_UNAVAILABLE",
        "DeadlineExceeded" => "PROCESSING_TIMEOUT",
        "Cancelled" => "CANCELLED",
        _ => "INTERNAL_ERROR",
    }
}

/// What clients see of a task CR.
pub fn view_of(task: &EnhanceTask) -> Option<TaskView> {
    let id = task.metadata.name.clone()?;
    let st = task.status.clone().unwrap_or_default();
    let status = status_of(st.phase);
    let result = st.result.as_ref().map(|r| JobResult {
        output_uri: r.uri.clone(),
        // Results recorded by an operator older than these fields lack them: the requested
        // format and the face count are then the best information there is.
        content_type: r.content_type.clone().unwrap_or_else(|| task.spec.params.output_format.content_type().into()),
        width: r.width,
        height: r.height,
        bytes: r.bytes,
        faces: r.faces,
        face_restoration: match r.face_restoration {
            Some(purrify_api::FaceRestoration::Applied) => FaceRestoration::Applied,
            Some(purrify_api::FaceRestoration::Disabled) => FaceRestoration::Disabled,
            Some(purrify_api::FaceRestoration::NotConfigured) => FaceRestoration::NotConfigured,
            Some(purrify_api::FaceRestoration::NoFaces) => FaceRestoration::NoFaces,
            None if r.faces > 0 => FaceRestoration::Applied,
            None if !task.spec.params.face_enhance => FaceRestoration::Disabled,
            None => FaceRestoration::NoFaces,
        },
        model: String::new(),
        elapsed_ms: 0,
    });
    let error = match (status, st.error.as_ref()) {
        (TaskStatus::Failed | TaskStatus::Cancelled, Some(e)) => {
            Some(TaskFailure { code: code_of(&e.reason).to_string(), message: e.message.clone() })
        }
        _ => None,
    };
    Some(TaskView {
        task_id: id,
        status,
        progress: if status == TaskStatus::Completed { 1.0 } else { st.progress },
        stage: None,
        error,
        result,
        user_id: task.spec.owner.as_ref().map(|o| o.user_id.clone()),
        updated_at: now_ms(),
    })
}

fn quality(q: purrify_inference::protocol::QualityLevel) -> QualityLevel {
    match q {
        purrify_inference::protocol::QualityLevel::High => QualityLevel::High,
        purrify_inference::protocol::QualityLevel::Medium => QualityLevel::Medium,
        purrify_inference::protocol::QualityLevel::Fast => QualityLevel::Fast,
    }
}

fn format(f: purrify_inference::protocol::OutputFormat) -> OutputFormat {
    match f {
        purrify_inference::protocol::OutputFormat::Jpeg => OutputFormat::Jpeg,
        purrify_inference::protocol::OutputFormat::Png => OutputFormat::Png,
        purrify_inference::protocol::OutputFormat::Webp => OutputFormat::Webp,
    }
}

/// The EnhanceTask for an accepted upload (pure).
pub fn task_resource(task: &NewTask, pool: &str, deadline_seconds: u32) -> EnhanceTask {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_MANAGED_BY.to_string(), "purrify-gateway".to_string());
    labels.insert(LABEL_POOL.to_string(), pool.to_string());
    let mut annotations = BTreeMap::new();
    if let Some(rid) = &task.request_id {
        annotations.insert("purrify.io/request-id".to_string(), rid.clone());
    }
    EnhanceTask {
        metadata: ObjectMeta { name: Some(task.id.clone()), labels: Some(labels), annotations: Some(annotations), ..Default::default() },
        spec: EnhanceTaskSpec {
            pool: pool.to_string(),
            input: TaskInput { uri: task.input_uri.clone(), content_type: Some(task.content_type.clone()), bytes: Some(task.input_bytes) },
            output: TaskOutput { uri: task.output_uri.clone() },
            params: TaskParams {
                tile_size: task.params.tile_size,
                quality_level: quality(task.params.quality_level),
                scale: task.params.scale,
                face_enhance: task.params.face_enhance,
                output_format: format(task.params.output_format),
            },
            priority: task.priority,
            deadline_seconds,
            // The gateway keeps the history; the CR can go soon after it finished.
            ttl_seconds_after_finished: Some(300),
            owner: task.user_id.clone().map(|user_id| purrify_api::TaskOwner { user_id }),
        },
        status: None,
    }
}

/// `spec.external` with `url` added (or renamed), or `None` when nothing changes (pure).
pub fn with_external(external: &[ExternalEndpoint], url: &str, name: &str) -> Option<Vec<ExternalEndpoint>> {
    let norm = |u: &str| u.trim_end_matches('/').to_string();
    let mut out = external.to_vec();
    match out.iter_mut().find(|e| norm(&e.url) == norm(url)) {
        Some(e) if e.name.as_deref() == Some(name) => return None,
        Some(e) => e.name = Some(name.to_string()),
        None => out.push(ExternalEndpoint { url: url.to_string(), name: Some(name.to_string()) }),
    }
    Some(out)
}

/// `spec.external` without `url`, or `None` when it was not there (pure).
pub fn without_external(external: &[ExternalEndpoint], url: &str) -> Option<Vec<ExternalEndpoint>> {
    let norm = |u: &str| u.trim_end_matches('/').to_string();
    let out: Vec<_> = external.iter().filter(|e| norm(&e.url) != norm(url)).cloned().collect();
    (out.len() != external.len()).then_some(out)
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

    /// Watches the namespace's EnhanceTasks: every change goes to the hub; finished ones into
    /// the history database. Deletions end unfinished tasks; after every (re)list, unfinished
    /// rows whose CR is gone are ended too, since a watch that was down saw no delete.
    async fn mirror_loop(&self) {
        let stream = watcher::watcher(self.tasks.clone(), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listed: HashSet<String> = HashSet::new();
        let mut list_started = now_ms();
        loop {
            match stream.try_next().await {
                Ok(Some(Event::Apply(t))) => self.mirror(&t).await,
                Ok(Some(Event::InitApply(t))) => {
                    if let Some(name) = &t.metadata.name {
                        listed.insert(name.clone());
                    }
                    self.mirror(&t).await;
                }
                Ok(Some(Event::Delete(t))) => self.deleted(&t).await,
                Ok(Some(Event::Init)) => {
                    listed.clear();
                    list_started = now_ms();
                }
                Ok(Some(Event::InitDone)) => self.end_missing(&std::mem::take(&mut listed), list_started).await,
                Ok(None) => break,
                Err(e) => warn!(error = %e, "EnhanceTask watch error; retrying"),
            }
        }
    }

    /// A task CR is gone. A finished one (TTL) keeps its outcome, recorded once more in case
    /// the watch missed it; an unfinished one ends here, or it would stay queued forever.
    async fn deleted(&self, t: &EnhanceTask) {
        let Some(id) = t.metadata.name.as_deref() else { return };
        let st = t.status.clone().unwrap_or_default();
        if st.phase.is_finished() {
            debug!(task = id, phase = st.phase.as_str(), "finished task CR deleted");
            self.mirror(t).await;
            return;
        }
        let cancel_asked = t.metadata.annotations.as_ref().and_then(|a| a.get(CANCEL_ANNOTATION)).is_some_and(|v| v == "true");
        info!(task = id, phase = st.phase.as_str(), cancel_asked, "task CR deleted before it finished");
        let user = t.spec.owner.as_ref().map(|o| o.user_id.clone());
        self.end_task(id, cancel_asked, DELETED_MESSAGE, f64::from(st.progress), st.attempts, user).await;
    }

    /// Ends unfinished rows whose CR was not in the list that started at `list_started`.
    /// Each candidate is confirmed gone with a GET, so a CR created after the list began is
    /// never mistaken for a deleted one; candidates are rare, so that costs next to nothing.
    async fn end_missing(&self, listed: &HashSet<String>, list_started: i64) {
        let rows = match (self.db.queued_tasks(u32::MAX).await, self.db.processing_tasks().await) {
            (Ok(q), Ok(p)) => q.into_iter().chain(p),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot read unfinished tasks to check them against the cluster");
                return;
            }
        };
        let candidates: Vec<_> = {
            let creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
            rows.filter(|r| !listed.contains(&r.id) && !creating.contains(&r.id))
                .filter(|r| r.status != TaskStatus::Queued || r.created_at < list_started - CREATE_GRACE_MS)
                .collect()
        };
        for row in candidates {
            match self.tasks.get_opt(&row.id).await {
                Ok(None) => {
                    info!(task = %row.id, status = row.status.as_str(), "unfinished task has no CR any more");
                    self.end_task(&row.id, false, MISSING_MESSAGE, row.progress, row.attempts, row.user_id.clone()).await;
                }
                Ok(Some(_)) => {}
                Err(e) => warn!(task = %row.id, error = %e, "cannot check whether the task CR still exists"),
            }
        }
    }

    /// Records the terminal state of a task whose CR is gone: cancelled when the gateway
    /// asked for that, failed otherwise.
    async fn end_task(&self, id: &str, cancelled: bool, message: &str, progress: f64, attempts: u32, user_id: Option<String>) {
        let (status, code, message) = if cancelled {
            (TaskStatus::Cancelled, code_of("Cancelled"), "the task was cancelled")
        } else {
            // No operator reason applies; the bounded codes have no better word for it.
            (TaskStatus::Failed, "INTERNAL_ERROR", message)
        };
        let m = Mirror {
            id,
            status,
            progress,
            worker: None,
            job_id: None,
            attempts,
            error_code: Some(code),
            error_message: Some(message),
            result: None,
        };
        if let Err(e) = self.db.mirror_task(&m).await {
            warn!(task = id, error = %e, "cannot record the end of a deleted task");
        }
        self.hub.publish(TaskView {
            task_id: id.to_string(),
            status,
            progress: progress as f32,
            stage: None,
            error: Some(TaskFailure { code: code.to_string(), message: message.to_string() }),
            result: None,
            user_id,
            updated_at: now_ms(),
        });
    }

    async fn mirror(&self, t: &EnhanceTask) {
        let Some(view) = view_of(t) else { return };
        let st = t.status.clone().unwrap_or_default();
        if view.status != TaskStatus::Queued {
            let m = Mirror {
                id: &view.task_id,
                status: view.status,
                progress: f64::from(view.progress),
                worker: st.worker.as_deref(),
                job_id: st.job_id.as_deref(),
                attempts: st.attempts,
                error_code: view.error.as_ref().map(|e| e.code.as_str()),
                error_message: view.error.as_ref().map(|e| e.message.as_str()),
                result: view.result.as_ref(),
            };
            if let Err(e) = self.db.mirror_task(&m).await {
                warn!(task = %view.task_id, error = %e, "cannot record task state");
            }
        }
        self.hub.publish(view);
    }

    /// Follows the operator's progress stream (SSE of `{namespace, name, phase, progress}`),
    /// reconnecting with a pause; progress between CR writes comes only from here.
    async fn progress_loop(&self, base: String) {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/progress", base.trim_end_matches('/'));
        loop {
            match http.get(&url).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let mut parser = purrify_inference::client::SseParser::new();
                    let mut body = resp.bytes_stream();
                    while let Some(Ok(chunk)) = body.next().await {
                        let Ok(events) = parser.feed(&chunk) else { break };
                        for ev in events {
                            self.progress_event(&ev.data);
                        }
                    }
                }
                Ok(resp) => debug!(status = %resp.status(), "operator progress stream refused"),
                Err(e) => debug!(error = %e, "operator progress stream unreachable"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    fn progress_event(&self, data: &str) {
        #[derive(serde::Deserialize)]
        struct Update {
            namespace: String,
            name: String,
            progress: f32,
        }
        let Ok(u) = serde_json::from_str::<Update>(data) else { return };
        if u.namespace != self.namespace {
            return;
        }
        if let Some(current) = self.hub.get(&u.name)
            && current.status == TaskStatus::Processing
            && (u.progress - current.progress).abs() > f32::EPSILON
        {
            let mut v = (*current).clone();
            v.progress = u.progress.clamp(0.0, 1.0);
            v.updated_at = now_ms();
            self.hub.publish(v);
        }
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
                    error_code: Some("INTERNAL_ERROR"),
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

/// A new external-only pool holding `endpoint`, every other field at the CRD's default.
pub fn external_only_pool(name: &str, endpoint: ExternalEndpoint) -> GpuPool {
    GpuPool {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: GpuPoolSpec::external_only(vec![endpoint]),
        status: None,
    }
}

/// The pool uploads go to when none was chosen.
pub fn default_pool() -> &'static str {
    DEFAULT_POOL
}

#[cfg(test)]
mod tests {
    use super::*;
    use purrify_inference::protocol::EnhanceParams;

    #[test]
    fn phases_map_to_the_seed_words() {
        assert_eq!(status_of(TaskPhase::Running).as_str(), "processing");
        assert_eq!(status_of(TaskPhase::Succeeded).as_str(), "completed");
        assert_eq!(code_of("DeadlineExceeded"), "PROCESSING_TIMEOUT");
        assert_eq!(code_of("something new"), "INTERNAL_ERROR");
    }

    #[test]
    fn uploads_become_task_resources() {
        let mut t = NewTask::new("abc123", "file:///s/in.jpg", "file:///s/out.jpg", EnhanceParams::default());
        t.user_id = Some("10.0.0.9".into());
        t.request_id = Some("req-1".into());
        let cr = task_resource(&t, "gpu-a", 300);
        assert_eq!(cr.metadata.name.as_deref(), Some("abc123"));
        assert_eq!(cr.spec.pool, "gpu-a");
        assert_eq!(cr.spec.params.tile_size, 400);
        assert_eq!(cr.spec.owner.unwrap().user_id, "10.0.0.9");
        assert_eq!(cr.metadata.labels.unwrap()[LABEL_POOL], "gpu-a");
        assert_eq!(cr.metadata.annotations.unwrap()["purrify.io/request-id"], "req-1");
    }

    #[test]
    fn task_results_report_what_the_worker_said() {
        let task = |result: serde_json::Value, face_enhance: bool| -> EnhanceTask {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "purrify.io/v1alpha1", "kind": "EnhanceTask",
                "metadata": {"name": "t1", "namespace": "default"},
                "spec": {"input": {"uri": "file:///s/in.png"}, "output": {"uri": "file:///s/out.webp"},
                         "params": {"outputFormat": "webp", "faceEnhance": face_enhance}},
                "status": {"phase": "Succeeded", "progress": 1.0, "result": result},
            }))
            .unwrap()
        };
        let base = serde_json::json!({"uri": "file:///s/out.webp", "width": 8, "height": 6, "bytes": 99, "faces": 0});
        let mut current = base.clone();
        current["contentType"] = "image/webp".into();
        current["faceRestoration"] = "notConfigured".into();
        let r = view_of(&task(current, true)).unwrap().result.unwrap();
        assert_eq!((r.content_type.as_str(), r.face_restoration), ("image/webp", FaceRestoration::NotConfigured));
        // An older operator's result: the requested format and the face count are all there is.
        let r = view_of(&task(base.clone(), true)).unwrap().result.unwrap();
        assert_eq!((r.content_type.as_str(), r.face_restoration), ("image/webp", FaceRestoration::NoFaces));
        let r = view_of(&task(base, false)).unwrap().result.unwrap();
        assert_eq!(r.face_restoration, FaceRestoration::Disabled);
    }

    #[test]
    fn an_external_only_pool_gets_the_crd_defaults() {
        let p = external_only_pool("default", ExternalEndpoint { url: "http://203.0.113.7:8000".into(), name: Some("gpu-1".into()) });
        assert_eq!(p.metadata.name.as_deref(), Some("default"));
        assert_eq!(p.spec.concurrency_per_replica, 2, "the CRD requires at least 1");
        assert!(p.spec.image.is_none() && p.spec.replicas.is_none());
        assert_eq!(p.spec.external.len(), 1);
        // What the API server stores for `spec: {external: [...]}` is the same spec.
        let admin: GpuPoolSpec = serde_json::from_value(serde_json::json!({ "external": [p.spec.external[0]] })).unwrap();
        assert_eq!(p.spec, admin);
    }

    #[test]
    fn external_endpoints_are_added_once_and_removed() {
        let e = with_external(&[], "http://203.0.113.7:8000", "gpu-1").unwrap();
        assert_eq!(e.len(), 1);
        assert!(with_external(&e, "http://203.0.113.7:8000/", "gpu-1").is_none(), "idempotent");
        assert_eq!(with_external(&e, "http://203.0.113.7:8000", "gpu-9").unwrap()[0].name.as_deref(), Some("gpu-9"));
        assert!(without_external(&e, "http://203.0.113.8:8000").is_none());
        assert!(without_external(&e, "http://203.0.113.7:8000").unwrap().is_empty());
    }
}
