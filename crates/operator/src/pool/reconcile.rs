//! One GpuPool reconcile: read -> validate -> build desired children -> apply -> probe the
//! workers -> compute the status -> write it if it changed -> publish Events. Only this file
//! and `mod.rs` perform I/O; every decision is made by the pure modules.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use purrify_api::{EnhanceTask, GpuPool, GpuPoolStatus};
use purrify_inference::client::{Fleet, WorkerSpec, normalize_endpoint};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::builder::{self, WorkerDefaults, child_name, owner_reference, selector_string};
use super::error::Error;
use super::scaling::{self, PoolLoad, ScaleInput};
use super::status::{self, PoolEvent, ScaleView, StatusInput};
use super::validate::{self, ValidPool};
use super::workers::{pod_workers, worker_status};
use crate::context::{Context, FIELD_MANAGER};
use crate::metrics::{ControllerLabels, PoolLabels, ReconcileLabels};
use crate::registry::PoolKey;

pub(super) const CONTROLLER: &str = "gpupool";

/// How the GpuPool controller behaves; the CLI fills it from flags.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// How often each pool's workers are probed (and the pool reconciled without a trigger).
    pub probe_interval: Duration,
    /// How often a healthy worker's telemetry (in-flight, GPU numbers, heartbeat) is
    /// refreshed in status; health changes are written at once.
    pub telemetry_refresh: Duration,
    /// Retry delay after a failed reconcile.
    pub error_requeue: Duration,
    /// On shutdown, how long in-flight reconciles may take before they are abandoned.
    pub shutdown_grace: Duration,
    pub worker_defaults: WorkerDefaults,
    /// `reportingInstance` of the Events (the leader's identity).
    pub instance: Option<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(10),
            telemetry_refresh: Duration::from_secs(60),
            error_requeue: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            worker_defaults: WorkerDefaults::default(),
            instance: None,
        }
    }
}

/// What the controller remembers about a pool between reconciles. Lost on restart, which only
/// costs one (server-side no-op) apply per child and a fresh scale-down delay.
#[derive(Debug, Clone, Default)]
struct Memory {
    /// The pool object this memory belongs to: a pool deleted and re-created under the same
    /// name starts afresh.
    uid: String,
    /// Since when the load has asked for fewer replicas than run.
    low_since: Option<Instant>,
    /// The replica count last decided. The operator owns `spec.replicas`: a hand-made change
    /// is reverted at once rather than taken as the new starting point.
    replicas: Option<i32>,
    /// The status last written (or found, when nothing needed writing).
    last_status: Option<GpuPoolStatus>,
    last_full_probe: Option<Instant>,
    /// Per child resource: what was last applied and the object it produced.
    applied: HashMap<&'static str, Applied>,
    /// Generation for which children left over from an in-cluster spec were looked for.
    leftovers_checked: Option<Option<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    hash: u64,
    uid: Option<String>,
    generation: Option<i64>,
}

/// The GpuPool controller's state, shared by its reconciles.
pub struct PoolController {
    pub(super) ctx: Arc<Context>,
    pub(super) config: PoolConfig,
    recorder: Recorder,
    tasks: Store<EnhanceTask>,
    tasks_synced: watch::Receiver<bool>,
    /// Set by the first reconcile, which kube-runtime only starts once the pool cache synced.
    pools_synced: AtomicBool,
    memory: Mutex<HashMap<PoolKey, Memory>>,
}

impl PoolController {
    /// `tasks` is a cache of EnhanceTasks (for pool loads); `tasks_synced` turns true once it
    /// has listed them.
    pub fn new(ctx: Arc<Context>, config: PoolConfig, tasks: Store<EnhanceTask>, tasks_synced: watch::Receiver<bool>) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: config.instance.clone() };
        let recorder = Recorder::new(ctx.client.clone(), reporter);
        Self { ctx, config, recorder, tasks, tasks_synced, pools_synced: AtomicBool::new(false), memory: Mutex::new(HashMap::new()) }
    }

    pub(super) fn pools_synced(&self) -> bool {
        self.pools_synced.load(Ordering::Relaxed)
    }

    fn memory_for(&self, key: &PoolKey, uid: &str) -> Memory {
        let all = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        match all.get(key) {
            Some(m) if m.uid == uid => m.clone(),
            _ => Memory { uid: uid.to_owned(), ..Memory::default() },
        }
    }

    fn remember(&self, key: PoolKey, m: Memory) {
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).insert(key, m);
    }

    /// Drops everything known about a pool that no longer exists.
    pub(super) fn forget(&self, key: &PoolKey) {
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        self.ctx.registry.remove(key);
        let labels = PoolLabels { pool: key.to_string() };
        self.ctx.metrics.healthy_workers.remove(&labels);
    }

    /// Queued and running tasks of the pool, from the task cache.
    fn load(&self, key: &PoolKey) -> PoolLoad {
        let tasks = self.tasks.state();
        PoolLoad::of(tasks.iter().map(|t| t.as_ref()), &key.namespace, &key.name)
    }
}

