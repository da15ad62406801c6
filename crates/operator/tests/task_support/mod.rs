//! Shared support of the task controller tests: kubesim in process with the project's CRDs,
//! an operator context on it, fleets registered by hand (no GpuPool controller here), the
//! controller started and stopped like the cli would. The fake worker is purrify-testkit's.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use purrify_api::{EnhanceTask, EnhanceTaskSpec, TaskPhase};
use purrify_operator::context::Context;
use purrify_operator::metrics::{Metrics, WriteLabels};
use purrify_operator::registry::{PoolKey, Registry};
use purrify_operator::task::{self, ProgressHub, TaskConfig};
pub use purrify_testkit::eventually;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const NS: &str = "default";
pub const POOL: &str = "default";

pub struct Env {
    pub sim: kubesim::ServerHandle,
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub hub: ProgressHub,
}

pub fn test_config() -> TaskConfig {
    TaskConfig {
        tick_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(50),
        progress_write_delay: Duration::from_millis(50),
        cancel_timeout: Duration::from_secs(2),
        reattach_grace: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(5),
        ..TaskConfig::default()
    }
}

pub async fn client_for(addr: std::net::SocketAddr) -> Client {
    let config = kube::Config::new(format!("http://{addr}").parse().expect("cluster URL"));
    Client::try_from(config).expect("kube client")
}

impl Env {
    pub async fn start() -> Env {
        let (addr, sim) = kubesim::Server::start("127.0.0.1:0".parse().unwrap()).await.expect("kubesim starts");
        let client = client_for(addr).await;
        purrify_testkit::cluster::install_crds(&client).await;
        Env { sim, client, metrics: Arc::new(Metrics::new()), hub: ProgressHub::new() }
    }

    /// A fresh operator process's context: its own registry (fleets start empty).
    pub fn context(&self) -> Arc<Context> {
        Arc::new(Context {
            client: self.client.clone(),
            registry: Arc::new(Registry::new(purrify_testkit::fake_worker::fleet_config())),
            metrics: self.metrics.clone(),
            namespace: None,
        })
    }

    pub fn tasks(&self) -> Api<EnhanceTask> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// A task from the fixture, renamed and adjusted by `f`.
    pub async fn create(&self, name: &str, f: impl FnOnce(&mut EnhanceTaskSpec)) -> EnhanceTask {
        let mut t = fixture_task();
        t.metadata.name = Some(name.into());
        f(&mut t.spec);
        self.tasks().create(&PostParams::default(), &t).await.unwrap_or_else(|e| panic!("creating {name}: {e}"))
    }

    pub async fn get(&self, name: &str) -> Option<EnhanceTask> {
        self.tasks().get_opt(name).await.unwrap()
    }

    pub async fn wait_phase(&self, name: &str, phase: TaskPhase) -> EnhanceTask {
        eventually(60, &format!("{name} to be {}", phase.as_str()), || async {
            self.get(name).await.filter(|t| t.status.as_ref().is_some_and(|s| s.phase == phase))
        })
        .await
    }

    pub async fn wait_gone(&self, name: &str) {
        eventually(60, &format!("{name} to be deleted"), || async { self.get(name).await.is_none().then_some(()) }).await
    }

    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.tasks().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }

    /// Requests the API server served for `verb` on `resource` (any status code).
    pub fn served(&self, verb: &str, resource: &str) -> u64 {
        self.sim.request_count(verb, resource)
    }

    /// Writes to EnhanceTasks the server saw: creates, status patches, deletes, anything.
    pub fn task_writes(&self) -> u64 {
        ["create", "update", "patch", "apply", "delete"]
            .iter()
            .map(|v| self.served(v, "enhancetasks") + self.served(v, "enhancetasks/status"))
            .sum()
    }

    /// The operator's own count of its writes.
    pub fn operator_writes(&self, verb: &'static str, resource: &'static str) -> u64 {
        self.metrics.api_writes.get_or_create(&WriteLabels { verb, resource }).get()
    }
}

pub fn fixture_task() -> EnhanceTask {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/task/enhancetask.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("fixture parses")
}

/// Registers and probes workers in the pool's fleet, as the GpuPool controller would.
pub async fn add_workers(ctx: &Context, urls: &[&str]) {
    purrify_testkit::fake_worker::add_workers(&ctx.registry.ensure(&PoolKey::new(NS, POOL)), urls).await;
}

/// A running controller, stoppable like a lost lease stops it.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

pub fn start(ctx: Arc<Context>, hub: ProgressHub, config: TaskConfig) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(task::run_with(ctx, config, hub, async move {
        let _ = rx.await;
    }));
    Running { stop: Some(tx), handle }
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.handle)
            .await
            .expect("controller stops in time")
            .expect("controller task did not panic")
            .expect("controller ends cleanly");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub fn status(t: &EnhanceTask) -> &purrify_api::EnhanceTaskStatus {
    t.status.as_ref().expect("task has a status")
}

pub fn uid(t: &EnhanceTask) -> String {
    t.uid().expect("created tasks have a uid")
}
