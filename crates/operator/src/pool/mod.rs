//! The GpuPool controller: each pool becomes a Deployment of inference workers with a Service
//! and a PodDisruptionBudget (for in-cluster replicas), a fleet of probed workers in the
//! shared [`Registry`](crate::registry::Registry) (its ready pods plus its external
//! endpoints), replicas scaled on the pool's load (queued plus running tasks), and a status
//! with worker health, GPU telemetry and `Ready`/`Degraded`/`ScalingLimited` conditions.
//!
//! Pure parts: [`validate`], [`builder`] (desired children), [`scaling`], [`workers`] (pods and
//! snapshots to fleet members and status entries), [`status`] (status and Events). I/O lives in
//! [`reconcile`] and [`run`].

pub mod builder;
pub mod error;
pub mod reconcile;
pub mod scaling;
pub mod status;
pub mod validate;
pub mod workers;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use purrify_api::{EnhanceTask, GpuPool};
use tracing::{info, warn};

pub use error::Error;
pub use reconcile::{PoolConfig, PoolController};

use crate::context::Context;
use crate::registry::PoolKey;

/// `(apiGroup, resource, verbs)` this controller uses; `deploy/operator-rbac.yaml` must grant
/// exactly these (a test checks). Keep in step with the calls in `reconcile.rs` and [`run`].
pub const PERMISSIONS: &[(&str, &str, &[&str])] = &[
    ("purrify.io", "gpupools", &["list", "watch"]),
    ("purrify.io", "gpupools/status", &["patch"]),
    ("purrify.io", "enhancetasks", &["list", "watch"]),
    // `create`: a server-side apply that creates the object is authorised as a create too.
    ("apps", "deployments", &["get", "list", "watch", "create", "patch", "delete"]),
    ("", "services", &["get", "list", "watch", "create", "patch", "delete"]),
    ("policy", "poddisruptionbudgets", &["get", "list", "watch", "create", "patch", "delete"]),
    ("", "pods", &["list", "watch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the GpuPool controller until `shutdown` completes (in-flight reconciles finish first).
/// Call only while leader.
pub async fn run(ctx: Arc<Context>, config: PoolConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let client = ctx.client.clone();
    let ns = ctx.namespace.as_deref();

    // Queue depth per pool comes from a cache of the tasks rather than a list per reconcile:
    // a busy namespace holds thousands of them.
    let (tasks, writer) = reflector::store::<EnhanceTask>();
    // Readiness is tracked here rather than with `Store::wait_until_ready`, whose signal wakes
    // only one of several waiting reconciles.
    let (tasks_synced, synced) = tokio::sync::watch::channel(false);
    let task_watch = reflector::reflector(writer, watcher(api::<EnhanceTask>(&client, ns), watcher::Config::default()))
        .default_backoff()
        .for_each(move |ev| {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    tasks_synced.send_replace(true);
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "EnhanceTask watch failed; retrying"),
            }
            futures::future::ready(())
        });
    let task_watch = tokio::spawn({
        let stop = shutdown.clone();
        async move {
            tokio::select! {
                () = task_watch => {},
                () = stop => {},
            }
        }
    });

    let state = Arc::new(PoolController::new(ctx.clone(), config.clone(), tasks, synced));
    let children = watcher::Config::default().labels(&format!("{}={}", builder::MANAGED_BY_LABEL, builder::MANAGED_BY));
    let pods = watcher::Config::default().labels(&format!("{}={},{}", builder::NAME_LABEL, builder::WORKER_APP, builder::POOL_LABEL));
    let controller = Controller::new(api::<GpuPool>(&client, ns), watcher::Config::default())
        .owns(api::<Deployment>(&client, ns), children.clone())
        .owns(api::<Service>(&client, ns), children.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), children)
        // Pods are not owned by the pool (their ReplicaSet is); their label names it. A pod
        // turning ready must join the fleet without waiting for the next periodic probe.
        .watches(api::<Pod>(&client, ns), pods, |pod: Pod| {
            let pool = pod.labels().get(builder::POOL_LABEL).cloned();
            let ns = pod.namespace();
            pool.zip(ns).map(|(pool, ns)| ObjectRef::<GpuPool>::new(&pool).within(&ns))
        })
        .graceful_shutdown_on(shutdown.clone());

    let janitor = tokio::spawn(janitor(controller.store(), state.clone(), shutdown.clone()));
    info!(namespace = ns.unwrap_or("*"), "GpuPool controller started");
    let grace = config.shutdown_grace;
    let running = controller.run(reconcile::reconcile, reconcile::error_policy, state).for_each(|res| {
        if let Err(e) = res {
            // Reconcile failures are logged by the error policy; these are watch and
            // queue errors, retried by the controller.
            tracing::debug!(error = %e, "GpuPool controller event");
        }
        futures::future::ready(())
    });
    // kube-runtime finishes in-flight reconciles on shutdown, but a controller whose pool
    // cache never synced (CRD missing, RBAC denied) would wait for that sync forever.
    tokio::select! {
        () = running => {},
        () = async { shutdown.clone().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "GpuPool controller did not stop in time; abandoning its reconciles");
        }
    }
    janitor.abort();
    task_watch.abort();
    info!("GpuPool controller stopped");
    Ok(())
}

/// Forgets pools that were deleted: the controller is not called for objects that are gone,
/// so their fleets (and metric series) would otherwise outlive them.
async fn janitor(pools: Store<GpuPool>, state: Arc<PoolController>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(state.config.probe_interval);
    // A fleet is forgotten only when its pool is missing twice in a row, so a pool created
    // just now (whose fleet the task controller may already hold) is not caught between its
    // watch event and the cache.
    let mut missing_before: HashSet<PoolKey> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => return,
        }
        // Not `Store::wait_until_ready`: its signal wakes a single waiter, and the
        // controller's runner waits on it. The runner only reconciles once the store has
        // synced, so a first reconcile is the same signal.
        if !state.pools_synced() {
            continue;
        }
        let live: HashSet<PoolKey> = pools.state().iter().map(|p| PoolKey::new(p.namespace().unwrap_or_default(), p.name_any())).collect();
        let mut missing = HashSet::new();
        for key in state.ctx.registry.pools() {
            let in_scope = state.ctx.namespace.as_deref().is_none_or(|ns| ns == key.namespace);
            if !in_scope || live.contains(&key) {
                continue;
            }
            if missing_before.contains(&key) {
                info!(pool = %key, "pool deleted; forgetting its workers");
                state.forget(&key);
            } else {
                missing.insert(key);
            }
        }
        missing_before = missing;
    }
}