/// The reconcile entry point for `Controller::run`.
pub async fn reconcile(pool: Arc<GpuPool>, c: Arc<PoolController>) -> Result<Action, Error> {
    let started = Instant::now();
    c.pools_synced.store(true, Ordering::Relaxed);
    let result = reconcile_pool(&pool, &c).await;
    let m = &c.ctx.metrics;
    m.reconcile_duration.get_or_create(&ControllerLabels { controller: CONTROLLER }).observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    m.reconciles.get_or_create(&ReconcileLabels { controller: CONTROLLER, outcome }).inc();
    result
}

pub fn error_policy(pool: Arc<GpuPool>, err: &Error, c: Arc<PoolController>) -> Action {
    warn!(pool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default(), category = err.category(), error = %err, "GpuPool reconcile failed");
    Action::requeue(c.config.error_requeue)
}

#[tracing::instrument(skip_all, fields(pool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default()))]
async fn reconcile_pool(pool: &GpuPool, c: &PoolController) -> Result<Action, Error> {
    let namespace = pool.namespace().ok_or(Error::Incomplete("namespace"))?;
    let key = PoolKey::new(namespace, pool.name_any());
    let uid = pool.uid().ok_or(Error::Incomplete("uid"))?;
    if pool.metadata.deletion_timestamp.is_some() {
        // Owner references take the children away; the janitor forgets the fleet.
        return Ok(Action::await_change());
    }
    let mut memory = c.memory_for(&key, &uid);
    let result = reconcile_with(pool, c, &key, &mut memory).await;
    c.remember(key, memory);
    result
}

async fn reconcile_with(pool: &GpuPool, c: &PoolController, key: &PoolKey, mem: &mut Memory) -> Result<Action, Error> {
    // A queue count from a cache that has not listed yet would read as an empty queue.
    let mut synced = c.tasks_synced.clone();
    if !matches!(tokio::time::timeout(Duration::from_secs(10), synced.wait_for(|s| *s)).await, Ok(Ok(_))) {
        return Err(Error::CacheNotReady("EnhanceTask"));
    }
    let validated = validate::validate(pool);
    let load = c.load(key);
    let fleet = c.ctx.registry.ensure(key);

    let mut scale_view = None;
    let (mut replicas, mut ready_replicas) = (0, 0);
    let mut unready_pods = Vec::new();
    let mut scaled = None;
    match &validated {
        Ok(valid) => {
            let mut members: Vec<WorkerSpec> = valid.external.clone();
            if valid.in_cluster.is_some() {
                let children = apply_children(pool, valid, c, mem, load).await?;
                scale_view = Some(children.scale);
                scaled = children.scaled;
                replicas = children.replicas;
                ready_replicas = children.ready_replicas;
                let pods: Api<Pod> = Api::namespaced(c.ctx.client.clone(), &key.namespace);
                let listed = pods.list(&ListParams::default().labels(&selector_string(&key.name))).await?;
                let found = pod_workers(&listed.items, valid.concurrency_per_replica);
                members.extend(found.ready);
                unready_pods = found.unready;
            } else {
                remove_leftovers(pool, c, mem).await?;
            }
            let added = sync_fleet(&fleet, members)?;
            probe(&fleet, c, mem, &added).await;
        }
        Err(invalid) => {
            // Keep running what runs; only report.
            debug!(%invalid, "invalid GpuPool spec");
            probe(&fleet, c, mem, &[]).await;
        }
    }

    let snapshot = fleet.snapshot();
    let previous = mem.last_status.clone().or_else(|| pool.status.clone());
    let next = status::compute(StatusInput {
        generation: pool.metadata.generation,
        previous: previous.as_ref(),
        invalid: validated.as_ref().err(),
        scale: scale_view,
        replicas,
        ready_replicas,
        workers: snapshot.workers.iter().map(worker_status).collect(),
        queue: load.queued,
        now: SystemTime::now(),
        telemetry_refresh: c.config.telemetry_refresh,
    });
    let mut events = status::transitions(previous.as_ref(), &next, &unready_pods);
    if let Some((from, to)) = scaled {
        let note = format!("scaled from {from} to {to} replicas ({} queued, {} running)", load.queued, load.running);
        info!(from, to, queued = load.queued, running = load.running, "scaled");
        events.insert(0, PoolEvent { warning: false, reason: "Scaled", note });
    }
    if previous.as_ref() != Some(&next) {
        write_status(pool, c, &next).await?;
    }
    mem.last_status = Some(next.clone());

    let labels = PoolLabels { pool: key.to_string() };
    // `queue_depth` is the task controller's: its index sees every task event, this count
    // only every reconcile.
    c.ctx.metrics.healthy_workers.get_or_create(&labels).set(i64::from(next.healthy_workers));
    publish(pool, c, events).await;
    Ok(Action::requeue(c.config.probe_interval))
}

struct Children {
    scale: ScaleView,
    scaled: Option<(i32, i32)>,
    replicas: i32,
    ready_replicas: i32,
}

async fn apply_children(
    pool: &GpuPool,
    valid: &ValidPool,
    c: &PoolController,
    mem: &mut Memory,
    load: PoolLoad,
) -> Result<Children, Error> {
    let Some(ic) = valid.in_cluster.as_ref() else { unreachable!("only called for in-cluster pools") };
    let ns = &valid.key.namespace;
    let name = child_name(&valid.key.name);
    let client = &c.ctx.client;
    let owner = owner_reference(pool).ok_or(Error::Incomplete("uid"))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);

    let observed = owned(deployments.get_opt(&name).await?, &owner.uid, "Deployment")?;
    let observed_replicas = observed.as_ref().and_then(|d| d.spec.replicas);
    // After a restart the Deployment is the only record of what was decided.
    let current = mem.replicas.or(observed_replicas);
    let decision = scaling::decide(
        ScaleInput {
            min: ic.min,
            max: ic.max,
            target_queue_per_replica: ic.scaling.target_queue_per_replica,
            scale_down_delay: Duration::from_secs(u64::from(ic.scaling.scale_down_delay_seconds)),
            load,
            current,
        },
        mem.low_since,
        Instant::now(),
    );
    mem.low_since = decision.low_since;
    mem.replicas = Some(decision.replicas);
    let desired = builder::desired(valid, ic, decision.replicas, &owner, &c.config.worker_defaults);

    let deployment = apply(c, mem, "deployments", &deployments, &desired.deployment, observed.as_ref()).await?;
    let observed = owned(services.get_opt(&name).await?, &owner.uid, "Service")?;
    apply(c, mem, "services", &services, &desired.service, observed.as_ref()).await?;
    let observed = owned(pdbs.get_opt(&name).await?, &owner.uid, "PodDisruptionBudget")?;
    apply(c, mem, "poddisruptionbudgets", &pdbs, &desired.pdb, observed.as_ref()).await?;

    let status = deployment.status.as_ref();
    Ok(Children {
        scale: ScaleView { wanted: decision.wanted, max: ic.max, limited: decision.limited },
        scaled: current.filter(|c| *c != decision.replicas).map(|c| (c, decision.replicas)),
        replicas: status.and_then(|s| s.replicas).unwrap_or(0),
        ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
    })
}

/// `Some(obj)` when the object is ours or unclaimed (server-side apply adopts it), an error
/// when another controller owns it: taking over someone else's Deployment would fight it.
fn owned<K: Resource>(obj: Option<K>, owner_uid: &str, kind: &'static str) -> Result<Option<K>, Error> {
    match obj {
        Some(o) if o.owner_references().iter().any(|r| r.controller == Some(true) && r.uid != owner_uid) => Err(Error::NotOwned {
            kind,
            namespace: o.meta().namespace.clone().unwrap_or_default(),
            name: o.meta().name.clone().unwrap_or_default(),
        }),
        other => Ok(other),
    }
}

/// Server-side applies `desired` unless it is what was last applied and the object has not
/// changed since (same uid and generation): the steady state then costs no write at all.
async fn apply<K>(
    c: &PoolController,
    mem: &mut Memory,
    resource: &'static str,
    api: &Api<K>,
    desired: &K,
    observed: Option<&K>,
) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let hash = hash_of(desired);
    if let (Some(obs), Some(last)) = (observed, mem.applied.get(resource))
        && last.hash == hash
        && last.uid == obs.meta().uid
        && last.generation == obs.meta().generation
    {
        return Ok(obs.clone());
    }
    let name = desired.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api.patch(&name, &params, &Patch::Apply(desired)).await?;
    c.ctx.metrics.write("apply", resource);
    debug!(resource, name, "applied");
    mem.applied.insert(resource, Applied { hash, uid: applied.meta().uid.clone(), generation: applied.meta().generation });
    Ok(applied)
}

fn hash_of<T: Serialize>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(v).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// A pool that went from in-cluster replicas to external-only keeps no Deployment. Looked
/// for once per generation, since only a spec change can make children left over.
async fn remove_leftovers(pool: &GpuPool, c: &PoolController, mem: &mut Memory) -> Result<(), Error> {
    if mem.leftovers_checked == Some(pool.metadata.generation) {
        return Ok(());
    }
    let ns = pool.namespace().unwrap_or_default();
    let uid = pool.uid().unwrap_or_default();
    let name = child_name(&pool.name_any());
    let client = &c.ctx.client;
    delete_if_ours(c, &Api::<Deployment>::namespaced(client.clone(), &ns), "deployments", &name, &uid).await?;
    delete_if_ours(c, &Api::<Service>::namespaced(client.clone(), &ns), "services", &name, &uid).await?;
    delete_if_ours(c, &Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns), "poddisruptionbudgets", &name, &uid).await?;
    mem.applied.clear();
    mem.replicas = None;
    mem.low_since = None;
    mem.leftovers_checked = Some(pool.metadata.generation);
    Ok(())
}

async fn delete_if_ours<K>(c: &PoolController, api: &Api<K>, resource: &'static str, name: &str, owner_uid: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(obj) = api.get_opt(name).await? else { return Ok(()) };
    if obj.owner_references().iter().any(|r| r.controller == Some(true) && r.uid == owner_uid) {
        api.delete(name, &DeleteParams::background()).await?;
        c.ctx.metrics.write("delete", resource);
        info!(resource, name, "removed a child the pool no longer needs");
    }
    Ok(())
}

/// Makes the fleet exactly `members`; returns the endpoints that joined.
fn sync_fleet(fleet: &Fleet, members: Vec<WorkerSpec>) -> Result<Vec<String>, Error> {
    let before: HashSet<String> = fleet.endpoints().into_iter().collect();
    let mut added = Vec::new();
    for m in &members {
        let key = normalize_endpoint(&m.endpoint)?;
        if !before.contains(&key) {
            added.push(key);
        }
    }
    fleet.sync(members)?;
    Ok(added)
}

/// Probes the whole fleet when the last full round is older than half the interval (the
/// periodic reconcile), otherwise only workers that just joined: reconciles triggered by
/// pod or status changes in between need not hit every worker again.
async fn probe(fleet: &Fleet, c: &PoolController, mem: &mut Memory, added: &[String]) {
    let due = mem.last_full_probe.is_none_or(|t| t.elapsed() >= c.config.probe_interval / 2);
    if due {
        let summary = fleet.probe_once().await;
        debug!(?summary, "probed workers");
        mem.last_full_probe = Some(Instant::now());
    } else if !added.is_empty() {
        join_all(added.iter().map(|e| fleet.probe_worker(e))).await;
    }
}

async fn write_status(pool: &GpuPool, c: &PoolController, status: &GpuPoolStatus) -> Result<(), Error> {
    let ns = pool.namespace().unwrap_or_default();
    let api: Api<GpuPool> = Api::namespaced(c.ctx.client.clone(), &ns);
    // Apply rather than merge: fields this status no longer has (a removed worker list,
    // observedGeneration) are then removed instead of lingering.
    let body = serde_json::json!({
        "apiVersion": GpuPool::api_version(&()),
        "kind": GpuPool::kind(&()),
        "status": status,
    });
    api.patch_status(&pool.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    c.ctx.metrics.write("patch_status", "gpupools");
    Ok(())
}

/// Events are best effort: a failure to record one must not fail or repeat the reconcile.
async fn publish(pool: &GpuPool, c: &PoolController, events: Vec<PoolEvent>) {
    if events.is_empty() {
        return;
    }
    let reference = pool.object_ref(&());
    for e in events {
        let event = Event {
            type_: if e.warning { EventType::Warning } else { EventType::Normal },
            reason: e.reason.into(),
            note: Some(truncate(&e.note, 1000)),
            action: if e.reason == "Scaled" { "Scale" } else { "Reconcile" }.into(),
            secondary: None,
        };
        match c.recorder.publish(&event, &reference).await {
            Ok(()) => c.ctx.metrics.write("create", "events"),
            Err(err) => warn!(reason = e.reason, error = %err, "could not record an Event"),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
